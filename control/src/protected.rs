//! Password-protected links: the password page the proxy forwards such codes to, the
//! signed cookie that lets a visitor back in for a while, and the per-IP-and-link
//! throttle on wrong passwords.
//!
//! Passwords are stored as argon2id PHC strings (salted, slow by design); hashing and
//! checking run on the blocking pool. The cookie is `sl_pw=<link id>.<expiry>.<hmac>`
//! scoped to the code's path, signed with the installation secret over the link id, the
//! expiry and the current password hash, so changing the password logs everyone out.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shortlink_core::code::is_code_shaped;
use shortlink_core::time_util::now_unix;
use shortlink_core::{ClickBatch, ClickEvent, DeviceClass, Link, LinkId, RouteState};

use crate::error::ApiError;
use crate::state::AppState;

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Wrong passwords allowed per client IP and link per window before answering 429.
pub const WRONG_PASSWORDS_PER_WINDOW: u32 = 5;
/// The throttle's window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// How long a correct password's cookie lets the visitor through.
pub const COOKIE_SECONDS: i64 = 3600;
const COOKIE: &str = "sl_pw";
/// Largest password form body read.
const MAX_FORM_BYTES: usize = 4096;

/// Hashes a new password (argon2id, random salt) off the async workers.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(
            "invalid_password",
            format!("password must be 1 to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

async fn verify_password(hash: String, password: String) -> bool {
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
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Wrong-password counts per (client IP, link) in fixed windows.
#[derive(Default)]
pub struct PasswordThrottle {
    failures: DashMap<(IpAddr, LinkId), (Instant, u32)>,
}

impl PasswordThrottle {
    /// Seconds until `key` may try again, if it is over its limit now.
    fn blocked_for(&self, key: (IpAddr, LinkId)) -> Option<u64> {
        let entry = self.failures.get(&key)?;
        let (since, count) = *entry;
        let elapsed = since.elapsed();
        (count >= WRONG_PASSWORDS_PER_WINDOW && elapsed < THROTTLE_WINDOW)
            .then(|| (THROTTLE_WINDOW - elapsed).as_secs().max(1))
    }

    fn record_failure(&self, key: (IpAddr, LinkId)) {
        if self.failures.len() > 100_000 {
            self.prune();
        }
        let mut entry = self.failures.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= THROTTLE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    fn forget(&self, key: (IpAddr, LinkId)) {
        self.failures.remove(&key);
    }

    /// Drops windows that have ended.
    pub fn prune(&self) {
        self.failures
            .retain(|_, (since, _)| since.elapsed() < THROTTLE_WINDOW);
    }
}

/// The visitor's IP: the last `X-Forwarded-For` hop when the connection comes from a
/// loopback or private address (where the proxy runs), else the connection's own.
fn visitor_ip(parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let behind_proxy = peer.is_none_or(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    });
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|hop| hop.trim().parse().ok());
    if behind_proxy {
        forwarded.or(peer)
    } else {
        peer
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

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px system-ui,sans-serif;max-width:26rem;\
         margin:4rem auto;padding:0 1rem}}input,button{{font:inherit;padding:.5rem;width:100%;\
         box-sizing:border-box;margin:.25rem 0}}.error{{color:#a00}}\
         input:focus,button:focus{{outline:3px solid #36c}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
            ),
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
        "<p>This link is protected. Enter its password to continue.</p>{error}\
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
                StatusCode::NOT_FOUND,
                "Link not found",
                "<p>There is no short link at this address. Check it for typos.</p>",
            )));
        }
    };
    if link.state(now_unix()) != RouteState::Live {
        return Ok(Err(page(
            StatusCode::GONE,
            "Link no longer available",
            "<p>This short link has expired, was turned off, or reached its click limit.</p>",
        )));
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
        ip: visitor_ip(request),
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

/// `GET /{code}` for a protected link: the password page, or the redirect when the
/// visitor has a valid cookie for it.
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
        StatusCode::OK,
        "Password required",
        &form(&code, shortlink_core::is_qr_scan(request.uri.query()), None),
    ))
}

/// `POST /{code}` with `password=…` (a form): a correct password sets the cookie,
/// counts the click and redirects (303); a wrong one shows the form again (401); too
/// many wrong ones from one IP for one link answer 429 with `Retry-After`.
pub async fn submit(
    State(state): State<AppState>,
    Path(code): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let link = match protected_link(&state, &parts.headers, &code).await? {
        Ok(link) => link,
        Err(response) => return Ok(response),
    };
    let ip = visitor_ip(&parts).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let key = (ip, link.id);
    if let Some(wait) = state.password_throttle().blocked_for(key) {
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            &format!(
                "<p>Too many wrong passwords were entered from your address. \
                 Try again in {wait} seconds.</p>"
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(response);
    }
    let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| ApiError::invalid("invalid_form", "the form is too large"))?;
    let password = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "password")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let hash = link.password_hash.clone().unwrap_or_default();
    if password.is_empty() || !verify_password(hash, password).await {
        state.password_throttle().record_failure(key);
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            "Password required",
            &form(
                &code,
                shortlink_core::is_qr_scan(parts.uri.query()),
                Some("That password is not right. Try again."),
            ),
        ));
    }
    state.password_throttle().forget(key);
    let secret = state.store().installation_secret().await?;
    let cookie = format!(
        "{COOKIE}={}; Path=/{code}; Max-Age={COOKIE_SECONDS}; HttpOnly; SameSite=Lax",
        cookie_value(&secret, &link)
    );
    follow(&state, &parts, &link, StatusCode::SEE_OTHER, Some(cookie)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash_password("s3cret".into()).await.unwrap();
        let b = hash_password("s3cret".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password(a.clone(), "s3cret".into()).await);
        assert!(!verify_password(a, "S3cret".into()).await);
        assert!(hash_password(String::new()).await.is_err());
        assert!(hash_password("x".repeat(257)).await.is_err());
    }

    #[test]
    fn throttle_blocks_after_the_limit_and_forgets_on_success() {
        let t = PasswordThrottle::default();
        let key = (IpAddr::from([10, 0, 0, 1]), 7);
        for _ in 0..WRONG_PASSWORDS_PER_WINDOW {
            assert!(t.blocked_for(key).is_none());
            t.record_failure(key);
        }
        assert!(t.blocked_for(key).is_some_and(|s| (1..=60).contains(&s)));
        assert!(t.blocked_for((IpAddr::from([10, 0, 0, 2]), 7)).is_none());
        assert!(t.blocked_for((IpAddr::from([10, 0, 0, 1]), 8)).is_none());
        t.forget(key);
        assert!(t.blocked_for(key).is_none());
    }
}
