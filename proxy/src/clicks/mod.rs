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
//! queue is drained and whatever cannot be delivered at once is spooled.

mod capture;
mod shipper;
mod spool;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use pingora::lb::{LoadBalancer, selection::RoundRobin};

#[cfg(test)]
pub(crate) use capture::captured_text;
pub use capture::{ClickSink, Visit, click_identity};
pub use shipper::{ClickShipper, LocalIngest, LocalIngestError, ShipperConfig};

/// Counters of the click path (read by tests and, later, metrics).
#[derive(Debug, Default)]
pub struct ClickStats {
    /// Clicks captured (counted when the shipper takes them, every 250 ms).
    pub captured: AtomicU64,
    /// Clicks dropped because the capture shards or the spool were full.
    pub dropped: AtomicU64,
    /// Clicks a control plane accepted.
    pub shipped: AtomicU64,
    /// Clicks written to the spool.
    pub spooled: AtomicU64,
    /// Clicks a control plane refused as invalid (not retried).
    pub rejected: AtomicU64,
}

/// Creates the click path: the sink for the proxy (holding at most about `capacity`
/// distinct clicks between two takes, recorded by `threads` threads) and the shipper
/// service.
pub fn click_queue(
    capacity: usize,
    threads: usize,
    config: ShipperConfig,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
) -> std::io::Result<(ClickSink, ClickShipper)> {
    let stats = Arc::new(ClickStats::default());
    let sink = ClickSink::new(capacity, threads, stats.clone());
    let spool = spool::Spool::open(config.spool_dir.clone(), config.spool_max_bytes)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(std::io::Error::other)?;
    Ok((
        sink.clone(),
        ClickShipper::new(sink, spool, stats, config, client, upstreams),
    ))
}
