//! A large presigned multipart upload against the release binary, on the local disk and
//! (with `S3S_FS_BIN`) on s3s-fs: throughput next to `cp` (+ `sync`) of the same file on the
//! same disk, and the control plane's peak RSS growth meanwhile. Then the cost of the
//! upload sweep: an orphan scan over many owned objects and orphans, and the removal of
//! many expired uploads.
//!
//! `cargo build --release -p shortlink -p shortlink-benches --bin shortlink --bin multipart_upload`
//! `S3S_FS_BIN=target/testinfra/s3s/bin/s3s-fs target/release/multipart_upload [MiB=5120] [parallel=4] [part MiB=64] [uploads=10000]`
//!
//! The client reads, hashes (SHA-256) and sends the parts on the same two cores as the
//! server (and s3s-fs), as a browser or CLI on the same machine would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shortlink_benches::{ReleaseServer, arg, free_port, random_file, status_kib};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const ADMIN_KEY: &str = "sl_multipart_bench_admin_key_0000000000";

/// A place to upload to: its name, the settings that point `serve` at it, and its own
/// server process if it has one (s3s-fs).
type Backend = (
    &'static str,
    Vec<(&'static str, String)>,
    Option<std::process::Child>,
);

async fn json(r: reqwest::RequestBuilder) -> Value {
    let r = r.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Reads part `number` of `path`.
async fn read_part(path: &Path, part_size: u64, size: u64, number: u64) -> Vec<u8> {
    let start = (number - 1) * part_size;
    let len = (size - start).min(part_size) as usize;
    let mut file = tokio::fs::File::open(path).await.unwrap();
    file.seek(std::io::SeekFrom::Start(start)).await.unwrap();
    let mut bytes = vec![0u8; len];
    file.read_exact(&mut bytes).await.unwrap();
    bytes
}

/// Uploads `path` in parts; returns the seconds it took (create to complete).
async fn upload(base: &str, path: &Path, size: u64, part_size: u64, parallel: usize) -> f64 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let started = Instant::now();
    let plan = json(
        client
            .post(format!("{base}/api/v1/uploads/multipart"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"filename": "big.bin", "size": size, "part_size": part_size})),
    )
    .await;
    let id = plan["id"].as_str().unwrap().to_owned();
    let count = plan["part_count"].as_u64().unwrap();
    let parts: Vec<(u64, String)> = futures_util::stream::iter(1..=count)
        .map(|number| {
            let (client, id, base) = (client.clone(), id.clone(), base.to_owned());
            async move {
                let bytes = read_part(path, part_size, size, number).await;
                let sha = hex::encode(Sha256::digest(&bytes));
                let urls = json(
                    client
                        .post(format!("{base}/api/v1/uploads/multipart/{id}/urls"))
                        .bearer_auth(ADMIN_KEY)
                        .json(&json!({"parts": [{"number": number, "sha256": sha}]})),
                )
                .await;
                let entry = &urls["parts"][0];
                let mut put = client.put(entry["url"].as_str().unwrap()).body(bytes);
                for (name, value) in entry["headers"].as_object().unwrap() {
                    if !name.eq_ignore_ascii_case("content-length") {
                        put = put.header(name, value.as_str().unwrap());
                    }
                }
                let r = put.send().await.unwrap();
                assert!(r.status().is_success(), "part {number}: {}", r.status());
                (number, sha)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut parts = parts;
    parts.sort();
    let list: Vec<Value> = parts
        .iter()
        .map(|(n, sha)| json!({"number": n, "sha256": sha}))
        .collect();
    let done = json(
        client
            .post(format!("{base}/api/v1/uploads/multipart/{id}/complete"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"parts": list})),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done["size"], size);
    let r = client
        .delete(format!("{base}/api/v1/uploads/{id}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    secs
}

/// Starts s3s-fs on `root` with a bucket; the child and the env for `serve`.
fn s3s_fs(binary: &Path, root: &Path) -> (std::process::Child, Vec<(&'static str, String)>) {
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    let port = free_port();
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "AKIABENCH",
            "--secret-key",
            "bench-secret-key-0123456789",
        ])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let env = vec![
        ("SHORTLINK_OBJECTS__BACKEND", "s3".to_owned()),
        (
            "SHORTLINK_OBJECTS__S3__ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("SHORTLINK_OBJECTS__S3__BUCKET", "uploads".to_owned()),
        (
            "SHORTLINK_OBJECTS__S3__ACCESS_KEY_ID",
            "AKIABENCH".to_owned(),
        ),
        (
            "SHORTLINK_OBJECTS__S3__SECRET_ACCESS_KEY",
            "bench-secret-key-0123456789".to_owned(),
        ),
    ];
    (child, env)
}

async fn metric(control: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{control}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(control: &str, name: &str, at_least: f64, within: Duration) -> Duration {
    let started = Instant::now();
    while metric(control, name).await < at_least {
        assert!(
            started.elapsed() < within,
            "{name} did not reach {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Many small uploads with an expiry, orphans beside them: the scan's cost, then the
/// expiry sweep's.
async fn sweep_cost(work: &Path, uploads: usize) {
    let data = work.join("sweep");
    let server = ReleaseServer::start(
        &data,
        ADMIN_KEY,
        &[
            ("SHORTLINK_CONTROL__UPLOAD_SWEEP_SECONDS", "1".to_owned()),
            ("SHORTLINK_CONTROL__ORPHAN_SCAN_SECONDS", "1".to_owned()),
            (
                "SHORTLINK_CONTROL__WRITES_PER_MINUTE",
                "10000000".to_owned(),
            ),
            ("SHORTLINK_CONTROL__WRITE_BURST", "1000000".to_owned()),
        ],
    )
    .await;
    let control = server.control.clone();
    let client = reqwest::Client::new();
    let expires =
        shortlink_core::time_util::to_rfc3339(shortlink_core::time_util::now_unix() + 3600);
    let started = Instant::now();
    futures_util::stream::iter(0..uploads)
        .map(|i| {
            let (client, control, expires) = (client.clone(), control.clone(), expires.clone());
            async move {
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(format!("file {i}").into_bytes())
                        .file_name("f.txt"),
                );
                let r = client
                    .post(format!("{control}/api/v1/uploads?expires_at={expires}"))
                    .bearer_auth(ADMIN_KEY)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let body: Value = r.json().await.unwrap();
                body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    println!(
        "{uploads} uploads made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // As many orphans, old enough to go.
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for i in 0..uploads {
        let path = data.join(format!("objects/u/orphan{i:08}"));
        std::fs::write(&path, b"orphan").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let scanned = metric(&control, "shortlink_upload_orphan_scanned_objects_total").await;
    let waited = wait_metric(
        &control,
        "shortlink_upload_orphans_removed_total{kind=\"object\"}",
        uploads as f64,
        Duration::from_secs(600),
    )
    .await;
    let scan = metric(&control, "shortlink_upload_orphan_scan_seconds").await;
    println!(
        "orphan scan over {uploads} owned objects and {uploads} orphans: {scan:.2} s (all removed {:.1} s after they were written)",
        waited.as_secs_f64()
    );
    // The next scan finds none: the cost of a scan of owned objects only.
    let before = metric(&control, "shortlink_upload_orphan_scanned_objects_total").await;
    wait_metric(
        &control,
        "shortlink_upload_orphan_scanned_objects_total",
        before + uploads as f64,
        Duration::from_secs(600),
    )
    .await;
    let scan = metric(&control, "shortlink_upload_orphan_scan_seconds").await;
    println!(
        "orphan scan over {uploads} owned objects: {scan:.2} s ({:.1} µs per object; {} scanned before)",
        scan * 1e6 / uploads as f64,
        scanned
    );
    // Every upload expires now: how long until the sweep has removed them all.
    let now = shortlink_core::time_util::to_rfc3339(shortlink_core::time_util::now_unix());
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = json(
                client
                    .get(format!(
                        "{control}/api/v1/uploads?limit=100&cursor={cursor}"
                    ))
                    .bearer_auth(ADMIN_KEY),
            )
            .await;
            ids.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["id"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break ids,
            }
        }
    };
    futures_util::stream::iter(ids)
        .map(|id| {
            let (client, control, now) = (client.clone(), control.clone(), now.clone());
            async move {
                json(
                    client
                        .patch(format!("{control}/api/v1/uploads/{id}"))
                        .bearer_auth(ADMIN_KEY)
                        .json(&json!({"expires_at": now})),
                )
                .await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let took = wait_metric(
        &control,
        "shortlink_uploads_swept_total{reason=\"expired\"}",
        uploads as f64,
        Duration::from_secs(1200),
    )
    .await;
    println!(
        "expiry sweep of {uploads} uploads (record, file, thumbnails' keys, short link, event each): {:.1} s ({:.0} uploads/s)",
        took.as_secs_f64(),
        uploads as f64 / took.as_secs_f64()
    );
    drop(server);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: u64 = arg(1, 5120);
    let parallel: usize = arg(2, 4);
    let part_mib: u64 = arg(3, 64);
    let uploads: usize = arg(4, 10_000);
    let size = mib * 1024 * 1024;
    let part_size = part_mib * 1024 * 1024;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Everything on the same disk: the source, cp's copy, the object folders.
    let work = tempfile::tempdir_in(root.join("target")).unwrap();
    let source = work.path().join("source.bin");
    random_file(&source, size);

    let copy = work.path().join("copy.bin");
    let started = Instant::now();
    let ok = Command::new("cp")
        .arg(&source)
        .arg(&copy)
        .status()
        .unwrap()
        .success()
        && Command::new("sync").arg(&copy).status().unwrap().success();
    assert!(ok, "cp failed");
    let cp = started.elapsed().as_secs_f64();
    std::fs::remove_file(&copy).unwrap();
    println!(
        "file {mib} MiB in {part_mib} MiB parts, {parallel} at a time; cp + sync {cp:.2} s ({:.0} MiB/s)",
        mib as f64 / cp
    );

    let mut backends: Vec<Backend> = vec![("local disk", Vec::new(), None)];
    if let Ok(binary) = std::env::var("S3S_FS_BIN") {
        let (child, env) = s3s_fs(Path::new(&binary), &work.path().join("s3"));
        backends.push(("s3s-fs", env, Some(child)));
    }
    for (name, env, s3) in backends {
        let mut env = env;
        env.push((
            "SHORTLINK_CONTROL__MAX_MULTIPART_UPLOAD_BYTES",
            (size * 2).to_string(),
        ));
        let server = ReleaseServer::start(
            &work.path().join(format!("data-{}", name.replace(' ', "-"))),
            ADMIN_KEY,
            &env,
        )
        .await;
        let pid = server.child.id();
        let rss_start = status_kib(pid, "VmRSS");
        let secs = upload(&server.proxy, &source, size, part_size, parallel).await;
        // The kernel's high-water mark of the process's resident memory.
        let peak = status_kib(pid, "VmHWM");
        println!(
            "{name}: {secs:.2} s ({:.0} MiB/s, {:.2}× cp's time); RSS {} MiB at start, peak {} MiB (growth {} MiB)",
            mib as f64 / secs,
            secs / cp,
            rss_start / 1024,
            peak / 1024,
            peak.saturating_sub(rss_start) / 1024
        );
        drop(server);
        if let Some(mut child) = s3 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if uploads > 0 {
        sweep_cost(work.path(), uploads).await;
    }
}
