//! The gateway's metrics, kept by `prometheus-client` on a registry of the gateway's
//! own and rendered under the prefix `translation_gateway_` (names, labels and buckets
//! are what `k8s/components/monitoring` and `docs/gateway.md` name).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;

use crate::telemetry::{self, Counter, Gauge};

/// Route labels of the metrics; anything else is `other`, so that probing random
/// paths cannot grow the number of series.
pub(super) const ROUTES: [&str; 10] = [
    "/translate",
    "/languages",
    "/healthz",
    "/metrics",
    "/health",
    "/frontend/settings",
    "/detect",
    "/translate_file",
    "/download_file",
    "other",
];

/// Request durations, seconds: a cache hit is a few ms, a long miss several seconds,
/// the default timeout 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The metrics label of a request path.
pub(super) fn route_label(path: &str) -> &'static str {
    if path.starts_with("/download_file/") {
        return "/download_file";
    }
    ROUTES
        .iter()
        .copied()
        .find(|r| *r == path)
        .unwrap_or("other")
}

/// Labels of `translation_gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `GET`, `POST` or `other`.
    method: &'static str,
    /// One of [`ROUTES`].
    route: &'static str,
    status: u16,
}

/// The label of `translation_gateway_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    /// One of [`ROUTES`].
    route: &'static str,
}

/// The label of `translation_gateway_files_translated_total`: the file's extension.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The label of the reject counters: why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Builds each route's duration histogram.
type NewHistogram = fn() -> PromHistogram;

fn duration_histogram() -> PromHistogram {
    PromHistogram::new(DURATION_BUCKETS.iter().copied())
}

/// The gateway's metrics, rendered under the prefix `translation_gateway_`.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Every metric below, as `/metrics` exposes them.
    registry: Registry,
    /// Answered requests by (method, route, status).
    requests: Family<RequestLabels, PromCounter>,
    /// Request durations by route.
    durations: Family<RouteLabel, PromHistogram, NewHistogram>,
    /// Translation requests admitted and waiting for their reply.
    pending: Gauge,
    /// 1 while the gateway has a working broker connection.
    pub broker_connected: Gauge,
    /// Broker connections made after the first one.
    pub broker_reconnects: Counter,
    /// Files translated, by extension (a fixed set: `FileKind`'s).
    files_translated: Family<KindLabel, PromCounter>,
    /// Bytes of the files translated (as uploaded).
    file_bytes: Counter,
    /// Files refused or failed, by reason (a fixed set, named in `files.rs`).
    file_rejects: Family<ReasonLabel, PromCounter>,
    /// API keys refused: `missing` or `invalid`.
    key_rejects: Family<ReasonLabel, PromCounter>,
    /// Requests answered 429 by the rate limit.
    pub(super) rate_limited: Counter,
    /// Requests let through unchecked because Redis was unavailable (fail-open).
    pub(super) rate_limit_errors: Counter,
}

impl GatewayMetrics {
    /// The metrics of a gateway that admits at most `max_pending` requests at once
    /// (exposed as `translation_gateway_max_pending_requests`).
    pub(super) fn new(max_pending: usize) -> Self {
        // Registered in the order `/metrics` has always listed them. Help texts have
        // no final period: the registry adds one.
        let mut r = Registry::with_prefix("translation_gateway");
        let requests = Family::<RequestLabels, PromCounter>::default();
        r.register(
            "requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let pending = Gauge::registered(
            &mut r,
            "pending_requests",
            "Translation requests waiting for their reply",
        );
        r.register(
            "max_pending_requests",
            "Pending requests beyond which requests are answered 503",
            ConstGauge::new(max_pending as u64),
        );
        let broker_connected = Gauge::registered(
            &mut r,
            "broker_connected",
            "1 while the broker connection is up",
        );
        let broker_reconnects = Counter::registered(
            &mut r,
            "broker_reconnects",
            "Broker connections after the first",
        );
        let durations: Family<RouteLabel, PromHistogram, NewHistogram> =
            Family::new_with_constructor(duration_histogram);
        r.register(
            "request_duration_seconds",
            "Time from receiving a request to answering it, by route",
            durations.clone(),
        );
        // Every route's histogram exists (empty) from the first scrape.
        for route in ROUTES {
            drop(durations.get_or_create(&RouteLabel { route }));
        }
        let files_translated = Family::<KindLabel, PromCounter>::default();
        r.register(
            "files_translated",
            "Files translated by /translate_file, by extension",
            files_translated.clone(),
        );
        let file_bytes = Counter::registered(
            &mut r,
            "file_bytes",
            "Bytes of the files translated by /translate_file, as uploaded",
        );
        let file_rejects = Family::<ReasonLabel, PromCounter>::default();
        r.register(
            "file_rejects",
            "Files refused or failed by /translate_file, by reason",
            file_rejects.clone(),
        );
        let key_rejects = Family::<ReasonLabel, PromCounter>::default();
        r.register(
            "api_key_rejects",
            "Requests refused for their API key (missing or invalid)",
            key_rejects.clone(),
        );
        let rate_limited = Counter::registered(
            &mut r,
            "rate_limited",
            "Requests answered 429 by the per-minute rate limit",
        );
        let rate_limit_errors = Counter::registered(
            &mut r,
            "rate_limit_errors",
            "Requests let through unchecked because Redis was unavailable",
        );
        Self {
            registry: r,
            requests,
            durations,
            pending,
            broker_connected,
            broker_reconnects,
            files_translated,
            file_bytes,
            file_rejects,
            key_rejects,
            rate_limited,
            rate_limit_errors,
        }
    }

    /// Counts one answer and its duration. `route` is one of [`ROUTES`].
    pub(super) fn record(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        // Only the known routes: the label set stays bounded whatever the caller.
        if ROUTES.contains(&route) {
            self.durations
                .get_or_create(&RouteLabel { route })
                .observe(took.as_secs_f64());
        }
    }

    /// Requests answered with `status` on `method` `route` (a label of [`ROUTES`]).
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        // Read without `get_or_create`: asking must not add a series to `/metrics`.
        let Some(method) = ["GET", "POST", "other"].into_iter().find(|m| *m == method) else {
            return 0;
        };
        let Some(route) = ROUTES.into_iter().find(|r| *r == route) else {
            return 0;
        };
        self.requests
            .get(&RequestLabels {
                method,
                route,
                status,
            })
            .map_or(0, |c| c.get())
    }

    /// Counts one file translated: its extension (`.txt`, ...) and size.
    pub(super) fn file_translated(&self, extension: &'static str, bytes: usize) {
        let kind = extension.trim_start_matches('.');
        self.files_translated
            .get_or_create(&KindLabel { kind })
            .inc();
        self.file_bytes.add(bytes as u64);
    }

    /// Counts one file refused or failed for `reason`.
    pub(super) fn file_rejected(&self, reason: &'static str) {
        self.file_rejects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one request refused for its API key (`missing` or `invalid`).
    pub(super) fn key_rejected(&self, reason: &'static str) {
        self.key_rejects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Files refused or failed for `reason` so far.
    pub fn file_rejects(&self, reason: &str) -> u64 {
        self.file_rejects
            .get(&ReasonLabel {
                reason: match reason {
                    "too_large" => "too_large",
                    "unsupported" => "unsupported",
                    "corrupt" => "corrupt",
                    "invalid_request" => "invalid_request",
                    "store_unavailable" => "store_unavailable",
                    "translation_failed" => "translation_failed",
                    _ => return 0,
                },
            })
            .map_or(0, |c| c.get())
    }

    /// Requests answered 429 by the rate limit so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.get()
    }

    /// Translation requests waiting for their reply now.
    pub fn pending(&self) -> usize {
        usize::try_from(self.pending.get()).unwrap_or(usize::MAX)
    }

    /// Counts one more pending request: its slot (which counts it until dropped) and
    /// how many were pending before it, in one atomic step so that concurrent
    /// requests cannot both see room for one.
    pub(super) fn add_pending(&self) -> (PendingSlot<'_>, usize) {
        let before = self.pending.inc_and_get_previous();
        (
            PendingSlot(&self.pending),
            usize::try_from(before).unwrap_or(usize::MAX),
        )
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        telemetry::render(&self.registry)
    }
}

/// An admitted request's place among the pending ones; freed on drop (also when the
/// HTTP client goes away and the handler is dropped mid-call).
pub(super) struct PendingSlot<'a>(&'a Gauge);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_by_route_and_render() {
        let m = GatewayMetrics::new(10);
        m.record("GET", "/translate", 200, Duration::from_millis(3));
        m.record("GET", "/translate", 200, Duration::from_millis(4));
        m.record("POST", "/translate", 503, Duration::from_millis(1));
        assert_eq!(m.requests("GET", "/translate", 200), 2);
        assert_eq!(m.requests("POST", "/translate", 200), 0);
        assert_eq!(m.requests("PUT", "/nowhere", 200), 0);
        let text = m.render();
        assert!(text.contains(
            "translation_gateway_requests_total{method=\"GET\",route=\"/translate\",status=\"200\"} 2"
        ));
        assert!(
            !text.contains("method=\"POST\",route=\"/translate\",status=\"200\"")
                && !text.contains("PUT"),
            "reading a count adds no series: {text}"
        );
        assert!(text.contains("translation_gateway_max_pending_requests 10"));
        assert!(text.contains(
            "translation_gateway_request_duration_seconds_count{route=\"/translate\"} 3"
        ));
        assert_eq!(route_label("/translate"), "/translate");
        assert_eq!(route_label("/translate/x"), "other");
    }

    #[test]
    fn families_keep_their_names_types_and_buckets() {
        let m = GatewayMetrics::new(4);
        let text = m.render();
        for (name, kind) in [
            ("pending_requests", "gauge"),
            ("max_pending_requests", "gauge"),
            ("broker_connected", "gauge"),
            ("broker_reconnects_total", "counter"),
            ("request_duration_seconds", "histogram"),
        ] {
            let line = format!("# TYPE translation_gateway_{name} {kind}\n");
            assert!(text.contains(&line), "{line:?} missing:\n{text}");
        }
        // No request yet: the family has no series, and so no `# TYPE` line either.
        assert!(!text.contains("requests_total"), "{text}");
        m.record("other", "other", 414, Duration::ZERO);
        assert!(m
            .render()
            .contains("# TYPE translation_gateway_requests_total counter\n"));
        for route in ROUTES {
            let les: Vec<String> = text
                .lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix(&format!(
                        "translation_gateway_request_duration_seconds_bucket{{route=\"{route}\",le=\""
                    ))?;
                    Some(rest.split('"').next()?.to_owned())
                })
                .collect();
            let want: Vec<String> = DURATION_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()])
                .collect();
            assert_eq!(les, want, "{route}");
        }
        assert!(!text.contains(".."), "{text}");
    }

    #[test]
    fn pending_slots_count_until_dropped() {
        let m = GatewayMetrics::new(2);
        let (a, before) = m.add_pending();
        assert_eq!((before, m.pending()), (0, 1));
        let (b, before) = m.add_pending();
        assert_eq!((before, m.pending()), (1, 2));
        drop(a);
        drop(b);
        assert_eq!(m.pending(), 0);
    }
}
