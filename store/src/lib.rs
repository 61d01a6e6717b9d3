//! Storage for shortlink: the traits every backend implements (the embedded SQLite one
//! in `shortlink-embedded`, the CQL one in `shortlink-cql`), the rollup arithmetic they
//! share, and one conformance suite that every backend must pass.

pub mod backup;
pub mod budget;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod rollup;
pub mod visitors;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use shortlink_core::{
    AccountStats, ApiKey, AuditEntry, Domain, DomainHttps, EnrichedClick, Event, EventId,
    EventRetention, Interval, Issuance, KEY_HASH_LEN, Link, LinkId, LinkPatch, LinkStats,
    NewAuditEntry, NewEvent, NewLink, Role, Session, StoredCertificate, Targeting, Thumbnail,
    ThumbnailState, Upload, User, UserId,
};
use thiserror::Error;
use tokio::sync::watch;

pub use backup::BackupStore;
pub use budget::{ClickBudget, LeaseGrant, LeaseRequest};
pub use webhooks::WebhookStore;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The (domain, code) pair is already used by another link.
    #[error("code '{0}' is already taken")]
    CodeTaken(String),
    /// A user with this name exists.
    #[error("user name '{0}' is already taken")]
    UserExists(String),
    /// A domain with this name is registered.
    #[error("domain '{0}' is already registered")]
    DomainExists(String),
    /// The referenced user does not exist.
    #[error("user {0} does not exist")]
    NoSuchUser(UserId),
    /// The backend failed (I/O, corruption, a bug); for logs, not users.
    #[error("storage backend failed: {0}")]
    Backend(#[source] BackendError),
    /// The owner's uploads would take more than their quota of bytes.
    #[error("the owner's uploads would take {needed} bytes, over the quota of {quota}")]
    OverQuota {
        /// Bytes stored and reserved, this upload included.
        needed: u64,
        /// The quota.
        quota: u64,
    },
    /// The store did not answer in time (a node lost or overloaded): a change may or may
    /// not have been made, and trying again is safe.
    #[error("storage did not answer in time: {0}")]
    Unavailable(#[source] BackendError),
    /// The store was shut down.
    #[error("store is shut down")]
    Closed,
}

impl StoreError {
    /// A backend failure caused by `source` (a driver's, SQLite's or the system's error),
    /// kept whole: [`std::error::Error::source`] gives it back.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(BackendError {
            context: None,
            source: Some(Arc::new(source)),
        })
    }

    /// The store did not answer `source`'s request in time.
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Unavailable(BackendError {
            context: None,
            source: Some(Arc::new(source)),
        })
    }

    /// A backend failure caused by `source` while doing `context`.
    pub fn backend_in(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Backend(BackendError {
            context: Some(context.into()),
            source: Some(Arc::new(source)),
        })
    }

    /// A backend failure with no error underneath: stored data the backend cannot read,
    /// a state it cannot be in.
    pub fn corrupt(what: impl Into<String>) -> StoreError {
        StoreError::Backend(BackendError {
            context: Some(what.into()),
            source: None,
        })
    }
}

/// Why a backend failed: what it was doing and the error underneath, both kept. Its text
/// shows both (logs print errors by their text); `source()` gives the error itself.
#[derive(Debug, Clone)]
pub struct BackendError {
    context: Option<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.context, &self.source) {
            (Some(context), Some(source)) => write!(f, "{context}: {source}"),
            (Some(context), None) => f.write_str(context),
            (None, Some(source)) => write!(f, "{source}"),
            (None, None) => f.write_str("unknown failure"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Equal when they read the same (the underlying errors are not comparable).
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for BackendError {}

/// What `create_link` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The new link, or the existing plain link it deduplicated to.
    pub link: Link,
    /// True when an existing link was returned instead of creating one.
    pub existed: bool,
}

/// A listing request: the owner's links, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size (the caller bounds it).
    pub limit: usize,
    /// Only links with an id below this one (the previous page's cursor).
    pub before_id: Option<LinkId>,
    /// Only links carrying this tag.
    pub tag: Option<String>,
    /// Only links whose URL or code contains this text (case-insensitive).
    pub q: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPage {
    /// The links, newest first.
    pub items: Vec<Link>,
    /// The id to pass as `before_id` for the next page, if there may be more.
    pub next_before_id: Option<LinkId>,
}

impl LinkPage {
    /// The page of `limit` links out of `items`, newest first, fetched one beyond the
    /// limit: that one's presence says there is a next page.
    pub fn from_overfetch(mut items: Vec<Link>, limit: usize) -> LinkPage {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_before_id = if more {
            items.last().map(|l| l.id)
        } else {
            None
        };
        LinkPage {
            items,
            next_before_id,
        }
    }
}

/// One entry of the route change feed: the current state of a (domain, code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// Position in the feed; strictly increasing.
    pub seq: u64,
    /// The domain of the changed route.
    pub domain: String,
    /// The code of the changed route.
    pub code: String,
    /// The link as it is now, or `None` if it was deleted.
    pub link: Option<Link>,
}

/// A read of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Changes after the requested position, oldest first.
    pub changes: Vec<RouteChange>,
    /// True when the requested position is older than the feed's retention: the reader
    /// missed changes and must reload every route.
    pub reset: bool,
    /// The position to read from next time: the last change's, or further when the
    /// backend knows nothing older can appear any more.
    pub next: u64,
}

/// One of `count` disjoint parts of the bulk load's scan: a reader may scan the parts at
/// once. A backend that cannot split its scan puts every link in part 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePart {
    /// Which part, below `count`.
    pub index: u32,
    /// How many parts the scan is cut into (at least 1).
    pub count: u32,
}

impl RoutePart {
    /// The whole scan as one part.
    pub const WHOLE: RoutePart = RoutePart { index: 0, count: 1 };
}

/// One page of the bulk load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePage {
    /// Links, in the backend's scan order.
    pub links: Vec<Link>,
    /// Where the next page starts; `None` after the last page. Opaque to the reader.
    pub next: Option<Vec<u8>>,
}

/// A read of the event feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Events after the requested id, oldest first.
    pub events: Vec<Event>,
    /// The id to read after next time: the last event's, or further when the backend
    /// knows nothing older can appear any more.
    pub next: EventId,
}

/// Links: create, list, change, delete (one is read by [`RouteSource::get_link`]).
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// Creates a link. If `link.is_plain()` and the owner already has a plain link to the
    /// same URL on the same domain, returns that one with `existed = true`.
    /// Fails with [`StoreError::CodeTaken`] when the code is used on that domain.
    async fn create_link(&self, link: NewLink) -> Result<Created, StoreError>;

    /// The owner's links, newest first, filtered and paged.
    async fn list_links(&self, owner: UserId, query: &ListQuery) -> Result<LinkPage, StoreError>;

    /// Every owner's links (or `owner`'s), newest first, filtered by `domain` and the
    /// query, and paged: the moderation search of admins.
    async fn search_links(
        &self,
        owner: Option<UserId>,
        domain: Option<&str>,
        query: &ListQuery,
    ) -> Result<LinkPage, StoreError>;

    /// Applies `patch` to the owner's link; `None` if the owner has no such link.
    async fn update_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
        patch: LinkPatch,
    ) -> Result<Option<Link>, StoreError>;

    /// Deletes the owner's link; false if the owner has no such link.
    async fn delete_link(
        &self,
        owner: UserId,
        domain: &str,
        code: &str,
    ) -> Result<bool, StoreError>;

    /// A random value fixed at first start, salting generated codes for this installation.
    async fn installation_salt(&self) -> Result<u64, StoreError>;

    /// 32 random bytes fixed at first start, shared by every node on this store: the key
    /// that signs URLs the control plane hands out (presigned uploads).
    async fn installation_secret(&self) -> Result<[u8; 32], StoreError>;
}

/// What a proxy reads: one link by its route, the registered domains, and the route
/// change feed that keeps its route table in sync. Feed reads may lag writes by the
/// backend's settle time; a change's `link` is the link's state when read.
#[async_trait]
pub trait RouteSource: Send + Sync {
    /// The link at (domain, code), whoever owns it.
    async fn get_link(&self, domain: &str, code: &str) -> Result<Option<Link>, StoreError>;

    /// Every registered domain, by name.
    async fn list_domains(&self) -> Result<Vec<Domain>, StoreError>;

    /// The newest feed position; a reader that bulk-loads takes this first, then follows
    /// the feed from here.
    async fn feed_head(&self) -> Result<u64, StoreError>;

    /// About `limit` links of `part` from `cursor` on (`None`: the part's first page), for
    /// bulk loading: every link is in exactly one page of one part's scan.
    async fn routes_page(
        &self,
        part: RoutePart,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RoutePage, StoreError>;

    /// A value fixed when this store was first started (the installation salt, so treat
    /// it as secret): a saved route table is used only with the store it was read from.
    async fn installation_id(&self) -> Result<u64, StoreError>;

    /// Changes after position `after`, at most `limit`.
    async fn route_changes(&self, after: u64, limit: usize) -> Result<ChangeBatch, StoreError>;

    /// A watch that ticks when the feed moves, for readers in the same process; `None`
    /// where the backend cannot tell (readers then rely on polling).
    fn change_hint(&self) -> Option<watch::Receiver<u64>>;

    /// A value that changes whenever a stored certificate is put or deleted (0: none ever
    /// was): proxies read it often and list the certificates only when it moved.
    async fn certificates_version(&self) -> Result<u64, StoreError>;

    /// Every stored certificate, by name.
    async fn list_certificates(&self) -> Result<Vec<StoredCertificate>, StoreError>;
}

/// Users and API keys (stored only as hashes).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a user; [`StoreError::UserExists`] if the name is taken.
    async fn create_user(&self, name: &str, role: Role) -> Result<User, StoreError>;

    /// The user with this id.
    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The user with this name.
    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError>;

    /// Every user, by id.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Disables or re-enables a user; false if there is no such user.
    async fn set_user_disabled(&self, id: UserId, disabled: bool) -> Result<bool, StoreError>;

    /// Records an API key (its hash, never its text). Adding a hash that exists already
    /// is a no-op; [`StoreError::NoSuchUser`] if the user does not exist.
    async fn add_api_key(&self, key: ApiKey) -> Result<(), StoreError>;

    /// The key with this hash and the user it belongs to, whatever their state (the
    /// caller checks expiry and whether the user is disabled).
    async fn key_by_hash(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(ApiKey, User)>, StoreError>;

    /// The user's keys, or every key with `None`, oldest first.
    async fn list_api_keys(&self, user: Option<UserId>) -> Result<Vec<ApiKey>, StoreError>;

    /// The key with this public id ([`shortlink_core::api_key_id`]).
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Deletes a key: it is refused from then on. False if there was no such key.
    async fn delete_api_key(&self, key_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError>;

    /// Sets when a key stops working (`None`: never); false if there is no such key.
    async fn set_api_key_expiry(
        &self,
        key_hash: [u8; KEY_HASH_LEN],
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Records that a key authenticated a request at `at` (Unix seconds).
    async fn touch_api_key(&self, key_hash: [u8; KEY_HASH_LEN], at: i64) -> Result<(), StoreError>;

    /// Sets (or with `None` removes) a user's sign-in password hash (a PHC string);
    /// false if there is no such user.
    async fn set_user_password(
        &self,
        id: UserId,
        password_hash: Option<String>,
    ) -> Result<bool, StoreError>;

    /// The user with this name and their password hash, if they have one.
    async fn credentials(&self, name: &str) -> Result<Option<(User, Option<String>)>, StoreError>;

    /// Records a signed-in session; expired sessions of the same user may be dropped.
    async fn create_session(&self, session: Session) -> Result<(), StoreError>;

    /// The session with this token hash and its user, whatever their state.
    async fn session_by_hash(
        &self,
        token_hash: [u8; KEY_HASH_LEN],
    ) -> Result<Option<(Session, User)>, StoreError>;

    /// The user's sessions that have not expired, oldest first.
    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError>;

    /// Ends a session; false if there was no such session.
    async fn delete_session(&self, token_hash: [u8; KEY_HASH_LEN]) -> Result<bool, StoreError>;
}

/// The audit log of admin actions: append-only, read newest first.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry; returns it with its id.
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError>;

    /// Entries with an id below `before` (all with `None`), newest first, at most `limit`.
    async fn list_audit(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// What applying a click batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The batch was new and is now counted.
    Applied,
    /// A batch with this id was applied before; nothing changed.
    Duplicate,
    /// The batch is settled, but whether its counts were written is unknown: the call
    /// that claimed it ended without writing them (on CQL: the process holding them
    /// died or lost its writer slot). It is never applied again: the counts of these many clicks may be short,
    /// never doubled.
    Uncertain {
        /// Clicks of the batch whose counts may be short.
        clicks: u64,
    },
}

/// A stats query: one link, a half-open time range, a bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    /// The link.
    pub link_id: LinkId,
    /// Range start, Unix seconds (inclusive).
    pub from: i64,
    /// Range end, Unix seconds (exclusive).
    pub to: i64,
    /// Bucket size of the series.
    pub interval: Interval,
    /// Entries kept per top-N list.
    pub top: usize,
    /// Whether the top-N lists count bots' clicks (the totals and series always do).
    pub include_bots: bool,
}

/// An account-wide stats query: every link one user owns, a half-open time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountStatsQuery {
    /// The account.
    pub owner: UserId,
    /// Range start, Unix seconds (inclusive).
    pub from: i64,
    /// Range end, Unix seconds (exclusive).
    pub to: i64,
    /// Bucket size of the series.
    pub interval: Interval,
    /// Links kept in the top list.
    pub top: usize,
    /// Whether the top list counts bots' clicks (the totals and series always do).
    pub include_bots: bool,
}

/// A position in an owner's raw click log: after the `line`th click of a logged row.
/// What a row is differs by backend (SQLite: `position` is the row's id; CQL: the time it
/// was logged in ms, with `batch` its batch id); both read it back in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickCursor {
    /// The row's place in the log.
    pub position: i64,
    /// The row's batch id, where the position alone does not name the row.
    pub batch: String,
    /// Clicks of the row already read.
    pub line: u32,
}

/// Which raw clicks to read: an owner's, or one of its links', in the order logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickLogQuery {
    /// The account.
    pub owner: UserId,
    /// Only this link's clicks.
    pub link: Option<LinkId>,
    /// Where to start (`None`: the oldest click kept).
    pub after: Option<ClickCursor>,
    /// Most clicks returned.
    pub limit: usize,
}

/// A page of raw clicks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickPage {
    /// Each click, with the cursor just after it.
    pub clicks: Vec<(EnrichedClick, ClickCursor)>,
    /// (domain, code) of the page's links that still exist.
    pub links: HashMap<LinkId, (String, String)>,
    /// Where the next page starts; `None` when the log was read to its end. A page may
    /// hold fewer clicks than asked (even none) with a next page to read: each read is
    /// bounded in the rows it scans.
    pub next: Option<ClickCursor>,
}

/// Clicks: batched ingestion into raw rows and rollups, and stats from the rollups.
#[async_trait]
pub trait ClickStore: Send + Sync {
    /// Applies a batch atomically: raw clicks, hourly and daily rollups, link click counts
    /// and the batch id, all in one transaction. A batch id seen before is not applied again.
    /// Clicks of links that no longer exist are dropped.
    async fn ingest_clicks(
        &self,
        batch_id: &str,
        clicks: Vec<EnrichedClick>,
    ) -> Result<IngestOutcome, StoreError>;

    /// Called at shutdown once no batch is taken any more: a backend that holds something
    /// for this process's ingestion lets go of it (CQL: its count writer slot).
    async fn close_ingestion(&self) {}

    /// Statistics of one link, answered from rollups (cost grows with buckets, not clicks).
    async fn link_stats(&self, query: StatsQuery) -> Result<LinkStats, StoreError>;

    /// Statistics of an account, answered from its own rollups (written with the links'):
    /// clicks of links deleted since stay in the totals and leave the top list. The top
    /// list covers the whole UTC days the range touches.
    async fn account_stats(&self, query: AccountStatsQuery) -> Result<AccountStats, StoreError>;

    /// Raw clicks of an account (or one of its links) from the click log, oldest logged
    /// first, for the retention period.
    async fn owner_clicks(&self, query: ClickLogQuery) -> Result<ClickPage, StoreError>;
}

/// The per-user event log behind notifications. Ids grow in the order events are
/// written, across users: one id is a cursor both for a user's log and for the feed.
/// Reads (`user_events`, `event_feed`, `event_feed_head`) may lag writes by the
/// backend's settle time, never skip a written event, and never show one out of order.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events (in order); returns them with their ids and times.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;

    /// The user's events after `after`, oldest first, at most `limit`.
    async fn user_events(
        &self,
        user: UserId,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Every user's events after `after`, oldest first, at most `limit`: the feed each
    /// control plane's hub follows.
    async fn event_feed(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError>;

    /// The newest event id (0 when there is none).
    async fn event_feed_head(&self) -> Result<EventId, StoreError>;

    /// Drops events older than the retention's age and beyond its count per user, but
    /// not, for the count, events an enabled webhook endpoint of the user has yet to be
    /// delivered; returns how many were dropped.
    async fn prune_events(&self, retention: EventRetention) -> Result<u64, StoreError>;

    /// A watch that ticks when events are appended in this process; `None` where the
    /// backend cannot tell (followers then poll).
    fn event_hint(&self) -> Option<watch::Receiver<EventId>>;
}

/// A claimed thumbnail job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailJob {
    /// The upload to make thumbnails for.
    pub upload_id: String,
    /// How many times it was claimed, this time included.
    pub attempt: u32,
}

/// Where a page of an owner's uploads (newest first) continues: after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCursor {
    /// The last upload's creation time.
    pub created_at: i64,
    /// The last upload's id.
    pub id: String,
}

/// Uploads' metadata and their durable thumbnail jobs.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a new upload; with `queue_thumbnails`, queues its thumbnail job and with
    /// `event` appends it, all in one transaction. With a `quota`, refuses
    /// ([`StoreError::OverQuota`]) when the owner's uploads, pending ones counted at their
    /// declared size, would take more bytes with it (checked atomically on SQLite; on
    /// CQL, uploads recorded at the same moment by other control planes may pass
    /// together).
    async fn insert_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
        quota: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Bytes the owner's uploads take, pending ones at their declared size.
    async fn stored_bytes(&self, owner: UserId) -> Result<u64, StoreError>;

    /// The owner's uploads, newest first, after `after`.
    async fn list_uploads(
        &self,
        owner: UserId,
        after: Option<UploadCursor>,
        limit: usize,
    ) -> Result<Vec<Upload>, StoreError>;

    /// Removes an upload's record (its thumbnail job and download count too); the removed
    /// record as it was when removed, `None` if there was none. With `expired_by`, only if
    /// its expiry is at or before that time (the sweep: an expiry moved meanwhile keeps
    /// the upload). Its objects are the caller's to remove.
    async fn delete_upload(
        &self,
        id: &str,
        expired_by: Option<i64>,
    ) -> Result<Option<Upload>, StoreError>;

    /// Uploads whose `expires_at` is at or before `now`, oldest expiry first.
    async fn expired_uploads(&self, now: i64, limit: usize) -> Result<Vec<Upload>, StoreError>;

    /// Sets (or clears) a complete upload's expiry; false if there is no such complete
    /// upload.
    async fn set_upload_expiry(
        &self,
        id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Adds downloads to uploads' counts (an upload gone meanwhile is not brought back).
    async fn add_downloads(&self, counts: Vec<(String, u64)>) -> Result<(), StoreError>;

    /// Replaces a pending upload's record (same id) with `upload`: its completed one, or
    /// the same still pending with a later expiry (a multipart upload asking for more
    /// URLs); queues and appends like `insert_upload`. False (and nothing changed) if it
    /// is not pending any more.
    async fn complete_upload(
        &self,
        upload: Upload,
        queue_thumbnails: bool,
        event: Option<NewEvent>,
    ) -> Result<bool, StoreError>;

    /// The upload with this id.
    async fn get_upload(&self, id: &str) -> Result<Option<Upload>, StoreError>;

    /// Claims the oldest due thumbnail job, leasing it for `lease_secs`.
    async fn claim_thumbnail_job(
        &self,
        lease_secs: i64,
    ) -> Result<Option<ThumbnailJob>, StoreError>;

    /// Records a job's outcome, removes the job and appends `event`, in one transaction.
    async fn finish_thumbnail_job(
        &self,
        upload_id: &str,
        state: ThumbnailState,
        thumbnails: Vec<Thumbnail>,
        event: Option<NewEvent>,
    ) -> Result<(), StoreError>;
}

/// Targeting rules as the JSON text both backends store them in (`None` stays `NULL`).
pub fn targeting_json(targeting: &Option<Targeting>) -> Result<Option<String>, StoreError> {
    targeting
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(StoreError::backend)
}

/// Custom domains. A handful per installation: proxies read them whole
/// ([`RouteSource::list_domains`]).
#[async_trait]
pub trait DomainStore: Send + Sync {
    /// Registers a domain; [`StoreError::DomainExists`] if it is registered already.
    async fn create_domain(&self, domain: Domain) -> Result<(), StoreError>;

    /// The registered domain with this (normalized) name.
    async fn get_domain(&self, name: &str) -> Result<Option<Domain>, StoreError>;

    /// Unregisters a domain (its links stay stored, unreachable until it is registered
    /// again); false if it was not registered.
    async fn delete_domain(&self, name: &str) -> Result<bool, StoreError>;

    /// Sets a registered domain's own HTTPS behaviour; false if there is no such domain.
    /// Proxies pick it up with the domains, at their next poll.
    async fn set_domain_https(&self, name: &str, https: DomainHttps) -> Result<bool, StoreError>;

    /// Sets (or with `None` removes) a registered domain's fallback URL; false if there is
    /// no such domain. Proxies pick it up with the domains, at their next poll.
    async fn set_domain_fallback(
        &self,
        name: &str,
        fallback: Option<String>,
    ) -> Result<bool, StoreError>;
}

/// TLS certificates every proxy serves (uploaded by an operator, or issued by ACME); read
/// back through [`RouteSource`].
#[async_trait]
pub trait CertificateStore: Send + Sync {
    /// Stores `cert` under its name, replacing the one stored there, and moves the
    /// certificates' version on.
    async fn put_certificate(&self, cert: StoredCertificate) -> Result<(), StoreError>;

    /// Removes the certificate stored under `name` (and moves the version on); false if
    /// there was none.
    async fn delete_certificate(&self, name: &str) -> Result<bool, StoreError>;
}

/// Reads a stored issuance record (JSON); one that cannot be read (written by a newer
/// version, or damaged) is skipped with a warning rather than failing every reader.
pub fn parse_issuance(json: &str) -> Option<Issuance> {
    serde_json::from_str(json)
        .inspect_err(|error| tracing::warn!(%error, "unreadable ACME issuance record skipped"))
        .ok()
}

/// What automatic issuance (ACME) shares between the proxies of an installation: the
/// answers to pending challenges (any proxy may be asked), one lease per name (one proxy
/// orders), the account, and where each name's issuance stands.
#[async_trait]
pub trait AcmeStore: CertificateStore + RouteSource {
    /// Stores the answer to a challenge under `key` until `expires_at` (Unix seconds).
    async fn put_acme_challenge(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The answer stored under `key`, unless it expired before `now`.
    async fn acme_challenge(&self, key: &str, now: i64) -> Result<Option<String>, StoreError>;

    /// Removes the answer stored under `key` (none: no error).
    async fn delete_acme_challenge(&self, key: &str) -> Result<(), StoreError>;

    /// Takes the lease on ordering `name` for `holder` until `until` when it is free,
    /// expired at `now`, or already `holder`'s (then renewed); true when `holder` has it.
    async fn lease_acme_order(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;

    /// Gives up `holder`'s lease on `name` (someone else's is left alone).
    async fn release_acme_order(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// The account credentials (JSON, with the account's private key) kept for the ACME
    /// directory at `directory`.
    async fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError>;

    /// Keeps the account credentials for `directory`, replacing any.
    async fn put_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError>;

    /// Records where a name's issuance stands, replacing the earlier record.
    async fn put_issuance(&self, issuance: Issuance) -> Result<(), StoreError>;

    /// The issuance record of `name`.
    async fn issuance(&self, name: &str) -> Result<Option<Issuance>, StoreError>;

    /// Forgets the issuance record of `name` (none: no error): a name no longer wanted,
    /// or whose certificate an operator imported or deleted.
    async fn delete_issuance(&self, name: &str) -> Result<(), StoreError>;

    /// Every name's issuance record, by name (a record that cannot be read is skipped,
    /// with a warning).
    async fn list_issuances(&self) -> Result<Vec<Issuance>, StoreError>;
}

/// Everything a shortlink node needs from storage.
pub trait Store:
    LinkStore
    + RouteSource
    + AccountStore
    + AuditStore
    + ClickStore
    + EventStore
    + UploadStore
    + DomainStore
    + ClickBudget
    + WebhookStore
    + CertificateStore
    + AcmeStore
    + BackupStore
{
}

impl<
    T: LinkStore
        + RouteSource
        + AccountStore
        + AuditStore
        + ClickStore
        + EventStore
        + UploadStore
        + DomainStore
        + ClickBudget
        + WebhookStore
        + CertificateStore
        + AcmeStore
        + BackupStore,
> Store for T
{
}
