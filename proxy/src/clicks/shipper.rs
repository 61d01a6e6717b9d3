//! The shipper: takes the capture shards on a timer, folds and batches the clicks, and
//! delivers the batches (over HTTP or in process), spooling what cannot be delivered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::lb::{LoadBalancer, selection::RoundRobin};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_core::{ClickBatch, ClickEvent};
use shortlink_sched::Background;
use tracing::{info, warn};

use super::ClickStats;
use super::capture::{ClickSink, IdentityHasher};
use super::spool::Spool;

/// How often the shards are taken. Each take starts every visit's fold afresh (the next
/// click of a visit builds its event again), so taking less often builds fewer events;
/// batches are cut by the second anyway ([`ShipperConfig::batch_every`]).
const DRAIN_EVERY: Duration = Duration::from_millis(250);
/// A take this late (the shipper starved, or behind) moves the shipper to the normal
/// scheduling class.
const TAKE_LATE: Duration = Duration::from_millis(50);
/// Takes on time in a row before the shipper returns to the idle class (2 s).
const ON_TIME_TAKES: u32 = 8;
/// First and largest wait between spool replay attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why an in-process delivery failed.
#[derive(Debug)]
pub enum LocalIngestError {
    /// The batch is invalid; retrying cannot help.
    Rejected(String),
    /// It could not be stored now; keep it.
    Unavailable(String),
}

/// Delivery to a control plane in the same process (`serve`), skipping HTTP and JSON.
#[async_trait]
pub trait LocalIngest: Send + Sync {
    /// Validates, enriches and stores a batch.
    async fn ingest(&self, batch: &ClickBatch) -> Result<(), LocalIngestError>;
}

/// Settings of the shipper.
#[derive(Clone)]
pub struct ShipperConfig {
    /// Clicks per batch at most.
    pub batch_max: usize,
    /// A batch is sent at the latest this long after its first click.
    pub batch_every: Duration,
    /// Folder of spooled batches.
    pub spool_dir: PathBuf,
    /// Spool size limit in bytes; batches beyond it are dropped and counted.
    pub spool_max_bytes: u64,
    /// Shared secret for the control plane.
    pub secret: Option<String>,
    /// In-process delivery, used instead of HTTP when set.
    pub local: Option<Arc<dyn LocalIngest>>,
    /// Ship from the idle scheduling class while takes are on time (a take 50 ms late
    /// moves the shipper back to the normal class).
    pub idle_class: bool,
}

/// How a delivery attempt ended.
enum Delivery {
    /// Accepted (applied now or before).
    Accepted,
    /// Refused as invalid; retrying cannot help.
    Rejected(String),
    /// Not delivered now; keep it.
    Unavailable(String),
}

/// The background service that batches, ships, spools and replays clicks. Its state
/// lives in [`Shipping`], which the service's one run takes and owns.
pub struct ClickShipper {
    shipping: std::sync::Mutex<Option<Shipping>>,
}

impl ClickShipper {
    pub(super) fn new(
        sink: ClickSink,
        spool: Spool,
        stats: Arc<ClickStats>,
        config: ShipperConfig,
        client: reqwest::Client,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
    ) -> ClickShipper {
        let shipping = Shipping {
            sink,
            spool,
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
            stats,
            config,
            client,
            upstreams,
            drained: None,
        };
        ClickShipper {
            shipping: std::sync::Mutex::new(Some(shipping)),
        }
    }

    /// At shutdown, keeps shipping until `drained` resolves (the listener's connections
    /// have ended) or `limit` passes, and only then makes the last take: no redirect is
    /// answered after it.
    pub fn after_drain(self, drained: tokio::sync::oneshot::Receiver<()>, limit: Duration) -> Self {
        if let Ok(mut shipping) = self.shipping.lock()
            && let Some(shipping) = shipping.as_mut()
        {
            shipping.drained = Some((drained, limit));
        }
        self
    }
}

/// The shipper at work: what it delivers through and the spool's retry state.
struct Shipping {
    sink: ClickSink,
    spool: Spool,
    /// The wait after the next failed replay.
    backoff: Duration,
    /// No replay before this.
    next_try: Instant,
    stats: Arc<ClickStats>,
    config: ShipperConfig,
    client: reqwest::Client,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
    /// What the last take waits for at shutdown (see [`ClickShipper::after_drain`]).
    drained: Option<(tokio::sync::oneshot::Receiver<()>, Duration)>,
}

fn new_batch_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Shipping {
    async fn send(&self, batch: &ClickBatch, timeout: Duration) -> Delivery {
        if let Some(local) = &self.config.local {
            return match local.ingest(batch).await {
                Ok(()) => Delivery::Accepted,
                Err(LocalIngestError::Rejected(why)) => Delivery::Rejected(why),
                Err(LocalIngestError::Unavailable(why)) => Delivery::Unavailable(why),
            };
        }
        let Some(secret) = &self.config.secret else {
            return Delivery::Unavailable("no internal secret configured".into());
        };
        let Some(backend) = self.upstreams.select(b"", 256) else {
            return Delivery::Unavailable("no healthy control plane".into());
        };
        let url = format!("http://{}/internal/v1/clicks", backend.addr);
        let response = self
            .client
            .post(url)
            .header(shortlink_core::hop::SECRET_HEADER, secret)
            .json(batch)
            .timeout(timeout)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Delivery::Accepted,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                // A wrong secret or an overloaded control plane is not the batch's fault.
                if status.is_server_error()
                    || matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429)
                {
                    Delivery::Unavailable(format!("{status}: {body}"))
                } else {
                    Delivery::Rejected(format!("{status}: {body}"))
                }
            }
            Err(e) => Delivery::Unavailable(e.to_string()),
        }
    }

    fn count(&self, counter: &AtomicU64, batch: &ClickBatch) {
        let clicks: u64 = batch.clicks.iter().map(|c| u64::from(c.count.max(1))).sum();
        counter.fetch_add(clicks, Ordering::Relaxed);
    }

    /// Sends a fresh batch, or spools it when the spool is not empty (order) or sending fails.
    async fn deliver(&mut self, clicks: Vec<ClickEvent>, timeout: Duration) {
        let batch = ClickBatch {
            batch_id: new_batch_id(),
            clicks,
        };
        if self.spool.is_empty() {
            match self.send(&batch, timeout).await {
                Delivery::Accepted => return self.count(&self.stats.shipped, &batch),
                Delivery::Rejected(why) => {
                    warn!(%why, clicks = batch.clicks.len(), "control plane refused a click batch");
                    return self.count(&self.stats.rejected, &batch);
                }
                Delivery::Unavailable(why) => {
                    warn!(%why, "cannot ship clicks; spooling them");
                    self.next_try = Instant::now() + self.backoff;
                }
            }
        }
        if self.spool.push(&batch) {
            self.count(&self.stats.spooled, &batch);
        } else {
            self.count(&self.stats.dropped, &batch);
        }
    }

    /// Replays spooled batches, oldest first, while the control plane takes them.
    async fn replay(&mut self) {
        while !self.spool.is_empty() && Instant::now() >= self.next_try {
            let Some(batch) = self.spool.oldest() else {
                warn!("dropping an unreadable spooled batch");
                self.spool.pop();
                continue;
            };
            match self.send(&batch, Duration::from_secs(5)).await {
                Delivery::Accepted => {
                    self.count(&self.stats.shipped, &batch);
                    self.spool.pop();
                    self.backoff = BACKOFF_MIN;
                }
                Delivery::Rejected(why) => {
                    warn!(%why, "control plane refused a spooled click batch; dropping it");
                    self.count(&self.stats.rejected, &batch);
                    self.spool.pop();
                }
                Delivery::Unavailable(_) => {
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return;
                }
            }
        }
    }
}

/// The clicks of the batch being formed, with identical ones folded: clicks that differ
/// only in their milliseconds within one second (the same visitor hammering a link, a
/// load test, a bot) become one event with a count. The stats are the same; the work of
/// shipping, enriching and storing them is not.
///
/// Identity is [`click_identity`], a hash of every field but the milliseconds: comparing
/// the strings themselves cost more than the rest of the shipper. Two different visits
/// would have to collide in it to be folded (and even then every click is still counted).
#[derive(Default)]
pub(super) struct Coalescer {
    events: Vec<ClickEvent>,
    /// Identity of an event → its index in `events`.
    index: std::collections::HashMap<u128, usize, IdentityHasher>,
}

impl Coalescer {
    pub(super) fn add(&mut self, identity: u128, click: ClickEvent) {
        let count = click.count.max(1);
        match self.index.entry(identity) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                let held = &mut self.events[*slot.get()];
                held.count = held.count.saturating_add(count);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.events.len());
                self.events.push(click);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(super) fn take(&mut self) -> Vec<ClickEvent> {
        self.index.clear();
        std::mem::take(&mut self.events)
    }
}

/// Whether the shipper keeps up, from how late its takes run.
#[derive(Debug)]
struct Punctuality {
    /// Takes on time in a row.
    on_time: u32,
}

impl Default for Punctuality {
    /// A new shipper counts as keeping up.
    fn default() -> Self {
        Punctuality {
            on_time: ON_TIME_TAKES,
        }
    }
}

impl Punctuality {
    /// Records a take `lateness` after it was due (`None`: the last one, to stop) and
    /// answers whether the shipper may now run in the idle class: not after a late take,
    /// until [`ON_TIME_TAKES`] takes in a row were on time again.
    fn take(&mut self, lateness: Option<Duration>) -> bool {
        match lateness {
            Some(late) if late < TAKE_LATE => {
                self.on_time = self.on_time.saturating_add(1);
            }
            _ => self.on_time = 0,
        }
        self.on_time >= ON_TIME_TAKES
    }
}

#[async_trait]
impl BackgroundService for ClickShipper {
    async fn start(&self, shutdown: ShutdownWatch) {
        let shipping = self.shipping.lock().ok().and_then(|mut s| s.take());
        match shipping {
            Some(shipping) => shipping.run(shutdown).await,
            None => warn!("the click shipper runs once; a second start does nothing"),
        }
    }
}

impl Shipping {
    /// Ships until shutdown (and the listener's drain), then delivers or spools what it holds.
    async fn run(mut self, shutdown: ShutdownWatch) {
        let mut pending = Coalescer::default();
        let mut oldest: Option<Instant> = None;
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The shipper's work can wait a little, redirects cannot: it runs in the idle
        // scheduling class while its takes are on time (this service has a thread of its
        // own), in the normal class while they run late, and always to stop.
        let mut class = Background::new(self.config.idle_class);
        let mut punctuality = Punctuality::default();
        let drained = self.drained.take();
        let mut stop = std::pin::pin!(async move {
            let mut shutdown = shutdown;
            let _ = shutdown.changed().await;
            if let Some((drained, limit)) = drained {
                let _ = tokio::time::timeout(limit, drained).await;
            }
        });
        loop {
            let lateness = tokio::select! {
                () = &mut stop => None,
                due = drain.tick() => Some(due.elapsed()),
            };
            let stopping = lateness.is_none();
            if punctuality.take(lateness) {
                class.idle();
            } else {
                class.normal();
            }
            for (identity, click) in self.sink.take() {
                oldest.get_or_insert_with(Instant::now);
                pending.add(identity, click);
                // The limit is on events (what a batch carries and ingestion accepts):
                // folded clicks make batches of many clicks, formed by time.
                if pending.events.len() >= self.config.batch_max {
                    let batch = pending.take();
                    self.deliver(batch, Duration::from_secs(5)).await;
                    oldest = None;
                }
            }
            if stopping {
                break;
            }
            if oldest.is_some_and(|t| t.elapsed() >= self.config.batch_every) {
                let batch = pending.take();
                self.deliver(batch, Duration::from_secs(5)).await;
                oldest = None;
            }
            self.replay().await;
        }
        // Shutting down: one short attempt, then the spool. Nothing in memory is lost.
        if !pending.is_empty() {
            let batch = pending.take();
            self.deliver(batch, Duration::from_millis(500)).await;
        }
        let s = &self.stats;
        info!(
            captured = s.captured.load(Ordering::Relaxed),
            shipped = s.shipped.load(Ordering::Relaxed),
            spooled = s.spooled.load(Ordering::Relaxed),
            dropped = s.dropped.load(Ordering::Relaxed),
            rejected = s.rejected.load(Ordering::Relaxed),
            "click shipper stopped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipper_leaves_the_idle_class_while_its_takes_run_late() {
        let on_time = Some(Duration::from_millis(1));
        let late = Some(TAKE_LATE);
        let mut p = Punctuality::default();
        assert!(p.take(on_time), "a new shipper keeps up");
        assert!(!p.take(late), "a late take: normal class");
        for i in 1..ON_TIME_TAKES {
            assert!(!p.take(on_time), "on time {i} times: not yet idle");
        }
        assert!(p.take(on_time), "on time long enough: idle again");
        assert!(!p.take(None), "stopping: normal class");
    }
}
