//! Redis translation cache: content-addressed keys, one round trip per job, and a
//! circuit breaker so a dead or slow Redis costs nothing but cache misses.
//!
//! Redis is an accelerator, not a dependency: every failure is logged, counted and
//! turned into a miss (lookups) or a skipped store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{redact_url, RedisConfig};
use crate::protocol::DecodeOptions;
use crate::telemetry::Metrics;

/// Version of the key derivation and value layout. Bumping it orphans old entries.
const FORMAT_VERSION: u8 = 1;

/// Errors from the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The Redis URL could not be parsed (the message carries the redacted URL).
    #[error("invalid redis URL {url}: {message}")]
    Url {
        /// Redacted URL.
        url: String,
        /// Parser message.
        message: String,
    },
}

/// A 256-bit content address of one translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// Identity of what produced a translation: the model and the language pair.
#[derive(Debug, Clone)]
pub struct KeyContext {
    /// Hash of the model files (a new model never serves old entries).
    pub model_fingerprint: [u8; 32],
    /// Source language.
    pub source: String,
    /// Target language.
    pub target: String,
}

impl KeyContext {
    /// The key of `text` translated with `options`. Every field is length-prefixed, so
    /// no text can make two different inputs collide by shifting a separator.
    pub fn key(&self, options: &DecodeOptions, text: &str) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(&[FORMAT_VERSION]);
        for field in [
            &self.model_fingerprint[..],
            self.source.as_bytes(),
            self.target.as_bytes(),
            &options.to_key_bytes()[..],
            text.as_bytes(),
        ] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field);
        }
        CacheKey(*h.finalize().as_bytes())
    }
}

/// Encodes a cached value: version byte, then the UTF-8 translation.
fn encode_value(text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(text.as_bytes());
    v
}

/// Decodes a cached value; anything foreign or corrupt is `None` (a miss).
fn decode_value(bytes: Vec<u8>) -> Option<String> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => std::str::from_utf8(rest).ok().map(str::to_owned),
        _ => None,
    }
}

/// Skips Redis for a cool-down after a failure; one probe at a time re-tests it.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    /// 1 + the millisecond (since `epoch`) before which calls are skipped; 0 = closed.
    open_until_ms: AtomicU64,
    cooldown: Duration,
}

impl Breaker {
    fn new(cooldown: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            cooldown,
        }
    }

    /// Milliseconds since `epoch`, plus one so that 0 can mean "closed".
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether a call may go to Redis now. When the cool-down has passed, exactly one
    /// caller wins the probe (it pushes the deadline forward for everyone else).
    fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until_ms
                .compare_exchange(
                    until,
                    now + self.cooldown.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn success(&self) {
        self.open_until_ms.store(0, Ordering::Release);
    }

    fn failure(&self) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

/// The translation cache.
pub struct Cache {
    /// `None` when caching is disabled.
    conn: Option<ConnectionManager>,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// Creates the cache. Connects lazily: a Redis that is down at start-up is not an
    /// error, the worker runs without cache until it is back.
    pub fn new(cfg: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, CacheError> {
        let conn = if cfg.enabled {
            let url_err = |e: redis::RedisError| CacheError::Url {
                url: redact_url(&cfg.url),
                message: e.to_string(),
            };
            let client = redis::Client::open(cfg.url.as_str()).map_err(url_err)?;
            let timeout = Duration::from_millis(cfg.timeout_ms);
            let mgr_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // One quick retry inside the manager; the breaker handles longer outages.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(100));
            Some(ConnectionManager::new_lazy_with_config(client, mgr_cfg).map_err(url_err)?)
        } else {
            None
        };
        Ok(Self {
            conn,
            prefix: cfg.key_prefix.clone(),
            ttl_secs: cfg.ttl_secs,
            timeout: Duration::from_millis(cfg.timeout_ms),
            breaker: Breaker::new(Duration::from_millis(cfg.breaker_cooldown_ms)),
            metrics,
        })
    }

    /// The Redis key of `key`: `<prefix>:v1:<hex>`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 4 + 64);
        s.push_str(&self.prefix);
        s.push_str(":v");
        s.push(char::from(b'0' + FORMAT_VERSION));
        s.push(':');
        for b in key.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    fn usable(&self) -> Option<ConnectionManager> {
        let conn = self.conn.as_ref()?;
        if self.breaker.allow() {
            Some(conn.clone())
        } else {
            self.metrics.cache_skipped.inc();
            None
        }
    }

    fn failed(&self, op: &str, err: &dyn std::fmt::Display) {
        let was_open = self.breaker.is_open();
        self.breaker.failure();
        self.metrics.cache_errors.inc();
        if !was_open {
            tracing::warn!(op, error = %err, "redis unavailable, continuing without cache");
        }
    }

    fn succeeded(&self) {
        if self.breaker.is_open() {
            tracing::info!("redis is back, caching resumed");
        }
        self.breaker.success();
    }

    /// Looks up all `keys` in one `MGET`. Any failure yields all misses.
    pub async fn get_many(&self, keys: &[CacheKey]) -> Vec<Option<String>> {
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return out;
        }
        let Some(mut conn) = self.usable() else {
            return out;
        };
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let cmd = {
            let mut c = redis::cmd("MGET");
            c.arg(&names);
            c
        };
        let res = tokio::time::timeout(
            self.timeout,
            cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
        )
        .await;
        match res {
            Ok(Ok(values)) if values.len() == keys.len() => {
                self.succeeded();
                for (slot, v) in out.iter_mut().zip(values) {
                    if let Some(bytes) = v {
                        *slot = decode_value(bytes);
                        if slot.is_none() {
                            self.metrics.cache_corrupt.inc();
                        }
                    }
                }
            }
            Ok(Ok(values)) => self.failed(
                "mget",
                &format!("{} values for {} keys", values.len(), keys.len()),
            ),
            Ok(Err(e)) => self.failed("mget", &e),
            Err(_) => self.failed("mget", &"timed out"),
        }
        out
    }

    /// Stores `entries` with the configured TTL in one pipelined round trip.
    pub async fn put_many(&self, entries: &[(CacheKey, &str)]) {
        if entries.is_empty() {
            return;
        }
        let Some(mut conn) = self.usable() else {
            return;
        };
        let mut pipe = redis::pipe();
        for (key, text) in entries {
            pipe.cmd("SET")
                .arg(self.redis_key(key))
                .arg(encode_value(text))
                .arg("EX")
                .arg(self.ttl_secs)
                .ignore();
        }
        match tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                self.succeeded();
                self.metrics.cache_stores.add(entries.len() as u64);
            }
            Ok(Err(e)) => self.failed("set", &e),
            Err(_) => self.failed("set", &"timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext {
        KeyContext {
            model_fingerprint: [7; 32],
            source: "ko".into(),
            target: "en".into(),
        }
    }

    fn opts() -> DecodeOptions {
        DecodeOptions {
            beam_size: 1,
            max_decoding_length: 256,
            length_penalty: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
        }
    }

    #[test]
    fn keys_depend_on_everything_that_changes_output() {
        let base = ctx().key(&opts(), "안녕");
        assert_eq!(base, ctx().key(&opts(), "안녕"));
        assert_ne!(base, ctx().key(&opts(), "안녕 "));
        let mut c = ctx();
        c.model_fingerprint[0] = 8;
        assert_ne!(base, c.key(&opts(), "안녕"));
        let mut c = ctx();
        c.target = "de".into();
        assert_ne!(base, c.key(&opts(), "안녕"));
        let o = DecodeOptions {
            beam_size: 2,
            ..opts()
        };
        assert_ne!(base, ctx().key(&o, "안녕"));
    }

    #[test]
    fn keys_are_unambiguous_across_field_boundaries() {
        // Moving characters between source and target must not collide.
        let a = KeyContext {
            source: "ko-".into(),
            target: "en".into(),
            ..ctx()
        };
        let b = KeyContext {
            source: "ko".into(),
            target: "-en".into(),
            ..ctx()
        };
        assert_ne!(a.key(&opts(), "x"), b.key(&opts(), "x"));
    }

    #[test]
    fn values_round_trip_and_reject_foreign_bytes() {
        assert_eq!(
            decode_value(encode_value("héllo")).as_deref(),
            Some("héllo")
        );
        assert_eq!(decode_value(encode_value("")).as_deref(), Some(""));
        assert_eq!(decode_value(b"plain".to_vec()), None);
        assert_eq!(decode_value(vec![]), None);
        assert_eq!(decode_value(vec![FORMAT_VERSION, 0xff]), None);
    }

    #[test]
    fn breaker_opens_and_lets_one_probe_through() {
        let b = Breaker::new(Duration::from_millis(0));
        assert!(b.allow());
        b.failure();
        assert!(b.is_open());
        // Cool-down of 0: the first caller probes, success closes it.
        assert!(b.allow());
        b.success();
        assert!(!b.is_open());
        let b = Breaker::new(Duration::from_secs(60));
        b.failure();
        assert!(!b.allow());
    }

    #[tokio::test]
    async fn redis_keys_are_prefixed_and_versioned() {
        let metrics = Arc::new(Metrics::default());
        let cache = Cache::new(&RedisConfig::default(), metrics).unwrap();
        let k = cache.redis_key(&CacheKey([0xab; 32]));
        assert!(k.starts_with("tw:v1:abab"));
        assert_eq!(k.len(), "tw:v1:".len() + 64);
    }
}
