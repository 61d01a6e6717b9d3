//! The links API over real sockets, through the proxy port as users reach it.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, TestServer, error_code, status_and_code};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn create_redirects_within_a_second_with_the_right_headers() {
    let s = TestServer::start().await;
    let (status, body) = s
        .create(ADMIN_KEY, json!({"url": "https://example.com/a?b=1#c"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(body["short_url"], format!("{}/{code}", s.proxy));
    assert_eq!(body["url"], "https://example.com/a?b=1#c");
    assert_eq!(body["redirect"], 301);
    assert_eq!(body["state"], "live");

    let (r, lag) = s.wait_status(&code, 301, Duration::from_secs(1)).await;
    eprintln!("sync lag (create → proxy 301): {lag:?}");
    assert_eq!(r.status(), 301, "live on the proxy within 1 s");
    assert_eq!(r.headers()["location"], "https://example.com/a?b=1#c");
    assert_eq!(r.headers()["cache-control"], "private, max-age=90");
    assert_eq!(r.headers()["content-length"], "0");

    let head = s
        .client
        .head(format!("{}/{code}", s.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 301);
    assert_eq!(head.headers()["location"], "https://example.com/a?b=1#c");

    // The control plane answers the same API directly too.
    let direct = s
        .client
        .get(format!("{}/api/v1/links/{code}", s.control))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
}

#[tokio::test]
async fn aliases_follow_the_rules() {
    let s = TestServer::start().await;
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://a.example/", "alias": "My_Alias-1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["code"], "My_Alias-1");
    let (r, _) = s
        .wait_status("My_Alias-1", 301, Duration::from_secs(2))
        .await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        s.follow("my_alias-1").await.status(),
        404,
        "aliases are case-sensitive"
    );

    let cases: &[(&str, u16, &str)] = &[
        ("My_Alias-1", 409, "alias_taken"),
        ("api", 422, "alias_reserved"),
        ("Healthz", 422, "alias_reserved"),
        ("ab", 422, "alias_invalid"),
        ("has space", 422, "alias_invalid"),
        ("dot.ted", 422, "alias_invalid"),
    ];
    for (alias, want_status, want_code) in cases {
        let (status, body) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://b.example/", "alias": alias}),
            )
            .await;
        assert_eq!(status, *want_status, "alias {alias:?}: {body}");
        assert_eq!(error_code(&body), *want_code, "alias {alias:?}");
    }
    let long = "a".repeat(65);
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://b.example/", "alias": long}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "alias_invalid"));
}

#[tokio::test]
async fn target_urls_are_validated_and_normalized() {
    let s = TestServer::start().await;
    let too_long = format!("https://long.example/{}", "a".repeat(8192));
    let cases: Vec<(String, &str)> = vec![
        ("ftp://example.com/file".into(), "url_scheme_not_allowed"),
        ("javascript:alert(1)".into(), "url_scheme_not_allowed"),
        ("/relative".into(), "url_not_absolute"),
        ("example.com".into(), "url_not_absolute"),
        (
            "https://user:pass@example.com/".into(),
            "url_has_credentials",
        ),
        ("https://".into(), "url_no_host"),
        ("".into(), "url_empty"),
        (too_long, "url_too_long"),
        (
            "https://example.com/\r\nSet-Cookie: x=1".into(),
            "url_invalid_characters",
        ),
        ("https://a b.com/".into(), "url_invalid_characters"),
        // The service's own host (from the public URL) is always blocked.
        (format!("{}/x", s.proxy), "url_host_blocked"),
        ("http://sub.127.0.0.1.example/".into(), "NOT_BLOCKED"),
    ];
    for (url, want) in cases {
        let (status, body) = s.create(ADMIN_KEY, json!({"url": url})).await;
        if want == "NOT_BLOCKED" {
            assert_eq!(status, 201, "{url}: {body}");
            continue;
        }
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(error_code(&body), want, "{url}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://Bücher.Example/straße?q=a b"}),
        )
        .await;
    assert_eq!(status, 422, "inner spaces are refused: {body}");
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "  https://Bücher.Example/straße  "}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["url"], "https://xn--bcher-kva.example/stra%C3%9Fe",
        "IDN host normalized"
    );
    let code = body["code"].as_str().unwrap();
    let (r, _) = s.wait_status(code, 301, Duration::from_secs(2)).await;
    assert_eq!(
        r.headers()["location"],
        "https://xn--bcher-kva.example/stra%C3%9Fe"
    );

    // Encoded CR/LF stays encoded: no header can be injected through Location.
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://e.example/%0d%0aSet-Cookie:%20a=b"}),
        )
        .await;
    assert_eq!(status, 201);
    let (r, _) = s
        .wait_status(body["code"].as_str().unwrap(), 301, Duration::from_secs(2))
        .await;
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(
        r.headers()["location"],
        "https://e.example/%0d%0aSet-Cookie:%20a=b"
    );
}

#[tokio::test]
async fn redirect_status_and_cache_control_per_link() {
    let s = TestServer::start().await;
    for (status, cache) in [
        (301, "private, max-age=90"),
        (302, "no-store"),
        (307, "no-store"),
        (308, "private, max-age=90"),
    ] {
        let (created, body) = s
            .create(
                ADMIN_KEY,
                json!({"url": format!("https://status.example/{status}"), "redirect": status}),
            )
            .await;
        assert_eq!(created, 201, "{body}");
        assert_eq!(body["redirect"], status);
        let (r, _) = s
            .wait_status(
                body["code"].as_str().unwrap(),
                status,
                Duration::from_secs(2),
            )
            .await;
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["cache-control"], cache, "status {status}");
    }
    for bad in [200, 303, 404] {
        let (status, body) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://status.example/", "redirect": bad}),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "invalid_redirect"),
            "redirect {bad}"
        );
    }
}

#[tokio::test]
async fn expiry_disable_and_max_clicks_answer_410() {
    let s = TestServer::start().await;
    let (_, past) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://exp.example/", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(past["state"], "expired");
    let code = past["code"].as_str().unwrap().to_owned();
    let (r, _) = s.wait_status(&code, 410, Duration::from_secs(2)).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("no longer available"));

    // Clearing the expiry brings it back.
    let r = s
        .api(Method::PATCH, &format!("/api/v1/links/{code}"), ADMIN_KEY)
        .json(&json!({"expires_at": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(
        s.wait_status(&code, 301, Duration::from_secs(1))
            .await
            .0
            .status(),
        301
    );

    // Disable, then enable.
    let r = s
        .api(Method::PATCH, &format!("/api/v1/links/{code}"), ADMIN_KEY)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "disabled");
    let (r, _) = s.wait_status(&code, 410, Duration::from_secs(1)).await;
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["x-shortlink-state"], "disabled");

    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://exp.example/", "expires_at": "next tuesday"}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_expires_at"));

    // max_clicks: exactly two redirects, then 410, and the clicks are counted.
    let (status, capped) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://cap.example/", "max_clicks": 2}),
        )
        .await;
    assert_eq!(status, 201);
    let code = capped["code"].as_str().unwrap().to_owned();
    let (first, _) = s.wait_status(&code, 301, Duration::from_secs(1)).await;
    assert_eq!(first.status(), 301);
    assert_eq!(s.follow(&code).await.status(), 301);
    let third = s.follow(&code).await;
    assert_eq!(third.status(), 410);
    assert_eq!(third.headers()["x-shortlink-state"], "max-clicks-reached");
    let mut clicks = Value::Null;
    for _ in 0..50 {
        let r = s
            .api(Method::GET, &format!("/api/v1/links/{code}"), ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        clicks = body["clicks"].clone();
        if clicks == 2 {
            assert_eq!(body["state"], "exhausted");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(clicks, 2, "both redirects are counted in the store");

    for bad in [json!(0), json!(-1), json!(5_000_000_000u64), json!("ten")] {
        let (status, _) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://cap.example/", "max_clicks": bad}),
            )
            .await;
        assert_eq!(status, 422, "max_clicks {bad}");
    }
}

#[tokio::test]
async fn patch_and_delete_reach_the_proxy() {
    let s = TestServer::start().await;
    let (_, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://before.example/", "alias": "moving"}),
        )
        .await;
    assert_eq!(body["code"], "moving");
    s.wait_status("moving", 301, Duration::from_secs(1)).await;

    let r = s
        .api(Method::PATCH, "/api/v1/links/moving", ADMIN_KEY)
        .json(&json!({"url": "https://after.example/", "tags": ["new"], "redirect": 302}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["tags"], json!(["new"]));
    let start = std::time::Instant::now();
    loop {
        let r = s.follow("moving").await;
        if r.headers()
            .get("location")
            .is_some_and(|l| l == "https://after.example/")
        {
            assert_eq!(r.status(), 302);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "update live within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let r = s
        .api(Method::PATCH, "/api/v1/links/moving", ADMIN_KEY)
        .json(&json!({"url": "mailto:someone@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    let r = s
        .api(Method::DELETE, "/api/v1/links/moving", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (r, _) = s.wait_status("moving", 404, Duration::from_secs(1)).await;
    assert_eq!(r.status(), 404, "delete live within 1 s");
    let r = s
        .api(Method::GET, "/api/v1/links/moving", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .api(Method::DELETE, "/api/v1/links/moving", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A refusal sent before the body is read closes the upstream connection; the proxy must
/// not send the next request into it (a `POST` it cannot retry would become a 502).
#[tokio::test]
async fn refused_bodies_do_not_break_the_next_request() {
    let s = TestServer::start().await;
    let body = json!({"url": "https://refused.example/"});
    let r = s
        .client
        .post(format!("{}/api/v1/links", s.control))
        .bearer_auth("sl_wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "the control plane says it closes a connection whose body it left unread"
    );
    for round in 0..200 {
        let (status, _) = s.create("sl_wrong", body.clone()).await;
        assert_eq!(status, 401, "round {round}: the refusal");
        let (status, created) = s
            .create(
                ADMIN_KEY,
                json!({"url": format!("https://after-refusal.example/{round}")}),
            )
            .await;
        assert_eq!(
            status, 201,
            "round {round}: the request after it: {created}"
        );
    }
}

#[tokio::test]
async fn authentication_and_roles() {
    let s = TestServer::start().await;
    let r = s
        .client
        .get(format!("{}/api/v1/links", s.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(&r.json().await.unwrap()), "unauthorized");
    let r = s
        .api(Method::GET, "/api/v1/links", "sl_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .get(format!("{}/api/v1/links", s.proxy))
        .header("authorization", format!("Basic {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, _) = s
        .create("sl_wrong", json!({"url": "https://x.example/"}))
        .await;
    assert_eq!(status, 401);

    let user = s.new_user("plain-user").await;
    let r = s
        .api(Method::POST, "/api/v1/users", &user)
        .json(&json!({"name": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (403, "forbidden".to_owned()));
    let r = s
        .api(Method::POST, "/api/v1/keys", &user)
        .json(&json!({"user": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = s
        .api(Method::POST, "/api/v1/users", ADMIN_KEY)
        .json(&json!({"name": "plain-user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (409, "user_exists".to_owned()));
    let r = s
        .api(Method::POST, "/api/v1/users", ADMIN_KEY)
        .json(&json!({"name": "x", "role": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_role".into()));
    let r = s
        .api(Method::POST, "/api/v1/users", ADMIN_KEY)
        .json(&json!({"name": "bad name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = s
        .api(Method::POST, "/api/v1/keys", ADMIN_KEY)
        .json(&json!({"user": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .api(Method::POST, "/api/v1/users", ADMIN_KEY)
        .json(&json!({"name": "second-admin", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "admin");
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let s = TestServer::start().await;
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut r = s.api(Method::POST, "/api/v1/links", ADMIN_KEY).body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let r = send("{not json", Some("application/json")).await.unwrap();
    assert_eq!(status_and_code(r).await, (400, "invalid_json".into()));
    let r = send(r#"{"url": 5}"#, Some("application/json"))
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_body".into()));
    let r = send(r#"{"alias": "x"}"#, Some("application/json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "missing url");
    let r = send(
        r#"{"url": "https://x.example/", "expire_at": "2030-01-01T00:00:00Z"}"#,
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        422,
        "a misspelled field is an error, not silently ignored"
    );
    let r = send(r#"{"url": "https://x.example/"}"#, None)
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (415, "unsupported_media_type".into())
    );
    let r = send(
        r#"{"url": "https://x.example/", "password": ""}"#,
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(status_and_code(r).await, (422, "invalid_password".into()));
    let r = send(
        r#"{"url": "https://x.example/", "domain": "other.example"}"#,
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(status_and_code(r).await, (422, "unknown_domain".into()));
    let r = send(
        r#"{"url": "https://x.example/", "tags": ["ok", "not ok"]}"#,
        Some("application/json"),
    )
    .await
    .unwrap();
    assert_eq!(status_and_code(r).await, (422, "tags_invalid".into()));

    // Over the 64 KiB body limit: 413, through the proxy and directly.
    let huge = format!(
        r#"{{"url": "https://x.example/{}"}}"#,
        "a".repeat(70 * 1024)
    );
    for base in [&s.proxy, &s.control] {
        let r = s
            .client
            .post(format!("{base}/api/v1/links"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            status_and_code(r).await,
            (413, "payload_too_large".to_owned()),
            "via {base}"
        );
    }
    let list: Value = s.get_json("/api/v1/links", ADMIN_KEY).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing was created by bad requests: {list}"
    );
}

#[tokio::test]
async fn classic_shorten_unknown_paths_and_methods() {
    let s = TestServer::start().await;
    let r = s
        .api(Method::POST, "/shorten", ADMIN_KEY)
        .json(&json!({"original_url": "https://classic.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let short = body["short_url"].as_str().unwrap();
    let code = short.rsplit('/').next().unwrap();
    assert_eq!(
        s.wait_status(code, 301, Duration::from_secs(1))
            .await
            .0
            .status(),
        301
    );
    let r = s
        .client
        .post(format!("{}/shorten", s.proxy))
        .json(&json!({"original_url": "https://x.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = s
        .client
        .get(format!("{}/api/v1/nothing-here", s.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (404, "not_found".to_owned()));
    let r = s
        .api(Method::PUT, "/api/v1/links", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (405, "method_not_allowed".to_owned())
    );

    // Unknown codes and non-code paths at the proxy.
    let r = s.follow("NoSuchCode").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.text().await.unwrap().contains("Link not found"));
    assert_eq!(
        s.client
            .get(format!("{}/healthz", s.proxy))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A POST to a code path is not a redirect: it is forwarded (and the API has no such route).
    let r = s
        .client
        .post(format!("{}/{code}", s.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
