//! Creates N links with aliases `ld0` … `ld{N-1}` through the API, 64 requests at a time,
//! so the load harness knows every code without reading the store. With `targeted` each
//! link also gets targeting rules (iOS, Android and two countries); with `capped` a click
//! limit far beyond any run (so every redirect is answered from a click lease).
//!
//! `load_seed <api base> <api key> <n> [targeted|capped]`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(4).map(String::as_str);
    if !(4..=5).contains(&args.len()) || variant.is_some_and(|a| a != "targeted" && a != "capped") {
        eprintln!("usage: load_seed <api base> <api key> <n> [targeted|capped]");
        std::process::exit(2);
    }
    let targeted = variant == Some("targeted");
    let capped = variant == Some("capped");
    let base = args[1].trim_end_matches('/').to_owned();
    let key = args[2].clone();
    let n: usize = args[3].parse().expect("n must be a number");
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (next, client, base, key) = (next.clone(), client.clone(), base.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let mut body = serde_json::json!({
                        "url": format!("https://www.example.com/articles/{i:08}/a-typical-slug?ref=x"),
                        "alias": format!("ld{i}"),
                    });
                    if capped {
                        body["max_clicks"] = serde_json::json!(4_000_000_000u64);
                    }
                    if targeted {
                        body["targeting"] = serde_json::json!({
                            "ios": format!("https://apps.apple.com/app/id{i:08}"),
                            "android": format!("https://play.google.com/store/apps/details?id=ex{i}"),
                            "countries": {
                                "DE": format!("https://www.example.de/artikel/{i:08}"),
                                "FR": format!("https://www.example.fr/article/{i:08}"),
                            },
                        });
                    }
                    let r = client
                        .post(format!("{base}/api/v1/links"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .expect("API reachable");
                    // 409 means an earlier run created it already.
                    assert!(
                        r.status().is_success() || r.status() == 409,
                        "create ld{i}: {}",
                        r.status()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("seeded {n} links in {secs:.1} s ({:.0}/s)", n as f64 / secs);
}
