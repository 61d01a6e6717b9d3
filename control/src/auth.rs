//! Authentication: `Authorization: Bearer <api key>` (programs) or the `sl_session` cookie
//! of a signed-in person → the calling user and what they may do. Keys and sessions are
//! looked up by their SHA-256 on every request, so a revoked or expired one, or a
//! disabled user's, is refused at once on every control plane.
//!
//! A cookie is sent by the browser on its own, so requests authenticated by it must also
//! prove they come from this site's page: an `Origin`, when sent, must be this host, and
//! state-changing methods must carry `X-Requested-With` (a header no other site can add
//! without a CORS preflight this server never grants). The cookie is `SameSite=Strict`
//! as well.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use shortlink_core::time_util::now_unix;
use shortlink_core::{ApiKey, KEY_HASH_LEN, Role, Scope, Scopes, User, hash_api_key};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of every API key, so leaked keys are easy to recognize and scan for.
pub const KEY_PREFIX: &str = "sl_";

/// Characters of a key kept (beside its hash) to recognise it by in listings: `sl_` and
/// six more, 36 of the key's 256 random bits.
const SHOWN_PREFIX_CHARS: usize = 9;

/// How often a key's last use is written back, at most, in seconds.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// Creates a new random API key (shown once; only its hash is stored).
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored record of a new key `text` for `user`.
pub fn new_key_record(
    text: &str,
    user: &User,
    label: &str,
    scopes: Scopes,
    expires_at: Option<i64>,
) -> ApiKey {
    ApiKey {
        key_hash: hash_api_key(text),
        user_id: user.id,
        label: label.to_owned(),
        prefix: text.chars().take(SHOWN_PREFIX_CHARS).collect(),
        scopes,
        created_at: now_unix(),
        expires_at,
        last_used_at: None,
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user the key belongs to.
    pub user: User,
    /// The hash of the key or session token used, which write rate limits are counted by.
    pub key_hash: [u8; KEY_HASH_LEN],
    /// What the key may do.
    pub scopes: Scopes,
    /// Whether the caller signed in with a password (`key_hash` is then its session's).
    pub via_session: bool,
}

impl Caller {
    /// Fails with 403 unless the key holds `scope` (or one that implies it).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this API key lacks the '{}' scope",
                scope.as_str()
            )))
        }
    }

    /// Fails with 403 unless the caller is an admin using a key with the admin scope.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.role != Role::Admin {
            return Err(ApiError::forbidden("this needs an admin API key"));
        }
        self.require(Scope::Admin)
    }

    /// Whether the caller acts as an admin (role and scope).
    pub fn is_admin(&self) -> bool {
        self.require_admin().is_ok()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        caller_of(state, &parts.method, &parts.headers, None).await
    }
}

/// The caller of a request, from (in this order) its `Authorization` header, a key it
/// carries as `access_token` (event streams, whose browser clients cannot set headers),
/// or its session cookie, which also needs the request to come from this site.
pub async fn caller_of(
    state: &AppState,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    access_token: Option<&str>,
) -> Result<Caller, ApiError> {
    if let Some(key) = bearer_key(headers)?.or(access_token.filter(|t| !t.is_empty())) {
        return authenticate(state, key).await;
    }
    if let Some(token) = session_cookie(headers) {
        check_same_origin(method, headers)?;
        return authenticate_session(state, token).await;
    }
    Err(ApiError::unauthorized(
        "send your API key as Authorization: Bearer <key>, or sign in",
    ))
}

/// Whether the key or session `caller` authenticated with is still good: not revoked,
/// ended or expired, and its user not disabled. Long-lived requests (event streams) ask
/// again every [`RECHECK_EVERY`] and end when it is not.
pub async fn still_valid(state: &AppState, caller: &Caller) -> bool {
    let now = now_unix();
    let found = match caller.via_session {
        true => state
            .store()
            .session_by_hash(caller.key_hash)
            .await
            .map(|found| found.map(|(s, u)| (s.expires_at > now, u.disabled))),
        false => state
            .store()
            .key_by_hash(caller.key_hash)
            .await
            .map(|found| found.map(|(k, u)| (!k.is_expired(now), u.disabled))),
    };
    match found {
        Ok(Some((unexpired, disabled))) => unexpired && !disabled,
        Ok(None) => false,
        // A store that cannot answer right now does not end a stream.
        Err(_) => true,
    }
}

/// How often an open event stream checks that its key or session is still good.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sl_session";

/// The session token in the request's cookies, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .find(|token| !token.is_empty())
}

/// Refuses a cookie-authenticated request that another site could have made: a foreign
/// `Origin`, or a state-changing method without `X-Requested-With`.
pub fn check_same_origin(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    let forged = || {
        ApiError::forbidden(
            "this request did not come from this site's page (Origin or X-Requested-With)",
        )
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority)
            .unwrap_or_default();
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(forged());
        }
    }
    let safe = matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !safe && !headers.contains_key("x-requested-with") {
        return Err(forged());
    }
    Ok(())
}

/// The caller a session token belongs to; 401 for an unknown, ended or expired session
/// or a disabled user. A signed-in person has every scope of their role.
pub async fn authenticate_session(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let token_hash = hash_api_key(token);
    let (session, user) = state
        .store()
        .session_by_hash(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the session has ended; sign in again"))?;
    if session.expires_at <= now_unix() {
        return Err(ApiError::unauthorized(
            "the session has expired; sign in again",
        ));
    }
    if user.disabled {
        return Err(ApiError::unauthorized("this account is disabled"));
    }
    Ok(Caller {
        scopes: Scopes::full(user.role),
        user,
        key_hash: token_hash,
        via_session: true,
    })
}

/// The key in an `Authorization: Bearer <key>` header; `None` without the header. The
/// scheme is matched without regard to case (RFC 9110, section 11.1).
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(header) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let (scheme, key) = text.trim_start().split_once(' ').unwrap_or((text, ""));
    let key = key.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() {
        Ok(Some(key))
    } else {
        Err(ApiError::unauthorized(
            "use the Bearer scheme: Authorization: Bearer <key>",
        ))
    }
}

/// The caller an API key belongs to; 401 for an unknown, revoked or expired key or a
/// disabled user.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let key_hash = hash_api_key(key);
    let (record, user) = state
        .store()
        .key_by_hash(key_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))?;
    let now = now_unix();
    if record.is_expired(now) {
        return Err(ApiError::unauthorized("the API key has expired"));
    }
    if user.disabled {
        return Err(ApiError::unauthorized("this account is disabled"));
    }
    if record
        .last_used_at
        .is_none_or(|at| now - at >= TOUCH_EVERY_SECONDS)
        && state.should_touch_key(&key_hash, now, TOUCH_EVERY_SECONDS)
    {
        // Recorded off the request's path: a lost write only leaves `last_used_at` older.
        let store = state.store().clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(key_hash, now).await {
                tracing::debug!(error = %e, "cannot record a key's last use");
            }
        });
    }
    let scopes = match user.role {
        Role::Admin => record.scopes,
        // A user's key never acts as an admin, whatever it stores.
        Role::User => Scopes::from_iter(record.scopes.iter().filter(|s| *s != Scope::Admin)),
    };
    Ok(Caller {
        user,
        key_hash,
        scopes,
        via_session: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        #[track_caller]
        fn check(header: &str, expected: Option<&str>) {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(header).unwrap(),
            );
            assert_eq!(bearer_key(&headers).ok().flatten(), expected, "{header}");
        }
        check("Bearer sl_a", Some("sl_a"));
        check("bearer sl_a", Some("sl_a"));
        check("BEARER sl_a", Some("sl_a"));
        check("bEaReR   sl_a ", Some("sl_a"));
        check("Basic sl_a", None);
        check("Bearer", None);
        check("Bearer ", None);
        check("Bearersl_a", None);
        assert_eq!(bearer_key(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn records_keep_a_short_prefix_only() {
        let text = generate_api_key();
        let user = User {
            id: 1,
            name: "u".into(),
            role: Role::User,
            created_at: 0,
            disabled: false,
        };
        let record = new_key_record(&text, &user, "ci", Scopes::full(Role::User), None);
        assert_eq!(record.prefix.len(), SHOWN_PREFIX_CHARS);
        assert!(text.starts_with(&record.prefix) && text.len() > 40);
        assert_eq!(record.key_hash, hash_api_key(&text));
    }
}
