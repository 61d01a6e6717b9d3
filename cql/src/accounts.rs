//! Users, API keys and installation-wide values on CQL.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::time_util::now_unix;
use shortlink_core::{
    ApiKey, AuditEntry, KEY_HASH_LEN, NewAuditEntry, Role, Scopes, Session, User, UserId,
    api_key_id,
};
use shortlink_store::{AccountStore, AuditStore, StoreError};

use crate::{CqlStore, Kind, ids};

#[derive(DeserializeRow)]
struct UserRow {
    id: i64,
    name: String,
    role: String,
    created_at: i64,
    disabled: Option<bool>,
}

const USER_SELECT: &str = "SELECT id, name, role, created_at, disabled FROM {ks}.users";

/// An `api_keys` row.
#[derive(DeserializeRow)]
struct KeyRow {
    key_hash: Vec<u8>,
    user_id: i64,
    label: Option<String>,
    prefix: Option<String>,
    scopes: Option<i32>,
    created_at: Option<i64>,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

/// A `sessions` row.
#[derive(DeserializeRow)]
struct SessionRow {
    token_hash: Vec<u8>,
    user_id: i64,
    created_at: i64,
    expires_at: i64,
    user_agent: Option<String>,
}

impl SessionRow {
    fn into_session(self) -> Option<Session> {
        Some(Session {
            token_hash: self.token_hash.try_into().ok()?,
            user_id: self.user_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            user_agent: self.user_agent.unwrap_or_default(),
        })
    }
}

const KEY_SELECT: &str = "SELECT key_hash, user_id, label, prefix, scopes, created_at, expires_at, \
     last_used_at FROM {ks}.api_keys";

impl KeyRow {
    fn into_key(self, role: Role) -> Option<ApiKey> {
        let key_hash: [u8; KEY_HASH_LEN] = self.key_hash.try_into().ok()?;
        Some(ApiKey {
            key_hash,
            user_id: self.user_id,
            label: self.label.unwrap_or_default(),
            prefix: self.prefix.unwrap_or_default(),
            scopes: Scopes::from_stored(self.scopes.unwrap_or(0) as u8, role),
            created_at: self.created_at.unwrap_or(0),
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
        })
    }
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            id: self.id,
            role: Role::parse(&self.role).ok_or_else(|| {
                StoreError::corrupt(format!("stored role '{}' is unknown", self.role))
            })?,
            name: self.name,
            created_at: self.created_at,
            disabled: self.disabled.unwrap_or(false),
        })
    }
}

impl CqlStore {
    /// Makes the installation-wide values on first start; every node then reads the same.
    pub(crate) async fn init_meta(&self) -> Result<(), StoreError> {
        let salt = rand::random::<u64>().to_string();
        let key: [u8; 32] = rand::random();
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        for (name, value) in [("code_salt", salt), ("signing_key", key)] {
            self.lwt(
                "INSERT INTO {ks}.meta (key, value) VALUES (?, ?) IF NOT EXISTS",
                (name, value),
            )
            .await?;
        }
        Ok(())
    }

    /// An installation-wide value.
    pub(crate) async fn meta(&self, key: &str) -> Result<String, StoreError> {
        let row: Option<(String,)> = self
            .row("SELECT value FROM {ks}.meta WHERE key = ?", (key,))
            .await?;
        row.map(|(v,)| v)
            .ok_or_else(|| StoreError::corrupt(format!("meta value '{key}' is missing")))
    }

    /// When a user was created (Unix seconds), if the user exists.
    pub(crate) async fn user_created_at(&self, id: UserId) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = self
            .row("SELECT created_at FROM {ks}.users WHERE id = ?", (id,))
            .await?;
        Ok(row.map(|(t,)| t))
    }

    /// Every user's id (a full scan, paged): for periodic maintenance only.
    pub(crate) async fn all_user_ids(&self) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .scan::<(i64,)>("SELECT id FROM {ks}.users")
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect())
    }
}

#[async_trait]
impl AccountStore for CqlStore {
    async fn create_user(&self, name: &str, role: Role) -> Result<User, StoreError> {
        let id = ids::next_id();
        let claimed = self
            .lwt(
                "INSERT INTO {ks}.users_by_name (name, id) VALUES (?, ?) IF NOT EXISTS",
                (name, id),
            )
            .await?;
        if !claimed {
            return Err(StoreError::UserExists(name.to_owned()));
        }
        let user = User {
            id,
            name: name.to_owned(),
            role,
            created_at: now_unix(),
            disabled: false,
        };
        self.exec(
            "INSERT INTO {ks}.users (id, name, role, created_at) VALUES (?, ?, ?, ?)",
            Kind::Write,
            (user.id, &user.name, role.as_str(), user.created_at),
        )
        .await?;
        Ok(user)
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        const CQL: &str =
            "SELECT id, name, role, created_at, disabled FROM {ks}.users WHERE id = ?";
        let row: Option<UserRow> = self.row(CQL, (id,)).await?;
        row.map(UserRow::into_user).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row: Option<(i64,)> = self
            .row("SELECT id FROM {ks}.users_by_name WHERE name = ?", (name,))
            .await?;
        match row {
            Some((id,)) => self.get_user(id).await,
            None => Ok(None),
        }
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut users = self
            .scan::<UserRow>(USER_SELECT)
            .await?
            .into_iter()
            .map(UserRow::into_user)
            .collect::<Result<Vec<_>, _>>()?;
        users.sort_by_key(|u| u.id);
        Ok(users)
    }

    async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError> {
        self.lwt(
            "UPDATE {ks}.users SET disabled = ? WHERE id = ? IF EXISTS",
            (disabled, id),
        )
        .await
    }

    async fn add_api_key(&self, key: ApiKey) -> Result<(), StoreError> {
        if self.user_created_at(key.user_id).await?.is_none() {
            return Err(StoreError::NoSuchUser(key.user_id));
        }
        self.lwt(
            "INSERT INTO {ks}.api_keys (key_hash, user_id, label, prefix, scopes, created_at, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            (
                key.key_hash.to_vec(),
                key.user_id,
                &key.label,
                &key.prefix,
                i32::from(key.scopes.bits()),
                key.created_at,
                key.expires_at,
            ),
        )
        .await?;
        Ok(())
    }

    async fn key_by_hash(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(ApiKey, User)>, StoreError> {
        const CQL: &str = "SELECT key_hash, user_id, label, prefix, scopes, created_at, \
             expires_at, last_used_at FROM {ks}.api_keys WHERE key_hash = ?";
        let Some(row) = self.row::<KeyRow>(CQL, (key_hash.to_vec(),)).await? else {
            return Ok(None);
        };
        let Some(user) = self.get_user(row.user_id).await? else {
            return Ok(None);
        };
        Ok(row.into_key(user.role).map(|key| (key, user)))
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>, StoreError> {
        // Keys are few (people and their programs), so a listing scans the table; the
        // authentication path reads one partition by hash.
        let roles: std::collections::HashMap<UserId, Role> = self
            .list_users()
            .await?
            .into_iter()
            .map(|u| (u.id, u.role))
            .collect();
        let mut keys: Vec<ApiKey> = self
            .scan::<KeyRow>(KEY_SELECT)
            .await?
            .into_iter()
            .filter(|row| user.is_none_or(|u| row.user_id == u))
            .filter_map(|row| {
                let role = *roles.get(&row.user_id)?;
                row.into_key(role)
            })
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.key_hash));
        Ok(keys)
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .list_api_keys(None)
            .await?
            .into_iter()
            .find(|k| api_key_id(&k.key_hash) == id))
    }

    async fn delete_api_key(&self, key_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError> {
        self.lwt(
            "DELETE FROM {ks}.api_keys WHERE key_hash = ? IF EXISTS",
            (key_hash.to_vec(),),
        )
        .await
    }

    async fn set_api_key_expiry(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.lwt(
            "UPDATE {ks}.api_keys SET expires_at = ? WHERE key_hash = ? IF EXISTS",
            (expires_at, key_hash.to_vec()),
        )
        .await
    }

    async fn touch_api_key(&self, key_hash: [u8; KEY_HASH_LEN], at: i64) -> Result<(), StoreError> {
        // A plain write could re-create a row a revocation just deleted (with no user);
        // the condition keeps a revoked key gone.
        self.lwt(
            "UPDATE {ks}.api_keys SET last_used_at = ? WHERE key_hash = ? IF EXISTS",
            (at, key_hash.to_vec()),
        )
        .await?;
        Ok(())
    }

    async fn set_user_password(
        &self,
        id: UserId,
        password_hash: Option<String>,
    ) -> Result<bool, StoreError> {
        self.lwt(
            "UPDATE {ks}.users SET password_hash = ? WHERE id = ? IF EXISTS",
            (password_hash, id),
        )
        .await
    }

    async fn credentials(&self, name: &str) -> Result<Option<(User, Option<String>)>, StoreError> {
        let Some(user) = self.user_by_name(name).await? else {
            return Ok(None);
        };
        let row: Option<(Option<String>,)> = self
            .row(
                "SELECT password_hash FROM {ks}.users WHERE id = ?",
                (user.id,),
            )
            .await?;
        Ok(Some((user, row.and_then(|(hash,)| hash))))
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        // The row lives as long as the session: Cassandra drops it when it expires.
        let ttl = i32::try_from((session.expires_at - now_unix()).max(1)).unwrap_or(i32::MAX);
        self.exec(
            "INSERT INTO {ks}.sessions (token_hash, user_id, created_at, expires_at, user_agent) \
             VALUES (?, ?, ?, ?, ?) USING TTL ?",
            Kind::Write,
            (
                session.token_hash.to_vec(),
                session.user_id,
                session.created_at,
                session.expires_at,
                &session.user_agent,
                ttl,
            ),
        )
        .await?;
        Ok(())
    }

    async fn session_by_hash(
        &self,
        token_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(Session, User)>, StoreError> {
        const CQL: &str = "SELECT token_hash, user_id, created_at, expires_at, user_agent \
             FROM {ks}.sessions WHERE token_hash = ?";
        let Some(row) = self.row::<SessionRow>(CQL, (token_hash.to_vec(),)).await? else {
            return Ok(None);
        };
        let Some(session) = row.into_session() else {
            return Ok(None);
        };
        Ok(self
            .get_user(session.user_id)
            .await?
            .map(|user| (session, user)))
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let now = now_unix();
        let mut sessions: Vec<Session> = self
            .scan::<SessionRow>(
                "SELECT token_hash, user_id, created_at, expires_at, user_agent FROM {ks}.sessions",
            )
            .await?
            .into_iter()
            .filter_map(SessionRow::into_session)
            .filter(|s| s.user_id == user && s.expires_at > now)
            .collect();
        sessions.sort_by_key(|s| (s.created_at, s.token_hash));
        Ok(sessions)
    }

    async fn delete_session(&self, token_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError> {
        self.lwt(
            "DELETE FROM {ks}.sessions WHERE token_hash = ? IF EXISTS",
            (token_hash.to_vec(),),
        )
        .await
    }
}

/// The audit log's one partition.
pub(crate) const AUDIT_BUCKET: i32 = 0;

#[derive(DeserializeRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: i64,
    action: String,
    target: String,
    detail: String,
}

#[async_trait]
impl AuditStore for CqlStore {
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let id = ids::next_id();
        let at = now_unix();
        self.exec(
            "INSERT INTO {ks}.audit_log (bucket, id, at, actor, action, target, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            Kind::Write,
            (
                AUDIT_BUCKET,
                id,
                at,
                entry.actor,
                &entry.action,
                &entry.target,
                &entry.detail,
            ),
        )
        .await?;
        Ok(AuditEntry { id, at, entry })
    }

    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<AuditRow> = self
            .rows(
                "SELECT id, at, actor, action, target, detail FROM {ks}.audit_log \
                 WHERE bucket = ? AND id < ? LIMIT ?",
                (AUDIT_BUCKET, before.unwrap_or(i64::MAX), limit),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                entry: NewAuditEntry {
                    actor: r.actor,
                    action: r.action,
                    target: r.target,
                    detail: r.detail,
                },
            })
            .collect())
    }
}
