//! Presigned multipart uploads: a file of any size sent in parts, in parallel and in any
//! order, straight to the object store.
//!
//! `POST /api/v1/uploads/multipart` plans the parts and starts the store's multipart
//! upload; each part's URL is signed for its exact size and SHA-256 (S3 checks both; on
//! the local disk this server's part endpoint does), so a part's bytes are verified where
//! they land. `GET …/parts` says which parts are stored (to resume after a crash),
//! `POST …/urls` signs more URLs (and keeps the upload from being abandoned), and
//! `POST …/complete` with the part list assembles the object. With S3 the bytes never
//! pass through this server. `DELETE /api/v1/uploads/{id}` aborts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shortlink_core::time_util::{now_unix, to_rfc3339};
use shortlink_core::{
    MultipartPlan, Scope, ThumbnailState, Upload, UploadState, sanitize_filename,
    sniff_content_type,
};
use shortlink_objects::{ObjectError, PartSpec, PartsProblem, composite_sha256};
use tokio::io::AsyncReadExt;

use super::{
    SNIFF_BYTES, UploadPath, UploadView, abandoned_at, declared_type, new_upload_id, object_key,
    record, sign, too_large,
};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::api_errors;
use crate::state::AppState;

/// Smallest part (but the last): S3's own minimum.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// Largest part: S3's own maximum.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Part size when the client names none.
pub const DEFAULT_PART_BYTES: u64 = 16 * 1024 * 1024;
/// Most part URLs one request signs.
pub const MAX_URLS_PER_REQUEST: usize = 1000;
/// The largest body of a request listing parts: every one of 10 000 parts with its
/// SHA-256 is about 1 MB of JSON.
pub const PARTS_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A part's number and the SHA-256 of its bytes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartChecksum {
    /// The part's number, from 1.
    #[schema(minimum = 1, maximum = 10000)]
    number: u32,
    /// The SHA-256 of the part's bytes: 64 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: String,
}

/// Body of `POST /api/v1/uploads/multipart`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MultipartRequest {
    /// The file's name (made safe).
    filename: String,
    /// The content type the object is stored with (a `type/subtype`; anything else means
    /// `application/octet-stream`). The recorded type is sniffed from the bytes.
    content_type: Option<String>,
    /// The file's exact size in bytes: at most the configured
    /// `max_multipart_upload_bytes` (100 GiB by default).
    #[schema(minimum = 1)]
    size: u64,
    /// Bytes per part, the last part holding the rest: 5 MiB to 5 GiB, default 16 MiB, and
    /// at most `max_upload_parts` parts (10 000 by default).
    #[schema(minimum = 5242880, maximum = 5368709120_u64)]
    part_size: Option<u64>,
    /// Parts to sign URLs for right away (more with `POST …/urls`).
    #[serde(default)]
    parts: Vec<PartChecksum>,
}

/// Where to send one part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartUrl {
    /// The part's number.
    number: u32,
    /// Its exact size in bytes.
    size: u64,
    /// Where to `PUT` its bytes.
    #[schema(format = "uri")]
    url: String,
    /// Always `PUT`.
    #[schema(value_type = String, pattern = "^PUT$")]
    method: &'static str,
    /// Headers the `PUT` must carry (name → value).
    headers: BTreeMap<String, String>,
    /// When `url` stops working (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Answer of `POST /api/v1/uploads/multipart`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MultipartView {
    /// The upload's id.
    id: String,
    /// Bytes per part (the last part holds the rest).
    part_size: u64,
    /// How many parts the file has.
    part_count: u32,
    /// URLs of the parts asked for.
    parts: Vec<PartUrl>,
    /// The pending upload.
    upload: UploadView,
}

/// Body of `POST …/urls` and `POST …/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartsRequest {
    /// Parts with their SHA-256s: for `urls` those to sign (at most 1 000), for
    /// `complete` every part, in order.
    #[schema(min_items = 1)]
    parts: Vec<PartChecksum>,
}

/// The highest part number (S3's limit, and the schema's).
pub const MAX_PART_NUMBER: u32 = 10_000;

impl PartsRequest {
    /// Checks what holds whatever the upload: some parts, numbers from 1 to
    /// [`MAX_PART_NUMBER`], checksums of 64 hex digits. Done before the upload is looked
    /// at, so a malformed request is refused even where the upload would answer without
    /// reading it (one complete already).
    fn checked(self) -> Result<Vec<PartChecksum>, ApiError> {
        if self.parts.is_empty() {
            return Err(invalid_part("list at least one part"));
        }
        for part in &self.parts {
            if !(1..=MAX_PART_NUMBER).contains(&part.number) {
                return Err(invalid_part(format!(
                    "part {} is not a part number (1 to {MAX_PART_NUMBER})",
                    part.number
                )));
            }
            parse_sha256(&part.sha256)?;
        }
        Ok(self.parts)
    }
}

/// Answer of `POST …/urls`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartUrlsView {
    /// URLs of the parts asked for.
    parts: Vec<PartUrl>,
    /// When the upload is abandoned unless more URLs are asked for (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
}

/// One stored part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoredPartView {
    /// Its number.
    number: u32,
    /// Its stored size in bytes.
    size: u64,
    /// Its SHA-256 in hex, where the store keeps one (the local disk and S3 do).
    sha256: Option<String>,
}

/// Answer of `GET …/parts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartsView {
    /// Bytes per part.
    part_size: u64,
    /// How many parts the file has.
    part_count: u32,
    /// The parts stored so far.
    stored: Vec<StoredPartView>,
    /// Parts still to send: not stored, or stored with the wrong size.
    missing: Vec<u32>,
    /// When the upload is abandoned unless more URLs are asked for (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

fn invalid_part(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidPart, message)
}

fn parse_sha256(text: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidChecksum,
                format!("'{text}' is not a SHA-256 in hex (64 digits)"),
            )
        })
}

/// Checks a request's parts against the plan: numbers in range, each once, checksums
/// well formed.
fn checked_parts(
    plan: &MultipartPlan,
    size: u64,
    parts: &[PartChecksum],
) -> Result<Vec<PartSpec>, ApiError> {
    let mut seen = BTreeSet::new();
    parts
        .iter()
        .map(|p| {
            let Some(len) = plan.part_len(size, p.number) else {
                return Err(invalid_part(format!(
                    "part {} is not one of the upload's parts 1 to {}",
                    p.number,
                    plan.part_count(size)
                )));
            };
            if !seen.insert(p.number) {
                return Err(invalid_part(format!("part {} is listed twice", p.number)));
            }
            Ok(PartSpec {
                number: p.number,
                size: len,
                sha256: parse_sha256(&p.sha256)?,
            })
        })
        .collect()
}

/// The caller's pending multipart upload `id`, with its plan.
async fn pending_multipart(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Upload, MultipartPlan), ApiError> {
    let upload = match state.store().get_upload(id).await? {
        Some(upload) if upload.owner == caller.user.id => upload,
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such upload")),
    };
    match (&upload.multipart, upload.state) {
        (Some(plan), UploadState::Pending) => {
            let plan = plan.clone();
            Ok((upload, plan))
        }
        _ => Err(ApiError::new(
            ErrorCode::NotMultipart,
            "this upload is not a pending multipart upload",
        )),
    }
}

/// Signs URLs for `parts`: the store's own (S3) or this server's part endpoint.
async fn part_urls(
    state: &AppState,
    upload: &Upload,
    plan: &MultipartPlan,
    parts: &[PartSpec],
) -> Result<(Vec<PartUrl>, i64), ApiError> {
    let ttl = state.config().presign_ttl_seconds;
    let expires = now_unix() + ttl as i64;
    let mut secret = None;
    let mut urls = Vec::with_capacity(parts.len());
    for part in parts {
        let presigned = state
            .objects()
            .presign_part(
                &upload.object_key,
                &plan.store_upload_id,
                part.number,
                part.size,
                &part.sha256,
                Duration::from_secs(ttl),
            )
            .await?;
        let (url, headers) = match presigned {
            Some(p) => (p.url, p.headers.into_iter().collect()),
            None => {
                let secret = match secret {
                    Some(secret) => secret,
                    None => *secret.insert(state.store().installation_secret().await?),
                };
                let sha = hex::encode(part.sha256);
                let mac = part_signature(&secret, &upload.id, part.number, &sha, expires);
                let url = state.public_path(&format!(
                    "/api/v1/uploads/multipart/{}/parts/{}?expires={expires}&sha256={sha}&signature={}",
                    upload.id,
                    part.number,
                    hex::encode(mac.finalize().into_bytes())
                ));
                (url, BTreeMap::new())
            }
        };
        urls.push(PartUrl {
            number: part.number,
            size: part.size,
            url,
            method: "PUT",
            headers,
            expires_at: to_rfc3339(expires),
        });
    }
    Ok((urls, expires))
}

fn part_signature(
    secret: &[u8; 32],
    id: &str,
    number: u32,
    sha256_hex: &str,
    expires: i64,
) -> super::HmacSha256 {
    sign(
        secret,
        &[
            "PART",
            id,
            &number.to_string(),
            sha256_hex,
            &expires.to_string(),
        ],
    )
}

api_errors!(CreateMultipartErrors: AUTH, JSON_BODY; InvalidSize, UploadTooLarge, QuotaExceeded, InvalidPartSize, InvalidPart, InvalidChecksum);

/// `POST /api/v1/uploads/multipart`: plans a multipart upload, starts it in the object
/// store and signs URLs for the parts given.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/multipart",
    operation_id = "create_multipart_upload",
    tag = "uploads",
    request_body = MultipartRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "The pending upload, its plan and the URLs asked for.", body = MultipartView,
         links(
            ("getUpload" = (operation_id = "get_upload", parameters(("id" = "$response.body#/id")))),
            ("listParts" = (operation_id = "list_upload_parts", parameters(("id" = "$response.body#/id")))),
         )),
        CreateMultipartErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<MultipartRequest>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let config = state.config();
    if request.size == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidSize,
            "size must be at least 1 byte",
        ));
    }
    if request.size > config.max_multipart_upload_bytes {
        return Err(too_large(config.max_multipart_upload_bytes));
    }
    let part_size = request.part_size.unwrap_or(DEFAULT_PART_BYTES);
    if !(MIN_PART_BYTES..=MAX_PART_BYTES).contains(&part_size) {
        return Err(ApiError::new(
            ErrorCode::InvalidPartSize,
            format!("part_size must be between {MIN_PART_BYTES} and {MAX_PART_BYTES} bytes"),
        ));
    }
    let max_parts = u64::from(config.max_upload_parts);
    if request.size.div_ceil(part_size) > max_parts {
        return Err(ApiError::new(
            ErrorCode::InvalidPartSize,
            format!(
                "{} bytes in parts of {part_size} make more than {max_parts} parts; \
                 use parts of at least {} bytes",
                request.size,
                request.size.div_ceil(max_parts).max(MIN_PART_BYTES)
            ),
        ));
    }
    if request.parts.len() > MAX_URLS_PER_REQUEST {
        return Err(invalid_part(format!(
            "ask for at most {MAX_URLS_PER_REQUEST} part URLs at a time"
        )));
    }
    let mut plan = MultipartPlan {
        store_upload_id: String::new(),
        part_size,
    };
    let parts = checked_parts(&plan, request.size, &request.parts)?;
    let id = new_upload_id();
    let key = object_key(&id);
    let declared = declared_type(request.content_type);
    plan.store_upload_id = state.objects().multipart_create(&key, &declared).await?;
    let now = now_unix();
    let upload = Upload {
        id: id.clone(),
        owner: caller.user.id,
        filename: sanitize_filename(&request.filename),
        content_type: declared,
        size: request.size,
        sha256: String::new(),
        object_key: key.clone(),
        code: None,
        state: UploadState::Pending,
        thumbnail_state: ThumbnailState::None,
        thumbnails: Vec::new(),
        created_at: now,
        expires_at: Some(abandoned_at(
            &state,
            now + config.presign_ttl_seconds as i64,
        )),
        multipart: Some(plan.clone()),
        downloads: 0,
    };
    let quota = Some(config.upload_quota_bytes);
    if let Err(e) = state
        .store()
        .insert_upload(upload.clone(), false, None, quota)
        .await
    {
        let _ = state
            .objects()
            .multipart_abort(&key, &plan.store_upload_id)
            .await;
        return Err(e.into());
    }
    let (urls, _) = part_urls(&state, &upload, &plan, &parts).await?;
    let view = MultipartView {
        id,
        part_size,
        part_count: plan.part_count(request.size),
        parts: urls,
        upload: UploadView::new(&state, &upload),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

api_errors!(PartUrlsErrors: AUTH, JSON_BODY; NotFound, NotMultipart, InvalidPart, InvalidChecksum);

/// `POST /api/v1/uploads/multipart/{id}/urls`: signs URLs for more parts (or again, for a
/// resumed upload). Each request moves the upload's abandonment back.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/multipart/{id}/urls",
    operation_id = "sign_upload_parts",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    request_body = PartsRequest,
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The URLs.", body = PartUrlsView), PartUrlsErrors),
)]
pub async fn sign_parts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PartsRequest>,
) -> Result<Json<PartUrlsView>, ApiError> {
    caller.require(Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let requested = request.checked()?;
    let (upload, plan) = pending_multipart(&state, &caller, &id).await?;
    if requested.len() > MAX_URLS_PER_REQUEST {
        return Err(invalid_part(format!(
            "ask for 1 to {MAX_URLS_PER_REQUEST} part URLs at a time"
        )));
    }
    let parts = checked_parts(&plan, upload.size, &requested)?;
    let (urls, url_expires) = part_urls(&state, &upload, &plan, &parts).await?;
    let abandoned = abandoned_at(&state, url_expires);
    // Written when it moves by a minute or more: not on every request of a busy client.
    let expires_at = if upload.expires_at.is_none_or(|at| abandoned - at >= 60) {
        let moved = Upload {
            expires_at: Some(abandoned),
            ..upload
        };
        if !state.store().complete_upload(moved, false, None).await? {
            return Err(ApiError::new(
                ErrorCode::NotMultipart,
                "this upload is not pending any more",
            ));
        }
        abandoned
    } else {
        upload.expires_at.unwrap_or(abandoned)
    };
    Ok(Json(PartUrlsView {
        parts: urls,
        expires_at: to_rfc3339(expires_at),
    }))
}

api_errors!(ListPartsErrors: AUTH; NotFound, NotMultipart);

/// `GET /api/v1/uploads/multipart/{id}/parts`: the parts stored so far and those still to
/// send, to resume an upload.
#[utoipa::path(
    get,
    path = "/api/v1/uploads/multipart/{id}/parts",
    operation_id = "list_upload_parts",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    security(("api_key" = []), ("session" = [])),
    responses((status = 200, description = "The stored and missing parts.", body = PartsView), ListPartsErrors),
)]
pub async fn list_parts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PartsView>, ApiError> {
    let (upload, plan) = pending_multipart(&state, &caller, &id).await?;
    let stored = state
        .objects()
        .list_parts(&upload.object_key, &plan.store_upload_id)
        .await?;
    let count = plan.part_count(upload.size);
    let good: BTreeSet<u32> = stored
        .iter()
        .filter(|p| plan.part_len(upload.size, p.number) == Some(p.size))
        .map(|p| p.number)
        .collect();
    Ok(Json(PartsView {
        part_size: plan.part_size,
        part_count: count,
        missing: (1..=count).filter(|n| !good.contains(n)).collect(),
        stored: stored
            .into_iter()
            .map(|p| StoredPartView {
                number: p.number,
                size: p.size,
                sha256: p.sha256.map(hex::encode),
            })
            .collect(),
        expires_at: upload.expires_at.map(to_rfc3339),
    }))
}

/// Query of the local backend's signed part `PUT`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PartQuery {
    /// When the URL stops working (Unix seconds), as signed.
    expires: i64,
    /// The part's SHA-256 in hex, as signed.
    sha256: String,
    /// The URL's HMAC-SHA256 signature in hex.
    signature: String,
}

/// Answer of a part `PUT` on the local backend.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartStored {
    /// The part's number.
    number: u32,
    /// Its size in bytes.
    size: u64,
    /// Its SHA-256 in hex, as checked.
    sha256: String,
}

api_errors!(PutPartErrors: QUERY; InvalidSignature, UploadInterrupted, UploadTooLarge, SizeMismatch, ChecksumMismatch, Internal);

/// `PUT /api/v1/uploads/multipart/{id}/parts/{number}?expires&sha256&signature`: a part's
/// bytes on the local backend. The signature is the authorization; exactly the part's
/// size is accepted, and only bytes with the signed SHA-256 are kept.
#[utoipa::path(
    put,
    path = "/api/v1/uploads/multipart/{id}/parts/{number}",
    operation_id = "put_upload_part",
    tag = "uploads",
    params(
        ("id" = String, Path, description = "The upload's id."),
        ("number" = String, Path, description = "The part's number (a URL for another number is refused)."),
        PartQuery,
    ),
    request_body(
        content = super::BinaryBody,
        content_type = "application/octet-stream",
        description = "The part's bytes: exactly its size.",
    ),
    responses(
        (status = 200, description = "The part is stored.", body = PartStored),
        PutPartErrors,
    ),
)]
pub async fn put_part(
    State(state): State<AppState>,
    Path((id, number)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<PartQuery>,
    request: Request,
) -> Result<Json<PartStored>, ApiError> {
    let forbidden = |message: &str| ApiError::new(ErrorCode::InvalidSignature, message);
    // Any other text was never signed: the same answer as a wrong signature.
    let number: u32 = number
        .parse()
        .map_err(|_| forbidden("this part URL is not valid"))?;
    let upload = state.store().get_upload(&id).await?;
    let Some((upload, plan)) = upload
        .filter(|u| u.state == UploadState::Pending)
        .and_then(|u| u.multipart.clone().map(|plan| (u, plan)))
    else {
        return Err(forbidden("this part URL is not valid"));
    };
    let secret = state.store().installation_secret().await?;
    let given =
        hex::decode(&query.signature).map_err(|_| forbidden("the signature is malformed"))?;
    part_signature(&secret, &id, number, &query.sha256, query.expires)
        .verify_slice(&given)
        .map_err(|_| forbidden("the signature does not match"))?;
    if query.expires < now_unix() {
        return Err(forbidden("this part URL has expired"));
    }
    let (Some(size), Ok(sha256)) = (
        plan.part_len(upload.size, number),
        parse_sha256(&query.sha256),
    ) else {
        return Err(forbidden("this part URL is not valid"));
    };
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > size
    {
        return Err(too_large(size));
    }
    let mut writer = state
        .objects()
        .part_writer(&upload.object_key, &plan.store_upload_id, number, &sha256)
        .await?;
    let mut body = request.into_body().into_data_stream();
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    ErrorCode::UploadInterrupted,
                    format!("the part could not be read to the end: {e}"),
                )
            })?;
            received += chunk.len() as u64;
            if received > size {
                return Err(too_large(size));
            }
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
        if received != size {
            return Err(ApiError::new(
                ErrorCode::SizeMismatch,
                format!("part {number} has {size} bytes, got {received}"),
            ));
        }
        if hasher.finalize_reset().as_slice() != sha256 {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!("part {number}'s bytes do not have the SHA-256 its URL was signed for"),
            ));
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            writer.finish().await?;
            Ok(Json(PartStored {
                number,
                size,
                sha256: hex::encode(sha256),
            }))
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

api_errors!(CompleteMultipartErrors: AUTH, JSON_BODY; NotFound, NotMultipart, InvalidPart, InvalidChecksum, PartsMissing, ChecksumMismatch, AlreadyCompleted, Busy);

/// `POST /api/v1/uploads/multipart/{id}/complete`: with every part and its SHA-256, in
/// order, assembles the object and records the upload like any other.
#[utoipa::path(
    post,
    path = "/api/v1/uploads/multipart/{id}/complete",
    operation_id = "complete_multipart_upload",
    tag = "uploads",
    params(("id" = String, Path, description = "The upload's id.")),
    request_body = PartsRequest,
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The completed upload, with its short link (also when it was complete already).",
         body = UploadView),
        CompleteMultipartErrors,
    ),
)]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PartsRequest>,
) -> Result<Json<UploadView>, ApiError> {
    caller.require(Scope::Uploads)?;
    state.check_write(&caller.key_hash)?;
    let requested = request.checked()?;
    let (upload, plan) = match pending_multipart(&state, &caller, &id).await {
        Ok(found) => found,
        Err(e) => return already_complete(&state, &caller, &id).await.ok_or(e),
    };
    let count = plan.part_count(upload.size);
    let parts = checked_parts(&plan, upload.size, &requested)?;
    let in_order =
        parts.len() == count as usize && parts.iter().zip(1..).all(|(p, n)| p.number == n);
    if !in_order {
        return Err(invalid_part(format!(
            "list every part from 1 to {count}, in order, with its SHA-256"
        )));
    }
    // Assembling a large object takes a while (a copy on the local disk; S3 answers
    // CompleteMultipartUpload when done): it runs as a task of its own, so a client that
    // hangs up (or a proxy's read timeout) does not cut it off between assembling and
    // recording. A client that retries gets the recorded answer.
    let Some(guard) = state.start_completing(&id) else {
        return Err(ApiError::busy(
            "this upload is being completed by another request; ask again in a moment",
        ));
    };
    let task = tokio::spawn(assemble_and_record(
        state.clone(),
        caller.user.id,
        upload,
        plan,
        parts,
        guard,
    ));
    match task.await {
        Ok(Ok(upload)) => Ok(Json(UploadView::new(&state, &upload))),
        Ok(Err(e)) => match already_complete(&state, &caller, &id).await {
            // Completed by a concurrent request meanwhile: the same answer as it got.
            Some(done) => Ok(done),
            None => Err(e),
        },
        Err(e) => Err(ApiError::internal(format!(
            "completing an upload failed: {e}"
        ))),
    }
}

/// Assembles the object from its parts and records the upload.
async fn assemble_and_record(
    state: AppState,
    owner: shortlink_core::UserId,
    upload: Upload,
    plan: MultipartPlan,
    parts: Vec<PartSpec>,
    _completing: crate::state::CompletingGuard,
) -> Result<Upload, ApiError> {
    let objects = state.objects();
    let assembled = objects
        .multipart_complete(&upload.object_key, &plan.store_upload_id, &parts)
        .await;
    if let Err(e) = assembled {
        // An earlier attempt may have assembled it and been cut off before recording:
        // the store's upload is gone then, and the object is there, whole.
        let whole = matches!(&e, ObjectError::NotFound(_))
            && objects
                .head(&upload.object_key)
                .await?
                .is_some_and(|meta| meta.size == upload.size);
        if !whole {
            return Err(assembly_error(e));
        }
    }
    let mut reader = objects.open_read(&upload.object_key).await?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut reader)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .await
        .map_err(|e| ApiError::internal(format!("reading the assembled object: {e}")))?;
    drop(reader);
    let upload = Upload {
        sha256: composite_sha256(&parts),
        content_type: sniff_content_type(&head),
        ..upload
    };
    record(&state, owner, upload, UploadPath::Multipart).await
}

fn assembly_error(e: ObjectError) -> ApiError {
    match e {
        ObjectError::Parts(PartsProblem::Checksum(number)) => ApiError::new(
            ErrorCode::ChecksumMismatch,
            format!("the stored part {number} has another SHA-256 than the one given"),
        ),
        ObjectError::Parts(problem) => ApiError::new(
            ErrorCode::PartsMissing,
            format!("the upload cannot complete: {problem}"),
        ),
        other => other.into(),
    }
}

/// The caller's upload `id` if it is complete.
async fn already_complete(state: &AppState, caller: &Caller, id: &str) -> Option<Json<UploadView>> {
    match state.store().get_upload(id).await {
        Ok(Some(upload))
            if upload.owner == caller.user.id && upload.state == UploadState::Complete =>
        {
            Some(Json(UploadView::new(state, &upload)))
        }
        _ => None,
    }
}
