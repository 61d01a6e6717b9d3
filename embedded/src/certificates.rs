//! TLS certificates on SQLite: one row per name, and a version in `meta` that every put
//! and delete moves on (in the same transaction).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use shortlink_core::StoredCertificate;
use shortlink_store::{CertificateStore, StoreError};

use super::EmbeddedStore;

/// Moves the certificates' version on: the next integer, so it never repeats.
fn bump_version(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('certificates_version', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

#[async_trait]
impl CertificateStore for EmbeddedStore {
    async fn put_certificate(&self, cert: StoredCertificate) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO certificates (name, chain_pem, key_pem, not_after, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET chain_pem = excluded.chain_pem,
                       key_pem = excluded.key_pem, not_after = excluded.not_after,
                       updated_at = excluded.updated_at",
                    params![
                        cert.name,
                        cert.chain_pem,
                        cert.key_pem,
                        cert.not_after,
                        cert.updated_at
                    ],
                )?;
                bump_version(conn)?;
                Ok(())
            })
            .await
    }

    async fn delete_certificate(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| {
                let deleted =
                    conn.execute("DELETE FROM certificates WHERE name = ?1", params![name])? > 0;
                if deleted {
                    bump_version(conn)?;
                }
                Ok(deleted)
            })
            .await
    }
}

impl EmbeddedStore {
    /// The certificates' version (0: none ever stored).
    pub(crate) async fn certificates_version(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let value: Option<String> = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'certificates_version'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
        })
        .await
    }

    /// Every stored certificate, by name.
    pub(crate) async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, chain_pem, key_pem, not_after, updated_at FROM certificates
                 ORDER BY name",
            )?;
            let certs = stmt
                .query_map([], |row| {
                    Ok(StoredCertificate {
                        name: row.get(0)?,
                        chain_pem: row.get(1)?,
                        key_pem: row.get(2)?,
                        not_after: row.get(3)?,
                        updated_at: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(certs)
        })
        .await
    }
}
