//! The shortlink control plane on axum: the links API, users and keys, health.
//!
//! [`app`] builds the router apart from serving it, so tests can drive it in-process;
//! [`serve`] runs it on a listener until a shutdown future resolves.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod bulk;
pub mod clicks;
pub mod client;
pub mod config;
pub mod domains;
pub mod error;
pub mod extract;
pub mod hub;
pub mod ingest;
pub mod keys;
pub mod links;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod protected;
pub mod qr;
pub mod sessions;
pub mod slow_body;
pub mod state;
pub mod stats;
pub mod thumbnails;
mod ui;
pub mod unread_body;
pub mod uploads;
pub mod webhooks;

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use shortlink_core::{EventRetention, InvalidSetting, Role, Scopes};
use shortlink_store::{Store, StoreError};
use thiserror::Error;
use tracing::info;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use config::ControlConfig;
pub use error::{ApiError, ErrorCode};
pub use state::{AppState, Backends};

/// Why the control plane stopped with an error.
#[derive(Debug, Error)]
pub enum ControlError {
    /// A setting is invalid.
    #[error("invalid control config: {0}")]
    Config(#[from] InvalidSetting),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("control plane failed: {0}")]
    Serve(std::io::Error),
    /// The store failed during start-up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The webhook HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Largest CSV import body (about a million rows of typical links).
const IMPORT_MAX_BYTES: usize = 512 * 1024 * 1024;

/// The documented routes: each handler registered here is described by its own
/// `#[utoipa::path]`, so the document lists exactly what is served.
fn documented(max_batch: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(links::shorten))
        .routes(routes!(links::create_link, links::list_links))
        .routes(routes!(
            links::get_link,
            links::patch_link,
            links::delete_link
        ))
        .routes(routes!(bulk::import_links).layer(DefaultBodyLimit::max(IMPORT_MAX_BYTES)))
        .routes(routes!(bulk::export_links))
        .routes(routes!(stats::link_stats))
        .routes(routes!(stats::account_stats))
        .routes(routes!(clicks::export_clicks))
        .routes(routes!(clicks::export_link_clicks))
        .routes(routes!(qr::link_qr))
        .routes(routes!(ingest::ingest_clicks).layer(DefaultBodyLimit::max(max_batch)))
        .routes(routes!(notifications::sse))
        .routes(routes!(notifications::websocket))
        .routes(routes!(notifications::poll))
        .routes(routes!(uploads::upload).layer(DefaultBodyLimit::disable()))
        .routes(routes!(uploads::presign))
        .routes(routes!(uploads::get_upload))
        .routes(routes!(uploads::put_content).layer(DefaultBodyLimit::disable()))
        .routes(routes!(uploads::complete))
        .routes(routes!(uploads::manage::list_uploads))
        .routes(routes!(uploads::manage::delete_upload))
        .routes(routes!(uploads::manage::update_upload))
        .routes(
            routes!(uploads::multipart::create)
                .layer(DefaultBodyLimit::max(uploads::multipart::PARTS_BODY_BYTES)),
        )
        .routes(
            routes!(uploads::multipart::sign_parts)
                .layer(DefaultBodyLimit::max(uploads::multipart::PARTS_BODY_BYTES)),
        )
        .routes(routes!(uploads::multipart::list_parts))
        .routes(routes!(uploads::multipart::put_part).layer(DefaultBodyLimit::disable()))
        .routes(
            routes!(uploads::multipart::complete)
                .layer(DefaultBodyLimit::max(uploads::multipart::PARTS_BODY_BYTES)),
        )
        .routes(routes!(uploads::serve_file))
        .routes(routes!(uploads::serve_thumbnail))
        .routes(routes!(domains::create_domain, domains::list_domains))
        .routes(routes!(domains::delete_domain, domains::update_domain))
        .routes(routes!(protected::show, protected::submit))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(admin::patch_user))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(admin::search_links))
        .routes(routes!(admin::delete_link))
        .routes(routes!(admin::disable_link))
        .routes(routes!(admin::enable_link))
        .routes(routes!(admin::list_audit))
        .routes(routes!(backup::download_backup))
        .routes(routes!(backup::upload_restore).layer(DefaultBodyLimit::disable()))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::logout))
        .routes(routes!(sessions::me))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::end_session))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::patch_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(webhooks::list_deliveries))
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn api_document(config: &ControlConfig) -> utoipa::openapi::OpenApi {
    let mut document = documented(config.max_batch_bytes).into_openapi();
    openapi::fit_to(&mut document, config);
    document
}

/// The router with every endpoint: the documented API, the document itself and its
/// reference page, and the web page.
pub fn app(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    let max_batch = state.config().max_batch_bytes;
    let body_rate = slow_body::BodyRate {
        min_bytes_per_second: state.config().min_body_bytes_per_second,
        grace: std::time::Duration::from_secs(state.config().body_grace_seconds),
    };
    let (api, mut document) = documented(max_batch).split_for_parts();
    openapi::fit_to(&mut document, state.config());
    let document = bytes::Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    document,
                )
            }
        }),
    )
    .merge(ui::docs())
    .route("/ui", get(ui::index))
    .route("/ui/", get(ui::index))
    .route("/ui/app.js", get(ui::script))
    .route("/ui/app.css", get(ui::style))
    .route("/ui/icon.svg", get(ui::icon))
    .route("/ui/lib/{file}", get(ui::library))
    .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this endpoint does not support that method",
        )
    })
    .layer(DefaultBodyLimit::max(max_body))
    .layer(axum::middleware::from_fn_with_state(
        body_rate,
        slow_body::enforce,
    ))
    .layer(axum::middleware::from_fn(unread_body::close_if_unread))
    .layer(axum::middleware::from_fn(metrics::track))
    .with_state(state)
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = String, content_type = "text/plain")),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers.", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not answer.", body = String, content_type = "text/plain"),
    ),
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store().feed_head().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }
}

/// Accepts connections and serves `router` on each until `shutdown` resolves, then waits
/// for the connections open to finish their requests. Like `axum::serve`, plus a deadline
/// for each request head (which also ends idle kept-alive connections): a client that
/// sends its head slowly, or not at all, does not hold a connection for ever.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    head_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    // Shutdown: each connection is told to finish its request in flight and close; the
    // loop then waits until every connection task has dropped its `done` sender.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (done, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors: accept would fail again at once; let some close.
                    if e.raw_os_error() == Some(24) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        // What `into_make_service_with_connect_info` gives each request: the peer address.
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _done = done;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "control-plane connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(done);
    let _ = all_done.recv().await;
    Ok(())
}

/// Name of the bootstrap admin user.
pub const ADMIN_USER: &str = "admin";

/// Makes sure an admin can sign in: creates the `admin` user if missing, makes the
/// configured admin key the bootstrap key (retiring the one it replaces), or — on first
/// start without one — generates a key and returns it so the caller can print it once.
pub async fn bootstrap_admin(
    store: &dyn Store,
    configured_key: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let (admin, created) = match store.user_by_name(ADMIN_USER).await? {
        Some(user) => (user, false),
        None => match store.create_user(ADMIN_USER, Role::Admin).await {
            Ok(user) => (user, true),
            // Another instance created it at the same moment.
            Err(StoreError::UserExists(_)) => (
                store
                    .user_by_name(ADMIN_USER)
                    .await?
                    .ok_or_else(|| StoreError::corrupt("admin user vanished"))?,
                false,
            ),
            Err(e) => return Err(e),
        },
    };
    if let Some(key) = configured_key {
        keys::replace_bootstrap_key(store, &admin, key).await?;
        return Ok(None);
    }
    if created {
        let key = auth::generate_api_key();
        let record = auth::new_key_record(
            &key,
            &admin,
            keys::BOOTSTRAP_LABEL,
            Scopes::full(Role::Admin),
            None,
        );
        store.add_api_key(record).await?;
        return Ok(Some(key));
    }
    Ok(None)
}

/// Pending connections the listen socket queues: a reconnect storm of event streams
/// after a restart must not overflow it (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// Binds the control plane's listen address. Binding before anything else starts means
/// a proxy in the same process never sees the control plane refuse connections.
pub fn bind(config: &ControlConfig) -> Result<std::net::TcpListener, ControlError> {
    config.validate()?;
    let addr: std::net::SocketAddr = config.listen.parse().map_err(|_| {
        InvalidSetting::new(
            "control.listen",
            format!("'{}' is not an address", config.listen),
        )
    })?;
    let bind_error = |source| ControlError::Bind {
        addr: config.listen.clone(),
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(ControlError::Serve)?;
    Ok(socket.into())
}

/// Serves the control plane on `listener` (from [`bind`]) until `shutdown` resolves.
/// `backends.ingestor` is shared with an in-process proxy in `serve`, so the GeoIP
/// database and the user-agent cache exist once.
pub async fn serve(
    listener: std::net::TcpListener,
    config: ControlConfig,
    public_url: &str,
    internal_secret: Option<String>,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let salt = backends.store.installation_salt().await?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(ControlError::Serve)?;
    let retention = EventRetention {
        per_user: config.events_retain_per_user,
        max_age_secs: i64::from(config.events_retain_hours) * 3600,
    };
    let poll = std::time::Duration::from_millis(config.events_poll_ms);
    let workers = config.thumbnail_workers;
    let delivery_log = (
        config.webhooks.log_retain_per_webhook,
        i64::from(config.events_retain_hours) * 3600,
    );
    let state = AppState::new(backends, config, public_url, salt, internal_secret)?;
    // The hub starts at the head read now, before any request is served: an event a
    // request writes is then always after it, never skipped.
    let head = state.store().event_feed_head().await?;
    let follower = tokio::spawn(state.hub().clone().follow_from(
        state.store().clone(),
        poll,
        Some(head),
    ));
    let dispatcher = tokio::spawn(state.webhooks().clone().run());
    let thumbnailers: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(thumbnails::run_thumbnail_worker(state.clone())))
        .collect();
    let sweeper = tokio::spawn(uploads::sweep::run_sweeper(state.clone()));
    let download_counts = tokio::spawn(uploads::downloads::run_flusher(state.clone()));
    let pruning = state.clone();
    let pruner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            pruning.prune_limits();
            if let Err(e) = pruning.store().prune_events(retention).await {
                tracing::warn!(error = %e, "pruning events failed");
            }
            let (per_webhook, max_age) = delivery_log;
            if let Err(e) = pruning.store().prune_deliveries(per_webhook, max_age).await {
                tracing::warn!(error = %e, "pruning webhook delivery logs failed");
            }
        }
    });
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "control plane listening");
    // Event streams never end by themselves: closing the hub ends them, so the graceful
    // shutdown does not wait for clients to hang up.
    let hub = state.hub().clone();
    let webhooks = state.webhooks().clone();
    let shutdown = async move {
        shutdown.await;
        hub.close();
        webhooks.close();
    };
    let head_timeout = std::time::Duration::from_millis(state.config().request_head_timeout_ms);
    let result = serve_connections(listener, app(state.clone()), head_timeout, shutdown).await;
    // No batch is taken any more (one still being stored ends its round first).
    state.store().close_ingestion().await;
    pruner.abort();
    sweeper.abort();
    download_counts.abort();
    state.downloads().flush(&state).await;
    follower.abort();
    // Deliveries in flight finish their attempt and save their progress.
    if tokio::time::timeout(std::time::Duration::from_secs(15), dispatcher)
        .await
        .is_err()
    {
        tracing::warn!("webhook deliveries did not stop within 15 s");
    }
    for worker in thumbnailers {
        worker.abort();
    }
    result
}
