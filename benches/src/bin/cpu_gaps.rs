//! How often this machine takes its CPUs away: one spinning thread per CPU reads the clock
//! in a loop for a while, and every gap between two reads longer than 100 µs is time the
//! thread did not run — the hypervisor ran another guest, or the kernel ran something else.
//! On an idle box that is the floor under any server's tail latency: a request that
//! arrives while its CPU is gone for 4 ms waits 4 ms, whoever serves it.
//!
//! `cpu_gaps [seconds=5] [threads=available parallelism]`
//!
//! Prints one line per thread and a total: gaps over 0.5 ms, 1 ms and 5 ms per second,
//! the longest gap, and the share of the time lost in gaps over 100 µs.

use std::time::{Duration, Instant};

/// What one spinning thread saw.
#[derive(Default)]
struct Gaps {
    over_500us: u64,
    over_1ms: u64,
    over_5ms: u64,
    longest: Duration,
    lost: Duration,
}

impl Gaps {
    /// Adds another thread's gaps to these (the longest is the longer of the two).
    fn add(&mut self, other: &Gaps) {
        self.over_500us += other.over_500us;
        self.over_1ms += other.over_1ms;
        self.over_5ms += other.over_5ms;
        self.longest = self.longest.max(other.longest);
        self.lost += other.lost;
    }
}

/// Spins for `length`, reading the monotonic clock, and counts the gaps between reads.
fn spin(length: Duration) -> Gaps {
    let start = Instant::now();
    let mut previous = start;
    let mut gaps = Gaps::default();
    loop {
        let now = Instant::now();
        let gap = now - previous;
        previous = now;
        if gap > Duration::from_micros(100) {
            gaps.lost += gap;
            gaps.over_500us += u64::from(gap > Duration::from_micros(500));
            gaps.over_1ms += u64::from(gap > Duration::from_millis(1));
            gaps.over_5ms += u64::from(gap > Duration::from_millis(5));
            gaps.longest = gaps.longest.max(gap);
        }
        if now - start >= length {
            return gaps;
        }
    }
}

fn print(label: &str, gaps: &Gaps, seconds: f64, threads: u32) {
    let per_second = |n: u64| n as f64 / seconds;
    println!(
        "{label:<8} gaps/s >0.5ms={:.1} >1ms={:.1} >5ms={:.2} longest_ms={:.2} lost={:.2}%",
        per_second(gaps.over_500us),
        per_second(gaps.over_1ms),
        per_second(gaps.over_5ms),
        gaps.longest.as_secs_f64() * 1e3,
        100.0 * gaps.lost.as_secs_f64() / (seconds * f64::from(threads)),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(5.0, |s| s.parse().expect("seconds"));
    let threads: u32 = args.next().map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        |s| s.parse().expect("threads"),
    );
    let length = Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || spin(length)))
        .collect();
    let mut total = Gaps::default();
    for (i, handle) in handles.into_iter().enumerate() {
        let gaps = handle.join().expect("spinning thread");
        print(&format!("cpu{i}"), &gaps, seconds, 1);
        total.add(&gaps);
    }
    print("all", &total, seconds, threads);
}
