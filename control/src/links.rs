//! The links API: create, list, get, change, delete, and the classic `POST /shorten`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use shortlink_core::code::is_reserved;
use shortlink_core::time_util::{now_unix, parse_rfc3339, to_rfc3339};
use shortlink_core::{
    EventKind, Link, LinkPatch, NewLink, RedirectStatus, Scope, ShortCode, Tag, TargetError,
    Targeting, UserId, validate_alias, validate_domain, validate_target,
};
use shortlink_store::{Created, ListQuery, StoreError};

use crate::auth::Caller;
use crate::domains::resolve_domain;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::protected::hash_password;
use crate::state::AppState;

/// Generated-code attempts before giving up (each collision moves to the next attempt):
/// the first half deterministic in (url, owner, attempt), the rest random, since the
/// deterministic ones are all taken once an owner has that many links to one URL.
pub(crate) const MAX_CODE_ATTEMPTS: u32 = 32;
/// Deterministic attempts: what makes a CSV import run again meet the links it made.
const DETERMINISTIC_ATTEMPTS: u32 = 16;
/// Largest accepted `max_clicks` (the route table counts in 32 bits).
const MAX_CLICKS_LIMIT: u64 = u32::MAX as u64;

/// Body of `POST /api/v1/links`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkRequest {
    /// The target: an absolute http or https URL.
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    pub(crate) url: String,
    /// A custom code instead of a generated one (not one of the service's own path
    /// segments, such as `api` or `docs`).
    #[schema(pattern = "^[A-Za-z0-9_-]{3,64}$")]
    pub(crate) alias: Option<String>,
    /// A registered custom domain the link lives on (absent: the default domain).
    pub(crate) domain: Option<String>,
    /// When the link stops redirecting (RFC 3339).
    #[schema(format = DateTime)]
    pub(crate) expires_at: Option<String>,
    /// Redirects the link answers in total, then it is exhausted.
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub(crate) max_clicks: Option<u64>,
    /// Visitors must enter this password first.
    pub(crate) password: Option<String>,
    /// The redirect status: 301 (default), 302, 307 or 308.
    #[schema(schema_with = crate::openapi::redirect_status_or_null)]
    pub(crate) redirect: Option<u16>,
    /// Labels to filter links by.
    pub(crate) tags: Option<Vec<String>>,
    /// Alternative targets per device class and country.
    pub(crate) targeting: Option<Targeting>,
    /// Where visitors go instead of a 410 once the link is expired, used up or turned off
    /// (not while an admin has disabled it): an absolute http(s) URL.
    #[schema(format = "uri")]
    pub(crate) fallback_url: Option<String>,
}

/// Deserializes a field that may be absent (outer `None`) or `null` (inner `None`).
pub(crate) fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Body of `PATCH /api/v1/links/{code}`; `null` clears `expires_at`, `max_clicks`,
/// `password` and `targeting`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchLinkRequest {
    /// A new target URL.
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    url: Option<String>,
    /// A new expiry (RFC 3339), or `null` for none.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<String>>,
    /// A new click limit, or `null` for none.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    max_clicks: Option<Option<u64>>,
    /// A new redirect status: 301, 302, 307 or 308.
    #[schema(schema_with = crate::openapi::redirect_status_or_null)]
    redirect: Option<u16>,
    /// The new tags (replacing the old).
    tags: Option<Vec<String>>,
    /// Turns the link off (or on again).
    disabled: Option<bool>,
    /// A new password, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    password: Option<Option<String>>,
    /// New targeting rules, or `null` to remove them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Targeting>)]
    targeting: Option<Option<Targeting>>,
    /// A new fallback URL, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = "uri")]
    fallback_url: Option<Option<String>>,
}

/// `?domain=` on the per-link endpoints: the link's custom domain (absent: the default).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DomainParam {
    /// The link's custom domain (absent: the default domain).
    domain: Option<String>,
}

/// A link as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    /// The short code.
    code: String,
    /// The full short URL.
    #[schema(format = "uri")]
    short_url: String,
    /// The target URL.
    url: String,
    /// The custom domain, if the link is on one.
    domain: Option<String>,
    /// The redirect status.
    #[schema(schema_with = crate::openapi::redirect_status)]
    redirect: u16,
    /// When the link stops redirecting (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The click limit.
    max_clicks: Option<u64>,
    /// Clicks counted so far.
    clicks: u64,
    /// Labels.
    tags: Vec<String>,
    /// Whether the owner or an admin turned the link off.
    disabled: bool,
    /// Why an admin disabled the link, while they keep it disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    moderation: Option<String>,
    /// Whether visitors must enter a password.
    password_protected: bool,
    /// Alternative targets per device class and country.
    #[serde(skip_serializing_if = "Option::is_none")]
    targeting: Option<Targeting>,
    /// Where visitors go instead of a 410.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_url: Option<String>,
    /// What a visitor gets now.
    #[schema(value_type = String, pattern = "^(live|disabled|expired|exhausted)$")]
    state: &'static str,
    /// When the link was made (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When the link last changed (RFC 3339).
    #[schema(format = DateTime)]
    updated_at: String,
}

impl LinkView {
    pub(crate) fn new(state: &AppState, link: Link) -> LinkView {
        LinkView {
            short_url: state.short_url(&link.domain, link.code.as_str()),
            state: link.state(now_unix()).as_str(),
            code: link.code.into_string(),
            url: link.url,
            domain: (!link.domain.is_empty()).then_some(link.domain),
            redirect: link.redirect.as_u16(),
            expires_at: link.expires_at.map(to_rfc3339),
            max_clicks: link.max_clicks,
            clicks: link.clicks,
            tags: link.tags,
            disabled: link.disabled,
            moderation: link.moderation,
            password_protected: link.password_hash.is_some(),
            targeting: link.targeting,
            fallback_url: link.fallback_url,
            created_at: to_rfc3339(link.created_at),
            updated_at: to_rfc3339(link.updated_at),
        }
    }
}

pub(crate) fn parse_expiry(text: &str) -> Result<i64, ApiError> {
    parse_rfc3339(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidExpiresAt,
            format!("expires_at '{text}' is not an RFC 3339 time like 2030-01-31T12:00:00Z"),
        )
    })
}

fn check_max_clicks(value: u64) -> Result<u64, ApiError> {
    if value == 0 || value > MAX_CLICKS_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidMaxClicks,
            format!("max_clicks must be between 1 and {MAX_CLICKS_LIMIT}"),
        ));
    }
    Ok(value)
}

fn parse_redirect(value: u16) -> Result<RedirectStatus, ApiError> {
    RedirectStatus::try_from(value)
        .map_err(|message| ApiError::new(ErrorCode::InvalidRedirect, message))
}

/// Targeting rules validated, none of their URLs on a registered custom domain.
async fn checked_targeting(
    state: &AppState,
    targeting: Targeting,
) -> Result<Option<Targeting>, ApiError> {
    let targeting = targeting
        .validate(state.rules())
        .map_err(|e| ApiError::new(ErrorCode::InvalidTargeting, e.to_string()))?;
    if let Some(targeting) = &targeting {
        for url in targeting.urls() {
            refuse_domain_loop(state, url).await?;
        }
    }
    Ok(targeting)
}

/// A target URL validated ([`validate_target`]: also refused when it leads back to this
/// service by a loopback or own host) and not on a registered custom domain, which would
/// loop too.
pub(crate) async fn checked_target(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let url = validate_target(raw, state.rules())?;
    refuse_domain_loop(state, &url).await?;
    Ok(url)
}

/// Refuses a (valid) target URL whose host is a registered custom domain, unless an admin
/// allows the host (`control.loop_allowed_hosts`).
async fn refuse_domain_loop(state: &AppState, url: &str) -> Result<(), ApiError> {
    let Some(host) = shortlink_core::target_host(url) else {
        return Ok(());
    };
    if state.rules().loop_allowed(&host) {
        return Ok(());
    }
    if state.store().get_domain(&host).await?.is_some() {
        return Err(TargetError::Loop(host).into());
    }
    Ok(())
}

/// The caller's link at (`domain`, `code`), or 404 (also for another user's link).
pub(crate) async fn owned_link(
    state: &AppState,
    caller: &Caller,
    domain: Option<&str>,
    code: &str,
) -> Result<Link, ApiError> {
    let domain = link_domain(state, domain);
    match state.store().get_link(&domain, code).await? {
        Some(link) if link.owner == caller.user.id => Ok(link),
        _ => Err(ApiError::link_not_found()),
    }
}

/// The stored domain a `?domain=` names: empty for the default, else the normalized host.
pub(crate) fn link_domain(state: &AppState, domain: Option<&str>) -> String {
    match domain.map(str::trim).filter(|d| !d.is_empty()) {
        None => String::new(),
        Some(d) if state.is_default_host(d) => String::new(),
        Some(d) => validate_domain(d).unwrap_or_else(|_| d.to_ascii_lowercase()),
    }
}

/// Creates a link from a request, checked as `POST /api/v1/links` checks it (the CSV
/// import's rows too); returns it and whether it already existed. `code` is the exact code
/// of a link being reproduced (an import of an export), used when no alias is asked for.
pub(crate) async fn create(
    state: &AppState,
    caller: &Caller,
    request: CreateLinkRequest,
    code: Option<ShortCode>,
    taken: TakenCode,
) -> Result<(Link, bool), ApiError> {
    let url = checked_target(state, &request.url).await?;
    let domain = resolve_domain(state, caller.user.id, request.domain.as_deref()).await?;
    let targeting = match request.targeting {
        Some(t) => checked_targeting(state, t).await?,
        None => None,
    };
    let expires_at = request
        .expires_at
        .as_deref()
        .map(parse_expiry)
        .transpose()?;
    let max_clicks = request.max_clicks.map(check_max_clicks).transpose()?;
    let redirect = request
        .redirect
        .map(parse_redirect)
        .transpose()?
        .unwrap_or_default();
    let tags = Tag::validate_all(request.tags.as_deref().unwrap_or_default())?;
    let choice = match (
        request.alias.as_deref().map(validate_alias).transpose()?,
        code,
    ) {
        (Some(alias), _) => CodeChoice::Alias(alias),
        (None, Some(code)) => CodeChoice::Kept(code),
        (None, None) => CodeChoice::Generated,
    };
    let password_hash = match request.password {
        Some(password) => Some(hash_password(state.password_guard(), password).await?),
        None => None,
    };

    let fallback_url = match request.fallback_url.as_deref() {
        Some(url) => Some(checked_target(state, url).await?),
        None => None,
    };
    let new = NewLink {
        domain,
        redirect,
        expires_at,
        max_clicks,
        tags,
        password_hash,
        targeting,
        fallback_url,
        ..NewLink::new(caller.user.id, url)
    };
    let created = insert_link(state, new, choice, taken).await?;
    Ok((created.link, created.existed))
}

/// Where [`insert_link`] puts a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodeChoice {
    /// The first free generated code.
    Generated,
    /// The caller's alias.
    Alias(ShortCode),
    /// This generated code, kept (a link reproduced from an export); a generated one if
    /// another link has it.
    Kept(ShortCode),
}

/// What a taken code means to [`insert_link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakenCode {
    /// Another link: an alias is refused (409 `alias_taken`), a generated code moves on
    /// to the next attempt.
    Refused,
    /// The same owner's link to the same URL there is this link (a CSV import run again
    /// meets the links it made before, at the same generated codes).
    SameIsExisting,
}

/// The one way links are created (the API, the CSV import, uploads' short links): stores
/// `new` (its code ignored) where `choice` says.
pub(crate) async fn insert_link(
    state: &AppState,
    mut new: NewLink,
    choice: CodeChoice,
    taken: TakenCode,
) -> Result<Created, ApiError> {
    new.custom_alias = matches!(choice, CodeChoice::Alias(_));
    // A kept code is tried first; taken by another link, the link gets a generated one.
    let (attempts, first_generated) = match &choice {
        CodeChoice::Alias(_) => (1, 1),
        CodeChoice::Kept(_) => (MAX_CODE_ATTEMPTS + 1, 1),
        CodeChoice::Generated => (MAX_CODE_ATTEMPTS, 0),
    };
    for attempt in 0..attempts {
        match &choice {
            CodeChoice::Alias(code) => new.code = code.clone(),
            CodeChoice::Kept(code) if attempt == 0 => new.code = code.clone(),
            _ => {
                // Deterministic in (url, owner, attempt), then random.
                let attempt = attempt - first_generated;
                let attempt = if attempt < DETERMINISTIC_ATTEMPTS {
                    attempt
                } else {
                    rand::random_range(DETERMINISTIC_ATTEMPTS..u32::MAX)
                };
                new.code = state.codes().generate(&new.url, new.owner, attempt);
                if is_reserved(new.code.as_str()) {
                    continue;
                }
            }
        }
        match state.store().create_link(new.clone()).await {
            Ok(created) => return Ok(created),
            Err(StoreError::CodeTaken(code)) => {
                if taken == TakenCode::SameIsExisting
                    && let Some(link) = state.store().get_link(&new.domain, &code).await?
                    && link.owner == new.owner
                    && link.url == new.url
                {
                    return Ok(Created {
                        link,
                        existed: true,
                    });
                }
                if matches!(choice, CodeChoice::Alias(_)) {
                    return Err(StoreError::CodeTaken(code).into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(format!(
        "no free code after {MAX_CODE_ATTEMPTS} attempts"
    )))
}

/// Creates a plain 302 link for the control plane's own use (an upload's short link):
/// its target is under the public URL, which user links may not point at.
pub(crate) async fn create_internal_link(
    state: &AppState,
    owner: UserId,
    url: String,
) -> Result<Link, ApiError> {
    let new = NewLink {
        redirect: RedirectStatus::Found,
        ..NewLink::new(owner, url)
    };
    Ok(
        insert_link(state, new, CodeChoice::Generated, TakenCode::Refused)
            .await?
            .link,
    )
}

api_errors!(CreateLinkErrors: AUTH, JSON_BODY, TARGET, LINK_FIELDS; AliasTaken, Busy);

/// `POST /api/v1/links`: 201 with the new link, or 200 with an existing plain one.
#[utoipa::path(
    post,
    path = "/api/v1/links",
    tag = "links",
    request_body = CreateLinkRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The new link.", body = LinkView,
         links(
            ("getLink" = (operation_id = "get_link", parameters(("code" = "$response.body#/code")))),
            ("patchLink" = (operation_id = "patch_link", parameters(("code" = "$response.body#/code")))),
            ("deleteLink" = (operation_id = "delete_link", parameters(("code" = "$response.body#/code")))),
            ("linkStats" = (operation_id = "link_stats", parameters(("code" = "$response.body#/code")))),
            ("linkQr" = (operation_id = "link_qr", parameters(("code" = "$response.body#/code")))),
            ("visitorPage" = (operation_id = "show", parameters(("code" = "$response.body#/code")))),
         )),
        (status = 200, description = "The caller's existing plain link to the same URL (no alias or options asked for).", body = LinkView),
        CreateLinkErrors,
    ),
)]
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateLinkRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let (link, existed) = create(&state, &caller, request, None, TakenCode::Refused).await?;
    let view = LinkView::new(&state, link);
    let status = if existed {
        StatusCode::OK
    } else {
        state
            .notify(caller.user.id, EventKind::LinkCreated, &view)
            .await;
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

/// Body of the classic `POST /shorten`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ShortenRequest {
    /// The target URL.
    #[schema(
        format = "uri",
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#@]+([/?#][^\\s]*)?$"
    )]
    original_url: String,
}

/// Answer of the classic `POST /shorten`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShortenResponse {
    /// The full short URL.
    #[schema(format = "uri")]
    short_url: String,
    /// The short code.
    code: String,
}

api_errors!(ShortenErrors: AUTH, JSON_BODY, TARGET; );

/// `POST /shorten`: `{"original_url"}` → `{"short_url", "code"}`.
#[utoipa::path(
    post,
    path = "/shorten",
    tag = "links",
    request_body = ShortenRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The new link.", body = ShortenResponse),
        (status = 200, description = "The caller's existing link to the same URL.", body = ShortenResponse),
        ShortenErrors,
    ),
)]
pub async fn shorten(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ShortenRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let request = CreateLinkRequest {
        url: request.original_url,
        alias: None,
        domain: None,
        expires_at: None,
        max_clicks: None,
        password: None,
        redirect: None,
        tags: None,
        targeting: None,
        fallback_url: None,
    };
    let (link, existed) = create(&state, &caller, request, None, TakenCode::Refused).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        let view = LinkView::new(&state, link.clone());
        state
            .notify(caller.user.id, EventKind::LinkCreated, &view)
            .await;
        StatusCode::CREATED
    };
    let body = ShortenResponse {
        short_url: state.short_url(&link.domain, link.code.as_str()),
        code: link.code.into_string(),
    };
    Ok((status, Json(body)).into_response())
}

/// Query of `GET /api/v1/links`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Links per page (default 20, at most the configured maximum, 100 by default).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before (empty: the first page).
    #[param(pattern = "^[0-9]{0,18}$")]
    cursor: Option<String>,
    /// Only links with this tag.
    tag: Option<String>,
    /// Only links whose code or URL contains this text.
    q: Option<String>,
}

/// A page of links.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse {
    /// The links, newest first.
    items: Vec<LinkView>,
    /// The cursor of the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A page cursor: the decimal position the next page starts before. Any position is a
/// valid cursor (a page starting there), so a client may keep one across restarts.
pub(crate) fn encode_cursor(id: i64) -> String {
    id.to_string()
}

/// The position a `cursor` names; an empty cursor means the first page.
pub(crate) fn decode_cursor(text: &str) -> Result<Option<i64>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0 && text.bytes().all(|b| b.is_ascii_digit()))
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "cursor is not one this API returned (a decimal number)",
            )
        })
}

/// A listing's page size: `limit`, or the configured default; 422 outside 1..=max.
pub(crate) fn page_limit(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
    let config = state.config();
    let limit = limit.unwrap_or(config.default_page_size);
    if limit == 0 || limit > config.max_page_size {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {}", config.max_page_size),
        ));
    }
    Ok(limit)
}

api_errors!(ListLinksErrors: AUTH, QUERY; InvalidLimit, InvalidCursor);

/// `GET /api/v1/links`: the caller's links, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/links",
    tag = "links",
    params(ListParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A page of the caller's links.", body = ListResponse), ListLinksErrors),
)]
pub async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListResponse>, ApiError> {
    let limit = crate::links::page_limit(&state, params.limit)?;
    let query = ListQuery {
        limit,
        before_id: params
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .flatten(),
        tag: params.tag.filter(|t| !t.is_empty()),
        q: params.q.filter(|q| !q.is_empty()),
    };
    let page = state.store().list_links(caller.user.id, &query).await?;
    Ok(Json(ListResponse {
        items: page
            .items
            .into_iter()
            .map(|l| LinkView::new(&state, l))
            .collect(),
        next_cursor: page.next_before_id.map(encode_cursor),
    }))
}

api_errors!(GetLinkErrors: AUTH, QUERY; NotFound);

/// `GET /api/v1/links/{code}`: one of the caller's links.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), DomainParam),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The link.", body = LinkView), GetLinkErrors),
)]
pub async fn get_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<DomainParam>,
) -> Result<Json<LinkView>, ApiError> {
    let link = owned_link(&state, &caller, params.domain.as_deref(), &code).await?;
    Ok(Json(LinkView::new(&state, link)))
}

api_errors!(PatchLinkErrors: AUTH, QUERY, JSON_BODY, TARGET, LINK_FIELDS; NotFound, LinkModerated, Busy);

/// `PATCH /api/v1/links/{code}`: changes the fields the body names.
#[utoipa::path(
    patch,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), DomainParam),
    request_body = PatchLinkRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The changed link.", body = LinkView), PatchLinkErrors),
)]
pub async fn patch_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<DomainParam>,
    ApiJson(request): ApiJson<PatchLinkRequest>,
) -> Result<Json<LinkView>, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let domain = link_domain(&state, params.domain.as_deref());
    let password_hash = match request.password {
        Some(Some(password)) => Some(Some(hash_password(state.password_guard(), password).await?)),
        Some(None) => Some(None),
        None => None,
    };
    let targeting = match request.targeting {
        Some(Some(t)) => Some(checked_targeting(&state, t).await?),
        Some(None) => Some(None),
        None => None,
    };
    let patch = LinkPatch {
        url: match request.url.as_deref() {
            Some(u) => Some(checked_target(&state, u).await?),
            None => None,
        },
        expires_at: request
            .expires_at
            .map(|e| e.as_deref().map(parse_expiry).transpose())
            .transpose()?,
        max_clicks: request
            .max_clicks
            .map(|m| m.map(check_max_clicks).transpose())
            .transpose()?,
        redirect: request.redirect.map(parse_redirect).transpose()?,
        tags: request.tags.as_deref().map(Tag::validate_all).transpose()?,
        disabled: request.disabled,
        password_hash,
        targeting,
        moderation: None,
        fallback_url: match request.fallback_url {
            Some(Some(url)) => Some(Some(checked_target(&state, &url).await?)),
            Some(None) => Some(None),
            None => None,
        },
    };
    if request.disabled == Some(false)
        && owned_link(&state, &caller, params.domain.as_deref(), &code)
            .await?
            .moderation
            .is_some()
    {
        return Err(ApiError::new(
            ErrorCode::LinkModerated,
            "an admin disabled this link; only an admin can turn it back on",
        ));
    }
    let link = state
        .store()
        .update_link(caller.user.id, &domain, &code, patch)
        .await?
        .ok_or_else(ApiError::link_not_found)?;
    let view = LinkView::new(&state, link);
    state
        .notify(caller.user.id, EventKind::LinkUpdated, &view)
        .await;
    Ok(Json(view))
}

/// Tells `owner` their link at (`domain`, `code`) was deleted (`link.deleted`).
pub(crate) async fn notify_deleted(state: &AppState, owner: UserId, domain: &str, code: &str) {
    let data = serde_json::json!({
        "code": code,
        "domain": domain,
        "short_url": state.short_url(domain, code),
    });
    state.notify(owner, EventKind::LinkDeleted, &data).await;
}

api_errors!(DeleteLinkErrors: AUTH, QUERY; NotFound);

/// `DELETE /api/v1/links/{code}`: 204.
#[utoipa::path(
    delete,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The link's short code."), DomainParam),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The link is gone."), DeleteLinkErrors),
)]
pub async fn delete_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiQuery(params): ApiQuery<DomainParam>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Links)?;
    state.check_write(&caller.key_hash)?;
    let domain = link_domain(&state, params.domain.as_deref());
    if state
        .store()
        .delete_link(caller.user.id, &domain, &code)
        .await?
    {
        notify_deleted(&state, caller.user.id, &domain, &code).await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::link_not_found())
    }
}
