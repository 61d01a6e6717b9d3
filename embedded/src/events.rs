//! The event log on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use shortlink_core::{Event, EventId, EventKind, EventRetention, NewEvent, UserId};
use tokio::sync::watch;

use super::EmbeddedStore;
use shortlink_store::{EventPage, EventStore, StoreError};

/// The newest event id, 0 when the log is empty.
pub(super) fn events_head(conn: &Connection) -> rusqlite::Result<EventId> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
}

/// Appends events inside the caller's transaction; returns them as stored.
pub(super) fn append(
    conn: &Connection,
    events: Vec<NewEvent>,
    at_ms: i64,
) -> rusqlite::Result<Vec<Event>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (user_id, kind, at_ms, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        insert.execute(params![
            event.user_id,
            event.kind.as_str(),
            at_ms,
            event.data
        ])?;
        out.push(Event {
            id: conn.last_insert_rowid(),
            user_id: event.user_id,
            kind: event.kind,
            at_ms,
            data: event.data,
        });
    }
    Ok(out)
}

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = row.get(2)?;
    Ok(Event {
        id: row.get(0)?,
        user_id: row.get(1)?,
        kind: kind.parse::<EventKind>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        at_ms: row.get(3)?,
        data: row.get(4)?,
    })
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .write(move |conn| {
                Ok(append(
                    conn,
                    events,
                    shortlink_core::time_util::now_unix_ms(),
                )?)
            })
            .await
    }

    async fn user_events(
        &self,
        user: UserId,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, user_id, kind, at_ms, data FROM events
                 WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user, after, limit as i64], row_to_event)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn event_feed(&self, after: EventId, limit: usize) -> Result<EventPage, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, user_id, kind, at_ms, data FROM events
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], row_to_event)?;
            let events = rows.collect::<Result<Vec<_>, _>>()?;
            let next = events.last().map_or(after, |e| e.id);
            Ok(EventPage { events, next })
        })
        .await
    }

    async fn event_feed_head(&self) -> Result<EventId, StoreError> {
        self.read(|conn| Ok(events_head(conn)?)).await
    }

    async fn prune_events(&self, retention: EventRetention) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                let cutoff = shortlink_core::time_util::now_unix_ms()
                    .saturating_sub(retention.max_age_secs.saturating_mul(1000));
                // Ids grow with time, so everything before the first young event is old;
                // finding it reads only the rows about to be deleted.
                let first_young: Option<EventId> = conn
                    .query_row(
                        "SELECT id FROM events WHERE at_ms >= ?1 ORDER BY id LIMIT 1",
                        [cutoff],
                        |r| r.get(0),
                    )
                    .optional()?;
                let mut removed = match first_young {
                    Some(id) => conn.execute("DELETE FROM events WHERE id < ?1", [id])?,
                    None => conn.execute("DELETE FROM events", [])?,
                } as u64;
                let crowded: Vec<UserId> = {
                    let mut stmt = conn.prepare(
                        "SELECT user_id FROM events GROUP BY user_id HAVING COUNT(*) > ?1",
                    )?;
                    stmt.query_map([retention.per_user as i64], |r| r.get(0))?
                        .collect::<Result<_, _>>()?
                };
                for user in crowded {
                    removed += conn.execute(
                        "DELETE FROM events WHERE user_id = ?1 AND id <
                         (SELECT id FROM events WHERE user_id = ?1 ORDER BY id DESC
                          LIMIT 1 OFFSET ?2)
                         AND id <= COALESCE((SELECT MIN(cursor) FROM webhooks
                          WHERE user_id = ?1 AND enabled = 1), 9223372036854775807)",
                        params![user, retention.per_user.saturating_sub(1) as i64],
                    )? as u64;
                }
                Ok(removed)
            })
            .await
    }

    fn event_hint(&self) -> Option<watch::Receiver<EventId>> {
        Some(self.event_hint.clone())
    }
}
