//! HTTP/2 connections on the TLS listener: pingora's h2 server (the `h2` crate with our
//! limits), with an accept loop of our own so that each stream's request is served on the
//! connection's own thread. pingora's loop spawns each stream on a thread picked at random
//! (`pingora_runtime::current_handle`): with per-thread runtimes, the streams of one
//! connection then contend for its shared state from every thread. Otherwise the loop does
//! what pingora's does: graceful shutdown by GOAWAY, still serving the streams already
//! opened, the idle timeout counted while no stream is in flight, and a connection closed
//! after 32 malformed streams; and two deadlines pingora's lacks: the preface and
//! settings within the head deadline, each answer's writes within the write deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::protocols::Digest;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{H2Accept, HttpSession, handshake};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::service::Redirector;

/// Streams of one connection in flight; the accept loop waits on it for idleness.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a stream's task while it is served.
struct StreamGuard(Arc<InFlight>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_one();
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Returns once no stream has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        while self.count.load(Ordering::Relaxed) != 0 {
            self.idle.notified().await;
        }
        tokio::time::sleep(timeout).await;
    }
}

/// Malformed streams one connection may open before it is closed (pingora's own bound).
const MAX_MALFORMED_STREAMS: usize = 32;

/// Serves the HTTP/2 connection `stream` until it closes, each request through `proxy`:
/// the connection preface and settings within `head`, each answer's writes within
/// `write` (as on HTTP/1.1).
pub(crate) async fn serve(
    proxy: &Arc<HttpProxy<Redirector>>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    head: Duration,
    write: Duration,
) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut signal = shutdown.clone();
    let handshake = tokio::select! {
        biased;
        _ = signal.changed() => return,
        handshake = tokio::time::timeout(head, handshake(stream, proxy.h2_options.clone())) => handshake,
    };
    let Ok(Ok(mut conn)) = handshake else {
        return;
    };
    let idle_timeout = proxy
        .server_options
        .as_ref()
        .and_then(|o| o.h2_idle_timeout);
    let in_flight = Arc::new(InFlight::default());
    let mut draining = false;
    let mut malformed = 0;
    loop {
        let accepted = if draining {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                _ = signal.changed() => {
                    // GOAWAY; the streams the client opened before it are still served.
                    conn.graceful_shutdown();
                    draining = true;
                    continue;
                }
                // Cancel-safe: polled again on the next turn.
                accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
                () = in_flight.idle_for(idle_timeout.unwrap_or_default()), if idle_timeout.is_some() => {
                    return;
                }
            }
        };
        match accepted {
            // A client dropping the connection without closing HTTP/2 is common.
            Err(_) | Ok(None) => return,
            // Answered or reset already (a malformed stream): a connection that keeps
            // opening them is closed.
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed >= MAX_MALFORMED_STREAMS {
                    return;
                }
            }
            Ok(Some(H2Accept::Session(session))) => {
                let guard = in_flight.start();
                let proxy = proxy.clone();
                let shutdown = shutdown.clone();
                let mut session = ServerSession::new_http2(session);
                // A client that stops reading (a zero flow-control window) is cut off.
                session.set_write_timeout(Some(write));
                // On this thread's runtime: the connection's own thread.
                tokio::spawn(async move {
                    let _guard = guard;
                    proxy.process_new_http(session, &shutdown).await;
                });
            }
        }
    }
}
