//! Clicks through crashes and stops, on the real binary under load from kept-alive
//! clients: `kill -9` loses at most the clicks of the take interval (100 ms) and counts
//! none twice; SIGTERM loses none.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{Tally, redirect_client, wait_past};
use common::{ADMIN_KEY, Options, TestServer};

/// The interval between the shipper's takes: what a crash may lose.
const TAKE_INTERVAL: Duration = Duration::from_millis(100);

/// A server with one link, and the redirect `start` itself answered (one click).
async fn start() -> (TestServer, String) {
    // Batches of a second, the default: the journal holds up to a second of clicks.
    TestServer::start_with_link(
        Options::default().env("SHORTLINK_PROXY__CLICK_BATCH_MS", "1000"),
        "https://durable.example/target",
    )
    .await
}

/// Eight clients on `code` until `stop`.
fn load(server: &TestServer, code: &str, stop: &Arc<AtomicBool>, tally: &Arc<Tally>) {
    let addr = server.proxy.trim_start_matches("http://").to_owned();
    for _ in 0..8 {
        tokio::spawn(redirect_client(
            addr.clone(),
            code.to_owned(),
            stop.clone(),
            tally.clone(),
        ));
    }
}

/// Restarts on `data` and waits until what the journal held is delivered; returns the
/// link's total clicks then, and the clicks recovered from the journal.
async fn restart_and_count(data: std::path::PathBuf, code: &str) -> (TestServer, u64, u64) {
    let server = TestServer::start_with(Options {
        data: Some(data),
        ..Options::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        let recovered = server.metric("shortlink_clicks_recovered_total").await;
        let shipped = server.metric("shortlink_clicks_shipped_total").await;
        if let (Some(recovered), Some(shipped)) = (recovered, shipped)
            && shipped >= recovered
        {
            break recovered as u64;
        }
        assert!(
            Instant::now() < deadline,
            "the journal was not delivered in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stats = server
        .get_json(&format!("/api/v1/links/{code}/stats"), ADMIN_KEY)
        .await;
    let total = stats["total"].as_u64().expect("a total");
    (server, total, recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_load_loses_at_most_a_take_interval_and_counts_nothing_twice() {
    let (mut server, code) = start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    load(&server, &code, &stop, &tally);
    wait_past(&tally.redirects, 20_000, "redirects before the kill").await;
    server.kill();
    let loaded = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    // Every answer the clients saw came before the kill.
    let answered = tally.redirects.load(Ordering::Relaxed) + 1;

    let _dir = server.take_dir();
    let (_server, counted, recovered) =
        restart_and_count(server.data_dir().to_owned(), &code).await;
    assert!(
        counted <= answered,
        "no click counted twice: {counted} counted, {answered} answered"
    );
    let lost = answered - counted;
    let per_second = answered as f64 / loaded.as_secs_f64();
    // The bound: one take interval of redirects at the rate seen, with room for a take
    // that runs late under this load (the shipper is at most 50 ms late before it leaves
    // the idle scheduling class) and for the answers in flight.
    let bound = (per_second * (TAKE_INTERVAL * 3).as_secs_f64()) as u64;
    eprintln!(
        "kill -9 after {answered} redirects in {loaded:?} ({per_second:.0}/s): {counted} counted, \
         {recovered} of them from the journal, {lost} lost ({:.1} ms of redirects; bound {bound})",
        lost as f64 / per_second * 1000.0
    );
    assert!(lost <= bound, "{lost} clicks lost, more than {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_loses_no_click() {
    let (mut server, code) = start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    load(&server, &code, &stop, &tally);
    wait_past(&tally.redirects, 20_000, "redirects before SIGTERM").await;
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    stop.store(true, Ordering::Relaxed);
    let answered = tally.redirects.load(Ordering::Relaxed) + 1;

    let _dir = server.take_dir();
    let (_server, counted, _) = restart_and_count(server.data_dir().to_owned(), &code).await;
    assert_eq!(counted, answered, "every redirect answered is counted once");
}
