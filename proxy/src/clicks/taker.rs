//! The taker: takes the capture shards on a timer, journals each take, folds the clicks
//! into batches and hands each batch, cut by size or age, to the shipper. It has a thread
//! of its own in the normal scheduling class and never waits on a delivery, so a crash
//! loses the clicks of one take interval at most, however busy the CPUs or slow the
//! control plane.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_core::{ClickBatch, ClickEvent};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::capture::{ClickSink, IdentityHasher};
use super::journal::{BatchFile, Journal};

/// How often the shards are taken, and so the most a crash can lose: each take is
/// journaled at once. Each take starts every visit's fold afresh (the next click of a
/// visit builds its event again); the batch's [`Coalescer`] folds them again.
pub(super) const TAKE_EVERY: Duration = Duration::from_millis(100);

/// A batch cut by the taker, for the shipper.
pub(super) struct Cut {
    /// The batch, with the id its clicks were journaled under.
    pub(super) batch: ClickBatch,
    /// Its journal file, removed once the batch is delivered or spooled.
    pub(super) journal: Option<PathBuf>,
    /// When it was cut (how late the shipper is).
    pub(super) at: Instant,
}

/// How batches are cut.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cutting {
    /// Events per batch at most.
    pub(super) batch_max: usize,
    /// A batch is cut at the latest this long after its first click.
    pub(super) batch_every: Duration,
}

/// The background service that takes, journals and batches clicks.
pub struct ClickTaker {
    taking: Mutex<Option<Taking>>,
}

struct Taking {
    sink: ClickSink,
    /// The journal and the batch being formed's file; their I/O runs on the blocking pool.
    journal: Option<Arc<Mutex<Files>>>,
    cutting: Cutting,
    cuts: mpsc::UnboundedSender<Cut>,
    /// What the last take waits for at shutdown (see [`ClickTaker::after_drain`]).
    drained: Option<(watch::Receiver<()>, Duration)>,
}

struct Files {
    journal: Journal,
    current: Option<BatchFile>,
}

impl ClickTaker {
    pub(super) fn new(
        sink: ClickSink,
        journal: Option<Journal>,
        cutting: Cutting,
        cuts: mpsc::UnboundedSender<Cut>,
    ) -> ClickTaker {
        let journal = journal.map(|journal| {
            Arc::new(Mutex::new(Files {
                journal,
                current: None,
            }))
        });
        ClickTaker {
            taking: Mutex::new(Some(Taking {
                sink,
                journal,
                cutting,
                cuts,
                drained: None,
            })),
        }
    }

    /// At shutdown, keeps taking until `drained` resolves (the listener's connections
    /// have ended) or `limit` passes, and only then makes the last take: no redirect is
    /// answered after it.
    pub fn after_drain(self, drained: watch::Receiver<()>, limit: Duration) -> Self {
        if let Ok(mut taking) = self.taking.lock()
            && let Some(taking) = taking.as_mut()
        {
            taking.drained = Some((drained, limit));
        }
        self
    }
}

#[async_trait]
impl BackgroundService for ClickTaker {
    async fn start(&self, shutdown: ShutdownWatch) {
        let taking = self.taking.lock().ok().and_then(|mut t| t.take());
        match taking {
            Some(taking) => taking.run(shutdown).await,
            None => warn!("the click taker runs once; a second start does nothing"),
        }
    }
}

impl Taking {
    /// Takes until shutdown (and the listener's drain), then cuts what it holds; the
    /// shipper ends once it has dealt with the last batch.
    async fn run(mut self, shutdown: ShutdownWatch) {
        let mut pending = Coalescer::default();
        let mut oldest: Option<Instant> = None;
        let mut batch_id = new_batch_id();
        let mut tick = tokio::time::interval(TAKE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drained = self.drained.take();
        let mut stop = std::pin::pin!(async move {
            let mut shutdown = shutdown;
            let _ = shutdown.changed().await;
            if let Some((mut drained, limit)) = drained {
                // The listener drops its sender once drained.
                let _ = tokio::time::timeout(limit, drained.changed()).await;
            }
        });
        loop {
            let stopping = tokio::select! {
                () = &mut stop => true,
                _ = tick.tick() => false,
            };
            // The take goes to the journal, then to the batch being formed, in pieces
            // that fit it: the limit is on events (what a batch carries and ingestion
            // accepts); folded clicks make batches of many clicks, formed by time.
            let mut taken = self.sink.take();
            while !taken.is_empty() {
                let room = self.cutting.batch_max.saturating_sub(pending.events.len());
                let rest = taken.split_off(room.min(taken.len()));
                let (identities, clicks): (Vec<u128>, Vec<ClickEvent>) =
                    std::mem::replace(&mut taken, rest).into_iter().unzip();
                let clicks = self.journal(&batch_id, clicks).await;
                oldest.get_or_insert_with(Instant::now);
                for (identity, click) in identities.into_iter().zip(clicks) {
                    pending.add(identity, click);
                }
                if pending.events.len() >= self.cutting.batch_max {
                    self.cut(&mut pending, &mut batch_id).await;
                    oldest = None;
                }
            }
            if stopping {
                break;
            }
            if oldest.is_some_and(|t| t.elapsed() >= self.cutting.batch_every) {
                self.cut(&mut pending, &mut batch_id).await;
                oldest = None;
            }
        }
        if !pending.is_empty() {
            self.cut(&mut pending, &mut batch_id).await;
        }
        // Dropping the sender tells the shipper this was the last batch.
    }

    /// Journals the clicks of a take (bound for `batch_id`) and hands them back. A journal
    /// that cannot be written is reported; the clicks go on to their batch all the same.
    async fn journal(&self, batch_id: &str, clicks: Vec<ClickEvent>) -> Vec<ClickEvent> {
        let Some(files) = &self.journal else {
            return clicks;
        };
        let batch_id = batch_id.to_owned();
        super::blocking(files, move |files| {
            let appended = match &mut files.current {
                Some(file) => file.append(&clicks),
                None => files.journal.create(&batch_id).and_then(|mut file| {
                    let appended = file.append(&clicks);
                    files.current = Some(file);
                    appended
                }),
            };
            if let Err(error) = appended {
                warn!(%error, "cannot write the click journal");
            }
            clicks
        })
        .await
    }

    /// Hands the batch being formed to the shipper (its journal file synced) and starts
    /// the next one.
    async fn cut(&self, pending: &mut Coalescer, batch_id: &mut String) {
        let journal = match &self.journal {
            Some(files) => {
                super::blocking(files, |files| {
                    let mut file = files.current.take()?;
                    if let Err(error) = file.sync() {
                        warn!(%error, "cannot sync the click journal");
                    }
                    Some(file.path().to_owned())
                })
                .await
            }
            None => None,
        };
        let batch = ClickBatch {
            batch_id: std::mem::replace(batch_id, new_batch_id()),
            clicks: pending.take(),
        };
        let cut = Cut {
            batch,
            journal,
            at: Instant::now(),
        };
        if self.cuts.send(cut).is_err() {
            warn!("the click shipper has stopped; a batch stays in the journal for the next start");
        }
    }
}

fn new_batch_id() -> String {
    format!("{:032x}", rand::random::<u128>())
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
