//! Visitor pages (404, 410, password) through the real binary: one look, served with a
//! strict Content-Security-Policy, and an operator's own templates in their place.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Options, TestServer};
use serde_json::json;

/// The page at `code` on the proxy: (status, CSP header, body).
async fn page(s: &TestServer, code: &str) -> (u16, String, String) {
    let r = s.follow(code).await;
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, csp, r.text().await.unwrap())
}

#[tokio::test]
async fn built_in_pages_share_one_look_and_an_operators_templates_replace_them() {
    let pages = tempfile::tempdir().unwrap();
    std::fs::write(
        pages.path().join("404.html"),
        "<!doctype html><title>{{title}}</title><main class=\"ours\">{{body}}</main>",
    )
    .unwrap();
    std::fs::write(
        pages.path().join("password.html"),
        "<!doctype html><title>{{title}}</title><main class=\"ours-locked\">{{body}}</main>",
    )
    .unwrap();
    let plain = TestServer::start().await;
    let own = TestServer::start_with(
        Options::default().env("SHORTLINK_PAGES_DIR", pages.path().to_str().unwrap()),
    )
    .await;
    for s in [&plain, &own] {
        for body in [
            json!({"url": "https://pages.example/gone", "alias": "gone-page", "expires_at": "2001-01-01T00:00:00Z"}),
            json!({"url": "https://pages.example/locked", "alias": "locked-page", "password": "open sesame"}),
        ] {
            let (status, created) = s.create(ADMIN_KEY, body).await;
            assert_eq!(status, 201, "{created}");
        }
        s.wait_status("gone-page", 410, Duration::from_secs(2))
            .await;
    }

    // The built-in pages: the web page's look, light and dark, and no scripts allowed.
    for (code, status, text) in [
        ("no-such-page", 404, "Link not found"),
        ("gone-page", 410, "no longer available"),
        ("locked-page", 200, "type=\"password\""),
    ] {
        let (got, csp, html) = page(&plain, code).await;
        assert_eq!(got, status, "{code}");
        assert!(html.contains(text), "{code}: {html}");
        assert!(html.contains("<header>shortlink</header>"), "{code}");
        assert!(html.contains("prefers-color-scheme: dark"), "{code}");
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("script-src"),
            "{code}: {csp}"
        );
    }

    // The operator's: their 404 and password pages, the built-in 410.
    let (status, csp, html) = page(&own, "no-such-page").await;
    assert_eq!(status, 404);
    assert!(
        html.contains("<main class=\"ours\"><p>There is no short link"),
        "{html}"
    );
    assert!(html.contains("<title>Link not found</title>"));
    assert!(csp.contains("default-src 'none'"));
    let (status, _, html) = page(&own, "locked-page").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<main class=\"ours-locked\">") && html.contains("type=\"password\""),
        "{html}"
    );
    let (status, _, html) = page(&own, "gone-page").await;
    assert_eq!(status, 410);
    assert!(html.contains("<header>shortlink</header>"), "{html}");
}

/// Polls `GET /{code}` with `host` until it answers `status` (or 5 s pass); the response.
async fn wait_for(s: &TestServer, code: &str, host: &str, status: u16) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.follow_with(code, &[("host", host)]).await;
        if r.status().as_u16() == status || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /{code}` until its `Location` is `want` (or 5 s pass); the response.
async fn wait_location(s: &TestServer, code: &str, want: &str) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.follow(code).await;
        if answer(&r).1 == want || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (status, Location, X-Shortlink-State) of a response.
fn answer(r: &reqwest::Response) -> (u16, String, String) {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (
        r.status().as_u16(),
        header("location"),
        header("x-shortlink-state"),
    )
}

#[tokio::test]
async fn gone_links_send_visitors_to_their_fallback_their_domains_or_the_410_page() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_PROXY__GONE_REDIRECT", "https://home.example/"),
    )
    .await;
    let host = s.proxy.trim_start_matches("http://").to_owned();
    let r = s
        .api(reqwest::Method::POST, "/api/v1/domains", ADMIN_KEY)
        .json(&json!({"name": "go.brand.test", "fallback_url": "https://brand.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["fallback_url"],
        "https://brand.example/"
    );
    let links = [
        json!({"url": "https://fb.example/t", "alias": "fb-expired", "expires_at": "2001-01-01T00:00:00Z", "fallback_url": "https://fb.example/after"}),
        json!({"url": "https://fb.example/t", "alias": "fb-capped", "max_clicks": 1}),
        json!({"url": "https://fb.example/t", "alias": "fb-off", "fallback_url": "https://fb.example/off"}),
        json!({"url": "https://fb.example/t", "alias": "fb-brand", "domain": "go.brand.test", "expires_at": "2001-01-01T00:00:00Z"}),
    ];
    for link in links {
        let (status, body) = s.create(ADMIN_KEY, link).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://fb.example/t", "fallback_url": "ftp://fb.example/"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("url_scheme_not_allowed"))
    );

    // The link's own fallback, with why.
    let r = wait_for(&s, "fb-expired", &host, 302).await;
    assert_eq!(
        answer(&r),
        (302, "https://fb.example/after".into(), "expired".into())
    );
    // None of its own: the default domain's, once used up.
    assert_eq!(wait_for(&s, "fb-capped", &host, 301).await.status(), 301);
    let r = wait_for(&s, "fb-capped", &host, 302).await;
    assert_eq!(
        answer(&r),
        (
            302,
            "https://home.example/".into(),
            "max-clicks-reached".into()
        )
    );
    // Turned off by its owner: its fallback; by an admin: never the owner's.
    let r = s
        .api(reqwest::Method::PATCH, "/api/v1/links/fb-off", ADMIN_KEY)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = wait_for(&s, "fb-off", &host, 302).await;
    assert_eq!(
        answer(&r),
        (302, "https://fb.example/off".into(), "disabled".into())
    );
    let r = s
        .api(
            reqwest::Method::POST,
            "/api/v1/admin/links/fb-off/disable",
            ADMIN_KEY,
        )
        .json(&json!({"reason": "abuse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = wait_location(&s, "fb-off", "https://home.example/").await;
    assert_eq!(
        answer(&r),
        (302, "https://home.example/".into(), "disabled".into())
    );
    // A custom domain's link: its domain's fallback; without one, the 410 page.
    let r = wait_for(&s, "fb-brand", "go.brand.test", 302).await;
    assert_eq!(
        answer(&r),
        (302, "https://brand.example/".into(), "expired".into())
    );
    let r = s
        .api(
            reqwest::Method::PATCH,
            "/api/v1/domains/go.brand.test",
            ADMIN_KEY,
        )
        .json(&json!({"fallback_url": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = wait_for(&s, "fb-brand", "go.brand.test", 410).await;
    assert_eq!(answer(&r), (410, String::new(), "expired".into()));
    // A link's fallback removed: its domain's (the default one's) again.
    let r = s
        .api(
            reqwest::Method::PATCH,
            "/api/v1/links/fb-expired",
            ADMIN_KEY,
        )
        .json(&json!({"fallback_url": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = wait_location(&s, "fb-expired", "https://home.example/").await;
    assert_eq!(
        answer(&r),
        (302, "https://home.example/".into(), "expired".into())
    );
}
