//! Click counts folded across batches: batches ingested at the same time add their
//! deltas into one set, written by one of them (a group commit), so a row that many
//! batches touch (a busy link's hour, its country, its owner's day) costs one write per
//! round instead of one per batch. Counts are this process's running totals, written as
//! absolute values per writer (see [`Tally`]). The round also writes one visitor sketch
//! row per link and period (the union of its batches' sketches, keyed by one of their
//! batch ids) and one `link.clicked` event per link. Each batch keeps its own claim; the
//! round's outcome is every batch's outcome.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use shortlink_core::LinkId;
use shortlink_store::StoreError;
use thiserror::Error;
use tokio::sync::oneshot;

use shortlink_core::UserId;
use shortlink_store::rollup::LinkDelta;
use shortlink_store::visitors::Visitors;

use crate::clicks::{VISITORS_DAY_INSERT, VISITORS_HOUR_INSERT, Write};
use crate::{CqlStore, Kind, ids, permanent, run_concurrently};

/// Writes a writer's hourly row of a link (link, month, hour, writer, total, bots; stamp).
pub(crate) const HOUR_WRITE: &str = "INSERT INTO {ks}.rollup_hour_w \
     (link_id, month, hour, writer, total, bots) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";
/// Writes a writer's daily row of a link (link, month, day, dim, key, writer, n; stamp).
pub(crate) const DAY_WRITE: &str = "INSERT INTO {ks}.rollup_day_w \
     (link_id, month, day, dim, key, writer, n) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";
/// Writes a writer's hourly row of an owner (owner, month, hour, writer, total, bots; stamp).
pub(crate) const OWNER_HOUR_WRITE: &str = "INSERT INTO {ks}.owner_rollup_hour_w \
     (owner, month, hour, writer, total, bots) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";
/// Writes a writer's daily row of an owner's link (owner, month, day, link, writer, total,
/// bots; stamp).
pub(crate) const OWNER_DAY_WRITE: &str = "INSERT INTO {ks}.owner_link_day_w \
     (owner, month, day, link_id, writer, total, bots) VALUES (?, ?, ?, ?, ?, ?, ?) \
     USING TIMESTAMP ?";
/// Writes a writer's click total of a link (link, writer, clicks; stamp).
pub(crate) const LINK_WRITE: &str = "INSERT INTO {ks}.link_clicks_w (link_id, writer, clicks) \
     VALUES (?, ?, ?) USING TIMESTAMP ?";

/// How long a writer slot is held without a renewal (the lease's TTL).
const SLOT_LEASE_SECS: i32 = 30;

/// The lease as a duration.
const SLOT_LEASE: Duration = Duration::from_secs(SLOT_LEASE_SECS as u64);

/// Writer slots; a control plane holds one at a time.
const WRITER_SLOTS: i64 = 1024;

/// Attempts of one write of a round; after the last its rows wait for the next round.
const WRITE_ATTEMPTS: u32 = 6;

/// The wait before a write's second attempt, doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Rows per write (an unlogged batch of one partition).
const ROWS_PER_WRITE: usize = 100;

/// A count row, keyed as stored but for the writer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Row {
    /// A link's hour: (total, bots).
    Hour(LinkId, i64),
    /// A link's day in one dimension's value: (n, 0).
    Day(LinkId, i64, &'static str, String),
    /// An owner's hour: (total, bots).
    OwnerHour(UserId, i64),
    /// An owner's day of one link: (total, bots).
    OwnerDay(UserId, i64, LinkId),
    /// A link's clicks: (n, 0).
    Link(LinkId),
}

impl Row {
    /// When the period it counts starts (a link's total has none).
    fn starts(&self) -> Option<i64> {
        match self {
            Row::Hour(_, at)
            | Row::Day(_, at, ..)
            | Row::OwnerHour(_, at)
            | Row::OwnerDay(_, at, _) => Some(*at),
            Row::Link(_) => None,
        }
    }

    /// When the period it counts ends (a link's total has none).
    fn ends(&self) -> Option<i64> {
        match self {
            Row::Hour(_, at) | Row::OwnerHour(_, at) => Some(at.saturating_add(3600)),
            Row::Day(_, at, ..) | Row::OwnerDay(_, at, _) => Some(at.saturating_add(86_400)),
            Row::Link(_) => None,
        }
    }

    /// The partition holding it: (table, link or owner, month).
    fn partition(&self) -> (u8, i64, i32) {
        match self {
            Row::Hour(link, at) => (0, *link, ids::month_of(*at)),
            Row::Day(link, at, ..) => (1, *link, ids::month_of(*at)),
            Row::OwnerHour(owner, at) => (2, *owner, ids::month_of(*at)),
            Row::OwnerDay(owner, at, _) => (3, *owner, ids::month_of(*at)),
            Row::Link(link) => (4, *link, 0),
        }
    }
}

/// Count additions of one or more batches, with what else their round writes.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    /// Row → (first, second) addition (see [`Row`]).
    pub(crate) counts: HashMap<Row, (i64, i64)>,
    /// (link, hour) → the hour's human visitors.
    pub(crate) visitor_hours: HashMap<(LinkId, i64), Visitors>,
    /// (link, day) → the day's human visitors.
    pub(crate) visitor_days: HashMap<(LinkId, i64), Visitors>,
    /// link → its clicks, for its one `link.clicked` event.
    pub(crate) clicked: HashMap<LinkId, Clicked>,
    /// The batch id the sketch rows of these deltas are keyed by (the first batch's).
    pub(crate) batch_id: String,
}

/// A link's clicks in the batches of a round, and whose link it is.
#[derive(Debug)]
pub(crate) struct Clicked {
    pub(crate) delta: LinkDelta,
    pub(crate) owner: UserId,
    pub(crate) domain: String,
    pub(crate) code: String,
}

impl Deltas {
    /// Adds `other` into this set.
    pub(crate) fn merge(&mut self, other: Deltas) {
        for (row, (a, b)) in other.counts {
            let slot = self.counts.entry(row).or_default();
            slot.0 += a;
            slot.1 += b;
        }
        for (key, visitors) in other.visitor_hours {
            self.visitor_hours.entry(key).or_default().merge(&visitors);
        }
        for (key, visitors) in other.visitor_days {
            self.visitor_days.entry(key).or_default().merge(&visitors);
        }
        for (link, clicked) in other.clicked {
            match self.clicked.entry(link) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(clicked);
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let d = &mut slot.get_mut().delta;
                    d.clicks += clicked.delta.clicks;
                    d.bots += clicked.delta.bots;
                    d.first_ms = d.first_ms.min(clicked.delta.first_ms);
                    d.last_ms = d.last_ms.max(clicked.delta.last_ms);
                }
            }
        }
        if self.batch_id.is_empty() {
            self.batch_id = other.batch_id;
        }
    }
}

/// How a round went for every batch in it: its counts, then its sketches and events
/// (written only when every count was).
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    pub(crate) counters: Round,
    pub(crate) rest: Result<(), RoundFailed>,
}

/// How a round's count writes went (for every batch in it).
#[derive(Debug, Clone)]
pub(crate) enum Round {
    /// Every count is written.
    All,
    /// Nothing was added or written: each batch may be sent again whole.
    Nothing(RoundFailed),
    /// The counts are added in memory, some not written yet: a later round writes them
    /// (the batch stays claimed until then).
    Carried(RoundFailed),
}

/// Why a round's count writes failed (the first driver error, as text: a round's
/// outcome goes to every batch in it).
#[derive(Debug, Clone, Error)]
#[error("count writes failed: {0}")]
pub(crate) struct RoundFailed(String);

impl From<RoundFailed> for StoreError {
    fn from(error: RoundFailed) -> Self {
        StoreError::unavailable(error)
    }
}

/// This process's counts: the running totals of the rows it writes, a period's under a
/// writer id of its own, a link's total under the writer slot it holds. A row is written
/// as its absolute value with the round's timestamp, so a write whose answer was lost is
/// sent again as it was and changes nothing if it had landed.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The writer id of this process's period rows (random, above every slot): the rows
    /// of a period are bounded by the processes running in it.
    process: i64,
    /// The writer slot held for links' totals (`count_writers`, by lease; -1: none): a
    /// total never ends, so its writers are slots, reused, not processes.
    slot: i64,
    /// This process's name in the lease (random).
    holder: i64,
    /// When the lease was last taken or renewed (None: no slot held).
    renewed: Option<std::time::Instant>,
    /// The timestamp of the last round's writes, in microseconds (rising).
    stamp: i64,
    values: HashMap<Row, (i64, i64)>,
    /// Rows whose value is not known written.
    unwritten: HashSet<Row>,
    /// Claimed batches of earlier rounds whose counts wait in `unwritten` rows.
    carried: Vec<String>,
    /// Period rows starting before this may have been forgotten (read when met again).
    forgotten_before: i64,
    /// Whether a link's total was forgotten (read when met again).
    links_forgotten: bool,
    /// Rows remembered before forgetting written ones.
    capacity: usize,
    /// How long after its last renewal the slot is written to: the lease less a request's
    /// timeout and a second, so no write is in flight when another process may take it.
    trust_for: Duration,
}

impl Tally {
    fn new(capacity: usize, request_timeout: Duration) -> Tally {
        Tally {
            process: ((rand::random::<u64>() >> 2) | (1 << 62)) as i64,
            slot: -1,
            holder: rand::random(),
            renewed: None,
            stamp: 0,
            values: HashMap::new(),
            unwritten: HashSet::new(),
            carried: Vec::new(),
            forgotten_before: i64::MIN,
            links_forgotten: false,
            capacity,
            trust_for: SLOT_LEASE.saturating_sub(request_timeout + Duration::from_secs(1)),
        }
    }

    /// Whether this writer may have written `row` and forgotten its value.
    fn forgot(&self, row: &Row) -> bool {
        !self.values.contains_key(row)
            && match row.starts() {
                Some(at) => at < self.forgotten_before,
                None => self.links_forgotten,
            }
    }

    /// Over capacity, forgets written rows of periods that ended over an hour ago, then if
    /// still over three quarters of it every written row.
    fn make_room(&mut self, now: i64) {
        if self.values.len() <= self.capacity {
            return;
        }
        self.forget(|row| row.ends().is_some_and(|end| end < now - 3600));
        if self.values.len() > self.capacity * 3 / 4 {
            self.forget(|_| true);
        }
    }

    fn forget(&mut self, which: impl Fn(&Row) -> bool) {
        let (mut before, mut links) = (self.forgotten_before, self.links_forgotten);
        let unwritten = &self.unwritten;
        self.values.retain(|row, _| {
            if unwritten.contains(row) || !which(row) {
                return true;
            }
            match row.starts() {
                Some(at) => before = before.max(at.saturating_add(1)),
                None => links = true,
            }
            false
        });
        (self.forgotten_before, self.links_forgotten) = (before, links);
    }

    /// Lets go of the slot and of the links' totals remembered under it (the slot is, or
    /// may be, another's now); returns the batches whose counts were not all written
    /// (their totals may be short: they are reported uncertain when sent again).
    fn lapse(&mut self) -> Vec<String> {
        self.values.retain(|row, _| !matches!(row, Row::Link(_)));
        self.unwritten.retain(|row| !matches!(row, Row::Link(_)));
        self.renewed = None;
        std::mem::take(&mut self.carried)
    }

    /// Starts writing links' totals under `slot`, taken `at`: an earlier holder may have
    /// written any of them, so each is read back when first met.
    fn take(&mut self, slot: i64, at: std::time::Instant) {
        self.slot = slot;
        self.renewed = Some(at);
        self.links_forgotten = true;
    }

    /// The writer id `row` is stored under.
    fn writer_of(&self, row: &Row) -> i64 {
        match row {
            Row::Link(_) => self.slot,
            _ => self.process,
        }
    }

    /// The next round's timestamp: now in microseconds, after the last one.
    fn next_stamp(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.stamp = now.max(self.stamp.saturating_add(1));
        self.stamp
    }
}

/// Batches waiting for a round, and this process's counts, held by the round's writer.
pub(crate) struct Fold {
    waiting: std::sync::Mutex<Vec<(Deltas, oneshot::Sender<Folded>)>>,
    tally: tokio::sync::Mutex<Tally>,
    /// Whether counts wait unwritten: the next batch ingested writes them first.
    pending: std::sync::atomic::AtomicBool,
}

impl Fold {
    /// No batch waiting, a new writer remembering `tally_rows` rows at most, whose
    /// requests time out after `request_timeout`.
    pub(crate) fn new(tally_rows: usize, request_timeout: Duration) -> Fold {
        Fold {
            waiting: Default::default(),
            tally: tokio::sync::Mutex::new(Tally::new(tally_rows, request_timeout)),
            pending: Default::default(),
        }
    }

    /// Whether counts of earlier rounds wait unwritten.
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a round writes besides its counts.
struct Extras {
    visitor_hours: HashMap<(LinkId, i64), Visitors>,
    visitor_days: HashMap<(LinkId, i64), Visitors>,
    clicked: HashMap<LinkId, Clicked>,
    batch_id: String,
}

/// A row and its value.
type Valued = (Row, (i64, i64));

/// How a write of count rows went: its rows, the attempts it took, and how the last one
/// went (the error as text).
type RowsWritten = (Vec<Row>, u32, Result<(), String>);

/// A pending write of count rows, attempted until it lands or its attempts run out.
type RowsWrite<'s> = std::pin::Pin<Box<dyn Future<Output = RowsWritten> + Send + 's>>;

impl CqlStore {
    /// Writes `deltas` (a claimed batch's) in the next round with every batch waiting;
    /// returns the round's outcome. Whoever takes the round lock writes all that waits;
    /// a batch whose deltas went out in another's round gets that round's outcome.
    pub(crate) async fn count_folded(&self, deltas: Deltas) -> Folded {
        let (done, mut outcome) = oneshot::channel();
        self.fold
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((deltas, done));
        let mut tally = self.fold.tally.lock().await;
        match outcome.try_recv() {
            Ok(round) => return round,
            // Taken by a round that was dropped half-way: its counts may be in the tally,
            // so the batch stays claimed (a later round may write them).
            Err(oneshot::error::TryRecvError::Closed) => {
                let cut = RoundFailed("the round writing it was cut off".into());
                return Folded {
                    counters: Round::Carried(cut.clone()),
                    rest: Err(cut),
                };
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let waiting =
            std::mem::take(&mut *self.fold.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        let mut all = Deltas::default();
        let mut senders = Vec::with_capacity(waiting.len());
        let mut batches = Vec::with_capacity(waiting.len());
        for (deltas, sender) in waiting {
            // A round with no batch of its own only writes what earlier rounds left.
            if !deltas.batch_id.is_empty() {
                batches.push(deltas.batch_id.clone());
            }
            all.merge(deltas);
            senders.push(sender);
        }
        let extras = Extras {
            visitor_hours: std::mem::take(&mut all.visitor_hours),
            visitor_days: std::mem::take(&mut all.visitor_days),
            clicked: std::mem::take(&mut all.clicked),
            batch_id: std::mem::take(&mut all.batch_id),
        };
        // The lock is held until every batch of the round has its outcome: a batch that
        // takes it next finds its outcome sent, or its deltas still waiting.
        let counters = self.write_counts(&mut tally, all.counts, batches).await;
        let rest = match counters {
            Round::All => self
                .write_extras(extras)
                .await
                .map_err(|e| RoundFailed(e.to_string())),
            // The batches are sent again: their sketches and events are written then.
            Round::Nothing(_) | Round::Carried(_) => Ok(()),
        };
        let round = Folded { counters, rest };
        for sender in senders {
            let _ = sender.send(round.clone());
        }
        outcome.try_recv().unwrap_or(round)
    }

    /// Adds `counts` (of `batches`) to the tally and writes every row not known written.
    /// When all land, batches of earlier rounds that waited for them are marked counted.
    async fn write_counts(
        &self,
        tally: &mut Tally,
        counts: HashMap<Row, (i64, i64)>,
        batches: Vec<String>,
    ) -> Round {
        // Nothing is added before the slot is held and every forgotten row read: until
        // then a failure leaves the batches to be sent again whole.
        let until = match self.hold_slot(tally).await {
            Ok(until) => until,
            Err(error) => return Round::Nothing(RoundFailed(error.to_string())),
        };
        tally.make_room(shortlink_core::time_util::now_unix());
        let forgotten: Vec<Row> = counts.keys().filter(|r| tally.forgot(r)).cloned().collect();
        if !forgotten.is_empty() {
            let forgotten = forgotten
                .into_iter()
                .map(|r| (tally.writer_of(&r), r))
                .collect();
            match self.read_own(forgotten).await {
                Ok(found) => {
                    for (row, value, written_at) in found {
                        // Later than any write read back (an earlier holder's included).
                        tally.stamp = tally.stamp.max(written_at);
                        tally.values.insert(row, value);
                    }
                }
                Err(error) => return Round::Nothing(RoundFailed(error.to_string())),
            }
        }
        for (row, (a, b)) in counts {
            let value = tally.values.entry(row.clone()).or_default();
            value.0 += a;
            value.1 += b;
            tally.unwritten.insert(row);
        }
        let stamp = tally.next_stamp();
        let rows: Vec<Valued> = tally
            .unwritten
            .iter()
            .map(|row| {
                (
                    row.clone(),
                    tally.values.get(row).copied().unwrap_or_default(),
                )
            })
            .collect();
        let (mut first, mut again) = (None, 0);
        {
            use futures_util::StreamExt;
            let mut writes =
                futures_util::stream::iter(self.rows_writes(tally, stamp, until, rows))
                    .buffer_unordered(crate::clicks::WRITE_CONCURRENCY);
            while let Some((rows, attempts, result)) = writes.next().await {
                again += attempts.saturating_sub(1);
                match result {
                    Ok(()) => {
                        for row in rows {
                            tally.unwritten.remove(&row);
                        }
                    }
                    Err(error) => {
                        first.get_or_insert(error);
                    }
                }
            }
        }
        if again > 0 {
            tracing::warn!(
                again,
                landed = first.is_none(),
                "count writes of a round were sent again (same values, same timestamp)"
            );
        }
        if let Some(error) = first {
            tally.carried.extend(batches);
            self.fold
                .pending
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Round::Carried(RoundFailed(error));
        }
        for batch_id in std::mem::take(&mut tally.carried) {
            if let Err(error) = self.mark_carried_counted(&batch_id).await {
                tracing::warn!(batch_id, %error, "cannot mark a click batch counted yet");
                tally.carried.push(batch_id);
            }
        }
        self.fold.pending.store(
            !tally.carried.is_empty(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Round::All
    }

    /// Holds a writer slot for this round: the one held, renewed when due, or else the
    /// one held before or the first free one (the totals remembered under a lost one are
    /// dropped). Returns until when writes may be sent under it.
    async fn hold_slot(&self, tally: &mut Tally) -> Result<std::time::Instant, StoreError> {
        let now = std::time::Instant::now();
        let trust_for = tally.trust_for;
        if let Some(at) = tally.renewed {
            let age = now.duration_since(at);
            if age < trust_for / 2 {
                return Ok(at + trust_for);
            }
            // Between rounds no write is in flight: a lease still held (`IF holder`) can
            // be renewed up to its end.
            if age < SLOT_LEASE {
                match self
                    .slot_lwt(
                        "UPDATE {ks}.count_writers USING TTL ? SET holder = ? \
                         WHERE slot = ? IF holder = ?",
                        (SLOT_LEASE_SECS, tally.holder, tally.slot, tally.holder),
                    )
                    .await
                {
                    Ok(true) => {
                        tally.renewed = Some(now);
                        return Ok(now + trust_for);
                    }
                    // Unanswered: the lease still holds until its last renewal's end.
                    Err(error) if age < trust_for => {
                        tracing::debug!(%error, "renewing the count writer slot went unanswered");
                        return Ok(at + trust_for);
                    }
                    Ok(false) | Err(_) => {}
                }
            }
            let dropped = tally.lapse();
            tracing::warn!(
                slot = tally.slot,
                unwritten_batches = dropped.len(),
                "the count writer slot's lease ran out; taking a slot again (batches whose \
                 counts were not written are reported uncertain when sent again)"
            );
        }
        let before = (tally.slot >= 0).then_some(tally.slot);
        for slot in before.into_iter().chain(0..WRITER_SLOTS) {
            let taken = self
                .slot_lwt(
                    "INSERT INTO {ks}.count_writers (slot, holder) VALUES (?, ?) \
                     IF NOT EXISTS USING TTL ?",
                    (slot, tally.holder, SLOT_LEASE_SECS),
                )
                .await?;
            if taken {
                tally.take(slot, now);
                tracing::info!(slot, "counting clicks as writer slot {slot}");
                return Ok(now + trust_for);
            }
        }
        Err(StoreError::unavailable(RoundFailed(format!(
            "all {WRITER_SLOTS} count writer slots are held"
        ))))
    }

    /// The row of a count read back ([`Kind::Count`]: it holds the last write that
    /// succeeded).
    async fn count_row<R>(
        &self,
        cql: &'static str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        Ok(self
            .rows_of(cql, Kind::Count, values)
            .await?
            .into_iter()
            .next())
    }

    /// A lightweight transaction on `count_writers` ([`Kind::Slot`]).
    async fn slot_lwt(
        &self,
        cql: &'static str,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<bool, StoreError> {
        crate::applied(self.exec(cql, Kind::Slot, values).await?)
    }

    /// Writes what earlier rounds left unwritten (a round of no batch of its own).
    pub(crate) async fn flush_counts(&self) {
        let flushed = self.count_folded(Deltas::default()).await;
        if let Round::Carried(error) | Round::Nothing(error) = flushed.counters {
            tracing::debug!(%error, "counts left unwritten are still not written");
        }
    }

    /// Lets go of the writer slot at shutdown once what is left is written (if it cannot
    /// be, the lease runs out by itself): the next control plane to start takes it at
    /// once.
    pub(crate) async fn release_slot(&self) {
        if self.fold.pending() {
            self.flush_counts().await;
        }
        let mut tally = self.fold.tally.lock().await;
        if tally.renewed.is_none() || !tally.unwritten.is_empty() {
            return;
        }
        let (slot, holder) = (tally.slot, tally.holder);
        tally.lapse();
        if let Err(error) = self
            .slot_lwt(
                "DELETE FROM {ks}.count_writers WHERE slot = ? IF holder = ?",
                (slot, holder),
            )
            .await
        {
            tracing::warn!(%error, slot, "cannot let go of the count writer slot");
        }
    }

    /// Marks a batch of an earlier round counted, now that its counts are written (unless
    /// it was settled meanwhile), dated long ago: the call that claimed it has ended, so
    /// the sender's next try finishes it at once.
    async fn mark_carried_counted(&self, batch_id: &str) -> Result<(), StoreError> {
        self.lwt(
            "UPDATE {ks}.click_batches USING TTL ? SET state = 'counted', clicks = 0, at = 0 \
             WHERE batch_id = ? IF state = 'applying'",
            (self.click_retention_secs, batch_id),
        )
        .await
        .map(drop)
    }

    /// This writer's stored values of `rows` (absent ones are 0), with when each was
    /// written (µs; 0 when absent).
    async fn read_own(
        &self,
        rows: Vec<(i64, Row)>,
    ) -> Result<Vec<(Row, (i64, i64), i64)>, StoreError> {
        use futures_util::StreamExt;
        type Found = Option<(Option<i64>, Option<i64>, Option<i64>)>;
        type FoundOne = Option<(Option<i64>, Option<i64>)>;
        let value = |found: Found| {
            found.map_or(((0, 0), 0), |(a, b, at)| {
                ((a.unwrap_or(0), b.unwrap_or(0)), at.unwrap_or(0))
            })
        };
        let one = |found: FoundOne| found.map(|(n, at)| (n, Some(0), at));
        let reads = rows.into_iter().map(|(writer, row)| async move {
            let found: Found = match &row {
                Row::Hour(link, at) => {
                    self.count_row(
                        "SELECT total, bots, WRITETIME(total) FROM {ks}.rollup_hour_w \
                         WHERE link_id = ? AND month = ? AND hour = ? AND writer = ?",
                        (link, ids::month_of(*at), at, writer),
                    )
                    .await?
                }
                Row::Day(link, at, dim, key) => one(self
                    .count_row(
                        "SELECT n, WRITETIME(n) FROM {ks}.rollup_day_w WHERE link_id = ? \
                         AND month = ? AND day = ? AND dim = ? AND key = ? AND writer = ?",
                        (link, ids::month_of(*at), at, dim, key, writer),
                    )
                    .await?),
                Row::OwnerHour(owner, at) => {
                    self.count_row(
                        "SELECT total, bots, WRITETIME(total) FROM {ks}.owner_rollup_hour_w \
                         WHERE owner = ? AND month = ? AND hour = ? AND writer = ?",
                        (owner, ids::month_of(*at), at, writer),
                    )
                    .await?
                }
                Row::OwnerDay(owner, at, link) => {
                    self.count_row(
                        "SELECT total, bots, WRITETIME(total) FROM {ks}.owner_link_day_w \
                         WHERE owner = ? AND month = ? AND day = ? AND link_id = ? AND writer = ?",
                        (owner, ids::month_of(*at), at, link, writer),
                    )
                    .await?
                }
                Row::Link(link) => one(self
                    .count_row(
                        "SELECT clicks, WRITETIME(clicks) FROM {ks}.link_clicks_w \
                         WHERE link_id = ? AND writer = ?",
                        (link, writer),
                    )
                    .await?),
            };
            let (value, at) = value(found);
            Ok::<_, StoreError>((row, value, at))
        });
        futures_util::stream::iter(reads)
            .buffer_unordered(crate::clicks::WRITE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Writes the sketches and `link.clicked` events of `deltas` outside a round (a batch
    /// finished for a node that died counting it). Its sketch rows get a key of their own:
    /// a row keyed by the batch id may hold the dead node's whole round.
    pub(crate) async fn write_extras_of(&self, deltas: Deltas) -> Result<(), StoreError> {
        self.write_extras(Extras {
            visitor_hours: deltas.visitor_hours,
            visitor_days: deltas.visitor_days,
            clicked: deltas.clicked,
            batch_id: format!("{}/finished", deltas.batch_id),
        })
        .await
    }

    /// One sketch row per link and period (idempotent: a sketch merged twice is the same
    /// sketch), then one `link.clicked` event per link.
    async fn write_extras(&self, extras: Extras) -> Result<(), StoreError> {
        let batch_id = extras.batch_id.as_str();
        let mut writes: Vec<Write<'_>> =
            Vec::with_capacity(extras.visitor_hours.len() + extras.visitor_days.len());
        for ((link, hour), visitors) in extras.visitor_hours {
            writes.push(Box::pin(async move {
                self.exec(
                    VISITORS_HOUR_INSERT,
                    Kind::Write,
                    (
                        link,
                        ids::month_of(hour),
                        hour,
                        batch_id,
                        visitors.to_bytes(),
                    ),
                )
                .await
                .map(drop)
            }));
        }
        for ((link, day), visitors) in extras.visitor_days {
            writes.push(Box::pin(async move {
                self.exec(
                    VISITORS_DAY_INSERT,
                    Kind::Write,
                    (link, ids::month_of(day), day, batch_id, visitors.to_bytes()),
                )
                .await
                .map(drop)
            }));
        }
        run_concurrently(writes, crate::clicks::WRITE_CONCURRENCY).await?;
        let events = extras
            .clicked
            .into_values()
            .map(|c| c.delta.clicked_event(c.owner, &c.domain, &c.code))
            .collect();
        self.append(events).await.map(drop)
    }

    /// The writes of `rows` (values of `writer` at `stamp`): one unlogged batch per
    /// partition and [`ROWS_PER_WRITE`] rows.
    fn rows_writes<'s>(
        &'s self,
        tally: &Tally,
        stamp: i64,
        until: std::time::Instant,
        rows: Vec<Valued>,
    ) -> Vec<RowsWrite<'s>> {
        let mut partitions: HashMap<(u8, i64, i32), Vec<Valued>> = HashMap::new();
        for (row, value) in rows {
            partitions
                .entry(row.partition())
                .or_default()
                .push((row, value));
        }
        let mut writes = Vec::new();
        let (writer, slot) = (tally.process, tally.slot);
        for ((table, _, month), rows) in partitions {
            for chunk in rows.chunks(ROWS_PER_WRITE) {
                let keys: Vec<Row> = chunk.iter().map(|(row, _)| row.clone()).collect();
                let write = match table {
                    0 => self.rows_write(
                        HOUR_WRITE,
                        until,
                        keys,
                        chunk.iter().filter_map(|(row, (total, bots))| match row {
                            Row::Hour(link, at) => {
                                Some((*link, month, *at, writer, *total, *bots, stamp))
                            }
                            _ => None,
                        }),
                    ),
                    1 => self.rows_write(
                        DAY_WRITE,
                        until,
                        keys,
                        chunk.iter().filter_map(|(row, (n, _))| match row {
                            Row::Day(link, at, dim, key) => {
                                Some((*link, month, *at, *dim, key.clone(), writer, *n, stamp))
                            }
                            _ => None,
                        }),
                    ),
                    2 => self.rows_write(
                        OWNER_HOUR_WRITE,
                        until,
                        keys,
                        chunk.iter().filter_map(|(row, (total, bots))| match row {
                            Row::OwnerHour(owner, at) => {
                                Some((*owner, month, *at, writer, *total, *bots, stamp))
                            }
                            _ => None,
                        }),
                    ),
                    3 => self.rows_write(
                        OWNER_DAY_WRITE,
                        until,
                        keys,
                        chunk.iter().filter_map(|(row, (total, bots))| match row {
                            Row::OwnerDay(owner, at, link) => {
                                Some((*owner, month, *at, *link, writer, *total, *bots, stamp))
                            }
                            _ => None,
                        }),
                    ),
                    _ => self.rows_write(
                        LINK_WRITE,
                        until,
                        keys,
                        chunk.iter().filter_map(|(row, (n, _))| match row {
                            Row::Link(link) => Some((*link, slot, *n, stamp)),
                            _ => None,
                        }),
                    ),
                };
                writes.push(write);
            }
        }
        writes
    }

    /// One write of `values` (rows of one partition) by `cql`, attempted up to
    /// [`WRITE_ATTEMPTS`] times and none after `until` (when the writer slot may be
    /// another's): each attempt writes the same values at the same timestamp, so one that
    /// landed unanswered is repeated harmlessly.
    fn rows_write<'s, R>(
        &'s self,
        cql: &'static str,
        until: std::time::Instant,
        keys: Vec<Row>,
        values: impl Iterator<Item = R>,
    ) -> RowsWrite<'s>
    where
        R: SerializeRow + Send + Sync + 's,
    {
        let values: Vec<R> = values.collect();
        Box::pin(async move {
            let statement: PreparedStatement = match self.prepare(cql, Kind::Count).await {
                Ok(statement) => statement,
                Err(error) => return (keys, 1, Err(error.to_string())),
            };
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in 0..values.len() {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            batch.set_consistency(self.count_consistency);
            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 1;
            loop {
                if std::time::Instant::now() >= until {
                    let late = "the count writer slot's lease may have run out".to_owned();
                    return (keys, attempt, Err(late));
                }
                match self.session.batch(&batch, &values).await {
                    Ok(_) => return (keys, attempt, Ok(())),
                    Err(error) if attempt < WRITE_ATTEMPTS && !permanent(&error) => {
                        tracing::debug!(%error, attempt, "a count write is sent again");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        attempt += 1;
                    }
                    Err(error) => return (keys, attempt, Err(error.to_string())),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_forgets_written_rows_of_past_periods_first() {
        let mut tally = Tally::new(8, Duration::from_secs(5));
        let now = 100 * 3600 + 1800;
        for hour in (90..=98).chain([99, 100]) {
            tally.values.insert(Row::Hour(1, hour * 3600), (1, 0));
        }
        tally.values.insert(Row::Link(1), (5, 0));
        tally.unwritten.insert(Row::Hour(1, 95 * 3600));
        tally.make_room(now);
        // Written hours before 99 forgotten; the unwritten one, the last two and the
        // link's total kept (four: under three quarters of the capacity).
        let mut kept: Vec<_> = tally.values.keys().cloned().collect();
        kept.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(tally.values.len(), 4, "{kept:?}");
        assert!(tally.values.contains_key(&Row::Hour(1, 95 * 3600)));
        assert!(tally.forgot(&Row::Hour(1, 96 * 3600)));
        assert!(
            tally.forgot(&Row::Hour(1, 97 * 3600)),
            "before the last forgotten"
        );
        assert!(!tally.forgot(&Row::Hour(1, 101 * 3600)), "never written");
        assert!(!tally.forgot(&Row::Link(2)));
        // Still over three quarters of the capacity: every written row goes.
        tally.capacity = 3;
        tally.values.insert(Row::Hour(2, 100 * 3600), (1, 0));
        tally.make_room(now);
        assert_eq!(tally.values.len(), 1);
        assert!(
            tally.forgot(&Row::Link(2)),
            "a link's total may have been forgotten"
        );
        assert!(tally.forgot(&Row::Hour(3, 100 * 3600)));
        assert!(!tally.forgot(&Row::Hour(3, 101 * 3600)));
    }

    #[test]
    fn a_slot_taken_over_reads_back_the_links_totals_only() {
        let mut tally = Tally::new(10, Duration::from_secs(5));
        assert!(tally.process >= 1 << 62, "above every slot");
        tally.values.insert(Row::Link(1), (3, 0));
        tally.values.insert(Row::Hour(1, 3600), (3, 0));
        tally.unwritten.insert(Row::Link(1));
        tally.unwritten.insert(Row::Hour(1, 3600));
        tally.carried.push("b".into());
        // A lease lost: the totals written under the slot are dropped, the period rows
        // (under this process's own id) kept, and the waiting batches given up.
        assert_eq!(tally.lapse(), vec!["b".to_owned()]);
        assert_eq!(tally.values.len(), 1);
        assert!(tally.unwritten.contains(&Row::Hour(1, 3600)));
        tally.take(7, std::time::Instant::now());
        assert_eq!((tally.slot, tally.writer_of(&Row::Link(1))), (7, 7));
        assert_eq!(tally.writer_of(&Row::Hour(1, 3600)), tally.process);
        assert!(tally.forgot(&Row::Link(1)), "a link's total is read back");
        assert!(
            !tally.forgot(&Row::Hour(2, 3600)),
            "a period row is this process's own"
        );
    }

    #[test]
    fn stamps_rise_even_when_the_clock_does_not() {
        let mut tally = Tally::new(1, Duration::from_secs(5));
        tally.stamp = i64::MAX - 10;
        let a = tally.next_stamp();
        assert_eq!(a, i64::MAX - 9);
        assert!(tally.next_stamp() > a);
    }
}
