//! Uploads and thumbnail jobs on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use shortlink_core::time_util::{now_unix, now_unix_ms};
use shortlink_core::{NewEvent, Thumbnail, ThumbnailState, Upload, UploadState, UserId};

use super::EmbeddedStore;
use super::events;
use crate::DbError;
use shortlink_store::{StoreError, ThumbnailJob, UploadCursor, UploadStore};

pub(crate) const COLUMNS: &str =
    "id, owner, filename, content_type, size, sha256, object_key, code, state,
    thumbnail_state, thumbnails, created_at, expires_at, multipart, downloads";

pub(crate) fn row_to_upload(row: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad {what}").into(),
        )
    };
    let state: String = row.get(8)?;
    let thumbnail_state: String = row.get(9)?;
    let thumbnails: String = row.get(10)?;
    Ok(Upload {
        id: row.get(0)?,
        owner: row.get(1)?,
        filename: row.get(2)?,
        content_type: row.get(3)?,
        size: row.get::<_, i64>(4)?.max(0) as u64,
        sha256: row.get(5)?,
        object_key: row.get(6)?,
        code: row.get(7)?,
        state: UploadState::parse(&state).ok_or_else(|| bad(8, "state"))?,
        thumbnail_state: ThumbnailState::parse(&thumbnail_state)
            .ok_or_else(|| bad(9, "thumbnail state"))?,
        thumbnails: serde_json::from_str(&thumbnails).map_err(|_| bad(10, "thumbnails"))?,
        created_at: row.get(11)?,
        expires_at: row.get(12)?,
        multipart: row
            .get::<_, Option<String>>(13)?
            .map(|text| serde_json::from_str(&text).map_err(|_| bad(13, "multipart plan")))
            .transpose()?,
        downloads: row.get::<_, i64>(14)?.max(0) as u64,
    })
}

fn write_upload(conn: &Connection, upload: &Upload, replace: bool) -> Result<(), DbError> {
    let thumbnails = serde_json::to_string(&upload.thumbnails).map_err(StoreError::backend)?;
    let multipart = upload
        .multipart
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::backend)?;
    let verb = if replace {
        "INSERT OR REPLACE"
    } else {
        "INSERT"
    };
    conn.execute(
        &format!(
            "{verb} INTO uploads ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ),
        params![
            upload.id,
            upload.owner,
            upload.filename,
            upload.content_type,
            upload.size as i64,
            upload.sha256,
            upload.object_key,
            upload.code,
            upload.state.as_str(),
            upload.thumbnail_state.as_str(),
            thumbnails,
            upload.created_at,
            upload.expires_at,
            multipart,
            i64::try_from(upload.downloads).unwrap_or(i64::MAX),
        ],
    )?;
    Ok(())
}

fn after_write(
    conn: &Connection,
    id: &str,
    queue_thumbnails: bool,
    event: Option<NewEvent>,
) -> Result<(), DbError> {
    if queue_thumbnails {
        conn.execute(
            "INSERT OR IGNORE INTO thumbnail_jobs (upload_id, attempts, not_before) VALUES (?1, 0, ?2)",
            params![id, now_unix()],
        )?;
    }
    if let Some(event) = event {
        events::append(conn, vec![event], now_unix_ms())?;
    }
    Ok(())
}

fn stored_bytes(conn: &Connection, owner: UserId) -> Result<u64, DbError> {
    let sum: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM uploads WHERE owner = ?1",
        [owner],
        |r| r.get(0),
    )?;
    Ok(sum.max(0) as u64)
}

#[async_trait]
impl UploadStore for EmbeddedStore {
    async fn insert_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
        quota: Option<u64>,
    ) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                if let Some(quota) = quota {
                    let needed = stored_bytes(conn, upload.owner)?.saturating_add(upload.size);
                    if needed > quota {
                        return Err(StoreError::OverQuota { needed, quota }.into());
                    }
                }
                write_upload(conn, &upload, false)?;
                after_write(conn, &upload.id, queue_thumbnails, event)
            })
            .await
    }

    async fn complete_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                let pending: bool = conn
                    .query_row(
                        "SELECT state = 'pending' FROM uploads WHERE id = ?1",
                        [&upload.id],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(false);
                if !pending {
                    return Ok(false);
                }
                write_upload(conn, &upload, true)?;
                after_write(conn, &upload.id, queue_thumbnails, event)?;
                Ok(true)
            })
            .await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"),
                    [id],
                    row_to_upload,
                )
                .optional()?)
        })
        .await
    }

    async fn stored_bytes(&self, owner: UserId) -> Result<u64, StoreError> {
        self.read(move |conn| stored_bytes(conn, owner)).await
    }

    async fn list_uploads(
        &self,
        owner: UserId,
        after: Option<UploadCursor>,
        limit: usize,
    ) -> Result<Vec<Upload>, StoreError> {
        self.read(move |conn| {
            let limit = limit as i64;
            let rows = match after {
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM uploads WHERE owner = ?1
                         ORDER BY created_at DESC, id DESC LIMIT ?2"
                    ))?
                    .query_map(params![owner, limit], row_to_upload)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Some(after) => conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM uploads WHERE owner = ?1
                         AND (created_at < ?2 OR (created_at = ?2 AND id < ?3))
                         ORDER BY created_at DESC, id DESC LIMIT ?4"
                    ))?
                    .query_map(
                        params![owner, after.created_at, after.id, limit],
                        row_to_upload,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn delete_upload(
        &self,
        id: &str,
        expired_by: Option<i64>,
    ) -> Result<Option<Upload>, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| {
                let upload = conn
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM uploads WHERE id = ?1"),
                        [&id],
                        row_to_upload,
                    )
                    .optional()?
                    .filter(|u| {
                        expired_by.is_none_or(|by| u.expires_at.is_some_and(|at| at <= by))
                    });
                if upload.is_some() {
                    conn.execute("DELETE FROM uploads WHERE id = ?1", [&id])?;
                    conn.execute("DELETE FROM thumbnail_jobs WHERE upload_id = ?1", [&id])?;
                }
                Ok(upload)
            })
            .await
    }

    async fn expired_uploads(&self, now: i64, limit: usize) -> Result<Vec<Upload>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM uploads WHERE expires_at IS NOT NULL AND expires_at <= ?1
                     ORDER BY expires_at LIMIT ?2"
                ))?
                .query_map(params![now, limit as i64], row_to_upload)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_upload_expiry(
        &self,
        id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE uploads SET expires_at = ?2 WHERE id = ?1 AND state = 'complete'",
                    params![id, expires_at],
                )? == 1)
            })
            .await
    }

    async fn add_downloads(&self, counts: Vec<(String, u64)>) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                let mut update = conn.prepare_cached(
                    "UPDATE uploads SET downloads = downloads + ?2 WHERE id = ?1",
                )?;
                for (id, n) in &counts {
                    update.execute(params![id, i64::try_from(*n).unwrap_or(i64::MAX)])?;
                }
                Ok(())
            })
            .await
    }

    async fn claim_thumbnail_job(
        &self,
        lease_secs: i64,
    ) -> Result<Option<ThumbnailJob>, StoreError> {
        self.writer
            .write(move |conn| {
                let now = now_unix();
                let due: Option<(String, i64)> = conn
                    .query_row(
                        "SELECT upload_id, attempts FROM thumbnail_jobs WHERE not_before <= ?1
                         ORDER BY not_before LIMIT 1",
                        [now],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((upload_id, attempts)) = due else {
                    return Ok(None);
                };
                conn.execute(
                    "UPDATE thumbnail_jobs SET attempts = attempts + 1, not_before = ?2
                     WHERE upload_id = ?1",
                    params![upload_id, now + lease_secs.max(0)],
                )?;
                Ok(Some(ThumbnailJob {
                    upload_id,
                    attempt: (attempts + 1).max(1) as u32,
                }))
            })
            .await
    }

    async fn finish_thumbnail_job(
        &self,
        upload_id: &str,
        state: ThumbnailState,
        thumbnails: Vec<Thumbnail>,
        event: Option<NewEvent>,
    ) -> Result<(), StoreError> {
        let upload_id = upload_id.to_owned();
        self.writer
            .write(move |conn| {
                let thumbnails = serde_json::to_string(&thumbnails).map_err(StoreError::backend)?;
                conn.execute(
                    "UPDATE uploads SET thumbnail_state = ?2, thumbnails = ?3 WHERE id = ?1",
                    params![upload_id, state.as_str(), thumbnails],
                )?;
                conn.execute(
                    "DELETE FROM thumbnail_jobs WHERE upload_id = ?1",
                    [&upload_id],
                )?;
                if let Some(event) = event {
                    events::append(conn, vec![event], now_unix_ms())?;
                }
                Ok(())
            })
            .await
    }
}
