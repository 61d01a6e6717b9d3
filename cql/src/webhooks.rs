//! Webhook endpoints and their delivery logs on CQL: an endpoint is a row in its
//! owner's partition, changed by lightweight transactions; its log is partitioned by
//! hour and expires with the event log.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::{
    DeliveryOutcome, DeliveryRecord, DeliveryState, NewEvent, UserId, Webhook, delivery_id_ms,
};
use shortlink_store::webhooks::{kinds_text, parse_kinds};
use shortlink_store::{StoreError, WebhookStore};

use crate::{CqlStore, Kind};

/// Milliseconds in a delivery log partition.
const BUCKET_MS: i64 = 3_600_000;

fn bucket(record_id: i64) -> i64 {
    delivery_id_ms(record_id) / BUCKET_MS
}

const SELECT: &str = "SELECT user_id, id, url, events, enabled, disabled_reason, secret, \
     previous_secret, previous_until, created_at, updated_at, cursor, attempt, next_at_ms, \
     failing_since_ms FROM {ks}.webhooks";

#[derive(DeserializeRow)]
struct WebhookRow {
    user_id: i64,
    id: String,
    url: Option<String>,
    events: Option<String>,
    enabled: Option<bool>,
    disabled_reason: Option<String>,
    secret: Option<String>,
    previous_secret: Option<String>,
    previous_until: Option<i64>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
    cursor: Option<i64>,
    attempt: Option<i32>,
    next_at_ms: Option<i64>,
    failing_since_ms: Option<i64>,
}

impl WebhookRow {
    fn into_webhook(self) -> Result<Webhook, StoreError> {
        Ok(Webhook {
            id: self.id,
            user_id: self.user_id,
            url: self.url.unwrap_or_default(),
            events: parse_kinds(self.events.as_deref().unwrap_or(""))?,
            enabled: self.enabled.unwrap_or(false),
            disabled_reason: self.disabled_reason,
            secret: self.secret.unwrap_or_default(),
            previous_secret: self.previous_secret,
            previous_until: self.previous_until,
            created_at: self.created_at.unwrap_or(0),
            updated_at: self.updated_at.unwrap_or(0),
            delivery: DeliveryState {
                cursor: self.cursor.unwrap_or(0),
                attempt: self.attempt.unwrap_or(0).max(0) as u32,
                next_at_ms: self.next_at_ms.unwrap_or(0),
                failing_since_ms: self.failing_since_ms,
            },
        })
    }
}

#[derive(DeserializeRow)]
struct DeliveryRow {
    webhook_id: String,
    id: i64,
    user_id: i64,
    event_id: i64,
    event_type: String,
    message_id: String,
    attempt: i32,
    at_ms: i64,
    status: Option<i32>,
    latency_ms: i32,
    outcome: String,
    error: Option<String>,
    next_try_ms: Option<i64>,
    manual: bool,
}

impl DeliveryRow {
    fn into_record(self) -> Result<DeliveryRecord, StoreError> {
        Ok(DeliveryRecord {
            outcome: DeliveryOutcome::parse(&self.outcome).ok_or_else(|| {
                StoreError::corrupt(format!("unknown delivery outcome '{}'", self.outcome))
            })?,
            webhook_id: self.webhook_id,
            id: self.id,
            user_id: self.user_id,
            event_id: self.event_id,
            event_type: self.event_type,
            message_id: self.message_id,
            attempt: self.attempt.max(0) as u32,
            at_ms: self.at_ms,
            status: self.status.and_then(|s| u16::try_from(s).ok()),
            latency_ms: self.latency_ms.max(0) as u32,
            error: self.error,
            next_try_ms: self.next_try_ms,
            manual: self.manual,
        })
    }
}

/// A settings version after the endpoint's current one: now, or one past it.
async fn disabled_at(store: &CqlStore, user: UserId, id: &str) -> Result<i64, StoreError> {
    let current = store
        .get_webhook(user, id)
        .await?
        .map_or(0, |h| h.updated_at);
    Ok(shortlink_core::time_util::now_unix().max(current + 1))
}

fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl CqlStore {
    /// The lowest cursor among the user's enabled endpoints: events after it are kept.
    pub(crate) async fn webhook_floor(&self, user: UserId) -> Result<Option<i64>, StoreError> {
        let rows: Vec<(Option<bool>, Option<i64>)> = self
            .rows(
                "SELECT enabled, cursor FROM {ks}.webhooks WHERE user_id = ?",
                (user,),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(enabled, _)| *enabled == Some(true))
            .filter_map(|(_, cursor)| cursor)
            .min())
    }
}

#[async_trait]
impl WebhookStore for CqlStore {
    async fn create_webhook(&self, hook: Webhook) -> Result<(), StoreError> {
        // A lightweight transaction like every later change of the row, so their
        // timestamps order them.
        let created = self
            .lwt(
                "INSERT INTO {ks}.webhooks (user_id, id, url, events, enabled, disabled_reason, \
             secret, previous_secret, previous_until, created_at, updated_at, cursor, attempt, \
             next_at_ms, failing_since_ms, lease_holder, lease_until_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0) IF NOT EXISTS",
                (
                    hook.user_id,
                    &hook.id,
                    &hook.url,
                    kinds_text(&hook),
                    hook.enabled,
                    &hook.disabled_reason,
                    &hook.secret,
                    &hook.previous_secret,
                    hook.previous_until,
                    hook.created_at,
                    hook.updated_at,
                    hook.delivery.cursor,
                    clamp_i32(hook.delivery.attempt),
                    hook.delivery.next_at_ms,
                    hook.delivery.failing_since_ms,
                ),
            )
            .await?;
        if !created {
            return Err(StoreError::corrupt(format!(
                "webhook id {} exists",
                hook.id
            )));
        }
        Ok(())
    }

    async fn get_webhook(&self, user: UserId, id: &str) -> Result<Option<Webhook>, StoreError> {
        const CQL: &str = "SELECT user_id, id, url, events, enabled, disabled_reason, secret, \
             previous_secret, previous_until, created_at, updated_at, cursor, attempt, \
             next_at_ms, failing_since_ms FROM {ks}.webhooks WHERE user_id = ? AND id = ?";
        self.row::<WebhookRow>(CQL, (user, id))
            .await?
            .map(WebhookRow::into_webhook)
            .transpose()
    }

    async fn list_webhooks(&self, user: Option<UserId>) -> Result<Vec<Webhook>, StoreError> {
        const BY_USER: &str = "SELECT user_id, id, url, events, enabled, disabled_reason, \
             secret, previous_secret, previous_until, created_at, updated_at, cursor, attempt, \
             next_at_ms, failing_since_ms FROM {ks}.webhooks WHERE user_id = ?";
        let rows: Vec<WebhookRow> = match user {
            Some(user) => self.rows(BY_USER, (user,)).await?,
            None => self.scan(SELECT).await?,
        };
        let mut hooks = rows
            .into_iter()
            .map(WebhookRow::into_webhook)
            .collect::<Result<Vec<_>, _>>()?;
        hooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(hooks)
    }

    async fn update_webhook(&self, hook: &Webhook, fresh_start: bool) -> Result<bool, StoreError> {
        let settings = (
            &hook.url,
            kinds_text(hook),
            hook.enabled,
            &hook.disabled_reason,
            &hook.secret,
            &hook.previous_secret,
            hook.previous_until,
            hook.updated_at,
            hook.user_id,
            &hook.id,
        );
        if !fresh_start {
            return self
                .lwt(
                    "UPDATE {ks}.webhooks SET url = ?, events = ?, enabled = ?, \
                     disabled_reason = ?, secret = ?, previous_secret = ?, previous_until = ?, \
                     updated_at = ? WHERE user_id = ? AND id = ? IF EXISTS",
                    settings,
                )
                .await;
        }
        self.lwt(
            "UPDATE {ks}.webhooks SET url = ?, events = ?, enabled = ?, disabled_reason = ?, \
             secret = ?, previous_secret = ?, previous_until = ?, updated_at = ?, attempt = 0, \
             next_at_ms = 0, failing_since_ms = null WHERE user_id = ? AND id = ? IF EXISTS",
            settings,
        )
        .await
    }

    async fn delete_webhook(&self, user: UserId, id: &str) -> Result<bool, StoreError> {
        self.lwt(
            "DELETE FROM {ks}.webhooks WHERE user_id = ? AND id = ? IF EXISTS",
            (user, id),
        )
        .await
    }

    async fn lease_webhook(
        &self,
        user: UserId,
        id: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Webhook>, StoreError> {
        let leased = self
            .lwt(
                "UPDATE {ks}.webhooks SET lease_holder = ?, lease_until_ms = ? \
                 WHERE user_id = ? AND id = ? IF lease_until_ms < ?",
                (holder, until_ms, user, id, now_ms),
            )
            .await?
            || self
                .lwt(
                    "UPDATE {ks}.webhooks SET lease_until_ms = ? \
                     WHERE user_id = ? AND id = ? IF lease_holder = ?",
                    (until_ms, user, id, holder),
                )
                .await?;
        if !leased {
            return Ok(None);
        }
        // Read at serial consistency: a replica that has not applied the last progress
        // saved would hand back an old cursor.
        const CQL: &str = "SELECT user_id, id, url, events, enabled, disabled_reason, secret, \
             previous_secret, previous_until, created_at, updated_at, cursor, attempt, \
             next_at_ms, failing_since_ms FROM {ks}.webhooks WHERE user_id = ? AND id = ?";
        let mut statement = self.prepare(CQL, Kind::Read).await?;
        statement.set_consistency(scylla::frame::types::Consistency::LocalSerial);
        let result = self
            .session
            .execute_unpaged(&statement, (user, id))
            .await
            .map_err(StoreError::backend)?;
        let rows = result.into_rows_result().map_err(StoreError::backend)?;
        let row = rows
            .rows::<WebhookRow>()
            .map_err(StoreError::backend)?
            .next()
            .transpose()
            .map_err(StoreError::backend)?;
        row.map(WebhookRow::into_webhook).transpose()
    }

    async fn save_webhook_progress(
        &self,
        user: UserId,
        id: &str,
        holder: &str,
        updated_at: i64,
        state: DeliveryState,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let next_holder = if until_ms == 0 { "" } else { holder };
        self.lwt(
            "UPDATE {ks}.webhooks SET cursor = ?, attempt = ?, next_at_ms = ?, \
             failing_since_ms = ?, lease_until_ms = ?, lease_holder = ? \
             WHERE user_id = ? AND id = ? IF lease_holder = ? AND updated_at = ?",
            (
                state.cursor,
                clamp_i32(state.attempt),
                state.next_at_ms,
                state.failing_since_ms,
                until_ms,
                next_holder,
                user,
                id,
                holder,
                updated_at,
            ),
        )
        .await
    }

    async fn disable_webhook(
        &self,
        user: UserId,
        id: &str,
        reason: &str,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        let disabled = self
            .lwt(
                "UPDATE {ks}.webhooks SET enabled = false, disabled_reason = ?, updated_at = ? \
                 WHERE user_id = ? AND id = ? IF EXISTS",
                (reason, disabled_at(self, user, id).await?, user, id),
            )
            .await?;
        if disabled {
            self.append(vec![event]).await?;
        }
        Ok(disabled)
    }

    async fn record_deliveries(&self, records: Vec<DeliveryRecord>) -> Result<(), StoreError> {
        let writes = records.iter().map(|r| async move {
            self.exec(
                "INSERT INTO {ks}.webhook_deliveries (webhook_id, bucket, id, user_id, \
                 event_id, event_type, message_id, attempt, at_ms, status, latency_ms, outcome, \
                 error, next_try_ms, manual) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 USING TTL ?",
                Kind::Write,
                (
                    &r.webhook_id,
                    bucket(r.id),
                    r.id,
                    r.user_id,
                    r.event_id,
                    &r.event_type,
                    &r.message_id,
                    clamp_i32(r.attempt),
                    r.at_ms,
                    r.status.map(i32::from),
                    clamp_i32(r.latency_ms),
                    r.outcome.as_str(),
                    &r.error,
                    r.next_try_ms,
                    r.manual,
                    self.event_ttl_secs,
                ),
            )
            .await?;
            Ok(())
        });
        crate::run_concurrently(writes.collect(), 32).await
    }

    async fn list_deliveries(
        &self,
        user: UserId,
        webhook_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let Some(hook) = self.get_webhook(user, webhook_id).await? else {
            return Ok(Vec::new());
        };
        let before = before.unwrap_or(i64::MAX);
        let now_bucket = shortlink_core::time_util::now_unix_ms() / BUCKET_MS;
        let mut at = if before == i64::MAX {
            now_bucket
        } else {
            bucket(before).min(now_bucket)
        };
        // Nothing is older than the endpoint or than the log's retention.
        let oldest = (hook.created_at * 1000 / BUCKET_MS)
            .max(now_bucket - i64::from(self.event_ttl_secs) / 3600 - 1);
        let mut out = Vec::new();
        while at >= oldest && out.len() < limit {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let rows: Vec<DeliveryRow> = self
                .rows(
                    "SELECT webhook_id, id, user_id, event_id, event_type, message_id, attempt, \
                     at_ms, status, latency_ms, outcome, error, next_try_ms, manual \
                     FROM {ks}.webhook_deliveries WHERE webhook_id = ? AND bucket = ? AND id < ? \
                     LIMIT ?",
                    (webhook_id, at, before, want),
                )
                .await?;
            for row in rows {
                out.push(row.into_record()?);
            }
            at -= 1;
        }
        Ok(out)
    }

    async fn prune_deliveries(
        &self,
        _per_webhook: u64,
        _max_age_secs: i64,
    ) -> Result<u64, StoreError> {
        // Rows expire with the event log's TTL.
        Ok(0)
    }
}
