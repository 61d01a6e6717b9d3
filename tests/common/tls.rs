//! TLS for the tests: a certificate authority the clients trust, certificates it signs,
//! and curl as the real HTTP/1.1 and HTTP/2 client.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority the test clients trust.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem_path: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("shortlink test CA {name}"));
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem_path,
        }
    }

    /// Writes a certificate for `names` signed by this authority (chain and key files).
    pub fn issue(&self, names: &[&str], cert_path: &Path, key_path: &Path) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written whole, key first: the reload waits for a pair that matches.
        std::fs::write(key_path, key.serialize_pem()).unwrap();
        std::fs::write(cert_path, cert.pem()).unwrap();
    }
}

impl Ca {
    /// GETs `https://{host}:{port}{path}` with curl trusting this authority, `host`
    /// resolved to loopback, `extra` curl arguments before the URL; `None` when curl
    /// failed (a refused handshake, a reset stream).
    pub fn get(&self, host: &str, port: u16, path: &str, extra: &[&str]) -> Option<Seen> {
        let ca = self.pem_path.display().to_string();
        let resolve = resolve(host, port);
        let url = format!("https://{host}:{port}{path}");
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }
}

/// What curl saw: the HTTP version, the status and the response headers (lower case).
pub struct Seen {
    pub version: String,
    pub status: u16,
    pub headers: String,
}

/// One request with curl (a real HTTP/1.1 and HTTP/2 client); `None` when curl failed
/// (a refused handshake, a reset stream), with its error printed.
pub fn curl(args: &[&str]) -> Option<Seen> {
    curl_outcome(args)
        .inspect_err(|(code, error)| eprintln!("curl {args:?}: exit {code}: {error}"))
        .ok()
}

/// One request with curl: what it saw, or its exit code and error message.
pub fn curl_outcome(args: &[&str]) -> Result<Seen, (i32, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let malformed = || (0, format!("unexpected curl output: {text}"));
    let (headers, last) = text.trim_end().rsplit_once('\n').ok_or_else(malformed)?;
    let (version, status) = last.split_once(' ').ok_or_else(malformed)?;
    Ok(Seen {
        version: version.to_owned(),
        status: status.parse().map_err(|_| malformed())?,
        headers: headers.to_ascii_lowercase(),
    })
}

/// A `--resolve` entry sending `name:port` to loopback.
pub fn resolve(name: &str, port: u16) -> String {
    format!("{name}:{port}:127.0.0.1")
}

/// A TLS connection to `name` on loopback `port`, trusting the root in `root` (PEM),
/// offering `alpn`.
pub async fn tls_connect(
    root: &Path,
    name: &str,
    port: u16,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(root).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap(),
            tcp,
        )
        .await
}

/// The end-entity certificate (DER) served for `name` on loopback `port`, verified
/// against the root in `root`; `None` when the handshake fails (no certificate for the
/// name yet, or one the root does not sign).
pub async fn served_certificate(root: &Path, name: &str, port: u16) -> Option<Vec<u8>> {
    let tls = tls_connect(root, name, port, &[b"http/1.1"]).await.ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(leaf)
}
