//! The API's one error type: every failure becomes `{"error": {"code", "message"}}`
//! with a fitting status. Internal details are logged, never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shortlink_core::{AliasError, TagError, TargetError};
use shortlink_store::StoreError;
use tracing::error;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// 422 with a stable code: the request was understood but a value is not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 404 for a link that does not exist or belongs to someone else.
    pub fn link_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such link")
    }

    /// 401: missing or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a valid key whose role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_seconds: u64) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!("too many writes; retry in {retry_after_seconds} s"),
            retry_after_seconds: Some(retry_after_seconds),
        }
    }

    /// 429 `rate_limited` with `Retry-After` and a message of its own.
    pub fn too_many(retry_after_seconds: u64, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: message.into(),
            retry_after_seconds: Some(retry_after_seconds),
        }
    }

    /// 429 `busy` with `Retry-After: 1`: a bounded resource (argon2 slots) stayed full.
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "busy",
            message: message.into(),
            retry_after_seconds: Some(1),
        }
    }

    /// 500 for a failure that is ours; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        error!(%detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; it has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shortlink\""),
            );
        }
        response
    }
}

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        ApiError::invalid(e.code(), e.to_string())
    }
}

impl From<AliasError> for ApiError {
    fn from(e: AliasError) -> Self {
        let code = match e {
            AliasError::Reserved(_) => "alias_reserved",
            AliasError::Length | AliasError::Characters => "alias_invalid",
        };
        ApiError::invalid(code, e.to_string())
    }
}

impl From<TagError> for ApiError {
    fn from(e: TagError) -> Self {
        ApiError::invalid("tags_invalid", e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CodeTaken(code) => ApiError::new(
                StatusCode::CONFLICT,
                "alias_taken",
                format!("alias '{code}' is already taken"),
            ),
            StoreError::UserExists(name) => ApiError::new(
                StatusCode::CONFLICT,
                "user_exists",
                format!("a user named '{name}' exists"),
            ),
            StoreError::DomainExists(name) => ApiError::new(
                StatusCode::CONFLICT,
                "domain_exists",
                format!("domain '{name}' is already registered"),
            ),
            StoreError::NoSuchUser(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "user_not_found",
                format!("no user {id}"),
            ),
            StoreError::Closed | StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "invalid_json",
        };
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the limit".to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send a JSON body with Content-Type: application/json".to_owned()
            }
            _ => rejection.body_text(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid("invalid_query", rejection.body_text())
    }
}
