//! Backups of the CQL store: paged scans of the bulky tables and raw restores. CQL has
//! no snapshot a client can read, so a backup of a cluster that takes clicks meanwhile
//! is read table by table (see ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use scylla::serialize::row::SerializeRow;
use scylla::value::Counter;
use shortlink_core::LinkId;
use shortlink_core::time_util::now_unix;
use shortlink_store::backup::{
    BackupStore, ClickLogRow, CountRow, DayRow, LinkRecord, OwnerLinkDayRow, Record, ScanPage,
    SketchRow, Table, UploadRecord, not_raw,
};
use shortlink_store::rollup::{day_of, log_clicks};
use shortlink_store::{Store, StoreError, targeting_json};

use crate::accounts::AUDIT_BUCKET;
use crate::clicks::{
    DAY_UPDATE, HOUR_UPDATE, OWNER_DAY_UPDATE, OWNER_HOUR_UPDATE, VISITORS_DAY_INSERT,
    VISITORS_HOUR_INSERT, WRITE_CONCURRENCY, Write,
};
use crate::links::{LINK_SELECT, LinkRow, owner_month, url_hash};
use crate::{CqlStore, Kind, ids};

type Counted = Option<Counter>;

/// Records restored so far per second of their time, by this process.
static RESTORED_PER_SECOND: std::sync::LazyLock<std::sync::Mutex<HashMap<i64, i64>>> =
    std::sync::LazyLock::new(Default::default);

/// An id made in `unix_secs`, after those restored of that second before (a SQLite backup
/// holds links in the order they were made, so that order is kept).
fn restored_id(unix_secs: i64) -> i64 {
    let mut seen = RESTORED_PER_SECOND
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let nth = seen.entry(unix_secs).or_default();
    *nth += 1;
    ids::restored_id(unix_secs, *nth)
}

fn count(c: Counted) -> i64 {
    c.map_or(0, |c| c.0)
}

/// Where a scan of counts stands: in the counter table of versions before per-writer
/// counts, then in the per-writer table (a record per writer's row: a restore adds
/// records of one key up). A cursor's first byte says which, the rest is the driver's.
enum Scan {
    Counted(Option<Vec<u8>>),
    Written(Option<Vec<u8>>),
}

impl Scan {
    fn of(cursor: Option<Vec<u8>>) -> Scan {
        match cursor.as_deref() {
            Some([1, rest @ ..]) => Scan::Written((!rest.is_empty()).then(|| rest.to_vec())),
            Some([_, rest @ ..]) => Scan::Counted((!rest.is_empty()).then(|| rest.to_vec())),
            _ => Scan::Counted(None),
        }
    }

    /// The cursor after a page of counters: the per-writer table follows the last one.
    fn after_counted(next: Option<Vec<u8>>) -> Option<Vec<u8>> {
        Some(match next {
            Some(paging) => [&[0u8][..], &paging].concat(),
            None => vec![1],
        })
    }

    /// The cursor after a page of per-writer rows.
    fn after_written(next: Option<Vec<u8>>) -> Option<Vec<u8>> {
        next.map(|paging| [&[1u8][..], &paging].concat())
    }
}

impl CqlStore {
    async fn write(&self, cql: &'static str, values: impl SerializeRow) -> Result<(), StoreError> {
        self.exec(cql, Kind::Write, values).await.map(drop)
    }

    async fn add(&self, cql: &'static str, values: impl SerializeRow) -> Result<(), StoreError> {
        self.exec(cql, Kind::Counter, values).await.map(drop)
    }

    async fn restore_one(&self, record: Record) -> Result<(), StoreError> {
        let is_hour = matches!(record, Record::VisitorsHour(_));
        match record {
            Record::Installation {
                code_salt,
                signing_key,
            } => {
                for (key, value) in [
                    ("code_salt", code_salt.to_string()),
                    ("signing_key", signing_key.0),
                ] {
                    self.write(
                        "INSERT INTO {ks}.meta (key, value) VALUES (?, ?)",
                        (key, value),
                    )
                    .await?;
                }
            }
            Record::User(u) => {
                self.write(
                    "INSERT INTO {ks}.users (id, name, role, created_at, disabled, password_hash) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        u.id,
                        &u.name,
                        u.role.as_str(),
                        u.created_at,
                        u.disabled,
                        &u.password_hash,
                    ),
                )
                .await?;
                self.write(
                    "INSERT INTO {ks}.users_by_name (name, id) VALUES (?, ?)",
                    (&u.name, u.id),
                )
                .await?;
            }
            Record::Audit(a) => {
                let id = restored_id(a.at);
                self.write(
                    "INSERT INTO {ks}.audit_log (bucket, id, at, actor, action, target, detail) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        AUDIT_BUCKET,
                        id,
                        a.at,
                        a.actor,
                        &a.action,
                        &a.target,
                        &a.detail,
                    ),
                )
                .await?;
            }
            Record::Link(l) => {
                let link = shortlink_core::Link::from(l);
                let tags = (!link.tags.is_empty()).then_some(&link.tags);
                let max_clicks = link
                    .max_clicks
                    .map(|m| i64::try_from(m).unwrap_or(i64::MAX));
                self.write(
                    "INSERT INTO {ks}.links (domain, code, id, custom_alias, owner, url, redirect, \
                     expires_at, max_clicks, tags, disabled, created_at, updated_at, password_hash, \
                     targeting, fallback_url) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        &link.domain,
                        link.code.as_str(),
                        link.id,
                        link.custom_alias,
                        link.owner,
                        &link.url,
                        i32::from(link.redirect.as_u16()),
                        link.expires_at,
                        max_clicks,
                        tags,
                        link.disabled,
                        link.created_at,
                        link.updated_at,
                        &link.password_hash,
                        targeting_json(&link.targeting)?,
                        &link.fallback_url,
                    ),
                )
                .await?;
                // CQL binds at most 16 values per statement.
                if link.moderation.is_some() {
                    self.write(
                        "UPDATE {ks}.links SET moderation = ? WHERE domain = ? AND code = ?",
                        (&link.moderation, &link.domain, link.code.as_str()),
                    )
                    .await?;
                }
                self.write(
                    "INSERT INTO {ks}.links_by_id (id, domain, code) VALUES (?, ?, ?)",
                    (link.id, &link.domain, link.code.as_str()),
                )
                .await?;
                self.write(
                    "INSERT INTO {ks}.links_by_owner (owner, month, id, domain, code, url, tags) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        link.owner,
                        owner_month(link.id),
                        link.id,
                        &link.domain,
                        link.code.as_str(),
                        &link.url,
                        tags,
                    ),
                )
                .await?;
                if link.is_plain() {
                    self.write(
                        "INSERT INTO {ks}.links_by_url (owner, domain, url_hash, link_id, code) \
                         VALUES (?, ?, ?, ?, ?)",
                        (
                            link.owner,
                            &link.domain,
                            url_hash(&link.url),
                            link.id,
                            link.code.as_str(),
                        ),
                    )
                    .await?;
                }
                if link.clicks > 0 {
                    self.add(
                        crate::clicks::LINK_CLICKS_UPDATE,
                        (
                            Counter(i64::try_from(link.clicks).unwrap_or(i64::MAX)),
                            link.id,
                        ),
                    )
                    .await?;
                }
                self.record_change(&link.domain, link.code.as_str()).await?;
            }
            Record::VisitorsHour(row) | Record::VisitorsDay(row) => {
                let bytes = row.bytes().ok_or_else(|| {
                    StoreError::corrupt(format!(
                        "the visitors of link {} at {} are not base64",
                        row.link_id, row.at
                    ))
                })?;
                let batch = format!("restored-{:016x}", rand::random::<u64>());
                let month = ids::month_of(row.at);
                if is_hour {
                    self.write(
                        VISITORS_HOUR_INSERT,
                        (row.link_id, month, row.at, batch, bytes),
                    )
                    .await?;
                } else {
                    self.write(
                        VISITORS_DAY_INSERT,
                        (row.link_id, month, row.at, batch, bytes),
                    )
                    .await?;
                }
            }
            Record::ClickLog(row) => {
                let Some(owner) = row.owner else {
                    return Err(StoreError::corrupt(
                        "a click log row without its owner (the restore splits those by link)",
                    ));
                };
                // What is left of the row's retention; a row past it is not kept.
                let age = now_unix().saturating_sub(row.at_ms.div_euclid(1000));
                let ttl = i64::from(self.click_retention_secs).saturating_sub(age);
                if ttl <= 0 {
                    return Ok(());
                }
                let clicks = log_clicks(row.lines.as_bytes());
                let batch = format!("restored-{:016x}", rand::random::<u64>());
                self.write(
                    "INSERT INTO {ks}.click_log (owner, day, at, batch_id, clicks, body) \
                     VALUES (?, ?, ?, ?, ?, ?) USING TTL ?",
                    (
                        owner,
                        day_of(row.at_ms.div_euclid(1000)),
                        row.at_ms,
                        batch,
                        clicks,
                        row.lines.into_bytes(),
                        i32::try_from(ttl.max(1)).unwrap_or(i32::MAX),
                    ),
                )
                .await?;
            }
            other => return Err(not_raw(&other)),
        }
        Ok(())
    }
}

#[async_trait]
impl BackupStore for CqlStore {
    async fn snapshot(&self) -> Result<Option<Arc<dyn Store>>, StoreError> {
        Ok(None)
    }

    async fn scan(
        &self,
        table: Table,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let (records, next) = match table {
            Table::Links => {
                let (rows, next) = self.page::<LinkRow>(LINK_SELECT, cursor, limit).await?;
                let links = self.with_clicks(rows, true).await?;
                let records = links
                    .into_iter()
                    .map(|l| Record::Link(LinkRecord::from(l)))
                    .collect();
                (records, next)
            }
            Table::Uploads => {
                let (rows, next) = self
                    .page::<crate::uploads::UploadRow>(crate::uploads::UPLOAD_SELECT, cursor, limit)
                    .await?;
                let records = rows
                    .into_iter()
                    .map(|r| {
                        r.into_upload()
                            .map(|u| Record::Upload(UploadRecord::from(u)))
                    })
                    .collect::<Result<_, _>>()?;
                (records, next)
            }
            Table::RollupHour | Table::OwnerHour => {
                let owner = table == Table::OwnerHour;
                let wrap: fn(CountRow) -> Record = if owner {
                    Record::OwnerHour
                } else {
                    Record::RollupHour
                };
                let (rows, next) = match Scan::of(cursor) {
                    Scan::Counted(cursor) => {
                        let cql = if owner {
                            "SELECT owner, hour, total, bots FROM {ks}.owner_rollup_hour"
                        } else {
                            "SELECT link_id, hour, total, bots FROM {ks}.rollup_hour"
                        };
                        let (rows, next) = self
                            .page::<(i64, i64, Counted, Counted)>(cql, cursor, limit)
                            .await?;
                        let rows = rows
                            .into_iter()
                            .map(|(id, hour, t, b)| (id, hour, count(t), count(b)))
                            .collect();
                        (rows, Scan::after_counted(next))
                    }
                    Scan::Written(cursor) => {
                        let cql = if owner {
                            "SELECT owner, hour, total, bots FROM {ks}.owner_rollup_hour_w"
                        } else {
                            "SELECT link_id, hour, total, bots FROM {ks}.rollup_hour_w"
                        };
                        let (rows, next) = self
                            .page::<(i64, i64, Option<i64>, Option<i64>)>(cql, cursor, limit)
                            .await?;
                        let rows: Vec<(i64, i64, i64, i64)> = rows
                            .into_iter()
                            .map(|(id, hour, t, b)| (id, hour, t.unwrap_or(0), b.unwrap_or(0)))
                            .collect();
                        (rows, Scan::after_written(next))
                    }
                };
                let records = rows
                    .into_iter()
                    .map(|(id, hour, total, bots)| {
                        wrap(CountRow {
                            id,
                            hour,
                            total,
                            bots,
                        })
                    })
                    .collect();
                (records, next)
            }
            Table::RollupDay => {
                let (rows, next) = match Scan::of(cursor) {
                    Scan::Counted(cursor) => {
                        let (rows, next) = self
                            .page::<(i64, i64, String, String, Counted)>(
                                "SELECT link_id, day, dim, key, n FROM {ks}.rollup_day",
                                cursor,
                                limit,
                            )
                            .await?;
                        let rows: Vec<(i64, i64, String, String, i64)> = rows
                            .into_iter()
                            .map(|(l, d, dim, key, n)| (l, d, dim, key, count(n)))
                            .collect();
                        (rows, Scan::after_counted(next))
                    }
                    Scan::Written(cursor) => {
                        let (rows, next) = self
                            .page::<(i64, i64, String, String, Option<i64>)>(
                                "SELECT link_id, day, dim, key, n FROM {ks}.rollup_day_w",
                                cursor,
                                limit,
                            )
                            .await?;
                        let rows = rows
                            .into_iter()
                            .map(|(l, d, dim, key, n)| (l, d, dim, key, n.unwrap_or(0)))
                            .collect();
                        (rows, Scan::after_written(next))
                    }
                };
                let records = rows
                    .into_iter()
                    .map(|(link_id, day, dim, key, count)| {
                        Record::RollupDay(DayRow {
                            link_id,
                            day,
                            dim,
                            key,
                            count,
                        })
                    })
                    .collect();
                (records, next)
            }
            Table::OwnerLinkDay => {
                let (rows, next) = match Scan::of(cursor) {
                    Scan::Counted(cursor) => {
                        let (rows, next) = self
                            .page::<(i64, i64, i64, Counted, Counted)>(
                                "SELECT owner, day, link_id, total, bots FROM {ks}.owner_link_day",
                                cursor,
                                limit,
                            )
                            .await?;
                        let rows: Vec<(i64, i64, i64, i64, i64)> = rows
                            .into_iter()
                            .map(|(o, d, l, t, b)| (o, d, l, count(t), count(b)))
                            .collect();
                        (rows, Scan::after_counted(next))
                    }
                    Scan::Written(cursor) => {
                        let (rows, next) = self
                            .page::<(i64, i64, i64, Option<i64>, Option<i64>)>(
                                "SELECT owner, day, link_id, total, bots \
                                 FROM {ks}.owner_link_day_w",
                                cursor,
                                limit,
                            )
                            .await?;
                        let rows = rows
                            .into_iter()
                            .map(|(o, d, l, t, b)| (o, d, l, t.unwrap_or(0), b.unwrap_or(0)))
                            .collect();
                        (rows, Scan::after_written(next))
                    }
                };
                let records = rows
                    .into_iter()
                    .map(|(owner, day, link_id, total, bots)| {
                        Record::OwnerLinkDay(OwnerLinkDayRow {
                            owner,
                            day,
                            link_id,
                            total,
                            bots,
                        })
                    })
                    .collect();
                (records, next)
            }
            Table::VisitorsHour | Table::VisitorsDay => {
                let (cql, wrap): (&'static str, fn(SketchRow) -> Record) =
                    if table == Table::VisitorsHour {
                        (
                            "SELECT link_id, hour, sketch FROM {ks}.visitors_hour",
                            Record::VisitorsHour,
                        )
                    } else {
                        (
                            "SELECT link_id, day, sketch FROM {ks}.visitors_day",
                            Record::VisitorsDay,
                        )
                    };
                let (rows, next) = self
                    .page::<(i64, i64, Option<Vec<u8>>)>(cql, cursor, limit)
                    .await?;
                let records = rows
                    .into_iter()
                    .map(|(link, at, sketch)| {
                        wrap(SketchRow::new(
                            link,
                            at,
                            sketch.as_deref().unwrap_or_default(),
                        ))
                    })
                    .collect();
                (records, next)
            }
            Table::ClickLog => {
                let (rows, next) = self
                    .page::<(i64, i64, Vec<u8>)>(
                        "SELECT owner, at, body FROM {ks}.click_log",
                        cursor,
                        limit,
                    )
                    .await?;
                let records = rows
                    .into_iter()
                    .map(|(owner, at_ms, body)| {
                        Record::ClickLog(ClickLogRow {
                            owner: Some(owner),
                            at_ms,
                            lines: String::from_utf8_lossy(&body).into_owned(),
                        })
                    })
                    .collect();
                (records, next)
            }
        };
        Ok(ScanPage { records, next })
    }

    async fn holds_data(&self) -> Result<bool, StoreError> {
        for cql in [
            "SELECT id FROM {ks}.links_by_id LIMIT 1",
            "SELECT id FROM {ks}.uploads LIMIT 1",
            "SELECT link_id FROM {ks}.rollup_hour LIMIT 1",
            "SELECT link_id FROM {ks}.rollup_hour_w LIMIT 1",
            "SELECT owner FROM {ks}.click_log LIMIT 1",
        ] {
            let found: Vec<(scylla::value::CqlValue,)> = self.rows(cql, ()).await?;
            if !found.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn backend_name(&self) -> &'static str {
        "cql"
    }

    fn restored_link_id(&self, link: &LinkRecord) -> LinkId {
        // Owners' link lists are partitioned by the month of the id's time: an id of this
        // backend made in the link's creation second is kept; any other (a SQLite id) is
        // made in that second, so the link lands in its own month.
        if ids::unix_secs(link.id) == link.created_at {
            return link.id;
        }
        restored_id(link.created_at)
    }

    async fn restore(&self, records: Vec<Record>) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        // Rollup rows go as counter batches, one partition each, as ingestion writes them.
        let mut hours: HashMap<(i64, i32), Vec<(Counter, Counter, i64, i32, i64)>> = HashMap::new();
        let mut owner_hours: HashMap<(i64, i32), Vec<(Counter, Counter, i64, i32, i64)>> =
            HashMap::new();
        let mut days: HashMap<(i64, i32), Vec<(Counter, i64, i32, i64, String, String)>> =
            HashMap::new();
        let mut owner_days: HashMap<(i64, i32), Vec<(Counter, Counter, i64, i32, i64, i64)>> =
            HashMap::new();
        let mut others = Vec::new();
        for record in records {
            match record {
                Record::RollupHour(r) => {
                    let month = ids::month_of(r.hour);
                    hours.entry((r.id, month)).or_default().push((
                        Counter(r.total),
                        Counter(r.bots),
                        r.id,
                        month,
                        r.hour,
                    ));
                }
                Record::OwnerHour(r) => {
                    let month = ids::month_of(r.hour);
                    owner_hours.entry((r.id, month)).or_default().push((
                        Counter(r.total),
                        Counter(r.bots),
                        r.id,
                        month,
                        r.hour,
                    ));
                }
                Record::RollupDay(r) => {
                    let month = ids::month_of(r.day);
                    days.entry((r.link_id, month)).or_default().push((
                        Counter(r.count),
                        r.link_id,
                        month,
                        r.day,
                        r.dim,
                        r.key,
                    ));
                }
                Record::OwnerLinkDay(r) => {
                    let month = ids::month_of(r.day);
                    owner_days.entry((r.owner, month)).or_default().push((
                        Counter(r.total),
                        Counter(r.bots),
                        r.owner,
                        month,
                        r.day,
                        r.link_id,
                    ));
                }
                other => others.push(other),
            }
        }
        let mut writes = futures_util::stream::iter(others)
            .map(|r| self.restore_one(r))
            .buffer_unordered(WRITE_CONCURRENCY);
        while let Some(result) = writes.next().await {
            result?;
        }
        let hour_update = self.prepare(HOUR_UPDATE, Kind::Counter).await?;
        let owner_hour_update = self.prepare(OWNER_HOUR_UPDATE, Kind::Counter).await?;
        let day_update = self.prepare(DAY_UPDATE, Kind::Counter).await?;
        let owner_day_update = self.prepare(OWNER_DAY_UPDATE, Kind::Counter).await?;
        let mut batches: Vec<Write<'_>> = Vec::new();
        for rows in hours.into_values() {
            batches.extend(self.counter_batches(&hour_update, rows));
        }
        for rows in owner_hours.into_values() {
            batches.extend(self.counter_batches(&owner_hour_update, rows));
        }
        for rows in days.into_values() {
            batches.extend(self.counter_batches(&day_update, rows));
        }
        for rows in owner_days.into_values() {
            batches.extend(self.counter_batches(&owner_day_update, rows));
        }
        crate::run_concurrently(batches, WRITE_CONCURRENCY).await
    }
}
