//! The worker's metrics, kept by the `prometheus-client` crate and exposed in the
//! Prometheus text format under the prefix `translation_worker_`.
//!
//! Every [`Metrics`] owns its [`Registry`] (there is no global one), so several
//! workers in one process, as the tests run them, never share a series. The rest of
//! the crate counts through the small [`Counter`], [`Gauge`] and [`Histogram`] handles,
//! which also read values back (tests, readiness, the shutdown log): the crate's own
//! types return the previous value from `inc`/`set`, which would change every call
//! site, and its histogram has no read-back outside its `test-util` feature.
//!
//! Names, types, label names and values and histogram buckets are part of the
//! operations contract: the alerts in `k8s/components/monitoring`, the dashboards'
//! queries, `docs/operations.md` and the tests read them. Counters are registered
//! without their `_total` suffix, which the encoder appends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use translation_client::wire::ErrorCode;

use super::readiness::{BuildInfo, Readiness};

/// `Content-Type` of the `/metrics` answers: the Prometheus text format, version
/// 0.0.4 (what every Prometheus scrapes, and what `/metrics` always served).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The Prometheus text exposition of everything in `registry`.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // A String never refuses a write and the metrics here encode infallibly; should
    // one fail anyway, the scrape gets what was written before it rather than a panic
    // in the HTTP handler.
    if let Err(e) = prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    out
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(PromCounter);

impl Counter {
    /// A counter that `registry` exposes as `<prefix>_<name>_total` (`name` without
    /// `_total`; `help` without its final period, which the registry adds).
    pub(crate) fn registered(registry: &mut Registry, name: &str, help: &str) -> Self {
        let counter = Self::default();
        registry.register(name, help, counter.0.clone());
        counter
    }

    /// The counter of one label set of a registered family.
    fn of<S>(family: &Family<S, PromCounter>, labels: &S) -> Self
    where
        S: Clone + std::hash::Hash + Eq,
    {
        // The family keeps its own handle: they share the value.
        Self(family.get_or_create_owned(labels))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge that goes up and down (state gauges hold 0 or 1). Clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Gauge(PromGauge<u64, AtomicU64>);

impl Gauge {
    /// A gauge that `registry` exposes as `<prefix>_<name>`.
    pub(crate) fn registered(registry: &mut Registry, name: &str, help: &str) -> Self {
        let gauge = Self::default();
        registry.register(name, help, gauge.0.clone());
        gauge
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds one and returns the value before: admission control counts and checks
    /// in one atomic step.
    pub(crate) fn inc_and_get_previous(&self) -> u64 {
        self.0.inc()
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.dec();
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    /// Sets the value (state gauges: 0 or 1).
    pub fn set(&self, v: u64) {
        self.0.set(v);
    }
}

/// A histogram with fixed upper bounds (`+Inf` is implicit).
#[derive(Debug)]
pub struct Histogram {
    /// What the registry exposes.
    inner: PromHistogram,
    /// Number of observations, for [`Histogram::count`].
    count: AtomicU64,
    /// Sum of observations as `f64` bits, for [`Histogram::sum`].
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending) that `registry` exposes as
    /// `<prefix>_<name>_bucket`, `_sum` and `_count`.
    pub(crate) fn registered(
        registry: &mut Registry,
        name: &str,
        help: &str,
        bounds: &[f64],
    ) -> Self {
        let inner = PromHistogram::new(bounds.iter().copied());
        registry.register(name, help, inner.clone());
        Self {
            inner,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// The histogram of one label set of a registered family.
    fn of<S>(family: &Family<S, PromHistogram, fn() -> PromHistogram>, labels: &S) -> Self
    where
        S: Clone + std::hash::Hash + Eq,
    {
        Self {
            // The family keeps its own handle: they share the buckets.
            inner: family.get_or_create_owned(labels),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        self.inner.observe(v);
        self.count.fetch_add(1, Ordering::Relaxed);
        // The closure always returns Some: the update cannot fail.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// Texts per engine batch (`batch.max_texts` is at most 256).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Padded source tokens per engine batch.
const TOKEN_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
];
/// Waits and durations: from a cache hit's half millisecond to a long document.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label of `translation_worker_jobs_total`: `ok` or the error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The label of the per-lane families: `bulk` or `interactive`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: &'static str,
}

/// A histogram over [`SECONDS_BUCKETS`], for families.
fn seconds_histogram() -> PromHistogram {
    PromHistogram::new(SECONDS_BUCKETS.iter().copied())
}

/// The label of `translation_worker_segments_total`: `hit` or `miss`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// The state gauges, read together (clones share their values).
#[derive(Debug, Clone)]
struct StateGauges {
    model_loaded: Gauge,
    broker_connected: Gauge,
    consuming: Gauge,
    cache_enabled: Gauge,
    redis_up: Gauge,
}

impl StateGauges {
    fn readiness(&self) -> Readiness {
        Readiness {
            model_loaded: self.model_loaded.get() == 1,
            broker_connected: self.broker_connected.get() == 1,
            consuming: self.consuming.get() == 1,
            cache_enabled: self.cache_enabled.get() == 1,
            redis_up: self.redis_up.get() == 1,
        }
    }
}

/// `translation_worker_ready`, computed from the state gauges at each scrape, so it
/// can never disagree with `/readyz`.
#[derive(Debug)]
struct ReadyGauge(StateGauges);

impl EncodeMetric for ReadyGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&u64::from(self.0.readiness().ready()))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// `translation_worker_build_info`: always 1, its labels say what runs. Absent (no
/// `# HELP` either) until the model is loaded.
#[derive(Debug)]
struct BuildInfoGauge(Arc<OnceLock<BuildInfo>>);

impl EncodeMetric for BuildInfoGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let Some(b) = self.0.get() else {
            return Ok(());
        };
        let labels = [
            ("version", b.version),
            ("model", b.model.as_str()),
            ("backend", b.backend),
            ("device", b.device.as_str()),
            ("max_input_length", b.max_input_length.as_str()),
        ];
        encoder.encode_family(&labels)?.encode_gauge(&1u64)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.0.get().is_none()
    }
}

/// Everything the worker counts. One instance per worker, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    /// Every metric below, as `/metrics` exposes them.
    registry: Registry,
    /// The state gauges again, for [`Metrics::readiness`].
    state: StateGauges,
    /// Jobs answered `ok`.
    pub jobs_ok: Counter,
    /// Jobs answered with an error, by code (index = position in [`ErrorCode::ALL`]).
    pub jobs_error: [Counter; ErrorCode::ALL.len()],
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
    /// Set once the model is loaded; exposed from then on.
    pub build_info: Arc<OnceLock<BuildInfo>>,
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
    /// Jobs received, per lane (index: [`crate::translate::lane_index`]).
    pub jobs_received: [Counter; 2],
    /// Seconds a text waited in the batcher, per lane.
    pub lane_wait_seconds: [Histogram; 2],
    /// Seconds from receiving a job to acknowledging it, per lane.
    pub lane_job_seconds: [Histogram; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        // Registered in the order `/metrics` has always listed them. Help texts have
        // no final period: the registry adds one.
        let mut r = Registry::with_prefix("translation_worker");
        let build_info = Arc::new(OnceLock::new());
        r.register(
            "build_info",
            "Build and model of this worker (always 1)",
            BuildInfoGauge(build_info.clone()),
        );
        // The state gauges are created before they are registered, so `ready` (which
        // reads them) comes first, as it always has.
        let state = StateGauges {
            model_loaded: Gauge::default(),
            broker_connected: Gauge::default(),
            consuming: Gauge::default(),
            cache_enabled: Gauge::default(),
            redis_up: Gauge::default(),
        };
        r.register(
            "ready",
            "1 when the worker takes jobs (model, broker, consumer)",
            ReadyGauge(state.clone()),
        );
        for (name, help, gauge) in [
            (
                "model_loaded",
                "1 while the model is loaded",
                &state.model_loaded,
            ),
            (
                "broker_connected",
                "1 while the broker connection is open",
                &state.broker_connected,
            ),
            (
                "consuming",
                "1 while consuming the job queue",
                &state.consuming,
            ),
            (
                "cache_enabled",
                "1 when the Redis cache is configured",
                &state.cache_enabled,
            ),
            (
                "redis_up",
                "1 after a successful Redis call (a job's, or the PING sent at start and every 5 s), 0 after a failed one",
                &state.redis_up,
            ),
        ] {
            r.register(name, help, gauge.0.clone());
        }

        // Every outcome and cache result is created up front, so each series exists
        // (at 0) from the first scrape: `rate()` and the alerts need no `or vector(0)`.
        let jobs = Family::<OutcomeLabel, PromCounter>::default();
        r.register(
            "jobs",
            "Jobs answered, by outcome (ok or error code)",
            jobs.clone(),
        );
        let jobs_ok = Counter::of(&jobs, &OutcomeLabel { outcome: "ok" });
        let jobs_error = ErrorCode::ALL.map(|code| {
            Counter::of(
                &jobs,
                &OutcomeLabel {
                    outcome: code.as_str(),
                },
            )
        });
        let jobs_in_flight = Gauge::registered(&mut r, "jobs_in_flight", "Jobs being processed");
        let segments = Family::<CacheLabel, PromCounter>::default();
        r.register("segments", "Texts by cache result", segments.clone());
        let segments_cache_hit = Counter::of(&segments, &CacheLabel { cache: "hit" });
        let segments_cache_miss = Counter::of(&segments, &CacheLabel { cache: "miss" });

        let mut counter = |name: &str, help: &str| Counter::registered(&mut r, name, help);
        let segments_deduplicated = counter(
            "segments_deduplicated",
            "Texts merged onto an identical queued text",
        );
        let texts_failed = counter(
            "texts_failed",
            "Texts answered with a per-text error in an ok reply",
        );
        let texts_truncated = counter(
            "texts_truncated",
            "Texts longer than the model reads, translated from their start",
        );
        let cache_errors = counter("cache_errors", "Redis calls that failed or timed out");
        let cache_skipped = counter(
            "cache_skipped",
            "Redis calls skipped while the circuit breaker was open",
        );
        let cache_corrupt = counter(
            "cache_corrupt",
            "Cached values that were foreign or corrupt",
        );
        let cache_stores = counter("cache_stores", "Translations written to the cache");
        let engine_errors = counter("engine_errors", "Engine calls that failed");
        let broker_reconnects = counter(
            "broker_reconnects",
            "Broker reconnections after the first connection",
        );
        let batch_real_tokens = counter(
            "batch_real_tokens",
            "Source tokens of the texts sent to the engine",
        );
        let batch_padded_tokens = counter(
            "batch_padded_tokens",
            "Padded source tokens sent to the engine (texts x longest, per batch)",
        );

        let mut histogram = |name: &str, help: &str, bounds: &[f64]| {
            Histogram::registered(&mut r, name, help, bounds)
        };
        let batch_size = histogram("batch_size", "Texts per engine batch", SIZE_BUCKETS);
        let batch_tokens = histogram(
            "batch_tokens",
            "Padded source tokens per engine batch",
            TOKEN_BUCKETS,
        );
        let batch_wait_seconds = histogram(
            "batch_wait_seconds",
            "Time a text waited in the batcher",
            SECONDS_BUCKETS,
        );
        let inference_seconds = histogram(
            "inference_seconds",
            "Time of one engine batch",
            SECONDS_BUCKETS,
        );
        let job_seconds = histogram(
            "job_duration_seconds",
            "Time from receiving a job to acknowledging it",
            SECONDS_BUCKETS,
        );

        // Per lane, in lane_index order: bulk, interactive.
        let lanes = translation_client::Lane::ALL.map(|l| LaneLabel { lane: l.as_str() });
        let received = Family::<LaneLabel, PromCounter>::default();
        r.register(
            "jobs_received",
            "Jobs received, by lane (bulk or interactive)",
            received.clone(),
        );
        let jobs_received = lanes.clone().map(|l| Counter::of(&received, &l));
        let lane_wait =
            Family::<LaneLabel, PromHistogram, fn() -> PromHistogram>::new_with_constructor(
                seconds_histogram,
            );
        r.register(
            "lane_wait_seconds",
            "Time a text waited in the batcher, by lane",
            lane_wait.clone(),
        );
        let lane_wait_seconds = lanes.clone().map(|l| Histogram::of(&lane_wait, &l));
        let lane_job =
            Family::<LaneLabel, PromHistogram, fn() -> PromHistogram>::new_with_constructor(
                seconds_histogram,
            );
        r.register(
            "lane_job_duration_seconds",
            "Time from receiving a job to acknowledging it, by lane",
            lane_job.clone(),
        );
        let lane_job_seconds = lanes.map(|l| Histogram::of(&lane_job, &l));

        Self {
            registry: r,
            jobs_received,
            lane_wait_seconds,
            lane_job_seconds,
            jobs_ok,
            jobs_error,
            jobs_in_flight,
            segments_cache_hit,
            segments_cache_miss,
            segments_deduplicated,
            texts_failed,
            texts_truncated,
            cache_errors,
            cache_skipped,
            cache_corrupt,
            cache_stores,
            engine_errors,
            broker_reconnects,
            batch_real_tokens,
            batch_padded_tokens,
            model_loaded: state.model_loaded.clone(),
            broker_connected: state.broker_connected.clone(),
            consuming: state.consuming.clone(),
            cache_enabled: state.cache_enabled.clone(),
            redis_up: state.redis_up.clone(),
            state,
            build_info,
            batch_size,
            batch_tokens,
            batch_wait_seconds,
            inference_seconds,
            job_seconds,
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
        self.state.readiness()
    }

    /// The Prometheus text exposition of every metric (served as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::BACKEND;

    /// The value of the sample line `series value`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_read_back() {
        let m = Metrics::default();
        for v in [0.5, 5.0, 50.0, 500.0] {
            m.batch_size.observe(v);
        }
        let text = m.render();
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("translation_worker_batch_size_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("1"), Some(1.0), "{text}");
        assert_eq!(bucket("4"), Some(1.0));
        assert_eq!(bucket("8"), Some(2.0));
        assert_eq!(bucket("64"), Some(3.0));
        assert_eq!(bucket("256"), Some(3.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
        assert_eq!(
            sample(&text, "translation_worker_batch_size_count"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "translation_worker_batch_size_sum"),
            Some(555.5)
        );
        assert_eq!(m.batch_size.count(), 4);
        assert!((m.batch_size.sum() - 555.5).abs() < 1e-9);
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

    /// The exposed families, their types, labels and buckets are what the alerts,
    /// dashboards and docs name.
    #[test]
    fn every_family_keeps_its_name_type_labels_and_buckets() {
        let m = Metrics::default();
        let text = m.render();
        for (name, kind) in [
            ("ready", "gauge"),
            ("model_loaded", "gauge"),
            ("broker_connected", "gauge"),
            ("consuming", "gauge"),
            ("cache_enabled", "gauge"),
            ("redis_up", "gauge"),
            ("jobs_total", "counter"),
            ("jobs_in_flight", "gauge"),
            ("segments_total", "counter"),
            ("segments_deduplicated_total", "counter"),
            ("texts_failed_total", "counter"),
            ("texts_truncated_total", "counter"),
            ("cache_errors_total", "counter"),
            ("cache_skipped_total", "counter"),
            ("cache_corrupt_total", "counter"),
            ("cache_stores_total", "counter"),
            ("engine_errors_total", "counter"),
            ("broker_reconnects_total", "counter"),
            ("batch_real_tokens_total", "counter"),
            ("batch_padded_tokens_total", "counter"),
            ("batch_size", "histogram"),
            ("batch_tokens", "histogram"),
            ("batch_wait_seconds", "histogram"),
            ("inference_seconds", "histogram"),
            ("job_duration_seconds", "histogram"),
            ("jobs_received_total", "counter"),
            ("lane_wait_seconds", "histogram"),
            ("lane_job_duration_seconds", "histogram"),
        ] {
            let line = format!("# TYPE translation_worker_{name} {kind}\n");
            assert!(text.contains(&line), "{line:?} missing:\n{text}");
        }
        // Every outcome and cache result exists from the start.
        for outcome in std::iter::once("ok").chain(ErrorCode::ALL.map(ErrorCode::as_str)) {
            let series = format!("translation_worker_jobs_total{{outcome=\"{outcome}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for cache in ["hit", "miss"] {
            let series = format!("translation_worker_segments_total{{cache=\"{cache}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        // Every lane exists from the start, with the seconds buckets.
        for lane in ["bulk", "interactive"] {
            let series = format!("translation_worker_jobs_received_total{{lane=\"{lane}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
            for name in ["lane_wait_seconds", "lane_job_duration_seconds"] {
                let prefix = format!("translation_worker_{name}_bucket{{lane=\"{lane}\",le=\"");
                let les: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix)?.split('"').next())
                    .collect();
                assert_eq!(
                    les.len(),
                    SECONDS_BUCKETS.len() + 1,
                    "{name} {lane}: {les:?}"
                );
                assert_eq!(les.last(), Some(&"+Inf"), "{name} {lane}");
            }
        }
        for (name, bounds) in [
            ("batch_size", SIZE_BUCKETS),
            ("batch_tokens", TOKEN_BUCKETS),
            ("batch_wait_seconds", SECONDS_BUCKETS),
            ("inference_seconds", SECONDS_BUCKETS),
            ("job_duration_seconds", SECONDS_BUCKETS),
        ] {
            let les: Vec<&str> = text
                .lines()
                .filter_map(|l| {
                    l.strip_prefix(&format!("translation_worker_{name}_bucket{{le=\""))?
                        .split('"')
                        .next()
                })
                .collect();
            let want: Vec<String> = bounds
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .collect();
            assert_eq!(les, want, "{name}");
        }
        // Help texts end with exactly one period.
        assert!(!text.contains(".."), "{text}");
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
        assert!(
            text.contains("# TYPE translation_worker_build_info gauge\n"),
            "{text}"
        );
    }

    #[test]
    fn each_worker_counts_on_its_own_registry() {
        let a = Metrics::default();
        let b = Metrics::default();
        a.jobs_ok.add(3);
        a.consuming.set(1);
        assert_eq!(b.jobs_ok.get(), 0);
        assert_eq!(
            sample(&a.render(), "translation_worker_jobs_total{outcome=\"ok\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&b.render(), "translation_worker_jobs_total{outcome=\"ok\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&b.render(), "translation_worker_consuming"),
            Some(0.0)
        );
    }
}
