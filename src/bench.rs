//! `bench-engine`: raw CTranslate2 throughput of a model, without broker or cache.
//! The ceiling the worker is measured against, and the Rust side of the backend
//! comparison with the official Python wheel (`scripts/bench_engine_wheel.py`).

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::config::ModelConfig;
use crate::engine::{Engine, EngineError};
use crate::protocol::DecodeOptions;

/// What to measure (also the `bench-engine` command line).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineBench {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Sentence file, one sentence per line.
    #[arg(long)]
    pub sentences: PathBuf,
    /// Use the first N sentences.
    #[arg(long, default_value_t = 300)]
    pub limit: usize,
    /// Engine replicas (CTranslate2 inter_threads).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Threads per replica (CTranslate2 intra_threads).
    #[arg(long, default_value_t = 2)]
    pub threads_per_replica: usize,
    /// CTranslate2 max_batch_size (examples).
    #[arg(long, default_value_t = 32)]
    pub max_batch_size: usize,
    /// Compute type.
    #[arg(long, default_value = "int8")]
    pub compute_type: String,
    /// Beam size (1 = greedy).
    #[arg(long, default_value_t = 1)]
    pub beam_size: usize,
    /// Timed repetitions after one warm-up; the report keeps the best.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Batches of `max_batch_size` consecutive sentences in file order, one engine call
    /// each, from one thread per replica: what a batcher that cannot sort by length
    /// gets. The default is one call over all sentences, which CTranslate2 sorts by
    /// length before cutting batches (least padding: the ceiling).
    #[arg(long)]
    pub in_order: bool,
}

/// The result, printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EngineBenchReport {
    /// CPU backend compiled in (`dnnl` by default, or `ruy`).
    pub backend: &'static str,
    /// Sentences translated per timed run.
    pub sentences: usize,
    /// Best sentences per second over the repetitions.
    pub sentences_per_sec: f64,
    /// Output tokens per second in the best run.
    pub tokens_per_sec: f64,
    /// Every run's sentences per second.
    pub runs: Vec<f64>,
    /// Replicas × threads per replica.
    pub replicas: usize,
    /// Threads per replica.
    pub threads_per_replica: usize,
}

/// The CPU backend this binary was built with.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "dnnl") {
        "dnnl"
    } else if cfg!(feature = "ruy") {
        "ruy"
    } else {
        "default"
    }
}

/// Runs the benchmark. Blocks.
pub fn run(b: &EngineBench) -> Result<EngineBenchReport, EngineError> {
    let text = std::fs::read_to_string(&b.sentences).map_err(|e| EngineError::ModelFiles {
        path: b.sentences.display().to_string(),
        message: e.to_string(),
    })?;
    let sentences: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty())
        .take(b.limit)
        .collect();
    let cfg = ModelConfig {
        path: b.model.clone(),
        compute_type: b.compute_type.clone(),
        threads: b.replicas * b.threads_per_replica,
        replicas: b.replicas,
        ..ModelConfig::default()
    };
    let engine = Engine::load(&cfg)?;
    let sources = sentences
        .iter()
        .map(|s| engine.tokenize(s, None))
        .collect::<Result<Vec<_>, _>>()?;
    let options = DecodeOptions {
        beam_size: b.beam_size as u32,
        max_decoding_length: 256,
        length_penalty: 1.0,
        repetition_penalty: 1.0,
        no_repeat_ngram_size: 0,
    };
    let run_once = || {
        if b.in_order {
            translate_in_order(
                &engine,
                &sources,
                &options,
                b.max_batch_size.max(1),
                b.replicas,
            )
        } else {
            engine.translate_raw(&sources, &options, b.max_batch_size)
        }
    };
    run_once()?;
    let mut runs = Vec::with_capacity(b.repeat);
    let mut best_tokens = 0.0f64;
    for _ in 0..b.repeat.max(1) {
        let t = Instant::now();
        let lens = run_once()?;
        let secs = t.elapsed().as_secs_f64();
        let sps = sources.len() as f64 / secs;
        if runs.iter().all(|r| *r < sps) {
            best_tokens = lens.iter().sum::<usize>() as f64 / secs;
        }
        runs.push(sps);
    }
    Ok(EngineBenchReport {
        backend: backend_name(),
        sentences: sources.len(),
        sentences_per_sec: runs.iter().cloned().fold(0.0, f64::max),
        tokens_per_sec: best_tokens,
        runs,
        replicas: b.replicas,
        threads_per_replica: b.threads_per_replica,
    })
}

/// A chunk's index and its output token counts.
type ChunkLens = (usize, Vec<usize>);

/// Unsorted batches: consecutive chunks of `batch` sources, one engine call each, taken
/// by `threads` threads in turn (one per replica, as the worker's engine threads).
fn translate_in_order(
    engine: &Engine,
    sources: &[Vec<String>],
    options: &DecodeOptions,
    batch: usize,
    threads: usize,
) -> Result<Vec<usize>, EngineError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let chunks: Vec<&[Vec<String>]> = sources.chunks(batch).collect();
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<ChunkLens>, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else {
                            return Ok(out);
                        };
                        // One call per chunk; max_batch_size = its length, so not re-split.
                        out.push((i, engine.translate_raw(chunk, options, chunk.len())?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::Translate("bench thread panicked".into())))
            })
            .collect()
    });
    let mut lens: Vec<ChunkLens> = Vec::new();
    for r in results {
        lens.extend(r?);
    }
    lens.sort_by_key(|(i, _)| *i);
    Ok(lens.into_iter().flat_map(|(_, l)| l).collect())
}
