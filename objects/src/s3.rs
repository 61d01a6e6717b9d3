//! The S3 backend (`aws-sdk-s3`): any S3-compatible store by endpoint, region, bucket and
//! credentials (from the config, else the standard AWS chain: environment, profile, …).
//! Objects larger than one part go up as multipart uploads, streamed part by part, so
//! memory stays at about one part per upload in flight.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    ListedMultipart, ListedObject, Location, ObjectError, ObjectMeta, ObjectStore, ObjectWriter,
    PartSpec, Presentation, PresignedPut, StoredPart, check_key, check_parts,
};

/// Smallest part S3 accepts (except the last).
const MIN_PART: usize = 5 * 1024 * 1024;

/// Settings of the S3 backend (the `[objects.s3]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The service URL, e.g. `http://127.0.0.1:9000`; unset means AWS itself.
    pub endpoint: Option<String>,
    /// The region. Default `us-east-1`.
    pub region: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// Access key id; unset uses the standard AWS credential chain.
    pub access_key_id: Option<String>,
    /// Secret access key (with `access_key_id`).
    pub secret_access_key: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most
    /// self-hosted stores need this). Default true.
    pub force_path_style: bool,
    /// Multipart part size in bytes (at least 5 MiB). Default 8 MiB.
    pub part_size: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: None,
            secret_access_key: None,
            force_path_style: true,
            part_size: 8 * 1024 * 1024,
        }
    }
}

fn s3_error<E: std::error::Error>(e: E) -> ObjectError {
    ObjectError::S3(DisplayErrorContext(e).to_string())
}

/// A presigned request as the client makes it: its URL and the headers it must carry.
fn presigned(request: &aws_sdk_s3::presigning::PresignedRequest) -> PresignedPut {
    PresignedPut {
        url: request.uri().to_owned(),
        headers: request
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
    }
}

/// A part number as S3 takes it (1 to 10 000).
fn part_number(number: u32) -> Result<i32, ObjectError> {
    i32::try_from(number)
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| ObjectError::InvalidKey(format!("part number {number}")))
}

/// Objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    part_size: usize,
}

impl S3Store {
    /// Connects and checks the bucket is reachable with these credentials.
    pub async fn connect(config: &S3Config) -> Result<S3Store, ObjectError> {
        if config.bucket.is_empty() {
            return Err(ObjectError::Config("objects.s3.bucket is not set".into()));
        }
        if config.part_size < MIN_PART {
            return Err(ObjectError::Config(format!(
                "objects.s3.part_size must be at least {MIN_PART} bytes"
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id.clone(),
                    secret.clone(),
                    None,
                    None,
                    "shortlink-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(ObjectError::Config(
                    "set both objects.s3.access_key_id and objects.s3.secret_access_key, or neither"
                        .into(),
                ));
            }
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .build();
        let client = Client::from_conf(s3_config);
        client
            .head_bucket()
            .bucket(&config.bucket)
            .send()
            .await
            .map_err(|e| {
                ObjectError::Config(format!(
                    "bucket '{}' is not reachable: {}",
                    config.bucket,
                    DisplayErrorContext(e)
                ))
            })?;
        Ok(S3Store {
            client,
            bucket: config.bucket.clone(),
            part_size: config.part_size,
        })
    }
}

impl S3Store {
    /// Every part of a multipart upload S3 holds, with its ETag, by number.
    async fn listed_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<(StoredPart, Option<String>)>, ObjectError> {
        check_key(key)?;
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| {
                    if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchUpload") {
                        ObjectError::NotFound(format!("multipart upload {upload_id}"))
                    } else {
                        s3_error(e)
                    }
                })?;
            for part in page.parts() {
                let Some(number) = part.part_number().and_then(|n| u32::try_from(n).ok()) else {
                    continue;
                };
                let stored = StoredPart {
                    number,
                    size: part.size().unwrap_or(0).max(0) as u64,
                    sha256: part
                        .checksum_sha256()
                        .and_then(|b| BASE64.decode(b).ok())
                        .and_then(|b| <[u8; 32]>::try_from(b).ok()),
                };
                parts.push((stored, part.e_tag().map(str::to_owned)));
            }
            let next = page.next_part_number_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || next.is_none() || next == marker {
                break;
            }
            marker = next;
        }
        parts.sort_by_key(|(p, _)| p.number);
        parts.dedup_by_key(|(p, _)| p.number);
        Ok(parts)
    }
}

struct S3Writer {
    client: Client,
    bucket: String,
    key: String,
    content_type: String,
    part_size: usize,
    buffer: BytesMut,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    done: bool,
}

impl S3Writer {
    async fn upload_part(&mut self, body: Bytes) -> Result<(), ObjectError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(&self.content_type)
                    .send()
                    .await
                    .map_err(s3_error)?;
                let id = created
                    .upload_id()
                    .ok_or_else(|| ObjectError::S3("no upload id in the answer".into()))?
                    .to_owned();
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(s3_error)?;
        self.parts.push(
            CompletedPart::builder()
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .part_number(number)
                .build(),
        );
        Ok(())
    }

    async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
        if let Err(e) = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            warn!(error = %DisplayErrorContext(e), key, "aborting a multipart upload failed");
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), ObjectError> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= self.part_size {
            let part = self.buffer.split_to(self.part_size).freeze();
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), ObjectError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        let result = match self.upload_id.clone() {
            None => self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type(&self.content_type)
                .body(ByteStream::from(rest))
                .send()
                .await
                .map(|_| ())
                .map_err(s3_error),
            Some(upload_id) => {
                let last = if rest.is_empty() {
                    Ok(())
                } else {
                    self.upload_part(rest).await
                };
                match last {
                    Ok(()) => self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(std::mem::take(&mut self.parts)))
                                .build(),
                        )
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(s3_error),
                    Err(e) => Err(e),
                }
            }
        };
        if result.is_err()
            && let Some(id) = &self.upload_id
        {
            S3Writer::abort_upload(&self.client, &self.bucket, &self.key, id).await;
        }
        self.done = true;
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.done = true;
        if let Some(id) = &self.upload_id {
            S3Writer::abort_upload(&self.client, &self.bucket, &self.key, id).await;
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-upload (a cancelled request): abort in the background.
        if !self.done
            && let Some(id) = self.upload_id.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            runtime.spawn(async move { S3Writer::abort_upload(&client, &bucket, &key, &id).await });
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn create(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, ObjectError> {
        check_key(key)?;
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            part_size: self.part_size,
            buffer: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
            done: false,
        }))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        check_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                size: out.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn open_read(
        &self,
        key: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, ObjectError> {
        check_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Box::new(out.body.into_async_read())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(ObjectError::NotFound(key.to_owned()))
            }
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn read_all(&self, key: &str, max_bytes: u64) -> Result<Bytes, ObjectError> {
        let meta = self
            .head(key)
            .await?
            .ok_or_else(|| ObjectError::NotFound(key.to_owned()))?;
        if meta.size > max_bytes {
            return Err(ObjectError::TooLarge(max_bytes));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        let data = out.body.collect().await.map_err(s3_error)?;
        Ok(data.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn locate(
        &self,
        key: &str,
        presentation: &Presentation,
        valid_for: Duration,
    ) -> Result<Location, ObjectError> {
        check_key(key)?;
        let presigning = PresigningConfig::expires_in(valid_for).map_err(s3_error)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(&presentation.content_type)
            .response_content_disposition(&presentation.content_disposition)
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(Location::Url(request.uri().to_owned()))
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError> {
        check_key(key)?;
        let presigning = PresigningConfig::expires_in(valid_for).map_err(s3_error)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(size as i64)
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(Some(presigned(&request)))
    }

    async fn multipart_create(&self, key: &str, content_type: &str) -> Result<String, ObjectError> {
        check_key(key)?;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(s3_error)?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| ObjectError::S3("no upload id in the answer".into()))
    }

    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        size: u64,
        sha256: &[u8; 32],
        valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError> {
        check_key(key)?;
        let presigning = PresigningConfig::expires_in(valid_for).map_err(s3_error)?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number(number)?)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .checksum_sha256(BASE64.encode(sha256))
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(Some(presigned(&request)))
    }

    async fn part_writer(
        &self,
        _key: &str,
        _upload_id: &str,
        _number: u32,
        _sha256: &[u8; 32],
    ) -> Result<Box<dyn ObjectWriter>, ObjectError> {
        Err(ObjectError::Unsupported(
            "parts written by the control plane (they go to S3 directly)",
        ))
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<StoredPart>, ObjectError> {
        Ok(self
            .listed_parts(key, upload_id)
            .await?
            .into_iter()
            .map(|(part, _)| part)
            .collect())
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartSpec],
    ) -> Result<(), ObjectError> {
        // One listing checks the parts and gives the ETags S3 wants back (from S3 itself,
        // not from the client).
        let listed = self.listed_parts(key, upload_id).await?;
        let stored: Vec<StoredPart> = listed.iter().map(|(part, _)| part.clone()).collect();
        check_parts(&stored, parts)?;
        let etags: std::collections::HashMap<u32, Option<String>> = listed
            .into_iter()
            .map(|(part, etag)| (part.number, etag))
            .collect();
        let completed = parts
            .iter()
            .map(|p| {
                let number = part_number(p.number)?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(etags.get(&p.number).cloned().flatten())
                    .checksum_sha256(BASE64.encode(p.sha256))
                    .build())
            })
            .collect::<Result<Vec<_>, ObjectError>>()?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn multipart_abort(&self, key: &str, upload_id: &str) -> Result<(), ObjectError> {
        check_key(key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<ListedMultipart>, ObjectError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if matches!(status, Some(501 | 405)) {
                        ObjectError::Unsupported("listing multipart uploads")
                    } else {
                        s3_error(e)
                    }
                })?;
            for upload in page.uploads() {
                if let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
                    out.push(ListedMultipart {
                        key: key.to_owned(),
                        upload_id: upload_id.to_owned(),
                        started: upload
                            .initiated()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                            .unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedObject>, ObjectError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(after.map(str::to_owned))
            .max_keys(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(s3_error)?;
        let mut out: Vec<ListedObject> = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ListedObject {
                    key: o.key()?.to_owned(),
                    modified: o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                        .unwrap_or(std::time::UNIX_EPOCH),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
