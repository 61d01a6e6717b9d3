//! Pacing of long writes on the writer thread.
//!
//! The writer shares the machine's cores with the redirect proxy. A second's click batch
//! over a thousand links is tens of milliseconds of SQLite work; run in one go, it leaves
//! redirects queued behind it on a small machine (on two cores at half the peak, p99 was
//! 1.4 ms unpaced against 0.8 ms paced and 0.6 ms with no clicks captured). Run as
//! sub-millisecond slices with rests between, the same work delays a redirect by a slice
//! at most.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How a long write shares the cores: after each `slice` of work it rests for `rest`, for
/// its first `paced_work` of work. A write bigger than that means ingestion is behind
/// (more than a tenth of a core for a second's batch), and then it needs the cores more
/// than redirects need the slack: the rest runs in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Work between rests. Zero never rests.
    pub slice: Duration,
    /// Each rest. Zero never rests.
    pub rest: Duration,
    /// Work after which a write stops resting.
    pub paced_work: Duration,
}

impl Pacing {
    /// Never rests: a write runs in one go.
    pub const UNPACED: Pacing = Pacing {
        slice: Duration::ZERO,
        rest: Duration::ZERO,
        paced_work: Duration::ZERO,
    };

    /// `slice` of work, then a `rest`, for the first 100 ms of a write's work.
    pub fn new(slice: Duration, rest: Duration) -> Pacing {
        Pacing {
            slice,
            rest,
            paced_work: Duration::from_millis(100),
        }
    }
}

impl Default for Pacing {
    /// Half a millisecond of work, then as long a rest.
    fn default() -> Self {
        Pacing::new(Duration::from_micros(500), Duration::from_micros(500))
    }
}

/// Paces one write: called between its statements, rests when a slice of work is done,
/// unless other writes are waiting: a queue means the writer is behind, and then it works
/// flat out (bulk ingestion keeps its full rate). Rests hold the write transaction
/// (readers go on: WAL).
pub(super) struct Pacer {
    pacing: Pacing,
    /// The writer's operations not yet run, this one included.
    outstanding: Arc<AtomicUsize>,
    since: Instant,
    /// Work done before the current slice.
    worked: Duration,
    rests: u32,
}

impl Pacer {
    pub(super) fn new(pacing: Pacing, outstanding: Arc<AtomicUsize>) -> Pacer {
        Pacer {
            pacing,
            outstanding,
            since: Instant::now(),
            worked: Duration::ZERO,
            rests: 0,
        }
    }

    /// Rests when the work since the last rest reached a slice and no other write waits.
    pub(super) fn step(&mut self) {
        if self.pacing.slice.is_zero()
            || self.pacing.rest.is_zero()
            || self.outstanding.load(Ordering::Relaxed) > 1
        {
            return;
        }
        let slice = self.since.elapsed();
        if slice >= self.pacing.slice && self.worked < self.pacing.paced_work {
            self.worked += slice;
            std::thread::sleep(self.pacing.rest);
            self.rests += 1;
            self.since = Instant::now();
        }
    }

    /// Rests taken so far.
    #[cfg(test)]
    pub(super) fn rests(&self) -> u32 {
        self.rests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This write alone at the writer.
    fn alone() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(1))
    }

    fn busy(for_at_least: Duration) {
        let start = Instant::now();
        while start.elapsed() < for_at_least {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn rests_after_each_slice_of_work_and_never_when_unpaced() {
        let pacing = Pacing::new(Duration::from_micros(200), Duration::from_micros(50));
        let mut pacer = Pacer::new(pacing, alone());
        pacer.step();
        assert_eq!(pacer.rests(), 0, "no rest before a slice of work");
        for _ in 0..3 {
            busy(Duration::from_micros(300));
            pacer.step();
        }
        assert_eq!(pacer.rests(), 3, "one rest per slice of work");

        let mut unpaced = Pacer::new(Pacing::UNPACED, alone());
        for _ in 0..3 {
            busy(Duration::from_micros(300));
            unpaced.step();
        }
        assert_eq!(unpaced.rests(), 0);
        let mut no_rest = Pacer::new(
            Pacing {
                rest: Duration::ZERO,
                ..pacing
            },
            alone(),
        );
        busy(Duration::from_micros(300));
        no_rest.step();
        assert_eq!(no_rest.rests(), 0);
    }

    #[test]
    fn a_write_does_not_rest_while_others_wait() {
        let outstanding = Arc::new(AtomicUsize::new(3));
        let pacing = Pacing::new(Duration::from_micros(200), Duration::from_micros(50));
        let mut pacer = Pacer::new(pacing, outstanding.clone());
        busy(Duration::from_micros(300));
        pacer.step();
        assert_eq!(pacer.rests(), 0, "two writes wait: no rest");
        outstanding.store(1, Ordering::Relaxed);
        busy(Duration::from_micros(300));
        pacer.step();
        assert_eq!(pacer.rests(), 1, "alone again: rests");
    }

    #[test]
    fn a_write_stops_resting_after_its_paced_work() {
        let mut pacer = Pacer::new(
            Pacing {
                paced_work: Duration::from_micros(500),
                ..Pacing::new(Duration::from_micros(200), Duration::from_micros(50))
            },
            alone(),
        );
        for _ in 0..4 {
            busy(Duration::from_micros(300));
            pacer.step();
        }
        // Slices of at least 300 µs: a rest after the first and maybe the second (until
        // 500 µs of work), then none however long the write goes on.
        let rested = pacer.rests();
        assert!((1..=2).contains(&rested), "rested {rested} times");
        for _ in 0..4 {
            busy(Duration::from_micros(300));
            pacer.step();
        }
        assert_eq!(pacer.rests(), rested);
    }
}
