//! Upgrades and stops without a dropped request: the running process hands its listening
//! sockets to its successor (SIGQUIT), every kept-alive connection is told
//! `Connection: close` at its next request, and the last clicks are taken after the last
//! redirect. The real binary, under load from keep-alive clients on raw sockets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{Tally, redirect_client, wait_past};
use common::raw::Connection;
use common::{ADMIN_KEY, Options, TestServer, wait_total};
use serde_json::json;
use tokio::net::TcpStream;

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

async fn start() -> (TestServer, String) {
    TestServer::start_with_link(
        Options::default().env("SHORTLINK_PROXY__GRACE_PERIOD_SECONDS", "3"),
        "https://upgrade.example/target",
    )
    .await
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
