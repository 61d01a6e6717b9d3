//! An open-loop load generator: requests at a fixed rate over keep-alive connections. A
//! request whose connection was still waiting for the previous response when it fell due
//! is timed from when it was *due*, so a stalled server is charged for the requests it
//! delayed (unlike a closed loop such as wrk); one that waited for its time is timed from
//! when it was sent, so the timer's millisecond granularity is not charged to the server.
//! For "p99 at half the peak rate".
//!
//! `rate_load <host:port> <n codes> <requests/s> <seconds> [connections=64]`
//!
//! Requests `GET /ld<i>` for random `i < n` (the load harness's links); prints the achieved
//! rate and the p50, p90, p99 and p99.9 latencies in milliseconds, and any non-3xx count.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP/1.1 response from `stream` (headers, then `Content-Length` bytes of
/// body), keeping any bytes past it in `buf`. Returns the status code.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status line"))?;
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                read_more(stream, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// One connection's share: every `connections`-th request of the schedule.
async fn connection(
    addr: String,
    n: usize,
    start: Instant,
    interval: Duration,
    first: u64,
    step: u64,
    total: u64,
) -> (Vec<u32>, u64) {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let mut buf = Vec::with_capacity(8192);
    let mut latencies = Vec::with_capacity((total / step + 1) as usize);
    let mut bad = 0u64;
    let mut i = first;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        let timed_from = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let code = rand::rng().random_range(0..n);
        let request = format!("GET /ld{code} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let status = read_response(&mut stream, &mut buf)
            .await
            .expect("response");
        if !(300..400).contains(&status) {
            bad += 1;
        }
        latencies.push(timed_from.elapsed().as_micros().min(u32::MAX as u128) as u32);
        i += step;
    }
    (latencies, bad)
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut latencies, bad, elapsed) = runtime.block_on(async {
        // Connect first, then start the clock a little later so no request is due early.
        let start = Instant::now() + Duration::from_millis(200);
        let tasks: Vec<_> = (0..connections)
            .map(|k| {
                tokio::spawn(connection(
                    addr.clone(),
                    n,
                    start,
                    interval,
                    k,
                    connections,
                    total,
                ))
            })
            .collect();
        let mut all = Vec::with_capacity(total as usize);
        let mut bad = 0;
        for task in tasks {
            let (latencies, b) = task.await.expect("connection task");
            all.extend(latencies);
            bad += b;
        }
        (all, bad, start.elapsed())
    });
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        f64::from(latencies[i]) / 1000.0
    };
    println!(
        "target_rps={rate:.0} achieved_rps={:.0} requests={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} non_3xx={bad}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
    );
}
