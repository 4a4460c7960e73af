//! Dynamic batching shared by all in-flight jobs.
//!
//! Three parts, kept apart as in TGI's router:
//! - the **policy**, [`next_batch`]: a pure function of the queue, the clock and the
//!   engine's free replicas that says whether to cut a batch now, and which texts;
//! - the **queue task** ([`spawn`]): owns the FIFO queue, merges identical texts, asks
//!   the policy, and hands each batch to an idle replica;
//! - the **replica threads**: one OS thread per engine replica, calling the blocking
//!   [`Backend`] so inference never runs on the async runtime.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::cache::CacheKey;
use crate::engine::{Backend, EngineError};
use crate::protocol::DecodeOptions;
use crate::telemetry::Metrics;

/// Errors a submitted text can meet.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The engine failed on this text (also when translated alone).
    #[error("engine failed: {0}")]
    Engine(String),
    /// The batcher has stopped.
    #[error("batcher stopped")]
    Closed,
}

/// When to cut a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most distinct texts in a batch.
    pub max_batch_size: usize,
    /// Most padded tokens (texts × longest source) in a batch; a single longer text
    /// still goes alone.
    pub max_batch_tokens: usize,
    /// Longest a text waits for a fuller batch while some replica is busy.
    pub max_wait: Duration,
}

/// What the policy needs to know about a queued text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Source length in tokens.
    pub tokens: usize,
    /// Decoding options; a batch shares one set.
    pub options: DecodeOptions,
    /// When it entered the queue.
    pub enqueued: Instant,
}

/// The policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing queued.
    Idle,
    /// Texts are queued but every replica is busy.
    WaitForEngine,
    /// Wait for more texts, but cut at this instant at the latest.
    WaitUntil(Instant),
    /// Cut a batch of these queue positions (ascending).
    Cut(Vec<usize>),
}

/// Decides whether to cut a batch now (pure: no clock, no I/O).
///
/// The batch is the oldest text plus later texts with the same options, up to
/// `max_batch_size` texts and `max_batch_tokens` padded tokens: in arrival order when
/// they all fit, otherwise those closest in length to the oldest (less padding).
/// It is cut when it is full, when its oldest text has waited `max_wait`, or at once
/// when the whole engine is idle: a lone job on an idle worker never waits.
pub fn next_batch<T: Borrow<Pending>>(
    queue: &VecDeque<T>,
    now: Instant,
    policy: &Policy,
    free_replicas: usize,
    total_replicas: usize,
) -> Decision {
    let Some(head) = queue.front().map(Borrow::borrow) else {
        return Decision::Idle;
    };
    if free_replicas == 0 {
        return Decision::WaitForEngine;
    }
    // Texts that may share the head's batch, oldest first. When there are more than fit,
    // the head (the oldest text: nothing starves) is joined by those closest to it in
    // length, so the batch pads little; the window keeps old texts within reach.
    let window = policy.max_batch_size.saturating_mul(4);
    let mut candidates: Vec<(usize, usize)> = queue
        .iter()
        .enumerate()
        .map(|(i, item)| (i, Borrow::<Pending>::borrow(item)))
        .filter(|(_, item)| item.options == head.options)
        .map(|(i, item)| (i, item.tokens))
        .take(window)
        .collect();
    if candidates.len() > policy.max_batch_size {
        let head_len = head.tokens;
        // Stable: equal distances keep arrival order. The head (distance 0, first) stays first.
        candidates.sort_by_key(|&(_, len)| len.abs_diff(head_len));
    }
    let mut chosen = Vec::new();
    let mut longest = 0usize;
    let mut full = false;
    for &(i, len) in &candidates {
        let longest_with = longest.max(len);
        let padded = longest_with * (chosen.len() + 1);
        if !chosen.is_empty() && padded > policy.max_batch_tokens {
            full = true;
            break;
        }
        chosen.push(i);
        longest = longest_with;
        if chosen.len() >= policy.max_batch_size {
            full = true;
            break;
        }
    }
    chosen.sort_unstable();
    let deadline = head.enqueued + policy.max_wait;
    if full || now >= deadline || free_replicas >= total_replicas {
        Decision::Cut(chosen)
    } else {
        Decision::WaitUntil(deadline)
    }
}

/// One text submitted for translation.
struct Submission {
    key: CacheKey,
    tokens: Vec<String>,
    /// Target-language token a multilingual model must start with.
    prefix: Option<String>,
    options: DecodeOptions,
    waiter: Waiter,
}

/// Someone awaiting a translation: where to send it, and the span of the job that
/// asked, so the batch's span can link back to every job it served.
struct Waiter {
    reply: oneshot::Sender<Result<String, BatchError>>,
    span: tracing::Span,
}

impl Waiter {
    /// Answers; a waiter that gave up (deadline) has dropped its receiver, which is fine.
    fn send(self, result: Result<String, BatchError>) {
        let _ = self.reply.send(result);
    }
}

/// A queued, distinct text.
struct Queued {
    pending: Pending,
    key: CacheKey,
    tokens: Vec<String>,
    prefix: Option<String>,
}

impl Borrow<Pending> for Queued {
    fn borrow(&self) -> &Pending {
        &self.pending
    }
}

/// A batch on its way to a replica thread.
struct Batch {
    options: DecodeOptions,
    /// Sorted by source length (less padding work when CTranslate2 drops finished rows).
    sources: Vec<Vec<String>>,
    /// `prefixes[i]`: target-language token of `sources[i]`; empty when none has one.
    prefixes: Vec<Option<String>>,
    /// `waiters[i]` receive the translation of `sources[i]` (several when merged).
    waiters: Vec<Vec<Waiter>>,
}

/// Submits texts to the batcher. Cheap to clone; the batcher stops when every handle
/// is dropped and the queue has drained.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::Sender<Submission>,
}

impl BatcherHandle {
    /// Translates one tokenized text. `key` identifies identical requests, which are
    /// translated once.
    pub async fn translate(
        &self,
        key: CacheKey,
        tokens: Vec<String>,
        options: DecodeOptions,
    ) -> Result<String, BatchError> {
        self.translate_with_prefix(key, tokens, None, options).await
    }

    /// Like [`BatcherHandle::translate`], for a multilingual model whose output must
    /// start with the target-language token `prefix` (it is not in the result).
    pub async fn translate_with_prefix(
        &self,
        key: CacheKey,
        tokens: Vec<String>,
        prefix: Option<String>,
        options: DecodeOptions,
    ) -> Result<String, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                key,
                tokens,
                prefix,
                options,
                waiter: Waiter {
                    reply,
                    span: tracing::Span::current(),
                },
            })
            .await
            .map_err(|_| BatchError::Closed)?;
        rx.await.unwrap_or(Err(BatchError::Closed))
    }
}

/// Fair sharing of the CPUs between the engines of several models in one worker.
///
/// Every batch takes `weight` slots (its replica's threads) before it runs and gives
/// them back when done; slots are granted strictly in the order batches asked (a
/// ticket queue), so a model with a deep backlog cannot overtake a quiet model: each
/// model's batcher holds at most one batch per replica, so a batch waits at most for
/// the batches the other models' replicas asked for before it. With one model the
/// gate has as many slots as its threads and never blocks.
pub struct CpuGate {
    state: std::sync::Mutex<GateState>,
    turn: std::sync::Condvar,
    slots: usize,
}

struct GateState {
    free: usize,
    /// Next ticket to hand out.
    next: u64,
    /// Ticket whose turn it is.
    serving: u64,
}

impl CpuGate {
    /// A gate with `slots` CPU slots (at least 1).
    pub fn new(slots: usize) -> Arc<Self> {
        let slots = slots.max(1);
        Arc::new(Self {
            state: std::sync::Mutex::new(GateState {
                free: slots,
                next: 0,
                serving: 0,
            }),
            turn: std::sync::Condvar::new(),
            slots,
        })
    }

    /// Blocks until it is this caller's turn and `weight` slots are free (a weight
    /// above the gate's size takes the whole gate). Blocking: engine threads only.
    pub fn acquire(self: &Arc<Self>, weight: usize) -> GatePass {
        let weight = weight.clamp(1, self.slots);
        // A poisoned lock only means another engine thread panicked while holding
        // it; the counters are still consistent (every update is one statement).
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next;
        st.next += 1;
        while st.serving != ticket || st.free < weight {
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.free -= weight;
        st.serving += 1;
        drop(st);
        // The next ticket may fit in what is left.
        self.turn.notify_all();
        GatePass {
            gate: self.clone(),
            weight,
        }
    }
}

/// Slots held on a [`CpuGate`]; given back on drop.
pub struct GatePass {
    gate: Arc<CpuGate>,
    weight: usize,
}

impl Drop for GatePass {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        st.free += self.weight;
        drop(st);
        self.gate.turn.notify_all();
    }
}

/// Starts the queue task and one thread per backend replica.
pub fn spawn(
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let replicas = backend.replicas().max(1);
    spawn_gated(backend, policy, metrics, CpuGate::new(replicas), 1)
}

/// Like [`spawn`], each batch first taking `weight` slots of `gate`, which the
/// batchers of a worker's other models share.
pub fn spawn_gated(
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
    gate: Arc<CpuGate>,
    weight: usize,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let replicas = backend.replicas().max(1);
    // Room for a full batch per replica on top of what the queue holds: submitters
    // wait here (back-pressure to the consumers) rather than growing memory.
    let (tx, rx) = mpsc::channel(policy.max_batch_size * replicas);
    let task = tokio::spawn(run(rx, backend, policy, metrics, replicas, gate, weight));
    (BatcherHandle { tx }, task)
}

async fn run(
    mut rx: mpsc::Receiver<Submission>,
    backend: Arc<dyn Backend>,
    policy: Policy,
    metrics: Arc<Metrics>,
    replicas: usize,
    gate: Arc<CpuGate>,
    weight: usize,
) {
    // Each replica sends at most one "done" per batch it holds, and holds at most one,
    // so `replicas` slots can never fill.
    let (done_tx, mut done_rx) = mpsc::channel::<usize>(replicas);
    let mut senders: Vec<SyncSender<Batch>> = Vec::with_capacity(replicas);
    let mut threads = Vec::with_capacity(replicas);
    for i in 0..replicas {
        // Capacity 1: a replica is only sent a batch when it is idle.
        let (btx, brx) = sync_channel::<Batch>(1);
        let backend = backend.clone();
        let done_tx = done_tx.clone();
        let metrics = metrics.clone();
        let gate = gate.clone();
        let handle = std::thread::Builder::new()
            .name(format!("engine-{i}"))
            .spawn(move || {
                while let Ok(batch) = brx.recv() {
                    let _pass = gate.acquire(weight);
                    run_batch(backend.as_ref(), batch, &metrics);
                    if done_tx.blocking_send(i).is_err() {
                        break;
                    }
                }
            });
        match handle {
            Ok(h) => {
                senders.push(btx);
                threads.push(h);
            }
            Err(e) => tracing::error!(error = %e, "cannot start engine thread {i}"),
        }
    }
    drop(done_tx);
    let total = senders.len();
    let mut idle: Vec<usize> = (0..total).rev().collect();
    // The queue holds distinct texts; `waiters` maps each to everyone awaiting it. Both
    // are bounded by `max_queue` (the receive branch pauses when it is reached).
    let max_queue = policy.max_batch_size * replicas * 4;
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut waiters: HashMap<CacheKey, Vec<Waiter>> = HashMap::new();
    let mut closed = false;
    loop {
        let wake_at = loop {
            match next_batch(&queue, Instant::now(), &policy, idle.len(), total) {
                Decision::Cut(positions) => {
                    let Some(replica) = idle.pop() else {
                        break None;
                    };
                    let batch = take_batch(&mut queue, &mut waiters, &positions, &metrics);
                    if let Err(e) = senders[replica].try_send(batch) {
                        // The thread is gone; answer its batch rather than hang it.
                        tracing::error!(replica, "engine thread is not accepting work");
                        let batch = match e {
                            std::sync::mpsc::TrySendError::Full(b)
                            | std::sync::mpsc::TrySendError::Disconnected(b) => b,
                        };
                        fail_batch(batch, "engine thread stopped");
                    }
                }
                Decision::WaitUntil(t) => break Some(t),
                Decision::WaitForEngine | Decision::Idle => break None,
            }
        };
        if closed && queue.is_empty() && idle.len() == total {
            break;
        }
        if total == 0 {
            // No engine thread could start: fail everything instead of queueing forever.
            while let Some(q) = queue.pop_front() {
                for w in waiters.remove(&q.key).unwrap_or_default() {
                    w.send(Err(BatchError::Engine("no engine threads".into())));
                }
            }
        }
        tokio::select! {
            biased;
            Some(replica) = done_rx.recv() => idle.push(replica),
            msg = rx.recv(), if !closed && queue.len() < max_queue => match msg {
                Some(s) => enqueue(&mut queue, &mut waiters, s, &metrics),
                None => closed = true,
            },
            _ = sleep_until_opt(wake_at), if wake_at.is_some() => {}
        }
    }
    drop(senders);
    for t in threads {
        // Threads exit once their channel closes; joining here is instant.
        let _ = t.join();
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

fn enqueue(
    queue: &mut VecDeque<Queued>,
    waiters: &mut HashMap<CacheKey, Vec<Waiter>>,
    s: Submission,
    metrics: &Metrics,
) {
    if let Some(w) = waiters.get_mut(&s.key) {
        w.push(s.waiter);
        metrics.segments_deduplicated.inc();
        return;
    }
    waiters.insert(s.key, vec![s.waiter]);
    queue.push_back(Queued {
        pending: Pending {
            tokens: s.tokens.len(),
            options: s.options,
            enqueued: Instant::now(),
        },
        key: s.key,
        tokens: s.tokens,
        prefix: s.prefix,
    });
}

fn take_batch(
    queue: &mut VecDeque<Queued>,
    waiters: &mut HashMap<CacheKey, Vec<Waiter>>,
    positions: &[usize],
    metrics: &Metrics,
) -> Batch {
    let now = Instant::now();
    let mut taken: Vec<Queued> = Vec::with_capacity(positions.len());
    // Remove from the back so earlier positions stay valid.
    for &p in positions.iter().rev() {
        if let Some(q) = queue.remove(p) {
            taken.push(q);
        }
    }
    taken.sort_by_key(|q| q.tokens.len());
    let longest = taken.last().map_or(0, |q| q.tokens.len());
    metrics.batch_size.observe(taken.len() as f64);
    metrics.batch_tokens.observe((longest * taken.len()) as f64);
    let options = taken
        .first()
        .map(|q| q.pending.options)
        .expect("the policy never cuts an empty batch");
    let mut sources = Vec::with_capacity(taken.len());
    let mut prefixes = Vec::with_capacity(taken.len());
    let mut ws = Vec::with_capacity(taken.len());
    for q in taken {
        metrics
            .batch_wait_seconds
            .observe(now.duration_since(q.pending.enqueued).as_secs_f64());
        ws.push(waiters.remove(&q.key).unwrap_or_default());
        sources.push(q.tokens);
        prefixes.push(q.prefix);
    }
    if prefixes.iter().all(Option::is_none) {
        prefixes.clear();
    }
    Batch {
        options,
        sources,
        prefixes,
        waiters: ws,
    }
}

fn fail_batch(batch: Batch, message: &str) {
    for w in batch.waiters.into_iter().flatten() {
        w.send(Err(BatchError::Engine(message.to_string())));
    }
}

/// Calls the backend, catching panics so one bad input cannot kill a replica thread.
fn call(
    backend: &dyn Backend,
    sources: &[Vec<String>],
    prefixes: &[Option<String>],
    options: &DecodeOptions,
) -> Result<Vec<String>, EngineError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        backend.translate(sources, prefixes, options)
    }))
    .unwrap_or_else(|_| Err(EngineError::Translate("engine panicked".into())))
}

/// Runs one batch on the calling (replica) thread and answers every waiter. When the
/// batch fails as a whole, each text is retried alone so one bad input fails only
/// its own job.
fn run_batch(backend: &dyn Backend, batch: Batch, metrics: &Metrics) {
    static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let start = Instant::now();
    let Batch {
        options,
        sources,
        prefixes,
        waiters,
    } = batch;
    let batch_id = NEXT_BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Debug level: one span per batch is cheap, one event per job only when asked for.
    let span = tracing::debug_span!("batch", batch_id, size = sources.len());
    for w in waiters.iter().flatten() {
        span.follows_from(&w.span);
        w.span
            .in_scope(|| tracing::debug!(batch_id, "text batched"));
    }
    let _entered = span.enter();
    let results: Vec<Result<String, BatchError>> = match call(
        backend, &sources, &prefixes, &options,
    ) {
        Ok(outs) => outs.into_iter().map(Ok).collect(),
        Err(e) => {
            metrics.engine_errors.inc();
            if sources.len() == 1 {
                tracing::warn!(error = %e, "engine failed on a text");
                vec![Err(BatchError::Engine(e.to_string()))]
            } else {
                tracing::warn!(error = %e, size = sources.len(), "engine failed on a batch; retrying its texts one by one");
                sources
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let prefix = prefixes.get(i).map(std::slice::from_ref).unwrap_or(&[]);
                        call(backend, std::slice::from_ref(s), prefix, &options)
                            .and_then(|mut v| {
                                v.pop()
                                    .ok_or_else(|| EngineError::Translate("no result".into()))
                            })
                            .map_err(|e| {
                                metrics.engine_errors.inc();
                                BatchError::Engine(e.to_string())
                            })
                    })
                    .collect()
            }
        }
    };
    let elapsed = start.elapsed();
    metrics.inference_seconds.observe(elapsed.as_secs_f64());
    tracing::debug!(
        size = sources.len(),
        longest = sources.iter().map(Vec::len).max().unwrap_or(0),
        elapsed_ms = elapsed.as_millis() as u64,
        "batch done"
    );
    for (ws, result) in waiters.into_iter().zip(results) {
        for w in ws {
            w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn opts(beam: u32) -> DecodeOptions {
        DecodeOptions {
            beam_size: beam,
            max_decoding_length: 256,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        }
    }

    fn policy() -> Policy {
        Policy {
            max_batch_size: 3,
            max_batch_tokens: 100,
            max_wait: Duration::from_millis(10),
        }
    }

    fn q(items: &[(usize, u32, u64)], t0: Instant) -> VecDeque<Pending> {
        items
            .iter()
            .map(|&(tokens, beam, at_ms)| Pending {
                tokens,
                options: opts(beam),
                enqueued: t0 + Duration::from_millis(at_ms),
            })
            .collect()
    }

    #[test]
    fn empty_queue_is_idle() {
        let t0 = Instant::now();
        assert_eq!(next_batch(&q(&[], t0), t0, &policy(), 1, 1), Decision::Idle);
    }

    #[test]
    fn idle_engine_cuts_at_once() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 2, 2),
            Decision::Cut(vec![0])
        );
    }

    #[test]
    fn busy_engine_waits_for_a_replica() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_secs(1), &policy(), 0, 2),
            Decision::WaitForEngine
        );
    }

    #[test]
    fn partly_busy_engine_waits_up_to_max_wait() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 1, 2)], t0);
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(3), &policy(), 1, 2),
            Decision::WaitUntil(t0 + Duration::from_millis(10))
        );
        assert_eq!(
            next_batch(&queue, t0 + Duration::from_millis(10), &policy(), 1, 2),
            Decision::Cut(vec![0, 1])
        );
    }

    #[test]
    fn full_batch_is_cut_without_waiting() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 1, 0), (5, 1, 0), (5, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2),
            Decision::Cut(vec![0, 1, 2])
        );
    }

    #[test]
    fn token_budget_counts_padding() {
        let t0 = Instant::now();
        // 40 + 40 = 2 × 40 = 80 fits; a third at 40 would be 120 > 100.
        let queue = q(&[(40, 1, 0), (40, 1, 0), (40, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2),
            Decision::Cut(vec![0, 1])
        );
        // A short text followed by a long one: padding to 60 × 2 = 120 > 100.
        let queue = q(&[(5, 1, 0), (60, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2),
            Decision::Cut(vec![0])
        );
        // A single text over the budget still goes, alone.
        let queue = q(&[(500, 1, 0), (1, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2),
            Decision::Cut(vec![0])
        );
    }

    #[test]
    fn crowded_queue_batches_the_oldest_with_texts_of_similar_length() {
        let t0 = Instant::now();
        // max_batch_size 3, five candidates: the head (10 tokens) takes the two
        // closest in length (11 and 9), wherever they stand; 50 and 2 wait.
        let queue = q(
            &[(10, 1, 0), (50, 1, 0), (11, 1, 0), (2, 1, 0), (9, 1, 0)],
            t0,
        );
        assert_eq!(
            next_batch(&queue, t0, &policy(), 1, 2),
            Decision::Cut(vec![0, 2, 4])
        );
        // Not crowded: plain arrival order.
        let queue = q(&[(10, 1, 0), (50, 1, 0)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 2, 2),
            Decision::Cut(vec![0, 1])
        );
    }

    #[test]
    fn batch_shares_the_oldest_texts_options() {
        let t0 = Instant::now();
        let queue = q(&[(5, 1, 0), (5, 4, 0), (5, 1, 1), (5, 4, 1)], t0);
        assert_eq!(
            next_batch(&queue, t0, &policy(), 2, 2),
            Decision::Cut(vec![0, 2])
        );
    }

    /// Echoes its input's token count; records every batch's size.
    struct Fake {
        batches: Mutex<Vec<usize>>,
        replicas: usize,
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Backend for Fake {
        fn translate(
            &self,
            sources: &[Vec<String>],
            _: &[Option<String>],
            _: &DecodeOptions,
        ) -> Result<Vec<String>, EngineError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(sources.len());
            std::thread::sleep(self.delay);
            if sources.len() > 1 && sources.iter().any(|s| s[0] == "boom") {
                return Err(EngineError::Translate("boom in batch".into()));
            }
            if sources.len() == 1 && sources[0][0] == "boom" {
                return Err(EngineError::Translate("boom".into()));
            }
            Ok(sources.iter().map(|s| s.join(" ")).collect())
        }

        fn replicas(&self) -> usize {
            self.replicas
        }
    }

    #[test]
    fn cpu_gate_serves_in_arrival_order() {
        let gate = CpuGate::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.acquire(1);
        let mut threads = Vec::new();
        for i in 0..4 {
            let (gate, order) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _p = gate.acquire(1);
                order.lock().unwrap().push(i);
            }));
            // Each thread takes its ticket before the next one starts.
            std::thread::sleep(Duration::from_millis(30));
        }
        assert!(order.lock().unwrap().is_empty(), "the slot is held");
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn cpu_gate_counts_weights() {
        let gate = CpuGate::new(2);
        let a = gate.acquire(1);
        let b = gate.acquire(1);
        let taken = Arc::new(AtomicUsize::new(0));
        let t = {
            let (gate, taken) = (gate.clone(), taken.clone());
            std::thread::spawn(move || {
                let _p = gate.acquire(5); // clamped to the whole gate
                taken.store(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(a);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(taken.load(Ordering::SeqCst), 0, "needs both slots");
        drop(b);
        t.join().unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 1);
    }

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    fn fake(replicas: usize, delay_ms: u64) -> Arc<Fake> {
        Arc::new(Fake {
            batches: Mutex::new(Vec::new()),
            replicas,
            delay: Duration::from_millis(delay_ms),
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn concurrent_texts_are_batched_and_answered_in_order() {
        let backend = fake(1, 30);
        let metrics = Arc::new(Metrics::default());
        let (h, task) = spawn(
            backend.clone(),
            Policy {
                max_batch_size: 8,
                max_batch_tokens: 1000,
                max_wait: Duration::from_millis(5),
            },
            metrics.clone(),
        );
        let mut futs = Vec::new();
        for i in 0..20u8 {
            let h = h.clone();
            futs.push(tokio::spawn(async move {
                h.translate(key(i), vec![format!("t{i}")], opts(1)).await
            }));
        }
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().unwrap(), format!("t{i}"));
        }
        let batches = backend.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.iter().any(|&b| b > 1), "no batching: {batches:?}");
        assert!(batches.iter().all(|&b| b <= 8));
        drop(h);
        task.await.unwrap();
        assert_eq!(metrics.batch_size.count() as usize, batches.len());
    }

    #[tokio::test]
    async fn identical_texts_are_translated_once() {
        let backend = fake(1, 20);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(backend.clone(), policy(), metrics.clone());
        // Occupy the engine so the duplicates meet in the queue.
        let first = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(1), vec!["a".into()], opts(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let dups: Vec<_> = (0..5)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.translate(key(2), vec!["b".into()], opts(1)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), "a");
        for d in dups {
            assert_eq!(d.await.unwrap().unwrap(), "b");
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.segments_deduplicated.get(), 4);
    }

    #[tokio::test]
    async fn a_failing_text_fails_alone() {
        let backend = fake(1, 20);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(backend.clone(), policy(), metrics.clone());
        let block = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(9), vec!["x".into()], opts(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let good = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(1), vec!["ok".into()], opts(1)).await })
        };
        let bad = {
            let h = h.clone();
            tokio::spawn(async move { h.translate(key(2), vec!["boom".into()], opts(1)).await })
        };
        block.await.unwrap().unwrap();
        assert_eq!(good.await.unwrap().unwrap(), "ok");
        assert!(matches!(bad.await.unwrap(), Err(BatchError::Engine(_))));
        assert!(metrics.engine_errors.get() >= 1);
    }

    #[tokio::test]
    async fn lone_text_on_idle_engine_does_not_wait() {
        let backend = fake(2, 0);
        let metrics = Arc::new(Metrics::default());
        let (h, _task) = spawn(
            backend,
            Policy {
                max_batch_size: 32,
                max_batch_tokens: 1000,
                max_wait: Duration::from_secs(5),
            },
            metrics,
        );
        let t = Instant::now();
        h.translate(key(1), vec!["x".into()], opts(1))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
