//! Accounts, keys and abuse handling through the real binary: password guessing under a
//! parallel burst, key scopes, listing, revocation, rotation and expiry, the bootstrap
//! key across a restart, disabled users, moderation with its audit log, and the hygiene
//! rules (no key in logs or response headers, trusted forwarding headers only).

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Options, TestServer, binary, error_code};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

/// A request's status and JSON body (null when there is none).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates a key through the API as `caller`; returns (status, body).
async fn make_key(s: &TestServer, caller: &str, body: Value) -> (u16, Value) {
    send(s.api(Method::POST, "/api/v1/keys", caller).json(&body)).await
}

/// A peak-memory reading of a process: `VmHWM` from `/proc`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Fires `count` password posts at `/{code}` at once (the right one at `right_at`),
/// each with the `X-Forwarded-For` that `forwarded(i)` names; returns the statuses and
/// whether every 429 carried `Retry-After`.
async fn burst(
    s: &TestServer,
    code: &str,
    count: usize,
    right_at: usize,
    forwarded: impl Fn(usize) -> Option<String>,
) -> (Vec<u16>, bool) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let requests = (0..count).map(|i| {
        let password = if i == right_at {
            "right-one".to_owned()
        } else {
            format!("wrong{i}")
        };
        let mut request = http
            .post(format!("{}/{code}", s.proxy))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("password={password}"));
        if let Some(ip) = forwarded(i) {
            request = request.header("x-forwarded-for", ip);
        }
        async move {
            let r = request.send().await.expect("password post");
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry)
        }
    });
    let answers: Vec<(u16, bool)> = futures_util::stream::iter(requests)
        .buffer_unordered(count)
        .collect()
        .await;
    let retry_ok = answers.iter().all(|(s, retry)| *s != 429 || *retry);
    (answers.into_iter().map(|(s, _)| s).collect(), retry_ok)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_burst_of_guesses_is_counted_before_it_is_checked() {
    let s = TestServer::start().await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/vault", "alias": "vault", "password": "right-one"}),
        )
        .await;
    assert_eq!(status, 201);
    let before = peak_rss(s.pid());
    let (statuses, retry_ok) = burst(&s, "vault", 300, 150, |_| None).await;
    let grown = peak_rss(s.pid()).saturating_sub(before);
    let verified = count(&statuses, 401) + count(&statuses, 303);
    println!(
        "burst of 300 from one address: {} x 401, {} x 303, {} x 429; peak RSS grew {} MiB",
        count(&statuses, 401),
        count(&statuses, 303),
        count(&statuses, 429),
        grown / (1024 * 1024)
    );
    assert!(verified <= 5, "at most five checked per window: {verified}");
    assert_eq!(verified + count(&statuses, 429), 300, "{statuses:?}");
    assert!(retry_ok, "every 429 says when to retry");
    assert!(
        grown < 100 * 1024 * 1024,
        "peak RSS grew by {grown} bytes during the burst"
    );

    // Going straight to the control plane with a made-up X-Forwarded-For changes
    // nothing: only the proxy (by the internal secret) and configured proxies are
    // believed, so every guess here counts against 127.0.0.1.
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/vault", "alias": "vault2", "password": "right-one"}),
        )
        .await;
    assert_eq!(status, 201);
    let http = common::client();
    let mut direct = Vec::new();
    for i in 0..8 {
        let r = http
            .post(format!("{}/vault2", s.control))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("x-shortlink-client-ip", format!("198.51.100.{i}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("password=wrong")
            .send()
            .await
            .unwrap();
        direct.push(r.status().as_u16());
    }
    assert_eq!(count(&direct, 401), 5, "{direct:?}");
    assert_eq!(count(&direct, 429), 3, "{direct:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_from_many_addresses_are_bounded_per_link() {
    // The proxy believes X-Forwarded-For from the test client here, so each guess comes
    // from its own address: only the per-link limit is left to hold.
    let s = TestServer::start_with(
        Options::default()
            .env("SHORTLINK_PROXY__TRUSTED_PROXIES", "[\"127.0.0.1\"]")
            .env("SHORTLINK_CONTROL__PASSWORD_ATTEMPTS_PER_LINK", "20"),
    )
    .await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/vault", "alias": "spread", "password": "right-one"}),
        )
        .await;
    assert_eq!(status, 201);
    let (statuses, retry_ok) = burst(&s, "spread", 300, 299, |i| {
        Some(format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
    })
    .await;
    let verified = count(&statuses, 401) + count(&statuses, 303);
    println!(
        "burst of 300 from 300 addresses: {verified} checked, {} x 429",
        count(&statuses, 429)
    );
    assert!(
        verified <= 20,
        "at most the link's limit checked: {verified}"
    );
    assert!(verified >= 1, "{statuses:?}");
    assert_eq!(verified + count(&statuses, 429), 300, "{statuses:?}");
    assert!(retry_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_listed_rotated_expired_and_revoked_at_once() {
    let s = TestServer::start().await;
    let alice = s.new_user("alice").await;

    // Scopes: a read-only key reads but changes nothing; a links key makes links but
    // uploads nothing; no user key holds admin.
    let (status, read) = make_key(&s, &alice, json!({"label": "dash", "scopes": ["read"]})).await;
    assert_eq!(status, 201, "{read}");
    assert_eq!(read["scopes"], json!(["read"]));
    let read_key = read["key"].as_str().unwrap().to_owned();
    let (status, links) = make_key(&s, &alice, json!({"scopes": ["links"]})).await;
    assert_eq!(status, 201);
    let links_key = links["key"].as_str().unwrap().to_owned();
    let (status, body) = make_key(&s, &alice, json!({"scopes": ["admin"]})).await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");

    let (status, _) = s
        .create(&alice, json!({"url": "https://example.com/a"}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = s
        .create(&read_key, json!({"url": "https://example.com/b"}))
        .await;
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'links'")
    );
    let (status, list) = send(s.api(Method::GET, "/api/v1/links", &read_key)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let refused = [
        s.api(Method::POST, "/api/v1/links/import", &read_key)
            .header("content-type", "text/csv")
            .body("url\nhttps://example.com/i\n"),
        s.api(Method::POST, "/api/v1/uploads/presign", &read_key)
            .json(&json!({"filename": "a.txt", "size": 3})),
        s.api(Method::POST, "/api/v1/uploads", &read_key).multipart(
            reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(b"abc".to_vec()).file_name("a.txt"),
            ),
        ),
        s.api(Method::POST, "/api/v1/domains", &read_key)
            .json(&json!({"name": "go.example.com"})),
    ];
    for request in refused {
        let (status, body) = send(request).await;
        assert_eq!((status, error_code(&body)), (403, "forbidden"), "{body}");
    }
    let (status, _) = s
        .create(&links_key, json!({"url": "https://example.com/c"}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        s.api(Method::POST, "/api/v1/uploads/presign", &links_key)
            .json(&json!({"filename": "a.txt", "size": 3})),
    )
    .await;
    assert_eq!(status, 403);
    // A narrowed key cannot mint keys, and a user cannot act as admin.
    let (status, _) = make_key(&s, &links_key, json!({"scopes": ["links"]})).await;
    assert_eq!(status, 403);
    let (status, _) = send(s.api(Method::GET, "/api/v1/users", &alice)).await;
    assert_eq!(status, 403);
    let (status, _) = make_key(&s, &alice, json!({"user": "admin"})).await;
    assert_eq!(status, 403);

    // Listing: own keys for users, every key for admins; never the key or its hash.
    let (status, mine) = send(s.api(Method::GET, "/api/v1/keys", &alice)).await;
    assert_eq!(status, 200);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{mine}");
    assert!(items.iter().all(|k| k["user"] == "alice"));
    let text = mine.to_string();
    for key in [&alice, &read_key, &links_key] {
        assert!(!text.contains(key.as_str()), "a listing shows no key");
        assert!(text.contains(&key[..9]), "but each key's prefix");
    }
    let (_, all) = send(s.api(Method::GET, "/api/v1/keys", ADMIN_KEY)).await;
    assert!(all["items"].as_array().unwrap().len() >= 4);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["user"] == "admin")
    );
    // Last use is recorded (written back off the request path).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, mine) = send(s.api(Method::GET, "/api/v1/keys", &alice)).await;
        let used = mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == read["id"])
            .map(|k| !k["last_used_at"].is_null());
        if used == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "last use never recorded: {mine}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revocation: refused at once, on the proxy port and the control plane's.
    let id = read["id"].as_str().unwrap();
    let (status, _) = send(s.api(Method::DELETE, &format!("/api/v1/keys/{id}"), &alice)).await;
    assert_eq!(status, 204);
    for base in [&s.proxy, &s.control] {
        let r = s
            .client
            .get(format!("{base}/api/v1/links"))
            .bearer_auth(&read_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{base}");
    }
    // Another user's key is none of alice's business; revoking it again is 404.
    let (status, _) = send(s.api(Method::DELETE, &format!("/api/v1/keys/{id}"), &alice)).await;
    assert_eq!(status, 404);

    // Rotation: a new key with the same scopes; the old one works for the grace.
    let links_id = links["id"].as_str().unwrap();
    let (status, rotated) = send(
        s.api(
            Method::POST,
            &format!("/api/v1/keys/{links_id}/rotate"),
            &alice,
        )
        .json(&json!({"grace_seconds": 600})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["scopes"], json!(["links"]));
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    for key in [&links_key, &new_key] {
        let (status, _) = send(s.api(Method::GET, "/api/v1/links", key)).await;
        assert_eq!(status, 200, "both work during the grace");
    }
    let (_, mine) = send(s.api(Method::GET, "/api/v1/keys", &alice)).await;
    let old = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == links["id"])
        .unwrap()
        .clone();
    assert!(
        old["expires_at"].is_string(),
        "the old key now expires: {old}"
    );
    // A rotation without grace retires the old key at once.
    let new_id = rotated["id"].as_str().unwrap();
    let (status, again) = send(
        s.api(
            Method::POST,
            &format!("/api/v1/keys/{new_id}/rotate"),
            ADMIN_KEY,
        )
        .json(&json!({"grace_seconds": 0})),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let (status, _) = send(s.api(Method::GET, "/api/v1/links", &new_key)).await;
    assert_eq!(status, 401);
    let (status, _) =
        send(s.api(Method::GET, "/api/v1/links", again["key"].as_str().unwrap())).await;
    assert_eq!(status, 200);

    // Expiry: a key that expires in two seconds stops working then.
    let soon = shortlink_core::time_util::to_rfc3339(shortlink_core::time_util::now_unix() + 2);
    let (status, short) = make_key(&s, &alice, json!({"expires_at": soon})).await;
    assert_eq!(status, 201, "{short}");
    let short_key = short["key"].as_str().unwrap();
    let (status, _) = send(s.api(Method::GET, "/api/v1/links", short_key)).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = send(s.api(Method::GET, "/api/v1/links", short_key)).await;
        if status == 401 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("expired")
            );
            break;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The Authorization scheme is case-insensitive.
    let r = s
        .client
        .get(format!("{}/api/v1/links", s.proxy))
        .header("authorization", format!("BEARER {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every change is in the audit log, readable by admins only.
    let (status, audit) = send(s.api(Method::GET, "/api/v1/audit?limit=100", ADMIN_KEY)).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["key.create", "key.revoke", "key.rotate", "user.create"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let (status, _) = send(s.api(Method::GET, "/api/v1/audit", &alice)).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_admin_key_retires_the_old_one_across_a_restart_and_users_can_be_disabled() {
    let mut s = TestServer::start().await;
    let bob = s.new_user("bob").await;
    let (status, link) = s
        .create(&bob, json!({"url": "https://example.com/bob"}))
        .await;
    assert_eq!(status, 201);
    let code = link["code"].as_str().unwrap().to_owned();

    // Disabled: bob's keys stop at once; his links keep redirecting.
    let (status, user) = send(
        s.api(Method::PATCH, "/api/v1/users/bob", ADMIN_KEY)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!((status, &user["disabled"]), (200, &json!(true)));
    let (status, body) = send(s.api(Method::GET, "/api/v1/links", &bob)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(s.follow(&code).await.status(), 301);
    let (_, users) = send(s.api(Method::GET, "/api/v1/users", ADMIN_KEY)).await;
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "bob" && u["disabled"] == true)
    );
    let (status, body) = send(
        s.api(Method::PATCH, "/api/v1/users/admin", ADMIN_KEY)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "cannot_disable_self"));
    let (status, _) = send(
        s.api(Method::PATCH, "/api/v1/users/bob", ADMIN_KEY)
            .json(&json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(s.api(Method::GET, "/api/v1/links", &bob)).await;
    assert_eq!(status, 200, "enabled again");

    // Restarted with another SHORTLINK_ADMIN_KEY: the old one stops working.
    assert!(s.terminate().success());
    let dir = s.take_dir();
    let data = s.data_dir().to_owned();
    let new_admin = "sl_second_admin_key_abcdefghijklmnopqrstuv";
    let s = TestServer::start_with(Options {
        admin_key: Some(new_admin.into()),
        data: Some(data.clone()),
        ..Options::default()
    })
    .await;
    let (status, _) = send(s.api(Method::GET, "/api/v1/users", ADMIN_KEY)).await;
    assert_eq!(status, 401, "the previous admin key is retired");
    let (status, _) = send(s.api(Method::GET, "/api/v1/users", new_admin)).await;
    assert_eq!(status, 200);
    let (status, _) = send(s.api(Method::GET, "/api/v1/links", &bob)).await;
    assert_eq!(status, 200, "other keys are untouched");
    drop(s);

    // The command line lists, revokes and rotates keys, and disables users.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .env("SHORTLINK_DATA_DIR", &data)
            .env("SHORTLINK_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listing = run(&["key", "list", "--user", "bob"]);
    assert!(
        listing.contains("bob") && !listing.contains(&bob),
        "{listing}"
    );
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let rotated = run(&["key", "rotate", &id, "--grace-seconds", "0"]);
    let new_bob = rotated.trim().to_owned();
    assert!(new_bob.starts_with("sl_"), "{rotated}");
    let users = run(&["user", "list"]);
    assert!(users.contains("bob") && users.contains("admin"), "{users}");
    run(&["user", "disable", "bob"]);
    assert!(run(&["user", "list"]).contains("disabled"));
    run(&["user", "enable", "bob"]);
    let listing = run(&["key", "list", "--user", "bob"]);
    let new_id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_ne!(new_id, id, "rotation without grace left only the new key");
    run(&["key", "revoke", &new_id]);
    assert_eq!(run(&["key", "list", "--user", "bob"]).lines().count(), 1);

    let s = TestServer::start_with(Options {
        admin_key: Some(new_admin.into()),
        data: Some(data),
        ..Options::default()
    })
    .await;
    let (status, _) = send(s.api(Method::GET, "/api/v1/links", &new_bob)).await;
    assert_eq!(status, 401, "revoked from the command line");
    let (_, audit) = send(s.api(Method::GET, "/api/v1/audit", new_admin)).await;
    let text = audit.to_string();
    assert!(text.contains("user.disable") && text.contains("from the command line"));
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_find_disable_and_delete_anyones_links() {
    let s = TestServer::start().await;
    let carol = s.new_user("carol").await;
    let (status, bad) = s
        .create(
            &carol,
            json!({"url": "https://phish.example/login", "alias": "bank-login"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = s
        .create(
            &carol,
            json!({"url": "https://fine.example/", "alias": "fine-one"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(s.follow("bank-login").await.status(), 301);

    // Search by URL text, by owner, by code.
    let (status, found) = send(s.api(Method::GET, "/api/v1/admin/links?q=phish", ADMIN_KEY)).await;
    assert_eq!(status, 200);
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(
        (&items[0]["code"], &items[0]["owner"]),
        (&bad["code"], &json!("carol"))
    );
    let (_, by_owner) =
        send(s.api(Method::GET, "/api/v1/admin/links?owner=carol", ADMIN_KEY)).await;
    assert_eq!(by_owner["items"].as_array().unwrap().len(), 2);
    let (_, by_code) = send(s.api(Method::GET, "/api/v1/admin/links?q=fine-o", ADMIN_KEY)).await;
    assert_eq!(by_code["items"][0]["code"], "fine-one");
    let (status, _) = send(s.api(Method::GET, "/api/v1/admin/links", &carol)).await;
    assert_eq!(status, 403);

    // Disabled with a reason: visitors get the 410 page; the owner cannot undo it.
    let (status, view) = send(
        s.api(
            Method::POST,
            "/api/v1/admin/links/bank-login/disable",
            ADMIN_KEY,
        )
        .json(&json!({"reason": "phishing reported"})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["moderation"], "phishing reported");
    let (r, _) = s
        .wait_status("bank-login", 410, Duration::from_secs(5))
        .await;
    assert_eq!(r.status(), 410);
    let (status, body) = send(
        s.api(Method::PATCH, "/api/v1/links/bank-login", &carol)
            .json(&json!({"disabled": false})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "link_moderated"));
    let (_, own) = send(s.api(Method::GET, "/api/v1/links/bank-login", &carol)).await;
    assert_eq!(own["moderation"], "phishing reported", "the owner sees why");
    let (status, body) = send(
        s.api(
            Method::POST,
            "/api/v1/admin/links/bank-login/disable",
            ADMIN_KEY,
        )
        .json(&json!({"reason": ""})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_reason"));

    // Lifted, it redirects again; deleted, it is gone.
    let (status, _) = send(s.api(
        Method::POST,
        "/api/v1/admin/links/bank-login/enable",
        ADMIN_KEY,
    ))
    .await;
    assert_eq!(status, 200);
    let (r, _) = s
        .wait_status("bank-login", 301, Duration::from_secs(5))
        .await;
    assert_eq!(r.status(), 301);
    let (status, _) =
        send(s.api(Method::DELETE, "/api/v1/admin/links/bank-login", ADMIN_KEY)).await;
    assert_eq!(status, 204);
    let (r, _) = s
        .wait_status("bank-login", 404, Duration::from_secs(5))
        .await;
    assert_eq!(r.status(), 404);
    let (status, _) =
        send(s.api(Method::DELETE, "/api/v1/admin/links/bank-login", ADMIN_KEY)).await;
    assert_eq!(status, 404);

    let (_, audit) = send(s.api(Method::GET, "/api/v1/audit", ADMIN_KEY)).await;
    let entries = audit["items"].as_array().unwrap();
    for action in ["link.disable", "link.enable", "link.delete"] {
        let entry = entries.iter().find(|e| e["action"] == action).unwrap();
        assert_eq!(entry["actor"], "admin");
        assert_eq!(entry["target"], "/bank-login");
    }
    assert!(entries.iter().any(|e| e["detail"] == "phishing reported"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_reach_logs_or_response_headers_and_cookies_follow_the_scheme() {
    let s = TestServer::start_with(Options::default().env(
        "SHORTLINK_LOG",
        "debug,pingora_load_balancing=error,hyper=info,h2=info",
    ))
    .await;
    let dan = s.new_user("dan").await;

    // An event stream opened with ?access_token= and dropped at once.
    for _ in 0..3 {
        let r = s
            .client
            .get(format!("{}/api/v1/events?access_token={dan}", s.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        drop(r);
    }
    // A WebSocket offering only the bearer subprotocol gets no key back.
    let url = format!("{}/api/v1/ws", s.proxy.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer.{dan}").parse().unwrap(),
    );
    // The client refuses a handshake that selects no offered protocol; either way, what
    // the server answered is in the error or the response, and holds no key.
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => {
            let echoed = format!("{:?}", response.headers());
            assert!(!echoed.contains(&dan), "{echoed}");
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let echoed = format!("{:?}", response.headers());
            assert!(!echoed.contains(&dan), "{echoed}");
        }
        Err(e) => assert!(!e.to_string().contains(&dan), "{e}"),
    }

    // A protected link over plain HTTP: the cookie is not Secure.
    let (status, _) = s
        .create(
            &dan,
            json!({"url": "https://example.com/p", "alias": "plainpw", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 201);
    let r = s
        .client
        .post(format!("{}/plainpw", s.proxy))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body("password=pw")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        !cookie.contains("Secure"),
        "an untrusted X-Forwarded-Proto is ignored: {cookie}"
    );

    // CSV export: a cell a spreadsheet would run is escaped, and imports back.
    let (status, _) = s
        .create(
            &dan,
            json!({"url": "https://example.com/f", "alias": "-formula", "tags": ["-tag"]}),
        )
        .await;
    assert_eq!(status, 201);
    let csv = s
        .api(Method::GET, "/api/v1/links/export", &dan)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("'-formula") && csv.contains("'-tag"), "{csv}");
    assert!(
        !csv.contains(",-formula") && !csv.contains(",-tag"),
        "{csv}"
    );

    // The log holds no key, neither the user's nor the admin's.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !s.log_text().contains("/api/v1/events") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.log_text();
    for secret in [dan.as_str(), ADMIN_KEY, common::INTERNAL_SECRET] {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a secret reached the log: {leaks:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_tls_terminator_cookies_are_secure() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
    )
    .await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/p", "alias": "tlspw", "password": "pw"}),
        )
        .await;
    assert_eq!(status, 201);
    for (proto, secure) in [("https", true), ("http", false)] {
        let r = s
            .client
            .post(format!("{}/tlspw", s.proxy))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-proto", proto)
            .body("password=pw")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert_eq!(cookie.contains("; Secure"), secure, "{proto}: {cookie}");
        assert!(cookie.contains("HttpOnly"));
    }
}

/// The `sl_session=…` pair of a sign-in answer's `Set-Cookie`, and the whole header.
fn session_cookie(r: &reqwest::Response) -> (String, String) {
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, set)
}

async fn sign_in(s: &TestServer, name: &str, password: &str) -> reqwest::Response {
    s.client
        .post(format!("{}/api/v1/auth/login", s.proxy))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_a_password_and_sessions_are_listed_and_ended() {
    let s = TestServer::start().await;
    let _ = s.new_user("fay").await;
    let (status, _) = send(
        s.api(Method::PATCH, "/api/v1/users/fay", ADMIN_KEY)
            .json(&json!({"password": "correct horse battery"})),
    )
    .await;
    assert_eq!(status, 200);

    // Wrong password and unknown name: the same 401.
    for (name, password) in [("fay", "wrong"), ("nobody", "correct horse battery")] {
        let r = sign_in(&s, name, password).await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("set-cookie").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "invalid_credentials");
    }

    // Right: an HttpOnly, SameSite=Strict cookie (not Secure over plain HTTP).
    let r = sign_in(&s, "fay", "correct horse battery").await;
    assert_eq!(r.status(), 200);
    let (cookie, set) = session_cookie(&r);
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
    let me: Value = r.json().await.unwrap();
    assert_eq!(
        (&me["name"], &me["via"]),
        (&json!("fay"), &json!("session"))
    );
    let with = |method: Method, path: &str| {
        s.client
            .request(method, format!("{}{path}", s.proxy))
            .header("cookie", &cookie)
    };
    let (status, _) = send(with(Method::GET, "/api/v1/links")).await;
    assert_eq!(status, 200);
    // Writes need X-Requested-With, and a foreign Origin is refused.
    let (status, _) =
        send(with(Method::POST, "/api/v1/links").json(&json!({"url": "https://a.example/"}))).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        with(Method::POST, "/api/v1/links")
            .header("x-requested-with", "shortlink")
            .header("origin", "https://evil.example")
            .json(&json!({"url": "https://a.example/"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        with(Method::POST, "/api/v1/links")
            .header("x-requested-with", "shortlink")
            .json(&json!({"url": "https://a.example/"})),
    )
    .await;
    assert_eq!(status, 201);

    // Sessions: listed with the current one marked; another one ended from here.
    let r = sign_in(&s, "fay", "correct horse battery").await;
    let (other, _) = session_cookie(&r);
    let (_, sessions) = send(with(Method::GET, "/api/v1/sessions")).await;
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{sessions}");
    assert_eq!(items.iter().filter(|i| i["current"] == true).count(), 1);
    let other_id = items.iter().find(|i| i["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = send(
        with(Method::DELETE, &format!("/api/v1/sessions/{other_id}"))
            .header("x-requested-with", "shortlink"),
    )
    .await;
    assert_eq!(status, 204);
    let r = s
        .client
        .get(format!("{}/api/v1/links", s.proxy))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an ended session is refused");

    // A disabled user's session is refused; enabled again, it works.
    for (disabled, want) in [(true, 401), (false, 200)] {
        let (status, _) = send(
            s.api(Method::PATCH, "/api/v1/users/fay", ADMIN_KEY)
                .json(&json!({"disabled": disabled})),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = send(with(Method::GET, "/api/v1/links")).await;
        assert_eq!(status, want);
    }

    // Signing out ends the session and clears the cookie.
    let r = with(Method::POST, "/api/v1/auth/logout")
        .header("x-requested-with", "shortlink")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = send(with(Method::GET, "/api/v1/links")).await;
    assert_eq!(status, 401);

    // Guessing a person's password is bounded like a link's.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(sign_in(&s, "fay", "guess").await.status().as_u16());
    }
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 2, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_end_when_their_key_is_revoked() {
    let s = TestServer::start().await;
    let gus = s.new_user("gus").await;
    let (_, sse_key) = make_key(&s, &gus, json!({"label": "sse", "scopes": ["read"]})).await;
    let (_, ws_key) = make_key(&s, &gus, json!({"label": "ws", "scopes": ["read"]})).await;

    let sse = s
        .api(
            Method::GET,
            "/api/v1/events",
            sse_key["key"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let url = format!("{}/api/v1/ws", s.proxy.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ws_key["key"].as_str().unwrap())
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    for key in [&sse_key, &ws_key] {
        let id = key["id"].as_str().unwrap();
        let (status, _) = send(s.api(Method::DELETE, &format!("/api/v1/keys/{id}"), &gus)).await;
        assert_eq!(status, 204);
    }
    // Both end within the recheck interval (5 s), with time to spare for a busy machine.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut body = sse.bytes_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived its key");
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the WebSocket outlived its key");
    let frame = closed.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4401, "{frame:?}");
}
