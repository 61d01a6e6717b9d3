//! Backup and restore of a whole installation: the store's records
//! ([`shortlink_store::backup`]) and the objects, as one zstd-compressed stream of JSON
//! lines. The same stream is a file (`shortlink backup FILE`, `shortlink restore FILE`)
//! and an HTTP body (`GET /api/v1/admin/backup`, `POST /api/v1/admin/restore`).
//!
//! A restore goes into an installation that holds no links, uploads or clicks (a fresh
//! one, perhaps with its bootstrap admin). Ids are mapped as they go: a user whose name
//! exists becomes that user, a user id taken by another name gets a new one, and each
//! backend chooses restored links' ids ([`BackupStore::restored_link_id`]); everything
//! that refers to them follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Serialize;
use shortlink_core::time_util::now_unix;
use shortlink_core::webhook::DeliveryState;
use shortlink_core::{
    ApiKey, Domain, DomainHttps, EnrichedClick, LinkId, Scopes, StoredCertificate, ThumbnailState,
    Upload, UploadState, UserId, Webhook,
};
use shortlink_objects::{ObjectError, ObjectStore, ObjectWriter, check_key};
use shortlink_store::backup::{
    CertificateRecord, ClickLogRow, DomainRecord, FORMAT, Header, KeyRecord, ObjectRecord, Record,
    SecretText, Table, UploadRecord, UserRecord, WebhookRecord,
};
use shortlink_store::rollup::{decode_log, encode_log};
use shortlink_store::webhooks::{kinds_text, parse_kinds};
use shortlink_store::{Store, StoreError};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::openapi::api_errors;
use crate::state::AppState;
use crate::uploads::BinaryBody;

/// Records read per scan of a bulky table.
const SCAN_PAGE: usize = 1000;
/// Raw records written to the store at once.
const RESTORE_BATCH: usize = 5000;
/// Bytes of raw records written to the store at once, at most about.
const RESTORE_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Object bytes per chunk record (base64 makes it 1 MiB).
const OBJECT_CHUNK: usize = 768 * 1024;
/// Compressed bytes gathered before they are handed on.
const OUTPUT_CHUNK: usize = 256 * 1024;
/// The longest line a restore reads: an object chunk or a click log row is far shorter.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// How often progress is reported, in records.
const PROGRESS_EVERY: u64 = 100_000;

/// Why a backup or restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object storage failed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// The stream is not a backup this build reads.
    #[error("not a readable backup: {0}")]
    Format(String),
    /// The installation already holds data.
    #[error(
        "the installation already holds links, uploads or clicks: a restore goes into a fresh one"
    )]
    NotEmpty,
    /// Reading or writing the stream failed.
    #[error("backup stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The other end of the stream went away.
    #[error("the backup stream was closed")]
    Closed,
}

/// What a run did so far: records by kind, and the stream's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records by kind.
    pub records: BTreeMap<&'static str, u64>,
    /// Records in all.
    pub total: u64,
    /// Compressed bytes written or read.
    pub bytes: u64,
    /// Objects named in the backup that were not found (left out, or not in the target).
    pub missing_objects: u64,
    /// Raw clicks left out: of links no longer known, in rows from before the log was
    /// kept per account.
    pub dropped_clicks: u64,
}

impl Progress {
    fn count(&mut self, record: &Record) {
        *self.records.entry(record.kind()).or_default() += 1;
        self.total += 1;
    }

    /// One line for logs and terminals: the totals by kind.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .records
            .iter()
            .filter(|(kind, _)| !matches!(**kind, "object_chunk" | "header" | "end"))
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        format!(
            "{} records, {:.1} MiB ({})",
            self.total,
            self.bytes as f64 / 1_048_576.0,
            kinds.join(", ")
        )
    }
}

/// How a backup treats objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectsMode {
    /// Their bytes go into the backup.
    Include,
    /// Only their keys and sizes: the restored installation reads the same bucket.
    Reference,
}

impl ObjectsMode {
    /// Bytes for objects on the local disk, references for objects on S3.
    pub fn default_for(objects: &dyn ObjectStore) -> ObjectsMode {
        if objects.kind() == "s3" {
            ObjectsMode::Reference
        } else {
            ObjectsMode::Include
        }
    }
}

/// Compresses records into chunks sent to `out`.
struct Encoder {
    zstd: zstd::stream::write::Encoder<'static, Vec<u8>>,
    out: mpsc::Sender<Bytes>,
    progress: Progress,
    report: Box<dyn FnMut(&Progress) + Send>,
}

impl Encoder {
    async fn put(&mut self, record: &Record) -> Result<(), BackupError> {
        serde_json::to_writer(&mut self.zstd, record)
            .map_err(|e| BackupError::Format(e.to_string()))?;
        self.zstd.write_all(b"\n")?;
        self.progress.count(record);
        if self.progress.total.is_multiple_of(PROGRESS_EVERY) {
            (self.report)(&self.progress);
        }
        if self.zstd.get_ref().len() >= OUTPUT_CHUNK {
            let chunk = std::mem::take(self.zstd.get_mut());
            self.send(chunk).await?;
        }
        Ok(())
    }

    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), BackupError> {
        self.progress.bytes += chunk.len() as u64;
        self.out
            .send(Bytes::from(chunk))
            .await
            .map_err(|_| BackupError::Closed)
    }

    async fn finish(mut self) -> Result<Progress, BackupError> {
        let end = Record::End {
            records: self.progress.total,
        };
        self.put(&end).await?;
        let rest = self.zstd.finish()?;
        let mut progress = std::mem::take(&mut self.progress);
        progress.bytes += rest.len() as u64;
        self.out
            .send(Bytes::from(rest))
            .await
            .map_err(|_| BackupError::Closed)?;
        (self.report)(&progress);
        Ok(progress)
    }
}

/// Writes a backup of `store` and `objects` as compressed chunks into `out`, reporting
/// progress every [`PROGRESS_EVERY`] records and at the end. The store is read from a
/// snapshot where its backend has one.
pub async fn backup(
    store: &Arc<dyn Store>,
    objects: &dyn ObjectStore,
    mode: ObjectsMode,
    out: mpsc::Sender<Bytes>,
    report: impl FnMut(&Progress) + Send + 'static,
) -> Result<Progress, BackupError> {
    let created_at = now_unix();
    let source = store.snapshot().await?.unwrap_or_else(|| store.clone());
    let mut enc = Encoder {
        zstd: zstd::stream::write::Encoder::new(Vec::with_capacity(OUTPUT_CHUNK * 2), 3)?,
        out,
        progress: Progress::default(),
        report: Box::new(report),
    };
    enc.put(&Record::Header(Header {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        backend: store.backend_name().into(),
        created_at,
    }))
    .await?;
    enc.put(&Record::Installation {
        code_salt: source.installation_salt().await?,
        signing_key: SecretText(hex::encode(source.installation_secret().await?)),
    })
    .await?;
    for user in source.list_users().await? {
        let password_hash = source
            .credentials(&user.name)
            .await?
            .and_then(|(_, hash)| hash);
        enc.put(&Record::User(UserRecord {
            id: user.id,
            name: user.name,
            role: user.role,
            created_at: user.created_at,
            disabled: user.disabled,
            password_hash,
        }))
        .await?;
    }
    for key in source.list_api_keys(None).await? {
        enc.put(&Record::ApiKey(KeyRecord {
            key_hash: hex::encode(key.key_hash),
            user_id: key.user_id,
            label: key.label,
            prefix: key.prefix,
            scopes: key.scopes.bits(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
        }))
        .await?;
    }
    for domain in source.list_domains().await? {
        enc.put(&Record::Domain(DomainRecord {
            name: domain.name,
            users: domain.users,
            created_at: domain.created_at,
            redirect_http: domain.https.redirect_http,
            hsts_max_age_seconds: domain.https.hsts_max_age_seconds,
            fallback_url: domain.fallback_url,
        }))
        .await?;
    }
    for cert in source.list_certificates().await? {
        enc.put(&Record::Certificate(CertificateRecord {
            name: cert.name,
            chain_pem: cert.chain_pem,
            key_pem: cert.key_pem,
            not_after: cert.not_after,
            updated_at: cert.updated_at,
        }))
        .await?;
    }
    for issuance in source.list_issuances().await? {
        enc.put(&Record::Issuance(issuance)).await?;
    }
    for hook in source.list_webhooks(None).await? {
        enc.put(&Record::Webhook(WebhookRecord {
            events: kinds_text(&hook),
            id: hook.id,
            user_id: hook.user_id,
            url: hook.url,
            enabled: hook.enabled,
            disabled_reason: hook.disabled_reason,
            secret: hook.secret,
            previous_secret: hook.previous_secret,
            previous_until: hook.previous_until,
            created_at: hook.created_at,
            updated_at: hook.updated_at,
        }))
        .await?;
    }
    // The audit log is read newest first and written oldest first, so a restore appends
    // it in order.
    let mut audit = Vec::new();
    let mut before = None;
    loop {
        let page = source.list_audit(before, SCAN_PAGE).await?;
        let full = page.len() == SCAN_PAGE;
        before = page.last().map(|e| e.id);
        audit.extend(page);
        if !full {
            break;
        }
    }
    for entry in audit.into_iter().rev() {
        enc.put(&Record::Audit(shortlink_store::backup::AuditRecord {
            at: entry.at,
            actor: entry.entry.actor,
            action: entry.entry.action,
            target: entry.entry.target,
            detail: entry.entry.detail,
        }))
        .await?;
    }
    for table in Table::ALL {
        let mut cursor = None;
        loop {
            let page = source.scan(table, cursor, SCAN_PAGE).await?;
            for record in &page.records {
                // An upload still being sent belongs to this store's URLs and multipart
                // ids: it cannot be finished anywhere else, so it is left out.
                if let Record::Upload(upload) = record
                    && upload.state == UploadState::Pending
                {
                    continue;
                }
                enc.put(record).await?;
                if let Record::Upload(upload) = record {
                    put_objects(&mut enc, objects, mode, upload).await?;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    drop(source);
    enc.finish().await
}

/// The upload's object and thumbnails, with their bytes in `Include` mode.
async fn put_objects(
    enc: &mut Encoder,
    objects: &dyn ObjectStore,
    mode: ObjectsMode,
    upload: &UploadRecord,
) -> Result<(), BackupError> {
    let keys = std::iter::once((upload.object_key.as_str(), upload.content_type.as_str())).chain(
        upload
            .thumbnails
            .iter()
            .map(|t| (t.key.as_str(), "image/png")),
    );
    for (key, content_type) in keys {
        let Some(meta) = objects.head(key).await? else {
            // A pending upload's object is not there yet.
            enc.progress.missing_objects += 1;
            continue;
        };
        let included = mode == ObjectsMode::Include;
        enc.put(&Record::Object(ObjectRecord {
            key: key.into(),
            size: meta.size,
            content_type: content_type.into(),
            included,
        }))
        .await?;
        if !included {
            continue;
        }
        let mut reader = objects.open_read(key).await?;
        let mut buf = vec![0u8; OBJECT_CHUNK];
        let mut sent = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = reader.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            sent += filled as u64;
            enc.put(&Record::ObjectChunk {
                data: BASE64.encode(&buf[..filled]),
            })
            .await?;
        }
        if sent != meta.size {
            return Err(BackupError::Format(format!(
                "object '{key}' changed while it was read ({sent} bytes, {} expected)",
                meta.size
            )));
        }
    }
    Ok(())
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Decodes a backup stream on a blocking thread, sending its records as they are read.
fn decode(
    reader: impl Read + Send + 'static,
    read: Arc<std::sync::atomic::AtomicU64>,
) -> mpsc::Receiver<Result<Record, BackupError>> {
    // Few lines in flight: a line may be long (up to `MAX_LINE`).
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<(), BackupError> {
            let counting = Counting {
                inner: reader,
                read,
            };
            let decoder = zstd::stream::read::Decoder::new(counting)
                .map_err(|e| BackupError::Format(format!("not zstd: {e}")))?;
            let mut lines = std::io::BufReader::with_capacity(1 << 20, decoder);
            let mut line = Vec::new();
            let mut number = 0u64;
            loop {
                line.clear();
                let n = (&mut lines)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| BackupError::Format(format!("unreadable stream: {e}")))?;
                if n == 0 {
                    return Ok(());
                }
                number += 1;
                if line.len() > MAX_LINE {
                    return Err(BackupError::Format(format!(
                        "line {number} is longer than {MAX_LINE} bytes"
                    )));
                }
                let record: Record = serde_json::from_slice(&line)
                    .map_err(|e| BackupError::Format(format!("line {number}: {e}")))?;
                if tx.blocking_send(Ok(record)).is_err() {
                    return Ok(());
                }
            }
        })();
        if let Err(error) = result {
            let _ = tx.blocking_send(Err(error));
        }
    });
    rx
}

/// Where a restore is: ids mapped so far, raw records waiting, the object being written.
struct Restorer<'a> {
    store: &'a Arc<dyn Store>,
    objects: &'a dyn ObjectStore,
    /// Backed-up user id → id here.
    users: HashMap<UserId, UserId>,
    /// User ids taken here.
    taken: HashSet<UserId>,
    /// Names taken here, with their ids.
    names: HashMap<String, UserId>,
    /// When the installation's own users were made, by id.
    own_created: HashMap<UserId, i64>,
    /// Backed-up link id → (id here, owner here).
    links: HashMap<LinkId, (LinkId, UserId)>,
    /// Whether the installation had no users: then it takes the backup's salt and key.
    fresh: bool,
    pending: Vec<Record>,
    /// About how many bytes `pending` holds.
    pending_bytes: usize,
    object: Option<(String, u64, u64, Box<dyn ObjectWriter>)>,
    progress: Progress,
}

impl Restorer<'_> {
    fn user(&self, id: UserId) -> UserId {
        self.users.get(&id).copied().unwrap_or(id)
    }

    fn link(&self, id: LinkId) -> LinkId {
        self.links.get(&id).map_or(id, |(new, _)| *new)
    }

    async fn flush(&mut self) -> Result<(), BackupError> {
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.store.restore(batch).await?;
        }
        Ok(())
    }

    async fn raw(&mut self, record: Record) -> Result<(), BackupError> {
        self.pending_bytes += match &record {
            Record::ClickLog(row) => row.lines.len(),
            Record::VisitorsHour(row) | Record::VisitorsDay(row) => row.sketch.len(),
            _ => 256,
        };
        self.pending.push(record);
        if self.pending.len() >= RESTORE_BATCH || self.pending_bytes >= RESTORE_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Finishes the object being written, checking its size.
    async fn end_object(&mut self) -> Result<(), BackupError> {
        if let Some((key, size, written, writer)) = self.object.take() {
            if written != size {
                writer.abort().await;
                return Err(BackupError::Format(format!(
                    "object '{key}' has {written} bytes in the backup, {size} announced"
                )));
            }
            writer.finish().await?;
        }
        Ok(())
    }

    async fn apply(&mut self, record: Record) -> Result<(), BackupError> {
        if !matches!(record, Record::ObjectChunk { .. }) {
            self.end_object().await?;
        }
        match record {
            Record::Header(_) | Record::End { .. } => {}
            Record::Installation { .. } => {
                if self.fresh {
                    self.raw(record).await?;
                }
            }
            Record::User(mut user) => {
                let old = user.id;
                if let Some(&id) = self.names.get(&user.name) {
                    // The installation's own user of that name (its bootstrap admin) stays
                    // as it is, but made as early as the restored one: its links restored
                    // from before must not predate it (CQL lists an owner's links back to
                    // the month they were made in).
                    self.users.insert(old, id);
                    if let Some(&made) = self.own_created.get(&id)
                        && user.created_at < made
                        && let Some(own) = self.store.get_user(id).await?
                    {
                        let password_hash = self
                            .store
                            .credentials(&own.name)
                            .await?
                            .and_then(|(_, hash)| hash);
                        self.raw(Record::User(UserRecord {
                            id,
                            name: own.name,
                            role: own.role,
                            created_at: user.created_at,
                            disabled: own.disabled,
                            password_hash,
                        }))
                        .await?;
                        self.flush().await?;
                    }
                    return Ok(());
                }
                if self.taken.contains(&old) {
                    let max = self.taken.iter().copied().max().unwrap_or(0);
                    user.id = max.max(old).saturating_add(1);
                }
                self.users.insert(old, user.id);
                self.taken.insert(user.id);
                self.names.insert(user.name.clone(), user.id);
                // Keys, links and the rest refer to users: they exist first.
                self.raw(Record::User(user)).await?;
                self.flush().await?;
            }
            Record::ApiKey(key) => {
                let hash: [u8; 32] = hex::decode(&key.key_hash)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| BackupError::Format("an API key hash is not 32 bytes".into()))?;
                self.store
                    .add_api_key(ApiKey {
                        key_hash: hash,
                        user_id: self.user(key.user_id),
                        label: key.label,
                        prefix: key.prefix,
                        scopes: Scopes::from_bits(key.scopes),
                        created_at: key.created_at,
                        expires_at: key.expires_at,
                        last_used_at: key.last_used_at,
                    })
                    .await?;
            }
            Record::Domain(d) => {
                let users = d
                    .users
                    .map(|ids| ids.into_iter().map(|id| self.user(id)).collect());
                self.store
                    .create_domain(Domain {
                        name: d.name,
                        users,
                        created_at: d.created_at,
                        https: DomainHttps {
                            redirect_http: d.redirect_http,
                            hsts_max_age_seconds: d.hsts_max_age_seconds,
                        },
                        fallback_url: d.fallback_url,
                    })
                    .await?;
            }
            Record::Certificate(c) => {
                self.store
                    .put_certificate(StoredCertificate {
                        name: c.name,
                        chain_pem: c.chain_pem,
                        key_pem: c.key_pem,
                        not_after: c.not_after,
                        updated_at: c.updated_at,
                    })
                    .await?;
            }
            Record::Issuance(issuance) => self.store.put_issuance(issuance).await?,
            Record::Webhook(w) => {
                self.store
                    .create_webhook(Webhook {
                        id: w.id,
                        user_id: self.user(w.user_id),
                        url: w.url,
                        events: parse_kinds(&w.events)?,
                        enabled: w.enabled,
                        disabled_reason: w.disabled_reason,
                        secret: w.secret,
                        previous_secret: w.previous_secret,
                        previous_until: w.previous_until,
                        created_at: w.created_at,
                        updated_at: w.updated_at,
                        // Events are not restored: delivery starts with the next one.
                        delivery: DeliveryState {
                            cursor: self.store.event_feed_head().await?,
                            ..DeliveryState::default()
                        },
                    })
                    .await?;
            }
            Record::Audit(mut a) => {
                a.actor = self.user(a.actor);
                self.raw(Record::Audit(a)).await?;
            }
            Record::Link(mut link) => {
                let old = link.id;
                link.owner = self.user(link.owner);
                link.id = self.store.restored_link_id(&link);
                self.links.insert(old, (link.id, link.owner));
                self.raw(Record::Link(link)).await?;
            }
            Record::Upload(u) => {
                self.flush().await?;
                let mut upload = Upload::from(u);
                upload.owner = self.user(upload.owner);
                let queue = upload.thumbnail_state == ThumbnailState::Pending;
                self.store.insert_upload(upload, queue, None, None).await?;
            }
            Record::RollupHour(mut r) => {
                r.id = self.link(r.id);
                self.raw(Record::RollupHour(r)).await?;
            }
            Record::RollupDay(mut r) => {
                r.link_id = self.link(r.link_id);
                self.raw(Record::RollupDay(r)).await?;
            }
            Record::OwnerHour(mut r) => {
                r.id = self.user(r.id);
                self.raw(Record::OwnerHour(r)).await?;
            }
            Record::OwnerLinkDay(mut r) => {
                r.owner = self.user(r.owner);
                r.link_id = self.link(r.link_id);
                self.raw(Record::OwnerLinkDay(r)).await?;
            }
            Record::VisitorsHour(mut r) => {
                r.link_id = self.link(r.link_id);
                self.raw(Record::VisitorsHour(r)).await?;
            }
            Record::VisitorsDay(mut r) => {
                r.link_id = self.link(r.link_id);
                self.raw(Record::VisitorsDay(r)).await?;
            }
            Record::ClickLog(row) => self.click_log(row).await?,
            Record::Object(o) => {
                check_key(&o.key)?;
                if o.included {
                    let writer = self.objects.create(&o.key, &o.content_type).await?;
                    self.object = Some((o.key, o.size, 0, writer));
                } else if self.objects.head(&o.key).await?.is_none() {
                    tracing::warn!(key = %o.key, "a referenced object is not in the object storage");
                    self.progress.missing_objects += 1;
                }
            }
            Record::ObjectChunk { data } => {
                let Some((_, size, written, writer)) = self.object.as_mut() else {
                    return Err(BackupError::Format(
                        "object bytes without their object".into(),
                    ));
                };
                let bytes = BASE64
                    .decode(data)
                    .map_err(|_| BackupError::Format("object bytes are not base64".into()))?;
                *written += bytes.len() as u64;
                if *written > *size {
                    return Err(BackupError::Format(
                        "an object has more bytes than announced".into(),
                    ));
                }
                writer.write(Bytes::from(bytes)).await?;
            }
        }
        Ok(())
    }

    /// A logged row with its link ids mapped; a row from before the log was kept per
    /// account is split by the links' owners.
    async fn click_log(&mut self, row: ClickLogRow) -> Result<(), BackupError> {
        let mut by_owner: BTreeMap<UserId, Vec<EnrichedClick>> = BTreeMap::new();
        for mut click in decode_log(row.lines.as_bytes()) {
            let owner = match (row.owner, self.links.get(&click.link_id)) {
                (_, Some(&(id, owner))) => {
                    click.link_id = id;
                    owner
                }
                // A deleted link's clicks stay in its owner's log.
                (Some(owner), None) => self.user(owner),
                (None, None) => {
                    self.progress.dropped_clicks += u64::from(click.count.max(1));
                    continue;
                }
            };
            by_owner.entry(owner).or_default().push(click);
        }
        for (owner, clicks) in by_owner {
            let refs: Vec<&EnrichedClick> = clicks.iter().collect();
            let lines = String::from_utf8_lossy(&encode_log(&refs)).into_owned();
            self.raw(Record::ClickLog(ClickLogRow {
                owner: Some(owner),
                at_ms: row.at_ms,
                lines,
            }))
            .await?;
        }
        Ok(())
    }
}

/// The framing every backup keeps: a header first (of a format this build reads), an end
/// record counting what came before it, nothing after.
#[derive(Default)]
struct Framing {
    records: u64,
    ended: bool,
}

impl Framing {
    fn check(&mut self, record: &Record) -> Result<(), BackupError> {
        if self.ended {
            return Err(BackupError::Format("records after the end".into()));
        }
        match record {
            Record::Header(header) if self.records == 0 && header.format > FORMAT => {
                return Err(BackupError::Format(format!(
                    "written in format {} by version {}; this build reads format {FORMAT}",
                    header.format, header.version
                )));
            }
            Record::Header(_) if self.records == 0 => {}
            _ if self.records == 0 => return Err(BackupError::Format("no header".into())),
            Record::Header(_) => return Err(BackupError::Format("a second header".into())),
            Record::End { records } => {
                if *records != self.records {
                    return Err(BackupError::Format(format!(
                        "the end counts {records} records, {} came before it",
                        self.records
                    )));
                }
                self.ended = true;
            }
            _ => {}
        }
        self.records += 1;
        Ok(())
    }

    fn finish(&self) -> Result<(), BackupError> {
        if self.ended {
            Ok(())
        } else {
            Err(BackupError::Format(
                "the backup is cut off (no end record)".into(),
            ))
        }
    }
}

/// One restore at a time in this process: a second one waits, then finds the data of
/// the first and is refused.
static RESTORING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Restores the backup that `open` reads into `store` and `objects`, which must hold no
/// links, uploads or clicks. The backup is read twice: once whole to check its framing (a
/// file cut short, or of a newer format, is refused before anything is written), then to
/// restore it. Reports progress every [`PROGRESS_EVERY`] records and at the end.
pub async fn restore<R: Read + Send + 'static>(
    store: &Arc<dyn Store>,
    objects: &dyn ObjectStore,
    open: impl Fn() -> std::io::Result<R>,
    mut report: impl FnMut(&Progress) + Send,
) -> Result<Progress, BackupError> {
    let _one_at_a_time = RESTORING.lock().await;
    if store.holds_data().await? {
        return Err(BackupError::NotEmpty);
    }
    let mut framing = Framing::default();
    let mut records = decode(open()?, Arc::default());
    while let Some(record) = records.recv().await {
        framing.check(&record?)?;
    }
    framing.finish()?;

    let users = store.list_users().await?;
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut records = decode(open()?, read.clone());
    let mut restorer = Restorer {
        store,
        objects,
        users: HashMap::new(),
        taken: users.iter().map(|u| u.id).collect(),
        names: users.iter().map(|u| (u.name.clone(), u.id)).collect(),
        own_created: users.iter().map(|u| (u.id, u.created_at)).collect(),
        links: HashMap::new(),
        fresh: users.is_empty(),
        pending: Vec::new(),
        pending_bytes: 0,
        object: None,
        progress: Progress::default(),
    };
    let mut framing = Framing::default();
    let result: Result<(), BackupError> = async {
        while let Some(record) = records.recv().await {
            let record = record?;
            framing.check(&record)?;
            restorer.progress.count(&record);
            if !matches!(record, Record::Header(_)) {
                restorer.apply(record).await?;
            }
            restorer.progress.bytes = read.load(std::sync::atomic::Ordering::Relaxed);
            if restorer.progress.total.is_multiple_of(PROGRESS_EVERY) {
                report(&restorer.progress);
            }
        }
        framing.finish()?;
        restorer.flush().await
    }
    .await;
    if let Err(error) = result {
        if let Some((_, _, _, writer)) = restorer.object.take() {
            writer.abort().await;
        }
        return Err(error);
    }
    restorer.progress.bytes = read.load(std::sync::atomic::Ordering::Relaxed);
    report(&restorer.progress);
    Ok(restorer.progress)
}

api_errors!(BackupErrors: AUTH; );
api_errors!(RestoreErrors: AUTH; InvalidBackup, NotEmpty);

/// `GET /api/v1/admin/backup` (admin): a backup of the whole installation, streamed as it
/// is read (see `shortlink backup`). A backup cut short by a failure has no end record,
/// so a restore refuses it.
#[utoipa::path(
    get,
    path = "/api/v1/admin/backup",
    tag = "admin",
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "The backup: zstd-compressed JSON lines, one record each \
            (header, installation, users, API keys, domains, certificates, issuances, webhooks, \
            audit log, links, uploads with their objects, rollups, click log, end). It holds \
            password and key hashes, certificates' private keys and webhook secrets: keep it \
            like the database.",
         body = BinaryBody, content_type = "application/zstd",
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"shortlink.backup.zst\"`."))),
        BackupErrors,
    ),
)]
pub async fn download_backup(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let store = state.store().clone();
    let objects = state.objects().clone();
    tokio::spawn(async move {
        let mode = ObjectsMode::default_for(&*objects);
        match backup(&store, &*objects, mode, tx, |_| {}).await {
            Ok(progress) => {
                tracing::info!(summary = %progress.summary(), "backup served");
                audit(&state, &caller, "backup.download", &progress).await;
            }
            Err(error) => tracing::warn!(%error, "backup failed; its stream was cut short"),
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::io::Error>))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"shortlink.backup.zst\""),
    );
    Ok(response)
}

/// What a restore did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RestoreSummary {
    /// Records restored, by kind.
    records: BTreeMap<String, u64>,
    /// Records in all.
    total: u64,
    /// Compressed bytes read.
    bytes: u64,
    /// Objects named in the backup but found neither in it nor in the object storage.
    missing_objects: u64,
    /// Raw clicks left out (of links no longer known, in rows from before the click log
    /// was kept per account).
    dropped_clicks: u64,
}

impl From<Progress> for RestoreSummary {
    fn from(p: Progress) -> Self {
        RestoreSummary {
            records: p
                .records
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .collect(),
            total: p.total,
            bytes: p.bytes,
            missing_objects: p.missing_objects,
            dropped_clicks: p.dropped_clicks,
        }
    }
}

/// `POST /api/v1/admin/restore` (admin): restores a backup (the body, as
/// `GET /api/v1/admin/backup` gives it) into this installation, which must hold no
/// links, uploads or clicks. Users of the same name as this installation's (its admin)
/// become those users; this installation keeps its own salt and signing key.
#[utoipa::path(
    post,
    path = "/api/v1/admin/restore",
    tag = "admin",
    request_body(content = BinaryBody, content_type = "application/octet-stream",
        description = "A backup as `GET /api/v1/admin/backup` gives it (zstd-compressed JSON lines), streamed; any content type is taken."),
    security(("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "Restored.", body = RestoreSummary),
        RestoreErrors,
    ),
)]
pub async fn upload_restore(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Json<RestoreSummary>, ApiError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    caller.require_admin()?;
    // The body is kept in a temporary file first: a restore reads its backup twice (see
    // `restore`).
    let spool = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let mut file = tokio::fs::File::from_std(spool.reopen().map_err(ApiError::internal)?);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBackup,
                format!("the backup could not be read: {e}"),
            )
        })?;
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    drop(file);
    let store = state.store().clone();
    let path = spool.path().to_owned();
    let result = restore(
        &store,
        &**state.objects(),
        move || std::fs::File::open(&path),
        |_| {},
    )
    .await;
    drop(spool);
    let summary = match result {
        Ok(progress) => progress,
        Err(BackupError::NotEmpty) => {
            return Err(ApiError::new(
                ErrorCode::NotEmpty,
                BackupError::NotEmpty.to_string(),
            ));
        }
        Err(BackupError::Format(why)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidBackup,
                format!("not a readable backup: {why}"),
            ));
        }
        Err(BackupError::Objects(ObjectError::InvalidKey(key))) => {
            return Err(ApiError::new(
                ErrorCode::InvalidBackup,
                format!("not a readable backup: invalid object key '{key}'"),
            ));
        }
        Err(BackupError::Store(e)) => return Err(e.into()),
        Err(error) => return Err(ApiError::internal(error)),
    };
    tracing::info!(summary = %summary.summary(), "backup restored");
    audit(&state, &caller, "backup.restore", &summary).await;
    Ok(Json(summary.into()))
}

/// Records a backup or a restore in the audit log (a failure to record is logged).
async fn audit(state: &AppState, caller: &Caller, action: &str, progress: &Progress) {
    let entry = shortlink_core::NewAuditEntry {
        actor: caller.user.id,
        action: action.into(),
        target: String::new(),
        detail: progress.summary(),
    };
    if let Err(error) = state.store().append_audit(entry).await {
        tracing::warn!(%error, action, "cannot record in the audit log");
    }
}
