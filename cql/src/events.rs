//! The event log on CQL: a per-user partition for replay and polling, and a per-minute
//! feed that every control plane's hub follows.

use async_trait::async_trait;
use scylla::DeserializeRow;
use shortlink_core::time_util::now_unix_ms;
use shortlink_core::{Event, EventId, EventKind, EventRetention, NewEvent, UserId};
use shortlink_store::{EventPage, EventStore, StoreError};
use tokio::sync::watch;

use crate::{CqlStore, Kind, ids, run_concurrently};

/// Writes in flight while appending many events.
const APPEND_CONCURRENCY: usize = 32;

#[derive(DeserializeRow)]
struct EventRow {
    id: i64,
    user_id: i64,
    kind: String,
    at_ms: i64,
    data: String,
}

impl EventRow {
    fn into_event(self) -> Result<Event, StoreError> {
        Ok(Event {
            id: self.id,
            user_id: self.user_id,
            kind: self
                .kind
                .parse::<EventKind>()
                .map_err(StoreError::backend)?,
            at_ms: self.at_ms,
            data: self.data,
        })
    }
}

impl CqlStore {
    /// Writes events to the user log and the feed; returns them with ids and times.
    pub(crate) async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        let at_ms = now_unix_ms();
        let events: Vec<Event> = events
            .into_iter()
            .map(|e| Event {
                id: ids::next_id(),
                user_id: e.user_id,
                kind: e.kind,
                at_ms,
                data: e.data,
            })
            .collect();
        let writes = events.iter().map(|e| async move {
            self.exec(
                "INSERT INTO {ks}.events_by_user (user_id, id, kind, at_ms, data) \
                 VALUES (?, ?, ?, ?, ?) USING TTL ?",
                Kind::Write,
                (
                    e.user_id,
                    e.id,
                    e.kind.as_str(),
                    e.at_ms,
                    &e.data,
                    self.event_ttl_secs,
                ),
            )
            .await?;
            self.exec(
                "INSERT INTO {ks}.event_feed (bucket, id, user_id, kind, at_ms, data) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                Kind::Write,
                (
                    ids::bucket(e.id),
                    e.id,
                    e.user_id,
                    e.kind.as_str(),
                    e.at_ms,
                    &e.data,
                ),
            )
            .await?;
            Ok(())
        });
        run_concurrently(writes.collect(), APPEND_CONCURRENCY).await?;
        Ok(events)
    }
}

#[async_trait]
impl EventStore for CqlStore {
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append(events).await
    }

    async fn user_events(
        &self,
        user: UserId,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let rows: Vec<EventRow> = self
            .rows(
                "SELECT id, user_id, kind, at_ms, data FROM {ks}.events_by_user \
                 WHERE user_id = ? AND id > ? AND id <= ? LIMIT ?",
                (user, after, self.horizon(), limit),
            )
            .await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }

    async fn event_feed(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        let horizon = self.horizon();
        // The feed keeps a day; a reader further behind resumes a day back.
        let after = after.max(ids::id_secs_ago(86_400));
        let mut events = Vec::new();
        let mut bucket = ids::bucket(after);
        while bucket <= ids::bucket(horizon) && events.len() < limit {
            let want = i32::try_from(limit - events.len()).unwrap_or(i32::MAX);
            let rows: Vec<EventRow> = self
                .rows(
                    "SELECT id, user_id, kind, at_ms, data FROM {ks}.event_feed \
                     WHERE bucket = ? AND id > ? AND id <= ? LIMIT ?",
                    (bucket, after, horizon, want),
                )
                .await?;
            for row in rows {
                events.push(row.into_event()?);
            }
            bucket += 1;
        }
        let next = match events.last() {
            Some(last) if events.len() >= limit => last.id,
            _ => horizon.max(after),
        };
        Ok(EventPage { events, next })
    }

    async fn event_feed_head(&self) -> Result<EventId, StoreError> {
        Ok(self.horizon())
    }

    async fn prune_events(&self, retention: EventRetention) -> Result<u64, StoreError> {
        let cutoff = ids::id_secs_ago(retention.max_age_secs);
        let keep = usize::try_from(retention.per_user).unwrap_or(usize::MAX);
        let mut removed = 0u64;
        for user in self.all_user_ids().await? {
            // Newest first: everything past the newest `keep`, or older than the cutoff, goes.
            let ids: Vec<(i64,)> = self
                .rows(
                    "SELECT id FROM {ks}.events_by_user WHERE user_id = ? ORDER BY id DESC",
                    (user,),
                )
                .await?;
            // Events an enabled webhook endpoint has yet to be delivered are kept.
            let floor = self.webhook_floor(user).await?.unwrap_or(i64::MAX);
            let first_dropped = ids
                .iter()
                .enumerate()
                .find(|(i, (id,))| (*i >= keep && *id <= floor) || *id < cutoff);
            let Some((at, (bound,))) = first_dropped else {
                continue;
            };
            removed += (ids.len() - at) as u64;
            self.exec(
                "DELETE FROM {ks}.events_by_user WHERE user_id = ? AND id <= ?",
                Kind::Write,
                (user, *bound),
            )
            .await?;
        }
        Ok(removed)
    }

    fn event_hint(&self) -> Option<watch::Receiver<EventId>> {
        None
    }
}
