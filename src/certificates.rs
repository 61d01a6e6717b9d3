//! `shortlink cert import|list|delete`: TLS certificates kept in the store, served by every
//! proxy that reads it (a proxy picks a change up within `proxy.tls.reload_seconds`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use shortlink_core::StoredCertificate;
use shortlink_core::time_util::{now_unix_ms, to_rfc3339};
use shortlink_proxy::tls::{ServedCertificate, provider};

use crate::commands::{open_store, small_runtime};
use crate::config::Config;

/// `shortlink cert import --cert FILE --key FILE`: checks the pair as a proxy would load
/// it, then stores it under its first DNS name (replacing the one stored there). An
/// imported certificate is the operator's: ACME stops managing its name.
pub(crate) fn import(config: Config, cert: &Path, key: &Path) -> Result<()> {
    let chain_pem =
        std::fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let key_pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let served = ServedCertificate::from_pem(
        chain_pem.as_bytes(),
        key_pem.as_bytes(),
        &cert.display().to_string(),
        &provider(),
    )?;
    let Some(name) = served.names.first().cloned() else {
        bail!("{} names no DNS name", cert.display());
    };
    let store = open_store(&config)?;
    small_runtime()?.block_on(async {
        store
            .put_certificate(StoredCertificate {
                name: name.clone(),
                chain_pem,
                key_pem,
                not_after: served.not_after,
                updated_at: now_unix_ms(),
            })
            .await?;
        store.delete_issuance(&name).await
    })?;
    println!(
        "stored the certificate for {} (expires {})",
        served.names.join(", "),
        to_rfc3339(served.not_after)
    );
    Ok(())
}

/// `shortlink cert list`: name, expiry and when it was stored (never the key).
pub(crate) fn list(config: Config) -> Result<()> {
    let store = open_store(&config)?;
    let certs = small_runtime()?.block_on(store.list_certificates())?;
    println!("{:<40} {:<24} stored", "name", "expires");
    for cert in certs {
        println!(
            "{:<40} {:<24} {}",
            cert.name,
            to_rfc3339(cert.not_after),
            to_rfc3339(cert.updated_at / 1000)
        );
    }
    Ok(())
}

/// `shortlink cert delete NAME`. With ACME on, a name it manages is ordered again at
/// its next check (its record goes with the certificate).
pub(crate) fn delete(config: Config, name: &str) -> Result<()> {
    let store = open_store(&config)?;
    let deleted = small_runtime()?.block_on(async {
        let deleted = store.delete_certificate(name).await?;
        store.delete_issuance(name).await?;
        Ok::<_, shortlink_store::StoreError>(deleted)
    })?;
    if !deleted {
        bail!("no certificate is stored under '{name}'");
    }
    println!("deleted the certificate stored under {name}");
    Ok(())
}
