//! TLS to RabbitMQ (`amqps://`) and Redis (`rediss://`), against private servers with
//! certificates from a throw-away CA made by the `openssl` CLI.
//!
//! - `worker_translates_and_caches_over_tls`: server-authenticated TLS. The worker
//!   knows only the TLS ports; jobs are answered over `amqps://` (RabbitMQ reports the
//!   connection as TLS) and repeats come back `cached: true` (Redis over `rediss://`).
//!   Without `tls_ca_file` the same URLs fail with a certificate error that shows no
//!   password. Then the binary does the same with the CA given as `SSL_CERT_FILE`
//!   (the system-roots path) and the AMQP URL read from `amqp.url_file`.
//! - `mutual_tls_presents_the_client_certificate`: both servers demand a client
//!   certificate (`verify_peer` + `fail_if_no_peer_cert`, `--tls-auth-clients yes`);
//!   with `tls_cert_file`/`tls_key_file` the worker gets through, without them it does
//!   not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::private::{free_port, wait_port, PrivateRabbit, PrivateRedis};
use common::process::WorkerProcess;
use common::*;
use lapin::ConnectionProperties;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use translation_client::{ClientOptions, TranslateRequest};
use translation_worker::amqp::{self, Session};
use translation_worker::config::{AmqpConfig, Config, RedisConfig};
use translation_worker::telemetry::Metrics;
use translation_worker::translate::{Cache, CacheKey};
use translation_worker::worker::Worker;

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client certificate, all
/// PEM, in a temporary directory (removed on drop).
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("tw-pki-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tw-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, cn, usage) in [
            ("server", "localhost", "serverAuth"),
            ("client", "tw-test-client", "clientAuth"),
        ] {
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!(
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                     keyUsage=critical,digitalSignature,keyEncipherment\n\
                     extendedKeyUsage={usage}\n"
                ),
            )
            .expect("temp dir is writable");
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        // The servers read these files; RabbitMQ and Redis run as this user here, but
        // make them world-readable in case they do not (test keys only).
        for f in std::fs::read_dir(&dir).expect("pki dir").flatten() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644));
        }
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        }
    }

    /// `rabbitmq.conf` lines for a TLS listener on `port`.
    fn rabbit_conf(&self, port: u16, require_client_cert: bool) -> String {
        let verify = if require_client_cert {
            "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n"
        } else {
            "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
        };
        format!(
            "listeners.ssl.default = {port}\nssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\nssl_options.keyfile = {}\n{verify}",
            self.ca.display(),
            self.server_cert.display(),
            self.server_key.display()
        )
    }

    /// `redis-server` arguments for a TLS port.
    fn redis_args(&self, port: u16, require_client_cert: bool) -> Vec<String> {
        let mut args: Vec<String> = vec!["--tls-port".into(), port.to_string()];
        for (flag, path) in [
            ("--tls-cert-file", &self.server_cert),
            ("--tls-key-file", &self.server_key),
            ("--tls-ca-cert-file", &self.ca),
        ] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        args.push("--tls-auth-clients".into());
        args.push(if require_client_cert { "yes" } else { "no" }.into());
        args
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private RabbitMQ and Redis, each with a TLS port next to its plain one.
struct TlsServers {
    rabbit: PrivateRabbit,
    amqps_port: u16,
    _redis: PrivateRedis,
    rediss_port: u16,
}

impl TlsServers {
    fn start(pki: &Pki, require_client_cert: bool) -> Self {
        let amqps_port = free_port(&[]);
        let rediss_port = free_port(&[]);
        let rabbit = PrivateRabbit::start(&pki.rabbit_conf(amqps_port, require_client_cert));
        rabbit.wait_port(amqps_port, Duration::from_secs(60));
        let args = pki.redis_args(rediss_port, require_client_cert);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let redis = PrivateRedis::start(&args);
        wait_port(rediss_port, Duration::from_secs(10));
        Self {
            rabbit,
            amqps_port,
            _redis: redis,
            rediss_port,
        }
    }

    /// A test config pointing at the TLS ports only, trusting `pki`'s CA.
    fn config(&self, pki: &Pki) -> Config {
        let mut c = test_config();
        c.amqp.url = format!("amqps://guest:guest@localhost:{}/%2f", self.amqps_port);
        c.amqp.tls_ca_file = pki.ca.clone();
        c.redis.url = format!("rediss://localhost:{}", self.rediss_port);
        c.redis.tls_ca_file = pki.ca.clone();
        // A TLS handshake on 2 busy cores can take longer than the default 250 ms.
        c.redis.timeout_ms = 2_000;
        c.http.listen = String::new();
        c
    }
}

/// Checks `config` the way the binary does (TOML through `Config::from_sources`, which
/// validates and reads the TLS files), so the test runs what an operator would configure.
fn operator_config(config: &Config) -> Config {
    let text = toml::to_string(config).expect("config serializes");
    Config::from_sources(&text, None, Vec::<(String, String)>::new())
        .expect("the TLS configuration is valid")
}

/// A [`Bus`] over the same TLS connect path the worker uses.
async fn tls_bus(cfg: &AmqpConfig) -> Bus {
    let conn = amqp::connect(cfg, ConnectionProperties::default())
        .await
        .expect("client connects over TLS");
    Bus::on_connection(conn).await
}

/// Sends `texts` as one job to `queue` and returns its reply.
async fn rpc(bus: &Bus, queue: &str, texts: &[String]) -> Value {
    let body = serde_json::to_vec(&json!({ "texts": texts })).expect("job JSON");
    bus.rpc(queue, &body).await
}

/// Starts a worker on `config`; waits (over the plain port) until it consumes.
async fn run_worker(
    config: &Config,
    rabbit: &PrivateRabbit,
) -> (
    Arc<Metrics>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), translation_worker::worker::WorkerError>>,
) {
    let worker = Worker::start(config.clone()).await.expect("worker starts");
    let metrics = worker.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    wait_for_consumer_at(&rabbit.url(), &config.amqp.queue).await;
    (metrics, shutdown, task)
}

/// Translates `texts` twice over TLS: first computed, then all from the cache.
async fn translate_twice(config: &Config, metrics: &Metrics, texts: &[String]) {
    let client = tls_bus(&config.amqp).await;
    let first = rpc(&client, &config.amqp.queue, texts).await;
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(translations(&first), texts);
    assert_eq!(cached(&first), vec![false; texts.len()]);
    wait_for_stores(metrics, texts.len() as u64).await;
    let second = rpc(&client, &config.amqp.queue, texts).await;
    assert_eq!(translations(&second), texts);
    assert_eq!(
        cached(&second),
        vec![true; texts.len()],
        "repeats come from Redis over TLS: {second}"
    );
    assert_eq!(metrics.cache_errors.get(), 0);
    assert_eq!(metrics.redis_up.get(), 1);
    let _ = client.conn.close(200, "ok".into()).await;
}

/// A cache on `cfg`: does one lookup reach Redis (no cache error)?
async fn cache_reaches_redis(cfg: &RedisConfig) -> bool {
    let metrics = Arc::new(Metrics::default());
    let cache = Cache::new(cfg, metrics.clone()).expect("cache set-up");
    let _ = cache.get_many(&[CacheKey([9; 32])]).await;
    metrics.cache_errors.get() == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_translates_and_caches_over_tls() {
    let pki = Pki::generate();
    let servers = TlsServers::start(&pki, false);
    let config = operator_config(&servers.config(&pki));

    // Without the CA file the server certificate is unknown: a clear certificate error
    // naming the redacted URL, never the password.
    let secret = "tls-s3cr3t-Q7";
    let mut no_ca = config.amqp.clone();
    no_ca.tls_ca_file = PathBuf::new();
    no_ca.url = format!(
        "amqps://guest:{secret}@localhost:{}/%2f",
        servers.amqps_port
    );
    let err = Session::open(&no_ca, &[])
        .await
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    eprintln!("without the CA: {err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(
        err.contains("amqp.tls_ca_file"),
        "the hint names the key: {err}"
    );
    assert!(err.contains("guest:***@localhost"), "{err}");
    assert!(!err.contains(secret), "password leaked: {err}");
    let mut redis_no_ca = config.redis.clone();
    redis_no_ca.tls_ca_file = PathBuf::new();
    assert!(!cache_reaches_redis(&redis_no_ca).await);
    assert!(cache_reaches_redis(&config.redis).await);

    let (metrics, shutdown, task) = run_worker(&config, &servers.rabbit).await;
    let texts: Vec<String> = (0..3)
        .map(sample_text)
        .chain(["TLS 테스트".into()])
        .collect();
    translate_twice(&config, &metrics, &texts).await;
    // RabbitMQ's own view: the worker's connection (and the client's) are TLS.
    let conns = servers.rabbit.ctl(&["list_connections", "ssl", "port"]);
    let tls_rows = conns
        .lines()
        .filter(|l| l.starts_with("true") && l.ends_with(&servers.amqps_port.to_string()))
        .count();
    assert!(
        tls_rows >= 1,
        "no TLS connection on the amqps port: {conns}"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;

    // The binary, with no tls_ca_file but the CA as SSL_CERT_FILE (the system-roots
    // path), and the AMQP URL from a mounted file (`amqp.url_file`).
    let url_file = pki.dir.join("amqp-url");
    std::fs::write(&url_file, format!("{}\n", config.amqp.url)).expect("pki dir is writable");
    let mut plain_env = config.clone();
    plain_env.amqp.url = "amqp://not-used:x@127.0.0.1:1/%2f".into();
    let process = WorkerProcess::spawn(
        &plain_env,
        &[
            ("TW_AMQP__URL_FILE", url_file.to_str().expect("UTF-8 path")),
            ("SSL_CERT_FILE", pki.ca.to_str().expect("UTF-8 path")),
            ("TW_REDIS__TIMEOUT_MS", "2000"),
        ],
    );
    wait_for_consumer_at(&servers.rabbit.url(), &config.amqp.queue).await;
    let client = tls_bus(&config.amqp).await;
    let texts: Vec<String> = (20..23).map(sample_text).collect();
    let first = rpc(&client, &config.amqp.queue, &texts).await;
    assert_eq!(translations(&first), texts, "{first}");
    assert_eq!(cached(&first), vec![false; texts.len()]);
    // The store follows the reply: ask again until it has landed (or fail).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = rpc(&client, &config.amqp.queue, &texts).await;
        assert_eq!(translations(&again), texts);
        if cached(&again) == vec![true; texts.len()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never cached over rediss: {again}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client.conn.close(200, "ok".into()).await;
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::generate();
    let servers = TlsServers::start(&pki, true);
    let mut config = servers.config(&pki);
    config.amqp.tls_cert_file = pki.client_cert.clone();
    config.amqp.tls_key_file = pki.client_key.clone();
    config.redis.tls_cert_file = pki.client_cert.clone();
    config.redis.tls_key_file = pki.client_key.clone();
    let config = operator_config(&config);

    // Servers that demand a client certificate refuse a client without one.
    let mut anonymous = config.amqp.clone();
    anonymous.tls_cert_file = PathBuf::new();
    anonymous.tls_key_file = PathBuf::new();
    assert!(Session::open(&anonymous, &[]).await.is_err());
    let mut redis_anonymous = config.redis.clone();
    redis_anonymous.tls_cert_file = PathBuf::new();
    redis_anonymous.tls_key_file = PathBuf::new();
    assert!(!cache_reaches_redis(&redis_anonymous).await);

    let (metrics, shutdown, task) = run_worker(&config, &servers.rabbit).await;
    let texts: Vec<String> = (10..12).map(sample_text).collect();
    translate_twice(&config, &metrics, &texts).await;
    let conns = servers
        .rabbit
        .ctl(&["list_connections", "ssl", "peer_cert_subject"]);
    assert!(
        conns.contains("tw-test-client"),
        "RabbitMQ saw the client certificate: {conns}"
    );
    // The client library (and so the HTTP gateway) connects the same way: the CA file
    // and the client certificate of the `amqp` settings.
    let client = amqp::connect_client(
        &config.amqp,
        ClientOptions {
            exchange: config.amqp.exchange.clone(),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("the client connects over mutual TLS");
    let reply = client
        .translate(TranslateRequest::new("ko", "en", texts.clone()))
        .await
        .expect("translated over mutual TLS");
    assert_eq!(reply.translations, texts);
    client.close().await;
    assert!(
        amqp::connect_client(&anonymous, ClientOptions::default())
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}
