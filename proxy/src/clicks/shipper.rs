//! The shipper: delivers the batches the taker cuts (over HTTP or in process), spooling
//! what cannot be delivered, and removes each batch's journal file once it is delivered
//! or spooled. It runs in the idle scheduling class while it keeps up: nothing is lost
//! while it is held up, since the batches are in the journal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::lb::{LoadBalancer, selection::RoundRobin};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_core::ClickBatch;
use shortlink_sched::Background;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::ClickStats;
use super::claim::Owned;
use super::spool::{Oldest, Spool};
use super::taker::{Cut, TAKE_EVERY};

/// A batch handled this long after it was cut (the shipper starved, or behind) moves the
/// shipper to the normal scheduling class.
const LATE: Duration = Duration::from_millis(50);
/// Batches handled on time in a row before the shipper returns to the idle class.
const ON_TIME: u32 = 8;
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
    /// Deliver from the idle scheduling class while batches are handled on time (one
    /// handled 50 ms after it was cut moves the shipper back to the normal class).
    pub idle_class: bool,
    /// Journal every take (see `journal.rs`) so a crash loses one take interval at most.
    pub journal: bool,
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

/// The background service that delivers, spools and replays click batches. Its state
/// lives in [`Shipping`], which the service's one run takes and owns.
pub struct ClickShipper {
    shipping: Mutex<Option<Shipping>>,
}

impl ClickShipper {
    pub(super) fn new(
        cuts: mpsc::UnboundedReceiver<Cut>,
        spool: Spool,
        owned: Owned,
        stats: Arc<ClickStats>,
        config: ShipperConfig,
        client: reqwest::Client,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
    ) -> ClickShipper {
        let shipping = Shipping {
            cuts,
            spool: Arc::new(Mutex::new(spool)),
            _owned: owned,
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
            stats,
            config,
            client,
            upstreams,
        };
        ClickShipper {
            shipping: Mutex::new(Some(shipping)),
        }
    }
}

/// The shipper at work: what it delivers through and the spool's retry state.
struct Shipping {
    cuts: mpsc::UnboundedReceiver<Cut>,
    /// This process's spool and journal folder, locked until the last batch is dealt with.
    _owned: Owned,
    /// Its I/O runs on the blocking pool ([`Shipping::on_spool`]).
    spool: Arc<Mutex<Spool>>,
    /// The wait after the next failed replay.
    backoff: Duration,
    /// No replay before this.
    next_try: Instant,
    stats: Arc<ClickStats>,
    config: ShipperConfig,
    client: reqwest::Client,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
}

impl Shipping {
    /// Runs `f` on the spool on tokio's blocking pool.
    async fn on_spool<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> R {
        super::blocking(&self.spool, f).await
    }

    fn spool_is_empty(&self) -> bool {
        self.spool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

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
        counter.fetch_add(batch.total(), Ordering::Relaxed);
    }

    /// Sends a batch, or spools it when the spool is not empty (order) or sending fails;
    /// then removes its journal file.
    async fn deliver(&mut self, batch: ClickBatch, journal: Option<PathBuf>, timeout: Duration) {
        let mut settled = false;
        if self.spool_is_empty() {
            match self.send(&batch, timeout).await {
                Delivery::Accepted => {
                    self.count(&self.stats.shipped, &batch);
                    settled = true;
                }
                Delivery::Rejected(why) => {
                    warn!(%why, clicks = batch.clicks.len(), "control plane refused a click batch");
                    self.count(&self.stats.rejected, &batch);
                    settled = true;
                }
                Delivery::Unavailable(why) => {
                    warn!(%why, "cannot ship clicks; spooling them");
                    self.next_try = Instant::now() + self.backoff;
                }
            }
        }
        let (batch, spooled) = self
            .on_spool(move |spool| {
                let spooled = settled || spool.push(&batch);
                if let Some(path) = journal
                    && let Err(error) = std::fs::remove_file(&path)
                {
                    warn!(%error, path = %path.display(), "cannot remove a click journal file");
                }
                (batch, spooled)
            })
            .await;
        if settled {
            return;
        }
        if spooled {
            self.count(&self.stats.spooled, &batch);
        } else {
            self.count(&self.stats.dropped, &batch);
        }
    }

    /// Replays spooled batches, oldest first, while the control plane takes them.
    async fn replay(&mut self) {
        while !self.spool_is_empty() && Instant::now() >= self.next_try {
            let batch = match self.on_spool(Spool::oldest).await {
                Oldest::Empty => return,
                Oldest::Batch(batch) => batch,
                Oldest::Damaged { why, kept } => {
                    self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    match kept {
                        Ok(kept) => {
                            error!(%why, kept = %kept.display(), "a spooled click batch cannot be read; kept aside")
                        }
                        Err(e) => {
                            error!(%why, error = %e, "a spooled click batch cannot be read, nor kept aside")
                        }
                    }
                    continue;
                }
            };
            match self.send(&batch, Duration::from_secs(5)).await {
                Delivery::Accepted => {
                    self.count(&self.stats.shipped, &batch);
                    self.on_spool(Spool::pop).await;
                    self.backoff = BACKOFF_MIN;
                }
                Delivery::Rejected(why) => {
                    warn!(%why, "control plane refused a spooled click batch; dropping it");
                    self.count(&self.stats.rejected, &batch);
                    self.on_spool(Spool::pop).await;
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

/// Enters the class deferrable work runs in: idle while the shipper keeps up.
fn deferrable(class: &mut Background, punctual: bool) {
    if punctual {
        class.idle();
    } else {
        class.normal();
    }
}

/// Whether the shipper keeps up, from how late it handles batches.
#[derive(Debug)]
struct Punctuality {
    /// Batches handled on time in a row.
    on_time: u32,
}

impl Default for Punctuality {
    /// A new shipper counts as keeping up.
    fn default() -> Self {
        Punctuality { on_time: ON_TIME }
    }
}

impl Punctuality {
    /// Records a batch handled `lateness` after it was cut (`None`: stopping) and answers
    /// whether the shipper may now run in the idle class: not after a late one, until
    /// [`ON_TIME`] in a row were on time again.
    fn take(&mut self, lateness: Option<Duration>) -> bool {
        match lateness {
            Some(late) if late < LATE => {
                self.on_time = self.on_time.saturating_add(1);
            }
            _ => self.on_time = 0,
        }
        self.on_time >= ON_TIME
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
    /// Delivers batches until the taker has cut its last (at shutdown), replaying the
    /// spool while not shutting down.
    async fn run(mut self, shutdown: ShutdownWatch) {
        let mut replays = tokio::time::interval(TAKE_EVERY);
        replays.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut class = Background::new(self.config.idle_class);
        let mut punctuality = Punctuality::default();
        let mut punctual = true;
        loop {
            tokio::select! {
                cut = self.cuts.recv() => {
                    let Some(cut) = cut else { break };
                    let stopping = *shutdown.borrow();
                    punctual = punctuality.take((!stopping).then(|| cut.at.elapsed()));
                    deferrable(&mut class, punctual);
                    // Shutting down: one short attempt, then the spool.
                    let timeout = if stopping { Duration::from_millis(500) } else { Duration::from_secs(5) };
                    self.deliver(cut.batch, cut.journal, timeout).await;
                }
                _ = replays.tick() => {
                    if !*shutdown.borrow() && !self.spool_is_empty() {
                        deferrable(&mut class, punctual);
                        self.replay().await;
                    }
                }
            }
        }
        class.normal();
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
    fn the_shipper_leaves_the_idle_class_while_it_runs_late() {
        let on_time = Some(Duration::from_millis(1));
        let late = Some(LATE);
        let mut p = Punctuality::default();
        assert!(p.take(on_time), "a new shipper keeps up");
        assert!(!p.take(late), "a late take: normal class");
        for i in 1..ON_TIME {
            assert!(!p.take(on_time), "on time {i} times: not yet idle");
        }
        assert!(p.take(on_time), "on time long enough: idle again");
        assert!(!p.take(None), "stopping: normal class");
    }
}
