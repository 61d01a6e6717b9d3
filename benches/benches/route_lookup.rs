//! Route-table lookup cost at 1 thousand and 1 million links: it should stay flat.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shortlink_benches::{sample_link, table_with};

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for size in [1_000usize, 1_000_000] {
        let table = table_with(size);
        let codes: Vec<String> = (0..4096)
            .map(|i| sample_link((i * 7919) % size).code.into_string())
            .collect();
        group.bench_with_input(BenchmarkId::new("hit", size), &size, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                let key = table.key("", &codes[i]);
                black_box(table.resolve(key, 1_700_000_000))
            })
        });
        group.bench_with_input(BenchmarkId::new("miss", size), &size, |b, _| {
            b.iter(|| {
                let key = table.key("", black_box("NoSuchCode"));
                black_box(table.resolve(key, 1_700_000_000))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookup
}
criterion_main!(benches);
