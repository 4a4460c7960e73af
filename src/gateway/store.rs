//! The gateway's Redis (the `[redis]` section, standalone or cluster, TLS alike): the
//! translated files of `/translate_file` and the request counters of the rate limit,
//! shared by every gateway replica.
//!
//! Every command is bounded by a deadline, and after a failure Redis is skipped for
//! `redis.breaker_cooldown_ms`, so a dead Redis costs a fast error, never a hang.
//!
//! The connection is the worker cache's own ([`Connection`]), with a longer deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::RedisConfig;
use crate::translate::redis_conn::{ConnectError, Connection};

/// Shortest deadline of one command: files are far larger than cache entries, so the
/// cache's `redis.timeout_ms` (250 ms by default) would be too tight for them.
const MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One fixed window of the rate limit: `INCR`, and `EXPIRE` on the window's first
/// request, atomically; answers the count and the seconds left in the window.
const HIT_SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) \
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end \
local ttl = redis.call('TTL', KEYS[1]) \
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end \
return {n, ttl}";

/// Errors of the gateway's Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection could not be set up (URL or TLS files).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A command took longer than its deadline.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A recent failure: Redis is skipped until the cool-down ends.
    #[error("redis is unavailable (recent failure; retrying after a cool-down)")]
    CoolingDown,
}

/// The gateway's Redis: files and rate-limit counters under `<redis.key_prefix>:gw:`.
pub(super) struct Store {
    conn: Connection,
    prefix: String,
    timeout: Duration,
    cooldown_ms: u64,
    /// Milliseconds since `epoch` until which Redis is skipped; 0 = closed.
    open_until_ms: AtomicU64,
    epoch: Instant,
}

impl Store {
    /// The store over `cfg`; nothing is connected until the first command.
    pub(super) fn new(cfg: &RedisConfig) -> Result<Self, StoreError> {
        let timeout = Duration::from_millis(cfg.timeout_ms).max(MIN_TIMEOUT);
        Ok(Self {
            conn: Connection::lazy(cfg, timeout)?,
            prefix: format!("{}:gw", cfg.key_prefix),
            timeout,
            cooldown_ms: cfg.breaker_cooldown_ms,
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `cmd` within the deadline, unless a recent failure is cooling down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until != 0 && self.now_ms() < open_until {
            return Err(StoreError::CoolingDown);
        }
        let result = match tokio::time::timeout(self.timeout, self.conn.query(&cmd)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => self.open_until_ms.store(0, Ordering::Release),
            Err(_) => {
                self.conn.reset();
                self.open_until_ms.store(
                    self.now_ms().saturating_add(self.cooldown_ms).max(1),
                    Ordering::Release,
                );
            }
        }
        result
    }

    fn file_key(&self, name: &str) -> String {
        format!("{}:file:{name}", self.prefix)
    }

    /// Keeps `bytes` as the file `name` for `ttl_secs`.
    pub(super) async fn put_file(
        &self,
        name: &str,
        bytes: &[u8],
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.file_key(name))
            .arg(bytes)
            .arg("EX")
            .arg(ttl_secs);
        self.run(cmd).await
    }

    /// The file `name`, or `None` when it never existed or has expired.
    pub(super) async fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.file_key(name));
        self.run(cmd).await
    }

    /// Counts one request of `bucket` in its current window of `window_secs`: the
    /// count so far (this one included) and the seconds until the window ends.
    pub(super) async fn hit(
        &self,
        bucket: &str,
        window_secs: u64,
    ) -> Result<(u64, u64), StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(HIT_SCRIPT)
            .arg(1)
            .arg(format!("{}:rl:{bucket}", self.prefix))
            .arg(window_secs);
        let (n, ttl): (i64, i64) = self.run(cmd).await?;
        Ok((
            u64::try_from(n).unwrap_or(0),
            u64::try_from(ttl).unwrap_or(window_secs),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_redis_fails_fast_then_cools_down() {
        let cfg = RedisConfig {
            // Nothing listens there.
            url: "redis://127.0.0.1:1".into(),
            breaker_cooldown_ms: 60_000,
            ..RedisConfig::default()
        };
        let store = Store::new(&cfg).expect("lazy store");
        let start = Instant::now();
        let e = store.get_file("x").await.unwrap_err();
        assert!(!matches!(e, StoreError::CoolingDown), "{e}");
        let e = store.hit("b", 60).await.unwrap_err();
        assert!(matches!(e, StoreError::CoolingDown), "{e}");
        assert!(start.elapsed() < MIN_TIMEOUT * 3, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn files_and_counters_round_trip_on_the_local_redis() {
        let cfg = RedisConfig {
            key_prefix: format!("tw-test-{}", uuid::Uuid::new_v4().simple()),
            ..RedisConfig::default()
        };
        let store = Store::new(&cfg).expect("lazy store");
        store.put_file("a.txt", b"bytes", 60).await.expect("SET");
        assert_eq!(
            store.get_file("a.txt").await.expect("GET").as_deref(),
            Some(&b"bytes"[..])
        );
        assert_eq!(store.get_file("b.txt").await.expect("GET"), None);
        let (n, ttl) = store.hit("k", 60).await.expect("EVAL");
        assert_eq!(n, 1);
        assert!((1..=60).contains(&ttl), "{ttl}");
        assert_eq!(store.hit("k", 60).await.expect("EVAL").0, 2);
    }
}
