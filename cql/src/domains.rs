//! Custom domains on CQL: one small table, read whole by every proxy.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::{Domain, DomainHttps};
use shortlink_store::{DomainStore, StoreError};

use crate::{CqlStore, Kind};

#[derive(DeserializeRow)]
struct DomainRow {
    name: String,
    users: Option<Vec<i64>>,
    created_at: Option<i64>,
    redirect_http: Option<bool>,
    hsts_max_age_seconds: Option<i64>,
    fallback_url: Option<String>,
}

/// The columns a [`DomainRow`] holds, in its order.
const SELECT: &str = "SELECT name, users, created_at, redirect_http, hsts_max_age_seconds, \
     fallback_url FROM {ks}.domains";

impl From<DomainRow> for Domain {
    fn from(row: DomainRow) -> Domain {
        Domain {
            name: row.name,
            users: row.users,
            created_at: row.created_at.unwrap_or(0),
            https: DomainHttps {
                redirect_http: row.redirect_http,
                hsts_max_age_seconds: row.hsts_max_age_seconds.map(|h| h.max(0) as u64),
            },
            fallback_url: row.fallback_url,
        }
    }
}

#[async_trait]
impl DomainStore for CqlStore {
    async fn create_domain(&self, domain: Domain) -> Result<(), StoreError> {
        let claimed = self
            .lwt(
                "INSERT INTO {ks}.domains (name, users, created_at, redirect_http, \
                 hsts_max_age_seconds, fallback_url) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                (
                    &domain.name,
                    &domain.users,
                    domain.created_at,
                    domain.https.redirect_http,
                    domain.https.hsts_max_age_seconds.map(|h| h as i64),
                    &domain.fallback_url,
                ),
            )
            .await?;
        if claimed {
            Ok(())
        } else {
            Err(StoreError::DomainExists(domain.name))
        }
    }

    async fn get_domain(&self, name: &str) -> Result<Option<Domain>, StoreError> {
        let row: Option<DomainRow> = self
            .row(
                "SELECT name, users, created_at, redirect_http, hsts_max_age_seconds, \
                 fallback_url FROM {ks}.domains WHERE name = ?",
                (name,),
            )
            .await?;
        Ok(row.map(Domain::from))
    }

    async fn delete_domain(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.get_domain(name).await?.is_some();
        self.exec(
            "DELETE FROM {ks}.domains WHERE name = ?",
            Kind::Write,
            (name,),
        )
        .await?;
        Ok(existed)
    }

    async fn set_domain_https(&self, name: &str, https: DomainHttps) -> Result<bool, StoreError> {
        // Conditional, as the insert that created the row: a deleted domain stays deleted.
        self.lwt(
            "UPDATE {ks}.domains SET redirect_http = ?, hsts_max_age_seconds = ? \
             WHERE name = ? IF EXISTS",
            (
                https.redirect_http,
                https.hsts_max_age_seconds.map(|h| h as i64),
                name,
            ),
        )
        .await
    }

    async fn set_domain_fallback(
        &self,
        name: &str,
        fallback: Option<String>,
    ) -> Result<bool, StoreError> {
        self.lwt(
            "UPDATE {ks}.domains SET fallback_url = ? WHERE name = ? IF EXISTS",
            (fallback, name),
        )
        .await
    }
}

impl CqlStore {
    /// Every registered domain, by name.
    pub(crate) async fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        let rows: Vec<DomainRow> = self.rows(SELECT, ()).await?;
        let mut domains: Vec<Domain> = rows.into_iter().map(Domain::from).collect();
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(domains)
    }
}
