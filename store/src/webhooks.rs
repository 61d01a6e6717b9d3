//! Webhook endpoints, their delivery leases and their delivery logs.
//!
//! The outbox is the event log itself: an endpoint's [`DeliveryState::cursor`] says how
//! far through its owner's events delivery got. The control plane that leases an
//! endpoint is the only one delivering to it, so each event reaches each endpoint once
//! however many control planes run (a crash between delivering and saving progress
//! repeats a delivery, with the same `webhook-id`).

use async_trait::async_trait;
use shortlink_core::{DeliveryRecord, DeliveryState, NewEvent, UserId, Webhook};

use crate::StoreError;

/// Webhook endpoints and their delivery logs.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Registers an endpoint (its id is new).
    async fn create_webhook(&self, hook: Webhook) -> Result<(), StoreError>;

    /// The user's endpoint with this id.
    async fn get_webhook(&self, user: UserId, id: &str) -> Result<Option<Webhook>, StoreError>;

    /// The user's endpoints, or every user's with `None`, oldest first.
    async fn list_webhooks(&self, user: Option<UserId>) -> Result<Vec<Webhook>, StoreError>;

    /// Writes an endpoint's settings (URL, event kinds, enabled and why not, secrets,
    /// `updated_at`). With `fresh_start` its failure state is cleared too (the cursor
    /// stays). False if there is no such endpoint.
    async fn update_webhook(&self, hook: &Webhook, fresh_start: bool) -> Result<bool, StoreError>;

    /// Deletes the endpoint and its delivery log (backends whose log rows expire may leave
    /// them to expire, unreachable); false if there was no such endpoint.
    async fn delete_webhook(&self, user: UserId, id: &str) -> Result<bool, StoreError>;

    /// Leases the endpoint to `holder` until `until_ms` when nobody holds it at `now_ms`
    /// (or `holder` does); returns it as stored when leased.
    async fn lease_webhook(
        &self,
        user: UserId,
        id: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Webhook>, StoreError>;

    /// Saves delivery progress and moves the lease's end to `until_ms` (0 releases it),
    /// while `holder` holds the lease and the settings are still those of `updated_at`;
    /// false (nothing written) otherwise: the run must stop and read them again.
    async fn save_webhook_progress(
        &self,
        user: UserId,
        id: &str,
        holder: &str,
        updated_at: i64,
        state: DeliveryState,
        until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Turns the endpoint off for `reason` (a settings change: `updated_at` moves on) and
    /// appends `event` (telling its owner); false if there is no such endpoint.
    async fn disable_webhook(
        &self,
        user: UserId,
        id: &str,
        reason: &str,
        event: NewEvent,
    ) -> Result<bool, StoreError>;

    /// Appends attempts to their endpoints' delivery logs.
    async fn record_deliveries(&self, records: Vec<DeliveryRecord>) -> Result<(), StoreError>;

    /// The endpoint's attempts with ids below `before` (all with `None`), newest first,
    /// at most `limit`.
    async fn list_deliveries(
        &self,
        user: UserId,
        webhook_id: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Drops attempts older than `max_age_secs` and beyond the newest `per_webhook` of
    /// each endpoint; returns how many were dropped. Backends with expiring rows may
    /// leave this to the expiry.
    async fn prune_deliveries(
        &self,
        per_webhook: u64,
        max_age_secs: i64,
    ) -> Result<u64, StoreError>;
}

/// Event kinds as stored: their names, comma-separated ("" for every kind).
pub fn kinds_text(hook: &Webhook) -> String {
    hook.events
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Event kinds from their stored text.
pub fn parse_kinds(text: &str) -> Result<Vec<shortlink_core::EventKind>, StoreError> {
    text.split(',')
        .filter(|k| !k.is_empty())
        .map(|k| k.parse().map_err(StoreError::backend))
        .collect()
}
