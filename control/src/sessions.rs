//! Sign-in for people: a user name and password (argon2id, set by an admin or the
//! command line) give an `HttpOnly`, `SameSite=Strict` session cookie; sessions are
//! listed and ended by their owner. Programs keep using API keys.
//!
//! Sign-in attempts go through the same [`PasswordGuard`](crate::protected::PasswordGuard)
//! as protected links: counted per client IP and user name and per user name before the
//! password is checked, within the argon2 memory budget. An unknown name or a user
//! without a password is checked against a stand-in hash, so the answer takes as long
//! and says the same.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::{now_unix, to_rfc3339};
use shortlink_core::{Role, Scope, Scopes, Session, UserId, hash_api_key};

use crate::auth::{Caller, SESSION_COOKIE};
use crate::error::{ApiError, ErrorCode};
use crate::openapi::api_errors;
use crate::protected::{MAX_PASSWORD_BYTES, hash_password, verify_password};
use crate::state::AppState;

/// Longest `User-Agent` kept with a session.
const MAX_AGENT_CHARS: usize = 200;

/// Largest sign-in body read.
const MAX_LOGIN_BYTES: usize = 4096;

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user name.
    name: String,
    /// The user's password (1 to 256 bytes).
    #[schema(format = Password)]
    password: String,
}

/// Who is signed in, as `POST /api/v1/auth/login` and `GET /api/v1/auth/me` show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user's numeric id.
    #[schema(value_type = i64)]
    id: UserId,
    /// The user name.
    name: String,
    /// `admin` or `user`.
    role: Role,
    /// `session` (a person signed in with a password) or `key`.
    #[schema(value_type = String, pattern = "^(session|key)$")]
    via: &'static str,
    /// What the caller may do: each `read`, `links`, `uploads` or `admin`.
    #[schema(value_type = Vec<shortlink_core::Scope>)]
    scopes: Scopes,
}

impl Me {
    fn of(caller: &Caller) -> Me {
        Me {
            id: caller.user.id,
            name: caller.user.name.clone(),
            role: caller.user.role,
            via: if caller.via_session { "session" } else { "key" },
            scopes: caller.scopes,
        }
    }
}

/// A hash of a password no one knows, checked when the name is unknown or has no
/// password, so those answers cost what a wrong password costs.
async fn stand_in_hash(state: &AppState) -> Result<&'static str, ApiError> {
    static STAND_IN: OnceLock<String> = OnceLock::new();
    if let Some(hash) = STAND_IN.get() {
        return Ok(hash);
    }
    let secret = format!("{:032x}", rand::random::<u128>());
    let hash = hash_password(state.password_guard(), secret).await?;
    Ok(STAND_IN.get_or_init(|| hash))
}

fn cookie(https: bool, token: &str, max_age: i64) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("sl_session=; Path=/; Max-Age=0"))
}

fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "that user name and password do not match",
    )
}

api_errors!(LoginErrors: ; InvalidBody, InvalidCredentials, Unauthorized, RateLimited, Busy, Internal);

/// `POST /api/v1/auth/login` with `{name, password}`: 200 with who signed in and the
/// session cookie; 401 `invalid_credentials`; 429 when attempts run over the limit.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in.", body = Me,
         headers(
            ("set-cookie" = String, description = "The session cookie `sl_session` (HttpOnly, SameSite=Strict)."),
            ("cache-control" = String, description = "`no-store`."),
         )),
        LoginErrors,
    ),
)]
pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let client = crate::client::client_of(&state, &parts);
    let body = axum::body::to_bytes(body, MAX_LOGIN_BYTES)
        .await
        .map_err(|_| ApiError::new(ErrorCode::InvalidBody, "the sign-in body is too large"))?;
    let request: LoginRequest = crate::extract::parse_object(&body)
        // The sign-in answers every unreadable body alike (documented: 422 only).
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.message().to_owned()))?;
    if request.password.is_empty() || request.password.len() > MAX_PASSWORD_BYTES {
        return Err(refused());
    }
    let guard = state.password_guard();
    let ip = client.ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let attempt = guard
        .reserve(ip, guard.target("sign-in", &request.name))
        .map_err(|wait| {
            ApiError::too_many(
                wait,
                format!("too many sign-in attempts for this name; retry in {wait} s"),
            )
        })?;
    let found = state.store().credentials(&request.name).await?;
    let hash = match &found {
        Some((_, Some(hash))) => hash.clone(),
        _ => stand_in_hash(&state).await?.to_owned(),
    };
    let right = {
        let _slot = guard.slot_for(&hash).await?;
        verify_password(hash, request.password).await
    };
    let user = match found {
        Some((user, Some(_))) if right => user,
        _ => return Err(refused()),
    };
    guard.succeeded(attempt);
    if user.disabled {
        return Err(ApiError::unauthorized("this account is disabled"));
    }
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "ss_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let now = now_unix();
    let ttl = i64::try_from(state.config().session_ttl_seconds).unwrap_or(i64::MAX);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(MAX_AGENT_CHARS)
        .collect();
    let session = Session {
        token_hash: hash_api_key(&token),
        user_id: user.id,
        created_at: now,
        expires_at: now.saturating_add(ttl),
        user_agent,
    };
    state.store().create_session(session.clone()).await?;
    let caller = Caller {
        scopes: Scopes::full(user.role),
        key_hash: session.token_hash,
        via_session: true,
        user,
    };
    let mut response = Json(Me::of(&caller)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(client.https, &token, ttl));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

api_errors!(LogoutErrors: AUTH; );

/// `POST /api/v1/auth/logout`: ends the caller's session and clears the cookie; 204.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "accounts",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 204, description = "Signed out (with an API key: nothing to end).",
         headers(("set-cookie" = String, description = "Clears the session cookie."))),
        LogoutErrors,
    ),
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let client = crate::client::client_of(&state, &request.into_parts().0);
    if caller.via_session {
        state.store().delete_session(caller.key_hash).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(client.https, "", 0));
    Ok(response)
}

api_errors!(MeErrors: AUTH; );

/// `GET /api/v1/auth/me`: who the key or session belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "accounts",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "Who the key or session belongs to.", body = Me), MeErrors),
)]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me::of(&caller))
}

/// A session as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// The session's public id (16 hex digits), for ending it.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    id: String,
    /// When the user signed in (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When the session ends by itself (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
    /// The `User-Agent` that signed in (at most 200 characters).
    user_agent: String,
    /// Whether this request came with it.
    current: bool,
}

/// Answer of `GET /api/v1/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// The caller's sessions.
    items: Vec<SessionView>,
}

api_errors!(ListSessionsErrors: AUTH; );

/// `GET /api/v1/sessions`: the caller's signed-in sessions.
#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "accounts",
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The caller's sessions.", body = SessionList), ListSessionsErrors),
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionList>, ApiError> {
    caller.require(Scope::Read)?;
    let sessions = state.store().list_sessions(caller.user.id).await?;
    Ok(Json(SessionList {
        items: sessions
            .into_iter()
            .map(|s| SessionView {
                id: s.id(),
                created_at: to_rfc3339(s.created_at),
                expires_at: to_rfc3339(s.expires_at),
                current: caller.via_session && caller.key_hash == s.token_hash,
                user_agent: s.user_agent,
            })
            .collect(),
    }))
}

api_errors!(EndSessionErrors: AUTH; SessionNotFound);

/// `DELETE /api/v1/sessions/{id}`: ends one of the caller's sessions; 204.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}",
    tag = "accounts",
    params(("id" = String, Path, description = "The session's id (16 hex digits).")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The session has ended."), EndSessionErrors),
)]
pub async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::new(ErrorCode::SessionNotFound, "no such session");
    let session = state
        .store()
        .list_sessions(caller.user.id)
        .await?
        .into_iter()
        .find(|s| s.id() == id)
        .ok_or_else(not_found)?;
    if !state.store().delete_session(session.token_hash).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
