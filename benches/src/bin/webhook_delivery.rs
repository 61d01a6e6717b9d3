//! Webhook delivery throughput and latency: starts `shortlink serve` (release build)
//! allowed to deliver to loopback, a receiver on loopback answering 204, registers
//! `endpoints` webhooks for each of `users` users, then creates `links` links (each one
//! `link.created` event, delivered to every endpoint of its owner) with 32 requests in
//! flight, and measures deliveries per second (first create to last delivery) and the
//! time from each event being written (its `timestamp`) to its arrival. With `rate`, links
//! are created at that many a second instead (latency without a backlog).
//!
//! `cargo build --release -p shortlink && cargo run --release -p shortlink-benches --bin webhook_delivery -- [links=5000] [users=4] [endpoints=4] [rate=0]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::StreamExt;
use shortlink_benches::{ReleaseServer, arg, user_with_key};

const ADMIN_KEY: &str = "sl_webhook_bench_admin_key_00000000";

fn now_unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn unix_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(Default)]
struct Arrivals {
    /// Milliseconds from each event's timestamp to its arrival.
    lags_ms: Vec<i64>,
    last: Option<Instant>,
}

async fn receive(State(arrivals): State<Arc<Mutex<Arrivals>>>, body: Bytes) -> StatusCode {
    let now = now_unix_ms();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(at) = value["timestamp"].as_str().and_then(unix_ms) {
        let mut arrivals = arrivals.lock().unwrap();
        arrivals.lags_ms.push(now - at);
        arrivals.last = Some(Instant::now());
    }
    StatusCode::NO_CONTENT
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let links: usize = arg(1, 5000);
    let users: usize = arg(2, 4);
    let endpoints: usize = arg(3, 4);
    let rate: u64 = arg(4, 0);
    let expected = links * endpoints;

    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let data = tempfile::tempdir().unwrap();
    let server = ReleaseServer::start(
        &data.path().join("data"),
        ADMIN_KEY,
        &[
            (
                "SHORTLINK_CONTROL__WEBHOOKS__ALLOWED_NETWORKS",
                "127.0.0.0/8".into(),
            ),
            (
                "SHORTLINK_CONTROL__WEBHOOKS__MAX_PER_USER",
                endpoints.to_string(),
            ),
            ("SHORTLINK_CONTROL__WRITES_PER_MINUTE", "10000000".into()),
            ("SHORTLINK_CONTROL__WRITE_BURST", "1000000".into()),
            (
                "SHORTLINK_CONTROL__EVENTS_RETAIN_PER_USER",
                "1000000".into(),
            ),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let mut keys = Vec::new();
    for u in 0..users {
        let key = user_with_key(&http, &server.control, ADMIN_KEY, &format!("hooks{u}")).await;
        for _ in 0..endpoints {
            let r = http
                .post(format!("{}/api/v1/webhooks", server.control))
                .bearer_auth(&key)
                .json(&serde_json::json!({"url": hook_url, "events": ["link.created"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        keys.push(key);
    }

    let started = Instant::now();
    let control = server.control.clone();
    futures_util::stream::iter(0..links)
        .map(|i| {
            let (http, control, key) = (http.clone(), control.clone(), keys[i % users].clone());
            async move {
                if let Some(at_us) = (i as u64 * 1_000_000).checked_div(rate) {
                    let due = started + Duration::from_micros(at_us);
                    tokio::time::sleep_until(due.into()).await;
                }
                let r = http
                    .post(format!("{control}/api/v1/links"))
                    .bearer_auth(key)
                    .json(&serde_json::json!({"url": format!("https://example.com/{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if arrivals.lock().unwrap().lags_ms.len() >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = arrivals.lock().unwrap();
    let delivered = arrivals.lags_ms.len();
    let span = arrivals.last.map_or(started.elapsed(), |l| l - started);
    let mut lags = arrivals.lags_ms.clone();
    lags.sort_unstable();
    println!(
        "links {links} ({:.0}/s created), users {users}, endpoints per user {endpoints}, rate {rate}",
        links as f64 / created.as_secs_f64()
    );
    println!(
        "deliveries {delivered}/{expected} in {:.2} s: {:.0} deliveries/s",
        span.as_secs_f64(),
        delivered as f64 / span.as_secs_f64()
    );
    println!(
        "event to delivery: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
    assert_eq!(delivered, expected, "every delivery arrived");
}
