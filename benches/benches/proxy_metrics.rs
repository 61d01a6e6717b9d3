//! What the proxy's per-request metrics cost: one status counter and one latency
//! histogram observation, from one thread and from two at once (both proxy threads).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use shortlink_proxy::metrics::REQUESTS;

fn observe(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_metrics");
    group.bench_function("observe_301", |b| {
        b.iter(|| REQUESTS.observe(black_box(301), black_box(0.000_08)))
    });
    group.bench_function("instant_now_and_observe", |b| {
        b.iter(|| {
            let started = Instant::now();
            REQUESTS.observe(black_box(301), started.elapsed().as_secs_f64())
        })
    });
    group.bench_function("observe_301_two_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            REQUESTS.observe(black_box(301), black_box(0.000_08));
                        }
                    });
                }
            });
            // Per observation, with both threads contending.
            started.elapsed() / 2
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = observe
}
criterion_main!(benches);
