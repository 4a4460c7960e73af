//! Redis translation cache: content-addressed keys, one round trip per job, and a
//! circuit breaker so a dead or slow Redis costs nothing but cache misses.
//!
//! Redis is an accelerator, not a dependency: every failure is logged, counted and
//! turned into a miss (lookups) or a skipped store.
//!
//! Standalone Redis gets one `MGET` per job. A Redis Cluster refuses a multi-key
//! command whose keys hash to different slots (CROSSSLOT), and the keys are
//! deliberately not hash-tagged (that would pin every key to one node); there each key
//! is its own `GET`/`SET`, all sent at once over the multiplexed connections, so a job
//! still costs about one round trip to each node it touches.
//!
//! # Alternatives
//!
//! A job that asks for alternatives (`options.alternatives` > 0) is cached too, under
//! its own key: the alternatives count is part of the options hashed into the key
//! ([`DecodeOptions::to_key_bytes`]), and its value is a JSON list, the best
//! translation first and then the alternatives ([`cache_value`]). Such an entry
//! never answers a job without alternatives, nor one with another count, and a plain
//! entry never answers a job with alternatives (a plain value under such a key does
//! not decode, so it is a miss). The best translation stays the one a plain job with
//! the same effective beam gets: with `length_penalty` ≠ 0 CTranslate2 runs the same
//! search whatever the number of hypotheses kept and only keeps more of its sorted
//! list; with 0 it searches on after the best has finished, which only adds lower
//! scores. Plain entries keep their keys and values byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::RedisResult;

use crate::config::RedisConfig;
use crate::telemetry::Metrics;
use crate::translate::redis_conn::{ConnectError, Connection};
use crate::translate::Translation;
use translation_client::wire::DecodeOptions;

/// Version of the key derivation (the `v1` in `<prefix>:v1:<hex>`). Bumping it
/// orphans every old entry.
const FORMAT_VERSION: u8 = 1;

/// Version of the value layout: `[VALUE_VERSION][16-byte tag][UTF-8 translation]`.
/// Version 1 values (`[1][translation]`, not bound to their key) read as corrupt, so
/// they are misses and are overwritten by the next store.
const VALUE_VERSION: u8 = 2;

/// Bytes of the tag binding a value to its Redis key: 128 bits, so no value stored
/// under another key (or damaged in place) passes by chance.
const TAG_LEN: usize = 16;

/// blake3 key-derivation context of value tags (domain separation from the keys).
const TAG_CONTEXT: &str = "translation-worker 2025 cache value tag v2";

/// Errors from the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The connection could not be set up (URL or TLS files).
    #[error(transparent)]
    Connect(#[from] ConnectError),
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
        let options = options.to_key_bytes();
        for field in [
            &self.model_fingerprint[..],
            self.source.as_bytes(),
            self.target.as_bytes(),
            &options[..],
            text.as_bytes(),
        ] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field);
        }
        CacheKey(*h.finalize().as_bytes())
    }
}

/// The tag of `text` stored under the Redis key `name`: it binds the value to its
/// key (prefix included) and covers every byte of the text. It guards against
/// accidents (another writer, a copied or truncated value), not against someone with
/// write access to Redis, who can compute it too (blake3 is public).
fn value_tag(name: &str, text: &[u8]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_derive_key(TAG_CONTEXT);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(text);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    tag
}

/// Encodes the value of `text` under the Redis key `name`: layout version, tag, text.
fn encode_value(name: &str, text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + TAG_LEN + text.len());
    v.push(VALUE_VERSION);
    v.extend_from_slice(&value_tag(name, text.as_bytes()));
    v.extend_from_slice(text.as_bytes());
    v
}

/// Decodes the value found under `name`; anything foreign (another layout, another
/// key's value) or corrupt (bad tag, not UTF-8) is `None`: a miss, never a translation.
fn decode_value(name: &str, bytes: Vec<u8>) -> Option<String> {
    let (&version, rest) = bytes.split_first()?;
    if version != VALUE_VERSION || rest.len() < TAG_LEN {
        return None;
    }
    let (tag, text) = rest.split_at(TAG_LEN);
    if tag != value_tag(name, text) {
        return None;
    }
    std::str::from_utf8(text).ok().map(str::to_owned)
}

/// The text cached for `translation`, made with `options`: the translation itself
/// when no alternatives were asked for (the layout plain entries always had), else
/// the JSON list `[best, alternative, …]`.
pub fn cache_value(options: &DecodeOptions, translation: &Translation) -> String {
    if options.alternatives == 0 {
        return translation.best.clone();
    }
    let mut list = Vec::with_capacity(1 + translation.alternatives.len());
    list.push(translation.best.as_str());
    list.extend(translation.alternatives.iter().map(String::as_str));
    // A list of strings always serialises.
    serde_json::to_string(&list).expect("a list of strings serialises")
}

/// The translation a cached text (as [`cache_value`] wrote it for `options`) holds;
/// `None` (a miss) when it is not in that layout or holds more alternatives than
/// `options` ask for.
pub fn cached_translation(options: &DecodeOptions, stored: String) -> Option<Translation> {
    if options.alternatives == 0 {
        return Some(Translation::from(stored));
    }
    let mut list: Vec<String> = serde_json::from_str(&stored).ok()?;
    if list.is_empty() || list.len() > options.num_hypotheses() as usize {
        return None;
    }
    let alternatives = list.split_off(1);
    let best = list.pop()?;
    Some(Translation { best, alternatives })
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

impl Connection {
    /// Values of `names`, in order (`None` where absent).
    async fn get(&self, names: &[String]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        match self {
            Connection::Standalone(m) => {
                let mut conn = m.clone();
                redis::cmd("MGET").arg(names).query_async(&mut conn).await
            }
            Connection::Cluster(lazy) => {
                let conn = lazy.get().await?;
                try_join_all(names.iter().map(|name| {
                    let mut conn = conn.clone();
                    async move { redis::cmd("GET").arg(name).query_async(&mut conn).await }
                }))
                .await
            }
        }
    }

    /// Stores every `(name, value)` with a lifetime of `ttl_secs`.
    async fn set(&self, entries: &[(String, Vec<u8>)], ttl_secs: u64) -> RedisResult<()> {
        match self {
            Connection::Standalone(m) => {
                let mut conn = m.clone();
                let mut pipe = redis::pipe();
                for (name, value) in entries {
                    pipe.cmd("SET")
                        .arg(name)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl_secs)
                        .ignore();
                }
                pipe.query_async(&mut conn).await
            }
            Connection::Cluster(lazy) => {
                let conn = lazy.get().await?;
                try_join_all(entries.iter().map(|(name, value)| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("SET")
                            .arg(name)
                            .arg(value)
                            .arg("EX")
                            .arg(ttl_secs)
                            .query_async::<()>(&mut conn)
                            .await
                    }
                }))
                .await
                .map(drop)
            }
        }
    }

    /// One `PING` (on a cluster, to whichever node the connection picks).
    async fn ping(&self) -> RedisResult<()> {
        self.query(&redis::cmd("PING")).await
    }
}

/// The translation cache.
pub struct Cache {
    /// `None` when caching is disabled.
    conn: Option<Connection>,
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
            Some(Connection::lazy(
                cfg,
                Duration::from_millis(cfg.timeout_ms),
            )?)
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

    /// The Redis key and the value [`Cache::put_many`] stores for `text` under `key`
    /// (for tools and tests that inspect or seed the cache).
    pub fn entry(&self, key: &CacheKey, text: &str) -> (String, Vec<u8>) {
        let name = self.redis_key(key);
        let value = encode_value(&name, text);
        (name, value)
    }

    fn usable(&self) -> Option<&Connection> {
        let conn = self.conn.as_ref()?;
        if self.breaker.allow() {
            Some(conn)
        } else {
            self.metrics.cache_skipped.inc();
            None
        }
    }

    fn failed(&self, conn: &Connection, op: &str, err: &dyn std::fmt::Display) {
        conn.reset();
        let was_open = self.breaker.is_open();
        self.breaker.failure();
        self.metrics.cache_errors.inc();
        self.metrics.redis_up.set(0);
        if !was_open {
            tracing::warn!(op, error = %err, "redis unavailable, continuing without cache");
        }
    }

    fn succeeded(&self) {
        if self.breaker.is_open() {
            tracing::info!("redis is back, caching resumed");
        }
        self.breaker.success();
        self.metrics.redis_up.set(1);
    }

    /// Looks up all `keys` in one round trip (`MGET`, or concurrent `GET`s on a
    /// cluster). Any failure yields all misses.
    pub async fn get_many(&self, keys: &[CacheKey]) -> Vec<Option<String>> {
        let mut out = vec![None; keys.len()];
        if keys.is_empty() {
            return out;
        }
        let Some(conn) = self.usable() else {
            return out;
        };
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        match tokio::time::timeout(self.timeout, conn.get(&names)).await {
            Ok(Ok(values)) if values.len() == keys.len() => {
                self.succeeded();
                for ((slot, v), name) in out.iter_mut().zip(values).zip(&names) {
                    if let Some(bytes) = v {
                        *slot = decode_value(name, bytes);
                        if slot.is_none() {
                            self.metrics.cache_corrupt.inc();
                        }
                    }
                }
            }
            Ok(Ok(values)) => self.failed(
                conn,
                "get",
                &format!("{} values for {} keys", values.len(), keys.len()),
            ),
            Ok(Err(e)) => self.failed(conn, "get", &e),
            Err(_) => self.failed(conn, "get", &"timed out"),
        }
        out
    }

    /// Checks Redis with one `PING` and records the result (`redis_up`, the breaker),
    /// as any cache call does. The worker probes at start and every few seconds, so
    /// readiness and `redis_up` tell the truth before the first job and on an idle
    /// worker, not only once traffic finds out. While the breaker is open a probe
    /// goes out only when a cache call would (one per cool-down). Nothing when the
    /// cache is disabled.
    pub async fn probe(&self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        if !self.breaker.allow() {
            return;
        }
        match tokio::time::timeout(self.timeout, conn.ping()).await {
            Ok(Ok(())) => self.succeeded(),
            Ok(Err(e)) => self.failed(conn, "ping", &e),
            Err(_) => self.failed(conn, "ping", &"timed out"),
        }
    }

    /// Whether caching is enabled (`redis.enabled`).
    pub fn enabled(&self) -> bool {
        self.conn.is_some()
    }

    /// Stores `entries` with the configured TTL in one pipelined round trip.
    pub async fn put_many(&self, entries: &[(CacheKey, &str)]) {
        if entries.is_empty() {
            return;
        }
        let Some(conn) = self.usable() else {
            return;
        };
        let values: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(key, text)| self.entry(key, text))
            .collect();
        match tokio::time::timeout(self.timeout, conn.set(&values, self.ttl_secs)).await {
            Ok(Ok(())) => {
                self.succeeded();
                self.metrics.cache_stores.add(entries.len() as u64);
            }
            Ok(Err(e)) => self.failed(conn, "set", &e),
            Err(_) => self.failed(conn, "set", &"timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisMode;

    fn ctx() -> KeyContext {
        KeyContext {
            model_fingerprint: [7; 32],
            source: "ko".into(),
            target: "en".into(),
        }
    }

    fn opts() -> DecodeOptions {
        DecodeOptions::default()
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
    fn alternatives_have_keys_of_their_own_and_list_values() {
        let plain = opts();
        let alt = |n: u32| DecodeOptions {
            alternatives: n,
            ..opts()
        };
        let base = ctx().key(&plain, "안녕");
        assert_ne!(base, ctx().key(&alt(2), "안녕"));
        assert_ne!(ctx().key(&alt(2), "안녕"), ctx().key(&alt(3), "안녕"));
        // A plain job's value is the translation itself, as it always was.
        let t = Translation {
            best: "hi".into(),
            alternatives: vec!["hello".into(), "hey".into()],
        };
        assert_eq!(
            cache_value(&plain, &Translation::from("hi".to_string())),
            "hi"
        );
        assert_eq!(
            cached_translation(&plain, "[\"hi\"]".into()),
            Some(Translation::from("[\"hi\"]".to_string()))
        );
        let v = cache_value(&alt(2), &t);
        assert_eq!(v, r#"["hi","hello","hey"]"#);
        assert_eq!(cached_translation(&alt(2), v.clone()), Some(t.clone()));
        // Fewer than asked (the model had no more distinct ones) reads back as is.
        let few = Translation::from("x".to_string());
        assert_eq!(
            cached_translation(&alt(2), cache_value(&alt(2), &few)),
            Some(few)
        );
        // Anything else under such a key is a miss.
        for bad in ["hi", "[]", "[1]", r#"{"a":1}"#, r#"["a","b","c","d"]"#] {
            assert_eq!(cached_translation(&alt(2), bad.into()), None, "{bad}");
        }
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
        let k = "tw:v1:aa";
        assert_eq!(
            decode_value(k, encode_value(k, "héllo")).as_deref(),
            Some("héllo")
        );
        assert_eq!(decode_value(k, encode_value(k, "")).as_deref(), Some(""));
        assert_eq!(decode_value(k, b"plain".to_vec()), None);
        assert_eq!(decode_value(k, vec![]), None);
        assert_eq!(decode_value(k, vec![VALUE_VERSION]), None);
        // The version-1 layout (version byte + text) is foreign now.
        assert_eq!(decode_value(k, b"\x01hello".to_vec()), None);
        // A well-formed value of another key, or of the same hash in another
        // namespace, is a miss.
        assert_eq!(decode_value(k, encode_value("tw:v1:bb", "hello")), None);
        assert_eq!(decode_value(k, encode_value("other:v1:aa", "hello")), None);
        // Any damage to the tag or the text is a miss.
        let good = encode_value(k, "hello");
        for i in 1..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            assert_eq!(decode_value(k, bad), None, "byte {i}");
        }
        assert_eq!(decode_value(k, good[..good.len() - 1].to_vec()), None);
        // Invalid UTF-8 under a correct tag is still a miss.
        let mut v = vec![VALUE_VERSION];
        v.extend_from_slice(&value_tag(k, &[0xff, 0xfe]));
        v.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(decode_value(k, v), None);
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
    async fn cluster_mode_connects_lazily_and_hides_passwords() {
        let metrics = Arc::new(Metrics::default());
        // Nothing listens there: creating the cache must not connect.
        let cfg = RedisConfig {
            mode: RedisMode::Cluster,
            url: "redis://127.0.0.1:1,redis://127.0.0.1:2".into(),
            timeout_ms: 50,
            ..RedisConfig::default()
        };
        let cache = Cache::new(&cfg, metrics.clone()).unwrap();
        // A dead cluster is a miss and opens the breaker: the next call is skipped.
        assert_eq!(cache.get_many(&[CacheKey([1; 32])]).await, vec![None]);
        assert_eq!(metrics.cache_errors.get(), 1);
        cache.put_many(&[(CacheKey([1; 32]), "x")]).await;
        assert_eq!(metrics.cache_skipped.get(), 1);
        // Seeds with different passwords are refused; the error shows none of them.
        let cfg = RedisConfig {
            mode: RedisMode::Cluster,
            url: "redis://:secret1@127.0.0.1:1,redis://:secret2@127.0.0.1:2".into(),
            ..RedisConfig::default()
        };
        let e = Cache::new(&cfg, metrics)
            .err()
            .expect("mixed passwords")
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[tokio::test]
    async fn tls_files_are_read_at_set_up_with_clear_errors() {
        let metrics = Arc::new(Metrics::default());
        let dir = std::env::temp_dir().join(format!("tw-cache-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        // PEM markers around a body that is not a certificate.
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cfg = RedisConfig {
            url: "rediss://:tls-secret@127.0.0.1:1".into(),
            tls_ca_file: ca.clone(),
            ..RedisConfig::default()
        };
        let e = Cache::new(&cfg, metrics.clone())
            .err()
            .expect("bad PEM")
            .to_string();
        assert!(
            e.contains("redis TLS set-up") && e.contains(":***@127.0.0.1"),
            "{e}"
        );
        assert!(!e.contains("tls-secret"), "{e}");
        let missing = RedisConfig {
            tls_ca_file: dir.join("missing.pem"),
            ..cfg.clone()
        };
        let e = Cache::new(&missing, metrics.clone())
            .err()
            .expect("no file")
            .to_string();
        assert!(
            e.contains("redis.tls_ca_file") && e.contains("missing.pem"),
            "{e}"
        );
        // Cluster mode takes the same files.
        let cluster = RedisConfig {
            mode: RedisMode::Cluster,
            url: "rediss://127.0.0.1:1,rediss://127.0.0.1:2".into(),
            ..missing
        };
        let e = Cache::new(&cluster, metrics)
            .err()
            .expect("no file")
            .to_string();
        assert!(e.contains("redis.tls_ca_file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn entries_decode_only_under_their_own_key() {
        let metrics = Arc::new(Metrics::default());
        let cache = Cache::new(&RedisConfig::default(), metrics).unwrap();
        let (name, value) = cache.entry(&CacheKey([5; 32]), "번역");
        assert_eq!(name, cache.redis_key(&CacheKey([5; 32])));
        assert_eq!(value[0], VALUE_VERSION);
        assert_eq!(decode_value(&name, value.clone()).as_deref(), Some("번역"));
        let other = cache.redis_key(&CacheKey([6; 32]));
        assert_eq!(decode_value(&other, value), None);
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
