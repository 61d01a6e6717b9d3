//! The proxy's settings (the `[proxy]` table of the config file).

use serde::{Deserialize, Serialize};
use shortlink_core::InvalidSetting;

/// Settings of the redirect proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy listens on. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Worker threads answering requests. Default: the number of CPUs.
    pub threads: usize,
    /// Control-plane addresses (`host:port`) that non-redirect paths are forwarded to.
    /// Default: the control plane's own listen address in `serve`.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub control_upstreams: Vec<String>,
    /// Seconds between health checks of the control upstreams. Default 2.
    pub health_check_seconds: u64,
    /// Most 404 answers one client IP gets per minute before it is answered 429. Default 120.
    pub not_found_per_ip_per_minute: u32,
    /// Milliseconds a code the store does not know is remembered as unknown. Default 2000.
    pub negative_cache_ms: u64,
    /// Most codes remembered as unknown at once. Default 100 000.
    pub negative_cache_max: usize,
    /// Milliseconds between polls of the route change feed. Default 500.
    pub sync_poll_ms: u64,
    /// Links read per page while bulk-loading the route table. Default 10 000.
    pub bulk_load_page: usize,
    /// Parts of the store's scan a bulk load reads at once (token ranges on CQL; the
    /// embedded store reads in one scan). Default 8, at most 256.
    pub bulk_load_parallelism: u32,
    /// The route table's snapshot file: a restarting proxy starts from it when it is
    /// usable ([`crate::snapshot`]). Default `<data_dir>/routes.snapshot`.
    pub route_snapshot: Option<std::path::PathBuf>,
    /// Seconds between saves of a changed route table (it is also saved after a bulk load
    /// and at shutdown). Default 600; 0 turns snapshots off (none read or written).
    pub route_snapshot_seconds: u64,
    /// Record a click event for every redirect. Default true.
    pub capture_clicks: bool,
    /// Answer plain redirects on the fast path (HTTP/1.1 GET or HEAD of a live link in the
    /// route table, read and answered straight off the socket); everything else goes
    /// through pingora's proxy either way. Default true; false is for comparisons.
    pub fast_path: bool,
    /// Let the request threads take over each other's ready connections (tokio's work
    /// stealing, one reactor for all threads). Default false: each thread has its own
    /// runtime, reactor and connections, like nginx's workers; with stealing, a CPU idles
    /// while the thread holding the one reactor is preempted (measured in BENCHMARKS.md).
    pub work_stealing: bool,
    /// Address of an admin listener serving `/metrics` (Prometheus text) for a proxy running
    /// apart from a control plane; in `serve` the control plane's `/metrics` covers both.
    /// Default unset.
    pub metrics_listen: Option<String>,
    /// Capacity of the in-memory click queue; clicks beyond it are dropped and counted.
    /// Default 65 536.
    pub click_queue_capacity: usize,
    /// Most clicks per shipped batch. Default 10 000 (the control plane's default limit).
    pub click_batch_max: usize,
    /// Milliseconds after its first click a batch is shipped at the latest. Default 1000.
    pub click_batch_ms: u64,
    /// Ship clicks from a thread in the kernel's idle scheduling class (Linux `SCHED_IDLE`)
    /// while its takes of the capture shards are on time, so redirect threads never wait
    /// for it; back to the normal class while they run late. Used only where the process
    /// may leave that class again (root or `CAP_SYS_NICE`). Default true.
    pub ship_idle_class: bool,
    /// Append every take of clicks (every 100 ms) to a journal in the spool folder before
    /// batching it, so a crash of the process loses at most the clicks of one take
    /// interval and a power loss at most a second's. Default true; false is for
    /// comparisons.
    pub click_journal: bool,
    /// How long a lease of a capped link's clicks lasts unless renewed (renewed every
    /// half of it while in use). A killed proxy's unused clicks return to the link this
    /// long (plus 5 s for clock skew) after its last renewal. Default 10, 1 to 3600.
    pub click_lease_seconds: u64,
    /// Folder of click batches waiting for a control plane. Default `<data_dir>/spool`.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Unix socket over which a running process hands its listening sockets to the one
    /// started with `--upgrade` (on SIGQUIT). Both must name the same path. Default
    /// `<data_dir>/upgrade.sock`.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// Largest spool in bytes; batches beyond it are dropped and counted. Default 256 MiB.
    pub spool_max_bytes: u64,
    /// Every connection to `listen` starts with a PROXY protocol header (v1 or v2) from an
    /// L4 load balancer, naming the client; connections without one are closed. Only for a
    /// listener nothing else can reach. Default false.
    pub proxy_protocol: bool,
    /// Peers (IP addresses) whose forwarding headers name the real client and scheme.
    /// Default none: the socket's address is the client.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The forwarding headers those peers write, the only ones believed: `x-forwarded`
    /// (`X-Forwarded-For`/`-Proto`, the default) or `forwarded` (RFC 7239). A proxy that
    /// passes the other family through unchanged would otherwise let a client name itself.
    pub forwarded_headers: shortlink_core::hop::ForwardedHeaders,
    /// Request header with the client's country code set by the edge in front (e.g.
    /// `cf-ipcountry`); only configure it if that edge overwrites client-sent values.
    /// Default unset.
    pub country_header: Option<String>,
    /// Where to redirect (302) requests whose `Host` is neither the public URL's host nor
    /// a registered custom domain. Default unset: such requests get the default domain.
    pub unknown_host_redirect: Option<String>,
    /// Where visitors of a default-domain link go (302) instead of a 410 when the link is
    /// expired, used up or turned off and has no fallback URL of its own (a custom domain
    /// has its own, set through the API). Default unset: the 410 page.
    pub gone_redirect: Option<String>,
    /// Milliseconds a client has to send a whole request head, from its first byte: bytes
    /// trickling in do not renew it (nginx's `client_header_timeout`). Also the longest
    /// wait for one read of a request pingora answers. Default 60 000.
    pub request_head_timeout_ms: u64,
    /// Seconds an idle kept-alive connection waits for its next request. Default 60.
    pub keepalive_timeout_seconds: u64,
    /// Milliseconds one write of answers to a client may take; a client that stops
    /// reading is cut off after it. Default 60 000.
    pub write_timeout_ms: u64,
    /// Seconds the proxy waits for a control plane to read or write (each read and write
    /// of a forwarded request, its answer, and event streams: their heartbeats come more
    /// often). Default 60 (nginx's `proxy_read_timeout`).
    pub upstream_timeout_seconds: u64,
    /// Seconds the process keeps running after SIGTERM, or after handing its sockets to
    /// the process it upgrades to: each open connection is answered `Connection: close`
    /// at its next request, those still idle halfway through are closed, and the last
    /// clicks are taken after the last redirect. Default 2.
    pub grace_period_seconds: u64,
    /// Seconds given to runtimes to stop after the grace period. Default 3.
    pub shutdown_timeout_seconds: u64,
    /// HTTPS and HTTP/2 (`[proxy.tls]`): off unless `proxy.tls.listen` is set.
    pub tls: TlsConfig,
}

/// A certificate chain and its private key, PEM files (as certbot and most ACME clients
/// write them: `fullchain.pem`, `privkey.pem`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The chain, end-entity certificate first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Settings of the proxy's TLS listener (`[proxy.tls]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Address the HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN) listens on, e.g.
    /// `0.0.0.0:443`. Default unset: no TLS.
    pub listen: Option<String>,
    /// Certificate files served by SNI: each serves the names it lists (subject
    /// alternative names, wildcards included); the default domain's also answers clients
    /// that send no name. Files are re-read when they change. Certificates stored with
    /// `shortlink cert import` are served too (a file wins a name). Default none.
    pub certificates: Vec<CertificateFiles>,
    /// Seconds between checks of the certificate files and the store's certificates for
    /// changes. Default 10.
    pub reload_seconds: u64,
    /// Answer plain-HTTP requests for a host that has a certificate with a 308 to its
    /// `https://` URL (except `/readyz`). Default false.
    pub redirect_http: bool,
    /// `Strict-Transport-Security` max-age sent on HTTPS answers; 0 sends none.
    /// Default 0 (HSTS is hard to take back: turn it on knowingly).
    pub hsts_max_age_seconds: u64,
    /// Add `includeSubDomains` to the HSTS header. Default false.
    pub hsts_include_subdomains: bool,
    /// The public HTTPS port, for the `Location` of `redirect_http`; default the port of
    /// `proxy.tls.listen` (443 is left out of URLs).
    pub public_port: Option<u16>,
    /// Every connection to the TLS listener starts with a PROXY protocol header (v1 or
    /// v2), before the handshake. Default false.
    pub proxy_protocol: bool,
    /// Offer HTTP/2 by ALPN. Default true.
    pub http2: bool,
    /// TLS 1.3 only (else 1.3 and 1.2). Default false.
    pub tls13_only: bool,
    /// Milliseconds a client has to complete the TLS handshake. Default 10 000.
    pub handshake_timeout_ms: u64,
    /// HTTP/2: streams a client may have open at once. Default 128.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: largest decoded header list of a request, in bytes (CONTINUATION frames
    /// included: a flood of them ends at this size). Default 65 536.
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2: streams a client may reset before the server accepts them, at once (the
    /// "rapid reset" attack, CVE-2023-44487, ends the connection past it). Default 20.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2: streams the server may reset for a client's protocol errors before it ends
    /// the connection. Default 1 024.
    pub h2_max_error_resets: usize,
    /// Certificates issued and renewed automatically (`[proxy.tls.acme]`): off unless
    /// `proxy.tls.acme.directory` is set.
    pub acme: AcmeConfig,
}

/// How the ACME server checks that a name points at this installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// HTTP-01: the CA fetches `http://NAME/.well-known/acme-challenge/TOKEN` on port 80,
    /// which any proxy answers from the store.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01: the CA makes a TLS handshake on port 443 asking for ALPN
    /// `acme-tls/1`, which any proxy answers with the challenge certificate from the store.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// Automatic certificates (`[proxy.tls.acme]`, RFC 8555): for the default domain and every
/// registered custom domain, ordered by one proxy of an installation at a time (a lease in
/// the store), stored so every proxy serves them, renewed once a third of their lifetime
/// is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME directory URL, or `letsencrypt` / `letsencrypt-staging`. Default unset:
    /// no automatic certificates.
    pub directory: Option<String>,
    /// Contact URIs for the account (`mailto:ops@example.com`): where the CA writes about
    /// expiring certificates and problems. Default none.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub contact: Vec<String>,
    /// The challenge type. Default `http-01`.
    pub challenge: AcmeChallenge,
    /// A PEM root certificate to trust for the directory's own HTTPS (a private or test
    /// CA); default the system's roots.
    pub directory_ca: Option<std::path::PathBuf>,
    /// Seconds between checks of which names need a certificate. Default 60.
    pub check_seconds: u64,
    /// Seconds an order may take, challenges included, before it counts as failed.
    /// Default 180.
    pub order_timeout_seconds: u64,
    /// Seconds before the first retry of a failed order; each failure doubles it (with
    /// jitter) up to `retry_max_seconds`. Default 300.
    pub retry_min_seconds: u64,
    /// Longest wait between retries. Default 86 400.
    pub retry_max_seconds: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory: None,
            contact: Vec::new(),
            challenge: AcmeChallenge::default(),
            directory_ca: None,
            check_seconds: 60,
            order_timeout_seconds: 180,
            retry_min_seconds: 300,
            retry_max_seconds: 86_400,
        }
    }
}

impl AcmeConfig {
    /// The directory URL, with the named shorthands expanded; `None` when ACME is off.
    pub fn directory_url(&self) -> Option<&str> {
        match self.directory.as_deref()? {
            "letsencrypt" => Some("https://acme-v02.api.letsencrypt.org/directory"),
            "letsencrypt-staging" => Some("https://acme-staging-v02.api.letsencrypt.org/directory"),
            url => Some(url),
        }
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        let Some(url) = self.directory_url() else {
            return Ok(());
        };
        if !url.starts_with("https://") {
            return Err(InvalidSetting::new(
                "proxy.tls.acme.directory",
                format!("'{url}' is not an https:// URL (or letsencrypt, letsencrypt-staging)"),
            ));
        }
        if let Some(bad) = self.contact.iter().find(|c| !c.starts_with("mailto:")) {
            return Err(InvalidSetting::new(
                "proxy.tls.acme.contact",
                format!("'{bad}' is not a mailto: URI"),
            ));
        }
        if self.check_seconds == 0 || self.order_timeout_seconds == 0 {
            return Err(InvalidSetting::new(
                "proxy.tls.acme.check_seconds",
                "must be at least 1 (and proxy.tls.acme.order_timeout_seconds too)",
            ));
        }
        if self.retry_min_seconds == 0 || self.retry_max_seconds < self.retry_min_seconds {
            return Err(InvalidSetting::new(
                "proxy.tls.acme.retry_min_seconds",
                "must be at least 1 and at most proxy.tls.acme.retry_max_seconds",
            ));
        }
        Ok(())
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: None,
            certificates: Vec::new(),
            reload_seconds: 10,
            redirect_http: false,
            hsts_max_age_seconds: 0,
            hsts_include_subdomains: false,
            public_port: None,
            proxy_protocol: false,
            http2: true,
            tls13_only: false,
            handshake_timeout_ms: 10_000,
            h2_max_concurrent_streams: 128,
            h2_max_header_list_bytes: 64 * 1024,
            h2_max_pending_reset_streams: 20,
            h2_max_error_resets: 1024,
            acme: AcmeConfig::default(),
        }
    }
}

impl TlsConfig {
    /// The `Strict-Transport-Security` value, if one is sent.
    pub fn hsts(&self) -> Option<String> {
        (self.hsts_max_age_seconds > 0).then(|| {
            let mut value = format!("max-age={}", self.hsts_max_age_seconds);
            if self.hsts_include_subdomains {
                value.push_str("; includeSubDomains");
            }
            value
        })
    }

    /// The port `https://` URLs name (`None` for 443).
    pub fn url_port(&self) -> Option<u16> {
        let port = self.public_port.or_else(|| {
            self.listen
                .as_deref()
                .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
        })?;
        (port != 443).then_some(port)
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        let Some(listen) = &self.listen else {
            if self.redirect_http {
                return Err(InvalidSetting::new(
                    "proxy.tls.redirect_http",
                    "needs proxy.tls.listen",
                ));
            }
            if self.acme.directory.is_some() {
                return Err(InvalidSetting::new(
                    "proxy.tls.acme.directory",
                    "needs proxy.tls.listen",
                ));
            }
            return Ok(());
        };
        self.acme.validate()?;
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(InvalidSetting::new(
                "proxy.tls.listen",
                format!("'{listen}' is not an address like 0.0.0.0:443"),
            ));
        }
        if !(1..=86_400).contains(&self.reload_seconds) {
            return Err(InvalidSetting::new(
                "proxy.tls.reload_seconds",
                "must be between 1 and 86400",
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "proxy.tls.handshake_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.h2_max_concurrent_streams == 0 || self.h2_max_header_list_bytes < 1024 {
            return Err(InvalidSetting::new(
                "proxy.tls.h2_max_concurrent_streams",
                "must be at least 1 (and proxy.tls.h2_max_header_list_bytes at least 1024)",
            ));
        }
        Ok(())
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "0.0.0.0:8080".into(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            control_upstreams: Vec::new(),
            health_check_seconds: 2,
            not_found_per_ip_per_minute: 120,
            negative_cache_ms: 2000,
            negative_cache_max: 100_000,
            sync_poll_ms: 500,
            bulk_load_page: 10_000,
            bulk_load_parallelism: 8,
            route_snapshot: None,
            route_snapshot_seconds: 600,
            capture_clicks: true,
            fast_path: true,
            work_stealing: false,
            metrics_listen: None,
            click_queue_capacity: 65_536,
            click_batch_max: 10_000,
            click_batch_ms: 1000,
            ship_idle_class: true,
            click_journal: true,
            click_lease_seconds: 10,
            spool_dir: None,
            upgrade_socket: None,
            spool_max_bytes: 256 * 1024 * 1024,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            forwarded_headers: shortlink_core::hop::ForwardedHeaders::XForwarded,
            country_header: None,
            unknown_host_redirect: None,
            gone_redirect: None,
            request_head_timeout_ms: 60_000,
            keepalive_timeout_seconds: 60,
            write_timeout_ms: 60_000,
            upstream_timeout_seconds: 60,
            grace_period_seconds: 2,
            shutdown_timeout_seconds: 3,
            tls: TlsConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// The deadlines client connections live by.
    pub fn connection_limits(&self) -> crate::fast_path::ConnectionLimits {
        crate::fast_path::ConnectionLimits {
            head: std::time::Duration::from_millis(self.request_head_timeout_ms),
            keepalive: std::time::Duration::from_secs(self.keepalive_timeout_seconds),
            write: std::time::Duration::from_millis(self.write_timeout_ms),
        }
    }

    /// Checks values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(InvalidSetting::new(
                "proxy.listen",
                format!("'{}' is not an address like 0.0.0.0:8080", self.listen),
            ));
        }
        if self.threads == 0 {
            return Err(InvalidSetting::new("proxy.threads", "must be at least 1"));
        }
        for upstream in &self.control_upstreams {
            if upstream.parse::<std::net::SocketAddr>().is_err() {
                return Err(InvalidSetting::new(
                    "proxy.control_upstreams",
                    format!("entry '{upstream}' is not an address like 127.0.0.1:8081"),
                ));
            }
        }
        if self.not_found_per_ip_per_minute == 0 {
            return Err(InvalidSetting::new(
                "proxy.not_found_per_ip_per_minute",
                "must be at least 1",
            ));
        }
        if !(1..=3600).contains(&self.click_lease_seconds) {
            return Err(InvalidSetting::new(
                "proxy.click_lease_seconds",
                "must be between 1 and 3600",
            ));
        }
        if self.sync_poll_ms == 0 || self.sync_poll_ms > 60_000 {
            return Err(InvalidSetting::new(
                "proxy.sync_poll_ms",
                "must be between 1 and 60000",
            ));
        }
        if !(1..=256).contains(&self.bulk_load_parallelism) {
            return Err(InvalidSetting::new(
                "proxy.bulk_load_parallelism",
                "must be between 1 and 256",
            ));
        }
        if self.bulk_load_page == 0
            || self.click_queue_capacity == 0
            || self.click_batch_max == 0
            || self.click_batch_ms == 0
        {
            return Err(InvalidSetting::new(
                "proxy.bulk_load_page",
                "and proxy.click_queue_capacity, proxy.click_batch_max, proxy.click_batch_ms must all be positive",
            ));
        }
        if self.request_head_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "proxy.request_head_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.keepalive_timeout_seconds == 0 {
            return Err(InvalidSetting::new(
                "proxy.keepalive_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.upstream_timeout_seconds == 0 {
            return Err(InvalidSetting::new(
                "proxy.upstream_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.write_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "proxy.write_timeout_ms",
                "must be at least 1",
            ));
        }
        if let Some(path) = &self.upgrade_socket {
            // `sun_path` holds 108 bytes, the terminating NUL included.
            if path.as_os_str().len() > 107 {
                return Err(InvalidSetting::new(
                    "proxy.upgrade_socket",
                    "is longer than a Unix socket path may be (107 bytes)",
                ));
            }
        }
        self.tls.validate()?;
        for (key, value) in [
            ("proxy.unknown_host_redirect", &self.unknown_host_redirect),
            ("proxy.gone_redirect", &self.gone_redirect),
        ] {
            if let Some(url) = value {
                let ok = (url.starts_with("https://") || url.starts_with("http://"))
                    && http::HeaderValue::from_str(url).is_ok();
                if !ok {
                    return Err(InvalidSetting::new(
                        key,
                        format!("'{url}' must be an absolute http(s) URL"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_acme(listen: Option<&str>, acme: AcmeConfig) -> Result<(), InvalidSetting> {
        TlsConfig {
            listen: listen.map(str::to_owned),
            acme,
            ..TlsConfig::default()
        }
        .validate()
    }

    #[test]
    fn bulk_load_parallelism_is_bounded() {
        let with = |parts| ProxyConfig {
            bulk_load_parallelism: parts,
            ..ProxyConfig::default()
        };
        assert!(with(1).validate().is_ok() && with(256).validate().is_ok());
        for parts in [0, 257] {
            let refused = with(parts).validate().unwrap_err().to_string();
            assert!(refused.contains("proxy.bulk_load_parallelism"), "{refused}");
        }
    }

    #[test]
    fn acme_settings_are_checked_with_the_setting_named() {
        let acme = |directory: &str| AcmeConfig {
            directory: Some(directory.into()),
            ..AcmeConfig::default()
        };
        assert!(with_acme(Some("127.0.0.1:443"), acme("letsencrypt")).is_ok());
        assert_eq!(
            acme("letsencrypt-staging").directory_url(),
            Some("https://acme-staging-v02.api.letsencrypt.org/directory")
        );
        assert_eq!(AcmeConfig::default().directory_url(), None);
        let refused = |listen, acme| with_acme(listen, acme).unwrap_err().to_string();
        assert!(refused(None, acme("letsencrypt")).contains("proxy.tls.acme.directory"));
        assert!(
            refused(Some("127.0.0.1:443"), acme("http://ca.example/dir"))
                .contains("not an https:// URL")
        );
        let mut bad_contact = acme("letsencrypt");
        bad_contact.contact = vec!["ops@sho.rt".into()];
        assert!(refused(Some("127.0.0.1:443"), bad_contact).contains("mailto:"));
        let mut bad_retry = acme("letsencrypt");
        bad_retry.retry_max_seconds = 1;
        assert!(
            refused(Some("127.0.0.1:443"), bad_retry).contains("proxy.tls.acme.retry_min_seconds")
        );
    }
}
