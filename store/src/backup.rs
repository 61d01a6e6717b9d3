//! Backups: what a store holds, as backend-neutral records, so a backup of one backend
//! restores into either (the way from `serve` on SQLite to a cluster on CQL).
//!
//! Small, rarely changing kinds (users, keys, domains, certificates, webhooks) are read
//! and written through the other store traits; the bulky ones (links with their counts,
//! uploads, rollups, the click log) through [`BackupStore`], which every backend
//! implements. Transient state is left out: sessions, events and webhook deliveries,
//! click budgets' leases, ACME challenges and leases, the route feed, applied batch ids.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shortlink_core::{
    Issuance, Link, LinkId, MultipartPlan, RedirectStatus, Role, ShortCode, Targeting, Thumbnail,
    ThumbnailState, Upload, UploadState, UserId,
};

use crate::StoreError;

/// The backup format this build writes and reads; a newer one is refused.
pub const FORMAT: u32 = 1;

/// One line of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// First line: what wrote the backup.
    Header(Header),
    /// The installation's code salt and URL-signing key (hex).
    Installation {
        /// Salts generated codes.
        code_salt: u64,
        /// Signs URLs the control plane hands out, 32 bytes in hex.
        signing_key: SecretText,
    },
    /// A user, with the hash of their sign-in password.
    User(UserRecord),
    /// An API key (its hash, never its text).
    ApiKey(KeyRecord),
    /// A registered custom domain.
    Domain(DomainRecord),
    /// A TLS certificate with its private key.
    Certificate(CertificateRecord),
    /// Where a name's automatic issuance stands.
    Issuance(Issuance),
    /// A webhook endpoint with its signing secrets (its delivery state starts afresh).
    Webhook(WebhookRecord),
    /// An entry of the admins' audit log.
    Audit(AuditRecord),
    /// A link with every field, its click count included.
    Link(LinkRecord),
    /// An upload's metadata.
    Upload(UploadRecord),
    /// A link's clicks in one UTC hour.
    RollupHour(CountRow),
    /// A link's clicks in one UTC day by one value of one dimension (`:bot` rows count
    /// only bots, see [`crate::rollup`]).
    RollupDay(DayRow),
    /// An account's clicks in one UTC hour (`id` is the owner).
    OwnerHour(CountRow),
    /// An account's clicks on one link in one UTC day.
    OwnerLinkDay(OwnerLinkDayRow),
    /// A link's human visitors in one UTC hour (a sketch, see [`crate::visitors`]).
    VisitorsHour(SketchRow),
    /// A link's human visitors in one UTC day.
    VisitorsDay(SketchRow),
    /// One logged row of raw clicks: the lines of [`crate::rollup::encode_log`].
    ClickLog(ClickLogRow),
    /// A stored object (an upload's bytes or a thumbnail); its bytes follow in
    /// [`Record::ObjectChunk`]s when `included`, else it is a reference to an object
    /// already where the restored installation reads its objects (S3).
    Object(ObjectRecord),
    /// The next bytes of the last [`Record::Object`], base64.
    ObjectChunk {
        /// The bytes.
        data: String,
    },
    /// Last line: how many records came before it, so a cut-off file is told apart.
    End {
        /// Records before this one, the header included.
        records: u64,
    },
}

impl Record {
    /// The kind's name, as written in the `type` field (for progress and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Header(_) => "header",
            Record::Installation { .. } => "installation",
            Record::User(_) => "user",
            Record::ApiKey(_) => "api_key",
            Record::Domain(_) => "domain",
            Record::Certificate(_) => "certificate",
            Record::Issuance(_) => "issuance",
            Record::Webhook(_) => "webhook",
            Record::Audit(_) => "audit",
            Record::Link(_) => "link",
            Record::Upload(_) => "upload",
            Record::RollupHour(_) => "rollup_hour",
            Record::RollupDay(_) => "rollup_day",
            Record::OwnerHour(_) => "owner_hour",
            Record::OwnerLinkDay(_) => "owner_link_day",
            Record::VisitorsHour(_) => "visitors_hour",
            Record::VisitorsDay(_) => "visitors_day",
            Record::ClickLog(_) => "click_log",
            Record::Object(_) => "object",
            Record::ObjectChunk { .. } => "object_chunk",
            Record::End { .. } => "end",
        }
    }
}

/// Text that is a secret: written and read like a string, left out of `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What wrote a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The writer's version.
    pub version: String,
    /// The backend it was read from (`embedded` or `cql`).
    pub backend: String,
    /// When the snapshot was taken, Unix seconds.
    pub created_at: i64,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Id in the backed-up store.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// Sign-in password hash (PHC string).
    pub password_hash: Option<String>,
}

/// An API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// Its user's id in the backed-up store.
    pub user_id: UserId,
    /// Label.
    pub label: String,
    /// First characters.
    pub prefix: String,
    /// Scope bits as stored.
    pub scopes: u8,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
}

/// A custom domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// Host name.
    pub name: String,
    /// Users allowed on it (`None`: everyone), by id in the backed-up store.
    pub users: Option<Vec<UserId>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Its own HTTP→HTTPS redirect setting.
    pub redirect_http: Option<bool>,
    /// Its own HSTS max-age.
    pub hsts_max_age_seconds: Option<u64>,
    /// Where visitors of its gone links go.
    pub fallback_url: Option<String>,
}

/// A certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// First DNS name.
    pub name: String,
    /// Chain, PEM.
    pub chain_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("name", &self.name)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A webhook endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Public id.
    pub id: String,
    /// Its owner's id in the backed-up store.
    pub user_id: UserId,
    /// Where events go.
    pub url: String,
    /// Event kinds, comma-separated ('' for every kind).
    pub events: String,
    /// Whether it is on.
    pub enabled: bool,
    /// Why the dispatcher turned it off.
    pub disabled_reason: Option<String>,
    /// Signing secret.
    pub secret: String,
    /// Secret before the last rotation.
    pub previous_secret: Option<String>,
    /// Unix seconds.
    pub previous_until: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// Who acted (id in the backed-up store).
    pub actor: UserId,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// More about it.
    pub detail: String,
}

/// A link with every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Id in the backed-up store (the restoring store may give it another).
    pub id: LinkId,
    /// Domain ('' for the default one).
    pub domain: String,
    /// Code.
    pub code: String,
    /// Whether the code was chosen.
    pub custom_alias: bool,
    /// Owner's id in the backed-up store.
    pub owner: UserId,
    /// Target.
    pub url: String,
    /// Redirect status.
    pub redirect: RedirectStatus,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Click cap.
    pub max_clicks: Option<u64>,
    /// Clicks counted.
    pub clicks: u64,
    /// Tags.
    pub tags: Vec<String>,
    /// Turned off.
    pub disabled: bool,
    /// Password hash (PHC string).
    pub password_hash: Option<String>,
    /// Targeting rules.
    pub targeting: Option<Targeting>,
    /// An admin's reason for disabling it.
    pub moderation: Option<String>,
    /// Fallback URL.
    pub fallback_url: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<Link> for LinkRecord {
    fn from(l: Link) -> Self {
        LinkRecord {
            id: l.id,
            domain: l.domain,
            code: l.code.into_string(),
            custom_alias: l.custom_alias,
            owner: l.owner,
            url: l.url,
            redirect: l.redirect,
            expires_at: l.expires_at,
            max_clicks: l.max_clicks,
            clicks: l.clicks,
            tags: l.tags,
            disabled: l.disabled,
            password_hash: l.password_hash,
            targeting: l.targeting,
            moderation: l.moderation,
            fallback_url: l.fallback_url,
            created_at: l.created_at,
            updated_at: l.updated_at,
        }
    }
}

impl From<LinkRecord> for Link {
    fn from(l: LinkRecord) -> Self {
        Link {
            id: l.id,
            domain: l.domain,
            code: ShortCode::from_stored(l.code),
            custom_alias: l.custom_alias,
            owner: l.owner,
            url: l.url,
            redirect: l.redirect,
            expires_at: l.expires_at,
            max_clicks: l.max_clicks,
            clicks: l.clicks,
            tags: l.tags,
            disabled: l.disabled,
            password_hash: l.password_hash,
            targeting: l.targeting,
            moderation: l.moderation,
            fallback_url: l.fallback_url,
            created_at: l.created_at,
            updated_at: l.updated_at,
        }
    }
}

/// An upload's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Id.
    pub id: String,
    /// Owner's id in the backed-up store.
    pub owner: UserId,
    /// File name.
    pub filename: String,
    /// Content type.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Object key.
    pub object_key: String,
    /// Its short link's code.
    pub code: Option<String>,
    /// Pending or complete.
    pub state: UploadState,
    /// Thumbnail progress.
    pub thumbnail_state: ThumbnailState,
    /// Thumbnails made.
    pub thumbnails: Vec<Thumbnail>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// A multipart upload's plan (absent in backups of versions without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<MultipartPlan>,
    /// Downloads counted (absent in backups of versions without the count).
    #[serde(default)]
    pub downloads: u64,
}

impl From<Upload> for UploadRecord {
    fn from(u: Upload) -> Self {
        UploadRecord {
            id: u.id,
            owner: u.owner,
            filename: u.filename,
            content_type: u.content_type,
            size: u.size,
            sha256: u.sha256,
            object_key: u.object_key,
            code: u.code,
            state: u.state,
            thumbnail_state: u.thumbnail_state,
            thumbnails: u.thumbnails,
            created_at: u.created_at,
            expires_at: u.expires_at,
            multipart: u.multipart,
            downloads: u.downloads,
        }
    }
}

impl From<UploadRecord> for Upload {
    fn from(u: UploadRecord) -> Self {
        Upload {
            id: u.id,
            owner: u.owner,
            filename: u.filename,
            content_type: u.content_type,
            size: u.size,
            sha256: u.sha256,
            object_key: u.object_key,
            code: u.code,
            state: u.state,
            thumbnail_state: u.thumbnail_state,
            thumbnails: u.thumbnails,
            created_at: u.created_at,
            expires_at: u.expires_at,
            multipart: u.multipart,
            downloads: u.downloads,
        }
    }
}

/// Clicks of one thing (a link, or an owner) in one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    /// The link's id, or the owner's.
    pub id: i64,
    /// The hour's first Unix second.
    pub hour: i64,
    /// Every click.
    pub total: i64,
    /// Bots' clicks.
    pub bots: i64,
}

/// A link's clicks in one UTC day by one value of one dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRow {
    /// The link.
    pub link_id: LinkId,
    /// The day's first Unix second.
    pub day: i64,
    /// The dimension.
    pub dim: String,
    /// Its value.
    pub key: String,
    /// Clicks.
    pub count: i64,
}

/// An account's clicks on one link in one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerLinkDayRow {
    /// The account.
    pub owner: UserId,
    /// The day's first Unix second.
    pub day: i64,
    /// The link.
    pub link_id: LinkId,
    /// Every click.
    pub total: i64,
    /// Bots' clicks.
    pub bots: i64,
}

/// A sketch of a link's visitors in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchRow {
    /// The link.
    pub link_id: LinkId,
    /// The hour's or day's first Unix second.
    pub at: i64,
    /// The sketch's stored form ([`crate::visitors::Visitors::to_bytes`]), base64.
    pub sketch: String,
}

impl SketchRow {
    /// The row of `link`'s sketch `bytes` at `at`.
    pub fn new(link_id: LinkId, at: i64, bytes: &[u8]) -> SketchRow {
        use base64::Engine;
        SketchRow {
            link_id,
            at,
            sketch: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The sketch's stored form; `None` when it is not base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.sketch)
            .ok()
    }
}

/// One logged row of raw clicks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickLogRow {
    /// The account whose clicks these are (`None`: a row from before the log was kept
    /// per account, of any accounts).
    pub owner: Option<UserId>,
    /// When it was logged, Unix milliseconds.
    pub at_ms: i64,
    /// The clicks, [`crate::rollup::encode_log`]'s lines.
    pub lines: String,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content type.
    pub content_type: String,
    /// Whether its bytes follow.
    pub included: bool,
}

/// The bulky kinds a backend scans for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// [`Record::Link`]s.
    Links,
    /// [`Record::Upload`]s.
    Uploads,
    /// [`Record::RollupHour`]s.
    RollupHour,
    /// [`Record::RollupDay`]s.
    RollupDay,
    /// [`Record::OwnerHour`]s.
    OwnerHour,
    /// [`Record::OwnerLinkDay`]s.
    OwnerLinkDay,
    /// [`Record::VisitorsHour`]s.
    VisitorsHour,
    /// [`Record::VisitorsDay`]s.
    VisitorsDay,
    /// [`Record::ClickLog`]s.
    ClickLog,
}

impl Table {
    /// Every table, in the order a backup holds them: links before what refers to them.
    pub const ALL: [Table; 9] = [
        Table::Links,
        Table::Uploads,
        Table::RollupHour,
        Table::RollupDay,
        Table::OwnerHour,
        Table::OwnerLinkDay,
        Table::VisitorsHour,
        Table::VisitorsDay,
        Table::ClickLog,
    ];
}

/// A page of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// Records of the scanned table.
    pub records: Vec<Record>,
    /// Where the next page starts; `None` after the last. Opaque to the reader.
    pub next: Option<Vec<u8>>,
}

/// What a backend does for backups beyond the other store traits.
#[async_trait]
pub trait BackupStore: Send + Sync {
    /// A consistent copy of the store to read a backup from: the embedded backend copies
    /// its database in one transaction (SQLite's `VACUUM INTO`) and opens the copy, which
    /// goes away when dropped. `None` from a backend without snapshots: the backup then
    /// reads the store itself (see ARCHITECTURE.md).
    async fn snapshot(&self) -> Result<Option<std::sync::Arc<dyn crate::Store>>, StoreError>;

    /// About `limit` records of `table` from `cursor` on (`None`: the first page); every
    /// row is in exactly one page of a full scan.
    async fn scan(
        &self,
        table: Table,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage, StoreError>;

    /// The backend's name for backups' headers: `embedded` or `cql`.
    fn backend_name(&self) -> &'static str;

    /// Whether the store holds links, uploads or clicks: a restore goes only into a store
    /// that holds none.
    async fn holds_data(&self) -> Result<bool, StoreError>;

    /// The id a restored link gets here (the backed-up one where this backend can keep
    /// it).
    fn restored_link_id(&self, link: &LinkRecord) -> LinkId;

    /// Writes records of the raw kinds — `Installation`, `User` (replacing a user of the
    /// same id), `Audit`, `Link`, the rollups, the visitor sketches and `ClickLog` — as
    /// they are, ids included (the caller maps them first). Counts add to what is stored;
    /// sketches merge. Any other kind is refused.
    async fn restore(&self, records: Vec<Record>) -> Result<(), StoreError>;
}

/// The error for a record [`BackupStore::restore`] does not take.
pub fn not_raw(record: &Record) -> StoreError {
    StoreError::corrupt(format!(
        "a {} record is not restored by the backend",
        record.kind()
    ))
}
