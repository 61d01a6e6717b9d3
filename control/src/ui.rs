//! The web page at `/ui`: its files and the JavaScript client's modules embedded in the
//! binary (no build step in `cargo build`, no CDN, works offline), served with a content security policy that lets the page talk only to its own
//! origin, so the API key it holds goes nowhere else.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");
const ICON: &str = include_str!("../ui/icon.svg");
/// The JavaScript client's committed build (`clients/js/dist`), which the page imports.
const LIBRARY: [(&str, &str); 3] = [
    ("index.js", include_str!("../../clients/js/dist/index.js")),
    ("client.js", include_str!("../../clients/js/dist/client.js")),
    ("events.js", include_str!("../../clients/js/dist/events.js")),
];

/// Scripts and styles only from this origin, requests only to it, images also from object
/// storage redirects (`http:`/`https:`), no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob: http: https:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary: revalidate rather than cache blindly.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    guard(headers);
    response
}

/// The page's content security policy, no type sniffing, no referrer.
fn guard(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The API reference page at `/docs` (Swagger UI, its assets embedded in the binary),
/// under the same content security policy as the web page.
pub(crate) fn docs<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::from(
        utoipa_swagger_ui::SwaggerUi::new("/docs")
            .config(utoipa_swagger_ui::Config::from("/api/v1/openapi.json")),
    )
    .layer(axum::middleware::map_response(
        |mut response: Response| async move {
            guard(response.headers_mut());
            response
        },
    ))
}

/// `GET /ui`: the page.
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /ui/icon.svg`: the page's icon.
pub(crate) async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

/// `GET /ui/lib/{file}`: a module of the JavaScript client (`@shortlink/client`).
pub(crate) async fn library(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match LIBRARY.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => asset("text/javascript; charset=utf-8", body),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}
