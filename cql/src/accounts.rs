//! Users, API keys and installation-wide values on CQL.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::time_util::now_unix;
use shortlink_core::{KEY_HASH_LEN, Role, User, UserId};
use shortlink_store::{AccountStore, StoreError};

use crate::{CqlStore, Kind, ids};

#[derive(DeserializeRow)]
struct UserRow {
    id: i64,
    name: String,
    role: String,
    created_at: i64,
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            id: self.id,
            role: Role::parse(&self.role).ok_or_else(|| {
                StoreError::Backend(format!("stored role '{}' is unknown", self.role))
            })?,
            name: self.name,
            created_at: self.created_at,
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
            .ok_or_else(|| StoreError::Backend(format!("meta value '{key}' is missing")))
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
        use futures_util::StreamExt;
        let statement = self
            .prepare("SELECT id FROM {ks}.users", Kind::Read)
            .await?;
        let mut rows = self
            .session
            .execute_iter(statement, ())
            .await
            .map_err(crate::backend)?
            .rows_stream::<(i64,)>()
            .map_err(crate::backend)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(row.map_err(crate::backend)?.0);
        }
        Ok(out)
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
        let row: Option<UserRow> = self
            .row(
                "SELECT id, name, role, created_at FROM {ks}.users WHERE id = ?",
                (id,),
            )
            .await?;
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

    async fn add_api_key(
        &self,
        user: UserId,
        key_hash: [u8; KEY_HASH_LEN],
        label: &str,
    ) -> Result<(), StoreError> {
        if self.user_created_at(user).await?.is_none() {
            return Err(StoreError::NoSuchUser(user));
        }
        self.lwt(
            "INSERT INTO {ks}.api_keys (key_hash, user_id, label) VALUES (?, ?, ?) IF NOT EXISTS",
            (key_hash.to_vec(), user, label),
        )
        .await?;
        Ok(())
    }

    async fn user_by_key_hash(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<User>, StoreError> {
        let row: Option<(i64,)> = self
            .row(
                "SELECT user_id FROM {ks}.api_keys WHERE key_hash = ?",
                (key_hash.to_vec(),),
            )
            .await?;
        match row {
            Some((id,)) => self.get_user(id).await,
            None => Ok(None),
        }
    }
}
