//! The gateway's routes and handlers: `/translate` (GET, and LibreTranslate's POST;
//! `source: "auto"` detects each text's language), LibreTranslate's `/detect`,
//! `/languages`, `/healthz`, `/metrics`; admission control (`gateway.max_pending`) and
//! the metrics middleware.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use translation_client::wire::{pair_key, Format, JobOptions, Split};
use translation_client::{ClientError, TranslateReply, TranslateRequest};

use super::detect::{detectable_text, Detection, Detector};
use super::error::{client_error, ApiError};
use super::libretranslate::{
    language_name, parse_detect_body, parse_lt_body, parse_query, FrontendSettings, Language,
    TextRequest,
};
use super::link::Link;
use super::metrics::{route_label, GatewayMetrics, PendingSlot};
use crate::config::GatewayConfig;
use crate::telemetry;

/// `GET /translate`'s answer.
#[derive(Serialize)]
struct GetReply {
    translations: Vec<String>,
    cached: Vec<bool>,
    model: String,
    /// Per text, with `source=auto` only (LibreTranslate's name).
    #[serde(rename = "detectedLanguage", skip_serializing_if = "Option::is_none")]
    detected_language: Option<Vec<Detection>>,
}

/// A translation's answer, whatever the source.
struct Outcome {
    translations: Vec<String>,
    cached: Vec<bool>,
    model: String,
    /// Each text's detected language, when the source was `auto`.
    detected: Option<Vec<Detection>>,
    /// Each text's alternatives, when asked for (LibreTranslate's `alternatives`).
    alternatives: Option<Vec<Vec<String>>>,
}

/// `Outcome::alternatives` of a request for `asked` alternatives of `n` texts: what
/// the worker gave, else (HTML, which has none, as on LibreTranslate) none per text;
/// `None` when none were asked for.
fn alternatives_of(
    asked: u32,
    n: usize,
    given: Option<Vec<Vec<String>>>,
) -> Option<Vec<Vec<String>>> {
    (asked > 0).then(|| given.unwrap_or_else(|| vec![Vec::new(); n]))
}

/// `/healthz`'s answer.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    broker: &'static str,
    pending: usize,
}

/// What every handler shares.
pub(super) struct AppState {
    /// `gateway.*`, with `max_texts` already resolved against the models.
    pub(super) cfg: GatewayConfig,
    /// How long a call waits for its reply (`gateway.request_timeout_ms`).
    pub(super) timeout: Duration,
    /// The served (source, target) pairs, checked before publishing.
    pub(super) pairs: Vec<(String, String)>,
    /// `GET /languages`'s answer, computed once from `pairs`.
    pub(super) languages: Vec<Language>,
    /// `GET /frontend/settings`'s answer, computed once.
    pub(super) frontend: FrontendSettings,
    /// Language identification over the served languages (`/detect`, `source: "auto"`).
    pub(super) detector: Arc<Detector>,
    /// The broker client, kept connected by [`super::link::supervise`].
    pub(super) link: Arc<Link>,
    /// Counted by the handlers and the middleware; also the listener's rewrites.
    pub(super) metrics: Arc<GatewayMetrics>,
    /// Where translated files are kept (Redis); `None` when file translation is off.
    pub(super) files: Option<Arc<super::store::Store>>,
    /// API keys and the rate limit.
    pub(super) access: super::keys::Access,
}

impl AppState {
    /// Admits one more pending request, or answers 503 when `max_pending` wait already.
    pub(super) fn admit(&self) -> Result<PendingSlot<'_>, ApiError> {
        // The slot exists before the check, so a refused request gives its count back
        // too.
        let (slot, before) = self.metrics.add_pending();
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
    pub(super) async fn translate(&self, req: TextRequest) -> Result<TranslateReply, ApiError> {
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
        self.check_texts(&req.texts)?;
        if !self.serves(&source, &target) {
            let served: Vec<String> = self.pairs.iter().map(|(s, t)| pair_key(s, t)).collect();
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
            .with_split(Split::Sentences)
            .with_format(req.format);
        // The wire contract gives alternatives of one-sentence texts, and none for
        // HTML (refused there; LibreTranslate answers none either).
        let request = if req.alternatives > 0 && req.format == Format::Text {
            request.with_options(JobOptions {
                alternatives: Some(u64::from(req.alternatives)),
                ..JobOptions::default()
            })
        } else {
            request
        };
        let reply = client.translate(request).await.map_err(|e| {
            if matches!(e, ClientError::ConnectionLost) {
                self.link.connection_lost();
            }
            if matches!(e, ClientError::Nacked) {
                self.link.publish_nacked();
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

    /// Refuses no text (LibreTranslate's message) and more than `max_texts` (413).
    fn check_texts(&self, texts: &[String]) -> Result<(), ApiError> {
        if texts.is_empty() {
            return Err(ApiError::bad_request(
                "Invalid request: missing q parameter",
            ));
        }
        if texts.len() > self.cfg.max_texts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("{} texts, the limit is {}", texts.len(), self.cfg.max_texts),
            ));
        }
        Ok(())
    }

    /// Whether the pair `source`-`target` is served.
    fn serves(&self, source: &str, target: &str) -> bool {
        self.pairs.iter().any(|(s, t)| s == source && t == target)
    }

    /// Runs `f` on the detector off the async runtime (detection is CPU work, and the
    /// first call loads the models).
    pub(super) async fn on_detector<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Detector) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let detector = self.detector.clone();
        tokio::task::spawn_blocking(move || f(&detector))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("language detection failed: {e}"),
                )
            })
    }

    /// Translates `req` from its source, or from each text's detected language when
    /// the source is `auto`.
    async fn run(&self, req: TextRequest) -> Result<Outcome, ApiError> {
        if req.source.as_deref() == Some("auto") {
            return self.translate_auto(req).await;
        }
        let (asked, n) = (req.alternatives, req.texts.len());
        let reply = self.translate(req).await?;
        Ok(Outcome {
            translations: reply.translations,
            cached: reply.cached,
            model: reply.model,
            detected: None,
            alternatives: alternatives_of(asked, n, reply.alternatives),
        })
    }

    /// `source: "auto"`: detects each text's language among the served ones, sends one
    /// job per detected source (concurrently) and puts the answers back in order. A
    /// text already in the target language comes back as it is (nothing to
    /// translate); one with nothing to tell by (digits, emoji) goes with the
    /// first source served to the target, at confidence 0. A text whose language has
    /// no pair to the target fails the request, as on LibreTranslate.
    async fn translate_auto(&self, mut req: TextRequest) -> Result<Outcome, ApiError> {
        let target = req
            .target
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::bad_request("Invalid request: missing target parameter"))?;
        self.check_texts(&req.texts)?;
        if !self.pairs.iter().any(|(s, t)| *s == target || *t == target) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_language_pair",
                format!("{target} is not supported"),
            ));
        }
        let texts = std::mem::take(&mut req.texts);
        let format = req.format;
        let (texts, mut detected) = {
            // Detection is bounded like a translation: it holds a pending slot.
            let _slot = self.admit()?;
            self.on_detector(move |d| {
                // HTML: the page's text, not its markup (issue 16).
                let detected: Vec<Detection> = texts
                    .iter()
                    .map(|t| d.best(&detectable_text(t, format)))
                    .collect();
                (texts, detected)
            })
            .await?
        };
        let fallback = self
            .pairs
            .iter()
            .find(|(_, t)| *t == target)
            .map(|(s, _)| s.clone());
        // (source, indices of its texts), in order of first appearance.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, d) in detected.iter_mut().enumerate() {
            if d.confidence == 0.0 {
                if let Some(source) = &fallback {
                    d.language.clone_from(source);
                }
            }
            if d.language == target {
                continue;
            }
            if !self.serves(&d.language, &target) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_language_pair",
                    format!(
                        "{} ({target}) is not available as a target language from {} ({})",
                        language_name(&target),
                        language_name(&d.language),
                        d.language
                    ),
                ));
            }
            match groups.iter_mut().find(|(s, _)| *s == d.language) {
                Some((_, indices)) => indices.push(i),
                None => groups.push((d.language.clone(), vec![i])),
            }
        }
        let jobs = groups.iter().map(|(source, indices)| {
            // The request's other fields (format, ...) carry over to each job.
            let job = TextRequest {
                source: Some(source.clone()),
                texts: indices.iter().map(|&i| texts[i].clone()).collect(),
                many: true,
                ..req.clone()
            };
            self.translate(job)
        });
        let replies = futures_util::future::try_join_all(jobs).await?;
        let mut translations = texts;
        let mut cached = vec![false; translations.len()];
        // A text already in the target language has none.
        let mut alternatives = vec![Vec::new(); translations.len()];
        let mut model = String::new();
        for ((_, indices), reply) in groups.iter().zip(replies) {
            for (&i, a) in indices.iter().zip(reply.alternatives.into_iter().flatten()) {
                alternatives[i] = a;
            }
            if reply.translations.len() != indices.len() {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "invalid_reply",
                    format!(
                        "the worker answered {} translations for {} texts",
                        reply.translations.len(),
                        indices.len()
                    ),
                ));
            }
            for (k, (&i, text)) in indices.iter().zip(reply.translations).enumerate() {
                translations[i] = text;
                cached[i] = reply.cached.get(k).copied().unwrap_or(false);
            }
            if model.is_empty() {
                model = reply.model;
            }
        }
        Ok(Outcome {
            translations,
            cached,
            model,
            detected: Some(detected),
            alternatives: (req.alternatives > 0).then_some(alternatives),
        })
    }
}

/// The answer to a body axum could not read: 413 over `max_body_bytes`, else 400.
fn body_error(rejection: BytesRejection, max_body_bytes: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {max_body_bytes} bytes"),
        )
    } else {
        ApiError::bad_request(rejection.body_text())
    }
}

/// The `Content-Type` of a request, or "".
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
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
    let reply = s.run(parse_query(&query)?).await?;
    Ok(Json(GetReply {
        translations: reply.translations,
        cached: reply.cached,
        model: reply.model,
        detected_language: reply.detected,
    }))
}

async fn post_translate(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|r| body_error(r, s.cfg.max_body_bytes))?;
    let req = parse_lt_body(content_type(&headers), &body)?;
    let many = req.many;
    let mut reply = s.run(req).await?;
    let mut answer = if many {
        json!({ "translatedText": reply.translations })
    } else {
        json!({ "translatedText": reply.translations.pop().unwrap_or_default() })
    };
    // LibreTranslate: an object for one text, one per text for a list.
    if let Some(mut detected) = reply.detected {
        answer["detectedLanguage"] = if many {
            json!(detected)
        } else {
            json!(detected.pop())
        };
    }
    // LibreTranslate: present when asked for; a list for one text, one per text for
    // a list.
    if let Some(mut alternatives) = reply.alternatives {
        answer["alternatives"] = if many {
            json!(alternatives)
        } else {
            json!(alternatives.pop().unwrap_or_default())
        };
    }
    Ok(Json(answer))
}

/// LibreTranslate's `POST /detect`: `q` (a string, or a list taken as one text) →
/// the candidate languages among the served ones, most likely first, confidence 0–100.
async fn post_detect(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Detection>>, ApiError> {
    let body = body.map_err(|r| body_error(r, s.cfg.max_body_bytes))?;
    let (texts, many) = parse_detect_body(content_type(&headers), &body)?;
    if !many && texts.iter().all(String::is_empty) {
        // LibreTranslate refuses an empty `q` as a missing one.
        return Err(ApiError::bad_request(
            "Invalid request: missing q parameter",
        ));
    }
    s.check_texts(&texts)?;
    let _slot = s.admit()?;
    let found = s
        .on_detector(move |d| {
            if many {
                d.detect_all(&texts)
            } else {
                d.detect(texts.first().map_or("", String::as_str))
            }
        })
        .await?;
    Ok(Json(found))
}

async fn get_languages(State(s): State<Arc<AppState>>) -> Json<Vec<Language>> {
    Json(s.languages.clone())
}

async fn get_frontend_settings(State(s): State<Arc<AppState>>) -> Json<FrontendSettings> {
    Json(s.frontend.clone())
}

/// LibreTranslate's `GET /health`: `{"status": "ok"}` while the gateway can reach the
/// workers (its broker connection is up); otherwise a 503 with `Retry-After` and the
/// usual error body, as for a translation then.
async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.link.current().is_some_and(|c| c.is_connected()) {
        Json(serde_json::json!({ "status": "ok" })).into_response()
    } else {
        ApiError::unavailable(
            "broker_unavailable",
            "not connected to the broker",
            s.cfg.retry_after_secs,
        )
        .into_response()
    }
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
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route (GET/POST /translate, POST /detect, /languages, /health, /frontend/settings, /healthz, /metrics)",
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
        format!("{method} is not allowed here: /translate and /languages take GET and POST, /detect POST, /health, /frontend/settings, /healthz and /metrics GET"),
    )
}

/// The gateway's routes over `state`, with the body limit and the metrics middleware.
pub(super) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/translate", get(get_translate).post(post_translate))
        // LibreTranslate answers GET /detect with 405.
        .route("/detect", post(post_detect))
        // LibreTranslate answers /languages on POST too.
        .route("/languages", get(get_languages).post(get_languages))
        .route("/healthz", get(healthz))
        // LibreTranslate's own health check and UI settings, read by its clients.
        .route("/health", get(health))
        .route("/frontend/settings", get(get_frontend_settings))
        .route("/metrics", get(metrics_text))
        // LibreTranslate's file translation (src/gateway/files.rs): its own body limit.
        .route(
            "/translate_file",
            post(super::files::post_translate_file).layer(DefaultBodyLimit::max(
                state
                    .cfg
                    .max_file_bytes
                    .saturating_add(super::files::FORM_OVERHEAD),
            )),
        )
        .route(
            "/download_file/{name}",
            get(super::files::get_download_file),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        // API keys and the rate limit of /translate and /detect (src/gateway/keys.rs).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::keys::guard,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
