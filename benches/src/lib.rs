//! Shared fixtures for the benchmarks: synthetic links and filled route tables.

use std::time::Duration;

use shortlink_core::{Link, RedirectStatus, ShortCode};
use shortlink_proxy::RouteTable;

/// A deterministic synthetic link number `i` with a typical ~60-byte URL.
pub fn sample_link(i: usize) -> Link {
    let url = format!("https://www.example.com/articles/{i:08}/a-typical-slug?ref=x");
    Link {
        id: i as i64 + 1,
        domain: String::new(),
        code: unique_code(i),
        custom_alias: false,
        owner: 1,
        url,
        redirect: RedirectStatus::Permanent,
        expires_at: None,
        max_clicks: None,
        clicks: 0,
        tags: Vec::new(),
        disabled: false,
        password_hash: None,
        targeting: None,
        moderation: None,
        fallback_url: None,
        created_at: 0,
        updated_at: 0,
    }
}

/// A distinct, well-spread 7-character base62 code for every `i` below 62^7: `i` times an
/// odd constant modulo 62^7 is a bijection, so synthetic tables have no code collisions.
pub fn unique_code(i: usize) -> ShortCode {
    const SPACE: u64 = 62u64.pow(7);
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Coprime to 62^7 = 2^7 * 31^7 (odd, not a multiple of 31).
    const MULTIPLIER: u128 = 2_654_435_761;
    let mut value = ((i as u128 * MULTIPLIER) % SPACE as u128) as u64;
    let mut code = String::with_capacity(7);
    for _ in 0..7 {
        code.push(DIGITS[(value % 62) as usize] as char);
        value /= 62;
    }
    ShortCode::from_stored(code)
}

/// A route table holding `n` synthetic links.
pub fn table_with(n: usize) -> RouteTable {
    let table = RouteTable::new(Duration::from_secs(2), 100_000);
    for i in 0..n {
        table.upsert(&sample_link(i));
    }
    table
}

/// The release build of `shortlink` (built by `cargo build --release -p shortlink`).
pub fn release_binary() -> std::path::PathBuf {
    let binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/shortlink");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p shortlink"
    );
    binary
}

/// The `n`th command-line argument as a number, or `default`.
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Creates the user `name` through the API at `base` as the admin and returns a new key
/// of theirs.
pub async fn user_with_key(
    http: &reqwest::Client,
    base: &str,
    admin_key: &str,
    name: &str,
) -> String {
    let r = http
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await
        .expect("create user");
    assert_eq!(r.status(), 201, "create user {name}");
    let body: serde_json::Value = http
        .post(format!("{base}/api/v1/keys"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({"user": name}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("a key");
    body["key"].as_str().expect("a key").to_owned()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes `size` pseudo-random (incompressible) bytes to `path` and syncs them.
pub fn random_file(path: &std::path::Path, size: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    file.get_ref().sync_all().unwrap();
}

/// A `/proc/<pid>/status` field in KiB (e.g. `VmRSS`, `VmHWM`); 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `shortlink serve` from the release build, on free loopback ports, with a data folder.
pub struct ReleaseServer {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:<proxy port>`.
    pub proxy: String,
    /// `http://127.0.0.1:<control port>`.
    pub control: String,
}

impl ReleaseServer {
    /// Starts `target/release/shortlink serve` with `admin_key` and `env`, and waits until
    /// the control plane answers `/readyz` (10 s at most).
    pub async fn start(
        data_dir: &std::path::Path,
        admin_key: &str,
        env: &[(&str, String)],
    ) -> Self {
        let binary = release_binary();
        let (proxy_port, control_port) = (free_port(), free_port());
        let mut command = std::process::Command::new(&binary);
        command
            .arg("serve")
            .env("SHORTLINK_DATA_DIR", data_dir)
            .env("SHORTLINK_PROXY_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env(
                "SHORTLINK_CONTROL_LISTEN",
                format!("127.0.0.1:{control_port}"),
            )
            .env("SHORTLINK_ADMIN_KEY", admin_key)
            .env("SHORTLINK_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start shortlink");
        let server = ReleaseServer {
            child,
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            control: format!("http://127.0.0.1:{control_port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http
                .get(format!("{}/readyz", server.control))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP/1.1 response from `stream` (headers, then `Content-Length` bytes of
/// body), keeping any bytes past it in `buf`. Returns the status code.
pub async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
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

async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(stream, &mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
