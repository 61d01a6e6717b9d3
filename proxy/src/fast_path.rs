//! The redirect fast path: the proxy's listener ([`RedirectListener`], a pingora service)
//! accepts connections itself and answers a plain redirect (an HTTP/1.1 GET or HEAD
//! without a body, of a live link already in the route table) straight off the bare TCP
//! socket — parse the buffered head, look the code up, write the answer — and hands every
//! other request, with the bytes already read, to pingora's HTTP proxy, which does all it
//! did before: read-through on misses, 404/410/429 pages, password pages, forwarding to the
//! control plane.
//!
//! Why: on pingora's `ProxyHttp` path a redirect pays for per-request machinery it does not
//! use (session and context setup, header maps, module phases), and pingora's stream type
//! for layers it does not need (buffering, read and write timing); measured in BENCHMARKS.md.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, l4};
use pingora::proxy::HttpProxy;
use pingora::server::{ListenFds, ShutdownWatch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use shortlink_core::is_valid_host_header;

use crate::Fatal;
use crate::domains::MAX_HOST;
use crate::listen::{Listening, bind_tcp};
use crate::metrics::{PROXY_HEADERS_REFUSED, REQUESTS};
use crate::proxy_protocol::read_header;
use crate::service::{Decision, PlainRedirect, Redirector, RequestView, now_unix_ms};
use crate::tls::{TlsConn, TlsEdge, negotiated_h2};

/// The longest request head read: a head still incomplete at this size is answered 431
/// (nginx allows 32 KiB by default).
const MAX_HEAD: usize = 64 * 1024;
/// Answers held for one write: a client that pipelines without reading gets them in
/// pieces of about this size, each written before more of its requests are answered.
const MAX_PENDING_OUTPUT: usize = 64 * 1024;
/// How long a closing connection keeps reading (and dropping) what the client still
/// sends, so its unread input does not make the kernel reset the answer in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes a closing connection reads at most while lingering.
const LINGER_BYTES: usize = 64 * 1024;
/// Headers the fast path parses; a request with more goes to pingora.
const MAX_HEADERS: usize = 32;
/// Read buffer reserved per read.
const READ_CHUNK: usize = 4 * 1024;

/// The deadlines a client connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a whole request head, from its first byte; bytes trickling in do not
    /// renew it.
    pub head: Duration,
    /// Time an idle kept-alive connection waits for its next request.
    pub keepalive: Duration,
    /// Time a write to the client may take.
    pub write: Duration,
}

/// The proxy's listener app: the fast path in front of pingora's HTTP proxy.
pub struct FastPathApp {
    redirector: Redirector,
    /// The configured country header, lower case.
    country_header: Option<String>,
    /// Off: every request goes to pingora (for comparisons).
    enabled: bool,
    limits: ConnectionLimits,
    proxy: Arc<HttpProxy<Redirector>>,
    /// On the TLS listener: the handshake's configuration.
    tls: Option<Arc<TlsEdge>>,
    /// A header line added to every redirect (`Strict-Transport-Security` on TLS).
    extra_header: Box<[u8]>,
    /// Every connection starts with a PROXY protocol header naming the client.
    proxy_protocol: bool,
}

/// What the fast path did with the first request in the buffer.
#[derive(Debug, PartialEq)]
enum Step {
    /// A redirect was written to the output; the request was `len` bytes.
    Answered {
        len: usize,
        status: u16,
        close: bool,
    },
    /// No complete request head is buffered yet.
    Partial,
    /// pingora answers this request (and the rest of the buffer).
    Defer,
}

impl FastPathApp {
    /// The app answering plain redirects with `redirector` and the rest with `proxy`.
    pub fn new(
        redirector: Redirector,
        country_header: Option<&str>,
        enabled: bool,
        limits: ConnectionLimits,
        proxy: Arc<HttpProxy<Redirector>>,
    ) -> FastPathApp {
        FastPathApp {
            redirector,
            country_header: country_header.map(str::to_ascii_lowercase),
            enabled,
            limits,
            proxy,
            tls: None,
            extra_header: Box::default(),
            proxy_protocol: false,
        }
    }

    /// The same app behind an L4 load balancer that opens every connection with a PROXY
    /// protocol header (v1 or v2); connections without one are closed.
    pub fn with_proxy_protocol(mut self, on: bool) -> FastPathApp {
        self.proxy_protocol = on;
        self
    }

    /// The same app on a TLS listener: handshakes with `tls`, and sends `hsts` (a
    /// `Strict-Transport-Security` value) with every redirect when set.
    pub fn with_tls(mut self, tls: Arc<TlsEdge>, hsts: Option<&str>) -> FastPathApp {
        self.tls = Some(tls);
        if let Some(hsts) = hsts {
            self.extra_header = format!("Strict-Transport-Security: {hsts}\r\n")
                .into_bytes()
                .into_boxed_slice();
        }
        self
    }

    /// Answers the request at the start of `buf` into `out`, if it is a plain redirect;
    /// `now_ms` is the Unix time in milliseconds. `closing`: the answer ends the connection
    /// (`Connection: close`) whatever the request asks, as when shutting down.
    fn answer(
        &self,
        buf: &[u8],
        peer: Option<IpAddr>,
        now_ms: i64,
        closing: bool,
        out: &mut Vec<u8>,
    ) -> Step {
        if buf.is_empty() {
            return Step::Partial;
        }
        if !self.enabled {
            return Step::Defer;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Step::Partial,
            // Malformed or too many headers: pingora answers with its error.
            Err(_) => return Step::Defer,
        };
        if req.version != Some(1) {
            return Step::Defer;
        }
        let Some(method) = req.method else {
            return Step::Defer;
        };
        let Some(target) = req.path else {
            return Step::Defer;
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let mut request = RequestView {
            peer,
            head: method == "HEAD",
            query,
            ..RequestView::default()
        };
        let mut close = closing;
        for header in req.headers.iter() {
            let (name, value) = (header.name, header.value);
            if name.eq_ignore_ascii_case("host") {
                if request.host.replace(value).is_some() {
                    return Step::Defer; // two Host headers: pingora refuses it
                }
            } else if name.eq_ignore_ascii_case("user-agent") {
                request.user_agent = Some(value);
            } else if name.eq_ignore_ascii_case("referer") {
                request.referrer = Some(value);
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                request.forwarded_for = Some(value);
            } else if name.eq_ignore_ascii_case("forwarded") {
                request.forwarded = Some(value);
            } else if name.eq_ignore_ascii_case("connection") {
                close |= has_token(value, b"close");
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || (name.eq_ignore_ascii_case("content-length") && value != b"0")
            {
                return Step::Defer; // a body: pingora reads (or refuses) it
            } else if let Some(country) = &self.country_header
                && name.eq_ignore_ascii_case(country)
            {
                request.country = Some(value);
            }
        }
        // HTTP/1.1 needs one valid `Host`: `request_filter` answers 400 otherwise.
        if !request.host.is_some_and(is_valid_host_header) {
            return Step::Defer;
        }
        // One time serves the lookup (expiry), the click and the `Date` header.
        let mut host_buf = [0u8; MAX_HOST];
        let decision = self.redirector.decide(
            method,
            path,
            || request,
            &mut host_buf,
            now_ms,
            true,
            |redirect| {
                self.redirector
                    .capture_click(&request, redirect.link_id, now_ms);
                write_redirect(
                    out,
                    &redirect,
                    close,
                    now_ms.div_euclid(1000),
                    &self.extra_header,
                );
                redirect.status.as_u16()
            },
        );
        match decision {
            Decision::Redirect(status) => Step::Answered { len, status, close },
            // pingora answers the rest: other requests, unknown hosts, table misses
            // (read-through), gone and protected links.
            _ => Step::Defer,
        }
    }

    /// Serves the rest of the connection's current request through pingora: `buf` holds
    /// what was read of it. The connection comes back here if pingora keeps it alive.
    async fn hand_off(
        &self,
        stream: Stream,
        buf: BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(self.limits.keepalive.as_secs().max(1))
        });
        // pingora's deadlines are per read and per write: a body trickling in is cut off
        // by the control plane's minimum body rate.
        session.set_read_timeout(Some(self.limits.head));
        session.set_write_timeout(Some(self.limits.write));
        if !buf.is_empty() {
            session.set_pipelined_prefix(buf);
        }
        let (stream, _settings) = self
            .proxy
            .process_new_http(session, shutdown)
            .await?
            .consume();
        Some(stream)
    }
}

/// What pingora's own listener records of a connection, made at its first hand-off: the
/// proxy path reads the client address (404 limits, clicks, forwarding headers) from it.
fn socket_digest(fd: std::os::fd::RawFd, peer: SocketAddr) -> SocketDigest {
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest.peer_addr.set(Some(peer.into()));
    digest
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

thread_local! {
    /// A monotonic instant and the Unix time (ms) it was read at, renewed every second, so
    /// a request's Unix time comes from the one monotonic clock read it already makes.
    static ANCHOR: Cell<Option<(Instant, i64)>> = const { Cell::new(None) };
    /// This thread's `Date` header value and the Unix second it is for.
    static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// The Unix time in milliseconds at `at` (a recent instant): the wall clock is read at most
/// once a second per thread; between readings the monotonic clock measures the time since.
fn unix_ms_at(at: Instant) -> i64 {
    ANCHOR.with(|anchor| {
        if let Some((base, base_ms)) = anchor.get()
            && let Some(since) = at.checked_duration_since(base)
            && since < Duration::from_secs(1)
        {
            return base_ms + since.as_millis() as i64;
        }
        let now_ms = now_unix_ms();
        anchor.set(Some((at, now_ms)));
        now_ms
    })
}

/// Appends the HTTP date of Unix second `now` (formatted once per second per thread).
fn append_date(out: &mut Vec<u8>, now: i64) {
    DATE.with_borrow_mut(|(second, text)| {
        if *second != now {
            let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0));
            *text = httpdate::fmt_http_date(at);
            *second = now;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Appends the redirect response: the status line and headers pingora's path sends (a
/// `Date` too), without `Connection: keep-alive`, which HTTP/1.1 implies; `extra` is a
/// whole header line (or empty).
fn write_redirect(
    out: &mut Vec<u8>,
    redirect: &PlainRedirect,
    close: bool,
    now: i64,
    extra: &[u8],
) {
    let status = redirect.status.as_u16();
    out.extend_from_slice(match status {
        301 => b"HTTP/1.1 301 Moved Permanently\r\n".as_slice(),
        302 => b"HTTP/1.1 302 Found\r\n",
        303 => b"HTTP/1.1 303 See Other\r\n",
        307 => b"HTTP/1.1 307 Temporary Redirect\r\n",
        _ => b"HTTP/1.1 308 Permanent Redirect\r\n",
    });
    out.extend_from_slice(b"Location: ");
    out.extend_from_slice(redirect.location);
    out.extend_from_slice(b"\r\nCache-Control: ");
    out.extend_from_slice(redirect.status.cache_control().as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nDate: ");
    append_date(out, now);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a connection's fast-path loop ended.
enum Next {
    /// The connection is done (closed by either side, failed, timed out or shutting down).
    Close,
    /// pingora serves the request at the start of the buffer; `rest` is what was read
    /// after it (requests pipelined behind it), for the fast path once pingora is done.
    HandOff { rest: BytesMut },
}

/// The length of the complete request at the start of `buf`, body included, when its
/// head says (no body, or `Content-Length`); `None` when it does not (chunked, malformed).
fn request_len(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = req.parse(buf) else {
        return None;
    };
    let mut body: Option<usize> = None;
    for header in req.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if body.replace(len).is_some_and(|before| before != len) {
                return None;
            }
        }
    }
    head.checked_add(body.unwrap_or(0))
}

/// Writes `out` whole within `limit`. The timer is armed only if the socket cannot take
/// it at once (the common case costs no timer).
async fn write_within<S>(stream: &mut S, out: &[u8], limit: Duration) -> bool
where
    S: AsyncWrite + Unpin,
{
    let mut write = std::pin::pin!(async {
        stream.write_all(out).await?;
        stream.flush().await
    });
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(result) => result.is_ok(),
        Poll::Pending => matches!(tokio::time::timeout(limit, write).await, Ok(Ok(()))),
    }
}

/// Closes a connection politely: sends `last` (if any), ends the sending side, then reads
/// and drops what the client still sends, for at most [`LINGER`] and [`LINGER_BYTES`], so
/// that unread input does not turn the close into a reset that destroys the answer.
async fn linger_close<S>(stream: &mut S, last: &[u8], limits: &ConnectionLimits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !last.is_empty() && !write_within(stream, last, limits.write).await {
        return;
    }
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(n) if n > 0 => read += n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Waiting connections shed at once when accepting runs out of file descriptors.
const SHED_AT_ONCE: usize = 64;

/// What the listener knows of a connection it accepted, to shed it when accepting runs
/// out of file descriptors.
#[derive(Default)]
struct Conn {
    /// True while the connection waits for a request (idle, or its head incomplete).
    waiting: AtomicBool,
    /// Told when the listener sheds the connection.
    shed: tokio::sync::Notify,
}

/// The listener's accepted connections, oldest first; only its accept loop touches it.
#[derive(Default)]
struct Accepted {
    conns: VecDeque<Weak<Conn>>,
    pushes: usize,
}

impl Accepted {
    /// How many accepted connections are still open (and forgets ended ones).
    fn count(&mut self) -> usize {
        self.conns.retain(|c| c.strong_count() > 0);
        self.conns.len()
    }

    /// Registers a new connection (and forgets ended ones).
    fn push(&mut self, conn: &Arc<Conn>) {
        self.conns.push_back(Arc::downgrade(conn));
        while self.conns.front().is_some_and(|c| c.strong_count() == 0) {
            self.conns.pop_front();
        }
        self.pushes = self.pushes.wrapping_add(1);
        if self.pushes.is_multiple_of(4096) {
            self.conns.retain(|c| c.strong_count() > 0);
        }
    }

    /// Tells up to `n` of the oldest connections that wait for a request to close;
    /// returns how many were told. Connections in the middle of a request are left alone.
    fn shed(&mut self, n: usize) -> usize {
        let mut told = 0;
        self.conns.retain(|weak| {
            if told >= n {
                return true;
            }
            let Some(conn) = weak.upgrade() else {
                return false;
            };
            if conn.waiting.load(Ordering::Relaxed) {
                conn.shed.notify_one();
                told += 1;
                return false;
            }
            true
        });
        told
    }
}

/// The answer to a head that grew past [`MAX_HEAD`].
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The answer to a head not received within its deadline.
const HEAD_TOO_SLOW: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl FastPathApp {
    /// Serves an accepted connection until it closes: on the TLS listener, the handshake
    /// first (HTTP/2 connections then go to pingora whole); then the fast path on the bare
    /// socket (or TLS stream), and pingora's proxy, on its own stream type, for each
    /// request it must answer.
    async fn serve(
        self: Arc<Self>,
        mut tcp: TcpStream,
        mut peer: SocketAddr,
        conn: Arc<Conn>,
        shutdown: ShutdownWatch,
    ) {
        if self.proxy_protocol {
            // Waiting for the header is waiting for a request: sheddable.
            conn.waiting.store(true, Ordering::Relaxed);
            let header = tokio::select! {
                biased;
                header = read_header(&mut tcp, self.limits.head) => header,
                () = conn.shed.notified() => return,
            };
            conn.waiting.store(false, Ordering::Relaxed);
            match header {
                Ok(Some(client)) => peer = client,
                Ok(None) => {}
                Err(error) => {
                    PROXY_HEADERS_REFUSED.inc();
                    tracing::debug!(%error, "connection closed");
                    return;
                }
            }
        }
        let Some(tls) = &self.tls else {
            let plain = |tcp: TcpStream| -> Stream {
                let digest = socket_digest(tcp.as_raw_fd(), peer);
                let mut stream = l4::stream::Stream::from(tcp);
                stream.set_socket_digest(digest);
                Box::new(stream)
            };
            return self.serve_http1(tcp, peer, &conn, &shutdown, plain).await;
        };
        // A client that connects and stalls holds a file descriptor like an idle one:
        // shed the same way when accepting runs out of them.
        conn.waiting.store(true, Ordering::Relaxed);
        let accepted = tokio::select! {
            biased;
            accepted = tls.accept(tcp) => accepted,
            () = conn.shed.notified() => None,
        };
        conn.waiting.store(false, Ordering::Relaxed);
        let Some(stream) = accepted else {
            return;
        };
        let digest = socket_digest(stream.get_ref().0.as_raw_fd(), peer);
        if negotiated_h2(&stream) {
            // HTTP/2: pingora's server multiplexes the streams (`h2.rs`); each request
            // runs the same `request_filter` (redirects from the route table) as
            // HTTP/1.1's.
            // Its preface is due within the head deadline (pingora's h2 server would
            // wait for it forever); the idle timeout takes over after it.
            let stream: Stream =
                Box::new(TlsConn::new(stream, digest).with_first_read_deadline(self.limits.head));
            Box::pin(crate::h2::serve(
                &self.proxy,
                stream,
                &shutdown,
                self.limits.head,
                self.limits.write,
            ))
            .await;
            return;
        }
        let secured = |stream| -> Stream { Box::new(TlsConn::new(stream, digest)) };
        self.serve_http1(stream, peer, &conn, &shutdown, secured)
            .await;
    }

    /// Serves an HTTP/1.1 connection (`first`, a bare socket or a TLS stream) until it
    /// closes: the fast path, then for each request it defers, pingora's proxy on the
    /// stream `into_stream` makes of it (once; the connection stays a pingora stream).
    async fn serve_http1<S>(
        &self,
        mut first: S,
        peer: SocketAddr,
        conn: &Conn,
        shutdown: &ShutdownWatch,
        into_stream: impl FnOnce(S) -> Stream,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ip = Some(peer.ip());
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let first_loop = self
            .fast_loop(&mut first, ip, &mut buf, true, conn, shutdown)
            .await;
        let Next::HandOff { mut rest } = first_loop else {
            return;
        };
        let mut stream = into_stream(first);
        loop {
            // Boxed: the proxy's future is large and rare; the connection's task stays small.
            let Some(kept) = Box::pin(self.hand_off(stream, buf, shutdown)).await else {
                return;
            };
            stream = kept;
            // The requests pipelined behind the one pingora answered.
            buf = rest;
            match self
                .fast_loop(&mut stream, ip, &mut buf, false, conn, shutdown)
                .await
            {
                Next::Close => return,
                Next::HandOff { rest: more } => rest = more,
            }
        }
    }

    /// Answers the connection's plain redirects until it closes or a request needs pingora.
    /// `fresh`: the connection was just accepted, so its first request is due within the
    /// head deadline (as nginx's `client_header_timeout`), not the keep-alive one.
    async fn fast_loop<S>(
        &self,
        stream: &mut S,
        peer: Option<IpAddr>,
        buf: &mut BytesMut,
        fresh: bool,
        conn: &Conn,
        shutdown: &ShutdownWatch,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = &self.limits;
        let mut out = Vec::with_capacity(512);
        let mut answered: Vec<u16> = Vec::new();
        // When the first byte of the (incomplete) request at the start of `buf` was read.
        let mut head_since: Option<Instant> = (fresh || !buf.is_empty()).then(Instant::now);
        let first_wait = if head_since.is_some() {
            limits.head.min(limits.keepalive)
        } else {
            limits.keepalive
        };
        let mut timer = std::pin::pin!(tokio::time::sleep(first_wait));
        // Registered with the listener once (at its first wait), not at every wait.
        let mut shed = std::pin::pin!(conn.shed.notified());
        loop {
            // Answer every complete request already buffered (pipelining keeps order), up
            // to `MAX_PENDING_OUTPUT` of answers at a time. `started` is also when the
            // connection was last active, for its idle deadline.
            let started = Instant::now();
            let now_ms = unix_ms_at(started);
            // Shutting down: each answer says `Connection: close` and ends the connection,
            // so the client's next request opens a new one (to the process that takes over
            // after an upgrade). `has_changed` is one atomic load (`borrow` would take the
            // watch's lock); the watch only ever changes from running to shutting down.
            let closing = shutdown.has_changed().unwrap_or(false);
            let mut close = false;
            let mut full = false;
            let deferred = loop {
                if out.len() >= MAX_PENDING_OUTPUT {
                    full = true;
                    break false;
                }
                match self.answer(buf, peer, now_ms, closing, &mut out) {
                    Step::Answered {
                        len,
                        status,
                        close: last,
                    } => {
                        buf.advance(len);
                        answered.push(status);
                        head_since = None;
                        if last {
                            close = true;
                            break false;
                        }
                    }
                    Step::Partial => break false,
                    Step::Defer => break true,
                }
            };
            if !out.is_empty() {
                if !write_within(stream, &out, limits.write).await {
                    return Next::Close; // failed, or the client stopped reading
                }
                out.clear();
                let seconds = started.elapsed().as_secs_f64();
                for status in answered.drain(..) {
                    REQUESTS.observe(status, seconds);
                }
            }
            if close {
                linger_close(stream, b"", limits).await;
                return Next::Close;
            }
            if full {
                continue; // the rest of what is buffered, now that the client took these
            }
            if deferred {
                // pingora gets exactly that request when its length is known; what follows
                // comes back here. Otherwise it gets everything read so far.
                let rest = match request_len(buf) {
                    Some(len) if len < buf.len() => buf.split_off(len),
                    _ => BytesMut::new(),
                };
                return Next::HandOff { rest };
            }
            if buf.len() >= MAX_HEAD {
                linger_close(stream, HEAD_TOO_LARGE, limits).await;
                return Next::Close;
            }
            // Shutting down, a connection waiting for a request still waits: its client
            // may have sent one already (it was accepted before the listener closed), and
            // the answer will close it. Those still waiting halfway through the drain are
            // told to close (`drain`).
            if !buf.is_empty() && head_since.is_none() {
                // A request began arriving: its head has until `head` from now, however
                // its bytes trickle in. Only this (rare) moment moves the timer early.
                head_since = Some(started);
                let deadline = started + limits.head;
                if deadline < timer.deadline().into_std() {
                    timer.as_mut().reset(deadline.into());
                }
            }
            buf.reserve(READ_CHUNK);
            // One timer per connection, moved on only when it fires (a timeout per read
            // would add and remove a timer-wheel entry for every request). When it fires,
            // the deadline that applies now is checked: the head's while a request is
            // arriving, else the idle keep-alive's (which, like pingora's, also ends the
            // wait of an idle connection at shutdown, after the grace period).
            // While it waits, the listener may shed it (out of file descriptors).
            conn.waiting.store(true, Ordering::Relaxed);
            loop {
                tokio::select! {
                    biased;
                    read = stream.read_buf(buf) => match read {
                        Ok(n) if n > 0 => break,
                        _ => return Next::Close, // closed or failed
                    },
                    () = &mut shed => return Next::Close,
                    () = &mut timer => {
                        let now = Instant::now();
                        let deadline = match head_since {
                            Some(since) => since + limits.head,
                            None => started + limits.keepalive,
                        };
                        if deadline <= now {
                            if head_since.is_some() {
                                linger_close(stream, HEAD_TOO_SLOW, limits).await;
                            }
                            return Next::Close;
                        }
                        timer.as_mut().reset(deadline.into());
                    }
                }
            }
            conn.waiting.store(false, Ordering::Relaxed);
        }
    }
}

/// The proxy's listening service: accepts connections on its socket (bound at start-up,
/// or handed over by the process it upgrades) and serves each on the bare TCP stream (see
/// [`FastPathApp`]), in the runtime pingora builds for it (the proxy's threads, its
/// work-stealing setting, its graceful shutdown).
pub struct RedirectListener {
    name: String,
    app: Arc<FastPathApp>,
    listening: Listening,
    /// The server's `work_stealing` setting. Without it pingora runs the service on one
    /// single-threaded runtime per thread: each connection is handed to one of them, and
    /// its socket registered with that runtime's own reactor.
    work_stealing: bool,
    /// At shutdown, how long open connections are given to end (see [`drain`]).
    drain: Duration,
    /// Dropped once the connections have ended (or `drain` ran out), so the click shipper
    /// takes the last clicks after the last redirect.
    drained: Option<tokio::sync::watch::Sender<()>>,
    /// Stops the server when the socket cannot be opened.
    fatal: Fatal,
}

impl RedirectListener {
    /// A listener on `listening`; `work_stealing` is the server's setting (false:
    /// per-thread runtimes). At shutdown it gives connections `drain` to end, then drops
    /// `drained`.
    pub fn new(
        name: &str,
        listening: Listening,
        app: FastPathApp,
        work_stealing: bool,
        drain: Duration,
        drained: tokio::sync::watch::Sender<()>,
        fatal: Fatal,
    ) -> RedirectListener {
        RedirectListener {
            name: name.to_owned(),
            app: Arc::new(app),
            listening,
            work_stealing,
            drain,
            drained: Some(drained),
            fatal,
        }
    }
}

/// After accepting stopped: waits up to `grace` for the open connections to end. Each is
/// answered `Connection: close` at its next request; halfway through, those still waiting
/// for one are told to close.
async fn drain(open: &mut Accepted, grace: Duration) {
    const POLL: Duration = Duration::from_millis(20);
    let began = Instant::now();
    let mut idle_told = false;
    loop {
        let left = open.count();
        if left == 0 {
            return;
        }
        let waited = began.elapsed();
        if waited >= grace {
            tracing::warn!(
                open = left,
                "connections still open at the end of the shutdown grace"
            );
            return;
        }
        if !idle_told && waited >= grace / 2 {
            open.shed(usize::MAX);
            idle_told = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Serves `tcp` on one of pingora's per-thread runtimes, picked at random (the
/// connections spread evenly). The socket moves to that runtime's reactor: left on the
/// accepting thread's, every readiness event of the connection would cross threads.
fn hand_to_a_thread(
    app: Arc<FastPathApp>,
    tcp: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    shutdown: ShutdownWatch,
) {
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand a connection over");
            return;
        }
    };
    pingora_runtime::current_handle().spawn(async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => app.serve(tcp, peer, conn, shutdown).await,
            Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
        }
    });
}

#[async_trait]
impl pingora::services::Service for RedirectListener {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        // Dropped on every way out: the shipper must not wait for a listener that is gone.
        let drained = self.drained.take();
        let listener = match self
            .listening
            .open(fds.as_ref(), bind_tcp)
            .and_then(TcpListener::from_std)
        {
            Ok(listener) => listener,
            Err(e) => {
                let addr = self.listening.addr();
                tracing::error!(error = %e, addr, "the proxy cannot listen");
                self.fatal
                    .stop(format!("the proxy cannot listen on {addr}: {e}"));
                return;
            }
        };
        let mut open = Accepted::default();
        loop {
            let accepted = tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break; // shutting down: accept no more connections
                    }
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Responses are written whole: no reason to wait for an ACK.
                    let _ = tcp.set_nodelay(true);
                    let app = self.app.clone();
                    let conn = Arc::new(Conn::default());
                    open.push(&conn);
                    if self.work_stealing {
                        tokio::spawn(app.serve(tcp, peer, conn, shutdown.clone()));
                    } else {
                        hand_to_a_thread(app, tcp, peer, conn, shutdown.clone());
                    }
                }
                // Out of file descriptors (the process's or the system's): new clients must
                // not starve behind connections that only hold one. The oldest connections
                // waiting for a request are told to close; accepting resumes once they have.
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    let shed = open.shed(SHED_AT_ONCE);
                    tracing::warn!(error = %e, shed, "out of file descriptors: shedding waiting connections");
                    let pause = if shed > 0 { 10 } else { 100 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
        // New connections now wait for (or, after an upgrade, go to) another process.
        drop(listener);
        drain(&mut open, self.drain).await;
        drop(drained);
        self.app.proxy.http_cleanup().await;
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.listening.addr().to_owned()])
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        None // the server's: `proxy.threads`
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::num::NonZeroU32;

    use http::HeaderValue;
    use pingora::lb::LoadBalancer;
    use pingora::server::configuration::ServerConf;
    use shortlink_core::{Domain, Link, NewLink, RedirectStatus, ShortCode};
    use shortlink_store::{ChangeBatch, RoutePage, RoutePart, RouteSource, StoreError};

    use crate::domains::DomainSet;
    use crate::routes::RouteTable;
    use crate::service::{Capture, not_found_limiter};
    use crate::sync::SyncStatus;

    /// A route source with nothing in it: `answer` decides from the table alone.
    struct Empty;

    #[async_trait]
    impl RouteSource for Empty {
        async fn get_link(&self, _: &str, _: &str) -> Result<Option<Link>, StoreError> {
            Ok(None)
        }
        async fn list_domains(&self) -> Result<Vec<Domain>, StoreError> {
            Ok(vec![])
        }
        async fn feed_head(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn routes_page(
            &self,
            _: RoutePart,
            _: Option<Vec<u8>>,
            _: usize,
        ) -> Result<RoutePage, StoreError> {
            Ok(RoutePage {
                links: vec![],
                next: None,
            })
        }
        async fn installation_id(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn route_changes(&self, after: u64, _: usize) -> Result<ChangeBatch, StoreError> {
            Ok(ChangeBatch {
                changes: vec![],
                reset: false,
                next: after,
            })
        }
        fn change_hint(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            None
        }
        async fn certificates_version(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn list_certificates(
            &self,
        ) -> Result<Vec<shortlink_core::StoredCertificate>, StoreError> {
            Ok(vec![])
        }
    }

    fn link(id: i64, domain: &str, code: &str, url: &str) -> Link {
        NewLink {
            domain: domain.into(),
            code: ShortCode::from_stored(code.into()),
            custom_alias: true,
            ..NewLink::new(1, url.into())
        }
        .into_link(id, 0)
    }

    /// The fast path over a table holding `/abc` (301), `/tmp` (302), `/off` (disabled),
    /// `/pw` (protected) on the default host `short.test` and `/abc` on the custom domain
    /// `go.example`; unknown hosts fall back to `https://fallback.test/`.
    fn app(enabled: bool) -> FastPathApp {
        let table = Arc::new(RouteTable::new(Duration::from_secs(5), 100));
        table.upsert(&link(1, "", "abc", "https://a.test/x?y=1"));
        let mut found = link(2, "", "tmp", "https://b.test/");
        found.redirect = RedirectStatus::Found;
        table.upsert(&found);
        let mut off = link(3, "", "off", "https://c.test/");
        off.disabled = true;
        table.upsert(&off);
        let mut protected = link(4, "", "pw", "https://d.test/");
        protected.password_hash = Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into());
        table.upsert(&protected);
        table.upsert(&link(5, "go.example", "abc", "https://custom.test/"));
        let domains = Arc::new(DomainSet::new(
            "short.test",
            Some(HeaderValue::from_static("https://fallback.test/")),
        ));
        domains.replace([("go.example".to_owned(), Default::default())]);
        let capture = Capture {
            sink: None,
            trusted_proxies: vec![],
            forwarded_headers: Default::default(),
            country_header: None,
            country_lookup: None,
        };
        let upstreams = LoadBalancer::try_from_iter(["127.0.0.1:9"]).unwrap();
        let redirector = Redirector::new(
            table,
            domains,
            Arc::new(Empty),
            capture,
            Arc::new(upstreams),
            not_found_limiter(NonZeroU32::new(10).unwrap()),
            Arc::new(SyncStatus::default()),
        );
        let proxy =
            pingora::proxy::http_proxy(&Arc::new(ServerConf::default()), redirector.clone());
        let limits = ConnectionLimits {
            head: Duration::from_secs(60),
            keepalive: Duration::from_secs(60),
            write: Duration::from_secs(60),
        };
        FastPathApp::new(redirector, None, enabled, limits, Arc::new(proxy))
    }

    /// What `answer` does with `request`: the step and the bytes written.
    fn step(app: &FastPathApp, request: &[u8]) -> (Step, String) {
        let mut out = Vec::new();
        let step = app.answer(request, None, 1_700_000_000_000, false, &mut out);
        (step, String::from_utf8(out).unwrap())
    }

    /// What a case expects: the whole request answered with this status (and
    /// `Connection: close` with `close`), or another step.
    #[derive(Debug)]
    enum Expect {
        Whole(u16),
        WholeThenClose(u16),
        Partial,
        Defer,
    }

    #[test]
    fn answer_decides_over_request_bytes() {
        let app = app(true);
        let many = |n: usize| {
            let mut r = String::from("GET /abc HTTP/1.1\r\nHost: short.test\r\n");
            for i in 0..n {
                r.push_str(&format!("X-{i}: v\r\n"));
            }
            r + "\r\n"
        };
        let below = many(MAX_HEADERS - 1);
        let above = many(MAX_HEADERS);
        let cases: &[(&str, &[u8], Expect)] = &[
            ("nothing buffered", b"", Expect::Partial),
            ("a partial request line", b"GET /ab", Expect::Partial),
            (
                "a partial head",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\n",
                Expect::Partial,
            ),
            (
                "a plain GET",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "HEAD",
                b"HEAD /abc HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "a 302 link",
                b"GET /tmp HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Whole(302),
            ),
            (
                "a query (QR scans)",
                b"GET /abc?qr HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "Content-Length: 0 is no body",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\nContent-Length: 0\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "Connection: close",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\nConnection: keep-alive, Close\r\n\r\n",
                Expect::WholeThenClose(301),
            ),
            (
                "the host in any case, with a port and a trailing dot",
                b"GET /abc HTTP/1.1\r\nHost: SHORT.Test.:8080\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "a custom domain's link",
                b"GET /abc HTTP/1.1\r\nHost: Go.Example\r\n\r\n",
                Expect::Whole(301),
            ),
            (
                "headers up to the limit",
                below.as_bytes(),
                Expect::Whole(301),
            ),
            // pingora answers the rest.
            ("more headers than parsed", above.as_bytes(), Expect::Defer),
            (
                "HTTP/1.0",
                b"GET /abc HTTP/1.0\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "POST",
                b"POST /abc HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a body",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\nContent-Length: 3\r\n\r\nabc",
                Expect::Defer,
            ),
            (
                "a chunked body",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\nTransfer-Encoding: chunked\r\n\r\n",
                Expect::Defer,
            ),
            (
                "two Host headers",
                b"GET /abc HTTP/1.1\r\nHost: short.test\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "an unknown host (fallback)",
                b"GET /abc HTTP/1.1\r\nHost: other.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "an unknown code (read-through)",
                b"GET /nope HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a reserved path",
                b"GET /api HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a path no code has",
                b"GET /a/b HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a disabled link",
                b"GET /off HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a protected link",
                b"GET /pw HTTP/1.1\r\nHost: short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a malformed request line",
                b"GET  /abc\r\n\r\n",
                Expect::Defer,
            ),
            // pingora answers 400 for these (`request_filter`).
            ("no Host", b"GET /abc HTTP/1.1\r\n\r\n", Expect::Defer),
            (
                "an empty Host",
                b"GET /abc HTTP/1.1\r\nHost: \r\n\r\n",
                Expect::Defer,
            ),
            (
                "user info in Host",
                b"GET /abc HTTP/1.1\r\nHost: evil@short.test\r\n\r\n",
                Expect::Defer,
            ),
            (
                "a port out of range",
                b"GET /abc HTTP/1.1\r\nHost: short.test:99999999\r\n\r\n",
                Expect::Defer,
            ),
        ];
        for (what, request, expected) in cases {
            let (got, out) = step(&app, request);
            let expected = match expected {
                Expect::Whole(status) => Step::Answered {
                    len: request.len(),
                    status: *status,
                    close: false,
                },
                Expect::WholeThenClose(status) => Step::Answered {
                    len: request.len(),
                    status: *status,
                    close: true,
                },
                Expect::Partial => Step::Partial,
                Expect::Defer => Step::Defer,
            };
            assert_eq!(got, expected, "{what}");
            match got {
                Step::Answered { status, close, .. } => {
                    assert!(
                        out.starts_with(&format!("HTTP/1.1 {status} ")),
                        "{what}: {out}"
                    );
                    assert!(out.ends_with("\r\n\r\n"), "{what}: {out}");
                    assert!(out.contains("\r\nContent-Length: 0\r\n"), "{what}: {out}");
                    assert_eq!(out.contains("Connection: close"), close, "{what}: {out}");
                }
                _ => assert!(out.is_empty(), "{what} wrote {out}"),
            }
        }
    }

    #[test]
    fn answer_writes_the_redirect_pingora_would() {
        let app = app(true);
        let (_, out) = step(&app, b"GET /abc HTTP/1.1\r\nHost: short.test\r\n\r\n");
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: https://a.test/x?y=1\r\n\
                 Cache-Control: {}\r\nContent-Length: 0\r\n\
                 Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\n",
                RedirectStatus::Permanent.cache_control()
            )
        );
        let (_, out) = step(&app, b"HEAD /abc HTTP/1.1\r\nHost: go.example\r\n\r\n");
        assert!(
            out.contains("\r\nLocation: https://custom.test/\r\n"),
            "{out}"
        );
    }

    #[test]
    fn pipelined_requests_are_answered_one_at_a_time_in_order() {
        let app = app(true);
        let pipeline: &[u8] = b"GET /abc HTTP/1.1\r\nHost: short.test\r\n\r\n\
              HEAD /tmp HTTP/1.1\r\nHost: short.test\r\n\r\n\
              GET /nope HTTP/1.1\r\nHost: short.test\r\n\r\n\
              GET /abc HTTP/1.1\r\n";
        let mut rest = pipeline;
        let mut statuses = Vec::new();
        let mut out = Vec::new();
        loop {
            match app.answer(rest, None, 1_700_000_000_000, false, &mut out) {
                Step::Answered { len, status, .. } => {
                    statuses.push(status);
                    rest = &rest[len..];
                }
                other => {
                    // The unknown code stops the fast path; pingora gets it and the rest.
                    assert_eq!(other, Step::Defer);
                    break;
                }
            }
        }
        assert_eq!(statuses, [301, 302]);
        assert!(rest.starts_with(b"GET /nope "));
        let text = String::from_utf8(out).unwrap();
        let first = text.find("HTTP/1.1 301").unwrap();
        let second = text.find("HTTP/1.1 302").unwrap();
        assert!(first < second, "answers keep the requests' order");
        // A partial request after the answered ones waits for more bytes.
        let tail = b"GET /abc HTTP/1.1\r\nHost: short.test\r\n\r\nGET /abc HTTP/1.1\r\n";
        let Step::Answered { len, .. } = app.answer(tail, None, 0, false, &mut Vec::new()) else {
            panic!("the first request is whole");
        };
        assert_eq!(
            app.answer(&tail[len..], None, 0, false, &mut Vec::new()),
            Step::Partial
        );
    }

    #[test]
    fn a_disabled_fast_path_defers_everything() {
        let app = app(false);
        let (got, out) = step(&app, b"GET /abc HTTP/1.1\r\nHost: short.test\r\n\r\n");
        assert_eq!(got, Step::Defer);
        assert!(out.is_empty());
        assert_eq!(step(&app, b"").0, Step::Partial);
    }

    #[test]
    fn unix_time_follows_the_monotonic_clock_between_wall_clock_readings() {
        let at = Instant::now();
        let first = unix_ms_at(at);
        assert!((first - now_unix_ms()).abs() < 1_000, "{first} is not now");
        assert_eq!(unix_ms_at(at + Duration::from_millis(500)), first + 500);
        // A second or more later, the wall clock is read again.
        let later = unix_ms_at(at + Duration::from_secs(2));
        assert!(
            (later - now_unix_ms()).abs() < 1_000,
            "{later} was not read again"
        );
    }

    #[test]
    fn connection_tokens_are_matched_in_lists_and_any_case() {
        assert!(has_token(b"close", b"close"));
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"keep-alive", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
