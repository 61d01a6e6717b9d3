//! A real ACME server for the tests: Pebble (Let's Encrypt's test CA) and its challenge
//! test server as the DNS server Pebble resolves names with (every name → 127.0.0.1), both
//! from the Go module proxy, installed by `scripts/test.sh` (`PEBBLE_BIN`,
//! `PEBBLE_CHALLTESTSRV_BIN`). Each test starts its own pair, validating against its own
//! proxy's ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::tls::Ca;

/// A running Pebble with its DNS server.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The root Pebble's own HTTPS certificate chains to (the directory's `directory_ca`).
    pub api_ca: PathBuf,
    /// The root the certificates Pebble issues chain to (PEM file), for clients.
    pub issuing_root: PathBuf,
    management: u16,
    dns_management: u16,
    log: PathBuf,
    client: reqwest::Client,
}

fn binary(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test.sh, which installs Pebble")
    })
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` (the
    /// proxy's), issuing certificates valid for `validity_seconds`.
    pub async fn start(dir: &Path, http_port: u16, tls_port: u16, validity_seconds: u64) -> Pebble {
        let ca = Ca::new(dir, "pebble-api");
        let (cert, key) = (dir.join("pebble-api.pem"), dir.join("pebble-api.key"));
        ca.issue(&["localhost"], &cert, &key);
        let (listen, management) = (free_port(), free_port());
        let (dns_port, dns_management) = (free_port(), free_port());
        let config = dir.join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "pebble": {
                    "listenAddress": format!("127.0.0.1:{listen}"),
                    "managementListenAddress": format!("127.0.0.1:{management}"),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false,
                    "retryAfter": {"authz": 1, "order": 1},
                    "profiles": {
                        "default": {
                            "description": "test certificates",
                            "validityPeriod": validity_seconds
                        }
                    }
                }
            })
            .to_string(),
        )
        .unwrap();
        let log = dir.join("pebble.log");
        let out = || {
            Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
        };
        let dns = Command::new(binary("PEBBLE_CHALLTESTSRV_BIN"))
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-doh",
                "",
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{dns_management}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(out())
            .stderr(out())
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(binary("PEBBLE_BIN"))
            .args([
                "-config",
                &config.display().to_string(),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ])
            // Validate at once; never reject a nonce at random (the client's retry of
            // a bad nonce is not what these tests are about).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(out())
            .stderr(out())
            .spawn()
            .expect("start pebble");
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca.pem_path).unwrap()).unwrap(),
            )
            .timeout(Duration::from_secs(5))
            // Pebble refuses requests without one (RFC 8555 §6.1).
            .user_agent("shortlink-tests")
            .build()
            .unwrap();
        let mut pebble = Pebble {
            pebble,
            dns,
            directory: format!("https://localhost:{listen}/dir"),
            api_ca: ca.pem_path.clone(),
            issuing_root: dir.join("pebble-root.pem"),
            management,
            dns_management,
            log,
            client,
        };
        pebble.wait_ready().await;
        let root = pebble.management_get("/roots/0").await;
        std::fs::write(&pebble.issuing_root, root).unwrap();
        pebble
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            let answer = self.client.get(&self.directory).send().await;
            let ready = match answer {
                Err(error) => {
                    last = format!("{error:?}");
                    false
                }
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    last = format!("directory answered {}: {:?}", r.status(), r.text().await);
                    false
                }
            };
            if ready {
                // The DNS server too: its management port answers once it serves.
                let dns = format!("http://127.0.0.1:{}/", self.dns_management);
                match self.client.get(&dns).send().await {
                    Ok(_) => return,
                    Err(error) => last = format!("DNS server: {error:?}"),
                }
            }
            if let Ok(Some(status)) = self.pebble.try_wait() {
                panic!("pebble exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "pebble not ready within 30 s ({last}): {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn management_get(&self, path: &str) -> String {
        let url = format!("https://localhost:{}{path}", self.management);
        let r = self.client.get(&url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.text().await.unwrap()
    }

    /// Makes Pebble's DNS answer `name` with `ip` (instead of 127.0.0.1).
    pub async fn set_address(&self, name: &str, ip: &str) {
        self.dns_call("clear-a", serde_json::json!({"host": format!("{name}.")}))
            .await;
        self.dns_call(
            "add-a",
            serde_json::json!({"host": format!("{name}."), "addresses": [ip]}),
        )
        .await;
    }

    async fn dns_call(&self, call: &str, body: serde_json::Value) {
        let url = format!("http://127.0.0.1:{}/{call}", self.dns_management);
        let r = self.client.post(&url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
    }

    /// Pebble's log (and its DNS server's).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `[proxy.tls.acme]` table for a shortlink using this Pebble.
    pub fn acme_config(&self, challenge: &str) -> String {
        format!(
            "[proxy.tls.acme]\ndirectory = \"{}\"\ndirectory_ca = \"{}\"\ncontact = [\"mailto:ops@sho.rt\"]\nchallenge = \"{challenge}\"\ncheck_seconds = 1\norder_timeout_seconds = 30\nretry_min_seconds = 2\nretry_max_seconds = 4\n",
            self.directory,
            self.api_ca.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
