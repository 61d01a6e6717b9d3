//! Users, API keys and the audit log on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use shortlink_core::time_util::now_unix;
use shortlink_core::{
    ApiKey, AuditEntry, KEY_HASH_LEN, NewAuditEntry, Role, Scopes, Session, User, UserId,
    api_key_id_bytes,
};

use super::EmbeddedStore;
use shortlink_store::{AccountStore, AuditStore, StoreError};

const USER_COLUMNS: &str = "u.id, u.name, u.role, u.created_at, u.disabled";
const KEY_COLUMNS: &str = "k.key_hash, k.user_id, k.label, k.prefix, k.scopes, k.created_at, \
     k.expires_at, k.last_used_at, u.role";

fn row_to_user(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    let role: String = row.get(at + 2)?;
    Ok(User {
        id: row.get(at)?,
        name: row.get(at + 1)?,
        role: Role::parse(&role).unwrap_or(Role::User),
        created_at: row.get(at + 3)?,
        disabled: row.get(at + 4)?,
    })
}

fn hash_of(bytes: Vec<u8>) -> [u8; KEY_HASH_LEN] {
    let mut hash = [0u8; KEY_HASH_LEN];
    if bytes.len() == KEY_HASH_LEN {
        hash.copy_from_slice(&bytes);
    }
    hash
}

fn row_to_session(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: hash_of(row.get(0)?),
        user_id: row.get(1)?,
        created_at: row.get(2)?,
        expires_at: row.get(3)?,
        user_agent: row.get(4)?,
    })
}

fn row_to_key(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let key_hash = hash_of(row.get(0)?);
    let role: String = row.get(8)?;
    let bits: i64 = row.get(4)?;
    Ok(ApiKey {
        key_hash,
        user_id: row.get(1)?,
        label: row.get(2)?,
        prefix: row.get(3)?,
        scopes: Scopes::from_stored(bits as u8, Role::parse(&role).unwrap_or(Role::User)),
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        last_used_at: row.get(7)?,
    })
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create_user(&self, name: &str, role: Role) -> Result<User, StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                let now = now_unix();
                let inserted = conn.execute(
                    "INSERT INTO users (name, role, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                    params![name, role.as_str(), now],
                )?;
                if inserted == 0 {
                    return Err(StoreError::UserExists(name).into());
                }
                Ok(User {
                    id: conn.last_insert_rowid(),
                    name,
                    role,
                    created_at: now,
                    disabled: false,
                })
            })
            .await
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"),
                    [id],
                    |r| row_to_user(r, 0),
                )
                .optional()?)
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.name = ?1"),
                    [name],
                    |r| row_to_user(r, 0),
                )
                .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.id"))?;
            let users = stmt
                .query_map([], |r| row_to_user(r, 0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(users)
        })
        .await
    }

    async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE users SET disabled = ?2 WHERE id = ?1",
                    params![id, disabled],
                )? > 0)
            })
            .await
    }

    async fn add_api_key(&self, key: ApiKey) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                let exists: bool = conn
                    .query_row("SELECT 1 FROM users WHERE id = ?1", [key.user_id], |_| {
                        Ok(true)
                    })
                    .optional()?
                    .unwrap_or(false);
                if !exists {
                    return Err(StoreError::NoSuchUser(key.user_id).into());
                }
                conn.execute(
                    "INSERT INTO api_keys
                       (key_hash, user_id, label, prefix, scopes, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key_hash) DO NOTHING",
                    params![
                        key.key_hash.as_slice(),
                        key.user_id,
                        key.label,
                        key.prefix,
                        i64::from(key.scopes.bits()),
                        key.created_at,
                        key.expires_at
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn key_by_hash(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(ApiKey, User)>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {KEY_COLUMNS}, {USER_COLUMNS}
                         FROM api_keys k JOIN users u ON u.id = k.user_id
                         WHERE k.key_hash = ?1"
                    ),
                    [key_hash.as_slice()],
                    |r| Ok((row_to_key(r)?, row_to_user(r, 9)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id
                 WHERE ?1 IS NULL OR k.user_id = ?1 ORDER BY k.created_at, k.key_hash"
            ))?;
            let keys = stmt
                .query_map([user], row_to_key)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(keys)
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let Some(start) = api_key_id_bytes(id) else {
            return Ok(None);
        };
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id
                         WHERE substr(k.key_hash, 1, 8) = ?1"
                    ),
                    [start.as_slice()],
                    row_to_key,
                )
                .optional()?)
        })
        .await
    }

    async fn delete_api_key(&self, key_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM api_keys WHERE key_hash = ?1",
                    [key_hash.as_slice()],
                )? > 0)
            })
            .await
    }

    async fn set_api_key_expiry(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE api_keys SET expires_at = ?2 WHERE key_hash = ?1",
                    params![key_hash.as_slice(), expires_at],
                )? > 0)
            })
            .await
    }

    async fn set_user_password(
        &self,
        id: UserId,
        password_hash: Option<String>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE users SET password_hash = ?2 WHERE id = ?1",
                    params![id, password_hash],
                )? > 0)
            })
            .await
    }

    async fn credentials(&self, name: &str) -> Result<Option<(User, Option<String>)>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.name = ?1"
                    ),
                    [name],
                    |r| Ok((row_to_user(r, 0)?, r.get(5)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM sessions WHERE user_id = ?1 AND expires_at <= ?2",
                    params![session.user_id, now_unix()],
                )?;
                conn.execute(
                    "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, user_agent)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        session.token_hash.as_slice(),
                        session.user_id,
                        session.created_at,
                        session.expires_at,
                        session.user_agent
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn session_by_hash(
        &self,
        token_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(Session, User)>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT s.token_hash, s.user_id, s.created_at, s.expires_at, s.user_agent,
                                {USER_COLUMNS}
                         FROM sessions s JOIN users u ON u.id = s.user_id
                         WHERE s.token_hash = ?1"
                    ),
                    [token_hash.as_slice()],
                    |r| Ok((row_to_session(r)?, row_to_user(r, 5)?)),
                )
                .optional()?)
        })
        .await
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT token_hash, user_id, created_at, expires_at, user_agent FROM sessions
                 WHERE user_id = ?1 AND expires_at > ?2 ORDER BY created_at, token_hash",
            )?;
            let sessions = stmt
                .query_map(params![user, now_unix()], row_to_session)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(sessions)
        })
        .await
    }

    async fn delete_session(&self, token_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM sessions WHERE token_hash = ?1",
                    [token_hash.as_slice()],
                )? > 0)
            })
            .await
    }

    async fn touch_api_key(&self, key_hash: [u8; KEY_HASH_LEN], at: i64) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE key_hash = ?1",
                    params![key_hash.as_slice(), at],
                )?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        self.writer
            .write(move |conn| {
                let at = now_unix();
                conn.execute(
                    "INSERT INTO audit_log (at, actor, action, target, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![at, entry.actor, entry.action, entry.target, entry.detail],
                )?;
                Ok(AuditEntry {
                    id: conn.last_insert_rowid(),
                    at,
                    entry,
                })
            })
            .await
    }

    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, detail FROM audit_log
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let entries = stmt
                .query_map(params![before, limit], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        entry: NewAuditEntry {
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            detail: r.get(5)?,
                        },
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(entries)
        })
        .await
    }
}
