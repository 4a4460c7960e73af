//! Priority lanes end to end: a real worker (copy model), the broker and Redis.
//!
//! - Interactive one-sentence jobs sent while a backlog of bulk documents keeps the
//!   worker busy for seconds are answered long before the backlog drains, and every
//!   bulk job is still answered.
//! - The gateway's requests, and jobs published straight to `<queue>.interactive`,
//!   arrive in the interactive lane; producers that name no lane in the bulk lane.
//! - A client asking for the interactive lane of a worker without one is answered
//!   through the bulk lane.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use translation_client::wire::Split;
use translation_client::{Client, ClientOptions, Lane, TranslateRequest};
use translation_worker::config::Config;
use translation_worker::gateway::Gateway;
use translation_worker::translate::{lane_index, Engine, EngineError};

const BULK: usize = 0;
const INTERACTIVE: usize = 1;

/// The engine, each batch made `per_batch` slower: the copy model translates in
/// microseconds, a real one in tens of milliseconds per batch.
fn slowed(
    per_batch: Duration,
) -> impl FnOnce(Arc<Engine>) -> Arc<dyn translation_worker::translate::Backend> {
    move |engine| {
        Arc::new(Hooked {
            engine,
            hook: move |_: &[Vec<String>]| -> Result<(), EngineError> {
                std::thread::sleep(per_batch);
                Ok(())
            },
        })
    }
}

async fn client(config: &Config) -> Client {
    Client::connect(
        AMQP_URL,
        ClientOptions {
            exchange: config.amqp.exchange.clone(),
            timeout: Duration::from_secs(120),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interactive_jobs_overtake_a_bulk_backlog_that_still_drains() {
    const DOCS: usize = 150;
    const SENTENCES: usize = 20;
    const INTERACTIVE_JOBS: usize = 5;
    let config = test_config();
    assert_eq!(lane_index(Lane::Interactive), INTERACTIVE);
    let worker = start_worker_with(config.clone(), slowed(Duration::from_millis(50))).await;
    wait_for_consumer(&Lane::Interactive.queue(&config.amqp.queue)).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let collector =
        DurableCollector::start(AMQP_URL, &format!("{}.replies", config.amqp.queue)).await;

    // The backlog: documents of distinct sentences (no cache hit, no merging), published
    // at once straight to the job queue, as a backend without lanes does.
    let docs: Vec<String> = (0..DOCS)
        .map(|d| {
            (0..SENTENCES)
                .map(|s| {
                    format!("{run} 문서 {d} 문장 {s}: 회의는 오전 10시에 본사에서 시작합니다.")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let jobs: Vec<OutJob> = docs
        .iter()
        .enumerate()
        .map(|(d, doc)| OutJob {
            corr: format!("bulk-{d}"),
            body: serde_json::to_vec(&json!({"texts": [doc], "split": "sentences"})).unwrap(),
            reply_to: Some(collector.queue.clone()),
        })
        .collect();
    let backlog_start = Instant::now();
    publish_many(AMQP_URL, &config.amqp.queue, &jobs).await;
    // Busy: the first documents are answered.
    assert!(
        collector
            .log
            .wait_until(Duration::from_secs(60), |_, distinct| distinct >= 1)
            .await,
        "no bulk reply within 60 s"
    );

    let client = client(&config).await;
    let mut answered = Vec::new();
    for i in 0..INTERACTIVE_JOBS {
        let text = format!("{run} 급한 질문 {i}입니다.");
        let request = TranslateRequest::new("ko", "en", [text.as_str()])
            .with_split(Split::Sentences)
            .with_lane(Lane::Interactive);
        let sent = Instant::now();
        let reply = client.translate(request).await.expect("interactive reply");
        let at = Instant::now();
        assert_eq!(reply.translations, [text], "copy model");
        answered.push((at, at - sent, collector.log.distinct()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let corrs: Vec<String> = (0..DOCS).map(|d| format!("bulk-{d}")).collect();
    let missing = collector
        .log
        .wait_for(&corrs, Duration::from_secs(180))
        .await;
    assert_eq!(missing, 0, "bulk jobs never answered (starved?)");
    for (d, doc) in docs.iter().enumerate() {
        let replies = collector.log.replies(&format!("bulk-{d}"));
        assert_eq!(translations(&replies[0]), [doc.as_str()], "bulk job {d}");
    }
    let backlog_end = (0..DOCS)
        .filter_map(|d| collector.log.first_arrival(&format!("bulk-{d}")))
        .max()
        .expect("bulk replies");
    let backlog = backlog_end - backlog_start;
    let worst = answered.iter().map(|a| a.1).max().unwrap_or_default();
    let (last_at, _, bulk_done_then) = *answered.last().expect("interactive replies");
    eprintln!(
        "backlog of {DOCS} documents drained in {backlog:?}; interactive latencies {:?}; \
         {bulk_done_then} of {DOCS} bulk jobs answered when the last interactive reply came",
        answered.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    // Long before the backlog drains: each interactive job took a small share of the
    // backlog's time, and a quarter of the bulk jobs was still unanswered after the
    // last of them (without lanes each would wait for the whole backlog ahead of it).
    assert!(
        worst * 4 < backlog,
        "an interactive job took {worst:?}, the backlog {backlog:?}"
    );
    assert!(last_at < backlog_end, "the backlog drained first");
    assert!(
        bulk_done_then * 4 <= DOCS * 3,
        "{bulk_done_then} of {DOCS} bulk jobs done before the last interactive reply"
    );
    let m = &worker.metrics;
    assert_eq!(m.jobs_received[INTERACTIVE].get(), INTERACTIVE_JOBS as u64);
    assert_eq!(m.jobs_received[BULK].get(), DOCS as u64);
    assert_eq!(
        m.lane_job_seconds[INTERACTIVE].count(),
        INTERACTIVE_JOBS as u64
    );
    client.close().await;
    worker.stop().await;
    collector.close().await;
    cleanup(&config).await;
}

/// The value of a lane's `jobs_received` counter, waiting briefly for it to reach
/// `want` (the worker counts a job when it receives it).
async fn received(metrics: &translation_worker::telemetry::Metrics, lane: usize, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.jobs_received[lane].get() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metrics.jobs_received[lane].get()
}

#[tokio::test]
async fn gateway_requests_and_jobs_on_the_interactive_queue_are_interactive() {
    let mut config = test_config();
    config.gateway.listen = "127.0.0.1:0".into();
    assert_eq!(config.gateway.lane, Lane::Interactive, "the default");
    let worker = start_worker(config.clone()).await;
    wait_for_consumer(&Lane::Interactive.queue(&config.amqp.queue)).await;

    let gateway = Gateway::bind(&config).await.expect("gateway binds");
    let addr = gateway.local_addr().expect("bound address");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(gateway.run(shutdown.clone()));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = http
            .get(format!("http://{addr}/translate"))
            .query(&[("q", "감사합니다."), ("source", "ko"), ("target", "en")])
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                break r.json::<serde_json::Value>().await.expect("json");
            }
        }
        assert!(Instant::now() < deadline, "gateway never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["translations"], json!(["감사합니다."]));
    assert_eq!(received(&worker.metrics, INTERACTIVE, 1).await, 1);
    assert_eq!(worker.metrics.jobs_received[BULK].get(), 0);

    // A producer in another language picks the lane by the queue it publishes to.
    let bus = Bus::connect().await;
    let reply = bus
        .rpc(
            &Lane::Interactive.queue(&config.amqp.queue),
            br#"{"text": "interactive by queue"}"#,
        )
        .await;
    assert_eq!(translations(&reply), ["interactive by queue"]);
    assert_eq!(received(&worker.metrics, INTERACTIVE, 2).await, 2);
    // ... or its routing key on the jobs exchange.
    let corr = uuid::Uuid::new_v4().to_string();
    bus.publish_to(
        &config.amqp.exchange,
        "ko-en.interactive",
        &corr,
        br#"{"text": "interactive by key"}"#,
        true,
    )
    .await;
    bus.wait_for(std::slice::from_ref(&corr), Duration::from_secs(30))
        .await;
    assert_eq!(translations(&bus.replies(&corr)[0]), ["interactive by key"]);
    assert_eq!(received(&worker.metrics, INTERACTIVE, 3).await, 3);
    // Producers that name no lane (today's) are bulk.
    let reply = bus.rpc(&config.amqp.queue, br#"{"text": "bulk"}"#).await;
    assert_eq!(translations(&reply), ["bulk"]);
    assert_eq!(received(&worker.metrics, BULK, 1).await, 1);
    assert_eq!(worker.metrics.jobs_received[INTERACTIVE].get(), 3);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test]
async fn interactive_jobs_fall_back_to_bulk_on_a_worker_without_the_lane() {
    let mut config = test_config();
    config.amqp.interactive_lane = false;
    let worker = start_worker(config.clone()).await;
    let client = client(&config).await;
    let reply = client
        .translate(TranslateRequest::new("ko", "en", ["안녕하세요"]).with_lane(Lane::Interactive))
        .await
        .expect("answered through the bulk lane");
    assert_eq!(reply.translations, ["안녕하세요"]);
    assert_eq!(
        client.stats().returned,
        1,
        "the interactive publish came back"
    );
    assert_eq!(received(&worker.metrics, BULK, 1).await, 1);
    assert_eq!(worker.metrics.jobs_received[INTERACTIVE].get(), 0);
    // No interactive queue was declared.
    assert_eq!(
        queue_state_at(AMQP_URL, &Lane::Interactive.queue(&config.amqp.queue)).await,
        None
    );
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}
