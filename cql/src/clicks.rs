//! Click ingestion and stats on CQL: counts kept per writer (`crate::fold`), a batch-id
//! claim for idempotency.
//!
//! A batch is claimed first with a lightweight transaction (`state = 'applying'`); its
//! counts are added to this process's running totals and written as absolute values
//! (`crate::fold`), sent again until they land. Then it is marked `counted`, its
//! idempotent rows (visitor sketches, the raw click log) and events are written, and it
//! is marked `applied`.
//!
//! A redelivered batch finds the claim:
//! - `applied` is a duplicate;
//! - any other state younger than [`ABANDONED_SECS`] is another node at work (the sender
//!   retries later);
//! - older, the call that claimed it ended before `applied`: `counted` (or `uncertain`,
//!   written by older versions) has its idempotent rows written again and answers as that
//!   call would have; `applying` belongs to a process that died before its counts were
//!   written, so they may be short and are not written again, the rest is (uncertain).
//!
//! When count writes do not land after their attempts, the counts stay in memory and the
//! round of the next batch ingested writes them first (then marks the batch counted); the
//! sender is told to retry later. When nothing was added (the writer slot or a row read
//! back failed first), the claim is released and the sender retries the whole batch.
//! Reads sum every writer's row and the counter
//! row of versions before per-writer counts.

use std::collections::HashMap;

use async_trait::async_trait;
use shortlink_core::time_util::{now_unix, now_unix_ms};
use shortlink_core::{AccountStats, EnrichedClick, LinkCount, LinkId, LinkStats};
use shortlink_store::rollup::{
    OwnerDelta, RollupDelta, Tops, add_hour, day_of, decode_log, owner_logs, rank_links,
};
use shortlink_store::visitors::{Period, Visitors, cover};
use shortlink_store::{
    AccountStatsQuery, ClickCursor, ClickLogQuery, ClickPage, ClickStore, IngestOutcome,
    StatsQuery, StoreError,
};
use tracing::warn;

use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;

use crate::{CqlStore, Kind, backend, fold, ids, run_concurrently};

/// An `applying` claim older than this belongs to a node that died while applying it.
const ABANDONED_SECS: i64 = 120;

/// Log rows one page of raw clicks reads at most.
const LOG_ROWS_PER_PAGE: usize = 64;

/// Log rows read per query: few, so a page that fills up early has read little more than
/// it returns.
const LOG_ROWS_PER_READ: usize = 8;

/// Adds to a link's hourly rollup row (total, bots; link, month, hour).
pub(crate) const HOUR_UPDATE: &str = "UPDATE {ks}.rollup_hour SET total = total + ?, \
     bots = bots + ? WHERE link_id = ? AND month = ? AND hour = ?";
/// Adds to a link's daily rollup row (n; link, month, day, dim, key).
pub(crate) const DAY_UPDATE: &str = "UPDATE {ks}.rollup_day SET n = n + ? \
     WHERE link_id = ? AND month = ? AND day = ? AND dim = ? AND key = ?";
/// Adds to an owner's hourly rollup row (total, bots; owner, month, hour).
pub(crate) const OWNER_HOUR_UPDATE: &str = "UPDATE {ks}.owner_rollup_hour SET \
     total = total + ?, bots = bots + ? WHERE owner = ? AND month = ? AND hour = ?";
/// Adds to an owner's daily row of one link (total, bots; owner, month, day, link).
pub(crate) const OWNER_DAY_UPDATE: &str = "UPDATE {ks}.owner_link_day SET \
     total = total + ?, bots = bots + ? WHERE owner = ? AND month = ? AND day = ? AND link_id = ?";

/// Adds to a link's click total (n; link).
pub(crate) const LINK_CLICKS_UPDATE: &str =
    "UPDATE {ks}.link_clicks SET clicks = clicks + ? WHERE link_id = ?";

/// Writes a batch's sketch of a link's hour (link, month, hour, batch, sketch).
pub(crate) const VISITORS_HOUR_INSERT: &str = "INSERT INTO {ks}.visitors_hour \
     (link_id, month, hour, batch_id, sketch) VALUES (?, ?, ?, ?, ?)";
/// Writes a batch's sketch of a link's day (link, month, day, batch, sketch).
pub(crate) const VISITORS_DAY_INSERT: &str = "INSERT INTO {ks}.visitors_day \
     (link_id, month, day, batch_id, sketch) VALUES (?, ?, ?, ?, ?)";

/// A period read with more sketch rows than this is folded into one.
const FOLD_ABOVE: usize = 4;

/// Writes in flight per round or batch.
pub(crate) const WRITE_CONCURRENCY: usize = 64;

/// Rows per counter batch (all of one partition).
const COUNTER_BATCH: usize = 100;

/// A counter batch of `n` executions of `statement`.
fn counter_batch(statement: &PreparedStatement, n: usize) -> Batch {
    let mut batch = Batch::new(BatchType::Counter);
    for _ in 0..n {
        batch.append_statement(statement.clone());
    }
    batch
}

#[derive(Clone)]
pub(crate) struct LinkInfo {
    owner: i64,
    domain: String,
    code: String,
}

/// How long ingestion trusts a link's owner, domain and code once read: they never change,
/// and a link deleted meanwhile only has a few more clicks counted in its own rollups.
const LINK_INFO_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Links ingestion remembers at most (the cache is emptied when it holds more).
const LINK_INFO_CACHED: usize = 200_000;

/// Recently read links of ingestion: a busy link is read once a minute, not per batch.
#[derive(Default)]
pub(crate) struct LinkInfos(std::sync::Mutex<HashMap<LinkId, (LinkInfo, std::time::Instant)>>);

/// A pending write of ingestion.
pub(crate) type Write<'s> =
    std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 's>>;

/// Whose hourly rows [`CqlStore::hour_rows`] reads.
#[derive(Clone, Copy)]
enum HourRows {
    Link,
    Owner,
}

/// Where a claimed batch stands.
enum Claim {
    /// Claimed now: write everything.
    New,
    /// Counted before, by a call that ended before `applied`: write the rest again and
    /// answer `outcome`, the one that call never gave.
    Finish { outcome: IngestOutcome },
}

impl CqlStore {
    /// Counter batches of `statement` over `rows` (all of one partition), at most
    /// [`COUNTER_BATCH`] rows each (a restore adds to the counter tables of versions
    /// before per-writer counts, which reads still sum).
    pub(crate) fn counter_batches<'s, R>(
        &'s self,
        statement: &PreparedStatement,
        rows: Vec<R>,
    ) -> Vec<Write<'s>>
    where
        R: scylla::serialize::row::SerializeRow + Clone + Send + Sync + 's,
    {
        rows.chunks(COUNTER_BATCH)
            .map(|chunk| {
                let batch = counter_batch(statement, chunk.len());
                let values = chunk.to_vec();
                Box::pin(async move {
                    self.session
                        .batch(&batch, values)
                        .await
                        .map(drop)
                        .map_err(backend)
                }) as Write<'s>
            })
            .collect()
    }

    /// (hour, total, bots) of `kind`'s hourly rows in (id, month, from, to), in hour
    /// order: the counter rows of versions before per-writer counts and every writer's
    /// (an hour may come more than once: callers add them up).
    async fn hour_rows(
        &self,
        kind: HourRows,
        span: (i64, i32, i64, i64),
    ) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        let (counted_cql, written_cql) = match kind {
            HourRows::Link => (
                "SELECT hour, total, bots FROM {ks}.rollup_hour \
                 WHERE link_id = ? AND month = ? AND hour >= ? AND hour < ?",
                "SELECT hour, total, bots FROM {ks}.rollup_hour_w \
                 WHERE link_id = ? AND month = ? AND hour >= ? AND hour < ?",
            ),
            HourRows::Owner => (
                "SELECT hour, total, bots FROM {ks}.owner_rollup_hour \
                 WHERE owner = ? AND month = ? AND hour >= ? AND hour < ?",
                "SELECT hour, total, bots FROM {ks}.owner_rollup_hour_w \
                 WHERE owner = ? AND month = ? AND hour >= ? AND hour < ?",
            ),
        };
        let counted: Vec<(i64, Option<Counter>, Option<Counter>)> =
            self.rows(counted_cql, span).await?;
        let written: Vec<(i64, Option<i64>, Option<i64>)> = self.rows(written_cql, span).await?;
        let n = |v: i64| v.max(0) as u64;
        let mut rows: Vec<(i64, u64, u64)> = counted
            .into_iter()
            .map(|(h, t, b)| (h, n(t.map_or(0, |c| c.0)), n(b.map_or(0, |c| c.0))))
            .chain(
                written
                    .into_iter()
                    .map(|(h, t, b)| (h, n(t.unwrap_or(0)), n(b.unwrap_or(0)))),
            )
            .collect();
        // In hour order, as the series is built.
        rows.sort_by_key(|row| row.0);
        Ok(rows)
    }

    /// The estimated human visitors of `link` over `[from, to)`: whole days from the
    /// daily sketches, the hours around them from the hourly ones.
    async fn range_visitors(&self, link: LinkId, from: i64, to: i64) -> Result<u64, StoreError> {
        let cover = cover(from, to);
        let mut all = Visitors::new();
        let spans = std::iter::once((Period::Day, cover.days))
            .chain(cover.hours.into_iter().map(|span| (Period::Hour, span)));
        for (period, (a, b)) in spans {
            if a >= b {
                continue;
            }
            for month in ids::month_of(a)..=ids::month_of(b - 1) {
                let rows: Vec<(i64, String, Option<Vec<u8>>)> = match period {
                    Period::Hour => {
                        self.rows(
                            "SELECT hour, batch_id, sketch FROM {ks}.visitors_hour \
                             WHERE link_id = ? AND month = ? AND hour >= ? AND hour < ?",
                            (link, month, a, b),
                        )
                        .await?
                    }
                    Period::Day => {
                        self.rows(
                            "SELECT day, batch_id, sketch FROM {ks}.visitors_day \
                             WHERE link_id = ? AND month = ? AND day >= ? AND day < ?",
                            (link, month, a, b),
                        )
                        .await?
                    }
                };
                // Rows come by period: fold each period's into one.
                let mut rows = rows.into_iter().peekable();
                while let Some((at, batch, sketch)) = rows.next() {
                    let mut merged = Visitors::new();
                    merged.merge_bytes(sketch.as_deref().unwrap_or_default());
                    let mut batches = vec![batch];
                    while let Some((_, batch, sketch)) = rows.next_if(|r| r.0 == at) {
                        merged.merge_bytes(sketch.as_deref().unwrap_or_default());
                        batches.push(batch);
                    }
                    all.merge(&merged);
                    if batches.len() > FOLD_ABOVE
                        && let Err(error) =
                            self.fold(period, link, month, at, &merged, batches).await
                    {
                        warn!(%error, link, at, "cannot fold visitor sketches");
                    }
                }
            }
        }
        Ok(all.estimate())
    }

    /// Replaces a period's rows `batches` by one row of their union `merged`: written
    /// first, then each read row deleted by its key, so a row written meanwhile stays and
    /// two readers folding at once only leave two copies of one union.
    async fn fold(
        &self,
        period: Period,
        link: LinkId,
        month: i32,
        at: i64,
        merged: &Visitors,
        batches: Vec<String>,
    ) -> Result<(), StoreError> {
        let id = format!("folded-{:016x}", rand::random::<u64>());
        let (insert, delete) = match period {
            Period::Hour => (
                VISITORS_HOUR_INSERT,
                "DELETE FROM {ks}.visitors_hour \
                 WHERE link_id = ? AND month = ? AND hour = ? AND batch_id = ?",
            ),
            Period::Day => (
                VISITORS_DAY_INSERT,
                "DELETE FROM {ks}.visitors_day \
                 WHERE link_id = ? AND month = ? AND day = ? AND batch_id = ?",
            ),
        };
        self.exec(
            insert,
            Kind::Write,
            (link, month, at, &id, merged.to_bytes()),
        )
        .await?;
        let deletes: Vec<Write<'_>> = batches
            .into_iter()
            .map(|batch| {
                Box::pin(async move {
                    self.exec(delete, Kind::Write, (link, month, at, batch))
                        .await
                        .map(drop)
                }) as Write<'_>
            })
            .collect();
        run_concurrently(deletes, WRITE_CONCURRENCY).await
    }

    async fn link_info(&self, id: LinkId) -> Result<Option<LinkInfo>, StoreError> {
        let key: Option<(String, String)> = self
            .row(
                "SELECT domain, code FROM {ks}.links_by_id WHERE id = ?",
                (id,),
            )
            .await?;
        let Some((domain, code)) = key else {
            return Ok(None);
        };
        Ok(self
            .link_row(&domain, &code)
            .await?
            .map(|row| row.into_link(0))
            .filter(|link| link.id == id)
            .map(|link| LinkInfo {
                owner: link.owner,
                domain,
                code,
            }))
    }

    /// [`CqlStore::link_info`] through the ingestion cache (a missing link is not
    /// remembered: it may be one created a moment ago).
    async fn link_info_cached(&self, id: LinkId) -> Result<Option<LinkInfo>, StoreError> {
        let now = std::time::Instant::now();
        if let Some((info, at)) = self
            .link_infos
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            && now.duration_since(*at) < LINK_INFO_TTL
        {
            return Ok(Some(info.clone()));
        }
        let found = self.link_info(id).await?;
        if let Some(info) = &found {
            let mut cache = self.link_infos.0.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= LINK_INFO_CACHED {
                cache.clear();
            }
            cache.insert(id, (info.clone(), now));
        }
        Ok(found)
    }

    /// `page` with the (domain, code) of its links that still exist.
    async fn page_links(&self, mut page: ClickPage) -> Result<ClickPage, StoreError> {
        let ids: std::collections::HashSet<LinkId> =
            page.clicks.iter().map(|(c, _)| c.link_id).collect();
        for id in ids {
            if let Some(info) = self.link_info(id).await? {
                page.links.insert(id, (info.domain, info.code));
            }
        }
        Ok(page)
    }

    /// Claims a batch id of `clicks` clicks: where it stands, or `Err(outcome)` when it
    /// must not be applied now.
    async fn claim_batch(
        &self,
        batch_id: &str,
        clicks: u64,
    ) -> Result<Result<Claim, IngestOutcome>, StoreError> {
        let now = now_unix();
        let claimant: i64 = rand::random();
        let claimed = self
            .lwt_retrying(
                "INSERT INTO {ks}.click_batches (batch_id, state, at, claimant) \
                 VALUES (?, 'applying', ?, ?) IF NOT EXISTS USING TTL ?",
                (batch_id, now, claimant, self.click_retention_secs),
            )
            .await?;
        if claimed {
            return Ok(Ok(Claim::New));
        }
        /// state, at, clicks (uncertain ones), claimant.
        type ClaimRow = (Option<String>, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<ClaimRow> = self
            .row(
                "SELECT state, at, clicks, claimant FROM {ks}.click_batches WHERE batch_id = ?",
                (batch_id,),
            )
            .await?;
        match row {
            // This call's own claim, from an attempt whose answer was lost.
            Some((Some(state), _, _, Some(by))) if state == "applying" && by == claimant => {
                Ok(Ok(Claim::New))
            }
            Some((Some(state), ..)) if state == "applied" => Ok(Err(IngestOutcome::Duplicate)),
            // Another node's, younger than ABANDONED_SECS: still at work (retry later).
            // Older, the call that claimed it ended without answering (it answers only
            // once `applied`), so its outcome is reported now.
            Some((Some(state), Some(at), uncertain, _)) if now - at > ABANDONED_SECS => {
                let outcome = match state.as_str() {
                    "counted" => IngestOutcome::Applied,
                    "uncertain" => IngestOutcome::Uncertain {
                        clicks: uncertain.map_or(clicks, |n| n.max(0) as u64),
                    },
                    _ => {
                        warn!(
                            batch_id,
                            "a click batch claimed {}s ago was never counted to the end (a \
                             node died counting it); not counting it twice",
                            now - at
                        );
                        IngestOutcome::Uncertain { clicks }
                    }
                };
                Ok(Ok(Claim::Finish { outcome }))
            }
            _ => Err(StoreError::corrupt(format!(
                "batch {batch_id} is being applied by another node; retry later"
            ))),
        }
    }

    /// Marks a claimed batch's counts written.
    async fn mark_counted(&self, batch_id: &str) -> Result<(), StoreError> {
        self.exec(
            "UPDATE {ks}.click_batches USING TTL ? SET state = 'counted', clicks = 0 \
             WHERE batch_id = ?",
            Kind::Write,
            (self.click_retention_secs, batch_id),
        )
        .await
        .map(drop)
    }
}

#[async_trait]
impl ClickStore for CqlStore {
    async fn ingest_clicks(
        &self,
        batch_id: &str,
        clicks: Vec<EnrichedClick>,
    ) -> Result<IngestOutcome, StoreError> {
        // Counts an earlier round could not write go first: a batch of that round sent
        // again then finds itself counted.
        if self.fold.pending() {
            self.flush_counts().await;
        }
        let ids: std::collections::HashSet<LinkId> = clicks.iter().map(|c| c.link_id).collect();
        let links: HashMap<LinkId, Option<LinkInfo>> = {
            use futures_util::StreamExt;
            let found: Vec<Result<(LinkId, Option<LinkInfo>), StoreError>> =
                futures_util::stream::iter(
                    ids.into_iter()
                        .map(|id| async move { Ok((id, self.link_info_cached(id).await?)) }),
                )
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
            found.into_iter().collect::<Result<_, _>>()?
        };
        // Claimed only now, with every read of its own done: a round failing before it adds
        // the counts (its slot or a row read back) releases the claim.
        let batch_clicks: u64 = clicks.iter().map(|c| u64::from(c.count.max(1))).sum();
        let claim = match self.claim_batch(batch_id, batch_clicks).await? {
            Ok(claim) => claim,
            Err(outcome) => return Ok(outcome),
        };
        let counted: Vec<&EnrichedClick> = clicks
            .iter()
            .filter(|c| matches!(links.get(&c.link_id), Some(Some(_))))
            .collect();
        let delta = RollupDelta::of(&counted);
        let OwnerDelta {
            hours: owner_hours,
            link_days: owner_days,
        } = delta.owners(|link| match links.get(&link) {
            Some(Some(info)) => Some(info.owner),
            _ => None,
        });
        let RollupDelta {
            hours,
            days,
            links: per_link,
            visitor_hours,
            visitor_days,
        } = delta;
        let clicked = per_link
            .iter()
            .filter_map(|(link, delta)| match links.get(link) {
                Some(Some(info)) => Some((
                    *link,
                    fold::Clicked {
                        delta: *delta,
                        owner: info.owner,
                        domain: info.domain.clone(),
                        code: info.code.clone(),
                    },
                )),
                _ => None,
            })
            .collect();
        let mut counts: HashMap<fold::Row, (i64, i64)> = HashMap::new();
        for ((link, hour), value) in hours {
            counts.insert(fold::Row::Hour(link, hour), value);
        }
        for ((link, day, dim, key), n) in days {
            counts.insert(fold::Row::Day(link, day, dim, key.to_owned()), (n, 0));
        }
        for ((owner, hour), value) in owner_hours {
            counts.insert(fold::Row::OwnerHour(owner, hour), value);
        }
        for ((owner, day, link), value) in owner_days {
            counts.insert(fold::Row::OwnerDay(owner, day, link), value);
        }
        for (link, delta) in &per_link {
            counts.insert(fold::Row::Link(*link), (delta.clicks, 0));
        }
        let deltas = fold::Deltas {
            counts,
            visitor_hours,
            visitor_days,
            clicked,
            batch_id: batch_id.to_owned(),
        };
        // Counts, visitor sketches and `link.clicked` events go in a round shared with
        // the batches ingested meanwhile (crate::fold).
        let outcome = async {
            Ok::<IngestOutcome, StoreError>(match claim {
                Claim::Finish { outcome } => {
                    self.write_extras_of(deltas).await?;
                    outcome
                }
                Claim::New => {
                    let folded = self.count_folded(deltas).await;
                    match folded.counters {
                        fold::Round::All => {}
                        fold::Round::Nothing(error) => {
                            // Nothing counted: free the claim so the sender's retry counts it.
                            self.lwt(
                                "DELETE FROM {ks}.click_batches WHERE batch_id = ? \
                                 IF state = 'applying'",
                                (batch_id,),
                            )
                            .await?;
                            return Err(error.into());
                        }
                        fold::Round::Carried(error) => {
                            // Counted in memory, written by a later round, which marks the
                            // claim counted; the sender's retry then finishes the batch.
                            warn!(
                                batch_id,
                                clicks = batch_clicks,
                                %error,
                                "count writes of a click batch did not land; a later round \
                                 writes them"
                            );
                            return Err(error.into());
                        }
                    }
                    self.mark_counted(batch_id).await?;
                    folded.rest?;
                    IngestOutcome::Applied
                }
            })
        }
        .await?;
        // The raw clicks, one row per owner, for exports.
        let logs = owner_logs(&counted, |link| match links.get(&link) {
            Some(Some(info)) => Some(info.owner),
            _ => None,
        });
        // Stamped once the counts are written, just before its own write: an export
        // reads rows up to the settle time before now, so a row must land within it.
        let at_ms = now_unix_ms();
        let day = day_of(at_ms.div_euclid(1000));
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(logs.len());
        for log in logs {
            writes.push(Box::pin(async move {
                self.exec(
                    "INSERT INTO {ks}.click_log (owner, day, at, batch_id, clicks, body) \
                     VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
                    Kind::Write,
                    (
                        log.owner,
                        day,
                        at_ms,
                        batch_id,
                        log.clicks,
                        log.body,
                        self.click_retention_secs,
                    ),
                )
                .await
                .map(drop)
            }));
        }
        run_concurrently(writes, WRITE_CONCURRENCY).await?;
        let total: i64 = per_link.values().map(|l| l.clicks).sum();
        // The raw clicks are in `click_log`, per owner; the claim keeps the count only.
        self.exec(
            "UPDATE {ks}.click_batches USING TTL ? SET state = 'applied', clicks = ? \
             WHERE batch_id = ?",
            Kind::Write,
            (self.click_retention_secs, total, batch_id),
        )
        .await?;
        Ok(outcome)
    }

    async fn close_ingestion(&self) {
        self.release_slot().await;
    }

    async fn link_stats(&self, query: StatsQuery) -> Result<LinkStats, StoreError> {
        let step = query.interval.seconds();
        let mut stats = LinkStats::default();
        if query.to <= query.from {
            return Ok(stats);
        }
        let first_day = day_of(query.from);
        let mut tops = Tops::default();
        for month in ids::month_of(first_day)..=ids::month_of(query.to - 1) {
            let span = (query.link_id, month, query.from, query.to);
            for (hour, total, bots) in self.hour_rows(HourRows::Link, span).await? {
                add_hour(&mut stats, hour, total, bots, step);
            }
            let values = (query.link_id, month, first_day, query.to);
            let counted: Vec<(String, String, Option<Counter>)> = self
                .rows(
                    "SELECT dim, key, n FROM {ks}.rollup_day \
                     WHERE link_id = ? AND month = ? AND day >= ? AND day < ?",
                    values,
                )
                .await?;
            let written: Vec<(String, String, Option<i64>)> = self
                .rows(
                    "SELECT dim, key, n FROM {ks}.rollup_day_w \
                     WHERE link_id = ? AND month = ? AND day >= ? AND day < ?",
                    values,
                )
                .await?;
            let counted = counted
                .into_iter()
                .map(|(d, k, n)| (d, k, n.map_or(0, |c| c.0)));
            let written = written.into_iter().map(|(d, k, n)| (d, k, n.unwrap_or(0)));
            for (dim, key, n) in counted.chain(written) {
                tops.add(&dim, key, n);
            }
        }
        tops.finish(&mut stats, query.top, query.include_bots);
        stats.unique_visitors = self
            .range_visitors(query.link_id, query.from, query.to)
            .await?;
        Ok(stats)
    }

    async fn owner_clicks(&self, query: ClickLogQuery) -> Result<ClickPage, StoreError> {
        let after = query.after.clone().unwrap_or_default();
        let now = now_unix();
        // Rows are read up to the settle time before now, like the feeds: one stamped
        // earlier but still being written is then not skipped (see `ingest_clicks`).
        let horizon_ms = now_unix_ms() - self.settle_us / 1000;
        let oldest = day_of(now - i64::from(self.click_retention_secs));
        let mut day = day_of(after.position.div_euclid(1000)).max(oldest);
        let mut page = ClickPage::default();
        let mut budget = LOG_ROWS_PER_PAGE;
        let mut from = (after.position, after.batch.clone());
        while day <= day_of(horizon_ms.div_euclid(1000)) {
            // The cursor's own row again (its clicks past `line`), then those after it.
            let rows: Vec<(i64, String, Option<Vec<u8>>)> = self
                .rows(
                    "SELECT at, batch_id, body FROM {ks}.click_log \
                     WHERE owner = ? AND day = ? AND (at, batch_id) >= (?, ?) \
                     AND (at, batch_id) < (?, '') LIMIT ?",
                    (
                        query.owner,
                        day,
                        from.0,
                        from.1.as_str(),
                        horizon_ms,
                        LOG_ROWS_PER_READ.min(budget) as i32,
                    ),
                )
                .await?;
            let read = rows.len();
            for (at, batch, body) in rows {
                let skip = if (at, batch.as_str()) == (after.position, after.batch.as_str()) {
                    after.line
                } else {
                    0
                };
                let mut line = 0u32;
                for click in decode_log(body.as_deref().unwrap_or_default()) {
                    line = line.saturating_add(1);
                    if line <= skip || query.link.is_some_and(|l| l != click.link_id) {
                        continue;
                    }
                    if page.clicks.len() == query.limit {
                        page.next = page.clicks.last().map(|(_, c)| c.clone());
                        return self.page_links(page).await;
                    }
                    let cursor = ClickCursor {
                        position: at,
                        batch: batch.clone(),
                        line,
                    };
                    page.clicks.push((click, cursor));
                }
                // Past this row: its clicks all read (whatever its length).
                page.next = Some(ClickCursor {
                    position: at,
                    batch: batch.clone(),
                    line: u32::MAX,
                });
                // The next read starts just after it (a batch id has no NUL byte).
                from = (at, format!("{batch}\0"));
            }
            budget -= read;
            if budget == 0 {
                return self.page_links(page).await;
            }
            if read < LOG_ROWS_PER_READ.min(budget + read) {
                day += 86_400;
            }
        }
        page.next = None;
        self.page_links(page).await
    }

    async fn account_stats(&self, query: AccountStatsQuery) -> Result<AccountStats, StoreError> {
        let mut series = LinkStats::default();
        if query.to <= query.from {
            return Ok(AccountStats::default());
        }
        let first_day = day_of(query.from);
        let mut per_link: HashMap<LinkId, (i64, i64)> = HashMap::new();
        for month in ids::month_of(first_day)..=ids::month_of(query.to - 1) {
            let span = (query.owner, month, query.from, query.to);
            for (hour, total, bots) in self.hour_rows(HourRows::Owner, span).await? {
                add_hour(&mut series, hour, total, bots, query.interval.seconds());
            }
            let values = (query.owner, month, first_day, query.to);
            let counted: Vec<(LinkId, Option<Counter>, Option<Counter>)> = self
                .rows(
                    "SELECT link_id, total, bots FROM {ks}.owner_link_day \
                     WHERE owner = ? AND month = ? AND day >= ? AND day < ?",
                    values,
                )
                .await?;
            let written: Vec<(LinkId, Option<i64>, Option<i64>)> = self
                .rows(
                    "SELECT link_id, total, bots FROM {ks}.owner_link_day_w \
                     WHERE owner = ? AND month = ? AND day >= ? AND day < ?",
                    values,
                )
                .await?;
            let counted = counted
                .into_iter()
                .map(|(l, t, b)| (l, t.map_or(0, |c| c.0), b.map_or(0, |c| c.0)));
            let written = written
                .into_iter()
                .map(|(l, t, b)| (l, t.unwrap_or(0), b.unwrap_or(0)));
            for (link, total, bots) in counted.chain(written) {
                let slot = per_link.entry(link).or_default();
                slot.0 += total;
                slot.1 += bots;
            }
        }
        let mut links = Vec::with_capacity(query.top);
        let per_link = per_link
            .into_iter()
            .map(|(link, (total, bots))| (link, total, bots));
        for (link_id, clicks) in rank_links(per_link, query.include_bots) {
            if links.len() == query.top {
                break;
            }
            // A deleted link keeps its clicks in the totals, not in the list.
            if let Some(info) = self.link_info(link_id).await? {
                links.push(LinkCount {
                    link_id,
                    domain: info.domain,
                    code: info.code,
                    clicks,
                });
            }
        }
        Ok(AccountStats::new(series, links))
    }
}
