//! End-to-end tests against the real RabbitMQ, the real Redis and the real (copy)
//! CTranslate2 model. Each test runs on its own queue, exchanges and key prefix.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_each_get_exactly_their_own_translations() {
    let mut config = test_config();
    config.batch.max_wait_ms = 20;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let n = 300;
    let mut expected = Vec::new();
    let mut corrs = Vec::new();
    for i in 0..n {
        let corr = format!("job-{i}");
        // Every third job is multi-text; every fifth is routed through the exchange.
        let texts: Vec<String> = if i % 3 == 0 {
            (0..(1 + i % 5)).map(|k| sample_text(i * 10 + k)).collect()
        } else {
            vec![sample_text(i * 10)]
        };
        let body = if texts.len() == 1 && i % 2 == 0 {
            json!({"id": corr, "text": texts[0], "source": "ko", "target": "en"})
        } else {
            json!({"id": corr, "texts": texts})
        };
        let body = serde_json::to_vec(&body).unwrap();
        if i % 5 == 0 {
            bus.publish_to(&config.amqp.exchange, "ko-en", &corr, &body, true)
                .await;
        } else {
            bus.publish(&config.amqp.queue, &corr, &body).await;
        }
        expected.push(texts);
        corrs.push(corr);
    }
    bus.wait_for(&corrs, Duration::from_secs(120)).await;
    for (corr, texts) in corrs.iter().zip(&expected) {
        let replies = bus.replies(corr);
        assert_eq!(replies.len(), 1, "{corr} answered {} times", replies.len());
        let r = &replies[0];
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["id"], corr.as_str());
        assert_eq!(r["model"], "copy-model");
        // The copy model's translation is its input: each reply holds its own texts.
        assert_eq!(&translations(r), texts);
        assert_eq!(cached(r), vec![false; texts.len()]);
    }
    let m = &w.metrics;
    assert_eq!(m.jobs_ok.get(), n as u64);
    let batches = m.batch_size.count();
    let texts_batched = m.batch_size.sum();
    assert!(
        texts_batched > batches as f64 * 1.5,
        "no dynamic batching: {texts_batched} texts in {batches} batches"
    );
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_job_on_idle_worker_does_not_wait_for_a_batch() {
    let mut config = test_config();
    // A long wait that a lone job must not sit out.
    config.batch.max_wait_ms = 5_000;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    for i in 0..3 {
        let t = Instant::now();
        let r = bus
            .rpc(
                &config.amqp.queue,
                &serde_json::to_vec(&json!({"text": sample_text(1000 + i)})).unwrap(),
            )
            .await;
        let elapsed = t.elapsed();
        assert_eq!(translations(&r), vec![sample_text(1000 + i)]);
        assert!(
            elapsed < Duration::from_millis(1_000),
            "lone job took {elapsed:?} with max_wait 5 s"
        );
    }
    assert!(
        w.metrics.batch_wait_seconds.sum() < 0.5,
        "texts waited {} s in the batcher",
        w.metrics.batch_wait_seconds.sum()
    );
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_job_is_served_from_redis_without_the_engine() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let texts = vec![
        sample_text(1),
        sample_text(2),
        String::new(),
        sample_text(1),
    ];
    let body = serde_json::to_vec(&json!({"texts": texts})).unwrap();
    let first = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(translations(&first), texts);
    assert_eq!(cached(&first), vec![false, false, false, false]);
    let batches = w.metrics.batch_size.count();
    let engine_texts = w.metrics.batch_size.sum();
    // The duplicate inside the job was translated once.
    assert_eq!(engine_texts, 2.0);
    wait_for_stores(&w.metrics, 2).await;
    let second = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(translations(&second), texts);
    // The empty text never touches cache or model: it reports not cached.
    assert_eq!(cached(&second), vec![true, true, false, true]);
    assert_eq!(w.metrics.batch_size.count(), batches, "engine was called");
    assert_eq!(w.metrics.segments_cache_hit.get(), 3);

    // Other options are a different cache entry.
    let body = serde_json::to_vec(&json!({"texts": [sample_text(1)], "options": {"beam_size": 2}}))
        .unwrap();
    let third = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(cached(&third), vec![false]);
    assert_eq!(translations(&third), vec![sample_text(1)]);
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_without_reply_to_warms_the_cache() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let body = serde_json::to_vec(&json!({"text": sample_text(77)})).unwrap();
    bus.publish_to("", &config.amqp.queue, "warm", &body, false)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.metrics.cache_stores.get() == 0 {
        assert!(Instant::now() < deadline, "warming job not processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(cached(&r), vec![true]);
    assert!(bus.replies("warm").is_empty());
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_does_not_stop_translation() {
    let mut config = test_config();
    // Nothing listens on port 1: every connection attempt is refused.
    config.redis.url = "redis://127.0.0.1:1".into();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let mut corrs = Vec::new();
    for i in 0..50 {
        let corr = format!("nr-{i}");
        let body = serde_json::to_vec(&json!({"text": sample_text(i % 5)})).unwrap();
        bus.publish(&config.amqp.queue, &corr, &body).await;
        corrs.push(corr);
    }
    bus.wait_for(&corrs, Duration::from_secs(60)).await;
    for (i, corr) in corrs.iter().enumerate() {
        let r = &bus.replies(corr)[0];
        assert_eq!(translations(r), vec![sample_text(i % 5)]);
        assert_eq!(cached(r), vec![false]);
    }
    let m = &w.metrics;
    assert!(m.cache_errors.get() >= 1);
    // The breaker keeps the dead Redis from costing a timeout per job.
    assert!(
        m.cache_skipped.get() > 0,
        "breaker never opened: {} errors",
        m.cache_errors.get()
    );
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_answered_and_the_worker_keeps_serving() {
    let mut config = test_config();
    config.limits.max_texts = 4;
    config.limits.max_text_chars = 50;
    config.limits.max_body_bytes = 4096;
    let w = start_worker_with(config.clone(), fail_on_marker).await;
    let bus = Bus::connect().await;
    let past = 1_000_000_000_000u64; // 2001: long gone.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"this is not json".to_vec()),
        ("invalid_json", b"{\"text\": \"\xff\xfe\"}".to_vec()),
        ("invalid_json", b"{\"text\": \"abc".to_vec()),
        ("invalid_request", br#"{"id":"r1","texts":[]}"#.to_vec()),
        ("invalid_request", br#"[1,2,3]"#.to_vec()),
        ("invalid_request", br#"{"texts":["a", 5]}"#.to_vec()),
        (
            "invalid_request",
            br#"{"text":"a","options":{"beam_size":99}}"#.to_vec(),
        ),
        (
            "invalid_request",
            br#"{"text":"a","options":{"temperature":1}}"#.to_vec(),
        ),
        (
            "unsupported_language_pair",
            br#"{"text":"a","target":"de"}"#.to_vec(),
        ),
        (
            "unsupported_language_pair",
            br#"{"text":"a","source":"ja"}"#.to_vec(),
        ),
        ("too_large", vec![b' '; 5000]),
        ("too_large", br#"{"texts":["a","b","c","d","e"]}"#.to_vec()),
        (
            "too_large",
            format!("{{\"text\":\"{}\"}}", "가".repeat(51)).into_bytes(),
        ),
        (
            "deadline_exceeded",
            format!("{{\"text\":\"a\",\"deadline_ms\":{past}}}").into_bytes(),
        ),
        (
            "internal",
            serde_json::to_vec(&json!({"id": "boom", "texts": [MARKER, MARKER]})).unwrap(),
        ),
    ];
    for (code, body) in &cases {
        let r = bus.rpc(&config.amqp.queue, body).await;
        assert_eq!(r["status"], "error", "{code}: {r}");
        assert_eq!(r["error"]["code"], *code, "{r}");
        assert!(r["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The id is echoed when it could be read.
    let r = bus
        .rpc(&config.amqp.queue, br#"{"id":"r1","texts":[]}"#)
        .await;
    assert_eq!(r["id"], "r1");
    // One text the engine fails on does not sink its neighbours: an ok reply with
    // that text's error, the others translated (and the empty one answered).
    let r = bus
        .rpc(
            &config.amqp.queue,
            &serde_json::to_vec(&json!({"id": "part", "texts": ["fine", MARKER, ""]})).unwrap(),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["id"], "part");
    assert_eq!(translations(&r), vec!["fine", "", ""]);
    assert_eq!(r["cached"][1], false);
    assert_eq!(r["errors"][0], serde_json::Value::Null, "{r}");
    assert_eq!(r["errors"][2], serde_json::Value::Null, "{r}");
    assert_eq!(r["errors"][1]["code"], "internal", "{r}");
    assert!(
        r["errors"][1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("injected fault")),
        "{r}"
    );
    // The same inside a document: the text with the failing sentence fails, the
    // other document is answered whole.
    let r = bus
        .rpc(
            &config.amqp.queue,
            &serde_json::to_vec(&json!({
                "texts": [format!("Good.\n{MARKER}\nAlso good."), "Another. Document."],
                "split": "sentences"
            }))
            .unwrap(),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(translations(&r)[1], "Another. Document.");
    assert_eq!(translations(&r)[0], "");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("segment 2 of 3")),
        "{r}"
    );
    assert_eq!(r["errors"][1], serde_json::Value::Null, "{r}");
    // Counted per text, only where the reply was ok.
    assert_eq!(w.metrics.texts_failed.get(), 2);
    // Other texts batched with the failing one are still answered.
    let r = bus
        .rpc(
            &config.amqp.queue,
            &serde_json::to_vec(&json!({"texts": ["fine", "also fine"]})).unwrap(),
        )
        .await;
    assert_eq!(translations(&r), vec!["fine", "also fine"]);
    // A future deadline is fine.
    let future = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let r = bus
        .rpc(
            &config.amqp.queue,
            format!("{{\"text\":\"ok\",\"deadline_ms\":{future}}}").as_bytes(),
        )
        .await;
    assert_eq!(translations(&r), vec!["ok"]);
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswerable_job_without_reply_to_is_dead_lettered_with_its_reason() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let mut dead = bus.consume_no_ack(&config.amqp.dead_letter).await;
    bus.publish_to("", &config.amqp.queue, "dl", b"{oops", false)
        .await;
    let d = tokio::time::timeout(Duration::from_secs(20), dead.next())
        .await
        .expect("dead letter arrives")
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"{oops");
    let headers = d.properties.headers().clone().unwrap();
    let code = headers.inner().get("x-translation-error-code").cloned();
    assert_eq!(code, Some(AMQPValue::LongString("invalid_json".into())));
    assert!(headers.inner().contains_key("x-translation-error"));
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_pair_on_the_exchange_returns_to_the_publisher() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let confirm = bus
        .ch
        .basic_publish(
            config.amqp.exchange.as_str().into(),
            "ko-de".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            br#"{"text":"a"}"#,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let returned = confirm
        .take_message()
        .expect("unroutable message is returned");
    assert_eq!(returned.reply_code, 312, "NO_ROUTE");
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_but_valid_text_round_trips() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let texts = vec![
        "NUL\u{0}inside and \u{7}bell".to_string(),
        "RTL \u{202E}override\u{202C} text".to_string(),
        "emoji 👩‍💻🚀 and 한국어".to_string(),
        "  leading and trailing spaces  ".to_string(),
    ];
    let r = bus
        .rpc(
            &config.amqp.queue,
            &serde_json::to_vec(&json!({"texts": texts})).unwrap(),
        )
        .await;
    assert_eq!(translations(&r), texts);
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_queue_without_duplicates() {
    let config = test_config();
    let a = start_worker(config.clone()).await;
    let b = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let corrs: Vec<String> = (0..100).map(|i| format!("s-{i}")).collect();
    for (i, c) in corrs.iter().enumerate() {
        let body = serde_json::to_vec(&json!({"text": sample_text(5000 + i)})).unwrap();
        bus.publish(&config.amqp.queue, c, &body).await;
    }
    bus.wait_for(&corrs, Duration::from_secs(60)).await;
    let counts = bus.reply_counts();
    assert!(corrs.iter().all(|c| counts[c] == 1));
    // Each job was processed by exactly one of the two workers.
    assert_eq!(a.metrics.jobs_ok.get() + b.metrics.jobs_ok.get(), 100);
    a.stop().await;
    b.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_texts_are_translated_once() {
    let mut config = test_config();
    config.batch.max_wait_ms = 50;
    let calls = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c2, b2) = (calls.clone(), batches.clone());
    let bus = Bus::connect().await;
    // Queue all jobs before the worker starts, so they arrive together.
    translation_worker::amqp::declare_topology(&bus.ch, &config.amqp, &["ko-en".into()])
        .await
        .unwrap();
    let corrs: Vec<String> = (0..40).map(|i| format!("d-{i}")).collect();
    let body = serde_json::to_vec(&json!({"text": "같은 문장입니다"})).unwrap();
    for c in &corrs {
        bus.publish(&config.amqp.queue, c, &body).await;
    }
    // Counts engine texts and records each batch; slow, so that concurrent copies of a
    // text meet in the batcher's queue while the engine is busy.
    let w = start_worker_with(config.clone(), move |engine| {
        Arc::new(Hooked {
            engine,
            hook: move |sources: &[Vec<String>]| {
                c2.fetch_add(sources.len(), Ordering::SeqCst);
                b2.lock().unwrap().push(sources.to_vec());
                std::thread::sleep(Duration::from_millis(200));
                Ok(())
            },
        })
    })
    .await;
    bus.wait_for(&corrs, Duration::from_secs(60)).await;
    for c in &corrs {
        assert_eq!(translations(&bus.replies(c)[0]), vec!["같은 문장입니다"]);
    }
    // No batch ever carries the same text twice.
    for b in batches.lock().unwrap().iter() {
        let distinct: std::collections::HashSet<_> = b.iter().collect();
        assert_eq!(distinct.len(), b.len(), "duplicate text in one batch");
    }
    // The first copy goes to the idle engine at once; while the (slow) engine is busy,
    // every later copy merges onto one queued entry, or hits the cache afterwards.
    let engine_texts = calls.load(Ordering::SeqCst);
    assert!(
        engine_texts <= 5,
        "{engine_texts} engine texts for 40 identical jobs"
    );
    // Every job either merged onto a queued copy, hit the cache, or was an engine text.
    let m = &w.metrics;
    assert_eq!(
        m.segments_deduplicated.get() + m.segments_cache_hit.get() + engine_texts as u64,
        40
    );
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_stops_with_redis_and_resumes_when_it_returns() {
    let mut redis = common::private::PrivateRedis::start(&[]);
    let mut config = test_config();
    config.redis.url = redis.url();
    config.redis.breaker_cooldown_ms = 200;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let job = |t: &str| serde_json::to_vec(&json!({"text": t})).unwrap();

    let r = bus.rpc(&config.amqp.queue, &job("before")).await;
    assert_eq!(cached(&r), vec![false]);
    wait_for_stores(&w.metrics, 1).await;
    let r = bus.rpc(&config.amqp.queue, &job("before")).await;
    assert_eq!(cached(&r), vec![true], "cache works while Redis is up");

    redis.stop();
    for _ in 0..5 {
        let r = bus.rpc(&config.amqp.queue, &job("during")).await;
        assert_eq!(translations(&r), vec!["during"]);
        assert_eq!(cached(&r), vec![false]);
    }
    assert!(w.metrics.cache_errors.get() >= 1);

    redis.start_again();
    // After the breaker's cool-down a probe reconnects; the second identical job hits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = bus.rpc(&config.amqp.queue, &job("after")).await;
        assert_eq!(translations(&r), vec!["after"]);
        if cached(&r) == vec![true] {
            break;
        }
        assert!(Instant::now() < deadline, "caching did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
    cleanup(&config).await;
}
