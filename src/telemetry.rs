//! Logging set-up and the worker's metrics (lock-free counters and histograms, rendered
//! in the Prometheus text format).

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::LogFormat;
use crate::protocol::ErrorCode;

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Levels when `RUST_LOG` is not set. lapin's I/O loop is off: it logs every failed
/// connection attempt at ERROR as "Exponential backoff attempts exhausted, aborting
/// recovery" (its own reconnection is disabled here, so that fires on the first
/// failure), which reads as "gave up" while the worker keeps retrying. Every such
/// failure reaches the worker as an error, which it logs with the (redacted) URL and
/// what it does next.
const DEFAULT_LOG_FILTER: &str = "info,lapin::io_loop=off";

/// Installs the global `tracing` subscriber: JSON lines or human-readable text, levels
/// from `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
pub fn init_logging(format: LogFormat) -> Result<(), TelemetryError> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let res = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        // Colour codes only for a terminal: in a file or a pipe they are noise.
        builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
    };
    res.map_err(|e| TelemetryError::Subscriber(e.to_string()))
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the value (state gauges: 0 or 1).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// What the build and the loaded model are, for `translation_worker_build_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version.
    pub version: &'static str,
    /// Model id served.
    pub model: String,
    /// CTranslate2 CPU backend compiled in (`dnnl`, `ruy`, `cuda`).
    pub backend: &'static str,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Source tokens per segment each model reads (comma-separated, in model order):
    /// the model's own position limit unless configured lower.
    pub max_input_length: String,
}

/// The CTranslate2 backend this binary was built with.
pub const BACKEND: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "dnnl") {
    "dnnl"
} else if cfg!(feature = "ruy") {
    "ruy"
} else {
    "default"
};

/// Readiness as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// Model loaded and batcher running.
    pub model_loaded: bool,
    /// AMQP connection and channels open.
    pub broker_connected: bool,
    /// A consumer is registered on the job queue (false while draining).
    pub consuming: bool,
    /// Cache configured at all.
    pub cache_enabled: bool,
    /// Last Redis call succeeded (reported, not required: the cache is optional).
    pub redis_up: bool,
}

impl Readiness {
    /// Ready to take jobs: model, broker and consumer, but not Redis.
    pub fn ready(&self) -> bool {
        self.model_loaded && self.broker_connected && self.consuming
    }
}

/// A histogram with fixed upper bounds (cumulative buckets rendered as Prometheus does).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in millionths of the unit, so an atomic integer can hold it.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds; `+Inf` is implicit).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Observations `<= bound` for each bound (cumulative).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        self.bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.cumulative() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(out, "{name}_sum {}", self.sum());
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const TOKEN_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Everything the worker counts. One instance per worker, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    /// Jobs answered `ok`.
    pub jobs_ok: Counter,
    /// Jobs answered with an error, by code (index = position in [`ErrorCode::ALL`]).
    pub jobs_error: [Counter; 6],
    /// Jobs currently being processed.
    pub jobs_in_flight: Gauge,
    /// Segments served from the cache.
    pub segments_cache_hit: Counter,
    /// Segments that went to the engine (or were deduplicated onto one that did).
    pub segments_cache_miss: Counter,
    /// Segments merged onto an identical queued one instead of being translated again.
    pub segments_deduplicated: Counter,
    /// Texts of `ok` replies answered with a per-text error instead of a translation.
    pub texts_failed: Counter,
    /// Texts the model read only the start of (longer than `max_input_length`).
    pub texts_truncated: Counter,
    /// Redis calls that failed or timed out.
    pub cache_errors: Counter,
    /// Redis calls skipped while the breaker was open.
    pub cache_skipped: Counter,
    /// Cached values that were foreign or corrupt (treated as misses).
    pub cache_corrupt: Counter,
    /// Translations written to the cache.
    pub cache_stores: Counter,
    /// Engine calls that failed.
    pub engine_errors: Counter,
    /// Broker (re)connections after the first.
    pub broker_reconnects: Counter,
    /// Source tokens of the texts sent to the engine (the work itself).
    pub batch_real_tokens: Counter,
    /// Padded source tokens sent to the engine (texts × longest, per batch): over
    /// `batch_real_tokens`, what the batcher's length grouping wastes.
    pub batch_padded_tokens: Counter,
    /// 1 while the model is loaded and the batcher runs.
    pub model_loaded: Gauge,
    /// 1 while the AMQP connection is open.
    pub broker_connected: Gauge,
    /// 1 while a consumer is registered on the job queue.
    pub consuming: Gauge,
    /// 1 when the cache is configured.
    pub cache_enabled: Gauge,
    /// 1 after a successful Redis call, 0 after a failed one.
    pub redis_up: Gauge,
    /// Set once the model is loaded.
    pub build_info: std::sync::OnceLock<BuildInfo>,
    /// Texts per engine batch.
    pub batch_size: Histogram,
    /// Padded tokens (texts × longest source) per engine batch.
    pub batch_tokens: Histogram,
    /// Seconds a segment waited in the batcher before its batch started.
    pub batch_wait_seconds: Histogram,
    /// Seconds one engine batch took (translate + decode).
    pub inference_seconds: Histogram,
    /// Seconds from receiving a job to acknowledging it.
    pub job_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            jobs_ok: Counter::default(),
            jobs_error: Default::default(),
            jobs_in_flight: Gauge::default(),
            segments_cache_hit: Counter::default(),
            segments_cache_miss: Counter::default(),
            segments_deduplicated: Counter::default(),
            texts_failed: Counter::default(),
            texts_truncated: Counter::default(),
            cache_errors: Counter::default(),
            cache_skipped: Counter::default(),
            cache_corrupt: Counter::default(),
            cache_stores: Counter::default(),
            engine_errors: Counter::default(),
            broker_reconnects: Counter::default(),
            batch_real_tokens: Counter::default(),
            batch_padded_tokens: Counter::default(),
            model_loaded: Gauge::default(),
            broker_connected: Gauge::default(),
            consuming: Gauge::default(),
            cache_enabled: Gauge::default(),
            redis_up: Gauge::default(),
            build_info: std::sync::OnceLock::new(),
            batch_size: Histogram::new(SIZE_BUCKETS),
            batch_tokens: Histogram::new(TOKEN_BUCKETS),
            batch_wait_seconds: Histogram::new(SECONDS_BUCKETS),
            inference_seconds: Histogram::new(SECONDS_BUCKETS),
            job_seconds: Histogram::new(SECONDS_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts one job that ended with `code`.
    pub fn job_error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.jobs_error[i].inc();
        }
    }

    /// The worker's readiness, from its state gauges.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            model_loaded: self.model_loaded.get() == 1,
            broker_connected: self.broker_connected.get() == 1,
            consuming: self.consuming.get() == 1,
            cache_enabled: self.cache_enabled.get() == 1,
            redis_up: self.redis_up.get() == 1,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8 * 1024);
        let p = "translation_worker";
        if let Some(b) = self.build_info.get() {
            let _ = writeln!(
                o,
                "# HELP {p}_build_info Build and model of this worker (always 1).\n# TYPE {p}_build_info gauge\n{p}_build_info{{version=\"{}\",model=\"{}\",backend=\"{}\",device=\"{}\",max_input_length=\"{}\"}} 1",
                b.version,
                escape_label(&b.model),
                b.backend,
                escape_label(&b.device),
                escape_label(&b.max_input_length)
            );
        }
        let ready = self.readiness().ready();
        for (name, help, v) in [
            (
                "ready",
                "1 when the worker takes jobs (model, broker, consumer).",
                u64::from(ready),
            ),
            (
                "model_loaded",
                "1 while the model is loaded.",
                self.model_loaded.get(),
            ),
            (
                "broker_connected",
                "1 while the broker connection is open.",
                self.broker_connected.get(),
            ),
            (
                "consuming",
                "1 while consuming the job queue.",
                self.consuming.get(),
            ),
            (
                "cache_enabled",
                "1 when the Redis cache is configured.",
                self.cache_enabled.get(),
            ),
            (
                "redis_up",
                "1 after a successful Redis call (a job's, or the PING sent at start and every 5 s), 0 after a failed one.",
                self.redis_up.get(),
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} gauge\n{p}_{name} {v}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP {p}_jobs_total Jobs answered, by outcome (ok or error code).\n# TYPE {p}_jobs_total counter"
        );
        let _ = writeln!(o, "{p}_jobs_total{{outcome=\"ok\"}} {}", self.jobs_ok.get());
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let _ = writeln!(
                o,
                "{p}_jobs_total{{outcome=\"{code}\"}} {}",
                self.jobs_error[i].get()
            );
        }
        let _ = writeln!(
            o,
            "# HELP {p}_jobs_in_flight Jobs being processed.\n# TYPE {p}_jobs_in_flight gauge\n{p}_jobs_in_flight {}",
            self.jobs_in_flight.get()
        );
        let _ = writeln!(
            o,
            "# HELP {p}_segments_total Texts by cache result.\n# TYPE {p}_segments_total counter\n{p}_segments_total{{cache=\"hit\"}} {}\n{p}_segments_total{{cache=\"miss\"}} {}",
            self.segments_cache_hit.get(),
            self.segments_cache_miss.get()
        );
        for (name, help, c) in [
            (
                "segments_deduplicated_total",
                "Texts merged onto an identical queued text.",
                &self.segments_deduplicated,
            ),
            (
                "texts_failed_total",
                "Texts answered with a per-text error in an ok reply.",
                &self.texts_failed,
            ),
            (
                "texts_truncated_total",
                "Texts longer than the model reads, translated from their start.",
                &self.texts_truncated,
            ),
            (
                "cache_errors_total",
                "Redis calls that failed or timed out.",
                &self.cache_errors,
            ),
            (
                "cache_skipped_total",
                "Redis calls skipped while the circuit breaker was open.",
                &self.cache_skipped,
            ),
            (
                "cache_corrupt_total",
                "Cached values that were foreign or corrupt.",
                &self.cache_corrupt,
            ),
            (
                "cache_stores_total",
                "Translations written to the cache.",
                &self.cache_stores,
            ),
            (
                "engine_errors_total",
                "Engine calls that failed.",
                &self.engine_errors,
            ),
            (
                "broker_reconnects_total",
                "Broker reconnections after the first connection.",
                &self.broker_reconnects,
            ),
            (
                "batch_real_tokens_total",
                "Source tokens of the texts sent to the engine.",
                &self.batch_real_tokens,
            ),
            (
                "batch_padded_tokens_total",
                "Padded source tokens sent to the engine (texts x longest, per batch).",
                &self.batch_padded_tokens,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter\n{p}_{name} {}",
                c.get()
            );
        }
        self.batch_size.render(
            &mut o,
            &format!("{p}_batch_size"),
            "Texts per engine batch.",
        );
        self.batch_tokens.render(
            &mut o,
            &format!("{p}_batch_tokens"),
            "Padded source tokens per engine batch.",
        );
        self.batch_wait_seconds.render(
            &mut o,
            &format!("{p}_batch_wait_seconds"),
            "Time a text waited in the batcher.",
        );
        self.inference_seconds.render(
            &mut o,
            &format!("{p}_inference_seconds"),
            "Time of one engine batch.",
        );
        self.job_seconds.render(
            &mut o,
            &format!("{p}_job_duration_seconds"),
            "Time from receiving a job to acknowledging it.",
        );
        o
    }
}

/// Escapes a Prometheus label value (backslash, quote, newline).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        assert_eq!(h.cumulative(), vec![(1.0, 1), (10.0, 2)]);
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 55.5).abs() < 1e-6);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.jobs_ok.inc();
        m.job_error(ErrorCode::TooLarge);
        m.batch_size.observe(3.0);
        let text = m.render();
        assert!(text.contains("translation_worker_jobs_total{outcome=\"ok\"} 1"));
        assert!(text.contains("translation_worker_jobs_total{outcome=\"too_large\"} 1"));
        assert!(text.contains("translation_worker_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("translation_worker_batch_size_count 1"));
        assert!(text.contains("translation_worker_ready 0"));
        assert!(
            !text.contains("build_info"),
            "no build info before the model loads"
        );
    }

    #[test]
    fn readiness_needs_model_broker_and_consumer_but_not_redis() {
        let m = Metrics::default();
        assert!(!m.readiness().ready());
        m.model_loaded.set(1);
        m.broker_connected.set(1);
        assert!(!m.readiness().ready());
        m.consuming.set(1);
        assert!(m.readiness().ready());
        m.redis_up.set(0);
        assert!(m.readiness().ready());
        m.build_info
            .set(BuildInfo {
                version: "1.2.3",
                model: "a\"b".into(),
                backend: BACKEND,
                device: "cpu".into(),
                max_input_length: "512".into(),
            })
            .unwrap();
        let text = m.render();
        assert!(text.contains("translation_worker_ready 1"));
        assert!(text.contains(r#"max_input_length="512""#), "{text}");
        assert!(text.contains(r#"model="a\"b""#), "{text}");
    }
}
