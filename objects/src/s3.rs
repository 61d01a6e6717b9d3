//! The S3 backend (`aws-sdk-s3`): any S3-compatible store by endpoint, region, bucket and
//! credentials (from the config, else the standard AWS chain: environment, profile, …).
//! Objects larger than one part go up as multipart uploads, streamed part by part, so
//! memory stays at about one part per upload in flight.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    Location, ObjectError, ObjectMeta, ObjectStore, ObjectWriter, Presentation, PresignedPut,
    check_key,
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
        Ok(Some(PresignedPut {
            url: request.uri().to_owned(),
            headers: request
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }))
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
