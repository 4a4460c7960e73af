//! Security guarantees of issue 3:
//!
//! - URLs are redacted in every log line and error message: a worker runs against a
//!   private RabbitMQ and Redis whose passwords are distinctive strings (successful
//!   sessions, wrong passwords, closed ports) while every tracing event of every crate,
//!   `log` records included, is captured at TRACE level as JSON; no password appears
//!   there nor in any returned error (`Display` and `Debug`), and the redacted forms do.
//!   The `check-config` subcommand is checked the same way through the binary.
//! - A corrupt or foreign value under a job's exact cache key is a miss (counted in
//!   `cache_corrupt`), never returned as a translation.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::private::{free_port, PrivateRabbit, PrivateRedis};
use common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use translation_worker::amqp::Session;
use translation_worker::config::{Config, RedisConfig, RedisMode};
use translation_worker::telemetry::Metrics;
use translation_worker::translate::Engine;
use translation_worker::translate::{Cache, CacheKey, KeyContext};
use translation_worker::worker::Worker;

/// Everything logged by this test binary, as JSON lines.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a global TRACE-level JSON subscriber writing to [`LOGS`]. `try_init`
/// also routes the `log` crate (used by redis-rs) into it.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || LogBuffer(writer.clone()))
            .try_init()
            .expect("no other subscriber in this test binary");
        buf
    })
    .clone()
}

fn logs_text() -> String {
    String::from_utf8_lossy(&capture_logs().lock().unwrap()).into_owned()
}

/// Every password the redaction test uses, and nothing else of the URLs.
const AMQP_SECRET: &str = "s3cr3t-AMQP-q8Zr";
const AMQP_WRONG: &str = "s3cr3t-WRONG-AMQP-w4Kx";
const REDIS_SECRET: &str = "s3cr3t-REDIS-m2Pv";
const REDIS_WRONG: &str = "s3cr3t-WRONG-REDIS-t7Jd";
const CLOSED_SECRET: &str = "s3cr3t-CLOSED-h5Nb";
const ALL_SECRETS: [&str; 5] = [
    AMQP_SECRET,
    AMQP_WRONG,
    REDIS_SECRET,
    REDIS_WRONG,
    CLOSED_SECRET,
];

fn assert_no_secret(what: &str, text: &str) {
    for s in ALL_SECRETS {
        if let Some(at) = text.find(s) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(300)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what} shows the password {s}: ...{}...",
                &text[from..(at + s.len() + 100).min(text.len())]
            );
        }
    }
}

/// Runs a worker on `config` for `how_long` (it retries the broker and the cache
/// meanwhile), then stops it. Also processes one job without the broker, so the cache
/// is used.
async fn run_briefly(config: Config, how_long: Duration) {
    let worker = Worker::start(config).await.expect("worker starts");
    let body = serde_json::to_vec(&json!({ "texts": ["비밀번호 테스트"] })).unwrap();
    let outcome = worker.process(&body).await;
    assert!(outcome.reply.to_bytes().starts_with(b"{"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    tokio::time::sleep(how_long).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_logs_or_errors() {
    capture_logs();
    let rabbit = PrivateRabbit::start("");
    rabbit.ctl(&["add_user", "tw-sec", AMQP_SECRET]);
    rabbit.ctl(&["set_permissions", "-p", "/", "tw-sec", ".*", ".*", ".*"]);
    let redis = PrivateRedis::start(&["--requirepass", REDIS_SECRET]);
    let amqp_url = |pw: &str, port: u16| format!("amqp://tw-sec:{pw}@127.0.0.1:{port}/%2f");
    let redis_url = |pw: &str, port: u16| format!("redis://:{pw}@127.0.0.1:{port}");
    let mut errors: Vec<String> = Vec::new();

    // 1. Everything works: full AMQP handshake, Redis AUTH, jobs answered and cached.
    let mut config = test_config();
    config.amqp.url = amqp_url(AMQP_SECRET, rabbit.port);
    config.redis.url = redis_url(REDIS_SECRET, redis.port);
    config.http.listen = String::new();
    errors.push(format!("{config:?}"));
    let worker = Worker::start(config.clone()).await.expect("worker starts");
    let metrics = worker.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    wait_for_consumer_at(&rabbit.url(), &config.amqp.queue).await;
    let bus = Bus::connect_to(&rabbit.url()).await;
    let body = serde_json::to_vec(&json!({ "texts": ["보안 테스트", "redaction"] })).unwrap();
    let reply = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(translations(&reply), ["보안 테스트", "redaction"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.cache_stores.get() < 2 {
        assert!(Instant::now() < deadline, "the cache never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(
        cached(&reply),
        [true, true],
        "Redis with AUTH works: {reply}"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;

    // 2. Wrong passwords: the broker refuses the login, Redis answers WRONGPASS.
    let mut wrong = test_config();
    wrong.amqp.url = amqp_url(AMQP_WRONG, rabbit.port);
    wrong.redis.url = redis_url(REDIS_WRONG, redis.port);
    wrong.http.listen = String::new();
    let refused = Session::open(&wrong.amqp, &[])
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(refused.is_refused(), "{refused:?}");
    let said = refused.to_string();
    assert!(
        said.contains("ACCESS_REFUSED") && said.contains("amqp.url"),
        "the message names the broker's reason and the setting: {said}"
    );
    errors.push(format!("{refused}\n{refused:?}"));
    // A worker whose first login is refused stops with that error instead of
    // retrying for ever (the binary exits non-zero).
    let worker = Worker::start(wrong.clone()).await.expect("worker starts");
    let ran = tokio::time::timeout(
        Duration::from_secs(20),
        worker.run(CancellationToken::new()),
    )
    .await
    .expect("a refused first login stops the worker");
    let err = ran.expect_err("the worker reports the refusal");
    assert!(err.to_string().contains("refused the connection"), "{err}");
    errors.push(format!("{err}\n{err:?}"));
    run_briefly(wrong, Duration::from_millis(1500)).await;

    // 3. Nothing listens: connection refused on both.
    let closed = free_port(&[]);
    let mut dead = test_config();
    dead.amqp.url = amqp_url(CLOSED_SECRET, closed);
    dead.redis.url = redis_url(CLOSED_SECRET, closed);
    dead.http.listen = String::new();
    errors.push(
        Session::open(&dead.amqp, &[])
            .await
            .err()
            .map(|e| format!("{e}\n{e:?}"))
            .expect("nothing listens"),
    );
    run_briefly(dead, Duration::from_millis(1500)).await;
    // Redis Cluster mode, whose client logs its failures itself (through `log`).
    let cluster = RedisConfig {
        mode: RedisMode::Cluster,
        url: format!(
            "{},{}",
            redis_url(CLOSED_SECRET, closed),
            redis_url(CLOSED_SECRET, free_port(&[]))
        ),
        timeout_ms: 200,
        ..RedisConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let cache = Cache::new(&cluster, metrics.clone()).expect("lazy cluster client");
    assert_eq!(cache.get_many(&[CacheKey([3; 32])]).await, vec![None]);
    assert_eq!(metrics.cache_errors.get(), 1);

    // 4. Start-up errors: a URL Redis cannot parse, configurations that fail validation.
    let unparsable = RedisConfig {
        url: format!("redis://:{CLOSED_SECRET}@127.0.0.1:notaport"),
        ..RedisConfig::default()
    };
    errors.push(
        Cache::new(&unparsable, Arc::new(Metrics::default()))
            .err()
            .map(|e| format!("{e}\n{e:?}"))
            .expect("the URL does not parse"),
    );
    for (var, value) in [
        ("TW_AMQP__URL", format!("http://u:{AMQP_SECRET}@h/")),
        ("TW_REDIS__URL", format!("http://:{REDIS_SECRET}@h/")),
        ("TW_AMQP__TLS_CA_FILE", "/etc/hostname".to_string()),
    ] {
        let mut env = vec![(var.to_string(), value)];
        if var != "TW_REDIS__URL" {
            // A password elsewhere in the configuration must not show either.
            env.push(("TW_REDIS__URL".into(), redis_url(REDIS_WRONG, 1)));
        }
        errors.push(
            Config::from_sources("", None, env)
                .err()
                .map(|e| format!("{e}\n{e:?}"))
                .expect("the configuration is invalid"),
        );
    }

    let logs = logs_text();
    for e in &errors {
        assert_no_secret("an error", e);
    }
    assert_no_secret("the logs", &logs);
    // The redaction is there, and the capture did see the dependencies' TRACE events
    // (so a leak from lapin or redis-rs would have been caught).
    assert!(
        logs.contains("amqp://tw-sec:***@127.0.0.1"),
        "no redacted AMQP URL logged"
    );
    assert!(
        logs.contains("redis://:***@127.0.0.1"),
        "no redacted Redis URL logged"
    );
    assert!(
        logs.contains(r#""level":"TRACE""#),
        "no TRACE events captured"
    );
    assert!(
        logs.contains(r#""target":"lapin"#),
        "no lapin events captured"
    );
    assert!(
        logs.contains(r#""target":"redis"#),
        "no redis-rs `log` records captured"
    );
    assert!(
        logs.contains("redis unavailable"),
        "no Redis failure logged"
    );
    assert!(
        logs.contains("broker unavailable"),
        "no broker failure logged"
    );
    let all_errors = errors.join("\n");
    assert!(all_errors.contains("tw-sec:***@127.0.0.1"), "{all_errors}");
    assert!(all_errors.contains("ACCESS_REFUSED") || all_errors.contains("refused"));
    // The configuration's `Debug` output (the first entry) is redacted too.
    assert!(
        errors[0].contains("redis://:***@127.0.0.1"),
        "{}",
        errors[0]
    );
}

/// The binary, run from the crate root with only the given `TW_*` variables.
fn check_config(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_translation-worker"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check-config")
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("TW_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_shows_urls_redacted() {
    let amqp = format!("amqps://tw:{AMQP_SECRET}@mq.example:5671/%2f");
    let redis = format!("rediss://:{REDIS_SECRET}@cache.example:6380/0");
    let (ok, out, err) = check_config(&[("TW_AMQP__URL", &amqp), ("TW_REDIS__URL", &redis)], &[]);
    assert!(ok, "{err}");
    assert_no_secret("check-config", &format!("{out}{err}"));
    assert!(out.contains("amqps://tw:***@mq.example:5671/%2f"), "{out}");
    assert!(out.contains("rediss://:***@cache.example:6380/0"), "{out}");

    // The same from mounted files (url_file), with the trailing newline files have.
    let dir = std::env::temp_dir().join(format!("tw-sec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let amqp_file = dir.join("amqp-url");
    let redis_file = dir.join("redis-url");
    std::fs::write(&amqp_file, format!("{amqp}\n")).unwrap();
    std::fs::write(&redis_file, format!("{redis}\n")).unwrap();
    let (ok, out, err) = check_config(
        &[
            ("TW_AMQP__URL_FILE", amqp_file.to_str().unwrap()),
            ("TW_REDIS__URL_FILE", redis_file.to_str().unwrap()),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_no_secret("check-config with url_file", &format!("{out}{err}"));
    assert!(out.contains("amqps://tw:***@mq.example:5671/%2f"), "{out}");
    assert!(out.contains(amqp_file.to_str().unwrap()), "{out}");

    // Failures: an invalid URL, and a config file that is not TOML on a password line.
    let bad = format!("http://tw:{AMQP_SECRET}@mq.example/");
    let (ok, out, err) = check_config(&[("TW_AMQP__URL", &bad)], &[]);
    assert!(!ok);
    assert_no_secret("check-config failure", &format!("{out}{err}"));
    assert!(err.contains("amqp.url"), "{err}");
    let file = dir.join("broken.toml");
    std::fs::write(&file, format!("[amqp]\nurl = \"{amqp}\" oops\n")).unwrap();
    let (ok, out, err) = check_config(&[], &["--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert_no_secret("check-config syntax error", &format!("{out}{err}"));
    assert!(err.contains("line 2"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_foreign_cache_values_are_misses() {
    let config = test_config();
    // The exact keys the worker will use: same model fingerprint, pair and options.
    let model = config.model.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&model))
        .await
        .unwrap()
        .expect("model loads");
    let keys = KeyContext {
        model_fingerprint: engine.fingerprint(),
        source: config.model.source.clone(),
        target: config.model.target.clone(),
    };
    drop(engine);
    let options = config.model.decode_options();
    let cache = Cache::new(&config.redis, Arc::new(Metrics::default())).unwrap();
    let other_ns = Cache::new(
        &RedisConfig {
            key_prefix: format!("{}-other", config.redis.key_prefix),
            ..config.redis.clone()
        },
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let texts: Vec<String> = (0..5).map(sample_text).collect();
    let key = |t: &str| keys.key(&options, t);
    let wrong = "WRONG: not the translation";
    let seeded = "seeded translation";
    let seeds: Vec<(String, Vec<u8>)> = vec![
        // Garbage.
        (
            cache.redis_key(&key(&texts[0])),
            b"\xff\x00garbage".to_vec(),
        ),
        // A well-formed value of another key, copied under this one.
        (
            cache.redis_key(&key(&texts[1])),
            cache.entry(&key("some other text"), wrong).1,
        ),
        // A well-formed value of the same key from another namespace (key prefix).
        (
            cache.redis_key(&key(&texts[2])),
            other_ns.entry(&key(&texts[2]), wrong).1,
        ),
        // The old layout (version byte 1 + text), not bound to its key.
        (
            cache.redis_key(&key(&texts[3])),
            [&[1u8][..], wrong.as_bytes()].concat(),
        ),
        // Control: a genuine entry at the exact key is a hit, so the keys above are
        // the ones the worker reads.
        cache.entry(&key(&texts[4]), seeded),
    ];
    let client = redis::Client::open(config.redis.url.as_str()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for (name, value) in &seeds {
        let () = redis::cmd("SET")
            .arg(name)
            .arg(value)
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    let worker = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let body = serde_json::to_vec(&json!({ "texts": texts })).unwrap();
    let reply = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let mut expected = texts[..4].to_vec();
    expected.push(seeded.to_string());
    assert_eq!(translations(&reply), expected);
    assert_eq!(cached(&reply), [false, false, false, false, true]);
    assert_eq!(worker.metrics.cache_corrupt.get(), 4);
    // The bad entries were overwritten with real translations.
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker.metrics.cache_stores.get() < 4 {
        assert!(Instant::now() < deadline, "the cache never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(translations(&again), expected);
    assert_eq!(cached(&again), [true; 5]);
    assert_eq!(worker.metrics.cache_corrupt.get(), 4);

    worker.stop().await;
    for (name, _) in &seeds {
        let _: Result<(), _> = redis::cmd("DEL").arg(name).query_async(&mut conn).await;
    }
    cleanup(&config).await;
}
