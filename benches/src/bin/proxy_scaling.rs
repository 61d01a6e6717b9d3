//! Scaling run: 1, 2 and 4 proxies (separate processes) behind one load generator, one
//! control plane on the embedded store, every click counted exactly. For each step: the
//! redirects answered per second, every process's CPU per million redirects, each
//! proxy's memory, and how long after the load the account's total equalled the number
//! of redirects answered (it must equal it exactly).
//!
//! ```text
//! cargo build --release -p shortlink -p shortlink-benches
//! target/release/proxy_scaling [links=1000] [seconds=10] [connections=64] [steps=1,2,4]
//! ```
//! The load generator's connections are spread evenly over the proxies; each sends
//! `GET /ld<i>` for a random link and reads the answer before the next (closed loop), so
//! the count of 301 answers is exact.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use shortlink_benches::{arg, free_port, read_response, release_binary, status_kib};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ADMIN_KEY: &str = "sl_bench_admin_key_0123456789abcdef";
const SECRET: &str = "bench-internal-secret-0123456789";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Starts one plane on the shared data folder; a proxy gets a spool and snapshot of its own.
fn start(plane: &str, data: &Path, proxy_port: u16, control_port: u16) -> Process {
    let mut command = Command::new(release_binary());
    command
        .arg(plane)
        .env("SHORTLINK_DATA_DIR", data)
        .env("SHORTLINK_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
        .env(
            "SHORTLINK_CONTROL_LISTEN",
            format!("127.0.0.1:{control_port}"),
        )
        .env("SHORTLINK_ADMIN_KEY", ADMIN_KEY)
        .env("SHORTLINK_INTERNAL_SECRET", SECRET)
        .env("SHORTLINK_CONTROL__WRITES_PER_MINUTE", "10000000")
        .env("SHORTLINK_CONTROL__WRITE_BURST", "1000000")
        .env("SHORTLINK_LOG", "warn,pingora_load_balancing=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if plane == "proxy" {
        command
            .env(
                "SHORTLINK_PROXY__SPOOL_DIR",
                data.join(format!("spool-{proxy_port}")),
            )
            .env(
                "SHORTLINK_PROXY__ROUTE_SNAPSHOT",
                data.join(format!("routes-{proxy_port}.snapshot")),
            );
    }
    Process(command.spawn().expect("start shortlink"))
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "{base} not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// The admin account's click total (0 while the control plane does not answer).
async fn account_total(http: &reqwest::Client, control: &str) -> u64 {
    let Ok(answer) = http
        .get(format!("{control}/api/v1/stats"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
    else {
        return 0;
    };
    answer
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["total"].as_u64())
        .unwrap_or(0)
}

/// The control plane's applied click batches so far (`/metrics`; it listens there
/// without a key on loopback).
async fn batches_applied(http: &reqwest::Client, control: &str) -> f64 {
    let text = match http.get(format!("{control}/metrics")).send().await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .find(|l| l.starts_with("shortlink_click_batches_total{outcome=\"applied\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Creates links `ld0` … as admin, 32 at a time.
async fn seed(http: &reqwest::Client, control: &str, links: usize) {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..links)
        .map(|i| {
            let http = http.clone();
            async move {
                let r = http
                    .post(format!("{control}/api/v1/links"))
                    .bearer_auth(ADMIN_KEY)
                    .json(&serde_json::json!({
                        "url": format!("https://scale.example/{i}"),
                        "alias": format!("ld{i}"),
                    }))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status(), 201, "create ld{i}");
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
}

/// One closed-loop keep-alive connection until `stop`; returns (301 answers, others).
async fn connection(addr: String, links: usize, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let mut buf = Vec::with_capacity(8192);
    let (mut redirects, mut others) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let i = rand::rng().random_range(0..links);
        let request = format!("GET /ld{i} HTTP/1.1\r\nHost: bench\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        match read_response(&mut stream, &mut buf).await.expect("answer") {
            301 => redirects += 1,
            _ => others += 1,
        }
    }
    (redirects, others)
}

async fn step(proxies: usize, links: usize, seconds: u64, connections: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();
    let control_port = free_port();
    let control_url = format!("http://127.0.0.1:{control_port}");
    let control = start("control", &data, free_port(), control_port);
    wait_ready(&http, &control_url).await;
    seed(&http, &control_url, links).await;
    let mut running = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..proxies {
        let port = free_port();
        running.push(start("proxy", &data, port, control_port));
        wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
        ports.push(port);
    }
    let pids: Vec<String> = running
        .iter()
        .map(|p| p.pid().to_string())
        .chain([control.pid().to_string(), "self".to_owned()])
        .collect();
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(p)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let addr = format!("127.0.0.1:{}", ports[c % proxies]);
            tokio::spawn(connection(addr, links, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut redirects, mut others) = (0u64, 0u64);
    for task in tasks {
        let (r, o) = task.await.unwrap();
        redirects += r;
        others += o;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_seconds(p) - before)
        .collect();
    // Every answered redirect must be counted, once.
    let settle = Instant::now();
    let mut counted = account_total(&http, &control_url).await;
    while counted < redirects && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        counted = account_total(&http, &control_url).await;
    }
    let settled_after = settle.elapsed();
    let batches = batches_applied(&http, &control_url).await;
    // Shortly after, still exactly that many (nothing counted twice).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = account_total(&http, &control_url).await;
    let per_million = |seconds: f64| seconds * 1e6 / redirects.max(1) as f64;
    let proxy_cpu: f64 = cpu[..proxies].iter().sum();
    let rss: Vec<u64> = running
        .iter()
        .map(|p| status_kib(p.pid(), "VmRSS") / 1024)
        .collect();
    println!(
        "{proxies} prox{}: {:.0} redirects/s ({redirects} in {elapsed:.1} s, {others} other \
         answers); counted {} of {redirects} {} {:.1?} after the load, {later} two seconds \
         later; CPU s per million redirects: proxies {:.2}, control plane {:.2}, load \
         generator {:.2}; {batches} batches applied ({:.0} clicks a batch); proxy RSS \
         {rss:?} MiB",
        if proxies == 1 { "y" } else { "ies" },
        redirects as f64 / elapsed,
        counted,
        if counted == redirects && later == redirects {
            "(exact)"
        } else {
            "(NOT exact)"
        },
        settled_after,
        per_million(proxy_cpu),
        per_million(cpu[proxies]),
        per_million(cpu[proxies + 1]),
        redirects as f64 / batches.max(1.0),
    );
    drop(running);
    drop(control);
}

#[tokio::main]
async fn main() {
    let links: usize = arg(1, 1000);
    let seconds: u64 = arg(2, 10);
    let connections: usize = arg(3, 64);
    let steps: String = arg(4, "1,2,4".to_owned());
    for proxies in steps
        .split(',')
        .map(|s| s.parse::<usize>().expect("steps: 1,2,4"))
    {
        step(proxies, links, seconds, connections).await;
    }
}
