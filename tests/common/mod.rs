//! Starts the real `shortlink` binary on free loopback ports with a temporary data folder,
//! and talks to it over real sockets.

#![allow(dead_code, unreachable_pub)]

pub mod acme;
pub mod load;
pub mod raw;
pub mod receiver;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "sl_test_admin_key_0123456789abcdef";

/// A free loopback port for a server under test, never handed out before in this test
/// process. Ports come from below the kernel's ephemeral range (32768 and up here), so a
/// plane restarted on its old port cannot find it taken by some outgoing connection.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 20_000 + (rand_u16() % 12_000);
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u16
}

/// A running `shortlink serve`.
pub struct TestServer {
    child: Option<Child>,
    pub proxy: String,
    pub control: String,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    log: PathBuf,
    out: PathBuf,
    /// How the process was started, to start its successor (`upgrade`).
    launch: Launch,
    /// Readiness is the control plane's alone.
    control_ready_only: bool,
}

/// The environment and limits a server process is started with.
#[derive(Clone)]
struct Launch {
    env: Vec<(String, String)>,
    fd_limit: Option<u32>,
}

impl Launch {
    /// Starts `shortlink serve` with `extra` arguments, its output into `out` and `log`.
    fn spawn(&self, extra: &[&str], out: &Path, log: &Path) -> Child {
        let mut command = match self.fd_limit {
            None => Command::new(binary()),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary());
                sh
            }
        };
        command
            .arg("serve")
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).expect("stdout file"))
            .stderr(std::fs::File::create(log).expect("log file"));
        command.spawn().expect("start the shortlink binary")
    }
}

/// Options for starting a server.
pub struct Options {
    pub env: Vec<(String, String)>,
    pub admin_key: Option<String>,
    pub data: Option<PathBuf>,
    /// Run under this open-file limit (soft and hard), set by the shell that starts it.
    pub fd_limit: Option<u32>,
    /// Wait only for the control plane's `/readyz` (the proxy's port needs a PROXY
    /// protocol header first).
    pub control_ready_only: bool,
    /// The proxy's port (default: a free one), for a peer that must know it first.
    pub proxy_port: Option<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: vec![
                // Generous limits so tests do not trip each other; limit tests lower them.
                (
                    "SHORTLINK_CONTROL__WRITES_PER_MINUTE".into(),
                    "100000".into(),
                ),
                ("SHORTLINK_CONTROL__WRITE_BURST".into(), "10000".into()),
                (
                    "SHORTLINK_PROXY__NOT_FOUND_PER_IP_PER_MINUTE".into(),
                    "100000".into(),
                ),
            ],
            admin_key: Some(ADMIN_KEY.into()),
            data: None,
            fd_limit: None,
            control_ready_only: false,
            proxy_port: None,
        }
    }
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_shortlink")
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let (dir, data) = match options.data {
            Some(data) => (None, data),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let data = dir.path().join("data");
                (Some(dir), data)
            }
        };
        let proxy_port = options.proxy_port.unwrap_or_else(free_port);
        let control_port = free_port();
        let log = data.with_extension(format!("{proxy_port}.log"));
        let out = data.with_extension(format!("{proxy_port}.out"));
        let mut env: Vec<(String, String)> = [
            ("SHORTLINK_DATA_DIR", data.display().to_string()),
            ("SHORTLINK_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}")),
            (
                "SHORTLINK_CONTROL_LISTEN",
                format!("127.0.0.1:{control_port}"),
            ),
            ("SHORTLINK_PROXY__THREADS", "2".into()),
            ("SHORTLINK_PROXY__GRACE_PERIOD_SECONDS", "1".into()),
            ("SHORTLINK_PROXY__SHUTDOWN_TIMEOUT_SECONDS", "1".into()),
            ("SHORTLINK_PROXY__CLICK_BATCH_MS", "50".into()),
            ("SHORTLINK_LOG", "info,pingora_load_balancing=error".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(key) = &options.admin_key {
            env.push(("SHORTLINK_ADMIN_KEY".into(), key.clone()));
        }
        env.extend(options.env.iter().cloned());
        let launch = Launch {
            env,
            fd_limit: options.fd_limit,
        };
        let child = launch.spawn(&[], &out, &log);
        let mut server = TestServer {
            child: Some(child),
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            control: format!("http://127.0.0.1:{control_port}"),
            data,
            _dir: dir,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            log,
            out,
            launch,
            control_ready_only: options.control_ready_only,
        };
        server.wait_ready().await;
        server
    }

    /// Starts a server with `options` and one link to `url`, already answered 301 (that
    /// one redirect counts one click); returns the link's code.
    pub async fn start_with_link(options: Options, url: &str) -> (TestServer, String) {
        let server = TestServer::start_with(options).await;
        let (status, link) = server.create(ADMIN_KEY, json!({ "url": url })).await;
        assert_eq!(status, 201, "{link}");
        let code = link["code"].as_str().unwrap().to_owned();
        server.wait_status(&code, 301, Duration::from_secs(5)).await;
        (server, code)
    }

    /// Upgrades the running process as an operator would: starts `serve --upgrade` with
    /// the same settings, sends the running one SIGQUIT (it hands its listening sockets
    /// over, drains and exits), and waits for it to exit and for the new one to be ready,
    /// which is this server from then on. Returns the old process's exit status and log.
    pub async fn upgrade(&mut self) -> (ExitStatus, String) {
        let log = PathBuf::from(format!("{}.up", self.log.display()));
        let out = PathBuf::from(format!("{}.up", self.out.display()));
        let successor = self.launch.spawn(&["--upgrade"], &out, &log);
        let mut old = self.child.replace(successor).expect("running");
        let status = Command::new("kill")
            .args(["-QUIT", &old.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = old.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = old.kill();
                panic!("the old process did not exit within 30 s of SIGQUIT");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let old_log = self.log_text();
        self.log = log;
        self.out = out;
        self.wait_ready().await;
        (status, old_log)
    }

    /// Waits until the proxy (routes loaded) and the control plane both answer `/readyz`.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A server that exited (say, its port was taken) must not let the test talk to
            // whatever else listens there.
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "shortlink exited early ({status}); log:\n{}",
                    self.log_text()
                );
            }
            let mut ready = true;
            let bases = if self.control_ready_only {
                vec![&self.control]
            } else {
                vec![&self.proxy, &self.control]
            };
            for base in bases {
                ready &= self
                    .client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
            }
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "shortlink did not become ready in 30 s; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    /// Kills the process (SIGKILL: no shutdown at all) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Sends the process `signal` (`TERM`, `QUIT`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (up to 20 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("shortlink did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Keeps the temporary folder alive past this server (for restarts).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// A request to the API through the proxy port with `key`.
    pub fn api(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.proxy))
            .bearer_auth(key)
    }

    /// GETs `path` through the proxy as `key` and parses the JSON body.
    /// The value of the sample `name` (with its labels, if any, as exposed) in the
    /// control plane's `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.control))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        self.api(reqwest::Method::GET, path, key)
            .send()
            .await
            .expect("GET request")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Creates a link as `key`; returns (status, body).
    pub async fn create(&self, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .api(reqwest::Method::POST, "/api/v1/links", key)
            .json(&body)
            .send()
            .await
            .expect("create request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a user and a key for it as admin; returns the key.
    pub async fn new_user(&self, name: &str) -> String {
        let r = self
            .api(reqwest::Method::POST, "/api/v1/users", ADMIN_KEY)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create user {name}");
        let r = self
            .api(reqwest::Method::POST, "/api/v1/keys", ADMIN_KEY)
            .json(&json!({"user": name, "label": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "create key for {name}");
        let body: Value = r.json().await.unwrap();
        body["key"].as_str().unwrap().to_owned()
    }

    /// GETs `/{code}` on the proxy.
    pub async fn follow(&self, code: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/{code}", self.proxy))
            .send()
            .await
            .expect("proxy request")
    }

    /// `GET /{path}` on the proxy with extra request headers (`host`, `user-agent`, …).
    pub async fn follow_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(format!("{}/{path}", self.proxy));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("proxy request")
    }

    /// POSTs a link's password form (`password` already URL-encoded) to `/{path}` on the
    /// proxy, with extra request headers.
    pub async fn post_password(
        &self,
        path: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/{path}", self.proxy))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("password={password}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("proxy request")
    }

    /// Polls `/{code}` until its status is `want` or `within` passes; returns the last
    /// response and how long it took.
    pub async fn wait_status(
        &self,
        code: &str,
        want: u16,
        within: Duration,
    ) -> (reqwest::Response, Duration) {
        let start = Instant::now();
        loop {
            let r = self.follow(code).await;
            if r.status().as_u16() == want || start.elapsed() > within {
                return (r, start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response's status and its error envelope's code.
pub async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, error_code(&body).to_owned())
}

/// Asserts the error envelope's code and returns the message.
#[track_caller]
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error envelope: {body}"))
}

pub const INTERNAL_SECRET: &str = "internal-secret-for-tests";

/// One plane (`proxy` or `control`) running on its own, for split-process tests.
pub struct Plane {
    child: Option<Child>,
    log: PathBuf,
}

impl Plane {
    pub fn start(plane: &str, data: &Path, proxy_port: u16, control_port: u16) -> Plane {
        Plane::start_with(plane, data, (proxy_port, control_port), &[])
    }

    /// [`Plane::start`] with more environment (which overrides the defaults here).
    pub fn start_with(
        plane: &str,
        data: &Path,
        (proxy_port, control_port): (u16, u16),
        env: &[(&str, &str)],
    ) -> Plane {
        let log = data.with_extension(format!("{plane}-{}.log", free_port()));
        let mut command = Command::new(binary());
        command
            .arg(plane)
            .env("SHORTLINK_DATA_DIR", data)
            .env("SHORTLINK_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env(
                "SHORTLINK_CONTROL_LISTEN",
                format!("127.0.0.1:{control_port}"),
            )
            .env("SHORTLINK_ADMIN_KEY", ADMIN_KEY)
            .env("SHORTLINK_INTERNAL_SECRET", INTERNAL_SECRET)
            .env("SHORTLINK_PROXY__HEALTH_CHECK_SECONDS", "1")
            .env("SHORTLINK_PROXY__GRACE_PERIOD_SECONDS", "1")
            .env("SHORTLINK_PROXY__SHUTDOWN_TIMEOUT_SECONDS", "1")
            .env("SHORTLINK_PROXY__CLICK_BATCH_MS", "50")
            .env("SHORTLINK_CONTROL__WRITES_PER_MINUTE", "100000")
            .env("SHORTLINK_CONTROL__WRITE_BURST", "10000")
            .env("SHORTLINK_LOG", "info,pingora_load_balancing=error")
            .envs(env.iter().copied());
        Plane::spawn(command, log)
    }

    /// Runs `command` (the binary with its arguments and environment), its log in `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Plane {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start a plane");
        Plane {
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200, failing with this plane's log if it exits or hangs.
    pub async fn wait_ok(&mut self, client: &reqwest::Client, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("a plane exited early ({status}); log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer 200 within 30 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "a plane did not exit within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A redirect-off client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls a link's stats until `total` reaches `want` (or 15 s pass); returns the last body.
/// The count of `key` in a stats list like `referrers` (`[{key, count}]`), 0 if absent.
pub fn count_of(list: &Value, key: &str) -> u64 {
    list.as_array()
        .and_then(|items| items.iter().find(|i| i["key"] == key))
        .and_then(|i| i["count"].as_u64())
        .unwrap_or(0)
}

pub async fn wait_total(client: &reqwest::Client, base: &str, code: &str, want: u64) -> Value {
    wait_stat(client, base, code, "total", want).await
}

/// Polls a link's stats (up to 15 s) until the number `field` (`total`, `humans`, `bots`)
/// reaches `want`; returns the last stats seen.
pub async fn wait_stat(
    client: &reqwest::Client,
    base: &str,
    code: &str,
    field: &str,
    want: u64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body: Value = client
            .get(format!("{base}/api/v1/links/{code}/stats"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .unwrap_or(Value::Null);
        if body[field].as_u64() == Some(want) || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A data folder and a pair of ports for planes run apart (`proxy`, `control`).
pub struct Split {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub proxy_port: u16,
    pub control_port: u16,
    pub proxy_url: String,
    pub control_url: String,
    pub http: reqwest::Client,
}

impl Split {
    pub fn new() -> Split {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (proxy_port, control_port) = (free_port(), free_port());
        Split {
            _dir: dir,
            data,
            proxy_port,
            control_port,
            proxy_url: format!("http://127.0.0.1:{proxy_port}"),
            control_url: format!("http://127.0.0.1:{control_port}"),
            http: client(),
        }
    }

    /// Starts a plane and waits until it is ready.
    pub async fn start(&self, plane: &str) -> Plane {
        let mut started = Plane::start(plane, &self.data, self.proxy_port, self.control_port);
        let base = if plane == "proxy" {
            &self.proxy_url
        } else {
            &self.control_url
        };
        started.wait_ok(&self.http, &format!("{base}/readyz")).await;
        started
    }

    /// Creates a link as admin through the control plane; returns (status, body).
    pub async fn create(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/links", self.control_url))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the proxy until `/{code}` answers `want`, for at most `within`.
    pub async fn wait_status(&self, code: &str, want: u16, within: Duration) -> reqwest::Response {
        let deadline = Instant::now() + within;
        loop {
            let r = self
                .http
                .get(format!("{}/{code}", self.proxy_url))
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == want || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A real S3-compatible server (s3s-fs) on a free port, with a bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    /// The folder s3s-fs serves (a folder per bucket).
    pub root: tempfile::TempDir,
}

pub const S3_KEY: &str = "AKIASHORTLINKTEST";
pub const S3_SECRET: &str = "shortlink-test-secret-key-0123456789";
pub const BUCKET: &str = "uploads";

impl S3Server {
    pub async fn start() -> S3Server {
        let binary = std::env::var("S3S_FS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testinfra/s3s/bin/s3s-fs")
            });
        assert!(
            binary.exists(),
            "s3s-fs is not installed at {}: run ./scripts/test.sh (it installs it), or \
             cargo install s3s-fs@0.14.1 --locked --features binary --root target/testinfra/s3s",
            binary.display()
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        S3Server { child, port, root }
    }

    pub fn options(&self) -> Options {
        Options::default()
            .env("SHORTLINK_OBJECTS__BACKEND", "s3")
            .env(
                "SHORTLINK_OBJECTS__S3__ENDPOINT",
                &format!("http://127.0.0.1:{}", self.port),
            )
            .env("SHORTLINK_OBJECTS__S3__BUCKET", BUCKET)
            .env("SHORTLINK_OBJECTS__S3__ACCESS_KEY_ID", S3_KEY)
            .env("SHORTLINK_OBJECTS__S3__SECRET_ACCESS_KEY", S3_SECRET)
            .env("SHORTLINK_OBJECTS__S3__PART_SIZE", "5242880")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certificate entry a `GET /api/v1/domains` answer (`list`) shows for `name`: the
/// default domain's or a registered one's (`null` when none).
pub fn domain_certificate(list: &Value, name: &str) -> Value {
    if list["default_domain"]["name"] == name {
        return list["default_domain"]["certificate"].clone();
    }
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .map_or(Value::Null, |d| d["certificate"].clone())
}

/// The browser tests' folder (`tests/browser`, its npm packages installed) and the
/// chromium they drive (`CHROMIUM`, else Debian's): both installed by scripts/test.sh.
pub fn browser() -> (PathBuf, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && dir.join("node_modules/esbuild").exists(),
        "the browser tests' packages are not installed: run scripts/test.sh (npm ci in tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "chromium is not installed at {chromium}: run scripts/test.sh as root, or apt-get install chromium"
    );
    (dir, chromium)
}
