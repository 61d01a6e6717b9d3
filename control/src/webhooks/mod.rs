//! Webhooks: the endpoints API (`/api/v1/webhooks`), test sends, the delivery log and
//! redelivery. Delivery itself is [`dispatch::Dispatcher`]; signing and sending is
//! [`send::Sender`]; where webhooks may go is [`guard::TargetGuard`].
//!
//! Managing endpoints needs the `links` scope (an endpoint receives everything the
//! user's links and uploads do); listing them and their logs needs `read`.

pub mod dispatch;
pub mod guard;
pub mod send;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use rand::Rng;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::{ms_to_rfc3339, now_unix, to_rfc3339};
use shortlink_core::{DeliveryOutcome, DeliveryRecord, DeliveryState, EventKind, Scope, Webhook};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::state::AppState;
use dispatch::{Message, message_body, record};

/// Longest webhook URL, in bytes.
const MAX_URL_BYTES: usize = 2048;
/// Longest grace of a rotated secret, in seconds (a week).
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;
/// Grace of a rotated secret when none is asked for, in seconds.
const DEFAULT_GRACE_SECONDS: u64 = 3600;
/// Page size of the delivery log when `limit` is not given.
const DELIVERY_PAGE: usize = 20;

/// Body of `POST /api/v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where events are POSTed: an absolute http or https URL without credentials, whose
    /// host is not (and does not resolve to) a loopback, private, link-local or metadata
    /// address unless the operator allowed its network.
    #[schema(max_length = 2048, example = "http://127.0.0.1:9/hooks/shortlink")]
    url: String,
    /// Event types to send; absent or empty: every type.
    #[schema(max_items = 16)]
    events: Option<Vec<EventKind>>,
    /// Whether to deliver (default true).
    enabled: Option<bool>,
}

/// Body of `PATCH /api/v1/webhooks/{id}`: the fields to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhookRequest {
    /// A new URL (the same rules as on creation).
    #[schema(max_length = 2048)]
    url: Option<String>,
    /// New event types; empty: every type.
    #[schema(max_items = 16)]
    events: Option<Vec<EventKind>>,
    /// Turn delivery on or off. Turning a disabled endpoint on resumes after the last
    /// event delivered or given up, with a fresh retry schedule.
    enabled: Option<bool>,
}

/// Body of `POST /api/v1/webhooks/{id}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// Seconds the old secret keeps signing too (a second `v1,` signature), so receivers
    /// can switch without losing messages; default 3600, at most 604 800.
    #[schema(maximum = 604_800)]
    grace_seconds: Option<u64>,
}

/// A webhook endpoint as the API shows it (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its id.
    #[schema(pattern = "^wh_[a-z2-7]{20}$")]
    id: String,
    /// Where events are POSTed.
    url: String,
    /// Event types sent; empty: every type.
    events: Vec<EventKind>,
    /// Whether events are delivered.
    enabled: bool,
    /// Why delivery stopped by itself (`failing`); `null` when enabled or turned off by
    /// its owner.
    disabled_reason: Option<String>,
    /// When the current secret's predecessor stops signing (RFC 3339); `null` without
    /// one.
    #[schema(format = DateTime)]
    previous_secret_until: Option<String>,
    /// When it was registered (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When its settings last changed (RFC 3339).
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<&Webhook> for WebhookView {
    fn from(hook: &Webhook) -> WebhookView {
        WebhookView {
            id: hook.id.clone(),
            url: hook.url.clone(),
            events: hook.events.clone(),
            enabled: hook.enabled,
            disabled_reason: hook.disabled_reason.clone(),
            previous_secret_until: hook
                .previous_until
                .filter(|until| *until > now_unix())
                .map(to_rfc3339),
            created_at: to_rfc3339(hook.created_at),
            updated_at: to_rfc3339(hook.updated_at),
        }
    }
}

/// A webhook endpoint with its signing secret: the answer of a registration or a
/// rotation, the only time the secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    webhook: WebhookView,
    /// The signing secret (`whsec_` and base64), for verifying `webhook-signature` as the
    /// Standard Webhooks specification describes.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    secret: String,
}

/// Answer of `GET /api/v1/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The caller's endpoints, oldest first.
    items: Vec<WebhookView>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Its id in the endpoint's log (a cursor for older pages).
    #[schema(pattern = "^[0-9]{1,18}$")]
    id: String,
    /// The `webhook-id` sent: the same for every attempt at one event.
    message_id: String,
    /// The event delivered (0 for a test message).
    event_id: i64,
    /// The message's type, e.g. `link.created` or `webhook.test`.
    #[serde(rename = "type")]
    event_type: String,
    /// 1 for the first scheduled attempt at the event.
    attempt: u32,
    /// When the attempt started (RFC 3339).
    #[schema(format = DateTime)]
    at: String,
    /// The receiver's HTTP status; `null` when it did not answer.
    status: Option<u16>,
    /// How long the attempt took.
    latency_ms: u32,
    /// `delivered`, `failed` (retried at `next_try` unless manual) or `given_up`.
    #[schema(pattern = "^(delivered|failed|given_up)$")]
    outcome: String,
    /// Why it failed.
    error: Option<String>,
    /// When the next attempt is due (RFC 3339).
    #[schema(format = DateTime)]
    next_try: Option<String>,
    /// Asked for through the API (a test or a redelivery).
    manual: bool,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(r: DeliveryRecord) -> DeliveryView {
        DeliveryView {
            id: r.id.to_string(),
            message_id: r.message_id,
            event_id: r.event_id,
            event_type: r.event_type,
            attempt: r.attempt,
            at: ms_to_rfc3339(r.at_ms),
            status: r.status,
            latency_ms: r.latency_ms,
            outcome: r.outcome.as_str().to_owned(),
            error: r.error,
            next_try: r.next_try_ms.map(ms_to_rfc3339),
            manual: r.manual,
        }
    }
}

/// Query of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Attempts per page (default 20, at most the configured maximum, 100 by default).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before (empty: the first page).
    #[param(pattern = "^[0-9]{0,18}$")]
    cursor: Option<String>,
}

/// Answer of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Attempts, newest first.
    items: Vec<DeliveryView>,
    /// The cursor of the next page; `null` on the last.
    next_cursor: Option<String>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WebhookNotFound,
        format!(
            "there is no webhook '{}'",
            id.chars().take(64).collect::<String>()
        ),
    )
}

/// The caller's endpoint with this id.
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<Webhook, ApiError> {
    let well_formed = id.len() == 23
        && id.starts_with("wh_")
        && id[3..]
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
    if !well_formed {
        return Err(not_found(id));
    }
    state
        .store()
        .get_webhook(caller.user.id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Checks a webhook URL and where its host resolves to now; returns it normalized.
async fn checked_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::new(ErrorCode::WebhookUrlInvalid, why.to_owned());
    if raw.len() > MAX_URL_BYTES {
        return Err(invalid("the URL is longer than 2048 bytes"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|_| invalid("the URL must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the URL must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the URL must not hold credentials"));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid("the URL has no host"));
    };
    let port = url.port_or_known_default().unwrap_or(443);
    state
        .webhooks()
        .sender()
        .guard()
        .resolve(host, port)
        .await
        .map_err(|why| {
            ApiError::new(
                ErrorCode::WebhookTargetForbidden,
                format!("{why}; webhooks may only go to public addresses"),
            )
        })?;
    Ok(url.to_string())
}

/// Most event types one endpoint lists (as documented).
const MAX_EVENT_TYPES: usize = 16;

fn kinds(events: Option<Vec<EventKind>>) -> Result<Vec<EventKind>, ApiError> {
    let events = events.unwrap_or_default();
    if events.len() > MAX_EVENT_TYPES {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("events may list at most {MAX_EVENT_TYPES} types"),
        ));
    }
    let mut kinds: Vec<EventKind> = Vec::new();
    for kind in events {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// `updated_at` of a settings change: now, but always past the last one, because a
/// delivery run in progress notices a change by it.
fn next_version(hook: &Webhook) -> i64 {
    now_unix().max(hook.updated_at + 1)
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("wh_{tail}")
}

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

api_errors!(CreateWebhookErrors: AUTH, JSON_BODY; WebhookUrlInvalid, WebhookTargetForbidden, TooManyWebhooks);

/// `POST /api/v1/webhooks`: 201 with the endpoint and its secret, shown only now.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The registered endpoint, with its signing secret.", body = WebhookWithSecret,
         links(
            ("getWebhook" = (operation_id = "get_webhook", parameters(("id" = "$response.body#/id")))),
            ("deleteWebhook" = (operation_id = "delete_webhook", parameters(("id" = "$response.body#/id")))),
            ("listDeliveries" = (operation_id = "list_deliveries", parameters(("id" = "$response.body#/id")))),
            ("patchWebhook" = (operation_id = "patch_webhook", parameters(("id" = "$response.body#/id")))),
            ("testWebhook" = (operation_id = "test_webhook", parameters(("id" = "$response.body#/id")))),
            ("rotateSecret" = (operation_id = "rotate_secret", parameters(("id" = "$response.body#/id")))),
         )),
        CreateWebhookErrors,
    ),
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookWithSecret>), ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let url = checked_url(&state, &request.url).await?;
    let max = state.config().webhooks.max_per_user;
    if state
        .store()
        .list_webhooks(Some(caller.user.id))
        .await?
        .len()
        >= max
    {
        return Err(ApiError::new(
            ErrorCode::TooManyWebhooks,
            format!("a user may register at most {max} webhooks; delete one first"),
        ));
    }
    let now = now_unix();
    let hook = Webhook {
        id: random_id(),
        user_id: caller.user.id,
        url,
        events: kinds(request.events)?,
        enabled: request.enabled.unwrap_or(true),
        disabled_reason: None,
        secret: new_secret(),
        previous_secret: None,
        previous_until: None,
        created_at: now,
        updated_at: now,
        // Events written from now on are delivered.
        delivery: DeliveryState {
            cursor: state.store().event_feed_head().await?,
            ..DeliveryState::default()
        },
    };
    state.store().create_webhook(hook.clone()).await?;
    state.webhooks().refresh_soon();
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret {
            webhook: WebhookView::from(&hook),
            secret: hook.secret,
        }),
    ))
}

api_errors!(ListWebhooksErrors: AUTH; );

/// `GET /api/v1/webhooks`: the caller's endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The caller's endpoints.", body = WebhookList), ListWebhooksErrors),
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookList>, ApiError> {
    caller.require(Scope::Read)?;
    let hooks = state.store().list_webhooks(Some(caller.user.id)).await?;
    Ok(Json(WebhookList {
        items: hooks.iter().map(WebhookView::from).collect(),
    }))
}

api_errors!(GetWebhookErrors: AUTH; WebhookNotFound);

/// `GET /api/v1/webhooks/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The endpoint.", body = WebhookView), GetWebhookErrors),
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(WebhookView::from(&owned(&state, &caller, &id).await?)))
}

api_errors!(PatchWebhookErrors: AUTH, JSON_BODY; WebhookNotFound, WebhookUrlInvalid, WebhookTargetForbidden);

/// `PATCH /api/v1/webhooks/{id}`: changes the URL, the event types or whether it is on.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body = PatchWebhookRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The endpoint as changed.", body = WebhookView), PatchWebhookErrors),
)]
pub async fn patch_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PatchWebhookRequest>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let mut hook = owned(&state, &caller, &id).await?;
    // A new URL or turning it on starts a fresh retry schedule.
    let mut fresh_start = false;
    if let Some(url) = &request.url {
        let url = checked_url(&state, url).await?;
        fresh_start = url != hook.url;
        hook.url = url;
    }
    if request.events.is_some() {
        hook.events = kinds(request.events)?;
    }
    if let Some(enabled) = request.enabled {
        fresh_start |= enabled && !hook.enabled;
        hook.enabled = enabled;
        hook.disabled_reason = None;
    }
    hook.updated_at = next_version(&hook);
    if !state.store().update_webhook(&hook, fresh_start).await? {
        return Err(not_found(&id));
    }
    state.webhooks().refresh_soon();
    Ok(Json(WebhookView::from(&hook)))
}

api_errors!(DeleteWebhookErrors: AUTH; WebhookNotFound);

/// `DELETE /api/v1/webhooks/{id}`: 204; nothing more is sent to it.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The endpoint and its delivery log are gone."), DeleteWebhookErrors),
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let hook = owned(&state, &caller, &id).await?;
    if !state
        .store()
        .delete_webhook(caller.user.id, &hook.id)
        .await?
    {
        return Err(not_found(&id));
    }
    state.webhooks().refresh_soon();
    Ok(StatusCode::NO_CONTENT)
}

api_errors!(RotateSecretErrors: AUTH, JSON_BODY; WebhookNotFound, InvalidGrace);

/// `POST /api/v1/webhooks/{id}/rotate`: a new secret, shown once; the old one signs too
/// for the grace period.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/rotate",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(
        content = Option<RotateSecretRequest>,
        description = "Optional: an empty body means the default grace.",
        content_type = "application/json",
    ),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The endpoint with its new secret.", body = WebhookWithSecret), RotateSecretErrors),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    // The body is optional: none (or `null`) means the default grace.
    let request: RotateSecretRequest = crate::extract::parse_optional_object(&body)?;
    let grace = request.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidGrace,
            format!("grace_seconds must be at most {MAX_GRACE_SECONDS}"),
        ));
    }
    let mut hook = owned(&state, &caller, &id).await?;
    let now = now_unix();
    hook.previous_secret = (grace > 0).then(|| hook.secret.clone());
    hook.previous_until = (grace > 0).then(|| now + grace as i64);
    hook.secret = new_secret();
    hook.updated_at = next_version(&hook);
    if !state.store().update_webhook(&hook, false).await? {
        return Err(not_found(&id));
    }
    Ok(Json(WebhookWithSecret {
        webhook: WebhookView::from(&hook),
        secret: hook.secret,
    }))
}

/// Sends one message to the endpoint now, outside its schedule, and logs the attempt.
async fn send_now(
    state: &AppState,
    hook: &Webhook,
    message: Message,
    body: &str,
) -> Result<DeliveryView, ApiError> {
    let attempt = state
        .webhooks()
        .sender()
        .send(hook, &message.message_id, body)
        .await;
    let outcome = if attempt.delivered() {
        DeliveryOutcome::Delivered
    } else {
        DeliveryOutcome::Failed
    };
    let entry = record(hook, &message, 1, &attempt, outcome, None, true);
    state.store().record_deliveries(vec![entry.clone()]).await?;
    Ok(DeliveryView::from(entry))
}

api_errors!(TestWebhookErrors: AUTH; WebhookNotFound);

/// `POST /api/v1/webhooks/{id}/test`: sends a signed `webhook.test` message now (also to
/// a disabled endpoint) and answers how it went.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/test",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The attempt, delivered or not.", body = DeliveryView), TestWebhookErrors),
)]
pub async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let hook = owned(&state, &caller, &id).await?;
    let message = Message {
        event_id: 0,
        event_type: "webhook.test".into(),
        message_id: format!("msg_test_{}", shortlink_core::next_delivery_id()),
    };
    let body = serde_json::json!({
        "type": "webhook.test",
        "timestamp": to_rfc3339(now_unix()),
        "data": {"webhook_id": hook.id},
    })
    .to_string();
    Ok(Json(send_now(&state, &hook, message, &body).await?))
}

api_errors!(RedeliverErrors: AUTH; WebhookNotFound, EventNotFound);

/// `POST /api/v1/webhooks/{id}/events/{event_id}/redeliver`: sends one of the user's
/// events again now, with its original `webhook-id`, and answers how it went.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/events/{event_id}/redeliver",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The endpoint's id."),
        ("event_id" = i64, Path, minimum = 1, description = "The event (`event_id` of a delivery)."),
    ),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The attempt, delivered or not.", body = DeliveryView), RedeliverErrors),
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let hook = owned(&state, &caller, &id).await?;
    let missing = || {
        ApiError::new(
            ErrorCode::EventNotFound,
            "no such event in your log (events are kept for control.events_retain_hours)",
        )
    };
    let event_id = event_id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(missing)?;
    let event = state
        .store()
        .user_events(caller.user.id, event_id - 1, 1)
        .await?
        .into_iter()
        .find(|e| e.id == event_id)
        .ok_or_else(missing)?;
    Ok(Json(
        send_now(&state, &hook, Message::of(&event), &message_body(&event)).await?,
    ))
}

api_errors!(ListDeliveriesErrors: AUTH, QUERY; WebhookNotFound, InvalidLimit, InvalidCursor);

/// `GET /api/v1/webhooks/{id}/deliveries`: the endpoint's delivery log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id."), DeliveryParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A page of delivery attempts.", body = DeliveryList), ListDeliveriesErrors),
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    caller.require(Scope::Read)?;
    let max = state.config().max_page_size;
    let limit = params.limit.unwrap_or(DELIVERY_PAGE.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {max}"),
        ));
    }
    let before = crate::links::decode_cursor(params.cursor.as_deref().unwrap_or(""))?;
    let hook = owned(&state, &caller, &id).await?;
    let records = state
        .store()
        .list_deliveries(caller.user.id, &hook.id, before, limit)
        .await?;
    let next_cursor = (records.len() == limit)
        .then(|| records.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(DeliveryList {
        items: records.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}
