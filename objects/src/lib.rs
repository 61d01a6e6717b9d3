//! Object storage for uploads behind one trait, with two backends: a local directory (the
//! default) and any S3-compatible store.
//!
//! Writes stream: [`ObjectStore::create`] returns an [`ObjectWriter`] that takes chunks as
//! they arrive and makes the object visible only on [`ObjectWriter::finish`]; an aborted or
//! dropped writer leaves nothing behind.

pub mod local;
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use local::LocalDir;
pub use s3::{S3Config, S3Store};

/// Which backend keeps objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files in a local directory.
    #[default]
    Local,
    /// An S3-compatible store.
    S3,
}

/// Settings of object storage (the `[objects]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectsConfig {
    /// `local` (default) or `s3`.
    pub backend: Backend,
    /// The local backend's directory. Default `<data_dir>/objects`.
    pub local_dir: Option<PathBuf>,
    /// The S3 backend's settings.
    pub s3: S3Config,
}

/// Opens the configured backend; `default_dir` is the local directory when none is set.
pub async fn open(
    config: &ObjectsConfig,
    default_dir: &Path,
) -> Result<Arc<dyn ObjectStore>, ObjectError> {
    Ok(match config.backend {
        Backend::Local => Arc::new(LocalDir::open(
            config
                .local_dir
                .clone()
                .unwrap_or_else(|| default_dir.to_owned()),
        )?),
        Backend::S3 => Arc::new(S3Store::connect(&config.s3).await?),
    })
}

/// Why an object operation failed.
#[derive(Debug, Error)]
pub enum ObjectError {
    /// The object does not exist.
    #[error("object '{0}' does not exist")]
    NotFound(String),
    /// The object is larger than the caller allowed.
    #[error("object is larger than {0} bytes")]
    TooLarge(u64),
    /// The key is not one this store accepts.
    #[error("invalid object key '{0}'")]
    InvalidKey(String),
    /// Local disk I/O failed.
    #[error("object storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 service or the connection to it failed.
    #[error("S3 request failed: {0}")]
    S3(String),
    /// The configuration cannot work (e.g. the bucket does not exist).
    #[error("object storage is misconfigured: {0}")]
    Config(String),
    /// A multipart upload's stored parts are not the ones it is completed with.
    #[error("the stored parts do not match: {0}")]
    Parts(PartsProblem),
    /// The backend has no such operation (e.g. listing multipart uploads on a store
    /// without it).
    #[error("object storage does not support {0}")]
    Unsupported(&'static str),
}

/// What is wrong with a multipart upload's parts at completion.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PartsProblem {
    /// These parts (numbers) are not stored.
    #[error("parts {0:?} are missing")]
    Missing(Vec<u32>),
    /// A stored part has another size than planned.
    #[error("part {number} has {stored} bytes, not {expected}")]
    Size {
        /// The part.
        number: u32,
        /// Its planned size.
        expected: u64,
        /// Its stored size.
        stored: u64,
    },
    /// A stored part has another SHA-256 than the one given.
    #[error("part {0} has another SHA-256")]
    Checksum(u32),
}

/// A part of a multipart upload, as planned (for completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    /// Its number, from 1.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// A part the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Its number, from 1.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 the store verified it against, where it reports one.
    pub sha256: Option<[u8; 32]>,
}

/// An object found by [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key.
    pub key: String,
    /// When it was last written.
    pub modified: std::time::SystemTime,
}

/// A multipart upload the store holds, found by [`ObjectStore::list_multipart`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMultipart {
    /// The object key it will complete into.
    pub key: String,
    /// The store's id of it.
    pub upload_id: String,
    /// When it was started (or last written, where the store does not say).
    pub started: std::time::SystemTime,
}

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
}

/// Where a reader gets an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file, served by the control plane itself (with range requests).
    File(PathBuf),
    /// A URL the client is redirected to (an S3 presigned GET).
    Url(String),
}

/// A presigned request a client makes straight to the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    /// The URL to `PUT` the bytes to.
    pub url: String,
    /// Headers the client must send with it (name, value).
    pub headers: Vec<(String, String)>,
}

/// How a served object is presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// `Content-Type` to serve.
    pub content_type: String,
    /// `Content-Disposition` to serve.
    pub content_disposition: String,
}

/// An object being written. Chunks are taken as they come; memory stays bounded by the
/// backend's part size.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<(), ObjectError>;
    /// Makes the object visible under its key.
    async fn finish(self: Box<Self>) -> Result<(), ObjectError>;
    /// Discards everything written so far.
    async fn abort(self: Box<Self>);
}

/// A place to keep uploaded objects.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Starts writing `key`.
    async fn create(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, ObjectError>;

    /// The object's metadata, `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError>;

    /// A reader of the whole object, for streaming it (e.g. to hash it).
    async fn open_read(
        &self,
        key: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, ObjectError>;

    /// The whole object, refusing objects over `max_bytes`.
    async fn read_all(&self, key: &str, max_bytes: u64) -> Result<Bytes, ObjectError>;

    /// Removes the object; removing a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;

    /// Where a client reads the object from, presented as given.
    async fn locate(
        &self,
        key: &str,
        presentation: &Presentation,
        valid_for: Duration,
    ) -> Result<Location, ObjectError>;

    /// A presigned `PUT` of exactly `size` bytes, where the backend has its own (S3);
    /// `None` where the control plane must accept the bytes itself (local disk).
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError>;

    /// Starts a multipart upload into `key`; the store's id of it.
    async fn multipart_create(&self, key: &str, content_type: &str) -> Result<String, ObjectError>;

    /// A presigned `PUT` of part `number` of a multipart upload, of exactly `size` bytes
    /// whose SHA-256 is `sha256` (the store refuses other bytes); `None` where the control
    /// plane takes parts itself ([`ObjectStore::part_writer`], local disk).
    #[allow(clippy::too_many_arguments)]
    async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        size: u64,
        sha256: &[u8; 32],
        valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError>;

    /// A writer of part `number` whose bytes the caller has checked against `sha256`
    /// before finishing it; it replaces an earlier copy of the part. Where parts go
    /// straight to the store (S3), [`ObjectError::Unsupported`].
    async fn part_writer(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
    ) -> Result<Box<dyn ObjectWriter>, ObjectError>;

    /// The parts stored so far, by number.
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<StoredPart>, ObjectError>;

    /// Makes the object of exactly `parts` (all of them, in order) visible under `key`,
    /// once the stored parts are checked against them ([`ObjectError::Parts`]).
    async fn multipart_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartSpec],
    ) -> Result<(), ObjectError>;

    /// Discards a multipart upload and its parts; an unknown one is not an error.
    async fn multipart_abort(&self, key: &str, upload_id: &str) -> Result<(), ObjectError>;

    /// Multipart uploads in progress under `prefix` (for finding abandoned ones), or
    /// [`ObjectError::Unsupported`].
    async fn list_multipart(&self, prefix: &str) -> Result<Vec<ListedMultipart>, ObjectError>;

    /// Up to `limit` objects under `prefix` whose keys come after `after`, in key order.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedObject>, ObjectError>;

    /// A short name for logs and docs: `local` or `s3`.
    fn kind(&self) -> &'static str;
}

/// S3's composite checksum of a multipart object: the SHA-256 of its parts' SHA-256s,
/// in hex, then `-` and the number of parts.
pub fn composite_sha256(parts: &[PartSpec]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.sha256);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), parts.len())
}

/// Checks stored parts against the planned ones: each present, of its size, and of its
/// SHA-256 where the store reports one.
pub fn check_parts(stored: &[StoredPart], planned: &[PartSpec]) -> Result<(), ObjectError> {
    let by_number: std::collections::HashMap<u32, &StoredPart> =
        stored.iter().map(|p| (p.number, p)).collect();
    let missing: Vec<u32> = planned
        .iter()
        .filter(|p| !by_number.contains_key(&p.number))
        .map(|p| p.number)
        .collect();
    if !missing.is_empty() {
        return Err(ObjectError::Parts(PartsProblem::Missing(missing)));
    }
    for part in planned {
        let held = by_number[&part.number];
        if held.size != part.size {
            return Err(ObjectError::Parts(PartsProblem::Size {
                number: part.number,
                expected: part.size,
                stored: held.size,
            }));
        }
        if held.sha256.is_some_and(|sha| sha != part.sha256) {
            return Err(ObjectError::Parts(PartsProblem::Checksum(part.number)));
        }
    }
    Ok(())
}

/// Checks a key: non-empty, relative, of `[A-Za-z0-9._/-]` segments, none `.` or `..`.
/// Keys are made by the control plane, so this guards against its own bugs.
pub fn check_key(key: &str) -> Result<(), ObjectError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(ObjectError::InvalidKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["u/abc", "u/abc/thumb-150.png", "a"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "a/../b", "a//b", "a/./b", "a b", "a\\b", "..", "ü",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
