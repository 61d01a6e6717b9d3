//! Uploads and thumbnail jobs on CQL.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::time_util::now_unix;
use shortlink_core::{NewEvent, Thumbnail, ThumbnailState, Upload, UploadState, UserId};
use shortlink_store::{StoreError, ThumbnailJob, UploadCursor, UploadStore};

use crate::{CqlStore, Kind, backend};

/// Jobs read per claim attempt: the queue holds only jobs in progress.
const CLAIM_SCAN: i32 = 1000;

/// The `uploads` columns an [`UploadRow`] reads, for whole-table scans.
pub(crate) const UPLOAD_SELECT: &str = "SELECT id, owner, filename, content_type, size, sha256, \
     object_key, code, state, thumbnail_state, thumbnails, created_at, expires_at, multipart \
     FROM {ks}.uploads";

/// An `uploads` row.
#[derive(DeserializeRow)]
pub(crate) struct UploadRow {
    id: String,
    owner: i64,
    filename: String,
    content_type: String,
    size: i64,
    sha256: Option<String>,
    object_key: String,
    code: Option<String>,
    state: String,
    thumbnail_state: String,
    thumbnails: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    multipart: Option<String>,
}

impl UploadRow {
    pub(crate) fn into_upload(self) -> Result<Upload, StoreError> {
        let bad = |what: &str| StoreError::corrupt(format!("stored upload has a bad {what}"));
        Ok(Upload {
            id: self.id,
            owner: self.owner,
            filename: self.filename,
            content_type: self.content_type,
            size: self.size.max(0) as u64,
            sha256: self.sha256.unwrap_or_default(),
            object_key: self.object_key,
            code: self.code,
            state: UploadState::parse(&self.state).ok_or_else(|| bad("state"))?,
            thumbnail_state: ThumbnailState::parse(&self.thumbnail_state)
                .ok_or_else(|| bad("thumbnail state"))?,
            thumbnails: match self.thumbnails {
                Some(text) => serde_json::from_str(&text).map_err(|_| bad("thumbnail list"))?,
                None => Vec::new(),
            },
            created_at: self.created_at,
            expires_at: self.expires_at,
            multipart: self
                .multipart
                .map(|text| serde_json::from_str(&text).map_err(|_| bad("multipart plan")))
                .transpose()?,
            // Kept in a counter table: read by `get_upload`.
            downloads: 0,
        })
    }
}

fn thumbnails_json(thumbnails: &[Thumbnail]) -> Result<String, StoreError> {
    serde_json::to_string(thumbnails).map_err(backend)
}

fn multipart_json(upload: &Upload) -> Result<Option<String>, StoreError> {
    upload
        .multipart
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(backend)
}

/// Uploads read per page of `list_uploads` (one point read each, in parallel).
const LIST_READS: usize = 16;

impl CqlStore {
    /// Writes an upload's row in the owner's index.
    async fn index_owner(&self, upload: &Upload) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO {ks}.uploads_by_owner (owner, created_at, id, size) VALUES (?, ?, ?, ?)",
            Kind::Write,
            (
                upload.owner,
                upload.created_at,
                &upload.id,
                i64::try_from(upload.size).unwrap_or(i64::MAX),
            ),
        )
        .await?;
        Ok(())
    }

    /// Writes a row in the expiry index. Rows are never removed when an expiry moves:
    /// `expired_uploads` drops those that no longer match their upload, so two moves at
    /// once cannot remove the row of the expiry that stays.
    async fn index_expiry(&self, expires_at: Option<i64>, id: &str) -> Result<(), StoreError> {
        if let Some(expires_at) = expires_at {
            self.exec(
                "INSERT INTO {ks}.uploads_expiring (shard, expires_at, id) VALUES (0, ?, ?)",
                Kind::Write,
                (expires_at, id),
            )
            .await?;
        }
        Ok(())
    }

    async fn unindex_expiry(&self, expires_at: i64, id: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM {ks}.uploads_expiring WHERE shard = 0 AND expires_at = ? AND id = ?",
            Kind::Write,
            (expires_at, id),
        )
        .await?;
        Ok(())
    }

    async fn after_upload_write(
        &self,
        id: &str,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
    ) -> Result<(), StoreError> {
        if queue_thumbnails {
            self.lwt(
                "INSERT INTO {ks}.thumbnail_jobs (queue, upload_id, not_before, attempt) \
                 VALUES (0, ?, ?, 0) IF NOT EXISTS",
                (id, now_unix()),
            )
            .await?;
        }
        if let Some(event) = event {
            self.append(vec![event]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl UploadStore for CqlStore {
    async fn insert_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
        quota: Option<u64>,
    ) -> Result<(), StoreError> {
        if let Some(quota) = quota {
            let needed = self
                .stored_bytes(upload.owner)
                .await?
                .saturating_add(upload.size);
            if needed > quota {
                return Err(StoreError::OverQuota { needed, quota });
            }
        }
        // Indexed first: an index row without its upload is skipped by readers, an upload
        // without its index row would be invisible to listing and the sweep.
        self.index_owner(&upload).await?;
        self.index_expiry(upload.expires_at, &upload.id).await?;
        let inserted = self
            .lwt(
                "INSERT INTO {ks}.uploads (id, owner, filename, content_type, size, sha256, object_key, \
                 code, state, thumbnail_state, thumbnails, created_at, expires_at, multipart) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
                (
                    &upload.id,
                    upload.owner,
                    &upload.filename,
                    &upload.content_type,
                    i64::try_from(upload.size).unwrap_or(i64::MAX),
                    &upload.sha256,
                    &upload.object_key,
                    &upload.code,
                    upload.state.as_str(),
                    upload.thumbnail_state.as_str(),
                    thumbnails_json(&upload.thumbnails)?,
                    upload.created_at,
                    upload.expires_at,
                    multipart_json(&upload)?,
                ),
            )
            .await?;
        if !inserted {
            return Err(StoreError::corrupt(format!(
                "upload id {} exists already",
                upload.id
            )));
        }
        if upload.downloads > 0 {
            self.add_downloads(vec![(upload.id.clone(), upload.downloads)])
                .await?;
        }
        self.after_upload_write(&upload.id, queue_thumbnails, event)
            .await
    }

    async fn complete_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
    ) -> Result<bool, StoreError> {
        // The owner's row exists from the insert (writing it again here could bring it
        // back after a concurrent delete); the new expiry's row goes first.
        self.index_expiry(upload.expires_at, &upload.id).await?;
        let applied = self
            .lwt(
                "UPDATE {ks}.uploads SET owner = ?, filename = ?, content_type = ?, size = ?, \
                 sha256 = ?, object_key = ?, code = ?, state = ?, thumbnail_state = ?, \
                 thumbnails = ?, created_at = ?, expires_at = ?, multipart = ? \
                 WHERE id = ? IF state = 'pending'",
                (
                    upload.owner,
                    &upload.filename,
                    &upload.content_type,
                    i64::try_from(upload.size).unwrap_or(i64::MAX),
                    &upload.sha256,
                    &upload.object_key,
                    &upload.code,
                    upload.state.as_str(),
                    upload.thumbnail_state.as_str(),
                    thumbnails_json(&upload.thumbnails)?,
                    upload.created_at,
                    upload.expires_at,
                    multipart_json(&upload)?,
                    &upload.id,
                ),
            )
            .await?;
        if !applied {
            return Ok(false);
        }
        self.after_upload_write(&upload.id, queue_thumbnails, event)
            .await?;
        Ok(true)
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let row: Option<UploadRow> = self
            .row(
                "SELECT id, owner, filename, content_type, size, sha256, object_key, code, state, \
                 thumbnail_state, thumbnails, created_at, expires_at, multipart \
                 FROM {ks}.uploads WHERE id = ?",
                (id,),
            )
            .await?;
        let Some(mut upload) = row.map(UploadRow::into_upload).transpose()? else {
            return Ok(None);
        };
        let count: Option<(scylla::value::Counter,)> = self
            .row(
                "SELECT downloads FROM {ks}.upload_downloads WHERE id = ?",
                (id,),
            )
            .await?;
        upload.downloads = count.map_or(0, |(n,)| n.0.max(0) as u64);
        Ok(Some(upload))
    }

    async fn stored_bytes(&self, owner: UserId) -> Result<u64, StoreError> {
        let sizes: Vec<(i64,)> = self
            .rows(
                "SELECT size FROM {ks}.uploads_by_owner WHERE owner = ?",
                (owner,),
            )
            .await?;
        Ok(sizes
            .into_iter()
            .fold(0u64, |sum, (size,)| sum.saturating_add(size.max(0) as u64)))
    }

    async fn list_uploads(
        &self,
        owner: UserId,
        after: Option<UploadCursor>,
        limit: usize,
    ) -> Result<Vec<Upload>, StoreError> {
        use futures_util::StreamExt;
        let limit = limit.max(1);
        let mut out = Vec::with_capacity(limit);
        let mut after = after;
        // An index row can outlive its upload for a moment (deleted, or an insert that
        // failed after indexing): such rows are skipped, so read until the page is full.
        loop {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let ids: Vec<(i64, String)> = match &after {
                None => {
                    self.rows(
                        "SELECT created_at, id FROM {ks}.uploads_by_owner WHERE owner = ? LIMIT ?",
                        (owner, want),
                    )
                    .await?
                }
                Some(cursor) => {
                    self.rows(
                        "SELECT created_at, id FROM {ks}.uploads_by_owner WHERE owner = ? \
                         AND (created_at, id) < (?, ?) LIMIT ?",
                        (owner, cursor.created_at, &cursor.id, want),
                    )
                    .await?
                }
            };
            let exhausted = ids.len() < want as usize;
            after = ids.last().map(|(created_at, id)| UploadCursor {
                created_at: *created_at,
                id: id.clone(),
            });
            let reads: Vec<_> = ids.iter().map(|(_, id)| self.get_upload(id)).collect();
            let found: Vec<Result<Option<Upload>, StoreError>> = futures_util::stream::iter(reads)
                .buffered(LIST_READS)
                .collect()
                .await;
            for upload in found {
                if let Some(upload) = upload?.filter(|u| u.owner == owner) {
                    out.push(upload);
                }
            }
            if exhausted || out.len() >= limit || after.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_upload(
        &self,
        id: &str,
        expired_by: Option<i64>,
    ) -> Result<Option<Upload>, StoreError> {
        // Conditional on what was read, so the record returned is the one removed (a
        // complete that lands between the read and the delete brings its short link).
        let mut attempts = 0;
        let upload = loop {
            attempts += 1;
            let Some(upload) = self.get_upload(id).await? else {
                return Ok(None);
            };
            let deleted = match expired_by {
                None => {
                    self.lwt(
                        "DELETE FROM {ks}.uploads WHERE id = ? IF state = ?",
                        (id, upload.state.as_str()),
                    )
                    .await?
                }
                Some(by) => {
                    if upload.expires_at.is_none_or(|at| at > by) {
                        return Ok(None);
                    }
                    self.lwt(
                        "DELETE FROM {ks}.uploads WHERE id = ? IF state = ? AND expires_at <= ?",
                        (id, upload.state.as_str(), by),
                    )
                    .await?
                }
            };
            if deleted {
                break upload;
            }
            if attempts >= 3 {
                return Ok(None);
            }
        };
        self.exec(
            "DELETE FROM {ks}.uploads_by_owner WHERE owner = ? AND created_at = ? AND id = ?",
            Kind::Write,
            (upload.owner, upload.created_at, id),
        )
        .await?;
        if let Some(expires_at) = upload.expires_at {
            self.unindex_expiry(expires_at, id).await?;
        }
        self.exec(
            "DELETE FROM {ks}.thumbnail_jobs WHERE queue = 0 AND upload_id = ?",
            Kind::Write,
            (id,),
        )
        .await?;
        self.exec(
            "DELETE FROM {ks}.upload_downloads WHERE id = ?",
            Kind::Write,
            (id,),
        )
        .await?;
        Ok(Some(upload))
    }

    async fn set_upload_expiry(
        &self,
        id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        // The new index row first; the old one is dropped by the sweep's reader.
        self.index_expiry(expires_at, id).await?;
        self.lwt(
            "UPDATE {ks}.uploads SET expires_at = ? WHERE id = ? IF state = 'complete'",
            (expires_at, id),
        )
        .await
    }

    async fn add_downloads(&self, counts: Vec<(String, u64)>) -> Result<(), StoreError> {
        for (id, n) in counts {
            self.exec(
                "UPDATE {ks}.upload_downloads SET downloads = downloads + ? WHERE id = ?",
                Kind::Counter,
                (
                    scylla::value::Counter(i64::try_from(n).unwrap_or(i64::MAX)),
                    &id,
                ),
            )
            .await?;
        }
        Ok(())
    }

    async fn expired_uploads(&self, now: i64, limit: usize) -> Result<Vec<Upload>, StoreError> {
        let due: Vec<(i64, String)> = self
            .rows(
                "SELECT expires_at, id FROM {ks}.uploads_expiring WHERE shard = 0 \
                 AND expires_at <= ? LIMIT ?",
                (now, i32::try_from(limit.max(1)).unwrap_or(i32::MAX)),
            )
            .await?;
        let mut out = Vec::with_capacity(due.len());
        for (expires_at, id) in due {
            match self.get_upload(&id).await? {
                Some(upload) if upload.expires_at == Some(expires_at) => out.push(upload),
                // A stale row: the upload is gone, or its expiry moved.
                _ => self.unindex_expiry(expires_at, &id).await?,
            }
        }
        Ok(out)
    }

    async fn claim_thumbnail_job(
        &self,
        lease_secs: i64,
    ) -> Result<Option<ThumbnailJob>, StoreError> {
        let now = now_unix();
        let mut jobs: Vec<(String, i64, i32)> = self
            .rows(
                "SELECT upload_id, not_before, attempt FROM {ks}.thumbnail_jobs WHERE queue = 0 LIMIT ?",
                (CLAIM_SCAN,),
            )
            .await?;
        jobs.retain(|(_, not_before, _)| *not_before <= now);
        jobs.sort_by_key(|(_, not_before, _)| *not_before);
        for (upload_id, not_before, attempt) in jobs {
            // Whoever moves `not_before` first holds the lease.
            let leased = self
                .lwt(
                    "UPDATE {ks}.thumbnail_jobs SET not_before = ?, attempt = ? \
                     WHERE queue = 0 AND upload_id = ? IF not_before = ? AND attempt = ?",
                    (
                        now + lease_secs.max(0),
                        attempt + 1,
                        &upload_id,
                        not_before,
                        attempt,
                    ),
                )
                .await?;
            if leased {
                return Ok(Some(ThumbnailJob {
                    upload_id,
                    attempt: u32::try_from(attempt + 1).unwrap_or(1).max(1),
                }));
            }
        }
        Ok(None)
    }

    async fn finish_thumbnail_job(
        &self,
        upload_id: &str,
        state: ThumbnailState,
        thumbnails: Vec<Thumbnail>,
        event: Option<NewEvent>,
    ) -> Result<(), StoreError> {
        // Conditional: an upload deleted while its thumbnails were made stays deleted
        // (a plain update would write a partial row back).
        self.lwt(
            "UPDATE {ks}.uploads SET thumbnail_state = ?, thumbnails = ? WHERE id = ? IF EXISTS",
            (state.as_str(), thumbnails_json(&thumbnails)?, upload_id),
        )
        .await?;
        self.exec(
            "DELETE FROM {ks}.thumbnail_jobs WHERE queue = 0 AND upload_id = ?",
            Kind::Write,
            (upload_id,),
        )
        .await?;
        if let Some(event) = event {
            self.append(vec![event]).await?;
        }
        Ok(())
    }
}
