//! File uploads: streamed (`POST /api/v1/uploads`), presigned (`/presign`, a `PUT`,
//! then `/complete`) or presigned in parts ([`multipart`]), served at `/f/{id}` and by a
//! short link, with thumbnails made in the background for images; listed and deleted
//! ([`manage`]), and swept when abandoned, expired or orphaned ([`sweep`]).
//!
//! Bytes are never held whole: they stream to the object store while being hashed and
//! counted, and an upload over the limit is aborted with nothing kept. The content type
//! comes from the bytes, never from the client.

pub mod downloads;
pub mod manage;
pub mod multipart;
pub(crate) mod sweep;

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shortlink_core::time_util::{now_unix, to_rfc3339};
use shortlink_core::{
    EventKind, NewEvent, THUMBNAIL_SIZES, ThumbnailState, Upload, UploadState, UserId,
    is_inline_safe, is_thumbnailable, sanitize_filename, sniff_content_type,
};
use shortlink_objects::{Location, ObjectError, ObjectWriter, Presentation};
use tokio::io::AsyncReadExt;
use tower::ServiceExt;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::state::AppState;
use shortlink_store::StoreError;

/// Bytes looked at to sniff the content type.
pub(crate) const SNIFF_BYTES: usize = 8192;

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound(_) => ApiError::new(ErrorCode::NotFound, "no such file"),
            other => ApiError::internal(other),
        }
    }
}

pub(crate) fn new_upload_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())
}

/// Where every upload's objects are kept in the object store.
pub(crate) const OBJECT_PREFIX: &str = "u/";

/// An upload's object key: `u/{id}`.
pub(crate) fn object_key(id: &str) -> String {
    format!("{OBJECT_PREFIX}{id}")
}

/// The key of an upload's thumbnail of `size`: `u/{id}.thumb-{size}.png`.
pub(crate) fn thumbnail_key(id: &str, size: u32) -> String {
    format!("{OBJECT_PREFIX}{id}.thumb-{size}.png")
}

/// The upload an object key belongs to ([`object_key`] or [`thumbnail_key`]).
pub(crate) fn key_owner(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(OBJECT_PREFIX)?;
    let id = rest.split('.').next()?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

pub(crate) fn too_large(max: u64) -> ApiError {
    crate::metrics::UPLOADS_TOO_LARGE.inc();
    ApiError::new(
        ErrorCode::UploadTooLarge,
        format!("uploads may be at most {max} bytes"),
    )
}

// For the OpenAPI document only: the handlers stream bodies themselves.
/// Raw bytes, of any content type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BinaryBody(pub Vec<u8>);

// For the OpenAPI document only: the handler streams the form itself.
/// The multipart form of an upload.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The file. Its name is kept (made safe); its content type is sniffed from the bytes,
    /// never taken from the client. The form has no other field.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// An upload as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadView {
    /// The upload's id.
    id: String,
    /// The file name (made safe).
    filename: String,
    /// Where the file is served (`/f/{id}`), to anyone with the URL.
    #[schema(format = "uri")]
    url: String,
    /// The upload's short link; `null` until the upload is complete.
    #[schema(format = "uri")]
    short_url: Option<String>,
    /// Size in bytes.
    size: u64,
    /// The content type, sniffed from the bytes (a presigned upload shows the declared one
    /// until it is complete).
    content_type: String,
    /// SHA-256 of the bytes, in hex; empty until the upload is complete. For a multipart
    /// upload (whose bytes the server may never see) it is S3's composite checksum: the
    /// SHA-256 of its parts' SHA-256s, in hex, then `-` and the number of parts.
    sha256: String,
    /// `pending` (a presigned or multipart upload waiting for its bytes and `complete`)
    /// or `complete`.
    #[schema(value_type = String, pattern = "^(pending|complete)$")]
    state: UploadState,
    /// The thumbnails made for an image.
    thumbnails: ThumbnailsView,
    /// When the upload was made (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// When it goes away (RFC 3339): a pending upload is abandoned then and what was sent
    /// is removed; a complete one is deleted then (file, thumbnails and short link).
    /// `null`: kept until deleted.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Times the file was downloaded from its start (counts are written every few
    /// seconds).
    downloads: u64,
}

/// An upload's thumbnails.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ThumbnailsView {
    /// `none` (not an image), `pending` (being made), `ready` or `failed`.
    #[schema(value_type = String, pattern = "^(none|pending|ready|failed)$")]
    state: ThumbnailState,
    /// The thumbnails made so far.
    items: Vec<ThumbnailView>,
}

/// One thumbnail (a PNG).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ThumbnailView {
    /// The square box it fits in, in pixels: 150, 300 or 800.
    size: u32,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
    /// Where it is served (`/f/{id}/thumb/{size}`).
    #[schema(format = "uri")]
    url: String,
}

impl UploadView {
    pub(crate) fn new(state: &AppState, upload: &Upload) -> UploadView {
        UploadView {
            id: upload.id.clone(),
            filename: upload.filename.clone(),
            url: state.public_path(&format!("/f/{}", upload.id)),
            short_url: upload.code.as_ref().map(|c| state.short_url("", c)),
            size: upload.size,
            content_type: upload.content_type.clone(),
            sha256: upload.sha256.clone(),
            state: upload.state,
            thumbnails: ThumbnailsView {
                state: upload.thumbnail_state,
                items: upload
                    .thumbnails
                    .iter()
                    .map(|t| ThumbnailView {
                        size: t.size,
                        width: t.width,
                        height: t.height,
                        url: state.public_path(&format!("/f/{}/thumb/{}", upload.id, t.size)),
                    })
                    .collect(),
            },
            created_at: to_rfc3339(upload.created_at),
            expires_at: upload.expires_at.map(to_rfc3339),
            downloads: upload.downloads,
        }
    }
}

/// What a stream of bytes turned out to be once stored.
struct Stored {
    size: u64,
    sha256: String,
    content_type: String,
}

/// Streams `chunks` into the object at `key` while hashing and counting; refuses (and
/// removes) more than `max` bytes. The content type is sniffed from the first bytes.
async fn store_stream<S, E>(
    state: &AppState,
    key: &str,
    mut chunks: S,
    max: u64,
) -> Result<Stored, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut pending: Vec<Bytes> = Vec::new();
    let mut size: u64 = 0;
    let mut hasher = Sha256::new();
    let read_error = |e: E| {
        ApiError::new(
            ErrorCode::UploadInterrupted,
            format!("the upload could not be read to the end: {e}"),
        )
    };
    // Collect the first bytes to sniff the type before the object is created.
    let mut ended = false;
    while head.len() < SNIFF_BYTES {
        match chunks.next().await {
            Some(Ok(chunk)) => {
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large(max));
                }
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                pending.push(chunk);
            }
            Some(Err(e)) => return Err(read_error(e)),
            None => {
                ended = true;
                break;
            }
        }
    }
    let content_type = sniff_content_type(&head);
    let mut writer: Box<dyn ObjectWriter> = state.objects().create(key, &content_type).await?;
    let result: Result<(), ApiError> = async {
        for chunk in pending {
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
        if !ended {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(read_error)?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large(max));
                }
                hasher.update(&chunk);
                writer.write(chunk).await?;
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            writer.finish().await?;
            Ok(Stored {
                size,
                sha256: hex::encode(hasher.finalize()),
                content_type,
            })
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// How an upload's bytes came, for metrics: a label of `shortlink_uploads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadPath {
    /// One streamed request through the control plane.
    Streamed,
    /// One presigned `PUT`.
    Presigned,
    /// Presigned parts.
    Multipart,
}

impl UploadPath {
    /// Every path, for registering the metric's labels.
    pub(crate) const ALL: [UploadPath; 3] = [
        UploadPath::Streamed,
        UploadPath::Presigned,
        UploadPath::Multipart,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UploadPath::Streamed => "streamed",
            UploadPath::Presigned => "presigned",
            UploadPath::Multipart => "multipart",
        }
    }
}

/// Records a completed upload: its short link, metadata, thumbnail job and event. A
/// streamed upload is new (and counted against the owner's quota); the others replace
/// their pending record, whose size the quota counted already.
pub(crate) async fn record(
    state: &AppState,
    owner: UserId,
    mut upload: Upload,
    path: UploadPath,
) -> Result<Upload, ApiError> {
    let replace_pending = path != UploadPath::Streamed;
    let link = crate::links::create_internal_link(
        state,
        owner,
        state.public_path(&format!("/f/{}", upload.id)),
    )
    .await?;
    upload.code = Some(link.code.as_str().to_owned());
    upload.state = UploadState::Complete;
    if replace_pending {
        // The pending upload's expiry was its URLs'; a complete one keeps none until set.
        upload.expires_at = None;
    }
    let thumbnails = is_thumbnailable(&upload.content_type);
    upload.thumbnail_state = if thumbnails {
        ThumbnailState::Pending
    } else {
        ThumbnailState::None
    };
    let event = NewEvent {
        user_id: owner,
        kind: EventKind::UploadCompleted,
        data: serde_json::to_string(&UploadView::new(state, &upload))
            .unwrap_or_else(|_| "{}".into()),
    };
    if replace_pending {
        let done = state
            .store()
            .complete_upload(upload.clone(), thumbnails, Some(event))
            .await?;
        if !done {
            // Completed (or removed) meanwhile: the link made here is nobody's.
            if let Some(code) = &upload.code {
                let _ = state.store().delete_link(owner, "", code).await;
            }
            return Err(ApiError::new(
                ErrorCode::AlreadyCompleted,
                "this upload is complete already",
            ));
        }
    } else {
        let quota = Some(state.config().upload_quota_bytes);
        if let Err(e) = state
            .store()
            .insert_upload(upload.clone(), thumbnails, Some(event), quota)
            .await
        {
            // The link made for it goes too: nothing half-recorded.
            if let Some(code) = &upload.code {
                let _ = state.store().delete_link(owner, "", code).await;
            }
            return Err(e.into());
        }
    }
    if thumbnails {
        state.thumbnails_wake();
    }
    crate::metrics::UPLOADS
        .with_label_values(&[path.as_str()])
        .inc();
    crate::metrics::UPLOAD_BYTES.inc_by(upload.size);
    Ok(upload)
}

api_errors!(UploadErrors: AUTH, QUERY; InvalidForm, MissingFile, UploadInterrupted, UploadTooLarge, QuotaExceeded, InvalidExpiresAt);

/// Query of `POST /api/v1/uploads`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// When the file is deleted (RFC 3339); kept until deleted when absent. It can be
    /// changed later with `PATCH /api/v1/uploads/{id}`.
    #[param(format = DateTime)]
    expires_at: Option<String>,
}

/// `POST /api/v1/uploads`: multipart with a `file` field → 201 with the upload.
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "uploads",
    params(UploadParams),
    request_body(
        content = UploadForm,
        content_type = "multipart/form-data",
        description = "A multipart form whose field `file` holds the file (at most the configured \
            `max_upload_bytes`, 1 GiB by default).",
    ),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The stored upload, with its short link.", body = UploadView,
         links(
            ("getUpload" = (operation_id = "get_upload", parameters(("id" = "$response.body#/id")))),
         )),
        UploadErrors,
    ),
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<UploadParams>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let expires_at = match params
        .expires_at
        .as_deref()
        .map(crate::links::parse_expiry)
        .transpose()
    {
        Ok(at) => at,
        Err(e) => return e.into_response(),
    };
    let multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => {
            return ApiError::new(
                ErrorCode::InvalidForm,
                format!("send a multipart/form-data form with a field 'file': {rejection}"),
            )
            .into_response();
        }
    };
    upload_file(state, caller, headers, multipart, expires_at)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upload_file(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    mut multipart: Multipart,
    expires_at: Option<i64>,
) -> Result<Response, ApiError> {
    caller.require(shortlink_core::Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let max = state.config().max_upload_bytes;
    // A declared length far over the limit is refused before reading anything.
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > max.saturating_add(64 * 1024)
    {
        return Err(too_large(max));
    }
    let bad_form = |message: String| ApiError::new(ErrorCode::InvalidForm, message);
    let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_form(format!("not a readable multipart form: {e}")))?
    else {
        return Err(ApiError::new(
            ErrorCode::MissingFile,
            "send the file as a multipart form field named 'file'",
        ));
    };
    if field.name() != Some("file") {
        return Err(bad_form(format!(
            "the form has a field '{}': send only the field 'file'",
            field.name().unwrap_or_default()
        )));
    }
    let filename = sanitize_filename(field.file_name().unwrap_or("file"));
    let id = new_upload_id();
    let key = object_key(&id);
    // Cut off at the quota's room as at the size limit; the record checks it again.
    let quota = state.config().upload_quota_bytes;
    let used = state.store().stored_bytes(caller.user.id).await?;
    let room = quota.saturating_sub(used);
    let stored = match store_stream(&state, &key, field, max.min(room)).await {
        Err(e) if e.code() == ErrorCode::UploadTooLarge && room < max => {
            return Err(StoreError::OverQuota {
                needed: used.saturating_add(room).saturating_add(1),
                quota,
            }
            .into());
        }
        other => other?,
    };
    // The form ends with the file: anything after it is refused too, the object with it.
    let rest = match multipart.next_field().await {
        Ok(None) => None,
        Ok(Some(field)) => Some(format!(
            "the form has a field '{}' after 'file': send only the field 'file'",
            field.name().unwrap_or_default()
        )),
        Err(e) => Some(format!("not a readable multipart form: {e}")),
    };
    if let Some(message) = rest {
        let _ = state.objects().delete(&key).await;
        return Err(bad_form(message));
    }
    let upload = Upload {
        id,
        owner: caller.user.id,
        filename,
        content_type: stored.content_type,
        size: stored.size,
        sha256: stored.sha256,
        object_key: key.clone(),
        code: None,
        state: UploadState::Complete,
        thumbnail_state: ThumbnailState::None,
        thumbnails: Vec::new(),
        created_at: now_unix(),
        expires_at,
        multipart: None,
        downloads: 0,
    };
    match record(&state, caller.user.id, upload, UploadPath::Streamed).await {
        Ok(upload) => {
            Ok((StatusCode::CREATED, Json(UploadView::new(&state, &upload))).into_response())
        }
        Err(e) => {
            // Nothing half-recorded: the object goes too.
            let _ = state.objects().delete(&key).await;
            Err(e)
        }
    }
}

api_errors!(GetUploadErrors: AUTH; NotFound);

/// `GET /api/v1/uploads/{id}`: the owner's upload (others get 404).
#[utoipa::path(
    get,
    path = "/api/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The upload.", body = UploadView), GetUploadErrors),
)]
pub async fn get_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadView>, ApiError> {
    match state.store().get_upload(&id).await? {
        Some(upload) if upload.owner == caller.user.id => {
            Ok(Json(UploadView::new(&state, &upload)))
        }
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such upload")),
    }
}

/// Body of `POST /api/v1/uploads/presign`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    /// The file's name (made safe).
    filename: String,
    /// The content type the `PUT` will declare (a `type/subtype` without parameters, at
    /// most 127 bytes; anything else, or none, means `application/octet-stream`). The
    /// recorded type is sniffed from the bytes on completion.
    content_type: Option<String>,
    /// The exact size of the file in bytes: at most the configured `max_upload_bytes`
    /// (1 GiB by default, the maximum shown).
    #[schema(minimum = 1, maximum = 1073741824_u64)]
    size: u64,
}

/// Answer of `POST /api/v1/uploads/presign`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresignView {
    /// The upload's id: complete it with `POST /api/v1/uploads/{id}/complete`.
    id: String,
    /// Where to send the bytes: the object store's presigned URL, or this server's
    /// `PUT /api/v1/uploads/{id}/content?expires=&signature=`.
    #[schema(format = "uri")]
    upload_url: String,
    /// The method to send them with: always `PUT`.
    #[schema(value_type = String, pattern = "^PUT$")]
    method: &'static str,
    /// Headers the `PUT` must carry (name → value).
    headers: std::collections::BTreeMap<String, String>,
    /// When `upload_url` stops working (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
}

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The HMAC-SHA256 of a URL this server signs: its fields joined by newlines (the first
/// names what the URL is for, so one kind of URL never verifies as another).
pub(crate) fn sign(secret: &[u8; 32], fields: &[&str]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length works");
    mac.update(fields.join("\n").as_bytes());
    mac
}

fn signature(secret: &[u8; 32], id: &str, size: u64, expires: i64) -> HmacSha256 {
    sign(
        secret,
        &["PUT", id, &size.to_string(), &expires.to_string()],
    )
}

/// The content type a client declares for a presigned upload: a `type/subtype` without
/// parameters of at most 127 bytes, else `application/octet-stream`.
pub(crate) fn declared_type(given: Option<String>) -> String {
    given
        .filter(|t| {
            t.len() <= 127
                && t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && t.bytes().all(|c| c.is_ascii_graphic() && c != b';')
                })
        })
        .unwrap_or_else(|| "application/octet-stream".into())
}

/// When a pending upload whose newest URL stops working at `url_expires` is abandoned.
pub(crate) fn abandoned_at(state: &AppState, url_expires: i64) -> i64 {
    url_expires.saturating_add(state.config().incomplete_upload_ttl_seconds as i64)
}

api_errors!(PresignErrors: AUTH, JSON_BODY; InvalidSize, UploadTooLarge, QuotaExceeded);

/// `POST /api/v1/uploads/presign` → `{id, upload_url, method, headers, expires_at}`. For
/// S3 the URL is the store's own presigned `PUT`; for the local disk it is this control
/// plane's `PUT /api/v1/uploads/{id}/content`, signed with an HMAC and an expiry.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/presign",
    tag = "uploads",
    request_body = PresignRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The pending upload and where to send its bytes.", body = PresignView,
         links(
            ("completeUpload" = (operation_id = "complete_upload", parameters(("id" = "$response.body#/id")))),
            ("getUpload" = (operation_id = "get_upload", parameters(("id" = "$response.body#/id")))),
         )),
        PresignErrors,
    ),
)]
pub async fn presign(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<PresignRequest>,
) -> Result<Response, ApiError> {
    caller.require(shortlink_core::Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let max = state.config().max_upload_bytes;
    if request.size > max {
        return Err(too_large(max));
    }
    if request.size == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidSize,
            "size must be at least 1 byte",
        ));
    }
    let declared = declared_type(request.content_type);
    let id = new_upload_id();
    let key = object_key(&id);
    let ttl = state.config().presign_ttl_seconds;
    let expires = now_unix() + ttl as i64;
    let (upload_url, headers) = match state
        .objects()
        .presign_put(&key, &declared, request.size, Duration::from_secs(ttl))
        .await?
    {
        Some(presigned) => (presigned.url, presigned.headers.into_iter().collect()),
        None => {
            let secret = state.store().installation_secret().await?;
            let mac = signature(&secret, &id, request.size, expires);
            let url = state.public_path(&format!(
                "/api/v1/uploads/{id}/content?expires={expires}&signature={}",
                hex::encode(mac.finalize().into_bytes())
            ));
            let headers = [("content-type".to_owned(), declared.clone())]
                .into_iter()
                .collect();
            (url, headers)
        }
    };
    let upload = Upload {
        id: id.clone(),
        owner: caller.user.id,
        filename: sanitize_filename(&request.filename),
        content_type: declared,
        size: request.size,
        sha256: String::new(),
        object_key: key,
        code: None,
        state: UploadState::Pending,
        thumbnail_state: ThumbnailState::None,
        thumbnails: Vec::new(),
        created_at: now_unix(),
        expires_at: Some(abandoned_at(&state, expires)),
        multipart: None,
        downloads: 0,
    };
    let quota = Some(state.config().upload_quota_bytes);
    state
        .store()
        .insert_upload(upload, false, None, quota)
        .await?;
    let view = PresignView {
        id,
        upload_url,
        method: "PUT",
        headers,
        expires_at: to_rfc3339(expires),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Query of the local backend's signed `PUT`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// When the URL stops working (Unix seconds), as `presign` wrote it.
    expires: i64,
    /// The URL's HMAC-SHA256 signature in hex, as `presign` wrote it.
    signature: String,
}

fn forbidden_signature(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidSignature, message)
}

api_errors!(PutContentErrors: QUERY; InvalidSignature, UploadInterrupted, UploadTooLarge, SizeMismatch, Internal);

/// `PUT /api/v1/uploads/{id}/content?expires&signature`: the bytes of a presigned upload
/// on the local backend. The signature is the authorization; exactly the declared size
/// is accepted.
#[utoipa::path(
    put,
    path = "/api/v1/uploads/{id}/content",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id."), SignedQuery),
    request_body(
        content = BinaryBody,
        content_type = "application/octet-stream",
        description = "The file's bytes: exactly the size given to presign.",
    ),
    responses(
        (status = 200, description = "The bytes are stored; complete the upload next."),
        PutContentErrors,
    ),
)]
pub async fn put_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<SignedQuery>,
    request: Request,
) -> Response {
    match put_signed(state, id, query, request).await {
        Ok(status) => status.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn put_signed(
    state: AppState,
    id: String,
    query: SignedQuery,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let upload = state.store().get_upload(&id).await?;
    let Some(upload) = upload.filter(|u| u.state == UploadState::Pending) else {
        return Err(forbidden_signature("this upload URL is not valid"));
    };
    let secret = state.store().installation_secret().await?;
    let given = hex::decode(&query.signature)
        .map_err(|_| forbidden_signature("the signature is malformed"))?;
    signature(&secret, &id, upload.size, query.expires)
        .verify_slice(&given)
        .map_err(|_| forbidden_signature("the signature does not match"))?;
    if query.expires < now_unix() {
        return Err(forbidden_signature("this upload URL has expired"));
    }
    let body = request.into_body().into_data_stream();
    let stored = store_stream(&state, &upload.object_key, body, upload.size).await?;
    if stored.size != upload.size {
        let _ = state.objects().delete(&upload.object_key).await;
        return Err(ApiError::new(
            ErrorCode::SizeMismatch,
            format!("expected {} bytes, got {}", upload.size, stored.size),
        ));
    }
    Ok(StatusCode::OK)
}

api_errors!(CompleteUploadErrors: AUTH; NotFound, UploadMissing, SizeMismatch, AlreadyCompleted);

/// `POST /api/v1/uploads/{id}/complete`: after the presigned `PUT`, checks the object and
/// its size, hashes and sniffs it, and records it like a streamed upload.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/{id}/complete",
    operation_id = "complete_upload",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id, from presign.")),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The completed upload, with its short link (also when it was complete already).",
         body = UploadView,
         links(
            ("getUpload" = (operation_id = "get_upload", parameters(("id" = "$response.body#/id")))),
         )),
        CompleteUploadErrors,
    ),
)]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(shortlink_core::Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let upload = match state.store().get_upload(&id).await? {
        Some(upload) if upload.owner == caller.user.id => upload,
        _ => {
            return Err(ApiError::new(ErrorCode::NotFound, "no such upload"));
        }
    };
    if upload.state == UploadState::Complete {
        return Ok(Json(UploadView::new(&state, &upload)).into_response());
    }
    let Some(meta) = state.objects().head(&upload.object_key).await? else {
        return Err(ApiError::new(
            ErrorCode::UploadMissing,
            "no bytes were uploaded to the presigned URL (yet)",
        ));
    };
    if meta.size != upload.size {
        let _ = state.objects().delete(&upload.object_key).await;
        return Err(ApiError::new(
            ErrorCode::SizeMismatch,
            format!(
                "expected {} bytes, the stored object has {}",
                upload.size, meta.size
            ),
        ));
    }
    let mut reader = state.objects().open_read(&upload.object_key).await?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .map_err(|e| ApiError::internal(format!("reading the uploaded object: {e}")))?;
        if n == 0 {
            break;
        }
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(n);
            head.extend_from_slice(&buffer[..take]);
        }
        hasher.update(&buffer[..n]);
    }
    let upload = Upload {
        sha256: hex::encode(hasher.finalize()),
        content_type: sniff_content_type(&head),
        ..upload
    };
    let upload = record(&state, caller.user.id, upload, UploadPath::Presigned).await?;
    Ok((StatusCode::OK, Json(UploadView::new(&state, &upload))).into_response())
}

fn presentation(upload: &Upload, content_type: &str) -> Presentation {
    let disposition = if is_inline_safe(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let ascii: String = upload
        .filename
        .chars()
        .map(|c| if c.is_ascii() && c != '"' { c } else { '_' })
        .collect();
    let encoded: String = upload
        .filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Presentation {
        content_type: content_type.to_owned(),
        content_disposition: format!(
            "{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
        ),
    }
}

async fn serve_object(
    state: &AppState,
    key: &str,
    presentation: Presentation,
    request: Request,
) -> Result<Response, ApiError> {
    let valid_for = Duration::from_secs(state.config().download_ttl_seconds);
    match state
        .objects()
        .locate(key, &presentation, valid_for)
        .await?
    {
        Location::Url(url) => Ok(Redirect::temporary(&url).into_response()),
        Location::File(path) => {
            let served = tower_http::services::ServeFile::new(path)
                .oneshot(request)
                .await
                .map_err(ApiError::internal)?;
            let mut response = served.map(Body::new);
            if response.status().is_success() {
                let headers = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&presentation.content_type) {
                    headers.insert(header::CONTENT_TYPE, v);
                }
                if let Ok(v) = HeaderValue::from_str(&presentation.content_disposition) {
                    headers.insert(header::CONTENT_DISPOSITION, v);
                }
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                // Whatever a file holds, it runs no script on this origin.
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; sandbox"),
                );
            }
            Ok(response)
        }
    }
}

/// The complete upload `id`, unless it has expired (the sweep removes it soon).
async fn complete_upload_by_id(state: &AppState, id: &str) -> Result<Upload, ApiError> {
    match state.store().get_upload(id).await? {
        Some(upload)
            if upload.state == UploadState::Complete
                && upload.expires_at.is_none_or(|at| at > now_unix()) =>
        {
            Ok(upload)
        }
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such file")),
    }
}

/// Whether a request for a file starts a download: a `GET` of all of it, or of a range
/// from its first byte (players and resuming clients ask for later ranges of the same
/// download).
fn starts_download(request: &Request) -> bool {
    if request.method() != axum::http::Method::GET {
        return false;
    }
    match request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(range) => range
            .trim()
            .strip_prefix("bytes=")
            .is_some_and(|r| r.trim_start().starts_with("0-")),
    }
}

api_errors!(ServeFileErrors: ; NotFound, Internal);

/// `GET /f/{id}`: the file, to anyone with its link (range requests work on the local
/// disk; S3 answers with a redirect to a short-lived presigned URL).
#[utoipa::path(
    get,
    path = "/f/{id}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id."),
        ("Range" = Option<String>, Header, description = "A single byte range such as `bytes=0-1023` (local disk only)."),
    ),
    responses(
        (status = 200, description = "The file, with its sniffed content type. Types a browser could run \
            (HTML, SVG, ...) are served as attachments.",
         body = BinaryBody, content_type = "*/*",
         headers(
            ("Content-Disposition" = String, description = "`inline` or `attachment`, with the file name."),
            ("Content-Security-Policy" = String, description = "`default-src 'none'; sandbox`."),
            ("X-Content-Type-Options" = String, description = "`nosniff`."),
         )),
        (status = 206, description = "The requested byte range of the file.", body = BinaryBody, content_type = "*/*",
         headers(("Content-Range" = String, description = "The range sent, as `bytes start-end/size`."))),
        (status = 304, description = "Not modified since the request's `If-Modified-Since` or `If-None-Match`."),
        (status = 307, description = "With the S3 backend: a redirect to a short-lived presigned URL of the file.",
         headers(("Location" = String, description = "The presigned URL."))),
        (status = 412, description = "The request's `If-Unmodified-Since` or `If-Match` does not hold."),
        (status = 416, description = "The `Range` cannot be satisfied (or asks for several ranges).",
         headers(("Content-Range" = String, description = "`bytes */size`."))),
        ServeFileErrors,
    ),
)]
pub async fn serve_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let upload = complete_upload_by_id(&state, &id).await?;
    let presentation = presentation(&upload, &upload.content_type);
    let counts = starts_download(&request);
    let response = serve_object(&state, &upload.object_key, presentation, request).await?;
    let status = response.status();
    if counts
        && (status.is_success() || status.is_redirection())
        && status != StatusCode::NOT_MODIFIED
    {
        state.downloads().count(&upload.id);
    }
    Ok(response)
}

/// `GET /f/{id}/thumb/{size}`: a thumbnail (PNG) once made.
#[utoipa::path(
    get,
    path = "/f/{id}/thumb/{size}",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id."),
        ("size" = u32, Path, description = "The thumbnail's box: 150, 300 or 800 (others are 404)."),
        ("Range" = Option<String>, Header, description = "A single byte range such as `bytes=0-1023` (local disk only)."),
    ),
    responses(
        (status = 200, description = "The thumbnail.", body = BinaryBody, content_type = "image/png",
         headers(
            ("Content-Disposition" = String, description = "`inline`, with the upload's file name."),
            ("Content-Security-Policy" = String, description = "`default-src 'none'; sandbox`."),
            ("X-Content-Type-Options" = String, description = "`nosniff`."),
         )),
        (status = 206, description = "The requested byte range of the thumbnail.", body = BinaryBody, content_type = "image/png",
         headers(("Content-Range" = String, description = "The range sent, as `bytes start-end/size`."))),
        (status = 304, description = "Not modified since the request's `If-Modified-Since` or `If-None-Match`."),
        (status = 307, description = "With the S3 backend: a redirect to a short-lived presigned URL of the thumbnail.",
         headers(("Location" = String, description = "The presigned URL."))),
        (status = 400, description = "`size` is not a number (axum's plain-text answer).", body = String, content_type = "text/plain"),
        (status = 412, description = "The request's `If-Unmodified-Since` or `If-Match` does not hold."),
        (status = 416, description = "The `Range` cannot be satisfied (or asks for several ranges).",
         headers(("Content-Range" = String, description = "`bytes */size`."))),
        ServeFileErrors,
    ),
)]
pub async fn serve_thumbnail(
    State(state): State<AppState>,
    Path((id, size)): Path<(String, u32)>,
    request: Request,
) -> Result<Response, ApiError> {
    let upload = complete_upload_by_id(&state, &id).await?;
    if !THUMBNAIL_SIZES.contains(&size) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such thumbnail size"));
    }
    let Some(thumb) = upload.thumbnails.iter().find(|t| t.size == size) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such thumbnail (yet)",
        ));
    };
    let presentation = presentation(&upload, "image/png");
    serve_object(&state, &thumb.key.clone(), presentation, request).await
}
