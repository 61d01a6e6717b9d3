//! The capture side: request threads record visits into per-thread shards, folding
//! repeats without copying; the shipper takes the shards' contents as click events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shortlink_core::ClickEvent;

use super::ClickStats;

/// Shards of the capture-side fold: each recording thread has one of its own.
const SHARDS: usize = 16;

/// Hands out home shards to recording threads, in turn.
static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's home shard: a proxy thread records into shard memory no other
    /// thread writes, so clicks do not bounce cache lines between cores.
    static HOME: usize = NEXT_HOME.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Hashes a click identity (already a 128-bit xxh3) by taking its low 64 bits: hashing it
/// again would only cost time.
#[derive(Clone, Copy, Default)]
pub(super) struct IdentityHasher;

impl std::hash::BuildHasher for IdentityHasher {
    type Hasher = TakeLowBits;

    fn build_hasher(&self) -> TakeLowBits {
        TakeLowBits(0)
    }
}

/// The [`IdentityHasher`]'s hasher.
#[derive(Default)]
pub(super) struct TakeLowBits(u64);

impl std::hash::Hasher for TakeLowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here; keep something sensible for anything else.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A shard alone on its cache lines, so two threads' shards never share one.
#[derive(Default)]
#[repr(align(128))]
struct Padded(std::sync::Mutex<Shard>);

/// Clicks held by one shard. A repeated visit touches only its small index entry (its
/// position and count), not the held click, so the index stays in cache.
#[derive(Default)]
struct Shard {
    /// Identity → (position in `held`, clicks so far).
    index: std::collections::HashMap<u128, (u32, u32), IdentityHasher>,
    /// The visits held, in arrival order.
    held: Vec<Held>,
    /// The held visits' header values, back to back.
    bytes: Vec<u8>,
    captured: u64,
}

/// A visit held in a shard, its header values in the shard's `bytes`.
struct Held {
    identity: u128,
    link_id: shortlink_core::LinkId,
    ts_ms: i64,
    ip: Option<std::net::IpAddr>,
    head: bool,
    qr: bool,
    /// User agent, referrer, host, country: (start, length) in `bytes`.
    fields: [Option<(u32, u32)>; 4],
}

/// Header bytes a shard keeps room for between takes; a burst of long headers beyond it
/// is given back.
const KEPT_BYTES: usize = 1 << 20;

/// A redirect's click as its request thread sees it, header values borrowed from the
/// request (already cut to the captured length).
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// The followed link.
    pub link_id: shortlink_core::LinkId,
    /// When, in Unix milliseconds.
    pub ts_ms: i64,
    /// The client's address.
    pub ip: Option<std::net::IpAddr>,
    /// Whether the method was HEAD.
    pub head: bool,
    /// Whether the URL carried the QR marker.
    pub qr: bool,
    /// User agent, referrer, host, country.
    pub fields: [Option<&'a [u8]>; 4],
}

impl Visit<'_> {
    /// The visit's [`click_identity`].
    pub fn identity(&self) -> u128 {
        click_identity(
            self.link_id,
            self.ts_ms,
            self.ip,
            self.head,
            self.qr,
            self.fields,
        )
    }
}

/// A captured header value as text (invalid UTF-8, e.g. a cut character, replaced).
pub(crate) fn captured_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The proxy's end of the click path.
#[derive(Clone)]
pub struct ClickSink {
    shards: Arc<[Padded]>,
    shard_capacity: usize,
    stats: Arc<ClickStats>,
}

/// What makes two clicks the same visit, for folding: link, second, client address,
/// method, QR marker, and the captured header values (user agent, referrer, host, country).
///
/// Each header value present enters as its own 64-bit xxh3, so nothing is copied and the
/// final 128-bit xxh3 runs over a fixed 72 bytes: link, second, address (IPv4 mapped into
/// IPv6), the four value hashes, and a byte of flags (address kind, HEAD, QR, which values
/// are present). Two visits fold only if a value's 64-bit hash collides.
pub fn click_identity(
    link_id: shortlink_core::LinkId,
    ts_ms: i64,
    ip: Option<std::net::IpAddr>,
    head: bool,
    qr: bool,
    fields: [Option<&[u8]>; 4],
) -> u128 {
    let mut buf = [0u8; 72];
    buf[..8].copy_from_slice(&link_id.to_le_bytes());
    buf[8..16].copy_from_slice(&ts_ms.div_euclid(1000).to_le_bytes());
    let (kind, address) = match ip {
        Some(std::net::IpAddr::V4(v4)) => (1, v4.to_ipv6_mapped().octets()),
        Some(std::net::IpAddr::V6(v6)) => (2, v6.octets()),
        None => (0, [0; 16]),
    };
    buf[16..32].copy_from_slice(&address);
    let mut flags = kind | u8::from(head) << 2 | u8::from(qr) << 3;
    for (i, field) in fields.iter().enumerate() {
        if let Some(text) = field {
            flags |= 1 << (4 + i);
            let at = 32 + 8 * i;
            buf[at..at + 8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(text).to_le_bytes());
        }
    }
    buf[64] = flags;
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// The visit a built click was captured from.
#[cfg(test)]
fn visit_of(click: &ClickEvent) -> Visit<'_> {
    Visit {
        link_id: click.link_id,
        ts_ms: click.ts_ms,
        ip: click.ip,
        head: click.head,
        qr: click.qr,
        fields: [
            click.user_agent.as_deref().map(str::as_bytes),
            click.referrer.as_deref().map(str::as_bytes),
            click.host.as_deref().map(str::as_bytes),
            click.country.as_deref().map(str::as_bytes),
        ],
    }
}

/// The identity of a built click (the same as its capture computed).
#[cfg(test)]
fn visit_identity(click: &ClickEvent) -> u128 {
    visit_of(click).identity()
}

impl ClickSink {
    /// A sink holding at most about `capacity` distinct clicks between two takes,
    /// recorded by `threads` threads (each fills its own shard).
    pub(super) fn new(capacity: usize, threads: usize, stats: Arc<ClickStats>) -> ClickSink {
        ClickSink {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            shard_capacity: capacity.div_ceil(threads.clamp(1, SHARDS)).max(1),
            stats,
        }
    }

    /// Records a visit: counted into an identical held one, or held (its header values
    /// copied into the shard's buffer). When its shard is full the click is dropped and
    /// counted. Never waits for I/O, and allocates only while a shard's buffers grow.
    #[inline]
    pub fn record(&self, visit: &Visit) {
        let identity = visit.identity();
        // The thread's home shard first. A shard that is held is skipped, not waited
        // for: when its holder (the shipper taking it, or another thread sharing it) is
        // preempted inside, waiting would stall this redirect for a scheduler slice. The
        // shipper folds identical clicks across shards, so any shard will do.
        let first = HOME.with(|home| *home);
        let mut shard = (0..SHARDS)
            .find_map(|i| match self.shards[(first + i) % SHARDS].0.try_lock() {
                Ok(shard) => Some(shard),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            })
            .unwrap_or_else(|| {
                self.shards[first]
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            });
        let shard = &mut *shard;
        let held = shard.held.len();
        match shard.index.entry(identity) {
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let (_, count) = slot.get_mut();
                *count = count.saturating_add(1);
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                if held >= self.shard_capacity {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                slot.insert((held as u32, 1));
                let bytes = &mut shard.bytes;
                let fields = visit.fields.map(|field| {
                    field.map(|value| {
                        let start = bytes.len() as u32;
                        bytes.extend_from_slice(value);
                        (start, value.len() as u32)
                    })
                });
                shard.held.push(Held {
                    identity,
                    link_id: visit.link_id,
                    ts_ms: visit.ts_ms,
                    ip: visit.ip,
                    head: visit.head,
                    qr: visit.qr,
                    fields,
                });
            }
        }
        shard.captured += 1;
    }

    /// Takes everything the shards hold, as events with identities. The events (and their
    /// strings) are built here, on the taking thread; the shards keep their buffers' room,
    /// so recording threads do not grow them again after each take.
    pub(super) fn take(&self) -> Vec<(u128, ClickEvent)> {
        let mut out = Vec::new();
        let mut captured = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *shard;
            let mut counts = vec![1u32; shard.held.len()];
            for (_, (at, count)) in shard.index.drain() {
                counts[at as usize] = count;
            }
            let bytes = &shard.bytes;
            let text = |field: Option<(u32, u32)>| {
                field.map(|(start, len)| {
                    captured_text(&bytes[start as usize..(start + len) as usize])
                })
            };
            out.reserve(shard.held.len());
            for (held, count) in shard.held.drain(..).zip(counts) {
                let [user_agent, referrer, host, country] = held.fields;
                out.push((
                    held.identity,
                    ClickEvent {
                        link_id: held.link_id,
                        ts_ms: held.ts_ms,
                        ip: held.ip,
                        user_agent: text(user_agent),
                        referrer: text(referrer),
                        host: text(host),
                        country: text(country),
                        head: held.head,
                        qr: held.qr,
                        count,
                    },
                ));
            }
            shard.bytes.clear();
            shard.bytes.shrink_to(KEPT_BYTES);
            captured += std::mem::take(&mut shard.captured);
        }
        self.stats.captured.fetch_add(captured, Ordering::Relaxed);
        out
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<ClickStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::clicks::taker::Coalescer;

    #[test]
    fn identities_tell_visits_apart_and_fold_a_second() {
        let v4 = std::net::IpAddr::from([10, 0, 0, 1]);
        let ua = vec![b'a'; 600];
        let base = || {
            (
                7i64,
                1_700_000_000_500i64,
                Some(v4),
                false,
                false,
                [Some(ua.as_slice()), None, Some(&b"sho.rt"[..]), None],
            )
        };
        let id = |(link, ts, ip, head, qr, fields): (i64, i64, _, bool, bool, _)| {
            click_identity(link, ts, ip, head, qr, fields)
        };
        let same = id(base());
        // The same visit within its second folds.
        let mut later = base();
        later.1 = 1_700_000_000_999;
        assert_eq!(id(later), same);
        // Any other part is another visit.
        let mut variants = Vec::new();
        let mut v = base();
        v.0 = 8;
        variants.push(("link", v));
        let mut v = base();
        v.1 = 1_700_000_001_000;
        variants.push(("second", v));
        let mut v = base();
        v.2 = Some(std::net::IpAddr::from([10, 0, 0, 2]));
        variants.push(("address", v));
        let mut v = base();
        v.2 = Some(std::net::IpAddr::V6(
            std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
        ));
        variants.push(("the same address as IPv6", v));
        let mut v = base();
        v.2 = None;
        variants.push(("no address", v));
        let mut v = base();
        v.3 = true;
        variants.push(("HEAD", v));
        let mut v = base();
        v.4 = true;
        variants.push(("QR", v));
        for i in 0..4 {
            let mut v = base();
            v.5[i] = match v.5[i] {
                Some(_) => None,
                None => Some(b""),
            };
            variants.push(("a value present or not", v));
        }
        let mut v = base();
        v.5[0] = Some(&ua[..599]);
        variants.push(("user agent", v));
        let mut v = base();
        v.5 = [v.5[2], None, v.5[0], None];
        variants.push(("values swapped", v));
        let mut seen = std::collections::HashSet::from([same]);
        for (what, v) in variants {
            assert!(seen.insert(id(v)), "{what} did not change the identity");
        }
    }

    fn click(ts_ms: i64, ua: &str) -> ClickEvent {
        ClickEvent {
            link_id: 7,
            ts_ms,
            ip: Some("198.51.100.4".parse().unwrap()),
            user_agent: Some(ua.into()),
            referrer: None,
            host: Some("sho.rt".into()),
            country: None,
            head: false,
            qr: false,
            count: 1,
        }
    }

    /// A sink whose shards hold `capacity` visits each.
    fn sink(capacity: usize) -> ClickSink {
        ClickSink {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            shard_capacity: capacity,
            stats: Arc::new(ClickStats::default()),
        }
    }

    #[test]
    fn a_held_shard_is_skipped_not_waited_for() {
        let sink = sink(100);
        let clicked = click(1_900_000_000_000, "wrk");
        let (homed, home) = std::sync::mpsc::channel();
        let (go, went) = std::sync::mpsc::channel::<()>();
        let (done, recorded) = std::sync::mpsc::channel();
        let recorder = sink.clone();
        let event = clicked.clone();
        std::thread::spawn(move || {
            homed.send(HOME.with(|home| *home)).unwrap();
            went.recv().unwrap();
            recorder.record(&visit_of(&event));
            done.send(()).unwrap();
        });
        // Hold the recording thread's own shard (as a preempted shipper would).
        let home = home.recv().unwrap();
        let held = sink.shards[home].0.lock().unwrap();
        go.send(()).unwrap();
        recorded
            .recv_timeout(Duration::from_secs(5))
            .expect("record waited for a held shard");
        drop(held);
        assert!(sink.shards[home].0.lock().unwrap().held.is_empty());
        assert!(sink.shards[home].0.lock().unwrap().index.is_empty());
        sink.record(&visit_of(&clicked));
        // The visit is held twice (or folded once, if this thread's shard is the one the
        // other spilled into); the shipper's fold makes it one event of two.
        let taken = sink.take();
        assert_eq!(taken.iter().map(|(_, click)| click.count).sum::<u32>(), 2);
        let mut c = Coalescer::default();
        for (identity, click) in taken {
            c.add(identity, click);
        }
        let events = c.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].count, 2);
        assert_eq!(sink.stats.captured.load(Ordering::Relaxed), 2);
        // The header values came back whole from the shard's buffer.
        assert_eq!(
            ClickEvent {
                count: 1,
                ..events[0].clone()
            },
            clicked
        );
    }

    #[test]
    fn held_visits_come_back_as_events_and_full_shards_drop() {
        let sink = sink(3);
        let mut browser = click(1_900_000_000_000, "Mozilla/5.0 (Android 14; Mobile)");
        browser.referrer = Some("https://news.example/é".into());
        browser.country = Some("DE".into());
        browser.qr = true;
        let mut bare = click(1_900_000_000_100, "curl/8");
        bare.user_agent = None;
        bare.ip = None;
        bare.head = true;
        let third = click(1_900_000_002_000, "wrk");
        let fourth = click(1_900_000_003_000, "wrk");
        for _ in 0..3 {
            sink.record(&visit_of(&browser));
        }
        sink.record(&visit_of(&bare));
        sink.record(&visit_of(&third));
        sink.record(&visit_of(&fourth)); // a fourth visit: the shard holds 3
        sink.record(&visit_of(&browser)); // a held one still counts
        assert_eq!(sink.stats.dropped.load(Ordering::Relaxed), 1);
        let taken = sink.take();
        let events: Vec<ClickEvent> = taken.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(
            events,
            [
                ClickEvent {
                    count: 4,
                    ..browser.clone()
                },
                bare.clone(),
                third.clone()
            ]
        );
        for (identity, event) in &taken {
            assert_eq!(*identity, visit_identity(event));
        }
        assert_eq!(sink.stats.captured.load(Ordering::Relaxed), 6);
        // Taken shards are empty and take new visits (the dropped one, now).
        assert!(sink.take().is_empty());
        sink.record(&visit_of(&fourth));
        assert_eq!(sink.take().len(), 1);
    }

    #[test]
    fn identical_clicks_in_a_second_fold_into_one_event() {
        let mut c = Coalescer::default();
        for ms in 0..100 {
            let clicked = click(1_900_000_000_000 + ms, "wrk");
            c.add(visit_identity(&clicked), clicked);
        }
        let curl = click(1_900_000_000_500, "curl"); // another agent
        c.add(visit_identity(&curl), curl);
        let later = click(1_900_000_001_000, "wrk"); // the next second
        c.add(visit_identity(&later), later);
        let mut head = click(1_900_000_000_001, "wrk");
        head.head = true; // another method
        c.add(visit_identity(&head), head);
        let events = c.take();
        assert_eq!(events.iter().map(|e| e.count).sum::<u32>(), 103);
        let counts: Vec<_> = events.iter().map(|e| (e.count, e.ts_ms)).collect();
        assert_eq!(
            counts,
            [
                (100, 1_900_000_000_000),
                (1, 1_900_000_000_500),
                (1, 1_900_000_001_000),
                (1, 1_900_000_000_001)
            ]
        );
        assert!(c.is_empty());
        // The count travels on the wire as "n", and 1 is left out.
        let json = serde_json::to_string(&events[0]).unwrap();
        assert!(json.contains(r#""n":100"#), "{json}");
        assert!(
            !serde_json::to_string(&events[1])
                .unwrap()
                .contains(r#""n""#)
        );
        let back: ClickEvent =
            serde_json::from_str(&serde_json::to_string(&events[1]).unwrap()).unwrap();
        assert_eq!(back.count, 1);
    }
}
