//! Automatic certificates (ACME, RFC 8555) for the default domain and every registered
//! custom domain.
//!
//! [`AcmeManager`] runs in every proxy: each check it works out which names need a
//! certificate (none served, or a third of its lifetime or less left) and orders each from
//! the CA under a lease in the store, so one proxy of an installation orders a name at a
//! time. The answer to the CA's challenge is stored, so whichever proxy the CA reaches
//! answers it ([`AcmeAnswers`]); the certificate is stored like an imported one, so every
//! proxy serves it at its next reload. Where each name stands (and why an order failed)
//! is recorded in the store for the API and the metrics. A failed order is retried after a
//! wait that doubles with each failure, with jitter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_core::time_util::{now_unix, now_unix_ms};
use shortlink_core::{Issuance, IssuanceState, StoredCertificate};
use shortlink_store::{AcmeStore, StoreError};
use thiserror::Error;

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::domains::DomainSet;
use crate::metrics::TLS;
use crate::tls::{Certificates, ServedCertificate, provider};

/// The path prefix HTTP-01 challenges are fetched under.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Store key of an HTTP-01 answer (the key authorization) for `token`.
fn http01_key(token: &str) -> String {
    format!("http-01:{token}")
}

/// Store key of a TLS-ALPN-01 answer (certificate and key, PEM) for `name`.
fn tls_alpn01_key(name: &str) -> String {
    format!("tls-alpn-01:{name}")
}

/// Why an order failed: shown to operators in the API, so in plain words and without
/// secrets.
#[derive(Debug, Error)]
pub enum OrderError {
    /// The CA refused or failed a step; its own explanation.
    #[error("the CA said: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA could not validate the challenge: its explanation for the name.
    #[error("the CA could not validate {0}: {1}")]
    Invalid(String, String),
    /// The CA offered no challenge of the configured type.
    #[error("the CA offers no {0} challenge for this name")]
    NoChallenge(&'static str),
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// The issued certificate cannot be served.
    #[error("the issued certificate cannot be used: {0}")]
    Unusable(String),
    /// The order took longer than `order_timeout_seconds`.
    #[error("the order took longer than {0} s")]
    Timeout(u64),
}

/// Answers the CA's challenges from the store, on any proxy: HTTP-01 on the plain
/// listener, TLS-ALPN-01 in the TLS handshake.
pub struct AcmeAnswers {
    store: Arc<dyn AcmeStore>,
    /// The names certificates are ordered for: TLS-ALPN-01 answers are looked up for
    /// those only.
    domains: Arc<DomainSet>,
    /// Lookups under way: a flood of challenge requests cannot queue work on the store.
    in_flight: tokio::sync::Semaphore,
    /// TLS-ALPN-01 answers found in the last [`ALPN_CACHE`], by name (a miss is not
    /// kept: the answer may be stored the next moment, just before the CA checks).
    alpn_cache: std::sync::Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

/// Most challenge lookups one proxy runs at once.
const MAX_LOOKUPS: usize = 16;

/// How long a lookup waits for its turn before the request is answered 503 (HTTP-01) or
/// the handshake refused (TLS-ALPN-01).
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// How long a TLS-ALPN-01 lookup is reused.
const ALPN_CACHE: Duration = Duration::from_secs(1);

/// Longest token looked up (the CA's are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// What a challenge lookup found.
pub enum Answer<T> {
    /// The stored answer.
    Found(T),
    /// Nothing stored under it (or not a token at all).
    Missing,
    /// Too many lookups at once, or the store failed: try again.
    Busy,
}

impl AcmeAnswers {
    /// Answers from `store`, TLS-ALPN-01 ones for the names of `domains` only.
    pub fn new(store: Arc<dyn AcmeStore>, domains: Arc<DomainSet>) -> AcmeAnswers {
        AcmeAnswers {
            store,
            domains,
            in_flight: tokio::sync::Semaphore::new(MAX_LOOKUPS),
            alpn_cache: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The key authorization for the HTTP-01 `token` (the path after [`HTTP01_PREFIX`]).
    pub async fn http01(&self, token: &str) -> Answer<String> {
        let token_shaped = !token.is_empty()
            && token.len() <= MAX_TOKEN_LEN
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !token_shaped {
            return Answer::Missing;
        }
        let answer = self.lookup(&http01_key(token)).await;
        if let Answer::Found(_) = answer {
            TLS.acme_answers.with_label_values(&["http-01"]).inc();
        }
        answer
    }

    /// The TLS-ALPN-01 challenge certificate for `name`, as a server configuration that
    /// offers only `acme-tls/1`.
    pub async fn tls_alpn01(&self, name: &str) -> Answer<Arc<rustls::ServerConfig>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.domains.is_ours(&name) {
            return Answer::Missing;
        }
        let now = Instant::now();
        {
            let mut cache = self.alpn_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (at, _)| now.duration_since(*at) < ALPN_CACHE);
            if let Some((_, config)) = cache.get(&name) {
                return Answer::Found(config.clone());
            }
        }
        let answer = self.build_alpn01(&name).await;
        if let Answer::Found(config) = &answer {
            self.alpn_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, (now, config.clone()));
        }
        answer
    }

    async fn build_alpn01(&self, name: &str) -> Answer<Arc<rustls::ServerConfig>> {
        let pem = match self.lookup(&tls_alpn01_key(name)).await {
            Answer::Found(pem) => pem,
            Answer::Missing => return Answer::Missing,
            Answer::Busy => return Answer::Busy,
        };
        let provider = provider();
        let key = match alpn_certified_key(&pem, &provider) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(%error, "stored TLS-ALPN-01 answer not usable");
                return Answer::Missing;
            }
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map(|b| {
                b.with_no_client_auth()
                    .with_cert_resolver(Arc::new(OneCertificate(key)))
            });
        match config {
            Ok(mut config) => {
                config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
                TLS.acme_answers.with_label_values(&["tls-alpn-01"]).inc();
                Answer::Found(Arc::new(config))
            }
            Err(error) => {
                tracing::warn!(%error, "cannot configure the TLS-ALPN-01 answer");
                Answer::Missing
            }
        }
    }

    async fn lookup(&self, key: &str) -> Answer<String> {
        let Ok(Ok(_permit)) = tokio::time::timeout(LOOKUP_WAIT, self.in_flight.acquire()).await
        else {
            return Answer::Busy;
        };
        match self.store.acme_challenge(key, now_unix()).await {
            Ok(Some(value)) => Answer::Found(value),
            Ok(None) => Answer::Missing,
            Err(error) => {
                tracing::warn!(%error, "cannot read an ACME challenge answer");
                Answer::Busy
            }
        }
    }
}

/// Answers every handshake with one certificate.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Orders and renews certificates (see the module documentation).
pub struct AcmeManager {
    config: AcmeConfig,
    directory: String,
    store: Arc<dyn AcmeStore>,
    certs: Arc<Certificates>,
    default_host: String,
    /// This process's name on leases.
    holder: String,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Store keys of the HTTP-01 answers the order under way stored.
    tokens: tokio::sync::Mutex<Vec<String>>,
    /// The name being ordered and its failures so far, to give its lease back at
    /// shutdown.
    current: tokio::sync::Mutex<Option<(String, u32)>>,
    /// Certificates issued whose storing failed, by name: stored at the next attempt
    /// instead of ordering again.
    unsaved: tokio::sync::Mutex<HashMap<String, StoredCertificate>>,
}

/// A name no public CA issues for: no dot, or an IP address.
fn orderable(name: &str) -> bool {
    name.contains('.') && name.parse::<std::net::IpAddr>().is_err() && !name.ends_with(".localhost")
}

/// What a check knows about one name.
struct NameView<'a> {
    /// The validity (start, expiry) of the certificate served for it, from any source.
    served: Option<(i64, i64)>,
    /// A certificate is stored under the name with no issuance record: an operator's
    /// (`shortlink cert import`), never ordered over.
    imported: bool,
    /// Where its automatic issuance stands.
    record: Option<&'a Issuance>,
}

/// Whether `name` needs an order at `now`.
///
/// Not while a certificate with more than a third of its lifetime left is served for it
/// (from a file, an import or an earlier order), nor for an operator's import. Otherwise
/// by its record: none, order; issued, on that certificate's own renewal schedule (it may
/// not be loaded yet, or a certificate file may shadow it: ordering again would loop);
/// ordering, only once the record is older than `stale_after` (its proxy died);
/// failed, once the backoff has passed.
fn due(name: &str, view: &NameView<'_>, now: i64, stale_after: i64) -> bool {
    if let Some((not_before, not_after)) = view.served
        && renew_at(name, not_before, not_after) > now
    {
        return false;
    }
    let Some(record) = view.record else {
        return !view.imported;
    };
    match record.state {
        IssuanceState::Issued => record
            .not_after
            .is_none_or(|not_after| renew_at(name, record.updated_at, not_after) <= now),
        IssuanceState::Ordering => record.updated_at + stale_after <= now,
        IssuanceState::Failed => record.next_attempt_at.is_none_or(|at| at <= now),
    }
}

/// An issuance record for `name`, written now.
fn record(
    name: &str,
    state: IssuanceState,
    detail: Option<String>,
    failures: u32,
    next_attempt_at: Option<i64>,
    not_after: Option<i64>,
) -> Issuance {
    Issuance {
        name: name.to_owned(),
        state,
        detail,
        failures,
        next_attempt_at,
        not_after,
        updated_at: now_unix(),
    }
}

/// Sets `shortlink_acme_certificates{state}` from the records of the wanted names.
fn publish_states(records: &HashMap<String, Issuance>) {
    for (state, label) in [
        (IssuanceState::Ordering, "ordering"),
        (IssuanceState::Issued, "issued"),
        (IssuanceState::Failed, "failed"),
    ] {
        let count = records.values().filter(|r| r.state == state).count();
        TLS.acme_states
            .with_label_values(&[label])
            .set(count as i64);
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed: once a third of
/// its lifetime is left, less a jitter of up to a twentieth of it (the same for every
/// proxy, from the name), so many names issued together are not renewed together.
pub fn renew_at(name: &str, not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(1);
    let jitter_span = (lifetime / 20).max(1) as u64;
    let jitter = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % jitter_span;
    not_after - lifetime / 3 - jitter as i64
}

/// Seconds to wait after the `failures`th failed order in a row: `min` doubled per
/// failure, at most `max`, plus up to a fifth more at random.
fn retry_after(failures: u32, min: u64, max: u64) -> i64 {
    let base = min
        .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
        .min(max);
    let jitter = rand::random_range(0..=base / 5);
    (base + jitter) as i64
}

impl AcmeManager {
    /// A manager ordering from `config`'s directory (which must be set) for
    /// `default_host` and the store's domains, serving through `certs`.
    pub fn new(
        config: &AcmeConfig,
        store: Arc<dyn AcmeStore>,
        certs: Arc<Certificates>,
        default_host: &str,
    ) -> Option<AcmeManager> {
        let directory = config.directory_url()?.to_owned();
        Some(AcmeManager {
            config: config.clone(),
            directory,
            store,
            certs,
            default_host: default_host.to_owned(),
            holder: format!("{:016x}", rand::random::<u64>()),
            account: tokio::sync::Mutex::new(None),
            tokens: tokio::sync::Mutex::new(Vec::new()),
            current: tokio::sync::Mutex::new(None),
            unsaved: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The names that should have a certificate: the default domain and every registered
    /// domain a CA can issue for.
    async fn wanted(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self
            .store
            .list_domains()
            .await?
            .into_iter()
            .map(|d| d.name)
            .collect();
        names.push(self.default_host.clone());
        names.retain(|n| orderable(n));
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// One pass: orders every name that is due, one at a time (a name whose order cannot
    /// be recorded does not hold up the others).
    async fn check(&self) -> Result<(), StoreError> {
        let names = self.wanted().await?;
        let mut records: HashMap<String, Issuance> = self
            .store
            .list_issuances()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let stored: HashSet<String> = self
            .store
            .list_certificates()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        // Records of names no longer wanted (a deleted domain) go, unless its certificate
        // is still stored: registered again, the name is still ACME's, not an import.
        for gone in records
            .keys()
            .filter(|n| !names.contains(n) && !stored.contains(*n))
        {
            self.store.delete_issuance(gone).await?;
        }
        records.retain(|n, _| names.contains(n));
        publish_states(&records);
        let imported: HashSet<&String> = stored
            .iter()
            .filter(|n| !records.contains_key(*n))
            .collect();
        let now = now_unix();
        for name in names {
            let view = NameView {
                served: self.certs.validity(&name),
                imported: imported.contains(&name),
                record: records.get(&name),
            };
            if due(&name, &view, now, self.stale_after()) {
                let failures = view.record.map_or(0, |r| r.failures);
                if let Err(error) = self.issue(&name, failures).await {
                    tracing::warn!(name, %error, "cannot record an ACME order");
                }
            }
        }
        Ok(())
    }

    /// How long an `ordering` record stands before it counts as abandoned (its proxy
    /// died mid-order): the order's timeout, the lease's margin and a minute.
    fn stale_after(&self) -> i64 {
        self.config.order_timeout_seconds as i64 + 120
    }

    /// Orders `name` if this proxy gets its lease, and records the outcome.
    async fn issue(&self, name: &str, failures: u32) -> Result<(), StoreError> {
        let now = now_unix();
        let lease_until = now + self.stale_after();
        if !self
            .store
            .lease_acme_order(name, &self.holder, now, lease_until)
            .await?
        {
            return Ok(());
        }
        *self.current.lock().await = Some((name.to_owned(), failures));
        let outcome = self.issue_leased(name, failures).await;
        *self.current.lock().await = None;
        let released = self.store.release_acme_order(name, &self.holder).await;
        outcome.and(released)
    }

    async fn issue_leased(&self, name: &str, failures: u32) -> Result<(), StoreError> {
        // Another proxy may have finished it between this pass's read and the lease.
        if let Some(record) = self.store.issuance(name).await? {
            let view = NameView {
                served: self.certs.validity(name),
                imported: false,
                record: Some(&record),
            };
            if !due(name, &view, now_unix(), self.stale_after()) {
                return Ok(());
            }
        }
        self.store
            .put_issuance(record(
                name,
                IssuanceState::Ordering,
                None,
                failures,
                None,
                None,
            ))
            .await?;
        // A certificate issued earlier whose storing failed is stored now, not ordered
        // again.
        let unsaved = self.unsaved.lock().await.remove(name);
        let outcome = match unsaved {
            Some(issued) => Ok(issued),
            None => {
                let timeout = self.config.order_timeout_seconds;
                let ordered = tokio::time::timeout(Duration::from_secs(timeout), self.order(name));
                let outcome = ordered.await.unwrap_or(Err(OrderError::Timeout(timeout)));
                self.clear_challenges(name).await;
                if outcome.is_ok() {
                    TLS.acme_orders.with_label_values(&["issued"]).inc();
                }
                outcome
            }
        };
        match outcome {
            Ok(issued) => {
                // An operator who imported a certificate for the name meanwhile (which
                // dropped the record) keeps it.
                let still_ours = self
                    .store
                    .issuance(name)
                    .await?
                    .is_some_and(|r| r.state == IssuanceState::Ordering);
                if !still_ours {
                    tracing::info!(
                        name,
                        "ACME certificate discarded: the name was imported meanwhile"
                    );
                    return Ok(());
                }
                let not_after = issued.not_after;
                let stored = self.store.put_certificate(issued.clone()).await;
                let recorded = match stored {
                    Ok(()) => {
                        self.store
                            .put_issuance(record(
                                name,
                                IssuanceState::Issued,
                                None,
                                0,
                                None,
                                Some(not_after),
                            ))
                            .await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = recorded {
                    // Kept to store at the next attempt: a CA counts duplicate orders.
                    self.unsaved.lock().await.insert(name.to_owned(), issued);
                    self.record_failure(
                        name,
                        failures,
                        &format!("storing the certificate failed: {error}"),
                    )
                    .await;
                    return Err(error);
                }
                tracing::info!(name, not_after, "certificate issued by ACME");
                Ok(())
            }
            Err(error) => {
                TLS.acme_orders.with_label_values(&["failed"]).inc();
                self.record_failure(name, failures, &error.to_string())
                    .await;
                Ok(())
            }
        }
    }

    /// Records a failed attempt and when the next may start (best effort: a store that
    /// fails here leaves an `ordering` record, which ages out).
    async fn record_failure(&self, name: &str, failures: u32, why: &str) {
        let failures = failures + 1;
        let wait = retry_after(
            failures,
            self.config.retry_min_seconds,
            self.config.retry_max_seconds,
        );
        tracing::warn!(
            name,
            error = why,
            failures,
            retry_in_seconds = wait,
            "ACME order failed"
        );
        let failed = record(
            name,
            IssuanceState::Failed,
            Some(why.to_owned()),
            failures,
            Some(now_unix() + wait),
            None,
        );
        if let Err(error) = self.store.put_issuance(failed).await {
            tracing::warn!(name, %error, "cannot record a failed ACME order");
        }
    }

    /// Removes what this order stored for the CA (the challenge answers).
    async fn clear_challenges(&self, name: &str) {
        let mut tokens = self.tokens.lock().await;
        let keys = std::mem::take(&mut *tokens)
            .into_iter()
            .chain([tls_alpn01_key(name)]);
        for key in keys {
            if let Err(error) = self.store.delete_acme_challenge(&key).await {
                tracing::warn!(%error, "cannot remove an ACME challenge answer");
            }
        }
    }

    /// At shutdown mid-order: the challenge answers and the lease go, and the record
    /// says the order may start again at once (on another proxy, or this one restarted).
    async fn give_back(&self) {
        let Some((name, failures)) = self.current.lock().await.take() else {
            return;
        };
        self.clear_challenges(&name).await;
        let interrupted = record(
            &name,
            IssuanceState::Failed,
            Some("the order was interrupted by a shutdown".into()),
            failures,
            Some(now_unix()),
            None,
        );
        if let Err(error) = self.store.put_issuance(interrupted).await {
            tracing::warn!(name, %error, "cannot record an interrupted ACME order");
        }
        if let Err(error) = self.store.release_acme_order(&name, &self.holder).await {
            tracing::warn!(name, %error, "cannot give back an ACME lease");
        }
    }

    /// The ACME account: the stored one for this directory, else a new one (stored).
    async fn account(&self) -> Result<Account, OrderError> {
        let mut cached = self.account.lock().await;
        if let Some(account) = &*cached {
            return Ok(account.clone());
        }
        let builder = || match &self.config.directory_ca {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        };
        let account = match self.store.acme_account(&self.directory).await? {
            Some(json) => {
                let credentials = serde_json::from_str(&json)
                    .map_err(|e| OrderError::Acme(instant_acme::Error::Json(e)))?;
                builder()?.from_credentials(credentials).await?
            }
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.directory.clone(),
                        None,
                    )
                    .await?;
                let json = serde_json::to_string(&credentials)
                    .map_err(|e| OrderError::Acme(instant_acme::Error::Json(e)))?;
                self.store.put_acme_account(&self.directory, &json).await?;
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// One order for `name`: challenges answered through the store, then the key, the
    /// CSR and the chain: the certificate to store.
    async fn order(&self, name: &str) -> Result<StoredCertificate, OrderError> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let expires = now_unix() + self.config.order_timeout_seconds as i64 + 60;
        let (kind, label) = match self.config.challenge {
            AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
            AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or(OrderError::NoChallenge(label))?;
            let key_authorization = challenge.key_authorization();
            match self.config.challenge {
                AcmeChallenge::Http01 => {
                    let key = http01_key(&challenge.token);
                    self.store
                        .put_acme_challenge(&key, key_authorization.as_str(), expires)
                        .await?;
                    self.tokens.lock().await.push(key);
                }
                AcmeChallenge::TlsAlpn01 => {
                    let pem = alpn_certificate(name, key_authorization.digest().as_ref())?;
                    self.store
                        .put_acme_challenge(&tls_alpn01_key(name), &pem, expires)
                        .await?;
                }
            }
            challenge.set_ready().await?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(self.config.order_timeout_seconds));
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(self.why_invalid(name, &mut order).await);
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&retries).await?;
        let served = ServedCertificate::from_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            "the issued certificate",
            &provider(),
        )
        .map_err(|e| OrderError::Unusable(e.to_string()))?;
        Ok(StoredCertificate {
            name: name.to_owned(),
            chain_pem,
            key_pem,
            not_after: served.not_after,
            updated_at: now_unix_ms(),
        })
    }

    /// The CA's explanation of a failed validation, from the authorization's challenges.
    async fn why_invalid(&self, name: &str, order: &mut instant_acme::Order) -> OrderError {
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            if let Ok(state) = authz.refresh().await
                && let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref())
            {
                let detail = problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.to_string());
                return OrderError::Invalid(name.to_owned(), detail);
            }
        }
        OrderError::Invalid(name.to_owned(), "the order became invalid".into())
    }
}

/// The self-signed certificate a TLS-ALPN-01 challenge is answered with (RFC 8737 §3):
/// `name` as its only subject alternative name and the key authorization's digest in a
/// critical acmeIdentifier extension. Returns the certificate and key, PEM, together.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<String, OrderError> {
    let unusable = |e: rcgen::Error| OrderError::Unusable(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(unusable)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(unusable)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(unusable)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// The certificate and key of a stored TLS-ALPN-01 answer, ready to sign with. Not
/// checked against each other as served certificates are: that check parses the
/// certificate as a client would, and refuses its critical acmeIdentifier extension.
fn alpn_certified_key(
    pem: &str,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signer)))
}

#[async_trait]
impl BackgroundService for AcmeManager {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let every = Duration::from_secs(self.config.check_seconds);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.give_back().await;
                    return;
                }
                result = self.check() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "ACME check failed; retried at the next one");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_with_a_third_of_the_lifetime_left_less_a_small_jitter() {
        let (start, end) = (1_000_000, 1_000_000 + 90 * 86_400);
        let at = renew_at("a.example", start, end);
        let third = 30 * 86_400;
        assert!(at <= end - third, "{at}");
        assert!(at > end - third - 90 * 86_400 / 20, "{at}");
        assert_eq!(
            at,
            renew_at("a.example", start, end),
            "the same on every proxy"
        );
    }

    fn issued(at: i64, not_after: i64) -> Issuance {
        Issuance {
            name: "go.example.com".into(),
            state: IssuanceState::Issued,
            detail: None,
            failures: 0,
            next_attempt_at: None,
            not_after: Some(not_after),
            updated_at: at,
        }
    }

    #[test]
    fn a_name_is_ordered_only_when_nothing_fresh_covers_it_and_its_record_allows() {
        let name = "go.example.com";
        let (day, stale) = (86_400, 300);
        let now = 1_000 * day;
        fn view(
            served: Option<(i64, i64)>,
            imported: bool,
            record: Option<&Issuance>,
        ) -> NameView<'_> {
            NameView {
                served,
                imported,
                record,
            }
        }
        // Nothing known: ordered. An operator's import: never.
        assert!(due(name, &view(None, false, None), now, stale));
        assert!(!due(name, &view(None, true, None), now, stale));
        assert!(!due(
            name,
            &view(Some((now - 80 * day, now + day)), true, None),
            now,
            stale
        ));
        // A fresh certificate served (from any source): not ordered.
        assert!(!due(
            name,
            &view(Some((now - day, now + 89 * day)), false, None),
            now,
            stale
        ));
        // Ours, with less than a third left: renewed.
        let old = issued(now - 70 * day, now + 20 * day);
        assert!(due(
            name,
            &view(Some((now - 70 * day, now + 20 * day)), false, Some(&old)),
            now,
            stale
        ));
        // Issued a moment ago but not loaded yet, or shadowed by an expiring file: not
        // ordered again (that would loop) until its own renewal time.
        let fresh = issued(now - 10, now + 90 * day);
        assert!(!due(name, &view(None, false, Some(&fresh)), now, stale));
        assert!(!due(
            name,
            &view(Some((now - 80 * day, now + day)), false, Some(&fresh)),
            now,
            stale
        ));
        // An order under way: left alone until its record is stale (its proxy died).
        let mut ordering = issued(now - 10, 0);
        ordering.state = IssuanceState::Ordering;
        assert!(!due(name, &view(None, false, Some(&ordering)), now, stale));
        ordering.updated_at = now - stale;
        assert!(due(name, &view(None, false, Some(&ordering)), now, stale));
        // A failure: after its backoff.
        let mut failed = issued(now - 10, 0);
        failed.state = IssuanceState::Failed;
        failed.next_attempt_at = Some(now + 60);
        assert!(!due(name, &view(None, false, Some(&failed)), now, stale));
        failed.next_attempt_at = Some(now);
        assert!(due(name, &view(None, false, Some(&failed)), now, stale));
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        for failures in 1..40 {
            let wait = retry_after(failures, 300, 86_400);
            let base = (300u64 << (failures - 1).min(30)).min(86_400) as i64;
            assert!(
                (base..=base + base / 5).contains(&wait),
                "{failures}: {wait}"
            );
        }
    }

    #[test]
    fn names_no_ca_issues_for_are_not_ordered() {
        assert!(orderable("go.example.com"));
        assert!(!orderable("localhost"));
        assert!(!orderable("127.0.0.1"));
        assert!(!orderable("app.localhost"));
    }

    #[test]
    fn the_alpn_certificate_names_the_domain_and_carries_the_digest() {
        use rustls_pki_types::pem::PemObject;
        let pem = alpn_certificate("go.example.com", &[7u8; 32]).unwrap();
        alpn_certified_key(&pem, &provider()).unwrap();
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
        assert!(format!("{:?}", san.value.general_names[0]).contains("go.example.com"));
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&[7u8; 32]));
    }
}
