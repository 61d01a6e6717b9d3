//! The notification hub: one per control-plane instance. It follows the store's event
//! feed (woken at once by the store's in-process hint, else by polling, so events written
//! by another instance arrive too) and fans each event out to its owner's subscribers.
//!
//! Each user has a bounded broadcast channel. Sending never waits: a subscriber that falls
//! more than the buffer behind loses its place in the channel, gets a `resync`, and
//! catches up from the log, so a slow client never holds back the others or the writers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shortlink_core::{Event, EventId, UserId};
use shortlink_store::{Store, StoreError};
use tokio::sync::{broadcast, watch};
use tracing::warn;

/// Events read from the store per query, when following the feed or catching up.
const PAGE: usize = 500;

/// An event ready to send: rendered to JSON once for all its subscribers.
#[derive(Debug)]
pub struct Outgoing {
    /// The event's id.
    pub id: EventId,
    /// Its JSON form (see [`Event::to_json`]).
    pub json: String,
}

impl From<&Event> for Outgoing {
    fn from(event: &Event) -> Self {
        Outgoing {
            id: event.id,
            json: event.to_json(),
        }
    }
}

/// Limits of a hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Subscribers one user may hold at once.
    pub per_user: usize,
    /// Subscribers this instance holds at once.
    pub total: usize,
    /// Events buffered per user before a slow subscriber has to resync.
    pub buffer: usize,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The user holds `per_user` subscriptions already.
    #[error("this user already holds {0} event subscriptions (the limit)")]
    UserLimit(usize),
    /// The instance holds `total` subscriptions already.
    #[error("this server already holds {0} event subscriptions (the limit)")]
    InstanceLimit(usize),
    /// The hub is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

struct Channel {
    sender: broadcast::Sender<Arc<Outgoing>>,
    subscribers: usize,
}

/// Something told of every published batch of events.
type Observer = Box<dyn Fn(&[Event]) + Send + Sync>;

/// Fans events out to subscribers. Share it behind an `Arc`.
pub struct Hub {
    channels: Mutex<HashMap<UserId, Channel>>,
    total: AtomicUsize,
    limits: HubLimits,
    closed: watch::Sender<bool>,
    /// The id of the last event published (the follower's place in the feed).
    published: AtomicI64,
    /// Called with every published batch (webhook delivery).
    observers: Mutex<Vec<Observer>>,
}

impl Hub {
    /// A hub with these limits.
    pub fn new(limits: HubLimits) -> Arc<Hub> {
        Arc::new(Hub {
            channels: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            limits,
            closed: watch::channel(false).0,
            published: AtomicI64::new(0),
            observers: Mutex::new(Vec::new()),
        })
    }

    /// Calls `observer` with every batch of events published from now on; it must not
    /// wait.
    pub fn on_publish(&self, observer: impl Fn(&[Event]) + Send + Sync + 'static) {
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(observer));
    }

    /// Subscribes to `user`'s live events, within the limits.
    pub fn subscribe(self: &Arc<Self>, user: UserId) -> Result<Subscription, SubscribeError> {
        if *self.closed.borrow() {
            return Err(SubscribeError::ShuttingDown);
        }
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.limits.total {
            return Err(SubscribeError::InstanceLimit(self.limits.total));
        }
        let channel = channels.entry(user).or_insert_with(|| Channel {
            sender: broadcast::channel(self.limits.buffer.max(1)).0,
            subscribers: 0,
        });
        if channel.subscribers >= self.limits.per_user {
            return Err(SubscribeError::UserLimit(self.limits.per_user));
        }
        channel.subscribers += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        crate::metrics::SUBSCRIBERS.inc();
        Ok(Subscription {
            receiver: channel.sender.subscribe(),
            closed: self.closed.subscribe(),
            user,
            hub: self.clone(),
        })
    }

    /// Subscriptions held now.
    pub fn subscribers(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The id of the last event published: a new live-only subscriber starts here.
    pub fn published(&self) -> EventId {
        self.published.load(Ordering::Acquire)
    }

    /// Hands events (in id order) to their owners' subscribers; never waits.
    pub fn publish(&self, events: &[Event]) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = events.last() {
            self.published.fetch_max(last.id, Ordering::AcqRel);
        }
        crate::metrics::EVENTS_PUBLISHED.inc_by(events.len() as u64);
        for observer in self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            observer(events);
        }
        for event in events {
            if let Some(channel) = channels.get(&event.user_id) {
                // An error only means nobody is listening right now.
                let _ = channel.sender.send(Arc::new(Outgoing::from(event)));
            }
        }
    }

    /// Ends every subscription (their streams finish) and refuses new ones: lets a
    /// graceful shutdown complete while clients hold streams open.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn release(&self, user: UserId) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get_mut(&user) {
            channel.subscribers -= 1;
            if channel.subscribers == 0 {
                channels.remove(&user);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::SUBSCRIBERS.dec();
    }

    /// Follows the store's event feed from its current head and publishes what appears,
    /// until the hub closes. Wakes on the store's hint when it has one, and every
    /// `poll` regardless (events written by other instances).
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, poll: Duration) {
        self.follow_from(store, poll, None).await;
    }

    /// Like [`Hub::follow`], from `start` when given: a caller that reads the head before
    /// serving requests makes sure no event written by a request is skipped.
    pub async fn follow_from(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        poll: Duration,
        start: Option<EventId>,
    ) {
        let mut hint = store.event_hint();
        let mut closed = self.closed.subscribe();
        if let Some(start) = start {
            self.published.fetch_max(start, Ordering::AcqRel);
        }
        let mut cursor = if let Some(start) = start {
            start
        } else {
            loop {
                match store.event_feed_head().await {
                    Ok(head) => {
                        self.published.fetch_max(head, Ordering::AcqRel);
                        break head;
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read the event feed head; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(poll) => {}
                            _ = closed.wait_for(|c| *c) => return,
                        }
                    }
                }
            }
        };
        loop {
            loop {
                match store.event_feed(cursor, PAGE).await {
                    Ok(page) => {
                        cursor = page.next;
                        if !page.events.is_empty() {
                            self.publish(&page.events);
                        }
                        if page.events.len() < PAGE {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "reading the event feed failed");
                        break;
                    }
                }
            }
            let hint_changed = async {
                match hint.as_mut() {
                    Some(h) => {
                        if h.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = hint_changed => {}
                _ = tokio::time::sleep(poll) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }
}

/// A place among a user's subscribers; dropping it frees the place.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Outgoing>>,
    closed: watch::Receiver<bool>,
    user: UserId,
    hub: Arc<Hub>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.release(self.user);
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// An event.
    Event(Arc<Outgoing>),
    /// The subscriber fell behind the live buffer; what follows comes from the log.
    Resync,
}

/// A user's events from a cursor on: first what the log holds after it, then live ones,
/// in id order without duplicates, with a catch-up from the log whenever the live buffer
/// overflowed.
pub struct EventStream {
    store: Arc<dyn Store>,
    subscription: Subscription,
    cursor: EventId,
    catch_up: bool,
    backlog: std::collections::VecDeque<Arc<Outgoing>>,
}

impl EventStream {
    /// Starts after `after` (replaying the log from there), or — when `None` — with the
    /// events the hub publishes from now on.
    pub fn open(
        store: Arc<dyn Store>,
        subscription: Subscription,
        after: Option<EventId>,
    ) -> EventStream {
        // The subscription exists before the hub's position is read, so every event the
        // hub publishes later is in the live channel; ids at or below the cursor are
        // dropped there as duplicates of the log.
        let (cursor, catch_up) = match after {
            Some(id) => (id.max(0), true),
            None => (subscription.hub.published(), false),
        };
        EventStream {
            store,
            subscription,
            cursor,
            catch_up,
            backlog: Default::default(),
        }
    }

    /// The id of the last event handed out (or the starting cursor).
    pub fn cursor(&self) -> EventId {
        self.cursor
    }

    /// Restarts after `after`: the log from there, then live events.
    pub fn resume_after(&mut self, after: EventId) {
        self.cursor = after.max(0);
        self.backlog.clear();
        self.catch_up = true;
    }

    /// The next delivery; `None` when the hub closed.
    pub async fn next(&mut self) -> Result<Option<Delivery>, StoreError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.cursor = event.id;
                return Ok(Some(Delivery::Event(event)));
            }
            if self.catch_up {
                let user = self.subscription.user;
                let page = self.store.user_events(user, self.cursor, PAGE).await?;
                if page.len() < PAGE {
                    self.catch_up = false;
                }
                self.backlog
                    .extend(page.iter().map(|e| Arc::new(Outgoing::from(e))));
                continue;
            }
            if *self.subscription.closed.borrow() {
                return Ok(None);
            }
            tokio::select! {
                received = self.subscription.receiver.recv() => match received {
                    Ok(event) if event.id <= self.cursor => continue,
                    Ok(event) => {
                        self.cursor = event.id;
                        return Ok(Some(Delivery::Event(event)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        crate::metrics::EVENT_RESYNCS.inc();
                        self.catch_up = true;
                        return Ok(Some(Delivery::Resync));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(None),
                },
                _ = self.subscription.closed.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shortlink_core::{EventKind, NewEvent, Role};
    use shortlink_embedded::{EmbeddedConfig, EmbeddedStore};

    fn limits() -> HubLimits {
        HubLimits {
            per_user: 2,
            total: 3,
            buffer: 4,
        }
    }

    fn created(user: UserId, n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                user_id: user,
                kind: EventKind::LinkCreated,
                data: format!(r#"{{"n":{i}}}"#),
            })
            .collect()
    }

    #[test]
    fn limits_per_user_and_per_instance_and_release_on_drop() {
        let hub = Hub::new(limits());
        let a1 = hub.subscribe(1).unwrap();
        let _a2 = hub.subscribe(1).unwrap();
        assert_eq!(hub.subscribe(1).err(), Some(SubscribeError::UserLimit(2)));
        let _b1 = hub.subscribe(2).unwrap();
        assert_eq!(
            hub.subscribe(3).err(),
            Some(SubscribeError::InstanceLimit(3))
        );
        drop(a1);
        assert_eq!(hub.subscribers(), 2);
        let _a3 = hub.subscribe(1).unwrap();
        hub.close();
        assert_eq!(hub.subscribe(4).err(), Some(SubscribeError::ShuttingDown));
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_resync_then_everything_from_the_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let user = store.create_user("slow", Role::User).await.unwrap().id;
        let other = store.create_user("other", Role::User).await.unwrap().id;
        let hub = Hub::new(limits());
        let mut stream = EventStream::open(store.clone(), hub.subscribe(user).unwrap(), None);
        // Ten events, published at once: more than the buffer of four.
        let mut written = store.append_events(created(user, 10)).await.unwrap();
        written.extend(store.append_events(created(other, 3)).await.unwrap());
        hub.publish(&written);
        let mut seen = Vec::new();
        let mut resyncs = 0;
        while seen.len() < 10 {
            match stream.next().await.unwrap().unwrap() {
                Delivery::Event(e) => seen.push(e.id),
                Delivery::Resync => resyncs += 1,
            }
        }
        assert_eq!(resyncs, 1, "one resync for one overflow");
        let expected: Vec<EventId> = written[..10].iter().map(|e| e.id).collect();
        assert_eq!(seen, expected, "all of the user's events, in order, once");
        hub.close();
        assert!(
            stream.next().await.unwrap().is_none(),
            "ends when the hub closes"
        );
    }

    #[tokio::test]
    async fn following_the_feed_delivers_only_the_owners_events() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let a = store.create_user("a", Role::User).await.unwrap().id;
        let b = store.create_user("b", Role::User).await.unwrap().id;
        let hub = Hub::new(limits());
        tokio::spawn(hub.clone().follow(store.clone(), Duration::from_secs(5)));
        let mut stream_b = EventStream::open(store.clone(), hub.subscribe(b).unwrap(), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.append_events(created(a, 2)).await.unwrap();
        let mine = store.append_events(created(b, 1)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), stream_b.next())
            .await
            .expect("the hint wakes the follower")
            .unwrap()
            .unwrap();
        match got {
            Delivery::Event(e) => assert_eq!(e.id, mine[0].id),
            Delivery::Resync => panic!("no resync expected"),
        }
        hub.close();
    }
}
