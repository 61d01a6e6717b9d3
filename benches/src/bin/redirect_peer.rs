//! Peers for the load harness: the same route table as the proxy, loaded with the harness's
//! links (`ld0` … `ld{N-1}`), served by the leanest server of each kind, so a run shows what
//! the HTTP stack costs apart from shortlink's own work.
//!
//! `redirect_peer <axum|pingora-serve|pingora-proxy|tokio-raw|pingora-app|tokio-percore> <listen addr> <n> [threads]`
//!
//! - `axum`: axum 0.8 on a multi-thread tokio runtime, `GET /{code}` → 301.
//! - `pingora-serve`: a pingora `ServeHttp` app (no proxy phases, no modules).
//! - `pingora-proxy`: a pingora `ProxyHttp` that answers from `request_filter`, as the real
//!   proxy does, without click capture, metrics or host classification.
//! - `tokio-raw`: the fast path's loop (httparse, lookup, one write) on bare tokio sockets.
//! - `pingora-app`: the same loop as a pingora `ServerApp`, on pingora's listener and
//!   stream type: against `tokio-raw`, what those layers cost.
//! - `tokio-percore`: the `tokio-raw` loop on one single-threaded runtime per thread, each
//!   with its own `SO_REUSEPORT` listener (nginx's model): against `tokio-raw`, what the
//!   work-stealing scheduler costs.
//!
//! Every answer is the proxy's: `301`, `Location`, `Cache-Control`, `Content-Length: 0`.
//! Env (pingora modes): `PEER_WORK_STEALING=0` for per-thread runtimes, `PEER_LISTENER_TASKS`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderValue, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use shortlink_core::{Link, ShortCode};
use shortlink_proxy::{Resolution, RouteTable};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_900_000_000;

/// The harness's link `ld{i}`, with the URL `load_seed` gives it.
fn harness_link(i: usize) -> Link {
    let mut link = shortlink_benches::sample_link(i);
    link.code = ShortCode::from_stored(format!("ld{i}"));
    link
}

/// `Location` and `Cache-Control` of `path`'s route, if it redirects.
fn lookup(table: &RouteTable, path: &str) -> Option<(HeaderValue, &'static str)> {
    let code = path.strip_prefix('/')?;
    match table.resolve(table.key("", code), NOW) {
        Resolution::Redirect {
            status, location, ..
        } => Some((location, status.cache_control())),
        _ => None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!(
            "usage: redirect_peer <axum|pingora-serve|pingora-proxy|tokio-raw|pingora-app|tokio-percore> <listen addr> <n> [threads]"
        );
        std::process::exit(2);
    }
    let (mode, listen) = (args[1].as_str(), args[2].as_str());
    let n: usize = args[3].parse().expect("n must be a number");
    let threads: usize = args.get(4).map_or(2, |t| t.parse().expect("threads"));
    let table = Arc::new(RouteTable::new(Duration::from_secs(2), 1000));
    for i in 0..n {
        table.upsert(&harness_link(i));
    }
    eprintln!("{mode} peer: {n} links on {listen}, {threads} threads");
    match mode {
        "axum" => serve_axum(table, listen, threads),
        "pingora-serve" => {
            let app = pingora::apps::http_app::HttpServer::new_app(ServeApp { table });
            serve_pingora(app, listen, threads)
        }
        "pingora-proxy" => {
            let mut server = pingora_server(threads);
            let mut service =
                pingora::proxy::http_proxy_service(&server.configuration, ProxyApp { table });
            service.add_tcp(listen);
            server.add_service(service);
            server.run_forever()
        }
        "tokio-raw" => serve_tokio_raw(table, listen, threads),
        "tokio-percore" => serve_tokio_percore(table, listen, threads),
        "pingora-app" => serve_pingora_app(table, listen, threads),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}

/// A multi-thread tokio runtime with `threads` workers, as the tokio-based peers use.
fn tokio_runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

fn serve_axum(table: Arc<RouteTable>, listen: &str, threads: usize) {
    use axum::extract::{Path, State};
    use axum::response::{IntoResponse, Response};

    async fn redirect(State(table): State<Arc<RouteTable>>, Path(code): Path<String>) -> Response {
        match lookup(&table, &format!("/{code}")) {
            Some((location, cache)) => (
                StatusCode::MOVED_PERMANENTLY,
                [
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    tokio_runtime(threads).block_on(async {
        let app = axum::Router::new()
            .route("/{code}", axum::routing::get(redirect))
            .with_state(table);
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

fn pingora_server(threads: usize) -> Server {
    let env_flag = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let conf = ServerConf {
        threads,
        work_stealing: env_flag("PEER_WORK_STEALING", 1) == 1,
        listener_tasks_per_fd: env_flag("PEER_LISTENER_TASKS", 1),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

fn serve_pingora<A>(app: A, listen: &str, threads: usize)
where
    A: pingora::apps::HttpServerApp + Send + Sync + 'static,
{
    let mut server = pingora_server(threads);
    let mut service = pingora::services::listening::Service::new("peer".to_owned(), app);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}

struct ServeApp {
    table: Arc<RouteTable>,
}

#[async_trait]
impl ServeHttp for ServeApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let builder = http::Response::builder();
        match lookup(&self.table, session.req_header().uri.path()) {
            Some((location, cache)) => builder
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, location)
                .header(header::CACHE_CONTROL, cache)
                .header(header::CONTENT_LENGTH, "0"),
            None => builder
                .status(StatusCode::NOT_FOUND)
                .header(header::CONTENT_LENGTH, "0"),
        }
        .body(Vec::new())
        .expect("response")
    }
}

struct ProxyApp {
    table: Arc<RouteTable>,
}

#[async_trait]
impl ProxyHttp for ProxyApp {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        let found = lookup(&self.table, session.req_header().uri.path());
        let mut resp = ResponseHeader::build(if found.is_some() { 301 } else { 404 }, Some(3))?;
        if let Some((location, cache)) = found {
            resp.insert_header(header::LOCATION, location)?;
            resp.insert_header(header::CACHE_CONTROL, HeaderValue::from_static(cache))?;
        }
        resp.insert_header(header::CONTENT_LENGTH, HeaderValue::from_static("0"))?;
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Err(pingora::Error::new(pingora::ErrorType::HTTPStatus(404)))
    }
}

/// Answers every request buffered in `buf` into `out`; false if one is not a redirect.
fn answer_all(table: &RouteTable, buf: &mut bytes::BytesMut, out: &mut Vec<u8>) -> bool {
    use bytes::Buf;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return true,
            Err(_) => return false,
        };
        let Some((location, cache)) = req.path.and_then(|path| lookup(table, path)) else {
            return false;
        };
        out.extend_from_slice(b"HTTP/1.1 301 Moved Permanently\r\nLocation: ");
        out.extend_from_slice(location.as_bytes());
        out.extend_from_slice(b"\r\nCache-Control: ");
        out.extend_from_slice(cache.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        buf.advance(len);
    }
}

/// The fast path's loop, minus capture and metrics, over any stream.
async fn serve_connection<S>(table: &RouteTable, mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = bytes::BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(512);
    loop {
        buf.reserve(4096);
        match stream.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if !answer_all(table, &mut buf, &mut out) {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn serve_tokio_raw(table: Arc<RouteTable>, listen: &str, threads: usize) {
    tokio_runtime(threads).block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        accept_loop(table, listener).await
    });
}

/// Serves every connection `listener` accepts with the fast path's loop, on this runtime.
async fn accept_loop(table: Arc<RouteTable>, listener: tokio::net::TcpListener) -> ! {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let table = table.clone();
        tokio::spawn(async move { serve_connection(&table, stream).await });
    }
}

fn serve_tokio_percore(table: Arc<RouteTable>, listen: &str, threads: usize) {
    let addr: std::net::SocketAddr = listen.parse().expect("listen must be ip:port");
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let table = table.clone();
            std::thread::Builder::new()
                .name(format!("peer-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    runtime.block_on(async {
                        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                        socket.set_reuseport(true).expect("SO_REUSEPORT");
                        socket.bind(addr).expect("bind");
                        let listener = socket.listen(65_535).expect("listen");
                        accept_loop(table, listener).await
                    })
                })
                .expect("thread")
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

struct RawApp {
    table: Arc<RouteTable>,
}

#[async_trait]
impl pingora::apps::ServerApp for RawApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        _shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        serve_connection(&self.table, stream).await;
        None
    }
}

fn serve_pingora_app(table: Arc<RouteTable>, listen: &str, threads: usize) {
    let mut server = pingora_server(threads);
    let mut service =
        pingora::services::listening::Service::new("peer".to_owned(), RawApp { table });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
