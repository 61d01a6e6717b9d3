//! Keeps the route table in step with the store: a bulk load at start, then the change
//! feed, polled and woken early by the store's in-process hint when there is one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use shortlink_store::{RouteSource, StoreError};
use tracing::{info, warn};

use crate::domains::DomainSet;
use crate::routes::RouteTable;

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

/// The background service that loads and follows routes.
pub struct RouteSync {
    store: Arc<dyn RouteSource>,
    table: Arc<RouteTable>,
    domains: Arc<DomainSet>,
    status: Arc<SyncStatus>,
    poll: Duration,
    page: usize,
}

impl RouteSync {
    /// A sync for `table` and `domains` from `store`, polling every `poll`, loading `page`
    /// links at a time.
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
        }
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

    /// Loads every route; removes routes that are no longer stored when `prune` is set.
    /// Returns the feed position the table now reflects.
    pub async fn full_load(&self, prune: bool) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        self.refresh_domains().await?;
        // Take the head first: anything written during the load is replayed afterwards.
        let head = self.store.feed_head().await?;
        let mut cursor = None;
        let mut seen = prune.then(HashSet::new);
        let mut loaded = 0usize;
        loop {
            let page = self.store.routes_page(cursor, self.page).await?;
            for link in &page.links {
                if self.table.upsert(link) {
                    loaded += 1;
                }
                if let Some(seen) = seen.as_mut() {
                    seen.insert(self.table.key(&link.domain, link.code.as_str()));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if let Some(seen) = seen {
            self.table.retain(|k| seen.contains(k));
        }
        info!(
            routes = loaded,
            ms = started.elapsed().as_millis() as u64,
            "route table loaded"
        );
        Ok(head)
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

    async fn initial_load(&self, shutdown: &mut ShutdownWatch) -> Option<u64> {
        loop {
            match self.full_load(false).await {
                Ok(position) => {
                    self.status.caught_up(position);
                    self.status.loaded.store(true, Ordering::Release);
                    return Some(position);
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
        let Some(mut position) = self.initial_load(&mut shutdown).await else {
            return;
        };
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
                _ = shutdown.changed() => return,
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
        }
    }
}
