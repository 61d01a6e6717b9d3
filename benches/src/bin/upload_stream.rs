//! A large streamed upload against the release binary: the control plane's peak RSS
//! growth and the throughput, next to `cp` (+ `sync`) of the same file on the same disk.
//!
//! `cargo build --release -p shortlink && cargo run --release -p shortlink-benches --bin upload_stream -- [MiB=1024] [runs=3]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shortlink_benches::{ReleaseServer, arg, random_file, status_kib};
use tokio::io::AsyncReadExt;

const ADMIN_KEY: &str = "sl_upload_bench_admin_key_00000000000";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Streams `path` as a multipart upload to `base`; returns the seconds it took and the
/// highest RSS (KiB) of `pid` sampled meanwhile.
async fn upload(base: &str, path: &Path, pid: u32) -> (f64, u64) {
    let file = tokio::fs::File::open(path).await.unwrap();
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let sampling = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(status_kib(pid, "VmRSS"));
            tokio::time::sleep(Duration::from_millis(20)).await;
            if peak == u64::MAX {
                return peak;
            }
        }
    });
    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    sampling.abort();
    (secs, status_kib(pid, "VmHWM"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: u64 = arg(1, 1024);
    let runs = arg::<usize>(2, 3).max(1);
    let size = mib * 1024 * 1024;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Everything on the same disk: the source, cp's copy and the object folder.
    let work = tempfile::tempdir_in(root.join("target")).unwrap();
    let source = work.path().join("source.bin");
    random_file(&source, size);

    let mut cp_secs = Vec::new();
    for i in 0..runs {
        let target = work.path().join(format!("copy{i}.bin"));
        let started = Instant::now();
        let ok = Command::new("cp")
            .arg(&source)
            .arg(&target)
            .status()
            .unwrap()
            .success()
            && Command::new("sync")
                .arg(&target)
                .status()
                .unwrap()
                .success();
        assert!(ok, "cp failed");
        cp_secs.push(started.elapsed().as_secs_f64());
        std::fs::remove_file(&target).unwrap();
    }

    let server = ReleaseServer::start(
        &work.path().join("data"),
        ADMIN_KEY,
        &[(
            "SHORTLINK_CONTROL__MAX_UPLOAD_BYTES",
            (size * 2).to_string(),
        )],
    )
    .await;
    let pid = server.child.id();
    let (control, proxy) = (server.control.clone(), server.proxy.clone());
    let rss_start = status_kib(pid, "VmRSS");
    println!(
        "file {mib} MiB; cp + sync median {:.2} s ({:.0} MiB/s)",
        median(cp_secs.clone()),
        mib as f64 / median(cp_secs.clone())
    );
    for (name, base) in [("control plane", &control), ("through the proxy", &proxy)] {
        let mut secs = Vec::new();
        let mut peak = 0;
        for _ in 0..runs {
            let (s, hwm) = upload(base, &source, pid).await;
            secs.push(s);
            peak = peak.max(hwm);
            // Remove the stored objects so the disk does not fill.
            let objects = work.path().join("data/objects/u");
            if let Ok(entries) = std::fs::read_dir(&objects) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let s = median(secs);
        println!(
            "upload {name}: median {s:.2} s ({:.0} MiB/s, {:.2}× cp's time); RSS {} MiB at start, peak {} MiB (growth {} MiB)",
            mib as f64 / s,
            s / median(cp_secs.clone()),
            rss_start / 1024,
            peak / 1024,
            peak.saturating_sub(rss_start) / 1024
        );
    }
    drop(server);
}
