//! The distributed backend on a real CQL node: click ingestion rate, create→redirect and
//! update→redirect lag across processes, and the proxy's bulk load of many links.
//!
//! ```text
//! scripts/cassandra.sh start
//! cargo build --release -p shortlink
//! CQL_TEST_NODES=127.0.0.1:9042 cargo run --release -p shortlink-benches --bin cql_cluster -- 1000000
//! ```
//! The first argument is how many links the bulk-load part seeds (default 1 000 000; 0
//! skips it), the second how many callers ingest at once in the concurrent ingestion run
//! (default 8, as eight proxies shipping to one control plane). `CQL_BENCH_ONLY=bulk` runs
//! only the bulk load; `CQL_BENCH_KEEP=1` keeps its seeded links for the next run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shortlink_benches::{arg, free_port, release_binary, status_kib};
use shortlink_core::{EnrichedClick, NewLink, RedirectStatus, Role, ShortCode};
use shortlink_cql::{CqlConfig, CqlStore, Retention};

const RETENTION: Retention = Retention {
    click_days: 30,
    event_hours: 168,
};
use shortlink_store::{AccountStore, ClickStore, LinkStore};

const ADMIN_KEY: &str = "sl_bench_admin_key_0123456789abcdef";
const SECRET: &str = "bench-internal-secret-0123456789";

fn config(nodes: &str, keyspace: &str) -> CqlConfig {
    CqlConfig {
        nodes: nodes.split(',').map(str::to_owned).collect(),
        keyspace: keyspace.to_owned(),
        ..CqlConfig::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn migrate(cql: &CqlConfig) {
    CqlStore::migrate(cql, &mut |_| {}).await.expect("migrate");
}

/// Clicks per second into the CQL store through `ClickStore::ingest_clicks`, with
/// `callers` batches in flight at once.
async fn ingestion(nodes: &str, callers: usize) {
    let cql = config(
        nodes,
        &format!("bench_ingest_{:08x}", rand::random::<u32>()),
    );
    migrate(&cql).await;
    let store = CqlStore::open(&cql, RETENTION).await.expect("open");
    let owner = store.create_user("bench", Role::User).await.unwrap().id;
    let mut links = Vec::new();
    for i in 0..1000 {
        let link = NewLink {
            domain: String::new(),
            code: ShortCode::from_stored(format!("ing{i}")),
            custom_alias: true,
            owner,
            url: format!("https://ingest.example/{i}"),
            redirect: RedirectStatus::Permanent,
            expires_at: None,
            max_clicks: None,
            tags: vec![],
            password_hash: None,
            targeting: None,
            fallback_url: None,
        };
        links.push(store.create_link(link).await.unwrap().link.id);
    }
    let links = Arc::new(links);
    let browsers = ["Chrome", "Firefox", "Safari", "Edge"];
    let countries = ["DE", "US", "FR", "JP", "BR"];
    let now_ms = shortlink_core::time_util::now_unix_ms();
    let batches = 20 * callers.max(1);
    let per_batch = 10_000;
    let batch = move |b: usize| -> Vec<EnrichedClick> {
        (0..per_batch)
            .map(|i| EnrichedClick {
                link_id: links[(i * 7 + b) % links.len()],
                ts_ms: now_ms - (i as i64 % 3_600_000),
                ip: "203.0.113.0".into(),
                browser: browsers[i % 4].into(),
                os: "Linux".into(),
                device: "desktop".into(),
                bot: i % 10 == 0,
                referrer: format!("r{}.example", i % 50),
                country: countries[i % 5].into(),
                count: 1,
                // 5 000 people, so each link's hours and days carry visitor sketches.
                visitor: ((i * 31 + b) % 5_000) as u64 + 1,
            })
            .collect()
    };
    let store = Arc::new(store);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..callers.max(1))
        .map(|_| {
            let (store, next, batch) = (store.clone(), next.clone(), batch.clone());
            tokio::spawn(async move {
                let mut rates = Vec::new();
                loop {
                    let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if b >= batches {
                        return rates;
                    }
                    let clicks = batch(b);
                    let started = Instant::now();
                    store
                        .ingest_clicks(&format!("bench-{b}"), clicks)
                        .await
                        .expect("ingest");
                    rates.push(per_batch as f64 / started.elapsed().as_secs_f64());
                }
            })
        })
        .collect();
    let mut rates = Vec::new();
    for worker in workers {
        rates.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    rates.sort_by(f64::total_cmp);
    println!(
        "ingestion into CQL, {callers} caller(s): {:.0} clicks/s over {batches} batches of \
         {per_batch} (1 000 links) in {elapsed:.1?}; one batch: median {:.0} clicks/s, min {:.0}, \
         max {:.0}",
        (batches * per_batch) as f64 / elapsed.as_secs_f64(),
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
    CqlStore::drop_keyspace(&cql).await.ok();
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node's configuration file, its data in `data`, with `extra` proxy settings.
fn write_config(
    data: &Path,
    nodes: &str,
    keyspace: &str,
    (proxy, control): (u16, u16),
    extra: &str,
) -> PathBuf {
    let path = data.with_extension("toml");
    std::fs::write(
        &path,
        format!(
            r#"
data_dir = "{}"
admin_key = "{ADMIN_KEY}"
internal_secret = "{SECRET}"
log = "warn,pingora_load_balancing=error"
[store]
engine = "cql"
[store.cql]
nodes = ["{nodes}"]
keyspace = "{keyspace}"
[proxy]
listen = "127.0.0.1:{proxy}"
control_upstreams = ["127.0.0.1:{control}"]
sync_poll_ms = 200
{extra}
[control]
listen = "127.0.0.1:{control}"
writes_per_minute = 10000000
write_burst = 1000000
"#,
            data.display()
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path, plane: &str) -> Node {
    Node(
        Command::new(release_binary())
            .args(["--config", config.to_str().unwrap(), plane])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shortlink"),
    )
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{base} not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn wait_location(http: &reqwest::Client, url: &str, location: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.headers()
                .get("location")
                .is_some_and(|v| v.as_bytes() == location.as_bytes())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never redirected to {location}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Create→redirect and update→redirect lag from one control plane to two proxies.
async fn lag(nodes: &str, dir: &Path) {
    let keyspace = format!("bench_lag_{:08x}", rand::random::<u32>());
    let cql = config(nodes, &keyspace);
    migrate(&cql).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let control_port = free_port();
    let control_config = write_config(
        &dir.join("control"),
        nodes,
        &keyspace,
        (free_port(), control_port),
        "",
    );
    let control_node = start(&control_config, "control");
    let control = format!("http://127.0.0.1:{control_port}");
    wait_ready(&http, &control).await;
    let mut proxies = Vec::new();
    let mut nodes_running = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let config = write_config(
            &dir.join(format!("proxy-{port}")),
            nodes,
            &keyspace,
            (port, control_port),
            "",
        );
        nodes_running.push(start(&config, "proxy"));
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &base).await;
        proxies.push(base);
    }
    let rounds = 200;
    let (mut created, mut updated) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let code = format!("lag{i}");
        let url = format!("https://lag.example/{i}");
        let started = Instant::now();
        let r = http
            .post(format!("{control}/api/v1/links"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"url": url, "alias": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for proxy in &proxies {
            wait_location(&http, &format!("{proxy}/{code}"), &url).await;
        }
        created.push(started.elapsed());
        let moved = format!("https://lag.example/moved/{i}");
        let started = Instant::now();
        let r = http
            .patch(format!("{control}/api/v1/links/{code}"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"url": moved}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for proxy in &proxies {
            wait_location(&http, &format!("{proxy}/{code}"), &moved).await;
        }
        updated.push(started.elapsed());
    }
    drop(nodes_running);
    drop(control_node);
    created.sort();
    updated.sort();
    println!(
        "create → redirects on both proxies: p50 {:?}, p99 {:?} ({rounds} links; a proxy reads \
         an unknown code through to the store)",
        percentile(&created, 0.5),
        percentile(&created, 0.99)
    );
    println!(
        "update → new target on both proxies: p50 {:?}, p99 {:?} (route feed: poll 200 ms + \
         settle 300 ms)",
        percentile(&updated, 0.5),
        percentile(&updated, 0.99)
    );
    CqlStore::drop_keyspace(&cql).await.ok();
}

/// Seeds `n` links straight into the `links` table (kept and reused across runs with
/// `CQL_BENCH_KEEP=1`), then times a proxy's start to ready: cold with one token range at
/// a time, cold with the default parallel load, and warm from its route snapshot.
async fn bulk_load(nodes: &str, dir: &Path, n: usize) {
    let keep = std::env::var_os("CQL_BENCH_KEEP").is_some();
    let keyspace = if keep {
        format!("bench_bulk_{n}")
    } else {
        format!("bench_bulk_{:08x}", rand::random::<u32>())
    };
    let cql = config(nodes, &keyspace);
    migrate(&cql).await;
    let session = Arc::new(
        scylla::client::session_builder::SessionBuilder::new()
            .known_nodes(cql.nodes.iter())
            .build()
            .await
            .expect("connect"),
    );
    let last = session
        .query_unpaged(
            format!("SELECT id FROM {keyspace}.links WHERE domain = '' AND code = ?"),
            (format!("bulk{}", n - 1),),
        )
        .await
        .expect("read")
        .into_rows_result()
        .expect("rows")
        .rows_num();
    if last == 0 {
        let insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.links (domain, code, id, custom_alias, owner, url, \
                 redirect, disabled, created_at, updated_at) \
                 VALUES ('', ?, ?, true, 1, ?, 301, false, 0, 0)"
            ))
            .await
            .unwrap();
        let started = Instant::now();
        futures_util::stream::iter(0..n)
            .map(|i| {
                let (session, insert) = (session.clone(), insert.clone());
                async move {
                    session
                        .execute_unpaged(
                            &insert,
                            (
                                format!("bulk{i}"),
                                i as i64 + 1,
                                format!(
                                    "https://bulk.example/some/path/to/a/page-{i:08}?ref=bench"
                                ),
                            ),
                        )
                        .await
                        .expect("seed");
                }
            })
            .buffer_unordered(256)
            .collect::<()>()
            .await;
        println!("seeded {n} links in {:?}", started.elapsed());
    } else {
        println!("reusing the {n} links in keyspace {keyspace}");
    }
    table_size(&session, &keyspace, n).await;
    let http = reqwest::Client::new();
    let proxy_start = |data: &Path, extra: &str| {
        let port = free_port();
        let config = write_config(data, nodes, &keyspace, (port, free_port()), extra);
        (start(&config, "proxy"), port)
    };
    let report = |what: &str, took: &mut Vec<Duration>, rss: u64| {
        took.sort();
        println!(
            "{what}: {n} links ready in median {:?} (of {:?}), RSS {} MiB",
            took[took.len() / 2],
            took,
            rss / 1024
        );
    };
    // Cold, one token range at a time (the load before parallel ranges).
    let mut took = Vec::new();
    let mut rss = 0;
    for round in 0..2 {
        let data = dir.join(format!("cold-serial-{round}"));
        let (proxy, port) = proxy_start(
            &data,
            "bulk_load_parallelism = 1\nroute_snapshot_seconds = 0",
        );
        took.push(wait_ready(&http, &format!("http://127.0.0.1:{port}")).await);
        rss = status_kib(proxy.0.id(), "VmRSS");
    }
    report("cold start, one range at a time", &mut took, rss);
    // Cold, the default parallel load; each leaves a snapshot behind for the warm starts.
    let mut took = Vec::new();
    let mut warm_dirs = Vec::new();
    for round in 0..3 {
        let data = dir.join(format!("cold-{round}"));
        let (mut proxy, port) = proxy_start(&data, "");
        took.push(wait_ready(&http, &format!("http://127.0.0.1:{port}")).await);
        rss = status_kib(proxy.0.id(), "VmRSS");
        let snapshot = data.join("routes.snapshot");
        let deadline = Instant::now() + Duration::from_secs(600);
        while !snapshot.exists() {
            assert!(Instant::now() < deadline, "no route snapshot written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_gracefully(&mut proxy);
        warm_dirs.push(data);
    }
    report("cold start, parallel token ranges", &mut took, rss);
    let size = std::fs::metadata(warm_dirs[0].join("routes.snapshot")).map_or(0, |m| m.len());
    println!("route snapshot: {} MiB", size / (1024 * 1024));
    let mut took = Vec::new();
    for data in &warm_dirs {
        let (proxy, port) = proxy_start(data, "");
        took.push(wait_ready(&http, &format!("http://127.0.0.1:{port}")).await);
        rss = status_kib(proxy.0.id(), "VmRSS");
    }
    report("warm start from the route snapshot", &mut took, rss);
    if !keep {
        CqlStore::drop_keyspace(&cql).await.ok();
    }
}

/// Prints the `links` table's size on disk: its memtable is flushed (a short flush
/// period), then `system_views.disk_usage` is read until it holds still.
async fn table_size(session: &scylla::client::session::Session, keyspace: &str, n: usize) {
    session
        .query_unpaged(
            format!("ALTER TABLE {keyspace}.links WITH memtable_flush_period_in_ms = 1000"),
            (),
        )
        .await
        .expect("alter");
    let mut last = 0i64;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rows = session
            .query_unpaged(
                "SELECT mebibytes FROM system_views.disk_usage \
                 WHERE keyspace_name = ? AND table_name = 'links'",
                (keyspace,),
            )
            .await;
        let Ok(rows) = rows else {
            println!("links table size: system_views.disk_usage not readable");
            return;
        };
        let mebibytes: i64 = rows
            .into_rows_result()
            .ok()
            .and_then(|r| r.rows::<(i64,)>().ok()?.next()?.ok())
            .map_or(0, |(m,)| m);
        if mebibytes > 0 && mebibytes == last {
            println!(
                "links table on disk: {mebibytes} MiB for {n} links ({:.0} bytes a link, one \
                 replica, compressed)",
                mebibytes as f64 * 1048576.0 / n as f64
            );
            return;
        }
        last = mebibytes;
    }
    println!("links table size: still changing after 60 s ({last} MiB)");
}

/// SIGTERM, then waits for the process to end.
fn stop_gracefully(node: &mut Node) {
    let pid = node.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    node.0.wait().expect("wait");
}

#[tokio::main]
async fn main() {
    let nodes = std::env::var("CQL_TEST_NODES").expect("set CQL_TEST_NODES=127.0.0.1:9042");
    let n: usize = arg(1, 1_000_000);
    let callers: usize = arg(2, 8);
    let dir = tempfile::tempdir().unwrap();
    // `CQL_BENCH_ONLY=bulk` runs the bulk load alone, `=ingest` ingestion alone (with
    // `callers` batches in flight only).
    let only = std::env::var("CQL_BENCH_ONLY").unwrap_or_default();
    if only == "ingest" {
        ingestion(&nodes, callers).await;
        return;
    }
    if only != "bulk" {
        ingestion(&nodes, 1).await;
        ingestion(&nodes, callers).await;
        lag(&nodes, dir.path()).await;
    }
    if n > 0 {
        bulk_load(&nodes, dir.path(), n).await;
    }
}
