//! The in-memory route table the redirect hot path reads.
//!
//! Keys are 128-bit xxh3 hashes of (domain, code) with a random per-process seed, so a
//! lookup hashes the request's bytes once and allocates nothing; with 128 bits an
//! accidental collision among even billions of codes is far less likely than a memory
//! error, and the random seed keeps collisions from being constructed. The map is keyed
//! by the hash's first word and each entry is one heap allocation holding the second
//! word, the packed route and its URL: a 24-byte slot is what keeps ten million links
//! under 1.5 GiB. Two routes whose first words collide cannot both be
//! in the map; the one left out is a miss here and is served by the store (read-through).

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderValue;
use shortlink_core::{DeviceClass, Link, LinkId, RedirectStatus, RouteState, Targeting};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::budget::{Lease, Take};

/// A route's key: the 128-bit hash of its (domain, code), as two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey(u64, u64);

impl Hash for RouteKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniform: one word is a fine table hash; equality checks both (the side
        // maps hold whole keys).
        state.write_u64(self.0);
    }
}

/// Passes the key's already-uniform word through as the table hash.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `RouteKey` is hashed here (through `write_u64`); this keeps the hasher total.
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(buf);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

type KeyBuildHasher = BuildHasherDefault<KeyHasher>;

/// Byte offsets inside a packed route. The first word is the key's second half (the map
/// is keyed by the first).
const AT_CHECK: usize = 0;
const AT_LINK_ID: usize = 8;
const AT_EXPIRES: usize = 16;
const AT_MAX_CLICKS: usize = 20;
const AT_STATUS: usize = 24;
const AT_DISABLED: usize = 25;
const AT_FLAGS: usize = 26;
const AT_URL: usize = 27;

/// Flag: the link has a password; the control plane answers it.
const PROTECTED: u8 = 1;
/// Flag: the link has targeting rules, kept beside the table in `RouteTable::targeting`.
const TARGETED: u8 = 2;

/// One route packed into a single heap allocation: the key's second word, link id, expiry
/// (Unix seconds, 0 = never), click limit (0 = none), status, disabled flag, option flags,
/// then the target URL.
///
/// A table slot is then the key's first word and this boxed slice, 24 bytes (with the
/// whole key it was 32), and the second word takes allocator size-class slack (a 27-byte
/// header and an 80-byte URL still fit mimalloc's 112-byte class): that is what keeps ten
/// million links under 1.5 GiB.
#[derive(Debug)]
pub struct RouteEntry(Box<[u8]>);

/// What the table says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Redirect with this status and `Location`.
    Redirect {
        /// The link that was followed.
        link_id: LinkId,
        /// Redirect status.
        status: RedirectStatus,
        /// The `Location` header value.
        location: HeaderValue,
        /// Whether the link has targeting rules (see [`RouteTable::targeted_location`]).
        targeted: bool,
    },
    /// A password-protected link: the control plane answers (password page, cookie).
    Protected,
    /// The link exists but does not redirect now (expired, disabled, used up).
    Gone(RouteState),
    /// A capped link whose lease holds no clicks: the store's budget may
    /// ([`crate::budget::Budgets::refill`]).
    Unleased,
    /// The table has no such route.
    Miss,
}

/// A redirect as [`RouteTable::resolve_with`] lends it: the `Location` is the table's.
#[derive(Debug, Clone, Copy)]
pub struct RedirectRef<'a> {
    /// The link that was followed.
    pub link_id: LinkId,
    /// Redirect status.
    pub status: RedirectStatus,
    /// The `Location` header value's bytes (valid header bytes).
    pub location: &'a [u8],
    /// Whether the link has targeting rules (see [`RouteTable::targeted_location`]).
    pub targeted: bool,
}

fn clamp_u32(value: i64) -> u32 {
    value.clamp(0, u32::MAX as i64) as u32
}

fn status_byte(status: RedirectStatus) -> u8 {
    match status {
        RedirectStatus::Permanent => 0,
        RedirectStatus::Found => 1,
        RedirectStatus::Temporary => 2,
        RedirectStatus::PermanentKeepMethod => 3,
    }
}

fn status_from_byte(byte: u8) -> RedirectStatus {
    match byte {
        1 => RedirectStatus::Found,
        2 => RedirectStatus::Temporary,
        3 => RedirectStatus::PermanentKeepMethod,
        _ => RedirectStatus::Permanent,
    }
}

impl RouteEntry {
    /// Packs a stored link, or `None` if its URL is not a valid header value (which
    /// validation at creation prevents; this is the last line against header injection).
    fn from_link(link: &Link, check: u64) -> Option<RouteEntry> {
        HeaderValue::from_str(&link.url).ok()?;
        let mut packed = Vec::with_capacity(AT_URL + link.url.len());
        packed.extend_from_slice(&check.to_le_bytes());
        packed.extend_from_slice(&link.id.to_le_bytes());
        // An expiry at or before the epoch is stored as 1 (long past), not 0 (never).
        let expires = link.expires_at.map_or(0, |t| clamp_u32(t).max(1));
        packed.extend_from_slice(&expires.to_le_bytes());
        let max_clicks = link
            .max_clicks
            .map_or(0, |m| m.clamp(1, u32::MAX as u64) as u32);
        packed.extend_from_slice(&max_clicks.to_le_bytes());
        packed.push(status_byte(link.redirect));
        packed.push(u8::from(link.disabled));
        let mut flags = 0;
        if link.password_hash.is_some() {
            flags |= PROTECTED;
        }
        if link.targeting.is_some() {
            flags |= TARGETED;
        }
        packed.push(flags);
        packed.extend_from_slice(link.url.as_bytes());
        Some(RouteEntry(packed.into_boxed_slice()))
    }

    /// The key's second word, compared on every lookup.
    #[inline]
    fn check(&self) -> u64 {
        self.u64_at(AT_CHECK)
    }

    fn u32_at(&self, at: usize) -> u32 {
        let mut word = [0u8; 4];
        word.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(word)
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(word)
    }

    fn link_id(&self) -> LinkId {
        self.u64_at(AT_LINK_ID) as LinkId
    }

    fn max_clicks(&self) -> u32 {
        self.u32_at(AT_MAX_CLICKS)
    }
}

/// The route table: (domain, code) → route, plus a short negative cache of misses.
pub struct RouteTable {
    seed: u64,
    /// Keyed by the key's first word; the entry holds the second (see [`RouteEntry`]).
    routes: DashMap<u64, RouteEntry, KeyBuildHasher>,
    /// The click leases of capped links (only links with `max_clicks` are here).
    leases: DashMap<RouteKey, Arc<Lease>, KeyBuildHasher>,
    /// Targeting rules of the links that have them (only those are here).
    targeting: DashMap<RouteKey, Targeting, KeyBuildHasher>,
    /// Fallback URLs of the links that have one and are not disabled by an admin (only
    /// those are here): read only when a link does not redirect.
    fallbacks: DashMap<RouteKey, HeaderValue, KeyBuildHasher>,
    misses: DashMap<RouteKey, Instant, KeyBuildHasher>,
    miss_ttl: Duration,
    max_misses: usize,
}

/// Shards of the route map. Many small ones: a snapshot's walk read-locks one shard at a
/// time, so an update waits for at most a short walk (ten million links make 40 000 a
/// shard), and a restore grows small maps: 10 M routes restore in 2.1 s against 5.6 s in
/// dashmap's default 8 shards, for 3 bytes a link more (BENCHMARKS.md, "Route table").
const SHARDS: usize = 256;

/// A route as a snapshot saves it (see [`crate::snapshot`]).
pub(crate) struct SavedRoute<'a> {
    /// The key's first word (the map's key).
    pub first: u64,
    /// The packed route: the key's second word, the route, its URL.
    pub packed: &'a [u8],
    /// Its targeting rules, if it has them.
    pub targeting: Option<Targeting>,
    /// Its fallback URL, if it has one.
    pub fallback: Option<HeaderValue>,
}

impl RouteTable {
    /// An empty table whose misses are remembered for `miss_ttl` (at most `max_misses`),
    /// hashing with a random seed.
    pub fn new(miss_ttl: Duration, max_misses: usize) -> RouteTable {
        RouteTable::with_seed(miss_ttl, max_misses, rand::random())
    }

    /// An empty table hashing with `seed`: a saved table's, so its routes can be restored.
    pub fn with_seed(miss_ttl: Duration, max_misses: usize, seed: u64) -> RouteTable {
        RouteTable {
            seed,
            routes: DashMap::with_hasher_and_shard_amount(KeyBuildHasher::default(), SHARDS),
            leases: DashMap::with_hasher(KeyBuildHasher::default()),
            targeting: DashMap::with_hasher(KeyBuildHasher::default()),
            fallbacks: DashMap::with_hasher(KeyBuildHasher::default()),
            misses: DashMap::with_hasher(KeyBuildHasher::default()),
            miss_ttl,
            max_misses,
        }
    }

    /// The key of (domain, code); the empty domain is the default one.
    #[inline]
    pub fn key(&self, domain: &str, code: &str) -> RouteKey {
        // A 0xFF byte never occurs in UTF-8, so it separates domain and code unambiguously;
        // hashing them in one stack buffer keeps the hot path free of allocation.
        let mut buf = [0u8; 512];
        let total = domain.len() + 1 + code.len();
        let hash = if total <= buf.len() {
            buf[..domain.len()].copy_from_slice(domain.as_bytes());
            buf[domain.len()] = 0xFF;
            buf[domain.len() + 1..total].copy_from_slice(code.as_bytes());
            xxh3_128_with_seed(&buf[..total], self.seed)
        } else {
            let mut joined = Vec::with_capacity(total);
            joined.extend_from_slice(domain.as_bytes());
            joined.push(0xFF);
            joined.extend_from_slice(code.as_bytes());
            xxh3_128_with_seed(&joined, self.seed)
        };
        RouteKey(hash as u64, (hash >> 64) as u64)
    }

    /// What to answer for `key` at Unix second `now`. Takes a click of a capped link's
    /// lease.
    #[inline]
    pub fn resolve(&self, key: RouteKey, now: i64) -> Resolution {
        let redirect = self.resolve_with(key, now, |redirect| {
            HeaderValue::from_bytes(redirect.location)
                .ok()
                .map(|location| Resolution::Redirect {
                    link_id: redirect.link_id,
                    status: redirect.status,
                    location,
                    targeted: redirect.targeted,
                })
        });
        match redirect {
            Ok(Some(resolution)) | Err(resolution) => resolution,
            // Unreachable: checked in `from_link`.
            Ok(None) => Resolution::Miss,
        }
    }

    /// Like [`resolve`](Self::resolve), without copying the `Location`: a redirect is handed
    /// to `answer` while its entry is read-locked (so `answer` must not write to this
    /// table); anything else comes back as the `Err` resolution.
    #[inline]
    pub fn resolve_with<R>(
        &self,
        key: RouteKey,
        now: i64,
        answer: impl FnOnce(RedirectRef<'_>) -> R,
    ) -> Result<R, Resolution> {
        let Some(entry) = self.routes.get(&key.0) else {
            return Err(Resolution::Miss);
        };
        if entry.check() != key.1 {
            // Another route shares the first word (among ten million links, the chance
            // that any two do is about 1 in 370 000): the store answers this one.
            return Err(Resolution::Miss);
        }
        let packed = &entry.0;
        if packed[AT_DISABLED] != 0 {
            return Err(Resolution::Gone(RouteState::Disabled));
        }
        let expires = entry.u32_at(AT_EXPIRES);
        if expires != 0 && clamp_u32(now) >= expires {
            return Err(Resolution::Gone(RouteState::Expired));
        }
        let flags = packed[AT_FLAGS];
        if flags & PROTECTED != 0 {
            return Err(Resolution::Protected);
        }
        if entry.max_clicks() != 0 {
            match self
                .leases
                .get(&key)
                .map(|lease| lease.take(clamp_u32(now)))
            {
                Some(Take::Taken) => {}
                Some(Take::Empty) => return Err(Resolution::Unleased),
                Some(Take::Exhausted) | None => {
                    return Err(Resolution::Gone(RouteState::Exhausted));
                }
            }
        }
        Ok(answer(RedirectRef {
            link_id: entry.link_id(),
            status: status_from_byte(packed[AT_STATUS]),
            // Valid header bytes: checked in `from_link`.
            location: &packed[AT_URL..],
            targeted: flags & TARGETED != 0,
        }))
    }

    /// The targeted `Location` for a request to a link with targeting rules from `device`
    /// in `country`, or `None` when no rule applies (the link's own URL is used).
    pub fn targeted_location(
        &self,
        key: RouteKey,
        device: DeviceClass,
        country: Option<&str>,
    ) -> Option<HeaderValue> {
        let targeting = self.targeting.get(&key)?;
        let url = targeting.pick(device, country)?;
        HeaderValue::from_str(url).ok()
    }

    /// The fallback URL of the link at `key`, if it has one (and no admin disabled it).
    pub fn fallback(&self, key: RouteKey) -> Option<HeaderValue> {
        self.fallbacks.get(&key).map(|f| f.clone())
    }

    /// The click lease of the capped link at `key`.
    pub fn lease(&self, key: RouteKey) -> Option<Arc<Lease>> {
        self.leases.get(&key).map(|lease| lease.clone())
    }

    /// Every capped link's click lease.
    pub fn leases(&self) -> Vec<Arc<Lease>> {
        self.leases.iter().map(|lease| lease.clone()).collect()
    }

    /// Whether `key` missed recently enough that the store need not be asked again.
    pub fn recently_missed(&self, key: RouteKey) -> bool {
        // Copy the time out so the shard's read lock is released before any removal.
        let at = self.misses.get(&key).map(|at| *at);
        match at {
            Some(at) if at.elapsed() < self.miss_ttl => true,
            Some(_) => {
                self.misses.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers that the store has no route for `key`.
    pub fn remember_miss(&self, key: RouteKey) {
        if self.misses.len() >= self.max_misses {
            // A flood of distinct unknown codes: forget them all rather than grow.
            self.misses.clear();
        }
        self.misses.insert(key, Instant::now());
    }

    /// Inserts or replaces the route of `link`. Returns false if the link cannot be served.
    pub fn upsert(&self, link: &Link) -> bool {
        self.upsert_at(self.key(&link.domain, link.code.as_str()), link)
    }

    fn upsert_at(&self, key: RouteKey, link: &Link) -> bool {
        self.misses.remove(&key);
        let Some(entry) = RouteEntry::from_link(link, key.1) else {
            self.remove_key(key);
            return false;
        };
        match link.max_clicks {
            // The same link's lease carries on (under its limit as it is now); another
            // link gets a new one.
            Some(max_clicks) => {
                let current = self.leases.get(&key).is_some_and(|lease| {
                    lease.is_for(link.id) && {
                        lease.set_limit(max_clicks);
                        true
                    }
                });
                if !current {
                    let lease = Lease::new(link.id, max_clicks, link.clicks);
                    self.leases.insert(key, Arc::new(lease));
                }
            }
            None => {
                self.leases.remove(&key);
            }
        }
        match &link.targeting {
            Some(targeting) => {
                self.targeting.insert(key, targeting.clone());
            }
            None => {
                self.targeting.remove(&key);
            }
        }
        // An admin's disabling is not the owner's to route around.
        let fallback = link
            .fallback_url
            .as_deref()
            .filter(|_| link.moderation.is_none())
            .and_then(|url| HeaderValue::from_str(url).ok());
        match fallback {
            Some(fallback) => {
                self.fallbacks.insert(key, fallback);
            }
            None => {
                self.fallbacks.remove(&key);
            }
        }
        self.routes.insert(key.0, entry);
        true
    }

    /// Removes the route of (domain, code).
    pub fn remove(&self, domain: &str, code: &str) {
        self.remove_key(self.key(domain, code));
    }

    fn remove_key(&self, key: RouteKey) {
        // Only this route: another sharing the first word stays.
        self.routes
            .remove_if(&key.0, |_, entry| entry.check() == key.1);
        self.leases.remove(&key);
        self.targeting.remove(&key);
        self.fallbacks.remove(&key);
    }

    /// Keeps only the routes whose keys `keep` accepts (after a full reload).
    pub fn retain(&self, keep: impl Fn(&RouteKey) -> bool) {
        self.routes
            .retain(|&first, entry| keep(&RouteKey(first, entry.check())));
        self.leases.retain(|k, _| keep(k));
        self.targeting.retain(|k, _| keep(k));
        self.fallbacks.retain(|k, _| keep(k));
    }

    /// Drops expired negative-cache entries.
    pub fn prune_misses(&self) {
        let ttl = self.miss_ttl;
        self.misses.retain(|_, at| at.elapsed() < ttl);
    }

    /// The seed keys are hashed with (saved with a snapshot: keys mean nothing without it).
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Hands every route to `save`, except capped links': their click counts are the
    /// store's, so after a restore they are read through on their first request. Returns
    /// how many routes were handed.
    pub(crate) fn save_each<E>(
        &self,
        mut save: impl FnMut(SavedRoute<'_>) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut saved = 0;
        for route in self.routes.iter() {
            let entry = route.value();
            if entry.max_clicks() != 0 {
                continue;
            }
            let key = RouteKey(*route.key(), entry.check());
            let targeting = if entry.0[AT_FLAGS] & TARGETED != 0 {
                self.targeting.get(&key).map(|t| t.clone())
            } else {
                None
            };
            save(SavedRoute {
                first: key.0,
                packed: &entry.0,
                targeting,
                fallback: self.fallbacks.get(&key).map(|f| f.clone()),
            })?;
            saved += 1;
        }
        Ok(saved)
    }

    /// Adds a route read back from a snapshot, unless the table holds its key already (a
    /// fresher read-through). False if `packed` is not a well-formed uncapped route.
    pub(crate) fn restore(
        &self,
        first: u64,
        packed: Box<[u8]>,
        targeting: Option<Targeting>,
        fallback: Option<HeaderValue>,
    ) -> bool {
        if packed.len() < AT_URL || HeaderValue::from_bytes(&packed[AT_URL..]).is_err() {
            return false;
        }
        let entry = RouteEntry(packed);
        let targeted = entry.0[AT_FLAGS] & TARGETED != 0;
        if entry.max_clicks() != 0 || targeted != targeting.is_some() {
            return false;
        }
        if self.routes.contains_key(&first) {
            return true;
        }
        let key = RouteKey(first, entry.check());
        if let Some(targeting) = targeting {
            self.targeting.insert(key, targeting);
        }
        if let Some(fallback) = fallback {
            self.fallbacks.insert(key, fallback);
        }
        self.routes.entry(first).or_insert(entry);
        true
    }

    /// Number of routes held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table holds no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shortlink_core::{NewLink, ShortCode};

    fn link(id: LinkId, code: &str, url: &str) -> Link {
        NewLink {
            code: ShortCode::from_stored(code.into()),
            ..NewLink::new(1, url.into())
        }
        .into_link(id, 0)
    }

    fn table() -> RouteTable {
        RouteTable::new(Duration::from_secs(5), 1000)
    }

    #[test]
    fn resolve_with_lends_what_resolve_copies() {
        let t = table();
        t.upsert(&link(7, "lend", "https://lend.example/a?b=c"));
        let key = t.key("", "lend");
        let lent = t
            .resolve_with(key, 1, |r| (r.link_id, r.status, r.location.to_vec()))
            .unwrap();
        assert_eq!(lent.0, 7);
        assert_eq!(lent.1, RedirectStatus::Permanent);
        assert_eq!(lent.2, b"https://lend.example/a?b=c");
        match t.resolve(key, 1) {
            Resolution::Redirect { location, .. } => assert_eq!(location.as_bytes(), &lent.2[..]),
            other => panic!("{other:?}"),
        }
        // What is not a redirect comes back as the resolution, and `answer` is not called.
        let missing = t.resolve_with(t.key("", "none"), 1, |_| unreachable!("no route"));
        assert_eq!(missing.unwrap_err(), Resolution::Miss);
    }

    #[test]
    fn resolves_redirects_and_states() {
        let t = table();
        assert!(t.upsert(&link(1, "abc", "https://a.test/")));
        let key = t.key("", "abc");
        match t.resolve(key, 100) {
            Resolution::Redirect {
                link_id,
                status,
                location,
                targeted,
            } => {
                assert!(!targeted);
                assert_eq!(link_id, 1);
                assert_eq!(status, RedirectStatus::Permanent);
                assert_eq!(location, "https://a.test/");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.resolve(t.key("", "ABC"), 100),
            Resolution::Miss,
            "codes are case-sensitive"
        );
        assert_eq!(t.resolve(t.key("other.test", "abc"), 100), Resolution::Miss);

        let mut expiring = link(2, "exp", "https://b.test/");
        expiring.expires_at = Some(50);
        t.upsert(&expiring);
        assert!(matches!(
            t.resolve(t.key("", "exp"), 49),
            Resolution::Redirect { .. }
        ));
        assert_eq!(
            t.resolve(t.key("", "exp"), 50),
            Resolution::Gone(RouteState::Expired)
        );

        let mut past = link(5, "old", "https://b.test/");
        past.expires_at = Some(-5);
        t.upsert(&past);
        assert_eq!(
            t.resolve(t.key("", "old"), 10),
            Resolution::Gone(RouteState::Expired)
        );

        let mut off = link(3, "off", "https://c.test/");
        off.disabled = true;
        t.upsert(&off);
        assert_eq!(
            t.resolve(t.key("", "off"), 1),
            Resolution::Gone(RouteState::Disabled)
        );

        t.remove("", "abc");
        assert_eq!(t.resolve(key, 100), Resolution::Miss);
    }

    #[test]
    fn capped_links_answer_only_from_their_lease() {
        let t = std::sync::Arc::new(table());
        let mut capped = link(4, "cap", "https://d.test/");
        capped.max_clicks = Some(1000);
        capped.clicks = 10;
        t.upsert(&capped);
        let key = t.key("", "cap");
        assert_eq!(
            t.resolve(key, 1),
            Resolution::Unleased,
            "nothing leased yet"
        );
        t.lease(key).unwrap().add(990);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| matches!(t.resolve(key, 1), Resolution::Redirect { .. }))
                        .count()
                })
            })
            .collect();
        let served: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            served, 990,
            "exactly the leased clicks, however many threads"
        );
        assert_eq!(t.resolve(key, 1), Resolution::Unleased);
        // A reload of the same link keeps its lease; a new limit drops what it holds.
        t.lease(key).unwrap().add(1);
        t.upsert(&capped);
        capped.max_clicks = Some(2000);
        assert!(matches!(t.resolve(key, 1), Resolution::Redirect { .. }));
        t.lease(key).unwrap().add(1);
        t.upsert(&capped);
        assert_eq!(t.resolve(key, 1), Resolution::Unleased);
    }

    #[test]
    fn protected_links_go_to_the_control_plane_and_targeting_picks_urls() {
        let t = table();
        let mut secret = link(11, "pw", "https://p.test/");
        secret.password_hash = Some("$argon2id$...".into());
        t.upsert(&secret);
        assert_eq!(t.resolve(t.key("", "pw"), 1), Resolution::Protected);
        secret.disabled = true;
        t.upsert(&secret);
        assert_eq!(
            t.resolve(t.key("", "pw"), 1),
            Resolution::Gone(RouteState::Disabled)
        );

        let mut app = link(12, "app", "https://app.test/");
        app.targeting = Some(Targeting {
            ios: Some("https://apps.apple.com/x".into()),
            ..Targeting::default()
        });
        t.upsert(&app);
        let key = t.key("", "app");
        assert!(matches!(
            t.resolve(key, 1),
            Resolution::Redirect { targeted: true, .. }
        ));
        assert_eq!(
            t.targeted_location(key, DeviceClass::Ios, None).unwrap(),
            "https://apps.apple.com/x"
        );
        assert_eq!(t.targeted_location(key, DeviceClass::Android, None), None);
        app.targeting = None;
        t.upsert(&app);
        assert!(matches!(
            t.resolve(key, 1),
            Resolution::Redirect {
                targeted: false,
                ..
            }
        ));
        assert_eq!(t.targeted_location(key, DeviceClass::Ios, None), None);
    }

    #[test]
    fn a_table_slot_is_24_bytes_and_entries_round_trip() {
        assert_eq!(std::mem::size_of::<(u64, RouteEntry)>(), 24);
        let mut full = link(-7, "x", &"u".repeat(300));
        full.expires_at = Some(1_700_000_000);
        full.max_clicks = Some(70_000);
        full.redirect = RedirectStatus::Temporary;
        let entry = RouteEntry::from_link(&full, 0xDEAD_BEEF_0123_4567).unwrap();
        assert_eq!(entry.check(), 0xDEAD_BEEF_0123_4567);
        assert_eq!(entry.link_id(), -7);
        assert_eq!(entry.u32_at(AT_EXPIRES), 1_700_000_000);
        assert_eq!(entry.max_clicks(), 70_000);
        assert_eq!(entry.0[AT_STATUS], status_byte(RedirectStatus::Temporary));
        assert_eq!(&entry.0[AT_URL..], full.url.as_bytes());
        assert_eq!(entry.0.len(), AT_URL + 300);
    }

    #[test]
    fn routes_sharing_a_first_word_are_told_apart() {
        let t = table();
        let (a, b) = (RouteKey(42, 1), RouteKey(42, 2));
        let mut capped = link(1, "a", "https://a.test/");
        capped.max_clicks = Some(5);
        assert!(t.upsert_at(a, &capped));
        t.lease(a).unwrap().add(5);
        assert!(matches!(
            t.resolve(a, 1),
            Resolution::Redirect { link_id: 1, .. }
        ));
        assert_eq!(t.resolve(b, 1), Resolution::Miss, "b is not a");

        // b takes the slot (a read-through of b does this); a is then a miss, not b's URL.
        assert!(t.upsert_at(b, &link(2, "b", "https://b.test/")));
        assert!(matches!(
            t.resolve(b, 1),
            Resolution::Redirect { link_id: 2, .. }
        ));
        assert_eq!(t.resolve(a, 1), Resolution::Miss);

        // Removing a leaves b; a full reload that keeps only b keeps it.
        t.remove_key(a);
        assert!(matches!(
            t.resolve(b, 1),
            Resolution::Redirect { link_id: 2, .. }
        ));
        t.retain(|k| *k == b);
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.resolve(b, 1),
            Resolution::Redirect { link_id: 2, .. }
        ));
        t.retain(|k| *k == a);
        assert!(t.is_empty());
    }

    #[test]
    fn refuses_urls_that_are_not_header_values() {
        let t = table();
        assert!(!t.upsert(&link(9, "bad", "https://x.test/\r\nSet-Cookie: a=b")));
        assert_eq!(t.resolve(t.key("", "bad"), 1), Resolution::Miss);
    }

    #[test]
    fn negative_cache_expires_and_is_bounded() {
        let t = RouteTable::new(Duration::from_millis(30), 2);
        let k = t.key("", "nope");
        assert!(!t.recently_missed(k));
        t.remember_miss(k);
        assert!(t.recently_missed(k));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!t.recently_missed(k));
        t.remember_miss(t.key("", "a"));
        t.remember_miss(t.key("", "b"));
        t.remember_miss(t.key("", "c"));
        assert!(t.misses.len() <= 2);
        // Creating the link clears its negative entry at once.
        let key = t.key("", "c");
        assert!(t.recently_missed(key));
        t.upsert(&link(1, "c", "https://c.test/"));
        assert!(!t.recently_missed(key));
    }
}
