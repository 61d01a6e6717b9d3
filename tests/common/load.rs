//! Load from kept-alive clients on raw sockets, counting what they saw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    pub redirects: AtomicU64,
    /// 410 answers (a capped link used up).
    pub gone: AtomicU64,
    pub created: AtomicU64,
    /// Every failed request, with what went wrong.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    pub fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// One kept-alive client asking for `code` as fast as it is answered, until `stop`; it
/// opens a new connection whenever an answer says `Connection: close`.
pub async fn redirect_client(addr: String, code: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let request =
        format!("GET /{code} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: upgrade-test\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.fail(format!("connect: {e}"));
                // A client's backoff: a stopped server refuses at once.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::with_capacity(1024);
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = stream.write_all(request.as_bytes()).await {
                tally.fail(format!("write: {e}"));
                break;
            }
            match read_head(&mut stream, &mut buf).await {
                Ok((status, close)) => {
                    if status == 301 {
                        tally.redirects.fetch_add(1, Ordering::Relaxed);
                    } else if status == 410 {
                        tally.gone.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.fail(format!("status {status}"));
                    }
                    if close {
                        break;
                    }
                }
                Err(e) => {
                    tally.fail(format!("read: {e}"));
                    break;
                }
            }
        }
    }
}

/// Reads what comes next from `stream` onto `buf` (10 s at most).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    if n == 0 {
        return Err(std::io::Error::other(format!(
            "closed after {} bytes of an answer",
            buf.len()
        )));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one response (its body by `Content-Length`, skipped): its status and whether it
/// closes the connection.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    buf.clear();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let close = head.contains("\r\nconnection: close\r\n");
    let body: usize = head
        .split("\r\n")
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < end + body {
        read_more(stream, buf).await?;
    }
    Ok((status, close))
}

/// Waits until `count` passes `past` (or 20 s, failing).
pub async fn wait_past(count: &AtomicU64, past: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::Relaxed) <= past {
        assert!(Instant::now() < deadline, "{what}: stuck at {past}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
