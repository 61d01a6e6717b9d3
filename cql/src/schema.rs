//! Versioned schema files, applied in order by `shortlink migrate` and recorded in the
//! keyspace's `schema_migrations` table.

use scylla::client::session::Session;

use crate::topology::{self, Replication, Topology};
use crate::{CqlConfig, CqlError};

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version; versions start at 1 and have no gaps.
    pub version: i32,
    /// A short name.
    pub name: &'static str,
    /// Its CQL: statements separated by `;`, `--` comments allowed.
    pub cql: &'static str,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        cql: include_str!("../schema/001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "link options and domains",
        cql: include_str!("../schema/002_link_options_and_domains.cql"),
    },
    Migration {
        version: 3,
        name: "accounts and moderation",
        cql: include_str!("../schema/003_accounts_and_moderation.cql"),
    },
    Migration {
        version: 4,
        name: "click budgets",
        cql: include_str!("../schema/004_click_budgets.cql"),
    },
    Migration {
        version: 5,
        name: "webhooks",
        cql: include_str!("../schema/005_webhooks.cql"),
    },
    Migration {
        version: 6,
        name: "certificates",
        cql: include_str!("../schema/006_certificates.cql"),
    },
    Migration {
        version: 7,
        name: "acme",
        cql: include_str!("../schema/007_acme.cql"),
    },
    Migration {
        version: 8,
        name: "domain https",
        cql: include_str!("../schema/008_domain_https.cql"),
    },
    Migration {
        version: 9,
        name: "account stats",
        cql: include_str!("../schema/009_account_stats.cql"),
    },
    Migration {
        version: 10,
        name: "click log by owner, fallback URLs",
        cql: include_str!("../schema/010_click_log.cql"),
    },
    Migration {
        version: 11,
        name: "unique visitors",
        cql: include_str!("../schema/011_visitors.cql"),
    },
    Migration {
        version: 12,
        name: "upload management",
        cql: include_str!("../schema/012_upload_management.cql"),
    },
    Migration {
        version: 13,
        name: "click batch claimant",
        cql: include_str!("../schema/013_click_batch_claimant.cql"),
    },
    Migration {
        version: 14,
        name: "click counts per writer",
        cql: include_str!("../schema/014_click_tallies.cql"),
    },
];

/// Fills the upload index tables of migration 12 from the uploads of older versions
/// (idempotent: rewriting a row writes the same row).
async fn backfill_upload_indexes(session: &Session, keyspace: &str) -> Result<(), CqlError> {
    use futures_util::StreamExt;
    let mut rows = session
        .query_iter(
            format!("SELECT id, owner, size, created_at, expires_at FROM {keyspace}.uploads"),
            (),
        )
        .await
        .map_err(request)?
        .rows_stream::<(String, i64, i64, i64, Option<i64>)>()
        .map_err(request)?;
    while let Some(row) = rows.next().await {
        let (id, owner, size, created_at, expires_at) = row.map_err(request)?;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.uploads_by_owner (owner, created_at, id, size) \
                     VALUES (?, ?, ?, ?)"
                ),
                (owner, created_at, &id, size),
            )
            .await
            .map_err(request)?;
        if let Some(expires_at) = expires_at {
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {keyspace}.uploads_expiring (shard, expires_at, id) \
                         VALUES (0, ?, ?)"
                    ),
                    (expires_at, &id),
                )
                .await
                .map_err(request)?;
        }
    }
    Ok(())
}

/// A step of `migrate`, for showing progress.
#[derive(Debug, Clone)]
pub enum MigrationProgress {
    /// The keyspace is ready.
    Keyspace {
        /// Its name.
        name: String,
        /// Its replication, as CQL (`None`: a strategy shortlink does not read).
        replication: Option<String>,
        /// Why it has that replication: how it was chosen, or that it existed.
        reason: String,
    },
    /// The keyspace is at this version already; nothing to do.
    UpToDate(i32),
    /// A migration started: its version, name and statement count.
    Start(i32, &'static str, usize),
    /// One statement of the running migration finished (1-based index).
    Statement(usize),
    /// A migration was applied and recorded.
    Applied(i32),
}

fn request(e: impl std::fmt::Display) -> CqlError {
    CqlError::Request(e.to_string())
}

/// The statements of a schema file: comments dropped, split on `;`.
pub(crate) fn statements(cql: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .map(|line| match line.find("--") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The newest version recorded in `keyspace`, or `None` when it has no schema table.
async fn applied_version(session: &Session, keyspace: &str) -> Result<Option<i32>, CqlError> {
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .map_err(request)?
        .into_rows_result()
        .map_err(request)?;
    let has_table = tables
        .rows::<(String,)>()
        .map_err(request)?
        .filter_map(Result::ok)
        .any(|(t,)| t == "schema_migrations");
    if !has_table {
        return Ok(None);
    }
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .map_err(request)?
        .into_rows_result()
        .map_err(request)?;
    let newest = rows
        .rows::<(i32,)>()
        .map_err(request)?
        .filter_map(Result::ok)
        .map(|(v,)| v)
        .max();
    Ok(Some(newest.unwrap_or(0)))
}

fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Fails unless `keyspace` holds exactly the schema this binary knows.
pub(crate) async fn check(session: &Session, keyspace: &str) -> Result<(), CqlError> {
    match applied_version(session, keyspace).await? {
        Some(v) if v == latest() => Ok(()),
        Some(v) if v > latest() => Err(CqlError::Schema(format!(
            "keyspace '{keyspace}' has schema version {v}, newer than this binary's {}; \
             upgrade shortlink",
            latest()
        ))),
        Some(v) => Err(CqlError::Schema(format!(
            "keyspace '{keyspace}' has schema version {v}, this binary needs {}; \
             run `shortlink migrate`",
            latest()
        ))),
        None => Err(CqlError::Schema(format!(
            "keyspace '{keyspace}' has no shortlink schema; run `shortlink migrate` first"
        ))),
    }
}

/// Creates the keyspace and applies the migrations it lacks; returns the version reached.
pub(crate) async fn migrate(
    session: &Session,
    config: &CqlConfig,
    progress: &mut dyn FnMut(MigrationProgress),
) -> Result<i32, CqlError> {
    let keyspace = &config.keyspace;
    let topology = Topology::of(session);
    let existing = session
        .get_cluster_state()
        .get_keyspace(keyspace)
        .map(|k| Replication::of_strategy(&k.strategy));
    let (replication, reason) = match existing {
        Some(replication) => {
            let reason = match replication.as_ref().map(|r| r.check(&topology)) {
                Some(Err(why)) => format!("existed; warning: {why}"),
                _ => format!("existed (nodes seen: {topology})"),
            };
            (replication.map(|r| r.to_string()), reason)
        }
        None => {
            let (chosen, reason) = topology::for_new_keyspace(&config.replication, &topology)?;
            session
                .query_unpaged(
                    crate::schema_statement(format!(
                        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {chosen}"
                    )),
                    (),
                )
                .await
                .map_err(request)?;
            (Some(chosen.to_string()), format!("created, {reason}"))
        }
    };
    session
        .query_unpaged(
            crate::schema_statement(format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (
                     version int PRIMARY KEY, name text, applied_at timestamp)"
            )),
            (),
        )
        .await
        .map_err(request)?;
    progress(MigrationProgress::Keyspace {
        name: keyspace.clone(),
        replication,
        reason,
    });
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(request)?;
    let current = applied_version(session, keyspace).await?.unwrap_or(0);
    if current > latest() {
        return Err(CqlError::Schema(format!(
            "keyspace '{keyspace}' has schema version {current}, newer than this binary's {}; \
             refusing to migrate it",
            latest()
        )));
    }
    if current == latest() {
        progress(MigrationProgress::UpToDate(current));
        return Ok(current);
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let statements = statements(migration.cql);
        progress(MigrationProgress::Start(
            migration.version,
            migration.name,
            statements.len(),
        ));
        for (i, statement) in statements.iter().enumerate() {
            session
                .query_unpaged(crate::schema_statement(statement.as_str()), ())
                .await
                .map_err(|e| {
                    CqlError::Request(format!(
                        "migration {} statement {}: {e}",
                        migration.version,
                        i + 1
                    ))
                })?;
            progress(MigrationProgress::Statement(i + 1));
        }
        session.await_schema_agreement().await.map_err(request)?;
        if migration.version == 12 {
            backfill_upload_indexes(session, keyspace).await?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) \
                     VALUES (?, ?, toTimestamp(now()))"
                ),
                (migration.version, migration.name),
            )
            .await
            .map_err(request)?;
        progress(MigrationProgress::Applied(migration.version));
    }
    Ok(latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_split_into_statements() {
        let all = statements(MIGRATIONS[0].cql);
        assert!(all.len() >= 15, "{}", all.len());
        assert!(
            all.iter()
                .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS"))
        );
        for m in &MIGRATIONS[1..] {
            for s in statements(m.cql) {
                assert!(s.contains("IF NOT EXISTS"), "not idempotent: {s}");
            }
        }
    }

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
        }
    }
}
