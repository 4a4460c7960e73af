//! Hostile and malformed input, end to end through the real broker, against one
//! in-process worker with the copy model (its translation is its input).
//!
//! Every job with a `reply_to` gets its answer (an error with the contract's code, or
//! the unchanged texts for hostile but valid input) within a second, and the worker
//! answers a valid job correctly right after each one. Jobs without `reply_to` that
//! cannot be processed are dead-lettered once, with their reason.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};
use translation_client::wire::ErrorCode;
use translation_worker::config::Config;
use translation_worker::telemetry::Metrics;

/// Body limit for these tests: small, so a 10 MiB body is far over it, yet large
/// enough for 100k nested brackets.
const MAX_BODY: usize = 256 * 1024;
const MAX_TEXTS: usize = 8;
const MAX_TEXT_CHARS: usize = 200;
/// Every error reply must arrive within this, measured from the publish.
const ERROR_LATENCY: Duration = Duration::from_secs(1);
/// Valid jobs go through the engine; the copy model is fast, but allow for a busy CI.
const OK_LATENCY: Duration = Duration::from_secs(5);

fn hostile_config() -> Config {
    let mut c = test_config();
    c.limits.max_body_bytes = MAX_BODY;
    c.limits.max_texts = MAX_TEXTS;
    c.limits.max_text_chars = MAX_TEXT_CHARS;
    c
}

enum Expect {
    /// An error reply with this code.
    Error(&'static str),
    /// An ok reply with exactly these translations (the copy model returns its input).
    Ok(Vec<String>),
}

struct Case {
    name: &'static str,
    body: Vec<u8>,
    expect: Expect,
    /// The id the reply must echo (`null` when `None`).
    id: Option<String>,
}

impl Case {
    fn err(name: &'static str, code: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            body: body.into(),
            expect: Expect::Error(code),
            id: None,
        }
    }

    fn ok(name: &'static str, texts: &[&str], body: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            body: body.into(),
            expect: Expect::Ok(texts.iter().map(|t| t.to_string()).collect()),
            id: None,
        }
    }

    fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }
}

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits for the first reply to `corr`, polling every 2 ms.
async fn answer(bus: &Bus, corr: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = bus.replies(corr).into_iter().next() {
            return Some(r);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Ready messages left in `queue`.
async fn ready_in(bus: &Bus, queue: &str) -> u32 {
    let ch = bus.conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "ok".into()).await;
    q.message_count()
}

fn error_counts(m: &Metrics) -> HashMap<&'static str, u64> {
    ErrorCode::ALL
        .iter()
        .zip(&m.jobs_error)
        .map(|(c, n)| (c.as_str(), n.get()))
        .collect()
}

/// Every hostile case, each a row: name, body, expected code or translations.
fn cases() -> Vec<Case> {
    let past = unix_ms() - 60_000;
    let open = "[".repeat(100_000);
    let closed = format!("{open}{}", "]".repeat(100_000));
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(40_000), "}".repeat(40_000));
    let controls: String = (0u32..0x20)
        .chain(0x7f..0xa0)
        .filter_map(char::from_u32)
        .collect();
    let long_id = "i".repeat(10_000);
    let mut at_limit = br#"{"text":"exactly at the limit"}"#.to_vec();
    at_limit.resize(MAX_BODY, b' ');
    let mut over_limit = br#"{"text":"one byte over"}"#.to_vec();
    over_limit.resize(MAX_BODY + 1, b' ');
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(r#"{"text":"a"}"#.encode_utf16().flat_map(u16::to_le_bytes));

    vec![
        // Not JSON at all, or not UTF-8.
        Case::err("not JSON", "invalid_json", "this is not json"),
        Case::err("empty body", "invalid_json", ""),
        Case::err("whitespace only", "invalid_json", " \n\t "),
        Case::err(
            "invalid UTF-8",
            "invalid_json",
            b"{\"text\":\"\xff\xfe\"}".to_vec(),
        ),
        Case::err(
            "overlong UTF-8 NUL",
            "invalid_json",
            b"{\"text\":\"\xc0\x80\"}".to_vec(),
        ),
        Case::err("UTF-16 body", "invalid_json", utf16),
        Case::err(
            "UTF-8 BOM",
            "invalid_json",
            b"\xef\xbb\xbf{\"text\":\"a\"}".to_vec(),
        ),
        Case::err("truncated JSON", "invalid_json", r#"{"text":"abc"#),
        Case::err(
            "truncated after a wrong type",
            "invalid_json",
            r#"{"texts":[5]"#,
        ),
        Case::err(
            "trailing garbage",
            "invalid_json",
            r#"{"text":"a"} trailing"#,
        ),
        Case::err(
            "two documents",
            "invalid_json",
            r#"{"text":"a"}{"text":"b"}"#,
        ),
        Case::err("single quotes", "invalid_json", "{'text':'a'}"),
        Case::err(
            "NaN literal",
            "invalid_json",
            r#"{"text":"a","options":{"length_penalty":NaN}}"#,
        ),
        Case::err(
            "raw control character in a string",
            "invalid_json",
            "{\"text\":\"a\u{1}b\"}",
        ),
        Case::err(
            "lone high surrogate",
            "invalid_json",
            r#"{"text":"\ud800"}"#,
        ),
        Case::err(
            "lone low surrogate",
            "invalid_json",
            r#"{"text":"x\udc00y"}"#,
        ),
        Case::err(
            "reversed surrogate pair",
            "invalid_json",
            r#"{"text":"\udc00\ud800"}"#,
        ),
        Case::err("100k unclosed brackets", "invalid_json", open.clone()),
        Case::err(
            "100k unclosed brackets in text",
            "invalid_json",
            format!(r#"{{"text":{open}"#),
        ),
        // serde_json refuses numbers beyond f64 as a syntax error (see the report on
        // the README's wording).
        Case::err(
            "deadline_ms 1e400",
            "invalid_json",
            r#"{"text":"a","deadline_ms":1e400}"#,
        ),
        // JSON, but not a job.
        Case::err("array", "invalid_request", "[1,2,3]"),
        Case::err(
            "job fields as an array",
            "invalid_request",
            r#"[null,"hi",null,null,null,null,null]"#,
        ),
        Case::err("string", "invalid_request", r#""text""#),
        Case::err("number", "invalid_request", "42"),
        Case::err("null", "invalid_request", "null"),
        Case::err("true", "invalid_request", "true"),
        Case::err("empty object", "invalid_request", "{}"),
        Case::err(
            "missing text and texts",
            "invalid_request",
            r#"{"id":"m1","source":"ko"}"#,
        )
        .id("m1"),
        Case::err("text null", "invalid_request", r#"{"text":null}"#),
        Case::err(
            "both text and texts",
            "invalid_request",
            r#"{"id":"b1","text":"a","texts":["b"]}"#,
        )
        .id("b1"),
        Case::err(
            "duplicate text key",
            "invalid_request",
            r#"{"text":"a","text":"b"}"#,
        ),
        Case::err(
            "empty texts",
            "invalid_request",
            r#"{"id":"e1","texts":[]}"#,
        )
        .id("e1"),
        Case::err(
            "numbers in texts",
            "invalid_request",
            r#"{"id":"n1","texts":["a",1,2]}"#,
        )
        .id("n1"),
        Case::err(
            "null in texts",
            "invalid_request",
            r#"{"texts":["a",null]}"#,
        ),
        Case::err(
            "object in texts",
            "invalid_request",
            r#"{"texts":[{"text":"a"}]}"#,
        ),
        Case::err("array in texts", "invalid_request", r#"{"texts":[["a"]]}"#),
        Case::err("texts a string", "invalid_request", r#"{"texts":"a"}"#),
        Case::err("text a number", "invalid_request", r#"{"text":42}"#),
        Case::err(
            "text an object",
            "invalid_request",
            r#"{"text":{"ko":"a"}}"#,
        ),
        Case::err("id a number", "invalid_request", r#"{"text":"a","id":7}"#),
        Case::err(
            "source an array",
            "invalid_request",
            r#"{"text":"a","source":["ko"]}"#,
        ),
        Case::err(
            "unknown top-level key",
            "invalid_request",
            r#"{"id":"u1","text":"a","colour":"red"}"#,
        )
        .id("u1"),
        Case::err(
            "unknown option",
            "invalid_request",
            r#"{"text":"a","options":{"temperature":0.7}}"#,
        ),
        Case::err(
            "options an array",
            "invalid_request",
            r#"{"text":"a","options":[4,256,1.0,1.0,0]}"#,
        ),
        Case::err(
            "options a string",
            "invalid_request",
            r#"{"text":"a","options":"beam_size=4"}"#,
        ),
        Case::err(
            "beam_size a string",
            "invalid_request",
            r#"{"text":"a","options":{"beam_size":"4"}}"#,
        ),
        Case::err(
            "beam_size a fraction",
            "invalid_request",
            r#"{"text":"a","options":{"beam_size":2.5}}"#,
        ),
        Case::err(
            "beam_size 0",
            "invalid_request",
            r#"{"text":"a","options":{"beam_size":0}}"#,
        ),
        Case::err(
            "beam_size 1000",
            "invalid_request",
            r#"{"text":"a","options":{"beam_size":1000}}"#,
        ),
        Case::err(
            "beam_size negative",
            "invalid_request",
            r#"{"text":"a","options":{"beam_size":-1}}"#,
        ),
        Case::err(
            "max_decoding_length 0",
            "invalid_request",
            r#"{"text":"a","options":{"max_decoding_length":0}}"#,
        ),
        Case::err(
            "max_decoding_length 1025",
            "invalid_request",
            r#"{"text":"a","options":{"max_decoding_length":1025}}"#,
        ),
        Case::err(
            "max_decoding_length u64::MAX",
            "invalid_request",
            r#"{"text":"a","options":{"max_decoding_length":18446744073709551615}}"#,
        ),
        Case::err(
            "max_decoding_length over u64",
            "invalid_request",
            r#"{"text":"a","options":{"max_decoding_length":99999999999999999999999}}"#,
        ),
        Case::err(
            "max_decoding_length negative",
            "invalid_request",
            r#"{"text":"a","options":{"max_decoding_length":-256}}"#,
        ),
        Case::err(
            "no_repeat_ngram_size 17",
            "invalid_request",
            r#"{"text":"a","options":{"no_repeat_ngram_size":17}}"#,
        ),
        Case::err(
            "repetition_penalty 0",
            "invalid_request",
            r#"{"text":"a","options":{"repetition_penalty":0}}"#,
        ),
        Case::err(
            "repetition_penalty negative",
            "invalid_request",
            r#"{"text":"a","options":{"repetition_penalty":-1.5}}"#,
        ),
        Case::err(
            "length_penalty beyond f32",
            "invalid_request",
            r#"{"text":"a","options":{"length_penalty":1e39}}"#,
        ),
        Case::err(
            "length_penalty a string",
            "invalid_request",
            r#"{"text":"a","options":{"length_penalty":"1.0"}}"#,
        ),
        Case::err(
            "deadline_ms over u64",
            "invalid_request",
            r#"{"text":"a","deadline_ms":99999999999999999999999}"#,
        ),
        Case::err(
            "deadline_ms negative",
            "invalid_request",
            r#"{"text":"a","deadline_ms":-1}"#,
        ),
        Case::err(
            "deadline_ms a fraction",
            "invalid_request",
            r#"{"text":"a","deadline_ms":1.5}"#,
        ),
        Case::err(
            "deadline_ms a string",
            "invalid_request",
            r#"{"text":"a","deadline_ms":"soon"}"#,
        ),
        Case::err("100k closed brackets", "invalid_request", closed.clone()),
        Case::err("40k nested objects", "invalid_request", deep_objects),
        Case::err(
            "deep unknown field",
            "invalid_request",
            format!(r#"{{"id":"d1","texts":[1],"x":{closed}}}"#),
        )
        .id("d1"),
        // Over the limits.
        Case::err("10 MiB body", "too_large", vec![b'['; 10 << 20]),
        Case::err("body one byte over", "too_large", over_limit),
        Case::err(
            "text over max_text_chars",
            "too_large",
            body(json!({"id": "t1", "text": "가".repeat(MAX_TEXT_CHARS + 1)})),
        )
        .id("t1"),
        Case::err(
            "more texts than max_texts",
            "too_large",
            body(json!({"id": "t2", "texts": vec!["a"; MAX_TEXTS + 1]})),
        )
        .id("t2"),
        // Too late.
        Case::err(
            "deadline a minute ago",
            "deadline_exceeded",
            format!(r#"{{"id":"p1","text":"a","deadline_ms":{past}}}"#),
        )
        .id("p1"),
        Case::err(
            "deadline 0",
            "deadline_exceeded",
            r#"{"text":"a","deadline_ms":0}"#,
        ),
        // Not this worker's pair (ko-en).
        Case::err(
            "source de",
            "unsupported_language_pair",
            r#"{"id":"l1","text":"a","source":"de"}"#,
        )
        .id("l1"),
        Case::err(
            "target ja",
            "unsupported_language_pair",
            r#"{"text":"a","target":"ja"}"#,
        ),
        Case::err(
            "pair swapped",
            "unsupported_language_pair",
            r#"{"text":"a","source":"en","target":"ko"}"#,
        ),
        Case::err(
            "source upper case",
            "unsupported_language_pair",
            r#"{"text":"a","source":"KO"}"#,
        ),
        Case::err(
            "source empty",
            "unsupported_language_pair",
            r#"{"text":"a","source":""}"#,
        ),
        Case::err(
            "source with NUL",
            "unsupported_language_pair",
            r#"{"text":"a","source":"ko\u0000"}"#,
        ),
        // Hostile but valid: translated, and returned unchanged by the copy model.
        Case::ok("NUL", &["a\u{0}b"], body(json!({"text": "a\u{0}b"}))),
        Case::ok(
            "control characters",
            &[controls.as_str()],
            body(json!({"text": controls})),
        ),
        Case::ok(
            "RTL override",
            &["abc \u{202E}fed\u{202C} ghi"],
            body(json!({"text": "abc \u{202E}fed\u{202C} ghi"})),
        ),
        Case::ok(
            "bidi isolates",
            &["\u{2067}שלום\u{2069} \u{200F}"],
            body(json!({"text": "\u{2067}שלום\u{2069} \u{200F}"})),
        ),
        Case::ok(
            "emoji",
            &["👩‍👩‍👧‍👦 🇰🇷 👍🏽 🚀"],
            body(json!({"text": "👩‍👩‍👧‍👦 🇰🇷 👍🏽 🚀"})),
        ),
        Case::ok(
            "odd code points",
            &[
                "\u{feff}\u{fffd}\u{ffff}\u{10ffff}\u{e000}",
                "\u{2028}\u{2029}",
                "e\u{301}\u{302}\u{303}\u{304}",
            ],
            body(
                json!({"texts": ["\u{feff}\u{fffd}\u{ffff}\u{10ffff}\u{e000}", "\u{2028}\u{2029}", "e\u{301}\u{302}\u{303}\u{304}"]}),
            ),
        ),
        Case::ok(
            "escapes",
            &["\u{0}\u{202e}😀\"\\/"],
            r#"{"text":"\u0000\u202E\ud83d\ude00\"\\\/"}"#,
        ),
        Case::ok(
            "whitespace texts",
            &["   ", "\n\t\r", ""],
            body(json!({"texts": ["   ", "\n\t\r", ""]})),
        ),
        Case::ok(
            "mixed with Hangul",
            &["한국어 \u{0}\u{202E} 😀"],
            body(json!({"text": "한국어 \u{0}\u{202E} 😀"})),
        ),
        Case::ok(
            "body exactly at the limit",
            &["exactly at the limit"],
            at_limit,
        ),
        Case::ok(
            "text exactly max_text_chars",
            &["가".repeat(MAX_TEXT_CHARS).as_str()],
            body(json!({"text": "가".repeat(MAX_TEXT_CHARS)})),
        ),
        Case::ok(
            "exactly max_texts",
            &["t"; MAX_TEXTS],
            body(json!({"texts": vec!["t"; MAX_TEXTS]})),
        ),
        Case::ok(
            "explicit nulls",
            &["nulls"],
            r#"{"text":"nulls","source":null,"target":null,"id":null,"options":null,"deadline_ms":null}"#,
        ),
        Case::ok(
            "served pair",
            &["pair"],
            r#" {"target":"en","source":"ko","text":"pair"} "#,
        ),
        Case::ok(
            "options at their edges",
            &["edges"],
            r#"{"text":"edges","options":{"beam_size":16,"max_decoding_length":64,"no_repeat_ngram_size":16,"length_penalty":-3.5}}"#,
        ),
        Case::ok(
            "deadline_ms u64::MAX",
            &["far future"],
            r#"{"text":"far future","deadline_ms":18446744073709551615}"#,
        ),
        Case::ok(
            "10k-char id",
            &["long id"],
            body(json!({"id": long_id, "text": "long id"})),
        )
        .id(&long_id),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_within_a_second_and_the_worker_keeps_serving() {
    let config = hostile_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let queue = config.amqp.queue.as_str();
    // The first engine call warms the model up: keep it out of the measurements.
    let r = bus.rpc(queue, br#"{"text":"warm-up"}"#).await;
    assert_eq!(translations(&r), ["warm-up"]);

    let cases = cases();
    let mut expected_errors: HashMap<&str, u64> = HashMap::new();
    let mut slowest = (Duration::ZERO, "");
    let suite = Instant::now();
    for (i, case) in cases.iter().enumerate() {
        let corr = format!("hostile-{i}");
        let start = Instant::now();
        bus.publish(queue, &corr, &case.body).await;
        let limit = match case.expect {
            Expect::Error(_) => ERROR_LATENCY,
            Expect::Ok(_) => OK_LATENCY,
        };
        let reply = answer(&bus, &corr, limit + Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{}: no reply", case.name));
        let elapsed = start.elapsed();
        assert!(elapsed < limit, "{}: answered in {elapsed:?}", case.name);
        match &case.expect {
            Expect::Error(code) => {
                assert_eq!(reply["status"], "error", "{}: {reply}", case.name);
                assert_eq!(reply["error"]["code"], *code, "{}: {reply}", case.name);
                let message = reply["error"]["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{}: {reply}", case.name);
                *expected_errors.entry(code).or_default() += 1;
                if elapsed > slowest.0 {
                    slowest = (elapsed, case.name);
                }
            }
            Expect::Ok(texts) => {
                assert_eq!(reply["status"], "ok", "{}: {reply}", case.name);
                assert_eq!(&translations(&reply), texts, "{}", case.name);
            }
        }
        assert_eq!(
            reply["id"].as_str(),
            case.id.as_deref(),
            "{}: id not echoed",
            case.name
        );

        // The worker still serves a valid job correctly.
        let text = format!("after {} #{i}", case.name);
        let next = format!("next-{i}");
        let start = Instant::now();
        bus.publish(queue, &next, &body(json!({"id": next, "text": text})))
            .await;
        let reply = answer(&bus, &next, OK_LATENCY)
            .await
            .unwrap_or_else(|| panic!("no reply to the valid job after {}", case.name));
        assert!(start.elapsed() < OK_LATENCY);
        assert_eq!(reply["id"], next.as_str());
        assert_eq!(translations(&reply), [text], "after {}", case.name);
    }
    eprintln!(
        "{} hostile cases in {:?}; slowest error reply: {:?} ({})",
        cases.len(),
        suite.elapsed(),
        slowest.0,
        slowest.1
    );

    // A reply queue that does not exist: the reply is dropped, the job still acked.
    let lost = format!("tw-test-gone-{}", uuid::Uuid::new_v4().simple());
    publish_raw(
        &bus,
        queue,
        br#"{"text":"nobody listens"}"#,
        BasicProperties::default()
            .with_reply_to(lost.as_str().into())
            .with_correlation_id("lost".into()),
    )
    .await;
    // No correlation id: answered all the same (the reply has none either).
    publish_raw(
        &bus,
        queue,
        br#"{"text":"no correlation id"}"#,
        BasicProperties::default().with_reply_to(bus.reply_queue.as_str().into()),
    )
    .await;
    let r = answer(&bus, "", OK_LATENCY)
        .await
        .expect("reply without correlation id");
    assert_eq!(translations(&r), ["no correlation id"]);
    let r = bus.rpc(queue, br#"{"text":"still serving"}"#).await;
    assert_eq!(translations(&r), ["still serving"]);

    // Each job answered exactly once, processed exactly once, and none left behind.
    let counts = bus.reply_counts();
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicate replies: {counts:?}"
    );
    assert_eq!(counts.len(), 2 * cases.len() + 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready_in(&bus, queue).await > 0 || w.metrics.jobs_in_flight.get() > 0 {
        assert!(Instant::now() < deadline, "jobs left in {queue}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let errors = error_counts(&w.metrics);
    for code in ErrorCode::ALL {
        let code = code.as_str();
        assert_eq!(
            errors[code],
            expected_errors.get(code).copied().unwrap_or(0),
            "{code} errors: {errors:?}"
        );
    }
    let oks = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Ok(_)))
        .count() as u64;
    // Warm-up, one per case, the valid cases, the lost reply, no correlation id, last.
    assert_eq!(w.metrics.jobs_ok.get(), 1 + cases.len() as u64 + oks + 3);
    w.stop().await;
    cleanup(&config).await;
}

/// Publishes (confirmed) to `queue` with exactly `props` plus the JSON content type.
async fn publish_raw(bus: &Bus, queue: &str, body: &[u8], props: BasicProperties) {
    let confirm = bus
        .ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props.with_content_type("application/json".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jobs_without_reply_to_are_dead_lettered_once() {
    let mut config = hostile_config();
    config.limits.max_body_bytes = 64 * 1024;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let queue = config.amqp.queue.as_str();
    let mut dead = bus.consume_no_ack(&config.amqp.dead_letter).await;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{\"text\":\"\xff\"}".to_vec()),
        ("invalid_json", br#"{"text":"\ud800"}"#.to_vec()),
        ("invalid_json", "[".repeat(60_000).into_bytes()),
        (
            "invalid_request",
            br#"[null,"hi",null,null,null,null,null]"#.to_vec(),
        ),
        (
            "invalid_request",
            br#"{"texts":[1],"options":{"beam_size":0}}"#.to_vec(),
        ),
        ("too_large", vec![b' '; 100 * 1024]),
        (
            "too_large",
            body(json!({"texts": vec!["a"; MAX_TEXTS + 1]})),
        ),
        (
            "unsupported_language_pair",
            br#"{"text":"a","target":"de"}"#.to_vec(),
        ),
        (
            "deadline_exceeded",
            br#"{"text":"a","deadline_ms":1}"#.to_vec(),
        ),
    ];
    for (i, (code, body)) in bad.iter().enumerate() {
        let corr = format!("dead-{i}");
        let start = Instant::now();
        bus.publish_to("", queue, &corr, body, false).await;
        let d = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .unwrap_or_else(|_| panic!("{code}: no dead letter"))
            .unwrap()
            .unwrap();
        let elapsed = start.elapsed();
        assert!(
            elapsed < ERROR_LATENCY,
            "{code}: dead-lettered in {elapsed:?}"
        );
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(corr.as_str())
        );
        assert!(d.data == *body, "{code}: body changed");
        let headers = d.properties.headers().clone().unwrap();
        let h = headers.inner();
        assert_eq!(
            h.get("x-translation-error-code"),
            Some(&AMQPValue::LongString((*code).into())),
            "{corr}"
        );
        assert!(h.contains_key("x-translation-error"));
        assert_eq!(
            h.get("x-original-queue"),
            Some(&AMQPValue::LongString(queue.into()))
        );
    }
    // A valid job without reply_to warms the cache and is not dead-lettered.
    bus.publish_to("", queue, "warm", br#"{"text":"warm me"}"#, false)
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.metrics.jobs_ok.get() == 0 {
        assert!(Instant::now() < deadline, "warming job not processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing is requeued in a loop: no further dead letter, the job queue is empty,
    // and each job was processed once.
    let extra = tokio::time::timeout(Duration::from_millis(1500), dead.next()).await;
    assert!(extra.is_err(), "unexpected extra dead letter");
    assert_eq!(ready_in(&bus, queue).await, 0);
    assert_eq!(ready_in(&bus, &config.amqp.dead_letter).await, 0);
    assert_eq!(w.metrics.jobs_in_flight.get(), 0);
    let errors = error_counts(&w.metrics);
    assert_eq!(errors.values().sum::<u64>(), bad.len() as u64, "{errors:?}");
    for (code, _) in &bad {
        let want = bad.iter().filter(|(c, _)| c == code).count() as u64;
        assert_eq!(errors[code], want, "{code}: {errors:?}");
    }
    assert_eq!(w.metrics.jobs_ok.get(), 1);
    assert!(bus.reply_counts().is_empty());
    w.stop().await;
    cleanup(&config).await;
}
