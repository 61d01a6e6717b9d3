//! The single writer thread: groups queued operations into one transaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};
use tracing::{error, warn};

use super::events::events_head;
use super::links::feed_head;
use shortlink_store::StoreError;

use crate::DbError;

/// Watches the writer ticks after a commit moved a feed, for readers in the process.
pub(super) struct Hints {
    /// The route change feed's head.
    pub(super) routes: watch::Sender<u64>,
    /// The event log's head.
    pub(super) events: watch::Sender<i64>,
}

/// Called after the transaction holding the operation committed (or failed to).
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs an operation inside the open transaction; returns whether it succeeded and how
/// to answer its caller once the transaction's fate is known.
/// `None` means the transaction could not begin: the operation is not run.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// Handle to the writer thread. Dropping it stops the thread after the queue drains.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Operations sent and not yet run: more than the running one means the writer is
    /// behind (a paced write then stops resting).
    outstanding: Arc<AtomicUsize>,
}

impl Writer {
    pub(super) fn start(
        conn: Connection,
        hints: Hints,
        feed_retain: u64,
        max_batch: usize,
    ) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("shortlink-store-writer".into())
            .spawn(move || run(conn, queue, hints, feed_retain, max_batch.max(1)))
            .map_err(|e| StoreError::backend_in("cannot start writer thread", e))?;
        Ok(Writer {
            jobs,
            outstanding: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Queues `op` and waits, without blocking the async thread, until its transaction
    /// commits. An error from `op` rolls back only `op`.
    pub(super) async fn write<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let outstanding = self.outstanding.clone();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => op(conn).map_err(StoreError::from),
                None => Err(StoreError::corrupt("cannot begin a write transaction")),
            };
            outstanding.fetch_sub(1, Ordering::Relaxed);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = reply.send(committed.and(result));
            });
            (ok, finish)
        });
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Closed);
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Operations sent and not yet run, the running one included.
    pub(super) fn outstanding(&self) -> Arc<AtomicUsize> {
        self.outstanding.clone()
    }
}

fn run(
    conn: Connection,
    queue: mpsc::Receiver<Job>,
    hints: Hints,
    feed_retain: u64,
    max_batch: usize,
) {
    let mut head = *hints.routes.borrow();
    let mut events = *hints.events.borrow();
    let mut since_prune = 0usize;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, batch);
        // A paced ingestion commits in the idle class; what comes next may be waited for.
        super::pacing::normal_class();
        since_prune += outcome;
        if since_prune >= 1024 {
            since_prune = 0;
            if let Err(e) = prune_feed(&conn, feed_retain) {
                warn!(error = %e, "pruning the route change feed failed");
            }
        }
        match feed_head(&conn) {
            Ok(new_head) if new_head != head => {
                head = new_head;
                hints.routes.send_replace(head);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reading the route feed head failed"),
        }
        match events_head(&conn) {
            Ok(new_head) if new_head != events => {
                events = new_head;
                hints.events.send_replace(events);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reading the event log head failed"),
        }
    }
}

/// Runs one transaction; returns how many operations it held.
fn run_batch(conn: &Connection, batch: Vec<Job>) -> usize {
    let count = batch.len();
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        error!(error = %e, "cannot begin a write transaction");
        for job in batch {
            let (_, finish) = job(None);
            finish(Ok(()));
        }
        return count;
    }
    let mut finishers = Vec::with_capacity(count);
    for job in batch {
        let savepoint = conn.execute_batch("SAVEPOINT op");
        let (ok, finish) = job(Some(conn));
        if savepoint.is_ok() {
            let end = if ok {
                "RELEASE op"
            } else {
                "ROLLBACK TO op; RELEASE op"
            };
            if let Err(e) = conn.execute_batch(end) {
                error!(error = %e, "cannot close a savepoint");
            }
        }
        finishers.push(finish);
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| {
        error!(error = %e, "commit failed");
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::backend_in("commit failed", e)
    });
    for finish in finishers {
        finish(committed.clone());
    }
    count
}

fn prune_feed(conn: &Connection, retain: u64) -> Result<(), rusqlite::Error> {
    conn.execute(
        "DELETE FROM route_changes WHERE seq <= (SELECT MAX(seq) FROM route_changes) - ?1",
        [retain as i64],
    )?;
    Ok(())
}
