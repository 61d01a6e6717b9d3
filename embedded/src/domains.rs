//! Custom domains on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use shortlink_core::Domain;

use super::EmbeddedStore;
use shortlink_store::{DomainStore, StoreError};

fn row_to_domain(row: &Row<'_>) -> rusqlite::Result<Domain> {
    let users: Option<String> = row.get(1)?;
    Ok(Domain {
        name: row.get(0)?,
        users: users.and_then(|u| serde_json::from_str(&u).ok()),
        created_at: row.get(2)?,
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
                    "INSERT INTO domains (name, users, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                    params![domain.name, users, domain.created_at],
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
                    "SELECT name, users, created_at FROM domains WHERE name = ?1",
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
}

impl EmbeddedStore {
    /// Every registered domain, by name.
    pub(crate) async fn domains(&self) -> Result<Vec<Domain>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT name, users, created_at FROM domains ORDER BY name")?;
            let domains = stmt
                .query_map([], row_to_domain)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(domains)
        })
        .await
    }
}
