//! Multilingual models (language tokens, target prefix) and several models in one
//! worker (routing by pair, one queue per model, fair sharing of the CPUs), against
//! the real broker and Redis.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use translation_client::wire::DecodeOptions;
use translation_worker::config::{Config, LanguageTokens, ModelConfig};
use translation_worker::translate::{Backend, Engine};
use translation_worker::worker::Worker;

use common::*;

/// The copy model with NLLB and M2M-100 language tokens (see its README).
fn multi_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/copy-model-multi")
}

fn model(id: &str, dir: PathBuf, kind: LanguageTokens, pairs: &[&str]) -> ModelConfig {
    ModelConfig {
        id: id.into(),
        path: dir,
        threads: 2,
        language_tokens: kind,
        pairs: pairs.iter().map(|p| p.to_string()).collect(),
        source: pairs[0].split('-').next().unwrap_or("ko").into(),
        target: pairs[0].split('-').nth(1).unwrap_or("en").into(),
        ..ModelConfig::default()
    }
}

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

const KO: &str = "회의는 오전 10시에 본사 3층 회의실에서 열립니다.";

#[test]
fn the_target_prefix_is_applied_and_then_stripped() {
    let cfg = model(
        "nllb",
        multi_model_dir(),
        LanguageTokens::Nllb,
        &["ko-en", "en-ko"],
    );
    let engine = Engine::load(&cfg).expect("multilingual copy model loads");
    let source = engine.tokenize(KO, Some("kor_Hang")).unwrap();
    assert_eq!(source[0], "kor_Hang", "the source token leads the input");
    let with = engine
        .hypotheses(
            std::slice::from_ref(&source),
            &[Some("eng_Latn".into())],
            &opts(),
        )
        .unwrap();
    assert_eq!(
        with[0][0], "eng_Latn",
        "the output starts with the forced target token"
    );
    let without = engine
        .hypotheses(std::slice::from_ref(&source), &[], &opts())
        .unwrap();
    assert_eq!(
        without[0][0], "kor_Hang",
        "without a prefix the copy model would start with the source token"
    );
    assert_eq!(with[0][1..], without[0][1..]);
    // Through the backend the forced token is dropped: only the text remains. A
    // batch may mix targets.
    let en = engine
        .tokenize("Quarterly report", Some("eng_Latn"))
        .unwrap();
    let out = engine
        .translate(
            &[source, en],
            &[Some("eng_Latn".into()), Some("kor_Hang".into())],
            &opts(),
        )
        .unwrap();
    assert_eq!(out, [KO, "Quarterly report"]);
}

#[test]
fn a_language_token_missing_from_the_vocabulary_stops_the_start() {
    let mut cfg = model("nllb", multi_model_dir(), LanguageTokens::Nllb, &["ko-en"]);
    cfg.language_codes = BTreeMap::from([("en".to_string(), "eng_Latx".to_string())]);
    let err = Engine::load(&cfg).err().expect("eng_Latx is not a token");
    assert!(err.to_string().contains("eng_Latx"), "{err}");
    // The bilingual copy model has no language tokens at all.
    let cfg = model("nllb", model_dir(), LanguageTokens::M2m100, &["ko-en"]);
    let err = Engine::load(&cfg).err().expect("__ko__ is not a token");
    assert!(err.to_string().contains("__ko__"), "{err}");
}

/// A worker of several models, running until the test ends.
struct Multi {
    config: Config,
    metrics: std::sync::Arc<translation_worker::telemetry::Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), translation_worker::worker::WorkerError>>,
}

impl Multi {
    async fn start(models: Vec<ModelConfig>) -> Self {
        let mut config = test_config();
        config.models = models;
        config.validate().expect("valid multi-model config");
        let worker = Worker::start(config.clone()).await.expect("worker starts");
        let metrics = worker.metrics();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(shutdown.clone()));
        for m in config.model_list() {
            wait_for_consumer(&config.queue_for(m)).await;
        }
        Self {
            config,
            metrics,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        cleanup(&self.config).await;
        let conn = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .expect("broker");
        let ch = conn.create_channel().await.expect("channel");
        for m in self.config.model_list() {
            let _ = ch
                .queue_delete(
                    self.config.queue_for(m).as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}

/// Publishes `body` on the jobs exchange with `key` and waits for its reply.
async fn call(bus: &Bus, exchange: &str, key: &str, body: Value) -> Value {
    let corr = uuid::Uuid::new_v4().to_string();
    bus.publish_to(exchange, key, &corr, body.to_string().as_bytes(), true)
        .await;
    bus.wait_for(std::slice::from_ref(&corr), Duration::from_secs(60))
        .await;
    bus.replies(&corr)[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_routes_pairs_to_nllb_and_m2m_models() {
    let w = Multi::start(vec![
        model(
            "nllb-copy",
            multi_model_dir(),
            LanguageTokens::Nllb,
            &["ko-en", "en-ko", "ko-ja"],
        ),
        model(
            "m2m-copy",
            multi_model_dir(),
            LanguageTokens::M2m100,
            &["ko-de", "ja-fr"],
        ),
    ])
    .await;
    let ex = w.config.amqp.exchange.clone();
    let bus = Bus::connect().await;

    // The pair comes from the routing key when the body names none.
    let r = call(&bus, &ex, "ko-en", json!({ "texts": [KO, "둘째 문장"] })).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(translations(&r), [KO, "둘째 문장"]);
    wait_for_stores(&w.metrics, 2).await;
    assert_eq!(r["model"], "nllb-copy");
    // Same text, other target: another cache entry (the pair is part of the key).
    let r = call(&bus, &ex, "ko-ja", json!({ "text": KO })).await;
    assert_eq!(translations(&r), [KO]);
    assert_eq!(cached(&r), [false], "{r}");
    let r = call(&bus, &ex, "ko-en", json!({ "text": KO })).await;
    assert_eq!(cached(&r), [true], "{r}");
    // The second model, with M2M-100 tokens.
    let r = call(
        &bus,
        &ex,
        "ko-de",
        json!({ "text": KO, "source": "ko", "target": "de" }),
    )
    .await;
    assert_eq!(translations(&r), [KO]);
    assert_eq!(r["model"], "m2m-copy");
    let r = call(&bus, &ex, "ja-fr", json!({ "text": "会議は十時です。" })).await;
    assert_eq!(translations(&r), ["会議は十時です。"]);
    assert_eq!(r["model"], "m2m-copy");
    // A pair the queue's model does not serve, sent straight to its queue.
    let nllb_queue = w.config.queue_for(&w.config.models[0]);
    let r = bus
        .rpc(
            &nllb_queue,
            json!({ "text": KO, "source": "ko", "target": "de" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r["error"]["code"], "unsupported_language_pair", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("ko-en"),
        "{r}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_models_backlog_does_not_starve_another() {
    // Two models on the same CPUs; the "bulk" one gets a deep backlog first.
    let mut bulk = model("bulk", model_dir(), LanguageTokens::None, &["ko-en"]);
    let mut quick = model("quick", model_dir(), LanguageTokens::None, &["ja-en"]);
    for m in [&mut bulk, &mut quick] {
        m.threads = 2;
        m.replicas = 2;
    }
    let w = Multi::start(vec![bulk, quick]).await;
    let ex = w.config.amqp.exchange.clone();
    let bus = Bus::connect().await;
    const BULK: usize = 120;
    // Published pipelined (all confirms awaited together), so the whole backlog is
    // queued before the worker has answered much of it.
    let bulk_queue = w.config.queue_for(&w.config.models[0]);
    let jobs: Vec<OutJob> = (0..BULK)
        .map(|i| OutJob {
            corr: format!("bulk-{i}"),
            body: json!({ "texts": (0..16).map(|k| sample_text(i * 16 + k)).collect::<Vec<_>>() })
                .to_string()
                .into_bytes(),
            reply_to: Some(bus.reply_queue.clone()),
        })
        .collect();
    let bulk_corrs: Vec<String> = jobs.iter().map(|j| j.corr.clone()).collect();
    publish_many(AMQP_URL, &bulk_queue, &jobs).await;
    // Let the bulk model get going, then ask the quick one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.reply_counts().len() < 10 {
        assert!(Instant::now() < deadline, "bulk jobs are not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Instant::now();
    let mut quick_corrs = Vec::new();
    for i in 0..5 {
        let corr = format!("quick-{i}");
        bus.publish_to(
            &ex,
            "ja-en",
            &corr,
            json!({ "text": format!("会議は{i}時です。") })
                .to_string()
                .as_bytes(),
            true,
        )
        .await;
        quick_corrs.push(corr);
    }
    bus.wait_for(&quick_corrs, Duration::from_secs(60)).await;
    let quick_latency = sent.elapsed();
    let bulk_done = bulk_corrs
        .iter()
        .filter(|c| !bus.replies(c).is_empty())
        .count();
    for c in &quick_corrs {
        assert_eq!(bus.replies(c)[0]["model"], "quick");
    }
    bus.wait_for(&bulk_corrs, Duration::from_secs(300)).await;
    let bulk_total = sent.elapsed();
    eprintln!(
        "quick answered in {quick_latency:?} with {bulk_done}/{BULK} bulk jobs done; \
         the bulk backlog took {bulk_total:?}"
    );
    // Behind the bulk backlog (one shared queue, or an engine that served batches
    // longest-queue-first) the quick jobs would wait for most of it.
    assert!(
        bulk_done < BULK / 2,
        "quick jobs waited for {bulk_done} of {BULK} bulk jobs"
    );
    assert!(
        quick_latency * 4 < bulk_total,
        "quick {quick_latency:?} vs bulk backlog {bulk_total:?}"
    );
    w.stop().await;
}

#[test]
fn configs_with_overlapping_models_are_refused() {
    let mut c = test_config();
    c.models = vec![
        model("a", model_dir(), LanguageTokens::None, &["ko-en"]),
        model("b", model_dir(), LanguageTokens::None, &["ko-en"]),
    ];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("ko-en"), "{e}");
    c.models[1].pairs = vec!["koen".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("koen"), "{e}");
    c.models[1] = model("b", model_dir(), LanguageTokens::Nllb, &["ko-xx"]);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("xx"), "{e}");
    c.models[1] = model("b", model_dir(), LanguageTokens::None, &["ja-en"]);
    c.validate().expect("distinct pairs are fine");
    assert_ne!(c.queue_for(&c.models[0]), c.queue_for(&c.models[1]));
    assert_eq!(
        c.served_pairs(),
        [("ko".into(), "en".into()), ("ja".into(), "en".into())]
    );
}
