//! The delivery loop of one control plane: it keeps the list of enabled endpoints,
//! learns from the hub which users have new events, and for each endpoint with work
//! leases it, delivers its owner's events in order from its cursor, and saves progress.
//!
//! One request is in flight per endpoint and at most `max_active` endpoints are worked
//! on at once, each in its own task: a slow receiver holds only its own place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use shortlink_core::time_util::{ms_to_rfc3339, now_unix_ms};
use shortlink_core::{
    DISABLED_FAILING, DeliveryOutcome, DeliveryRecord, DeliveryState, Event, EventKind, NewEvent,
    UserId, Webhook, message_id, next_delivery_id,
};
use shortlink_store::{Store, StoreError};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{info, warn};

use super::send::{Attempt, Sender};
use crate::config::WebhookConfig;
use crate::metrics;

/// Events read from an owner's log at a time.
const PAGE: usize = 200;
/// How often the endpoint list is read again (endpoints changed on other instances).
const REFRESH: Duration = Duration::from_secs(2);
/// How often progress is saved (and the lease renewed) while events flow.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Wait before trying an endpoint again after the store failed.
const STORE_RETRY_MS: i64 = 5_000;

/// The body of a message: `{"type", "timestamp", "data"}` as the Standard Webhooks
/// specification recommends, plus the event's `id`.
pub fn message_body(event: &Event) -> String {
    format!(
        r#"{{"id":{},"type":"{}","timestamp":"{}","data":{}}}"#,
        event.id,
        event.kind.as_str(),
        ms_to_rfc3339(event.at_ms),
        if event.data.is_empty() {
            "{}"
        } else {
            &event.data
        }
    )
}

/// A message to an endpoint: an event (0 for a test) under its message id.
pub struct Message {
    /// The event.
    pub event_id: i64,
    /// Its type, e.g. `link.created`.
    pub event_type: String,
    /// The `webhook-id`.
    pub message_id: String,
}

impl Message {
    /// The message of `event`.
    pub fn of(event: &Event) -> Message {
        Message {
            event_id: event.id,
            event_type: event.kind.as_str().to_owned(),
            message_id: message_id(event.id),
        }
    }
}

/// The delivery record of `attempt` number `attempt_no` at `message` to `hook`, counted
/// in the deliveries metric: every attempt makes one.
pub fn record(
    hook: &Webhook,
    message: &Message,
    attempt_no: u32,
    attempt: &Attempt,
    outcome: DeliveryOutcome,
    next_try_ms: Option<i64>,
    manual: bool,
) -> DeliveryRecord {
    metrics::WEBHOOK_DELIVERIES
        .with_label_values(&[outcome.as_str()])
        .inc();
    let id = next_delivery_id();
    DeliveryRecord {
        id,
        webhook_id: hook.id.clone(),
        user_id: hook.user_id,
        event_id: message.event_id,
        event_type: message.event_type.clone(),
        message_id: message.message_id.clone(),
        attempt: attempt_no,
        at_ms: shortlink_core::delivery_id_ms(id) - i64::from(attempt.latency_ms),
        status: attempt.status,
        latency_ms: attempt.latency_ms,
        outcome,
        error: attempt.error.clone(),
        next_try_ms,
        manual,
    }
}

/// What the dispatcher knows of an endpoint.
struct Slot {
    user: UserId,
    events: Vec<EventKind>,
    /// A task is delivering to it.
    running: bool,
    /// Events may be waiting (new ones were seen, or it was never looked at).
    dirty: bool,
    /// Not before this time (a retry's due time, another instance's lease).
    not_before_ms: i64,
    /// When the event waiting at its head was written (the backlog gauge).
    head_at_ms: Option<i64>,
}

/// The known endpoints, by id and by owner.
#[derive(Default)]
struct Slots {
    by_id: HashMap<String, Slot>,
    by_user: HashMap<UserId, Vec<String>>,
}

/// Events read for delivery and not delivered yet, counted in the outbox depth gauge
/// until delivered or dropped.
struct Pending(i64);

impl Pending {
    fn add(&mut self, n: i64) {
        self.0 += n;
        metrics::WEBHOOK_OUTBOX_DEPTH.add(n);
    }

    fn done(&mut self) {
        self.add(-1);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        metrics::WEBHOOK_OUTBOX_DEPTH.sub(self.0);
    }
}

/// How a run over one endpoint ended.
enum RunEnd {
    /// Caught up.
    Idle,
    /// The next attempt is due then.
    RetryAt(i64),
    /// Another instance holds the lease until then.
    Busy(i64),
    /// Disabled or deleted.
    Gone,
}

/// Delivers webhooks for one control plane. Share it behind an `Arc`.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sender: Arc<Sender>,
    config: WebhookConfig,
    /// This instance's lease holder name.
    holder: String,
    slots: Mutex<Slots>,
    wake: Notify,
    refresh_now: std::sync::atomic::AtomicBool,
    permits: Arc<Semaphore>,
    closed: watch::Sender<bool>,
}

impl Dispatcher {
    /// A dispatcher on `store`, sending with `sender`.
    pub fn new(store: Arc<dyn Store>, sender: Arc<Sender>, config: WebhookConfig) -> Arc<Self> {
        let holder = format!("cp-{:016x}", rand::rng().random::<u64>());
        Arc::new(Dispatcher {
            permits: Arc::new(Semaphore::new(config.max_active)),
            store,
            sender,
            config,
            holder,
            slots: Mutex::new(Slots::default()),
            wake: Notify::new(),
            refresh_now: std::sync::atomic::AtomicBool::new(false),
            closed: watch::channel(false).0,
        })
    }

    /// The sender (for test and redelivery requests).
    pub fn sender(&self) -> &Arc<Sender> {
        &self.sender
    }

    /// Marks the endpoints of the events' owners as having work: called with every event
    /// the hub publishes.
    pub fn observe(&self, events: &[Event]) {
        let mut woke = false;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Slots { by_id, by_user } = &mut *slots;
        for event in events {
            for id in by_user.get(&event.user_id).into_iter().flatten() {
                if let Some(slot) = by_id.get_mut(id)
                    && (slot.events.is_empty() || slot.events.contains(&event.kind))
                {
                    slot.dirty = true;
                    woke = true;
                }
            }
        }
        drop(slots);
        if woke {
            self.wake.notify_one();
        }
    }

    /// Reads the endpoint list again now (one was added or changed here).
    pub fn refresh_soon(&self) {
        self.refresh_now
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    /// Stops starting runs; runs in flight finish their current attempt and save.
    pub fn close(&self) {
        self.closed.send_replace(true);
        self.wake.notify_one();
    }

    /// Runs until [`Dispatcher::close`]: refreshes the endpoint list, starts runs for
    /// endpoints with work, and waits for events or due retries.
    pub async fn run(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        let mut next_refresh = tokio::time::Instant::now();
        loop {
            if *closed.borrow() {
                break;
            }
            let asked = self
                .refresh_now
                .swap(false, std::sync::atomic::Ordering::AcqRel);
            if asked || tokio::time::Instant::now() >= next_refresh {
                if let Err(e) = self.refresh().await {
                    warn!(error = %e, "cannot read the webhook endpoints");
                }
                next_refresh = tokio::time::Instant::now() + REFRESH;
            }
            let next_due = self.start_due();
            self.update_backlog();
            let wait = next_due
                .map(|due| Duration::from_millis((due - now_unix_ms()).clamp(1, 500) as u64))
                .unwrap_or(Duration::from_millis(500))
                .min(next_refresh.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = closed.wait_for(|c| *c) => break,
            }
        }
        // Wait for runs in flight to save their progress.
        let _ = self
            .permits
            .acquire_many(self.config.max_active as u32)
            .await;
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let hooks = self.store.list_webhooks(None).await?;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let enabled: HashMap<String, Webhook> = hooks
            .into_iter()
            .filter(|h| h.enabled)
            .map(|h| (h.id.clone(), h))
            .collect();
        slots
            .by_id
            .retain(|id, slot| slot.running || enabled.contains_key(id));
        for (id, hook) in enabled {
            let slot = slots.by_id.entry(id).or_insert_with(|| Slot {
                user: hook.user_id,
                events: hook.events.clone(),
                running: false,
                dirty: true,
                not_before_ms: 0,
                head_at_ms: None,
            });
            slot.events = hook.events;
            if !slot.running {
                // The stored schedule wins (another instance, or a fresh start, moved it).
                slot.not_before_ms = hook.delivery.next_at_ms;
                slot.dirty |= hook.delivery.next_at_ms > 0;
            }
        }
        let mut by_user: HashMap<UserId, Vec<String>> = HashMap::new();
        for (id, slot) in &slots.by_id {
            by_user.entry(slot.user).or_default().push(id.clone());
        }
        slots.by_user = by_user;
        Ok(())
    }

    /// Starts a run for every endpoint with work that is due, as far as permits go;
    /// returns when the earliest waiting one is due.
    fn start_due(self: &Arc<Self>) -> Option<i64> {
        let now = now_unix_ms();
        let mut next_due: Option<i64> = None;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for (id, slot) in slots.by_id.iter_mut() {
            if slot.running || !slot.dirty {
                continue;
            }
            if slot.not_before_ms > now {
                next_due = Some(next_due.map_or(slot.not_before_ms, |d| d.min(slot.not_before_ms)));
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            slot.running = true;
            slot.dirty = false;
            let (this, id, user) = (self.clone(), id.clone(), slot.user);
            tokio::spawn(async move {
                let end = match this.run_endpoint(user, &id).await {
                    Ok(end) => end,
                    Err(e) => {
                        warn!(error = %e, webhook = %id, "webhook delivery stopped on a store error");
                        RunEnd::RetryAt(now_unix_ms() + STORE_RETRY_MS)
                    }
                };
                this.finish(&id, end);
                drop(permit);
            });
        }
        next_due
    }

    fn finish(&self, id: &str, end: RunEnd) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.by_id.get_mut(id) {
            slot.running = false;
            match end {
                RunEnd::Idle => slot.head_at_ms = None,
                RunEnd::RetryAt(at) | RunEnd::Busy(at) => {
                    slot.dirty = true;
                    slot.not_before_ms = at;
                }
                RunEnd::Gone => {
                    slots.by_id.remove(id);
                }
            }
        }
        drop(slots);
        self.wake.notify_one();
    }

    fn update_backlog(&self) {
        let oldest = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .values()
            .filter_map(|slot| slot.head_at_ms)
            .min();
        let age = oldest.map_or(0.0, |at| (now_unix_ms() - at).max(0) as f64 / 1000.0);
        metrics::WEBHOOK_BACKLOG_SECONDS.set(age);
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease_seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 4)
    }

    fn backoff_ms(&self, attempt: u32) -> i64 {
        let base = self.config.first_retry_ms as f64;
        let cap = self.config.max_retry_interval_seconds as f64 * 1000.0;
        let wait = (base * 2f64.powi(attempt.saturating_sub(1).min(40) as i32)).min(cap);
        (wait * rand::rng().random_range(0.8..1.2)) as i64
    }

    /// Delivers the endpoint's waiting events while holding its lease.
    async fn run_endpoint(&self, user: UserId, id: &str) -> Result<RunEnd, StoreError> {
        let now = now_unix_ms();
        let lease_ms = self.lease_ms();
        let Some(hook) = self
            .store
            .lease_webhook(user, id, &self.holder, now, now + lease_ms)
            .await?
        else {
            return Ok(match self.store.get_webhook(user, id).await? {
                Some(h) if h.enabled => RunEnd::Busy(now + lease_ms.min(5_000)),
                _ => RunEnd::Gone,
            });
        };
        let mut lease_until = now + lease_ms;
        let mut state = hook.delivery;
        if !hook.enabled {
            self.save(&hook, state, 0).await?;
            return Ok(RunEnd::Gone);
        }
        if state.next_at_ms > now {
            self.save(&hook, state, 0).await?;
            return Ok(RunEnd::RetryAt(state.next_at_ms));
        }
        let timeout_ms = i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX / 4);
        let mut log = Vec::new();
        let mut last_save = tokio::time::Instant::now();
        let closed = self.closed.subscribe();
        let mut pending = Pending(0);
        loop {
            let page = self.store.user_events(user, state.cursor, PAGE).await?;
            if page.is_empty() {
                self.store
                    .record_deliveries(std::mem::take(&mut log))
                    .await?;
                self.save(&hook, state, 0).await?;
                return Ok(RunEnd::Idle);
            }
            pending.add(page.iter().filter(|e| hook.wants(e.kind)).count() as i64);
            for event in page {
                if !hook.wants(event.kind) {
                    state.cursor = event.id;
                    continue;
                }
                let now = now_unix_ms();
                let must_save = last_save.elapsed() >= SAVE_EVERY || log.len() >= PAGE;
                if *closed.borrow() || must_save || lease_until - now < 2 * timeout_ms {
                    self.store
                        .record_deliveries(std::mem::take(&mut log))
                        .await?;
                    let until = if *closed.borrow() { 0 } else { now + lease_ms };
                    if until == 0 {
                        self.save(&hook, state, 0).await?;
                        return Ok(RunEnd::Idle);
                    }
                    if !self.save(&hook, state, until).await? {
                        // Settings changed (or the lease is gone): start again from what
                        // is stored, with them.
                        return Ok(RunEnd::RetryAt(now));
                    }
                    lease_until = until;
                    last_save = tokio::time::Instant::now();
                }
                if let Some(slot) = self
                    .slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_id
                    .get_mut(&hook.id)
                {
                    slot.head_at_ms = Some(event.at_ms);
                }
                let msg = Message::of(&event);
                let attempt = self
                    .sender
                    .send(&hook, &msg.message_id, &message_body(&event))
                    .await;
                metrics::WEBHOOK_DELIVERY_SECONDS.observe(f64::from(attempt.latency_ms) / 1000.0);
                let attempt_no = state.attempt + 1;
                if attempt.delivered() {
                    metrics::WEBHOOK_EVENT_LAG_SECONDS
                        .observe((now_unix_ms() - event.at_ms).max(0) as f64 / 1000.0);
                    log.push(record(
                        &hook,
                        &msg,
                        attempt_no,
                        &attempt,
                        DeliveryOutcome::Delivered,
                        None,
                        false,
                    ));
                    state = DeliveryState {
                        cursor: event.id,
                        ..DeliveryState::default()
                    };
                    pending.done();
                    continue;
                }
                let now = now_unix_ms();
                let since = *state.failing_since_ms.get_or_insert(now);
                let window_ms =
                    i64::try_from(self.config.retry_window_seconds.saturating_mul(1000))
                        .unwrap_or(i64::MAX / 4);
                if now - since >= window_ms {
                    log.push(record(
                        &hook,
                        &msg,
                        attempt_no,
                        &attempt,
                        DeliveryOutcome::GivenUp,
                        None,
                        false,
                    ));
                    self.store.record_deliveries(log).await?;
                    let given_up = DeliveryState {
                        cursor: event.id,
                        ..DeliveryState::default()
                    };
                    // The lease is kept while the endpoint is disabled, so no other
                    // instance tries the next event in between.
                    if self.save(&hook, given_up, now + lease_ms).await? {
                        self.disable(&hook, since, &attempt).await?;
                    }
                    return Ok(RunEnd::Gone);
                }
                let next = now + self.backoff_ms(attempt_no);
                log.push(record(
                    &hook,
                    &msg,
                    attempt_no,
                    &attempt,
                    DeliveryOutcome::Failed,
                    Some(next),
                    false,
                ));
                self.store.record_deliveries(log).await?;
                state.attempt = attempt_no;
                state.next_at_ms = next;
                self.save(&hook, state, 0).await?;
                return Ok(RunEnd::RetryAt(next));
            }
        }
    }

    async fn save(
        &self,
        hook: &Webhook,
        state: DeliveryState,
        until: i64,
    ) -> Result<bool, StoreError> {
        let saved = self
            .store
            .save_webhook_progress(
                hook.user_id,
                &hook.id,
                &self.holder,
                hook.updated_at,
                state,
                until,
            )
            .await?;
        if !saved {
            info!(webhook = %hook.id, "webhook settings changed or its lease was lost: reading it again");
        }
        Ok(saved)
    }

    async fn disable(
        &self,
        hook: &Webhook,
        since_ms: i64,
        last: &Attempt,
    ) -> Result<(), StoreError> {
        // Not the URL: it may hold a token, and this event goes to every stream.
        let data = serde_json::json!({
            "id": hook.id,
            "reason": DISABLED_FAILING,
            "failing_since": ms_to_rfc3339(since_ms),
            "last_error": last.error,
        });
        let event = NewEvent {
            user_id: hook.user_id,
            kind: EventKind::WebhookDisabled,
            data: data.to_string(),
        };
        if self
            .store
            .disable_webhook(hook.user_id, &hook.id, DISABLED_FAILING, event)
            .await?
        {
            metrics::WEBHOOK_DISABLED.inc();
            info!(webhook = %hook.id, "webhook endpoint disabled: it failed for the whole retry window");
        }
        Ok(())
    }
}

/// Hub hook: hands published events to the dispatcher while it lives.
pub fn observer(dispatcher: &Arc<Dispatcher>) -> impl Fn(&[Event]) + Send + Sync + 'static {
    let weak: Weak<Dispatcher> = Arc::downgrade(dispatcher);
    move |events| {
        if let Some(d) = weak.upgrade() {
            d.observe(events);
        }
    }
}
