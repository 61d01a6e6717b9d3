//! Authentication: `Authorization: Bearer <api key>` → the calling user and what the key
//! may do. Keys are looked up by their SHA-256 on every request, so a revoked or expired
//! key, or a disabled user's, is refused at once on every control plane.

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
    /// The hash of the key used, which write rate limits are counted by.
    pub key_hash: [u8; KEY_HASH_LEN],
    /// What the key may do.
    pub scopes: Scopes,
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
        let key = bearer_key(&parts.headers)?.ok_or_else(|| {
            ApiError::unauthorized("send your API key as Authorization: Bearer <key>")
        })?;
        authenticate(state, key).await
    }
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
