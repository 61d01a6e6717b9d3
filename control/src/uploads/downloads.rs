//! Download counts: each download of a file from its start is counted in memory and
//! written to the store in one batch every [`FLUSH_EVERY`] (and at shutdown), so a popular
//! file costs one write per interval, not one per download. A crash loses at most the
//! counts of the last interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::warn;

use crate::state::AppState;

/// How often counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Downloads counted since the last write, by upload id.
#[derive(Debug, Default)]
pub struct DownloadCounts {
    pending: Mutex<HashMap<String, u64>>,
}

impl DownloadCounts {
    /// Counts one download of upload `id`.
    pub fn count(&self, id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending.entry(id.to_owned()).or_default() += 1;
    }

    /// Writes the counts so far; on failure they are kept for the next write.
    pub async fn flush(&self, state: &AppState) {
        let batch: Vec<(String, u64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = state.store().add_downloads(batch.clone()).await {
            warn!(error = %e, uploads = batch.len(), "writing download counts failed; retrying");
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, n) in batch {
                *pending.entry(id).or_default() += n;
            }
        }
    }
}

/// Writes the counts every [`FLUSH_EVERY`] until the task is dropped.
pub(crate) async fn run_flusher(state: AppState) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        state.downloads().flush(&state).await;
    }
}
