//! The embedded backend's SQLite schema, applied at open.

/// Schema version this binary writes; opening a newer database is refused.
pub(crate) const SCHEMA_VERSION: i64 = 13;

/// Every statement is idempotent, so applying it to an existing database is safe.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS api_keys (
    key_hash   BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    label      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Ids are AUTOINCREMENT so a deleted link's id is never reused: clicks and cursors
-- refer to ids.
CREATE TABLE IF NOT EXISTS links (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    domain       TEXT NOT NULL,
    code         TEXT NOT NULL,
    custom_alias INTEGER NOT NULL,
    owner        INTEGER NOT NULL,
    url          TEXT NOT NULL,
    redirect     INTEGER NOT NULL,
    expires_at   INTEGER,
    max_clicks   INTEGER,
    clicks       INTEGER NOT NULL DEFAULT 0,
    tags         TEXT NOT NULL DEFAULT '[]',
    disabled     INTEGER NOT NULL DEFAULT 0,
    plain        INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (domain, code)
) STRICT;

CREATE INDEX IF NOT EXISTS links_by_owner ON links (owner, id);
CREATE INDEX IF NOT EXISTS links_dedupe ON links (owner, domain, url) WHERE plain = 1;

-- The route change feed: one row per change of a (domain, code); readers join the
-- current link state. Pruned to the newest rows (see EmbeddedConfig).
CREATE TABLE IF NOT EXISTS route_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    code   TEXT NOT NULL
) STRICT;

-- Version 2: clicks. The raw click log keeps each applied batch as one row (its enriched
-- clicks as tab-separated lines: link id, ms, ip, browser, os, device, bot, referrer,
-- country, and how many identical clicks the line stands for — absent, in lines written
-- before it existed, means 1) for the retention period: one insert per batch instead of one
-- per click, which is what lets ingestion keep up beside the proxy on the same cores.
-- Stats read only the rollups.
CREATE TABLE IF NOT EXISTS click_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    clicks  INTEGER NOT NULL,
    body    BLOB NOT NULL
) STRICT;

-- Per link per hour: all clicks and bot clicks.
CREATE TABLE IF NOT EXISTS rollup_hour (
    link_id INTEGER NOT NULL,
    hour    INTEGER NOT NULL,
    total   INTEGER NOT NULL,
    bots    INTEGER NOT NULL,
    PRIMARY KEY (link_id, hour)
) STRICT, WITHOUT ROWID;

-- Per link per UTC day per dimension (referrer, country, browser, os, device) and value.
CREATE TABLE IF NOT EXISTS rollup_day (
    link_id INTEGER NOT NULL,
    day     INTEGER NOT NULL,
    dim     TEXT NOT NULL,
    key     TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (link_id, day, dim, key)
) STRICT, WITHOUT ROWID;

-- Applied click batches, for idempotent redelivery; pruned with the raw clicks.
CREATE TABLE IF NOT EXISTS ingested_batches (
    batch_id TEXT PRIMARY KEY,
    at       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Version 7: pruning finds expired batch ids without reading them all.
CREATE INDEX IF NOT EXISTS ingested_batches_by_at ON ingested_batches (at);

-- Version 3: notifications. One log for every user; ids grow in commit order (the
-- single writer), so an id is a cursor both for one user's events and for the whole feed
-- that control planes tail. Pruned by age and by count per user.
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    data    TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, id);

-- Version 4: uploads and their thumbnail jobs.
CREATE TABLE IF NOT EXISTS uploads (
    id              TEXT PRIMARY KEY,
    owner           INTEGER NOT NULL,
    filename        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    code            TEXT,
    state           TEXT NOT NULL,
    thumbnail_state TEXT NOT NULL,
    thumbnails      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS uploads_by_owner ON uploads (owner, created_at);

-- A job is due at `not_before`; claiming it pushes that into the future (a lease), so a
-- job whose worker died is claimed again once the lease runs out.
CREATE TABLE IF NOT EXISTS thumbnail_jobs (
    upload_id  TEXT PRIMARY KEY,
    attempts   INTEGER NOT NULL DEFAULT 0,
    not_before INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS thumbnail_jobs_due ON thumbnail_jobs (not_before);

-- Version 5: custom domains (names lower case, without port); `users` is a JSON array of
-- the user ids allowed to create links on it, or NULL for every user. Links also gained
-- `password_hash` and `targeting` (see COLUMNS).
CREATE TABLE IF NOT EXISTS domains (
    name       TEXT PRIMARY KEY,
    users      TEXT,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Version 6: signed-in sessions of people (only the token's hash is stored).
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    user_agent TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);

-- Version 6: the audit log of admin actions, newest read first.
CREATE TABLE IF NOT EXISTS audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  INTEGER NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;

-- Version 7: click budgets of capped links, leased to proxies (see shortlink_store::budget).
CREATE TABLE IF NOT EXISTS click_budgets (
    link_id INTEGER PRIMARY KEY,
    issued  INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS click_leases (
    link_id    INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    granted    INTEGER NOT NULL,
    used       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (link_id, holder)
) STRICT, WITHOUT ROWID;

-- Version 8: webhook endpoints with their delivery state (the cursor in the owner's
-- events) and the lease of the control plane delivering to them; `events` is the kinds'
-- names, comma-separated ('' for every kind).
CREATE TABLE IF NOT EXISTS webhooks (
    id               TEXT PRIMARY KEY,
    user_id          INTEGER NOT NULL,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    disabled_reason  TEXT,
    secret           TEXT NOT NULL,
    previous_secret  TEXT,
    previous_until   INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    cursor           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    next_at_ms       INTEGER NOT NULL DEFAULT 0,
    failing_since_ms INTEGER,
    lease_holder     TEXT NOT NULL DEFAULT '',
    lease_until_ms   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS webhooks_by_user ON webhooks (user_id);

-- Version 8: the delivery log, one row per attempt.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    webhook_id  TEXT NOT NULL,
    id          INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    event_id    INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    status      INTEGER,
    latency_ms  INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    next_try_ms INTEGER,
    manual      INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, id)
) STRICT, WITHOUT ROWID;

-- Version 9: TLS certificates every proxy serves, by their first DNS name (the key is
-- the certificate's private key, PEM: the data folder is the secret's home, as for the
-- signing key in meta). Their version is `meta.certificates_version`.
CREATE TABLE IF NOT EXISTS certificates (
    name       TEXT PRIMARY KEY,
    chain_pem  TEXT NOT NULL,
    key_pem    TEXT NOT NULL,
    not_after  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Version 10: automatic issuance (ACME). Answers to pending challenges (HTTP-01 key
-- authorizations, TLS-ALPN-01 certificates), dropped once expired; one lease per name
-- (the proxy ordering it); the account per directory (its credentials hold the account's
-- private key); where each name's issuance stands (JSON of `Issuance`).
CREATE TABLE IF NOT EXISTS acme_challenges (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS acme_leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    lease_until INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS acme_issuances (
    name     TEXT PRIMARY KEY,
    issuance TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Version 11: account-wide stats. Per owner per hour: all clicks and bot clicks; per owner
-- per UTC day per link: the same, for the top list. Written with the links' rollups; a
-- database of an older version fills them from `rollup_hour` once (see `BACKFILL_OWNERS`).
CREATE TABLE IF NOT EXISTS owner_rollup_hour (
    owner INTEGER NOT NULL,
    hour  INTEGER NOT NULL,
    total INTEGER NOT NULL,
    bots  INTEGER NOT NULL,
    PRIMARY KEY (owner, hour)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS owner_link_day (
    owner   INTEGER NOT NULL,
    day     INTEGER NOT NULL,
    link_id INTEGER NOT NULL,
    total   INTEGER NOT NULL,
    bots    INTEGER NOT NULL,
    PRIMARY KEY (owner, day, link_id)
) STRICT, WITHOUT ROWID;

-- Version 12: unique visitors. Per link per UTC hour and per UTC day: a HyperLogLog
-- sketch of its human visitors (`shortlink_store::visitors`), merged into by ingestion.
CREATE TABLE IF NOT EXISTS visitors_hour (
    link_id INTEGER NOT NULL,
    hour    INTEGER NOT NULL,
    sketch  BLOB NOT NULL,
    PRIMARY KEY (link_id, hour)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS visitors_day (
    link_id INTEGER NOT NULL,
    day     INTEGER NOT NULL,
    sketch  BLOB NOT NULL,
    PRIMARY KEY (link_id, day)
) STRICT, WITHOUT ROWID;
"#;

/// Fills the owners' rollups of version 11 from the links' hourly rollups, in a database
/// written by an older version (before it, nothing wrote them). Replaces rather than adds,
/// so running it again after an interrupted upgrade gives the same sums.
pub(crate) const BACKFILL_OWNERS: &str = r#"
INSERT OR REPLACE INTO owner_rollup_hour (owner, hour, total, bots)
    SELECT l.owner, r.hour, SUM(r.total), SUM(r.bots)
    FROM rollup_hour r JOIN links l ON l.id = r.link_id
    GROUP BY l.owner, r.hour;
INSERT OR REPLACE INTO owner_link_day (owner, day, link_id, total, bots)
    SELECT l.owner, r.hour - r.hour % 86400, r.link_id, SUM(r.total), SUM(r.bots)
    FROM rollup_hour r JOIN links l ON l.id = r.link_id
    GROUP BY l.owner, r.hour - r.hour % 86400, r.link_id;
"#;

/// Columns added to existing tables after their creation: (table, column, definition).
/// SQLite's `ALTER TABLE ADD COLUMN` is not idempotent, so each is added only when missing.
const COLUMNS: &[(&str, &str, &str)] = &[
    // Version 5: password-protected links (argon2 PHC string) and targeting rules (JSON).
    ("links", "password_hash", "TEXT"),
    ("links", "targeting", "TEXT"),
    // Version 6: disabled users; key prefixes, scopes (a bit set, 0 = every scope of the
    // user's role), expiry and last use; links disabled by an admin, with the reason.
    ("users", "disabled", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "password_hash", "TEXT"),
    ("api_keys", "prefix", "TEXT NOT NULL DEFAULT ''"),
    ("api_keys", "scopes", "INTEGER NOT NULL DEFAULT 0"),
    ("api_keys", "expires_at", "INTEGER"),
    ("api_keys", "last_used_at", "INTEGER"),
    ("links", "moderation", "TEXT"),
    // Version 10: a domain's own HTTPS behaviour (null: the installation's).
    ("domains", "redirect_http", "INTEGER"),
    ("domains", "hsts_max_age_seconds", "INTEGER"),
    // Version 11: the click log keeps one row per batch per owner, so an account's clicks
    // are read without the others' (null: a row of an older version, of any owners).
    ("click_log", "owner", "INTEGER"),
    // Version 11: where visitors go instead of a 410, per link and per domain.
    ("links", "fallback_url", "TEXT"),
    ("domains", "fallback_url", "TEXT"),
    // Version 13: a multipart upload's plan (JSON of `MultipartPlan`); downloads counted.
    ("uploads", "multipart", "TEXT"),
    ("uploads", "downloads", "INTEGER NOT NULL DEFAULT 0"),
];

/// Indexes over columns of [`COLUMNS`], created once those exist.
pub(crate) const LATE_INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS click_log_by_owner ON click_log (owner, id);
-- Version 13: the sweep finds expired and abandoned uploads without reading them all.
CREATE INDEX IF NOT EXISTS uploads_by_expiry ON uploads (expires_at) WHERE expires_at IS NOT NULL;
"#;

/// Adds every column of [`COLUMNS`] that a database created by an older version lacks.
pub(crate) fn add_missing_columns(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in COLUMNS {
        let present: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            rusqlite::params![table, column],
            |r| r.get(0),
        )?;
        if present == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}
