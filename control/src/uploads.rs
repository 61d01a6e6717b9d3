//! File uploads: streamed (`POST /api/v1/uploads`) or presigned (`/presign`, a `PUT`,
//! then `/complete`), served at `/f/{id}` and by a short link, with thumbnails made in
//! the background for images.
//!
//! Bytes are never held whole: they stream to the object store while being hashed and
//! counted, and an upload over the limit is aborted with nothing kept. The content type
//! comes from the bytes, never from the client.

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
use crate::state::AppState;

/// Bytes looked at to sniff the content type.
const SNIFF_BYTES: usize = 8192;

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound(_) => ApiError::new(ErrorCode::NotFound, "no such file"),
            other => ApiError::internal(other),
        }
    }
}

fn new_upload_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>())
}

fn object_key(id: &str) -> String {
    format!("u/{id}")
}

pub(crate) fn thumbnail_key(id: &str, size: u32) -> String {
    format!("u/{id}.thumb-{size}.png")
}

fn too_large(max: u64) -> ApiError {
    crate::metrics::UPLOADS_TOO_LARGE.inc();
    ApiError::new(
        ErrorCode::UploadTooLarge,
        format!("uploads may be at most {max} bytes"),
    )
}

/// An upload as the API shows it.
#[derive(Debug, Serialize)]
pub struct UploadView {
    id: String,
    filename: String,
    url: String,
    short_url: Option<String>,
    size: u64,
    content_type: String,
    sha256: String,
    state: UploadState,
    thumbnails: ThumbnailsView,
    created_at: String,
}

#[derive(Debug, Serialize)]
struct ThumbnailsView {
    state: ThumbnailState,
    items: Vec<ThumbnailView>,
}

#[derive(Debug, Serialize)]
struct ThumbnailView {
    size: u32,
    width: u32,
    height: u32,
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

/// Records a completed upload: its short link, metadata, thumbnail job and event.
async fn record(
    state: &AppState,
    owner: UserId,
    mut upload: Upload,
    replace_pending: bool,
) -> Result<Upload, ApiError> {
    let link = crate::links::create_internal_link(
        state,
        owner,
        state.public_path(&format!("/f/{}", upload.id)),
    )
    .await?;
    upload.code = Some(link.code.as_str().to_owned());
    upload.state = UploadState::Complete;
    upload.expires_at = None;
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
            return Err(ApiError::new(
                ErrorCode::AlreadyCompleted,
                "this upload is complete already",
            ));
        }
    } else {
        state
            .store()
            .insert_upload(upload.clone(), thumbnails, Some(event))
            .await?;
    }
    if thumbnails {
        state.thumbnails_wake();
    }
    let path = if replace_pending {
        "presigned"
    } else {
        "streamed"
    };
    crate::metrics::UPLOADS.with_label_values(&[path]).inc();
    crate::metrics::UPLOAD_BYTES.inc_by(upload.size);
    Ok(upload)
}

/// `POST /api/v1/uploads`: multipart with a `file` field → 201 with the upload.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    upload_file(state, caller, headers, multipart)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upload_file(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    mut multipart: Multipart,
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
    loop {
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
            continue;
        }
        let filename = sanitize_filename(field.file_name().unwrap_or("file"));
        let id = new_upload_id();
        let key = object_key(&id);
        let stored = store_stream(&state, &key, field, max).await?;
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
            expires_at: None,
        };
        return match record(&state, caller.user.id, upload, false).await {
            Ok(upload) => {
                Ok((StatusCode::CREATED, Json(UploadView::new(&state, &upload))).into_response())
            }
            Err(e) => {
                // Nothing half-recorded: the object goes too.
                let _ = state.objects().delete(&key).await;
                Err(e)
            }
        };
    }
}

/// `GET /api/v1/uploads/{id}`: the owner's upload (others get 404).
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    filename: String,
    content_type: Option<String>,
    size: u64,
}

/// Answer of `POST /api/v1/uploads/presign`.
#[derive(Debug, Serialize)]
pub struct PresignView {
    id: String,
    upload_url: String,
    method: &'static str,
    headers: std::collections::BTreeMap<String, String>,
    expires_at: String,
}

type HmacSha256 = Hmac<Sha256>;

fn signature(secret: &[u8; 32], id: &str, size: u64, expires: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length works");
    mac.update(format!("PUT\n{id}\n{size}\n{expires}").as_bytes());
    mac
}

/// `POST /api/v1/uploads/presign` → `{id, upload_url, method, headers, expires_at}`. For
/// S3 the URL is the store's own presigned `PUT`; for the local disk it is this control
/// plane's `PUT /api/v1/uploads/{id}/content`, signed with an HMAC and an expiry.
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
    let declared = request
        .content_type
        .filter(|t| {
            t.len() <= 127
                && t.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && t.bytes().all(|c| c.is_ascii_graphic() && c != b';')
                })
        })
        .unwrap_or_else(|| "application/octet-stream".into());
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
        expires_at: Some(expires),
    };
    state.store().insert_upload(upload, false, None).await?;
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
#[derive(Debug, Deserialize)]
pub struct SignedQuery {
    expires: i64,
    signature: String,
}

fn forbidden_signature(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidSignature, message)
}

/// `PUT /api/v1/uploads/{id}/content?expires&signature`: the bytes of a presigned upload
/// on the local backend. The signature is the authorization; exactly the declared size
/// is accepted.
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

/// `POST /api/v1/uploads/{id}/complete`: after the presigned `PUT`, checks the object and
/// its size, hashes and sniffs it, and records it like a streamed upload.
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
    let upload = record(&state, caller.user.id, upload, true).await?;
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

async fn complete_upload_by_id(state: &AppState, id: &str) -> Result<Upload, ApiError> {
    match state.store().get_upload(id).await? {
        Some(upload) if upload.state == UploadState::Complete => Ok(upload),
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such file")),
    }
}

/// `GET /f/{id}`: the file, to anyone with its link (range requests work on the local
/// disk; S3 answers with a redirect to a short-lived presigned URL).
pub async fn serve_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let upload = complete_upload_by_id(&state, &id).await?;
    let presentation = presentation(&upload, &upload.content_type);
    serve_object(&state, &upload.object_key, presentation, request).await
}

/// `GET /f/{id}/thumb/{size}`: a thumbnail (PNG) once made.
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
