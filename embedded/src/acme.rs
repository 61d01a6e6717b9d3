//! Automatic issuance (ACME) on SQLite: challenges with an expiry, leases taken in one
//! statement, the account per directory and one issuance record per name.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use shortlink_core::Issuance;
use shortlink_store::{AcmeStore, StoreError, parse_issuance};

use super::EmbeddedStore;

#[async_trait]
impl AcmeStore for EmbeddedStore {
    async fn put_acme_challenge(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        let now = shortlink_core::time_util::now_unix();
        self.writer
            .write(move |conn| {
                // Expired answers go with each new one: the table stays as small as the
                // challenges under way.
                conn.execute(
                    "DELETE FROM acme_challenges WHERE expires_at < ?1",
                    params![now],
                )?;
                conn.execute(
                    "INSERT INTO acme_challenges (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                       expires_at = excluded.expires_at",
                    params![key, value, expires_at],
                )?;
                Ok(())
            })
            .await
    }

    async fn acme_challenge(&self, key: &str, now: i64) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM acme_challenges WHERE key = ?1 AND expires_at >= ?2",
                    params![key, now],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn delete_acme_challenge(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.writer
            .write(move |conn| {
                conn.execute("DELETE FROM acme_challenges WHERE key = ?1", params![key])?;
                Ok(())
            })
            .await
    }

    async fn lease_acme_order(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "INSERT INTO acme_leases (name, holder, lease_until) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                       lease_until = excluded.lease_until
                     WHERE acme_leases.lease_until < ?4
                       OR acme_leases.holder = excluded.holder",
                    params![name, holder, until, now],
                )?;
                Ok(changed > 0)
            })
            .await
    }

    async fn release_acme_order(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM acme_leases WHERE name = ?1 AND holder = ?2",
                    params![name, holder],
                )?;
                Ok(())
            })
            .await
    }

    async fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        let directory = directory.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT credentials FROM acme_accounts WHERE directory = ?1",
                    params![directory],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn put_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError> {
        let (directory, credentials) = (directory.to_owned(), credentials.to_owned());
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO acme_accounts (directory, credentials) VALUES (?1, ?2)
                     ON CONFLICT (directory) DO UPDATE SET credentials = excluded.credentials",
                    params![directory, credentials],
                )?;
                Ok(())
            })
            .await
    }

    async fn put_issuance(&self, issuance: Issuance) -> Result<(), StoreError> {
        let json = serde_json::to_string(&issuance).map_err(StoreError::backend)?;
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO acme_issuances (name, issuance) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET issuance = excluded.issuance",
                    params![issuance.name, json],
                )?;
                Ok(())
            })
            .await
    }

    async fn issuance(&self, name: &str) -> Result<Option<Issuance>, StoreError> {
        let name = name.to_owned();
        let json: Option<String> = self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT issuance FROM acme_issuances WHERE name = ?1",
                        params![name],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?;
        Ok(json.as_deref().and_then(parse_issuance))
    }

    async fn delete_issuance(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                conn.execute("DELETE FROM acme_issuances WHERE name = ?1", params![name])?;
                Ok(())
            })
            .await
    }

    async fn list_issuances(&self) -> Result<Vec<Issuance>, StoreError> {
        let rows: Vec<String> = self
            .read(|conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT issuance FROM acme_issuances ORDER BY name")?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(rows)
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|json| parse_issuance(json))
            .collect())
    }
}
