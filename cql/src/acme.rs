//! Automatic issuance (ACME) on CQL: challenge answers with a TTL, the lease per name by
//! lightweight transactions, the account per directory and one issuance record per name.

use async_trait::async_trait;
use shortlink_core::Issuance;
use shortlink_store::{AcmeStore, StoreError, parse_issuance};

use crate::{CqlStore, Kind};

#[async_trait]
impl AcmeStore for CqlStore {
    async fn put_acme_challenge(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let now = shortlink_core::time_util::now_unix();
        let ttl = i32::try_from((expires_at - now).max(1)).unwrap_or(i32::MAX);
        self.exec(
            "INSERT INTO {ks}.acme_challenges (key, value) VALUES (?, ?) USING TTL ?",
            Kind::Write,
            (key, value, ttl),
        )
        .await?;
        Ok(())
    }

    async fn acme_challenge(&self, key: &str, _now: i64) -> Result<Option<String>, StoreError> {
        // The row's TTL is its expiry.
        let row: Option<(Option<String>,)> = self
            .row(
                "SELECT value FROM {ks}.acme_challenges WHERE key = ?",
                (key,),
            )
            .await?;
        Ok(row.and_then(|(value,)| value))
    }

    async fn delete_acme_challenge(&self, key: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM {ks}.acme_challenges WHERE key = ?",
            Kind::Write,
            (key,),
        )
        .await?;
        Ok(())
    }

    async fn lease_acme_order(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        // Free, expired, or ours: three conditions, each a lightweight transaction.
        Ok(self
            .lwt(
                "INSERT INTO {ks}.acme_leases (name, holder, lease_until) VALUES (?, ?, ?) \
                 IF NOT EXISTS",
                (name, holder, until),
            )
            .await?
            || self
                .lwt(
                    "UPDATE {ks}.acme_leases SET holder = ?, lease_until = ? WHERE name = ? \
                     IF lease_until < ?",
                    (holder, until, name, now),
                )
                .await?
            || self
                .lwt(
                    "UPDATE {ks}.acme_leases SET lease_until = ? WHERE name = ? IF holder = ?",
                    (until, name, holder),
                )
                .await?)
    }

    async fn release_acme_order(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.lwt(
            "DELETE FROM {ks}.acme_leases WHERE name = ? IF holder = ?",
            (name, holder),
        )
        .await?;
        Ok(())
    }

    async fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .row(
                "SELECT credentials FROM {ks}.acme_accounts WHERE directory = ?",
                (directory,),
            )
            .await?;
        Ok(row.and_then(|(credentials,)| credentials))
    }

    async fn put_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO {ks}.acme_accounts (directory, credentials) VALUES (?, ?)",
            Kind::Write,
            (directory, credentials),
        )
        .await?;
        Ok(())
    }

    async fn put_issuance(&self, issuance: Issuance) -> Result<(), StoreError> {
        let json = serde_json::to_string(&issuance).map_err(StoreError::backend)?;
        self.exec(
            "INSERT INTO {ks}.acme_issuances (name, issuance) VALUES (?, ?)",
            Kind::Write,
            (&issuance.name, json),
        )
        .await?;
        Ok(())
    }

    async fn issuance(&self, name: &str) -> Result<Option<Issuance>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .row(
                "SELECT issuance FROM {ks}.acme_issuances WHERE name = ?",
                (name,),
            )
            .await?;
        Ok(row
            .and_then(|(json,)| json)
            .as_deref()
            .and_then(parse_issuance))
    }

    async fn delete_issuance(&self, name: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM {ks}.acme_issuances WHERE name = ?",
            Kind::Write,
            (name,),
        )
        .await?;
        Ok(())
    }

    async fn list_issuances(&self) -> Result<Vec<Issuance>, StoreError> {
        let rows: Vec<(String, Option<String>)> = self
            .rows("SELECT name, issuance FROM {ks}.acme_issuances", ())
            .await?;
        let mut issuances: Vec<Issuance> = rows
            .into_iter()
            .filter_map(|(_, json)| parse_issuance(json.as_deref()?))
            .collect();
        issuances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(issuances)
    }
}
