//! The web page in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/ui.mjs`) against the real binary. scripts/test.sh installs both.

mod common;

use std::path::Path;
use std::time::Duration;

use common::receiver::{Mode, Receiver};
use common::{ADMIN_KEY, Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (browser_dir, chromium) = common::browser();
    // The webhook panel sends its test message to a receiver on loopback.
    let server = TestServer::start_with(Options::default().env(
        "SHORTLINK_CONTROL__WEBHOOKS__ALLOWED_NETWORKS",
        "127.0.0.0/8",
    ))
    .await;
    let receiver = Receiver::start(Mode::Status(204)).await;
    // The page is served through the proxy (it forwards /ui to the control plane).
    let page = server
        .client
        .get(format!("{}/ui", server.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // The icon and the client's modules the page imports, from the binary.
    for (path, status, content_type) in [
        ("/ui/icon.svg", 200, "image/svg+xml"),
        ("/ui/lib/events.js", 200, "text/javascript; charset=utf-8"),
        ("/ui/lib/index.js", 200, "text/javascript; charset=utf-8"),
        ("/ui/lib/react.js", 404, ""),
    ] {
        let r = server
            .client
            .get(format!("{}{path}", server.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        if status == 200 {
            assert_eq!(r.headers()["content-type"], content_type, "{path}");
        }
    }

    // A person with a sign-in password, for the password journey.
    let r = server
        .api(reqwest::Method::POST, "/api/v1/users", ADMIN_KEY)
        .json(&serde_json::json!({"name": "pat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = server
        .api(reqwest::Method::PATCH, "/api/v1/users/pat", ADMIN_KEY)
        .json(&serde_json::json!({"password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("photo.png");
    image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    })
    .save(&image)
    .unwrap();
    let large = dir.path().join("large.bin");
    std::fs::write(&large, vec![7u8; 17 * 1024 * 1024]).unwrap();
    let shots = root.join("target/ui-screenshots");
    // Only this run's screenshots count.
    let _ = std::fs::remove_dir_all(&shots);
    let child = tokio::process::Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(&server.proxy)
        .arg(ADMIN_KEY)
        .arg(&image)
        .arg(&large)
        .arg(&shots)
        .arg("pat")
        .arg("correct horse battery")
        .env("CHROMIUM", &chromium)
        .env("WEBHOOK_URL", &receiver.url)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node (install Node.js 18 or later)");
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the browser test finished within 300 s")
        .unwrap();
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "browser test failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log_text()
    );
    assert!(
        receiver
            .received()
            .iter()
            .any(|r| r.json()["type"] == "webhook.test"),
        "the web page's test message reached the receiver"
    );
    // Every view at both sizes (the journey's), the empty links view, dark mode, and the
    // views only the desktop pass opens.
    let mut names: Vec<String> = Vec::new();
    for view in [
        "signin", "links", "stats", "overview", "uploads", "activity", "settings",
    ] {
        for width in [1280, 390] {
            names.push(format!("{view}-{width}"));
        }
    }
    for extra in [
        "empty",
        "dark",
        "webhooks",
        "signed-in",
        "visitor-404",
        "visitor-password",
    ] {
        names.push(format!("{extra}-1280"));
    }
    for name in names {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png was not saved"
        );
    }
}
