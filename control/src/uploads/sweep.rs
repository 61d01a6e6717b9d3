//! The upload sweep: every `upload_sweep_seconds`, uploads past their expiry are removed
//! (pending ones are abandoned: their multipart upload is aborted); every
//! `orphan_scan_seconds`, the object store is scanned for objects and multipart uploads
//! no upload owns, which are removed once older than `orphan_grace_seconds`.
//!
//! The state is the store's, so the sweep is durable: a restart sweeps again, and any
//! number of control planes may sweep at once (only one of them gets to delete a record).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use shortlink_core::UploadState;
use shortlink_core::time_util::now_unix;
use shortlink_objects::ObjectError;
use tracing::{debug, info, warn};

use super::manage::{Removal, remove_upload};
use crate::metrics::{UPLOAD_ORPHANS, UPLOAD_SWEEP_SECONDS, UPLOADS_SWEPT};
use crate::state::AppState;

/// Uploads read per round of the expiry sweep.
const SWEEP_BATCH: usize = 100;
/// Object keys read per page of the orphan scan.
const SCAN_PAGE: usize = 1000;
/// Where upload objects live.
const PREFIX: &str = "u/";

/// Runs the sweep until the task is dropped.
pub(crate) async fn run_sweeper(state: AppState) {
    let every = Duration::from_secs(state.config().upload_sweep_seconds);
    let scan_every = Duration::from_secs(state.config().orphan_scan_seconds);
    let mut last_scan: Option<Instant> = None;
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
            match scan_orphans(&state).await {
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
            if remove_upload(state, &upload.id, why).await?.is_some() {
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

/// The upload id an object key belongs to: `u/{id}` or `u/{id}.thumb-{size}.png`.
fn owner_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    let id = rest.split('.').next()?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Removes objects and multipart uploads that no upload owns and that are older than the
/// grace; how many of each.
pub(crate) async fn scan_orphans(state: &AppState) -> Result<(u64, u64), crate::error::ApiError> {
    let grace = Duration::from_secs(state.config().orphan_grace_seconds);
    let old_enough = |at: SystemTime| {
        SystemTime::now()
            .duration_since(at)
            .is_ok_and(|age| age >= grace)
    };
    let objects = state.objects();
    // Whether an upload record exists, per id seen in this scan.
    let mut owned: HashMap<String, Option<shortlink_core::Upload>> = HashMap::new();
    let mut removed_objects = 0;
    let mut after: Option<String> = None;
    loop {
        let page = objects.list(PREFIX, after.as_deref(), SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let full = page.len() >= SCAN_PAGE;
        for object in page {
            let Some(id) = owner_id(&object.key) else {
                continue;
            };
            if !owned.contains_key(id) {
                let upload = state.store().get_upload(id).await?;
                owned.insert(id.to_owned(), upload);
            }
            if owned[id].is_none() && old_enough(object.modified) {
                match objects.delete(&object.key).await {
                    Ok(()) => {
                        UPLOAD_ORPHANS.with_label_values(&["object"]).inc();
                        removed_objects += 1;
                    }
                    Err(e) => {
                        warn!(error = %e, key = %object.key, "removing an orphaned object failed")
                    }
                }
            }
        }
        if !full {
            break;
        }
    }
    let mut removed_multipart = 0;
    match objects.list_multipart(PREFIX).await {
        Ok(uploads) => {
            for listed in uploads {
                if !old_enough(listed.started) {
                    continue;
                }
                let id = owner_id(&listed.key);
                let upload = match id {
                    Some(id) => state.store().get_upload(id).await?,
                    None => None,
                };
                let ours = upload.is_some_and(|u| {
                    u.state == UploadState::Pending
                        && u.multipart
                            .is_some_and(|plan| plan.store_upload_id == listed.upload_id)
                });
                if ours {
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
    use super::*;

    #[test]
    fn keys_name_their_upload() {
        assert_eq!(owner_id("u/abc"), Some("abc"));
        assert_eq!(owner_id("u/abc.thumb-150.png"), Some("abc"));
        assert_eq!(owner_id("u/"), None);
        assert_eq!(owner_id("x/abc"), None);
        assert_eq!(owner_id("u/a/b"), None);
    }
}
