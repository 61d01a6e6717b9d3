//! Click capture and shipping.
//!
//! In `logging()` the proxy hashes what identifies the visit (link, second, client, method,
//! captured headers) without copying anything and hands that to [`ClickSink::record`]: a
//! click identical to one already held in its shard only bumps that one's count; a new one
//! has its header values copied into the shard's byte buffer and is held. Request threads
//! allocate nothing once the buffers have grown: the shipper builds the `ClickEvent`s (and
//! their strings) from the held bytes when it takes a shard, on its own thread, so no
//! memory moves between the request threads' heaps and the shipper's. Shards are small
//! mutex-guarded maps, one per recording thread, so request threads rarely meet and never
//! wait on I/O. The [`ClickShipper`]
//! background service takes the shards' contents on a timer, folds them further per second,
//! cuts batches by size or age, and posts them to a control plane's `/internal/v1/clicks` with the shared
//! secret and a random batch id — or, in `serve`, hands them to the control plane's ingestion
//! in the same process. When no control plane takes a batch, it goes to a bounded
//! on-disk spool; while the spool holds anything, new batches queue behind it and the
//! oldest is retried with exponential backoff, so batches arrive in order. On shutdown the
//! queue is drained and whatever cannot be delivered at once is spooled. Every take is
//! journaled first (`journal.rs`), so a crash loses one take interval at most.

mod capture;
mod claim;
mod journal;
mod shipper;
mod spool;
mod taker;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use pingora::lb::{LoadBalancer, selection::RoundRobin};

#[cfg(test)]
pub(crate) use capture::captured_text;
pub use capture::{ClickSink, Visit, click_identity};
pub use shipper::{ClickShipper, LocalIngest, LocalIngestError, ShipperConfig};
pub use taker::ClickTaker;

/// Counters of the click path (read by tests and, later, metrics).
#[derive(Debug, Default)]
pub struct ClickStats {
    /// Clicks captured (counted when the shipper takes them, every 100 ms).
    pub captured: AtomicU64,
    /// Clicks dropped because the capture shards or the spool were full.
    pub dropped: AtomicU64,
    /// Clicks a control plane accepted.
    pub shipped: AtomicU64,
    /// Clicks written to the spool.
    pub spooled: AtomicU64,
    /// Clicks a control plane refused as invalid (not retried).
    pub rejected: AtomicU64,
    /// Clicks an earlier process left in the journal, spooled again at start.
    pub recovered: AtomicU64,
    /// Damaged journal or spool files moved to `quarantine/` in the spool folder.
    pub quarantined: AtomicU64,
}

/// Creates the click path: the sink for the proxy (holding at most about `capacity`
/// distinct clicks between two takes, recorded by `threads` threads), the taker service
/// and the shipper service. What an earlier process left in the journal is spooled first.
pub fn click_queue(
    capacity: usize,
    threads: usize,
    config: ShipperConfig,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
) -> std::io::Result<(ClickSink, ClickTaker, ClickShipper)> {
    let stats = Arc::new(ClickStats::default());
    let sink = ClickSink::new(capacity, threads, stats.clone());
    let root = config.spool_dir.clone();
    std::fs::create_dir_all(&root)?;
    let owned = claim::own(&root)?;
    let mut spool = spool::Spool::open(owned.dir.clone(), root.clone(), config.spool_max_bytes)?;
    adopt(&root, &owned.dir, &mut spool, &stats)?;
    let journal = if config.journal {
        Some(journal::Journal::open(owned.dir.join("journal"), &root)?.0)
    } else {
        None
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(std::io::Error::other)?;
    let (cuts, cut) = tokio::sync::mpsc::unbounded_channel();
    let cutting = taker::Cutting {
        batch_max: config.batch_max,
        batch_every: config.batch_every,
    };
    Ok((
        sink.clone(),
        ClickTaker::new(sink, journal, cutting, cuts),
        ClickShipper::new(cut, spool, owned, stats, config, client, upstreams),
    ))
}

/// Runs `f` on `shared` on tokio's blocking pool: file I/O never holds up an async thread.
async fn blocking<T: Send + 'static, R: Send + 'static>(
    shared: &Arc<std::sync::Mutex<T>>,
    f: impl FnOnce(&mut T) -> R + Send + 'static,
) -> R {
    let shared = shared.clone();
    let work = move || {
        f(&mut shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Takes over what processes that are gone left under `root`: their spooled batches, and
/// the batches in their journals, spooled under the ids they were journaled with (one
/// delivered already is applied once however often it arrives); then their folders are
/// removed. Batches spooled directly in `root` (an older layout) are taken over too.
fn adopt(
    root: &std::path::Path,
    own: &std::path::Path,
    spool: &mut spool::Spool,
    stats: &ClickStats,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let mut spooled = spool.adopt(root)?;
    let (mut batches, mut clicks) = (0usize, 0u64);
    for orphan in claim::orphans(root, own)? {
        spooled += spool.adopt(&orphan.dir)?;
        let (_, recovered) = journal::Journal::open(orphan.dir.join("journal"), root)?;
        for kept in &recovered.quarantined {
            stats.quarantined.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kept = %kept.display(), "a click journal file ends in a damaged record (a torn write?); its intact records are recovered and a copy is kept aside");
        }
        for (batch, _) in &recovered.batches {
            let n = batch.total();
            if batch.clicks.is_empty() {
                continue;
            }
            if spool.push(batch) {
                batches += 1;
                clicks += n;
            } else {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        std::fs::remove_dir_all(&orphan.dir)?;
    }
    stats.recovered.fetch_add(clicks, Ordering::Relaxed);
    if batches > 0 || spooled > 0 {
        tracing::info!(
            journaled_batches = batches,
            journaled_clicks = clicks,
            spooled_batches = spooled,
            "took over the clicks of processes that are gone; they are spooled for delivery"
        );
    }
    Ok(())
}
