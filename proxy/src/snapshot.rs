//! The route table saved to a local file, so a restarting proxy is ready in the time it
//! takes to read the file, then follows the change feed from the position it was saved at.
//!
//! A snapshot is trusted only as far as it can be checked: its checksum covers every byte,
//! it names the store it was read from (a tag derived from the store's installation id),
//! and its feed position must not be ahead of the store's. The feed then replays every
//! change since; a feed that no longer reaches back that far makes the sync reload every
//! route ([`crate::sync::RouteSync`]). Keys are hashes under the table's seed, so the seed
//! is saved too and a restarting proxy hashes with it: the file is written owner-only.
//!
//! Layout, little-endian: the magic `SLROUTES`, a format version (u32), the header's
//! fields (seed, store tag, position, saved-at Unix ms, route count), then each route
//! (first key word u64, flags u8, packed length u32, the packed route, then the targeting
//! rules as JSON and the fallback URL, each as length u32 and bytes when its flag is set),
//! then the xxh3 of everything before it (u64).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use http::HeaderValue;
use shortlink_core::Targeting;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64_with_seed};

use crate::routes::{RouteTable, SavedRoute};

const MAGIC: &[u8; 8] = b"SLROUTES";
const VERSION: u32 = 1;
const HAS_TARGETING: u8 = 1;
const HAS_FALLBACK: u8 = 2;
/// The largest packed route, targeting or fallback a snapshot may hold (a URL is at most
/// a few KiB; this only bounds what a damaged file can make us allocate).
const MAX_FIELD: u32 = 1 << 20;
const BUFFER: usize = 1 << 20;

/// Why a snapshot was not saved or not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed (including a file that ends early).
    #[error("route snapshot {0}: {1}")]
    Io(PathBuf, #[source] io::Error),
    /// The file is not a snapshot of this format.
    #[error("route snapshot {0} is not a snapshot of format {VERSION}")]
    Format(PathBuf),
    /// The file's contents do not match its checksum or hold a malformed route.
    #[error("route snapshot {0} is damaged: {1}")]
    Damaged(PathBuf, &'static str),
}

/// What a snapshot says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The seed its keys were hashed with.
    pub seed: u64,
    /// The tag of the store it was read from ([`store_tag`]).
    pub store: u64,
    /// The feed position the saved table reflects (later changes may be in it too).
    pub position: u64,
    /// Unix milliseconds when it was saved.
    pub saved_ms: i64,
    /// How many routes it holds.
    pub routes: u64,
}

/// The tag saved for a store: a hash of its installation id, which is secret and never
/// written.
pub fn store_tag(installation_id: u64) -> u64 {
    xxh3_64_with_seed(b"shortlink route snapshot", installation_id)
}

/// Reads only the header of the snapshot at `path` (its checksum is checked on restore).
pub fn read_header(path: &Path) -> Result<Header, SnapshotError> {
    let file = File::open(path).map_err(|e| SnapshotError::Io(path.to_owned(), e))?;
    let mut reader = Checked::new(BufReader::new(file));
    read_header_from(&mut reader, path)
}

/// Saves `table` to `path` as reflecting feed `position` of the store tagged `store`:
/// written to a temporary file, synced, then renamed over the old snapshot, so a reader
/// sees the old or the new one whole. Returns the header written (its route count is the
/// number saved) and the file's size.
pub fn save(
    table: &RouteTable,
    path: &Path,
    store: u64,
    position: u64,
) -> Result<(Header, u64), SnapshotError> {
    let temporary = path.with_extension("partial");
    let saved = write_snapshot(table, path, &temporary, store, position);
    if saved.is_err() {
        // A full disk or a failed sync leaves no half file behind.
        let _ = std::fs::remove_file(&temporary);
    }
    saved
}

fn write_snapshot(
    table: &RouteTable,
    path: &Path,
    temporary: &Path,
    store: u64,
    position: u64,
) -> Result<(Header, u64), SnapshotError> {
    let io = |e| SnapshotError::Io(path.to_owned(), e);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(temporary)
            .map_err(io)?
    };
    let mut out = Checked::new(BufWriter::with_capacity(BUFFER, file));
    let mut header = Header {
        seed: table.seed(),
        store,
        position,
        saved_ms: shortlink_core::time_util::now_unix_ms(),
        // Known only once the walk ends (the table changes while it is walked): the
        // count is written after the routes, and checked on restore.
        routes: 0,
    };
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    for word in [header.seed, header.store, header.position] {
        out.write_all(&word.to_le_bytes()).map_err(io)?;
    }
    out.write_all(&header.saved_ms.to_le_bytes()).map_err(io)?;
    header.routes = table
        .save_each(|route| write_route(&mut out, &route))
        .map_err(io)?;
    // The end marker: a route whose packed length is zero, then the count.
    out.write_all(&0u64.to_le_bytes()).map_err(io)?;
    out.write_all(&[0]).map_err(io)?;
    out.write_all(&0u32.to_le_bytes()).map_err(io)?;
    out.write_all(&header.routes.to_le_bytes()).map_err(io)?;
    let checksum = out.hash.digest();
    let mut writer = out.inner;
    writer.write_all(&checksum.to_le_bytes()).map_err(io)?;
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    std::fs::rename(temporary, path).map_err(io)?;
    Ok((header, size))
}

/// Adds the routes of the snapshot at `path` to `table`, whose seed must be the
/// snapshot's. Routes are added as they are read: on a damaged file the caller reloads
/// every route from the store, pruning.
pub fn restore(table: &RouteTable, path: &Path) -> Result<Header, SnapshotError> {
    let io = |e| SnapshotError::Io(path.to_owned(), e);
    let damaged = |why| SnapshotError::Damaged(path.to_owned(), why);
    let file = File::open(path).map_err(io)?;
    let mut input = Checked::new(BufReader::with_capacity(BUFFER, file));
    let mut header = read_header_from(&mut input, path)?;
    if header.seed != table.seed() {
        return Err(damaged("its seed is not the table's"));
    }
    let mut restored = 0u64;
    loop {
        let first = input.u64().map_err(io)?;
        let flags = input.byte().map_err(io)?;
        let packed = input.read_field().map_err(io)?;
        if packed.is_empty() {
            break;
        }
        let targeting = if flags & HAS_TARGETING != 0 {
            let json = input.read_field().map_err(io)?;
            Some(
                serde_json::from_slice::<Targeting>(&json)
                    .map_err(|_| damaged("a route's targeting rules are not readable"))?,
            )
        } else {
            None
        };
        let fallback = if flags & HAS_FALLBACK != 0 {
            let bytes = input.read_field().map_err(io)?;
            Some(
                HeaderValue::from_bytes(&bytes)
                    .map_err(|_| damaged("a route's fallback URL is not a header value"))?,
            )
        } else {
            None
        };
        if !table.restore(first, packed.into_boxed_slice(), targeting, fallback) {
            return Err(damaged("a route is malformed"));
        }
        restored += 1;
    }
    header.routes = input.u64().map_err(io)?;
    let expected = input.hash.digest();
    let mut stored = [0u8; 8];
    input.inner.read_exact(&mut stored).map_err(io)?;
    if u64::from_le_bytes(stored) != expected {
        return Err(damaged("its checksum does not match"));
    }
    if restored != header.routes {
        return Err(damaged("its route count does not match"));
    }
    Ok(header)
}

fn read_header_from<R: Read>(input: &mut Checked<R>, path: &Path) -> Result<Header, SnapshotError> {
    let mut magic = [0u8; 8];
    let mut version = [0u8; 4];
    let format = |_| SnapshotError::Format(path.to_owned());
    input.read_exact(&mut magic).map_err(format)?;
    input.read_exact(&mut version).map_err(format)?;
    if &magic != MAGIC || u32::from_le_bytes(version) != VERSION {
        return Err(SnapshotError::Format(path.to_owned()));
    }
    let io = |e| SnapshotError::Io(path.to_owned(), e);
    Ok(Header {
        seed: input.u64().map_err(io)?,
        store: input.u64().map_err(io)?,
        position: input.u64().map_err(io)?,
        saved_ms: input.u64().map_err(io)? as i64,
        routes: 0,
    })
}

fn write_route<W: Write>(out: &mut Checked<W>, route: &SavedRoute<'_>) -> io::Result<()> {
    let targeting = route
        .targeting
        .as_ref()
        .map(serde_json::to_vec)
        .transpose()
        .map_err(io::Error::other)?;
    let mut flags = 0;
    if targeting.is_some() {
        flags |= HAS_TARGETING;
    }
    if route.fallback.is_some() {
        flags |= HAS_FALLBACK;
    }
    out.write_all(&route.first.to_le_bytes())?;
    out.write_all(&[flags])?;
    out.write_field(route.packed)?;
    if let Some(json) = &targeting {
        out.write_field(json)?;
    }
    if let Some(fallback) = &route.fallback {
        out.write_field(fallback.as_bytes())?;
    }
    Ok(())
}

/// A reader or writer that hashes every byte passing through it.
struct Checked<T> {
    inner: T,
    hash: Xxh3Default,
}

impl<T> Checked<T> {
    fn new(inner: T) -> Checked<T> {
        Checked {
            inner,
            hash: Xxh3Default::new(),
        }
    }
}

impl<R: Read> Checked<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hash.update(buf);
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut word = [0u8; 8];
        self.read_exact(&mut word)?;
        Ok(u64::from_le_bytes(word))
    }

    /// A length-prefixed field (at most [`MAX_FIELD`] bytes).
    fn read_field(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FIELD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a field is longer than any route",
            ));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }
}

impl<W: Write> Checked<W> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }

    fn write_field(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&len| len <= MAX_FIELD)
            .ok_or_else(|| io::Error::other("a field is longer than any route"))?;
        self.write_all(&len.to_le_bytes())?;
        self.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shortlink_core::{Link, NewLink, ShortCode};

    use super::*;
    use crate::routes::Resolution;

    fn link(id: i64, code: &str) -> Link {
        NewLink {
            code: ShortCode::from_stored(code.into()),
            ..NewLink::new(1, format!("https://example.com/{code}"))
        }
        .into_link(id, 0)
    }

    fn table(seed: u64) -> RouteTable {
        RouteTable::with_seed(Duration::from_secs(1), 10, seed)
    }

    fn location(table: &RouteTable, code: &str) -> Option<String> {
        match table.resolve(table.key("", code), 0) {
            Resolution::Redirect { location, .. } => Some(location.to_str().unwrap().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn a_saved_table_comes_back_whole_except_capped_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.snapshot");
        let saved = table(7);
        for i in 0..1000 {
            saved.upsert(&link(i + 1, &format!("c{i}")));
        }
        let mut fallback = link(2000, "fallback");
        fallback.fallback_url = Some("https://example.com/gone".into());
        fallback.disabled = true;
        saved.upsert(&fallback);
        let mut capped = link(2001, "capped");
        capped.max_clicks = Some(5);
        saved.upsert(&capped);
        let (header, size) = save(&saved, &path, store_tag(42), 99).unwrap();
        assert_eq!(header.routes, 1001, "every route but the capped one");
        assert!(size > 1000 * 40);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the seed is readable by the owner only"
            );
        }
        assert_eq!(read_header(&path).unwrap().seed, 7);

        let restored = table(7);
        let header = restore(&restored, &path).unwrap();
        assert_eq!(
            (header.position, header.store, header.routes),
            (99, store_tag(42), 1001)
        );
        assert_eq!(restored.len(), 1001);
        assert_eq!(
            location(&restored, "c500").as_deref(),
            Some("https://example.com/c500")
        );
        assert_eq!(
            restored.fallback(restored.key("", "fallback")),
            Some(HeaderValue::from_static("https://example.com/gone"))
        );
        assert_eq!(
            restored.resolve(restored.key("", "capped"), 0),
            Resolution::Miss,
            "a capped link is read through for its count"
        );
    }

    #[test]
    fn a_failed_save_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the snapshot goes: the final rename fails.
        let path = dir.path().join("routes.snapshot");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("in-the-way"), b"x").unwrap();
        let saved = table(7);
        saved.upsert(&link(1, "c1"));
        assert!(matches!(
            save(&saved, &path, 1, 1),
            Err(SnapshotError::Io(..))
        ));
        assert!(!path.with_extension("partial").exists());
    }

    #[test]
    fn a_damaged_or_foreign_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.snapshot");
        let saved = table(7);
        for i in 0..100 {
            saved.upsert(&link(i + 1, &format!("c{i}")));
        }
        save(&saved, &path, 1, 5).unwrap();
        assert!(matches!(
            restore(&table(8), &path),
            Err(SnapshotError::Damaged(_, "its seed is not the table's"))
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            restore(&table(7), &path),
            Err(SnapshotError::Damaged(..) | SnapshotError::Io(..))
        ));
        bytes[middle] ^= 0x40;
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            restore(&table(7), &path),
            Err(SnapshotError::Io(..))
        ));
        std::fs::write(&path, b"not a snapshot at all").unwrap();
        assert!(matches!(read_header(&path), Err(SnapshotError::Format(_))));
    }
}
