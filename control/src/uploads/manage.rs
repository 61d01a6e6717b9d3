//! Managing uploads: the caller's list (newest first, by cursor) and deletion, which the
//! sweep shares: the record goes first (so nothing serves it any more), then its objects,
//! its multipart upload and its short link. An object left behind by a failure is found
//! later by the orphan scan.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shortlink_core::{EventKind, THUMBNAIL_SIZES, Upload, UploadState};
use shortlink_store::UploadCursor;
use tracing::warn;

use super::{UploadView, thumbnail_key};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::state::AppState;

/// Why an upload went away: the `reason` of `upload.deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Its owner deleted it (or aborted it while pending).
    Deleted,
    /// It stayed pending past its expiry.
    Abandoned,
    /// It was complete and reached its expiry.
    Expired,
}

impl Removal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Removal::Deleted => "deleted",
            Removal::Abandoned => "abandoned",
            Removal::Expired => "expired",
        }
    }
}

/// Removes upload `id` and everything it owns; `None` if another request or node removed
/// it first (only one remover gets the record, so only one removes its objects). With
/// `expired_by`, only if it expired by then.
pub(crate) async fn remove_upload(
    state: &AppState,
    id: &str,
    why: Removal,
    expired_by: Option<i64>,
) -> Result<Option<Upload>, ApiError> {
    let Some(upload) = state.store().delete_upload(id, expired_by).await? else {
        return Ok(None);
    };
    let objects = state.objects();
    // A complete upload keeps its plan for the record; its multipart upload is done.
    if let Some(plan) = upload
        .multipart
        .as_ref()
        .filter(|_| upload.state == UploadState::Pending)
        && let Err(e) = objects
            .multipart_abort(&upload.object_key, &plan.store_upload_id)
            .await
    {
        warn!(error = %e, upload = %upload.id, "aborting a multipart upload failed; the orphan scan retries");
    }
    // Every thumbnail size, not only the recorded ones: a job may have been writing.
    let keys = std::iter::once(upload.object_key.clone()).chain(
        THUMBNAIL_SIZES
            .iter()
            .map(|&s| thumbnail_key(&upload.id, s)),
    );
    for key in keys {
        if let Err(e) = objects.delete(&key).await {
            warn!(error = %e, key, "removing an upload's object failed; the orphan scan retries");
        }
    }
    if let Some(code) = &upload.code {
        match state.store().delete_link(upload.owner, "", code).await {
            Ok(true) => crate::links::notify_deleted(state, upload.owner, "", code).await,
            Ok(false) => {}
            // The record is gone already: carry on, the link just stays (its file 404s).
            Err(e) => warn!(error = %e, code, "removing an upload's short link failed"),
        }
    }
    let data = serde_json::json!({
        "id": upload.id,
        "filename": upload.filename,
        "reason": why.as_str(),
    });
    state
        .notify(upload.owner, EventKind::UploadDeleted, &data)
        .await;
    Ok(Some(upload))
}

api_errors!(DeleteUploadErrors: AUTH; NotFound);

/// `DELETE /api/v1/uploads/{id}`: removes the upload, its file, thumbnails and short
/// link; a pending upload is aborted (its parts are discarded).
#[utoipa::path(
    delete,
    path = "/api/v1/uploads/{id}",
    operation_id = "delete_upload",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 204, description = "The upload is gone."), DeleteUploadErrors),
)]
pub async fn delete_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(shortlink_core::Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let not_found = || ApiError::new(ErrorCode::NotFound, "no such upload");
    match state.store().get_upload(&id).await? {
        Some(upload) if upload.owner == caller.user.id => {}
        _ => return Err(not_found()),
    }
    match remove_upload(&state, &id, Removal::Deleted, None).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(not_found()),
    }
}

/// Body of `PATCH /api/v1/uploads/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPatch {
    /// When the file is deleted (RFC 3339), or `null` to keep it until deleted.
    #[serde(default, deserialize_with = "crate::links::double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<String>>,
}

api_errors!(UpdateUploadErrors: AUTH, JSON_BODY; NotFound, UploadMissing, InvalidExpiresAt);

/// `PATCH /api/v1/uploads/{id}`: sets or clears a complete upload's expiry.
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    operation_id = "update_upload",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    request_body = UploadPatch,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The upload.", body = UploadView), UpdateUploadErrors),
)]
pub async fn update_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UploadPatch>,
) -> Result<Json<UploadView>, ApiError> {
    caller.require(shortlink_core::Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let upload = match state.store().get_upload(&id).await? {
        Some(upload) if upload.owner == caller.user.id => upload,
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such upload")),
    };
    let not_complete = || {
        ApiError::new(
            ErrorCode::UploadMissing,
            "this upload is not complete yet: its expiry is its URLs'",
        )
    };
    if upload.state != UploadState::Complete {
        return Err(not_complete());
    }
    let Some(expires_at) = patch.expires_at else {
        return Ok(Json(UploadView::new(&state, &upload)));
    };
    let expires_at = expires_at
        .as_deref()
        .map(crate::links::parse_expiry)
        .transpose()?;
    if !state.store().set_upload_expiry(&id, expires_at).await? {
        return Err(ApiError::new(ErrorCode::NotFound, "no such upload"));
    }
    let upload = shortlink_core::Upload {
        expires_at,
        ..upload
    };
    Ok(Json(UploadView::new(&state, &upload)))
}

/// Query of `GET /api/v1/uploads`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUploadsParams {
    /// Uploads per page (default 20, at most the configured maximum, 100 by default).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before (empty: the first page).
    #[param(pattern = "^([0-9]{1,18}\\.[A-Za-z0-9_-]{1,64})?$")]
    cursor: Option<String>,
}

/// A page of uploads.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadListView {
    /// The uploads, newest first (pending ones too).
    items: Vec<UploadView>,
    /// The cursor of the next page; `null` on the last.
    next_cursor: Option<String>,
    /// Bytes the caller's uploads take, pending ones at their declared size.
    stored_bytes: u64,
    /// The caller's quota of stored bytes.
    quota_bytes: u64,
}

fn encode_cursor(upload: &Upload) -> String {
    format!("{}.{}", upload.created_at, upload.id)
}

fn decode_cursor(text: &str) -> Result<Option<UploadCursor>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = text.split_once('.').and_then(|(at, id)| {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let created_at = at.parse::<i64>().ok().filter(|_| ok)?;
        Some(UploadCursor {
            created_at,
            id: id.to_owned(),
        })
    });
    parsed.map(Some).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidCursor,
            "cursor is not one this API returned",
        )
    })
}

api_errors!(ListUploadsErrors: AUTH, QUERY; InvalidLimit, InvalidCursor);

/// `GET /api/v1/uploads`: the caller's uploads, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/uploads",
    operation_id = "list_uploads",
    tag = "uploads",
    params(ListUploadsParams),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "A page of the caller's uploads.", body = UploadListView), ListUploadsErrors),
)]
pub async fn list_uploads(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListUploadsParams>,
) -> Result<Json<UploadListView>, ApiError> {
    let limit = crate::links::page_limit(&state, params.limit)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .flatten();
    // One more than asked tells whether a next page exists.
    let mut page = state
        .store()
        .list_uploads(caller.user.id, after, limit + 1)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let stored_bytes = state.store().stored_bytes(caller.user.id).await?;
    Ok(Json(UploadListView {
        next_cursor: more.then(|| page.last().map(encode_cursor)).flatten(),
        items: page.iter().map(|u| UploadView::new(&state, u)).collect(),
        stored_bytes,
        quota_bytes: state.config().upload_quota_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = decode_cursor("1800000000.abc_-9").unwrap().unwrap();
        assert_eq!(cursor.created_at, 1_800_000_000);
        assert_eq!(cursor.id, "abc_-9");
        assert_eq!(decode_cursor("").unwrap(), None);
        for bad in ["x.abc", "12", "12.", "12.a b", "12.a/b", ".abc"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
