//! API keys: create, list, revoke, rotate.
//!
//! Anyone lists and revokes their own keys (a leaked key can revoke itself); making or
//! rotating a key needs a key with every scope of its user's role, so a narrowed key
//! cannot mint others; admins manage everyone's. New keys never hold more scopes than
//! the key that made them, and a user's key never holds `admin`. Every change is
//! recorded in the audit log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::{now_unix, parse_rfc3339, to_rfc3339};
use shortlink_core::{ApiKey, Role, Scope, Scopes, User, UserId};

use crate::auth::{Caller, generate_api_key, new_key_record};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::state::AppState;

/// Label of the key `SHORTLINK_ADMIN_KEY` sets (or the one generated on first start);
/// reserved, so only the bootstrap replaces keys with it.
pub const BOOTSTRAP_LABEL: &str = "bootstrap";

/// Longest key label, in bytes.
const MAX_LABEL_BYTES: usize = 128;

/// Grace an old key keeps after a rotation when none is asked for, in seconds.
const DEFAULT_ROTATION_GRACE_SECONDS: u64 = 3600;

/// A key as the API shows it: never its text or hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// The key's public id (16 hex digits), for revoking and rotating it.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    id: String,
    /// The key's first characters (`sl_` and six more), to recognise it by; empty for
    /// keys made before prefixes were kept.
    prefix: String,
    /// A note on what the key is for.
    label: String,
    /// The id of the user the key acts as.
    #[schema(value_type = i64)]
    user_id: UserId,
    /// The name of the user the key acts as.
    user: String,
    /// What the key may do: each `read`, `links`, `uploads` or `admin`.
    #[schema(value_type = Vec<shortlink_core::Scope>)]
    scopes: Scopes,
    /// When the key was made (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When the key was last used (RFC 3339; recorded at most once a minute).
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    /// When the key stops working (RFC 3339); `null`: never.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl KeyView {
    fn new(key: &ApiKey, user: &str) -> KeyView {
        KeyView {
            id: key.id(),
            prefix: key.prefix.clone(),
            label: key.label.clone(),
            user_id: key.user_id,
            user: user.to_owned(),
            scopes: key.scopes,
            created_at: to_rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(to_rfc3339),
            expires_at: key.expires_at.map(to_rfc3339),
        }
    }
}

/// A new key: the only time its text is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyCreated {
    /// The key itself (`sl_...`), for `Authorization: Bearer <key>`; shown only now.
    key: String,
    /// The key as listings show it.
    #[serde(flatten)]
    view: KeyView,
}

/// Body of `POST /api/v1/keys`: the user by id or by name (default: the caller).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Admins: the id of the user the key is for (not with `user`).
    #[schema(value_type = Option<i64>)]
    user_id: Option<UserId>,
    /// Admins: the name of the user the key is for (not with `user_id`).
    user: Option<String>,
    /// A note on what the key is for (at most 128 bytes; `bootstrap` is reserved).
    #[serde(default)]
    label: String,
    /// Each `read`, `links`, `uploads` or `admin`, at least one. Default: every scope of
    /// the user's role that the calling key holds.
    #[schema(value_type = Option<Vec<shortlink_core::Scope>>, min_items = 1)]
    scopes: Option<Vec<String>>,
    /// When the key stops working: a future RFC 3339 time; default: never.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Scopes by name (`read`, `links`, `uploads`, `admin`); at least one.
pub fn parse_scopes(names: &[String]) -> Result<Scopes, ApiError> {
    let scopes = names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidScope,
                    format!("unknown scope '{name}': use read, links, uploads or admin"),
                )
            })
        })
        .collect::<Result<Scopes, _>>()?;
    if scopes == Scopes::NONE {
        return Err(ApiError::new(
            ErrorCode::InvalidScope,
            "a key needs at least one scope",
        ));
    }
    Ok(scopes)
}

/// Refuses unless the caller may make keys for `user` with `scopes`.
fn check_grant(caller: &Caller, user: &User, scopes: Scopes) -> Result<(), ApiError> {
    if user.id != caller.user.id {
        caller.require_admin()?;
    } else if !caller.scopes.covers(Scopes::full(caller.user.role)) {
        return Err(ApiError::forbidden(
            "making or rotating keys needs a key with every scope of your role",
        ));
    }
    if !caller.scopes.covers(scopes) {
        return Err(ApiError::forbidden(
            "a key cannot get scopes the calling key does not hold",
        ));
    }
    if scopes.allows(Scope::Admin) && user.role != Role::Admin {
        return Err(ApiError::new(
            ErrorCode::InvalidScope,
            "only an admin's key may hold the admin scope",
        ));
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::KeyNotFound, "no such key")
}

api_errors!(CreateKeyErrors: AUTH, JSON_BODY; InvalidLabel, UserNotFound, InvalidScope, InvalidExpiresAt);

/// `POST /api/v1/keys`: 201 with the new key, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "accounts",
    request_body = CreateKeyRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The new key, its text shown only now.", body = KeyCreated,
         links(
            ("revokeKey" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))),
            ("rotateKey" = (operation_id = "rotate_key", parameters(("id" = "$response.body#/id")))),
         )),
        CreateKeyErrors,
    ),
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    state.check_write(&caller.key_hash)?;
    if request.label.len() > MAX_LABEL_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidLabel,
            format!("label must be at most {MAX_LABEL_BYTES} bytes"),
        ));
    }
    if request.label == BOOTSTRAP_LABEL {
        return Err(ApiError::new(
            ErrorCode::InvalidLabel,
            "the label 'bootstrap' is reserved for the configured admin key",
        ));
    }
    let user = match (request.user_id, request.user.as_deref()) {
        (None, None) => Some(caller.user.clone()),
        (Some(id), None) => state.store().get_user(id).await?,
        (None, Some(name)) => state.store().user_by_name(name).await?,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "give at most one of user_id or user",
            ));
        }
    };
    let user = match user {
        Some(user) => user,
        None if caller.is_admin() => {
            return Err(ApiError::new(ErrorCode::UserNotFound, "no such user"));
        }
        None => return Err(ApiError::forbidden("this needs an admin API key")),
    };
    let scopes = match &request.scopes {
        Some(names) => parse_scopes(names)?,
        None => Scopes::from_iter(
            Scopes::full(user.role)
                .iter()
                .filter(|s| caller.scopes.allows(*s)),
        ),
    };
    check_grant(&caller, &user, scopes)?;
    let expires_at = request
        .expires_at
        .as_deref()
        .map(|text| {
            parse_rfc3339(text)
                .filter(|at| *at > now_unix())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidExpiresAt,
                        "expires_at must be a future RFC 3339 time",
                    )
                })
        })
        .transpose()?;
    let text = generate_api_key();
    let record = new_key_record(&text, &user, &request.label, scopes, expires_at);
    state.store().add_api_key(record.clone()).await?;
    let view = KeyView::new(&record, &user.name);
    state
        .audit(
            caller.user.id,
            "key.create",
            &view.id,
            &format!("user {}, scopes {}", user.name, scope_list(scopes)),
        )
        .await;
    Ok((StatusCode::CREATED, Json(KeyCreated { key: text, view })))
}

fn scope_list(scopes: Scopes) -> String {
    scopes
        .iter()
        .map(Scope::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Query of `GET /api/v1/keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    /// Admins: only this user's keys (by name).
    user: Option<String>,
}

/// Answer of `GET /api/v1/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// The keys.
    items: Vec<KeyView>,
}

api_errors!(ListKeysErrors: AUTH, QUERY; UserNotFound);

/// `GET /api/v1/keys`: the caller's keys; every key for admins (`?user=` narrows).
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "accounts",
    params(ListKeysQuery),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The keys.", body = KeyList), ListKeysErrors),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListKeysQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let users = state.store().list_users().await?;
    let name_of = |id: UserId| crate::admin::name_of(&users, id);
    let filter = if caller.is_admin() {
        match query.user.as_deref() {
            Some(name) => Some(
                users
                    .iter()
                    .find(|u| u.name == name)
                    .map(|u| u.id)
                    .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "no such user"))?,
            ),
            None => None,
        }
    } else {
        Some(caller.user.id)
    };
    let keys = state.store().list_api_keys(filter).await?;
    Ok(Json(KeyList {
        items: keys
            .iter()
            .map(|k| KeyView::new(k, &name_of(k.user_id)))
            .collect(),
    }))
}

/// The key `id` if the caller may manage it (own, or any for admins); 404 otherwise.
async fn manageable(state: &AppState, caller: &Caller, id: &str) -> Result<ApiKey, ApiError> {
    match state.store().get_api_key(id).await? {
        Some(key) if key.user_id == caller.user.id || caller.is_admin() => Ok(key),
        _ => Err(not_found()),
    }
}

api_errors!(RevokeKeyErrors: AUTH; KeyNotFound);

/// `DELETE /api/v1/keys/{id}`: revokes the key at once; 204.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    tag = "accounts",
    params(("id" = String, Path, description = "The key's id (16 hex digits).")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The key is revoked."), RevokeKeyErrors),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = manageable(&state, &caller, &id).await?;
    if !state.store().delete_api_key(key.key_hash).await? {
        return Err(not_found());
    }
    state
        .audit(caller.user.id, "key.revoke", &id, &key.label)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old key keeps working, in seconds (0: revoked at once). Default 3600;
    /// at most the configured maximum (30 days by default).
    #[schema(maximum = 2592000)]
    grace_seconds: Option<u64>,
}

api_errors!(RotateKeyErrors: AUTH, BODY; InvalidJson, KeyNotFound, InvalidGrace, InvalidScope);

/// `POST /api/v1/keys/{id}/rotate`: a new key with the same user, label, scopes and
/// expiry (201, shown once); the old one stops working after the grace.
#[utoipa::path(
    post,
    path = "/api/v1/keys/{id}/rotate",
    tag = "accounts",
    params(("id" = String, Path, description = "The id of the key to rotate (16 hex digits).")),
    request_body(
        content = Option<RotateRequest>,
        description = "Optional: an empty body means the default grace.",
        content_type = "application/json",
    ),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The new key, its text shown only now.", body = KeyCreated,
         links(
            ("revokeKey" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))),
            ("rotateKey" = (operation_id = "rotate_key", parameters(("id" = "$response.body#/id")))),
         )),
        RotateKeyErrors,
    ),
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    state.check_write(&caller.key_hash)?;
    // The body is optional: none (or `null`) means the default grace.
    let request: RotateRequest = crate::extract::parse_optional_object(&body)?;
    let old = manageable(&state, &caller, &id).await?;
    let user = state
        .store()
        .get_user(old.user_id)
        .await?
        .ok_or_else(not_found)?;
    check_grant(&caller, &user, old.scopes)?;
    let grace = request
        .grace_seconds
        .unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    let max = state.config().key_rotation_max_grace_seconds;
    if grace > max {
        return Err(ApiError::new(
            ErrorCode::InvalidGrace,
            format!("grace_seconds must be at most {max}"),
        ));
    }
    let (text, record) = rotate(state.store().as_ref(), &old, &user, grace).await?;
    let view = KeyView::new(&record, &user.name);
    state
        .audit(
            caller.user.id,
            "key.rotate",
            &id,
            &format!("new key {}, old one valid for {grace} s", view.id),
        )
        .await;
    Ok((StatusCode::CREATED, Json(KeyCreated { key: text, view })))
}

/// Rotates `old` (a key of `user`): stores a new key with its label, scopes and expiry and
/// gives the old one `grace_seconds` more (0: deletes it now). Returns the new key's text
/// (to show once) and record. The API and the command line both rotate through here.
pub async fn rotate(
    store: &dyn shortlink_store::Store,
    old: &ApiKey,
    user: &User,
    grace_seconds: u64,
) -> Result<(String, ApiKey), shortlink_store::StoreError> {
    // The bootstrap label is the configured admin key's: a rotated one is an ordinary key.
    let label = if old.label == BOOTSTRAP_LABEL {
        "rotated bootstrap"
    } else {
        old.label.as_str()
    };
    let text = generate_api_key();
    let record = new_key_record(&text, user, label, old.scopes, old.expires_at);
    store.add_api_key(record.clone()).await?;
    let old_until = now_unix().saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX));
    if grace_seconds == 0 {
        store.delete_api_key(old.key_hash).await?;
    } else if old.expires_at.is_none_or(|at| at > old_until) {
        store
            .set_api_key_expiry(old.key_hash, Some(old_until))
            .await?;
    }
    Ok((text, record))
}

/// Makes `key` the admin's bootstrap key: the configured `SHORTLINK_ADMIN_KEY` replaces
/// whatever bootstrap key was there before, so changing the variable retires the old one.
pub async fn replace_bootstrap_key(
    store: &dyn shortlink_store::Store,
    admin: &User,
    key: &str,
) -> Result<(), shortlink_store::StoreError> {
    let record = new_key_record(key, admin, BOOTSTRAP_LABEL, Scopes::full(Role::Admin), None);
    store.add_api_key(record.clone()).await?;
    for old in store.list_api_keys(Some(admin.id)).await? {
        if old.label == BOOTSTRAP_LABEL && old.key_hash != record.key_hash {
            store.delete_api_key(old.key_hash).await?;
            store
                .append_audit(shortlink_core::NewAuditEntry {
                    actor: admin.id,
                    action: "key.revoke".into(),
                    target: old.id(),
                    detail: "replaced by a new SHORTLINK_ADMIN_KEY".into(),
                })
                .await?;
        }
    }
    Ok(())
}
