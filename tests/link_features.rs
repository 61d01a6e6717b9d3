//! Link features through the real binary: password-protected links (page, cookie,
//! throttle, counted clicks), custom domains (same code on two hosts), and targeting by
//! device and country.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Options, TestServer, error_code, wait_total};
use reqwest::Method;
use serde_json::{Value, json};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

#[tokio::test]
async fn a_protected_link_needs_its_password_and_counts_the_click_after_it() {
    let s = TestServer::start().await;
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/secret", "alias": "locked", "password": "hunter2"}),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["password_protected"], true);
    let text = link.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("hunter2"),
        "the API never shows the password or its hash: {text}"
    );

    // Without the password: the page, not the target.
    let r = s.follow("locked").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(page.contains("type=\"password\"") && page.contains("action=\"/locked\""));

    // A wrong password shows the form again with a message, and sets no cookie.
    let r = s.post_password("locked", "wrong", &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("not right"));

    // The right one redirects, sets a cookie scoped to the code, and counts one click.
    let r = s.post_password("locked", "hunter2", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://example.com/secret");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("sl_pw="), "{cookie}");
    assert!(cookie.contains("Path=/locked") && cookie.contains("HttpOnly"));
    let stats = wait_total(&s.client, &s.proxy, "locked", 1).await;
    assert_eq!(stats["total"], 1, "{stats}");

    // The cookie lets the visitor through again (another click); a forged one does not.
    let value = cookie.split(';').next().unwrap().to_owned();
    let r = s
        .client
        .get(format!("{}/locked", s.proxy))
        .header("cookie", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://example.com/secret");
    let flipped = if value.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &value[..value.len() - 1]);
    let r = s
        .client
        .get(format!("{}/locked", s.proxy))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a forged cookie gets the password page");
    let stats = wait_total(&s.client, &s.proxy, "locked", 2).await;
    assert_eq!(stats["total"], 2, "{stats}");

    // Changing the password logs cookie holders out; removing it makes a plain redirect.
    let r = s
        .api(Method::PATCH, "/api/v1/links/locked", ADMIN_KEY)
        .json(&json!({"password": "new-one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .get(format!("{}/locked", s.proxy))
        .header("cookie", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old cookie no longer works");
    let r = s
        .api(Method::PATCH, "/api/v1/links/locked", ADMIN_KEY)
        .json(&json!({"password": null}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["password_protected"], false);
    let (r, _) = s.wait_status("locked", 301, Duration::from_secs(3)).await;
    assert_eq!(r.headers()["location"], "https://example.com/secret");

    // Bad passwords are refused with a clear error.
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/", "password": ""}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(error_code(&body), "invalid_password");
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/", "password": "x".repeat(257)}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(error_code(&body), "invalid_password");
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_ip_and_code() {
    let s = TestServer::start().await;
    for code in ["lockone", "locktwo"] {
        let (status, _) = s
            .create(
                ADMIN_KEY,
                json!({"url": "https://example.com/x", "alias": code, "password": "right"}),
            )
            .await;
        assert_eq!(status, 201);
    }
    for attempt in 1..=5 {
        let r = s.post_password("lockone", "nope", &[]).await;
        assert_eq!(r.status(), 401, "attempt {attempt}");
    }
    // The sixth wrong attempt, and even the right password, now wait.
    for password in ["nope", "right"] {
        let r = s.post_password("lockone", password, &[]).await;
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(r.text().await.unwrap().contains("Too many wrong passwords"));
    }
    // Another code from the same address is not affected.
    let r = s.post_password("locktwo", "right", &[]).await;
    assert_eq!(r.status(), 303);
    // A client cannot dodge the throttle with its own X-Forwarded-For: the proxy appends
    // the socket's address, and that last hop is the one counted.
    let r = s
        .client
        .post(format!("{}/lockone", s.proxy))
        .header("x-forwarded-for", "203.0.113.9")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("password=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let stats = wait_total(&s.client, &s.proxy, "lockone", 0).await;
    assert_eq!(stats["total"], 0, "no click counted for refused attempts");
}

async fn register_domain(s: &TestServer, body: Value) -> (u16, Value) {
    let r = s
        .api(Method::POST, "/api/v1/domains", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn follow_on(s: &TestServer, host: &str, code: &str, ua: Option<&str>) -> reqwest::Response {
    match ua {
        Some(ua) => {
            s.follow_with(code, &[("host", host), ("user-agent", ua)])
                .await
        }
        None => s.follow_with(code, &[("host", host)]).await,
    }
}

#[tokio::test]
async fn the_same_code_on_two_domains_goes_to_two_targets() {
    let s = TestServer::start().await;
    let alice = s.new_user("alice").await;
    let bob = s.new_user("bob").await;

    // Only admins register domains; names are validated and normalized.
    let r = s
        .api(Method::POST, "/api/v1/domains", &alice)
        .json(&json!({"name": "go.example.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, body) = register_domain(&s, json!({"name": "not a domain"})).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_domain"));
    let (status, body) =
        register_domain(&s, json!({"name": "Go.Example.TEST", "users": ["alice"]})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "go.example.test");
    assert_eq!(body["users"], json!(["alice"]));
    let (status, body) = register_domain(&s, json!({"name": "go.example.test"})).await;
    assert_eq!((status, error_code(&body)), (409, "domain_exists"));
    let (status, body) =
        register_domain(&s, json!({"name": "x.example.test", "users": ["nobody"]})).await;
    assert_eq!((status, error_code(&body)), (422, "unknown_user"));

    // Alice may use it, Bob may not; unknown domains are refused.
    let (status, on_domain) = s
        .create(
            &alice,
            json!({"url": "https://example.com/on-domain", "alias": "same", "domain": "go.example.test"}),
        )
        .await;
    assert_eq!(status, 201, "{on_domain}");
    assert_eq!(on_domain["domain"], "go.example.test");
    assert_eq!(on_domain["short_url"], "http://go.example.test/same");
    let (status, body) = s
        .create(
            &bob,
            json!({"url": "https://example.com/b", "domain": "go.example.test"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s
        .create(
            &alice,
            json!({"url": "https://example.com/b", "domain": "nowhere.example.test"}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "unknown_domain"));
    let (status, on_default) = s
        .create(
            &bob,
            json!({"url": "https://example.com/on-default", "alias": "same"}),
        )
        .await;
    assert_eq!(status, 201, "{on_default}");

    // The proxy routes by Host: case-insensitive, port ignored; unknown hosts get the
    // default domain. A new domain reaches the proxy with the route sync (at once when
    // its first link syncs, else within the 1 s domain refresh); until then its host is
    // the default domain's, so wait for it rather than race the sync.
    let r = eventually_redirects(
        &s,
        "GO.example.test:8080",
        "same",
        "https://example.com/on-domain",
    )
    .await;
    assert_eq!(r.status(), 301);
    let r = s.follow("same").await;
    assert_eq!(r.headers()["location"], "https://example.com/on-default");
    let r = follow_on(&s, "unknown.example.test", "same", None).await;
    assert_eq!(r.headers()["location"], "https://example.com/on-default");

    // The per-link endpoints take ?domain=.
    let got = s
        .get_json("/api/v1/links/same?domain=go.example.test", &alice)
        .await;
    assert_eq!(got["url"], "https://example.com/on-domain");
    let r = s
        .api(Method::GET, "/api/v1/links/same", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "alias 'same' on the default domain is Bob's"
    );

    // Listing: admins see every domain, users the ones they may use.
    let mine = s.get_json("/api/v1/domains", &bob).await;
    assert_eq!(mine["items"], json!([]));
    let all = s.get_json("/api/v1/domains", ADMIN_KEY).await;
    assert_eq!(all["items"][0]["name"], "go.example.test");

    // Unregistering the domain makes its host the default domain's again (within the
    // proxy's domain refresh), keeping the link stored.
    let r = s
        .api(Method::DELETE, "/api/v1/domains/go.example.test", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually_redirects(
        &s,
        "go.example.test",
        "same",
        "https://example.com/on-default",
    )
    .await;
}

/// Follows `code` on `host` until it redirects to `want` (the proxy's view of domains
/// trails the store by up to the 1 s domain refresh); fails after 5 s.
async fn eventually_redirects(
    s: &TestServer,
    host: &str,
    code: &str,
    want: &str,
) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = follow_on(s, host, code, None).await;
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        if location.as_deref() == Some(want) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{host}/{code} still answers {} {location:?}, want {want}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unknown_hosts_get_the_configured_fallback() {
    let s = TestServer::start_with(Options::default().env(
        "SHORTLINK_PROXY__UNKNOWN_HOST_REDIRECT",
        "https://www.example.com/",
    ))
    .await;
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/known", "alias": "known"}),
        )
        .await;
    assert_eq!(status, 201);
    let r = follow_on(&s, "stranger.example.test", "known", None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://www.example.com/");
    let r = s.follow("known").await;
    assert_eq!(
        r.status(),
        301,
        "the public URL's host is the default domain"
    );
    assert_eq!(r.headers()["location"], "https://example.com/known");
}

#[tokio::test]
async fn targeting_sends_iphone_android_and_countries_to_their_targets() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__COUNTRY_HEADER", "cf-ipcountry"),
    )
    .await;
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({
                "url": "https://example.com/app",
                "alias": "getapp",
                "targeting": {
                    "ios": "https://apps.apple.com/app/id1",
                    "android": "https://play.google.com/store/apps/details?id=x",
                    "countries": {"de": "https://example.de/app"}
                }
            }),
        )
        .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(
        link["targeting"]["countries"]["DE"],
        "https://example.de/app"
    );

    let host = s.proxy.trim_start_matches("http://").to_owned();
    let r = follow_on(&s, &host, "getapp", Some(IPHONE)).await;
    assert_eq!(r.headers()["location"], "https://apps.apple.com/app/id1");
    let r = follow_on(&s, &host, "getapp", Some(ANDROID)).await;
    assert_eq!(
        r.headers()["location"],
        "https://play.google.com/store/apps/details?id=x"
    );
    let r = follow_on(&s, &host, "getapp", Some(DESKTOP)).await;
    assert_eq!(r.headers()["location"], "https://example.com/app");
    let r = s
        .follow_with("getapp", &[("user-agent", DESKTOP), ("cf-ipcountry", "DE")])
        .await;
    assert_eq!(r.headers()["location"], "https://example.de/app");
    let r = s
        .follow_with("getapp", &[("user-agent", IPHONE), ("cf-ipcountry", "DE")])
        .await;
    assert_eq!(
        r.headers()["location"],
        "https://apps.apple.com/app/id1",
        "device rules come before country rules"
    );
    // Every targeted redirect is a click of the link.
    let stats = wait_total(&s.client, &s.proxy, "getapp", 5).await;
    assert_eq!(stats["total"], 5, "{stats}");

    // Bad rules are refused by name; removing the rules restores the plain redirect.
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/", "targeting": {"android": "ftp://x"}}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_targeting"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targeting.android")
    );
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/", "targeting": {"countries": {"Germany": "https://e.de/"}}}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_targeting"));
    let r = s
        .api(Method::PATCH, "/api/v1/links/getapp", ADMIN_KEY)
        .json(&json!({"targeting": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = follow_on(&s, &host, "getapp", Some(IPHONE)).await;
        if r.headers()["location"] == "https://example.com/app" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "targeting removal not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
