//! Measures the click pipeline's store side: enrichment rate, ingestion rate into the
//! embedded store, and stats query time (unique visitors included) for one link at a
//! small and a large click count.
//!
//! `cargo run --release -p shortlink-benches --bin click_pipeline -- [large clicks=10000000]`
//! (env: `IN_FLIGHT=<batches at once, default 8>`, `UNPACED=1` to turn ingestion pacing off)

use std::sync::Arc;
use std::time::{Duration, Instant};

use shortlink_analytics::Enricher;
use shortlink_core::{
    ClickEvent, EnrichedClick, Interval, NewLink, RedirectStatus, Role, ShortCode,
    time_util::now_unix,
};
use shortlink_embedded::{EmbeddedConfig, EmbeddedStore, Pacing};
use shortlink_store::{AccountStore, ClickStore, LinkStore, StatsQuery};

const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const BATCH: usize = 1000;
/// Batches ingested at once (`IN_FLIGHT=1` sends them one after another, as a proxy
/// replaying its spool does).
static IN_FLIGHT: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
});

fn click(i: usize, link_id: i64, span_ms: i64, now_ms: i64) -> ClickEvent {
    ClickEvent {
        link_id,
        ts_ms: now_ms - (i as i64 * 7919) % span_ms,
        ip: Some(std::net::IpAddr::from([
            198,
            51,
            (i % 250) as u8,
            (i % 200) as u8,
        ])),
        user_agent: Some(UAS[i % UAS.len()].to_owned()),
        referrer: i
            .is_multiple_of(3)
            .then(|| format!("https://site{}.example/page", i % 20)),
        host: Some("sho.rt".to_owned()),
        country: Some(["DE", "US", "NL", "FR"][i % 4].to_owned()),
        head: false,
        qr: false,
        count: 1,
    }
}

/// A uniform visitor id for `n` (SplitMix64's finalizer), as the enricher's keyed hash
/// gives them.
fn visitor_id(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn ingest(store: &Arc<EmbeddedStore>, clicks: Vec<EnrichedClick>, tag: &str) -> f64 {
    let started = Instant::now();
    let total = clicks.len();
    // Several batches in flight, as several proxies (or a busy one) would send them.
    let mut chunks = clicks.chunks(BATCH).enumerate();
    loop {
        let wave: Vec<_> = chunks
            .by_ref()
            .take(*IN_FLIGHT)
            .map(|(n, chunk)| {
                let store = store.clone();
                let id = format!("{tag}-{n}");
                let chunk = chunk.to_vec();
                tokio::spawn(async move { store.ingest_clicks(&id, chunk).await.unwrap() })
            })
            .collect();
        if wave.is_empty() {
            break;
        }
        for task in wave {
            task.await.unwrap();
        }
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let large: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    // `UNPACED=1`: ingestion never rests (see the store's `Pacing`).
    if std::env::var("UNPACED").is_ok_and(|v| v == "1") {
        config.ingest_pacing = Pacing::UNPACED;
    }
    let store = EmbeddedStore::open(config).unwrap();
    let owner = store.create_user("bench", Role::User).await.unwrap().id;
    let mut ids = Vec::new();
    for name in ["small", "large"] {
        let link = store
            .create_link(NewLink {
                domain: String::new(),
                code: ShortCode::from_stored(name.into()),
                custom_alias: true,
                owner,
                url: format!("https://bench.example/{name}"),
                redirect: RedirectStatus::Permanent,
                expires_at: None,
                max_clicks: None,
                tags: vec![],
                password_hash: None,
                targeting: None,
                fallback_url: None,
            })
            .await
            .unwrap()
            .link;
        ids.push(link.id);
    }
    let now_ms = now_unix() * 1000;
    let span_ms = 29 * 86_400_000;

    // Enrichment (one core).
    let enricher = Enricher::new(None, false).unwrap();
    enricher.set_visitor_secret([7; 32]);
    let sample: Vec<ClickEvent> = (0..100_000)
        .map(|i| click(i, ids[1], span_ms, now_ms))
        .collect();
    let started = Instant::now();
    let enriched: Vec<EnrichedClick> = sample.iter().map(|c| enricher.enrich(c)).collect();
    let enrich_rate = sample.len() as f64 / started.elapsed().as_secs_f64();

    // Small link: 10 000 clicks.
    let small: Vec<EnrichedClick> = (0..10_000)
        .map(|i| EnrichedClick {
            link_id: ids[0],
            ..enriched[i % enriched.len()].clone()
        })
        .collect();
    ingest(&store, small, "small").await;

    // Large link: `large` clicks; the ingestion rate is measured here.
    let mut rates = Vec::new();
    let mut done = 0;
    while done < large {
        let n = (large - done).min(1_000_000);
        let part: Vec<EnrichedClick> = (done..done + n)
            .map(|i| {
                let mut c = enriched[i % enriched.len()].clone();
                c.ts_ms = now_ms - (i as i64 * 7919) % span_ms;
                // About three clicks per visitor: every hour's sketch is a full one.
                c.visitor = visitor_id(i as u64 / 3);
                c
            })
            .collect();
        rates.push(ingest(&store, part, &format!("large{done}")).await);
        done += n;
    }
    let last_rate = rates[rates.len() - 1];
    rates.sort_by(f64::total_cmp);
    let ingest_rate = rates[rates.len() / 2];
    let slowest = rates[0];

    let mut report = Vec::new();
    for (name, id) in [("10k", ids[0]), ("large", ids[1])] {
        for interval in [Interval::Hour, Interval::Day] {
            let span = match interval {
                Interval::Hour => 7 * 86_400,
                Interval::Day => 30 * 86_400,
            };
            let to = now_unix() + 3600;
            let query = StatsQuery {
                link_id: id,
                from: to - span,
                to,
                interval,
                top: 10,
                include_bots: false,
            };
            let mut times = Vec::new();
            let mut total = 0;
            let mut visitors = 0;
            for _ in 0..21 {
                let t = Instant::now();
                let stats = store.link_stats(query).await.unwrap();
                times.push(t.elapsed());
                (total, visitors) = (stats.total, stats.unique_visitors);
            }
            report.push(format!(
                "stats {name} {interval:?}: median {:?} (total {total}, unique visitors {visitors})",
                median(times)
            ));
        }
    }
    println!("enrichment: {enrich_rate:.0} clicks/s on one core");
    println!(
        "ingestion into the embedded store: median {ingest_rate:.0} clicks/s over {} runs of up to 1M \
         (slowest {slowest:.0}, last {last_rate:.0})",
        rates.len()
    );
    for line in report {
        println!("{line}");
    }
}
