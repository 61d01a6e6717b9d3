//! Which process owns which click files. Each process journals and spools into a folder
//! of its own under the spool folder (`<pid>-<nonce>/`), locked (`flock`) for as long as
//! it runs. Processes may share a spool folder (during an upgrade the old and the new
//! process run side by side), so none touches another's live files. At start, a process
//! adopts the folders whose lock it can take: their owner is gone (crashed, killed or
//! stopped), and what they hold is delivered by the adopter.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

const LOCK: &str = "lock";

/// This process's folder, locked while this value lives.
pub(super) struct Owned {
    pub(super) dir: PathBuf,
    _lock: File,
}

/// A folder whose owner is gone, locked by this process while this value lives.
pub(super) struct Orphan {
    pub(super) dir: PathBuf,
    _lock: File,
}

/// Creates and locks this process's folder under `root`.
pub(super) fn own(root: &Path) -> io::Result<Owned> {
    let dir = root.join(format!(
        "{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let lock = lock_file(&dir)?;
    lock.try_lock().map_err(|e| match e {
        TryLockError::Error(e) => e,
        TryLockError::WouldBlock => io::Error::other("a fresh folder is locked already"),
    })?;
    Ok(Owned { dir, _lock: lock })
}

/// The folders under `root` other than `own` whose lock can be taken.
pub(super) fn orphans(root: &Path, own: &Path) -> io::Result<Vec<Orphan>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let dir = entry?.path();
        if dir == own || !dir.join(LOCK).is_file() {
            continue; // not an owned folder (quarantine/, the spool's own files)
        }
        let lock = lock_file(&dir)?;
        match lock.try_lock() {
            Ok(()) => found.push(Orphan { dir, _lock: lock }),
            Err(TryLockError::WouldBlock) => {} // its process runs
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(found)
}

fn lock_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owner_keeps_its_folder_and_a_gone_one_leaves_it_to_adopt() {
        let root = tempfile::tempdir().unwrap();
        let first = own(root.path()).unwrap();
        let second = own(root.path()).unwrap();
        assert_ne!(first.dir, second.dir);
        assert!(
            orphans(root.path(), &second.dir).unwrap().is_empty(),
            "the first owner is alive: its folder is not an orphan"
        );
        let gone = first.dir.clone();
        drop(first); // its process ended: the lock is released
        let found = orphans(root.path(), &second.dir).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dir, gone);
        assert!(
            orphans(root.path(), &second.dir).unwrap().is_empty(),
            "an orphan being adopted is locked by its adopter"
        );
    }
}
