//! The on-disk spool of batches no control plane took yet: bounded, oldest first. A
//! batch is written to a temporary file, synced, renamed into place and the folder synced,
//! so a spooled batch survives a power loss whole or not at all. A file that cannot be
//! read back is moved to `quarantine/` and reported, never dropped unseen.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

use shortlink_core::ClickBatch;
use tracing::{info, warn};

/// The batch files in `dir` (sequence, path, size), oldest first.
fn batch_files(dir: &std::path::Path) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".batch.json"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path, entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// The spool's oldest entry.
pub(super) enum Oldest {
    /// Nothing is spooled.
    Empty,
    /// The oldest batch.
    Batch(ClickBatch),
    /// The oldest file could not be read back (`why`); it was moved aside to `kept` (or
    /// moving it failed) and left the spool.
    Damaged {
        why: String,
        kept: std::io::Result<PathBuf>,
    },
}

/// The on-disk spool: one JSON file per batch, named by a sequence number.
pub(super) struct Spool {
    dir: PathBuf,
    /// Holds `quarantine/`.
    root: PathBuf,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    max_bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// Opens the spool in `dir` (a damaged batch is moved to `<root>/quarantine/`).
    pub(super) fn open(dir: PathBuf, root: PathBuf, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(&dir)?;
        let files = batch_files(&dir)?;
        let next_seq = files.last().map_or(0, |f| f.0 + 1);
        let bytes = files.iter().map(|f| f.2).sum();
        if !files.is_empty() {
            info!(
                batches = files.len(),
                bytes, "found spooled click batches; will replay them"
            );
        }
        Ok(Spool {
            dir,
            root,
            files: files.into_iter().map(|(_, p, n)| (p, n)).collect(),
            bytes,
            max_bytes,
            next_seq,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes a batch; false if the spool is full or the write failed.
    pub(super) fn push(&mut self, batch: &ClickBatch) -> bool {
        let Ok(body) = serde_json::to_vec(batch) else {
            return false;
        };
        let size = body.len() as u64;
        if self.bytes + size > self.max_bytes {
            warn!(
                clicks = batch.clicks.len(),
                "click spool is full; dropping a batch"
            );
            return false;
        }
        let path = self.dir.join(format!("{:020}.batch.json", self.next_seq));
        let tmp = path.with_extension("tmp");
        // Written and synced, then renamed, then the folder synced: a crash or a power loss
        // never leaves a half-written batch under a real name, nor loses a spooled one.
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&body)?;
            file.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(error) = written {
            warn!(%error, "cannot write to the click spool; dropping a batch");
            return false;
        }
        self.next_seq += 1;
        self.bytes += size;
        self.files.push_back((path, size));
        true
    }

    /// The oldest batch. One that cannot be read back is moved to `quarantine/` (and
    /// leaves the spool), and where it went is returned instead.
    pub(super) fn oldest(&mut self) -> Oldest {
        let Some((path, _)) = self.files.front() else {
            return Oldest::Empty;
        };
        let read = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
        match read {
            Ok(batch) => Oldest::Batch(batch),
            Err(why) => {
                let path = path.clone();
                let kept = super::journal::quarantine(&self.root, &path);
                self.pop();
                Oldest::Damaged { why, kept }
            }
        }
    }

    /// Moves the batches spooled in `from` (another process's spool, or an older
    /// layout's) behind this spool's, oldest first; returns how many.
    pub(super) fn adopt(&mut self, from: &std::path::Path) -> std::io::Result<usize> {
        let files = batch_files(from)?;
        for (_, path, size) in &files {
            let to = self.dir.join(format!("{:020}.batch.json", self.next_seq));
            std::fs::rename(path, &to)?;
            self.next_seq += 1;
            self.bytes += size;
            self.files.push_back((to, *size));
        }
        Ok(files.len())
    }

    pub(super) fn pop(&mut self) {
        if let Some((path, size)) = self.files.pop_front() {
            let _ = std::fs::remove_file(path);
            self.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> ClickBatch {
        ClickBatch {
            batch_id: id.into(),
            clicks: vec![],
        }
    }

    #[test]
    fn a_damaged_batch_is_kept_aside_and_the_next_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().to_owned();
        let mut spool = Spool::open(folder.clone(), folder.clone(), 1 << 20).unwrap();
        assert!(spool.push(&batch("a")) && spool.push(&batch("b")));
        let first = spool.files.front().unwrap().0.clone();
        std::fs::write(&first, b"{\"batch_id\": \"a\", \"cli").unwrap();
        // Reopened, as after a crash: both files are found; the damaged one is kept aside.
        let mut spool = Spool::open(folder.clone(), folder.clone(), 1 << 20).unwrap();
        match spool.oldest() {
            Oldest::Damaged { kept, .. } => {
                let kept = kept.unwrap();
                assert!(kept.starts_with(folder.join("quarantine")));
                assert_eq!(std::fs::read(kept).unwrap(), b"{\"batch_id\": \"a\", \"cli");
            }
            _ => panic!("the damaged batch is reported"),
        }
        match spool.oldest() {
            Oldest::Batch(b) => assert_eq!(b.batch_id, "b"),
            _ => panic!("the next batch is read"),
        }
        spool.pop();
        assert!(matches!(spool.oldest(), Oldest::Empty));
    }
}
