//! An open-loop load generator: requests at a fixed rate over keep-alive connections. A
//! request whose connection was still waiting for the previous response when it fell due
//! is timed from when it was *due*, so a stalled server is charged for the requests it
//! delayed (unlike a closed loop such as wrk); one that waited for its time is timed from
//! when it was sent, so the pacer's wake-up delay is not charged to the server.
//! For "p99 at half the peak rate".
//!
//! Requests are released by a pacing thread of their own that sleeps with
//! `std::thread::sleep` (tens of microseconds late at most), not by tokio's timer, whose
//! millisecond ticks released about 50 requests at once at 50 k req/s: every request then
//! queued behind its own tick's burst, which measured the generator more than the server.
//!
//! `rate_load <host:port> <n codes> <requests/s> <seconds> [connections=64]`
//!
//! Requests `GET /ld<i>` for random `i < n` (the load harness's links); prints the achieved
//! rate, the p50, p90, p99 and p99.9 latencies in milliseconds, any non-3xx count, and
//! the cores the generator itself used. With `RATE_LOAD_SLOW=<file>` it also writes every
//! request slower than 1 ms to the file, one per line: when it was timed from (ms since
//! the run's start) and its latency (µs), to see whether slow requests cluster in time.

use std::time::{Duration, Instant};

use rand::Rng;
use shortlink_benches::read_response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One connection: sends a request for each due time it is handed, in order.
/// Returns each request's latency in µs with when it was timed from (ms since `start`).
async fn connection(
    addr: String,
    n: usize,
    start: Instant,
    mut due_times: tokio::sync::mpsc::UnboundedReceiver<Instant>,
) -> (Vec<(u32, u32)>, u64) {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let mut buf = Vec::with_capacity(8192);
    let mut latencies = Vec::new();
    let mut bad = 0u64;
    // When the previous response arrived: a request due before then waited for it.
    let mut free_since = Instant::now();
    while let Some(due) = due_times.recv().await {
        let sent = Instant::now();
        let timed_from = if due < free_since { due } else { sent };
        let code = rand::rng().random_range(0..n);
        let request = format!("GET /ld{code} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let status = read_response(&mut stream, &mut buf)
            .await
            .expect("response");
        if !(300..400).contains(&status) {
            bad += 1;
        }
        free_since = Instant::now();
        latencies.push((
            (free_since - timed_from).as_micros().min(u32::MAX as u128) as u32,
            timed_from.saturating_duration_since(start).as_millis() as u32,
        ));
    }
    (latencies, bad)
}

/// Sends, at each request's due time `start + i * interval`, the end of the run of
/// requests due so far: one wake-up of the runtime per sleep, not one per request.
fn pace(
    start: Instant,
    interval: Duration,
    total: u64,
    due_upto: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    let mut next = 0u64;
    while next < total {
        let now = Instant::now();
        let due = start + interval.mul_f64(next as f64);
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        // Everything due by now goes in one message.
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        let upto = ((elapsed / interval.as_secs_f64()) as u64 + 1).clamp(next + 1, total);
        if due_upto.send(upto).is_err() {
            return;
        }
        next = upto;
    }
}

/// Hands request `i` (with its due time) to connection `i % connections`.
async fn dispatch(
    start: Instant,
    interval: Duration,
    mut due_upto: tokio::sync::mpsc::UnboundedReceiver<u64>,
    lanes: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
) {
    let mut next = 0u64;
    while let Some(upto) = due_upto.recv().await {
        for i in next..upto {
            let due = start + interval.mul_f64(i as f64);
            lanes[(i % lanes.len() as u64) as usize]
                .send(due)
                .expect("connection task alive");
        }
        next = upto;
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel reports them in USER_HZ (100 on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: rate_load <host:port> <n codes> <requests/s> <seconds> [connections=64]");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let n: usize = args[2].parse().expect("n");
    let rate: f64 = args[3].parse().expect("rate");
    let seconds: f64 = args[4].parse().expect("seconds");
    let connections: u64 = args.get(5).map_or(64, |c| c.parse().expect("connections"));
    let total = (rate * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    // One thread for all connections: at half the peak it keeps up, and the box's other
    // core stays with the server (two generator threads plus the pacer took 1.4 cores).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The connections connect first (when the runtime starts), so the clock starts a
    // little later and no request is due early.
    let start = Instant::now() + Duration::from_millis(200);
    let (lanes, tasks): (Vec<_>, Vec<_>) = (0..connections)
        .map(|_| {
            let (lane, due_times) = tokio::sync::mpsc::unbounded_channel();
            (
                lane,
                runtime.spawn(connection(addr.clone(), n, start, due_times)),
            )
        })
        .collect();
    let (due_upto, due_upto_rx) = tokio::sync::mpsc::unbounded_channel();
    runtime.spawn(dispatch(start, interval, due_upto_rx, lanes));
    let pacer = std::thread::spawn(move || pace(start, interval, total, due_upto));
    let cpu_before = cpu_seconds();
    let (latencies, bad) = runtime.block_on(async {
        let mut all = Vec::with_capacity(total as usize);
        let mut bad = 0;
        for task in tasks {
            let (latencies, b) = task.await.expect("connection task");
            all.extend(latencies);
            bad += b;
        }
        (all, bad)
    });
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    pacer.join().expect("pacer");
    if let Ok(path) = std::env::var("RATE_LOAD_SLOW") {
        let slow: String = latencies
            .iter()
            .filter(|(us, _)| *us > 1000)
            .map(|(us, at)| format!("{at} {us}\n"))
            .collect();
        std::fs::write(&path, slow).expect("write the slow requests");
    }
    let mut latencies: Vec<u32> = latencies.into_iter().map(|(us, _)| us).collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        f64::from(latencies[i]) / 1000.0
    };
    println!(
        "target_rps={rate:.0} achieved_rps={:.0} requests={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} non_3xx={bad} generator_cores={:.2}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        cpu / elapsed.as_secs_f64(),
    );
}
