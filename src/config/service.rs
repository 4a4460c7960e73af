//! The sections around the work itself: `[http]` (probes and metrics), `[gateway]`
//! (the HTTP front end), `[shutdown]` and `[log]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check, ConfigError};

/// The HTTP listener for probes and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`; empty disables the listener.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

/// The HTTP gateway: HTTP requests in, jobs on the broker through the client library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the gateway's HTTP listener (`host:port`).
    pub listen: String,
    /// How long (ms) a request waits for its reply before answering 504. Also sent as
    /// the job's deadline, so a worker skips a job whose caller has given up.
    pub request_timeout_ms: u64,
    /// Translation requests waiting for their reply at once; more are answered 503 at
    /// once with `Retry-After` (bounds the gateway's memory and the broker backlog it
    /// can create).
    pub max_pending: usize,
    /// Largest request body (POST) and query string (GET), in bytes; larger is 413/414.
    pub max_body_bytes: usize,
    /// Most texts (`q` values) in one request; more is 413. 0 (the default) = the
    /// workers' `limits.max_texts`; a larger value is refused (see
    /// [`Config::gateway_max_texts`](crate::config::Config::gateway_max_texts)).
    pub max_texts: usize,
    /// Seconds put in `Retry-After` of a 503 (overload or broker down).
    pub retry_after_secs: u64,
    /// Lane the gateway's jobs are published to: `interactive` (a person waits on
    /// each request; workers batch them before bulk work) or `bulk`. Workers without
    /// the interactive lane get them on the bulk lane (the client falls back).
    pub lane: translation_client::Lane,
    /// Serve LibreTranslate's `/translate_file` and `/download_file` (the translated
    /// files are kept in Redis, so every replica can serve every download). Off, or
    /// with `redis.enabled = false`, file translation is reported disabled.
    pub files_translation: bool,
    /// Largest uploaded file, in bytes; larger is 413 (refused by `Content-Length`
    /// before the body is read when the client sends one).
    pub max_file_bytes: usize,
    /// How long (seconds) a translated file can be downloaded.
    pub file_ttl_secs: u64,
    /// Scheme and host put in `translatedFileUrl` (e.g. `https://translate.example.com`);
    /// empty = `http://` (or `X-Forwarded-Proto`) + the request's `Host`.
    pub public_url: String,
    /// File of API keys (one per line, optionally followed by that key's requests per
    /// minute; `#` comments), e.g. a mounted Kubernetes Secret. Empty (the default) =
    /// no keys. Read once at start: restart the gateway to apply a changed file.
    pub api_keys_file: PathBuf,
    /// With `api_keys_file`: refuse requests without a key (otherwise a missing key
    /// gets the default limit, as on LibreTranslate without `--require-api-key-origin`).
    pub api_keys_required: bool,
    /// Requests per minute per API key, or per client IP without one, shared by every
    /// replica through Redis; 0 (the default) = no limit (per-key limits in
    /// `api_keys_file` still apply).
    pub req_limit_per_minute: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            request_timeout_ms: 30_000,
            max_pending: 1024,
            max_body_bytes: 1024 * 1024,
            max_texts: 0,
            retry_after_secs: 1,
            lane: translation_client::Lane::Interactive,
            files_translation: true,
            max_file_bytes: 10 * 1024 * 1024,
            file_ttl_secs: 1800,
            public_url: String::new(),
            api_keys_file: PathBuf::new(),
            api_keys_required: true,
            req_limit_per_minute: 0,
        }
    }
}

impl HttpConfig {
    /// Checks this section on its own; errors name the key (`http.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.listen.is_empty() || self.listen.parse::<SocketAddr>().is_ok(),
            "http.listen",
            "must be host:port with an IP address (e.g. 0.0.0.0:9090), or empty to disable",
        )
    }
}

impl GatewayConfig {
    /// Checks this section on its own; errors name the key (`gateway.<key>`).
    /// `gateway.max_texts` is checked against `limits.max_texts` by
    /// [`Config::validate`](crate::config::Config::validate), which sees both.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.listen.parse::<SocketAddr>().is_ok(),
            "gateway.listen",
            "must be host:port with an IP address (e.g. 0.0.0.0:8080)",
        )?;
        check(
            self.request_timeout_ms >= 1,
            "gateway.request_timeout_ms",
            "must be at least 1",
        )?;
        check(
            self.max_pending >= 1,
            "gateway.max_pending",
            "must be at least 1",
        )?;
        check(
            self.max_body_bytes >= 64,
            "gateway.max_body_bytes",
            "must be at least 64",
        )?;
        check(
            self.retry_after_secs >= 1,
            "gateway.retry_after_secs",
            "must be at least 1",
        )?;
        check(
            self.max_file_bytes >= 1024,
            "gateway.max_file_bytes",
            "must be at least 1024",
        )?;
        check(
            self.file_ttl_secs >= 1,
            "gateway.file_ttl_secs",
            "must be at least 1",
        )?;
        check(
            self.public_url.is_empty()
                || ((self.public_url.starts_with("http://")
                    || self.public_url.starts_with("https://"))
                    && !self.public_url.ends_with('/')),
            "gateway.public_url",
            "must be empty or http(s)://host[:port][/path] without a trailing /",
        )
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long (seconds) in-flight jobs may take to finish before the
    /// worker closes anyway (unanswered jobs are then redelivered by the broker).
    /// Keep it below Kubernetes' `terminationGracePeriodSeconds`.
    pub drain_timeout_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout_secs: 25,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable text when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Logging settings (levels come from `RUST_LOG`, default `info`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `auto`, `json` or `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
        }
    }
}

impl ShutdownConfig {
    /// Checks this section on its own. Every drain timeout is valid (0: close at
    /// once); the method is here so that every section is validated alike.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl LogConfig {
    /// Checks this section on its own. Every format the type can hold is valid; the
    /// method is here so that every section is validated alike.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
