//! Shared state of the control plane's handlers.

use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shortlink_core::{CodeGenerator, EventKind, KEY_HASH_LEN, NewEvent, TargetRules, UserId};
use shortlink_objects::ObjectStore;
use shortlink_store::Store;
use tracing::warn;

use crate::ControlError;
use crate::config::ControlConfig;
use crate::error::ApiError;
use crate::hub::{Hub, HubLimits};
use crate::ingest::Ingestor;
use crate::protected::{PasswordGuard, PasswordLimits, THROTTLE_WINDOW};
use crate::webhooks::dispatch::Dispatcher;
use crate::webhooks::guard::TargetGuard;
use crate::webhooks::send::Sender;

/// The stores and services a control plane works with.
#[derive(Clone)]
pub struct Backends {
    /// Links, accounts, clicks, events, uploads.
    pub store: Arc<dyn Store>,
    /// Uploaded files.
    pub objects: Arc<dyn ObjectStore>,
    /// Click batch ingestion (shared with an in-process proxy).
    pub ingestor: Arc<Ingestor>,
}

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    thumbnails: tokio::sync::Notify,
    config: ControlConfig,
    public_url: String,
    rules: TargetRules,
    codes: CodeGenerator,
    writes: DefaultKeyedRateLimiter<[u8; KEY_HASH_LEN]>,
    internal_secret: Option<String>,
    ingestor: Arc<Ingestor>,
    hub: Arc<Hub>,
    /// The public URL's `host[:port]` and host, lower case: the default domain.
    default_authority: String,
    default_host: String,
    password_guard: PasswordGuard,
    /// When each key's last use was last written back (Unix seconds).
    key_touches: dashmap::DashMap<[u8; KEY_HASH_LEN], i64>,
    webhooks: Arc<Dispatcher>,
    downloads: crate::uploads::downloads::DownloadCounts,
    /// Multipart uploads being assembled by this process.
    completing: dashmap::DashSet<String>,
}

impl AppState {
    /// State for `config`, handing out short URLs under `public_url`, with codes salted
    /// by `salt` (the store's installation salt).
    pub fn new(
        backends: Backends,
        config: ControlConfig,
        public_url: &str,
        salt: u64,
        internal_secret: Option<String>,
    ) -> Result<AppState, ControlError> {
        let Backends {
            store,
            objects,
            ingestor,
        } = backends;
        let public_url = public_url.trim_end_matches('/').to_owned();
        let default_authority = public_url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let default_host = shortlink_core::normalize_host(&default_authority);
        let mut blocked = config.blocked_hosts.clone();
        if let Some(host) = url::Url::parse(&public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            blocked.push(host);
        }
        let rules = TargetRules::new(config.max_url_bytes, blocked).with_loop_hosts(
            config.own_hosts.iter().cloned(),
            config.loop_allowed_hosts.iter().cloned(),
        );
        let per_minute = std::num::NonZeroU32::new(config.writes_per_minute.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(config.write_burst.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let writes = RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst));
        let hub = Hub::new(HubLimits {
            per_user: config.max_subscribers_per_user,
            total: config.max_subscribers,
            buffer: config.events_buffer,
        });
        let password_limits = PasswordLimits {
            per_client: config.password_attempts_per_client,
            per_link: config.password_attempts_per_link,
            window: THROTTLE_WINDOW,
            memory_mib: config.password_memory_mib(),
        };
        let guard = TargetGuard::new(config.webhooks.networks()?);
        let timeout = std::time::Duration::from_millis(config.webhooks.timeout_ms);
        let sender = Sender::new(guard, timeout).map_err(ControlError::HttpClient)?;
        let webhooks = Dispatcher::new(store.clone(), Arc::new(sender), config.webhooks.clone());
        hub.on_publish(crate::webhooks::dispatch::observer(&webhooks));
        Ok(AppState(Arc::new(Inner {
            store,
            objects,
            thumbnails: tokio::sync::Notify::new(),
            config,
            public_url,
            rules,
            codes: CodeGenerator::new(salt),
            writes,
            internal_secret,
            ingestor,
            hub,
            default_authority,
            default_host,
            password_guard: PasswordGuard::new(password_limits),
            key_touches: dashmap::DashMap::new(),
            webhooks,
            downloads: Default::default(),
            completing: dashmap::DashSet::new(),
        })))
    }

    /// Webhook delivery.
    pub fn webhooks(&self) -> &Arc<Dispatcher> {
        &self.0.webhooks
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// Uploaded files.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.0.objects
    }

    /// An absolute URL for `path` (starting with `/`) under the public URL.
    pub fn public_path(&self, path: &str) -> String {
        format!("{}{path}", self.0.public_url)
    }

    /// Marks upload `id` as being assembled here until the guard drops; `None` if it is
    /// already (a retried `complete` must not copy the whole file a second time).
    pub fn start_completing(&self, id: &str) -> Option<CompletingGuard> {
        self.0
            .completing
            .insert(id.to_owned())
            .then(|| CompletingGuard {
                state: self.clone(),
                id: id.to_owned(),
            })
    }

    /// Downloads counted and not yet written.
    pub fn downloads(&self) -> &crate::uploads::downloads::DownloadCounts {
        &self.0.downloads
    }

    /// Wakes a thumbnail worker: a job was queued.
    pub fn thumbnails_wake(&self) {
        self.0.thumbnails.notify_one();
    }

    /// Waits until a job may be queued, or `at_most`.
    pub async fn thumbnails_wait(&self, at_most: std::time::Duration) {
        let _ = tokio::time::timeout(at_most, self.0.thumbnails.notified()).await;
    }

    /// The settings.
    pub fn config(&self) -> &ControlConfig {
        &self.0.config
    }

    /// The secret proxies present when shipping clicks; `None` turns ingestion off.
    pub fn internal_secret(&self) -> Option<&str> {
        self.0.internal_secret.as_deref()
    }

    /// Click batch ingestion.
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.0.ingestor
    }

    /// The target URL rules.
    pub fn rules(&self) -> &TargetRules {
        &self.0.rules
    }

    /// The code generator.
    pub fn codes(&self) -> &CodeGenerator {
        &self.0.codes
    }

    /// The short URL of `code` on the default domain.
    pub fn short_url(&self, domain: &str, code: &str) -> String {
        if domain.is_empty() {
            format!("{}/{code}", self.0.public_url)
        } else {
            let scheme = self.0.public_url.split("://").next().unwrap_or("http");
            format!("{scheme}://{domain}/{code}")
        }
    }

    /// The public URL's host (lower case, no port): the default domain.
    pub fn default_host(&self) -> &str {
        &self.0.default_host
    }

    /// Whether `host` (a name, or `host:port`) is the default domain's.
    pub fn is_default_host(&self, host: &str) -> bool {
        host.eq_ignore_ascii_case(&self.0.default_authority)
            || shortlink_core::normalize_host(host) == self.0.default_host
    }

    /// The guard on password guessing and argon2 work.
    pub fn password_guard(&self) -> &PasswordGuard {
        &self.0.password_guard
    }

    /// Whether this instance should write back that `key` was used at `now`: true once
    /// per `every` seconds per key.
    pub fn should_touch_key(&self, key: &[u8; KEY_HASH_LEN], now: i64, every: i64) -> bool {
        let mut last = self.0.key_touches.entry(*key).or_insert(i64::MIN);
        if now.saturating_sub(*last) >= every {
            *last = now;
            true
        } else {
            false
        }
    }

    /// Records an admin action in the audit log. A failure is logged, not returned: the
    /// action has happened.
    pub async fn audit(&self, actor: UserId, action: &str, target: &str, detail: &str) {
        let entry = shortlink_core::NewAuditEntry {
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(e) = self.0.store.append_audit(entry).await {
            warn!(error = %e, action, "cannot record an audit entry");
        }
    }

    /// Counts a write by the key; 429 when the key is over its rate.
    pub fn check_write(&self, key_hash: &[u8; KEY_HASH_LEN]) -> Result<(), ApiError> {
        self.0.writes.check_key(key_hash).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs().max(1))
        })
    }

    /// The notification hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.0.hub
    }

    /// Appends an event to `user`'s log. A failure is logged, not returned: the change it
    /// reports has happened, and clients catch up from the log on their next resume.
    pub async fn notify(&self, user: UserId, kind: EventKind, data: &impl serde::Serialize) {
        let data = match serde_json::to_string(data) {
            Ok(data) => data,
            Err(e) => {
                warn!(error = %e, %kind, "cannot encode an event");
                return;
            }
        };
        let event = NewEvent {
            user_id: user,
            kind,
            data,
        };
        if let Err(e) = self.0.store.append_events(vec![event]).await {
            warn!(error = %e, %kind, "cannot record an event");
        }
    }

    /// Forgets idle rate-limit counters.
    pub fn prune_limits(&self) {
        self.0.writes.retain_recent();
        self.0.writes.shrink_to_fit();
        self.0.password_guard.prune();
        let now = shortlink_core::time_util::now_unix();
        self.0.key_touches.retain(|_, at| now - *at < 3600);
    }
}

/// Holds an upload's place in [`AppState::start_completing`] until dropped.
pub struct CompletingGuard {
    state: AppState,
    id: String,
}

impl Drop for CompletingGuard {
    fn drop(&mut self) {
        self.state.0.completing.remove(&self.id);
    }
}
