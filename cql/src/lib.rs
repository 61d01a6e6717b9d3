//! The distributed storage backend: every `shortlink-store` trait on ScyllaDB or Apache
//! Cassandra, over CQL with the `scylla` driver.
//!
//! Query-first tables (see `schema/` and ARCHITECTURE.md), prepared statements,
//! token-aware routing (the driver's default policy), paged scans, and per-statement
//! consistency: `consistency` (default LOCAL_QUORUM) for reads and writes, LOCAL_SERIAL for
//! the lightweight transactions that keep codes, user names and batch ids unique.
//!
//! Many processes write at once, so feed positions and event ids are time-ordered ids
//! (see [`ids`](crate)) and feed readers stop `settle_ms` short of now: a write stamped
//! before a reader's position but landing after it would otherwise be skipped.

mod accounts;
mod acme;
mod backup;
mod budget;
mod certificates;
mod clicks;
mod domains;
mod events;
mod fold;
mod ids;
mod links;
mod schema;
mod topology;
mod uploads;
mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use serde::{Deserialize, Serialize};
use shortlink_core::InvalidSetting;
use shortlink_store::StoreError;
use thiserror::Error;

pub use schema::{MIGRATIONS, Migration, MigrationProgress};

/// How to reach the cluster and how to use it (`[store.cql]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CqlConfig {
    /// Contact points, `host:port`. Default `["127.0.0.1:9042"]`.
    #[serde(deserialize_with = "shortlink_core::list_setting")]
    pub nodes: Vec<String>,
    /// Keyspace holding shortlink's tables. Default `shortlink`.
    pub keyspace: String,
    /// Replication of the keyspace when `shortlink migrate` creates it: a CQL map such as
    /// `{'class': 'NetworkTopologyStrategy', 'dc1': 3}`, checked against the nodes seen, or
    /// `auto` (default): NetworkTopologyStrategy over every datacenter seen, with as many
    /// replicas as it has nodes, at most 3.
    pub replication: String,
    /// Consistency of reads and writes: `local_quorum` (default), `quorum`, `local_one`,
    /// `one`, `all`.
    pub consistency: String,
    /// Datacenter to prefer when the cluster has several (token-aware within it); one the
    /// cluster does not have is refused at start. Default unset: any.
    pub local_datacenter: Option<String>,
    /// User name, when the cluster requires authentication. Default unset.
    pub username: Option<String>,
    /// Password for `username`. Default unset.
    pub password: Option<String>,
    /// Timeout of one request, including the driver's retries. Default 5 000, at most
    /// 20 000 (a count writer's slot lease, 30 s, must outlast a write in flight).
    pub request_timeout_ms: u64,
    /// Timeout of opening a connection. Default 5 000.
    pub connect_timeout_ms: u64,
    /// Retry policy: `default` (retries idempotent statements on timeouts and unavailable
    /// replicas once, on another node when that helps) or `none`. Default `default`.
    pub retry: String,
    /// How far behind now feed readers stay, so that writes in flight are not skipped.
    /// Must exceed clock skew between nodes plus write latency. Default 300.
    pub settle_ms: u64,
    /// How long route changes are kept: a proxy offline longer reloads every route.
    /// Default 86 400 (one day).
    pub route_feed_ttl_seconds: u32,
    /// Click count rows a control plane remembers (about 160 B each) before it forgets
    /// written ones and reads them back when met again. Default 250 000.
    pub tally_rows: usize,
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "shortlink".into(),
            replication: "auto".into(),
            consistency: "local_quorum".into(),
            local_datacenter: None,
            username: None,
            password: None,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            retry: "default".into(),
            settle_ms: 300,
            route_feed_ttl_seconds: 86_400,
            tally_rows: 250_000,
        }
    }
}

impl CqlConfig {
    /// Checks the values a typo would break.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.nodes.is_empty() {
            return Err(InvalidSetting::new(
                "store.cql.nodes",
                "must name at least one node",
            ));
        }
        if self.keyspace.is_empty()
            || self.keyspace.len() > 48
            || !self
                .keyspace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(InvalidSetting::new(
                "store.cql.keyspace",
                format!(
                    "'{}' must be 1-48 letters, digits or underscores",
                    self.keyspace
                ),
            ));
        }
        parse_consistency(&self.consistency)?;
        if !matches!(self.retry.as_str(), "default" | "none") {
            return Err(InvalidSetting::new(
                "store.cql.retry",
                format!("'{}' must be 'default' or 'none'", self.retry),
            ));
        }
        if self.route_feed_ttl_seconds < 60 {
            return Err(InvalidSetting::new(
                "store.cql.route_feed_ttl_seconds",
                "must be at least 60",
            ));
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > 20_000 {
            return Err(InvalidSetting::new(
                "store.cql.request_timeout_ms",
                "must be from 1 to 20000 (a count writer's slot lease of 30 s must outlast a \
                 write in flight)",
            ));
        }
        if self.tally_rows == 0 {
            return Err(InvalidSetting::new(
                "store.cql.tally_rows",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn parse_consistency(text: &str) -> Result<Consistency, InvalidSetting> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "local_quorum" => Consistency::LocalQuorum,
        "quorum" => Consistency::Quorum,
        "local_one" => Consistency::LocalOne,
        "one" => Consistency::One,
        "all" => Consistency::All,
        other => {
            return Err(InvalidSetting::new(
                "store.cql.consistency",
                format!("'{other}' must be one of local_quorum, quorum, local_one, one, all"),
            ));
        }
    })
}

/// Why the backend could not start.
#[derive(Debug, Error)]
pub enum CqlError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] InvalidSetting),
    /// No node accepted a connection.
    #[error("cannot connect to the CQL cluster at {nodes}: {reason}")]
    Connect {
        /// The contact points tried.
        nodes: String,
        /// The driver's reason.
        reason: String,
    },
    /// The keyspace's schema is not the one this binary knows.
    #[error("{0}")]
    Schema(String),
    /// A statement failed.
    #[error("CQL request failed: {0}")]
    Request(String),
}

/// How a statement is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read: idempotent, retried.
    Read,
    /// An insert, update or delete that can be repeated safely: retried.
    Write,
    /// A lightweight transaction (`IF ...`): serial consistency, not retried blindly.
    Lwt,
    /// A click count's write or read back: like [`Kind::Write`] and [`Kind::Read`], at
    /// least at LOCAL_QUORUM (a value read back must hold its last write).
    Count,
    /// A lightweight transaction on the count writer slots, at SERIAL: control planes of
    /// every datacenter share them, so two must never win one.
    Slot,
    /// A counter update (download counts, restored rollups): not idempotent, never
    /// retried.
    Counter,
}

/// The store on a CQL cluster. Cheap to share behind an `Arc`.
pub struct CqlStore {
    session: Session,
    /// Statements name tables as `{ks}.table`; this replaces `{ks}` (fully qualified
    /// names: Cassandra warns about `USE` with prepared statements).
    keyspace: String,
    prepared: RwLock<HashMap<&'static str, PreparedStatement>>,
    /// Click counts of batches ingested at once, written together.
    fold: fold::Fold,
    /// The consistency of click count writes and of their reads back: the configured one,
    /// at least LOCAL_QUORUM (a value read back must include the last one written).
    count_consistency: Consistency,
    /// Links ingestion read recently.
    link_infos: clicks::LinkInfos,
    settle_us: i64,
    /// Timeout of one attempt of [`CqlStore::lwt_retrying`].
    lwt_attempt_timeout: Duration,
    route_feed_ttl: i32,
    click_retention_secs: i32,
    event_ttl_secs: i32,
}

/// How long data expires after (CQL TTLs), from the control plane's retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw clicks and applied batch ids (`control.click_retention_days`).
    pub click_days: u32,
    /// A user's events (`control.events_retain_hours`); the periodic prune also keeps
    /// only the newest `events_retain_per_user`.
    pub event_hours: u32,
}

/// A TTL in seconds as CQL takes it: at least a minute, at most 20 years (CQL's limit).
fn ttl_secs(secs: u64) -> i32 {
    i32::try_from(secs.clamp(60, 630_720_000)).unwrap_or(630_720_000)
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(error)
}

/// A failed statement's error: [`StoreError::Unavailable`] when no answer came in time (the
/// client's timeout, or the nodes' own timeouts and unavailability), else a backend error.
fn failed(error: ExecutionError) -> StoreError {
    let timed_out = match &error {
        ExecutionError::RequestTimeout(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::Unavailable { .. }
                | DbError::Overloaded
        ),
        _ => false,
    };
    if timed_out {
        StoreError::unavailable(error)
    } else {
        backend(error)
    }
}

async fn connect(config: &CqlConfig) -> Result<Session, CqlError> {
    config.validate()?;
    let consistency = parse_consistency(&config.consistency)?;
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    // A repeatable statement (a read, a plain write) whose node has not answered within a
    // third of the timeout is sent to the next node as well, twice at most: one stuck on
    // a node that died or is still starting must not use up the whole timeout. Counter
    // updates and LWTs are never sent twice this way (they are not marked idempotent).
    let speculative = scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy {
        max_retry_count: 2,
        retry_interval: request_timeout / 3,
    };
    let mut profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(request_timeout))
        .speculative_execution_policy(Some(Arc::new(speculative)));
    if config.retry == "none" {
        profile = profile.retry_policy(Arc::new(
            scylla::policies::retry::FallthroughRetryPolicy::new(),
        ));
    }
    let mut handle = profile.clone().build().into_handle();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .default_execution_profile_handle(handle.clone());
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    let session = builder.build().await.map_err(|e| CqlError::Connect {
        nodes: config.nodes.join(", "),
        reason: e.to_string(),
    })?;
    if let Some(dc) = &config.local_datacenter {
        let seen = topology::Topology::of(&session);
        if !seen.datacenters.contains_key(dc) {
            return Err(CqlError::Config(InvalidSetting::new(
                "store.cql.local_datacenter",
                format!("'{dc}' is not a datacenter of this cluster ({seen})"),
            )));
        }
        // With one datacenter there is nothing to prefer; preferring it anyway makes the
        // driver warn on every request to a SimpleStrategy keyspace.
        if seen.datacenters.len() > 1 {
            let policy = scylla::policies::load_balancing::DefaultPolicy::builder()
                .prefer_datacenter(dc.clone())
                .token_aware(true)
                .build();
            handle.map_to_another_profile(profile.load_balancing_policy(policy).build());
        }
    }
    Ok(session)
}

impl CqlStore {
    /// Connects to the cluster and checks that `shortlink migrate` brought the keyspace to
    /// the schema this binary knows.
    pub async fn open(config: &CqlConfig, retention: Retention) -> Result<Arc<CqlStore>, CqlError> {
        let session = connect(config).await?;
        schema::check(&session, &config.keyspace).await?;
        let store = Arc::new(CqlStore {
            session,
            keyspace: config.keyspace.clone(),
            prepared: RwLock::new(HashMap::new()),
            fold: fold::Fold::new(
                config.tally_rows,
                Duration::from_millis(config.request_timeout_ms),
            ),
            count_consistency: match parse_consistency(&config.consistency)
                .map_err(CqlError::Config)?
            {
                Consistency::One | Consistency::LocalOne => Consistency::LocalQuorum,
                stronger => stronger,
            },
            link_infos: clicks::LinkInfos::default(),
            settle_us: i64::try_from(config.settle_ms)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            // Half the request timeout, at least 2.5 s: Cassandra itself may take a
            // contended or failing-over Paxos round past 2 s (`cas_contention_timeout` plus
            // `write_request_timeout`), and an attempt abandoned sooner only contends with
            // the next one. Three attempts may take one and a half request timeouts.
            lwt_attempt_timeout: Duration::from_millis((config.request_timeout_ms / 2).max(2_500)),
            route_feed_ttl: i32::try_from(config.route_feed_ttl_seconds).unwrap_or(i32::MAX),
            click_retention_secs: ttl_secs(u64::from(retention.click_days) * 86_400),
            event_ttl_secs: ttl_secs(u64::from(retention.event_hours) * 3_600),
        });
        store
            .init_meta()
            .await
            .map_err(|e| CqlError::Request(e.to_string()))?;
        Ok(store)
    }

    /// Creates the keyspace if needed and applies every migration it lacks, reporting
    /// each step to `progress`. Refuses a keyspace migrated by a newer binary.
    pub async fn migrate(
        config: &CqlConfig,
        progress: &mut dyn FnMut(MigrationProgress),
    ) -> Result<i32, CqlError> {
        let session = connect(config).await?;
        schema::migrate(&session, config, progress).await
    }

    /// Drops the keyspace (tests and benches that make one per run).
    pub async fn drop_keyspace(config: &CqlConfig) -> Result<(), CqlError> {
        let session = connect(config).await?;
        session
            .query_unpaged(
                schema_statement(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace)),
                (),
            )
            .await
            .map_err(|e| CqlError::Request(e.to_string()))?;
        Ok(())
    }

    /// The prepared form of `cql` (tables named `{ks}.table`), prepared once per process.
    async fn prepare(
        &self,
        cql: &'static str,
        kind: Kind,
    ) -> Result<PreparedStatement, StoreError> {
        if let Some(found) = self
            .prepared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(cql)
        {
            return Ok(found.clone());
        }
        let text = cql.replace("{ks}", &self.keyspace);
        let mut statement = self.session.prepare(text).await.map_err(backend)?;
        statement.set_is_idempotent(matches!(kind, Kind::Read | Kind::Write | Kind::Count));
        match kind {
            Kind::Count => statement.set_consistency(self.count_consistency),
            Kind::Slot => statement.set_serial_consistency(Some(SerialConsistency::Serial)),
            _ => {}
        }
        self.prepared
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cql, statement.clone());
        Ok(statement)
    }

    /// Executes `cql` with `values` and returns the whole (bounded) result.
    async fn exec(
        &self,
        cql: &'static str,
        kind: Kind,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        let statement = self.prepare(cql, kind).await?;
        self.session
            .execute_unpaged(&statement, values)
            .await
            .map_err(failed)
    }

    /// Reads the rows of a bounded query.
    async fn rows<R>(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        self.rows_of(cql, Kind::Read, values).await
    }

    /// The rows of a bounded query of `kind`.
    async fn rows_of<R>(
        &self,
        cql: &'static str,
        kind: Kind,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.exec(cql, kind, values).await?;
        let rows = result.into_rows_result().map_err(backend)?;
        rows.rows::<R>()
            .map_err(backend)?
            .collect::<Result<Vec<R>, _>>()
            .map_err(backend)
    }

    /// Every row of a whole-table read, fetched page by page: for small tables only.
    async fn scan<R>(&self, cql: &'static str) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        use futures_util::StreamExt;
        let statement = self.prepare(cql, Kind::Read).await?;
        let mut rows = self
            .session
            .execute_iter(statement, ())
            .await
            .map_err(backend)?
            .rows_stream::<R>()
            .map_err(backend)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(row.map_err(backend)?);
        }
        Ok(out)
    }

    /// One page of a whole-table read from `cursor` (the driver's paging state).
    pub(crate) async fn page<R>(
        &self,
        cql: &'static str,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<R>, Option<Vec<u8>>), StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        self.page_of(cql, (), cursor, limit).await
    }

    /// One page of a read bound to `values` from `cursor` (the driver's paging state).
    pub(crate) async fn page_of<R>(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<R>, Option<Vec<u8>>), StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let mut statement = self.prepare(cql, Kind::Read).await?;
        statement.set_page_size(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(1000));
        let paging = match cursor {
            Some(bytes) => PagingState::new_from_raw_bytes(bytes),
            None => PagingState::start(),
        };
        let (result, response) = self
            .session
            .execute_single_page(&statement, values, paging)
            .await
            .map_err(backend)?;
        let rows = result
            .into_rows_result()
            .map_err(backend)?
            .rows::<R>()
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let next = match response {
            PagingStateResponse::HasMorePages { state } => {
                state.as_bytes_slice().map(|b| b.to_vec())
            }
            PagingStateResponse::NoMorePages => None,
        };
        Ok((rows, next))
    }

    /// Reads at most one row.
    async fn row<R>(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        Ok(self.rows(cql, values).await?.into_iter().next())
    }

    /// Runs a lightweight transaction; true when it applied.
    async fn lwt(&self, cql: &'static str, values: impl SerializeRow) -> Result<bool, StoreError> {
        applied(self.exec(cql, Kind::Lwt, values).await?)
    }

    /// [`CqlStore::lwt`], sent again (up to [`LWT_ATTEMPTS`] in all) when an attempt fails
    /// without an answer, e.g. its coordinator died: for transactions that are safe to
    /// repeat. A condition that still holds applies the same values again; an
    /// `IF NOT EXISTS` whose first attempt did apply answers "not applied", so its caller
    /// must recognise its own row (a unique id in the values).
    async fn lwt_retrying(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
    ) -> Result<bool, StoreError> {
        Ok(self.lwt_retrying_noted(cql, values).await?.0)
    }

    /// [`CqlStore::lwt_retrying`], also telling whether an earlier attempt went unanswered
    /// (so a "not applied" may be that attempt's own doing).
    async fn lwt_retrying_noted(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
    ) -> Result<(bool, bool), StoreError> {
        let mut statement = self.prepare(cql, Kind::Lwt).await?;
        // Each attempt gets its own timeout: one stuck on a dead node must leave time for
        // the next.
        statement.set_request_timeout(Some(self.lwt_attempt_timeout));
        let mut attempt = 1;
        loop {
            match self.session.execute_unpaged(&statement, &values).await {
                Ok(result) => return Ok((applied(result)?, attempt > 1)),
                Err(error) if attempt < LWT_ATTEMPTS && !permanent(&error) => {
                    tracing::debug!(%error, attempt, "a lightweight transaction failed; again");
                    attempt += 1;
                }
                Err(error) => return Err(failed(error)),
            }
        }
    }

    /// The position readers of the feeds may read up to now.
    fn horizon(&self) -> i64 {
        ids::horizon(self.settle_us)
    }
}

/// Attempts of [`CqlStore::lwt_retrying`].
const LWT_ATTEMPTS: u32 = 3;

/// Whether sending a failed request again cannot help: it is malformed or not allowed.
fn permanent(error: &ExecutionError) -> bool {
    match error {
        ExecutionError::BadQuery(_) | ExecutionError::PrepareError(_) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized | DbError::ConfigError
        ),
        _ => false,
    }
}

/// Whether a lightweight transaction (or conditional batch) applied: its `[applied]`
/// column.
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(backend)?;
    let first = rows
        .rows::<Row>()
        .map_err(backend)?
        .next()
        .transpose()
        .map_err(backend)?;
    Ok(matches!(
        first.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(CqlValue::Boolean(true))
    ))
}

/// Runs `tasks` with at most `limit` in flight; the first error wins.
async fn run_concurrently<F>(tasks: Vec<F>, limit: usize) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<(), StoreError>>,
{
    use futures_util::StreamExt;
    let mut stream = futures_util::stream::iter(tasks).buffer_unordered(limit.max(1));
    while let Some(result) = stream.next().await {
        result?;
    }
    Ok(())
}

/// How long a schema change (CREATE, ALTER, DROP) may take: a node flushes and snapshots
/// tables for some, which on a busy machine exceeds the 5 s default request timeout.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// A schema-change statement with [`SCHEMA_TIMEOUT`].
pub(crate) fn schema_statement(text: impl Into<String>) -> scylla::statement::Statement {
    let mut statement = scylla::statement::Statement::new(text);
    statement.set_request_timeout(Some(SCHEMA_TIMEOUT));
    statement
}
