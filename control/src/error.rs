//! The API's one error type: every failure becomes `{"error": {"code", "message"}}`
//! with a fitting status. Internal details are logged, never sent.
//!
//! The codes are the closed set [`ErrorCode`], listed by [`ErrorCode::ALL`]; each code
//! names its wire string, the HTTP status it is answered with, and a description.

use std::fmt;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use serde_json::json;
use shortlink_core::{AliasError, TagError, TargetError};
use shortlink_store::StoreError;
use tracing::error;

/// Declares [`ErrorCode`] from one list: each variant once, with its wire string, its
/// status (a `StatusCode` constant) and a description for people.
macro_rules! error_codes {
    ($($variant:ident => $wire:literal, $status:ident, $description:literal;)+) => {
        /// A stable, machine-readable API error code: the `code` of the error envelope
        /// `{"error": {"code", "message"}}`.
        ///
        /// Each code is answered with its own [`status`](ErrorCode::status), with these
        /// exceptions (made with [`ApiError::with_status`]):
        /// - `invalid_form` is 400 for a multipart upload form that cannot be read, but 422
        ///   when the password form of a protected link is too large;
        /// - the codes made from an axum [`JsonRejection`] (`invalid_json`, `invalid_body`,
        ///   `payload_too_large`, `unsupported_media_type`) keep the rejection's own status,
        ///   which is each code's status with axum 0.8.
        ///
        /// `invalid_message` is never an HTTP answer: it is sent in an error frame on the
        /// `/api/v1/ws` WebSocket, so its status is nominal.
        ///
        /// The wire strings are part of the API: never change one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = concat!("`", $wire, "` (", stringify!($status), "): ", $description)]
                $variant,
            )+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire string, as sent in the error envelope.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)+
                }
            }

            /// The HTTP status this code is answered with.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }

            /// What the code means, for people (documentation, not the response message).
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $description,)+
                }
            }

            /// The code with this wire string, if there is one.
            pub fn parse(wire: &str) -> Option<ErrorCode> {
                match wire {
                    $($wire => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    // Any endpoint.
    NotFound => "not_found", NOT_FOUND,
        "No such endpoint, link, upload or file, or it belongs to someone else.";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED,
        "The endpoint does not support the request's method.";
    Unauthorized => "unauthorized", UNAUTHORIZED,
        "The API key, session or secret is missing, wrong or expired, or its user is disabled.";
    Forbidden => "forbidden", FORBIDDEN,
        "The caller is known, but its role or scopes do not allow this.";
    RateLimited => "rate_limited", TOO_MANY_REQUESTS,
        "Too many requests; retry after the Retry-After seconds.";
    Busy => "busy", TOO_MANY_REQUESTS,
        "A bounded resource (password hashing) stayed busy; retry after Retry-After.";
    Internal => "internal", INTERNAL_SERVER_ERROR,
        "A failure on the server's side; the detail is logged, not sent.";
    StorageUnavailable => "storage_unavailable", SERVICE_UNAVAILABLE,
        "The database did not answer in time (a node lost or overloaded): a change may or may not have been made; sending the same request again after Retry-After is safe.";
    InvalidJson => "invalid_json", BAD_REQUEST,
        "The body is not valid JSON, or could not be read.";
    InvalidBody => "invalid_body", UNPROCESSABLE_ENTITY,
        "The body has the wrong shape or conflicting fields, is too large, or was cut off.";
    InvalidQuery => "invalid_query", UNPROCESSABLE_ENTITY,
        "The query string does not fit the endpoint's parameters.";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE,
        "The request body is larger than the configured limit.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "A JSON body was sent without Content-Type: application/json.";
    InvalidForm => "invalid_form", BAD_REQUEST,
        "A form body could not be read (422 for a too large protected-link password form).";
    InvalidLimit => "invalid_limit", UNPROCESSABLE_ENTITY,
        "A page size or result limit is out of range.";
    InvalidCursor => "invalid_cursor", UNPROCESSABLE_ENTITY,
        "A page cursor or event id is not one the API returned.";

    // Target URLs (the codes of `shortlink_core::TargetError`).
    UrlEmpty => "url_empty", UNPROCESSABLE_ENTITY,
        "The target URL is empty.";
    UrlTooLong => "url_too_long", UNPROCESSABLE_ENTITY,
        "The target URL is longer than the configured limit.";
    UrlInvalidCharacters => "url_invalid_characters", UNPROCESSABLE_ENTITY,
        "The target URL contains whitespace or control characters.";
    UrlNotAbsolute => "url_not_absolute", UNPROCESSABLE_ENTITY,
        "The target URL is not absolute (it has no scheme).";
    UrlInvalid => "url_invalid", UNPROCESSABLE_ENTITY,
        "The target URL cannot be parsed.";
    UrlSchemeNotAllowed => "url_scheme_not_allowed", UNPROCESSABLE_ENTITY,
        "The target URL's scheme is not http or https.";
    UrlNoHost => "url_no_host", UNPROCESSABLE_ENTITY,
        "The target URL has no host.";
    UrlHasCredentials => "url_has_credentials", UNPROCESSABLE_ENTITY,
        "The target URL holds user:password@ credentials.";
    UrlHostBlocked => "url_host_blocked", UNPROCESSABLE_ENTITY,
        "The target URL's host is on the blocklist.";
    UrlLoops => "url_loops", UNPROCESSABLE_ENTITY,
        "The target URL leads back to this service (a loopback address, its own host or one of its custom domains), so the link would loop.";

    // Links.
    AliasInvalid => "alias_invalid", UNPROCESSABLE_ENTITY,
        "The custom alias has the wrong length or characters.";
    AliasReserved => "alias_reserved", UNPROCESSABLE_ENTITY,
        "The custom alias is one of the service's own path segments.";
    AliasTaken => "alias_taken", CONFLICT,
        "The custom alias is already used on that domain.";
    TagsInvalid => "tags_invalid", UNPROCESSABLE_ENTITY,
        "The tags break the tag rules (count, length or characters).";
    InvalidExpiresAt => "invalid_expires_at", UNPROCESSABLE_ENTITY,
        "expires_at is not an RFC 3339 time (in the future, for keys).";
    InvalidMaxClicks => "invalid_max_clicks", UNPROCESSABLE_ENTITY,
        "max_clicks is out of range.";
    InvalidRedirect => "invalid_redirect", UNPROCESSABLE_ENTITY,
        "The redirect status is not one a link may use.";
    InvalidTargeting => "invalid_targeting", UNPROCESSABLE_ENTITY,
        "The targeting rules are not valid.";
    InvalidPassword => "invalid_password", UNPROCESSABLE_ENTITY,
        "A link password is empty or too long.";
    UnknownDomain => "unknown_domain", UNPROCESSABLE_ENTITY,
        "The link's domain is not registered.";
    LinkModerated => "link_moderated", FORBIDDEN,
        "An admin disabled the link; only an admin can turn it back on.";
    InvalidRange => "invalid_range", UNPROCESSABLE_ENTITY,
        "A stats time range is not RFC 3339, or from is not before to.";
    RangeTooLarge => "range_too_large", UNPROCESSABLE_ENTITY,
        "A stats query spans too many buckets.";
    InvalidSize => "invalid_size", UNPROCESSABLE_ENTITY,
        "A QR code or upload size is out of range.";
    InvalidFormat => "invalid_format", UNPROCESSABLE_ENTITY,
        "The QR code format is not svg or png.";
    QrFailed => "qr_failed", UNPROCESSABLE_ENTITY,
        "The short URL cannot be encoded as a QR code.";

    // Bulk import.
    InvalidCsv => "invalid_csv", UNPROCESSABLE_ENTITY,
        "The CSV import is empty, has unknown or missing columns, or a bad record.";
    RecordTooLong => "record_too_long", UNPROCESSABLE_ENTITY,
        "A CSV record is longer than the limit.";
    TooManyRows => "too_many_rows", UNPROCESSABLE_ENTITY,
        "The CSV import holds more rows than allowed.";

    // Users and moderation.
    InvalidName => "invalid_name", UNPROCESSABLE_ENTITY,
        "A user name has the wrong length or characters.";
    InvalidRole => "invalid_role", UNPROCESSABLE_ENTITY,
        "The role is not admin or user.";
    UserNotFound => "user_not_found", NOT_FOUND,
        "No such user.";
    UserExists => "user_exists", CONFLICT,
        "A user with that name exists.";
    CannotDisableSelf => "cannot_disable_self", CONFLICT,
        "An admin cannot disable their own account.";
    InvalidReason => "invalid_reason", UNPROCESSABLE_ENTITY,
        "A moderation reason is empty or too long.";

    // API keys.
    InvalidScope => "invalid_scope", UNPROCESSABLE_ENTITY,
        "A key scope is unknown, missing, or not allowed for the key's owner.";
    InvalidLabel => "invalid_label", UNPROCESSABLE_ENTITY,
        "A key label is too long or reserved.";
    InvalidGrace => "invalid_grace", UNPROCESSABLE_ENTITY,
        "A key rotation's grace period is too long.";
    KeyNotFound => "key_not_found", NOT_FOUND,
        "No such API key.";

    // Custom domains.
    InvalidDomain => "invalid_domain", UNPROCESSABLE_ENTITY,
        "The domain name is not valid, or is the default domain.";
    InvalidUsers => "invalid_users", UNPROCESSABLE_ENTITY,
        "A domain names too many users.";
    UnknownUser => "unknown_user", UNPROCESSABLE_ENTITY,
        "A domain names a user that does not exist.";
    DomainNotFound => "domain_not_found", NOT_FOUND,
        "The domain is not registered.";
    DomainExists => "domain_exists", CONFLICT,
        "The domain is registered already.";
    DomainTargeted => "domain_targeted", CONFLICT,
        "Links point at the domain being registered; registering it would make them loop.";

    // Sign-in and sessions.
    InvalidCredentials => "invalid_credentials", UNAUTHORIZED,
        "The user name and password do not match.";
    SessionNotFound => "session_not_found", NOT_FOUND,
        "No such session.";

    // Notifications.
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE,
        "The server is shutting down and takes no new subscribers.";
    TooManySubscribers => "too_many_subscribers", TOO_MANY_REQUESTS,
        "The user or the instance has as many event streams as allowed.";
    InvalidWait => "invalid_wait", UNPROCESSABLE_ENTITY,
        "A long poll's wait is too long.";
    UpgradeRequired => "upgrade_required", UPGRADE_REQUIRED,
        "The endpoint takes a WebSocket handshake only (Connection: upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13, Sec-WebSocket-Key).";
    InvalidMessage => "invalid_message", BAD_REQUEST,
        "WebSocket only (nominal status): a message is not JSON like {\"resume_after\": 42}.";

    // Webhooks.
    WebhookUrlInvalid => "webhook_url_invalid", UNPROCESSABLE_ENTITY,
        "The webhook URL is not an absolute http or https URL without credentials, or is longer than 2048 bytes.";
    WebhookTargetForbidden => "webhook_target_forbidden", UNPROCESSABLE_ENTITY,
        "The webhook URL's host is, or resolves to, a loopback, private, link-local or metadata address (allowed only in control.webhooks.allowed_networks), or does not resolve.";
    TooManyWebhooks => "too_many_webhooks", CONFLICT,
        "The user has as many webhooks as allowed.";
    WebhookNotFound => "webhook_not_found", NOT_FOUND,
        "No such webhook.";
    EventNotFound => "event_not_found", NOT_FOUND,
        "No such event in the user's log (events are kept for a limited time).";

    // Backups.
    InvalidBackup => "invalid_backup", UNPROCESSABLE_ENTITY,
        "The restore's body is not a backup this version reads (not zstd, a bad line, a newer format, or cut off).";
    NotEmpty => "not_empty", CONFLICT,
        "The installation holds links, uploads or clicks: a restore goes into a fresh one.";

    // Click ingestion from proxies.
    IngestionDisabled => "ingestion_disabled", SERVICE_UNAVAILABLE,
        "No internal secret is configured, so click ingestion is off.";
    InvalidBatchId => "invalid_batch_id", UNPROCESSABLE_ENTITY,
        "A click batch's id has the wrong length or characters.";
    BatchTooLarge => "batch_too_large", PAYLOAD_TOO_LARGE,
        "A click batch holds more clicks than allowed.";
    InvalidCount => "invalid_count", UNPROCESSABLE_ENTITY,
        "A click's count is zero.";
    InvalidTimestamp => "invalid_timestamp", UNPROCESSABLE_ENTITY,
        "A click's time is outside the accepted window.";
    FieldTooLong => "field_too_long", UNPROCESSABLE_ENTITY,
        "A click field is longer than the limit.";

    // Uploads.
    UploadTooLarge => "upload_too_large", PAYLOAD_TOO_LARGE,
        "The upload is larger than the configured limit.";
    UploadInterrupted => "upload_interrupted", BAD_REQUEST,
        "The upload body could not be read to the end.";
    MissingFile => "missing_file", UNPROCESSABLE_ENTITY,
        "The multipart form has no field named file.";
    InvalidSignature => "invalid_signature", FORBIDDEN,
        "A presigned upload URL's signature is wrong or expired.";
    SizeMismatch => "size_mismatch", UNPROCESSABLE_ENTITY,
        "The uploaded bytes do not match the announced size.";
    UploadMissing => "upload_missing", CONFLICT,
        "Nothing was uploaded to the presigned URL (yet).";
    AlreadyCompleted => "already_completed", CONFLICT,
        "The upload is complete already.";
    QuotaExceeded => "quota_exceeded", PAYLOAD_TOO_LARGE,
        "The upload would take the owner's stored bytes over their quota.";
    InvalidPartSize => "invalid_part_size", UNPROCESSABLE_ENTITY,
        "A multipart upload's part size is out of range, or makes too many parts.";
    InvalidPart => "invalid_part", UNPROCESSABLE_ENTITY,
        "A part number is not one of the upload's parts, or a part list is malformed.";
    InvalidChecksum => "invalid_checksum", UNPROCESSABLE_ENTITY,
        "A part's SHA-256 is not 64 hex digits.";
    ChecksumMismatch => "checksum_mismatch", UNPROCESSABLE_ENTITY,
        "A part's bytes do not have the SHA-256 its URL was signed for, or a stored part's differs from the one given.";
    PartsMissing => "parts_missing", CONFLICT,
        "A multipart upload cannot complete: parts are missing or of the wrong size.";
    NotMultipart => "not_multipart", CONFLICT,
        "The upload is not a pending multipart upload.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    status: StatusCode,
    message: String,
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error with a stable code, answered with the code's status, and a message for
    /// people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    /// The same error answered with another status than its code's. Only for the
    /// exceptions listed on [`ErrorCode`]; a new code is better than a new exception.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// 404 for a link that does not exist or belongs to someone else.
    pub fn link_not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "no such link")
    }

    /// 401: missing or unknown API key.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// 403: a valid key whose role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after_seconds: u64) -> ApiError {
        ApiError::too_many(
            retry_after_seconds,
            format!("too many writes; retry in {retry_after_seconds} s"),
        )
    }

    /// 429 `rate_limited` with `Retry-After` and a message of its own.
    pub fn too_many(retry_after_seconds: u64, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_seconds: Some(retry_after_seconds),
            ..ApiError::new(ErrorCode::RateLimited, message)
        }
    }

    /// 429 `busy` with `Retry-After: 1`: a bounded resource (argon2 slots) stayed full.
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_seconds: Some(1),
            ..ApiError::new(ErrorCode::Busy, message)
        }
    }

    /// 500 `internal` for a failure that is ours; the detail goes to the log only.
    pub fn internal(detail: impl fmt::Display) -> ApiError {
        error!(%detail, "internal error");
        ApiError::new(
            ErrorCode::Internal,
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
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code.as_str(), "message": self.message}}));
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
        // The same codes as `TargetError::code`; a test holds the two together.
        let code = match e {
            TargetError::Empty => ErrorCode::UrlEmpty,
            TargetError::TooLong { .. } => ErrorCode::UrlTooLong,
            TargetError::ControlCharacters => ErrorCode::UrlInvalidCharacters,
            TargetError::NotAbsolute => ErrorCode::UrlNotAbsolute,
            TargetError::Invalid(_) => ErrorCode::UrlInvalid,
            TargetError::Scheme(_) => ErrorCode::UrlSchemeNotAllowed,
            TargetError::NoHost => ErrorCode::UrlNoHost,
            TargetError::Credentials => ErrorCode::UrlHasCredentials,
            TargetError::BlockedHost(_) => ErrorCode::UrlHostBlocked,
            TargetError::Loop(_) => ErrorCode::UrlLoops,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<AliasError> for ApiError {
    fn from(e: AliasError) -> Self {
        let code = match e {
            AliasError::Reserved(_) => ErrorCode::AliasReserved,
            AliasError::Length | AliasError::Characters => ErrorCode::AliasInvalid,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<TagError> for ApiError {
    fn from(e: TagError) -> Self {
        ApiError::new(ErrorCode::TagsInvalid, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CodeTaken(code) => ApiError::new(
                ErrorCode::AliasTaken,
                format!("alias '{code}' is already taken"),
            ),
            StoreError::UserExists(name) => ApiError::new(
                ErrorCode::UserExists,
                format!("a user named '{name}' exists"),
            ),
            StoreError::DomainExists(name) => ApiError::new(
                ErrorCode::DomainExists,
                format!("domain '{name}' is already registered"),
            ),
            StoreError::NoSuchUser(id) => {
                ApiError::new(ErrorCode::UserNotFound, format!("no user {id}"))
            }
            StoreError::OverQuota { needed, quota } => ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "your uploads would take {needed} bytes with this one; the quota is {quota} bytes"
                ),
            ),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "the store did not answer in time");
                ApiError {
                    retry_after_seconds: Some(1),
                    ..ApiError::new(
                        ErrorCode::StorageUnavailable,
                        "the database did not answer in time; retry (it is safe to)",
                    )
                }
            }
            StoreError::Closed | StoreError::Backend(_) => ApiError::internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
            _ => ErrorCode::InvalidJson,
        };
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the limit".to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send a JSON body with Content-Type: application/json".to_owned()
            }
            _ => rejection.body_text(),
        };
        // axum's status, which equals the code's for every rejection axum 0.8 makes
        // (`invalid_json` covers its 400s); kept should a later axum answer another.
        ApiError::new(code, message).with_status(status)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every code's wire string, written out: the match has no catch-all, so a new
    /// variant does not compile until it is pinned here, and a renamed wire string
    /// (a breaking API change) fails `wire_strings_are_pinned`.
    fn pinned(code: ErrorCode) -> &'static str {
        match code {
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidForm => "invalid_form",
            ErrorCode::InvalidLimit => "invalid_limit",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::UrlEmpty => "url_empty",
            ErrorCode::UrlTooLong => "url_too_long",
            ErrorCode::UrlInvalidCharacters => "url_invalid_characters",
            ErrorCode::UrlNotAbsolute => "url_not_absolute",
            ErrorCode::UrlInvalid => "url_invalid",
            ErrorCode::UrlSchemeNotAllowed => "url_scheme_not_allowed",
            ErrorCode::UrlNoHost => "url_no_host",
            ErrorCode::UrlHasCredentials => "url_has_credentials",
            ErrorCode::UrlHostBlocked => "url_host_blocked",
            ErrorCode::UrlLoops => "url_loops",
            ErrorCode::AliasInvalid => "alias_invalid",
            ErrorCode::AliasReserved => "alias_reserved",
            ErrorCode::AliasTaken => "alias_taken",
            ErrorCode::TagsInvalid => "tags_invalid",
            ErrorCode::InvalidExpiresAt => "invalid_expires_at",
            ErrorCode::InvalidMaxClicks => "invalid_max_clicks",
            ErrorCode::InvalidRedirect => "invalid_redirect",
            ErrorCode::InvalidTargeting => "invalid_targeting",
            ErrorCode::InvalidPassword => "invalid_password",
            ErrorCode::UnknownDomain => "unknown_domain",
            ErrorCode::LinkModerated => "link_moderated",
            ErrorCode::InvalidRange => "invalid_range",
            ErrorCode::RangeTooLarge => "range_too_large",
            ErrorCode::InvalidSize => "invalid_size",
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::QrFailed => "qr_failed",
            ErrorCode::InvalidCsv => "invalid_csv",
            ErrorCode::RecordTooLong => "record_too_long",
            ErrorCode::TooManyRows => "too_many_rows",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidRole => "invalid_role",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::CannotDisableSelf => "cannot_disable_self",
            ErrorCode::InvalidReason => "invalid_reason",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidLabel => "invalid_label",
            ErrorCode::InvalidGrace => "invalid_grace",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::InvalidDomain => "invalid_domain",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::InvalidUsers => "invalid_users",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::DomainNotFound => "domain_not_found",
            ErrorCode::DomainExists => "domain_exists",
            ErrorCode::DomainTargeted => "domain_targeted",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::TooManySubscribers => "too_many_subscribers",
            ErrorCode::InvalidWait => "invalid_wait",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::WebhookUrlInvalid => "webhook_url_invalid",
            ErrorCode::WebhookTargetForbidden => "webhook_target_forbidden",
            ErrorCode::TooManyWebhooks => "too_many_webhooks",
            ErrorCode::WebhookNotFound => "webhook_not_found",
            ErrorCode::EventNotFound => "event_not_found",
            ErrorCode::InvalidBackup => "invalid_backup",
            ErrorCode::NotEmpty => "not_empty",
            ErrorCode::IngestionDisabled => "ingestion_disabled",
            ErrorCode::InvalidBatchId => "invalid_batch_id",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::InvalidCount => "invalid_count",
            ErrorCode::InvalidTimestamp => "invalid_timestamp",
            ErrorCode::FieldTooLong => "field_too_long",
            ErrorCode::UploadTooLarge => "upload_too_large",
            ErrorCode::UploadInterrupted => "upload_interrupted",
            ErrorCode::MissingFile => "missing_file",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::UploadMissing => "upload_missing",
            ErrorCode::AlreadyCompleted => "already_completed",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::InvalidPartSize => "invalid_part_size",
            ErrorCode::InvalidPart => "invalid_part",
            ErrorCode::InvalidChecksum => "invalid_checksum",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::PartsMissing => "parts_missing",
            ErrorCode::NotMultipart => "not_multipart",
        }
    }

    #[test]
    fn all_lists_every_code_once_in_declaration_order() {
        let mut seen = HashSet::new();
        for (index, &code) in ErrorCode::ALL.iter().enumerate() {
            assert!(seen.insert(code), "{code:?} is listed twice");
            // Discriminants count up from 0 in declaration order: with no repeats, ALL
            // holds the variants 0..ALL.len(), the macro's whole list.
            assert_eq!(code as usize, index, "{code:?}");
        }
    }

    #[test]
    fn wire_strings_are_pinned_unique_snake_case_and_parse_back() {
        let mut seen = HashSet::new();
        for &code in ErrorCode::ALL {
            let wire = code.as_str();
            assert_eq!(wire, pinned(code), "{code:?}");
            assert!(seen.insert(wire), "{wire} is used twice");
            assert!(
                !wire.is_empty()
                    && !wire.starts_with('_')
                    && !wire.ends_with('_')
                    && !wire.contains("__")
                    && wire.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{wire} is not snake_case ASCII"
            );
            assert_eq!(ErrorCode::parse(wire), Some(code));
            assert_eq!(code.to_string(), wire);
            assert_eq!(serde_json::to_value(code).unwrap(), json!(wire));
            assert!(!code.description().is_empty(), "{code:?}");
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
        assert_eq!(ErrorCode::parse("NOT_FOUND"), None);
    }

    #[test]
    fn target_errors_keep_the_codes_core_names() {
        let errors = [
            TargetError::Empty,
            TargetError::TooLong { limit: 10 },
            TargetError::ControlCharacters,
            TargetError::NotAbsolute,
            TargetError::Invalid("x".into()),
            TargetError::Scheme("ftp".into()),
            TargetError::NoHost,
            TargetError::Credentials,
            TargetError::BlockedHost("a.test".into()),
            TargetError::Loop("localhost".into()),
        ];
        for e in errors {
            let wire = e.code();
            let api = ApiError::from(e);
            assert_eq!(api.code().as_str(), wire);
            assert_eq!(api.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    async fn rendered(error: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn an_error_renders_the_envelope_with_its_codes_status() {
        let (status, headers, body) =
            rendered(ApiError::new(ErrorCode::KeyNotFound, "no such key")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": {"code": "key_not_found", "message": "no such key"}})
        );
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());

        let (status, headers, body) = rendered(ApiError::rate_limited(7)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(headers[header::RETRY_AFTER], "7");

        let (status, headers, body) = rendered(ApiError::unauthorized("who?")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": {"code": "unauthorized", "message": "who?"}})
        );
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"shortlink\""
        );

        let (status, _, body) = rendered(
            ApiError::new(ErrorCode::InvalidForm, "the form is too large")
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "invalid_form");
    }
}
