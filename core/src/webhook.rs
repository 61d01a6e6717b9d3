//! Webhook endpoints: where a user's events are POSTed, and how far delivery got.

use crate::account::UserId;
use crate::event::{EventId, EventKind};

/// A registered webhook endpoint with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Public id, `wh_` and 20 base32 characters.
    pub id: String,
    /// The owner, whose events it receives.
    pub user_id: UserId,
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Event kinds it receives; empty: every kind.
    pub events: Vec<EventKind>,
    /// False while the owner or the dispatcher turned it off.
    pub enabled: bool,
    /// Why the dispatcher disabled it (`failing`); `None` when enabled or turned off by
    /// the owner.
    pub disabled_reason: Option<String>,
    /// The signing secret, `whsec_` and base64 (Standard Webhooks).
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    pub previous_secret: Option<String>,
    /// Unix seconds until which the previous secret signs too.
    pub previous_until: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// How far delivery got.
    pub delivery: DeliveryState,
}

impl Webhook {
    /// Whether it receives events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// Where an endpoint's delivery stands: events up to `cursor` are done with, the next
/// one is tried at `next_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryState {
    /// The last event delivered or given up.
    pub cursor: EventId,
    /// Failed attempts at the event after the cursor.
    pub attempt: u32,
    /// When the next attempt is due, Unix milliseconds (0: now).
    pub next_at_ms: i64,
    /// When the current run of failures began, Unix milliseconds.
    pub failing_since_ms: Option<i64>,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; another attempt follows (`next_try_ms`) unless the attempt was manual.
    Failed,
    /// It did not, and the retry window is over: the event is skipped and the endpoint
    /// disabled.
    GivenUp,
}

impl DeliveryOutcome {
    /// Every outcome.
    pub const ALL: [DeliveryOutcome; 3] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Failed,
        DeliveryOutcome::GivenUp,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::GivenUp => "given_up",
        }
    }

    /// The outcome with this wire name.
    pub fn parse(text: &str) -> Option<DeliveryOutcome> {
        DeliveryOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One attempt to deliver a message to an endpoint, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Increasing with time within an endpoint's log.
    pub id: i64,
    /// The endpoint.
    pub webhook_id: String,
    /// The endpoint's owner.
    pub user_id: UserId,
    /// The event delivered (0 for a test message).
    pub event_id: EventId,
    /// The message's type, e.g. `link.created` or `webhook.test`.
    pub event_type: String,
    /// The message id sent as `webhook-id`: the same for every attempt at one event.
    pub message_id: String,
    /// 1 for the first attempt at this event.
    pub attempt: u32,
    /// When the attempt started, Unix milliseconds.
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// How long the attempt took.
    pub latency_ms: u32,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// Why it failed, in words.
    pub error: Option<String>,
    /// When the next attempt is due, Unix milliseconds.
    pub next_try_ms: Option<i64>,
    /// Asked for through the API (a test or a redelivery), outside the schedule.
    pub manual: bool,
}

/// A new delivery record id: Unix microseconds times 16 plus 4 random bits, larger than
/// every id this process made before (records of one endpoint sort by time).
pub fn next_delivery_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        & 15;
    let candidate = crate::time_util::now_unix_ms().saturating_mul(16_000) | random as i64;
    crate::time_util::next_monotonic(&LAST, candidate)
}

/// Unix milliseconds at which delivery record `id` was made.
pub fn delivery_id_ms(id: i64) -> i64 {
    id / 16_000
}

/// The message id of an event: what receivers deduplicate on.
pub fn message_id(event: EventId) -> String {
    format!("msg_{event}")
}

/// Why an endpoint owner is told their endpoint was disabled.
pub const DISABLED_FAILING: &str = "failing";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in DeliveryOutcome::ALL {
            assert_eq!(DeliveryOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(DeliveryOutcome::parse("lost"), None);
    }

    #[test]
    fn delivery_ids_grow_and_tell_their_time() {
        let before = crate::time_util::now_unix_ms();
        let a = next_delivery_id();
        let b = next_delivery_id();
        assert!(b > a);
        assert!(delivery_id_ms(a) >= before && delivery_id_ms(a) <= before + 1000);
    }

    #[test]
    fn an_empty_kind_list_wants_everything() {
        let mut hook = Webhook {
            id: "wh_x".into(),
            user_id: 1,
            url: "https://example.com/".into(),
            events: vec![],
            enabled: true,
            disabled_reason: None,
            secret: String::new(),
            previous_secret: None,
            previous_until: None,
            created_at: 0,
            updated_at: 0,
            delivery: DeliveryState::default(),
        };
        assert!(hook.wants(EventKind::LinkClicked));
        hook.events = vec![EventKind::LinkCreated];
        assert!(hook.wants(EventKind::LinkCreated));
        assert!(!hook.wants(EventKind::LinkClicked));
    }
}
