//! `translation-worker gateway`: an HTTP front door to the queue.
//!
//! Each request becomes one job, sent through the [`client`](crate::client) library on
//! one shared broker connection (many calls in flight on it), and is answered when the
//! job's reply arrives:
//!
//! - `GET /translate?q=…&q=…&source=ko&target=en` →
//!   `{"translations": [...], "cached": [...], "model": "…"}`;
//! - `POST /translate`, LibreTranslate-compatible (JSON or form body; `q` a string or an
//!   array) → `{"translatedText": "…"}` or `{"translatedText": ["…", …]}`;
//! - `GET /languages` (LibreTranslate shape) lists the served pairs;
//! - `/healthz` (200 while the broker connection is up, else 503) and `/metrics`.
//!
//! Errors are `{"error": "<message>", "code": "<code>"}` (LibreTranslate clients read
//! `error`): 400 for a bad request or an unserved pair (checked against
//! [`Config::served_pairs`] before publishing, and from the broker's `basic.return`
//! when no worker binds the pair), 413 for too many texts or too large a body (the
//! worker's `too_large` too), 414 for too long a query string, 415 for a body that is
//! neither JSON nor a form, 502 when the worker failed (`internal`), 503 with
//! `Retry-After` when `gateway.max_pending` requests already wait or the broker is
//! down, 504 when no reply came within `gateway.request_timeout_ms` (or the worker
//! answered `deadline_exceeded`).
//!
//! The [`Client`] never reconnects by itself, so a supervisor task owns it: it connects
//! with jittered exponential backoff (`amqp.reconnect_*`), watches the connection and
//! replaces the client when it drops. Requests arriving while there is none get 503.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::jittered;
use crate::client::{Client, ClientError, ClientOptions, TranslateReply, TranslateRequest};
use crate::config::{Config, GatewayConfig};
use crate::http_errors::{ErrorJson, JsonErrors};
use crate::protocol::{ErrorCode, Split};
use crate::telemetry::{Counter, Gauge, Histogram};

/// Errors of the gateway's HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `gateway.listen` could not be bound.
    #[error("cannot listen on {addr} (gateway.listen, TW_GATEWAY__LISTEN): {source}")]
    Bind {
        /// Configured address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("gateway HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The broker refused the gateway's first login: a configuration error (see
    /// [`Gateway::run`]).
    #[error(transparent)]
    Refused(Box<crate::broker::BrokerError>),
}

/// How often the supervisor checks that the broker connection is still up (a call
/// that sees it drop wakes it at once).
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for one connection attempt: a black-holed broker address would
/// otherwise hold the supervisor for the OS's TCP timeout (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for closing a client whose connection is already broken.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Route labels of the metrics; anything else is `other`.
const ROUTES: [&str; 5] = ["/translate", "/languages", "/healthz", "/metrics", "other"];

/// Request durations, seconds: a cache hit is a few ms, a long miss several seconds,
/// the default timeout 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The gateway's metrics, rendered under the prefix `translation_gateway_`.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// Answered requests by (method, route, status).
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    /// Translation requests admitted and waiting for their reply.
    pending: AtomicUsize,
    /// Request durations, one histogram per entry of [`ROUTES`].
    durations: [Histogram; ROUTES.len()],
    /// 1 while the gateway has a working broker connection.
    pub broker_connected: Gauge,
    /// Broker connections made after the first one.
    pub broker_reconnects: Counter,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            pending: AtomicUsize::new(0),
            durations: std::array::from_fn(|_| Histogram::new(DURATION_BUCKETS)),
            broker_connected: Gauge::default(),
            broker_reconnects: Counter::default(),
        }
    }
}

impl GatewayMetrics {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(&'static str, &'static str, u16), u64>> {
        // Single increments: the map stays consistent across a panic elsewhere.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, method: &'static str, route: &'static str, status: u16, took: Duration) {
        *self.lock().entry((method, route, status)).or_default() += 1;
        if let Some(i) = ROUTES.iter().position(|r| *r == route) {
            self.durations[i].observe(took.as_secs_f64());
        }
    }

    /// Requests answered with `status` on `method` `route` (a label of [`ROUTES`]).
    pub fn requests(&self, method: &str, route: &str, status: u16) -> u64 {
        self.lock()
            .iter()
            .filter(|((m, r, s), _)| *m == method && *r == route && *s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Translation requests waiting for their reply now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, max_pending: usize) -> String {
        let p = "translation_gateway";
        let mut o = String::with_capacity(4 * 1024);
        let _ = writeln!(
            o,
            "# HELP {p}_requests_total HTTP requests answered, by method, route and status.\n# TYPE {p}_requests_total counter"
        );
        for ((method, route, status), n) in self.lock().iter() {
            let _ = writeln!(
                o,
                "{p}_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        for (name, help, v) in [
            (
                "pending_requests",
                "Translation requests waiting for their reply.",
                self.pending() as u64,
            ),
            (
                "max_pending_requests",
                "Pending requests beyond which requests are answered 503.",
                max_pending as u64,
            ),
            (
                "broker_connected",
                "1 while the broker connection is up.",
                self.broker_connected.get(),
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} gauge\n{p}_{name} {v}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP {p}_broker_reconnects_total Broker connections after the first.\n# TYPE {p}_broker_reconnects_total counter\n{p}_broker_reconnects_total {}",
            self.broker_reconnects.get()
        );
        let name = format!("{p}_request_duration_seconds");
        let _ = writeln!(
            o,
            "# HELP {name} Time from receiving a request to answering it, by route.\n# TYPE {name} histogram"
        );
        for (route, h) in ROUTES.iter().zip(&self.durations) {
            for (le, c) in h.cumulative() {
                let _ = writeln!(o, "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {c}");
            }
            let _ = writeln!(
                o,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count()
            );
            let _ = writeln!(o, "{name}_sum{{route=\"{route}\"}} {}", h.sum());
            let _ = writeln!(o, "{name}_count{{route=\"{route}\"}} {}", h.count());
        }
        o
    }
}

/// An HTTP error answer: `{"error": message, "code": code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` (503 only).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

/// `GET /translate`'s answer.
#[derive(Serialize)]
struct GetReply {
    translations: Vec<String>,
    cached: Vec<bool>,
    model: String,
}

/// `/healthz`'s answer.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    broker: &'static str,
    pending: usize,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorJson {
            error: &self.message,
            code: self.code,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The HTTP answer to a contract error reply of the worker.
fn rejected_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::UnsupportedLanguagePair => StatusCode::BAD_REQUEST,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // The gateway wrote the job's JSON: the worker refusing it is not the caller's
        // fault, and neither is an engine failure.
        ErrorCode::InvalidJson | ErrorCode::Internal => StatusCode::BAD_GATEWAY,
    }
}

/// The HTTP answer to a failed call.
fn client_error(e: ClientError, retry_after: u64) -> ApiError {
    match e {
        ClientError::Timeout(d) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no reply within {} ms", d.as_millis()),
        ),
        ClientError::Unroutable { routing_key, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_language_pair",
            format!("no worker serves the pair {routing_key}"),
        ),
        ClientError::Rejected { code, message, .. } => {
            ApiError::new(rejected_status(code), code.as_str(), message)
        }
        ClientError::InvalidReply(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "invalid_reply",
            format!("the worker's reply is not valid: {m}"),
        ),
        e @ (ClientError::ConnectionLost
        | ClientError::Closed
        | ClientError::Connect { .. }
        | ClientError::Setup(_)
        | ClientError::Broker { .. }
        | ClientError::Nacked) => {
            ApiError::unavailable("broker_unavailable", e.to_string(), retry_after)
        }
    }
}

/// A translation request as read from HTTP, before validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TextRequest {
    source: Option<String>,
    target: Option<String>,
    texts: Vec<String>,
    /// `q` was an array (LibreTranslate answers an array then).
    many: bool,
}

/// Reads `GET /translate`'s query: repeatable `q`, `source`, `target`; nothing else.
fn parse_query(query: &str) -> Result<TextRequest, ApiError> {
    let mut req = TextRequest {
        many: true,
        ..TextRequest::default()
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*key {
            "q" => {
                req.texts.push(value.into_owned());
                continue;
            }
            "source" => &mut req.source,
            "target" => &mut req.target,
            // Strict, like the wire contract: a misspelt key must not be ignored.
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?} (expected q, source, target)"
                )))
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::bad_request(format!("{key} given twice")));
        }
    }
    Ok(req)
}

/// `q` of a LibreTranslate body: one text or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum LtText {
    One(String),
    Many(Vec<String>),
}

/// A LibreTranslate `POST /translate` JSON body. Other keys (`api_key`,
/// `alternatives`, ...) are accepted and ignored, as LibreTranslate clients send them.
#[derive(Deserialize)]
struct LtBody {
    q: Option<LtText>,
    source: Option<String>,
    target: Option<String>,
    format: Option<String>,
}

/// Reads a LibreTranslate body: a form (`application/x-www-form-urlencoded`; repeated
/// `q` is an array) or JSON (any other type but multipart).
fn parse_lt_body(content_type: &str, body: &[u8]) -> Result<TextRequest, ApiError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (req, format) = match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let mut req = TextRequest::default();
            let mut format = None;
            for (key, value) in form_urlencoded::parse(body) {
                match &*key {
                    "q" => req.texts.push(value.into_owned()),
                    "source" => req.source = Some(value.into_owned()),
                    "target" => req.target = Some(value.into_owned()),
                    "format" => format = Some(value.into_owned()),
                    _ => {}
                }
            }
            req.many = req.texts.len() > 1;
            (req, format)
        }
        m if m.starts_with("multipart/") => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON or application/x-www-form-urlencoded",
            ))
        }
        _ => {
            let body: LtBody = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))?;
            let (texts, many) = match body.q {
                Some(LtText::One(t)) => (vec![t], false),
                Some(LtText::Many(ts)) => (ts, true),
                None => (Vec::new(), false),
            };
            let req = TextRequest {
                source: body.source,
                target: body.target,
                texts,
                many,
            };
            (req, body.format)
        }
    };
    match format.as_deref() {
        None | Some("text") | Some("") => Ok(req),
        Some("html") => Err(ApiError::bad_request(
            "format \"html\" is not supported: only \"text\"",
        )),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown format {other:?}: only \"text\" is supported"
        ))),
    }
}

/// One language of `GET /languages` (LibreTranslate's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Language {
    code: String,
    name: String,
    targets: Vec<String>,
}

/// English names of common language codes; others are named by their code.
fn language_name(code: &str) -> &str {
    match code {
        "ar" => "Arabic",
        "de" => "German",
        "en" => "English",
        "es" => "Spanish",
        "fr" => "French",
        "hi" => "Hindi",
        "id" => "Indonesian",
        "it" => "Italian",
        "ja" => "Japanese",
        "ko" => "Korean",
        "nl" => "Dutch",
        "pl" => "Polish",
        "pt" => "Portuguese",
        "ru" => "Russian",
        "sv" => "Swedish",
        "th" => "Thai",
        "tr" => "Turkish",
        "uk" => "Ukrainian",
        "vi" => "Vietnamese",
        "zh" => "Chinese",
        other => other,
    }
}

/// Every language of `pairs`, in order of first appearance, with the targets it is
/// served to (a language that is only a target has none, but is listed so that
/// clients offer it as a target).
fn languages(pairs: &[(String, String)]) -> Vec<Language> {
    let mut out: Vec<Language> = Vec::new();
    let mut entry = |code: &str| -> usize {
        if let Some(i) = out.iter().position(|l| l.code == code) {
            return i;
        }
        out.push(Language {
            code: code.to_owned(),
            name: language_name(code).to_owned(),
            targets: Vec::new(),
        });
        out.len() - 1
    };
    let mut links = Vec::new();
    for (source, target) in pairs {
        let s = entry(source);
        entry(target);
        links.push((s, target.clone()));
    }
    for (s, target) in links {
        if !out[s].targets.contains(&target) {
            out[s].targets.push(target);
        }
    }
    out
}

/// The metrics label of a request path.
fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .copied()
        .find(|r| *r == path)
        .unwrap_or("other")
}

/// The current broker client, replaced by the supervisor when its connection drops.
#[derive(Default)]
struct Link {
    client: RwLock<Option<Client>>,
    /// Woken by a call that saw the connection drop, so the supervisor re-checks now.
    check: Notify,
}

impl Link {
    fn current(&self) -> Option<Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, client: Option<Client>) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
    }
}

struct AppState {
    cfg: GatewayConfig,
    timeout: Duration,
    pairs: Vec<(String, String)>,
    languages: Vec<Language>,
    link: Link,
    metrics: Arc<GatewayMetrics>,
}

/// An admitted request's place among the pending ones; freed on drop (also when the
/// HTTP client goes away and the handler is dropped mid-call).
struct PendingSlot<'a>(&'a AtomicUsize);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AppState {
    /// Admits one more pending request, or answers 503 when `max_pending` wait already.
    fn admit(&self) -> Result<PendingSlot<'_>, ApiError> {
        let before = self.metrics.pending.fetch_add(1, Ordering::AcqRel);
        // Created before the check, so a refused request gives its count back too.
        let slot = PendingSlot(&self.metrics.pending);
        if before >= self.cfg.max_pending {
            return Err(ApiError::unavailable(
                "overloaded",
                format!(
                    "{} requests are already waiting for replies; retry later",
                    self.cfg.max_pending
                ),
                self.cfg.retry_after_secs,
            ));
        }
        Ok(slot)
    }

    /// Validates `req`, sends it as one job and waits for the reply.
    async fn translate(&self, req: TextRequest) -> Result<TranslateReply, ApiError> {
        let missing = |what: &str| {
            ApiError::bad_request(format!("Invalid request: missing {what} parameter"))
        };
        let source = req
            .source
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("source"))?;
        let target = req
            .target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| missing("target"))?;
        if source == "auto" {
            return Err(ApiError::bad_request(
                "source \"auto\" is not supported: give the source language",
            ));
        }
        if req.texts.is_empty() {
            return Err(missing("q"));
        }
        if req.texts.len() > self.cfg.max_texts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "{} texts, the limit is {}",
                    req.texts.len(),
                    self.cfg.max_texts
                ),
            ));
        }
        if !self.pairs.iter().any(|(s, t)| *s == source && *t == target) {
            let served: Vec<String> = self.pairs.iter().map(|(s, t)| format!("{s}-{t}")).collect();
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_language_pair",
                format!(
                    "{source}-{target} is not served (served: {})",
                    served.join(", ")
                ),
            ));
        }
        let _slot = self.admit()?;
        let retry = self.cfg.retry_after_secs;
        let client = self.link.current().ok_or_else(|| {
            ApiError::unavailable("broker_unavailable", "not connected to the broker", retry)
        })?;
        // HTTP callers send paragraphs and whole documents: cut them into sentences so
        // each is cached on its own and long texts are not truncated by the model.
        let request = TranslateRequest::new(source, target, req.texts)
            .with_timeout(self.timeout)
            .with_split(Split::Sentences);
        let reply = client.translate(request).await.map_err(|e| {
            if matches!(e, ClientError::ConnectionLost) {
                self.link.check.notify_one();
            }
            client_error(e, retry)
        })?;
        // LibreTranslate's answers have no per-text errors: a text the worker could not
        // translate fails the request, as it would on LibreTranslate.
        if let Some((i, e)) = reply
            .errors
            .iter()
            .enumerate()
            .find_map(|(i, e)| e.as_ref().map(|e| (i, e)))
        {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.code.as_str(),
                format!("text {i} could not be translated: {}", e.message),
            ));
        }
        Ok(reply)
    }
}

async fn get_translate(
    State(s): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<GetReply>, ApiError> {
    let query = query.unwrap_or_default();
    if query.len() > s.cfg.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "too_large",
            format!(
                "the query string has {} bytes, the limit is {} (POST a body instead)",
                query.len(),
                s.cfg.max_body_bytes
            ),
        ));
    }
    let reply = s.translate(parse_query(&query)?).await?;
    Ok(Json(GetReply {
        translations: reply.translations,
        cached: reply.cached,
        model: reply.model,
    }))
}

async fn post_translate(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} bytes", s.cfg.max_body_bytes),
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let req = parse_lt_body(content_type, &body)?;
    let many = req.many;
    let mut reply = s.translate(req).await?;
    Ok(Json(if many {
        json!({ "translatedText": reply.translations })
    } else {
        json!({ "translatedText": reply.translations.pop().unwrap_or_default() })
    }))
}

async fn get_languages(State(s): State<Arc<AppState>>) -> Json<Vec<Language>> {
    Json(s.languages.clone())
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let up = s.link.current().is_some_and(|c| c.is_connected());
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if up { "ok" } else { "unavailable" },
        broker: if up { "up" } else { "down" },
        pending: s.metrics.pending(),
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(s.cfg.max_pending),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (GET/POST /translate, /languages, /healthz, /metrics)",
    )
}

/// Counts every answer by method, route and status, and times it.
async fn observe(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        _ => "other",
    };
    let route = route_label(req.uri().path());
    let response = next.run(req).await;
    s.metrics
        .record(method, route, response.status().as_u16(), start.elapsed());
    response
}

/// A known route asked with a method it does not take (axum adds the `Allow` header).
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here: /translate and /languages take GET and POST, /healthz and /metrics GET"),
    )
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/translate", get(get_translate).post(post_translate))
        // LibreTranslate answers /languages on POST too.
        .route("/languages", get(get_languages).post(get_languages))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Keeps one connected [`Client`] in `state.link`: connects with backoff, watches the
/// connection, and replaces the client when it drops. Closes it on `stop`.
async fn supervise(
    state: Arc<AppState>,
    amqp: crate::config::AmqpConfig,
    options: ClientOptions,
    (initial, max): (Duration, Duration),
    stop: CancellationToken,
) -> Option<crate::broker::BrokerError> {
    let metrics = &state.metrics;
    let mut backoff = initial;
    let mut connected_before = false;
    loop {
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, Client::connect_amqp(&amqp, options.clone())) => r,
            _ = stop.cancelled() => return None,
        };
        match attempt {
            Ok(Ok(client)) => {
                if connected_before {
                    metrics.broker_reconnects.inc();
                }
                connected_before = true;
                backoff = initial;
                tracing::info!(
                    reply_queue = client.reply_queue(),
                    "gateway connected to the broker"
                );
                state.link.set(Some(client.clone()));
                metrics.broker_connected.set(1);
                let stopping = loop {
                    tokio::select! {
                        _ = stop.cancelled() => break true,
                        _ = state.link.check.notified() => {}
                        _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    }
                    if !client.is_connected() {
                        break false;
                    }
                };
                state.link.set(None);
                metrics.broker_connected.set(0);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
                if stopping {
                    return None;
                }
                tracing::warn!("gateway lost the broker connection; reconnecting");
            }
            Ok(Err(ClientError::Setup(e))) if e.is_refused() && !connected_before => {
                tracing::error!(error = %e, "the broker refused the gateway's login; stopping");
                return Some(*e);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "gateway cannot connect to the broker"),
            Err(_) => tracing::warn!(
                timeout_s = CONNECT_TIMEOUT.as_secs(),
                "gateway: connecting to the broker timed out"
            ),
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// The gateway's listener: accepted connections are wrapped in [`JsonErrors`], so the
/// errors hyper answers itself carry the same JSON body as the handlers' errors.
struct Listener {
    inner: tokio::net::TcpListener,
    metrics: Arc<GatewayMetrics>,
}

impl axum::serve::Listener for Listener {
    type Io = JsonErrors<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let metrics = self.metrics.clone();
        let on_rewrite = Box::new(move |status| {
            metrics.record("other", "other", status, Duration::ZERO);
        });
        (JsonErrors::new(io, on_rewrite), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The HTTP gateway: a bound listener and its broker supervisor.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    supervisor_stop: CancellationToken,
    supervisor: tokio::task::JoinHandle<Option<crate::broker::BrokerError>>,
    drain: Duration,
}

impl Gateway {
    /// Binds `gateway.listen` (port 0 picks a free one) and starts connecting to the
    /// broker (`amqp.url`, `amqp.exchange`) in the background: until connected,
    /// `/healthz` and translations answer 503. Must be called on a Tokio runtime.
    pub async fn bind(config: &Config) -> Result<Self, GatewayError> {
        let mut cfg = config.gateway.clone();
        cfg.max_texts = config.gateway_max_texts();
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        let pairs = config.served_pairs();
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let options = ClientOptions {
            exchange: config.amqp.exchange.clone(),
            timeout,
            // Admission already caps calls at max_pending: the client's own limit must
            // not queue admitted calls behind it.
            max_in_flight: cfg.max_pending,
            connection_name: "translation-worker-gateway".into(),
            ..ClientOptions::default()
        };
        let state = Arc::new(AppState {
            languages: languages(&pairs),
            pairs,
            timeout,
            cfg,
            link: Link::default(),
            metrics: Arc::new(GatewayMetrics::default()),
        });
        let supervisor_stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            state.clone(),
            config.amqp.clone(),
            options,
            (
                Duration::from_millis(config.amqp.reconnect_initial_ms),
                Duration::from_millis(config.amqp.reconnect_max_ms),
            ),
            supervisor_stop.clone(),
        ));
        Ok(Self {
            listener,
            state,
            supervisor_stop,
            supervisor,
            drain: Duration::from_secs(config.shutdown.drain_timeout_secs),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.state.metrics.clone()
    }

    /// A handle that outlives [`Gateway::run`] taking `self`: metrics and the current
    /// broker client.
    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            state: self.state.clone(),
        }
    }

    /// Serves until `shutdown` fires, then stops accepting connections, lets requests
    /// in flight finish (up to `shutdown.drain_timeout_secs`) and closes the broker
    /// connection.
    ///
    /// A refused login (`ACCESS_REFUSED`, or `NOT_ALLOWED` for the vhost) before the
    /// first successful connection is almost always a wrong `amqp.url`: the gateway
    /// stops serving and returns [`GatewayError::Refused`] (the binary exits non-zero)
    /// rather than answering 503 for ever. Later refusals are retried like outages.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let Gateway {
            listener,
            state,
            supervisor_stop,
            mut supervisor,
            drain,
        } = self;
        let app = router(state.clone());
        let stop = shutdown.clone();
        let listener = Listener {
            inner: listener,
            metrics: state.metrics.clone(),
        };
        let serve = async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        };
        let result = tokio::select! {
            r = serve => r.map_err(GatewayError::Serve),
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(
                    pending = state.metrics.pending(),
                    "gateway drain deadline passed; closing with requests in flight"
                );
                Ok(())
            }
            done = &mut supervisor => {
                // The supervisor only returns early on a refused first login.
                return match done {
                    Ok(Some(refused)) => Err(GatewayError::Refused(Box::new(refused))),
                    _ => Ok(()),
                };
            }
        };
        supervisor_stop.cancel();
        let _ = supervisor.await;
        result
    }
}

/// A view of a running gateway (see [`Gateway::handle`]).
#[derive(Clone)]
pub struct GatewayHandle {
    state: Arc<AppState>,
}

impl GatewayHandle {
    /// The gateway's metrics.
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.state.metrics.clone()
    }

    /// The supervisor's broker client while one is connected. Closing it makes the
    /// supervisor connect a new one (how the tests drill a lost connection).
    pub fn client(&self) -> Option<Client> {
        self.state.link.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn query_takes_repeated_q_and_refuses_unknown_keys() {
        let r = parse_query("q=%ED%95%9C&q=a+b&source=ko&target=en").unwrap();
        assert_eq!(r.texts, ["한", "a b"]);
        assert_eq!(r.source.as_deref(), Some("ko"));
        assert_eq!(r.target.as_deref(), Some("en"));
        assert!(r.many);
        let e = parse_query("q=x&sorce=ko").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("sorce"), "{}", e.message);
        let e = parse_query("q=x&source=ko&source=ja").unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        assert!(parse_query("").unwrap().texts.is_empty());
    }

    #[test]
    fn libretranslate_bodies_json_and_form() {
        let r = parse_lt_body(
            "application/json",
            br#"{"q":"x","source":"ko","target":"en","format":"text","api_key":""}"#,
        )
        .unwrap();
        assert_eq!(
            (r.texts.as_slice(), r.many),
            (&["x".to_string()][..], false)
        );
        let r = parse_lt_body("", br#"{"q":["a","b"],"source":"ko","target":"en"}"#).unwrap();
        assert_eq!((r.texts.len(), r.many), (2, true));
        let r = parse_lt_body(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"q=%EC%95%88&source=ko&target=en&api_key=k",
        )
        .unwrap();
        assert_eq!(
            (r.texts.as_slice(), r.many),
            (&["안".to_string()][..], false)
        );
        let r = parse_lt_body("application/x-www-form-urlencoded", b"q=a&q=b").unwrap();
        assert!(r.many);

        let e = parse_lt_body("application/json", br#"{"q":"x","format":"html"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("html"));
        let e = parse_lt_body("application/json", b"not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_lt_body("application/json", br#"{"q":3}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_lt_body("multipart/form-data; boundary=x", b"").unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn languages_list_sources_with_targets_and_bare_targets() {
        let l = languages(&pairs(&[
            ("ko", "en"),
            ("ja", "en"),
            ("ko", "ja"),
            ("ko", "en"),
        ]));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!([
                {"code": "ko", "name": "Korean", "targets": ["en", "ja"]},
                {"code": "en", "name": "English", "targets": []},
                {"code": "ja", "name": "Japanese", "targets": ["en"]},
            ])
        );
        assert_eq!(languages(&pairs(&[("xx", "yy")]))[0].name, "xx");
    }

    #[test]
    fn client_errors_map_to_statuses() {
        let status = |e| client_error(e, 3).status;
        assert_eq!(
            status(ClientError::Timeout(Duration::from_secs(1))),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(ClientError::Unroutable {
                exchange: "x".into(),
                routing_key: "ko-ja".into(),
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
            }),
            StatusCode::BAD_REQUEST
        );
        let e = client_error(ClientError::ConnectionLost, 3);
        assert_eq!(
            (e.status, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Some(3))
        );
        for (code, want) in [
            (ErrorCode::InvalidRequest, StatusCode::BAD_REQUEST),
            (ErrorCode::UnsupportedLanguagePair, StatusCode::BAD_REQUEST),
            (ErrorCode::TooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            (ErrorCode::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (ErrorCode::Internal, StatusCode::BAD_GATEWAY),
            (ErrorCode::InvalidJson, StatusCode::BAD_GATEWAY),
        ] {
            let e = client_error(
                ClientError::Rejected {
                    code,
                    message: "m".into(),
                    id: None,
                },
                1,
            );
            assert_eq!((e.status, e.code), (want, code.as_str()), "{code}");
        }
    }

    #[test]
    fn errors_render_libretranslate_shape_with_retry_after() {
        let r = ApiError::unavailable("overloaded", "busy", 7).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = ApiError::bad_request("nope").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn gateway_keys_come_from_the_environment_and_are_validated() {
        let env = |vars: &[(&str, &str)]| {
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = Config::from_sources(
            "[gateway]\nmax_pending = 8\n",
            None,
            env(&[
                ("TW_GATEWAY__LISTEN", "127.0.0.1:18080"),
                ("TW_GATEWAY__REQUEST_TIMEOUT_MS", "1500"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gateway.listen, "127.0.0.1:18080");
        assert_eq!(c.gateway.request_timeout_ms, 1500);
        assert_eq!(c.gateway.max_pending, 8);
        for (var, value, key) in [
            ("TW_GATEWAY__LISTEN", "localhost", "gateway.listen"),
            ("TW_GATEWAY__MAX_PENDING", "0", "gateway.max_pending"),
            (
                "TW_GATEWAY__REQUEST_TIMEOUT_MS",
                "0",
                "gateway.request_timeout_ms",
            ),
            ("TW_GATEWAY__MAX_BODY_BYTES", "10", "gateway.max_body_bytes"),
            ("TW_GATEWAY__MAX_TEXTS", "129", "gateway.max_texts"),
            (
                "TW_GATEWAY__RETRY_AFTER_SECS",
                "0",
                "gateway.retry_after_secs",
            ),
        ] {
            let e = Config::from_sources("", None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn metrics_count_by_route_and_render() {
        let m = GatewayMetrics::default();
        m.record("GET", "/translate", 200, Duration::from_millis(3));
        m.record("GET", "/translate", 200, Duration::from_millis(4));
        m.record("POST", "/translate", 503, Duration::from_millis(1));
        assert_eq!(m.requests("GET", "/translate", 200), 2);
        assert_eq!(m.requests("POST", "/translate", 200), 0);
        let text = m.render(10);
        assert!(text.contains(
            "translation_gateway_requests_total{method=\"GET\",route=\"/translate\",status=\"200\"} 2"
        ));
        assert!(text.contains("translation_gateway_max_pending_requests 10"));
        assert!(text.contains(
            "translation_gateway_request_duration_seconds_count{route=\"/translate\"} 3"
        ));
        assert_eq!(route_label("/translate"), "/translate");
        assert_eq!(route_label("/translate/x"), "other");
    }
}
