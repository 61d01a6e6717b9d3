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
