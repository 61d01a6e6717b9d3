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
