//! The embedded backend: SQLite (bundled) in WAL mode, in one data folder.
//!
//! Writes go to one writer thread that groups whatever is queued into a single
//! transaction (each operation in its own savepoint), so async callers never block a
//! worker thread and bursts cost one fsync. Reads use a small pool of read-only
//! connections on tokio's blocking pool; WAL lets them run beside the writer.

mod accounts;
mod acme;
mod backup;
mod budget;
mod certificates;
mod clicks;
mod domains;
mod events;
mod links;
mod pacing;
mod schema;
mod uploads;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::watch;

pub use pacing::Pacing;
use shortlink_store::StoreError;
use writer::{Hints, Writer};

/// The writer connection's page cache, in KiB (256 MiB at most, allocated as used).
const WRITER_CACHE_KIB: i64 = 256 * 1024;
/// Read connections kept open between reads; more are opened under load and closed
/// after (opening one parses the schema, so keep enough for bursts).
const MAX_IDLE_READERS: usize = 32;

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Folder holding `shortlink.db`; created if missing.
    pub data_dir: PathBuf,
    /// How many route changes the feed keeps; a reader further behind reloads everything.
    pub route_feed_retain: u64,
    /// Most operations grouped into one transaction.
    pub max_batch_ops: usize,
    /// Days raw clicks (and applied batch ids) are kept; rollups are kept for ever. 0 keeps all.
    pub click_retention_days: i64,
    /// How click ingestion shares the cores with the proxy (see [`Pacing`]).
    pub ingest_pacing: Pacing,
}

impl EmbeddedConfig {
    /// Defaults for a data folder.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            route_feed_retain: 100_000,
            max_batch_ops: 512,
            click_retention_days: 30,
            ingest_pacing: Pacing::default(),
        }
    }
}

/// The embedded store. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    path: PathBuf,
    click_retention_days: i64,
    ingest_pacing: Pacing,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    hint: watch::Receiver<u64>,
    event_hint: watch::Receiver<i64>,
    /// A folder of its own that goes away with the store (a backup's snapshot).
    scratch: Option<PathBuf>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Some(folder) = &self.scratch
            && let Err(error) = std::fs::remove_dir_all(folder)
        {
            tracing::warn!(%error, folder = %folder.display(), "cannot remove a backup snapshot");
        }
    }
}

/// How a database call fails: SQLite's error, or an outcome of the store's own
/// (`CodeTaken`, …). Database calls return it so `?` takes both; [`EmbeddedStore`]'s
/// methods hand callers the [`StoreError`] it becomes.
#[derive(Debug)]
pub(crate) enum DbError {
    /// SQLite failed.
    Sql(rusqlite::Error),
    /// The store's own outcome.
    Store(StoreError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sql(e) => StoreError::backend(e),
            DbError::Store(e) => e,
        }
    }
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Temporary files in memory: above all the sub-journal of the savepoint each write
    // runs in, which otherwise costs a `pwrite` per page a savepoint first changes (15 % of
    // the writer's time ingesting clicks for 1 000 hot links, measured with perf).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database in `config.data_dir`.
    pub fn open(config: EmbeddedConfig) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::open_db(config, false).map_err(StoreError::from)
    }

    /// Opens the database in `config.data_dir` as a store that removes that folder when
    /// dropped.
    pub(crate) fn open_scratch(config: EmbeddedConfig) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::open_db(config, true).map_err(StoreError::from)
    }

    fn open_db(config: EmbeddedConfig, scratch: bool) -> Result<Arc<EmbeddedStore>, DbError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::backend_in(
                format!("cannot create data folder {}", config.data_dir.display()),
                e,
            )
        })?;
        let path = config.data_dir.join("shortlink.db");
        if !scratch {
            backup::remove_stale_snapshots(&config.data_dir);
        }
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL is durable against process crashes; a power loss may drop the
        // last transactions but never corrupts the database.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        configure(&conn)?;
        // The writer's page cache, in KiB (negative: a size, not pages), grown as used. At
        // SQLite's default 2 MiB, ingesting into a click log of millions of rows read
        // its index pages back from the OS with `pread` for half of the writer's time.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > schema::SCHEMA_VERSION {
            return Err(StoreError::corrupt(format!(
                "database schema version {version} is newer than this binary's ({}); upgrade shortlink",
                schema::SCHEMA_VERSION
            ))
            .into());
        }
        conn.execute_batch(schema::SCHEMA)?;
        schema::add_missing_columns(&conn)?;
        conn.execute_batch(schema::LATE_INDEXES)?;
        if (1..11).contains(&version) {
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = {}; COMMIT;",
                schema::BACKFILL_OWNERS,
                schema::SCHEMA_VERSION
            ))?;
        }
        conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION)?;
        let salt: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'code_salt'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if salt.is_none() {
            let salt: u64 = rand::random();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('code_salt', ?1)",
                params![salt.to_string()],
            )?;
        }
        let key = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('signing_key', ?1) ON CONFLICT (key) DO NOTHING",
            params![key],
        )?;
        let head = links::feed_head(&conn)?;
        let (hint_tx, hint) = watch::channel(head);
        let (event_hint_tx, event_hint) = watch::channel(events::events_head(&conn)?);
        let writer = Writer::start(
            conn,
            Hints {
                routes: hint_tx,
                events: event_hint_tx,
            },
            config.route_feed_retain,
            config.max_batch_ops,
        )?;
        Ok(Arc::new(EmbeddedStore {
            path,
            click_retention_days: config.click_retention_days,
            ingest_pacing: config.ingest_pacing,
            writer,
            readers: Mutex::new(Vec::new()),
            hint,
            event_hint,
            scratch: scratch.then(|| config.data_dir.clone()),
        }))
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a pooled read-only connection on the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let conn = self.take_reader()?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&conn).map_err(StoreError::from);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::backend_in("read task failed", e))?;
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < MAX_IDLE_READERS
        {
            pool.push(conn);
        }
        result
    }

    fn take_reader(&self) -> Result<Connection, DbError> {
        if let Some(conn) = self.readers.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shortlink_core::{Role, time_util::now_unix};
    use shortlink_store::AccountStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        shortlink_store::conformance::run_all(store.clone()).await;
        // And again on the same, now non-empty store.
        shortlink_store::conformance::run_all(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_clicks_and_batch_ids_past_the_retention_are_pruned() {
        use shortlink_store::conformance::{click, new_link};
        use shortlink_store::{ClickStore, IngestOutcome, LinkStore};
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::new(dir.path());
        config.click_retention_days = 1;
        let store = EmbeddedStore::open(config).unwrap();
        let owner = store.create_user("pruned", Role::User).await.unwrap().id;
        let link = store
            .create_link(new_link(owner, "pruned".into(), "https://prune.test/"))
            .await
            .unwrap()
            .link;
        let batch = || vec![click(link.id, now_unix() * 1000, "Chrome", false)];
        for id in ["old", "kept"] {
            store.ingest_clicks(id, batch()).await.unwrap();
        }
        // "old" arrived two days ago.
        let conn = Connection::open(dir.path().join("shortlink.db")).unwrap();
        let two_days_ago = now_unix() - 2 * 86_400;
        conn.execute(
            "UPDATE click_log SET at = ?1 WHERE id = (SELECT MIN(id) FROM click_log)",
            params![two_days_ago],
        )
        .unwrap();
        conn.execute(
            "UPDATE ingested_batches SET at = ?1 WHERE batch_id = 'old'",
            params![two_days_ago],
        )
        .unwrap();
        store.ingest_clicks("next", batch()).await.unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM click_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2, "the old batch's clicks are gone, the others kept");
        // Its id is forgotten (a redelivery that late counts again); the kept one's is not.
        let outcome = |id: &'static str| {
            let store = store.clone();
            async move { store.ingest_clicks(id, batch()).await.unwrap() }
        };
        assert_eq!(outcome("kept").await, IngestOutcome::Duplicate);
        assert_eq!(outcome("old").await, IngestOutcome::Applied);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingestion_resting_between_every_statement_passes_the_conformance_suite() {
        // A rest after every statement of an ingestion: what pacing does to a big batch
        // must not change what the batch applies.
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::new(dir.path());
        config.ingest_pacing = Pacing::new(
            std::time::Duration::from_nanos(1),
            std::time::Duration::from_micros(1),
        );
        let store = EmbeddedStore::open(config).unwrap();
        shortlink_store::conformance::run_all(store.clone()).await;

        // A batch over more links than one statement group holds: every link counted once,
        // one `link.clicked` each.
        use shortlink_core::{EnrichedClick, EventKind};
        use shortlink_store::conformance::{click, new_link};
        use shortlink_store::{ClickStore, EventStore, LinkStore, RouteSource};
        let owner = store.create_user("paced", Role::User).await.unwrap().id;
        let mut clicks = Vec::new();
        for i in 0..150 {
            let url = format!("https://paced.test/{i}");
            let link = store
                .create_link(new_link(owner, format!("paced{i}"), &url))
                .await
                .unwrap()
                .link;
            clicks.push(EnrichedClick {
                count: 2,
                ..click(link.id, now_unix() * 1000, "Chrome", false)
            });
        }
        let before = store.event_feed_head().await.unwrap();
        store.ingest_clicks("paced-wide", clicks).await.unwrap();
        let clicked = store
            .user_events(owner, before, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::LinkClicked)
            .count();
        assert_eq!(clicked, 150);
        for i in [0, 63, 64, 127, 128, 149] {
            let link = store
                .get_link("", &format!("paced{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(link.clicks, 2, "paced{i}");
        }
    }

    /// 1.1 million distinct visitors over three days, ingested as traffic comes
    /// (batches of interleaved visitors, many coming back), are estimated within 2 % over
    /// any of the ranges a stats query merges.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unique_visitors_of_millions_are_within_two_percent() {
        use shortlink_core::{EnrichedClick, Interval};
        use shortlink_store::conformance::{click, new_link, spread};
        use shortlink_store::{ClickStore, LinkStore, StatsQuery};
        let dir = tempfile::tempdir().unwrap();
        let mut config = EmbeddedConfig::new(dir.path());
        config.ingest_pacing = Pacing::UNPACED;
        let store = EmbeddedStore::open(config).unwrap();
        let owner = store.create_user("popular", Role::User).await.unwrap().id;
        let link = store
            .create_link(new_link(owner, "popular".into(), "https://popular.test/"))
            .await
            .unwrap()
            .link;
        let day = 1_700_000_000 - 1_700_000_000 % 86_400;
        // Visitor n visits at hour n % 72, every fourth again 5 hours later; ids are
        // uniform hashes.
        let distinct: u64 = 1_100_000;
        let id = spread;
        let base = click(link.id, 0, "Chrome", false);
        let mut batch = Vec::with_capacity(20_000);
        let mut sent = 0;
        for n in 0..distinct {
            let again = n % 4 == 0;
            for hours in [Some(n % 72), again.then_some((n % 72 + 5) % 72)]
                .into_iter()
                .flatten()
            {
                batch.push(EnrichedClick {
                    ts_ms: (day + hours as i64 * 3600) * 1000,
                    visitor: id(n),
                    ..base.clone()
                });
            }
            if batch.len() >= 20_000 || n + 1 == distinct {
                sent += 1;
                store
                    .ingest_clicks(&format!("uv-{sent}"), std::mem::take(&mut batch))
                    .await
                    .unwrap();
            }
        }
        let estimate = |from: i64, to: i64| {
            let store = store.clone();
            async move {
                store
                    .link_stats(StatsQuery {
                        link_id: link.id,
                        from,
                        to,
                        interval: Interval::Day,
                        top: 1,
                        include_bots: false,
                    })
                    .await
                    .unwrap()
                    .unique_visitors as f64
            }
        };
        let within = |got: f64, exact: f64, what: &str| {
            let error = (got - exact).abs() / exact;
            assert!(
                error < 0.02,
                "{what}: {got} for {exact} ({:.2} %)",
                error * 100.0
            );
        };
        // Three whole days: everyone.
        within(
            estimate(day, day + 3 * 86_400).await,
            distinct as f64,
            "3 days",
        );
        // Day 1 and the 3 hours either side: visitors with a visit at hours 21..51.
        let exact = (0..72u64)
            .filter(|h| (21..51).contains(h) || (h % 4 == 0 && (21..51).contains(&((h + 5) % 72))))
            .map(|h| (distinct - h).div_ceil(72) as f64)
            .sum::<f64>();
        within(
            estimate(day + 21 * 3600, day + 51 * 3600).await,
            exact,
            "a day and hours around it",
        );
    }

    #[tokio::test]
    async fn data_survives_reopen_and_hint_ticks() {
        use shortlink_core::{NewLink, RedirectStatus, ShortCode};
        use shortlink_store::{LinkStore, RouteSource};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let mut hint = store.change_hint().unwrap();
        let salt = store.installation_salt().await.unwrap();
        let owner = store.create_user("keeper", Role::User).await.unwrap().id;
        store
            .create_link(NewLink {
                domain: String::new(),
                code: ShortCode::from_stored("keep123".into()),
                custom_alias: false,
                owner,
                url: "https://keep.test/".into(),
                redirect: RedirectStatus::Temporary,
                expires_at: None,
                max_clicks: None,
                tags: vec![],
                password_hash: None,
                targeting: None,
                fallback_url: None,
            })
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), hint.changed())
            .await
            .expect("hint ticks after a route change")
            .unwrap();
        drop(store);
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let link = store
            .get_link("", "keep123")
            .await
            .unwrap()
            .expect("survives");
        assert_eq!(link.redirect, RedirectStatus::Temporary);
        assert_eq!(store.installation_salt().await.unwrap(), salt);
    }

    #[tokio::test]
    async fn an_older_database_gets_its_account_rollups_filled_once() {
        use shortlink_core::Interval;
        use shortlink_store::conformance::{click, new_link};
        use shortlink_store::{AccountStatsQuery, ClickLogQuery, ClickStore, LinkStore};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let owner = store.create_user("older", Role::User).await.unwrap().id;
        let now_ms = now_unix() * 1000;
        for (code, clicks) in [("olda", 3), ("oldb", 5)] {
            let link = store
                .create_link(new_link(
                    owner,
                    code.into(),
                    &format!("https://older.test/{code}"),
                ))
                .await
                .unwrap()
                .link;
            let batch = (0..clicks)
                .map(|i| click(link.id, now_ms + i, "Chrome", i == 0))
                .collect();
            store.ingest_clicks(code, batch).await.unwrap();
        }
        let query = AccountStatsQuery {
            owner,
            from: now_unix() - 86_400,
            to: now_unix() + 86_400,
            interval: Interval::Day,
            top: 10,
            include_bots: true,
        };
        let before = store.account_stats(query).await.unwrap();
        assert_eq!((before.total, before.bots, before.links.len()), (8, 2, 2));
        drop(store);
        // As a version 10 database left it: no account rollups.
        let conn = Connection::open(dir.path().join("shortlink.db")).unwrap();
        conn.execute_batch(
            "DELETE FROM owner_rollup_hour; DELETE FROM owner_link_day;
             UPDATE click_log SET owner = NULL; PRAGMA user_version = 10;",
        )
        .unwrap();
        drop(conn);
        for _ in 0..2 {
            let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
            assert_eq!(store.account_stats(query).await.unwrap(), before);
            // Log rows of the older version, of no known owner, are read by their links'.
            let stranger = store.create_user("stranger", Role::User).await;
            let stranger = match stranger {
                Ok(user) => user.id,
                Err(_) => store.user_by_name("stranger").await.unwrap().unwrap().id,
            };
            for (who, want) in [(owner, 8), (stranger, 0)] {
                let page = store
                    .owner_clicks(ClickLogQuery {
                        owner: who,
                        link: None,
                        after: None,
                        limit: 100,
                    })
                    .await
                    .unwrap();
                assert_eq!(page.clicks.len(), want);
            }
        }
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("shortlink.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        match EmbeddedStore::open(EmbeddedConfig::new(dir.path())) {
            Err(e @ StoreError::Backend(_)) => assert!(e.to_string().contains("newer"), "{e}"),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a newer schema must be refused"),
        }
    }
}
