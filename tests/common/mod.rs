//! Shared test harness: a config on its own random queue/exchange/key prefix, an
//! in-process worker, and a small RPC client over the real broker.
#![allow(dead_code)]

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
use translation_worker::config::Config;
use translation_worker::engine::{Backend, Engine};
use translation_worker::telemetry::Metrics;
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
    pub task: tokio::task::JoinHandle<()>,
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

/// Waits until `queue` has at least one consumer.
pub async fn wait_for_consumer(queue: &str) {
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let deadline = Instant::now() + Duration::from_secs(60);
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
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("broker reachable");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
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
        let reply_queue = q.name().as_str().to_string();
        let mut consumer = ch
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
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

/// Deletes a test's queues and exchanges.
pub async fn cleanup(config: &Config) {
    let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        for q in [&config.amqp.queue, &config.amqp.dead_letter] {
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
