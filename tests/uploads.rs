//! Uploads end to end: streamed and presigned, served back, thumbnails, limits, on the
//! local disk and on a real S3-compatible server (s3s-fs, installed by scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, BUCKET, Options, S3Server, TestServer};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn random_bytes(n: usize) -> Vec<u8> {
    // Not compressible, not sniffable: a xorshift stream.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The URL with the first character of its `X-Amz-Signature` changed.
fn tamper_signature(url: &str) -> String {
    let at = url.find("X-Amz-Signature=").expect("a signed URL") + "X-Amz-Signature=".len();
    let flipped = if &url[at..at + 1] == "0" { "1" } else { "0" };
    format!("{}{flipped}{}", &url[..at], &url[at + 1..])
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn upload(
    s: &TestServer,
    key: &str,
    name: &str,
    declared: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let part = Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(declared)
        .unwrap();
    let r = s
        .api(Method::POST, "/api/v1/uploads", key)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .expect("upload request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every file under `dir` (recursively), as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Uploads `chunks` pieces of `size` bytes as a chunked body (no length) and checks that
/// a refusal, when the answer arrives before the connection closes, is a 413.
async fn chunked_upload_is_refused(s: &TestServer, chunks: usize, size: usize) {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..chunks).map(|_| Ok(random_bytes(size))).collect();
    let part = Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
        pieces,
    )))
    .file_name("stream.bin");
    let sent = s
        .api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
        .multipart(Form::new().part("file", part))
        .send()
        .await;
    if let Ok(r) = sent {
        // The server may close the connection while the client still sends; when the
        // answer arrives, it is the clear one.
        assert_eq!(r.status(), 413);
    }
}

/// Asks for a presigned upload as admin; returns (status, body).
async fn try_presign(s: &TestServer, request: &Value) -> (u16, Value) {
    let r = s
        .api(Method::POST, "/api/v1/uploads/presign", ADMIN_KEY)
        .json(request)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Asks for a presigned upload as admin, which must succeed; returns the answer.
async fn presign(s: &TestServer, request: Value) -> Value {
    let (status, body) = try_presign(s, &request).await;
    assert_eq!(status, 201, "presign {request}: {body}");
    body
}

/// PUTs `body` to `url` with the presign answer's headers, on a fresh connection (a store
/// may close one after refusing a request unread); returns the status.
async fn put_presigned(url: &str, presigned: &Value, body: Vec<u8>) -> u16 {
    let mut put = reqwest::Client::new().put(url).body(body);
    for (name, value) in presigned["headers"].as_object().unwrap() {
        put = put.header(name, value.as_str().unwrap());
    }
    put.send().await.unwrap().status().as_u16()
}

/// Completes a presigned upload as admin; returns (status, body).
async fn complete(s: &TestServer, id: &str) -> (u16, Value) {
    let r = s
        .api(
            Method::POST,
            &format!("/api/v1/uploads/{id}/complete"),
            ADMIN_KEY,
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The admin's events of `kind` about upload `id`.
async fn upload_events(s: &TestServer, kind: &str, id: &str) -> usize {
    let events = s.get_json("/api/v1/notifications?after=0", ADMIN_KEY).await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind && (id.is_empty() || e["data"]["id"] == id))
        .count()
}

async fn wait_thumbnails(s: &TestServer, key: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = s.get_json(&format!("/api/v1/uploads/{id}"), key).await;
        let state = body["thumbnails"]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if state != "pending" || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streamed_upload_round_trips_and_is_served_with_ranges() {
    let s = TestServer::start().await;
    let bytes = random_bytes(300_000);
    let (status, body) = upload(&s, ADMIN_KEY, "data.bin", "text/html", bytes.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], 300_000);
    assert_eq!(body["sha256"], sha256_hex(&bytes));
    assert_eq!(
        body["content_type"], "application/octet-stream",
        "sniffed from the bytes, not the client's text/html"
    );
    assert_eq!(body["filename"], "data.bin");
    let id = body["id"].as_str().unwrap().to_owned();
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&format!("/f/{id}")), "{url}");

    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"data.bin\""),
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        &r.bytes().await.unwrap()[..],
        &bytes[..],
        "the same bytes come back"
    );

    let r = s
        .client
        .get(&url)
        .header("range", "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206, "range requests work");
    assert_eq!(&r.bytes().await.unwrap()[..], &bytes[1000..1100]);

    // The short link redirects to the file.
    let short = body["short_url"].as_str().unwrap();
    let r = s.client.get(short).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], url.as_str());

    // Metadata is the owner's alone.
    let meta = s
        .get_json(&format!("/api/v1/uploads/{id}"), ADMIN_KEY)
        .await;
    assert_eq!(meta["sha256"], sha256_hex(&bytes));
    let other = s.new_user("nosy").await;
    let r = s
        .api(Method::GET, &format!("/api/v1/uploads/{id}"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another user cannot read the metadata");

    // The owner heard about it.
    assert_eq!(upload_events(&s, "upload.completed", &id).await, 1);
}

#[tokio::test]
async fn names_are_neutralized_and_types_sniffed() {
    let s = TestServer::start().await;
    let (status, body) = upload(
        &s,
        ADMIN_KEY,
        "../../../etc/passwd",
        "text/plain",
        png(20, 10),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["filename"], "passwd");
    assert_eq!(body["content_type"], "image/png");
    let files = files_under(&s.data);
    assert!(
        files.iter().all(|f| !f.ends_with("passwd")),
        "nothing is written under the client's name: {files:?}"
    );
    assert!(
        !s.data.parent().unwrap().join("etc").exists(),
        "nothing escapes the data folder"
    );
    let r = s
        .client
        .get(body["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );

    // HTML claiming to be an image is served as text, never as a page of this site.
    let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>".to_vec();
    let (_, body) = upload(&s, ADMIN_KEY, "cat.png", "image/png", html).await;
    let r = s
        .client
        .get(body["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let served = r.headers()["content-type"].to_str().unwrap().to_owned();
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        served.starts_with("text/plain") || disposition.starts_with("attachment"),
        "{served} / {disposition}"
    );
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
}

#[tokio::test]
async fn oversized_uploads_are_refused_and_leave_nothing() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_CONTROL__MAX_UPLOAD_BYTES", "100000"),
    )
    .await;
    // A declared length over the limit: refused up front.
    let (status, body) = upload(
        &s,
        ADMIN_KEY,
        "big.bin",
        "application/octet-stream",
        random_bytes(200_000),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );
    // A chunked body (no length): refused while streaming, once past the limit.
    chunked_upload_is_refused(&s, 20, 10_000).await;
    // The refused connection is closed, not reused: the next requests through the proxy work.
    for _ in 0..5 {
        let (status, _) = try_presign(&s, &json!({"filename": "n.bin", "size": 1})).await;
        assert_eq!(status, 201, "a request after a refused upload");
    }
    // Exactly at the limit is fine.
    let (status, _) = upload(
        &s,
        ADMIN_KEY,
        "ok.bin",
        "application/octet-stream",
        random_bytes(100_000),
    )
    .await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let objects = files_under(&s.data.join("objects"));
    assert_eq!(
        objects.len(),
        1,
        "only the accepted upload is stored: {objects:?}"
    );
    let completed = upload_events(&s, "upload.completed", "").await;
    assert_eq!(completed, 1, "no metadata for refused uploads");
}

#[tokio::test]
async fn presigned_upload_with_plain_http_then_complete() {
    let s = TestServer::start().await;
    let image = png(640, 480);
    let presigned = presign(
        &s,
        json!({"filename": "holiday.png", "content_type": "image/png", "size": image.len()}),
    )
    .await;
    assert_eq!(presigned["method"], "PUT");
    let id = presigned["id"].as_str().unwrap().to_owned();
    let url = presigned["upload_url"].as_str().unwrap().to_owned();

    // Completing before the bytes exist is a clear error.
    assert_eq!(complete(&s, &id).await.0, 409);

    // A tampered signature is refused.
    let tampered = {
        let (base, sig) = url.rsplit_once("signature=").unwrap();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        format!("{base}signature={flipped}{}", &sig[1..])
    };
    assert_eq!(
        put_presigned(&tampered, &presigned, image.clone()).await,
        403
    );
    let wrong_expiry = url.replacen("expires=", "expires=9", 1);
    assert_eq!(
        put_presigned(&wrong_expiry, &presigned, image.clone()).await,
        403,
        "the expiry is signed too"
    );

    // The real PUT, with nothing but the URL and the listed headers.
    assert_eq!(put_presigned(&url, &presigned, image.clone()).await, 200);
    let (status, done) = complete(&s, &id).await;
    assert_eq!(status, 200);
    assert_eq!(done["sha256"], sha256_hex(&image));
    assert_eq!(done["content_type"], "image/png");
    assert_eq!(done["state"], "complete");
    let r = s
        .client
        .get(done["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], &image[..]);
    // The used URL does not work again.
    assert_eq!(put_presigned(&url, &presigned, image.clone()).await, 403);
    let body = wait_thumbnails(&s, ADMIN_KEY, &id, Duration::from_secs(15)).await;
    assert_eq!(body["thumbnails"]["state"], "ready", "{body}");
}

#[tokio::test]
async fn expired_presigned_urls_are_refused() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_CONTROL__PRESIGN_TTL_SECONDS", "1"),
    )
    .await;
    let presigned = presign(&s, json!({"filename": "late.bin", "size": 10})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = reqwest::Client::new()
        .put(presigned["upload_url"].as_str().unwrap())
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    // Bad presign requests.
    for bad in [
        json!({"filename": "x", "size": 0}),
        json!({"filename": "x", "size": 2_000_000_000_000u64}),
    ] {
        let (status, body) = try_presign(&s, &bad).await;
        assert!(matches!(status, 413 | 422), "{bad}: {body}");
    }
}

#[tokio::test]
async fn thumbnails_are_made_with_the_right_sizes_and_announced() {
    let s = TestServer::start().await;
    let (status, body) = upload(&s, ADMIN_KEY, "wide.png", "image/png", png(1000, 500)).await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap().to_owned();
    let body = wait_thumbnails(&s, ADMIN_KEY, &id, Duration::from_secs(15)).await;
    assert_eq!(body["thumbnails"]["state"], "ready", "{body}");
    let items = body["thumbnails"]["items"].as_array().unwrap();
    let sizes: Vec<_> = items
        .iter()
        .map(|t| {
            (
                t["size"].as_u64().unwrap(),
                t["width"].as_u64().unwrap(),
                t["height"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sizes, [(150, 150, 75), (300, 300, 150), (800, 800, 400)]);
    for item in items {
        let r = s
            .client
            .get(item["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        let decoded = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(
            (u64::from(decoded.width()), u64::from(decoded.height())),
            (
                item["width"].as_u64().unwrap(),
                item["height"].as_u64().unwrap()
            )
        );
    }
    assert_eq!(upload_events(&s, "upload.thumbnails_ready", &id).await, 1);
}

#[tokio::test]
async fn images_over_the_pixel_limit_are_refused_not_decoded() {
    let s = TestServer::start_with(
        Options::default().env("SHORTLINK_CONTROL__THUMBNAIL_MAX_SOURCE_PIXELS", "100000"),
    )
    .await;
    let (_, body) = upload(&s, ADMIN_KEY, "huge.png", "image/png", png(1000, 500)).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let body = wait_thumbnails(&s, ADMIN_KEY, &id, Duration::from_secs(15)).await;
    assert_eq!(body["thumbnails"]["state"], "failed", "{body}");
    assert!(s.log_text().contains("refused without decoding"));
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

fn encoded(image: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

/// A 24-megapixel JPEG and a 12-megapixel PNG get thumbnails with a full-size decode
/// limit of one megapixel: they are reduced while decoded, and the control plane's peak
/// memory grows by less than one full-size decoded copy of the JPEG. A GIF over that
/// limit is refused.
#[tokio::test]
async fn large_jpegs_and_pngs_get_thumbnails_without_full_size_decoding() {
    let s = TestServer::start_with(
        Options::default()
            .env("SHORTLINK_CONTROL__THUMBNAIL_MAX_PIXELS", "1000000")
            .env("SHORTLINK_CONTROL__THUMBNAIL_WORKERS", "1"),
    )
    .await;
    let gradient = |w: u32, h: u32| {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }))
    };
    let jpeg = encoded(gradient(6000, 4000), image::ImageFormat::Jpeg);
    let png = encoded(gradient(4000, 3000), image::ImageFormat::Png);
    let gif = encoded(gradient(1200, 1000), image::ImageFormat::Gif);
    let before = peak_rss(s.pid());
    for (name, bytes, want) in [
        ("photo.jpg", jpeg, Some((800, 533))),
        ("scan.png", png, Some((800, 600))),
        ("anim.gif", gif, None),
    ] {
        let (status, body) = upload(&s, ADMIN_KEY, name, "image/*", bytes).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let body = wait_thumbnails(&s, ADMIN_KEY, &id, Duration::from_secs(60)).await;
        match want {
            Some((w, h)) => {
                assert_eq!(body["thumbnails"]["state"], "ready", "{name}: {body}");
                let largest = &body["thumbnails"]["items"][2];
                assert_eq!(
                    (largest["width"].as_u64(), largest["height"].as_u64()),
                    (Some(w), Some(h)),
                    "{name}"
                );
            }
            None => {
                assert_eq!(body["thumbnails"]["state"], "failed", "{name}: {body}");
                assert!(
                    s.log_text()
                        .contains("the most decoded whole for this format")
                );
            }
        }
    }
    let grown = peak_rss(s.pid()).saturating_sub(before);
    eprintln!("peak RSS grew by {} MB", grown / 1_000_000);
    // Decoding the JPEG at full size would take 72 MB of pixels at once, whatever else
    // the process did; its upload and the PNG's (11 MB read whole) are in the growth.
    assert!(grown < 6000 * 4000 * 3, "peak RSS grew by {grown} bytes");
}

#[tokio::test]
async fn a_restart_mid_job_finishes_the_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = || {
        let mut o = Options::default()
            .env("SHORTLINK_CONTROL__THUMBNAIL_LEASE_SECONDS", "1")
            .env("SHORTLINK_CONTROL__THUMBNAIL_WORKERS", "1");
        o.data = Some(data.clone());
        o
    };
    let s = TestServer::start_with(options()).await;
    // Large enough that the job is still running when the process is killed.
    let (status, body) = upload(&s, ADMIN_KEY, "big.png", "image/png", png(3000, 3000)).await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap().to_owned();
    drop(s); // SIGKILL, mid-job or before it started
    let s = TestServer::start_with(options()).await;
    let body = wait_thumbnails(&s, ADMIN_KEY, &id, Duration::from_secs(30)).await;
    assert_eq!(body["thumbnails"]["state"], "ready", "{body}");
    assert_eq!(body["thumbnails"]["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn on_s3_streamed_multipart_presigned_and_thumbnails() {
    let s3 = S3Server::start().await;
    let s = TestServer::start_with(s3.options()).await;
    let http = reqwest::Client::new(); // follows redirects

    // 12 MiB: three parts of a multipart upload.
    let bytes = random_bytes(12 * 1024 * 1024);
    let (status, body) = upload(
        &s,
        ADMIN_KEY,
        "big.bin",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"], sha256_hex(&bytes));
    let url = body["url"].as_str().unwrap();
    let r = s.client.get(url).send().await.unwrap();
    assert_eq!(
        r.status(),
        307,
        "S3 objects are served by a presigned redirect"
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("http://127.0.0.1:{}/{BUCKET}/u/", s3.port)),
        "{location}"
    );
    let fetched = http.get(url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        &fetched.bytes().await.unwrap()[..],
        &bytes[..],
        "the same bytes from S3"
    );
    // A tampered presigned GET is refused by S3 itself.
    let r = http.get(tamper_signature(&location)).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Presigned PUT straight to S3 with plain HTTP, then complete.
    let image = png(500, 400);
    let presigned = presign(
        &s,
        json!({"filename": "photo.png", "content_type": "image/png", "size": image.len()}),
    )
    .await;
    let upload_url = presigned["upload_url"].as_str().unwrap().to_owned();
    assert!(upload_url.contains("X-Amz-Signature="), "{upload_url}");
    assert_eq!(
        put_presigned(&tamper_signature(&upload_url), &presigned, image.clone()).await,
        403,
        "S3 refuses a tampered signature"
    );
    assert_eq!(
        put_presigned(&upload_url, &presigned, image.clone()).await,
        200
    );
    let id = presigned["id"].as_str().unwrap();
    let (status, done) = complete(&s, id).await;
    assert_eq!(status, 200);
    assert_eq!(done["sha256"], sha256_hex(&image));
    let body = wait_thumbnails(&s, ADMIN_KEY, id, Duration::from_secs(20)).await;
    assert_eq!(body["thumbnails"]["state"], "ready", "{body}");
    let thumb = body["thumbnails"]["items"][0]["url"].as_str().unwrap();
    let r = http.get(thumb).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let decoded = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (150, 120));

    // Over the limit on S3: nothing is left in the bucket.
    let before = files_under(s3.root.path());
    drop(s);
    let s = TestServer::start_with(
        s3.options()
            .env("SHORTLINK_CONTROL__MAX_UPLOAD_BYTES", "6000000")
            .env("SHORTLINK_CONTROL__PRESIGN_TTL_SECONDS", "1"),
    )
    .await;
    chunked_upload_is_refused(&s, 12, 1024 * 1024).await;
    // An expired presigned PUT is refused by S3 itself.
    let late = presign(&s, json!({"filename": "late.bin", "size": 10})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let url = late["upload_url"].as_str().unwrap();
    assert_eq!(
        put_presigned(url, &late, vec![7u8; 10]).await,
        403,
        "S3 refuses an expired URL"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = files_under(s3.root.path())
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains(".upload"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains(".upload"))
        .collect();
    assert_eq!(after, before, "no object from the refused upload");
}

/// An upload form is the field `file` and nothing else: no file, another field before
/// it or after it, or a body that is no form at all are refused with the envelope, and
/// a refused upload leaves nothing stored.
#[tokio::test]
async fn upload_forms_with_anything_but_one_file_are_refused() {
    let s = TestServer::start().await;
    let file = || Part::bytes(b"hello".to_vec()).file_name("a.txt");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no file",
            s.api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
                .multipart(Form::new().text("note", "x")),
            400,
            "invalid_form",
        ),
        (
            "empty form",
            s.api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
                .multipart(Form::new()),
            400,
            "invalid_form",
        ),
        (
            "a field after the file",
            s.api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
                .multipart(Form::new().part("file", file()).text("note", "x")),
            400,
            "invalid_form",
        ),
        (
            "not a form",
            s.api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
                .header("content-type", "application/json")
                .body("{}"),
            400,
            "invalid_form",
        ),
    ];
    for (case, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{case}: {body}");
    }
    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| match e.path() {
                        p if p.is_dir() => files(&p),
                        _ => 1,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let objects = s.data.join("objects");
    assert_eq!(
        files(&objects),
        0,
        "nothing stored in {}",
        objects.display()
    );
    // The same server stores a proper form: the count above could have seen one.
    let response = s
        .api(Method::POST, "/api/v1/uploads", ADMIN_KEY)
        .multipart(Form::new().part("file", file()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(
        files(&objects) >= 1,
        "the upload is under {}",
        objects.display()
    );
}
