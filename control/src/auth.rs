//! Authentication: `Authorization: Bearer <api key>` → the calling user.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use shortlink_core::{KEY_HASH_LEN, Role, User, hash_api_key};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of every API key, so leaked keys are easy to recognize and scan for.
pub const KEY_PREFIX: &str = "sl_";

/// Creates a new random API key (shown once; only its hash is stored).
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user the key belongs to.
    pub user: User,
    /// The hash of the key used, which write rate limits are counted by.
    pub key_hash: [u8; KEY_HASH_LEN],
}

impl Caller {
    /// Fails with 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin API key"))
        }
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

/// The key in an `Authorization: Bearer <key>` header; `None` without the header.
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(header) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    text.strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(Some)
        .ok_or_else(|| ApiError::unauthorized("use the Bearer scheme: Authorization: Bearer <key>"))
}

/// The caller an API key belongs to; 401 for an unknown key.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Caller, ApiError> {
    let key_hash = hash_api_key(key);
    let user = state
        .store()
        .user_by_key_hash(key_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))?;
    Ok(Caller { user, key_hash })
}
