//! QR codes of short links: both formats decode back to the short URL (with rqrr, a QR
//! decoder), only the owner gets them, and bad parameters are refused.

mod common;

use common::{ADMIN_KEY, TestServer, error_code};
use reqwest::Method;
use serde_json::json;

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
    assert_eq!(decode(png.to_luma8()), short_url);

    let r = s
        .api(Method::GET, "/api/v1/links/qrcode1/qr", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.unwrap();
    assert_eq!(decode(rasterize_svg(&svg)), short_url);

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
        assert_eq!(r.status(), 422, "{query}");
        assert_eq!(error_code(&r.json().await.unwrap()), code);
    }
}
