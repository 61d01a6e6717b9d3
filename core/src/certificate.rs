//! TLS certificates kept in the store, so every proxy of a cluster serves the same ones.

/// A certificate chain and its private key as the store keeps them (PEM), under a name
/// (the first DNS name it covers). The names it serves and its expiry are read from the
/// certificate itself by whoever serves it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    /// The first DNS name the certificate covers, lower case: one certificate per name.
    pub name: String,
    /// The chain, end-entity certificate first (PEM).
    pub chain_pem: String,
    /// The private key (PEM). Never logged: `Debug` leaves it out.
    pub key_pem: String,
    /// When the certificate expires, Unix seconds.
    pub not_after: i64,
    /// When it was stored, Unix milliseconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("name", &self.name)
            .field("chain_pem", &format_args!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"[redacted]")
            .field("not_after", &self.not_after)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Where the automatic issuance (ACME) of one name's certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuanceState {
    /// An order is under way.
    Ordering,
    /// A certificate was issued and is served; it is renewed before it runs out.
    Issued,
    /// The last order failed (see `detail`); it is tried again at `next_attempt_at`.
    Failed,
}

/// The automatic issuance of one name's certificate, as every proxy and the API see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issuance {
    /// The DNS name (lower case).
    pub name: String,
    /// Where it stands.
    pub state: IssuanceState,
    /// Why it failed, in plain words (no secrets).
    pub detail: Option<String>,
    /// Failed orders since the last success.
    pub failures: u32,
    /// When the next order may start, Unix seconds.
    pub next_attempt_at: Option<i64>,
    /// When the issued certificate expires, Unix seconds.
    pub not_after: Option<i64>,
    /// When this record was written, Unix seconds.
    pub updated_at: i64,
}
