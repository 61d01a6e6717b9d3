//! Multipart uploads end to end, on the local disk and on a real S3-compatible server
//! (s3s-fs): a multi-gigabyte file in parallel parts, a client killed mid-part that
//! resumes, limits and quota, listing and deletion, and the sweep of abandoned uploads and
//! orphaned objects.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{ADMIN_KEY, BUCKET, Options, S3Server, TestServer, error_code};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// The file's bytes from `offset`: 8-byte words, each a function of its position, so a
/// part put in the wrong place changes the file's SHA-256.
fn fill(offset: u64, out: &mut [u8]) {
    assert_eq!(offset % 8, 0);
    let mut word = offset / 8;
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        word += 1;
    }
    let rest = chunks.into_remainder();
    let last = word.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

fn part_bytes(size: u64, part_size: u64, number: u32) -> Vec<u8> {
    let start = u64::from(number - 1) * part_size;
    let len = (size - start).min(part_size);
    let mut bytes = vec![0u8; len as usize];
    fill(start, &mut bytes);
    bytes
}

/// SHA-256 of the whole file, generated in order.
fn file_sha256(size: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 8 * MIB as usize];
    let mut offset = 0;
    while offset < size {
        let n = (size - offset).min(buffer.len() as u64) as usize;
        fill(offset, &mut buffer[..n]);
        hasher.update(&buffer[..n]);
        offset += n as u64;
    }
    hex::encode(hasher.finalize())
}

fn big_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

async fn call(s: &TestServer, method: Method, path: &str, key: &str, body: Value) -> (u16, Value) {
    let mut request = s.api(method, path, key);
    if !body.is_null() {
        request = request.json(&body);
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    call(s, Method::POST, "/api/v1/uploads/multipart", key, body).await
}

/// URLs for `parts` (number, SHA-256 hex).
async fn urls(s: &TestServer, key: &str, id: &str, parts: &[(u32, String)]) -> Vec<Value> {
    let body = json!({"parts": parts.iter().map(|(n, sha)| json!({"number": n, "sha256": sha})).collect::<Vec<_>>()});
    let (status, answer) = call(
        s,
        Method::POST,
        &format!("/api/v1/uploads/multipart/{id}/urls"),
        key,
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["parts"].as_array().unwrap().clone()
}

/// PUTs `bytes` to a part URL entry as the answer describes it.
async fn put(client: &reqwest::Client, entry: &Value, bytes: Vec<u8>) -> reqwest::Response {
    assert_eq!(entry["method"], "PUT");
    let mut request = client.put(entry["url"].as_str().unwrap()).body(bytes);
    for (name, value) in entry["headers"].as_object().unwrap() {
        // The client sets the length itself.
        if !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    request.send().await.expect("part PUT")
}

/// The status answered to `entry`'s PUT request head declaring `length` bytes, sent with
/// no body, over a plain socket.
async fn status_of_head(entry: &Value, length: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(entry["url"].as_str().unwrap()).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut head = format!(
        "PUT {}?{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nConnection: close\r\n",
        url.path(),
        url.query().unwrap_or_default()
    );
    for (name, value) in entry["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{name}: {}\r\n", value.as_str().unwrap()));
        }
    }
    head.push_str("\r\n");
    let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("an answer to the request head within 10 s")
            .unwrap();
        assert!(n > 0, "the server closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Generates, signs and PUTs `numbers` with `parallel` in flight; returns each part's
/// SHA-256.
async fn send_parts(
    s: &TestServer,
    key: &str,
    id: &str,
    (size, part_size): (u64, u64),
    numbers: Vec<u32>,
    parallel: usize,
) -> BTreeMap<u32, String> {
    let client = big_client();
    let results: Vec<(u32, String)> = futures_util::stream::iter(numbers)
        .map(|number| {
            let client = client.clone();
            async move {
                let bytes = part_bytes(size, part_size, number);
                let sha = hex::encode(Sha256::digest(&bytes));
                let entry = urls(s, key, id, &[(number, sha.clone())]).await.remove(0);
                assert_eq!(entry["size"], bytes.len() as u64);
                let r = put(&client, &entry, bytes).await;
                let status = r.status().as_u16();
                assert_eq!(
                    status,
                    200,
                    "part {number}: {}",
                    r.text().await.unwrap_or_default()
                );
                (number, sha)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn complete(
    s: &TestServer,
    key: &str,
    id: &str,
    parts: &BTreeMap<u32, String>,
) -> (u16, Value) {
    let list: Vec<Value> = parts
        .iter()
        .map(|(n, sha)| json!({"number": n, "sha256": sha}))
        .collect();
    // Assembling gigabytes takes longer than the default client's patience.
    let r = big_client()
        .post(format!(
            "{}/api/v1/uploads/multipart/{id}/complete",
            s.proxy
        ))
        .bearer_auth(key)
        .json(&json!({ "parts": list }))
        .send()
        .await
        .expect("complete");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// S3's composite checksum of the parts, as the API shows it.
fn composite(parts: &BTreeMap<u32, String>) -> String {
    let mut hasher = Sha256::new();
    for sha in parts.values() {
        hasher.update(hex::decode(sha).unwrap());
    }
    format!("{}-{}", hex::encode(hasher.finalize()), parts.len())
}

/// Downloads the upload's file (following S3's redirect) and hashes it as it streams.
async fn download_sha256(s: &TestServer, id: &str) -> (u64, String) {
    let r = big_client()
        .get(format!("{}/f/{id}", s.proxy))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("download chunk");
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (size, hex::encode(hasher.finalize()))
}

/// The caller's event log holds `upload.deleted` for `id` with `reason`.
async fn assert_deleted_event(s: &TestServer, id: &str, reason: &str) {
    let events = s.get_json("/api/v1/notifications?after=0", ADMIN_KEY).await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "upload.deleted"
                && e["data"]["id"] == id
                && e["data"]["reason"] == reason),
        "{events}"
    );
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A file of a little over 2 GiB in 33 parts of 64 MiB, sent four at a time in an order
/// that is not theirs, completes; the download has the file's SHA-256.
async fn multi_gigabyte_upload(s: &TestServer) {
    let size = 2 * 1024 * MIB + 3 * MIB + 5;
    let part_size = 64 * MIB;
    let (status, plan) = create(
        s,
        ADMIN_KEY,
        json!({"filename": "big.bin", "size": size, "part_size": part_size}),
    )
    .await;
    assert_eq!(status, 201, "{plan}");
    assert_eq!(plan["part_count"], 33);
    assert_eq!(plan["upload"]["state"], "pending");
    let id = plan["id"].as_str().unwrap().to_owned();
    // Odd parts from the end, then even ones from the start.
    let mut order: Vec<u32> = (1..=33).rev().filter(|n| n % 2 == 1).collect();
    order.extend((1..=33).filter(|n| n % 2 == 0));
    let started = Instant::now();
    let parts = send_parts(s, ADMIN_KEY, &id, (size, part_size), order, 4).await;
    let (status, done) = complete(s, ADMIN_KEY, &id, &parts).await;
    assert_eq!(status, 200, "{done}");
    eprintln!(
        "{size} bytes in 33 parts stored and completed in {:?}",
        started.elapsed()
    );
    assert_eq!(done["state"], "complete");
    assert_eq!(done["size"], size);
    assert_eq!(done["sha256"], composite(&parts));
    assert_eq!(done["expires_at"], Value::Null);
    let (got, sha) = download_sha256(s, &id).await;
    assert_eq!(got, size);
    assert_eq!(sha, file_sha256(size), "the assembled file is the file");
    // Its short link serves it.
    let code = done["short_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let r = s.follow(&code).await;
    assert_eq!(r.status(), 302);
    // Completing again answers the same.
    let (status, again) = complete(s, ADMIN_KEY, &id, &parts).await;
    assert_eq!(status, 200);
    assert_eq!(again["short_url"], done["short_url"]);
    assert_eq!(
        s.metric("shortlink_uploads_total{path=\"multipart\"}")
            .await,
        Some(1.0)
    );
    // Nothing is left of the parts: the file is the only large thing stored.
    let (status, _) = call(
        s,
        Method::DELETE,
        &format!("/api/v1/uploads/{id}"),
        ADMIN_KEY,
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_multi_gigabyte_file_in_parallel_parts_on_the_local_disk() {
    let s = TestServer::start().await;
    multi_gigabyte_upload(&s).await;
    let objects = s.data_dir().join("objects");
    let left = dir_bytes(&objects);
    assert!(left < MIB, "{left} bytes left under {}", objects.display());
}

#[tokio::test]
async fn a_multi_gigabyte_file_in_parallel_parts_on_s3() {
    let s3 = S3Server::start().await;
    let s = TestServer::start_with(s3.options()).await;
    multi_gigabyte_upload(&s).await;
    let left = dir_bytes(s3.root.path());
    assert!(left < MIB, "{left} bytes left in s3s-fs's folder");
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// A client killed in the middle of a part resumes: the half-sent part is not stored,
/// the parts list says what is missing, new URLs are signed for it, and the file completes.
async fn killed_client_resumes(s: &TestServer) {
    let size = 40 * MIB + 123;
    let part_size = 5 * MIB;
    let (status, plan) = create(
        s,
        ADMIN_KEY,
        json!({"filename": "resume.bin", "size": size, "part_size": part_size,
               "content_type": "application/x-test"}),
    )
    .await;
    assert_eq!(status, 201, "{plan}");
    let id = plan["id"].as_str().unwrap().to_owned();
    assert_eq!(plan["part_count"], 9);
    let mut sent = send_parts(s, ADMIN_KEY, &id, (size, part_size), vec![1, 2, 5, 9], 2).await;
    // Part 3 is cut off after half its bytes: the client dies.
    let bytes = part_bytes(size, part_size, 3);
    let sha = hex::encode(Sha256::digest(&bytes));
    let entry = urls(s, ADMIN_KEY, &id, &[(3, sha)]).await.remove(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let half = bytes[..bytes.len() / 2].to_vec();
    let client = big_client();
    let mut request = client
        .put(entry["url"].as_str().unwrap())
        .header("content-length", bytes.len())
        .body(reqwest::Body::wrap_stream(tokio_stream_of(rx)));
    for (name, value) in entry["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    let dying = tokio::spawn(request.send());
    tx.send(Ok(half)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    dying.abort();
    drop(tx);
    let _ = dying.await;
    // After a restart the client asks what is stored.
    let parts_path = format!("/api/v1/uploads/multipart/{id}/parts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = s.get_json(&parts_path, ADMIN_KEY).await;
        if listed["missing"] == json!([3, 4, 6, 7, 8]) || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["missing"], json!([3, 4, 6, 7, 8]), "{listed}");
    // Whole parts only (a store may list a cut-off part at its short size).
    let whole: Vec<u64> = listed["stored"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["size"] == part_size || p["number"] == 9)
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(whole, vec![1, 2, 5, 9], "{listed}");
    assert_eq!(listed["part_count"], 9);
    // Completing now is refused, naming what is missing.
    let mut all = sent.clone();
    for n in [3, 4, 6, 7, 8] {
        all.insert(
            n,
            hex::encode(Sha256::digest(part_bytes(size, part_size, n))),
        );
    }
    let (status, refused) = complete(s, ADMIN_KEY, &id, &all).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(error_code(&refused), "parts_missing");
    let missing: Vec<u32> = listed["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap() as u32)
        .collect();
    sent.extend(send_parts(s, ADMIN_KEY, &id, (size, part_size), missing, 3).await);
    let (status, done) = complete(s, ADMIN_KEY, &id, &sent).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["sha256"], composite(&sent));
    assert_eq!(
        done["content_type"], "application/octet-stream",
        "sniffed, not declared"
    );
    let (got, sha) = download_sha256(s, &id).await;
    assert_eq!((got, sha), (size, file_sha256(size)));
}

fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::test]
async fn a_killed_client_resumes_on_the_local_disk() {
    let s = TestServer::start().await;
    killed_client_resumes(&s).await;
}

#[tokio::test]
async fn a_killed_client_resumes_on_s3() {
    let s3 = S3Server::start().await;
    let s = TestServer::start_with(s3.options()).await;
    killed_client_resumes(&s).await;
}

/// Limits, the quota and bad parts, each with its clear error; others' uploads are
/// invisible.
#[tokio::test]
async fn limits_quota_and_bad_parts_are_refused_clearly() {
    let s = TestServer::start_with(
        Options::default()
            .env(
                "SHORTLINK_CONTROL__MAX_MULTIPART_UPLOAD_BYTES",
                &(100 * MIB).to_string(),
            )
            .env("SHORTLINK_CONTROL__MAX_UPLOAD_PARTS", "8")
            .env(
                "SHORTLINK_CONTROL__UPLOAD_QUOTA_BYTES",
                &(60 * MIB).to_string(),
            ),
    )
    .await;
    let key = ADMIN_KEY;
    let refused = |status: u16, body: &Value, code: &str| {
        assert_eq!(error_code(body), code, "{status} {body}");
    };
    let (status, body) = create(&s, key, json!({"filename": "f", "size": 100 * MIB + 1})).await;
    assert_eq!(status, 413);
    refused(status, &body, "upload_too_large");
    let (status, body) = create(
        &s,
        key,
        json!({"filename": "f", "size": 10 * MIB, "part_size": MIB}),
    )
    .await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_part_size");
    let (status, body) = create(
        &s,
        key,
        json!({"filename": "f", "size": 45 * MIB + 1, "part_size": 5 * MIB}),
    )
    .await;
    assert_eq!(status, 422, "10 parts over the limit of 8");
    refused(status, &body, "invalid_part_size");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least"),
        "{body}"
    );
    let (status, body) = create(&s, key, json!({"filename": "f", "size": 0})).await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_size");
    let (status, body) = create(
        &s,
        key,
        json!({"filename": "f", "size": 10 * MIB, "part_size": 5 * MIB,
        "parts": [{"number": 3, "sha256": "00".repeat(32)}]}),
    )
    .await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_part");
    let (status, body) = create(
        &s,
        key,
        json!({"filename": "f", "size": 10 * MIB, "part_size": 5 * MIB,
        "parts": [{"number": 1, "sha256": "xyz"}]}),
    )
    .await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_checksum");

    // 40 MiB fits the 60 MiB quota; 30 more do not, by multipart or streamed.
    let size = 40 * MIB;
    let part_size = 5 * MIB;
    let (status, plan) = create(
        &s,
        key,
        json!({"filename": "q.bin", "size": size, "part_size": part_size}),
    )
    .await;
    assert_eq!(status, 201, "{plan}");
    let id = plan["id"].as_str().unwrap().to_owned();
    let (status, body) = create(&s, key, json!({"filename": "f", "size": 30 * MIB})).await;
    assert_eq!(status, 413);
    refused(status, &body, "quota_exceeded");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![7u8; 20 * MIB as usize + 100]).file_name("s.bin"),
    );
    let r = s
        .api(Method::POST, "/api/v1/uploads", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    refused(413, &body, "quota_exceeded");
    let list = s.get_json("/api/v1/uploads", key).await;
    assert_eq!(list["stored_bytes"], size, "{list}");
    assert_eq!(list["quota_bytes"], 60 * MIB);

    // Bad parts on the local disk's part endpoint.
    let client = big_client();
    let good = part_bytes(size, part_size, 1);
    let sha = hex::encode(Sha256::digest(&good));
    let entry = urls(&s, key, &id, &[(1, sha.clone())]).await.remove(0);
    let mut wrong = good.clone();
    wrong[12345] ^= 1;
    let r = put(&client, &entry, wrong).await;
    assert_eq!(r.status(), 422);
    refused(422, &r.json().await.unwrap(), "checksum_mismatch");
    let r = put(&client, &entry, good[..good.len() - 1].to_vec()).await;
    assert_eq!(r.status(), 422);
    refused(422, &r.json().await.unwrap(), "size_mismatch");
    // A declared length past the part's is refused from the headers, before any body (a
    // client still sending it could meet the closed socket: this one sends none).
    assert_eq!(
        status_of_head(&entry, good.len() as u64 + 1).await,
        413,
        "a part longer than planned"
    );
    let mut tampered = entry.clone();
    let url = entry["url"].as_str().unwrap();
    // A forged URL is refused before its body is read, and the connection closed: a
    // short body is all sent by then (a whole part could meet a closed socket first).
    let refused_body = good[..1024].to_vec();
    tampered["url"] = json!(url.replace("parts/1?", "parts/2?"));
    let r = put(&client, &tampered, refused_body.clone()).await;
    assert_eq!(
        r.status(),
        403,
        "a URL signed for part 1 does not store part 2"
    );
    // Nor for another hash, or a later expiry.
    tampered["url"] = json!(url.replace(&sha, &"ab".repeat(32)));
    assert_ne!(tampered["url"], entry["url"]);
    let r = put(&client, &tampered, refused_body.clone()).await;
    assert_eq!(r.status(), 403, "the hash is signed");
    let expires = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let later = (expires.parse::<i64>().unwrap() + 3600).to_string();
    tampered["url"] =
        json!(url.replace(&format!("expires={expires}"), &format!("expires={later}")));
    let r = put(&client, &tampered, refused_body.clone()).await;
    assert_eq!(r.status(), 403, "the expiry is signed");
    // At most 1 000 URLs per request.
    let many: Vec<Value> = (1..=1001u32)
        .map(|n| json!({"number": n.min(8), "sha256": sha}))
        .collect();
    let (status, body) = call(
        &s,
        Method::POST,
        &format!("/api/v1/uploads/multipart/{id}/urls"),
        key,
        json!({ "parts": many }),
    )
    .await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_part");
    let listed = s
        .get_json(&format!("/api/v1/uploads/multipart/{id}/parts"), key)
        .await;
    assert_eq!(
        listed["stored"],
        json!([]),
        "nothing of the refused parts is kept"
    );
    let r = put(&client, &entry, good.clone()).await;
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["sha256"], sha);

    // Completing with a part list out of order, or with another SHA-256 than stored.
    let mut parts = send_parts(&s, key, &id, (size, part_size), (2..=8).collect(), 4).await;
    parts.insert(1, sha.clone());
    let shuffled: Vec<Value> = parts
        .iter()
        .rev()
        .map(|(n, sha)| json!({"number": n, "sha256": sha}))
        .collect();
    let (status, body) = call(
        &s,
        Method::POST,
        &format!("/api/v1/uploads/multipart/{id}/complete"),
        key,
        json!({"parts": shuffled}),
    )
    .await;
    assert_eq!(status, 422);
    refused(status, &body, "invalid_part");
    let mut lying = parts.clone();
    lying.insert(4, "ab".repeat(32));
    let (status, body) = complete(&s, key, &id, &lying).await;
    assert_eq!(status, 422, "{body}");
    refused(status, &body, "checksum_mismatch");

    // Another user sees none of it.
    let other = s.new_user("stranger").await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/uploads/multipart/{id}/parts")),
        (Method::GET, format!("/api/v1/uploads/{id}")),
        (Method::DELETE, format!("/api/v1/uploads/{id}")),
    ] {
        let (status, _) = call(&s, method.clone(), &path, &other, Value::Null).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = complete(&s, &other, &id, &parts).await;
    assert_eq!(status, 404);
    assert_eq!(
        s.get_json("/api/v1/uploads", &other).await["items"],
        json!([])
    );

    let (status, done) = complete(&s, key, &id, &parts).await;
    assert_eq!(status, 200, "{done}");
    let (got, sha) = download_sha256(&s, &id).await;
    assert_eq!((got, sha), (size, file_sha256(size)));
    // Complete already, it still refuses a malformed list rather than answer it.
    for bad in [
        json!([]),
        json!([{"number": 10001, "sha256": "ab".repeat(32)}]),
    ] {
        let (status, body) = call(
            &s,
            Method::POST,
            &format!("/api/v1/uploads/multipart/{id}/complete"),
            key,
            json!({ "parts": bad }),
        )
        .await;
        assert_eq!(status, 422);
        refused(status, &body, "invalid_part");
    }
    // Deleting it makes room again.
    let (status, _) = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/uploads/{id}"),
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, plan) = create(&s, key, json!({"filename": "f", "size": 30 * MIB})).await;
    assert_eq!(status, 201, "{plan}");
}

/// Uploads list newest first by cursor, pending ones too; deleting one removes its file,
/// thumbnails and short link, and aborting a pending one discards its parts.
#[tokio::test]
async fn uploads_are_listed_and_deleted() {
    let s = TestServer::start().await;
    let key = ADMIN_KEY;
    let mut ids = Vec::new();
    for i in 0..3 {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(format!("file number {i}").into_bytes())
                .file_name(format!("f{i}.txt")),
        );
        let r = s
            .api(Method::POST, "/api/v1/uploads", key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
        // Distinct creation seconds are not needed: the id orders uploads of one second.
    }
    let (status, plan) = create(
        &s,
        key,
        json!({"filename": "pending.bin", "size": 6 * MIB, "part_size": 5 * MIB}),
    )
    .await;
    assert_eq!(status, 201);
    let pending = plan["id"].as_str().unwrap().to_owned();
    send_parts(&s, key, &pending, (6 * MIB, 5 * MIB), vec![1], 1).await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = s
            .get_json(&format!("/api/v1/uploads?limit=2&cursor={cursor}"), key)
            .await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["state"].as_str().unwrap().to_owned(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let mut all: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    all.sort();
    let mut want: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .chain([pending.as_str()])
        .collect();
    want.sort();
    assert_eq!(all, want);
    assert!(
        seen.iter()
            .any(|(id, state)| id == &pending && state == "pending")
    );
    let first = s.get_json("/api/v1/uploads?limit=4", key).await;
    let created: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, sorted, "newest first");
    let (status, body) = call(
        &s,
        Method::GET,
        "/api/v1/uploads?cursor=garbage",
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(error_code(&body), "invalid_cursor");

    // Delete a complete one: file, link and object go.
    let doomed = s
        .get_json(&format!("/api/v1/uploads/{}", ids[1]), key)
        .await;
    let code = doomed["short_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(s.follow(&code).await.status(), 302);
    let object = s.data_dir().join("objects/u").join(&ids[1]);
    assert!(object.exists());
    let (status, _) = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/uploads/{}", ids[1]),
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    assert!(!object.exists(), "the file is removed");
    let r = s
        .client
        .get(format!("{}/f/{}", s.proxy, ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (r, _) = s.wait_status(&code, 404, Duration::from_secs(10)).await;
    assert_eq!(r.status(), 404, "the short link goes with it");
    let (status, _) = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/uploads/{}", ids[1]),
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 404, "deleting twice");
    let events = s.get_json("/api/v1/notifications?after=0", key).await;
    let deleted: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "upload.deleted")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["data"]["reason"], "deleted");
    assert_eq!(deleted[0]["data"]["id"], ids[1].as_str());

    // Abort the pending one: its parts go.
    let multipart = s.data_dir().join("objects/.multipart");
    assert_eq!(std::fs::read_dir(&multipart).unwrap().count(), 1);
    let (status, _) = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/uploads/{pending}"),
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        std::fs::read_dir(&multipart).unwrap().count(),
        0,
        "the parts are discarded"
    );
    let (status, body) = call(
        &s,
        Method::GET,
        &format!("/api/v1/uploads/multipart/{pending}/parts"),
        key,
        Value::Null,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let list = s.get_json("/api/v1/uploads", key).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["stored_bytes"], "file number 0".len() as u64 * 2);
}

/// Old enough to be an orphan.
fn backdate(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
}

/// A pending upload whose URLs ran out is swept (its parts with it); objects and
/// multipart uploads no upload owns are removed once old enough; owned ones stay.
async fn sweep(s: &TestServer, objects_root: &Path, local: bool) {
    let key = ADMIN_KEY;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"kept".to_vec()).file_name("kept.txt"),
    );
    let r = s
        .api(Method::POST, "/api/v1/uploads", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let kept: Value = r.json().await.unwrap();
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let orphan = objects_root.join("u/orphanedobject1");
    std::fs::write(&orphan, b"nobody's").unwrap();
    backdate(&orphan);
    let young = objects_root.join("u/youngorphan");
    std::fs::write(&young, b"too young to go").unwrap();

    let (status, plan) = create(
        s,
        key,
        json!({"filename": "gone.bin", "size": 11 * MIB, "part_size": 5 * MIB}),
    )
    .await;
    assert_eq!(status, 201);
    let id = plan["id"].as_str().unwrap().to_owned();
    send_parts(s, key, &id, (11 * MIB, 5 * MIB), vec![2], 1).await;
    let late = part_bytes(11 * MIB, 5 * MIB, 1);
    let late_url = urls(s, key, &id, &[(1, hex::encode(Sha256::digest(&late)))])
        .await
        .remove(0);
    let path = format!("/api/v1/uploads/{id}");
    wait_until(
        "the abandoned upload is swept",
        Duration::from_secs(30),
        || {
            let path = path.clone();
            async move {
                let r = s.api(Method::GET, &path, key).send().await.unwrap();
                r.status() == 404
            }
        },
    )
    .await;
    wait_until("the orphan is removed", Duration::from_secs(30), || {
        let gone = !orphan.exists();
        async move { gone }
    })
    .await;
    assert!(young.exists(), "an object younger than the grace stays");
    // Refused with 403, or (s3s-fs) cut off before the body is read.
    let mut request = big_client()
        .put(late_url["url"].as_str().unwrap())
        .body(late);
    for (name, value) in late_url["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    match request.send().await {
        Ok(r) => assert_eq!(
            r.status(),
            403,
            "a part URL of a swept upload stores nothing"
        ),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let (got, _) = download_sha256(s, &kept_id).await;
    assert_eq!(got, 4, "an owned object stays");
    assert!(
        s.metric("shortlink_uploads_swept_total{reason=\"abandoned\"}")
            .await
            >= Some(1.0)
    );
    assert!(
        s.metric("shortlink_upload_orphans_removed_total{kind=\"object\"}")
            .await
            >= Some(1.0)
    );
    assert!(
        s.metric("shortlink_upload_sweep_duration_seconds_count")
            .await
            >= Some(1.0)
    );
    assert_deleted_event(s, &id, "abandoned").await;
    if local {
        assert_eq!(
            std::fs::read_dir(objects_root.join(".multipart"))
                .unwrap()
                .count(),
            0
        );
        // A multipart folder no upload owns goes too.
        let stray = objects_root
            .join(".multipart")
            .join("0123456789abcdef0123456789abcdef");
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("key"), "u/strayupload").unwrap();
        std::fs::write(stray.join("1.00"), "x").unwrap();
        let dir = std::fs::File::open(&stray).unwrap();
        dir.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        wait_until(
            "the stray multipart upload is removed",
            Duration::from_secs(30),
            || {
                let gone = !stray.exists();
                async move { gone }
            },
        )
        .await;
        assert!(
            s.metric("shortlink_upload_orphans_removed_total{kind=\"multipart\"}")
                .await
                >= Some(1.0)
        );
    } else {
        // s3s-fs keeps parts as `.upload_id-*` files beside the bucket's folders.
        let parts = std::fs::read_dir(objects_root.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .count();
        assert_eq!(parts, 0, "the abandoned upload's parts are gone");
    }
}

fn sweeping(options: Options) -> Options {
    options
        .env("SHORTLINK_CONTROL__PRESIGN_TTL_SECONDS", "3")
        .env("SHORTLINK_CONTROL__INCOMPLETE_UPLOAD_TTL_SECONDS", "0")
        .env("SHORTLINK_CONTROL__UPLOAD_SWEEP_SECONDS", "1")
        .env("SHORTLINK_CONTROL__ORPHAN_SCAN_SECONDS", "1")
        .env("SHORTLINK_CONTROL__ORPHAN_GRACE_SECONDS", "3600")
}

#[tokio::test]
async fn abandoned_uploads_and_orphans_are_swept_on_the_local_disk() {
    let s = TestServer::start_with(sweeping(Options::default())).await;
    let root = s.data_dir().join("objects");
    sweep(&s, &root, true).await;
}

#[tokio::test]
async fn abandoned_uploads_and_orphans_are_swept_on_s3() {
    let s3 = S3Server::start().await;
    let s = TestServer::start_with(sweeping(s3.options())).await;
    let root = s3.root.path().join(BUCKET);
    sweep(&s, &root, false).await;
}

fn in_seconds(seconds: i64) -> String {
    shortlink_core::time_util::to_rfc3339(shortlink_core::time_util::now_unix() + seconds)
}

async fn upload_json(s: &TestServer, id: &str) -> (u16, Value) {
    call(
        s,
        Method::GET,
        &format!("/api/v1/uploads/{id}"),
        ADMIN_KEY,
        Value::Null,
    )
    .await
}

/// Downloads from the start are counted (later ranges and HEADs are the same download);
/// an upload's expiry is set at upload or later, serving stops at it, and the sweep
/// removes the file, its link and its record.
#[tokio::test]
async fn downloads_are_counted_and_uploads_expire() {
    let s = TestServer::start_with(sweeping(Options::default())).await;
    let key = ADMIN_KEY;
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"0123456789 counted".to_vec()).file_name("c.txt"),
        )
    };
    let r = s
        .api(Method::POST, "/api/v1/uploads?expires_at=tomorrow", key)
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(&r.json().await.unwrap()), "invalid_expires_at");
    let later = in_seconds(3600);
    let r = s
        .api(
            Method::POST,
            &format!("/api/v1/uploads?expires_at={later}"),
            key,
        )
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let upload: Value = r.json().await.unwrap();
    assert_eq!(upload["expires_at"], later.as_str());
    assert_eq!(upload["downloads"], 0);
    let id = upload["id"].as_str().unwrap().to_owned();
    let file = format!("{}/f/{id}", s.proxy);
    for range in [None, None, Some("bytes=0-4"), Some("bytes=5-9")] {
        let mut request = s.client.get(&file);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        assert!(request.send().await.unwrap().status().is_success());
    }
    assert_eq!(s.client.head(&file).send().await.unwrap().status(), 200);
    wait_until(
        "three downloads counted",
        Duration::from_secs(10),
        || async { upload_json(&s, &id).await.1["downloads"] == 3 },
    )
    .await;

    // The expiry changes, clears, and is refused in a wrong form.
    let path = format!("/api/v1/uploads/{id}");
    let (status, body) = call(&s, Method::PATCH, &path, key, json!({"expires_at": "soon"})).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_expires_at"));
    let (status, body) = call(&s, Method::PATCH, &path, key, json!({"expires_at": null})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(upload_json(&s, &id).await.1["expires_at"], Value::Null);
    let (status, plan) = create(&s, key, json!({"filename": "p", "size": 10})).await;
    assert_eq!(status, 201);
    let pending = format!("/api/v1/uploads/{}", plan["id"].as_str().unwrap());
    let (status, body) = call(
        &s,
        Method::PATCH,
        &pending,
        key,
        json!({"expires_at": later}),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "upload_missing"));

    let code = upload["short_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let object = s.data_dir().join("objects/u").join(&id);
    assert!(object.exists());
    let soon = in_seconds(2);
    let (status, body) = call(&s, Method::PATCH, &path, key, json!({"expires_at": soon})).await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the expired file is no longer served",
        Duration::from_secs(10),
        || async { s.client.get(&file).send().await.unwrap().status() == 404 },
    )
    .await;
    wait_until(
        "the expired upload is swept",
        Duration::from_secs(15),
        || async { upload_json(&s, &id).await.0 == 404 },
    )
    .await;
    assert!(!object.exists(), "its file is removed");
    let (r, _) = s.wait_status(&code, 404, Duration::from_secs(10)).await;
    assert_eq!(r.status(), 404, "its short link is removed");
    assert!(
        s.metric("shortlink_uploads_swept_total{reason=\"expired\"}")
            .await
            >= Some(1.0)
    );
    assert_deleted_event(&s, &id, "expired").await;
}
