//! Upgrades and stops without a dropped request: the running process hands its listening
//! sockets to its successor (SIGQUIT), every kept-alive connection is told
//! `Connection: close` at its next request, and the last clicks are taken after the last
//! redirect. The real binary, under load from keep-alive clients on raw sockets.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::Connection;
use common::{ADMIN_KEY, Options, TestServer, wait_total};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the clients saw.
#[derive(Default)]
struct Tally {
    redirects: AtomicU64,
    created: AtomicU64,
    /// Every failed request, with what went wrong.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

/// One kept-alive client asking for `code` as fast as it is answered, until `stop`; it
/// opens a new connection whenever an answer says `Connection: close`.
async fn redirect_client(addr: String, code: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let request =
        format!("GET /{code} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: upgrade-test\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(stream) => stream,
            Err(e) => {
                tally.fail(format!("connect: {e}"));
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

/// Reads one bodiless response head: its status and whether it closes the connection.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    buf.clear();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
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
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let close = head.contains("\r\nconnection: close\r\n");
    Ok((status, close))
}

/// Creates links through the proxy (forwarded to the control plane) until `stop`.
async fn api_client(base: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = client
            .post(format!("{base}/api/v1/links"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"url": format!("https://upgrade.example/{i}")}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 201 => {
                tally.created.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => tally.fail(format!("create: status {}", r.status())),
            Err(e) => tally.fail(format!("create: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `count` passes `past` (or 20 s, failing).
async fn wait_past(count: &AtomicU64, past: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count.load(Ordering::Relaxed) <= past {
        assert!(Instant::now() < deadline, "{what}: stuck at {past}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start() -> (TestServer, String) {
    let server = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__GRACE_PERIOD_SECONDS", "3"),
    )
    .await;
    let (status, link) = server
        .create(ADMIN_KEY, json!({"url": "https://upgrade.example/target"}))
        .await;
    assert_eq!(status, 201, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    server.wait_status(&code, 301, Duration::from_secs(5)).await;
    (server, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_under_load_drops_no_request_and_loses_no_click() {
    let (mut server, code) = start().await;
    let addr = server.proxy.trim_start_matches("http://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(redirect_client(
            addr.clone(),
            code.clone(),
            stop.clone(),
            tally.clone(),
        )));
    }
    clients.push(tokio::spawn(api_client(
        server.proxy.clone(),
        stop.clone(),
        tally.clone(),
    )));
    wait_past(&tally.redirects, 2_000, "redirects before the upgrade").await;
    let old_pid = server.pid();

    let (status, old_log) = server.upgrade().await;
    assert!(
        status.success(),
        "the old process exits 0: {status:?}\n{old_log}"
    );
    assert_ne!(server.pid(), old_pid);
    assert!(
        old_log.contains("click shipper stopped"),
        "the old process stopped its shipper gracefully:\n{old_log}"
    );
    // The new process serves on its own now: more redirects and links after the old exited.
    let redirects = tally.redirects.load(Ordering::Relaxed);
    let created = tally.created.load(Ordering::Relaxed);
    wait_past(
        &tally.redirects,
        redirects + 2_000,
        "redirects after the upgrade",
    )
    .await;
    wait_past(
        &tally.created,
        created + 5,
        "links created after the upgrade",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let failures = tally.failures();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\nold log:\n{old_log}\nnew log:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        server.log_text()
    );
    // The redirects the clients saw, and the one `start` waited for.
    let answered = tally.redirects.load(Ordering::Relaxed) + 1;
    let stats = wait_total(&server.client, &server.proxy, &code, answered).await;
    assert_eq!(
        stats["total"].as_u64(),
        Some(answered),
        "every answered redirect is counted once: {stats}"
    );
    eprintln!(
        "upgrade under load: {answered} redirects and {} links created, 0 failed",
        tally.created.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_kept_alive_connections_at_their_next_answer() {
    let (mut server, code) = start().await;
    let request = format!("GET /{code} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut busy = Connection::open(&server).await;
    busy.send(request.as_bytes()).await;
    assert!(!busy.answer(false).await.close);
    let mut idle = Connection::open(&server).await;
    idle.send(request.as_bytes()).await;
    assert!(!idle.answer(false).await.close);

    let addr = server.proxy.trim_start_matches("http://").to_owned();
    server.signal("TERM");
    // Shutdown has begun once the listener is closed: new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let began = Instant::now();
    // A kept-alive connection still gets its answer, which closes it.
    busy.send(request.as_bytes()).await;
    let answer = busy.answer(false).await;
    assert_eq!(answer.status, 301);
    assert!(
        answer.close,
        "the answer after SIGTERM says Connection: close"
    );
    assert!(busy.closed().await, "and the connection is closed after it");
    // An idle one is closed within the grace period (3 s), without an answer.
    assert!(idle.closed().await, "the idle connection is closed");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );

    let status = server.wait_exit();
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    // Every redirect answered was counted before the exit: the one `start` waited for,
    // the two before SIGTERM and the one after.
    let _dir = server.take_dir();
    let restarted = TestServer::start_with(Options {
        data: Some(server.data_dir().to_owned()),
        ..Options::default()
    })
    .await;
    let stats = wait_total(&restarted.client, &restarted.proxy, &code, 4).await;
    assert_eq!(stats["total"].as_u64(), Some(4), "{stats}");
}
