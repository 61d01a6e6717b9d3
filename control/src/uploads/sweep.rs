//! The upload sweep: every `upload_sweep_seconds`, uploads past their expiry are removed
//! (pending ones are abandoned: their multipart upload is aborted); every
//! `orphan_scan_seconds`, the object store is scanned for objects and multipart uploads
//! no upload owns, which are removed once older than `orphan_grace_seconds`.
//!
//! An object is written before its record (a streamed upload is recorded once stored), so
//! an object without a record is removed only when two scans in a row found it so: the
//! record of an upload being stored follows its object within moments, never a whole
//! scan interval later. A multipart upload on S3 with no record at all may be a streamed
//! upload still arriving: it is left alone for as long as the slowest body the control
//! plane accepts could take (`max_upload_bytes` at `min_body_bytes_per_second`).
//!
//! The state is the store's, so the sweep is durable: a restart sweeps again, and any
//! number of control planes may sweep at once (only one of them gets to delete a record).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use shortlink_core::UploadState;
use shortlink_core::time_util::now_unix;
use shortlink_objects::ObjectError;
use tracing::{debug, info, warn};

use super::manage::{Removal, remove_upload};
use super::{OBJECT_PREFIX, key_owner};
use crate::metrics::{
    UPLOAD_ORPHAN_SCAN_SECONDS, UPLOAD_ORPHAN_SCANNED, UPLOAD_ORPHANS, UPLOAD_SWEEP_SECONDS,
    UPLOADS_SWEPT,
};
use crate::state::AppState;

/// Uploads read per round of the expiry sweep.
const SWEEP_BATCH: usize = 100;
/// Object keys asked for per page of the orphan scan (S3 answers at most 1 000).
const SCAN_PAGE: usize = 10_000;

/// Runs the sweep until the task is dropped.
pub(crate) async fn run_sweeper(state: AppState) {
    let every = Duration::from_secs(state.config().upload_sweep_seconds);
    let scan_every = Duration::from_secs(state.config().orphan_scan_seconds);
    let mut last_scan: Option<Instant> = None;
    let mut suspects = HashSet::new();
    loop {
        tokio::time::sleep(every).await;
        let started = Instant::now();
        match sweep_expired(&state).await {
            Ok(0) => {}
            Ok(n) => info!(uploads = n, "swept expired and abandoned uploads"),
            Err(e) => warn!(error = e.message(), "sweeping uploads failed"),
        }
        if last_scan.is_none_or(|at| at.elapsed() >= scan_every) {
            last_scan = Some(Instant::now());
            let scan = Instant::now();
            let scanned = scan_orphans(&state, &mut suspects).await;
            UPLOAD_ORPHAN_SCAN_SECONDS.set(scan.elapsed().as_secs_f64());
            match scanned {
                Ok((0, 0)) => {}
                Ok((objects, multipart)) => {
                    info!(objects, multipart, "removed orphaned upload objects")
                }
                Err(e) => warn!(
                    error = e.message(),
                    "scanning for orphaned upload objects failed"
                ),
            }
        }
        UPLOAD_SWEEP_SECONDS.observe(started.elapsed().as_secs_f64());
    }
}

/// Removes every upload past its expiry; how many.
pub(crate) async fn sweep_expired(state: &AppState) -> Result<u64, crate::error::ApiError> {
    let mut removed = 0;
    loop {
        let due = state
            .store()
            .expired_uploads(now_unix(), SWEEP_BATCH)
            .await?;
        if due.is_empty() {
            return Ok(removed);
        }
        let mut progressed = false;
        for upload in due {
            let why = match upload.state {
                UploadState::Pending => Removal::Abandoned,
                UploadState::Complete => Removal::Expired,
            };
            if remove_upload(state, &upload.id, why, Some(now_unix()))
                .await?
                .is_some()
            {
                UPLOADS_SWEPT.with_label_values(&[why.as_str()]).inc();
                removed += 1;
            }
            progressed = true;
        }
        if !progressed {
            return Ok(removed);
        }
    }
}

/// Removes objects and multipart uploads that no upload owns and that are older than the
/// grace; how many of each. `suspects` holds the orphaned keys the last scan found, and
/// leaves with this scan's: an object goes on its second finding.
pub(crate) async fn scan_orphans(
    state: &AppState,
    suspects: &mut HashSet<String>,
) -> Result<(u64, u64), crate::error::ApiError> {
    let config = state.config();
    let grace = Duration::from_secs(config.orphan_grace_seconds);
    let older_than = |at: SystemTime, age: Duration| {
        SystemTime::now()
            .duration_since(at)
            .is_ok_and(|elapsed| elapsed >= age)
    };
    let objects = state.objects();
    // Whether an upload record exists, per id seen in this scan.
    let mut owned: HashMap<String, bool> = HashMap::new();
    let mut found = HashSet::new();
    let mut removed_objects = 0;
    let mut after: Option<String> = None;
    loop {
        let page = objects
            .list(OBJECT_PREFIX, after.as_deref(), SCAN_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        UPLOAD_ORPHAN_SCANNED.inc_by(page.len() as u64);
        for object in page {
            let Some(id) = key_owner(&object.key) else {
                continue;
            };
            if !owned.contains_key(id) {
                let exists = state.store().get_upload(id).await?.is_some();
                owned.insert(id.to_owned(), exists);
            }
            if owned[id] || !older_than(object.modified, grace) {
                continue;
            }
            if !suspects.contains(&object.key) {
                found.insert(object.key);
                continue;
            }
            match objects.delete(&object.key).await {
                Ok(()) => {
                    UPLOAD_ORPHANS.with_label_values(&["object"]).inc();
                    removed_objects += 1;
                }
                Err(e) => {
                    warn!(error = %e, key = %object.key, "removing an orphaned object failed");
                    found.insert(object.key);
                }
            }
        }
    }
    *suspects = found;
    // On S3 a streamed upload is a multipart upload with no record until it is stored: one
    // is left alone for as long as the slowest body accepted could take.
    let streaming = if objects.kind() == "s3" {
        Duration::from_secs(
            config
                .body_grace_seconds
                .saturating_add(config.max_upload_bytes / config.min_body_bytes_per_second.max(1)),
        )
    } else {
        Duration::ZERO
    };
    let mut removed_multipart = 0;
    match objects.list_multipart(OBJECT_PREFIX).await {
        Ok(uploads) => {
            for listed in uploads {
                let upload = match key_owner(&listed.key) {
                    Some(id) => state.store().get_upload(id).await?,
                    None => None,
                };
                let orphaned = match upload {
                    // Recordless: abandoned, or a streamed upload still arriving.
                    None => older_than(listed.started, grace.max(streaming)),
                    // A pending multipart upload's own, or a restore writing a recorded
                    // upload's object: kept. Another of a pending one's key: a leftover.
                    Some(u) => match (&u.multipart, u.state) {
                        (Some(plan), UploadState::Pending) => {
                            plan.store_upload_id != listed.upload_id
                                && older_than(listed.started, grace)
                        }
                        _ => false,
                    },
                };
                if !orphaned {
                    continue;
                }
                match objects
                    .multipart_abort(&listed.key, &listed.upload_id)
                    .await
                {
                    Ok(()) => {
                        UPLOAD_ORPHANS.with_label_values(&["multipart"]).inc();
                        removed_multipart += 1;
                    }
                    Err(e) => {
                        warn!(error = %e, key = %listed.key, "aborting an orphaned multipart upload failed")
                    }
                }
            }
        }
        Err(ObjectError::Unsupported(what)) => {
            debug!(
                what,
                "the object store cannot list multipart uploads; relying on the expiry sweep"
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok((removed_objects, removed_multipart))
}

#[cfg(test)]
mod tests {
    use super::super::{object_key, thumbnail_key};
    use super::*;

    #[test]
    fn keys_name_their_upload() {
        assert_eq!(key_owner("u/abc"), Some("abc"));
        assert_eq!(key_owner("u/abc.thumb-150.png"), Some("abc"));
        assert_eq!(key_owner("u/"), None);
        assert_eq!(key_owner("x/abc"), None);
        assert_eq!(key_owner("u/a/b"), None);
        assert_eq!(key_owner(&object_key("xyz")), Some("xyz"));
        assert_eq!(key_owner(&thumbnail_key("xyz", 800)), Some("xyz"));
    }
}
