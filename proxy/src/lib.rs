//! The shortlink data plane on pingora: a redirect proxy answering `GET /{code}` from an
//! in-memory route table, kept in sync with the store, forwarding every other path to the
//! control plane.

pub mod acme;
pub mod budget;
pub mod clicks;
pub mod config;
pub mod domains;
pub mod fast_path;
mod h2;
pub mod listen;
pub mod metrics;
pub mod pages;
pub mod proxy_protocol;
pub mod routes;
pub mod service;
pub mod snapshot;
pub mod sync;
pub mod tls;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::{LoadBalancer, health_check::TcpHealthCheck, selection::RoundRobin};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use shortlink_core::InvalidSetting;
use shortlink_store::{ClickBudget, RouteSource, Store};
use thiserror::Error;

pub use clicks::{ClickSink, ClickStats, LocalIngest, LocalIngestError};
pub use config::ProxyConfig;
pub use domains::DomainSet;
pub use routes::{RedirectRef, Resolution, RouteKey, RouteTable};
pub use service::{CountryLookup, Redirector};
pub use sync::{RouteSync, SyncStatus};

/// Why the proxy could not be assembled.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// A setting is invalid.
    #[error("invalid proxy config: {0}")]
    Config(#[from] InvalidSetting),
    /// The control upstream list could not be built.
    #[error("invalid control upstreams: {0}")]
    Upstreams(String),
    /// The proxy's listen address cannot be bound.
    #[error("cannot listen on {0}")]
    Listen(String, #[source] std::io::Error),
    /// The click spool folder cannot be used.
    #[error("cannot use the click spool folder {0}")]
    Spool(String, #[source] std::io::Error),
    /// A configured certificate cannot be served.
    #[error(transparent)]
    Certificate(#[from] tls::CertificateError),
    /// The TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

/// What the assembled proxy shares with the rest of the process.
pub struct ProxyHandles {
    /// The route table.
    pub table: Arc<RouteTable>,
    /// Route sync progress.
    pub sync: Arc<SyncStatus>,
    /// Click counters.
    pub clicks: Arc<ClickStats>,
}

/// A pingora server configured from `config` (threads, graceful-shutdown timings, the
/// upgrade socket). With `upgrade`, it first takes the listening sockets of the running
/// process, which hands them over on SIGQUIT (this waits about 5 s for it, then fails).
pub fn new_server(config: &ProxyConfig, upgrade: bool) -> Server {
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    let upgrade_sock = config
        .upgrade_socket
        .clone()
        .unwrap_or_else(|| tmp.join(format!("shortlink-{pid}-upgrade.sock")));
    let conf = ServerConf {
        threads: config.threads,
        work_stealing: config.work_stealing,
        grace_period_seconds: Some(config.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout_seconds),
        pid_file: tmp
            .join(format!("shortlink-{pid}.pid"))
            .display()
            .to_string(),
        upgrade_sock: upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let options = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(options), conf);
    server.bootstrap();
    server
}

/// What the proxy learns from the rest of the configuration.
pub struct Edge {
    /// The public URL's host (lower case, no port): the default domain's.
    pub default_host: String,
    /// The GeoIP lookup targeting rules use, when a database is configured.
    pub country_lookup: Option<CountryLookup>,
    /// Stops the server when a service cannot run (the listener cannot listen).
    pub fatal: Fatal,
    /// The visitor pages (an operator's templates or the built-in ones).
    pub pages: shortlink_core::pages::PageTemplates,
}

/// Adds the proxy and its background services (route sync, click shipping, capped links'
/// click leases, upstream health checks, certificates) to `server`. Routes, click leases,
/// certificates and ACME state come from `store`. `internal_secret` authenticates shipped
/// click batches; `local_ingest`, when set, takes them in-process instead.
pub fn add_proxy(
    server: &mut Server,
    config: &ProxyConfig,
    edge: Edge,
    shared: Arc<dyn Store>,
    internal_secret: Option<String>,
    local_ingest: Option<Arc<dyn clicks::LocalIngest>>,
) -> Result<ProxyHandles, ProxyError> {
    config.validate()?;
    let store: Arc<dyn RouteSource> = shared.clone();
    let budget_store: Arc<dyn ClickBudget> = shared.clone();
    let hop_secret = internal_secret.clone();
    let fallback = config
        .unknown_host_redirect
        .as_deref()
        .map(http::HeaderValue::from_str)
        .transpose()
        .map_err(|_| InvalidSetting::new("proxy.unknown_host_redirect", "is not a valid URL"))?;
    let gone = config
        .gone_redirect
        .as_deref()
        .map(http::HeaderValue::from_str)
        .transpose()
        .map_err(|_| InvalidSetting::new("proxy.gone_redirect", "is not a valid URL"))?;
    let domains = Arc::new(DomainSet::new(&edge.default_host, fallback).with_gone_redirect(gone));
    let snapshot = config
        .route_snapshot
        .clone()
        .filter(|_| config.route_snapshot_seconds > 0)
        .map(|path| sync::SnapshotPolicy {
            path,
            every: Duration::from_secs(config.route_snapshot_seconds),
        });
    // Keys are hashed with the snapshot's seed, so its routes can be restored; it is
    // checked against the store before it is used (`RouteSync`).
    let seed = snapshot
        .as_ref()
        .and_then(|policy| snapshot::read_header(&policy.path).ok())
        .map_or_else(rand::random, |header| header.seed);
    let table = Arc::new(RouteTable::with_seed(
        Duration::from_millis(config.negative_cache_ms),
        config.negative_cache_max,
        seed,
    ));
    let status = Arc::new(SyncStatus::default());

    let mut upstreams = LoadBalancer::<RoundRobin>::try_from_iter(config.control_upstreams.iter())
        .map_err(|e| ProxyError::Upstreams(e.to_string()))?;
    upstreams.set_health_check(TcpHealthCheck::new());
    upstreams.health_check_frequency =
        Some(Duration::from_secs(config.health_check_seconds.max(1)));
    let health = background_service("control upstream health check", upstreams);
    let upstreams = health.task();

    let spool_dir = config
        .spool_dir
        .clone()
        .ok_or_else(|| InvalidSetting::new("proxy.spool_dir", "is not set"))?;
    // At shutdown the listener gives connections most of the grace period to end; the
    // taker's last take waits for that, then the shipper ships before the runtimes stop.
    let drain = Duration::from_secs(config.grace_period_seconds).saturating_sub(DRAIN_MARGIN);
    let (drained_tx, drained) = tokio::sync::watch::channel(());
    let (sink, taker, shipper) = clicks::click_queue(
        config.click_queue_capacity,
        config.threads,
        clicks::ShipperConfig {
            batch_max: config.click_batch_max,
            batch_every: Duration::from_millis(config.click_batch_ms),
            spool_dir: spool_dir.clone(),
            spool_max_bytes: config.spool_max_bytes,
            secret: internal_secret,
            local: local_ingest,
            idle_class: config.ship_idle_class,
            journal: config.click_journal,
        },
        upstreams.clone(),
    )
    .map_err(|e| ProxyError::Spool(spool_dir.display().to_string(), e))?;
    let taker = taker.after_drain(drained.clone(), drain + DRAIN_MARGIN / 5);
    let budgets = Arc::new(budget::Budgets::new(
        budget_store,
        Duration::from_secs(config.click_lease_seconds),
        Some((drained, drain + DRAIN_MARGIN / 5)),
    ));
    let click_stats = sink.stats().clone();
    let sync = RouteSync::new(
        store.clone(),
        table.clone(),
        domains.clone(),
        status.clone(),
        Duration::from_millis(config.sync_poll_ms),
        config.bulk_load_page,
    )
    .with_parallel_load(config.bulk_load_parallelism)
    .with_snapshot(snapshot);
    let per_minute = NonZeroU32::new(config.not_found_per_ip_per_minute).ok_or_else(|| {
        InvalidSetting::new("proxy.not_found_per_ip_per_minute", "must be positive")
    })?;
    let limiter = service::not_found_limiter(per_minute);
    let capture = service::Capture {
        sink: config.capture_clicks.then_some(sink),
        trusted_proxies: config.trusted_proxies.clone(),
        forwarded_headers: config.forwarded_headers,
        country_header: config.country_header.clone(),
        country_lookup: edge.country_lookup,
    };
    let https = match &config.tls.listen {
        Some(_) => Some(tls_parts(
            config,
            &edge.default_host,
            shared.clone(),
            domains.clone(),
        )?),
        None => None,
    };
    let mut redirector = Redirector::new(
        table.clone(),
        domains,
        store,
        capture,
        upstreams,
        limiter.clone(),
        status.clone(),
    )
    .with_pages(Arc::new(pages::VisitorPages::new(&edge.pages)))
    .with_upstream_timeout(Duration::from_secs(config.upstream_timeout_seconds))
    .with_budgets(budgets.clone())
    .vouching_with(hop_secret.as_deref())
    .map_err(|_| InvalidSetting::new("internal_secret", "is not valid header text"))?;
    if let Some(https) = &https {
        redirector = redirector.with_https(https.policy.clone());
        if let Some(answers) = &https.acme_answers
            && config.tls.acme.challenge == config::AcmeChallenge::Http01
        {
            redirector = redirector.with_acme_answers(answers.clone());
        }
    }
    let mut http_proxy = pingora::proxy::http_proxy(&server.configuration, redirector.clone());
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(config.tls.h2_max_concurrent_streams)
        .max_header_list_size(config.tls.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(config.tls.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(Some(config.tls.h2_max_error_resets));
    http_proxy.h2_options = Some(h2);
    let mut server_options = pingora::apps::HttpServerOptions::default();
    server_options.h2_idle_timeout = Some(Duration::from_secs(config.keepalive_timeout_seconds));
    http_proxy.server_options = Some(server_options);
    let http_proxy = Arc::new(http_proxy);
    // With `redirect_http`, the plain port's requests go to `request_filter`, which
    // redirects those for hosts with a certificate.
    let app = fast_path::FastPathApp::new(
        redirector.clone(),
        config.country_header.as_deref(),
        config.fast_path && !config.tls.redirect_http,
        config.connection_limits(),
        http_proxy.clone(),
    )
    .with_proxy_protocol(config.proxy_protocol);
    let upgrading = server.options.as_ref().is_some_and(|o| o.upgrade);
    let listening = |addr: &str| -> Result<listen::Listening, ProxyError> {
        if upgrading {
            return Ok(listen::Listening::inherited(addr));
        }
        let socket = listen::bind_tcp(addr).map_err(|e| ProxyError::Listen(addr.to_owned(), e))?;
        Ok(listen::Listening::bound(addr, socket))
    };
    let proxy = fast_path::RedirectListener::new(
        "shortlink proxy",
        listening(&config.listen)?,
        app,
        config.work_stealing,
        drain,
        drained_tx.clone(),
        edge.fatal.clone(),
    );
    if let (Some(https), Some(addr)) = (https, &config.tls.listen) {
        let app = fast_path::FastPathApp::new(
            redirector,
            config.country_header.as_deref(),
            config.fast_path,
            config.connection_limits(),
            http_proxy,
        )
        .with_tls(https.edge, config.tls.hsts().as_deref())
        .with_proxy_protocol(config.tls.proxy_protocol);
        server.add_service(fast_path::RedirectListener::new(
            "shortlink tls proxy",
            listening(addr)?,
            app,
            config.work_stealing,
            drain,
            drained_tx,
            edge.fatal,
        ));
        let mut reload = background_service("certificate reload", https.reload);
        reload.threads = Some(1);
        server.add_service(reload);
        if let Some(manager) = https.acme {
            let mut acme = background_service("ACME", manager);
            acme.threads = Some(1);
            server.add_service(acme);
        }
    }
    let limiter_pruner = background_service("404 limiter pruning", LimiterPruner(limiter));

    let mut sync_service = background_service("route sync", sync);
    sync_service.threads = Some(1);
    // Each on a thread of its own: the taker never waits for a delivery.
    let mut take_service = background_service("click taking", taker);
    take_service.threads = Some(1);
    let mut ship_service = background_service("click shipping", shipper);
    ship_service.threads = Some(1);
    let mut budget_service = background_service("click leases", ArcService(budgets));
    budget_service.threads = Some(1);
    server.add_service(proxy);
    server.add_service(health);
    server.add_service(sync_service);
    server.add_service(take_service);
    server.add_service(ship_service);
    server.add_service(budget_service);
    server.add_service(limiter_pruner);
    metrics::StateCollector::register(click_stats.clone(), table.clone(), status.clone());
    if let Some(addr) = &config.metrics_listen {
        let mut listener =
            pingora::services::listening::Service::new("metrics".into(), metrics::MetricsApp);
        listener.add_tcp(addr);
        server.add_service(listener);
    }
    Ok(ProxyHandles {
        table,
        sync: status,
        clicks: click_stats,
    })
}

/// What TLS adds to the proxy: the handshake's configuration, the request path's policy,
/// and the task that reloads changed certificate files.
struct TlsParts {
    edge: Arc<tls::TlsEdge>,
    policy: Arc<tls::HttpsPolicy>,
    reload: tls::CertificateReload,
    /// With ACME: the orders, and the challenge answers every proxy gives.
    acme: Option<acme::AcmeManager>,
    acme_answers: Option<Arc<acme::AcmeAnswers>>,
}

/// Loads the configured certificate files (a failure stops start-up) and builds TLS on
/// them and the store's certificates.
fn tls_parts(
    config: &ProxyConfig,
    default_host: &str,
    store: Arc<dyn Store>,
    domains: Arc<DomainSet>,
) -> Result<TlsParts, ProxyError> {
    let provider = tls::provider();
    let certs = Arc::new(tls::Certificates::new(default_host));
    let reload = tls::CertificateReload::load(
        certs.clone(),
        &config.tls.certificates,
        Some(store.clone()),
        provider.clone(),
        Duration::from_secs(config.tls.reload_seconds),
    )?;
    let acme = acme::AcmeManager::new(&config.tls.acme, store.clone(), certs.clone(), default_host);
    let acme_answers = acme
        .is_some()
        .then(|| Arc::new(acme::AcmeAnswers::new(store, domains.clone())));
    let mut edge = tls::TlsEdge::new(&config.tls, certs.clone(), provider)?;
    if let Some(answers) = &acme_answers
        && config.tls.acme.challenge == config::AcmeChallenge::TlsAlpn01
    {
        edge = edge.with_acme_answers(answers.clone());
    }
    let edge = Arc::new(edge);
    let hsts = config
        .tls
        .hsts()
        .map(|value| http::HeaderValue::from_str(&value))
        .transpose()
        .map_err(|_| InvalidSetting::new("proxy.tls.hsts_max_age_seconds", "is not valid"))?;
    let policy = Arc::new(tls::HttpsPolicy {
        certs,
        domains,
        redirect_http: config.tls.redirect_http,
        url_port: config.tls.url_port(),
        hsts,
        hsts_include_subdomains: config.tls.hsts_include_subdomains,
    });
    Ok(TlsParts {
        edge,
        policy,
        reload,
        acme,
        acme_answers,
    })
}

/// The part of the shutdown grace period kept for the click shipper's last delivery after
/// the listener's connections have ended.
const DRAIN_MARGIN: Duration = Duration::from_millis(750);

/// A background service shared with the request path.
struct ArcService<S>(Arc<S>);

#[async_trait]
impl<S: BackgroundService + Send + Sync> BackgroundService for ArcService<S> {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.start(shutdown).await;
    }
}

/// Forgets idle per-IP 404 counters so the limiter's memory stays bounded.
struct LimiterPruner(Arc<service::NotFoundLimiter>);

#[async_trait]
impl BackgroundService for LimiterPruner {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {
                    self.0.retain_recent();
                    self.0.shrink_to_fit();
                }
            }
        }
    }
}

/// Lets a service stop the whole server with an error. The server then shuts down as on
/// SIGTERM (the click shipper takes and ships what it holds) and [`run`] returns the
/// error, instead of the service ending the process under everyone's feet.
#[derive(Clone, Default)]
pub struct Fatal(Arc<FatalInner>);

#[derive(Default)]
struct FatalInner {
    notify: tokio::sync::Notify,
    reason: std::sync::OnceLock<String>,
}

impl Fatal {
    /// Asks the server to stop because of `reason` (the first reason given is kept).
    pub fn stop(&self, reason: impl Into<String>) {
        let _ = self.0.reason.set(reason.into());
        // A stored permit wakes the watcher even if it is not waiting yet.
        self.0.notify.notify_one();
    }

    /// Why the server was stopped, if a service stopped it.
    pub fn reason(&self) -> Option<&str> {
        self.0.reason.get().map(String::as_str)
    }
}

/// The signals the server stops on: SIGTERM, and SIGINT (Ctrl-C) like it, so an
/// interactive stop also flushes clicks; SIGQUIT hands the listening sockets to the process
/// started with `--upgrade`, then stops the same way; a service's [`Fatal::stop`].
struct Signals {
    fatal: Fatal,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = self.fatal.0.notify.notified() => ShutdownSignal::GracefulTerminate,
        }
    }
}

/// Runs `server` until SIGTERM, SIGINT, SIGQUIT (an upgrade) or a service's
/// [`Fatal::stop`], then shuts down gracefully and returns; with the reason a service
/// gave, if one stopped it.
pub fn run(server: Server, fatal: Fatal) -> Result<(), String> {
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            fatal: fatal.clone(),
        }),
    });
    match fatal.reason() {
        Some(reason) => Err(reason.to_owned()),
        None => Ok(()),
    }
}
