//! The on-disk spool of batches no control plane took yet: bounded, oldest first.

use std::collections::VecDeque;
use std::path::PathBuf;

use shortlink_core::ClickBatch;
use tracing::{info, warn};

/// The on-disk spool: one JSON file per batch, named by a sequence number.
pub(super) struct Spool {
    dir: PathBuf,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    max_bytes: u64,
    next_seq: u64,
}

impl Spool {
    pub(super) fn open(dir: PathBuf, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(&dir)?;
        let mut files: Vec<(u64, PathBuf, u64)> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
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
        // Write then rename, so a crash never leaves a half-written batch under a real name.
        let written = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            warn!(%error, "cannot write to the click spool; dropping a batch");
            return false;
        }
        self.next_seq += 1;
        self.bytes += size;
        self.files.push_back((path, size));
        true
    }

    pub(super) fn oldest(&self) -> Option<ClickBatch> {
        let (path, _) = self.files.front()?;
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(super) fn pop(&mut self) {
        if let Some((path, size)) = self.files.pop_front() {
            let _ = std::fs::remove_file(path);
            self.bytes -= size;
        }
    }
}
