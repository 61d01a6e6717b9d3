//! Keeps the route table in step with the store: at start the table's snapshot when it is
//! usable (else a bulk load, its parts read at once), then the change feed, polled and
//! woken early by the store's in-process hint when there is one; the table is saved again
//! when it changed, at most every so often and at shutdown.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_store::{RoutePart, RouteSource, StoreError};
use tracing::{info, warn};

use crate::domains::DomainSet;
use crate::routes::{RouteKey, RouteTable};
use crate::snapshot;

/// How often the registered custom domains are read again.
const DOMAIN_REFRESH: Duration = Duration::from_secs(1);

/// Changes read from the feed per request.
const FEED_BATCH: usize = 1000;

/// Progress of the sync, shared with the proxy (readiness) and tests.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// True once the first bulk load finished.
    pub loaded: AtomicBool,
    /// Feed position applied so far.
    pub position: AtomicU64,
    /// Routes written to the table by loads and feed changes so far (a snapshot is saved
    /// again only when this moved).
    pub changes: AtomicU64,
    /// Unix milliseconds when the table last caught up with the feed (0: never).
    pub caught_up_ms: AtomicI64,
}

impl SyncStatus {
    fn caught_up(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.caught_up_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Where and how often the route table is saved ([`crate::snapshot`]).
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// The snapshot file.
    pub path: PathBuf,
    /// How often a changed table is saved again.
    pub every: Duration,
}

/// The background service that loads and follows routes.
pub struct RouteSync {
    store: Arc<dyn RouteSource>,
    table: Arc<RouteTable>,
    domains: Arc<DomainSet>,
    status: Arc<SyncStatus>,
    poll: Duration,
    page: usize,
    parts: u32,
    snapshot: Option<SnapshotPolicy>,
}

/// The last snapshot saved or restored: [`SyncStatus::changes`] as it was then, and when
/// (`None`: nothing saved yet, so the table is saved at once).
#[derive(Debug, Clone, Copy)]
struct Saved {
    changes: u64,
    at: Option<Instant>,
}

impl Saved {
    fn never() -> Saved {
        Saved {
            changes: u64::MAX,
            at: None,
        }
    }
}

/// What a save of the route table needs, cloned into a task of its own.
#[derive(Clone)]
struct Saver {
    store: Arc<dyn RouteSource>,
    table: Arc<RouteTable>,
    status: Arc<SyncStatus>,
    path: PathBuf,
}

impl Saver {
    /// Saves the table as reflecting `position`, off the async threads. A failed save is
    /// logged: the proxy serves on, and a restart loads from the store.
    async fn save(self, position: u64) -> Option<Saved> {
        let changes = self.status.changes.load(Ordering::Relaxed);
        let store = match self.store.installation_id().await {
            Ok(id) => snapshot::store_tag(id),
            Err(error) => {
                warn!(%error, "route snapshot not saved: the store did not answer");
                return None;
            }
        };
        let started = Instant::now();
        let (table, path) = (self.table, self.path);
        let saved =
            tokio::task::spawn_blocking(move || snapshot::save(&table, &path, store, position))
                .await
                .map_err(|e| e.to_string())
                .and_then(|saved| saved.map_err(|e| e.to_string()));
        match saved {
            Ok((header, bytes)) => {
                info!(
                    routes = header.routes,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "route snapshot saved"
                );
                Some(Saved {
                    changes,
                    at: Some(Instant::now()),
                })
            }
            Err(error) => {
                warn!(%error, "route snapshot not saved");
                None
            }
        }
    }
}

impl RouteSync {
    /// A sync for `table` and `domains` from `store`, polling every `poll`, loading `page`
    /// links at a time from one part of the store's scan.
    pub fn new(
        store: Arc<dyn RouteSource>,
        table: Arc<RouteTable>,
        domains: Arc<DomainSet>,
        status: Arc<SyncStatus>,
        poll: Duration,
        page: usize,
    ) -> RouteSync {
        RouteSync {
            store,
            table,
            domains,
            status,
            poll,
            page,
            parts: 1,
            snapshot: None,
        }
    }

    /// Bulk loads read `parts` parts of the store's scan at once.
    pub fn with_parallel_load(mut self, parts: u32) -> RouteSync {
        self.parts = parts.max(1);
        self
    }

    /// Starts from the snapshot in `policy` when it is usable, and saves one as it goes.
    pub fn with_snapshot(mut self, policy: Option<SnapshotPolicy>) -> RouteSync {
        self.snapshot = policy;
        self
    }

    /// Reloads the registered custom domains.
    pub async fn refresh_domains(&self) -> Result<(), StoreError> {
        let domains = self.store.list_domains().await?;
        self.domains.replace_gone_redirects(
            domains
                .iter()
                .filter_map(|d| Some((d.name.clone(), d.fallback_url.clone()?))),
        );
        self.domains
            .replace(domains.into_iter().map(|d| (d.name, d.https)));
        Ok(())
    }

    /// Loads every route, reading the parts of the store's scan at once; removes routes
    /// that are no longer stored when `prune` is set. Returns the feed position the table
    /// now reflects.
    pub async fn full_load(&self, prune: bool) -> Result<u64, StoreError> {
        use futures_util::StreamExt;
        let started = Instant::now();
        self.refresh_domains().await?;
        // Take the head first: anything written during the load is replayed afterwards.
        let head = self.store.feed_head().await?;
        let parts = futures_util::stream::iter(0..self.parts)
            .map(|index| {
                self.load_part(
                    RoutePart {
                        index,
                        count: self.parts,
                    },
                    prune,
                )
            })
            .buffer_unordered(self.parts as usize)
            .collect::<Vec<_>>()
            .await;
        let mut loaded = 0usize;
        let mut seen = prune.then(HashSet::new);
        for part in parts {
            let (count, keys) = part?;
            loaded += count;
            if let Some(seen) = seen.as_mut() {
                seen.extend(keys);
            }
        }
        if let Some(seen) = seen {
            self.table.retain(|k| seen.contains(k));
        }
        self.status
            .changes
            .fetch_add(loaded as u64 + 1, Ordering::Relaxed);
        info!(
            routes = loaded,
            parts = self.parts,
            ms = started.elapsed().as_millis() as u64,
            "route table loaded"
        );
        Ok(head)
    }

    /// Loads one part of the scan: how many routes it added, and their keys when `keep`.
    async fn load_part(
        &self,
        part: RoutePart,
        keep: bool,
    ) -> Result<(usize, Vec<RouteKey>), StoreError> {
        let mut cursor = None;
        let mut keys = Vec::new();
        let mut loaded = 0;
        loop {
            let page = self.store.routes_page(part, cursor, self.page).await?;
            for link in &page.links {
                if self.table.upsert(link) {
                    loaded += 1;
                }
                if keep {
                    keys.push(self.table.key(&link.domain, link.code.as_str()));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok((loaded, keys)),
            }
        }
    }

    /// Fills the table from the snapshot if there is a usable one, then follows the feed
    /// from its position. `None` when there is none (or it was unusable) and the table
    /// is as it was.
    async fn warm_start(&self) -> Result<Option<(u64, Saved)>, StoreError> {
        let Some(policy) = &self.snapshot else {
            return Ok(None);
        };
        let header = match snapshot::read_header(&policy.path) {
            Ok(header) => header,
            Err(snapshot::SnapshotError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => {
                warn!(%error, "route snapshot unusable; loading every route from the store");
                return Ok(None);
            }
        };
        let refuse = |why: &str| {
            warn!(
                path = %policy.path.display(),
                "route snapshot not used: {why}; loading every route from the store"
            );
            Ok(None)
        };
        if header.seed != self.table.seed() {
            return refuse("it was replaced after this process read it");
        }
        if header.store != snapshot::store_tag(self.store.installation_id().await?) {
            return refuse("it was read from another store");
        }
        let head = self.store.feed_head().await?;
        if header.position > head {
            return refuse(
                "it is ahead of the store's change feed (a store restored from a backup?)",
            );
        }
        let started = Instant::now();
        let (table, path) = (self.table.clone(), policy.path.clone());
        let restored = tokio::task::spawn_blocking(move || snapshot::restore(&table, &path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|restored| restored.map_err(|e| e.to_string()));
        let header = match restored {
            Ok(header) => header,
            Err(error) => {
                // Some routes may be in the table already: a pruning load replaces them.
                warn!(%error, "route snapshot damaged; loading every route from the store");
                return Ok(Some((self.full_load(true).await?, Saved::never())));
            }
        };
        let age_s = (shortlink_core::time_util::now_unix_ms() - header.saved_ms).max(0) / 1000;
        info!(
            routes = header.routes,
            age_s,
            ms = started.elapsed().as_millis() as u64,
            "route table restored from its snapshot; catching up from the change feed"
        );
        // A feed that no longer reaches back to the snapshot's position reloads everything.
        let restored = Saved {
            changes: self.status.changes.load(Ordering::Relaxed),
            at: Some(Instant::now()),
        };
        let position = self.catch_up(header.position).await?;
        Ok(Some((position, restored)))
    }

    /// Applies every change after `position`; returns the new position.
    pub async fn catch_up(&self, mut position: u64) -> Result<u64, StoreError> {
        loop {
            let batch = self.store.route_changes(position, FEED_BATCH).await?;
            if batch.reset {
                warn!(
                    position,
                    "route feed moved past our position; reloading all routes"
                );
                return self.full_load(true).await;
            }
            let count = batch.changes.len();
            self.status
                .changes
                .fetch_add(count as u64, Ordering::Relaxed);
            let mut new_domain = false;
            for change in batch.changes {
                match &change.link {
                    Some(link) => {
                        self.table.upsert(link);
                        new_domain |=
                            !link.domain.is_empty() && !self.domains.contains(&link.domain);
                    }
                    None => self.table.remove(&change.domain, &change.code),
                }
            }
            if new_domain {
                // A link on a domain registered since the last refresh: serve it now.
                self.refresh_domains().await?;
            }
            position = batch.next;
            if count < FEED_BATCH {
                self.status.caught_up(position);
                return Ok(position);
            }
            self.status.position.store(position, Ordering::Relaxed);
        }
    }

    /// Loads the table (from the snapshot when usable) until it works or the proxy stops:
    /// the position reached, and the snapshot later saves are measured against.
    async fn initial_load(&self, shutdown: &mut ShutdownWatch) -> Option<(u64, Saved)> {
        loop {
            let loaded = match self.warm_start().await {
                Ok(Some((position, saved))) => Ok((position, saved)),
                Ok(None) => self
                    .full_load(false)
                    .await
                    .map(|position| (position, Saved::never())),
                Err(error) => Err(error),
            };
            match loaded {
                Ok((position, saved)) => {
                    self.status.caught_up(position);
                    self.status.loaded.store(true, Ordering::Release);
                    return Some((position, saved));
                }
                Err(error) => {
                    warn!(%error, "route bulk load failed; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for RouteSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some((mut position, mut saved)) = self.initial_load(&mut shutdown).await else {
            return;
        };
        // A cold start saves at once (the next start is then warm); saves run beside the
        // feed, one at a time.
        let mut saving: Option<tokio::task::JoinHandle<Option<Saved>>> = None;
        let mut hint = self.store.change_hint();
        let mut ticks = 0u64;
        let mut domains_read = std::time::Instant::now();
        loop {
            let woken_by_hint = async {
                match hint.as_mut() {
                    Some(h) => h.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    self.save_at_shutdown(saving, saved, position).await;
                    return;
                }
                alive = woken_by_hint => {
                    if !alive {
                        hint = None;
                    }
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
            match self.catch_up(position).await {
                Ok(p) => position = p,
                Err(error) => warn!(%error, "route feed poll failed; serving from memory"),
            }
            if domains_read.elapsed() >= DOMAIN_REFRESH {
                domains_read = std::time::Instant::now();
                if let Err(error) = self.refresh_domains().await {
                    warn!(%error, "custom domain refresh failed; keeping the known ones");
                }
            }
            ticks += 1;
            if ticks.is_multiple_of(64) {
                self.table.prune_misses();
            }
            if let Some(done) = saving.take_if(|task| task.is_finished()) {
                // A failed save is tried again after the period, not at every poll.
                saved = done.await.ok().flatten().unwrap_or(Saved {
                    at: Some(Instant::now()),
                    ..saved
                });
            }
            if saving.is_none()
                && self.snapshot_due(saved)
                && let Some(saver) = self.saver()
            {
                saving = Some(tokio::spawn(saver.save(position)));
            }
        }
    }
}

impl RouteSync {
    /// Whether the table should be saved now: it changed since `saved`, and the last
    /// save is old enough (a table never saved is saved at once).
    fn snapshot_due(&self, saved: Saved) -> bool {
        let Some(policy) = &self.snapshot else {
            return false;
        };
        let changed = self.status.changes.load(Ordering::Relaxed) != saved.changes;
        changed && saved.at.is_none_or(|at| at.elapsed() >= policy.every)
    }

    /// What saving needs, when snapshots are on.
    fn saver(&self) -> Option<Saver> {
        self.snapshot.as_ref().map(|policy| Saver {
            store: self.store.clone(),
            table: self.table.clone(),
            status: self.status.clone(),
            path: policy.path.clone(),
        })
    }

    /// At shutdown: waits for a save under way, then saves what changed since.
    async fn save_at_shutdown(
        &self,
        saving: Option<tokio::task::JoinHandle<Option<Saved>>>,
        mut saved: Saved,
        position: u64,
    ) {
        if let Some(task) = saving {
            saved = task.await.ok().flatten().unwrap_or(saved);
        }
        if self.status.changes.load(Ordering::Relaxed) != saved.changes
            && let Some(saver) = self.saver()
        {
            saver.save(position).await;
        }
    }
}
