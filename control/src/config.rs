//! The control plane's settings (the `[control]` table of the config file).

use serde::{Deserialize, Serialize};
use shortlink_core::InvalidSetting;

/// Settings of the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Address the API listens on. Default `127.0.0.1:8081`.
    pub listen: String,
    /// Worker threads of the API's runtime. Default 2.
    pub threads: usize,
    /// Largest accepted request body, in bytes. Default 65 536.
    pub max_body_bytes: usize,
    /// Longest accepted target URL, in bytes. Default 8192.
    pub max_url_bytes: usize,
    /// Hosts (and their subdomains) links may not point at. The public URL's host is
    /// always added. Default empty.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub blocked_hosts: Vec<String>,
    /// Hosts links may point at although they lead back to this service (a loopback
    /// address, its own host or a registered custom domain), e.g. a second service on
    /// the same machine. Default none: such links are refused (`url_loops`).
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub loop_allowed_hosts: Vec<String>,
    /// This service's own hosts besides the public URL's: the binary fills it with the
    /// proxy's and control plane's listen hosts. Not read from the config file.
    #[serde(skip)]
    pub own_hosts: Vec<String>,
    /// Writes (create, change, delete) one API key may make per minute. Default 600.
    pub writes_per_minute: u32,
    /// Writes one API key may make in a burst above the steady rate. Default 100.
    pub write_burst: u32,
    /// Page size of link listings when `limit` is not given. Default 20.
    pub default_page_size: usize,
    /// Largest accepted `limit` of link listings. Default 100.
    pub max_page_size: usize,
    /// Most clicks in one ingested batch (413 beyond). Default 10 000.
    pub max_batch_clicks: usize,
    /// Largest ingested batch body, in bytes (413 beyond). Default 8 MiB.
    pub max_batch_bytes: usize,
    /// Days a click may be old when ingested (and days raw clicks are kept). Default 30.
    pub click_retention_days: u32,
    /// Milliseconds a client has to send a whole request head, from when the connection
    /// is ready for it (also how long an idle kept-alive connection waits). Default 60 000.
    pub request_head_timeout_ms: u64,
    /// The slowest a request body may arrive, in bytes a second, once
    /// `body_grace_seconds` have passed: an upload trickling in slower is cut off.
    /// Default 1 024.
    pub min_body_bytes_per_second: u64,
    /// Seconds a request body may take before `min_body_bytes_per_second` applies.
    /// Default 15.
    pub body_grace_seconds: u64,
    /// MaxMind-format country database (`.mmdb`) for click countries. Default unset: the
    /// country comes from the proxy's trusted country header, else `unknown`.
    pub geoip_database: Option<std::path::PathBuf>,
    /// Store full client IPs instead of anonymized ones (IPv4 /24, IPv6 /48). Default false.
    pub keep_full_ip: bool,
    /// Newest events kept per user. Default 1 000.
    pub events_retain_per_user: u64,
    /// Hours events are kept. Default 168 (a week).
    pub events_retain_hours: u32,
    /// How often the hub reads the store's event feed when nothing wakes it (events
    /// written by other instances), in milliseconds. Default 500.
    pub events_poll_ms: u64,
    /// Seconds between SSE heartbeats and WebSocket pings. Default 15.
    pub events_heartbeat_seconds: u64,
    /// Reconnect delay suggested to SSE clients (`retry:`), in milliseconds. Default 2 000.
    pub events_retry_ms: u64,
    /// Events buffered per user before a slow subscriber must resync from the log.
    /// Default 1 024.
    pub events_buffer: usize,
    /// Event streams (SSE, WebSocket, waiting polls) one user may hold. Default 32.
    pub max_subscribers_per_user: usize,
    /// Event streams this instance holds at once. Default 20 000.
    pub max_subscribers: usize,
    /// Largest WebSocket message a client may send, in bytes. Default 4 096.
    pub ws_max_message_bytes: usize,
    /// Longest `wait` of a notifications poll, in seconds. Default 30.
    pub poll_max_wait_seconds: u64,
    /// Largest upload, in bytes (413 beyond, with nothing kept). Default 1 GiB.
    pub max_upload_bytes: u64,
    /// Most rows one CSV import holds (422 `too_many_rows` beyond). Default 1 000 000.
    pub max_import_rows: u64,
    /// How long a presigned upload URL works, in seconds. Default 900.
    pub presign_ttl_seconds: u64,
    /// How long a redirect to an object store's download URL works, in seconds. Default 300.
    pub download_ttl_seconds: u64,
    /// Largest multipart upload, in bytes (413 beyond). Default 100 GiB.
    pub max_multipart_upload_bytes: u64,
    /// Most parts a multipart upload may have (422 `invalid_part_size` beyond; S3 takes
    /// 10 000 at most). Default 10 000.
    pub max_upload_parts: u32,
    /// Bytes one user's uploads may take, pending ones at their declared size (413
    /// `quota_exceeded` beyond). Default 1 TiB.
    pub upload_quota_bytes: u64,
    /// Seconds after its newest URL stops working that a pending upload is abandoned and
    /// what was sent of it removed. Default 86 400 (a day).
    pub incomplete_upload_ttl_seconds: u64,
    /// Seconds between sweeps of abandoned and expired uploads. Default 300.
    pub upload_sweep_seconds: u64,
    /// Seconds between scans of the object store for objects and multipart uploads no
    /// upload owns. Default 3 600.
    pub orphan_scan_seconds: u64,
    /// Age in seconds an object or multipart upload no upload owns must reach before a
    /// scan removes it (an upload being recorded right now is not an orphan). Default 3 600.
    pub orphan_grace_seconds: u64,
    /// Thumbnail jobs run at once (each on a blocking thread). Default 2.
    pub thumbnail_workers: usize,
    /// Largest image (in pixels) decoded whole for thumbnails (GIF, WebP, interlaced
    /// PNG); larger ones are refused undecoded. JPEG and PNG are reduced while decoded
    /// and need not fit. Default 40 000 000.
    pub thumbnail_max_pixels: u64,
    /// Largest image (in pixels) thumbnails are made for at all; larger ones (pixel
    /// bombs among them) are refused from their header. Default 268 435 456 (16 384²).
    pub thumbnail_max_source_pixels: u64,
    /// Largest image file read for thumbnails, in bytes. Default 50 MiB.
    pub thumbnail_max_input_bytes: u64,
    /// Seconds a claimed thumbnail job is leased to its worker before another may retry
    /// it (a crash mid-job). Default 60.
    pub thumbnail_lease_seconds: u64,
    /// Peers (IP addresses) whose forwarding headers (`forwarded_headers`) name the
    /// client and scheme, e.g. a load balancer in front of the control plane. The shortlink proxy
    /// needs no entry: it vouches with the internal secret. Default none.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The forwarding headers those peers write, the only ones believed: `x-forwarded`
    /// (`X-Forwarded-For`/`-Proto`, the default) or `forwarded` (RFC 7239).
    pub forwarded_headers: shortlink_core::hop::ForwardedHeaders,
    /// Password attempts one client IP may make on one protected link per minute,
    /// counted before they are checked (429 beyond). Default 5.
    pub password_attempts_per_client: u32,
    /// Password attempts all clients together may make on one protected link per
    /// minute; right ones are given back (429 beyond). Default 60.
    pub password_attempts_per_link: u32,
    /// Memory argon2 may hold at once, in bytes: password hashes and checks wait for room
    /// (7 MiB each for hashes made by this version, 19 MiB for older ones); one always
    /// fits. Default 64 MiB.
    pub password_check_memory_bytes: u64,
    /// Longest grace an old key keeps working after a rotation, in seconds. Default
    /// 2 592 000 (30 days).
    pub key_rotation_max_grace_seconds: u64,
    /// How long a signed-in session lasts, in seconds. Default 604 800 (7 days).
    pub session_ttl_seconds: u64,
    /// Webhook delivery (the `[control.webhooks]` table).
    pub webhooks: WebhookConfig,
    /// The visitor pages' templates, loaded by the binary from the top-level `pages_dir`
    /// (not a setting of this table).
    #[serde(skip)]
    pub pages: shortlink_core::pages::PageTemplates,
}

/// Settings of webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Networks (CIDR, e.g. `10.1.0.0/16`) webhook endpoints may be in although they are
    /// loopback, private, link-local or metadata addresses, which are refused otherwise.
    /// Default none.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub allowed_networks: Vec<String>,
    /// Endpoints one user may register. Default 20.
    pub max_per_user: usize,
    /// How long one delivery attempt may take, connecting included, in milliseconds.
    /// Default 10 000.
    pub timeout_ms: u64,
    /// How long an event is retried, from its first failed attempt, before it is given
    /// up and the endpoint disabled, in seconds. At most the event retention. Default
    /// 86 400 (a day).
    pub retry_window_seconds: u64,
    /// Wait before the first retry, in milliseconds; each further retry waits twice as
    /// long (with ±20 % jitter). Default 5 000.
    pub first_retry_ms: u64,
    /// Longest wait between retries, in seconds. Default 3 600.
    pub max_retry_interval_seconds: u64,
    /// How long an instance holds an endpoint's delivery lease before renewing it, in
    /// seconds; at least twice the timeout. Default 60.
    pub lease_seconds: u64,
    /// Endpoints this instance delivers to at once (one request in flight each).
    /// Default 256.
    pub max_active: usize,
    /// Delivery attempts kept per endpoint in its log. Default 1 000.
    pub log_retain_per_webhook: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allowed_networks: Vec::new(),
            max_per_user: 20,
            timeout_ms: 10_000,
            retry_window_seconds: 86_400,
            first_retry_ms: 5_000,
            max_retry_interval_seconds: 3_600,
            lease_seconds: 60,
            max_active: 256,
            log_retain_per_webhook: 1_000,
        }
    }
}

impl WebhookConfig {
    /// The allowed networks, parsed.
    pub fn networks(&self) -> Result<Vec<ipnet::IpNet>, InvalidSetting> {
        self.allowed_networks
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| n.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        InvalidSetting::new(
                            "control.webhooks.allowed_networks",
                            format!("'{n}' is not a network like 10.0.0.0/8 or an address"),
                        )
                    })
            })
            .collect()
    }

    fn validate(&self, events_retain_hours: u32) -> Result<(), InvalidSetting> {
        self.networks()?;
        if self.max_per_user == 0 || self.max_active == 0 || self.log_retain_per_webhook == 0 {
            return Err(InvalidSetting::new(
                "control.webhooks.max_per_user",
                "and control.webhooks.max_active, control.webhooks.log_retain_per_webhook \
                 must be positive",
            ));
        }
        if self.timeout_ms == 0 || self.first_retry_ms == 0 || self.max_retry_interval_seconds == 0
        {
            return Err(InvalidSetting::new(
                "control.webhooks.timeout_ms",
                "and control.webhooks.first_retry_ms, \
                 control.webhooks.max_retry_interval_seconds must be positive",
            ));
        }
        if self.retry_window_seconds == 0
            || self.retry_window_seconds > u64::from(events_retain_hours) * 3600
        {
            return Err(InvalidSetting::new(
                "control.webhooks.retry_window_seconds",
                "must be positive and at most control.events_retain_hours (events are \
                 retried from the event log)",
            ));
        }
        if self.lease_seconds.saturating_mul(1000) < self.timeout_ms.saturating_mul(2) {
            return Err(InvalidSetting::new(
                "control.webhooks.lease_seconds",
                "must be at least twice control.webhooks.timeout_ms",
            ));
        }
        Ok(())
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: "127.0.0.1:8081".into(),
            threads: 2,
            max_body_bytes: 64 * 1024,
            max_url_bytes: shortlink_core::target::DEFAULT_MAX_URL_BYTES,
            blocked_hosts: Vec::new(),
            loop_allowed_hosts: Vec::new(),
            own_hosts: Vec::new(),
            writes_per_minute: 600,
            write_burst: 100,
            default_page_size: 20,
            max_page_size: 100,
            max_batch_clicks: 10_000,
            max_batch_bytes: 8 * 1024 * 1024,
            click_retention_days: 30,
            request_head_timeout_ms: 60_000,
            min_body_bytes_per_second: 1024,
            body_grace_seconds: 15,
            geoip_database: None,
            keep_full_ip: false,
            events_retain_per_user: 1_000,
            events_retain_hours: 168,
            events_poll_ms: 500,
            events_heartbeat_seconds: 15,
            events_retry_ms: 2_000,
            events_buffer: 1_024,
            max_subscribers_per_user: 32,
            max_subscribers: 20_000,
            ws_max_message_bytes: 4_096,
            poll_max_wait_seconds: 30,
            max_upload_bytes: 1024 * 1024 * 1024,
            max_import_rows: 1_000_000,
            presign_ttl_seconds: 900,
            download_ttl_seconds: 300,
            max_multipart_upload_bytes: 100 * 1024 * 1024 * 1024,
            max_upload_parts: 10_000,
            upload_quota_bytes: 1024 * 1024 * 1024 * 1024,
            incomplete_upload_ttl_seconds: 86_400,
            upload_sweep_seconds: 300,
            orphan_scan_seconds: 3_600,
            orphan_grace_seconds: 3_600,
            thumbnail_workers: 2,
            thumbnail_max_pixels: 40_000_000,
            thumbnail_max_source_pixels: 268_435_456,
            thumbnail_max_input_bytes: 50 * 1024 * 1024,
            thumbnail_lease_seconds: 60,
            trusted_proxies: Vec::new(),
            forwarded_headers: shortlink_core::hop::ForwardedHeaders::XForwarded,
            password_attempts_per_client: 5,
            password_attempts_per_link: 60,
            password_check_memory_bytes: 64 * 1024 * 1024,
            key_rotation_max_grace_seconds: 30 * 24 * 3600,
            session_ttl_seconds: 7 * 24 * 3600,
            webhooks: WebhookConfig::default(),
            pages: shortlink_core::pages::PageTemplates::default(),
        }
    }
}

impl ControlConfig {
    /// The argon2 memory budget in whole MiB (at least one).
    pub fn password_memory_mib(&self) -> u32 {
        u32::try_from(self.password_check_memory_bytes / (1024 * 1024))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Checks values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(InvalidSetting::new(
                "control.listen",
                format!("'{}' is not an address like 127.0.0.1:8081", self.listen),
            ));
        }
        if self.threads == 0 {
            return Err(InvalidSetting::new("control.threads", "must be at least 1"));
        }
        if self.max_body_bytes < 1024 {
            return Err(InvalidSetting::new(
                "control.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_url_bytes < 32 || self.max_url_bytes > self.max_body_bytes {
            return Err(InvalidSetting::new(
                "control.max_url_bytes",
                "must be between 32 and max_body_bytes",
            ));
        }
        if self.writes_per_minute == 0 || self.write_burst == 0 {
            return Err(InvalidSetting::new(
                "control.writes_per_minute",
                "and control.write_burst must be positive",
            ));
        }
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(InvalidSetting::new(
                "control.default_page_size",
                "must be between 1 and max_page_size",
            ));
        }
        if self.max_batch_clicks == 0 || self.max_batch_bytes < 1024 {
            return Err(InvalidSetting::new(
                "control.max_batch_clicks",
                "and control.max_batch_bytes must be positive",
            ));
        }
        if self.events_retain_per_user == 0 || self.events_retain_hours == 0 {
            return Err(InvalidSetting::new(
                "control.events_retain_per_user",
                "and control.events_retain_hours must be positive",
            ));
        }
        if self.events_poll_ms == 0 || self.events_heartbeat_seconds == 0 || self.events_buffer == 0
        {
            return Err(InvalidSetting::new(
                "control.events_poll_ms",
                "and control.events_heartbeat_seconds, control.events_buffer must all be positive",
            ));
        }
        if self.max_subscribers_per_user == 0 || self.max_subscribers == 0 {
            return Err(InvalidSetting::new(
                "control.max_subscribers_per_user",
                "and control.max_subscribers must be positive",
            ));
        }
        if self.ws_max_message_bytes < 64 {
            return Err(InvalidSetting::new(
                "control.ws_max_message_bytes",
                "must be at least 64",
            ));
        }
        if self.max_upload_bytes == 0
            || self.presign_ttl_seconds == 0
            || self.download_ttl_seconds == 0
        {
            return Err(InvalidSetting::new(
                "control.max_upload_bytes",
                "and control.presign_ttl_seconds, control.download_ttl_seconds must all be positive",
            ));
        }
        if self.max_multipart_upload_bytes == 0
            || self.upload_quota_bytes == 0
            || self.upload_sweep_seconds == 0
            || self.orphan_scan_seconds == 0
        {
            return Err(InvalidSetting::new(
                "control.max_multipart_upload_bytes",
                "and control.upload_quota_bytes, control.upload_sweep_seconds, \
                 control.orphan_scan_seconds must all be positive",
            ));
        }
        if !(1..=10_000).contains(&self.max_upload_parts) {
            return Err(InvalidSetting::new(
                "control.max_upload_parts",
                "must be between 1 and 10000 (S3's limit)",
            ));
        }
        if self.thumbnail_workers == 0
            || self.thumbnail_max_pixels == 0
            || self.thumbnail_max_source_pixels == 0
            || self.thumbnail_max_input_bytes == 0
            || self.thumbnail_lease_seconds == 0
        {
            return Err(InvalidSetting::new(
                "control.thumbnail_*",
                "settings must be positive",
            ));
        }
        if self.password_attempts_per_client == 0 || self.password_attempts_per_link == 0 {
            return Err(InvalidSetting::new(
                "control.password_attempts_per_client",
                "and control.password_attempts_per_link must be positive",
            ));
        }
        if self.session_ttl_seconds == 0 || self.session_ttl_seconds > 365 * 24 * 3600 {
            return Err(InvalidSetting::new(
                "control.session_ttl_seconds",
                "must be between 1 and a year",
            ));
        }
        if self.request_head_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "control.request_head_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.min_body_bytes_per_second == 0 {
            return Err(InvalidSetting::new(
                "control.min_body_bytes_per_second",
                "must be at least 1",
            ));
        }
        if self.click_retention_days == 0 {
            return Err(InvalidSetting::new(
                "control.click_retention_days",
                "must be at least 1",
            ));
        }
        self.webhooks.validate(self.events_retain_hours)
    }
}
