//! The local backend: one file per object under a directory. Writes go to a temporary
//! file in the same directory tree and are renamed into place on finish, so a reader never
//! sees a partial object and a crash leaves only temporary files (removed at open).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::{
    Location, ObjectError, ObjectMeta, ObjectStore, ObjectWriter, Presentation, PresignedPut,
    check_key,
};

/// Folder (inside the root) for objects being written.
const PARTIAL: &str = ".partial";

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
        let partial = self.root.join(PARTIAL).join(format!(
            "{}-{:016x}",
            key.replace('/', "_"),
            rand::random::<u64>()
        ));
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
