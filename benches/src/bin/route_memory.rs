//! Measures the route table's resident memory per million links, then the time to save it
//! as a route snapshot and to restore that into an empty table.
//!
//! `cargo run --release --workspace --bin route_memory -- 1000000 [url_bytes]`: links (default
//! 1 M) and, optionally, the URL length (the synthetic URLs are padded to it; default 62).

use shortlink_benches::sample_link;

/// The allocator `shortlink` runs with, so the table costs here what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let url_len: Option<usize> = std::env::args().nth(2).and_then(|a| a.parse().ok());
    // Build the links first so only the table's own memory is measured.
    let links: Vec<_> = (0..n)
        .map(|i| {
            let mut link = sample_link(i);
            if let Some(len) = url_len
                && len > link.url.len() + 5
            {
                let pad = len - link.url.len() - 5;
                link.url.push_str("&pad=");
                link.url.extend(std::iter::repeat_n('x', pad));
            }
            link
        })
        .collect();
    let url_bytes: usize = links.iter().map(|l| l.url.len()).sum();
    let before = rss_bytes();
    let table = shortlink_proxy::RouteTable::new(std::time::Duration::from_secs(2), 1000);
    for link in &links {
        table.upsert(link);
    }
    let after = rss_bytes();
    let per_link = (after - before) as f64 / n as f64;
    println!(
        "links={n} table_rss_mib={:.1} bytes_per_link={per_link:.1} mean_url_bytes={:.1} projected_10M_gib={:.2}",
        (after - before) as f64 / (1 << 20) as f64,
        url_bytes as f64 / n as f64,
        per_link * 10_000_000.0 / (1u64 << 30) as f64
    );
    assert_eq!(table.len(), n);
    // The route snapshot of that table: saved, then restored into an empty table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.snapshot");
    let started = std::time::Instant::now();
    let (header, size) = shortlink_proxy::snapshot::save(&table, &path, 1, 1).unwrap();
    let saved = started.elapsed();
    drop(table);
    let seed = shortlink_proxy::snapshot::read_header(&path).unwrap().seed;
    let restored =
        shortlink_proxy::RouteTable::with_seed(std::time::Duration::from_secs(2), 1000, seed);
    let started = std::time::Instant::now();
    shortlink_proxy::snapshot::restore(&restored, &path).unwrap();
    println!(
        "snapshot routes={} file_mib={:.0} save_s={:.2} restore_s={:.2}",
        header.routes,
        size as f64 / (1 << 20) as f64,
        saved.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(restored.len(), n);
}
