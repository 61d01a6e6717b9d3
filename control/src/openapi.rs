//! The API's OpenAPI 3.1 document, generated from the handlers' own `#[utoipa::path]`
//! annotations and their types' schemas: [`crate::app`] registers each documented handler
//! through `utoipa_axum`'s router, so a route cannot be served without being described.
//!
//! Every operation lists the error codes it can answer with ([`api_errors!`]): one
//! response per status, whose schema is the error envelope with `code` narrowed to the
//! codes of that status, so a client (and Schemathesis) can check them.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, Response, ResponseBuilder};

use crate::error::ErrorCode;

/// Codes every authenticated operation can answer with.
pub(crate) const AUTH: &[ErrorCode] = &[
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::RateLimited,
    ErrorCode::Internal,
    ErrorCode::StorageUnavailable,
];
/// Codes of an operation reading a JSON body.
pub(crate) const JSON_BODY: &[ErrorCode] = &[
    ErrorCode::InvalidJson,
    ErrorCode::InvalidBody,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
];
/// Codes of an operation reading a query string.
pub(crate) const QUERY: &[ErrorCode] = &[ErrorCode::InvalidQuery];
/// Codes of any operation that reads a body at all (the slow-body guard).
pub(crate) const BODY: &[ErrorCode] = &[ErrorCode::InvalidBody, ErrorCode::PayloadTooLarge];
/// The link checks of a target URL.
pub(crate) const TARGET: &[ErrorCode] = &[
    ErrorCode::UrlEmpty,
    ErrorCode::UrlTooLong,
    ErrorCode::UrlInvalidCharacters,
    ErrorCode::UrlNotAbsolute,
    ErrorCode::UrlInvalid,
    ErrorCode::UrlSchemeNotAllowed,
    ErrorCode::UrlNoHost,
    ErrorCode::UrlHasCredentials,
    ErrorCode::UrlHostBlocked,
    ErrorCode::UrlLoops,
];

/// The checks of a link's own fields (create and change).
pub(crate) const LINK_FIELDS: &[ErrorCode] = &[
    ErrorCode::AliasInvalid,
    ErrorCode::AliasReserved,
    ErrorCode::TagsInvalid,
    ErrorCode::InvalidExpiresAt,
    ErrorCode::InvalidMaxClicks,
    ErrorCode::InvalidRedirect,
    ErrorCode::InvalidTargeting,
    ErrorCode::InvalidPassword,
    ErrorCode::UnknownDomain,
];

/// Declares a type documenting the errors an operation answers with, for its
/// `#[utoipa::path(responses(...))]`: groups of codes from this module (`AUTH`,
/// `JSON_BODY`, ...), then single codes.
///
/// ```text
/// api_errors!(CreateLinkErrors: AUTH, JSON_BODY, TARGET; AliasTaken, InvalidMaxClicks);
/// ```
macro_rules! api_errors {
    ($name:ident: $($group:ident),* ; $($code:ident),* $(,)?) => {
        #[doc = concat!("The errors of one operation (`", stringify!($name), "`).")]
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::openapi::error_responses(&[
                    $($crate::openapi::$group,)*
                    &[$($crate::error::ErrorCode::$code),*],
                ])
            }
        }
    };
}
pub(crate) use api_errors;

/// The statuses a code is answered with: its own, and the documented exceptions.
fn statuses(code: ErrorCode) -> Vec<u16> {
    let own = code.status().as_u16();
    match code {
        // A protected link's too large password form (see `ErrorCode`).
        ErrorCode::InvalidForm => vec![own, 422],
        _ => vec![own],
    }
}

/// One response per status for `groups`' codes, each an error envelope whose `code`
/// is one of that status's codes.
pub fn error_responses(groups: &[&[ErrorCode]]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in groups.iter().flat_map(|g| g.iter()) {
        for status in statuses(code) {
            let codes = by_status.entry(status).or_default();
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let description = codes
                .iter()
                .map(|c| format!("`{}`: {}", c.as_str(), c.description()))
                .collect::<Vec<_>>()
                .join("\n\n");
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(envelope(&codes))).build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The error envelope `{"error": {"code", "message"}}` with `code` one of `codes`.
fn envelope(codes: &[ErrorCode]) -> Schema {
    let code = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(|c| c.as_str())))
        .description(Some("Stable, machine-readable error code."));
    let error = ObjectBuilder::new()
        .property("code", code)
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("What went wrong, for people.")),
        )
        .required("code")
        .required("message");
    Schema::Object(
        ObjectBuilder::new()
            .property("error", error)
            .required("error")
            .build(),
    )
}

/// What the document says beside its operations, which the router adds.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "shortlink",
        description = "Short links, click analytics, real-time events and file uploads. \
            Every error is `{\"error\": {\"code\", \"message\"}}` with a stable `code`; \
            each operation lists the codes it can answer with.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Finish),
    // Schemas only query parameters refer to, which the paths do not bring in.
    components(schemas(crate::stats::Bots, crate::clicks::ExportFormat)),
    tags(
        (name = "links", description = "Short links and their statistics."),
        (name = "uploads", description = "Files, their thumbnails and short links."),
        (name = "events", description = "Real-time notifications: SSE, WebSocket, long polling."),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks): endpoints, test sends, the delivery log and redelivery."),
        (name = "domains", description = "Custom domains (admins)."),
        (name = "accounts", description = "Users, API keys, sign-in and sessions."),
        (name = "admin", description = "Moderation and the audit log (admins)."),
        (name = "operations", description = "Health, readiness and metrics."),
    ),
)]
pub struct ApiDoc;

/// Adds a second body to the documented response of `status`: a text of `content_type`
/// (a plain-text rejection of axum's, an HTML page) that some requests get instead of
/// the error envelope. One status has one response, so `api_errors!` cannot say this.
pub(crate) fn also_answered_as(
    responses: &mut BTreeMap<String, RefOr<Response>>,
    status: &str,
    content_type: &str,
    note: &str,
) {
    if let Some(RefOr::T(response)) = responses.get_mut(status) {
        response.description.push_str("\n\n");
        response.description.push_str(note);
        let text = ObjectBuilder::new().schema_type(Type::String).build();
        let content = utoipa::openapi::ContentBuilder::new()
            .schema(Some(Schema::Object(text)))
            .build();
        response
            .content
            .insert(content_type.to_owned(), RefOr::T(content));
    }
}

/// The redirect statuses a link may use (`schema_with` of a link's `redirect`).
pub(crate) fn redirect_status() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some(
                shortlink_core::RedirectStatus::ALL
                    .iter()
                    .map(|s| s.as_u16()),
            ))
            .build(),
    )
}

/// [`redirect_status`], or `null` (absent).
pub(crate) fn redirect_status_or_null() -> Schema {
    let statuses = shortlink_core::RedirectStatus::ALL
        .iter()
        .map(|s| serde_json::Value::from(s.as_u16()))
        .chain([serde_json::Value::Null]);
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::Integer,
                Type::Null,
            ]))
            .enum_values(Some(statuses))
            .build(),
    )
}

/// Security schemes and document-wide settings the handlers' annotations do not carry.
pub(crate) struct Finish;

impl utoipa::Modify for Finish {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`sl_...`) as `Authorization: Bearer <key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "The web page's session cookie (from POST /api/v1/auth/login); \
                 state-changing requests also need X-Requested-With.",
            ))),
        );
        components.add_security_scheme(
            "internal",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::ingest::SECRET_HEADER,
                "The internal secret shared by proxies and control planes.",
            ))),
        );
    }
}

/// Writes this server's configured limits into `api`, where the annotations show the
/// defaults: page sizes, a long poll's wait, a presigned upload's size, a key rotation's
/// grace. Also drops `null` from parameters' types (an optional parameter is absent,
/// never null; utoipa writes an `Option` as nullable).
pub fn fit_to(api: &mut OpenApi, config: &crate::ControlConfig) {
    use utoipa::openapi::schema::SchemaType;
    let set_maximum = |schema: &mut RefOr<Schema>, maximum: u64| {
        if let RefOr::T(Schema::Object(object)) = schema {
            object.maximum = Some(utoipa::Number::UInt(
                usize::try_from(maximum).unwrap_or(usize::MAX),
            ));
        }
    };
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().filter_map(Option::as_mut) {
            let id = operation.operation_id.clone().unwrap_or_default();
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else {
                    continue;
                };
                let Some(schema) = parameter.schema.as_mut() else {
                    continue;
                };
                if let RefOr::T(Schema::Object(object)) = schema
                    && let SchemaType::Array(types) = &object.schema_type
                    && let Some(single) = types.iter().find(|t| **t != Type::Null).cloned()
                {
                    object.schema_type = SchemaType::Type(single);
                }
                let maximum = match (id.as_str(), parameter.name.as_str()) {
                    (
                        "list_links" | "search_links" | "list_audit" | "list_deliveries"
                        | "list_uploads",
                        "limit",
                    ) => config.max_page_size as u64,
                    ("poll", "wait") => config.poll_max_wait_seconds,
                    _ => continue,
                };
                set_maximum(schema, maximum);
            }
        }
    }
    if let Some(components) = api.components.as_mut() {
        for (schema, property, maximum) in [
            ("PresignRequest", "size", config.max_upload_bytes),
            (
                "MultipartRequest",
                "size",
                config.max_multipart_upload_bytes,
            ),
            (
                "RotateRequest",
                "grace_seconds",
                config.key_rotation_max_grace_seconds,
            ),
        ] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(property) = object.properties.get_mut(property)
            {
                set_maximum(property, maximum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn parameter_maximum(doc: &Value, path: &str, method: &str, name: &str) -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))["schema"]["maximum"]
            .clone()
    }

    #[test]
    fn configured_limits_reach_the_document() {
        let config = crate::ControlConfig {
            max_page_size: 7,
            poll_max_wait_seconds: 3,
            max_upload_bytes: 1000,
            ..crate::ControlConfig::default()
        };
        let doc = serde_json::to_value(crate::api_document(&config)).unwrap();
        assert_eq!(parameter_maximum(&doc, "/api/v1/links", "get", "limit"), 7);
        assert_eq!(parameter_maximum(&doc, "/api/v1/audit", "get", "limit"), 7);
        assert_eq!(
            parameter_maximum(&doc, "/api/v1/notifications", "get", "wait"),
            3
        );
        assert_eq!(
            doc["components"]["schemas"]["PresignRequest"]["properties"]["size"]["maximum"],
            1000
        );
        let grace = &doc["components"]["schemas"]["RotateRequest"]["properties"]["grace_seconds"];
        assert_eq!(grace["maximum"], config.key_rotation_max_grace_seconds);
    }

    #[test]
    fn error_responses_group_codes_by_status() {
        use crate::error::ErrorCode;
        let responses = super::error_responses(&[
            super::AUTH,
            &[ErrorCode::AliasTaken, ErrorCode::InvalidForm],
        ]);
        let doc = serde_json::to_value(&responses).unwrap();
        let codes = |status: &str| {
            doc[status]["content"]["application/json"]["schema"]["properties"]["error"]
                ["properties"]["code"]["enum"]
                .clone()
        };
        assert_eq!(codes("409"), serde_json::json!(["alias_taken"]));
        assert_eq!(codes("401"), serde_json::json!(["unauthorized"]));
        assert_eq!(codes("400"), serde_json::json!(["invalid_form"]));
        assert_eq!(
            codes("422"),
            serde_json::json!(["invalid_form"]),
            "its exception"
        );
    }
}
