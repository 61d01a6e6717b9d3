//! Custom domains on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use shortlink_core::{Domain, DomainHttps};

use super::EmbeddedStore;
use shortlink_store::{DomainStore, StoreError};

/// The columns [`row_to_domain`] reads, in its order.
const COLUMNS: &str = "name, users, created_at, redirect_http, hsts_max_age_seconds, fallback_url";

fn row_to_domain(row: &Row<'_>) -> rusqlite::Result<Domain> {
    let users: Option<String> = row.get(1)?;
    let hsts: Option<i64> = row.get(4)?;
    Ok(Domain {
        name: row.get(0)?,
        users: users.and_then(|u| serde_json::from_str(&u).ok()),
        created_at: row.get(2)?,
        https: DomainHttps {
            redirect_http: row.get(3)?,
            hsts_max_age_seconds: hsts.map(|h| h.max(0) as u64),
        },
        fallback_url: row.get(5)?,
    })
}

#[async_trait]
impl DomainStore for EmbeddedStore {
    async fn create_domain(&self, domain: Domain) -> Result<(), StoreError> {
        let users = domain
            .users
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::backend)?;
        self.writer
            .write(move |conn| {
                let inserted = conn.execute(
                    "INSERT INTO domains (name, users, created_at, redirect_http,
                       hsts_max_age_seconds, fallback_url) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (name) DO NOTHING",
                    params![
                        domain.name,
                        users,
                        domain.created_at,
                        domain.https.redirect_http,
                        domain.https.hsts_max_age_seconds.map(|h| h as i64),
                        domain.fallback_url
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::DomainExists(domain.name).into());
                }
                Ok(())
            })
            .await
    }

    async fn get_domain(&self, name: &str) -> Result<Option<Domain>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM domains WHERE name = ?1"),
                    params![name],
                    row_to_domain,
                )
                .optional()?)
        })
        .await
    }

    async fn delete_domain(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                Ok(conn.execute("DELETE FROM domains WHERE name = ?1", params![name])? > 0)
            })
            .await
    }

    async fn set_domain_https(&self, name: &str, https: DomainHttps) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE domains SET redirect_http = ?2, hsts_max_age_seconds = ?3
                     WHERE name = ?1",
                    params![
                        name,
                        https.redirect_http,
                        https.hsts_max_age_seconds.map(|h| h as i64)
                    ],
                )? > 0)
            })
            .await
    }

    async fn set_domain_fallback(
        &self,
        name: &str,
        fallback: Option<String>,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE domains SET fallback_url = ?2 WHERE name = ?1",
                    params![name, fallback],
                )? > 0)
            })
            .await
    }
}

impl EmbeddedStore {
    /// Every registered domain, by name.
    pub(crate) async fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM domains ORDER BY name"))?;
            let domains = stmt
                .query_map([], row_to_domain)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(domains)
        })
        .await
    }
}
