//! Admin endpoints: users and API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortlink_core::time_util::to_rfc3339;
use shortlink_core::{Role, User, UserId, hash_api_key};

use crate::auth::{Caller, generate_api_key};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Longest user name.
const MAX_NAME_LEN: usize = 64;

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    name: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "user".into()
}

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    id: UserId,
    name: String,
    role: Role,
    created_at: String,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            id: user.id,
            name: user.name,
            role: user.role,
            created_at: to_rfc3339(user.created_at),
        }
    }
}

/// Checks a user name: 1–64 letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME_LEN} letters, digits or '.', '_', '-', '@'"),
        ))
    }
}

/// `POST /api/v1/users` (admin): 201 with the user.
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    validate_user_name(&request.name)?;
    let role = Role::parse(&request.role)
        .ok_or_else(|| ApiError::invalid("invalid_role", "role must be 'admin' or 'user'"))?;
    let user = state.store().create_user(&request.name, role).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Body of `POST /api/v1/keys`: the user by id or by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    user_id: Option<UserId>,
    user: Option<String>,
    #[serde(default)]
    label: String,
}

/// A new key: the only time its text is shown.
#[derive(Debug, Serialize)]
pub struct KeyCreated {
    key: String,
    user_id: UserId,
    label: String,
}

/// `POST /api/v1/keys` (admin): 201 with the new key.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    caller.require_admin()?;
    state.check_write(&caller.key_hash)?;
    if request.label.len() > 128 {
        return Err(ApiError::invalid(
            "invalid_label",
            "label must be at most 128 bytes",
        ));
    }
    let user = match (request.user_id, request.user.as_deref()) {
        (Some(id), None) => state.store().get_user(id).await?,
        (None, Some(name)) => state.store().user_by_name(name).await?,
        _ => {
            return Err(ApiError::invalid(
                "invalid_body",
                "give exactly one of user_id or user",
            ));
        }
    }
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "no such user"))?;
    let key = generate_api_key();
    state
        .store()
        .add_api_key(user.id, hash_api_key(&key), &request.label)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            key,
            user_id: user.id,
            label: request.label,
        }),
    ))
}
