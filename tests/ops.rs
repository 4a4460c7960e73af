//! Operations: `/healthz`, `/readyz` and `/metrics` of a running worker, scraped over
//! real HTTP while real jobs flow; readiness follows the broker connection (cut here
//! with a TCP proxy in front of RabbitMQ, so other tests keep their broker).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use translation_worker::telemetry::HttpServer;
use translation_worker::telemetry::Metrics;
use translation_worker::worker::Worker;

/// A TCP proxy to the local RabbitMQ that can cut every connection and refuse new
/// ones, as a broker outage looks to the worker.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused, in effect
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect("127.0.0.1:5672").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            port,
            down,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Drops every proxied connection and refuses new ones.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A plain HTTP/1.1 GET: status code and body.
async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("HTTP response is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// The value of one sample line (`name{labels} value`) in a Prometheus exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The operations listener over `metrics` on a free port: its port, its stop token
/// and its task.
async fn serve_probes(
    metrics: Arc<Metrics>,
) -> (
    u16,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), translation_worker::telemetry::HttpError>>,
) {
    let server = HttpServer::bind("127.0.0.1:0", metrics).await.unwrap();
    let port = server.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    (port, stop, task)
}

async fn wait_until_status(port: u16, path: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(port, path).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {status} (wanted {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_follow_real_work_and_the_broker() {
    let proxy = Proxy::start().await;
    let mut config = test_config();
    config.amqp.url = proxy.url();
    config.amqp.reconnect_max_ms = 200;
    let metrics = Arc::new(Metrics::default());
    let (port, http_stop, http) = serve_probes(metrics.clone()).await;

    // Before the model is loaded: alive, not ready, no build info yet.
    assert_eq!(get(port, "/healthz").await.0, 200);
    let (status, body) = get(port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["model_loaded"],
        false
    );

    let worker = Worker::start_observed(config.clone(), metrics.clone(), |e| e)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let ready = wait_until_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["broker_connected"], true);
    assert_eq!(ready["consuming"], true);

    let (_, m0) = get(port, "/metrics").await;
    assert_eq!(sample(&m0, "translation_worker_ready"), 1.0);
    assert_eq!(
        sample(&m0, "translation_worker_jobs_total{outcome=\"ok\"}"),
        0.0
    );
    assert!(
        m0.contains("translation_worker_build_info{version=\"")
            && m0.contains("model=\"copy-model\""),
        "{m0}"
    );

    // Real jobs through the broker: 20 distinct texts, one repeat, one bad body.
    let bus = Bus::connect().await;
    for i in 0..20 {
        let r = bus
            .rpc(
                &config.amqp.queue,
                &serde_json::to_vec(&json!({"text": sample_text(i)})).unwrap(),
            )
            .await;
        assert_eq!(r["status"], "ok", "{r}");
    }
    wait_for_stores(&metrics, 20).await;
    let again = serde_json::to_vec(&json!({"text": sample_text(0)})).unwrap();
    assert_eq!(bus.rpc(&config.amqp.queue, &again).await["cached"][0], true);
    let bad = bus.rpc(&config.amqp.queue, b"{not json").await;
    assert_eq!(bad["error"]["code"], "invalid_json", "{bad}");

    // A job's duration and in-flight count are recorded after its ack, which may come
    // a moment after its reply reached us: wait for the last one (or fail below).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, m1) = loop {
        let (status, m) = get(port, "/metrics").await;
        let settled = sample(&m, "translation_worker_job_duration_seconds_count") >= 22.0
            && sample(&m, "translation_worker_jobs_in_flight") == 0.0;
        if settled || std::time::Instant::now() > deadline {
            break (status, m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    assert_eq!(
        sample(&m1, "translation_worker_jobs_total{outcome=\"ok\"}"),
        21.0
    );
    assert_eq!(
        sample(
            &m1,
            "translation_worker_jobs_total{outcome=\"invalid_json\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m1, "translation_worker_segments_total{cache=\"miss\"}"),
        20.0
    );
    assert_eq!(
        sample(&m1, "translation_worker_segments_total{cache=\"hit\"}"),
        1.0
    );
    assert_eq!(
        sample(&m1, "translation_worker_job_duration_seconds_count"),
        22.0
    );
    assert!(sample(&m1, "translation_worker_batch_size_count") >= 1.0);
    assert_eq!(sample(&m1, "translation_worker_batch_size_sum"), 20.0);
    assert!(sample(&m1, "translation_worker_inference_seconds_sum") > 0.0);
    assert_eq!(sample(&m1, "translation_worker_jobs_in_flight"), 0.0);
    assert_eq!(
        sample(&m1, "translation_worker_broker_reconnects_total"),
        0.0
    );

    // The broker goes away: unready within seconds, still alive.
    proxy.cut();
    let body = wait_until_status(port, "/readyz", 503, Duration::from_secs(10)).await;
    assert!(body.contains("\"broker_connected\":false"), "{body}");
    assert_eq!(get(port, "/healthz").await.0, 200);
    let (_, m2) = get(port, "/metrics").await;
    assert_eq!(sample(&m2, "translation_worker_ready"), 0.0);
    assert_eq!(sample(&m2, "translation_worker_broker_connected"), 0.0);

    // It comes back: ready again, and the reconnect is counted.
    proxy.restore();
    wait_until_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    let (_, m3) = get(port, "/metrics").await;
    assert!(sample(&m3, "translation_worker_broker_reconnects_total") >= 1.0);
    let r = bus
        .rpc(
            &config.amqp.queue,
            &serde_json::to_vec(&json!({"text": "after the outage"})).unwrap(),
        )
        .await;
    assert_eq!(r["translations"][0], "after the outage");

    // Draining: unready at once; the listener stops when told.
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    assert_eq!(get(port, "/readyz").await.0, 503);
    http_stop.cancel();
    http.await.unwrap().unwrap();
    cleanup(&config).await;
}

/// Waits until `/readyz` reports `"redis": want`, with no job sent.
async fn wait_for_redis_state(port: u16, want: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, body) = get(port, "/readyz").await;
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        if ready["redis"] == want {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says redis {} after {within:?} (wanted {want}): {body}",
            ready["redis"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle worker reports Redis as it is: up from the start (before any job), down
/// soon after it dies, up again after it returns, all without traffic. `/readyz`
/// stays 200 throughout: the cache is optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_redis_as_it_is_without_traffic() {
    let mut redis = common::private::PrivateRedis::start(&[]);
    let mut config = test_config();
    config.redis.url = redis.url();
    config.redis.breaker_cooldown_ms = 500;
    let metrics = Arc::new(Metrics::default());
    let (port, http_stop, http) = serve_probes(metrics.clone()).await;
    let worker = Worker::start_observed(config.clone(), metrics.clone(), |e| e)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    wait_until_status(port, "/readyz", 200, Duration::from_secs(30)).await;

    // Up at once: the first probe goes out when the worker starts, not with a job.
    wait_for_redis_state(port, "up", Duration::from_secs(2)).await;
    assert_eq!(metrics.redis_up.get(), 1);
    assert_eq!(metrics.jobs_ok.get(), 0, "no job was sent");

    // Down within one probe interval (5 s) plus the command timeout.
    redis.stop();
    let down = wait_for_redis_state(port, "down", Duration::from_secs(8)).await;
    assert_eq!(down["ready"], true, "Redis does not gate readiness: {down}");
    assert_eq!(get(port, "/readyz").await.0, 200);
    assert_eq!(metrics.redis_up.get(), 0);

    // Back within one probe interval plus the breaker's cool-down.
    redis.start_again();
    wait_for_redis_state(port, "up", Duration::from_secs(8)).await;
    assert_eq!(metrics.jobs_ok.get(), 0, "still no job sent");

    // Every step of the teardown is bounded and named: one CI run hung in this test
    // after its listener had closed, and a hang must fail with its place, not stall.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the worker stops within 30 s")
        .expect("worker task")
        .expect("worker ran without error");
    http_stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), http)
        .await
        .expect("the ops listener stops within 10 s")
        .expect("listener task")
        .expect("listener served without error");
    tokio::time::timeout(Duration::from_secs(30), cleanup(&config))
        .await
        .expect("the queues are deleted within 30 s");
}

/// Runs `translation-worker serve` with the copy model, no HTTP listener, no cache
/// and `env` (every other `TW_*` and `RUST_LOG` removed), until it exits or `within`
/// passes (then it is killed). Returns its exit status (`None`: still running) and its
/// stdout, stderr after it.
fn run_serve(env: &[(&str, &str)], within: Duration) -> (Option<std::process::ExitStatus>, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_translation-worker"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TW_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("serve")
        .env_remove("RUST_LOG")
        .env("TW_HTTP__LISTEN", "")
        .env("TW_REDIS__ENABLED", "false")
        .env("TW_MODEL__PATH", "tests/fixtures/copy-model");
    let mut child = cmd
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker binary starts");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    (status, out)
}

/// `log.format = "text"` into a pipe (a file, `kubectl logs`, a collector) carries no
/// ANSI colour codes; the start-up log names the model's input limit.
#[test]
fn text_logs_into_a_pipe_have_no_colour_codes() {
    let (_, out) = run_serve(
        &[
            ("TW_LOG__FORMAT", "text"),
            ("RUST_LOG", "info"),
            // A port nothing listens on: the worker logs its retries and never consumes.
            ("TW_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ],
        Duration::from_secs(8),
    );
    assert!(out.contains("model limits"), "no start-up log: {out}");
    assert!(out.contains("max_input_length=1024"), "{out}");
    assert!(!out.contains('\u{1b}'), "colour codes in a pipe: {out:?}");
}

/// The binary, with the default log levels (no `RUST_LOG`), against the shared broker
/// with a wrong password: it exits non-zero soon, saying plainly that the broker
/// refused the login and which setting to check, and lapin's misleading "attempts
/// exhausted, aborting recovery" line does not appear. Against a port nothing
/// listens on it keeps retrying (an outage, not a configuration error).
#[test]
fn a_refused_login_stops_the_binary_with_a_plain_message() {
    let run = |url: &str, within: Duration| {
        run_serve(&[("TW_LOG__FORMAT", "json"), ("TW_AMQP__URL", url)], within)
    };

    let (status, out) = run(
        "amqp://guest:not-the-password@127.0.0.1:5672/%2f",
        Duration::from_secs(20),
    );
    let status = status.unwrap_or_else(|| panic!("still running after 20 s: {out}"));
    assert!(!status.success(), "{out}");
    assert!(out.contains("refused the connection"), "{out}");
    assert!(out.contains("ACCESS_REFUSED"), "{out}");
    assert!(out.contains("amqp.url"), "{out}");
    assert!(!out.contains("not-the-password"), "{out}");
    assert!(!out.contains("attempts exhausted"), "{out}");

    let closed = common::private::free_port(&[]);
    let (status, out) = run(
        &format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"),
        Duration::from_secs(6),
    );
    assert!(status.is_none(), "an unreachable broker is retried: {out}");
    assert!(out.contains("broker unavailable"), "{out}");
    assert!(out.contains("reconnecting to the broker"), "{out}");
    assert!(!out.contains("attempts exhausted"), "{out}");
}
