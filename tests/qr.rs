//! QR codes of short links: both formats decode back to the short URL with the scan
//! marker (with rqrr, a QR decoder), only the owner gets them, bad parameters are refused,
//! and scans are counted as the `qr` source.

mod common;

use common::{ADMIN_KEY, TestServer, count_of, status_and_code, wait_total};
use reqwest::Method;
use serde_json::json;

const BROWSER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

fn decode(image: image::GrayImage) -> String {
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("the QR code decodes").1
}

/// Draws the SVG the server renders: a white canvas and one path of rectangles
/// (`M{left} {top}h{w}v{h}H{left}V{top}` each), as the qrcode crate writes them.
fn rasterize_svg(svg: &str) -> image::GrayImage {
    let number_after = |key: &str| -> u32 {
        let at = svg.find(key).unwrap_or_else(|| panic!("no {key} in {svg}")) + key.len();
        svg[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let (width, height) = (number_after("width=\""), number_after("height=\""));
    let mut image = image::GrayImage::from_pixel(width, height, image::Luma([255]));
    let path = &svg[svg.find(" d=\"").expect("a path") + 4..];
    let path = &path[..path.find('"').unwrap()];
    for rect in path.split('M').filter(|r| !r.is_empty()) {
        let numbers: Vec<u32> = rect
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        let (left, top, w, h) = (numbers[0], numbers[1], numbers[2], numbers[3]);
        for y in top..(top + h).min(height) {
            for x in left..(left + w).min(width) {
                image.put_pixel(x, y, image::Luma([0]));
            }
        }
    }
    image
}

#[tokio::test]
async fn qr_codes_decode_to_the_short_url_for_the_owner_only() {
    let s = TestServer::start().await;
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/qr", "alias": "qrcode1"}),
        )
        .await;
    assert_eq!(status, 201);
    let short_url = link["short_url"].as_str().unwrap().to_owned();

    let r = s
        .api(
            Method::GET,
            "/api/v1/links/qrcode1/qr?format=png&size=300",
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    let png = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    // Whole modules only: the largest image of at most 300 px.
    assert!((250..=300).contains(&png.width()), "{}", png.width());
    assert_eq!(decode(png.to_luma8()), format!("{short_url}?qr"));

    let r = s
        .api(Method::GET, "/api/v1/links/qrcode1/qr", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert_eq!(decode(rasterize_svg(&svg)), format!("{short_url}?qr"));

    // Without the marker, for a code printed where scans need not be told apart.
    let r = s
        .api(
            Method::GET,
            "/api/v1/links/qrcode1/qr?format=png&marker=false",
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    let png = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(decode(png.to_luma8()), short_url);

    let other = s.new_user("qr-stranger").await;
    let r = s
        .api(Method::GET, "/api/v1/links/qrcode1/qr", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "another user's link has no QR code for them"
    );
    for (query, code) in [
        ("format=gif", "invalid_format"),
        ("size=10", "invalid_size"),
    ] {
        let r = s
            .api(
                Method::GET,
                &format!("/api/v1/links/qrcode1/qr?{query}"),
                ADMIN_KEY,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(status_and_code(r).await, (422, code.to_owned()), "{query}");
    }
}

/// Follows `path` on the proxy as a phone's browser would, posting the password form
/// when one is given.
async fn visit(s: &TestServer, path: &str, password: Option<&str>) -> reqwest::Response {
    let Some(password) = password else {
        return s.follow_with(path, &[("user-agent", BROWSER)]).await;
    };
    s.post_password(path, password, &[("user-agent", BROWSER)])
        .await
}

#[tokio::test]
async fn scans_are_counted_as_the_qr_source_and_the_marker_is_not_passed_on() {
    let s = TestServer::start().await;
    let (status, link) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/menu", "alias": "menu"}),
        )
        .await;
    assert_eq!(status, 201);
    let short_url = link["short_url"].as_str().unwrap().to_owned();
    let r = s
        .api(Method::GET, "/api/v1/links/menu/qr?format=png", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let scanned = decode(
        image::load_from_memory(&r.bytes().await.unwrap())
            .unwrap()
            .to_luma8(),
    );
    assert_eq!(scanned, format!("{short_url}?qr"));

    // The scanned URL, on the proxy: the target without the marker.
    let r = visit(&s, "menu?qr", None).await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://example.com/menu");
    // A click with a referrer and one typed in.
    let r = s
        .follow_with(
            "menu",
            &[
                ("user-agent", BROWSER),
                ("referer", "https://news.example.org/story"),
            ],
        )
        .await;
    assert_eq!(r.status(), 301);
    let stats = wait_total(&s.client, &s.proxy, "menu", 2).await;
    assert_eq!(stats["total"], 2, "{stats}");
    assert_eq!(count_of(&stats["referrers"], "qr"), 1, "{stats}");
    assert_eq!(
        count_of(&stats["referrers"], "news.example.org"),
        1,
        "{stats}"
    );

    // A protected link scanned: the password form keeps the marker, so the click it
    // leads to counts as a scan too.
    let (status, _) = s
        .create(
            ADMIN_KEY,
            json!({"url": "https://example.com/secret", "alias": "vault", "password": "open sesame"}),
        )
        .await;
    assert_eq!(status, 201);
    let r = visit(&s, "vault?qr", None).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("action=\"/vault?qr\""), "{page}");
    let r = visit(&s, "vault?qr", Some("open%20sesame")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://example.com/secret");
    let stats = wait_total(&s.client, &s.proxy, "vault", 1).await;
    assert_eq!(count_of(&stats["referrers"], "qr"), 1, "{stats}");
}
