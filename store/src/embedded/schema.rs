//! The embedded backend's SQLite schema, applied at open.

/// Schema version this binary writes; opening a newer database is refused.
pub(crate) const SCHEMA_VERSION: i64 = 1;

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
"#;
