//! Notification fan-out under load: starts `shortlink serve` (release build), opens many
//! SSE connections spread over several users, then creates links for every user in
//! rounds and measures how long each `link.created` takes to reach each subscriber
//! (from the start of the create request, so the API call is included).
//!
//! `cargo build --release -p shortlink && cargo run --release -p shortlink-benches --bin event_fanout -- [connections=10000] [users=100] [rounds=20]`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shortlink_benches::{ReleaseServer, arg, status_kib, user_with_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

const ADMIN_KEY: &str = "sl_fanout_bench_admin_key_000000000";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One `link.created` as a subscriber saw it: the code, when it arrived, and how long
/// after the event was written (its `at`, from the same machine's clock).
type Arrivals = Vec<(String, Instant, Duration)>;

/// Unix milliseconds of an RFC 3339 time like `2026-11-28T19:32:31.123Z`.
fn unix_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn now_unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Holds one SSE connection (HTTP/1.0, so the body is not chunked) and records when
/// each `link.created` arrives, until `stop`.
async fn subscriber(
    addr: String,
    key: String,
    ready: tokio::sync::mpsc::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Arrivals {
    let mut arrivals = Vec::new();
    let Ok(mut socket) = TcpStream::connect(&addr).await else {
        let _ = ready.send(false).await;
        return arrivals;
    };
    let request = format!(
        "GET /api/v1/events HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if socket.write_all(request.as_bytes()).await.is_err() {
        let _ = ready.send(false).await;
        return arrivals;
    }
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut headers_done = false;
    let mut stop = stop;
    loop {
        tokio::select! {
            read = socket.read(&mut chunk) => {
                let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                let now = Instant::now();
                let now_ms = now_unix_ms();
                buffer.extend_from_slice(&chunk[..n]);
                if !headers_done {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let ok = buffer.starts_with(b"HTTP/1.0 200") || buffer.starts_with(b"HTTP/1.1 200");
                    let _ = ready.send(ok).await;
                    if !ok {
                        return arrivals;
                    }
                    buffer.drain(..end + 4);
                    headers_done = true;
                }
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = buffer.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&block);
                    if let Some(at) = text.find(r#""code":""#) && text.contains(r#""type":"link.created""#) {
                        let rest = &text[at + 8..];
                        let written = text
                            .find(r#""at":""#)
                            .and_then(|i| text[i + 6..].split('"').next())
                            .and_then(unix_ms);
                        if let (Some(end), Some(written)) = (rest.find('"'), written) {
                            let after = Duration::from_millis((now_ms - written).max(0) as u64);
                            arrivals.push((rest[..end].to_owned(), now, after));
                        }
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    arrivals
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let connections: usize = arg(1, 10_000);
    let users = arg::<usize>(2, 100).max(1);
    let rounds: usize = arg(3, 20);
    let data = tempfile::tempdir().unwrap();
    let per_user = connections.div_ceil(users);
    let server = ReleaseServer::start(
        &data.path().join("data"),
        ADMIN_KEY,
        &[
            (
                "SHORTLINK_CONTROL__MAX_SUBSCRIBERS_PER_USER",
                per_user.to_string(),
            ),
            (
                "SHORTLINK_CONTROL__MAX_SUBSCRIBERS",
                (connections + 100).to_string(),
            ),
            ("SHORTLINK_CONTROL__WRITES_PER_MINUTE", "100000000".into()),
            ("SHORTLINK_CONTROL__WRITE_BURST", "100000000".into()),
        ],
    )
    .await;
    let base = server.control.clone();
    let http = reqwest::Client::new();
    let rss_idle = status_kib(server.child.id(), "VmRSS");

    let mut keys = Vec::new();
    for u in 0..users {
        keys.push(user_with_key(&http, &base, ADMIN_KEY, &format!("fan{u}")).await);
    }

    // Open the connections, 200 at a time (the listen backlog is finite).
    let addr = base.trim_start_matches("http://").to_owned();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(connections.max(1));
    let mut tasks = Vec::with_capacity(connections);
    let opening = Instant::now();
    let mut opened = 0;
    for i in 0..connections {
        let key = keys[i % users].clone();
        tasks.push(tokio::spawn(subscriber(
            addr.clone(),
            key,
            ready_tx.clone(),
            stop_rx.clone(),
        )));
        if (i + 1) % 200 == 0 || i + 1 == connections {
            while opened < i + 1 {
                match ready_rx.recv().await {
                    Some(true) => opened += 1,
                    Some(false) => panic!("a subscription was refused after {opened}"),
                    None => break,
                }
            }
        }
    }
    let open_time = opening.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_held = status_kib(server.child.id(), "VmRSS");
    println!(
        "held {opened} SSE connections ({users} users) in {:.1} s; server RSS {} MiB idle, {} MiB holding them",
        open_time.as_secs_f64(),
        rss_idle / 1024,
        rss_held / 1024
    );

    // Rounds: one link per user, all users at once; remember when each create started.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    for round in 0..rounds {
        let creates: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(u, key)| {
                let (http, base, key, sent) =
                    (http.clone(), base.clone(), key.clone(), sent.clone());
                tokio::spawn(async move {
                    let code = format!("r{round}u{u}");
                    let started = Instant::now();
                    sent.lock().await.insert(code.clone(), started);
                    let r = http
                        .post(format!("{base}/api/v1/links"))
                        .bearer_auth(key)
                        .json(&serde_json::json!({"url": format!("https://fan.example/{code}"), "alias": code}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                })
            })
            .collect();
        for c in creates {
            c.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let sent = sent.lock().await.clone();
    let mut latencies = Vec::new();
    let mut since_written = Vec::new();
    for task in tasks {
        for (code, at, after) in task.await.unwrap() {
            if let Some(start) = sent.get(&code) {
                latencies.push(at.saturating_duration_since(*start));
                since_written.push(after);
            }
        }
    }
    since_written.sort();
    drop(server);
    latencies.sort();
    let expected = rounds * users * per_user.min(connections);
    println!(
        "deliveries {} of {} expected ({} events × their user's subscribers)",
        latencies.len(),
        expected.min(rounds * connections),
        rounds * users
    );
    println!(
        "event written → subscriber (ms resolution): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&since_written, 0.50).as_secs_f64() * 1e3,
        percentile(&since_written, 0.99).as_secs_f64() * 1e3,
        since_written
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    );
    println!(
        "create request start → subscriber: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
