//! Uploads and thumbnail jobs on CQL.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::time_util::now_unix;
use shortlink_core::{NewEvent, Thumbnail, ThumbnailState, Upload, UploadState};
use shortlink_store::{StoreError, ThumbnailJob, UploadStore};

use crate::{CqlStore, Kind, backend};

/// Jobs read per claim attempt: the queue holds only jobs in progress.
const CLAIM_SCAN: i32 = 1000;

/// The `uploads` columns an [`UploadRow`] reads, for whole-table scans.
pub(crate) const UPLOAD_SELECT: &str = "SELECT id, owner, filename, content_type, size, sha256, \
     object_key, code, state, thumbnail_state, thumbnails, created_at, expires_at FROM {ks}.uploads";

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
        })
    }
}

fn thumbnails_json(thumbnails: &[Thumbnail]) -> Result<String, StoreError> {
    serde_json::to_string(thumbnails).map_err(backend)
}

impl CqlStore {
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
    ) -> Result<(), StoreError> {
        let inserted = self
            .lwt(
                "INSERT INTO {ks}.uploads (id, owner, filename, content_type, size, sha256, object_key, \
                 code, state, thumbnail_state, thumbnails, created_at, expires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
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
                ),
            )
            .await?;
        if !inserted {
            return Err(StoreError::corrupt(format!(
                "upload id {} exists already",
                upload.id
            )));
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
        let applied = self
            .lwt(
                "UPDATE {ks}.uploads SET owner = ?, filename = ?, content_type = ?, size = ?, \
                 sha256 = ?, object_key = ?, code = ?, state = ?, thumbnail_state = ?, \
                 thumbnails = ?, created_at = ?, expires_at = ? WHERE id = ? IF state = 'pending'",
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
                 thumbnail_state, thumbnails, created_at, expires_at FROM {ks}.uploads WHERE id = ?",
                (id,),
            )
            .await?;
        row.map(UploadRow::into_upload).transpose()
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
        self.exec(
            "UPDATE {ks}.uploads SET thumbnail_state = ?, thumbnails = ? WHERE id = ?",
            Kind::Write,
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
