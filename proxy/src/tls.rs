//! TLS at the edge: the certificates the proxy serves, chosen by SNI ([`Certificates`]),
//! the rustls server configuration built on them ([`TlsEdge`]), and a TLS connection as
//! pingora's stream type ([`TlsConn`]) for the requests pingora answers.
//!
//! Certificates come from PEM files named in `proxy.tls.certificates` (re-read when they
//! change, [`CertificateReload`]); the names a certificate serves are those it lists
//! (subject alternative names, wildcards included), so configuration never repeats them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use shortlink_store::RouteSource;

use crate::acme::{ACME_TLS_ALPN, AcmeAnswers, Answer};
use crate::config::{CertificateFiles, TlsConfig};
use crate::domains::DomainSet;
use crate::metrics::TLS;

/// Why a certificate could not be used.
#[derive(Debug, Error)]
pub enum CertificateError {
    /// A file cannot be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// The chain holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// The chain's PEM is malformed.
    #[error("{0} is not a PEM certificate chain: {1}")]
    BadChain(String, String),
    /// The key's PEM is malformed or holds no key.
    #[error("{0} holds no usable PEM private key: {1}")]
    BadKey(String, String),
    /// The key does not sign for the certificate, or its algorithm is not supported.
    #[error("the key in {0} does not match its certificate or cannot sign: {1}")]
    KeyMismatch(String, String),
    /// The certificate cannot be parsed, or names no DNS name.
    #[error("the certificate in {0} cannot be used: {1}")]
    BadCertificate(String, String),
}

/// A certificate ready to serve: the chain and signing key, the names it is valid for
/// (lower case, wildcards as `*.example.com`) and when it expires.
#[derive(Debug)]
pub struct ServedCertificate {
    /// The chain and key rustls sends and signs with.
    pub key: Arc<CertifiedKey>,
    /// DNS names from the certificate's subject alternative names.
    pub names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// The crypto provider the edge uses: aws-lc-rs (the one the rest of the process links).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl ServedCertificate {
    /// Reads a PEM chain (end-entity first) and a PEM private key; `origin` names them in
    /// errors (a path, or a store entry).
    pub fn from_pem(
        chain: &[u8],
        key: &[u8],
        origin: &str,
        provider: &CryptoProvider,
    ) -> Result<ServedCertificate, CertificateError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| CertificateError::BadChain(origin.to_owned(), e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::NoCertificate(origin.to_owned()));
        };
        let (names, not_before, not_after) = names_and_validity(leaf)
            .map_err(|e| CertificateError::BadCertificate(origin.to_owned(), e))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| CertificateError::BadKey(origin.to_owned(), e.to_string()))?;
        let key = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| CertificateError::KeyMismatch(origin.to_owned(), e.to_string()))?;
        Ok(ServedCertificate {
            key: Arc::new(key),
            names,
            not_before,
            not_after,
        })
    }

    /// Reads the chain and key files of `files`.
    pub fn from_files(
        files: &CertificateFiles,
        provider: &CryptoProvider,
    ) -> Result<ServedCertificate, CertificateError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| CertificateError::Read(path.display().to_string(), e))
        };
        let chain = read(&files.cert)?;
        let key = read(&files.key)?;
        ServedCertificate::from_pem(&chain, &key, &files.cert.display().to_string(), provider)
    }
}

/// The DNS names (subject alternative names, lower case) and validity (start and expiry,
/// Unix seconds) of a certificate.
fn names_and_validity(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err("it names no DNS name (subject alternative name)".into());
    }
    let validity = cert.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// The certificates the proxy serves, by name: what the TLS handshake's SNI picks from.
/// Replaced whole when a source changes; a handshake reads it with one atomic load.
#[derive(Debug)]
pub struct Certificates {
    table: ArcSwap<NameTable>,
    /// The default domain, whose certificate answers clients that send no SNI.
    default_host: Box<str>,
}

/// One immutable version of the served certificates.
#[derive(Debug, Default)]
struct NameTable {
    /// Exact names and wildcards (`*.example.com`), lower case.
    by_name: HashMap<Box<str>, Arc<ServedCertificate>>,
    /// For a handshake without SNI (or naming nothing served): the default domain's
    /// certificate, else the first loaded.
    fallback: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    /// No certificates yet; `default_host` is the public URL's host.
    pub fn new(default_host: &str) -> Certificates {
        Certificates {
            table: ArcSwap::from_pointee(NameTable::default()),
            default_host: default_host.to_ascii_lowercase().into_boxed_str(),
        }
    }

    /// Serves exactly `certs` from now on (an earlier one wins a name two list) and
    /// updates the certificate metrics.
    pub fn replace(&self, certs: &[Arc<ServedCertificate>]) {
        let mut table = NameTable::default();
        for cert in certs {
            for name in &cert.names {
                table
                    .by_name
                    .entry(name.clone().into_boxed_str())
                    .or_insert_with(|| cert.clone());
            }
        }
        table.fallback = lookup(&table.by_name, &self.default_host)
            .or_else(|| certs.first())
            .map(|c| c.key.clone());
        TLS.certificates.set(certs.len() as i64);
        TLS.soonest_expiry
            .set(certs.iter().map(|c| c.not_after).min().unwrap_or(0) as f64);
        self.table.store(Arc::new(table));
    }

    /// Whether a certificate serves `host` (lower case, no port).
    pub fn covers(&self, host: &str) -> bool {
        lookup(&self.table.load().by_name, host).is_some()
    }

    /// The validity (start, expiry; Unix seconds) of the certificate served for `name`.
    pub fn validity(&self, name: &str) -> Option<(i64, i64)> {
        lookup(&self.table.load().by_name, name).map(|c| (c.not_before, c.not_after))
    }
}

/// The certificate for `name`: an exact entry, else a wildcard one level up.
fn lookup<'t>(
    by_name: &'t HashMap<Box<str>, Arc<ServedCertificate>>,
    name: &str,
) -> Option<&'t Arc<ServedCertificate>> {
    if let Some(cert) = by_name.get(name) {
        return Some(cert);
    }
    let (_, parent) = name.split_once('.')?;
    let mut wildcard = String::with_capacity(parent.len() + 2);
    wildcard.push_str("*.");
    wildcard.push_str(parent);
    by_name.get(wildcard.as_str())
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        match hello.server_name() {
            Some(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                lookup(&table.by_name, &name)
                    .map(|c| c.key.clone())
                    .or_else(|| table.fallback.clone())
            }
            None => table.fallback.clone(),
        }
    }
}

/// The TLS side of the proxy's TLS listener: the rustls configuration and its limits.
pub struct TlsEdge {
    config: Arc<rustls::ServerConfig>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// TLS-ALPN-01 answers, when ACME uses that challenge: the ClientHello is read first
    /// to see whether it asks for `acme-tls/1`.
    acme: Option<Arc<AcmeAnswers>>,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsEdge {
    /// TLS 1.3 and 1.2 (or 1.3 only), ALPN `h2` (when `http2`) and `http/1.1`,
    /// certificates by SNI from `certs`, stateless session tickets for resumption.
    pub fn new(
        config: &TlsConfig,
        certs: Arc<Certificates>,
        provider: Arc<CryptoProvider>,
    ) -> Result<TlsEdge, TlsSetupError> {
        let versions: &[&rustls::SupportedProtocolVersion] = if config.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        server.alpn_protocols = if config.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        // Resumption without a shared cache: tickets any thread can open.
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        // No 0-RTT: early data can be replayed.
        server.max_early_data_size = 0;
        let server = Arc::new(server);
        Ok(TlsEdge {
            acceptor: tokio_rustls::TlsAcceptor::from(server.clone()),
            config: server,
            handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            acme: None,
        })
    }

    /// Answers TLS-ALPN-01 challenges from `answers`.
    pub fn with_acme_answers(mut self, answers: Arc<AcmeAnswers>) -> TlsEdge {
        self.acme = Some(answers);
        self
    }

    /// Runs the server side of the handshake on `tcp`, within the handshake deadline;
    /// `None` when it failed, or when it answered an ACME challenge (nothing follows).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let handshake = async {
            match &self.acme {
                None => self.acceptor.accept(tcp).await.map(Some),
                Some(answers) => self.accept_or_answer(tcp, answers).await,
            }
        };
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(Some(tls))) => {
                TLS.handshakes.with_label_values(&["ok"]).inc();
                Some(tls)
            }
            Ok(Ok(None)) => {
                TLS.handshakes.with_label_values(&["acme_challenge"]).inc();
                None
            }
            Ok(Err(_)) => {
                TLS.handshakes.with_label_values(&["failed"]).inc();
                None
            }
            Err(_) => {
                TLS.handshakes.with_label_values(&["timeout"]).inc();
                None
            }
        }
    }
}

impl TlsEdge {
    /// The handshake when TLS-ALPN-01 is answered: a ClientHello offering `acme-tls/1`
    /// gets the stored challenge certificate for its name (and the connection ends after
    /// the handshake, RFC 8737 §3); any other goes on as usual.
    async fn accept_or_answer(
        &self,
        tcp: TcpStream,
        answers: &AcmeAnswers,
    ) -> std::io::Result<Option<tokio_rustls::server::TlsStream<TcpStream>>> {
        use tokio::io::AsyncWriteExt;
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let hello = start.client_hello();
        let challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !challenge {
            return start.into_stream(self.config.clone()).await.map(Some);
        }
        let refused = || std::io::Error::other("no ACME challenge answer for this name");
        let name = hello.server_name().ok_or_else(refused)?.to_owned();
        match answers.tls_alpn01(&name).await {
            Answer::Found(config) => {
                let mut tls = start.into_stream(config).await?;
                let _ = tls.shutdown().await;
                Ok(None)
            }
            Answer::Missing | Answer::Busy => Err(refused()),
        }
    }
}

/// Whether a finished handshake chose HTTP/2.
pub fn negotiated_h2(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// A TLS connection as pingora's stream type, for the requests pingora answers (and the
/// HTTP/2 connections it serves): the client's address and the TLS parameters as pingora's
/// own TLS listener would record them.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    socket: Arc<SocketDigest>,
    ssl: Arc<SslDigest>,
    alpn: Option<ALPN>,
    /// Until the first bytes arrive: when the client must have sent them.
    first_read: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl TlsConn {
    /// Wraps a finished handshake; `socket` is the connection's socket digest.
    pub fn new(inner: tokio_rustls::server::TlsStream<TcpStream>, socket: SocketDigest) -> TlsConn {
        let session = inner.get_ref().1;
        let version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = session
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown");
        let alpn = match session.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        TlsConn {
            ssl: Arc::new(SslDigest::new(cipher, version, None, None, Vec::new())),
            socket: Arc::new(socket),
            inner,
            alpn,
            first_read: None,
        }
    }

    /// Fails reads with `TimedOut` if the client sends nothing within `limit` (an HTTP/2
    /// client's preface: pingora's h2 server waits for it without a deadline).
    pub fn with_first_read_deadline(mut self, limit: Duration) -> TlsConn {
        self.first_read = Some(Box::pin(tokio::time::sleep(limit)));
        self
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("peer", &self.socket.peer_addr())
            .finish()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let Some(deadline) = self.first_read.as_mut() else {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if deadline.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        let read = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.first_read = None;
        }
        read
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TlsConn {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        use std::os::fd::AsRawFd;
        self.inner.get_ref().0.as_raw_fd()
    }
}

impl Ssl for TlsConn {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.ssl.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for TlsConn {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket.clone())
    }
}

impl Peek for TlsConn {}

/// A file's identity for change detection: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Keeps the served certificates current: re-reads the certificate files when they change
/// and the store's certificates when their version moves (both checked every `every`), so
/// a renewed certificate is served without a restart. A file or stored certificate that
/// fails to load keeps what was served before it (logged and counted). A file's
/// certificate wins a name over a stored one.
pub struct CertificateReload {
    certs: Arc<Certificates>,
    files: Vec<CertificateFiles>,
    store: Option<Arc<dyn RouteSource>>,
    provider: Arc<CryptoProvider>,
    every: Duration,
    /// Each file pair's stamps and what was loaded from it.
    loaded: std::sync::Mutex<Vec<(Stamp, Stamp, Arc<ServedCertificate>)>>,
    /// The store's certificates version last read, and what was loaded at it.
    stored: std::sync::Mutex<(Option<u64>, ByName)>,
    /// Checks of the store so far: every [`RELIST_EVERY`]th lists the certificates even
    /// if the version did not move.
    store_checks: std::sync::atomic::AtomicU32,
}

/// How often (in checks) the store's certificates are listed whatever their version says:
/// where the version and a row are replicated apart (CQL across datacenters), a proxy that
/// read the new version before the row still catches up (5 minutes at the default 10 s).
const RELIST_EVERY: u32 = 30;

/// Certificates loaded from the store, by their stored name.
type ByName = HashMap<String, Arc<ServedCertificate>>;

impl CertificateReload {
    /// Loads every file pair now (a failure is the caller's start-up error) and serves
    /// them from `certs`; the store's certificates (`store`) follow at the first check.
    pub fn load(
        certs: Arc<Certificates>,
        files: &[CertificateFiles],
        store: Option<Arc<dyn RouteSource>>,
        provider: Arc<CryptoProvider>,
        every: Duration,
    ) -> Result<CertificateReload, CertificateError> {
        let mut loaded = Vec::with_capacity(files.len());
        for pair in files {
            let (cert_stamp, key_stamp) = (stamp(&pair.cert), stamp(&pair.key));
            let served = ServedCertificate::from_files(pair, &provider)?;
            loaded.push((cert_stamp, key_stamp, Arc::new(served)));
        }
        let reload = CertificateReload {
            certs,
            files: files.to_vec(),
            store,
            provider,
            every,
            loaded: std::sync::Mutex::new(loaded),
            stored: std::sync::Mutex::new((None, HashMap::new())),
            store_checks: std::sync::atomic::AtomicU32::new(0),
        };
        reload.publish();
        Ok(reload)
    }

    fn publish(&self) {
        let mut served: Vec<Arc<ServedCertificate>> = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, _, cert)| cert.clone())
            .collect();
        let stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = stored.1.keys().collect();
        names.sort();
        served.extend(names.into_iter().map(|name| stored.1[name].clone()));
        drop(stored);
        self.certs.replace(&served);
    }

    /// Reloads the file pairs whose files changed; returns whether any did.
    fn check_files(&self) -> bool {
        let mut changed = false;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        for (pair, (cert_stamp, key_stamp, served)) in self.files.iter().zip(loaded.iter_mut()) {
            let now = (stamp(&pair.cert), stamp(&pair.key));
            if now == (*cert_stamp, *key_stamp) {
                continue;
            }
            // A renewal writes two files: wait until both are readable and match.
            match ServedCertificate::from_files(pair, &self.provider) {
                Ok(fresh) => {
                    tracing::info!(file = %pair.cert.display(), names = ?fresh.names, "certificate reloaded");
                    *served = Arc::new(fresh);
                    changed = true;
                }
                Err(error) => {
                    TLS.reload_failures.inc();
                    tracing::warn!(%error, "certificate not reloaded; the one loaded before is still served");
                }
            }
            (*cert_stamp, *key_stamp) = now;
        }
        changed
    }

    /// Reloads the store's certificates if their version moved; returns whether it did.
    /// A store that does not answer keeps what was loaded (the next check retries).
    async fn check_store(&self) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let version = match store.certificates_version().await {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored certificates' version");
                return false;
            }
        };
        let before = self.stored.lock().unwrap_or_else(|e| e.into_inner()).0;
        let checks = self
            .store_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if before == Some(version) && !(checks + 1).is_multiple_of(RELIST_EVERY) {
            return false;
        }
        let listed = match store.list_certificates().await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored certificates");
                return false;
            }
        };
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = HashMap::with_capacity(listed.len());
        for cert in listed {
            let origin = format!("the stored certificate '{}'", cert.name);
            match ServedCertificate::from_pem(
                cert.chain_pem.as_bytes(),
                cert.key_pem.as_bytes(),
                &origin,
                &self.provider,
            ) {
                Ok(served) => {
                    fresh.insert(cert.name, Arc::new(served));
                }
                Err(error) => {
                    TLS.reload_failures.inc();
                    tracing::warn!(%error, "stored certificate not loaded");
                    // Keep serving what this name had, if anything.
                    if let Some(old) = stored.1.get(&cert.name) {
                        fresh.insert(cert.name, old.clone());
                    }
                }
            }
        }
        *stored = (Some(version), fresh);
        true
    }
}

#[async_trait]
impl BackgroundService for CertificateReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The store's certificates at once, then both sources every `every`.
        if self.check_store().await {
            self.publish();
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(self.every) => {
                    // File reads are small and rare; no need for the blocking pool.
                    let files = self.check_files();
                    let stored = self.check_store().await;
                    if files || stored {
                        self.publish();
                    }
                }
            }
        }
    }
}

/// What HTTPS changes on the request path: the plain port's redirect to `https://` for
/// hosts with a certificate, and HSTS on answers sent over TLS.
pub struct HttpsPolicy {
    /// The served certificates (which hosts HTTPS covers).
    pub certs: Arc<Certificates>,
    /// The registered domains, with their own HTTPS behaviour.
    pub domains: Arc<DomainSet>,
    /// Redirect plain-HTTP requests for covered hosts (308), unless a domain says
    /// otherwise.
    pub redirect_http: bool,
    /// The port `https://` URLs name (`None`: 443).
    pub url_port: Option<u16>,
    /// The `Strict-Transport-Security` value, if sent (unless a domain says otherwise).
    pub hsts: Option<HeaderValue>,
    /// Add `includeSubDomains` to a domain's own HSTS value too.
    pub hsts_include_subdomains: bool,
}

impl HttpsPolicy {
    /// Where a plain-HTTP request should go instead: its `https://` URL, when redirecting
    /// is on and a certificate covers its host (`host`, the `Host` header as sent).
    /// ACME's HTTP-01 challenges stay on plain HTTP, as the protocol requires.
    pub fn upgrade_location(&self, host: &[u8], path_and_query: &str) -> Option<HeaderValue> {
        if (!self.redirect_http && !self.domains.has_own_https())
            || path_and_query.starts_with("/.well-known/acme-challenge/")
        {
            return None;
        }
        let name = host_name(host)?;
        let redirect = self
            .domains
            .own_https(&name)
            .and_then(|h| h.redirect_http)
            .unwrap_or(self.redirect_http);
        if !redirect || !self.certs.covers(&name) {
            return None;
        }
        let location = match self.url_port {
            Some(port) => format!("https://{name}:{port}{path_and_query}"),
            None => format!("https://{name}{path_and_query}"),
        };
        HeaderValue::from_str(&location).ok()
    }

    /// The `Strict-Transport-Security` value for an HTTPS request to `host` (the `Host`
    /// header as sent): its domain's own, else the installation's.
    pub fn hsts_for(&self, host: Option<&[u8]>) -> Option<HeaderValue> {
        if !self.domains.has_own_https() {
            return self.hsts.clone();
        }
        let own = host
            .and_then(host_name)
            .and_then(|name| self.domains.own_https(&name))
            .and_then(|h| h.hsts_max_age_seconds);
        match own {
            None => self.hsts.clone(),
            Some(0) => None,
            Some(max_age) => {
                let subdomains = if self.hsts_include_subdomains {
                    "; includeSubDomains"
                } else {
                    ""
                };
                HeaderValue::from_str(&format!("max-age={max_age}{subdomains}")).ok()
            }
        }
    }

    /// The pingora module that adds HSTS (a domain may turn it on of its own).
    pub fn hsts_module(&self) -> pingora::modules::http::ModuleBuilder {
        Box::new(HstsBuilder)
    }
}

/// A `Host` header's name: lower case, without the port and a trailing dot (an IPv6
/// literal, `[::1]:8080`, has no certificate anyway).
fn host_name(host: &[u8]) -> Option<String> {
    let host = std::str::from_utf8(host).ok()?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// Builds each request's [`Hsts`] module.
struct HstsBuilder;

impl pingora::modules::http::HttpModuleBuilder for HstsBuilder {
    fn init(&self) -> pingora::modules::http::Module {
        Box::new(Hsts { value: None })
    }
}

/// Adds `Strict-Transport-Security` to every answer pingora sends for a request that came
/// over TLS (redirects, the proxy's own pages, forwarded answers, pingora's error pages).
/// `request_filter` marks the request secure with the value for its host
/// ([`Hsts::mark_secure`]).
pub struct Hsts {
    value: Option<HeaderValue>,
}

impl Hsts {
    /// Marks the request as received over TLS: its answer carries `value`, if any.
    pub fn mark_secure(&mut self, value: Option<HeaderValue>) {
        self.value = value;
    }
}

#[async_trait]
impl pingora::modules::http::HttpModule for Hsts {
    async fn response_header_filter(
        &mut self,
        resp: &mut pingora::http::ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        if let Some(value) = &self.value {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, value.clone())?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` (PEM chain, PEM key).
    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served(names: &[&str]) -> Arc<ServedCertificate> {
        let (chain, key) = self_signed(names);
        Arc::new(
            ServedCertificate::from_pem(chain.as_bytes(), key.as_bytes(), "test", &provider())
                .unwrap(),
        )
    }

    #[test]
    fn names_are_matched_exactly_or_by_a_wildcard_one_level_deep() {
        let certs = Certificates::new("sho.rt");
        certs.replace(&[served(&["sho.rt"]), served(&["*.Brand.test"])]);
        assert!(certs.covers("sho.rt"));
        assert!(certs.covers("go.brand.test"));
        assert!(!certs.covers("brand.test"));
        assert!(!certs.covers("a.go.brand.test"));
        assert!(!certs.covers("other.test"));
    }

    #[test]
    fn unusable_certificates_are_refused_with_the_reason() {
        let (chain, _) = self_signed(&["sho.rt"]);
        let (_, other_key) = self_signed(&["sho.rt"]);
        let mismatch = ServedCertificate::from_pem(
            chain.as_bytes(),
            other_key.as_bytes(),
            "a.pem",
            &provider(),
        );
        assert!(
            matches!(mismatch, Err(CertificateError::KeyMismatch(..))),
            "{mismatch:?}"
        );
        let (_, key) = self_signed(&["sho.rt"]);
        let empty = ServedCertificate::from_pem(b"", key.as_bytes(), "b.pem", &provider());
        assert!(
            matches!(empty, Err(CertificateError::NoCertificate(_))),
            "{empty:?}"
        );
        let (chain, key) = self_signed(&[]);
        let nameless =
            ServedCertificate::from_pem(chain.as_bytes(), key.as_bytes(), "c.pem", &provider());
        assert!(
            matches!(nameless, Err(CertificateError::BadCertificate(..))),
            "{nameless:?}"
        );
    }

    #[test]
    fn plain_requests_are_sent_to_https_only_for_covered_hosts() {
        let certs = Arc::new(Certificates::new("sho.rt"));
        certs.replace(&[served(&["sho.rt", "go.brand.test", "own.brand.test"])]);
        let domains = Arc::new(DomainSet::new("sho.rt", None));
        let policy = |redirect_http, url_port| HttpsPolicy {
            certs: certs.clone(),
            domains: domains.clone(),
            redirect_http,
            url_port,
            hsts: Some(HeaderValue::from_static("max-age=100")),
            hsts_include_subdomains: false,
        };
        let on = policy(true, None);
        let location = on.upgrade_location(b"SHO.rt:8080", "/abc?x=1").unwrap();
        assert_eq!(location, "https://sho.rt/abc?x=1");
        let location = policy(true, Some(8443))
            .upgrade_location(b"sho.rt", "/abc")
            .unwrap();
        assert_eq!(location, "https://sho.rt:8443/abc");
        assert!(on.upgrade_location(b"other.test", "/abc").is_none());
        assert!(on.upgrade_location(b"[::1]:8080", "/abc").is_none());
        assert!(
            on.upgrade_location(b"sho.rt", "/.well-known/acme-challenge/token")
                .is_none()
        );
        assert!(
            policy(false, None)
                .upgrade_location(b"sho.rt", "/abc")
                .is_none()
        );

        // A domain's own behaviour wins over the installation's, both ways.
        let own = |redirect_http, hsts_max_age_seconds| shortlink_core::DomainHttps {
            redirect_http,
            hsts_max_age_seconds,
        };
        domains.replace([
            ("go.brand.test".to_owned(), own(Some(false), Some(0))),
            ("own.brand.test".to_owned(), own(Some(true), Some(600))),
        ]);
        assert!(on.upgrade_location(b"go.brand.test", "/abc").is_none());
        let off = policy(false, None);
        assert!(off.upgrade_location(b"own.brand.test", "/abc").is_some());
        assert!(off.upgrade_location(b"sho.rt", "/abc").is_none());
        assert_eq!(on.hsts_for(Some(b"go.brand.test")), None);
        assert_eq!(
            on.hsts_for(Some(b"own.brand.test:443")).unwrap(),
            "max-age=600"
        );
        assert_eq!(on.hsts_for(Some(b"sho.rt")).unwrap(), "max-age=100");
        assert_eq!(on.hsts_for(None).unwrap(), "max-age=100");
    }
}
