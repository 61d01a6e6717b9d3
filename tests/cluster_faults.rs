//! The cluster under a fault: three Cassandra nodes (127.0.0.2-4, datacenter dc1, started by
//! `scripts/cassandra.sh cluster-start`, which `scripts/test.sh` runs for this suite alone),
//! two proxies and two control planes on `configs/cluster.toml` unchanged (replication 3 at
//! LOCAL_QUORUM): only addresses, secrets and the keyspace come from the environment. One
//! node is killed and restarted while the proxies serve and the control planes create,
//! update, delete and ingest clicks.
//!
//! Not run by a plain `cargo test` (`test = false` in Cargo.toml): it needs the three nodes.
//! Run it with `scripts/cassandra.sh cluster-start` and
//! `CQL_CLUSTER_NODES=127.0.0.2:9042,127.0.0.3:9042,127.0.0.4:9042 cargo test --test cluster_faults`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, INTERNAL_SECRET, Plane, S3Server, binary, free_port};
use reqwest::Method;
use serde_json::{Value, json};

/// The node killed and restarted (not the seed, 127.0.0.2).
const VICTIM: &str = "3";

fn cluster_nodes() -> String {
    std::env::var("CQL_CLUSTER_NODES").unwrap_or_else(|_| {
        panic!(
            "CQL_CLUSTER_NODES is not set: this test needs a three-node CQL cluster. Run \
             scripts/test.sh (it starts one for this test), or scripts/cassandra.sh \
             cluster-start and set CQL_CLUSTER_NODES=127.0.0.2:9042,127.0.0.3:9042,127.0.0.4:9042"
        )
    })
}

fn cassandra(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cassandra.sh");
    let out = Command::new(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/cassandra.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The keyspace, S3 bucket and secrets every process shares.
struct Setup {
    dir: tempfile::TempDir,
    keyspace: String,
    s3: S3Server,
    controls: Vec<u16>,
    http: reqwest::Client,
    /// Requests answered 503 `storage_unavailable` and sent again, as a client should.
    retried: std::sync::atomic::AtomicU64,
}

/// A running plane, its base URL and (a proxy's) metrics address.
struct Process {
    plane: Plane,
    url: String,
    metrics: Option<String>,
}

impl Setup {
    /// `shortlink --config configs/cluster.toml <plane>` with this process's addresses.
    fn command(&self, args: &[&str], name: &str, env: &[(&str, String)]) -> Command {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut command = Command::new(binary());
        command
            .arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cluster.toml"))
            .args(args)
            .env("SHORTLINK_DATA_DIR", &data)
            .env(
                "SHORTLINK_INTERNAL_SECRET_FILE",
                self.dir.path().join("internal"),
            )
            .env("SHORTLINK_ADMIN_KEY_FILE", self.dir.path().join("admin"))
            .env("SHORTLINK_STORE__CQL__NODES", cluster_nodes())
            .env("SHORTLINK_STORE__CQL__KEYSPACE", &self.keyspace)
            .env(
                "SHORTLINK_PROXY__CONTROL_UPSTREAMS",
                self.controls
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env("SHORTLINK_PROXY__HEALTH_CHECK_SECONDS", "1")
            .env(
                "SHORTLINK_LOG",
                "info,pingora_load_balancing=error,scylla=warn",
            );
        for (key, value) in &self.s3.options().env {
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    async fn start(&self, plane: &str, name: &str, port: u16) -> Process {
        let listen = format!("127.0.0.1:{port}");
        let metrics = (plane == "proxy").then(|| format!("127.0.0.1:{}", free_port()));
        let env = match &metrics {
            None => vec![("SHORTLINK_CONTROL__LISTEN", listen)],
            Some(metrics) => vec![
                ("SHORTLINK_PROXY__LISTEN", listen),
                ("SHORTLINK_PROXY__METRICS_LISTEN", metrics.clone()),
            ],
        };
        let log = self.dir.path().join(format!("{name}.log"));
        let mut plane = Plane::spawn(self.command(&[plane], name, &env), log);
        let url = format!("http://127.0.0.1:{port}");
        plane.wait_ok(&self.http, &format!("{url}/readyz")).await;
        Process {
            plane,
            url,
            metrics,
        }
    }

    /// The value of metric `name` on `process` (a control plane's, or a proxy's own port).
    async fn metric(&self, process: &Process, name: &str) -> u64 {
        let text = self.metrics_text(process).await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse::<f64>()
            .unwrap() as u64
    }

    /// The metrics page of `process` (a control plane's, or a proxy's own port).
    async fn metrics_text(&self, process: &Process) -> String {
        let request = match &process.metrics {
            Some(address) => self.http.get(format!("http://{address}/metrics")),
            None => self.api(process, Method::GET, "/metrics"),
        };
        request.send().await.unwrap().text().await.unwrap()
    }

    /// Waits until `proxy` has shipped (or given up on) every click it captured.
    async fn wait_shipped(&self, proxy: &Process, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let captured = self.metric(proxy, "shortlink_clicks_captured_total").await;
            let mut settled = 0;
            for name in [
                "shortlink_clicks_shipped_total",
                "shortlink_clicks_rejected_total",
                "shortlink_clicks_dropped_total",
            ] {
                settled += self.metric(proxy, name).await;
            }
            if settled >= captured {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} shipped {settled} of {captured} clicks within {within:?}",
                proxy.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn api(&self, control: &Process, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", control.url))
            .bearer_auth(ADMIN_KEY)
            .timeout(Duration::from_secs(10))
    }

    /// Sends `request`, and once more (after `Retry-After`) when it is
    /// answered 503 `storage_unavailable`, as the API documents: the status, the body,
    /// and whether it was sent more than once.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value, bool), String> {
        let mut again = false;
        loop {
            let r = request
                .try_clone()
                .expect("a request with a plain body")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            if status == 503 && body["error"]["code"] == "storage_unavailable" && !again {
                self.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                again = true;
                continue;
            }
            return Ok((status, body, again));
        }
    }

    /// Creates a link to `url` through `control`: its code, or why it failed.
    async fn create(&self, control: &Process, url: &str) -> Result<String, String> {
        let (status, body, again) = self
            .send(
                self.api(control, Method::POST, "/api/v1/links")
                    .json(&json!({ "url": url })),
            )
            .await
            .map_err(|e| format!("create {url} on {}: {e}", control.url))?;
        match (status, body["code"].as_str()) {
            (201, Some(code)) => Ok(code.to_owned()),
            // The unanswered first try made it: the same URL gives the same link.
            (200, Some(code)) if again => Ok(code.to_owned()),
            _ => Err(format!("create {url} on {}: {status} {body}", control.url)),
        }
    }

    async fn delete(&self, control: &Process, code: &str) -> Result<(), String> {
        let (status, body, again) = self
            .send(self.api(control, Method::DELETE, &format!("/api/v1/links/{code}")))
            .await
            .map_err(|e| format!("delete {code} on {}: {e}", control.url))?;
        match status {
            204 => Ok(()),
            // The unanswered first try deleted it.
            404 if again => Ok(()),
            status => Err(format!("delete {code} on {}: {status} {body}", control.url)),
        }
    }

    /// Waits until `proxy` answers `code` with 404.
    async fn wait_gone(&self, proxy: &Process, code: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let r = self.http.get(format!("{}/{code}", proxy.url)).send().await;
            if r.as_ref().is_ok_and(|r| r.status() == 404) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}/{code} is not gone within {within:?}: {r:?}",
                proxy.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn update(&self, control: &Process, code: &str, url: &str) -> Result<(), String> {
        let (status, body, _) = self
            .send(
                self.api(control, Method::PATCH, &format!("/api/v1/links/{code}"))
                    .json(&json!({ "url": url })),
            )
            .await
            .map_err(|e| format!("update {code} on {}: {e}", control.url))?;
        match status {
            200 => Ok(()),
            status => Err(format!("update {code} on {}: {status} {body}", control.url)),
        }
    }

    /// Waits until `proxy` redirects `code` to `url`.
    async fn wait_served(&self, proxy: &Process, code: &str, url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let r = self.http.get(format!("{}/{code}", proxy.url)).send().await;
            let location = r.as_ref().ok().and_then(|r| {
                r.headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_owned())
            });
            if location.as_deref() == Some(url) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}/{code} does not redirect to {url} within {within:?}: {r:?}",
                proxy.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn total(&self, control: &Process, code: &str) -> u64 {
        let r = self
            .api(control, Method::GET, &format!("/api/v1/links/{code}/stats"))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        body["total"].as_u64().unwrap_or_else(|| panic!("{body}"))
    }
}

impl Process {
    /// Its URL and the first warnings and errors of its log.
    fn notable(&self) -> String {
        let text = self.plane.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .take(20)
            .collect();
        format!("{}:\n{}", self.url, lines.join("\n"))
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Redirects answered per hammered link.
    served: Vec<AtomicU64>,
    /// Requests that did not get their redirect, and writes that failed.
    failures: Mutex<Vec<String>>,
    /// Links the writer created, with their latest URL.
    written: Mutex<Vec<(String, String)>>,
    /// Links the writer deleted.
    deleted: Mutex<Vec<String>>,
    creates: AtomicUsize,
    updates: AtomicUsize,
}

impl Seen {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("internal"), INTERNAL_SECRET).unwrap();
    std::fs::write(dir.path().join("admin"), ADMIN_KEY).unwrap();
    let setup = Arc::new(Setup {
        dir,
        keyspace: format!("sl_faults_{:08x}", rand::random::<u32>()),
        s3: S3Server::start().await,
        controls: vec![free_port(), free_port()],
        http: common::client(),
        retried: Default::default(),
    });

    // configs/cluster.toml's replication, checked against the nodes and created as written.
    let out = setup
        .command(&["migrate"], "migrate", &[])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "created, from store.cql.replication; replication \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        ),
        "{stdout}"
    );

    let controls = vec![
        setup.start("control", "control-a", setup.controls[0]).await,
        setup.start("control", "control-b", setup.controls[1]).await,
    ];
    let proxies = vec![
        setup.start("proxy", "proxy-1", free_port()).await,
        setup.start("proxy", "proxy-2", free_port()).await,
    ];
    let controls = Arc::new(controls);
    let proxies = Arc::new(proxies);

    // Links the load redirects to, never changed.
    let mut hammered = Vec::new();
    for i in 0..16 {
        let url = format!("https://example.com/hammered/{i}");
        let code = setup.create(&controls[i % 2], &url).await.unwrap();
        for proxy in proxies.iter() {
            setup
                .wait_served(proxy, &code, &url, Duration::from_secs(2))
                .await;
        }
        hammered.push((code, url));
    }
    let hammered = Arc::new(hammered);
    let seen = Arc::new(Seen {
        // One redirect per proxy already: the wait above ends on it.
        served: (0..hammered.len())
            .map(|_| AtomicU64::new(proxies.len() as u64))
            .collect(),
        ..Seen::default()
    });
    let stop = Arc::new(AtomicBool::new(false));

    // Redirects: four loops over both proxies, each a request every 10 ms at most.
    let mut load = Vec::new();
    for task in 0..4usize {
        let (setup, proxies, hammered, seen, stop) = (
            setup.clone(),
            proxies.clone(),
            hammered.clone(),
            seen.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = task;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let i = n % hammered.len();
                let proxy = &proxies[(n / hammered.len()) % proxies.len()];
                n += 1;
                let (code, url) = &hammered[i];
                let r = setup
                    .http
                    .get(format!("{}/{code}", proxy.url))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r)
                        if r.status() == 301
                            && r.headers().get("location").and_then(|v| v.to_str().ok())
                                == Some(url.as_str()) =>
                    {
                        seen.served[i].fetch_add(1, Ordering::Relaxed);
                    }
                    other => seen.fail(format!("{}/{code}: {other:?}", proxy.url)),
                }
            }
        }));
    }
    // Writes: a create on one control plane and an update of an earlier link on the
    // other, alternating, about twenty of each a second; every tenth tick, a link created
    // on one is deleted through the other (few enough that no proxy's 404 limit is met
    // when every deleted code is checked).
    {
        let (setup, controls, seen, stop) =
            (setup.clone(), controls.clone(), seen.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let url = format!("https://example.com/written/{n}");
                match setup.create(&controls[n % 2], &url).await {
                    Ok(code) => seen.written.lock().unwrap().push((code, url)),
                    Err(why) => seen.fail(why),
                }
                seen.creates.fetch_add(1, Ordering::Relaxed);
                let earlier = {
                    let written = seen.written.lock().unwrap();
                    written
                        .len()
                        .checked_sub(1)
                        .map(|last| (last / 2, written[last / 2].0.clone()))
                };
                if let Some((index, code)) = earlier {
                    let url = format!("https://example.com/written/{n}/updated");
                    match setup.update(&controls[(n + 1) % 2], &code, &url).await {
                        Ok(()) => seen.written.lock().unwrap()[index].1 = url,
                        Err(why) => seen.fail(why),
                    }
                    seen.updates.fetch_add(1, Ordering::Relaxed);
                }
                if n % 10 == 0 {
                    let url = format!("https://example.com/doomed/{n}");
                    let deleted = match setup.create(&controls[n % 2], &url).await {
                        Ok(code) => setup
                            .delete(&controls[(n + 1) % 2], &code)
                            .await
                            .map(|()| code),
                        Err(why) => Err(why),
                    };
                    match deleted {
                        Ok(code) => seen.deleted.lock().unwrap().push(code),
                        Err(why) => seen.fail(why),
                    }
                }
                n += 1;
            }
        }));
    }
    let wait_creates = |at_least: usize| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.creates.load(Ordering::Relaxed) < at_least {
                assert!(Instant::now() < deadline, "the writer stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    wait_creates(10).await;
    let before_kill = seen.creates.load(Ordering::Relaxed);
    tokio::task::spawn_blocking(|| cassandra(&["node-kill", VICTIM]))
        .await
        .unwrap();
    // The node is down: writes carry on at LOCAL_QUORUM (two of three replicas).
    wait_creates(before_kill + 30).await;
    let down_url = "https://example.com/created-while-down";
    let down = setup.create(&controls[1], down_url).await.unwrap();
    let restart = tokio::task::spawn_blocking(|| cassandra(&["node-start", VICTIM]));
    restart.await.unwrap();
    let after_return = seen.creates.load(Ordering::Relaxed);
    wait_creates(after_return + 20).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let failures = seen.failures.lock().unwrap().clone();
    let served: Vec<u64> = seen
        .served
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect();
    eprintln!(
        "{} redirects, {} creates, {} updates, {} deletes, {} failures, {} requests sent \
         again after 503 storage_unavailable",
        served.iter().sum::<u64>(),
        seen.creates.load(Ordering::Relaxed),
        seen.updates.load(Ordering::Relaxed),
        seen.deleted.lock().unwrap().len(),
        failures.len(),
        setup.retried.load(Ordering::Relaxed)
    );
    if !failures.is_empty() {
        let logs: Vec<String> = controls
            .iter()
            .chain(proxies.iter())
            .map(Process::notable)
            .collect();
        panic!(
            "{} failed, the first:\n{}\nlogs:\n{}",
            failures.len(),
            failures[..failures.len().min(20)].join("\n"),
            logs.join("\n")
        );
    }

    // Every link created or changed, the one created while the node was down included, is
    // served as last written by both proxies and by a proxy started after the return.
    let late = setup.start("proxy", "proxy-3", free_port()).await;
    let mut written = seen.written.lock().unwrap().clone();
    written.push((down.clone(), down_url.to_owned()));
    let deleted = seen.deleted.lock().unwrap().clone();
    for proxy in proxies.iter().chain([&late]) {
        for (code, url) in &written {
            setup
                .wait_served(proxy, code, url, Duration::from_secs(2))
                .await;
        }
        for code in &deleted {
            setup.wait_gone(proxy, code, Duration::from_secs(2)).await;
        }
    }

    // Every redirect counted once, read through either control plane: counts written
    // through the killed node are sent again (absolute values per writer, repeatable) and
    // no batch is left uncertain.
    let served_sum: u64 = served.iter().sum();
    for proxy in proxies.iter().chain([&late]) {
        setup.wait_shipped(proxy, Duration::from_secs(120)).await;
    }
    let mut totals = Vec::new();
    for (code, _) in hammered.iter() {
        totals.push(setup.total(&controls[0], code).await);
    }
    let mut uncertain = 0;
    for control in controls.iter() {
        uncertain += setup
            .metric(control, "shortlink_clicks_uncertain_total")
            .await;
    }
    eprintln!(
        "counted {} of {served_sum} clicks; {uncertain} in batches left uncertain",
        totals.iter().sum::<u64>()
    );
    // How the kill met the count writes: rounds whose writes this process sent again (the
    // driver's own retries and speculative attempts are not counted here).
    for control in controls.iter() {
        let log = control.plane.log_text();
        let again = log.lines().filter(|l| l.contains("count writes")).count();
        eprintln!(
            "{}: {again} rounds with count writes sent again",
            control.url
        );
    }
    for (((code, _), want), got) in hammered.iter().zip(&served).zip(&totals) {
        assert!(
            got <= want,
            "{code}: {got} clicks counted for {want} redirects"
        );
        assert_eq!(
            setup.total(&controls[1], code).await,
            *got,
            "clicks of {code} through the other control plane"
        );
    }
    if totals.iter().sum::<u64>() != served_sum || uncertain != 0 {
        let mut seen = String::new();
        for process in controls.iter().chain(proxies.iter()).chain([&late]) {
            let text = setup.metrics_text(process).await;
            let clicks = text
                .lines()
                .filter(|l| l.starts_with("shortlink_click") && !l.contains("_bucket"));
            seen.push_str(&process.notable());
            seen.push('\n');
            for line in clicks {
                seen.push_str(line);
                seen.push('\n');
            }
        }
        panic!(
            "{served_sum} redirects, {} counted, {uncertain} uncertain:\n{seen}",
            totals.iter().sum::<u64>()
        );
    }
    for process in controls.iter().chain(proxies.iter()) {
        assert!(
            !process.plane.log_text().contains("panicked"),
            "{}",
            process.plane.log_text()
        );
    }
}
