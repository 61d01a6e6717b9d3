//! Webhook endpoints and their delivery logs on SQLite. Leases and progress are
//! conditional updates in the writer's transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use shortlink_core::{DeliveryOutcome, DeliveryRecord, DeliveryState, NewEvent, UserId, Webhook};
use shortlink_store::webhooks::{kinds_text, parse_kinds};
use shortlink_store::{StoreError, WebhookStore};

use super::{DbError, EmbeddedStore};

const COLUMNS: &str = "id, user_id, url, events, enabled, disabled_reason, secret, \
     previous_secret, previous_until, created_at, updated_at, cursor, attempt, next_at_ms, \
     failing_since_ms";

fn row_to_webhook(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Webhook, String)> {
    let events: String = row.get(3)?;
    Ok((
        Webhook {
            id: row.get(0)?,
            user_id: row.get(1)?,
            url: row.get(2)?,
            events: Vec::new(),
            enabled: row.get(4)?,
            disabled_reason: row.get(5)?,
            secret: row.get(6)?,
            previous_secret: row.get(7)?,
            previous_until: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            delivery: DeliveryState {
                cursor: row.get(11)?,
                attempt: row.get::<_, i64>(12)?.clamp(0, u32::MAX as i64) as u32,
                next_at_ms: row.get(13)?,
                failing_since_ms: row.get(14)?,
            },
        },
        events,
    ))
}

fn finish(pair: (Webhook, String)) -> Result<Webhook, DbError> {
    let (mut hook, events) = pair;
    hook.events = parse_kinds(&events)?;
    Ok(hook)
}

fn select_one(conn: &Connection, user: UserId, id: &str) -> Result<Option<Webhook>, DbError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE id = ?1 AND user_id = ?2"
    ))?
    .query_row(params![id, user], row_to_webhook)
    .optional()?
    .map(finish)
    .transpose()
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<(DeliveryRecord, String)> {
    Ok((
        DeliveryRecord {
            webhook_id: row.get(0)?,
            id: row.get(1)?,
            user_id: row.get(2)?,
            event_id: row.get(3)?,
            event_type: row.get(4)?,
            message_id: row.get(5)?,
            attempt: row.get::<_, i64>(6)?.clamp(0, u32::MAX as i64) as u32,
            at_ms: row.get(7)?,
            status: row
                .get::<_, Option<i64>>(8)?
                .and_then(|s| u16::try_from(s).ok()),
            latency_ms: row.get::<_, i64>(9)?.clamp(0, u32::MAX as i64) as u32,
            outcome: DeliveryOutcome::Failed,
            error: row.get(11)?,
            next_try_ms: row.get(12)?,
            manual: row.get(13)?,
        },
        row.get(10)?,
    ))
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn create_webhook(&self, hook: Webhook) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| {
                conn.execute(
                    &format!(
                        "INSERT INTO webhooks ({COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                    ),
                    params![
                        hook.id,
                        hook.user_id,
                        hook.url,
                        kinds_text(&hook),
                        hook.enabled,
                        hook.disabled_reason,
                        hook.secret,
                        hook.previous_secret,
                        hook.previous_until,
                        hook.created_at,
                        hook.updated_at,
                        hook.delivery.cursor,
                        i64::from(hook.delivery.attempt),
                        hook.delivery.next_at_ms,
                        hook.delivery.failing_since_ms,
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn get_webhook(&self, user: UserId, id: &str) -> Result<Option<Webhook>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| select_one(conn, user, &id)).await
    }

    async fn list_webhooks(&self, user: Option<UserId>) -> Result<Vec<Webhook>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE ?1 IS NULL OR user_id = ?1 \
                 ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map(params![user], row_to_webhook)?;
            rows.map(|r| finish(r?)).collect()
        })
        .await
    }

    async fn update_webhook(&self, hook: &Webhook, fresh_start: bool) -> Result<bool, StoreError> {
        let hook = hook.clone();
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE webhooks SET url = ?3, events = ?4, enabled = ?5,
                     disabled_reason = ?6, secret = ?7, previous_secret = ?8,
                     previous_until = ?9, updated_at = ?10,
                     attempt = CASE WHEN ?11 THEN 0 ELSE attempt END,
                     next_at_ms = CASE WHEN ?11 THEN 0 ELSE next_at_ms END,
                     failing_since_ms = CASE WHEN ?11 THEN NULL ELSE failing_since_ms END
                     WHERE id = ?1 AND user_id = ?2",
                    params![
                        hook.id,
                        hook.user_id,
                        hook.url,
                        kinds_text(&hook),
                        hook.enabled,
                        hook.disabled_reason,
                        hook.secret,
                        hook.previous_secret,
                        hook.previous_until,
                        hook.updated_at,
                        fresh_start,
                    ],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    async fn delete_webhook(&self, user: UserId, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| {
                let deleted = conn.execute(
                    "DELETE FROM webhooks WHERE id = ?1 AND user_id = ?2",
                    params![id, user],
                )?;
                if deleted == 1 {
                    conn.execute(
                        "DELETE FROM webhook_deliveries WHERE webhook_id = ?1",
                        params![id],
                    )?;
                }
                Ok(deleted == 1)
            })
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
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                let leased = conn
                    .prepare_cached(
                        "UPDATE webhooks SET lease_holder = ?3, lease_until_ms = ?4
                         WHERE id = ?1 AND user_id = ?2
                         AND (lease_until_ms < ?5 OR lease_holder = ?3)",
                    )?
                    .execute(params![id, user, holder, until_ms, now_ms])?;
                if leased == 0 {
                    return Ok(None);
                }
                select_one(conn, user, &id)
            })
            .await
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
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.writer
            .write(move |conn| {
                let saved = conn
                    .prepare_cached(
                        "UPDATE webhooks SET cursor = ?4, attempt = ?5, next_at_ms = ?6,
                         failing_since_ms = ?7, lease_until_ms = ?8,
                         lease_holder = CASE WHEN ?8 = 0 THEN '' ELSE lease_holder END
                         WHERE id = ?1 AND user_id = ?2 AND lease_holder = ?3
                         AND updated_at = ?9",
                    )?
                    .execute(params![
                        id,
                        user,
                        holder,
                        state.cursor,
                        i64::from(state.attempt),
                        state.next_at_ms,
                        state.failing_since_ms,
                        until_ms,
                        updated_at,
                    ])?;
                Ok(saved == 1)
            })
            .await
    }

    async fn disable_webhook(
        &self,
        user: UserId,
        id: &str,
        reason: &str,
        event: NewEvent,
    ) -> Result<bool, StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.writer
            .write(move |conn| {
                let changed = conn.execute(
                    "UPDATE webhooks SET enabled = 0, disabled_reason = ?3,
                     updated_at = MAX(updated_at + 1, ?4) WHERE id = ?1 AND user_id = ?2",
                    params![id, user, reason, shortlink_core::time_util::now_unix()],
                )?;
                if changed == 0 {
                    return Ok(false);
                }
                super::events::append(conn, vec![event], shortlink_core::time_util::now_unix_ms())?;
                Ok(true)
            })
            .await
    }

    async fn record_deliveries(&self, records: Vec<DeliveryRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer
            .write(move |conn| {
                let mut insert = conn.prepare_cached(
                    "INSERT OR REPLACE INTO webhook_deliveries (webhook_id, id, user_id,
                     event_id, event_type, message_id, attempt, at_ms, status, latency_ms,
                     outcome, error, next_try_ms, manual)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?;
                for r in records {
                    insert.execute(params![
                        r.webhook_id,
                        r.id,
                        r.user_id,
                        r.event_id,
                        r.event_type,
                        r.message_id,
                        i64::from(r.attempt),
                        r.at_ms,
                        r.status.map(i64::from),
                        i64::from(r.latency_ms),
                        r.outcome.as_str(),
                        r.error,
                        r.next_try_ms,
                        r.manual,
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn list_deliveries(
        &self,
        user: UserId,
        webhook_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let webhook_id = webhook_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT webhook_id, id, user_id, event_id, event_type, message_id, attempt,
                 at_ms, status, latency_ms, outcome, error, next_try_ms, manual
                 FROM webhook_deliveries WHERE webhook_id = ?1 AND user_id = ?2 AND id < ?3
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    webhook_id,
                    user,
                    before.unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                row_to_record,
            )?;
            rows.map(|r| {
                let (mut record, outcome) = r?;
                record.outcome = DeliveryOutcome::parse(&outcome).ok_or_else(|| {
                    StoreError::corrupt(format!("unknown delivery outcome '{outcome}'"))
                })?;
                Ok(record)
            })
            .collect()
        })
        .await
    }

    async fn prune_deliveries(
        &self,
        per_webhook: u64,
        max_age_secs: i64,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                let cutoff = shortlink_core::time_util::now_unix_ms()
                    .saturating_sub(max_age_secs.saturating_mul(1000));
                let mut removed = conn
                    .execute("DELETE FROM webhook_deliveries WHERE at_ms < ?1", [cutoff])?
                    as u64;
                let crowded: Vec<String> = conn
                    .prepare(
                        "SELECT webhook_id FROM webhook_deliveries GROUP BY webhook_id
                         HAVING COUNT(*) > ?1",
                    )?
                    .query_map([per_webhook as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for hook in crowded {
                    removed += conn.execute(
                        "DELETE FROM webhook_deliveries WHERE webhook_id = ?1 AND id <
                         (SELECT id FROM webhook_deliveries WHERE webhook_id = ?1
                          ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                        params![hook, per_webhook.saturating_sub(1) as i64],
                    )? as u64;
                }
                Ok(removed)
            })
            .await
    }
}
