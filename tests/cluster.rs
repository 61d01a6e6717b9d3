//! Scale-out on a real CQL server (Cassandra 5, started by scripts/test.sh) and a real S3
//! server (s3s-fs): two `shortlink proxy` and two `shortlink control` processes share one
//! keyspace, as `configs/cluster.toml` describes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::load::{Tally, redirect_client};
use common::receiver::{Mode, Receiver};
use common::{ADMIN_KEY, BUCKET, INTERNAL_SECRET, S3_KEY, S3_SECRET, S3Server, binary, free_port};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the issue promises: a change on one control plane reaches every proxy within 1 s.
const PROPAGATION: Duration = Duration::from_secs(1);

fn cql_nodes() -> String {
    std::env::var("CQL_TEST_NODES").unwrap_or_else(|_| {
        panic!(
            "CQL_TEST_NODES is not set: these tests need a CQL server. Run scripts/test.sh \
             (it installs and starts Cassandra), or start one and set CQL_TEST_NODES=127.0.0.1:9042"
        )
    })
}

/// One keyspace, one S3 bucket, and the config every node of the cluster shares.
struct Cluster {
    dir: tempfile::TempDir,
    keyspace: String,
    s3: S3Server,
    controls: Vec<u16>,
    http: reqwest::Client,
    /// `proxy.click_lease_seconds` of every proxy.
    lease_seconds: u64,
    /// Lines added to `[store.cql]`.
    cql_extra: String,
}

/// A `shortlink` process of the cluster.
struct Node {
    child: Option<Child>,
    log: PathBuf,
    url: String,
}

impl Cluster {
    async fn new(name: &str, controls: usize) -> Cluster {
        Cluster::with_leases(name, controls, 10).await
    }

    /// A cluster whose proxies lease capped links' clicks for `lease_seconds`.
    async fn with_leases(name: &str, controls: usize, lease_seconds: u64) -> Cluster {
        Cluster::build(name, controls, lease_seconds, String::new()).await
    }

    /// A cluster whose every node has `cql_extra` in its `[store.cql]`, after `migrate`.
    async fn build(name: &str, controls: usize, lease_seconds: u64, cql_extra: String) -> Cluster {
        let cluster = Cluster {
            lease_seconds,
            cql_extra,
            dir: tempfile::tempdir().unwrap(),
            keyspace: format!("sl_{name}_{:08x}", rand::random::<u32>()),
            s3: S3Server::start().await,
            controls: (0..controls).map(|_| free_port()).collect(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let out = Command::new(binary())
            .args([
                "--config",
                cluster.config(0, 0).to_str().unwrap(),
                "migrate",
            ])
            .output()
            .expect("run shortlink migrate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "migrate failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("migration 1 applied"), "{stdout}");
        // The keyspace's replication is said, whether chosen or configured.
        assert!(
            stdout.contains(&format!("keyspace {}: created, ", cluster.keyspace))
                && stdout.contains("; replication {'class': "),
            "{stdout}"
        );
        // Not a terminal: whole lines, no progress rewritten in place.
        assert!(!stdout.contains('\r'), "{stdout:?}");
        cluster
    }

    /// Writes the config of a node listening on these ports; returns its path.
    fn config(&self, proxy_port: u16, control_port: u16) -> PathBuf {
        let upstreams: Vec<String> = self
            .controls
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let data = self
            .dir
            .path()
            .join(format!("node-{proxy_port}-{control_port}"));
        let text = format!(
            r#"
data_dir = "{data}"
admin_key = "{ADMIN_KEY}"
internal_secret = "{INTERNAL_SECRET}"
log = "info,pingora_load_balancing=error,scylla=warn"
public_url = "http://sho.rt"

[store]
engine = "cql"

[store.cql]
nodes = ["{nodes}"]
keyspace = "{keyspace}"
settle_ms = 300
{cql_extra}

[proxy]
listen = "127.0.0.1:{proxy_port}"
control_upstreams = [{upstreams}]
sync_poll_ms = 100
bulk_load_page = 1000
click_batch_ms = 100
click_lease_seconds = {lease_seconds}
health_check_seconds = 1
grace_period_seconds = 1
shutdown_timeout_seconds = 1
metrics_listen = "127.0.0.1:{metrics}"

[proxy.tls]
listen = "127.0.0.1:{tls}"
reload_seconds = 1

[control]
listen = "127.0.0.1:{control_port}"
events_poll_ms = 100
writes_per_minute = 1000000
write_burst = 100000

[control.webhooks]
allowed_networks = ["127.0.0.0/8"]
timeout_ms = 2000
lease_seconds = 5

[objects]
backend = "s3"

[objects.s3]
endpoint = "http://127.0.0.1:{s3}"
bucket = "{BUCKET}"
access_key_id = "{S3_KEY}"
secret_access_key = "{S3_SECRET}"
"#,
            data = data.display(),
            nodes = cql_nodes(),
            keyspace = self.keyspace,
            upstreams = upstreams.join(", "),
            metrics = free_port(),
            tls = free_port(),
            s3 = self.s3.port,
            lease_seconds = self.lease_seconds,
            cql_extra = self.cql_extra,
        );
        let path = data.with_extension("toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn metrics_port(config: &Path) -> u16 {
        let text = std::fs::read_to_string(config).unwrap();
        Cluster::port_of(&text, "metrics_listen = ")
    }

    /// The port of the TLS listener in a node's config.
    fn tls_port(config: &Path) -> u16 {
        let text = std::fs::read_to_string(config).unwrap();
        Cluster::port_of(&text[text.find("[proxy.tls]").unwrap()..], "listen = ")
    }

    /// The port of the first address setting starting with `prefix` in `text`.
    fn port_of(text: &str, prefix: &str) -> u16 {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap();
        line.trim_end_matches('"')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Starts control plane `i` and waits until it is ready.
    async fn control(&self, i: usize) -> Node {
        let port = self.controls[i];
        let config = self.config(free_port(), port);
        let mut node = Node::start(&config, "control", format!("http://127.0.0.1:{port}"));
        node.wait_ready(&self.http).await;
        node
    }

    /// Starts a proxy; returns it with its metrics port, once it reports ready.
    async fn proxy(&self) -> (Node, u16) {
        let port = free_port();
        let config = self.config(port, free_port());
        let metrics = Cluster::metrics_port(&config);
        let mut node = Node::start(&config, "proxy", format!("http://127.0.0.1:{port}"));
        node.wait_ready(&self.http).await;
        (node, metrics)
    }

    fn api(&self, control: &Node, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", control.url))
            .bearer_auth(ADMIN_KEY)
    }

    /// Creates a link (`body`) through `control` as admin; its code.
    async fn create(&self, control: &Node, body: Value) -> String {
        let r = self
            .api(control, Method::POST, "/api/v1/links")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// GETs `path` from `control` as admin and parses the JSON body.
    async fn get_json(&self, control: &Node, path: &str) -> Value {
        self.api(control, Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The state of `name`'s certificate in `GET /api/v1/domains` (`""` when none).
    async fn certificate_state(&self, control: &Node, name: &str) -> String {
        let list = self.get_json(control, "/api/v1/domains").await;
        let certificate = common::domain_certificate(&list, name);
        certificate["state"].as_str().unwrap_or_default().to_owned()
    }

    /// The value of the metric `name` (with its labels, as exposed) on the metrics port
    /// `port`.
    async fn metric(&self, port: u16, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// The click total of `code` in its stats, read through `control`.
    async fn total_clicks(&self, control: &Node, code: &str) -> u64 {
        let stats = self
            .get_json(control, &format!("/api/v1/links/{code}/stats"))
            .await;
        stats["total"].as_u64().unwrap()
    }

    /// Waits until `proxy` answers `/code` with `status` (and `location`, when given);
    /// returns how long that took.
    async fn wait_redirect(
        &self,
        proxy: &Node,
        code: &str,
        status: u16,
        location: Option<&str>,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let r = self
                .http
                .get(format!("{}/{code}", proxy.url))
                .send()
                .await
                .unwrap();
            let got = r.status().as_u16();
            let loc = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            if got == status && (location.is_none() || loc.as_deref() == location) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{}/{code} answered {got} {loc:?}, not {status} {location:?}, within {within:?}",
                proxy.url
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Node {
    fn start(config: &Path, plane: &str, url: String) -> Node {
        let log = config.with_extension(format!("{plane}.log"));
        let child = Command::new(binary())
            .args(["--config", config.to_str().unwrap(), plane])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start a node");
        Node {
            child: Some(child),
            log,
            url,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    self.url,
                    self.log_text()
                );
            }
            if http
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within 60 s; log:\n{}",
                self.url,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads an SSE stream until a message's data contains `needle`.
async fn sse_until(response: reqwest::Response, needle: &str, within: Duration) -> Value {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let deadline = Instant::now() + within;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && data.contains(needle)
                {
                    return serde_json::from_str(data.trim()).unwrap();
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no event with {needle} within {within:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_and_two_control_planes_share_one_cluster() {
    let cluster = Cluster::new("two", 2).await;
    let a = cluster.control(0).await;
    let b = cluster.control(1).await;
    let (p1, _) = cluster.proxy().await;
    let (p2, _) = cluster.proxy().await;

    // An SSE subscriber on B hears about a link created through A.
    let sse = cluster
        .api(&b, Method::GET, "/api/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    let r = cluster
        .api(&a, Method::POST, "/api/v1/links")
        .json(&json!({"url": "https://one.example/", "alias": "spread"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut lags = Vec::new();
    for proxy in [&p1, &p2] {
        lags.push(
            cluster
                .wait_redirect(
                    proxy,
                    "spread",
                    301,
                    Some("https://one.example/"),
                    PROPAGATION,
                )
                .await,
        );
    }
    let event = sse_until(sse, "spread", Duration::from_secs(5)).await;
    assert_eq!(event["type"], "link.created", "{event}");

    // A change through B reaches both proxies.
    let r = cluster
        .api(&b, Method::PATCH, "/api/v1/links/spread")
        .json(&json!({"url": "https://two.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for proxy in [&p1, &p2] {
        lags.push(
            cluster
                .wait_redirect(
                    proxy,
                    "spread",
                    301,
                    Some("https://two.example/"),
                    PROPAGATION,
                )
                .await,
        );
    }

    // Clicks through both proxies are counted once, read from B.
    let r = cluster
        .api(&a, Method::POST, "/api/v1/links")
        .json(&json!({"url": "https://clicks.example/", "alias": "counted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for proxy in [&p1, &p2] {
        cluster
            .wait_redirect(proxy, "counted", 301, None, PROPAGATION)
            .await;
    }
    // Each proxy has followed it once already above.
    for (proxy, n) in [(&p1, 29), (&p2, 19)] {
        for _ in 0..n {
            let r = cluster
                .http
                .get(format!("{}/counted", proxy.url))
                .header(
                    "user-agent",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 301);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = loop {
        let total = cluster.total_clicks(&b, "counted").await;
        if total >= 50 || Instant::now() > deadline {
            break total;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(total, 50, "every click through either proxy, counted once");
    // Nothing is counted twice later (a retried or replayed batch).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.total_clicks(&a, "counted").await, 50);

    // A file uploaded through A is served by B, from S3.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let part = reqwest::multipart::Part::bytes(bytes.clone())
        .file_name("data.bin")
        .mime_str("application/octet-stream")
        .unwrap();
    let r = cluster
        .api(&a, Method::POST, "/api/v1/uploads")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let upload: Value = r.json().await.unwrap();
    let id = upload["id"].as_str().unwrap();
    let r = cluster
        .api(&b, Method::GET, &format!("/f/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        307,
        "S3 objects are served by a presigned redirect"
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = cluster.http.get(location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // A delete through A reaches both proxies.
    let r = cluster
        .api(&a, Method::DELETE, "/api/v1/links/spread")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for proxy in [&p1, &p2] {
        lags.push(
            cluster
                .wait_redirect(proxy, "spread", 404, None, PROPAGATION)
                .await,
        );
    }
    eprintln!("propagation lags: {lags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_after_10k_links_loads_them_all_before_ready() {
    let cluster = Cluster::new("load", 1).await;
    let a = cluster.control(0).await;
    let created = futures_util::stream::iter(0..10_000u32)
        .map(|i| {
            cluster
                .api(&a, Method::POST, "/api/v1/links")
                .json(&json!({"url": format!("https://load.example/{i}"), "alias": format!("load{i}")}))
                .send()
        })
        .buffer_unordered(32)
        .filter(|r| std::future::ready(r.as_ref().is_ok_and(|r| r.status() == 201)))
        .count()
        .await;
    assert_eq!(created, 10_000);
    let started = Instant::now();
    let (proxy, metrics) = cluster.proxy().await;
    let load = started.elapsed();
    // Ready means loaded: the table holds every link before any is requested.
    let routes = cluster.metric(metrics, "shortlink_route_table_links").await;
    assert!(routes >= 10_000.0, "{routes} routes loaded at ready");
    for i in [0, 4_999, 9_999] {
        let location = format!("https://load.example/{i}");
        cluster
            .wait_redirect(
                &proxy,
                &format!("load{i}"),
                301,
                Some(&location),
                Duration::ZERO,
            )
            .await;
    }
    eprintln!("10 000 links: proxy ready after {load:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_control_plane_is_refused_everywhere_at_once() {
    let cluster = Cluster::new("keys", 2).await;
    let a = cluster.control(0).await;
    let b = cluster.control(1).await;
    let (proxy, _) = cluster.proxy().await;
    let r = cluster
        .api(&a, Method::POST, "/api/v1/users")
        .json(&json!({"name": "erin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = cluster
        .api(&a, Method::POST, "/api/v1/keys")
        .json(&json!({"user": "erin", "label": "ci", "scopes": ["read", "links"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let status_on = |base: String, key: String| {
        let http = cluster.http.clone();
        async move {
            http.get(format!("{base}/api/v1/links"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let planes = [a.url.clone(), b.url.clone(), proxy.url.clone()];
    for base in &planes {
        assert_eq!(status_on(base.clone(), key.clone()).await, 200, "{base}");
    }
    // Listed on B (scopes and prefix, no key), revoked on B.
    let keys: Value = cluster.get_json(&b, "/api/v1/keys?user=erin").await;
    assert_eq!(keys["items"][0]["scopes"], json!(["read", "links"]));
    assert!(!keys.to_string().contains(&key));
    let r = cluster
        .api(&b, Method::DELETE, &format!("/api/v1/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for base in &planes {
        assert_eq!(
            status_on(base.clone(), key.clone()).await,
            401,
            "refused at once through {base}"
        );
    }
    // A disabled user is refused on both planes too, and enabled again.
    let second = cluster
        .api(&a, Method::POST, "/api/v1/keys")
        .json(&json!({"user": "erin"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for disabled in [true, false] {
        let r = cluster
            .api(&a, Method::PATCH, "/api/v1/users/erin")
            .json(&json!({"disabled": disabled}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let want = if disabled { 401 } else { 200 };
        for base in &planes {
            assert_eq!(
                status_on(base.clone(), second.clone()).await,
                want,
                "{base}"
            );
        }
    }
    let audit: Value = cluster.get_json(&b, "/api/v1/audit").await;
    let actions = audit.to_string();
    for action in ["key.revoke", "user.disable", "user.enable", "key.create"] {
        assert!(actions.contains(action), "{action}: {actions}");
    }
}

/// Kept-alive clients (`per_proxy` on each proxy) asking for `code` as fast as they are
/// answered, until `stop`; what they saw.
fn hammer(
    proxies: &[&Node],
    code: &str,
    per_proxy: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<(Arc<Tally>, Vec<tokio::task::JoinHandle<()>>)> {
    proxies
        .iter()
        .map(|proxy| {
            let tally = Arc::new(Tally::default());
            let addr = proxy.url.trim_start_matches("http://").to_owned();
            let clients = (0..per_proxy)
                .map(|_| {
                    tokio::spawn(redirect_client(
                        addr.clone(),
                        code.to_owned(),
                        stop.clone(),
                        tally.clone(),
                    ))
                })
                .collect();
            (tally, clients)
        })
        .collect()
}

/// Creates a link capped at `max_clicks` through `control` and waits until each proxy
/// has answered it once (a click each).
async fn capped_link(
    cluster: &Cluster,
    control: &Node,
    proxies: &[&Node],
    max_clicks: u64,
) -> String {
    let code = cluster
        .create(
            control,
            json!({"url": "https://capped.example/", "max_clicks": max_clicks}),
        )
        .await;
    for proxy in proxies {
        cluster
            .wait_redirect(proxy, &code, 301, None, PROPAGATION)
            .await;
    }
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_at_full_speed_serve_a_50_click_link_exactly_50_times() {
    let cluster = Cluster::new("cap", 1).await;
    let control = cluster.control(0).await;
    let (p1, _) = cluster.proxy().await;
    let (p2, _) = cluster.proxy().await;
    let code = capped_link(&cluster, &control, &[&p1, &p2], 50).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(&[&p1, &p2], &code, 4, &stop);
    let served = || {
        load.iter()
            .map(|(t, _)| t.redirects.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let gone = || {
        load.iter()
            .map(|(t, _)| t.gone.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    // Until the 48 left are served (or 20 s), then on for the lease's idle return and
    // the exhaustion pause to pass twice: any click held back would show up by then.
    let deadline = Instant::now() + Duration::from_secs(20);
    while served() < 48 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full_at = Instant::now();
    let gone_then = gone();
    while full_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let gone_end = gone();
    let mut per_proxy = Vec::new();
    for (tally, clients) in load {
        for client in clients {
            client.await.unwrap();
        }
        assert!(
            tally.failures().is_empty(),
            "{:?}",
            &tally.failures()[..5.min(tally.failures().len())]
        );
        per_proxy.push(tally.redirects.load(Ordering::Relaxed));
    }
    let total: u64 = per_proxy.iter().sum::<u64>() + 2;
    eprintln!(
        "redirects per proxy {per_proxy:?} (+1 each before the load), 410s: {} at the 50th, {} at the end",
        gone_then, gone_end
    );
    assert_eq!(
        total, 50,
        "exactly max_clicks redirects across both proxies"
    );
    assert!(
        gone_end > 1_000,
        "the load went on past the limit: {gone_end} 410s"
    );
    // The control plane counts the same 50.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.total_clicks(&control, &code).await < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.total_clicks(&control, &code).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxys_lease_returns_to_the_link() {
    let cluster = Cluster::with_leases("capkill", 1, 2).await;
    let control = cluster.control(0).await;
    let (mut p1, p1_metrics) = cluster.proxy().await;
    let (p2, _) = cluster.proxy().await;
    // p1 answers first and leases a quarter of the 50 (13); p2 then leases from the 37 left.
    let code = capped_link(&cluster, &control, &[&p1, &p2], 50).await;
    for _ in 0..4 {
        cluster
            .wait_redirect(&p1, &code, 301, None, Duration::ZERO)
            .await;
    }
    // Killed holding 8 of its 13 unanswered, once it has reported the 5 it answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster
        .metric(p1_metrics, "shortlink_click_lease_unreported")
        .await
        != 0.0
    {
        assert!(Instant::now() < deadline, "p1 never reported its clicks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(mut child) = p1.child.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let killed_at = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let load = hammer(&[&p2], &code, 2, &stop);
    let tally = &load[0].0;
    // Without the reclaim p2 would stop at 36 more; with it, the 8 come back once p1's
    // lease has expired (2 s) and the grace for clock skew (5 s) has passed: 50 in all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.redirects.load(Ordering::Relaxed) < 36 + 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = killed_at.elapsed();
    // Then on for a while: nothing more may come.
    let settled = Instant::now();
    while settled.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let served = tally.redirects.load(Ordering::Relaxed);
    eprintln!("after the kill p2 served {served}; the last of them {back_after:?} after it");
    assert!(
        tally.failures().is_empty(),
        "{:?}",
        tally.failures().first()
    );
    assert_eq!(
        served, 44,
        "after the kill p2 served the 36 left and the killed proxy's 8 unused"
    );
    assert!(
        back_after >= Duration::from_secs(2),
        "not before the lease expired"
    );
    for (_, clients) in load {
        for client in clients {
            client.await.unwrap();
        }
    }
}

/// Two control planes on one keyspace both follow the event feed and both see the
/// endpoint: its lease lets only one deliver, so each event arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_stored_once_is_served_by_every_proxy() {
    let cluster = Cluster::new("certs", 1).await;
    let _control = cluster.control(0).await;
    let mut tls_ports = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let config = cluster.config(port, free_port());
        tls_ports.push(Cluster::tls_port(&config));
        let mut node = Node::start(&config, "proxy", format!("http://127.0.0.1:{port}"));
        node.wait_ready(&cluster.http).await;
        proxies.push(node);
    }
    let ca = common::tls::Ca::new(cluster.dir.path(), "cluster");
    let (cert, key) = (
        cluster.dir.path().join("sho.pem"),
        cluster.dir.path().join("sho.key"),
    );
    ca.issue(&["sho.rt"], &cert, &key);
    let out = Command::new(binary())
        .args([
            "--config",
            cluster.config(0, 0).to_str().unwrap(),
            "cert",
            "import",
        ])
        .args([
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .output()
        .expect("run shortlink cert import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Imported once, through the store: every proxy serves it within its reload interval.
    for port in tls_ports {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(seen) = ca.get("sho.rt", port, "/readyz", &["--http2"]) {
                assert_eq!((seen.version.as_str(), seen.status), ("2", 200));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy on {port} never served it"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Two proxies with ACME on one keyspace: each name is ordered once (a lease in the store),
/// the CA's HTTP-01 check reaches one proxy whichever ordered (the answer is in the
/// store), and both serve the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_certificate_is_ordered_once_and_served_by_every_proxy() {
    let cluster = Cluster::new("acme", 1).await;
    let control = cluster.control(0).await;
    let r = cluster
        .api(&control, Method::POST, "/api/v1/domains")
        .json(&json!({"name": "go.brand.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ports = [free_port(), free_port()];
    let configs: Vec<PathBuf> = ports
        .iter()
        .map(|&port| cluster.config(port, free_port()))
        .collect();
    let tls_ports: Vec<u16> = configs.iter().map(|c| Cluster::tls_port(c)).collect();
    // The CA checks the second proxy's ports only. The first starts alone: its orders
    // fail (nothing answers there yet) and wait 10 s; the second starts meanwhile and
    // checks once an hour, so its first check, at start, finds both names waiting out
    // their backoff. The first's retries then succeed through the second.
    let pebble =
        common::acme::Pebble::start(cluster.dir.path(), ports[1], tls_ports[1], 3600).await;
    let acme = [
        pebble
            .acme_config("http-01")
            .replace("retry_min_seconds = 2", "retry_min_seconds = 10")
            .replace("retry_max_seconds = 4", "retry_max_seconds = 10"),
        pebble
            .acme_config("http-01")
            .replace("check_seconds = 1", "check_seconds = 3600"),
    ];
    let mut proxies = Vec::new();
    for (i, (config, port)) in configs.iter().zip(ports).enumerate() {
        let mut text = std::fs::read_to_string(config).unwrap();
        text.push_str(&acme[i]);
        std::fs::write(config, text).unwrap();
        let mut node = Node::start(config, "proxy", format!("http://127.0.0.1:{port}"));
        node.wait_ready(&cluster.http).await;
        proxies.push(node);
        if i == 0 {
            for name in ["sho.rt", "go.brand.test"] {
                let deadline = Instant::now() + Duration::from_secs(30);
                while cluster.certificate_state(&control, name).await != "failed" {
                    assert!(
                        Instant::now() < deadline,
                        "{name}: the first order never failed"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    for name in ["sho.rt", "go.brand.test"] {
        let mut served = Vec::new();
        for &port in &tls_ports {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(cert) =
                    common::tls::served_certificate(&pebble.issuing_root, name, port).await
                {
                    served.push(cert);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the proxy on {port} never served {name}\n{}\n{}\n{}",
                    proxies[0].log_text(),
                    proxies[1].log_text(),
                    pebble.log_text()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert_eq!(
            served[0], served[1],
            "{name}: both proxies serve one certificate"
        );
    }
    let count = |i: usize, metric: &'static str| {
        let port = Cluster::metrics_port(&configs[i]);
        let cluster = &cluster;
        async move { cluster.metric(port, metric).await }
    };
    let issued = "shortlink_acme_orders_total{result=\"issued\"}";
    assert_eq!(
        count(0, issued).await,
        2.0,
        "the first proxy ordered both names"
    );
    assert_eq!(count(1, issued).await, 0.0, "the second ordered nothing");
    assert!(
        count(
            1,
            "shortlink_acme_challenges_answered_total{type=\"http-01\"}"
        )
        .await
            >= 2.0,
        "the second answered the CA's checks from the store"
    );
    let domains = cluster.get_json(&control, "/api/v1/domains").await;
    assert_eq!(domains["default_domain"]["certificate"]["state"], "issued");
    assert_eq!(domains["items"][0]["certificate"]["state"], "issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_deliver_each_webhook_event_once() {
    let cluster = Cluster::new("hooks", 2).await;
    let a = cluster.control(0).await;
    let b = cluster.control(1).await;
    let receiver = Receiver::start(Mode::Status(200)).await;
    let r = cluster
        .api(&a, Method::POST, "/api/v1/webhooks")
        .json(&json!({"url": receiver.url, "events": ["link.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    const LINKS: usize = 40;
    for i in 0..LINKS {
        let plane = if i % 2 == 0 { &a } else { &b };
        let r = cluster
            .api(plane, Method::POST, "/api/v1/links")
            .json(&json!({"url": format!("https://example.com/{i}"), "alias": format!("hook-{i:02}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let got = receiver
        .wait_until("every event", Duration::from_secs(60), |got| {
            got.len() >= LINKS
        })
        .await;
    let ids: Vec<i64> = got
        .iter()
        .map(|r| {
            standardwebhooks::Webhook::new(&secret)
                .unwrap()
                .verify(r.body.as_bytes(), &r.headers)
                .unwrap();
            r.json()["id"].as_i64().unwrap()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), LINKS, "each event once: {ids:?}");
    assert_eq!(ids, sorted, "in the order of the event log");
    // One more event, created after all of those were delivered, arrives next: nothing
    // was delivered twice before it.
    let r = cluster
        .api(&b, Method::POST, "/api/v1/links")
        .json(&json!({"url": "https://example.com/last", "alias": "hook-last"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = receiver
        .wait_until("the last event", Duration::from_secs(30), |got| {
            got.iter().any(|r| r.json()["data"]["code"] == "hook-last")
        })
        .await;
    assert_eq!(got.len(), LINKS + 1, "no duplicates");
    let _ = (a, b);
}

/// `configs/cluster.toml`, unchanged, against one node (datacenter `datacenter1`): `migrate`
/// names what the node lacks instead of failing in the driver, first the datacenter to
/// prefer, then the replication; `auto` replication says what it chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_toml_on_one_node_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, INTERNAL_SECRET).unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, ADMIN_KEY).unwrap();
    let keyspace = format!("sl_toml_{:08x}", rand::random::<u32>());
    let migrate = |extra: &[(&str, &str)]| {
        let mut command = Command::new(binary());
        command
            .args([
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/configs/cluster.toml"),
                "migrate",
            ])
            .env("SHORTLINK_DATA_DIR", dir.path())
            .env("SHORTLINK_INTERNAL_SECRET_FILE", &secret)
            .env("SHORTLINK_ADMIN_KEY_FILE", &admin)
            .env("SHORTLINK_STORE__CQL__NODES", cql_nodes())
            .env("SHORTLINK_STORE__CQL__KEYSPACE", &keyspace)
            .env("SHORTLINK_LOG", "warn");
        for (key, value) in extra {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = migrate(&[]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "store.cql.local_datacenter 'dc1' is not a datacenter of this cluster \
             (datacenter1: 1 node)"
        ),
        "{stderr}"
    );
    // Said once, without the driver's own errors.
    assert_eq!(stderr.matches("'dc1'").count(), 1, "{stderr}");
    let (ok, _, stderr) = migrate(&[("SHORTLINK_STORE__CQL__LOCAL_DATACENTER", "datacenter1")]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "store.cql.replication: replication {'class': 'NetworkTopologyStrategy', \
             'dc1': 3} names datacenter 'dc1', which this cluster does not have"
        ),
        "{stderr}"
    );
    let (ok, stdout, stderr) = migrate(&[
        ("SHORTLINK_STORE__CQL__LOCAL_DATACENTER", "datacenter1"),
        ("SHORTLINK_STORE__CQL__REPLICATION", "auto"),
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "keyspace {keyspace}: created, chosen from the nodes seen (datacenter1: 1 node); \
             set store.cql.replication to choose; replication \
             {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"
        )),
        "{stdout}"
    );
    // Again: the keyspace exists, and says so.
    let (ok, stdout, _) = migrate(&[("SHORTLINK_STORE__CQL__LOCAL_DATACENTER", "datacenter1")]);
    assert!(ok);
    assert!(
        stdout.contains(&format!(
            "keyspace {keyspace}: existed (nodes seen: datacenter1: 1 node)"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("up to date"), "{stdout}");
}

/// A SimpleStrategy keyspace with a datacenter to prefer: the driver used to warn on every
/// request (thousands of lines an hour); with one datacenter there is nothing to prefer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preferred_datacenter_on_a_simple_keyspace_logs_no_driver_warnings() {
    let cluster = Cluster::build(
        "simple",
        1,
        10,
        "replication = \"{'class': 'SimpleStrategy', 'replication_factor': 1}\"\n\
         local_datacenter = \"datacenter1\""
            .into(),
    )
    .await;
    let control = cluster.control(0).await;
    let (proxy, _) = cluster.proxy().await;
    for i in 0..20 {
        let code = cluster
            .create(&control, json!({"url": format!("https://example.com/{i}")}))
            .await;
        cluster
            .wait_redirect(&proxy, &code, 301, None, PROPAGATION)
            .await;
    }
    for node in [&control, &proxy] {
        let log = node.log_text();
        assert!(
            !log.contains("SimpleStrategy") && !log.contains("does not exist"),
            "{log}"
        );
    }
}
