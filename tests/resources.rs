//! Bounded memory under a flood (issue 3, "Bounded resources"), against the real binary.
//!
//! The worker runs as a child process with explicit limits. After a warm-up that runs
//! full batches on every replica, its peak resident set (`VmHWM`) is the baseline and
//! is reset; then hundreds of max-size jobs (several times `prefetch`) are published
//! as fast as the broker takes them while a sampler reads `VmRSS` every 100 ms. The
//! flood's peak must stay under `baseline + prefetch × per-job bound + transient
//! tokenizer bound`, the formula of docs/reliability.md ("Bounded memory and soak"),
//! computed below from the same limits: a worker that held more jobs than `prefetch`,
//! or more than the table's copies of each, goes over it. The negative control shows
//! that it does: the same flood into a worker allowed 16 × `prefetch` deliveries must
//! break the ceiling computed for `prefetch`.
//!
//! The limits are small on purpose (64 KiB bodies of 16 texts, sources cut to 16
//! tokens): the bound's terms scale with them, the test stays within a CI run in a
//! debug build, and the transient tokenizer term (which does not grow with
//! `prefetch`) stays small beside `prefetch × per-job`, so the ceiling stays tight
//! enough to notice extra jobs.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

use common::process::{status_kib, WorkerProcess};
use common::*;

/// The limits a flood runs under (passed to the binary as `TW_*` variables).
#[derive(Clone, Copy)]
struct Limits {
    prefetch: u16,
    max_body_bytes: usize,
    max_texts: usize,
    max_text_chars: usize,
    /// `model.max_input_length`: sources are cut to this many tokens.
    max_input_length: usize,
    /// `model.max_decoding_length`: no output is longer than this many tokens.
    max_decoding_length: usize,
    /// Engine replicas (`model.threads` = replicas, one thread each).
    replicas: usize,
    max_batch_size: usize,
}

impl Limits {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TW_LIMITS__MAX_BODY_BYTES", self.max_body_bytes.to_string()),
            ("TW_LIMITS__MAX_TEXTS", self.max_texts.to_string()),
            ("TW_LIMITS__MAX_TEXT_CHARS", self.max_text_chars.to_string()),
            (
                "TW_MODEL__MAX_INPUT_LENGTH",
                self.max_input_length.to_string(),
            ),
            (
                "TW_MODEL__MAX_DECODING_LENGTH",
                self.max_decoding_length.to_string(),
            ),
            ("TW_MODEL__REPLICAS", self.replicas.to_string()),
            ("TW_BATCH__MAX_BATCH_SIZE", self.max_batch_size.to_string()),
        ]
    }
}

// ---- The memory model (docs/reliability.md, "Bounded memory and soak") ----------

/// `size_of::<String>()`: pointer, capacity, length.
const STRING: u64 = 24;
/// glibc's smallest heap chunk: 24 usable bytes plus the 8-byte size header, 16-aligned.
const MIN_CHUNK: u64 = 32;

/// Heap bytes glibc spends on an allocation of `len` bytes.
fn chunk(len: u64) -> u64 {
    (len + 8).div_ceil(16).saturating_mul(16).max(MIN_CHUNK)
}

/// Bookkeeping per text of a job, itemised in the doc: its cache key (in `keys` and
/// `lookup`), the Redis key name (`<prefix>:v1:<64 hex>`), the `out`/`cached`/`hits`
/// slots, the `missing`/`seen` entries, the batcher `Submission` with its oneshot
/// channel and span, and the `results` slot: about 700 bytes, rounded up.
const PER_TEXT_BOOKKEEPING: u64 = 1024;

/// Longest piece of the model's vocabulary, in bytes: one token, in or out, is at most
/// this much text.
fn longest_piece(model: &std::path::Path) -> u64 {
    let vocab: Vec<String> = serde_json::from_slice(
        &std::fs::read(model.join("shared_vocabulary.json")).expect("vocabulary is readable"),
    )
    .expect("vocabulary is a JSON list");
    vocab.iter().map(|p| p.len() as u64).max().unwrap_or(0)
}

/// One tokenized source token: its `String` in a `Vec` that may have doubled (the
/// tokenizer pushes `</s>` after collecting), and its heap chunk.
fn token_bytes(piece: u64) -> u64 {
    2 * STRING + chunk(piece)
}

/// Upper bound on what one in-flight job with a `body`-byte body holds at once, from
/// the code (each line is a row of the doc's table).
fn per_job_bytes(l: &Limits, body: u64, piece: u64) -> u64 {
    let n = l.max_texts as u64;
    // lapin's `Delivery::data`, grown by `Vec::extend` frame by frame: capacity < 2×.
    let raw = 2 * body;
    // `Job::texts`: decoded strings are never longer than their JSON; the Vec<String>
    // is grown by push (capacity < 2n).
    let texts = body + n * (2 * STRING + MIN_CHUNK);
    let bookkeeping = n * PER_TEXT_BOOKKEEPING;
    // Tokens held until the batch runs: `Engine::tokenize` keeps at most
    // max_input_length + 2 of them (what CTranslate2 reads).
    let tokens = n * (l.max_input_length as u64 + 2) * token_bytes(piece);
    // Output: at most max_decoding_length pieces per text. Copies: `out`, `to_store`,
    // the reply JSON (Vec grown by serde: < 2×; a control character escapes to 6
    // bytes), the lapin frame (another 6×), the Redis value and its packed command
    // (< 2×): 1 + 1 + 12 + 6 + 1 + 2 = 23 × the text, plus per-text JSON punctuation.
    let out = n * l.max_decoding_length as u64 * piece;
    let outputs = 23 * out + n * 64 + 1024;
    raw + texts + bookkeeping + tokens + outputs
}

/// Transient tokenizer memory, which does not stay with the job: while one text is
/// encoded, SentencePiece, the proto between C++ and Rust and ct2rs each hold a copy
/// of every token of the whole text before it is cut to max_input_length. A piece
/// covers at least one byte (byte fallback: exactly one), so a text has at most
/// bytes + 1 tokens, and a text is at most 4 × max_text_chars bytes and no longer than
/// the body. The worker encodes one text per permit at a time (`model.threads`).
fn tokenizer_transient_bytes(l: &Limits, permits: u64) -> u64 {
    let text_bytes = (4 * l.max_text_chars).min(l.max_body_bytes) as u64;
    permits * (text_bytes + 1) * TRANSIENT_PER_TOKEN
}

/// Per token while encoding (doc table): C++ `EncodeResult` (24), `SentencePieceText`
/// piece message with piece and surface strings (≈ 96), its serialized form (≤ 16),
/// prost's decoded message (≈ 104 + 2 chunks of 32), `PieceWithId` (40 + 32), ct2rs's
/// `String` (48 + 32): ≈ 460 bytes, rounded up.
const TRANSIENT_PER_TOKEN: u64 = 512;

// ---- Load generation ------------------------------------------------------------

/// Words the generated texts are made of: Hangul and ASCII pieces of the vocabulary,
/// and characters it lacks (CJK, emoji), which byte fallback splits into one token
/// per UTF-8 byte: the worst case for token counts.
const WORDS: &[&str] = &[
    "회의는",
    "오전",
    "10시에",
    "본사",
    "회의실에서",
    "열립니다.",
    "quarterly",
    "report",
    "is",
    "due",
    "Friday.",
    "서버",
    "점검으로",
    "서비스가",
    "중단될",
    "수",
    "있습니다.",
    "漢字",
    "翻譯",
    "😀",
    "🚀",
    "Ωμέγα",
    "12,345.67",
    "계약서",
    "대금은",
];

/// Deterministic text for job `job`, text `k`, at most `max_bytes` long: a unique
/// ASCII header, then pseudo-random words. A shorter `max_bytes` gives a prefix.
fn text(job: usize, k: usize, max_bytes: usize) -> String {
    let mut s = format!("job {job} text {k}:");
    let mut x = (job as u64) << 8 | k as u64 | 1 << 40;
    while s.len() < max_bytes {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(' ');
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    let mut end = max_bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// A legal job body of at most `max_body_bytes`, within `4 × max_texts` bytes of it.
fn max_size_body(job: usize, l: &Limits) -> Vec<u8> {
    let id = format!("j{job}");
    let empty: Vec<String> = vec![String::new(); l.max_texts];
    let overhead = serde_json::to_vec(&json!({"id": id, "texts": empty}))
        .expect("json")
        .len();
    let per_text = (l.max_body_bytes - overhead) / l.max_texts;
    assert!(per_text <= l.max_text_chars, "texts must be legal");
    let texts: Vec<String> = (0..l.max_texts).map(|k| text(job, k, per_text)).collect();
    let body = serde_json::to_vec(&json!({"id": id, "texts": texts})).expect("json");
    // Short by at most the division's remainder and a split character per text.
    assert!(body.len() <= l.max_body_bytes && body.len() + 4 * l.max_texts >= l.max_body_bytes);
    body
}

/// Resets the kernel's peak RSS (`VmHWM`) of `pid` to its current RSS.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs is writable");
}

/// Samples `VmRSS` every 100 ms on its own thread until dropped.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let kib = status_kib(pid, "VmRSS:");
                    samples.lock().expect("sampler lock").push(kib);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns (samples, highest sample).
    fn finish(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler thread");
        }
        let s = self.samples.lock().expect("sampler lock");
        (s.len(), s.iter().copied().max().unwrap_or(0))
    }
}

/// Replies collected by job index; `check` validates each one.
struct Replies {
    queue: String,
    answered: Arc<Mutex<HashSet<usize>>>,
    count: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Replies {
    async fn start(
        conn: &Connection,
        check: impl Fn(usize, &Value) -> Result<(), String> + Send + 'static,
    ) -> Self {
        let ch = conn.create_channel().await.expect("channel");
        let (reply_queue, mut consumer) = reply_consumer(&ch).await;
        let answered: Arc<Mutex<HashSet<usize>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let (answered, count, failures) = (answered.clone(), count.clone(), failures.clone());
            tokio::spawn(async move {
                let _ch = ch;
                while let Some(Ok(d)) = consumer.next().await {
                    let corr = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default();
                    let job: usize = match corr.parse() {
                        Ok(j) => j,
                        Err(_) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("stray reply {corr:?}"));
                            continue;
                        }
                    };
                    let verdict = serde_json::from_slice::<Value>(&d.data)
                        .map_err(|e| e.to_string())
                        .and_then(|v| check(job, &v));
                    if let Err(e) = verdict {
                        failures.lock().unwrap().push(format!("job {job}: {e}"));
                    }
                    if !answered.lock().unwrap().insert(job) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("job {job} answered twice"));
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Self {
            queue: reply_queue,
            answered,
            count,
            failures,
        }
    }

    async fn wait_all(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.answered.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} jobs unanswered after {timeout:?}",
                n - self.answered.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes `n` bodies made by `body` to `queue`, as fast as the broker confirms
/// them (up to 256 unconfirmed), with correlation id = the job index.
async fn flood(
    conn: &Connection,
    queue: &str,
    reply_to: &str,
    range: std::ops::Range<usize>,
    body: impl Fn(usize) -> Vec<u8>,
) {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let mut pending = Vec::new();
    for i in range {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(i.to_string().into())
            .with_reply_to(reply_to.into());
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                props,
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() >= 256 {
            for c in pending.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
    let _ = ch.close(200, "ok".into()).await;
}

/// A worker with `limits`, warmed up (full batches of full-length texts on every
/// replica, bodies too small to matter), its peak reset. Returns it, the config, the
/// broker connection and the baseline in KiB: the peak so far, which includes the
/// model, the runtime and the engine's working set at the largest batch.
async fn warm_worker(
    limits: &Limits,
) -> (
    WorkerProcess,
    translation_worker::config::Config,
    Connection,
    u64,
) {
    let mut config = test_config();
    config.amqp.prefetch = limits.prefetch;
    config.model.threads = limits.replicas;
    let env = limits.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let worker = WorkerProcess::spawn(&config, &env);
    wait_for_consumer(&config.amqp.queue).await;
    // Enough texts for two full batches per replica, each long enough to be cut to
    // max_input_length tokens: the engine's largest working set.
    let texts_needed = 2 * limits.max_batch_size * limits.replicas;
    let jobs = texts_needed.div_ceil(limits.max_texts);
    let per_text = 8 * limits.max_input_length;
    let replies = Replies::start(&conn, move |job, v| {
        (v["status"] == "ok")
            .then_some(())
            .ok_or_else(|| format!("warm-up {job}: {v}"))
    })
    .await;
    let l = *limits;
    flood(&conn, &config.amqp.queue, &replies.queue, 0..jobs, |i| {
        let texts: Vec<String> = (0..l.max_texts)
            .map(|k| text(1_000_000 + i, k, per_text))
            .collect();
        serde_json::to_vec(&json!({"texts": texts})).expect("json")
    })
    .await;
    replies.wait_all(jobs, Duration::from_secs(120)).await;
    assert!(replies.failures.lock().unwrap().is_empty());
    // Let the replies' acks and cache stores finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = status_kib(worker.pid(), "VmHWM:");
    reset_peak(worker.pid());
    (worker, config, conn, baseline)
}

/// The limits of the max-size flood and of its negative control. Sources of 4,000
/// bytes cut to 16 tokens: parsing and tokenizing still see every byte of every
/// body, while the copy model's decoding (the slow part in a debug build) stays short.
const FLOOD: Limits = Limits {
    prefetch: 64,
    max_body_bytes: 64 * 1024,
    max_texts: 16,
    max_text_chars: 4096,
    max_input_length: 16,
    max_decoding_length: 16,
    replicas: 2,
    max_batch_size: 32,
};

/// Max-size jobs in the flood: 6 × `prefetch`, so the worker's window is full
/// from the first second to nearly the last and refilled six times over.
const FLOOD_JOBS: usize = 384;

/// The ceiling for a worker running under `l`, from `baseline_kib`:
/// (per-job bound in bytes, tokenizer transient in bytes, ceiling in KiB).
fn ceiling(l: &Limits, baseline_kib: u64, piece: u64) -> (u64, u64, u64) {
    let per_job = per_job_bytes(l, l.max_body_bytes as u64, piece);
    let transient = tokenizer_transient_bytes(l, l.replicas as u64);
    let ceiling_kib = baseline_kib + (u64::from(l.prefetch) * per_job + transient).div_ceil(1024);
    (per_job, transient, ceiling_kib)
}

/// Checks a flood reply: `ok`, and each translation a prefix of its own source (the
/// copy model returns the source cut to max_input_length tokens; a character split
/// by the cut may decode as U+FFFD).
fn check_flood_reply(job: usize, v: &Value) -> Result<(), String> {
    if v["status"] != "ok" {
        return Err(format!("not ok: {v}"));
    }
    let got = v["translations"].as_array().ok_or("no translations")?;
    if got.len() != FLOOD.max_texts {
        return Err(format!("{} translations", got.len()));
    }
    for (k, t) in got.iter().enumerate() {
        let t = t.as_str().ok_or("translation is not a string")?;
        let t = t.trim_end_matches('\u{FFFD}');
        let header = format!("job {job} text {k}:");
        if !t.starts_with(&header) || !text(job, k, t.len() + 4).starts_with(t) {
            return Err(format!("text {k} is not a prefix of its source: {t:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_max_size_jobs_stays_under_the_memory_ceiling() {
    let limits = FLOOD;
    let jobs = FLOOD_JOBS;
    let piece = longest_piece(&model_dir());
    let (mut worker, config, conn, baseline_kib) = warm_worker(&limits).await;
    let pid = worker.pid();
    let replies = Replies::start(&conn, check_flood_reply).await;
    let sampler = Sampler::start(pid);
    let start = Instant::now();
    flood(&conn, &config.amqp.queue, &replies.queue, 0..jobs, |i| {
        max_size_body(i, &limits)
    })
    .await;
    let published = start.elapsed();
    replies.wait_all(jobs, Duration::from_secs(240)).await;
    let seconds = start.elapsed().as_secs_f64();
    let (samples, max_sampled) = sampler.finish();
    // The kernel updates VmHWM lazily: a sample may be above it.
    let peak_kib = status_kib(pid, "VmHWM:").max(max_sampled);
    let end_kib = status_kib(pid, "VmRSS:");
    let failures = replies.failures.lock().unwrap().clone();
    let (per_job, transient, ceiling_kib) = ceiling(&limits, baseline_kib, piece);
    println!(
        "RESOURCES {}",
        json!({
            "test": "max_size_flood",
            "jobs": jobs,
            "answered": replies.count.load(Ordering::Relaxed),
            "failures": failures.len(),
            "prefetch": limits.prefetch,
            "max_body_bytes": limits.max_body_bytes,
            "max_texts": limits.max_texts,
            "max_text_chars": limits.max_text_chars,
            "max_input_length": limits.max_input_length,
            "max_decoding_length": limits.max_decoding_length,
            "replicas": limits.replicas,
            "longest_piece_bytes": piece,
            "per_job_bound_bytes": per_job,
            "tokenizer_transient_bytes": transient,
            "baseline_kib": baseline_kib,
            "peak_kib": peak_kib,
            "max_sampled_rss_kib": max_sampled,
            "end_rss_kib": end_kib,
            "rss_samples": samples,
            "ceiling_kib": ceiling_kib,
            "headroom_kib": ceiling_kib as i64 - peak_kib as i64,
            "published_secs": published.as_secs_f64(),
            "seconds": seconds,
            "jobs_per_sec": jobs as f64 / seconds,
        })
    );
    assert!(
        failures.is_empty(),
        "bad replies: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(replies.count.load(Ordering::Relaxed), jobs, "replies");
    assert!(
        peak_kib <= ceiling_kib,
        "peak RSS {peak_kib} KiB over the ceiling {ceiling_kib} KiB"
    );
    assert!(worker.is_running(), "the worker died");
    worker.kill();
    cleanup(&config).await;
}

/// The negative control: the ceiling is tight enough to catch a worker that holds
/// more jobs than `prefetch`. The same flood goes to a worker whose broker window is
/// 16 × `prefetch` (what a worker that acked before finishing, or buffered deliveries
/// of its own, would hold); its peak must pass the ceiling computed for `prefetch`.
/// The jobs are not waited for: the test ends as soon as the ceiling is passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_is_broken_by_a_worker_holding_sixteen_times_prefetch() {
    let limits = FLOOD;
    let greedy = Limits {
        prefetch: 16 * FLOOD.prefetch,
        ..FLOOD
    };
    // Enough to fill the greedy window, and then some.
    let jobs = usize::from(greedy.prefetch + FLOOD.prefetch);
    let piece = longest_piece(&model_dir());
    let (mut worker, config, conn, baseline_kib) = warm_worker(&greedy).await;
    let pid = worker.pid();
    let (_, _, ceiling_kib) = ceiling(&limits, baseline_kib, piece);
    let replies = Replies::start(&conn, |_, _| Ok(())).await;
    let start = Instant::now();
    // Published from a task, so the peak is watched while the flood goes on.
    let publisher = {
        let (queue, reply_to) = (config.amqp.queue.clone(), replies.queue.clone());
        tokio::spawn(async move {
            let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
                .await
                .expect("broker reachable");
            flood(&conn, &queue, &reply_to, 0..jobs, |i| {
                max_size_body(i, &limits)
            })
            .await;
        })
    };
    let deadline = start + Duration::from_secs(120);
    let mut peak_kib = status_kib(pid, "VmHWM:");
    while peak_kib <= ceiling_kib
        && Instant::now() < deadline
        && replies.count.load(Ordering::Relaxed) < jobs
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_kib = status_kib(pid, "VmHWM:");
    }
    let seconds = start.elapsed().as_secs_f64();
    let answered = replies.count.load(Ordering::Relaxed);
    println!(
        "RESOURCES {}",
        json!({
            "test": "negative_control",
            "worker_prefetch": greedy.prefetch,
            "ceiling_for_prefetch": limits.prefetch,
            "jobs": jobs,
            "answered_when_stopped": answered,
            "baseline_kib": baseline_kib,
            "peak_kib": peak_kib,
            "ceiling_kib": ceiling_kib,
            "over_ceiling_kib": peak_kib as i64 - ceiling_kib as i64,
            "seconds": seconds,
        })
    );
    worker.kill();
    publisher.abort();
    cleanup(&config).await;
    assert!(
        peak_kib > ceiling_kib,
        "a worker holding {} jobs peaked at {peak_kib} KiB, under the ceiling for {} \
         ({ceiling_kib} KiB): the ceiling would not notice extra jobs",
        greedy.prefetch,
        limits.prefetch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_oversize_bodies_is_rejected_before_parsing_within_the_ceiling() {
    let limits = Limits {
        max_body_bytes: 16 * 1024,
        ..FLOOD
    };
    let jobs = 2_000;
    let body_bytes = 4 * limits.max_body_bytes;
    // Valid JSON over the limit: a parser would accept it, the size check must not.
    // One body for every job: the content of a rejected body does not matter.
    let body = {
        let mut l = limits;
        l.max_body_bytes = body_bytes;
        l.max_text_chars = body_bytes;
        max_size_body(0, &l)
    };
    let (mut worker, config, conn, baseline_kib) = warm_worker(&limits).await;
    let pid = worker.pid();
    let replies = Replies::start(&conn, |_, v| {
        let code = &v["error"]["code"];
        let message = v["error"]["message"].as_str().unwrap_or_default();
        // The size check names the body: nothing else (parse errors, text limits) ran.
        if code == "too_large" && message.starts_with("body is ") {
            Ok(())
        } else {
            Err(format!("expected a too_large body rejection: {v}"))
        }
    })
    .await;
    let sampler = Sampler::start(pid);
    let start = Instant::now();
    flood(&conn, &config.amqp.queue, &replies.queue, 0..jobs, |_| {
        body.clone()
    })
    .await;
    replies.wait_all(jobs, Duration::from_secs(120)).await;
    let seconds = start.elapsed().as_secs_f64();
    let (samples, max_sampled) = sampler.finish();
    // The kernel updates VmHWM lazily: a sample may be above it.
    let peak_kib = status_kib(pid, "VmHWM:").max(max_sampled);
    let failures = replies.failures.lock().unwrap().clone();
    // Rejected before parsing: only the raw body (< 2× in lapin's Vec) and an error
    // reply (its JSON, the lapin frame; < 1 KiB) per delivery.
    let per_job = 2 * body_bytes as u64 + 2048;
    let ceiling_kib = baseline_kib + (u64::from(limits.prefetch) * per_job).div_ceil(1024);
    println!(
        "RESOURCES {}",
        json!({
            "test": "oversize_flood",
            "jobs": jobs,
            "answered": replies.count.load(Ordering::Relaxed),
            "failures": failures.len(),
            "prefetch": limits.prefetch,
            "max_body_bytes": limits.max_body_bytes,
            "body_bytes": body.len(),
            "per_job_bound_bytes": per_job,
            "baseline_kib": baseline_kib,
            "peak_kib": peak_kib,
            "max_sampled_rss_kib": max_sampled,
            "rss_samples": samples,
            "ceiling_kib": ceiling_kib,
            "headroom_kib": ceiling_kib as i64 - peak_kib as i64,
            "seconds": seconds,
        })
    );
    assert!(
        failures.is_empty(),
        "bad replies: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(replies.count.load(Ordering::Relaxed), jobs, "replies");
    assert!(
        peak_kib <= ceiling_kib,
        "peak RSS {peak_kib} KiB over the ceiling {ceiling_kib} KiB"
    );
    worker.kill();
    cleanup(&config).await;
}
