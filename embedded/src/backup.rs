//! Backups of the embedded store: a consistent copy to read (`VACUUM INTO`), scans of
//! the bulky tables, and raw restores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use serde_json::Value;
use shortlink_core::LinkId;
use shortlink_store::backup::{
    BackupStore, ClickLogRow, CountRow, DayRow, LinkRecord, OwnerLinkDayRow, Record, ScanPage,
    SketchRow, Table, UploadRecord, not_raw,
};
use shortlink_store::rollup::{decode_log, log_clicks};
use shortlink_store::visitors::{Period, Visitors};
use shortlink_store::{Store, StoreError, targeting_json};

use crate::clicks::merge_visitors;
use crate::links::{LINK_COLUMNS, record_change, row_to_link, to_i64};
use crate::uploads::{COLUMNS as UPLOAD_COLUMNS, row_to_upload};
use crate::{DbError, EmbeddedConfig, EmbeddedStore};

/// Folders of backup snapshots are named `backup-snapshot-<pid>-<random>`.
const SNAPSHOT_PREFIX: &str = "backup-snapshot-";

/// Removes snapshot folders left in `data_dir` by processes that are gone (a backup that
/// crashed): each is a whole copy of the database.
pub(crate) fn remove_stale_snapshots(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SNAPSHOT_PREFIX)) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(folder = %entry.path().display(), "removed a backup snapshot left by a process that is gone")
                }
                Err(error) => {
                    tracing::warn!(%error, folder = %entry.path().display(), "cannot remove a stale backup snapshot")
                }
            }
        }
    }
}

/// A scan's position: the last row's key, as JSON values.
fn key_of(cursor: Option<Vec<u8>>) -> Result<Option<Vec<Value>>, DbError> {
    cursor
        .map(|c| serde_json::from_slice(&c))
        .transpose()
        .map_err(|_| StoreError::corrupt("unreadable scan cursor").into())
}

fn int(key: &[Value], i: usize) -> i64 {
    key.get(i).and_then(Value::as_i64).unwrap_or(i64::MIN)
}

fn text(key: &[Value], i: usize) -> String {
    key.get(i)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Reads one page of `table` after `key` (none: from the start).
fn scan_page(
    conn: &Connection,
    table: Table,
    key: Option<Vec<Value>>,
    limit: usize,
) -> Result<ScanPage, DbError> {
    let limit_sql = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let first = key.is_none();
    let k = key.unwrap_or_default();
    let mut records = Vec::new();
    let mut last: Option<Vec<Value>> = None;
    match table {
        Table::Links => {
            let mut stmt = conn.prepare(&format!(
                "SELECT {LINK_COLUMNS} FROM links l WHERE l.id > ?1 ORDER BY l.id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![int(&k, 0), limit_sql], |r| row_to_link(r, 0))?;
            for link in rows {
                let link = link?;
                last = Some(vec![link.id.into()]);
                records.push(Record::Link(LinkRecord::from(link)));
            }
        }
        Table::Uploads => {
            let mut stmt = conn.prepare(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE ?1 OR id > ?2 ORDER BY id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![first, text(&k, 0), limit_sql], row_to_upload)?;
            for upload in rows {
                let upload = upload?;
                last = Some(vec![upload.id.clone().into()]);
                records.push(Record::Upload(UploadRecord::from(upload)));
            }
        }
        Table::RollupHour | Table::OwnerHour => {
            let (sql, wrap): (&str, fn(CountRow) -> Record) = if table == Table::RollupHour {
                (
                    "SELECT link_id, hour, total, bots FROM rollup_hour
                     WHERE (link_id, hour) > (?1, ?2) ORDER BY link_id, hour LIMIT ?3",
                    Record::RollupHour,
                )
            } else {
                (
                    "SELECT owner, hour, total, bots FROM owner_rollup_hour
                     WHERE (owner, hour) > (?1, ?2) ORDER BY owner, hour LIMIT ?3",
                    Record::OwnerHour,
                )
            };
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(params![int(&k, 0), int(&k, 1), limit_sql], |r| {
                Ok(CountRow {
                    id: r.get(0)?,
                    hour: r.get(1)?,
                    total: r.get(2)?,
                    bots: r.get(3)?,
                })
            })?;
            for row in rows {
                let row = row?;
                last = Some(vec![row.id.into(), row.hour.into()]);
                records.push(wrap(row));
            }
        }
        Table::RollupDay => {
            let mut stmt = conn.prepare(
                "SELECT link_id, day, dim, key, count FROM rollup_day
                 WHERE ?1 OR (link_id, day, dim, key) > (?2, ?3, ?4, ?5)
                 ORDER BY link_id, day, dim, key LIMIT ?6",
            )?;
            let rows = stmt.query_map(
                params![
                    first,
                    int(&k, 0),
                    int(&k, 1),
                    text(&k, 2),
                    text(&k, 3),
                    limit_sql
                ],
                |r| {
                    Ok(DayRow {
                        link_id: r.get(0)?,
                        day: r.get(1)?,
                        dim: r.get(2)?,
                        key: r.get(3)?,
                        count: r.get(4)?,
                    })
                },
            )?;
            for row in rows {
                let row = row?;
                last = Some(vec![
                    row.link_id.into(),
                    row.day.into(),
                    row.dim.clone().into(),
                    row.key.clone().into(),
                ]);
                records.push(Record::RollupDay(row));
            }
        }
        Table::OwnerLinkDay => {
            let mut stmt = conn.prepare(
                "SELECT owner, day, link_id, total, bots FROM owner_link_day
                 WHERE (owner, day, link_id) > (?1, ?2, ?3) ORDER BY owner, day, link_id LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![int(&k, 0), int(&k, 1), int(&k, 2), limit_sql],
                |r| {
                    Ok(OwnerLinkDayRow {
                        owner: r.get(0)?,
                        day: r.get(1)?,
                        link_id: r.get(2)?,
                        total: r.get(3)?,
                        bots: r.get(4)?,
                    })
                },
            )?;
            for row in rows {
                let row = row?;
                last = Some(vec![row.owner.into(), row.day.into(), row.link_id.into()]);
                records.push(Record::OwnerLinkDay(row));
            }
        }
        Table::VisitorsHour | Table::VisitorsDay => {
            let (sql, wrap): (&str, fn(SketchRow) -> Record) = if table == Table::VisitorsHour {
                (
                    "SELECT link_id, hour, sketch FROM visitors_hour
                     WHERE (link_id, hour) > (?1, ?2) ORDER BY link_id, hour LIMIT ?3",
                    Record::VisitorsHour,
                )
            } else {
                (
                    "SELECT link_id, day, sketch FROM visitors_day
                     WHERE (link_id, day) > (?1, ?2) ORDER BY link_id, day LIMIT ?3",
                    Record::VisitorsDay,
                )
            };
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(params![int(&k, 0), int(&k, 1), limit_sql], |r| {
                Ok(SketchRow::new(
                    r.get(0)?,
                    r.get(1)?,
                    &r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            for row in rows {
                let row = row?;
                last = Some(vec![row.link_id.into(), row.at.into()]);
                records.push(wrap(row));
            }
        }
        Table::ClickLog => {
            let mut stmt = conn.prepare(
                "SELECT id, owner, at, body FROM click_log WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![int(&k, 0), limit_sql], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })?;
            for row in rows {
                let (id, owner, at, body) = row?;
                last = Some(vec![id.into()]);
                records.push(Record::ClickLog(ClickLogRow {
                    owner,
                    at_ms: at.saturating_mul(1000),
                    lines: String::from_utf8_lossy(&body).into_owned(),
                }));
            }
        }
    }
    let next = if records.len() >= limit.max(1) {
        last.map(|key| serde_json::to_vec(&key).unwrap_or_default())
    } else {
        None
    };
    Ok(ScanPage { records, next })
}

/// The largest link id a record names (0: none); a click log row's are in its lines.
fn link_id_in(record: &Record) -> LinkId {
    match record {
        Record::Link(l) => l.id,
        Record::RollupHour(r) => r.id,
        Record::RollupDay(r) => r.link_id,
        Record::OwnerLinkDay(r) => r.link_id,
        Record::VisitorsHour(r) | Record::VisitorsDay(r) => r.link_id,
        Record::ClickLog(row) => decode_log(row.lines.as_bytes())
            .map(|c| c.link_id)
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

/// The sketch a row holds.
fn sketch_of(row: &SketchRow) -> Result<Visitors, DbError> {
    row.bytes()
        .as_deref()
        .and_then(Visitors::from_bytes)
        .ok_or_else(|| {
            StoreError::corrupt(format!(
                "the visitors of link {} at {} are not a sketch",
                row.link_id, row.at
            ))
            .into()
        })
}

/// Writes one raw record.
fn restore_one(conn: &Connection, record: Record) -> Result<(), DbError> {
    match record {
        Record::Installation {
            code_salt,
            signing_key,
        } => {
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('code_salt', ?1), ('signing_key', ?2)",
                params![code_salt.to_string(), signing_key.0],
            )?;
        }
        Record::User(u) => {
            conn.execute(
                "INSERT INTO users (id, name, role, created_at, disabled, password_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
                 created_at = excluded.created_at, disabled = excluded.disabled,
                 password_hash = excluded.password_hash",
                params![
                    u.id,
                    u.name,
                    u.role.as_str(),
                    u.created_at,
                    u.disabled,
                    u.password_hash
                ],
            )?;
        }
        Record::Audit(a) => {
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.at, a.actor, a.action, a.target, a.detail],
            )?;
        }
        Record::Link(l) => {
            let link = shortlink_core::Link::from(l);
            let tags = serde_json::to_string(&link.tags).map_err(StoreError::backend)?;
            conn.prepare_cached(
                "INSERT INTO links (id, domain, code, custom_alias, owner, url, redirect,
                 expires_at, max_clicks, clicks, tags, disabled, plain, created_at, updated_at,
                 password_hash, targeting, moderation, fallback_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19)",
            )?
            .execute(params![
                link.id,
                link.domain,
                link.code.as_str(),
                link.custom_alias,
                link.owner,
                link.url,
                link.redirect.as_u16(),
                link.expires_at,
                link.max_clicks.map(to_i64),
                to_i64(link.clicks),
                tags,
                link.disabled,
                link.is_plain(),
                link.created_at,
                link.updated_at,
                link.password_hash,
                targeting_json(&link.targeting)?,
                link.moderation,
                link.fallback_url,
            ])?;
            record_change(conn, &link.domain, link.code.as_str())?;
        }
        Record::RollupHour(r) => {
            conn.prepare_cached(
                "INSERT INTO rollup_hour (link_id, hour, total, bots) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (link_id, hour) DO UPDATE
                 SET total = total + excluded.total, bots = bots + excluded.bots",
            )?
            .execute(params![r.id, r.hour, r.total, r.bots])?;
        }
        Record::OwnerHour(r) => {
            conn.prepare_cached(
                "INSERT INTO owner_rollup_hour (owner, hour, total, bots) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner, hour) DO UPDATE
                 SET total = total + excluded.total, bots = bots + excluded.bots",
            )?
            .execute(params![r.id, r.hour, r.total, r.bots])?;
        }
        Record::RollupDay(r) => {
            conn.prepare_cached(
                "INSERT INTO rollup_day (link_id, day, dim, key, count) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (link_id, day, dim, key) DO UPDATE SET count = count + excluded.count",
            )?
            .execute(params![r.link_id, r.day, r.dim, r.key, r.count])?;
        }
        Record::OwnerLinkDay(r) => {
            conn.prepare_cached(
                "INSERT INTO owner_link_day (owner, day, link_id, total, bots)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (owner, day, link_id) DO UPDATE
                 SET total = total + excluded.total, bots = bots + excluded.bots",
            )?
            .execute(params![r.owner, r.day, r.link_id, r.total, r.bots])?;
        }
        Record::VisitorsHour(row) => {
            let visitors = sketch_of(&row)?;
            merge_visitors(conn, Period::Hour, row.link_id, row.at, visitors)?;
        }
        Record::VisitorsDay(row) => {
            let visitors = sketch_of(&row)?;
            merge_visitors(conn, Period::Day, row.link_id, row.at, visitors)?;
        }
        Record::ClickLog(row) => {
            let clicks = log_clicks(row.lines.as_bytes());
            conn.prepare_cached(
                "INSERT INTO click_log (at, clicks, body, owner) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                row.at_ms.div_euclid(1000),
                clicks,
                row.lines.into_bytes(),
                row.owner
            ])?;
        }
        other => return Err(not_raw(&other).into()),
    }
    Ok(())
}

#[async_trait]
impl BackupStore for EmbeddedStore {
    async fn snapshot(&self) -> Result<Option<Arc<dyn Store>>, StoreError> {
        let folder: PathBuf = self.path.with_file_name(format!(
            "{SNAPSHOT_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&folder).map_err(|e| {
            StoreError::backend_in(format!("cannot create {}", folder.display()), e)
        })?;
        let copy = folder.join("shortlink.db");
        let target = copy.to_string_lossy().into_owned();
        // One statement, one read transaction: the copy is the database as of one moment,
        // whatever the writer does meanwhile.
        let copied = self
            .read(move |conn| {
                conn.execute("VACUUM INTO ?1", params![target])?;
                Ok(())
            })
            .await;
        if let Err(error) = copied {
            let _ = std::fs::remove_dir_all(&folder);
            return Err(error);
        }
        let mut config = EmbeddedConfig::new(&folder);
        // Nothing is pruned from the copy while it is read.
        config.click_retention_days = 0;
        config.route_feed_retain = u64::MAX;
        let snapshot = EmbeddedStore::open_scratch(config)?;
        Ok(Some(snapshot))
    }

    async fn scan(
        &self,
        table: Table,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        self.read(move |conn| scan_page(conn, table, key_of(cursor)?, limit))
            .await
    }

    async fn holds_data(&self) -> Result<bool, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM links) OR EXISTS (SELECT 1 FROM uploads)
                 OR EXISTS (SELECT 1 FROM rollup_hour) OR EXISTS (SELECT 1 FROM click_log)",
                [],
                |r| r.get::<_, bool>(0),
            )?)
        })
        .await
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    fn restored_link_id(&self, link: &LinkRecord) -> LinkId {
        link.id
    }

    async fn restore(&self, records: Vec<Record>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer
            .write(move |conn| {
                // Rows of deleted links keep those links' ids: new links must not take them.
                let mut largest: LinkId = 0;
                for record in records {
                    largest = largest.max(link_id_in(&record));
                    restore_one(conn, record)?;
                }
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'links', ?1
                     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'links')",
                    params![largest],
                )?;
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?1) WHERE name = 'links'",
                    params![largest],
                )?;
                Ok(())
            })
            .await
    }
}
