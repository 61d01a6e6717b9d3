//! The pingora `ProxyHttp` implementation: redirects answered in `request_filter` from
//! the route table; everything else forwarded to a control-plane upstream.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, Method, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{LoadBalancer, selection::RoundRobin};
use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use shortlink_core::code::{is_code_shaped, is_reserved};
use shortlink_core::hop;
use shortlink_core::{DeviceClass, LinkId, RedirectStatus, RouteState, is_valid_host_header};
use shortlink_store::RouteSource;
use tracing::warn;

use crate::acme::{AcmeAnswers, Answer, HTTP01_PREFIX};
use crate::budget::{Budgets, Refill};
use crate::clicks::{ClickSink, Visit};
use crate::domains::{DomainSet, HostMatch, MAX_HOST};
use crate::pages::{PAGE_CSP, VisitorPages};
use crate::routes::{Resolution, RouteKey, RouteTable};
use crate::sync::SyncStatus;
use crate::tls::{Hsts, HttpsPolicy};

const BAD_HOST_BODY: &[u8] = b"Bad request: a request needs one valid Host header.\n";

static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
static PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
/// Lease refills one request waits for before it gives up (503).
const MAX_REFILLS: u32 = 4;
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Per-request state.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// The link this request was redirected by, captured in `logging`.
    clicked: Option<LinkId>,
    /// When the request arrived, for the latency histogram.
    started: Option<std::time::Instant>,
    /// The client reached the edge over HTTPS (this proxy's TLS, or a trusted proxy's
    /// word), worked out once in `request_filter`.
    https: bool,
}

/// Longest `User-Agent` or `Referer` kept in a click, in bytes.
const MAX_CAPTURED_FIELD: usize = 512;

/// How clicks are captured.
pub struct Capture {
    /// The click queue; `None` turns capture off.
    pub sink: Option<ClickSink>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Which forwarding headers those peers write (the only ones believed).
    pub forwarded_headers: hop::ForwardedHeaders,
    /// Header holding the client's country, set by a trusted edge.
    pub country_header: Option<String>,
    /// The GeoIP lookup targeting rules consult before `country_header`, if configured.
    pub country_lookup: Option<CountryLookup>,
}

/// A client IP → ISO country code lookup (a GeoIP database).
pub type CountryLookup = Arc<dyn Fn(IpAddr) -> Option<String> + Send + Sync>;

/// The parts of a request the redirect path reads, borrowed from whichever parser read it:
/// pingora's for requests it handles, the fast path's ([`crate::fast_path`]) for plain
/// redirects. Header values are whole; capture cuts them to [`MAX_CAPTURED_FIELD`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestView<'a> {
    /// The socket's peer address.
    pub peer: Option<IpAddr>,
    /// Whether the method is HEAD.
    pub head: bool,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a [u8]>,
    /// `Referer`.
    pub referrer: Option<&'a [u8]>,
    /// `Host`.
    pub host: Option<&'a [u8]>,
    /// `X-Forwarded-For`.
    pub forwarded_for: Option<&'a [u8]>,
    /// `Forwarded` (RFC 7239), read when `X-Forwarded-For` is absent.
    pub forwarded: Option<&'a [u8]>,
    /// The configured country header's value.
    pub country: Option<&'a [u8]>,
}

impl<'a> RequestView<'a> {
    /// The view of a request pingora has read.
    fn of_session(session: &'a Session, country_header: Option<&str>) -> RequestView<'a> {
        let req = session.req_header();
        let get = |name: &header::HeaderName| req.headers.get(name).map(HeaderValue::as_bytes);
        RequestView {
            peer: client_ip(session),
            head: req.method == Method::HEAD,
            query: req.uri.query(),
            user_agent: get(&header::USER_AGENT),
            referrer: get(&header::REFERER),
            host: get(&header::HOST).or_else(|| req.uri.host().map(str::as_bytes)),
            // The last line: the one the nearest proxy wrote (the fast path keeps the last
            // too).
            forwarded_for: req
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .map(HeaderValue::as_bytes),
            forwarded: req
                .headers
                .get_all(header::FORWARDED)
                .iter()
                .next_back()
                .map(HeaderValue::as_bytes),
            country: country_header
                .and_then(|h| req.headers.get(h))
                .map(HeaderValue::as_bytes),
        }
    }
}

/// A header value as text, if it is UTF-8.
fn text(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

/// A header's raw value as a click keeps it: cut to [`MAX_CAPTURED_FIELD`] bytes. The
/// identity hashes these bytes; a new click's are copied into its capture shard and turned
/// into text when the shipper takes it (`captured_text` in `clicks::capture`).
#[inline]
fn cut(value: Option<&[u8]>) -> Option<&[u8]> {
    value.map(|v| &v[..v.len().min(MAX_CAPTURED_FIELD)])
}

impl Capture {
    /// The click's client IP: the socket's, or, when the socket's peer is a trusted proxy,
    /// the nearest hop not itself trusted in the header family it writes
    /// (`X-Forwarded-For`, or `Forwarded`).
    fn client_ip(&self, request: &RequestView) -> Option<IpAddr> {
        let peer = request.peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let last = |name: &'static str| match name {
            "x-forwarded-for" => text(request.forwarded_for),
            "forwarded" => text(request.forwarded),
            _ => None,
        };
        let (client, _) = hop::forwarded_by(self.forwarded_headers, last, |ip| {
            self.trusted_proxies.contains(ip)
        });
        client.or(Some(peer))
    }

    /// Whether a request from `peer` says it reached the edge over HTTPS: a trusted
    /// proxy's word in the header family it writes (`X-Forwarded-Proto`'s last value, or
    /// the nearest `Forwarded` element's `proto`).
    fn forwarded_https(&self, peer: Option<IpAddr>, req: &RequestHeader) -> bool {
        if !peer.is_some_and(|peer| self.trusted_proxies.contains(&peer)) {
            return false;
        }
        let last = |name: &'static str| {
            req.headers
                .get_all(name)
                .iter()
                .next_back()
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        hop::forwarded_by(self.forwarded_headers, last, |ip| {
            self.trusted_proxies.contains(ip)
        })
        .1
    }

    /// Records the click of a redirect by `link_id`: hashed from borrowed header values,
    /// copied only when no identical click is held yet.
    pub(crate) fn record(
        &self,
        sink: &ClickSink,
        request: &RequestView,
        link_id: LinkId,
        ts_ms: i64,
    ) {
        let ip = self.client_ip(request);
        let head = request.head;
        let qr = shortlink_core::is_qr_scan(request.query);
        let user_agent = cut(request.user_agent);
        let referrer = cut(request.referrer);
        let host = cut(request.host);
        let country = cut(request.country);
        sink.record(&Visit {
            link_id,
            ts_ms,
            ip,
            head,
            qr,
            fields: [user_agent, referrer, host, country],
        });
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Capture {
    /// The targeted `Location` for this request to a link with targeting rules, if a
    /// rule applies: device class from the `User-Agent`, country from the GeoIP lookup
    /// or the trusted country header (the same sources analytics uses).
    fn targeted_location(
        &self,
        table: &RouteTable,
        key: RouteKey,
        request: &RequestView,
    ) -> Option<HeaderValue> {
        let device = DeviceClass::of_user_agent(request.user_agent.unwrap_or(b""));
        let looked_up = match (&self.country_lookup, self.client_ip(request)) {
            (Some(lookup), Some(ip)) => lookup(ip),
            _ => None,
        };
        let country = looked_up
            .as_deref()
            .or_else(|| cut(request.country).and_then(|c| std::str::from_utf8(c).ok()));
        table.targeted_location(key, device, country)
    }
}

/// The data plane's request handler. Cloning shares everything (the fast path holds a clone).
#[derive(Clone)]
pub struct Redirector {
    table: Arc<RouteTable>,
    domains: Arc<DomainSet>,
    store: Arc<dyn RouteSource>,
    capture: Arc<Capture>,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
    not_found: Arc<NotFoundLimiter>,
    sync: Arc<SyncStatus>,
    /// The internal secret, sent with every forwarded request beside the client's
    /// address and scheme so the control plane trusts them (see [`shortlink_core::hop`]).
    hop_secret: Option<HeaderValue>,
    /// The longest wait for one read from or write to a control plane.
    upstream_timeout: Duration,
    /// Capped links' click leases.
    budgets: Option<Arc<Budgets>>,
    /// HTTPS at the edge: the plain port's redirect and HSTS, when TLS is on.
    https: Option<Arc<HttpsPolicy>>,
    /// HTTP-01 answers, when ACME is on.
    acme: Option<Arc<AcmeAnswers>>,
    /// The 404, 410, 429 and 503 pages.
    pages: Arc<VisitorPages>,
}

/// Counts 404 answers per client IP.
pub type NotFoundLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// A limiter allowing `per_minute` 404 answers per client IP per minute.
pub fn not_found_limiter(per_minute: NonZeroU32) -> Arc<NotFoundLimiter> {
    Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute)))
}

impl Redirector {
    /// A handler over `table` (on the hosts `domains` knows), reading through to `store`
    /// on misses, forwarding to `upstreams`.
    pub fn new(
        table: Arc<RouteTable>,
        domains: Arc<DomainSet>,
        store: Arc<dyn RouteSource>,
        capture: Capture,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
        not_found: Arc<NotFoundLimiter>,
        sync: Arc<SyncStatus>,
    ) -> Redirector {
        Redirector {
            table,
            domains,
            store,
            capture: Arc::new(capture),
            upstreams,
            not_found,
            sync,
            hop_secret: None,
            upstream_timeout: Duration::from_secs(60),
            budgets: None,
            https: None,
            acme: None,
            pages: Arc::new(VisitorPages::default()),
        }
    }

    /// Answers with `pages` (an operator's templates) instead of the built-in ones.
    pub fn with_pages(mut self, pages: Arc<VisitorPages>) -> Redirector {
        self.pages = pages;
        self
    }

    /// Applies `https` (TLS is on): plain-HTTP requests for hosts with a certificate may
    /// be redirected, answers over TLS carry HSTS. Before the pingora proxy is built on
    /// this handler (its modules are set up then).
    pub fn with_https(mut self, https: Arc<HttpsPolicy>) -> Redirector {
        self.https = Some(https);
        self
    }

    /// Answers ACME HTTP-01 challenges (`/.well-known/acme-challenge/TOKEN`) from
    /// `answers`, on any host.
    pub fn with_acme_answers(mut self, answers: Arc<AcmeAnswers>) -> Redirector {
        self.acme = Some(answers);
        self
    }

    /// Fills capped links' leases from `budgets` (without, an empty lease answers 410).
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Redirector {
        self.budgets = Some(budgets);
        self
    }

    /// Waits at most `timeout` for each read from and write to a control plane.
    pub fn with_upstream_timeout(mut self, timeout: Duration) -> Redirector {
        self.upstream_timeout = timeout;
        self
    }

    /// Vouches for forwarded requests' client address and scheme with the internal
    /// secret (`None`: forwards without vouching); fails if the secret is no header text.
    pub fn vouching_with(
        mut self,
        secret: Option<&str>,
    ) -> Result<Redirector, http::header::InvalidHeaderValue> {
        self.hop_secret = secret.map(HeaderValue::from_str).transpose()?;
        if let Some(value) = &mut self.hop_secret {
            value.set_sensitive(true);
        }
        Ok(self)
    }

    /// Looks the code up in the store after a table miss and puts what it finds into the
    /// table (or remembers the miss for a while).
    async fn read_through(&self, key: RouteKey, domain: &str, code: &str) -> Lookup {
        if self.table.recently_missed(key) {
            return Lookup::NotFound;
        }
        match self.store.get_link(domain, code).await {
            Ok(Some(link)) => {
                self.table.upsert(&link);
                Lookup::Filled
            }
            Ok(None) => {
                self.table.remember_miss(key);
                Lookup::NotFound
            }
            Err(error) => {
                warn!(%error, "route read-through failed");
                Lookup::Unavailable
            }
        }
    }
}

impl Redirector {
    /// 503 when the store did not answer.
    async fn unavailable(&self, session: &mut Session) -> Result<bool> {
        respond_bytes(
            session,
            503,
            &[
                (header::CONTENT_TYPE, HTML.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
                (header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone()),
                (header::RETRY_AFTER, HeaderValue::from_static("5")),
            ],
            self.pages.unavailable.clone(),
        )
        .await
    }

    /// Fills the lease of the capped link at `key` from the store's budget.
    async fn refill(&self, key: RouteKey) -> Refill {
        match (&self.budgets, self.table.lease(key)) {
            (Some(budgets), Some(lease)) => budgets.refill(&lease).await,
            // No budgets (a table alone, in tests) or the route went meanwhile.
            (None, _) => Refill::Exhausted,
            (_, None) => Refill::Refilled,
        }
    }

    /// For a link that exists but does not redirect now: a 302 to its fallback URL (or its
    /// domain's), else the 410 page; both say why.
    async fn gone(
        &self,
        session: &mut Session,
        state: RouteState,
        key: RouteKey,
        domain: &str,
    ) -> Result<bool> {
        let reason = HeaderValue::from_static(match state {
            RouteState::Expired => "expired",
            RouteState::Disabled => "disabled",
            RouteState::Exhausted => "max-clicks-reached",
            RouteState::Live => "live",
        });
        let state_header = header::HeaderName::from_static("x-shortlink-state");
        let fallback = self
            .table
            .fallback(key)
            .or_else(|| self.domains.gone_redirect(domain));
        if let Some(location) = fallback {
            let headers = [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, NO_STORE.clone()),
                (state_header, reason),
            ];
            return respond(session, 302, &headers, b"").await;
        }
        respond_bytes(
            session,
            410,
            &[
                (header::CONTENT_TYPE, HTML.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
                (header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone()),
                (state_header, reason),
            ],
            self.pages.gone.clone(),
        )
        .await
    }

    /// 404 for an unknown code, or 429 once the client IP has had too many 404s.
    async fn not_found(&self, session: &mut Session) -> Result<bool> {
        if let Some(ip) = client_ip(session)
            && let Err(not_until) = self.not_found.check_key(&ip)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry = HeaderValue::from(wait.as_secs().max(1));
            return respond_bytes(
                session,
                429,
                &[
                    (header::CONTENT_TYPE, HTML.clone()),
                    (header::CACHE_CONTROL, NO_STORE.clone()),
                    (header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone()),
                    (header::RETRY_AFTER, retry),
                ],
                self.pages.too_many.clone(),
            )
            .await;
        }
        respond_bytes(
            session,
            404,
            &[
                (header::CONTENT_TYPE, HTML.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
                (header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone()),
            ],
            self.pages.not_found.clone(),
        )
        .await
    }
}

/// A redirect as [`Redirector::decide`] hands it to its caller's `answer`.
pub(crate) struct PlainRedirect<'a> {
    /// The link followed (its click is captured).
    pub link_id: LinkId,
    /// The redirect's status.
    pub status: RedirectStatus,
    /// The `Location`, targeting applied: valid header bytes.
    pub location: &'a [u8],
}

/// The redirect decision for one request, taken by [`Redirector::decide`] for both paths
/// (the fast path and `request_filter`): everything up to and including the route table.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision<'a, R> {
    /// Not a short link: another method, or a path no code can have. The control plane
    /// answers.
    Pass,
    /// A host this service does not serve, with a fallback configured: redirect there.
    UnknownHost(&'a HeaderValue),
    /// A live link in the table: what the caller's `answer` made of its redirect.
    Redirect(R),
    /// A password-protected link: the control plane answers (password page, cookie).
    Protected,
    /// The link exists but does not redirect now.
    Gone {
        /// Why.
        state: RouteState,
        /// The route's key in the table.
        key: RouteKey,
        /// The link's domain (`""` for the default).
        domain: &'a str,
    },
    /// A capped link whose lease holds no clicks: the store's budget may.
    Unleased {
        /// The route's key in the table.
        key: RouteKey,
        /// The link's domain (`""` for the default).
        domain: &'a str,
    },
    /// The table has no such route: the store may (read-through).
    Miss {
        /// The route's key in the table.
        key: RouteKey,
        /// The link's domain (`""` for the default).
        domain: &'a str,
        /// The code.
        code: &'a str,
    },
}

impl Redirector {
    /// Decides a `method` request of `path` (without the query) at `now_ms` from the route
    /// table alone: the code's shape, the host (`request` gives the request's parts; its
    /// `Host` is read only when custom domains or a fallback exist), the table entry. A
    /// live link's redirect, its targeted `Location` applied, is handed to `answer` in
    /// place (see [`RouteTable::resolve_with`]); `answer` must not write to the table.
    /// The fast path (`fast`) passes requests for a domain with HTTPS behaviour of its own
    /// (redirect to HTTPS, HSTS) to `request_filter`, which applies it.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide<'a, 'r, R>(
        &'a self,
        method: &str,
        path: &'a str,
        request: impl Fn() -> RequestView<'r>,
        host_buf: &'a mut [u8; MAX_HOST],
        now_ms: i64,
        fast: bool,
        answer: impl FnOnce(PlainRedirect<'_>) -> R,
    ) -> Decision<'a, R> {
        if method != "GET" && method != "HEAD" {
            return Decision::Pass;
        }
        let Some(code) = path.strip_prefix('/') else {
            return Decision::Pass;
        };
        if !is_code_shaped(code) || is_reserved(code) {
            return Decision::Pass;
        }
        let domain = match self.domains.classify(|| request().host, host_buf) {
            HostMatch::Default => "",
            HostMatch::Custom(domain) if fast && self.domains.own_https(domain).is_some() => {
                return Decision::Pass;
            }
            HostMatch::Custom(domain) => domain,
            HostMatch::Unknown(fallback) => return Decision::UnknownHost(fallback),
        };
        let key = self.table.key(domain, code);
        let resolved = self
            .table
            .resolve_with(key, now_ms.div_euclid(1000), |redirect| {
                let targeted = self.targeted(key, redirect.targeted, &request);
                answer(PlainRedirect {
                    link_id: redirect.link_id,
                    status: redirect.status,
                    location: targeted
                        .as_ref()
                        .map_or(redirect.location, HeaderValue::as_bytes),
                })
            });
        match resolved {
            Ok(answered) => Decision::Redirect(answered),
            Err(Resolution::Protected) => Decision::Protected,
            Err(Resolution::Gone(state)) => Decision::Gone { state, key, domain },
            Err(Resolution::Unleased) => Decision::Unleased { key, domain },
            // `Redirect` is never an error.
            Err(Resolution::Miss | Resolution::Redirect { .. }) => {
                Decision::Miss { key, domain, code }
            }
        }
    }

    /// The targeted `Location`, when the link has targeting rules (`targeted`) and one
    /// applies to the request (`request` is only built then).
    #[inline]
    fn targeted<'a>(
        &self,
        key: RouteKey,
        targeted: bool,
        request: impl FnOnce() -> RequestView<'a>,
    ) -> Option<HeaderValue> {
        if !targeted {
            return None;
        }
        self.capture.targeted_location(&self.table, key, &request())
    }

    /// Captures the click of a redirect the fast path answered at `now_ms` (when capture is on).
    #[inline]
    pub(crate) fn capture_click(&self, request: &RequestView, link_id: LinkId, now_ms: i64) {
        if let Some(sink) = &self.capture.sink {
            self.capture.record(sink, request, link_id, now_ms);
        }
    }
}

/// What a read-through found.
enum Lookup {
    /// The link is in the table now.
    Filled,
    /// No such link.
    NotFound,
    /// The store did not answer.
    Unavailable,
}

/// A redirect `request_filter` writes: its own copy of the `Location`.
struct OwnedRedirect {
    link_id: LinkId,
    status: RedirectStatus,
    location: HeaderValue,
}

/// Writes a complete small response. HEAD gets the same headers and no body.
async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(header::HeaderName, HeaderValue)],
    body: &'static [u8],
) -> Result<bool> {
    respond_bytes(session, status, headers, Bytes::from_static(body)).await
}

/// [`respond`] with a body made for this answer.
async fn respond_bytes(
    session: &mut Session,
    status: u16,
    headers: &[(header::HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 1))?;
    for (name, value) in headers {
        resp.insert_header(name.clone(), value.clone())?;
    }
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    let head_only = session.req_header().method == Method::HEAD;
    let end = head_only || body.is_empty();
    session.write_response_header(Box::new(resp), end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// `path` with the value of every query parameter replaced by `…`, for logs.
pub fn redact_query(path: &str) -> String {
    let Some((path, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let names: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .map(|name| if name.len() > 32 { "…" } else { name })
        .collect();
    let redacted: Vec<String> = names.iter().map(|name| format!("{name}=…")).collect();
    format!("{path}?{}", redacted.join("&"))
}

/// Whether the request's `Host` is one the proxy answers: exactly one, valid, and present
/// on HTTP/1.1 (HTTP/1.0 may omit it). The fast path defers what fails this to pingora.
fn host_is_acceptable(req: &RequestHeader) -> bool {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => is_valid_host_header(host.as_bytes()),
        // HTTP/2 names the host in `:authority` (RFC 9113 §8.3.1).
        (None, None) => {
            req.version < http::Version::HTTP_11
                || (req.version == http::Version::HTTP_2
                    && req
                        .uri
                        .host()
                        .is_some_and(|h| is_valid_host_header(h.as_bytes())))
        }
        _ => false,
    }
}

impl Redirector {
    /// Whether the client reached the edge over HTTPS: on this proxy's TLS listener, or
    /// by a trusted proxy's word (`X-Forwarded-Proto`, `Forwarded`).
    fn client_https(&self, session: &Session) -> bool {
        is_secure(session)
            || self
                .capture
                .forwarded_https(client_ip(session), session.req_header())
    }
}

/// Whether the request came over TLS (the proxy's HTTPS listener).
fn is_secure(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Redirector {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // pingora's default: its response compression module, off.
        modules.add_module(ResponseCompressionBuilder::enable(0));
        if let Some(https) = &self.https {
            modules.add_module(https.hsts_module());
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Some(std::time::Instant::now());
        let secure = self.client_https(session);
        ctx.https = secure;
        if secure && let Some(https) = &self.https {
            // HTTP/2 names the host in `:authority`.
            let req = session.req_header();
            let host = req
                .headers
                .get(header::HOST)
                .map(HeaderValue::as_bytes)
                .or_else(|| req.uri.host().map(str::as_bytes));
            let value = https.hsts_for(host);
            if let Some(hsts) = session.downstream_modules_ctx.get_mut::<Hsts>() {
                hsts.mark_secure(value);
            }
        }
        if !host_is_acceptable(session.req_header()) {
            // RFC 9112 §3.2: a missing (HTTP/1.1), repeated or invalid `Host` is a 400.
            session.set_keepalive(None);
            let headers = [
                (header::CONTENT_TYPE, PLAIN.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
            ];
            return respond(session, 400, &headers, BAD_HOST_BODY).await;
        }
        let req = session.req_header();
        let path = req.uri.path();
        if path.starts_with("/internal/") || path == "/metrics" {
            // Proxy-to-control traffic and operators' scrapes: never reachable from outside
            // through the proxy (Prometheus scrapes the control plane's own listener).
            return self.not_found(session).await;
        }
        if path == "/readyz" {
            // The proxy's own readiness: it serves redirects once every route is loaded,
            // whether or not a control plane is up.
            let (status, body): (u16, &'static [u8]) =
                if self.sync.loaded.load(std::sync::atomic::Ordering::Acquire) {
                    (200, b"ready\n")
                } else {
                    (503, b"loading routes\n")
                };
            let headers = [
                (header::CONTENT_TYPE, PLAIN.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
            ];
            return respond(session, status, &headers, body).await;
        }
        if let Some(acme) = &self.acme
            && let Some(token) = path.strip_prefix(HTTP01_PREFIX)
        {
            let (status, body) = match acme.http01(token).await {
                Answer::Found(key_authorization) => (200, Bytes::from(key_authorization)),
                // Counted by the 404 limiter like any other miss.
                Answer::Missing => return self.not_found(session).await,
                Answer::Busy => (503, Bytes::from_static(b"try again\n")),
            };
            let headers = [
                (header::CONTENT_TYPE, PLAIN.clone()),
                (header::CACHE_CONTROL, NO_STORE.clone()),
            ];
            return respond_bytes(session, status, &headers, body).await;
        }
        if !secure
            && let Some(https) = &self.https
            && let Some(host) = req.headers.get(header::HOST)
            && let Some(location) = https.upgrade_location(
                host.as_bytes(),
                req.uri.path_and_query().map_or("/", |p| p.as_str()),
            )
        {
            let headers = [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, NO_STORE.clone()),
            ];
            return respond(session, 308, &headers, b"").await;
        }
        let country_header = self.capture.country_header.as_deref();
        let now_ms = now_unix_ms();
        // After a table miss, the read-through fills the table and the same decision is
        // taken again (once); after a capped link's lease is filled, too (a few times:
        // concurrent requests may take the clicks first).
        let mut read_through = true;
        let mut refills = 0;
        loop {
            let mut host_buf = [0u8; MAX_HOST];
            let req = session.req_header();
            let decision = self.decide(
                req.method.as_str(),
                req.uri.path(),
                || RequestView::of_session(session, country_header),
                &mut host_buf,
                now_ms,
                false,
                |redirect| {
                    HeaderValue::from_bytes(redirect.location)
                        .ok()
                        .map(|location| OwnedRedirect {
                            link_id: redirect.link_id,
                            status: redirect.status,
                            location,
                        })
                },
            );
            return match decision {
                // A stored `Location` is valid header text (checked when the route is
                // built): the control plane answers if it is not.
                Decision::Pass | Decision::Protected | Decision::Redirect(None) => Ok(false),
                Decision::UnknownHost(fallback) => {
                    let headers = [
                        (header::LOCATION, fallback.clone()),
                        (header::CACHE_CONTROL, NO_STORE.clone()),
                    ];
                    respond(session, 302, &headers, b"").await
                }
                Decision::Redirect(Some(redirect)) => {
                    ctx.clicked = Some(redirect.link_id);
                    let status = redirect.status;
                    let mut resp = ResponseHeader::build(status.as_u16(), Some(3))?;
                    resp.insert_header(header::LOCATION, redirect.location)?;
                    resp.insert_header(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static(status.cache_control()),
                    )?;
                    resp.insert_header(header::CONTENT_LENGTH, HeaderValue::from_static("0"))?;
                    session.write_response_header(Box::new(resp), true).await?;
                    Ok(true)
                }
                Decision::Gone { state, key, domain } => {
                    let domain = domain.to_owned();
                    self.gone(session, state, key, &domain).await
                }
                Decision::Unleased { .. } if refills == MAX_REFILLS => {
                    self.unavailable(session).await
                }
                Decision::Unleased { key, domain } => match self.refill(key).await {
                    Refill::Refilled => {
                        refills += 1;
                        continue;
                    }
                    Refill::Exhausted => {
                        let domain = domain.to_owned();
                        self.gone(session, RouteState::Exhausted, key, &domain)
                            .await
                    }
                    Refill::Unavailable => self.unavailable(session).await,
                },
                Decision::Miss { .. } if !read_through => self.not_found(session).await,
                Decision::Miss { key, domain, code } => {
                    let (domain, code) = (domain.to_owned(), code.to_owned());
                    match self.read_through(key, &domain, &code).await {
                        Lookup::Filled => {
                            read_through = false;
                            continue;
                        }
                        Lookup::NotFound => self.not_found(session).await,
                        Lookup::Unavailable => self.unavailable(session).await,
                    }
                }
            };
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(backend) = self.upstreams.select(b"", 256) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy control-plane upstream",
            ));
        };
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(self.upstream_timeout);
        peer.options.write_timeout = Some(self.upstream_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for name in [
            hop::SECRET_HEADER,
            hop::CLIENT_IP_HEADER,
            hop::CLIENT_PROTO_HEADER,
        ] {
            upstream_request.remove_header(name);
        }
        if let Some(ip) = client_ip(session) {
            let forwarded = match upstream_request.headers.get("x-forwarded-for") {
                Some(prior) => format!("{}, {ip}", String::from_utf8_lossy(prior.as_bytes())),
                None => ip.to_string(),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        // The scheme as this proxy knows it (its own TLS, or a trusted proxy's word),
        // never a client's claim.
        let https = ctx.https;
        upstream_request
            .insert_header("x-forwarded-proto", if https { "https" } else { "http" })?;
        if let Some(secret) = &self.hop_secret {
            // The client as the click records see it: the socket's peer, or the last
            // untrusted `X-Forwarded-For` hop behind a configured trusted proxy.
            let view = RequestView::of_session(session, None);
            if let Some(ip) = self.capture.client_ip(&view) {
                upstream_request.insert_header(hop::CLIENT_IP_HEADER, ip.to_string())?;
            }
            let proto = if https { "https" } else { "http" };
            upstream_request.insert_header(hop::CLIENT_PROTO_HEADER, proto)?;
            upstream_request.insert_header(hop::SECRET_HEADER, secret.clone())?;
        }
        Ok(())
    }

    /// What pingora logs of a request that failed: method, path and host, with every
    /// query value cut out, since a query may carry a key (`?access_token=`).
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        format!(
            "{} {}, Host: {host}",
            req.method,
            redact_query(req.uri.path_and_query().map_or("/", |p| p.as_str()))
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let (Some(link), Some(sink)) = (ctx.clicked, &self.capture.sink) {
            let request = RequestView::of_session(session, self.capture.country_header.as_deref());
            self.capture.record(sink, &request, link, now_unix_ms());
        }
        if let (Some(started), Some(response)) = (ctx.started, session.response_written()) {
            crate::metrics::REQUESTS
                .observe(response.status.as_u16(), started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_keep_no_query_value() {
        #[track_caller]
        fn check(path: &str, expected: &str) {
            assert_eq!(redact_query(path), expected);
        }
        check("/api/v1/events", "/api/v1/events");
        check(
            "/api/v1/events?access_token=sl_secret&last_event_id=4",
            "/api/v1/events?access_token=…&last_event_id=…",
        );
        check(
            "/x?sl_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "/x?…=…",
        );
        check("/x?qr", "/x?qr=…");
        check("/x?", "/x?");
    }

    use crate::clicks::captured_text;

    #[test]
    fn captured_headers_are_cut_and_kept_as_text() {
        let mut req = RequestHeader::build("GET", b"/abc", None).unwrap();
        let long = "a".repeat(MAX_CAPTURED_FIELD + 100);
        req.insert_header(header::USER_AGENT, long.as_str())
            .unwrap();
        req.insert_header(
            header::REFERER,
            HeaderValue::from_bytes(b"https://x.example/\xc3\xa9").unwrap(),
        )
        .unwrap();
        let get = |name| req.headers.get(name).map(HeaderValue::as_bytes);
        let ua = cut(get(header::USER_AGENT)).unwrap();
        assert_eq!(ua.len(), MAX_CAPTURED_FIELD);
        assert_eq!(
            captured_text(cut(get(header::REFERER)).unwrap()),
            "https://x.example/é"
        );
        // A cut through a character keeps the text, marking the cut.
        assert_eq!(captured_text(&"é".as_bytes()[..1]), "\u{fffd}");
        assert!(cut(get(header::HOST)).is_none());
    }
}
