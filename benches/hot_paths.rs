//! Criterion micro-benchmarks of the worker's hot paths that run per text or per job
//! on the async runtime: cache-key hashing, job parsing and batch assembly.
//!
//! `cargo bench --locked --bench hot_paths` (add `-- --quick` for a short run). These
//! are per-operation costs to compare against the engine's milliseconds per text; the
//! end-to-end ratios are in `scripts/bench.sh` and docs/benchmarks.md.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use translation_client::wire::{parse_job, DecodeOptions};
use translation_worker::config::Limits;
use translation_worker::translate::KeyContext;
use translation_worker::translate::{next_batch, Pending, Policy};

/// The benchmark sentence file: Korean business prose of realistic lengths.
fn sentences() -> Vec<String> {
    include_str!("data/sentences.ko.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn greedy() -> DecodeOptions {
    DecodeOptions::default()
}

fn cache_key(c: &mut Criterion) {
    let ctx = KeyContext {
        model_fingerprint: [7; 32],
        source: "ko".into(),
        target: "en".into(),
    };
    let texts = sentences();
    let bytes: usize = texts.iter().map(String::len).sum();
    let options = greedy();
    let mut g = c.benchmark_group("cache_key");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("blake3_1000_sentences", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(ctx.key(&options, black_box(t)));
            }
        })
    });
    g.finish();
}

fn job_parsing(c: &mut Criterion) {
    let texts = sentences();
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse_job");
    for n in [1usize, 16, 128] {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": "bench-job",
            "source": "ko",
            "target": "en",
            "texts": &texts[..n],
            "options": {"beam_size": 1},
        }))
        .expect("a JSON value serializes");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("texts", n), &body, |b, body| {
            b.iter(|| parse_job(black_box(body), &limits).expect("the bench job is valid"))
        });
    }
    g.finish();
}

fn batch_assembly(c: &mut Criterion) {
    let policy = Policy {
        max_batch_size: 32,
        min_batch_size: 32,
        max_batch_tokens: 4096,
        max_wait: Duration::from_millis(5),
        max_delay: Duration::from_secs(3600),
        max_queued: 1024,
        // Off: every text here arrived "now", which would make it wait out a burst
        // instead of measuring the cut.
        max_settle: Duration::ZERO,
        settle_gap: Duration::ZERO,
        interactive_burst: 1,
        interactive_max_batch_tokens: usize::MAX,
    };
    let now = Instant::now();
    let options = greedy();
    let mut g = c.benchmark_group("next_batch");
    // Queue depths seen under load: up to prefetch (128) × texts per job.
    for depth in [1usize, 64, 512] {
        let queue: VecDeque<Pending> = (0..depth)
            .map(|i| Pending {
                tokens: 8 + (i * 37) % 90,
                options,
                enqueued: now,
                lane: translation_worker::translate::Lane::Bulk,
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("queued", depth), &queue, |b, q| {
            b.iter(|| black_box(next_batch(black_box(q), now, &policy, 1, 2, 0)))
        });
    }
    g.finish();
}

criterion_group!(benches, cache_key, job_parsing, batch_assembly);
criterion_main!(benches);
