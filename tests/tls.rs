//! HTTPS at the edge on the real binary: certificates chosen by SNI (the default domain's
//! and a custom domain's), redirects and forwarded API requests over HTTP/1.1 and HTTP/2
//! (checked with curl, a real client), HSTS, the plain port's redirect to HTTPS, the
//! scheme the control plane sees, certificate files reloaded without a restart, and the
//! HTTP/2 limits.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::tls::{Ca, curl, curl_outcome, resolve, tls_connect};
use common::{ADMIN_KEY, Options, TestServer, free_port};
use serde_json::json;

/// A server with a TLS listener serving `certs` (cert, key) files, under `public_url`'s
/// host `sho.rt`.
async fn start_tls(dir: &Path, certs: &[(PathBuf, PathBuf)], extra: &str) -> (TestServer, u16) {
    let tls_port = free_port();
    let list: Vec<String> = certs
        .iter()
        .map(|(cert, key)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                cert.display(),
                key.display()
            )
        })
        .collect();
    let config = dir.join("shortlink.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://sho.rt:{tls_port}\"\n\n[proxy.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncertificates = [{}]\nreload_seconds = 1\n{extra}\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let server = TestServer::start_with(
        Options::default().env("SHORTLINK_CONFIG", &config.display().to_string()),
    )
    .await;
    (server, tls_port)
}

/// A server whose TLS listener serves one certificate for `sho.rt` from a new test CA,
/// with `extra` settings; returns the folder (keep it), the CA, the server and its TLS port.
async fn with_one_certificate(
    ca_name: &str,
    extra: &str,
) -> (tempfile::TempDir, Ca, TestServer, u16) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), ca_name);
    let (cert, key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
    ca.issue(&["sho.rt"], &cert, &key);
    let (server, port) = start_tls(dir.path(), &[(cert, key)], extra).await;
    (dir, ca, server, port)
}

/// A server whose TLS listener serves two certificates from a new test CA, `sho.rt`'s and
/// `*.brand.test`'s, with `extra` settings; returns the folder (keep it), the CA, the
/// server and its TLS port.
async fn with_brand_certificates(
    ca_name: &str,
    extra: &str,
) -> (tempfile::TempDir, Ca, TestServer, u16) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), ca_name);
    let (main_cert, main_key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
    let (brand_cert, brand_key) = (dir.path().join("brand.pem"), dir.path().join("brand.key"));
    ca.issue(&["sho.rt"], &main_cert, &main_key);
    ca.issue(&["*.brand.test"], &brand_cert, &brand_key);
    let (s, port) = start_tls(
        dir.path(),
        &[(main_cert, main_key), (brand_cert, brand_key)],
        extra,
    )
    .await;
    (dir, ca, s, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_by_sni_over_http1_and_http2() {
    let (_dir, ca, s, port) = with_brand_certificates(
        "one",
        "hsts_max_age_seconds = 31536000\nredirect_http = true",
    )
    .await;
    let ca_pem = ca.pem_path.display().to_string();

    let r = s
        .api(reqwest::Method::POST, "/api/v1/domains", ADMIN_KEY)
        .json(&json!({"name": "go.brand.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/tls", "alias": "tls1"}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["short_url"], format!("https://sho.rt:{port}/tls1"));
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/brand", "alias": "brand1", "domain": "go.brand.test"}),
        )
        .await;
    assert_eq!(status, 201);

    // Each name gets its own certificate (curl checks it against the name), over
    // HTTP/1.1 and HTTP/2; redirects carry HSTS.
    let main = resolve("sho.rt", port);
    let brand = resolve("go.brand.test", port);
    let cases = [
        (
            &main,
            format!("https://sho.rt:{port}/tls1"),
            "https://example.com/tls",
        ),
        (
            &brand,
            format!("https://go.brand.test:{port}/brand1"),
            "https://example.com/brand",
        ),
    ];
    for (resolve, url, target) in &cases {
        for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let seen = loop {
                let seen = curl(&["--cacert", &ca_pem, "--resolve", resolve, flag, url])
                    .expect("the handshake succeeds with the name's certificate");
                // A link reaches the route table within the sync interval.
                if seen.status == 301 || Instant::now() > deadline {
                    break seen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(seen.version, version, "{url} {flag}");
            assert_eq!(seen.status, 301, "{url} {flag}: {}", seen.headers);
            assert!(
                seen.headers.contains(&format!("location: {target}")),
                "{}",
                seen.headers
            );
            assert!(
                seen.headers
                    .contains("strict-transport-security: max-age=31536000"),
                "{}",
                seen.headers
            );
        }
    }

    // Plain HTTP on the TLS port: the handshake fails (counted below).
    assert!(curl(&[&format!("http://127.0.0.1:{port}/tls1")]).is_none());
    // A name no certificate covers gets the default domain's, which curl refuses.
    assert!(
        curl(&[
            "--cacert",
            &ca_pem,
            "--resolve",
            &resolve("other.test", port),
            &format!("https://other.test:{port}/tls1"),
        ])
        .is_none()
    );

    // API requests are forwarded over both protocols, with HSTS on the answer.
    for flag in ["--http1.1", "--http2"] {
        let seen = curl(&[
            "--cacert",
            &ca_pem,
            "--resolve",
            &main,
            flag,
            "-H",
            &format!("authorization: Bearer {ADMIN_KEY}"),
            &format!("https://sho.rt:{port}/api/v1/links"),
        ])
        .unwrap();
        assert_eq!(seen.status, 200, "{flag}: {}", seen.headers);
        assert!(
            seen.headers.contains("strict-transport-security"),
            "{}",
            seen.headers
        );
    }

    // The control plane sees HTTPS: a protected link's cookie is `Secure` over TLS.
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/p", "alias": "tlspw", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 201);
    let seen = curl(&[
        "--cacert",
        &ca_pem,
        "--resolve",
        &main,
        "-d",
        "password=pw",
        &format!("https://sho.rt:{port}/tlspw"),
    ])
    .unwrap();
    assert_eq!(seen.status, 303, "{}", seen.headers);
    let cookie = seen
        .headers
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.contains("; secure"), "{cookie}");

    // The plain port sends hosts with a certificate to HTTPS (308, path and query
    // kept); other hosts and `/readyz` stay on plain HTTP.
    let plain_port = s.proxy.rsplit(':').next().unwrap().to_owned();
    let seen = curl(&[
        "--resolve",
        &format!("sho.rt:{plain_port}:127.0.0.1"),
        &format!("http://sho.rt:{plain_port}/tls1?x=1"),
    ])
    .unwrap();
    assert_eq!(seen.status, 308);
    assert!(
        seen.headers
            .contains(&format!("location: https://sho.rt:{port}/tls1?x=1")),
        "{}",
        seen.headers
    );
    assert!(!seen.headers.contains("strict-transport-security"));
    let seen = curl(&[&format!("{}/tls1", s.proxy)]).unwrap();
    assert_eq!(
        seen.status, 301,
        "a host without a certificate: {}",
        seen.headers
    );
    let seen = curl(&[
        "--resolve",
        &format!("sho.rt:{plain_port}:127.0.0.1"),
        &format!("http://sho.rt:{plain_port}/readyz"),
    ])
    .unwrap();
    assert_eq!(seen.status, 200);

    // Clicks over TLS count like any other: HTTP/1.1, HTTP/2 and the plain 301 (the
    // 308 to HTTPS is no click).
    let stats = common::wait_total(&s.client, &s.proxy, "tls1", 3).await;
    assert_eq!(stats["total"], 3, "{stats}");

    // Metrics: handshakes by result, certificates served, the soonest expiry.
    let value = async |name: &str| s.metric(name).await.unwrap_or(0.0);
    assert_eq!(value("shortlink_tls_certificates").await, 2.0);
    assert!(value("shortlink_tls_handshakes_total{result=\"ok\"}").await >= 8.0);
    assert!(value("shortlink_tls_handshakes_total{result=\"failed\"}").await >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value("shortlink_tls_certificate_soonest_expiry_timestamp_seconds").await > now);
    let metrics = s
        .client
        .get(format!("{}/metrics", s.control))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("brand.test"), "no domain names in labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old"), Ca::new(dir.path(), "new"));
    let (cert, key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
    old_ca.issue(&["sho.rt"], &cert, &key);
    let (s, port) = start_tls(dir.path(), &[(cert.clone(), key.clone())], "").await;
    let trusting = |ca: &Ca| ca.get("sho.rt", port, "/readyz", &[]);
    assert_eq!(trusting(&old_ca).map(|s| s.status), Some(200));
    assert!(trusting(&new_ca).is_none());

    // A broken file is refused: the certificate loaded before is still served.
    std::fs::write(&cert, "not a certificate").unwrap();
    let failures = async || {
        s.metric("shortlink_tls_certificate_reload_failures_total")
            .await
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures().await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the broken file was never checked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(trusting(&old_ca).map(|s| s.status), Some(200));

    // A renewed certificate (another authority's here, to tell them apart) is served
    // within the reload interval, on new connections, without a restart.
    new_ca.issue(&["sho.rt"], &cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    while trusting(&new_ca).is_none() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusting(&old_ca).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_limits_hold() {
    let (_dir, ca, _s, port) = with_one_certificate("h2", "h2_max_header_list_bytes = 4096").await;
    let ca_pem = ca.pem_path.display().to_string();
    let main = resolve("sho.rt", port);
    let url = format!("https://sho.rt:{port}/readyz");
    // Under the limit: answered.
    let small = format!("x-small: {}", "a".repeat(1000));
    let seen = ca
        .get("sho.rt", port, "/readyz", &["--http2", "-H", &small])
        .unwrap();
    assert_eq!((seen.version.as_str(), seen.status), ("2", 200));
    // Over it (sent as HEADERS and CONTINUATION frames): the stream is refused (curl
    // exits 92, an HTTP/2 stream error) or answered 431, never served.
    let big = format!("x-big: {}", "a".repeat(8000));
    let refused = curl_outcome(&[
        "--cacert",
        &ca_pem,
        "--resolve",
        &main,
        "--http2",
        "-H",
        &big,
        &url,
    ]);
    match &refused {
        Ok(seen) => assert_eq!(seen.status, 431, "{}", seen.headers),
        Err((code, error)) => assert_eq!(*code, 92, "{error}"),
    }
    // The server is fine: the next request is answered.
    let seen = ca.get("sho.rt", port, "/readyz", &["--http2"]).unwrap();
    assert_eq!((seen.version.as_str(), seen.status), ("2", 200));
}

/// A PROXY protocol v2 header for a TCP4 client `src` (to 127.0.0.1:80).
fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&src);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_names_the_client_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "pp");
    let (cert, key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
    ca.issue(&["sho.rt"], &cert, &key);
    let config = dir.path().join("shortlink.toml");
    let tls_port = free_port();
    std::fs::write(
        &config,
        format!(
            "[proxy]\nproxy_protocol = true\nnot_found_per_ip_per_minute = 2\n\n[proxy.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\nproxy_protocol = true\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut options = Options::default().env("SHORTLINK_CONFIG", &config.display().to_string());
    options
        .env
        .retain(|(k, _)| k != "SHORTLINK_PROXY__NOT_FOUND_PER_IP_PER_MINUTE");
    // Readiness is checked on the control plane: the proxy's port needs the header.
    options.control_ready_only = true;
    let s = TestServer::start_with(options).await;
    let r = s
        .client
        .post(format!("{}/api/v1/links", s.control))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": "https://example.com/pp", "alias": "pp1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // v1 and v2 headers, then requests: answered, and the 404 limit counts the address
    // the header names, not the load balancer's.
    let ask = async |header: Vec<u8>, path: &str| -> u16 {
        let mut conn = common::raw::Connection::open(&s).await;
        conn.send(&header).await;
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: sho.rt\r\n\r\n").as_bytes())
            .await;
        conn.answer(false).await.status
    };
    let v1 = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 40000 80\r\n").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ask(v1("203.0.113.7"), "/pp1").await != 301 {
        assert!(Instant::now() < deadline, "the link is never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ask(proxy_v2([203, 0, 113, 8], 40001), "/pp1").await, 301);
    for _ in 0..2 {
        assert_eq!(ask(v1("198.51.100.1"), "/nope12").await, 404);
    }
    assert_eq!(ask(v1("198.51.100.1"), "/nope12").await, 429);
    assert_eq!(
        ask(proxy_v2([198, 51, 100, 2], 40002), "/nope12").await,
        404
    );
    assert_eq!(ask(v1("198.51.100.1"), "/nope12").await, 429);

    // Without a header the connection is closed unanswered, and counted.
    let mut conn = common::raw::Connection::open(&s).await;
    conn.send(b"GET /pp1 HTTP/1.1\r\nHost: sho.rt\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(conn.stream(), &mut answer),
    )
    .await
    .expect("closed within the deadline");
    // Closed (or reset: the request was never read), with nothing answered.
    assert!(
        answer.is_empty(),
        "{read:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        s.metric("shortlink_proxy_protocol_refused_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // On the TLS listener the header comes before the handshake (curl sends v1).
    let seen = ca
        .get(
            "sho.rt",
            tls_port,
            "/pp1",
            &["--haproxy-protocol", "--http2"],
        )
        .expect("PROXY header, then the TLS handshake");
    assert_eq!((seen.version.as_str(), seen.status), ("2", 301));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_s_forwarded_scheme_counts_as_https() {
    // Each family of forwarding headers, as the trusted proxy in front writes it; the
    // other family, which it might pass through from the client, is not believed.
    for (family, believed, ignored) in [
        (
            "x-forwarded",
            "x-forwarded-proto: https",
            "forwarded: proto=https",
        ),
        (
            "forwarded",
            "forwarded: for=192.0.2.1;proto=https",
            "x-forwarded-proto: https",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "fw");
        let (cert, key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
        ca.issue(&["sho.rt"], &cert, &key);
        let (s, _port) = start_tls(
            dir.path(),
            &[(cert, key)],
            &format!(
                "redirect_http = true\nhsts_max_age_seconds = 60\n\n[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\nforwarded_headers = \"{family}\""
            ),
        )
        .await;
        let (status, _) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://example.com/fw", "alias": "fw1"}),
            )
            .await;
        assert_eq!(status, 201);
        let plain_port = s.proxy.rsplit(':').next().unwrap().to_owned();
        let at = |headers: &[&str]| {
            let mut args = vec![
                "--resolve".to_owned(),
                format!("sho.rt:{plain_port}:127.0.0.1"),
                format!("http://sho.rt:{plain_port}/fw1"),
            ];
            for header in headers {
                args.push("-H".into());
                args.push((*header).into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args).unwrap()
        };
        // TLS ended at the trusted proxy in front: no redirect loop, HSTS on the answer.
        let seen = at(&[believed]);
        assert_eq!(seen.status, 301, "{family}: {}", seen.headers);
        assert!(
            seen.headers
                .contains("strict-transport-security: max-age=60")
        );
        // Plain HTTP there, whatever the other family claims: sent to HTTPS.
        assert_eq!(at(&[ignored]).status, 308, "{family}: {ignored}");
        assert_eq!(at(&[]).status, 308);
    }
}

/// Runs `shortlink` with `args` on the store of `s`; returns (success, stdout and stderr).
fn cli(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::binary())
        .args(args)
        .env("SHORTLINK_DATA_DIR", &s.data)
        .env("SHORTLINK_LOG", "warn")
        .output()
        .expect("run shortlink");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_kept_in_the_store_are_served_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Ca::new(dir.path(), "first"), Ca::new(dir.path(), "second"));
    let (cert, key) = (dir.path().join("main.pem"), dir.path().join("main.key"));
    let (s, port) = start_tls(dir.path(), &[], "").await;
    let trusting = |ca: &Ca| {
        ca.get("sho.rt", port, "/readyz", &[])
            .map(|seen| seen.status)
    };
    let until = async |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // No certificate anywhere yet: every handshake fails.
    assert_eq!(trusting(&first), None);

    // A key that is not the certificate's is refused before anything is stored.
    first.issue(&["sho.rt"], &cert, &key);
    let other_key = dir.path().join("other.key");
    first.issue(&["sho.rt"], &dir.path().join("other.pem"), &other_key);
    let (ok, text) = cli(
        &s,
        &[
            "cert",
            "import",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            other_key.to_str().unwrap(),
        ],
    );
    assert!(!ok && text.contains("does not match"), "{text}");

    let (ok, text) = cli(
        &s,
        &[
            "cert",
            "import",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        ok && text.contains("stored the certificate for sho.rt"),
        "{text}"
    );
    until("the stored certificate is served", &|| {
        trusting(&first) == Some(200)
    })
    .await;
    let (ok, text) = cli(&s, &["cert", "list"]);
    assert!(ok && text.contains("sho.rt"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // A new certificate under the same name replaces it.
    second.issue(&["sho.rt"], &cert, &key);
    let (ok, text) = cli(
        &s,
        &[
            "cert",
            "import",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    until("the replacement is served", &|| {
        trusting(&second) == Some(200)
    })
    .await;
    assert_eq!(trusting(&first), None);

    let (ok, text) = cli(&s, &["cert", "delete", "sho.rt"]);
    assert!(ok, "{text}");
    until("the deleted certificate is no longer served", &|| {
        trusting(&second).is_none()
    })
    .await;
    let (ok, text) = cli(&s, &["cert", "delete", "sho.rt"]);
    assert!(!ok && text.contains("no certificate"), "{text}");
}

/// An HTTP/2 connection over TLS to `sho.rt` on `port`, trusting `ca`.
async fn h2_connection(
    ca: &Ca,
    port: u16,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(&ca.pem_path, "sho.rt", port, &[b"h2"])
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    (client, tokio::spawn(connection))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_never_sends_its_preface_is_closed() {
    let (_dir, ca, _s, port) =
        with_one_certificate("preface", "\n[proxy]\nrequest_head_timeout_ms = 1000").await;
    // HTTP/2 agreed in the handshake, then silence: closed after the head deadline.
    let mut tls = tls_connect(&ca.pem_path, "sho.rt", port, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let began = Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink),
    )
    .await;
    assert!(closed.is_ok(), "still open after 10 s");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_ends_the_connection_not_the_server() {
    let (_dir, ca, _s, port) = with_one_certificate("reset", "").await;
    let request = || {
        http::Request::get(format!("https://sho.rt:{port}/readyz"))
            .body(())
            .unwrap()
    };

    // A well-behaved HTTP/2 client is answered.
    let (mut client, _driver) = h2_connection(&ca, port).await;
    client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);

    // CVE-2023-44487: open a stream and reset it at once, thousands of times. The server
    // ends the connection (GOAWAY, ENHANCE_YOUR_CALM) instead of working for each.
    let (mut client, driver) = h2_connection(&ca, port).await;
    let mut sent = 0;
    for _ in 0..10_000 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break,
        };
        let Ok((_response, mut stream)) = client.send_request(request(), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the flooded connection ends")
        .unwrap();
    let error = ended.expect_err("ended by the server");
    // The GOAWAY is read, or the client's next write finds the connection closed.
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "after {sent} resets: {error}"
    );
    assert!(sent < 10_000, "the flood was never cut off");

    // Other clients are still served.
    let (mut client, _driver) = h2_connection(&ca, port).await;
    client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_tls_listener_over() {
    let (_dir, ca, mut s, port) = with_one_certificate("up", "").await;
    let ask = || {
        ca.get("sho.rt", port, "/readyz", &["--http2"])
            .map(|s| s.status)
    };
    assert_eq!(ask(), Some(200));
    let old = s.pid();
    let (status, log) = s.upgrade().await;
    assert!(status.success(), "{log}");
    assert_ne!(s.pid(), old);
    // The new process serves TLS on the socket it was handed (it bound nothing).
    assert_eq!(ask(), Some(200));
    assert!(
        !s.log_text().contains("no socket was handed over"),
        "{}",
        s.log_text()
    );
}

/// A registered domain's own HTTPS behaviour (`redirect_http`, `hsts_max_age_seconds`)
/// wins over the installation's, on both listeners' fast paths too, and can be changed
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_has_https_behaviour_of_its_own() {
    // The installation: no redirect to HTTPS, no HSTS.
    let (_dir, ca, s, port) = with_brand_certificates("own", "").await;
    let r = s
        .api(reqwest::Method::POST, "/api/v1/domains", ADMIN_KEY)
        .json(
            &json!({"name": "own.brand.test", "redirect_http": true, "hsts_max_age_seconds": 600}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&created["redirect_http"], &created["hsts_max_age_seconds"]),
        (&json!(true), &json!(600))
    );
    for (alias, domain) in [("own1", Some("own.brand.test")), ("main1", None)] {
        let mut body = json!({"url": format!("https://example.com/{alias}"), "alias": alias});
        if let Some(domain) = domain {
            body["domain"] = json!(domain);
        }
        let (status, link) = s.create(ADMIN_KEY, body).await;
        assert_eq!(status, 201, "{link}");
    }
    let plain = |host: &'static str, alias: &'static str| {
        let s = &s;
        async move {
            s.follow_with(alias, &[("host", host)])
                .await
                .status()
                .as_u16()
        }
    };
    let https = |host: &'static str, alias: &'static str| {
        let ca = &ca;
        async move {
            ca.get(host, port, &format!("/{alias}"), &[])
                .expect("the handshake succeeds")
        }
    };
    // Until the proxy has the domain and the link (its sync interval), then: the
    // domain's plain requests go to HTTPS, whose answers carry its HSTS.
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain("own.brand.test", "own1").await != 308 {
        assert!(
            Instant::now() < deadline,
            "own.brand.test never redirected to HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Over HTTP/2 (pingora) and HTTP/1.1 (the TLS listener's fast path, which passes
    // the domain's requests on).
    for flag in ["--http2", "--http1.1"] {
        let seen = ca
            .get("own.brand.test", port, "/own1", &[flag])
            .expect("the handshake succeeds");
        assert_eq!(seen.status, 301, "{flag}: {}", seen.headers);
        assert!(
            seen.headers
                .contains("strict-transport-security: max-age=600"),
            "{flag}: {}",
            seen.headers
        );
    }
    // The default domain keeps the installation's behaviour.
    assert_eq!(plain("sho.rt", "main1").await, 301);
    let seen = https("sho.rt", "main1").await;
    assert_eq!(seen.status, 301);
    assert!(
        !seen.headers.contains("strict-transport-security"),
        "{}",
        seen.headers
    );

    // Back to the installation's redirect, and no HSTS.
    let patch = |body: serde_json::Value| {
        s.api(
            reqwest::Method::PATCH,
            "/api/v1/domains/own.brand.test",
            ADMIN_KEY,
        )
        .json(&body)
        .send()
    };
    let r = patch(json!({"hsts_max_age_seconds": 100_000_000}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "more than two years is refused");
    let r = patch(json!({"redirect_http": null, "hsts_max_age_seconds": 0}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&changed["redirect_http"], &changed["hsts_max_age_seconds"]),
        (&serde_json::Value::Null, &json!(0))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while plain("own.brand.test", "own1").await != 301 {
        assert!(
            Instant::now() < deadline,
            "the domain's redirect never went back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = https("own.brand.test", "own1").await;
    assert_eq!(seen.status, 301);
    assert!(
        !seen.headers.contains("strict-transport-security"),
        "{}",
        seen.headers
    );
    let r = s
        .api(
            reqwest::Method::PATCH,
            "/api/v1/domains/none.brand.test",
            ADMIN_KEY,
        )
        .json(&json!({"redirect_http": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
