//! Cost of generating a short code and of validating a target URL.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shortlink_core::{CodeGenerator, TargetRules, validate_target};

fn codegen(c: &mut Criterion) {
    let generator = CodeGenerator::new(0x5eed);
    let url = "https://www.example.com/articles/2026/11/some-long-slug?utm_source=newsletter";
    c.bench_function("generate_code", |b| {
        b.iter(|| generator.generate(black_box(url), black_box(42), black_box(0)))
    });
    let rules = TargetRules::default();
    c.bench_function("validate_target", |b| {
        b.iter(|| validate_target(black_box(url), &rules))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = codegen
}
criterion_main!(benches);
