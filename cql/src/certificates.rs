//! TLS certificates on CQL: one row per name, and a version in `meta` written after
//! every put and delete (a fresh time-ordered id, so it differs from every earlier one).

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::StoredCertificate;
use shortlink_store::{CertificateStore, StoreError};

use crate::{CqlStore, Kind, ids};

#[derive(DeserializeRow)]
struct CertificateRow {
    name: String,
    chain_pem: Option<String>,
    key_pem: Option<String>,
    not_after: Option<i64>,
    updated_at: Option<i64>,
}

impl CqlStore {
    /// Moves the certificates' version on (after the row changed, so a proxy that sees the
    /// new version lists the new row).
    async fn bump_certificates_version(&self) -> Result<(), StoreError> {
        self.exec(
            "UPDATE {ks}.meta SET value = ? WHERE key = 'certificates_version'",
            Kind::Write,
            (ids::next_id().to_string(),),
        )
        .await?;
        Ok(())
    }

    /// The certificates' version (0: none ever stored).
    pub(crate) async fn certificates_version(&self) -> Result<u64, StoreError> {
        let row: Option<(Option<String>,)> = self
            .row(
                "SELECT value FROM {ks}.meta WHERE key = 'certificates_version'",
                (),
            )
            .await?;
        Ok(row.and_then(|(value,)| value?.parse().ok()).unwrap_or(0))
    }

    /// Every stored certificate, by name.
    pub(crate) async fn certificates(&self) -> Result<Vec<StoredCertificate>, StoreError> {
        let rows: Vec<CertificateRow> = self
            .rows(
                "SELECT name, chain_pem, key_pem, not_after, updated_at FROM {ks}.certificates",
                (),
            )
            .await?;
        let mut certs: Vec<StoredCertificate> = rows
            .into_iter()
            .map(|row| StoredCertificate {
                name: row.name,
                chain_pem: row.chain_pem.unwrap_or_default(),
                key_pem: row.key_pem.unwrap_or_default(),
                not_after: row.not_after.unwrap_or(0),
                updated_at: row.updated_at.unwrap_or(0),
            })
            .collect();
        certs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(certs)
    }
}

#[async_trait]
impl CertificateStore for CqlStore {
    async fn put_certificate(&self, cert: StoredCertificate) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO {ks}.certificates (name, chain_pem, key_pem, not_after, updated_at)
             VALUES (?, ?, ?, ?, ?)",
            Kind::Write,
            (
                &cert.name,
                &cert.chain_pem,
                &cert.key_pem,
                cert.not_after,
                cert.updated_at,
            ),
        )
        .await?;
        self.bump_certificates_version().await
    }

    async fn delete_certificate(&self, name: &str) -> Result<bool, StoreError> {
        let existed: Option<(String,)> = self
            .row("SELECT name FROM {ks}.certificates WHERE name = ?", (name,))
            .await?;
        if existed.is_none() {
            return Ok(false);
        }
        self.exec(
            "DELETE FROM {ks}.certificates WHERE name = ?",
            Kind::Write,
            (name,),
        )
        .await?;
        self.bump_certificates_version().await?;
        Ok(true)
    }
}
