//! Webhooks against the real binary and a real HTTP receiver on loopback: signed
//! (checked with the Standard Webhooks library), in order per endpoint through failures
//! and timeouts, logged, redelivered with the same id, disabled after a failing retry
//! window, and never sent to private addresses unless allowed.

mod common;

use std::time::Duration;

use common::receiver::{Mode, Received, Receiver};
use common::{ADMIN_KEY, Options, TestServer, error_code};
use reqwest::Method;
use serde_json::{Value, json};

/// A server whose webhooks may reach loopback, with short timeouts and retries.
fn options(window_seconds: u64) -> Options {
    Options::default()
        .env(
            "SHORTLINK_CONTROL__WEBHOOKS__ALLOWED_NETWORKS",
            "127.0.0.0/8",
        )
        .env("SHORTLINK_CONTROL__WEBHOOKS__TIMEOUT_MS", "500")
        .env("SHORTLINK_CONTROL__WEBHOOKS__LEASE_SECONDS", "2")
        .env("SHORTLINK_CONTROL__WEBHOOKS__FIRST_RETRY_MS", "100")
        .env(
            "SHORTLINK_CONTROL__WEBHOOKS__MAX_RETRY_INTERVAL_SECONDS",
            "1",
        )
        .env("SHORTLINK_CONTROL__WEBHOOKS__MAX_PER_USER", "3")
        .env(
            "SHORTLINK_CONTROL__WEBHOOKS__RETRY_WINDOW_SECONDS",
            &window_seconds.to_string(),
        )
        .env("SHORTLINK_CONTROL__EVENTS_POLL_MS", "100")
}

async fn register(server: &TestServer, body: Value) -> (u16, Value) {
    let r = server
        .api(Method::POST, "/api/v1/webhooks", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn link(server: &TestServer, alias: &str) {
    let (status, body) = server
        .create(
            ADMIN_KEY,
            json!({"url": format!("https://example.com/{alias}"), "alias": alias}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The link code a `link.created` message is about.
fn code_of(r: &Received) -> String {
    r.json()["data"]["code"].as_str().unwrap_or("").to_owned()
}

/// The endpoint's delivery log (100 newest) once `done` holds for it; panics after 20 s.
async fn wait_log(
    server: &TestServer,
    id: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = server
            .get_json(
                &format!("/api/v1/webhooks/{id}/deliveries?limit=100"),
                ADMIN_KEY,
            )
            .await;
        if done(log["items"].as_array().unwrap()) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never showed {what}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(secret: &str, r: &Received) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(r.body.as_bytes(), &r.headers)
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e}", r.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_in_order_through_failures_and_timeouts() {
    let server = TestServer::start_with(options(600)).await;
    let receiver = Receiver::start(Mode::Status(500)).await;
    let (status, created) = register(
        &server,
        json!({"url": receiver.url, "events": ["link.created"]}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once: never listed or read back.
    let listed = server.get_json("/api/v1/webhooks", ADMIN_KEY).await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&secret));

    // The receiver fails: the first event is tried again and again.
    link(&server, "hook-a").await;
    receiver
        .wait_until("two failed attempts", Duration::from_secs(20), |got| {
            got.len() >= 2
        })
        .await;
    // Then it stops answering: attempts time out.
    receiver.set(Mode::Hang);
    link(&server, "hook-b").await;
    link(&server, "hook-c").await;
    receiver
        .wait_until(
            "an attempt that timed out",
            Duration::from_secs(20),
            |got| got.iter().any(|r| r.mode == Mode::Hang),
        )
        .await;
    // Then it recovers: everything arrives, in order.
    receiver.set(Mode::Status(204));
    link(&server, "hook-d").await;
    link(&server, "hook-e").await;
    let got = receiver
        .wait_until("all five events accepted", Duration::from_secs(30), |got| {
            got.iter().filter(|r| r.accepted()).count() >= 5
        })
        .await;
    let accepted: Vec<String> = got.iter().filter(|r| r.accepted()).map(code_of).collect();
    assert_eq!(
        accepted,
        ["hook-a", "hook-b", "hook-c", "hook-d", "hook-e"],
        "each event accepted once, in order"
    );
    // Every attempt is signed as the specification says, with a body of the event.
    for r in &got {
        verify(&secret, r);
        let body = r.json();
        assert_eq!(body["type"], "link.created", "{body}");
        assert!(body["timestamp"].as_str().is_some(), "{body}");
        assert_eq!(r.id(), format!("msg_{}", body["id"]));
    }
    // Retries of one event carry the same webhook-id.
    let first = got
        .iter()
        .find(|r| code_of(r) == "hook-a")
        .unwrap()
        .id()
        .to_owned();
    let tries_of_a = got.iter().filter(|r| r.id() == first).count();
    assert!(tries_of_a >= 3, "hook-a was tried {tries_of_a} times");

    // The delivery log tells failures, their next try, and deliveries.
    // (The log is written in steps: wait for the last delivery to be in it.)
    let log = wait_log(&server, &id, "five deliveries", |items| {
        items.iter().filter(|d| d["outcome"] == "delivered").count() >= 5
    })
    .await;
    let items = log["items"].as_array().unwrap();
    assert!(items.len() >= got.len(), "{log}");
    let failed = items
        .iter()
        .find(|d| d["outcome"] == "failed" && d["status"] == 500)
        .unwrap();
    assert!(failed["next_try"].as_str().is_some(), "{failed}");
    assert!(
        items.iter().any(|d| d["outcome"] == "failed"
            && d["error"]
                .as_str()
                .unwrap_or("")
                .contains("no answer within 500 ms")),
        "a timeout is logged: {log}"
    );
    let delivered: Vec<&Value> = items
        .iter()
        .filter(|d| d["outcome"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 5, "{log}");
    // A page of one, then the next page by cursor.
    let page = server
        .get_json(
            &format!("/api/v1/webhooks/{id}/deliveries?limit=1"),
            ADMIN_KEY,
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = server
        .get_json(
            &format!("/api/v1/webhooks/{id}/deliveries?limit=1&cursor={cursor}"),
            ADMIN_KEY,
        )
        .await;
    assert_eq!(next["items"][0]["id"], items[1]["id"]);

    // A redelivery on request carries the original webhook-id.
    let event_id = delivered.last().unwrap()["event_id"].as_i64().unwrap();
    let before = receiver.received().len();
    let r = server
        .api(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/events/{event_id}/redeliver"),
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let attempt: Value = r.json().await.unwrap();
    assert_eq!(attempt["outcome"], "delivered", "{attempt}");
    assert_eq!(attempt["manual"], true);
    let again = &receiver.received()[before];
    assert_eq!(again.id(), format!("msg_{event_id}"));
    assert_eq!(again.id(), attempt["message_id"].as_str().unwrap());
    verify(&secret, again);

    // A test message.
    let r = server
        .api(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    let test: Value = r.json().await.unwrap();
    assert_eq!(test["outcome"], "delivered", "{test}");
    assert_eq!(test["status"], 204);
    let sent = receiver.received().last().unwrap().clone();
    assert_eq!(sent.json()["type"], "webhook.test");
    verify(&secret, &sent);

    // A rotated secret: the new one signs, and the old one too during the grace.
    let r = server
        .api(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate"),
            ADMIN_KEY,
        )
        .json(&json!({"grace_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    server
        .api(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/test"),
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    let sent = receiver.received().last().unwrap().clone();
    verify(&new_secret, &sent);
    verify(&secret, &sent);

    // Unknown ids, bad event types, and the per-user limit.
    let r = server
        .api(
            Method::GET,
            "/api/v1/webhooks/wh_aaaaaaaaaaaaaaaaaaaa",
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(&r.json().await.unwrap()), "webhook_not_found");
    let (status, body) = register(
        &server,
        json!({"url": receiver.url, "events": ["link.exploded"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    for _ in 0..2 {
        assert_eq!(register(&server, json!({"url": receiver.url})).await.0, 201);
    }
    let (status, body) = register(&server, json!({"url": receiver.url})).await;
    assert_eq!((status, error_code(&body)), (409, "too_many_webhooks"));

    // Deleted: nothing more is sent.
    let r = server
        .api(Method::DELETE, &format!("/api/v1/webhooks/{id}"), ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = server
        .api(Method::GET, &format!("/api/v1/webhooks/{id}"), ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_the_whole_window_is_disabled_and_its_owner_told() {
    let server = TestServer::start_with(options(2)).await;
    let failing = Receiver::start(Mode::Status(503)).await;
    let watcher = Receiver::start(Mode::Status(200)).await;
    let (status, created) = register(&server, json!({"url": failing.url})).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = register(
        &server,
        json!({"url": watcher.url, "events": ["webhook.disabled"]}),
    )
    .await;
    assert_eq!(status, 201);
    link(&server, "doomed").await;
    let told = watcher
        .wait_until("webhook.disabled", Duration::from_secs(30), |got| {
            got.iter().any(|r| r.json()["type"] == "webhook.disabled")
        })
        .await;
    let data = &told[0].json()["data"];
    assert_eq!(data["id"], id.as_str(), "{data}");
    assert_eq!(data["reason"], "failing");
    assert!(!told[0].body.contains(created["secret"].as_str().unwrap()));
    let hook = server
        .get_json(&format!("/api/v1/webhooks/{id}"), ADMIN_KEY)
        .await;
    assert_eq!(hook["enabled"], false, "{hook}");
    assert_eq!(hook["disabled_reason"], "failing");
    let log = server
        .get_json(&format!("/api/v1/webhooks/{id}/deliveries"), ADMIN_KEY)
        .await;
    assert_eq!(log["items"][0]["outcome"], "given_up", "{log}");
    let attempts = failing.received().len();
    assert!(attempts >= 2, "retried within the window: {attempts}");
    // Turned back on by its owner, it delivers what comes next.
    let r = server
        .api(Method::PATCH, &format!("/api/v1/webhooks/{id}"), ADMIN_KEY)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    let hook: Value = r.json().await.unwrap();
    assert_eq!(
        (hook["enabled"].clone(), hook["disabled_reason"].clone()),
        (json!(true), Value::Null)
    );
    failing.set(Mode::Status(200));
    link(&server, "revived").await;
    failing
        .wait_until("the next event", Duration::from_secs(20), |got| {
            got.iter().any(|r| r.accepted() && code_of(r) == "revived")
        })
        .await;
    assert!(
        !failing
            .received()
            .iter()
            .any(|r| r.accepted() && code_of(r) == "doomed"),
        "the given-up event is not sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_when_registered_and_when_delivering() {
    let mut allowing = TestServer::start_with(options(600)).await;
    let receiver = Receiver::start(Mode::Status(200)).await;
    // By name: the refusal at delivery comes from the HTTP client's resolver.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let (status, created) = register(&allowing, json!({"url": by_name})).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let data = allowing.data.clone();
    let dir = allowing.take_dir();
    allowing.terminate();

    // The same store, without the allowance.
    let server = TestServer::start_with(Options {
        data: Some(data),
        ..Options::default()
    })
    .await;
    for (url, code) in [
        ("http://127.0.0.1:9/", "webhook_target_forbidden"),
        ("http://localhost/", "webhook_target_forbidden"),
        ("http://[::1]/", "webhook_target_forbidden"),
        (
            "http://169.254.169.254/latest/meta-data",
            "webhook_target_forbidden",
        ),
        ("http://10.0.0.1/", "webhook_target_forbidden"),
        ("http://[::ffff:192.168.0.1]/", "webhook_target_forbidden"),
        ("ftp://example.com/", "webhook_url_invalid"),
        ("http://user:pass@example.com/", "webhook_url_invalid"),
        ("/relative", "webhook_url_invalid"),
    ] {
        let (status, body) = register(&server, json!({"url": url})).await;
        assert_eq!((status, error_code(&body)), (422, code), "{url}: {body}");
    }
    // The endpoint registered while allowed is refused at delivery.
    link(&server, "private").await;
    let log = wait_log(&server, &id, "a refused attempt", |items| !items.is_empty()).await;
    let error = log["items"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("loopback"), "{log}");
    assert!(!error.contains(&by_name), "no URL in errors: {log}");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_delays_no_other_endpoint() {
    let server = TestServer::start_with(
        options(600)
            .env("SHORTLINK_CONTROL__WEBHOOKS__TIMEOUT_MS", "30000")
            .env("SHORTLINK_CONTROL__WEBHOOKS__LEASE_SECONDS", "60"),
    )
    .await;
    let stuck = Receiver::start(Mode::Hang).await;
    let quick = Receiver::start(Mode::Status(200)).await;
    for url in [&stuck.url, &quick.url] {
        let (status, body) = register(&server, json!({"url": url})).await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 0..20 {
        link(&server, &format!("busy-{i}")).await;
    }
    // All 20 reach the answering receiver while the first request to the other one is
    // still waiting for its answer (30 s): one request in flight per endpoint.
    quick
        .wait_until("all 20 events", Duration::from_secs(20), |got| {
            got.iter().filter(|r| r.accepted()).count() >= 20
        })
        .await;
    assert_eq!(
        stuck.received().len(),
        1,
        "one request in flight to the stuck endpoint"
    );
}
