//! Pacing of long writes on the writer thread.
//!
//! The writer shares the machine's cores with the redirect proxy. A second's click batch
//! over a thousand links is tens of milliseconds of SQLite work; run in one go, it leaves
//! redirects queued behind it on a small machine (on two cores at half the peak, p99 was
//! 1.4 ms unpaced against 0.8 ms paced and 0.6 ms with no clicks captured). Run as
//! sub-millisecond slices with rests between, the same work delays a redirect by a slice
//! at most.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shortlink_sched::Background;

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
    /// Run the paced work, and the commit after it, in the kernel's idle scheduling class
    /// (see `shortlink_sched`): a redirect thread that wakes takes the core at once. The
    /// writer returns to the normal class when another write waits, when the paced work is
    /// spent (measured in wall time, so a starved writer returns too), and after the commit.
    pub idle_class: bool,
}

impl Pacing {
    /// Never rests: a write runs in one go.
    pub const UNPACED: Pacing = Pacing {
        slice: Duration::ZERO,
        rest: Duration::ZERO,
        paced_work: Duration::ZERO,
        idle_class: false,
    };

    /// `slice` of work, then a `rest`, for the first 100 ms of a write's work, in the idle
    /// scheduling class.
    pub fn new(slice: Duration, rest: Duration) -> Pacing {
        Pacing {
            slice,
            rest,
            paced_work: Duration::from_millis(100),
            idle_class: true,
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

thread_local! {
    /// The writer thread's scheduling class, made by its first paced write.
    static CLASS: RefCell<Option<Background>> = const { RefCell::new(None) };
}

/// Puts the calling (writer) thread back in the normal scheduling class, if a paced write
/// had moved it to the idle class: called when such a write is behind, and after every
/// commit.
pub(super) fn normal_class() {
    CLASS.with_borrow_mut(|class| {
        if let Some(class) = class.as_mut() {
            class.normal();
        }
    });
}

/// Whether the calling thread is in the idle class because of a paced write.
#[cfg(test)]
pub(super) fn in_idle_class() -> bool {
    CLASS.with_borrow(|class| class.as_ref().is_some_and(Background::is_idle))
}

impl Pacer {
    pub(super) fn new(pacing: Pacing, outstanding: Arc<AtomicUsize>) -> Pacer {
        // Not when other writes already wait: the writer is behind from the start.
        if pacing.idle_class
            && !pacing.paced_work.is_zero()
            && outstanding.load(Ordering::Relaxed) <= 1
        {
            CLASS
                .with_borrow_mut(|class| class.get_or_insert_with(|| Background::new(true)).idle());
        }
        Pacer {
            pacing,
            outstanding,
            since: Instant::now(),
            worked: Duration::ZERO,
            rests: 0,
        }
    }

    /// Rests when the work since the last rest reached a slice and no other write waits;
    /// leaves the idle class once the paced work is spent or another write waits.
    pub(super) fn step(&mut self) {
        let behind = self.outstanding.load(Ordering::Relaxed) > 1;
        let slice = self.since.elapsed();
        if behind || self.worked + slice >= self.pacing.paced_work {
            normal_class();
        }
        if self.pacing.slice.is_zero() || self.pacing.rest.is_zero() || behind {
            return;
        }
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
        // Slices long enough that the test thread being preempted between two lines (the
        // suite runs tests side by side) does not make one, and a paced-work budget that
        // three slices cannot spend however long preemption stretches them (in the normal
        // class: the idle class is another test's subject).
        let pacing = Pacing {
            paced_work: Duration::from_secs(60),
            idle_class: false,
            ..Pacing::new(Duration::from_millis(20), Duration::from_micros(50))
        };
        let mut pacer = Pacer::new(pacing, alone());
        pacer.step();
        assert_eq!(pacer.rests(), 0, "no rest before a slice of work");
        for _ in 0..3 {
            busy(Duration::from_millis(30));
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

    /// On a thread of its own: the class changes stay there.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn paced_work_runs_in_the_idle_class_until_behind_spent_or_committed() {
        // Where this process may not leave the idle class (not root, no CAP_SYS_NICE), a
        // paced write never enters it: every expectation of "idle" is then "normal".
        let idle = shortlink_sched::idle_class_permitted();
        let seen = on_thread(move || {
            let pacing = Pacing::new(Duration::from_micros(200), Duration::from_micros(50));
            let mut seen = Vec::new();
            // Alone at the writer: idle while it works, normal after the commit.
            let mut pacer = Pacer::new(pacing, alone());
            seen.push(("paced write began", in_idle_class()));
            busy(Duration::from_micros(300));
            pacer.step();
            seen.push(("a slice in", in_idle_class()));
            normal_class();
            seen.push(("committed", in_idle_class()));
            // Another write waiting: back to normal at the next step.
            let outstanding = Arc::new(AtomicUsize::new(1));
            let mut pacer = Pacer::new(pacing, outstanding.clone());
            seen.push(("next paced write", in_idle_class()));
            outstanding.store(2, Ordering::Relaxed);
            pacer.step();
            seen.push(("another write waits", in_idle_class()));
            // Others already waiting when it begins: never idle.
            let _behind = Pacer::new(pacing, outstanding.clone());
            seen.push(("begun behind", in_idle_class()));
            // The paced work spent (wall time): normal, however long it goes on.
            let mut pacer = Pacer::new(
                Pacing {
                    paced_work: Duration::from_micros(500),
                    ..pacing
                },
                alone(),
            );
            for _ in 0..3 {
                busy(Duration::from_micros(300));
                pacer.step();
            }
            seen.push(("paced work spent", in_idle_class()));
            // Unpaced or with the class off: never idle.
            let _unpaced = Pacer::new(Pacing::UNPACED, alone());
            seen.push(("unpaced", in_idle_class()));
            let _off = Pacer::new(
                Pacing {
                    idle_class: false,
                    ..pacing
                },
                alone(),
            );
            seen.push(("idle class off", in_idle_class()));
            seen.push(("thread's class", shortlink_sched::current_thread_is_idle()));
            seen
        });
        assert_eq!(
            seen,
            vec![
                ("paced write began", idle),
                ("a slice in", idle),
                ("committed", false),
                ("next paced write", idle),
                ("another write waits", false),
                ("begun behind", false),
                ("paced work spent", false),
                ("unpaced", false),
                ("idle class off", false),
                ("thread's class", false),
            ]
        );
    }
}
