//! Capped links' clicks, leased from the store's click budgets (see
//! [`shortlink_store::budget`]) so that every proxy together answers at most `max_clicks`
//! redirects.
//!
//! The hot path takes one click of the link's [`Lease`] per redirect: one atomic
//! decrement, no store. A [`Budgets`] task keeps leases topped up before they run out,
//! reports what was used, renews them before they expire, hands back what an idle link
//! holds, and at shutdown (after the last redirect) returns everything left. A request
//! that finds its lease empty waits for the store ([`Budgets::refill`]); the store grants
//! at most a quarter of what is left, so the last clicks go one at a time to whichever
//! proxy asks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_core::LinkId;
use shortlink_store::{ClickBudget, LeaseRequest};
use tokio::sync::{Mutex, watch};
use tracing::warn;

/// Fewest clicks asked for at a time.
const MIN_WANT: u64 = 16;
/// Most clicks asked for at a time.
const MAX_WANT: u64 = 1 << 20;
/// How often leases are looked after.
const TICK: Duration = Duration::from_millis(100);
/// How often a lease in use reports what it used: a proxy killed between reports may
/// have answered up to this long's clicks that the store then hands out again (the same
/// interval as the click journal's, whose clicks a crash loses).
const REPORT_EVERY: Duration = TICK;
/// How long a lease goes on answering while its reports fail.
const UNREPORTED_MAX: Duration = Duration::from_secs(1);
/// Store requests of one tick in flight at once.
const CONCURRENT: usize = 64;
/// How long a link may go without redirects before its clicks are handed back.
const IDLE: Duration = Duration::from_secs(2);
/// How long after the store had nothing left a link answers 410 without asking again.
const EXHAUSTED_SECS: u32 = 1;

/// What taking one click of a lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A click: answer the redirect.
    Taken,
    /// None held here: ask the store ([`Budgets::refill`]).
    Empty,
    /// The store had none left a moment ago: the link is used up.
    Exhausted,
}

/// One capped link's lease: the clicks this proxy may answer.
#[derive(Debug)]
pub struct Lease {
    link_id: LinkId,
    max_clicks: AtomicU64,
    /// The link's count when the route was loaded, for a budget that does not exist yet.
    counted: u64,
    /// Leased clicks not answered yet.
    tokens: AtomicU32,
    /// Leased clicks dropped unanswered (see [`Lease::void`]).
    voided: AtomicU64,
    /// Clicks received in the store's lease row (changed under `held`).
    granted: AtomicU64,
    /// Clicks answered as last reported to the store (changed under `held`).
    reported: AtomicU64,
    /// Until this Unix second the store had nothing left.
    exhausted_until: AtomicU32,
    /// Whether the lease holds a row in the store (and is among [`Budgets`]'s active ones).
    holding: AtomicBool,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    /// When the lease runs out unless renewed; `None` when none is held.
    deadline: Option<Instant>,
    /// When `used` was last reported.
    reported_at: Instant,
    /// `used` at the last look, and since when it has not moved.
    last_used: u64,
    still_since: Instant,
    /// `used` when clicks were last asked for, and what was granted then.
    used_at_ask: u64,
    last_grant: u64,
}

impl Lease {
    /// A lease, empty, for link `link_id` capped at `max_clicks` having counted `counted`.
    pub(crate) fn new(link_id: LinkId, max_clicks: u64, counted: u64) -> Lease {
        let now = Instant::now();
        Lease {
            link_id,
            max_clicks: AtomicU64::new(max_clicks),
            counted,
            tokens: AtomicU32::new(0),
            voided: AtomicU64::new(0),
            exhausted_until: AtomicU32::new(0),
            holding: AtomicBool::new(false),
            granted: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            held: Mutex::new(Held {
                deadline: None,
                reported_at: now,
                last_used: 0,
                still_since: now,
                used_at_ask: 0,
                last_grant: 0,
            }),
        }
    }

    /// Whether this lease is `link_id`'s (else it is replaced).
    pub(crate) fn is_for(&self, link_id: LinkId) -> bool {
        self.link_id == link_id
    }

    /// Takes a changed limit: the clicks held are dropped and leased again under it.
    pub(crate) fn set_limit(&self, max_clicks: u64) {
        if self.max_clicks.swap(max_clicks, Ordering::Relaxed) != max_clicks {
            self.void();
            self.exhausted_until.store(0, Ordering::Relaxed);
        }
    }

    /// Takes one click at Unix second `now`; atomic, so concurrent requests never take
    /// more than the lease holds.
    #[inline]
    pub(crate) fn take(&self, now: u32) -> Take {
        if self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            Take::Taken
        } else if now < self.exhausted_until.load(Ordering::Relaxed) {
            Take::Exhausted
        } else {
            Take::Empty
        }
    }

    /// Adds `clicks` to the lease (tests stand in for the store with it).
    pub(crate) fn add(&self, clicks: u64) {
        let clicks = u32::try_from(clicks).unwrap_or(u32::MAX);
        self.tokens.fetch_add(clicks, Ordering::Relaxed);
    }

    /// Clicks of the lease answered so far.
    fn used(&self) -> u64 {
        self.granted
            .load(Ordering::Relaxed)
            .saturating_sub(u64::from(self.tokens.load(Ordering::Relaxed)))
            .saturating_sub(self.voided.load(Ordering::Relaxed))
    }

    /// Clicks answered that the store has not been told of yet.
    pub(crate) fn unreported(&self) -> u64 {
        self.used()
            .saturating_sub(self.reported.load(Ordering::Relaxed))
    }

    /// Drops the clicks held here unanswered (the lease expired, was lost or is handed
    /// back, or the limit changed): they are no longer this proxy's to answer.
    fn void(&self) {
        let tokens = u64::from(self.tokens.swap(0, Ordering::Relaxed));
        self.voided.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Forgets the lease row (it was returned or reclaimed).
    fn forget(&self, held: &mut Held) {
        self.void();
        self.voided.store(0, Ordering::Relaxed);
        self.granted.store(0, Ordering::Relaxed);
        self.reported.store(0, Ordering::Relaxed);
        held.last_used = 0;
        held.used_at_ask = 0;
        held.last_grant = 0;
    }
}

/// What [`Budgets::refill`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refill {
    /// The lease holds clicks again: decide again.
    Refilled,
    /// The budget has none left: 410.
    Exhausted,
    /// The store did not answer: 503.
    Unavailable,
}

/// This proxy's leases of capped links' click budgets.
pub struct Budgets {
    store: Arc<dyn ClickBudget>,
    /// This process's name for its leases.
    holder: String,
    ttl: Duration,
    drained: Option<(watch::Receiver<()>, Duration)>,
    /// The leases holding a row in the store: the only ones the lease task looks after
    /// (a table of millions of capped links costs nothing while they are not clicked).
    active: std::sync::Mutex<Vec<Arc<Lease>>>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Budgets {
    /// Leases of capped links' clicks from `store`, each lasting `ttl` unless renewed.
    /// At shutdown, leases are returned once `drained` resolves (the listener's last
    /// redirect answered), or after `limit`.
    pub fn new(
        store: Arc<dyn ClickBudget>,
        ttl: Duration,
        drained: Option<(watch::Receiver<()>, Duration)>,
    ) -> Budgets {
        Budgets {
            store,
            holder: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            ttl,
            drained,
            active: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The leases holding a row in the store, now.
    fn active(&self) -> Vec<Arc<Lease>> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks `lease` as holding no row in the store.
    fn let_go(lease: &Lease, held: &mut Held) {
        held.deadline = None;
        lease.holding.store(false, Ordering::Relaxed);
    }

    /// Asks the store for `want` clicks (0: only report and renew) for `lease`.
    async fn ask(&self, lease: &Arc<Lease>, held: &mut Held, want: u64) -> Result<u64, ()> {
        let used = lease.used();
        let sent = Instant::now();
        let request = LeaseRequest {
            link_id: lease.link_id,
            max_clicks: lease.max_clicks.load(Ordering::Relaxed),
            counted: lease.counted,
            holder: self.holder.clone(),
            used,
            want,
            held: held.deadline.is_some(),
            now_ms: unix_ms(),
            ttl_ms: i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX),
        };
        let grant = match self.store.lease_clicks(request).await {
            Ok(grant) => grant,
            Err(error) => {
                warn!(%error, link_id = lease.link_id, "click lease request failed");
                return Err(());
            }
        };
        if grant.lost {
            warn!(
                link_id = lease.link_id,
                "click lease was reclaimed before it was renewed"
            );
            lease.forget(held);
        } else {
            lease.reported.store(used, Ordering::Relaxed);
        }
        held.reported_at = Instant::now();
        held.deadline = Some(sent + self.ttl);
        if !lease.holding.swap(true, Ordering::Relaxed) {
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lease.clone());
        }
        if want > 0 {
            held.used_at_ask = lease.used();
            held.last_grant = grant.granted;
            held.still_since = held.reported_at;
        }
        lease.granted.fetch_add(grant.granted, Ordering::Relaxed);
        lease.add(grant.granted);
        if grant.granted == 0 && want > 0 && grant.remaining == 0 {
            let until = u32::try_from(unix_ms() / 1000).unwrap_or(u32::MAX) + EXHAUSTED_SECS;
            lease.exhausted_until.store(until, Ordering::Relaxed);
        }
        Ok(grant.granted)
    }

    /// How many clicks to ask for: twice what was used since the last ask.
    fn want(lease: &Lease, held: &Held) -> u64 {
        (lease.used().saturating_sub(held.used_at_ask) * 2).clamp(MIN_WANT, MAX_WANT)
    }

    /// Fills `lease` after a request found it empty; requests arriving meanwhile wait for
    /// the same answer.
    pub async fn refill(&self, lease: &Arc<Lease>) -> Refill {
        let mut held = lease.held.lock().await;
        let now = u32::try_from(unix_ms() / 1000).unwrap_or(u32::MAX);
        match lease.take(now) {
            // Filled while this one waited: put the click back and decide again.
            Take::Taken => {
                lease.add(1);
                return Refill::Refilled;
            }
            Take::Exhausted => return Refill::Exhausted,
            Take::Empty => {}
        }
        let want = Self::want(lease, &held);
        match self.ask(lease, &mut held, want).await {
            Ok(0) => Refill::Exhausted,
            Ok(_) => Refill::Refilled,
            Err(()) => Refill::Unavailable,
        }
    }

    /// Looks after one lease: voids it past its deadline, tops it up before it runs out,
    /// reports and renews it, and hands it back when the link has gone idle.
    async fn look_after(&self, lease: &Arc<Lease>) {
        // A lease being filled for a request is looked after next time.
        let Ok(mut held) = lease.held.try_lock() else {
            return;
        };
        let Some(deadline) = held.deadline else {
            return;
        };
        let now = Instant::now();
        if now >= deadline {
            lease.forget(&mut held);
            Self::let_go(lease, &mut held);
            return;
        }
        let used = lease.used();
        if used != held.last_used {
            held.last_used = used;
            held.still_since = now;
        }
        let tokens = u64::from(lease.tokens.load(Ordering::Relaxed));
        if now.duration_since(held.still_since) >= IDLE {
            self.release(lease, &mut held).await;
            return;
        }
        let low = tokens <= held.last_grant / 2;
        let exhausted = lease.exhausted_until.load(Ordering::Relaxed)
            > u32::try_from(unix_ms() / 1000).unwrap_or(u32::MAX);
        let want = if low && !exhausted {
            Self::want(lease, &held)
        } else {
            0
        };
        let renew = deadline.duration_since(now) < self.ttl / 2;
        let report = lease.unreported() > 0 && now.duration_since(held.reported_at) >= REPORT_EVERY;
        if (want > 0 || renew || report)
            && self.ask(lease, &mut held, want).await.is_err()
            && now.duration_since(held.reported_at) >= UNREPORTED_MAX
        {
            // The store has not heard from this lease for a while: clicks answered now
            // could not be reported before it expires and is handed out again.
            lease.void();
        }
    }

    /// Hands back what `lease` holds: the store gets the unused clicks back.
    async fn release(&self, lease: &Lease, held: &mut Held) {
        lease.void();
        let used = lease.used();
        match self
            .store
            .release_clicks(lease.link_id, &self.holder, used)
            .await
        {
            Ok(_) => {
                Self::let_go(lease, held);
                lease.forget(held);
            }
            // The store keeps the lease until it expires, then reclaims it.
            Err(error) => warn!(%error, link_id = lease.link_id, "click lease release failed"),
        }
    }

    /// Looks after every active lease once, [`CONCURRENT`] at a time (the embedded store
    /// then groups their writes into one transaction; CQL runs them side by side).
    pub async fn tick(&self) {
        use futures_util::StreamExt;
        futures_util::stream::iter(self.active())
            .for_each_concurrent(CONCURRENT, |lease| async move {
                self.look_after(&lease).await;
            })
            .await;
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|lease| lease.holding.load(Ordering::Relaxed));
    }

    /// Hands back every lease (at shutdown, after the last redirect).
    pub async fn release_all(&self) {
        for lease in self.active() {
            let mut held = lease.held.lock().await;
            if held.deadline.is_some() {
                self.release(&lease, &mut held).await;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Budgets {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(TICK) => self.tick().await,
            }
        }
        // Redirects are still answered while the listener drains: keep leases topped up
        // until it has, then return what is left.
        if let Some((mut drained, limit)) = self.drained.clone() {
            let wait = async {
                loop {
                    tokio::select! {
                        _ = drained.changed() => return,
                        _ = tokio::time::sleep(TICK) => self.tick().await,
                    }
                }
            };
            let _ = tokio::time::timeout(limit, wait).await;
        }
        self.release_all().await;
    }
}
