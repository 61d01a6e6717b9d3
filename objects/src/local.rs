//! The local backend: one file per object under a directory. Writes go to a temporary
//! file in the same directory tree and are renamed into place on finish, so a reader never
//! sees a partial object and a crash leaves only temporary files (removed at open).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::{
    ListedMultipart, ListedObject, Location, ObjectError, ObjectMeta, ObjectStore, ObjectWriter,
    PartSpec, Presentation, PresignedPut, StoredPart, check_key, check_parts,
};

/// Folder (inside the root) for objects being written.
const PARTIAL: &str = ".partial";

/// Folder (inside the root) of multipart uploads: one folder each, named by its id,
/// holding `key` (the object key it completes into) and its parts as
/// `<number>.<sha256 hex>`.
const MULTIPART: &str = ".multipart";

/// The file in a multipart upload's folder that names its object key.
const KEY_FILE: &str = "key";

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// Uses (and creates) `root`; removes partial writes a crash left behind (those
    /// untouched for an hour: another process may share the folder and be writing).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalDir, ObjectError> {
        let root = root.into();
        let partial = root.join(PARTIAL);
        std::fs::create_dir_all(&partial)?;
        std::fs::create_dir_all(root.join(MULTIPART))?;
        let stale = std::time::SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&partial)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < stale);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(LocalDir { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The folder of a multipart upload; its id must be one this store made.
    fn multipart_dir(&self, upload_id: &str) -> Result<PathBuf, ObjectError> {
        let ours = upload_id.len() == 32
            && upload_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ours {
            return Err(ObjectError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        Ok(self.root.join(MULTIPART).join(upload_id))
    }

    fn partial_path(&self, name: &str) -> PathBuf {
        self.root.join(PARTIAL).join(format!(
            "{}-{:016x}",
            name.replace('/', "_"),
            rand::random::<u64>()
        ))
    }
}

/// The parts in a multipart upload's folder.
fn read_parts(dir: &Path) -> Result<Vec<StoredPart>, ObjectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ObjectError::NotFound(dir.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut parts = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some((number, sha)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        let (Ok(number), Ok(sha)) = (number.parse::<u32>(), hex::decode(sha)) else {
            continue;
        };
        let Ok(sha256) = <[u8; 32]>::try_from(sha) else {
            continue;
        };
        parts.push(StoredPart {
            number,
            size: entry.metadata()?.len(),
            sha256: Some(sha256),
        });
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// Concatenates the checked parts into a new file and moves it to `target`; the kernel
/// copies (`copy_file_range`), so no part passes through this process's memory.
fn assemble(
    dir: &Path,
    partial: &Path,
    target: &Path,
    parts: &[PartSpec],
) -> Result<(), ObjectError> {
    check_parts(&read_parts(dir)?, parts)?;
    let result = (|| -> std::io::Result<()> {
        let mut out = std::fs::File::create(partial)?;
        for part in parts {
            let name = format!("{}.{}", part.number, hex::encode(part.sha256));
            let mut source = std::fs::File::open(dir.join(name))?;
            std::io::copy(&mut source, &mut out)?;
        }
        out.sync_data()?;
        drop(out);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(partial, target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(partial);
        return Err(e.into());
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Writes a part: a [`FileWriter`] into the upload's folder that, on finish, removes
/// other copies of the part and refuses an upload aborted meanwhile.
struct PartWriter {
    inner: Box<FileWriter>,
    dir: PathBuf,
    number: u32,
}

#[async_trait]
impl ObjectWriter for PartWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), ObjectError> {
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<(), ObjectError> {
        if tokio::fs::metadata(self.dir.join(KEY_FILE)).await.is_err() {
            self.inner.abort().await;
            return Err(ObjectError::NotFound(self.dir.display().to_string()));
        }
        let keep = self.inner.target.clone();
        self.inner.finish().await?;
        let prefix = format!("{}.", self.number);
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            let earlier = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix));
            if earlier && path != keep {
                let _ = tokio::fs::remove_file(path).await;
            }
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await;
    }
}

/// Lists files under `dir` (recursively) as keys relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<ListedObject>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if let Some(key) = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .filter(|k| check_key(k).is_ok())
        {
            out.push(ListedObject {
                key: key.to_owned(),
                modified: meta.modified()?,
            });
        }
    }
    Ok(())
}

struct FileWriter {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    target: PathBuf,
}

#[async_trait]
impl ObjectWriter for FileWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), ObjectError> {
        match self.file.as_mut() {
            Some(file) => Ok(file.write_all(&chunk).await?),
            None => Err(ObjectError::Io(std::io::Error::other("writer is closed"))),
        }
    }

    async fn finish(mut self: Box<Self>) -> Result<(), ObjectError> {
        let Some(mut file) = self.file.take() else {
            return Err(ObjectError::Io(std::io::Error::other("writer is closed")));
        };
        let result = async {
            file.flush().await?;
            file.sync_data().await?;
            drop(file);
            if let Some(parent) = self.target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&self.partial, &self.target).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.partial).await;
        }
        Ok(result?)
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = tokio::fs::remove_file(&self.partial).await;
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Dropped without finish or abort (e.g. the request was cancelled).
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[async_trait]
impl ObjectStore for LocalDir {
    async fn create(
        &self,
        key: &str,
        _content_type: &str,
    ) -> Result<Box<dyn ObjectWriter>, ObjectError> {
        let target = self.path(key)?;
        let partial = self.partial_path(key);
        let file = tokio::fs::File::create(&partial).await?;
        Ok(Box::new(FileWriter {
            file: Some(file),
            partial,
            target,
        }))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta { size: meta.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open_read(
        &self,
        key: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, ObjectError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ObjectError::NotFound(key.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn read_all(&self, key: &str, max_bytes: u64) -> Result<Bytes, ObjectError> {
        let path = self.path(key)?;
        let meta = self
            .head(key)
            .await?
            .ok_or_else(|| ObjectError::NotFound(key.to_owned()))?;
        if meta.size > max_bytes {
            return Err(ObjectError::TooLarge(max_bytes));
        }
        Ok(Bytes::from(tokio::fs::read(path).await?))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn locate(
        &self,
        key: &str,
        _presentation: &Presentation,
        _valid_for: Duration,
    ) -> Result<Location, ObjectError> {
        let path = self.path(key)?;
        if self.head(key).await?.is_none() {
            return Err(ObjectError::NotFound(key.to_owned()));
        }
        Ok(Location::File(path))
    }

    async fn presign_put(
        &self,
        _key: &str,
        _content_type: &str,
        _size: u64,
        _valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError> {
        Ok(None)
    }

    async fn multipart_create(
        &self,
        key: &str,
        _content_type: &str,
    ) -> Result<String, ObjectError> {
        check_key(key)?;
        let id = hex::encode(rand::random::<[u8; 16]>());
        let dir = self.multipart_dir(&id)?;
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(dir.join(KEY_FILE), key).await?;
        Ok(id)
    }

    async fn presign_part(
        &self,
        _key: &str,
        _upload_id: &str,
        _number: u32,
        _size: u64,
        _sha256: &[u8; 32],
        _valid_for: Duration,
    ) -> Result<Option<PresignedPut>, ObjectError> {
        Ok(None)
    }

    async fn part_writer(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        sha256: &[u8; 32],
    ) -> Result<Box<dyn ObjectWriter>, ObjectError> {
        check_key(key)?;
        let dir = self.multipart_dir(upload_id)?;
        if tokio::fs::metadata(dir.join(KEY_FILE)).await.is_err() {
            return Err(ObjectError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        let partial = self.partial_path(&format!("{upload_id}-{number}"));
        let file = tokio::fs::File::create(&partial).await?;
        Ok(Box::new(PartWriter {
            inner: Box::new(FileWriter {
                file: Some(file),
                partial,
                target: dir.join(format!("{number}.{}", hex::encode(sha256))),
            }),
            dir,
            number,
        }))
    }

    async fn list_parts(
        &self,
        _key: &str,
        upload_id: &str,
    ) -> Result<Vec<StoredPart>, ObjectError> {
        let dir = self.multipart_dir(upload_id)?;
        tokio::task::spawn_blocking(move || read_parts(&dir))
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))?
    }

    async fn multipart_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartSpec],
    ) -> Result<(), ObjectError> {
        let target = self.path(key)?;
        let dir = self.multipart_dir(upload_id)?;
        let partial = self.partial_path(key);
        let parts = parts.to_vec();
        tokio::task::spawn_blocking(move || assemble(&dir, &partial, &target, &parts))
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))?
    }

    async fn multipart_abort(&self, _key: &str, upload_id: &str) -> Result<(), ObjectError> {
        let dir = match self.multipart_dir(upload_id) {
            Ok(dir) => dir,
            Err(ObjectError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match tokio::fs::remove_dir_all(dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list_multipart(&self, prefix: &str) -> Result<Vec<ListedMultipart>, ObjectError> {
        let root = self.root.join(MULTIPART);
        let prefix = prefix.to_owned();
        let list = move || -> std::io::Result<Vec<ListedMultipart>> {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&root)? {
                let entry = entry?;
                let Some(upload_id) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let started = entry.metadata()?.modified()?;
                // A folder without its key file is one whose start was cut short: it is
                // listed under no key, to be removed like any abandoned one.
                let key = std::fs::read_to_string(entry.path().join(KEY_FILE)).unwrap_or_default();
                if key.is_empty() || key.starts_with(&prefix) {
                    out.push(ListedMultipart {
                        key,
                        upload_id,
                        started,
                    });
                }
            }
            Ok(out)
        };
        Ok(tokio::task::spawn_blocking(list)
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))??)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedObject>, ObjectError> {
        // Keys are paths: list the folder the prefix names (its last segment filters).
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        if !folder.is_empty() {
            check_key(folder)?;
        }
        let (root, start) = (self.root.clone(), self.root.join(folder));
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        let list = move || -> std::io::Result<Vec<ListedObject>> {
            let mut all = Vec::new();
            walk(&root, &start, &mut all)?;
            all.retain(|o| {
                o.key.starts_with(&prefix)
                    && !o.key.starts_with('.')
                    && after.as_deref().is_none_or(|a| o.key.as_str() > a)
            });
            all.sort_by(|a, b| a.key.cmp(&b.key));
            all.truncate(limit);
            Ok(all)
        };
        Ok(tokio::task::spawn_blocking(list)
            .await
            .map_err(|e| ObjectError::Io(std::io::Error::other(e)))??)
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

/// The root of a local store, for tests and tools.
impl AsRef<Path> for LocalDir {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_appear_only_when_finished_and_aborts_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::open(dir.path()).unwrap();
        let mut w = store.create("u/one", "text/plain").await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(
            store.head("u/one").await.unwrap(),
            None,
            "not visible before finish"
        );
        w.finish().await.unwrap();
        assert_eq!(
            store.head("u/one").await.unwrap(),
            Some(ObjectMeta { size: 11 })
        );
        assert_eq!(
            &store.read_all("u/one", 100).await.unwrap()[..],
            b"hello world"
        );
        assert!(matches!(
            store.read_all("u/one", 5).await,
            Err(ObjectError::TooLarge(5))
        ));

        let mut w = store.create("u/two", "text/plain").await.unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        w.abort().await;
        let w = store.create("u/three", "text/plain").await.unwrap();
        drop(w);
        assert_eq!(store.head("u/two").await.unwrap(), None);
        let leftovers = std::fs::read_dir(dir.path().join(PARTIAL)).unwrap().count();
        assert_eq!(
            leftovers, 0,
            "aborted and dropped writers leave no partial files"
        );
        store.delete("u/one").await.unwrap();
        store.delete("u/one").await.unwrap();
        assert!(store.create("../escape", "x").await.is_err());
    }
}
