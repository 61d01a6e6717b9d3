//! Click ingestion and stats on SQLite.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, ToSql, params};
use shortlink_core::time_util::{now_unix, now_unix_ms};
use shortlink_core::{AccountStats, EnrichedClick, LinkCount, LinkId, LinkStats};

use super::EmbeddedStore;
use super::events;
use super::pacing::Pacer;
use shortlink_store::rollup::{
    OwnerDelta, RollupDelta, Tops, add_hour, day_of, decode_log, owner_logs, rank_links,
};
use shortlink_store::visitors::{Period, Visitors, cover};
use shortlink_store::{
    AccountStatsQuery, ClickCursor, ClickLogQuery, ClickPage, ClickStore, IngestOutcome,
    StatsQuery, StoreError,
};

/// Logged batches deleted per ingestion when pruning, so pruning never stalls the writer.
const PRUNE_ROWS: i64 = 100;

/// Rows per multi-row statement: one statement per chunk instead of one per row.
const VALUES_CHUNK: usize = 128;

/// Events appended per statement group between the pacer's steps.
const EVENTS_CHUNK: usize = 64;

/// Runs `{head} (?, …), (?, …) {tail}` over rows of `width` cells (`cells` holds them back
/// to back), `VALUES_CHUNK` rows per statement: the upserts of rollups and the update of
/// link counts.
fn rows_of_values(
    conn: &rusqlite::Connection,
    head: &str,
    tail: &str,
    width: usize,
    cells: &[&dyn ToSql],
    pacer: &mut Pacer,
) -> rusqlite::Result<()> {
    let row = format!("({})", vec!["?"; width].join(", "));
    for chunk in cells.chunks(width * VALUES_CHUNK) {
        let rows = vec![row.as_str(); chunk.len() / width].join(", ");
        conn.prepare_cached(&format!("{head} {rows} {tail}"))?
            .execute(chunk)?;
        pacer.step();
    }
    Ok(())
}

/// Ids per `IN (…)` lookup of the links a batch clicked.
const LOOKUP_CHUNK: usize = 256;

/// The links among `ids` that exist, looked up `LOOKUP_CHUNK` at a time.
fn link_infos(
    conn: &rusqlite::Connection,
    ids: &[LinkId],
    pacer: &mut Pacer,
) -> rusqlite::Result<HashMap<LinkId, LinkInfo>> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let mut find = conn.prepare_cached(&format!(
            "SELECT id, domain, code, owner FROM links WHERE id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        ))?;
        let rows = find.query_map(rusqlite::params_from_iter(chunk), |r| {
            Ok((
                r.get::<_, LinkId>(0)?,
                LinkInfo {
                    domain: r.get(1)?,
                    code: r.get(2)?,
                    owner: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (id, info) = row?;
            out.insert(id, info);
        }
        pacer.step();
    }
    Ok(out)
}

/// Log rows one page of raw clicks reads at most.
const LOG_ROWS_PER_PAGE: usize = 64;

/// Log rows read per statement: few, so a page that fills up early has read little more
/// than it returns.
const LOG_ROWS_PER_READ: i64 = 8;

/// The next log rows of `owner` from row `from` on, oldest first, at most
/// [`LOG_ROWS_PER_READ`]: rows of older versions (owner unknown, flagged `true`) first,
/// since every one of them is older than every row that names its owner.
fn owner_log_rows(
    conn: &rusqlite::Connection,
    owner: i64,
    from: i64,
) -> rusqlite::Result<Vec<(i64, bool, Vec<u8>)>> {
    let mut shared = conn.prepare_cached(
        "SELECT id, body FROM click_log WHERE owner IS NULL AND id >= ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = shared
        .query_map(params![from, LOG_ROWS_PER_READ], |r| {
            Ok((r.get::<_, i64>(0)?, true, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if !rows.is_empty() {
        return Ok(rows);
    }
    let mut own = conn.prepare_cached(
        "SELECT id, body FROM click_log WHERE owner = ?1 AND id >= ?2 ORDER BY id LIMIT ?3",
    )?;
    own.query_map(params![owner, from, LOG_ROWS_PER_READ], |r| {
        Ok((r.get::<_, i64>(0)?, false, r.get::<_, Vec<u8>>(1)?))
    })?
    .collect()
}

/// `page` with the (domain, code) of its links that still exist.
fn page_links(conn: &rusqlite::Connection, mut page: ClickPage) -> rusqlite::Result<ClickPage> {
    let mut find = conn.prepare_cached("SELECT domain, code FROM links WHERE id = ?1")?;
    for (click, _) in &page.clicks {
        if !page.links.contains_key(&click.link_id)
            && let Some(key) = find
                .query_row([click.link_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
        {
            page.links.insert(click.link_id, key);
        }
    }
    Ok(page)
}

/// What ingestion needs of a clicked link.
struct LinkInfo {
    owner: i64,
    domain: String,
    code: String,
}

/// Merges `visitors` into the stored sketch of `link` at `at` (an hour or a day start).
pub(crate) fn merge_visitors(
    conn: &rusqlite::Connection,
    period: Period,
    link: LinkId,
    at: i64,
    mut visitors: Visitors,
) -> rusqlite::Result<()> {
    let (read, write) = match period {
        Period::Hour => (
            "SELECT sketch FROM visitors_hour WHERE link_id = ?1 AND hour = ?2",
            "INSERT OR REPLACE INTO visitors_hour (link_id, hour, sketch) VALUES (?1, ?2, ?3)",
        ),
        Period::Day => (
            "SELECT sketch FROM visitors_day WHERE link_id = ?1 AND day = ?2",
            "INSERT OR REPLACE INTO visitors_day (link_id, day, sketch) VALUES (?1, ?2, ?3)",
        ),
    };
    let stored: Option<Vec<u8>> = conn
        .prepare_cached(read)?
        .query_row(params![link, at], |r| r.get(0))
        .optional()?;
    if let Some(bytes) = stored {
        // A sketch that cannot be read (damaged) is replaced rather than failing ingestion.
        visitors.merge_bytes(&bytes);
    }
    conn.prepare_cached(write)?
        .execute(params![link, at, visitors.to_bytes()])?;
    Ok(())
}

/// The estimated human visitors of `link` over `[from, to)`.
fn range_visitors(
    conn: &rusqlite::Connection,
    link: LinkId,
    from: i64,
    to: i64,
) -> rusqlite::Result<u64> {
    let cover = cover(from, to);
    let mut all = Visitors::new();
    let mut merge = |sql: &str, a: i64, b: i64| -> rusqlite::Result<()> {
        if a >= b {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![link, a, b], |r| r.get::<_, Vec<u8>>(0))?;
        for bytes in rows {
            all.merge_bytes(&bytes?);
        }
        Ok(())
    };
    merge(
        "SELECT sketch FROM visitors_day WHERE link_id = ?1 AND day >= ?2 AND day < ?3",
        cover.days.0,
        cover.days.1,
    )?;
    for (a, b) in cover.hours {
        merge(
            "SELECT sketch FROM visitors_hour WHERE link_id = ?1 AND hour >= ?2 AND hour < ?3",
            a,
            b,
        )?;
    }
    Ok(all.estimate())
}

#[async_trait]
impl ClickStore for EmbeddedStore {
    async fn ingest_clicks(
        &self,
        batch_id: &str,
        clicks: Vec<EnrichedClick>,
    ) -> Result<IngestOutcome, StoreError> {
        let batch_id = batch_id.to_owned();
        let retention_ms = self.click_retention_days.saturating_mul(86_400_000);
        let pacing = self.ingest_pacing;
        let outstanding = self.writer.outstanding();
        self.writer
            .write(move |conn| {
                // A big batch runs as slices with rests between, not as one burst that
                // would queue the proxy's redirects behind it (see `pacing`).
                let mut pacer = Pacer::new(pacing, outstanding);
                let now = now_unix();
                let new = conn.execute(
                    "INSERT INTO ingested_batches (batch_id, at) VALUES (?1, ?2)
                     ON CONFLICT (batch_id) DO NOTHING",
                    params![batch_id, now],
                )?;
                if new == 0 {
                    return Ok(IngestOutcome::Duplicate);
                }
                let mut ids: Vec<LinkId> = clicks.iter().map(|c| c.link_id).collect();
                ids.sort_unstable();
                ids.dedup();
                let links = link_infos(conn, &ids, &mut pacer)?;
                let counted: Vec<&EnrichedClick> = clicks
                    .iter()
                    .filter(|c| links.contains_key(&c.link_id))
                    .collect();
                let logs = owner_logs(&counted, |link| links.get(&link).map(|info| info.owner));
                let delta = RollupDelta::of(&counted);
                let owners = delta.owners(|link| links.get(&link).map(|info| info.owner));
                let RollupDelta {
                    hours,
                    days,
                    links: per_link,
                    visitor_hours,
                    visitor_days,
                } = delta;
                pacer.step();
                for log in &logs {
                    conn.prepare_cached(
                        "INSERT INTO click_log (at, clicks, body, owner) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![now, log.clicks, log.body, log.owner])?;
                }
                {
                    let mut cells: Vec<&dyn ToSql> = Vec::with_capacity(hours.len() * 4);
                    for ((link, hour), (total, bots)) in &hours {
                        cells.extend([link as &dyn ToSql, hour, total, bots]);
                    }
                    rows_of_values(
                        conn,
                        "INSERT INTO rollup_hour (link_id, hour, total, bots) VALUES",
                        "ON CONFLICT (link_id, hour) DO UPDATE
                         SET total = total + excluded.total, bots = bots + excluded.bots",
                        4,
                        &cells,
                        &mut pacer,
                    )?;
                    let mut cells: Vec<&dyn ToSql> = Vec::with_capacity(days.len() * 5);
                    for ((link, day, dim, key), count) in &days {
                        cells.extend([link as &dyn ToSql, day, dim, key, count]);
                    }
                    rows_of_values(
                        conn,
                        "INSERT INTO rollup_day (link_id, day, dim, key, count) VALUES",
                        "ON CONFLICT (link_id, day, dim, key) DO UPDATE SET count = count + excluded.count",
                        5,
                        &cells,
                        &mut pacer,
                    )?;
                    let OwnerDelta { hours, link_days } = &owners;
                    let mut cells: Vec<&dyn ToSql> = Vec::with_capacity(hours.len() * 4);
                    for ((owner, hour), (total, bots)) in hours {
                        cells.extend([owner as &dyn ToSql, hour, total, bots]);
                    }
                    rows_of_values(
                        conn,
                        "INSERT INTO owner_rollup_hour (owner, hour, total, bots) VALUES",
                        "ON CONFLICT (owner, hour) DO UPDATE
                         SET total = total + excluded.total, bots = bots + excluded.bots",
                        4,
                        &cells,
                        &mut pacer,
                    )?;
                    let mut cells: Vec<&dyn ToSql> = Vec::with_capacity(link_days.len() * 5);
                    for ((owner, day, link), (total, bots)) in link_days {
                        cells.extend([owner as &dyn ToSql, day, link, total, bots]);
                    }
                    rows_of_values(
                        conn,
                        "INSERT INTO owner_link_day (owner, day, link_id, total, bots) VALUES",
                        "ON CONFLICT (owner, day, link_id) DO UPDATE
                         SET total = total + excluded.total, bots = bots + excluded.bots",
                        5,
                        &cells,
                        &mut pacer,
                    )?;
                    let mut cells: Vec<&dyn ToSql> = Vec::with_capacity(per_link.len() * 2);
                    for (link, delta) in &per_link {
                        cells.extend([link as &dyn ToSql, &delta.clicks]);
                    }
                    rows_of_values(
                        conn,
                        "UPDATE links SET clicks = clicks + v.column2 FROM (VALUES",
                        ") AS v WHERE links.id = v.column1",
                        2,
                        &cells,
                        &mut pacer,
                    )?;
                    for ((link, hour), visitors) in visitor_hours {
                        merge_visitors(conn, Period::Hour, link, hour, visitors)?;
                    }
                    for ((link, day), visitors) in visitor_days {
                        merge_visitors(conn, Period::Day, link, day, visitors)?;
                    }
                    pacer.step();
                    let mut events = Vec::with_capacity(per_link.len());
                    for (link, delta) in &per_link {
                        let Some(info) = links.get(link) else { continue };
                        // One `link.clicked` per link per batch (a batch spans a second of
                        // capture at most), written with the batch: exactly once.
                        events.push(delta.clicked_event(info.owner, &info.domain, &info.code));
                    }
                    let at_ms = now_unix_ms();
                    let mut events = events.into_iter().peekable();
                    while events.peek().is_some() {
                        events::append(conn, events.by_ref().take(EVENTS_CHUNK).collect(), at_ms)?;
                        pacer.step();
                    }
                }
                if retention_ms > 0 {
                    // Batches arrive roughly in time order, so the log is pruned by arrival:
                    // the oldest rows by id, those of them past the cutoff. (Filtering the
                    // whole log by `at`, which has no index, read every row of it per
                    // batch: ingestion slowed as the log grew.)
                    let cutoff = now - retention_ms / 1000;
                    // At least twice the rows just written, so pruning keeps up with
                    // batches of many owners.
                    let prune = PRUNE_ROWS.max(2 * logs.len() as i64);
                    conn.prepare_cached(
                        "DELETE FROM click_log WHERE id IN
                         (SELECT id FROM click_log ORDER BY id LIMIT ?2) AND at < ?1",
                    )?
                    .execute(params![cutoff, prune])?;
                    conn.prepare_cached("DELETE FROM ingested_batches WHERE at < ?1")?
                        .execute(params![cutoff])?;
                }
                Ok(IngestOutcome::Applied)
            })
            .await
    }

    async fn link_stats(&self, query: StatsQuery) -> Result<LinkStats, StoreError> {
        self.read(move |conn| {
            let step = query.interval.seconds();
            let mut stats = LinkStats::default();
            let mut stmt = conn.prepare_cached(
                "SELECT hour, total, bots FROM rollup_hour
                 WHERE link_id = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour",
            )?;
            let rows = stmt.query_map(params![query.link_id, query.from, query.to], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (hour, total, bots) = row?;
                add_hour(
                    &mut stats,
                    hour,
                    total.max(0) as u64,
                    bots.max(0) as u64,
                    step,
                );
            }
            let mut stmt = conn.prepare_cached(
                "SELECT dim, key, SUM(count) FROM rollup_day
                 WHERE link_id = ?1 AND day >= ?2 AND day < ?3
                 GROUP BY dim, key",
            )?;
            let rows =
                stmt.query_map(params![query.link_id, day_of(query.from), query.to], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
            let mut tops = Tops::default();
            for row in rows {
                let (dim, key, count) = row?;
                tops.add(&dim, key, count);
            }
            tops.finish(&mut stats, query.top, query.include_bots);
            stats.unique_visitors = range_visitors(conn, query.link_id, query.from, query.to)?;
            Ok(stats)
        })
        .await
    }

    async fn owner_clicks(&self, query: ClickLogQuery) -> Result<ClickPage, StoreError> {
        self.read(move |conn| {
            let after = query.after.clone().unwrap_or_default();
            let mut page = ClickPage::default();
            // Owners of links seen in rows of older versions, which mix owners.
            let mut owners: HashMap<LinkId, Option<i64>> = HashMap::new();
            let mut find = conn.prepare_cached("SELECT owner FROM links WHERE id = ?1")?;
            let mut from = after.position;
            let mut scanned = 0;
            loop {
                let rows = owner_log_rows(conn, query.owner, from)?;
                if rows.is_empty() {
                    // The end of the log.
                    return Ok(page_links(conn, page)?);
                }
                for (id, shared, body) in rows {
                    let skip = if id == after.position { after.line } else { 0 };
                    for (i, click) in decode_log(&body).enumerate() {
                        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
                        if line <= skip || query.link.is_some_and(|l| l != click.link_id) {
                            continue;
                        }
                        if shared {
                            let owner = match owners.get(&click.link_id) {
                                Some(owner) => *owner,
                                None => {
                                    let owner = find
                                        .query_row([click.link_id], |r| r.get::<_, i64>(0))
                                        .optional()?;
                                    owners.insert(click.link_id, owner);
                                    owner
                                }
                            };
                            if owner != Some(query.owner) {
                                continue;
                            }
                        }
                        let cursor = ClickCursor {
                            position: id,
                            batch: String::new(),
                            line,
                        };
                        if page.clicks.len() == query.limit {
                            // One more exists: the page ends before it.
                            page.next = page.clicks.last().map(|(_, c)| c.clone());
                            return Ok(page_links(conn, page)?);
                        }
                        page.clicks.push((click, cursor));
                    }
                    from = id + 1;
                    scanned += 1;
                }
                if scanned >= LOG_ROWS_PER_PAGE {
                    page.next = Some(ClickCursor {
                        position: from,
                        batch: String::new(),
                        line: 0,
                    });
                    return Ok(page_links(conn, page)?);
                }
            }
        })
        .await
    }

    async fn account_stats(&self, query: AccountStatsQuery) -> Result<AccountStats, StoreError> {
        self.read(move |conn| {
            let mut series = LinkStats::default();
            let mut stmt = conn.prepare_cached(
                "SELECT hour, total, bots FROM owner_rollup_hour
                 WHERE owner = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour",
            )?;
            let rows = stmt.query_map(params![query.owner, query.from, query.to], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (hour, total, bots) = row?;
                let (total, bots) = (total.max(0) as u64, bots.max(0) as u64);
                add_hour(&mut series, hour, total, bots, query.interval.seconds());
            }
            let mut stmt = conn.prepare_cached(
                "SELECT link_id, SUM(total), SUM(bots) FROM owner_link_day
                 WHERE owner = ?1 AND day >= ?2 AND day < ?3 GROUP BY link_id",
            )?;
            let rows = stmt
                .query_map(params![query.owner, day_of(query.from), query.to], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut links = Vec::with_capacity(query.top);
            let mut find = conn.prepare_cached("SELECT domain, code FROM links WHERE id = ?1")?;
            for (link_id, clicks) in rank_links(rows, query.include_bots) {
                if links.len() == query.top {
                    break;
                }
                // A deleted link keeps its clicks in the totals, not in the list.
                let found = find
                    .query_row([link_id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((domain, code)) = found {
                    links.push(LinkCount {
                        link_id,
                        domain,
                        code,
                        clicks,
                    });
                }
            }
            Ok(AccountStats::new(series, links))
        })
        .await
    }
}
