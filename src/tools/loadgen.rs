//! `loadgen`: drives a worker (or `echo`) through the broker with many jobs in flight
//! and reports throughput, latency percentiles, and every job that failed, was lost or
//! came back wrong.
//!
//! Jobs go through [`translation_client::Client`], so they travel exactly as a real client's
//! do (exchange, mandatory, confirms, reply queue), in the lane asked for. `concurrency`
//! tasks each keep one job in flight (closed loop), or, with a `rate`, job `i` is sent
//! at `i / rate` seconds whatever the replies (open loop, up to `concurrency` in
//! flight); a job without a reply within `timeout_ms` is counted as **lost**.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use translation_client::wire::Split;
use translation_client::{Client, ClientError, ClientOptions, Lane, TranslateRequest};

use super::ConnectOptions;

/// Errors that stop a run before it produces a report.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Args(String),
    /// The sentence file could not be read or is empty.
    #[error("cannot use {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Connecting to the broker failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A sending task died (a bug).
    #[error("a loadgen task failed: {0}")]
    Task(String),
}

/// What to send (the `loadgen` command line fills it).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadgenOptions {
    /// Broker and exchange.
    pub connect: ConnectOptions,
    /// Source language.
    pub source: String,
    /// Target language.
    pub target: String,
    /// Jobs to send in total.
    pub jobs: u64,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// Texts in each job.
    pub texts_per_job: usize,
    /// Sentences, one per line (`None`: a built-in generator of Korean sentences).
    /// Jobs cycle through them.
    pub file: Option<PathBuf>,
    /// Make every text unique (a prefix with a random run id and a counter), so nothing
    /// is answered from the cache, in this run or any earlier one. Wins over `pool`.
    pub unique: bool,
    /// Repeat a pool of P distinct jobs (after the first round, answers are cache hits).
    pub pool: Option<u64>,
    /// Check that every translation equals its input (the copy test model, `echo`).
    pub verify_copy: bool,
    /// A job with no reply after this many milliseconds is lost.
    pub timeout_ms: u64,
    /// Send documents: each text is this many corpus sentences, one per line, sent
    /// with `split: sentences`. 0: off.
    pub document_sentences: usize,
    /// Beam size sent with every job (`None`: the worker's).
    pub beam_size: Option<u32>,
    /// Lane every job is sent in.
    pub lane: Lane,
    /// Jobs per second, sent on schedule (open loop) instead of one after another per
    /// in-flight slot; `None`: closed loop.
    pub rate: Option<f64>,
}

impl Default for LoadgenOptions {
    /// The defaults of the command line, on the local broker.
    fn default() -> Self {
        Self::new(ConnectOptions::default())
    }
}

impl LoadgenOptions {
    /// Options with the defaults of the command line, for tests and benchmarks.
    pub fn new(connect: ConnectOptions) -> Self {
        Self {
            connect,
            source: "ko".into(),
            target: "en".into(),
            jobs: 1000,
            concurrency: 64,
            texts_per_job: 1,
            file: None,
            unique: false,
            pool: None,
            verify_copy: false,
            timeout_ms: 30_000,
            document_sentences: 0,
            beam_size: None,
            lane: Lane::Bulk,
            rate: None,
        }
    }

    fn mode(&self) -> Mode {
        match (self.unique, self.pool) {
            (true, _) => Mode::Unique(uuid::Uuid::new_v4().as_u128() as u32),
            (false, Some(p)) => Mode::Pool(p),
            (false, None) => Mode::Corpus,
        }
    }
}

/// How job texts are drawn from the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cycle through the corpus as is (repeats hit the cache).
    Corpus,
    /// Every text unique: prefixed with this run's random id (so earlier runs' cache
    /// entries never match) and a counter.
    Unique(u32),
    /// P distinct jobs, repeated.
    Pool(u64),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Corpus => f.write_str("corpus"),
            Mode::Unique(_) => f.write_str("unique"),
            Mode::Pool(p) => write!(f, "pool of {p}"),
        }
    }
}

/// The texts of job `job`: `k` texts from `corpus`, made unique as `mode` says.
pub fn job_texts(corpus: &[String], k: usize, mode: Mode, job: u64) -> Vec<String> {
    let n = corpus.len() as u64;
    let base = |slot: u64| match n {
        0 => "",
        _ => corpus[(slot % n) as usize].as_str(),
    };
    (0..k as u64)
        .map(|s| match mode {
            Mode::Corpus => base(job * k as u64 + s).to_owned(),
            Mode::Unique(run) => format!("{run:08x}-{job}.{s} {}", base(job * k as u64 + s)),
            Mode::Pool(p) => {
                let q = job % p.max(1);
                format!("p{q}.{s} {}", base(q * k as u64 + s))
            }
        })
        .collect()
}

/// The built-in corpus: 1,260 distinct Korean business sentences of 4 to 9 words.
pub fn builtin_sentences() -> Vec<String> {
    const SUBJECTS: [&str; 7] = [
        "회의는",
        "분기 보고서는",
        "고객 지원팀은",
        "계약서 검토는",
        "서버 점검은",
        "신제품 발표는",
        "예산 승인은",
    ];
    const TIMES: [&str; 5] = [
        "오전 10시에",
        "금요일까지",
        "다음 주 월요일에",
        "이번 분기 안에",
        "3월 15일에",
    ];
    const PLACES: [&str; 6] = [
        "본사 3층 회의실에서",
        "온라인으로",
        "부산 지사에서",
        "고객사 사무실에서",
        "",
        "협력업체와 함께",
    ];
    const VERBS: [&str; 6] = [
        "진행됩니다.",
        "완료될 예정입니다.",
        "시작합니다.",
        "다시 검토됩니다.",
        "연기되었습니다.",
        "공지될 것입니다.",
    ];
    let mut out = Vec::with_capacity(SUBJECTS.len() * TIMES.len() * PLACES.len() * VERBS.len());
    for v in VERBS {
        for p in PLACES {
            for t in TIMES {
                for s in SUBJECTS {
                    let words = [s, t, p, v];
                    out.push(
                        words
                            .iter()
                            .filter(|w| !w.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" "),
                    );
                }
            }
        }
    }
    out
}

/// Latency percentiles of answered jobs, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest (the least disturbed by other load: idle-overhead measurements use it).
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// A job whose translation differs from its input under `--verify-copy`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// Job index.
    pub job: u64,
    /// Sent texts.
    pub sent: Vec<String>,
    /// Received translations.
    pub received: Vec<String>,
}

/// One of the slowest jobs of a run: which, when it was sent, how long it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowJob {
    /// Job index.
    pub job: u64,
    /// Seconds from the run's start to the job's publish.
    pub sent_at_s: f64,
    /// The publish as wall-clock milliseconds since the Unix epoch: to find the job in
    /// the worker's logs.
    pub sent_at_unix_ms: u64,
    /// Publish to reply.
    pub latency_ms: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Jobs published (= answered + errors + lost).
    pub sent: u64,
    /// Jobs answered with translations (`status: ok`).
    pub answered: u64,
    /// Jobs answered with an error reply, returned as unroutable, or failed otherwise.
    pub errors: u64,
    /// Jobs with no reply within the timeout.
    pub lost: u64,
    /// Answered jobs whose translations differ from their input (`--verify-copy`).
    pub mismatches: u64,
    /// Errors and lost jobs by kind: contract codes, `unroutable`, `timeout`, ...
    pub error_kinds: BTreeMap<String, u64>,
    /// Texts in answered jobs.
    pub segments: u64,
    /// Of those, answered from the cache.
    pub cached_segments: u64,
    /// Whitespace-separated words of the answered source texts.
    pub tokens: u64,
    /// Wall time from the first publish to the last outcome, seconds.
    pub elapsed_s: f64,
    /// Answered jobs per second.
    pub jobs_per_sec: f64,
    /// Answered texts per second.
    pub segments_per_sec: f64,
    /// Answered source words per second.
    pub tokens_per_sec: f64,
    /// Latency of answered jobs, publish to reply.
    pub latency_ms: Latency,
    /// Jobs in flight.
    pub concurrency: usize,
    /// Texts per job.
    pub texts_per_job: usize,
    /// Lane the jobs were sent in.
    pub lane: String,
    /// How texts were chosen.
    pub mode: String,
    /// Replies the client dropped as late or duplicate.
    pub ignored_replies: u64,
    /// The first few mismatches.
    pub mismatch_examples: Vec<Mismatch>,
    /// The [`SLOWEST`] slowest answered jobs, slowest first: where a latency tail
    /// comes from (the start of a run, or throughout).
    pub slowest: Vec<SlowJob>,
}

impl Report {
    /// Whether the run passes: nothing lost or wrong, and no errors unless allowed.
    pub fn passed(&self, allow_errors: bool) -> bool {
        self.lost == 0 && self.mismatches == 0 && (allow_errors || self.errors == 0)
    }

    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let l = &self.latency_ms;
        let mut out = format!(
            "jobs      {} sent, {} answered, {} errors, {} lost, {} mismatches\n\
             elapsed   {:.3} s ({} in flight, {} texts/job, {})\n\
             rate      {:.1} jobs/s, {:.1} segments/s, {:.1} tokens/s\n\
             cache     {} of {} segments answered from the cache\n\
             latency   p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
            self.sent,
            self.answered,
            self.errors,
            self.lost,
            self.mismatches,
            self.elapsed_s,
            self.concurrency,
            self.texts_per_job,
            self.mode,
            self.jobs_per_sec,
            self.segments_per_sec,
            self.tokens_per_sec,
            self.cached_segments,
            self.segments,
            l.p50,
            l.p90,
            l.p99,
            l.max,
        );
        for (kind, n) in &self.error_kinds {
            out.push_str(&format!("failed    {n} × {kind}\n"));
        }
        for m in &self.mismatch_examples {
            out.push_str(&format!(
                "mismatch  job {}: sent {:?}, got {:?}\n",
                m.job, m.sent, m.received
            ));
        }
        out
    }
}

/// Mismatches kept in the report.
const MISMATCH_EXAMPLES: usize = 5;
/// Slowest jobs kept in the report.
pub const SLOWEST: usize = 5;

/// Per-task counts, merged at the end (no shared lock on the hot path).
struct Tally {
    answered: u64,
    errors: u64,
    lost: u64,
    mismatches: u64,
    error_kinds: BTreeMap<String, u64>,
    segments: u64,
    cached_segments: u64,
    tokens: u64,
    latency_us: Histogram<u64>,
    mismatch_examples: Vec<Mismatch>,
    slowest: Vec<SlowJob>,
}

impl Tally {
    fn new() -> Self {
        Self {
            answered: 0,
            errors: 0,
            lost: 0,
            mismatches: 0,
            error_kinds: BTreeMap::new(),
            segments: 0,
            cached_segments: 0,
            tokens: 0,
            // 1 µs to 1 h at 3 significant digits: a few tens of kB.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            mismatch_examples: Vec::new(),
            slowest: Vec::new(),
        }
    }

    /// Keeps `job` if it is among the [`SLOWEST`] so far.
    fn note_latency(&mut self, job: SlowJob) {
        self.slowest.push(job);
        self.slowest
            .sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
        self.slowest.truncate(SLOWEST);
    }

    fn merge(&mut self, other: Tally) {
        self.answered += other.answered;
        self.errors += other.errors;
        self.lost += other.lost;
        self.mismatches += other.mismatches;
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        self.segments += other.segments;
        self.cached_segments += other.cached_segments;
        self.tokens += other.tokens;
        // Same bounds on both sides, so adding cannot fail; saturate to be safe.
        let _ = self.latency_us.add(&other.latency_us);
        for job in other.slowest {
            self.note_latency(job);
        }
        for m in other.mismatch_examples {
            if self.mismatch_examples.len() < MISMATCH_EXAMPLES {
                self.mismatch_examples.push(m);
            }
        }
    }
}

/// Validated run parameters shared by the tasks.
#[derive(Clone)]
struct Plan {
    corpus: Vec<String>,
    mode: Mode,
    texts_per_job: usize,
    jobs: u64,
    source: String,
    target: String,
    verify_copy: bool,
    /// Sentences per document; 0 sends plain texts.
    document_sentences: usize,
    beam_size: Option<u32>,
    lane: Lane,
    /// With a rate: when job 0 is due, and the gap between jobs.
    schedule: Option<(Instant, Duration)>,
    /// When the run started (set once connected, as `schedule`).
    started: Instant,
}

/// Runs the load and returns the report. Logs nothing to stdout; shows a progress bar
/// on stderr only when stderr is a terminal.
pub async fn run(args: &LoadgenOptions) -> Result<Report, LoadgenError> {
    if args.concurrency == 0 {
        return Err(LoadgenError::Args(
            "--concurrency must be at least 1".into(),
        ));
    }
    if args.texts_per_job == 0 {
        return Err(LoadgenError::Args(
            "--texts-per-job must be at least 1".into(),
        ));
    }
    if args.pool == Some(0) {
        return Err(LoadgenError::Args("--pool must be at least 1".into()));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(LoadgenError::Args(
            "--rate must be a positive number".into(),
        ));
    }
    let corpus = match &args.file {
        None => builtin_sentences(),
        Some(path) => read_corpus(path.clone()).await?,
    };
    let plan = Arc::new(Plan {
        corpus,
        mode: args.mode(),
        texts_per_job: args.texts_per_job,
        jobs: args.jobs,
        source: args.source.clone(),
        target: args.target.clone(),
        verify_copy: args.verify_copy,
        document_sentences: args.document_sentences,
        beam_size: args.beam_size,
        lane: args.lane,
        // Set below, once connected: the schedule starts with the first publish.
        schedule: None,
        started: Instant::now(),
    });
    let timeout = Duration::from_millis(args.timeout_ms);
    let client = Client::connect(
        &args.connect.amqp_url,
        ClientOptions {
            exchange: args.connect.exchange.clone(),
            timeout,
            max_in_flight: args.concurrency,
            connection_name: "translation-worker-loadgen".into(),
            ..ClientOptions::default()
        },
    )
    .await?;
    let progress = progress_bar(args.jobs);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let plan = Arc::new(Plan {
        schedule: args
            .rate
            .map(|rate| (started, Duration::from_secs_f64(1.0 / rate))),
        started,
        ..Plan::clone(&plan)
    });
    let tasks: Vec<_> = (0..args.concurrency.min(args.jobs.max(1) as usize))
        .map(|_| {
            tokio::spawn(drive(
                client.clone(),
                plan.clone(),
                next.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            // A task only ends early by panicking, which is a bug: report it loudly.
            Err(e) => {
                client.close().await;
                return Err(LoadgenError::Task(e.to_string()));
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let ignored_replies = client.stats().ignored_replies;
    client.close().await;
    let per_sec = |n: u64| {
        if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        }
    };
    let h = &total.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency_ms = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            min: ms(h.min()),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    };
    Ok(Report {
        sent: total.answered + total.errors + total.lost,
        answered: total.answered,
        errors: total.errors,
        lost: total.lost,
        mismatches: total.mismatches,
        error_kinds: total.error_kinds,
        segments: total.segments,
        cached_segments: total.cached_segments,
        tokens: total.tokens,
        elapsed_s: elapsed,
        jobs_per_sec: per_sec(total.answered),
        segments_per_sec: per_sec(total.segments),
        tokens_per_sec: per_sec(total.tokens),
        latency_ms,
        concurrency: args.concurrency,
        texts_per_job: args.texts_per_job,
        lane: plan.lane.to_string(),
        mode: plan.mode.to_string(),
        ignored_replies,
        mismatch_examples: total.mismatch_examples,
        slowest: total.slowest,
    })
}

/// One in-flight slot: takes the next job index until all are taken.
async fn drive(
    client: Client,
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    progress: indicatif::ProgressBar,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        let job = next.fetch_add(1, Ordering::Relaxed);
        if job >= plan.jobs {
            return tally;
        }
        if let Some((start, gap)) = plan.schedule {
            // Open loop: job `i` is due at `i` gaps, however the earlier ones fare.
            let due = start + gap.saturating_mul(u32::try_from(job).unwrap_or(u32::MAX));
            tokio::time::sleep_until(due.into()).await;
        }
        let texts = match plan.document_sentences {
            0 => job_texts(&plan.corpus, plan.texts_per_job, plan.mode, job),
            n => job_texts(&plan.corpus, plan.texts_per_job * n, plan.mode, job)
                .chunks(n)
                .map(|c| c.join("\n"))
                .collect(),
        };
        let mut request = TranslateRequest::new(plan.source.as_str(), plan.target.as_str(), texts)
            .with_lane(plan.lane);
        if plan.document_sentences > 0 {
            request = request.with_split(Split::Sentences);
        }
        if let Some(beam) = plan.beam_size {
            request.job.options.beam_size = Some(u64::from(beam));
        }
        let sent = request.job.texts.clone();
        let t = Instant::now();
        let wall = std::time::SystemTime::now();
        let result = client.translate(request).await;
        let latency = t.elapsed();
        match result {
            Ok(reply) => {
                tally.answered += 1;
                tally
                    .latency_us
                    .saturating_record(latency.as_micros().max(1) as u64);
                tally.note_latency(SlowJob {
                    job,
                    sent_at_s: t.duration_since(plan.started).as_secs_f64(),
                    sent_at_unix_ms: wall
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    latency_ms: latency.as_secs_f64() * 1000.0,
                });
                match &reply.segments {
                    // Documents: every sentence is a segment.
                    Some(stats) => {
                        tally.segments += stats.iter().map(|s| s.segments as u64).sum::<u64>();
                        tally.cached_segments += stats.iter().map(|s| s.cached as u64).sum::<u64>();
                    }
                    None => {
                        tally.segments += sent.len() as u64;
                        tally.cached_segments += reply.cached.iter().filter(|c| **c).count() as u64;
                    }
                }
                tally.tokens += sent
                    .iter()
                    .map(|t| t.split_whitespace().count() as u64)
                    .sum::<u64>();
                if plan.verify_copy && reply.translations != sent {
                    tally.mismatches += 1;
                    if tally.mismatch_examples.len() < MISMATCH_EXAMPLES {
                        tally.mismatch_examples.push(Mismatch {
                            job,
                            sent,
                            received: reply.translations,
                        });
                    }
                }
            }
            Err(e) => {
                if matches!(e, ClientError::Timeout(_)) {
                    tally.lost += 1;
                } else {
                    tally.errors += 1;
                    tracing::debug!(job, error = %e, "job failed");
                }
                *tally.error_kinds.entry(e.label().to_owned()).or_default() += 1;
            }
        }
        progress.inc(1);
    }
}

async fn read_corpus(path: PathBuf) -> Result<Vec<String>, LoadgenError> {
    let shown = path.display().to_string();
    // File reading blocks: keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await
        .map_err(|e| LoadgenError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?
        .map_err(|e| LoadgenError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(LoadgenError::File {
            path: shown,
            message: "no non-empty lines".into(),
        });
    }
    Ok(lines)
}

fn progress_bar(jobs: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(jobs);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} jobs ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn corpus() -> Vec<String> {
        ["a b", "c", "d e f"].map(String::from).to_vec()
    }

    #[test]
    fn corpus_mode_cycles() {
        let c = corpus();
        assert_eq!(job_texts(&c, 2, Mode::Corpus, 0), ["a b", "c"]);
        assert_eq!(job_texts(&c, 2, Mode::Corpus, 1), ["d e f", "a b"]);
    }

    #[test]
    fn unique_mode_never_repeats_a_text() {
        let c = corpus();
        let mut seen = HashSet::new();
        for job in 0..500 {
            for run in [1, 2] {
                for t in job_texts(&c, 3, Mode::Unique(run), job) {
                    assert!(seen.insert(t.clone()), "{t} repeated");
                }
            }
        }
    }

    #[test]
    fn pool_mode_repeats_exactly_p_distinct_jobs() {
        let c = corpus();
        let jobs: Vec<_> = (0..40)
            .map(|j| job_texts(&c, 2, Mode::Pool(7), j))
            .collect();
        let distinct: HashSet<_> = jobs.iter().cloned().collect();
        assert_eq!(distinct.len(), 7);
        assert_eq!(jobs[3], jobs[10]);
        // Distinct across the pool even when the corpus is smaller than the pool.
        let texts: HashSet<_> = jobs[..7].iter().flatten().collect();
        assert_eq!(texts.len(), 14);
    }

    #[test]
    fn builtin_corpus_is_distinct_and_short() {
        let s = builtin_sentences();
        assert_eq!(s.len(), 1260);
        assert_eq!(s.iter().collect::<HashSet<_>>().len(), s.len());
        assert!(s
            .iter()
            .all(|t| t.chars().count() < 60 && !t.contains("  ")));
    }

    fn report(lost: u64, errors: u64, mismatches: u64) -> Report {
        Report {
            sent: 10,
            answered: 10 - lost - errors,
            errors,
            lost,
            mismatches,
            error_kinds: BTreeMap::new(),
            segments: 0,
            cached_segments: 0,
            tokens: 0,
            elapsed_s: 1.0,
            jobs_per_sec: 0.0,
            segments_per_sec: 0.0,
            tokens_per_sec: 0.0,
            latency_ms: Latency::default(),
            concurrency: 1,
            texts_per_job: 1,
            lane: "bulk".into(),
            mode: "corpus".into(),
            ignored_replies: 0,
            mismatch_examples: Vec::new(),
            slowest: Vec::new(),
        }
    }

    #[test]
    fn pass_rules() {
        assert!(report(0, 0, 0).passed(false));
        assert!(!report(1, 0, 0).passed(true));
        assert!(!report(0, 0, 1).passed(true));
        assert!(!report(0, 2, 0).passed(false));
        assert!(report(0, 2, 0).passed(true));
    }

    #[test]
    fn the_slowest_jobs_are_kept_slowest_first() {
        let job = |job: u64, latency_ms: f64| SlowJob {
            job,
            sent_at_s: job as f64,
            sent_at_unix_ms: job,
            latency_ms,
        };
        let mut a = Tally::new();
        for (i, ms) in [5.0, 1.0, 9.0, 3.0].into_iter().enumerate() {
            a.note_latency(job(i as u64, ms));
        }
        let mut b = Tally::new();
        for (i, ms) in [7.0, 2.0, 8.0].into_iter().enumerate() {
            b.note_latency(job(10 + i as u64, ms));
        }
        a.merge(b);
        let kept: Vec<u64> = a.slowest.iter().map(|j| j.job).collect();
        assert_eq!(kept, vec![2, 12, 10, 0, 3]);
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::new();
        a.latency_us.record(1000).unwrap();
        a.error_kinds.insert("timeout".into(), 1);
        let mut b = Tally::new();
        b.latency_us.record(3000).unwrap();
        b.error_kinds.insert("timeout".into(), 2);
        b.answered = 4;
        a.merge(b);
        assert_eq!(a.answered, 4);
        assert_eq!(a.error_kinds["timeout"], 3);
        assert_eq!(a.latency_us.len(), 2);
        assert!(a.latency_us.max() >= 3000);
    }
}
