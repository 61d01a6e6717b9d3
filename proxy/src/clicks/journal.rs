//! The click journal: every take of clicks is appended to the file of the batch it goes
//! into (`<spool_dir>/journal/<seq>.<batch id>.journal`) before it is batched; once the
//! batch is delivered or spooled, its file is removed. So a crash of the process loses
//! only the clicks not yet taken (one take interval: the page cache outlives the
//! process), and a power loss at most what was appended since the last `fdatasync` (a
//! second).
//!
//! On start, the batches an earlier process left in the journal go to the spool under
//! their ids: one delivered just before a crash is applied once however often it arrives
//! (ingestion records batch ids), so nothing is counted twice.
//!
//! A record is `len: u32 LE`, `xxh3(payload): u64 LE`, and the payload, the JSON clicks of
//! one take. A record that does not check out ends its file (a write torn by a power loss);
//! the file is then copied to `<spool_dir>/quarantine/` and reported, not dropped unseen.
//! Each process has a journal of its own (see `claim.rs`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shortlink_core::{ClickBatch, ClickEvent};

/// Longest time appended clicks wait for an `fdatasync`.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// A record longer than this is damage, not a record.
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 12;
const SUFFIX: &str = ".journal";

/// The journal folder.
pub(super) struct Journal {
    dir: PathBuf,
    next_seq: u64,
}

/// What an earlier process left in the journal.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// Its batches, oldest first, each with the file it came from.
    pub(super) batches: Vec<(ClickBatch, PathBuf)>,
    /// Copies of files that ended in a damaged record.
    pub(super) quarantined: Vec<PathBuf>,
}

/// The journal file of the batch being formed, open for appending.
pub(super) struct BatchFile {
    path: PathBuf,
    file: File,
    /// When the oldest append not yet synced was made.
    unsynced_since: Option<Instant>,
}

impl Journal {
    /// Opens (creating) the journal folder `dir` and reads the batches it holds (a damaged
    /// file is copied to `<root>/quarantine/`). The caller puts them somewhere durable,
    /// then removes their files.
    pub(super) fn open(dir: PathBuf, root: &Path) -> io::Result<(Journal, Recovered)> {
        std::fs::create_dir_all(&dir)?;
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let parsed = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.split_once('.'))
                .and_then(|(seq, id)| Some((seq.parse::<u64>().ok()?, id.to_owned())));
            if let Some((seq, id)) = parsed {
                files.push((seq, id, path));
            }
        }
        files.sort();
        let next_seq = files.last().map_or(0, |f| f.0 + 1);
        let mut recovered = Recovered::default();
        for (_, batch_id, path) in files {
            let bytes = std::fs::read(&path)?;
            let (clicks, damaged) = parse(&bytes);
            if damaged {
                recovered.quarantined.push(quarantine(root, &path)?);
            }
            recovered
                .batches
                .push((ClickBatch { batch_id, clicks }, path));
        }
        Ok((Journal { dir, next_seq }, recovered))
    }

    /// A new, empty file for batch `batch_id`.
    pub(super) fn create(&mut self, batch_id: &str) -> io::Result<BatchFile> {
        let path = self
            .dir
            .join(format!("{:020}.{batch_id}{SUFFIX}", self.next_seq));
        self.next_seq += 1;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        Ok(BatchFile {
            path,
            file,
            unsynced_since: None,
        })
    }
}

impl BatchFile {
    /// Appends the clicks of one take; syncs once the oldest unsynced append is a second
    /// old.
    pub(super) fn append(&mut self, clicks: &[ClickEvent]) -> io::Result<()> {
        if clicks.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_vec(clicks).map_err(io::Error::other)?;
        let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        self.file.write_all(&record)?;
        let since = *self.unsynced_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs what was appended.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced_since.take().is_some() {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The file's path (removed once its batch is delivered or spooled).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// The clicks in a file's `bytes`, and whether a damaged record ended them.
fn parse(mut bytes: &[u8]) -> (Vec<ClickEvent>, bool) {
    let mut clicks = Vec::new();
    while !bytes.is_empty() {
        match next_record(&mut bytes) {
            Some(take) => clicks.extend(take),
            None => return (clicks, true),
        }
    }
    (clicks, false)
}

fn next_record(bytes: &mut &[u8]) -> Option<Vec<ClickEvent>> {
    let header = bytes.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    if xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return None;
    }
    let clicks = serde_json::from_slice(payload).ok()?;
    *bytes = &bytes[HEADER + len..];
    Some(clicks)
}

/// Copies a damaged file into `<dir>/quarantine/` (its name and the time), returning where.
pub(super) fn quarantine(dir: &Path, damaged: &Path) -> io::Result<PathBuf> {
    let aside = dir.join("quarantine");
    std::fs::create_dir_all(&aside)?;
    let name = damaged
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let to = aside.join(format!("{name}.{stamp}"));
    std::fs::copy(damaged, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(link: i64, ms: i64) -> ClickEvent {
        ClickEvent {
            link_id: link,
            ts_ms: ms,
            ip: None,
            user_agent: Some("ua".into()),
            referrer: None,
            host: None,
            country: None,
            head: false,
            qr: false,
            count: 2,
        }
    }

    #[test]
    fn batches_come_back_in_order_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("journal");
        {
            let (mut journal, recovered) = Journal::open(folder.clone(), dir.path()).unwrap();
            assert!(recovered.batches.is_empty());
            let mut a = journal.create("a").unwrap();
            a.append(&[click(1, 10), click(2, 20)]).unwrap();
            a.append(&[click(3, 30)]).unwrap();
            let mut b = journal.create("b").unwrap();
            b.append(&[click(4, 40)]).unwrap();
            // Dropped without a sync: a process crash keeps what was written.
        }
        let (mut journal, recovered) = Journal::open(folder.clone(), dir.path()).unwrap();
        assert!(recovered.quarantined.is_empty());
        let ids: Vec<_> = recovered
            .batches
            .iter()
            .map(|(b, _)| b.batch_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            recovered.batches[0].0.clicks,
            [click(1, 10), click(2, 20), click(3, 30)]
        );
        assert_eq!(recovered.batches[1].0.clicks, [click(4, 40)]);
        // A new file sorts after the recovered ones.
        let c = journal.create("c").unwrap();
        assert!(c.path() > recovered.batches[1].1.as_path());
    }

    #[test]
    fn a_torn_record_ends_its_file_and_the_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("journal");
        let (mut journal, _) = Journal::open(folder.clone(), dir.path()).unwrap();
        let mut a = journal.create("a").unwrap();
        a.append(&[click(1, 10)]).unwrap();
        a.append(&[click(2, 20)]).unwrap();
        let path = a.path().to_owned();
        drop(a);
        // The second record loses its last bytes, as a power loss may leave it.
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let (_, recovered) = Journal::open(folder, dir.path()).unwrap();
        assert_eq!(recovered.batches.len(), 1);
        assert_eq!(
            recovered.batches[0].0.clicks,
            [click(1, 10)],
            "the intact record"
        );
        let aside = &recovered.quarantined[0];
        assert!(aside.starts_with(dir.path().join("quarantine")));
        assert_eq!(std::fs::metadata(aside).unwrap().len(), len - 3);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("journal");
        let (mut journal, _) = Journal::open(folder.clone(), dir.path()).unwrap();
        let mut a = journal.create("a").unwrap();
        a.append(&[click(1, 10)]).unwrap();
        let path = a.path().to_owned();
        drop(a);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let (_, recovered) = Journal::open(folder, dir.path()).unwrap();
        assert!(recovered.batches[0].0.clicks.is_empty());
        assert_eq!(recovered.quarantined.len(), 1);
    }
}
