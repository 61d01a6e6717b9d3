//! Password-protected links: the password page the proxy forwards such codes to, the
//! signed cookie that lets a visitor back in for a while, and the guard that bounds
//! guessing.
//!
//! Passwords are stored as argon2id PHC strings (salted, slow by design); hashing and
//! checking run on the blocking pool, at most [`PasswordGuard`]'s number at once (each
//! holds argon2's memory). Every attempt is counted before it is checked, per client IP
//! and link and per link overall, so a parallel burst cannot outrun the limit. The cookie is `sl_pw=<link id>.<expiry>.<hmac>`
//! scoped to the code's path, signed with the installation secret over the link id, the
//! expiry and the current password hash, so changing the password logs everyone out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shortlink_core::code::is_code_shaped;
use shortlink_core::pages::{CSP, Page, escape_html};
use shortlink_core::time_util::now_unix;
use shortlink_core::{ClickBatch, ClickEvent, DeviceClass, Link, LinkId, RouteState};
use utoipa::openapi::RefOr;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// The guessing limits' window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// How long a correct password's cookie lets the visitor through.
pub const COOKIE_SECONDS: i64 = 3600;
const COOKIE: &str = "sl_pw";
/// Largest password form body read.
const MAX_FORM_BYTES: usize = 4096;

/// Memory of the argon2id hashes made here, in KiB: OWASP's m = 7 MiB, t = 5, p = 1
/// (as strong as argon2's default 19 MiB, t = 2, with less memory held per check, so more
/// checks fit the guard's budget). Checks use the parameters stored in each hash.
pub const HASH_MEMORY_KIB: u32 = 7 * 1024;
/// Passes of the argon2id hashes made here.
const HASH_PASSES: u32 = 5;

/// The argon2id instance new hashes are made with.
fn hasher() -> Argon2<'static> {
    let params = argon2::Params::new(HASH_MEMORY_KIB, HASH_PASSES, 1, None)
        .expect("constant parameters are valid");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The memory, in whole MiB, checking against `hash` (a PHC string) holds.
fn check_memory_mib(hash: &str) -> u32 {
    PasswordHash::new(hash)
        .ok()
        .and_then(|parsed| argon2::Params::try_from(&parsed).ok())
        .map_or(1, |params| params.m_cost().div_ceil(1024).max(1))
}

/// How long an attempt waits for a free argon2 slot before it is answered 429.
const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(3);

fn check_password_text(password: &str) -> Result<(), ApiError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidPassword,
            format!("password must be 1 to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Hashes a new password (argon2id, random salt) off the async workers, within the
/// guard's bound on concurrent argon2 work.
pub async fn hash_password(guard: &PasswordGuard, password: String) -> Result<String, ApiError> {
    check_password_text(&password)?;
    let _slot = guard.slot(HASH_MEMORY_KIB.div_ceil(1024)).await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Whether `password` matches the PHC string `hash` (with the parameters the hash
/// names), on the blocking pool. The caller holds room from [`PasswordGuard::slot_for`].
pub async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

fn no_such_endpoint() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// Limits of the guard (from `ControlConfig`).
#[derive(Debug, Clone, Copy)]
pub struct PasswordLimits {
    /// Attempts one client IP may make on one link per window.
    pub per_client: u32,
    /// Attempts all clients together may make on one link per window (successes are
    /// given back).
    pub per_link: u32,
    /// The window.
    pub window: Duration,
    /// Memory argon2 may hold at once, in MiB: each hash or check takes its own.
    pub memory_mib: u32,
}

/// A fixed window's start and count.
type Window = (Instant, u32);

/// Bounds password guessing: attempts are reserved (counted) before they are checked,
/// per (client IP, link) and per link, and argon2 runs in a bounded number of slots.
pub struct PasswordGuard {
    limits: PasswordLimits,
    per_client: DashMap<(IpAddr, u64), Window>,
    per_link: DashMap<u64, Window>,
    /// Keys the windows of (host, code) pairs; random per instance, so no one can aim
    /// one link's window at another's.
    targets: std::hash::RandomState,
    slots: tokio::sync::Semaphore,
}

/// A reserved attempt; [`PasswordGuard::succeeded`] gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    client: (IpAddr, u64),
}

impl PasswordGuard {
    /// A guard with `limits`.
    pub fn new(limits: PasswordLimits) -> PasswordGuard {
        PasswordGuard {
            limits,
            per_client: DashMap::new(),
            per_link: DashMap::new(),
            targets: std::hash::RandomState::new(),
            slots: tokio::sync::Semaphore::new(limits.memory_mib.max(1) as usize),
        }
    }

    /// Counts an attempt by `ip` on `link`, or says in how many seconds one is allowed.
    /// Both windows are checked and counted under their entries' locks, so concurrent
    /// attempts cannot all pass the same check.
    pub fn reserve(&self, ip: IpAddr, link: u64) -> Result<Attempt, u64> {
        if self.per_client.len() > 100_000 || self.per_link.len() > 100_000 {
            self.prune();
        }
        let window = self.limits.window;
        let mut client = self
            .per_client
            .entry((ip, link))
            .or_insert((Instant::now(), 0));
        let mut total = self.per_link.entry(link).or_insert((Instant::now(), 0));
        for entry in [&mut *client, &mut *total] {
            if entry.0.elapsed() >= window {
                *entry = (Instant::now(), 0);
            }
        }
        let wait = |entry: &Window| (window.saturating_sub(entry.0.elapsed())).as_secs().max(1);
        if client.1 >= self.limits.per_client {
            return Err(wait(&client));
        }
        if total.1 >= self.limits.per_link {
            return Err(wait(&total));
        }
        client.1 += 1;
        total.1 += 1;
        Ok(Attempt { client: (ip, link) })
    }

    /// The window key of the link at `code` under `host` (the request's `Host`, as sent):
    /// attempts are counted before the store is read, so a burst costs no lookups.
    pub fn target(&self, host: &str, code: &str) -> u64 {
        use std::hash::BuildHasher;
        self.targets
            .hash_one((shortlink_core::normalize_host(host), code))
    }

    /// The attempt was right: the client's window starts over and the link's gets the
    /// attempt back, so visitors who know the password never use up the limit.
    pub fn succeeded(&self, attempt: Attempt) {
        self.per_client.remove(&attempt.client);
        if let Some(mut total) = self.per_link.get_mut(&attempt.client.1) {
            total.1 = total.1.saturating_sub(1);
        }
    }

    /// Room for a check against `hash`: its argon2 memory out of the budget.
    pub async fn slot_for(&self, hash: &str) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.slot(check_memory_mib(hash)).await
    }

    /// Room for argon2 work holding `mib` MiB (the whole budget at most), waiting a
    /// little for it; 429 when the server stays busy.
    pub async fn slot(&self, mib: u32) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        let wanted = mib.clamp(1, self.limits.memory_mib.max(1));
        match tokio::time::timeout(CHECK_QUEUE_WAIT, self.slots.acquire_many(wanted)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::busy(
                "too many password checks are running; retry in a moment",
            )),
        }
    }

    /// Drops windows that have ended.
    pub fn prune(&self) {
        let window = self.limits.window;
        self.per_client
            .retain(|_, (since, _)| since.elapsed() < window);
        self.per_link
            .retain(|_, (since, _)| since.elapsed() < window);
    }
}

type HmacSha256 = Hmac<Sha256>;

fn cookie_mac(secret: &[u8; 32], link: &Link, expires: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length works");
    let hash = link.password_hash.as_deref().unwrap_or_default();
    mac.update(format!("pw\n{}\n{expires}\n{hash}", link.id).as_bytes());
    mac
}

fn cookie_value(secret: &[u8; 32], link: &Link) -> String {
    let expires = now_unix() + COOKIE_SECONDS;
    let mac = cookie_mac(secret, link, expires).finalize().into_bytes();
    format!("{}.{expires}.{}", link.id, hex::encode(mac))
}

/// Whether the request carries a valid, unexpired cookie for `link`.
fn has_valid_cookie(headers: &HeaderMap, secret: &[u8; 32], link: &Link) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|value| {
            let mut parts = value.splitn(3, '.');
            let (Some(id), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let (Ok(id), Ok(expires), Ok(mac)) = (
                id.parse::<LinkId>(),
                expires.parse::<i64>(),
                hex::decode(mac),
            ) else {
                return false;
            };
            id == link.id
                && expires > now_unix()
                && cookie_mac(secret, link, expires).verify_slice(&mac).is_ok()
        })
}

/// A visitor page (the shared look, or the operator's template) with `body` as its
/// message (`None`: the page's own).
fn page(state: &AppState, status: StatusCode, kind: Page, body: Option<&str>) -> Response {
    let pages = &state.config().pages;
    let html = match body {
        Some(body) => pages.render_with(kind, body),
        None => pages.render(kind),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        html,
    )
        .into_response()
}

/// The password form; it posts back to `/{code}`, keeping the QR marker when the visit
/// came from a scan so the click is counted as one.
fn form(code: &str, qr: bool, message: Option<&str>) -> String {
    let error = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(m)))
        .unwrap_or_default();
    let marker = if qr {
        format!("?{}", shortlink_core::QR_MARKER)
    } else {
        String::new()
    };
    format!(
        "<p>Enter its password to continue.</p>{error}\
         <form method=\"post\" action=\"/{code}{marker}\"><label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required autofocus \
         autocomplete=\"current-password\" maxlength=\"{MAX_PASSWORD_BYTES}\">\
         <button type=\"submit\">Continue</button></form>",
        code = escape_html(code)
    )
}

/// The domain a request addresses: its `Host`, lower-cased and without the port, when
/// that is a registered custom domain; else the default domain (empty).
async fn domain_of(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(shortlink_core::normalize_host)
        .unwrap_or_default();
    if host.is_empty() {
        return Ok(String::new());
    }
    Ok(match state.store().get_domain(&host).await? {
        Some(_) => host,
        None => String::new(),
    })
}

/// The protected link at the request's (domain, code), or the page to answer instead;
/// a path that is no code at all is the API's plain 404.
async fn protected_link(
    state: &AppState,
    headers: &HeaderMap,
    code: &str,
) -> Result<Result<Link, Response>, ApiError> {
    if !is_code_shaped(code) {
        return Err(no_such_endpoint());
    }
    let domain = domain_of(state, headers).await?;
    let link = match state.store().get_link(&domain, code).await? {
        Some(link) if link.password_hash.is_some() => link,
        _ => {
            return Ok(Err(page(
                state,
                StatusCode::NOT_FOUND,
                Page::NotFound,
                None,
            )));
        }
    };
    if link.state(now_unix()) != RouteState::Live {
        return Ok(Err(page(state, StatusCode::GONE, Page::Gone, None)));
    }
    Ok(Ok(link))
}

/// Counts the visit as a click and redirects to the link's target (or its targeted one).
async fn follow(
    state: &AppState,
    request: &Parts,
    link: &Link,
    status: StatusCode,
    cookie: Option<String>,
) -> Result<Response, ApiError> {
    let headers = &request.headers;
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect::<String>())
    };
    let click = ClickEvent {
        link_id: link.id,
        ts_ms: now_unix() * 1000,
        ip: crate::client::client_of(state, request).ip,
        user_agent: text(header::USER_AGENT),
        referrer: text(header::REFERER),
        host: text(header::HOST),
        country: None,
        head: false,
        qr: shortlink_core::is_qr_scan(request.uri.query()),
        count: 1,
    };
    let mut target = link.url.as_str();
    if let Some(targeting) = &link.targeting {
        let device =
            DeviceClass::of_user_agent(click.user_agent.as_deref().unwrap_or("").as_bytes());
        let country = state.ingestor().enricher().country(click.ip, None);
        if let Some(url) = targeting.pick(device, Some(&country)) {
            target = url;
        }
    }
    let batch = ClickBatch {
        batch_id: format!("pw-{:032x}", rand::random::<u128>()),
        clicks: vec![click],
    };
    state.ingestor().apply(&batch).await?;
    let mut response = Response::builder()
        .status(status)
        .header(header::LOCATION, target)
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(cookie) = cookie {
        response = response.header(header::SET_COOKIE, cookie);
    }
    response.body(Body::empty()).map_err(ApiError::internal)
}

// For the OpenAPI document only: the handler parses the body itself, whatever its
// `Content-Type`.
/// The password form of a protected link.
#[derive(utoipa::ToSchema)]
pub struct PasswordForm {
    /// The link's password.
    pub password: String,
}

/// The API's error responses for `codes`, with an HTML page beside the error envelope
/// under 404: a code-shaped path without a protected link gets the page `Link not found`,
/// a path that is no code at all the envelope. (A response type of `api_errors!` cannot
/// say both: its 404 would replace the page's.)
fn page_errors(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let mut responses = crate::openapi::error_responses(&[codes]);
    crate::openapi::also_answered_as(
        &mut responses,
        "404",
        "text/html",
        "A path that is a code, but of no protected link on the request's domain, gets the \
         HTML page `Link not found` (`text/html`) instead.",
    );
    responses
}

/// The errors of `GET /{code}`: `not_found` (JSON, or the HTML page) and `internal`.
pub(crate) struct ShowErrors;

impl utoipa::IntoResponses for ShowErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        page_errors(&[ErrorCode::NotFound, ErrorCode::Internal])
    }
}

/// `GET /{code}` for a protected link: the password page, or the redirect when the
/// visitor has a valid cookie for it.
#[utoipa::path(
    get,
    path = "/{code}",
    tag = "links",
    params(
        ("code" = String, Path, description = "A password-protected link's short code."),
        ("qr" = Option<String>, Query, description = "Present (with any value) when the visit came \
            from a scan of the link's QR code: the form keeps it, so the click counts as a scan."),
    ),
    responses(
        (status = 200, description = "The password page.", body = String, content_type = "text/html",
         headers(
            ("Cache-Control" = String, description = "`no-store`."),
            ("Content-Security-Policy" = String, description = "No scripts; inline styles only."),
         )),
        (status = 302, description = "The visitor's cookie for this link is valid: the click is counted \
            and the visitor goes to the link's target (or its targeted one).",
         headers(
            ("Location" = String, description = "The target URL."),
            ("Cache-Control" = String, description = "`no-store`."),
         )),
        (status = 410, description = "The link expired, was turned off, or reached its click limit: an HTML page.",
         body = String, content_type = "text/html"),
        ShowErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    Path(code): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (request, _) = request.into_parts();
    let link = match protected_link(&state, &request.headers, &code).await? {
        Ok(link) => link,
        Err(response) => return Ok(response),
    };
    let secret = state.store().installation_secret().await?;
    if has_valid_cookie(&request.headers, &secret, &link) {
        return follow(&state, &request, &link, StatusCode::FOUND, None).await;
    }
    Ok(page(
        &state,
        StatusCode::OK,
        Page::Password,
        Some(&form(
            &code,
            shortlink_core::is_qr_scan(request.uri.query()),
            None,
        )),
    ))
}

/// The errors of `POST /{code}`: `not_found` (JSON, or the HTML page), `invalid_form`
/// and `internal`.
pub(crate) struct SubmitErrors;

impl utoipa::IntoResponses for SubmitErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        page_errors(&[
            ErrorCode::NotFound,
            ErrorCode::InvalidForm,
            ErrorCode::Internal,
        ])
    }
}

/// `POST /{code}` with `password=…` (a form): a correct password sets the cookie,
/// counts the click and redirects (303); a wrong one shows the form again (401); too
/// many wrong ones from one IP for one link answer 429 with `Retry-After`.
#[utoipa::path(
    post,
    path = "/{code}",
    tag = "links",
    params(
        ("code" = String, Path, description = "A password-protected link's short code."),
        ("qr" = Option<String>, Query, description = "Present (with any value) when the visit came \
            from a scan of the link's QR code, so the click counts as a scan."),
    ),
    request_body(
        content = PasswordForm,
        content_type = "application/x-www-form-urlencoded",
        description = "The password form (at most 4096 bytes).",
    ),
    responses(
        (status = 303, description = "The password is right: the cookie is set, the click is counted and \
            the visitor goes to the link's target (or its targeted one).",
         headers(
            ("Location" = String, description = "The target URL."),
            ("Set-Cookie" = String, description = "`sl_pw`, which lets the visitor through for an hour \
                (scoped to the code's path)."),
            ("Cache-Control" = String, description = "`no-store`."),
         )),
        (status = 401, description = "The password is wrong (or missing): the password page again, with a message.",
         body = String, content_type = "text/html"),
        (status = 410, description = "The link expired, was turned off, or reached its click limit: an HTML page.",
         body = String, content_type = "text/html"),
        (status = 429, description = "Too many attempts from this client (or from everyone) on this link, or \
            every password check slot stayed busy: an HTML page.",
         body = String, content_type = "text/html",
         headers(("Retry-After" = u64, description = "Seconds to wait."))),
        SubmitErrors,
    ),
)]
pub async fn submit(
    State(state): State<AppState>,
    Path(code): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if !is_code_shaped(&code) {
        return Err(no_such_endpoint());
    }
    let client = crate::client::client_of(&state, &parts);
    let ip = client.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let guard = state.password_guard();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let attempt = match guard.reserve(ip, guard.target(host, &code)) {
        Ok(attempt) => attempt,
        Err(wait) => return Ok(too_many_attempts(&state, wait)),
    };
    let link = match protected_link(&state, &parts.headers, &code).await? {
        Ok(link) => link,
        Err(response) => return Ok(response),
    };
    let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            // 422, not `invalid_form`'s 400: the status this refusal has always had.
            ApiError::new(ErrorCode::InvalidForm, "the form is too large")
                .with_status(StatusCode::UNPROCESSABLE_ENTITY)
        })?;
    let password = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "password")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let hash = link.password_hash.clone().unwrap_or_default();
    let right = if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        false
    } else {
        let _slot = match guard.slot_for(&hash).await {
            Ok(slot) => slot,
            Err(_) => return Ok(too_many_attempts(&state, 1)),
        };
        verify_password(hash, password).await
    };
    if !right {
        return Ok(page(
            &state,
            StatusCode::UNAUTHORIZED,
            Page::Password,
            Some(&form(
                &code,
                shortlink_core::is_qr_scan(parts.uri.query()),
                Some("That password is not right. Try again."),
            )),
        ));
    }
    guard.succeeded(attempt);
    let secret = state.store().installation_secret().await?;
    let secure = if client.https { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/{code}; Max-Age={COOKIE_SECONDS}; HttpOnly; SameSite=Lax{secure}",
        cookie_value(&secret, &link)
    );
    follow(&state, &parts, &link, StatusCode::SEE_OTHER, Some(cookie)).await
}

/// 429 with `Retry-After`: the client (or everyone, on this link) tried too often, or
/// every argon2 slot stayed busy.
fn too_many_attempts(state: &AppState, wait: u64) -> Response {
    let mut response = page(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        Page::TooMany,
        Some(&format!(
            "<p>Too many wrong passwords were tried for this link. Try again in {wait} seconds.</p>"
        )),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_client: u32, per_link: u32, memory_mib: u32) -> PasswordGuard {
        PasswordGuard::new(PasswordLimits {
            per_client,
            per_link,
            window: THROTTLE_WINDOW,
            memory_mib,
        })
    }

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let g = guard(5, 5, 64);
        let a = hash_password(&g, "s3cret".into()).await.unwrap();
        assert!(a.contains("m=7168,t=5,p=1"), "{a}");
        assert_eq!(check_memory_mib(&a), 7);
        // Hashes made with argon2's defaults (older versions) are checked with theirs.
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert_eq!(check_memory_mib(&old), 19);
        assert!(verify_password(old, "s3cret".into()).await);
        let b = hash_password(&g, "s3cret".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password(a.clone(), "s3cret".into()).await);
        assert!(!verify_password(a, "S3cret".into()).await);
        assert!(hash_password(&g, String::new()).await.is_err());
        assert!(hash_password(&g, "x".repeat(257)).await.is_err());
    }

    #[test]
    fn attempts_are_counted_before_checking_per_client_and_per_link() {
        let g = guard(5, 8, 64);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let attempts: Vec<_> = (0..5).map(|_| g.reserve(a, 7).unwrap()).collect();
        assert!(g.reserve(a, 7).is_err_and(|s| (1..=60).contains(&s)));
        assert!(g.reserve(a, 8).is_ok(), "another link has its own window");
        for _ in 0..3 {
            g.reserve(b, 7).unwrap();
        }
        assert!(g.reserve(b, 7).is_err(), "the link's overall limit holds");
        assert!(
            g.reserve(IpAddr::from([10, 0, 0, 3]), 7).is_err(),
            "for every client"
        );
        g.succeeded(attempts[0]);
        assert!(g.reserve(a, 7).is_ok(), "a success starts the client over");
    }

    #[tokio::test]
    async fn argon2_memory_is_bounded() {
        let g = guard(5, 5, 20);
        let held = g.slot(19).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(50), g.slot(7)).await;
        assert!(
            waited.is_err(),
            "no room for a second check while 19 of 20 MiB are held"
        );
        assert!(g.slot(1).await.is_ok(), "but for one that fits");
        drop(held);
        assert!(g.slot(7).await.is_ok());
        assert!(
            g.slot(500).await.is_ok(),
            "a hash larger than the budget takes all of it"
        );
    }
}
