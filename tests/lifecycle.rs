//! Start-up, limits, restarts and the CLI: the real binary as an operator runs it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ADMIN_KEY, Options, Split, TestServer, binary, error_code};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn links_and_clicks_survive_a_graceful_restart() {
    let mut s = TestServer::start().await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let (status, body) = s
            .create(
                ADMIN_KEY,
                json!({"url": format!("https://keep.example/{i}")}),
            )
            .await;
        assert_eq!(status, 201);
        codes.push(body["code"].as_str().unwrap().to_owned());
    }
    let (_, capped) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://keep.example/capped", "max_clicks": 3}),
        )
        .await;
    let capped = capped["code"].as_str().unwrap().to_owned();
    assert_eq!(
        s.wait_status(&capped, 301, Duration::from_secs(1))
            .await
            .0
            .status(),
        301
    );
    assert_eq!(s.follow(&capped).await.status(), 301);

    let dir = s.take_dir();
    let data = s.data_dir().to_owned();
    let started = std::time::Instant::now();
    let status = s.terminate();
    assert!(
        status.success(),
        "graceful exit on SIGTERM: {status:?}\n{}",
        s.log_text()
    );
    eprintln!("graceful shutdown took {:?}", started.elapsed());
    drop(s);

    let s = TestServer::start_with(Options {
        data: Some(data),
        ..Options::default()
    })
    .await;
    // Served from the bulk-loaded table (no negative cache, no read-through needed).
    for code in &codes {
        let r = s.follow(code).await;
        assert_eq!(r.status(), 301, "{code} after restart");
    }
    // Clicks were flushed on shutdown: one more redirect, then the cap.
    assert_eq!(s.follow(&capped).await.status(), 301);
    assert_eq!(s.follow(&capped).await.status(), 410);
    let r = s
        .api(Method::GET, &format!("/api/v1/links/{capped}"), ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(r.json::<Value>().await.unwrap()["clicks"].as_u64().unwrap() >= 2);
    drop(dir);
}

#[tokio::test]
async fn write_rate_limit_answers_429_with_retry_after() {
    let s = TestServer::start_with(
        Options::default()
            .env("SHORTLINK_CONTROL__WRITES_PER_MINUTE", "1")
            .env("SHORTLINK_CONTROL__WRITE_BURST", "3"),
    )
    .await;
    for i in 0..3 {
        let (status, _) = s
            .create(
                ADMIN_KEY,
                json!({"url": format!("https://rate.example/{i}")}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let r = s
        .api(Method::POST, "/api/v1/links", ADMIN_KEY)
        .json(&json!({"url": "https://rate.example/over"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(error_code(&r.json().await.unwrap()), "rate_limited");
    // Reads are not limited.
    let r = s
        .api(Method::GET, "/api/v1/links", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unknown_codes_are_limited_per_client_ip() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__NOT_FOUND_PER_IP_PER_MINUTE", "5"),
    )
    .await;
    let (_, body) = s
        .create(ADMIN_KEY, json!({"url": "https://known.example/"}))
        .await;
    let known = body["code"].as_str().unwrap().to_owned();
    assert_eq!(
        s.wait_status(&known, 301, Duration::from_secs(1))
            .await
            .0
            .status(),
        301
    );
    for i in 0..5 {
        assert_eq!(s.follow(&format!("guess{i}")).await.status(), 404);
    }
    let r = s.follow("guess-more").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        s.follow(&known).await.status(),
        301,
        "known links still redirect"
    );
}

#[test]
fn bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("SHORTLINK_PROXY_LISTEN", "not-an-address", "proxy.listen"),
        ("SHORTLINK_PUBLIC_URL", "ftp://nope", "public_url"),
        ("SHORTLINK_ADMIN_KEY", "short", "admin_key"),
        ("SHORTLINK_CONTROL__MAX_BODY_BYTES", "ten", "max_body_bytes"),
        ("SHORTLINK_PROXY__NO_SUCH_KEY", "1", "no_such_key"),
        ("SHORTLINK_PAGES_DIR", "/no/such/folder", "pages_dir"),
    ];
    for (key, value, mention) in cases {
        let out = Command::new(binary())
            .arg("serve")
            .env("SHORTLINK_DATA_DIR", dir.path())
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.to_lowercase().contains(mention), "{key}: {stderr}");
    }
    let out = Command::new(binary())
        .args(["serve", "--config", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[proxy]\nlisten = 8080\n").unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn first_start_generates_and_prints_an_admin_key_once() {
    let mut s = TestServer::start_with(Options {
        admin_key: None,
        ..Options::default()
    })
    .await;
    let stdout = s.stdout_text();
    let key = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sl_"))
        .unwrap_or_else(|| panic!("no key printed:\n{stdout}"))
        .to_owned();
    let (status, _) = s
        .create(&key, json!({"url": "https://boot.example/"}))
        .await;
    assert_eq!(status, 201, "the printed key works");
    let stored = std::fs::read(s.data_dir().join("shortlink.db")).unwrap();
    assert!(
        !stored.windows(key.len()).any(|w| w == key.as_bytes()),
        "only the key's hash is stored"
    );
    let dir = s.take_dir();
    let data = s.data_dir().to_owned();
    assert!(s.terminate().success());
    let s = TestServer::start_with(Options {
        admin_key: None,
        data: Some(data),
        ..Options::default()
    })
    .await;
    assert!(
        !s.stdout_text().contains("sl_"),
        "no new key on later starts"
    );
    let (status, _) = s
        .create(&key, json!({"url": "https://boot.example/2"}))
        .await;
    assert_eq!(status, 201);
    drop(dir);
}

#[tokio::test]
async fn cli_creates_users_keys_and_links() {
    let s = TestServer::start().await;
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .env("SHORTLINK_DATA_DIR", s.data_dir())
            .env("SHORTLINK_API_URL", &s.control)
            .output()
            .unwrap()
    };
    let out = run(&["user", "create", "cli-user"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["key", "create", "--user", "cli-user", "--label", "laptop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("sl_"));
    let out = run(&[
        "link",
        "create",
        "https://cli.example/",
        "--alias",
        "from-cli",
        "--key",
        &key,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("{}/from-cli", s.proxy)
    );
    assert_eq!(
        s.wait_status("from-cli", 301, Duration::from_secs(1))
            .await
            .0
            .status(),
        301
    );

    let out = run(&[
        "link",
        "create",
        "https://cli.example/",
        "--alias",
        "from-cli",
        "--key",
        &key,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("alias_taken"));
    let out = run(&["key", "create", "--user", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named 'ghost'"));
}

#[tokio::test]
async fn proxy_and_control_run_as_separate_processes() {
    let split = Split::new();
    let _control = split.start("control").await;
    let _proxy = split.start("proxy").await;
    // Warm the route table so the next change must arrive through the polled feed,
    // not through a read-through on a miss.
    let (_, first) = split
        .create(json!({"url": "https://split.example/1"}))
        .await;
    let first = first["code"].as_str().unwrap().to_owned();
    assert_eq!(
        split
            .wait_status(&first, 301, Duration::from_secs(2))
            .await
            .status(),
        301
    );
    let r = split
        .http
        .patch(format!("{}/api/v1/links/{first}", split.control_url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": "https://split.example/changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed = std::time::Instant::now();
    loop {
        let r = split
            .http
            .get(format!("{}/{first}", split.proxy_url))
            .send()
            .await
            .unwrap();
        if r.headers()
            .get("location")
            .is_some_and(|l| l == "https://split.example/changed")
        {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "a change reaches a separate proxy process within 1 s (feed polling)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("separate-process sync lag: {:?}", changed.elapsed());
}

#[test]
fn a_busy_port_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for (var, other) in [
        ("SHORTLINK_PROXY_LISTEN", "SHORTLINK_CONTROL_LISTEN"),
        ("SHORTLINK_CONTROL_LISTEN", "SHORTLINK_PROXY_LISTEN"),
    ] {
        let out = Command::new(binary())
            .arg("serve")
            .env("SHORTLINK_DATA_DIR", dir.path())
            .env("SHORTLINK_ADMIN_KEY", ADMIN_KEY)
            .env(var, &busy)
            .env(other, format!("127.0.0.1:{}", common::free_port()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot listen on {busy}")),
            "{var}: {stderr}"
        );
    }
}

#[test]
fn a_control_plane_that_cannot_start_stops_serve_with_an_error() {
    // A file where the objects folder must be: the control plane cannot open its object
    // store, stops the whole server (which shuts down as on SIGTERM), and `serve` exits
    // with status 1 and the reason, instead of ending the process from inside a service.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocked"), b"not a folder").unwrap();
    let mut child = std::process::Command::new(common::binary())
        .arg("serve")
        .env("SHORTLINK_DATA_DIR", dir.path().join("data"))
        .env("SHORTLINK_OBJECTS__LOCAL_DIR", dir.path().join("blocked"))
        .env(
            "SHORTLINK_PROXY_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env(
            "SHORTLINK_CONTROL_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("SHORTLINK_ADMIN_KEY", common::ADMIN_KEY)
        .env("SHORTLINK_PROXY__GRACE_PERIOD_SECONDS", "1")
        .env("SHORTLINK_PROXY__SHUTDOWN_TIMEOUT_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running after its control plane failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open object storage"), "{stderr}");
    // It went down through the graceful path: the click shipper was stopped, not cut off.
    assert!(stderr.contains("click shipping exited"), "{stderr}");
}

/// The proxy's answer for `code`: its status and `Location`.
async fn answer(split: &Split, code: &str) -> (u16, String) {
    let r = split
        .http
        .get(format!("{}/{code}", split.proxy_url))
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), location)
}

/// What the restarted proxy must answer: the link changed while it was down with its new
/// URL, the deleted one 404, the untouched and the new one as stored.
async fn answers_after_restart(split: &Split, codes: &[String], created: &str, log: &str) {
    assert_eq!(
        answer(split, &codes[0]).await,
        (301, "https://snapshot.example/changed".to_owned()),
        "{log}"
    );
    assert_eq!(answer(split, &codes[1]).await.0, 404, "{log}");
    assert_eq!(
        answer(split, &codes[2]).await,
        (301, "https://snapshot.example/2".to_owned())
    );
    assert_eq!(
        answer(split, created).await,
        (301, "https://snapshot.example/new".to_owned())
    );
}

#[tokio::test]
async fn a_restarted_proxy_starts_from_its_route_snapshot_and_catches_up() {
    let split = Split::new();
    let _control = split.start("control").await;
    let mut proxy = split.start("proxy").await;
    let mut codes = Vec::new();
    for i in 0..3 {
        let (status, body) = split
            .create(json!({"url": format!("https://snapshot.example/{i}")}))
            .await;
        assert_eq!(status, 201);
        let code = body["code"].as_str().unwrap().to_owned();
        assert_eq!(
            split
                .wait_status(&code, 301, Duration::from_secs(2))
                .await
                .status(),
            301
        );
        codes.push(code);
    }
    assert!(proxy.terminate().success());
    assert!(
        proxy.log_text().contains("route snapshot saved"),
        "{}",
        proxy.log_text()
    );
    let snapshot = split.data.join("routes.snapshot");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the snapshot (and its seed) is the owner's only"
        );
    }

    // While the proxy is down: one link changed, one deleted, one created.
    let patch = split
        .http
        .patch(format!("{}/api/v1/links/{}", split.control_url, codes[0]))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": "https://snapshot.example/changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    let delete = split
        .http
        .delete(format!("{}/api/v1/links/{}", split.control_url, codes[1]))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);
    let (_, created) = split
        .create(json!({"url": "https://snapshot.example/new"}))
        .await;
    let created = created["code"].as_str().unwrap().to_owned();

    // Ready means restored and caught up: the first answers are already the new ones.
    let mut proxy = split.start("proxy").await;
    let log = proxy.log_text();
    let restored = log
        .lines()
        .find(|l| l.contains("route table restored from its snapshot"))
        .unwrap_or_else(|| panic!("no restore logged:\n{log}"));
    assert!(
        restored.contains("routes=3"),
        "the three links were saved at shutdown: {restored}"
    );
    answers_after_restart(&split, &codes, &created, &proxy.log_text()).await;
    assert!(proxy.terminate().success());

    // A damaged snapshot is refused: every route is read from the store instead.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&snapshot, &bytes).unwrap();
    let mut proxy = split.start("proxy").await;
    assert!(
        proxy.log_text().contains("route snapshot damaged"),
        "{}",
        proxy.log_text()
    );
    answers_after_restart(&split, &codes, &created, &proxy.log_text()).await;
    assert!(proxy.terminate().success());

    // Another store's snapshot is not used.
    let other = Split::new();
    let _other_control = other.start("control").await;
    std::fs::create_dir_all(&other.data).unwrap();
    std::fs::copy(&snapshot, other.data.join("routes.snapshot")).unwrap();
    let other_proxy = other.start("proxy").await;
    assert!(
        other_proxy
            .log_text()
            .contains("it was read from another store"),
        "{}",
        other_proxy.log_text()
    );
    assert_eq!(answer(&other, &codes[2]).await.0, 404);
}

#[tokio::test]
async fn a_route_snapshot_that_cannot_be_saved_is_tried_again_after_its_period_only() {
    let split = Split::new();
    let _control = split.start("control").await;
    // The snapshot's folder does not exist: every save fails.
    let unsaved = split.data.join("no-such-folder").join("routes.snapshot");
    let mut proxy = common::Plane::start_with(
        "proxy",
        &split.data,
        (split.proxy_port, split.control_port),
        &[
            ("SHORTLINK_PROXY__ROUTE_SNAPSHOT", unsaved.to_str().unwrap()),
            ("SHORTLINK_PROXY__SYNC_POLL_MS", "20"),
        ],
    );
    proxy
        .wait_ok(&split.http, &format!("{}/readyz", split.proxy_url))
        .await;
    let (_, created) = split
        .create(json!({"url": "https://snapshot.example/unsaved"}))
        .await;
    let code = created["code"].as_str().unwrap();
    assert_eq!(
        split
            .wait_status(code, 301, Duration::from_secs(2))
            .await
            .status(),
        301
    );
    // Fifty polls later, the table has changed since the failed save, and the serving
    // goes on; yet it was not saved again (the period is 600 s).
    let polls_later = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < polls_later {
        assert_eq!(
            split.wait_status(code, 301, Duration::ZERO).await.status(),
            301
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proxy.log_text();
    assert_eq!(
        log.matches("route snapshot not saved").count(),
        1,
        "one failed save, not one a poll:\n{log}"
    );
    assert!(!unsaved.with_extension("partial").exists());
}
