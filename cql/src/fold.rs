//! Click counters folded across batches: batches ingested at the same time add their
//! deltas into one set, written by one of them (a group commit), so a row that many
//! batches touch (a busy link's hour, its country, its owner's day) costs one counter
//! update per round instead of one per batch. The round also writes one visitor sketch
//! row per link and period (the union of its batches' sketches, keyed by one of their
//! batch ids) and one `link.clicked` event per link. Each batch keeps its own claim; the
//! round's outcome is every batch's outcome.

use std::collections::HashMap;

use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;
use shortlink_core::LinkId;
use shortlink_store::StoreError;
use thiserror::Error;
use tokio::sync::oneshot;

use shortlink_core::UserId;
use shortlink_store::rollup::LinkDelta;
use shortlink_store::visitors::Visitors;

use crate::clicks::{CounterWrite, VISITORS_DAY_INSERT, VISITORS_HOUR_INSERT, Write, count_all};
use crate::{CqlStore, Kind, ids, run_concurrently};

/// Counter additions of one or more batches.
#[derive(Debug, Default)]
pub(crate) struct Deltas {
    /// (link, hour) → (total, bots).
    pub(crate) hours: HashMap<(LinkId, i64), (i64, i64)>,
    /// (link, day, dimension, value) → n.
    pub(crate) days: HashMap<(LinkId, i64, &'static str, String), i64>,
    /// (owner, hour) → (total, bots).
    pub(crate) owner_hours: HashMap<(i64, i64), (i64, i64)>,
    /// (owner, day, link) → (total, bots).
    pub(crate) owner_days: HashMap<(i64, i64, LinkId), (i64, i64)>,
    /// link → clicks.
    pub(crate) links: HashMap<LinkId, i64>,
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

fn add2<K: std::hash::Hash + Eq>(into: &mut HashMap<K, (i64, i64)>, from: HashMap<K, (i64, i64)>) {
    for (key, (a, b)) in from {
        let slot = into.entry(key).or_default();
        slot.0 += a;
        slot.1 += b;
    }
}

fn add1<K: std::hash::Hash + Eq>(into: &mut HashMap<K, i64>, from: HashMap<K, i64>) {
    for (key, n) in from {
        *into.entry(key).or_default() += n;
    }
}

impl Deltas {
    /// Adds `other` into this set.
    pub(crate) fn merge(&mut self, other: Deltas) {
        add2(&mut self.hours, other.hours);
        add1(&mut self.days, other.days);
        add2(&mut self.owner_hours, other.owner_hours);
        add2(&mut self.owner_days, other.owner_days);
        add1(&mut self.links, other.links);
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

/// How a round went for every batch in it: its counters, then its sketches and events
/// (written only when some counters may have been; an error there leaves the counters as
/// they are).
#[derive(Debug, Clone)]
pub(crate) struct Folded {
    pub(crate) counters: Round,
    pub(crate) rest: Result<(), RoundFailed>,
}

/// How a round of counter writes went (for every batch in it).
#[derive(Debug, Clone)]
pub(crate) enum Round {
    /// Every write succeeded.
    All,
    /// None was written and none ran: each batch may be sent again whole.
    Nothing(RoundFailed),
    /// Some writes failed leaving unknown whether they ran.
    Partly(RoundFailed),
}

/// Why a round's counter writes failed (the first driver error, as text: a round's
/// outcome goes to every batch in it).
#[derive(Debug, Clone, Error)]
#[error("counter writes failed: {0}")]
pub(crate) struct RoundFailed(String);

impl From<RoundFailed> for StoreError {
    fn from(error: RoundFailed) -> Self {
        StoreError::backend(error)
    }
}

/// Batches waiting for a round, and the lock its writer holds.
#[derive(Default)]
pub(crate) struct Fold {
    waiting: std::sync::Mutex<Vec<(Deltas, oneshot::Sender<Folded>)>>,
    round: tokio::sync::Mutex<()>,
}

/// What a round writes besides its counters.
struct Extras {
    visitor_hours: HashMap<(LinkId, i64), Visitors>,
    visitor_days: HashMap<(LinkId, i64), Visitors>,
    clicked: HashMap<LinkId, Clicked>,
    batch_id: String,
}

/// The prepared counter updates a round writes.
pub(crate) struct Statements {
    pub(crate) hour: PreparedStatement,
    pub(crate) day: PreparedStatement,
    pub(crate) owner_hour: PreparedStatement,
    pub(crate) owner_day: PreparedStatement,
    pub(crate) link: PreparedStatement,
}

impl CqlStore {
    /// Writes `deltas` (a claimed batch's) in the next round with every batch waiting;
    /// returns the round's outcome. Whoever takes the round lock writes all that waits;
    /// a batch whose deltas went out in another's round gets that round's outcome.
    pub(crate) async fn count_folded(&self, deltas: Deltas, statements: &Statements) -> Folded {
        let (done, mut outcome) = oneshot::channel();
        self.fold
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((deltas, done));
        let _round = self.fold.round.lock().await;
        match outcome.try_recv() {
            Ok(round) => return round,
            // Taken by a round that was dropped half-way: whether it counted is unknown.
            Err(oneshot::error::TryRecvError::Closed) => {
                let cut = RoundFailed("the round writing it was cut off".into());
                return Folded {
                    counters: Round::Partly(cut.clone()),
                    rest: Err(cut),
                };
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let waiting =
            std::mem::take(&mut *self.fold.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        let mut all = Deltas::default();
        let mut senders = Vec::with_capacity(waiting.len());
        for (deltas, sender) in waiting {
            all.merge(deltas);
            senders.push(sender);
        }
        let extras = Extras {
            visitor_hours: std::mem::take(&mut all.visitor_hours),
            visitor_days: std::mem::take(&mut all.visitor_days),
            clicked: std::mem::take(&mut all.clicked),
            batch_id: std::mem::take(&mut all.batch_id),
        };
        let counters = match count_all(
            self.round_writes(all, statements),
            crate::clicks::WRITE_CONCURRENCY,
        )
        .await
        {
            crate::clicks::Counted::All => Round::All,
            crate::clicks::Counted::Nothing(e) => Round::Nothing(RoundFailed(e.to_string())),
            crate::clicks::Counted::Partly(e) => Round::Partly(RoundFailed(e.to_string())),
        };
        let rest = match counters {
            // Nothing counted: the batches are sent again whole, sketches and events too.
            Round::Nothing(_) => Ok(()),
            _ => self
                .write_extras(extras)
                .await
                .map_err(|e| RoundFailed(e.to_string())),
        };
        let round = Folded { counters, rest };
        for sender in senders {
            let _ = sender.send(round.clone());
        }
        outcome.try_recv().unwrap_or(round)
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

    /// The counter writes of `deltas`: rows of one partition in one counter batch.
    fn round_writes<'s>(
        &'s self,
        deltas: Deltas,
        statements: &'s Statements,
    ) -> Vec<CounterWrite<'s>> {
        type HourRow = (Counter, Counter, i64, i32, i64);
        type DayRow = (Counter, i64, i32, i64, &'static str, String);
        type OwnerDayRow = (Counter, Counter, i64, i32, i64, LinkId);
        // Hourly rows of links and of owners alike, by (link or owner, month).
        let by_month = |deltas: HashMap<(i64, i64), (i64, i64)>| {
            let mut rows: HashMap<(i64, i32), Vec<HourRow>> = HashMap::new();
            for ((id, hour), (total, bots)) in deltas {
                let month = ids::month_of(hour);
                rows.entry((id, month)).or_default().push((
                    Counter(total),
                    Counter(bots),
                    id,
                    month,
                    hour,
                ));
            }
            rows
        };
        let hours = by_month(deltas.hours);
        let mut days: HashMap<(LinkId, i32), Vec<DayRow>> = HashMap::new();
        for ((link, day, dim, key), n) in deltas.days {
            let month = ids::month_of(day);
            days.entry((link, month))
                .or_default()
                .push((Counter(n), link, month, day, dim, key));
        }
        let owner_hours = by_month(deltas.owner_hours);
        let mut owner_days: HashMap<(i64, i32), Vec<OwnerDayRow>> = HashMap::new();
        for ((owner, day, link), (total, bots)) in deltas.owner_days {
            let month = ids::month_of(day);
            owner_days.entry((owner, month)).or_default().push((
                Counter(total),
                Counter(bots),
                owner,
                month,
                day,
                link,
            ));
        }
        let mut writes: Vec<CounterWrite<'s>> = Vec::new();
        for rows in hours.into_values() {
            writes.extend(self.counter_writes(&statements.hour, rows));
        }
        for rows in days.into_values() {
            writes.extend(self.counter_writes(&statements.day, rows));
        }
        for rows in owner_hours.into_values() {
            writes.extend(self.counter_writes(&statements.owner_hour, rows));
        }
        for rows in owner_days.into_values() {
            writes.extend(self.counter_writes(&statements.owner_day, rows));
        }
        for (link, n) in deltas.links {
            let statement = &statements.link;
            writes.push(Box::pin(async move {
                self.session
                    .execute_unpaged(statement, (Counter(n), link))
                    .await
                    .map(drop)
            }));
        }
        writes
    }
}
