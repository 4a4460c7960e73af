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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;

use translation_client::url::redact_url;

use crate::config::{ConfigError, RedisConfig, RedisMode};
use crate::telemetry::Metrics;
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
    /// The Redis URL (or a cluster seed) could not be parsed (the message carries the
    /// redacted URL).
    #[error("invalid redis URL {url}: {message}")]
    Url {
        /// Redacted URL.
        url: String,
        /// Parser message.
        message: String,
    },
    /// The TLS files (`redis.tls_*`) could not be read.
    #[error(transparent)]
    TlsFiles(#[from] ConfigError),
    /// The TLS files were read but Redis' TLS set-up refused them (e.g. a PEM block
    /// that does not parse).
    #[error("redis TLS set-up for {url} failed: {message}")]
    Tls {
        /// Redacted URL.
        url: String,
        /// redis-rs' message.
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

/// The connection to standalone Redis or to a Redis Cluster.
enum Connection {
    /// One server; the manager reconnects by itself.
    Standalone(ConnectionManager),
    /// A cluster, through its seed nodes (boxed: the client is large).
    Cluster(Box<LazyCluster>),
}

/// A cluster connection made on first use and made afresh after a failure.
///
/// The cluster connection follows slot moves and reconnects single nodes itself; it is
/// still dropped after any failure, so the breaker's next probe starts from the seeds
/// (the whole cluster may have been restarted, on new addresses).
struct LazyCluster {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
    /// Held while connecting, so concurrent jobs wait for one connection attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl LazyCluster {
    fn current(&self) -> Option<ClusterConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn get(&self) -> RedisResult<ClusterConnection> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let c = self.client.get_async_connection().await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn reset(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
        match self {
            Connection::Standalone(m) => {
                let mut conn = m.clone();
                redis::cmd("PING").query_async(&mut conn).await
            }
            Connection::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                redis::cmd("PING").query_async(&mut conn).await
            }
        }
    }

    /// Forgets the connection after a failure (cluster only; the manager reconnects).
    fn reset(&self) {
        if let Connection::Cluster(lazy) = self {
            lazy.reset();
        }
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
            Some(connect_lazy(cfg)?)
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

/// The redis-rs TLS settings of `cfg`, or `None` when no TLS file is set (then a
/// `rediss://` URL trusts the system roots). Reads the files: a few KB, once, while
/// the worker starts (Config::load has read them already, before the runtime).
fn tls_certificates(cfg: &RedisConfig) -> Result<Option<redis::TlsCertificates>, CacheError> {
    let files = cfg.tls_files();
    if !files.any_set() {
        return Ok(None);
    }
    let pem = files.read()?;
    let client_tls = match (pem.client_cert, pem.client_key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert: pem.ca.map(String::into_bytes),
    }))
}

/// Builds the (lazy) connection for `cfg.mode`. Nothing is connected yet.
fn connect_lazy(cfg: &RedisConfig) -> Result<Connection, CacheError> {
    let url_err = |e: redis::RedisError| CacheError::Url {
        url: redact_url(&cfg.url),
        message: e.to_string(),
    };
    let tls_err = |e: redis::RedisError| CacheError::Tls {
        url: redact_url(&cfg.url),
        message: e.to_string(),
    };
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let certs = tls_certificates(cfg)?;
    match cfg.mode {
        RedisMode::Standalone => {
            let client = match certs {
                Some(certs) => {
                    // Parse the URL first, so a URL error is reported as one.
                    let info = redis::IntoConnectionInfo::into_connection_info(cfg.url.as_str())
                        .map_err(url_err)?;
                    redis::Client::build_with_tls(info, certs).map_err(tls_err)?
                }
                None => redis::Client::open(cfg.url.as_str()).map_err(url_err)?,
            };
            let mgr_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // One quick retry inside the manager; the breaker handles longer outages.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(100));
            let mgr = ConnectionManager::new_lazy_with_config(client, mgr_cfg).map_err(url_err)?;
            Ok(Connection::Standalone(mgr))
        }
        RedisMode::Cluster => {
            let seeds = cfg.urls();
            let mut builder = ClusterClient::builder(seeds);
            if let Some(certs) = certs {
                // The same roots and client certificate for every node, seeds and
                // discovered ones alike.
                builder = builder.certs(certs);
            }
            let client = builder
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // Few, quick retries (a MOVED/ASK redirect takes one); the breaker
                // handles longer outages.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100)
                .build()
                .map_err(url_err)?;
            Ok(Connection::Cluster(Box::new(LazyCluster {
                client,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })))
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
