//! Measures backup and restore of a large installation: 1 M links and 10 M clicks on the
//! embedded store, backed up (time, size) and restored into a fresh embedded store and,
//! with `CQL_NODES`, into a fresh CQL keyspace.
//!
//! `cargo run --release -p shortlink-benches --bin backup_restore -- [links=1000000] [clicks=10000000]`
//! (env: `CQL_NODES=127.0.0.1:9042` to restore into CQL too)
//!
//! Clicks go to the 1 000 most clicked links over 29 days (a popular few, as traffic is),
//! through the store's own ingestion, so rollups and the click log are what a live
//! installation keeps.

use std::sync::Arc;
use std::time::Instant;

use shortlink_benches::arg;
use shortlink_control::backup::{ObjectsMode, Progress, backup, restore};
use shortlink_core::{
    EnrichedClick, NewLink, RedirectStatus, Role, ShortCode, time_util::now_unix,
};
use shortlink_cql::{CqlConfig, CqlStore, Retention};
use shortlink_embedded::{EmbeddedConfig, EmbeddedStore, Pacing};
use shortlink_objects::ObjectsConfig;
use shortlink_store::{AccountStore, ClickStore, LinkStore, Store};

/// Links that get clicks.
const HOT: usize = 1000;
const BATCH: usize = 1000;

fn quiet(_: &Progress) {}

fn size_of_dir(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let links: usize = arg(1, 1_000_000);
    let clicks: usize = arg(2, 10_000_000);
    let work = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(work.path().join("source"));
    config.ingest_pacing = Pacing::UNPACED;
    config.click_retention_days = 0;
    let source = EmbeddedStore::open(config).unwrap();
    let owners: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(
                source
                    .create_user(&format!("user{i}"), Role::User)
                    .await
                    .unwrap()
                    .id,
            );
        }
        ids
    };

    let started = Instant::now();
    let mut ids = Vec::with_capacity(links);
    let mut tasks = Vec::new();
    for i in 0..links {
        let store = source.clone();
        let owner = owners[i % owners.len()];
        tasks.push(tokio::spawn(async move {
            store
                .create_link(NewLink {
                    domain: String::new(),
                    code: ShortCode::from_stored(format!("b{i:07}")),
                    custom_alias: true,
                    owner,
                    url: format!("https://bench.example/page/{i}?ref=backup"),
                    redirect: RedirectStatus::Permanent,
                    expires_at: None,
                    max_clicks: None,
                    tags: if i % 10 == 0 {
                        vec!["campaign".into()]
                    } else {
                        vec![]
                    },
                    password_hash: None,
                    targeting: None,
                    fallback_url: None,
                })
                .await
                .unwrap()
                .link
                .id
        }));
        if tasks.len() == 256 {
            for task in tasks.drain(..) {
                ids.push(task.await.unwrap());
            }
        }
    }
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let made_links = started.elapsed();

    let started = Instant::now();
    let now_ms = now_unix() * 1000;
    let span_ms: i64 = 29 * 86_400_000;
    let browsers = ["Chrome", "Safari", "Firefox", "Edge"];
    let countries = ["DE", "US", "NL", "FR", "JP", "BR"];
    let mut done = 0;
    let mut n = 0;
    while done < clicks {
        let wave: Vec<_> = (0..8)
            .filter_map(|_| {
                if done >= clicks {
                    return None;
                }
                let count = (clicks - done).min(BATCH);
                let batch: Vec<EnrichedClick> = (done..done + count)
                    .map(|i| EnrichedClick {
                        link_id: ids[(i * 7919) % HOT.min(ids.len())],
                        ts_ms: now_ms - (i as i64 * 104_729) % span_ms,
                        ip: format!("198.51.{}.0", i % 250),
                        browser: browsers[i % browsers.len()].into(),
                        os: "Windows".into(),
                        device: if i % 13 == 0 { "bot" } else { "desktop" }.into(),
                        bot: i % 13 == 0,
                        referrer: format!("site{}.example", i % 20),
                        country: countries[i % countries.len()].into(),
                        count: 1,
                        visitor: 0,
                    })
                    .collect();
                done += count;
                n += 1;
                let store = source.clone();
                let id = format!("bench-{n}");
                Some(tokio::spawn(async move {
                    store.ingest_clicks(&id, batch).await.unwrap()
                }))
            })
            .collect();
        for task in wave {
            task.await.unwrap();
        }
    }
    let made_clicks = started.elapsed();
    let db_size = size_of_dir(&work.path().join("source"));
    println!(
        "source: {links} links in {:.1} s, {clicks} clicks in {:.1} s, database {:.0} MiB",
        made_links.as_secs_f64(),
        made_clicks.as_secs_f64(),
        db_size as f64 / 1_048_576.0
    );

    let objects_config = ObjectsConfig::default();
    let objects = shortlink_objects::open(&objects_config, &work.path().join("objects"))
        .await
        .unwrap();
    let source: Arc<dyn Store> = source;
    let file = work.path().join("bench.backup.zst");
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let path = file.clone();
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk).unwrap();
        }
        out.flush().unwrap();
    });
    let progress = backup(&source, &*objects, ObjectsMode::Include, tx, quiet)
        .await
        .unwrap();
    writer.await.unwrap();
    let backup_time = started.elapsed();
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "backup: {:.1} s, {:.0} MiB ({} records: {})",
        backup_time.as_secs_f64(),
        size as f64 / 1_048_576.0,
        progress.total,
        progress.summary()
    );
    drop(source);

    let target: Arc<dyn Store> =
        EmbeddedStore::open(EmbeddedConfig::new(work.path().join("target"))).unwrap();
    let started = Instant::now();
    let path = file.clone();
    let open = move || std::fs::File::open(&path);
    let restored = restore(&target, &*objects, open, quiet).await.unwrap();
    println!(
        "restore into the embedded store: {:.1} s ({} records)",
        started.elapsed().as_secs_f64(),
        restored.total
    );
    drop(target);

    if let Ok(nodes) = std::env::var("CQL_NODES") {
        let cql = CqlConfig {
            nodes: nodes.split(',').map(str::to_owned).collect(),
            keyspace: format!("bench_restore_{:08x}", rand::random::<u32>()),
            ..CqlConfig::default()
        };
        CqlStore::migrate(&cql, &mut |_| {}).await.expect("migrate");
        let retention = Retention {
            click_days: 30,
            event_hours: 24,
        };
        let target: Arc<dyn Store> = CqlStore::open(&cql, retention).await.expect("open");
        let started = Instant::now();
        let path = file.clone();
        let open = move || std::fs::File::open(&path);
        let restored = restore(&target, &*objects, open, quiet).await.unwrap();
        println!(
            "restore into CQL (one node): {:.1} s ({} records)",
            started.elapsed().as_secs_f64(),
            restored.total
        );
        let _ = CqlStore::drop_keyspace(&cql).await;
    }
}
