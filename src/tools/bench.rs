//! `bench-engine`: raw CTranslate2 throughput of a model, without broker or cache.
//! The ceiling the worker is measured against, and the Rust side of the backend
//! comparison with the official Python wheel (`scripts/bench_engine_wheel.py`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{BatchConfig, ModelConfig};
use crate::translate::{batch_cost, next_lane_batch, BusyEstimate, Decision, Pending, Policy};
use crate::translate::{Engine, EngineError};
use translation_client::wire::DecodeOptions;

/// What to measure (the `bench-engine` command line fills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBenchOptions {
    /// Model directory.
    pub model: PathBuf,
    /// Sentence file, one sentence per line.
    pub sentences: PathBuf,
    /// Use the first N sentences.
    pub limit: usize,
    /// Engine replicas (CTranslate2 inter_threads).
    pub replicas: usize,
    /// Threads per replica (CTranslate2 intra_threads).
    pub threads_per_replica: usize,
    /// CTranslate2 max_batch_size (examples).
    pub max_batch_size: usize,
    /// Compute type (see [`crate::config::parse_compute_type`]).
    pub compute_type: String,
    /// Beam size (1 = greedy).
    pub beam_size: usize,
    /// Timed repetitions after one warm-up; the report keeps the best.
    pub repeat: usize,
    /// Batches of `max_batch_size` consecutive sentences in file order, one engine call
    /// each, from one thread per replica: what a batcher that cannot sort by length
    /// gets. The default is one call over all sentences, which CTranslate2 sorts by
    /// length before cutting batches (least padding: the ceiling). Wins over `window`
    /// (the command line refuses both).
    pub in_order: bool,
    /// A closed loop of W sentences in flight: batches chosen by the worker's own
    /// batching policy ([`crate::translate::next_lane_batch`]), each run as one engine call
    /// by one thread per replica, a new sentence let in (in file order) for each one
    /// translated: the most a batcher that sees only W texts can do, without broker
    /// or cache. 0: off.
    pub window: usize,
    /// Documents of this many consecutive lines, joined with newlines and cut into
    /// segments by the worker's own segmenter (as `loadgen --document-sentences`
    /// sends them with `split: sentences`): every mode then translates those
    /// segments, and a `window` of W keeps W / D documents in flight, each let in
    /// whole and replaced once all of its segments are translated. 1: the lines
    /// themselves, one a job.
    pub document_size: usize,
    /// With `window`: the policy's `max_batch_tokens`.
    pub max_batch_tokens: usize,
    /// With `window`: the policy's `min_batch_size` (`None`: `max_batch_size`, a fixed
    /// size).
    pub min_batch_size: Option<usize>,
    /// With `window`: the policy's `max_wait_ms`.
    pub max_wait_ms: u64,
    /// With `window`: the policy's `max_delay_ms`.
    pub max_delay_ms: u64,
}

impl EngineBenchOptions {
    /// Options to measure `model` on `sentences`, the rest at the command line's
    /// defaults: one replica of two threads, the worker's batching policy.
    pub fn new(model: impl Into<PathBuf>, sentences: impl Into<PathBuf>) -> Self {
        let batch = BatchConfig::default();
        Self {
            model: model.into(),
            sentences: sentences.into(),
            limit: 300,
            replicas: 1,
            threads_per_replica: 2,
            max_batch_size: 32,
            compute_type: "int8".into(),
            beam_size: 1,
            repeat: 3,
            in_order: false,
            window: 0,
            document_size: 1,
            max_batch_tokens: batch.max_batch_tokens,
            min_batch_size: None,
            max_wait_ms: batch.max_wait_ms,
            max_delay_ms: batch.max_delay_ms,
        }
    }
}

impl Default for EngineBenchOptions {
    /// [`EngineBenchOptions::new`] with empty paths: set `model` and `sentences`.
    fn default() -> Self {
        Self::new(PathBuf::new(), PathBuf::new())
    }
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
    /// Batches per run.
    pub batches: usize,
    /// Source tokens of all sentences.
    pub source_tokens: usize,
    /// Padded source tokens over all batches (texts × longest, per batch); for the
    /// default mode, of CTranslate2's sort-then-cut.
    pub padded_tokens: usize,
    /// With `window`: every batch of the best run in the order cut, to see where the
    /// replicas idled and how the drain's estimate compared with the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<BatchTrace>>,
}

/// One batch of a `window` run, times in milliseconds since the run started.
#[derive(Debug, Clone, Serialize)]
pub struct BatchTrace {
    /// The replica thread that ran it.
    pub replica: usize,
    /// When it was cut.
    pub start_ms: f64,
    /// When its engine call returned.
    pub end_ms: f64,
    /// Texts in it.
    pub texts: usize,
    /// Its longest source, in tokens.
    pub longest: usize,
    /// Its estimated cost ([`batch_cost`] units).
    pub cost: u64,
    /// What the policy was told the busy replicas had left when it was cut
    /// ([`BusyEstimate::left`], the same units).
    pub busy_left: u64,
}

/// Runs the benchmark. Blocks.
pub fn run(b: &EngineBenchOptions) -> Result<EngineBenchReport, EngineError> {
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
    let (texts, docs) = documents(&sentences, b.document_size.max(1));
    let sources = texts
        .iter()
        .map(|s| engine.tokenize(s, None))
        .collect::<Result<Vec<_>, _>>()?;
    // The contract's defaults (as a worker with default settings decodes), but the
    // beam size asked for.
    let options = DecodeOptions {
        beam_size: b.beam_size as u32,
        ..DecodeOptions::default()
    };
    let lens: Vec<usize> = sources.iter().map(Vec::len).collect();
    let size = b.max_batch_size.max(1);
    let policy = Policy {
        max_batch_size: size,
        min_batch_size: b.min_batch_size.unwrap_or(size),
        max_batch_tokens: b.max_batch_tokens,
        max_wait: Duration::from_millis(b.max_wait_ms),
        max_delay: Duration::from_millis(b.max_delay_ms),
        max_queued: b.window.max(1),
        // The loop refills its window at once: there is no burst to wait out.
        max_settle: Duration::ZERO,
        settle_gap: Duration::ZERO,
        interactive_burst: 1,
        interactive_max_batch_tokens: usize::MAX,
    };
    let in_order: Vec<Vec<usize>> = (0..sources.len())
        .collect::<Vec<_>>()
        .chunks(size)
        .map(<[usize]>::to_vec)
        .collect();
    // One timed pass; returns output lengths and the batches it ran (`None`: the
    // default mode's, cut inside CTranslate2).
    let run_once = || -> Result<Pass, EngineError> {
        if b.in_order {
            translate_batches(&engine, &sources, &in_order, &options, b.replicas)
                .map(|l| (l, Some(in_order.clone()), None))
        } else if b.window > 0 {
            let shape = LoopShape {
                in_flight: b.window.div_ceil(b.document_size.max(1)),
                docs: &docs,
                replicas: b.replicas,
            };
            closed_loop(&engine, &sources, shape, &policy, &options)
                .map(|(l, batches, timeline)| (l, Some(batches), Some(timeline)))
        } else {
            engine
                .translate_raw(&sources, &options, b.max_batch_size)
                .map(|l| (l, None, None))
        }
    };
    run_once()?;
    let mut runs = Vec::with_capacity(b.repeat);
    let mut best_tokens = 0.0f64;
    let mut best_batches = None;
    let mut timeline = None;
    for _ in 0..b.repeat.max(1) {
        let t = Instant::now();
        let (out, batches, trace) = run_once()?;
        let secs = t.elapsed().as_secs_f64();
        let sps = sources.len() as f64 / secs;
        if runs.iter().all(|r| *r < sps) {
            best_tokens = out.iter().sum::<usize>() as f64 / secs;
            best_batches = batches;
            timeline = trace;
        }
        runs.push(sps);
    }
    let (batches, padded_tokens) = match &best_batches {
        Some(batches) => (
            batches.len(),
            batches
                .iter()
                .map(|batch| batch.iter().map(|&i| lens[i]).max().unwrap_or(0) * batch.len())
                .sum(),
        ),
        None => {
            // CTranslate2 sorts longest first and cuts `size` at a time.
            let mut sorted = lens.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let chunks = sorted.chunks(size);
            (
                chunks.len(),
                chunks
                    .map(|c| c.first().copied().unwrap_or(0) * c.len())
                    .sum(),
            )
        }
    };
    Ok(EngineBenchReport {
        backend: crate::telemetry::BACKEND,
        sentences: sources.len(),
        sentences_per_sec: runs.iter().cloned().fold(0.0, f64::max),
        tokens_per_sec: best_tokens,
        runs,
        replicas: b.replicas,
        threads_per_replica: b.threads_per_replica,
        batches,
        source_tokens: lens.iter().sum(),
        padded_tokens,
        timeline,
    })
}

/// One timed pass: output lengths, the batches it ran (`None`: CTranslate2's own) and,
/// for a window, their timeline.
type Pass = (Vec<usize>, Option<Vec<Vec<usize>>>, Option<Vec<BatchTrace>>);

/// Groups `lines` into documents of `size` consecutive lines joined with newlines,
/// cut into segments as the worker cuts a `split: sentences` text; returns the
/// segments and each document's range of them. With `size` 1: the lines, one each.
fn documents(lines: &[&str], size: usize) -> (Vec<String>, Vec<std::ops::Range<usize>>) {
    if size <= 1 {
        let texts: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let docs = (0..texts.len()).map(|i| i..i + 1).collect();
        return (texts, docs);
    }
    let mut texts = Vec::new();
    let mut docs = Vec::new();
    for chunk in lines.chunks(size) {
        let doc = chunk.join("\n");
        let start = texts.len();
        texts.extend(
            crate::translate::sentences(&doc, "ko")
                .into_iter()
                .filter_map(|r| doc.get(r).map(str::trim))
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        // A document with no segments would never finish, nor be replaced.
        if texts.len() > start {
            docs.push(start..texts.len());
        }
    }
    (texts, docs)
}

/// How [`closed_loop`] lets sentences in.
#[derive(Debug, Clone, Copy)]
struct LoopShape<'a> {
    /// Documents in flight (queued or running).
    in_flight: usize,
    /// Each document's range of sentences: let in whole, replaced once all of its
    /// sentences are translated (documents of one sentence: one-sentence jobs).
    docs: &'a [std::ops::Range<usize>],
    /// Engine threads.
    replicas: usize,
}

/// What [`closed_loop`] returns: output lengths, the batches it cut (sentence
/// indices) and their timeline.
type LoopRun = (Vec<usize>, Vec<Vec<usize>>, Vec<BatchTrace>);

/// What the replica threads of [`closed_loop`] share.
struct LoopState {
    queue: VecDeque<Pending>,
    /// `ids[i]`: the sentence of `queue[i]`.
    ids: VecDeque<usize>,
    /// Next document to let in.
    next: usize,
    /// Untranslated sentences of each document let in (by document index).
    left: Vec<usize>,
    /// Replicas not running a batch.
    free: usize,
    /// Which replica slots are free (their threads take one when cutting).
    free_slots: Vec<usize>,
    /// What the busy replicas have left, as the worker's queue task tracks it.
    busy: BusyEstimate,
    /// Texts in running batches.
    in_batches: usize,
    batches: Vec<Vec<usize>>,
    /// `batches[i]`'s trace.
    timeline: Vec<BatchTrace>,
}

/// A closed loop over the engine alone: `shape.window` sentences in flight (queued or
/// in a running batch), a new document let in for each one fully translated (a
/// sentence for each sentence, with documents of one), batches chosen by the worker's
/// own policy ([`next_lane_batch`], with the drain's estimate of busy work) and run by one thread per replica, as the worker's
/// engine threads do. What a batcher that sees only `window` texts can reach without
/// broker, cache or JSON.
fn closed_loop(
    engine: &Engine,
    sources: &[Vec<String>],
    shape: LoopShape<'_>,
    policy: &Policy,
    options: &DecodeOptions,
) -> Result<LoopRun, EngineError> {
    use std::sync::{Condvar, Mutex};
    let replicas = shape.replicas.max(1);
    let docs = shape.docs;
    // `doc_of[i]`: the document of sentence `i`.
    let mut doc_of = vec![0usize; sources.len()];
    for (d, range) in docs.iter().enumerate() {
        for i in range.clone() {
            if let Some(slot) = doc_of.get_mut(i) {
                *slot = d;
            }
        }
    }
    let start = Instant::now();
    let first_docs = shape.in_flight.max(1).min(docs.len());
    let first = docs.get(first_docs.wrapping_sub(1)).map_or(0, |r| r.end);
    let left: Vec<usize> = docs
        .iter()
        .enumerate()
        .map(|(d, r)| if d < first_docs { r.len() } else { 0 })
        .collect();
    let state = Mutex::new(LoopState {
        queue: (0..first)
            .map(|i| Pending {
                tokens: sources[i].len(),
                options: *options,
                enqueued: start,
                lane: crate::translate::Lane::Bulk,
            })
            .collect(),
        ids: (0..first).collect(),
        next: first_docs,
        left,
        free: replicas,
        free_slots: (0..replicas).collect(),
        busy: BusyEstimate::new(replicas),
        in_batches: 0,
        batches: Vec::new(),
        timeline: Vec::new(),
    });
    let changed = Condvar::new();
    let mut out = vec![0usize; sources.len()];
    let results: Vec<Result<Vec<(usize, usize)>, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..replicas)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, usize)>, EngineError> {
                    let mut done = Vec::new();
                    // A poisoned lock means another replica thread panicked: the
                    // scope reports that panic; stop here.
                    let lock = || {
                        state
                            .lock()
                            .map_err(|_| EngineError::Translate("bench lock poisoned".into()))
                    };
                    let mut st = lock()?;
                    loop {
                        let now = Instant::now();
                        let busy_left = st.busy.left(now);
                        // The worker's policy as its queue task calls it, but for the
                        // freed replica's wait (nothing answers back in this loop).
                        let decision = next_lane_batch(
                            &st.queue,
                            now,
                            policy,
                            st.free,
                            replicas,
                            st.in_batches,
                            0,
                            None,
                            busy_left,
                        );
                        match decision {
                            Decision::Cut(positions) => {
                                let width = positions
                                    .iter()
                                    .filter_map(|&p| st.queue.get(p))
                                    .map(|q| q.tokens)
                                    .max()
                                    .unwrap_or(0);
                                let slot = st.free_slots.pop().unwrap_or(0);
                                let cost = batch_cost(positions.len(), width);
                                st.busy.started(slot, now, cost);
                                let traced = st.timeline.len();
                                st.timeline.push(BatchTrace {
                                    replica: slot,
                                    start_ms: ms_since(start, now),
                                    end_ms: 0.0,
                                    texts: positions.len(),
                                    longest: width,
                                    cost,
                                    busy_left,
                                });
                                let mut batch = Vec::with_capacity(positions.len());
                                for &p in positions.iter().rev() {
                                    st.queue.remove(p);
                                    if let Some(id) = st.ids.remove(p) {
                                        batch.push(id);
                                    }
                                }
                                st.free -= 1;
                                st.in_batches += batch.len();
                                st.batches.push(batch.clone());
                                drop(st);
                                let chunk: Vec<Vec<String>> =
                                    batch.iter().map(|&j| sources[j].clone()).collect();
                                let lens = engine.translate_raw(&chunk, options, chunk.len())?;
                                done.extend(batch.iter().copied().zip(lens));
                                st = lock()?;
                                let ended = Instant::now();
                                st.busy.finished(slot, ended);
                                if let Some(trace) = st.timeline.get_mut(traced) {
                                    trace.end_ms = ms_since(start, ended);
                                }
                                st.free_slots.push(slot);
                                st.free += 1;
                                st.in_batches -= batch.len();
                                // A new document for each one finished (the closed
                                // loop), its sentences all at once.
                                for &j in &batch {
                                    let d = doc_of[j];
                                    st.left[d] -= 1;
                                    if st.left[d] > 0 || st.next >= docs.len() {
                                        continue;
                                    }
                                    let next = st.next;
                                    let range = docs[next].clone();
                                    let now = Instant::now();
                                    st.left[next] = range.len();
                                    for i in range {
                                        st.queue.push_back(Pending {
                                            tokens: sources[i].len(),
                                            options: *options,
                                            enqueued: now,
                                            lane: crate::translate::Lane::Bulk,
                                        });
                                        st.ids.push_back(i);
                                    }
                                    st.next += 1;
                                }
                                changed.notify_all();
                            }
                            Decision::WaitUntil(t) => {
                                let wait = t.saturating_duration_since(Instant::now());
                                st = changed
                                    .wait_timeout(st, wait)
                                    .map_err(|_| {
                                        EngineError::Translate("bench lock poisoned".into())
                                    })?
                                    .0;
                            }
                            Decision::WaitForEngine | Decision::Idle => {
                                if st.queue.is_empty() && st.next >= docs.len() {
                                    changed.notify_all();
                                    return Ok(done);
                                }
                                st = changed.wait(st).map_err(|_| {
                                    EngineError::Translate("bench lock poisoned".into())
                                })?;
                            }
                        }
                    }
                })
            })
            .collect();
        join_threads(handles)
    });
    for r in results {
        for (i, len) in r? {
            out[i] = len;
        }
    }
    let state = state
        .into_inner()
        .map_err(|_| EngineError::Translate("bench lock poisoned".into()))?;
    Ok((out, state.batches, state.timeline))
}

/// Milliseconds from `start` to `at`.
fn ms_since(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64() * 1e3
}

/// Joins scoped bench threads; a panicked one counts as an engine error.
fn join_threads<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, EngineError>>>,
) -> Vec<Result<T, EngineError>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(EngineError::Translate("bench thread panicked".into())))
        })
        .collect()
}

/// A batch's index and its output token counts.
type ChunkLens = (usize, Vec<usize>);

/// Runs `batches` (indices into `sources`), one engine call each, taken in order by
/// `threads` threads (one per replica, as the worker's engine threads).
fn translate_batches(
    engine: &Engine,
    sources: &[Vec<String>],
    batches: &[Vec<usize>],
    options: &DecodeOptions,
    threads: usize,
) -> Result<Vec<usize>, EngineError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Vec<ChunkLens>, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else {
                            return Ok(out);
                        };
                        let chunk: Vec<Vec<String>> =
                            batch.iter().map(|&j| sources[j].clone()).collect();
                        // One call per batch; max_batch_size = its length, so not re-split.
                        out.push((i, engine.translate_raw(&chunk, options, chunk.len())?));
                    }
                })
            })
            .collect();
        join_threads(handles)
    });
    let mut lens: Vec<ChunkLens> = Vec::new();
    for r in results {
        lens.extend(r?);
    }
    lens.sort_by_key(|(i, _)| *i);
    Ok(lens.into_iter().flat_map(|(_, l)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_cut_as_the_worker_cuts_them() {
        let lines = ["첫 문장입니다.", "둘째! 셋째?", "넷째 문장", "다섯째."];
        // One line a job: the lines themselves.
        let (texts, docs) = documents(&lines, 1);
        assert_eq!(texts, lines);
        assert_eq!(docs, vec![0..1, 1..2, 2..3, 3..4]);
        // Documents of two lines: the second line is two sentences.
        let (texts, docs) = documents(&lines, 2);
        assert_eq!(
            texts,
            ["첫 문장입니다.", "둘째!", "셋째?", "넷째 문장", "다섯째."]
        );
        assert_eq!(docs, vec![0..3, 3..5]);
        // A last, shorter document.
        let (texts, docs) = documents(&lines, 3);
        assert_eq!(texts.len(), 5);
        assert_eq!(docs, vec![0..4, 4..5]);
    }
}
