//! Automatic certificates on the real binary against a real ACME server (Pebble): issued
//! for the default domain and a registered custom domain by HTTP-01 and by TLS-ALPN-01,
//! served by SNI, renewed before they run out; a name that does not point at the proxy
//! fails with the CA's reason in the API and is issued once it does.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::acme::Pebble;
use common::tls::{curl, resolve, served_certificate};
use common::{ADMIN_KEY, Options, TestServer, free_port};
use serde_json::{Value, json};

/// A server on `http_port` and `tls_port` under `https://sho.rt`, its certificates ordered
/// from `pebble` with `challenge`.
async fn start(
    dir: &Path,
    pebble: &Pebble,
    http_port: u16,
    tls_port: u16,
    challenge: &str,
) -> TestServer {
    let config = dir.join("shortlink.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://sho.rt:{tls_port}\"\n\n[proxy.tls]\nlisten = \"127.0.0.1:{tls_port}\"\nreload_seconds = 1\n\n{}",
            pebble.acme_config(challenge)
        ),
    )
    .unwrap();
    TestServer::start_with(Options {
        proxy_port: Some(http_port),
        ..Options::default().env("SHORTLINK_CONFIG", &config.display().to_string())
    })
    .await
}

/// The certificate entry `GET /api/v1/domains` shows for `name` (the default domain's
/// or a registered one's).
async fn certificate_of(s: &TestServer, name: &str) -> Value {
    let list = s.get_json("/api/v1/domains", ADMIN_KEY).await;
    common::domain_certificate(&list, name)
}

/// Waits until the API shows `name`'s certificate in `state`; returns the entry.
async fn wait_state(s: &TestServer, pebble: &Pebble, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let certificate = certificate_of(s, name).await;
        if certificate["state"] == state {
            return certificate;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {state} within 60 s: {certificate}\n--- shortlink ---\n{}\n--- pebble ---\n{}",
            s.log_text(),
            pebble.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the proxy serves `name` a certificate from Pebble other than `before`.
async fn wait_served(
    s: &TestServer,
    pebble: &Pebble,
    name: &str,
    port: u16,
    before: Option<&[u8]>,
) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(cert) = served_certificate(&pebble.issuing_root, name, port).await
            && Some(cert.as_slice()) != before
        {
            return cert;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no new certificate from the CA served within 60 s\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn register(s: &TestServer, name: &str) {
    let r = s
        .api(reqwest::Method::POST, "/api/v1/domains", ADMIN_KEY)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificates_are_issued_served_by_sni_and_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    // Twenty seconds of validity: renewed with a third of it left, within the test.
    let pebble = Pebble::start(dir.path(), http_port, tls_port, 20).await;
    let s = start(dir.path(), &pebble, http_port, tls_port, "http-01").await;
    register(&s, "go.brand.test").await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/main", "alias": "main1"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/brand", "alias": "brand1", "domain": "go.brand.test"}),
        )
        .await;
    assert_eq!(status, 201);

    for name in ["sho.rt", "go.brand.test"] {
        let certificate = wait_state(&s, &pebble, name, "issued").await;
        assert!(certificate["not_after"].is_string(), "{certificate}");
        assert_eq!(certificate["failures"], 0);
    }
    // Served by SNI to real clients that trust only the CA's root, over HTTP/1.1 and 2.
    let main = wait_served(&s, &pebble, "sho.rt", tls_port, None).await;
    let brand = wait_served(&s, &pebble, "go.brand.test", tls_port, None).await;
    assert_ne!(main, brand, "each name has its own certificate");
    let root = pebble.issuing_root.display().to_string();
    for (name, code, target) in [
        ("sho.rt", "main1", "https://example.com/main"),
        ("go.brand.test", "brand1", "https://example.com/brand"),
    ] {
        for flag in ["--http1.1", "--http2"] {
            let seen = curl(&[
                "--cacert",
                &root,
                "--resolve",
                &resolve(name, tls_port),
                flag,
                &format!("https://{name}:{tls_port}/{code}"),
            ])
            .expect("the handshake succeeds with the issued certificate");
            assert_eq!(seen.status, 301, "{name} {flag}");
            assert!(
                seen.headers.contains(&format!("location: {target}")),
                "{}",
                seen.headers
            );
        }
    }
    // Renewed before it runs out: a new certificate is served without a restart.
    let renewed = wait_served(&s, &pebble, "sho.rt", tls_port, Some(&main)).await;
    assert_ne!(renewed, main);
    assert!(
        s.metric("shortlink_acme_orders_total{result=\"issued\"}")
            .await
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        s.metric("shortlink_acme_orders_total{result=\"failed\"}")
            .await,
        Some(0.0)
    );
    assert!(
        s.metric("shortlink_acme_challenges_answered_total{type=\"http-01\"}")
            .await
            .unwrap()
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_once_a_name_points_at_the_proxy_and_shows_why_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http_port, tls_port, 3600).await;
    // The name points elsewhere (nothing listens there) until the test points it here.
    pebble.set_address("away.brand.test", "127.0.0.2").await;
    let s = start(dir.path(), &pebble, http_port, tls_port, "tls-alpn-01").await;
    register(&s, "away.brand.test").await;

    let failed = wait_state(&s, &pebble, "away.brand.test", "failed").await;
    assert!(failed["failures"].as_u64().unwrap() >= 1, "{failed}");
    assert!(failed["next_attempt_at"].is_string(), "{failed}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("127.0.0.2"),
        "the CA's reason is shown: {detail}"
    );
    assert!(
        s.metric("shortlink_acme_orders_total{result=\"failed\"}")
            .await
            .unwrap()
            >= 1.0
    );
    assert!(
        served_certificate(&pebble.issuing_root, "away.brand.test", tls_port)
            .await
            .is_none()
    );
    // The default domain was issued meanwhile, over TLS-ALPN-01.
    wait_state(&s, &pebble, "sho.rt", "issued").await;
    wait_served(&s, &pebble, "sho.rt", tls_port, None).await;

    // Pointed at the proxy: the next retry (after the backoff) issues it.
    pebble.set_address("away.brand.test", "127.0.0.1").await;
    let issued = wait_state(&s, &pebble, "away.brand.test", "issued").await;
    assert_eq!(issued["failures"], 0);
    assert!(issued["detail"].is_null());
    wait_served(&s, &pebble, "away.brand.test", tls_port, None).await;
    assert!(
        s.metric("shortlink_acme_challenges_answered_total{type=\"tls-alpn-01\"}")
            .await
            .unwrap()
            >= 2.0
    );
    assert!(
        s.metric("shortlink_tls_handshakes_total{result=\"acme_challenge\"}")
            .await
            .unwrap()
            >= 2.0
    );
}
