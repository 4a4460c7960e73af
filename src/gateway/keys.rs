//! API keys and the request rate limit, as LibreTranslate has them.
//!
//! - Keys (`gateway.api_keys_file`, off by default): one key per line, optionally
//!   followed by that key's requests per minute; read once at start. A request names
//!   its key as `api_key` in its JSON, form or multipart body, or in the query string.
//!   An unknown key is 403 `Invalid API key`; no key, when `gateway.api_keys_required`,
//!   is 400 `Please contact the server operator to get an API key` (LibreTranslate's
//!   statuses and messages).
//! - The rate limit (`gateway.req_limit_per_minute`, or a key's own limit): a fixed
//!   one-minute window per key, or per client IP for requests without a key, counted
//!   in Redis (one atomic script) so that every replica shares it. Over it: 429
//!   `Slowdown: N per 1 minute` with `Retry-After` (the seconds left in the window).
//!
//! Keys are never logged nor used as Redis key names (a key's bucket is named by its
//! blake3 hash). Redis down while a limit is on: requests pass (fail-open, counted
//! in `translation_gateway_rate_limit_errors_total` and logged): the broker's
//! admission control (`gateway.max_pending`) still bounds the load, and keys are
//! checked locally, so only the per-minute quota is lost during the outage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::AppState;
use super::error::ApiError;
use super::metrics::GatewayMetrics;
use super::server::Peer;
use super::store::Store;

/// The rate limit's window, seconds (LibreTranslate's `--req-limit` is per minute).
const WINDOW_SECS: u64 = 60;

/// Errors reading `gateway.api_keys_file`. Messages name the file and the line, never
/// a key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("cannot read gateway.api_keys_file {path}: {source}")]
    Read {
        /// The configured path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A line is not `KEY` or `KEY LIMIT`.
    #[error("gateway.api_keys_file {path}, line {line}: {message}")]
    Line {
        /// The configured path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (without the key).
        message: &'static str,
    },
    /// The file has no key: every request would be refused.
    #[error("gateway.api_keys_file {0} holds no key")]
    Empty(PathBuf),
}

/// The API keys, each with its own requests per minute (`None`: the default limit).
#[derive(Clone, Default)]
pub(super) struct ApiKeys {
    limits: HashMap<String, Option<u64>>,
}

// Hand-written so that `{:?}` never prints a key.
impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.limits.len())
            .finish()
    }
}

impl ApiKeys {
    /// Reads the keys file (see [`ApiKeys::parse`]).
    pub(super) fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `KEY [LIMIT]` lines; blank lines and `#` comments are skipped. A key
    /// listed twice keeps its last limit.
    pub(super) fn parse(path: &Path, text: &str) -> Result<Self, KeysError> {
        let mut limits = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message| KeysError::Line {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let mut words = line.split_whitespace();
            let key = words.next().ok_or_else(|| bad("no key"))?;
            let limit = match words.next() {
                None => None,
                Some(n) => Some(
                    n.parse::<u64>()
                        .map_err(|_| bad("the limit after the key must be a whole number"))?,
                ),
            };
            if words.next().is_some() {
                return Err(bad("expected `KEY` or `KEY REQUESTS_PER_MINUTE`"));
            }
            limits.insert(key.to_owned(), limit);
        }
        if limits.is_empty() {
            return Err(KeysError::Empty(path.to_owned()));
        }
        Ok(Self { limits })
    }

    /// How many keys there are.
    pub(super) fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether any key has a limit of its own.
    pub(super) fn has_limits(&self) -> bool {
        self.limits.values().any(|l| l.is_some_and(|n| n > 0))
    }

    /// `Some(limit)` for a known key (`limit` `None`: the default).
    fn lookup(&self, key: &str) -> Option<Option<u64>> {
        self.limits.get(key).copied()
    }
}

/// Who may call, and how often.
pub(super) struct Access {
    /// `None`: keys are off.
    pub(super) keys: Option<ApiKeys>,
    /// Refuse requests without a key (with `keys`).
    pub(super) required: bool,
    /// Requests per minute by default; 0 = none.
    pub(super) default_limit: u64,
    /// Where the counters live; `None` when no limit is configured.
    pub(super) store: Option<Arc<Store>>,
}

impl Access {
    /// Whether requests are checked at all.
    pub(super) fn enabled(&self) -> bool {
        self.keys.is_some() || self.default_limit > 0
    }

    /// Whether any limit (default or per key) needs Redis.
    pub(super) fn needs_store(&self) -> bool {
        self.default_limit > 0 || self.keys.as_ref().is_some_and(ApiKeys::has_limits)
    }

    /// Checks `key` (the request's `api_key`) and counts the request against its
    /// limit: `Ok` to go on, else the answer.
    pub(super) async fn check(
        &self,
        key: Option<&str>,
        client_ip: &str,
        metrics: &GatewayMetrics,
    ) -> Result<(), ApiError> {
        let key = key.filter(|k| !k.is_empty());
        let (bucket, limit) = match (&self.keys, key) {
            (Some(keys), Some(key)) => match keys.lookup(key) {
                Some(own) => (
                    // Hashed: the key itself never reaches Redis.
                    format!("k:{}", &blake3::hash(key.as_bytes()).to_hex()[..32]),
                    own.unwrap_or(self.default_limit),
                ),
                None => {
                    metrics.key_rejected("invalid");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "invalid_api_key",
                        "Invalid API key",
                    ));
                }
            },
            (Some(_), None) if self.required => {
                metrics.key_rejected("missing");
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "api_key_required",
                    "Please contact the server operator to get an API key",
                ));
            }
            _ => (format!("ip:{client_ip}"), self.default_limit),
        };
        if limit == 0 {
            return Ok(());
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        match store.hit(&bucket, WINDOW_SECS).await {
            Ok((n, _)) if n <= limit => Ok(()),
            Ok((_, retry)) => {
                metrics.rate_limited.inc();
                Err(ApiError {
                    retry_after: Some(retry.max(1)),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!("Slowdown: {limit} per 1 minute"),
                    )
                })
            }
            Err(e) => {
                // Fail-open (see the module docs).
                metrics.rate_limit_errors.inc();
                tracing::warn!(error = %e, "rate limit not checked: redis unavailable");
                Ok(())
            }
        }
    }
}

/// The client's address as LibreTranslate takes it: the first `X-Forwarded-For`
/// entry (set by the load balancer in front of the replicas), else the peer.
pub(super) fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// `api_key` of a query string.
pub(super) fn query_key(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v.into_owned())
}

/// `api_key` of a JSON or form body (other bodies have none here).
fn body_key(content_type: &str, body: &[u8]) -> Option<String> {
    let mime = super::libretranslate::media_type(content_type);
    if mime == "application/x-www-form-urlencoded" {
        return form_urlencoded::parse(body)
            .find(|(k, _)| k == "api_key")
            .map(|(_, v)| v.into_owned());
    }
    if mime.starts_with("multipart/") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct KeyOnly {
        api_key: Option<String>,
    }
    serde_json::from_slice::<KeyOnly>(body)
        .ok()
        .and_then(|b| b.api_key)
}

/// Middleware for `/translate` and `/detect` (`/translate_file` checks in its handler,
/// after reading its multipart body): reads `api_key` from the query or the body
/// (buffered up to `gateway.max_body_bytes`, as the handler would) and runs
/// [`Access::check`].
pub(super) async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !s.access.enabled() || !(path == "/translate" || path == "/detect") {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0 .0);
    let ip = client_ip(req.headers(), peer);
    let from_query = req.uri().query().and_then(query_key);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, s.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {} bytes", s.cfg.max_body_bytes),
            )
            .into_response()
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = body_key(content_type, &bytes).or(from_query);
    if let Err(e) = s.access.check(key.as_deref(), &ip, &s.metrics).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_lines_and_errors_name_no_key() {
        let p = Path::new("/keys");
        let k = ApiKeys::parse(p, "# comment\n\n  alpha  \nbeta 120\n").unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k.lookup("alpha"), Some(None));
        assert_eq!(k.lookup("beta"), Some(Some(120)));
        assert_eq!(k.lookup("gamma"), None);
        assert!(k.has_limits());
        assert!(!format!("{k:?}").contains("alpha"));
        let e = ApiKeys::parse(p, "secret-key lots\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && !e.contains("secret-key"), "{e}");
        let e = ApiKeys::parse(p, "secret-key 1 2\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret-key"), "{e}");
        assert!(matches!(
            ApiKeys::parse(p, "# none\n"),
            Err(KeysError::Empty(_))
        ));
    }

    #[test]
    fn keys_come_from_json_form_and_query() {
        assert_eq!(
            body_key("application/json", br#"{"q":"x","api_key":"k1"}"#).as_deref(),
            Some("k1")
        );
        assert_eq!(
            body_key("application/x-www-form-urlencoded", b"q=x&api_key=k%202").as_deref(),
            Some("k 2")
        );
        assert_eq!(body_key("application/json", b"not json"), None);
        assert_eq!(query_key("q=x&api_key=k3").as_deref(), Some("k3"));
        assert_eq!(query_key("q=x"), None);
    }

    #[test]
    fn client_ip_prefers_the_first_forwarded_address() {
        let mut h = HeaderMap::new();
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(client_ip(&h, Some(peer)), "10.0.0.9");
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_ip(&h, Some(peer)), "203.0.113.7");
    }

    #[tokio::test]
    async fn missing_and_invalid_keys_are_refused_without_redis() {
        let metrics = GatewayMetrics::new(1);
        let access = Access {
            keys: Some(ApiKeys::parse(Path::new("/k"), "good\n").unwrap()),
            required: true,
            default_limit: 0,
            store: None,
        };
        let e = access.check(None, "1.2.3.4", &metrics).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = access
            .check(Some("bad"), "1.2.3.4", &metrics)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::FORBIDDEN, "Invalid API key")
        );
        access
            .check(Some("good"), "1.2.3.4", &metrics)
            .await
            .unwrap();
        let open = Access {
            required: false,
            ..access
        };
        open.check(None, "1.2.3.4", &metrics).await.unwrap();
    }
}
