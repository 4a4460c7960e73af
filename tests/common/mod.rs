//! Shared test harness: a config on its own random queue/exchange/key prefix, an
//! in-process worker, and a small RPC client over the real broker.
#![allow(dead_code)]

pub mod gateway;
pub mod private;
pub mod process;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use translation_client::wire::DecodeOptions;
use translation_worker::config::Config;
use translation_worker::telemetry::Metrics;
use translation_worker::translate::{Backend, Engine, EngineError};
use translation_worker::worker::Worker;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The bundled copy model: its translation equals its input.
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/copy-model")
}

/// A config whose queue, exchanges and cache keys are unique to this test.
pub fn test_config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut c = Config::default();
    c.amqp.queue = format!("tw-test-{id}.jobs");
    c.amqp.exchange = format!("tw-test-{id}");
    c.amqp.dead_letter = format!("tw-test-{id}.dead");
    c.amqp.reconnect_initial_ms = 50;
    c.amqp.reconnect_max_ms = 500;
    c.redis.key_prefix = format!("tw-test-{id}");
    c.redis.ttl_secs = 600;
    c.model.path = model_dir();
    c.model.threads = 2;
    c.shutdown.drain_timeout_secs = 10;
    c
}

/// A worker running in this process.
pub struct RunningWorker {
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), translation_worker::worker::WorkerError>>,
    pub config: Config,
}

impl RunningWorker {
    /// Stops the worker (graceful drain) and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Starts a worker and waits until its queue exists (topology declared, consuming).
pub async fn start_worker(config: Config) -> RunningWorker {
    start_worker_with(config, |e| e).await
}

/// Like [`start_worker`] with a wrapped engine backend.
pub async fn start_worker_with(
    config: Config,
    wrap: impl FnOnce(Arc<Engine>) -> Arc<dyn Backend>,
) -> RunningWorker {
    let worker = Worker::start_with(config.clone(), wrap)
        .await
        .expect("worker starts");
    let metrics = worker.metrics();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    wait_for_consumer(&config.amqp.queue).await;
    RunningWorker {
        metrics,
        shutdown,
        task,
        config,
    }
}

/// Waits until the worker has stored at least `n` translations in the cache. It
/// stores them after publishing the reply (then acks), so a test that repeats a job
/// right after its reply and expects a cache hit must wait for this first.
pub async fn wait_for_stores(metrics: &translation_worker::telemetry::Metrics, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.cache_stores.get() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} translations were stored (cache errors: {})",
            metrics.cache_stores.get(),
            metrics.cache_errors.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `queue` has at least one consumer.
pub async fn wait_for_consumer(queue: &str) {
    wait_for_consumer_at(AMQP_URL, queue).await;
}

/// Like [`wait_for_consumer`], on the broker at `url`.
pub async fn wait_for_consumer_at(url: &str, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    // A broker that has just started may open its port a moment before it accepts
    // AMQP handshakes.
    let conn = loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "broker at {} never reachable: {e}",
                translation_client::url::redact_url(url)
            ),
        }
    };
    loop {
        // A passive declare on a fresh channel: it fails (and closes the channel) while
        // the queue does not exist yet.
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Ok(q) = res {
            if q.consumer_count() > 0 {
                let _ = ch.close(200, "ok".into()).await;
                break;
            }
        }
        assert!(Instant::now() < deadline, "no consumer on {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "ok".into()).await;
}

/// A client with its own exclusive reply queue that collects replies by correlation id.
pub struct Bus {
    pub conn: Connection,
    pub ch: Channel,
    pub reply_queue: String,
    replies: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    arrived: Arc<Notify>,
}

impl Bus {
    /// Consumes `queue` with automatic acks (dead-letter checks).
    pub async fn consume_no_ack(&self, queue: &str) -> lapin::Consumer {
        self.ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume")
    }

    pub async fn connect() -> Self {
        Self::connect_to(AMQP_URL).await
    }

    /// Like [`Bus::connect`], on the broker at `url` (a private node of a drill).
    pub async fn connect_to(url: &str) -> Self {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("broker reachable");
        Self::on_connection(conn).await
    }

    /// A bus over an open connection (e.g. one made over TLS by `broker::connect`).
    pub async fn on_connection(conn: Connection) -> Self {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let (reply_queue, mut consumer) = reply_consumer(&ch).await;
        let replies: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        {
            let replies = replies.clone();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                while let Some(Ok(d)) = consumer.next().await {
                    let corr = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default();
                    assert_eq!(
                        d.properties.content_type().as_ref().map(|c| c.as_str()),
                        Some("application/json")
                    );
                    let v: Value = serde_json::from_slice(&d.data).expect("reply is JSON");
                    replies.lock().unwrap().entry(corr).or_default().push(v);
                    arrived.notify_waiters();
                }
            });
        }
        Self {
            conn,
            ch,
            reply_queue,
            replies,
            arrived,
        }
    }

    /// Publishes `body` (confirmed) to `exchange`/`routing_key` with a reply address.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        corr: &str,
        body: &[u8],
        with_reply: bool,
    ) {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(corr.into())
            .with_delivery_mode(2);
        if with_reply {
            props = props.with_reply_to(self.reply_queue.as_str().into());
        }
        let confirm = self
            .ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
    }

    /// Publishes straight to a queue.
    pub async fn publish(&self, queue: &str, corr: &str, body: &[u8]) {
        self.publish_to("", queue, corr, body, true).await;
    }

    /// Publishes and waits for the reply.
    pub async fn rpc(&self, queue: &str, body: &[u8]) -> Value {
        let corr = uuid::Uuid::new_v4().to_string();
        self.publish(queue, &corr, body).await;
        self.wait_for(std::slice::from_ref(&corr), Duration::from_secs(30))
            .await;
        self.replies(&corr)[0].clone()
    }

    /// Waits until every id in `corrs` has at least one reply (panics on timeout).
    pub async fn wait_for(&self, corrs: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let missing = {
                let r = self.replies.lock().unwrap();
                corrs.iter().filter(|c| !r.contains_key(*c)).count()
            };
            if missing == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{missing} of {} replies missing",
                corrs.len()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Every reply received for `corr`.
    pub fn replies(&self, corr: &str) -> Vec<Value> {
        self.replies
            .lock()
            .unwrap()
            .get(corr)
            .cloned()
            .unwrap_or_default()
    }

    /// Count of replies per correlation id.
    pub fn reply_counts(&self) -> HashMap<String, usize> {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
}

/// An exclusive, server-named reply queue on `ch` and its auto-ack consumer.
pub async fn reply_consumer(ch: &Channel) -> (String, lapin::Consumer) {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("reply queue");
    let queue = q.name().as_str().to_string();
    let consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume replies");
    (queue, consumer)
}

/// Deletes a test's queues and exchanges.
pub async fn cleanup(config: &Config) {
    // Bounded: teardown must never hang a test (a CI run once sat here for minutes);
    // what it leaves behind has a random name and harms no other test.
    let teardown = async {
        let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await else {
            return;
        };
        if let Ok(ch) = conn.create_channel().await {
            // The worker also declares the job queue's interactive lane.
            let lane = translation_client::Lane::Interactive.queue(&config.amqp.queue);
            for q in [&config.amqp.queue, &config.amqp.dead_letter, &lane] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in [&config.amqp.exchange, &config.amqp.dead_letter] {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = conn.close(200, "ok".into()).await;
    };
    if tokio::time::timeout(Duration::from_secs(10), teardown)
        .await
        .is_err()
    {
        eprintln!(
            "cleanup of {} timed out; left to the broker",
            config.amqp.queue
        );
    }
}

/// Texts of varied scripts and lengths; `i` makes each unique.
pub fn sample_text(i: usize) -> String {
    const BASES: &[&str] = &[
        "회의는 오전 10시에 본사 3층 회의실에서 열립니다.",
        "The quarterly report is due on Friday.",
        "고객 지원팀은 주말에도 운영됩니다 😀",
        "계약서 제2조 1항에 따라 대금은 30일 이내에 지급한다.",
        "서버 점검으로 인해 서비스가 일시 중단될 수 있습니다.",
        "Mixed 한국어 and English, with numbers 12,345.67.",
    ];
    format!("{} #{i}", BASES[i % BASES.len()])
}

/// The translations of an ok reply (panics on an error reply).
pub fn translations(reply: &Value) -> Vec<String> {
    reply["translations"]
        .as_array()
        .unwrap_or_else(|| panic!("not an ok reply: {reply}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// The per-text cache flags of an ok reply.
pub fn cached(reply: &Value) -> Vec<bool> {
    reply["cached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_bool().unwrap())
        .collect()
}

/// Replies by correlation id with their arrival times: what the fault drills check.
#[derive(Clone, Default)]
pub struct ReplyLog {
    inner: Arc<Mutex<ReplyLogInner>>,
    arrived: Arc<Notify>,
}

#[derive(Default)]
struct ReplyLogInner {
    by_corr: HashMap<String, Vec<Value>>,
    /// Arrival of each correlation id's first reply.
    first_at: HashMap<String, Instant>,
    /// Arrival of every reply counted (duplicates included), in order.
    arrivals: Vec<Instant>,
    /// Broker redeliveries to the collector of a reply it had already recorded (its own
    /// connection broke before the ack reached the broker): not worker duplicates.
    collector_redeliveries: usize,
}

impl ReplyLog {
    /// Records one reply. A copy redelivered to the collector itself is not counted.
    pub fn record(&self, corr: String, reply: Value, redelivered: bool) {
        let mut g = self.inner.lock().unwrap();
        let list = g.by_corr.entry(corr.clone()).or_default();
        if redelivered && list.contains(&reply) {
            g.collector_redeliveries += 1;
            return;
        }
        list.push(reply);
        let now = Instant::now();
        g.first_at.entry(corr).or_insert(now);
        g.arrivals.push(now);
        drop(g);
        self.arrived.notify_waiters();
    }

    /// Replies counted, duplicates included.
    pub fn total(&self) -> usize {
        self.inner.lock().unwrap().arrivals.len()
    }

    /// Correlation ids with at least one reply.
    pub fn distinct(&self) -> usize {
        self.inner.lock().unwrap().by_corr.len()
    }

    /// Every reply received for `corr`.
    pub fn replies(&self, corr: &str) -> Vec<Value> {
        let g = self.inner.lock().unwrap();
        g.by_corr.get(corr).cloned().unwrap_or_default()
    }

    /// When the first reply for `corr` arrived.
    pub fn first_arrival(&self, corr: &str) -> Option<Instant> {
        self.inner.lock().unwrap().first_at.get(corr).copied()
    }

    /// Correlation ids whose first reply arrived before `t`.
    pub fn answered_before(&self, t: Instant) -> usize {
        let g = self.inner.lock().unwrap();
        g.first_at.values().filter(|a| **a < t).count()
    }

    /// Arrival times of every counted reply, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().arrivals.clone()
    }

    /// First arrival at or after `t`.
    pub fn first_after(&self, t: Instant) -> Option<Instant> {
        let g = self.inner.lock().unwrap();
        g.arrivals.iter().copied().find(|a| *a >= t)
    }

    /// Replies the broker redelivered to the collector (not counted as replies).
    pub fn collector_redeliveries(&self) -> usize {
        self.inner.lock().unwrap().collector_redeliveries
    }

    /// Waits until `done(total, distinct)` holds; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(usize, usize) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if done(self.total(), self.distinct()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }

    /// Waits until every id in `corrs` has a reply; returns how many are still missing
    /// at `timeout` (0 when all arrived).
    pub async fn wait_for(&self, corrs: &[String], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            let missing = {
                let g = self.inner.lock().unwrap();
                corrs.iter().filter(|c| !g.by_corr.contains_key(*c)).count()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if missing == 0 || left.is_zero() {
                return missing;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

/// Arguments of a collector's reply queue: it deletes itself after 10 minutes unused,
/// so a failed drill leaves nothing behind on the shared broker.
fn collector_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongInt(600_000),
    );
    args
}

/// A consumer of a named, durable reply queue with manual acks that reconnects whenever
/// the broker goes away, so it sees every reply across a broker restart.
pub struct DurableCollector {
    /// The reply queue (put it in the jobs' `reply_to`).
    pub queue: String,
    /// What arrived.
    pub log: ReplyLog,
    /// Times the collector had to reconnect.
    pub reconnects: Arc<std::sync::atomic::AtomicUsize>,
    /// When the collector first lost its broker connection (the broker went away).
    pub first_loss: Arc<Mutex<Option<Instant>>>,
    url: String,
    stop: CancellationToken,
}

impl DurableCollector {
    /// Declares `queue` on the broker at `url` (so jobs can name it at once) and starts
    /// consuming it.
    pub async fn start(url: &str, queue: &str) -> Self {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("broker reachable");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            collector_queue_args(),
        )
        .await
        .expect("reply queue");
        let _ = conn.close(200, "ok".into()).await;
        let log = ReplyLog::default();
        let stop = CancellationToken::new();
        let reconnects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let first_loss: Arc<Mutex<Option<Instant>>> = Arc::default();
        {
            let (url, queue, log, stop) =
                (url.to_owned(), queue.to_owned(), log.clone(), stop.clone());
            let reconnects = reconnects.clone();
            let first_loss = first_loss.clone();
            tokio::spawn(async move {
                loop {
                    let _ = collect_once(&url, &queue, collector_queue_args(), &log, &stop).await;
                    if stop.is_cancelled() {
                        break;
                    }
                    first_loss.lock().unwrap().get_or_insert_with(Instant::now);
                    reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            });
        }
        Self {
            queue: queue.to_owned(),
            log,
            reconnects,
            first_loss,
            url: url.to_owned(),
            stop,
        }
    }

    /// Stops consuming and deletes the reply queue.
    pub async fn close(self) {
        self.stop.cancel();
        if let Ok(conn) = Connection::connect(&self.url, ConnectionProperties::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "ok".into()).await;
        }
    }
}

impl Drop for DurableCollector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One connection's worth of consuming the durable reply queue `queue` (declared with
/// `args`, idempotently) into `log`, acking each reply; returns when the broker or
/// `stop` ends it. A reply that is not JSON is recorded as `{"unparsable_reply": …}`
/// so the check that reads the log fails, not this task.
pub async fn collect_once(
    url: &str,
    queue: &str,
    args: FieldTable,
    log: &ReplyLog,
    stop: &CancellationToken,
) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await?;
    ch.basic_qos(500, lapin::options::BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // lapin does not always end a consumer's stream when its connection drops (a
    // SIGKILLed node): the cluster drill once waited for ever on a dead node's
    // consumer while its replies piled up in the queue. Checking the connection
    // itself ends this call so that the caller reconnects.
    let mut alive = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = conn.close(200, "ok".into()).await;
                return Ok(());
            }
            _ = alive.tick() => {
                if !conn.status().connected() || !ch.status().connected() {
                    return Ok(());
                }
            }
            next = consumer.next() => match next {
                Some(Ok(d)) => {
                    let corr = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default();
                    let v: Value = serde_json::from_slice(&d.data).unwrap_or_else(
                        |e| serde_json::json!({"unparsable_reply": e.to_string()}),
                    );
                    log.record(corr, v, d.redelivered);
                    // Bounded, so that an ack stuck on a dying connection cannot keep
                    // this loop from reaching the liveness check (a broker-restart drill
                    // once never saw the collector notice the stop). An ack that does
                    // not complete ends this call: the reply comes back redelivered on
                    // the next connection and is counted as a duplicate.
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        d.ack(lapin::options::BasicAckOptions::default()),
                    )
                    .await
                    {
                        Ok(acked) => {
                            acked?;
                        }
                        Err(_) => return Ok(()),
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    }
}

/// A job for [`publish_many`].
pub struct OutJob {
    /// Correlation id.
    pub corr: String,
    /// JSON body.
    pub body: Vec<u8>,
    /// Reply queue, if any.
    pub reply_to: Option<String>,
}

/// Publishes `jobs` persistent to `queue` through the default exchange on the broker at
/// `url`, all confirms awaited together (pipelined), and asserts every one was acked.
pub async fn publish_many(url: &str, queue: &str, jobs: &[OutJob]) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let mut confirms = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(job.corr.as_str().into())
            .with_delivery_mode(2);
        if let Some(r) = &job.reply_to {
            props = props.with_reply_to(r.as_str().into());
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &job.body,
                props,
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for c in futures_util::future::join_all(confirms).await {
        assert!(c.expect("confirm").is_ack(), "the broker refused a job");
    }
    let _ = conn.close(200, "ok".into()).await;
}

/// Declares a worker's topology on the broker at `url` (so jobs can be queued before
/// any worker runs).
pub async fn declare_topology_at(url: &str, config: &Config) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.expect("channel");
    let key = translation_client::wire::pair_key(&config.model.source, &config.model.target);
    translation_worker::amqp::declare_topology(&ch, &config.amqp, &[key])
        .await
        .expect("topology");
    let _ = conn.close(200, "ok".into()).await;
}

/// Ready messages and consumers of `queue` on the broker at `url` (passive declare).
pub async fn queue_state_at(url: &str, queue: &str) -> Option<(u32, u32)> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    let res = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = conn.close(200, "ok".into()).await;
    res.ok().map(|q| (q.message_count(), q.consumer_count()))
}

/// A plain HTTP/1.1 GET on 127.0.0.1: status code and body (`None` if nothing listens).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The value of one sample (`name{labels} value`) in a Prometheus text exposition.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
        .trim()
        .parse()
        .ok()
}

/// The engine behind a hook that sees every batch first and may fail it: fault
/// injection and counting in tests.
pub struct Hooked<F> {
    pub engine: Arc<Engine>,
    pub hook: F,
}

impl<F> Backend for Hooked<F>
where
    F: Fn(&[Vec<String>]) -> Result<(), EngineError> + Send + Sync + 'static,
{
    fn translate(
        &self,
        sources: &[Vec<String>],
        prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<String>, EngineError> {
        (self.hook)(sources)?;
        self.engine.translate(sources, prefixes, options)
    }

    fn replicas(&self) -> usize {
        self.engine.replicas()
    }
}

/// A text the engine of [`fail_on_marker`] fails on.
pub const MARKER: &str = "\u{1F4A5}engine-fault";

/// The engine, failing every batch that contains [`MARKER`], as an engine would on
/// bad input.
pub fn fail_on_marker(engine: Arc<Engine>) -> Arc<dyn Backend> {
    let marker = engine
        .tokenize(MARKER, None)
        .expect("the copy model tokenizes the marker");
    Arc::new(Hooked {
        engine,
        hook: move |sources: &[Vec<String>]| {
            if sources.contains(&marker) {
                Err(EngineError::Translate("injected fault".into()))
            } else {
                Ok(())
            }
        },
    })
}
