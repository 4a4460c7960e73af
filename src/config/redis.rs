//! `[redis]`: the translation cache's Redis, standalone or cluster.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use translation_client::url::{redact_url, split_url_list};

use super::{check, ConfigError, TlsFiles};

/// Redis cache settings.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Use the cache at all.
    pub enabled: bool,
    /// `standalone` (one Redis, or a primary behind a proxy/Sentinel address) or
    /// `cluster` (Redis Cluster: keys spread over the nodes by hash slot).
    pub mode: RedisMode,
    /// Redis URL, e.g. `redis://:pass@host:6379/0`, or `rediss://` for TLS. In cluster
    /// mode a comma-separated list of seed nodes (`redis://h1:6379,redis://h2:6379`);
    /// the rest of the cluster is discovered from them. Logged only with passwords
    /// redacted.
    pub url: String,
    /// File holding `url` (e.g. a mounted Kubernetes Secret); when set, its trimmed
    /// contents replace `url` at start-up.
    pub url_file: PathBuf,
    /// PEM CA certificates trusted for `rediss://` *instead of* the system roots
    /// (redis-rs replaces the root store); empty = system roots (which honour
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR`). Applies to every cluster node too.
    pub tls_ca_file: PathBuf,
    /// PEM client certificate (chain) for mutual TLS; needs `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub tls_key_file: PathBuf,
    /// Lifetime of a cached translation, in seconds.
    pub ttl_secs: u64,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Budget for one cache round trip (lookup or store), in milliseconds. Past it the
    /// job goes on without the cache.
    pub timeout_ms: u64,
    /// After a failure, skip Redis for this long (milliseconds) before trying again, so
    /// a dead Redis costs no timeout per job.
    pub breaker_cooldown_ms: u64,
}

/// How the cache talks to Redis.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (one URL).
    Standalone,
    /// A Redis Cluster reached through one or more seed URLs.
    Cluster,
}

impl std::fmt::Display for RedisMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        })
    }
}

impl RedisConfig {
    /// The URLs to connect to: `url` itself in standalone mode, each seed (trimmed,
    /// empty entries skipped) in cluster mode.
    pub fn urls(&self) -> Vec<&str> {
        match self.mode {
            RedisMode::Standalone => vec![self.url.as_str()],
            RedisMode::Cluster => split_url_list(&self.url),
        }
    }

    /// The TLS files of this section.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            section: "redis",
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }

    /// Checks this section on its own; errors name the key (`redis.<key>`). In
    /// cluster mode every seed is checked, and TLS files need every seed on
    /// `rediss://` (one root store serves all nodes).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.mode {
            RedisMode::Standalone => check(
                self.url.starts_with("redis://")
                    || self.url.starts_with("rediss://")
                    || self.url.starts_with("unix://"),
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            )?,
            RedisMode::Cluster => validate_cluster_seeds(&self.url)?,
        }
        let tls = {
            let urls = self.urls();
            !urls.is_empty() && urls.iter().all(|u| u.starts_with("rediss://"))
        };
        self.tls_files().validate(tls, "rediss")?;
        check(self.ttl_secs >= 1, "redis.ttl_secs", "must be at least 1")?;
        check(
            self.timeout_ms >= 1,
            "redis.timeout_ms",
            "must be at least 1",
        )
    }
}

// Hand-written so that `{:?}` never prints a password (see `AmqpConfig`'s).
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            enabled,
            mode,
            url,
            url_file,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ttl_secs,
            key_prefix,
            timeout_ms,
            breaker_cooldown_ms,
        } = self;
        f.debug_struct("RedisConfig")
            .field("enabled", enabled)
            .field("mode", mode)
            .field("url", &redact_url(url))
            .field("url_file", url_file)
            .field("tls_ca_file", tls_ca_file)
            .field("tls_cert_file", tls_cert_file)
            .field("tls_key_file", tls_key_file)
            .field("ttl_secs", ttl_secs)
            .field("key_prefix", key_prefix)
            .field("timeout_ms", timeout_ms)
            .field("breaker_cooldown_ms", breaker_cooldown_ms)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".into(),
            url_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            ttl_secs: 30 * 24 * 3600,
            key_prefix: "tw".into(),
            timeout_ms: 250,
            breaker_cooldown_ms: 2_000,
        }
    }
}

/// Checks `redis.url` in cluster mode: at least one seed, each a `redis://` or
/// `rediss://` URL that parses. Messages show seeds only redacted.
fn validate_cluster_seeds(list: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "redis.url".into(),
        message,
    };
    let seeds = split_url_list(list);
    if seeds.is_empty() {
        return Err(invalid(
            "must list at least one seed node in cluster mode (redis://host:port,...)".into(),
        ));
    }
    for (i, seed) in seeds.iter().enumerate() {
        let n = i + 1;
        if !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
            return Err(invalid(format!(
                "seed {n} ({}) must start with redis:// or rediss:// in cluster mode",
                redact_url(seed)
            )));
        }
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(*seed) {
            return Err(invalid(format!(
                "seed {n} ({}) does not parse: {}",
                redact_url(seed),
                e
            )));
        }
    }
    Ok(())
}
