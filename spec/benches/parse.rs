//! Parsing and validating a typical 60-line buildspec, against a plain YAML parse of the same
//! text into an untyped value with serde_yaml_ng (the baseline: what any YAML consumer pays).
//!
//! Run with `cargo bench -p buildagent-spec --bench parse`. The target is well under 1 ms.

use std::hint::black_box;
use std::time::Duration;

use buildagent_spec::{parse, ParseOptions};
use criterion::{criterion_group, criterion_main, Criterion};

const TYPICAL: &str = include_str!("../../testdata/buildspecs/valid/typical.yml");
const EVERY_KEY: &str = include_str!("../../testdata/buildspecs/valid/every-key.yml");

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("typical-60-lines/buildagent_spec::parse", |b| {
        b.iter(|| {
            let parsed = parse(black_box(TYPICAL), &ParseOptions::default());
            assert!(parsed.is_valid());
            parsed
        })
    });
    group.bench_function("typical-60-lines/serde_yaml_ng::Value (baseline)", |b| {
        b.iter(|| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(black_box(TYPICAL)).unwrap())
    });
    group.bench_function("every-key/buildagent_spec::parse", |b| {
        b.iter(|| parse(black_box(EVERY_KEY), &ParseOptions::default()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
