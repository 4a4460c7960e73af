//! `options.alternatives` end to end: through the real worker (copy model, whose best
//! translation is its input), RabbitMQ and Redis, and through the gateway's
//! LibreTranslate `POST /translate`. Also `source: "auto"` on HTML (issue 16).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::*;
use common::*;
use serde_json::{json, Value};
use translation_client::wire::DecodeOptions;
use translation_worker::translate::{Backend, Engine, EngineError, Translation};

/// Texts of a few words each: the copy model's beam has runners-up for them.
const TEXTS: [&str; 3] = [
    "회의는 오전 10시에 본사 3층 회의실에서 열립니다.",
    "The quarterly report is due on Friday.",
    "서버 점검으로 인해 서비스가 일시 중단될 수 있습니다.",
];

/// `reply["alternatives"]` as lists of strings (panics when absent).
fn alternatives(reply: &Value) -> Vec<Vec<String>> {
    reply["alternatives"]
        .as_array()
        .unwrap_or_else(|| panic!("no alternatives: {reply}"))
        .iter()
        .map(|list| {
            list.as_array()
                .unwrap_or_else(|| panic!("not a list: {reply}"))
                .iter()
                .map(|a| a.as_str().expect("a string").to_owned())
                .collect()
        })
        .collect()
}

/// Each text's alternatives are at most `max`, distinct, and none is its translation.
fn check_alternatives(reply: &Value, max: usize) -> Vec<Vec<String>> {
    let translations = translations(reply);
    let all = alternatives(reply);
    assert_eq!(all.len(), translations.len(), "{reply}");
    for (best, alts) in translations.iter().zip(&all) {
        assert!(alts.len() <= max, "more than {max}: {reply}");
        assert!(
            !alts.contains(best),
            "the best among the alternatives: {reply}"
        );
        let distinct: HashSet<&String> = alts.iter().collect();
        assert_eq!(distinct.len(), alts.len(), "repeated: {reply}");
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternatives_come_back_distinct_and_the_best_is_the_plain_translation() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let q = &config.amqp.queue;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let texts: Vec<String> = TEXTS
        .iter()
        .map(|t| format!("{t} {id}"))
        .chain([String::new()])
        .collect();
    let asked = json!({"id": "alt", "texts": texts, "options": {"alternatives": 3}});
    let r = bus.rpc(q, &serde_json::to_vec(&asked).unwrap()).await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["id"], "alt");
    // The copy model's best translation is its input; the empty text has none.
    assert_eq!(translations(&r), texts);
    let first = check_alternatives(&r, 3);
    assert_eq!(first[3], Vec::<String>::new(), "{r}");
    assert!(
        first.iter().any(|a| !a.is_empty()),
        "the beam gave no alternative at all: {r}"
    );
    assert_eq!(cached(&r), vec![false; 4]);
    wait_for_stores(&w.metrics, 3).await;

    // A plain job at the same effective beam (1 + 3): the same best translations, no
    // `alternatives` key, and not answered from the alternatives' cache entries.
    let plain = json!({"texts": texts, "options": {"beam_size": 4}});
    let p = bus.rpc(q, &serde_json::to_vec(&plain).unwrap()).await;
    assert_eq!(p["status"], "ok", "{p}");
    assert_eq!(translations(&p), translations(&r));
    assert!(p.get("alternatives").is_none(), "{p}");
    // (An empty text is never a cache hit: it is answered without the model.)
    assert_eq!(cached(&p), vec![false; 4], "{p}");

    // Asked again: from the cache, with the same alternatives.
    let again = bus.rpc(q, &serde_json::to_vec(&asked).unwrap()).await;
    assert_eq!(cached(&again), [true, true, true, false], "{again}");
    assert_eq!(translations(&again), texts);
    assert_eq!(alternatives(&again), first);

    // Fewer asked: a prefix-sized list of its own (its own cache entry).
    let one = json!({"texts": texts, "options": {"alternatives": 1, "beam_size": 4}});
    let o = bus.rpc(q, &serde_json::to_vec(&one).unwrap()).await;
    assert_eq!(cached(&o), vec![false; 4], "{o}");
    assert_eq!(translations(&o), texts);
    check_alternatives(&o, 1);
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentences_only_one_segment_texts_get_alternatives() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    // The id first: after the full stop it would be a sentence of its own.
    let one = format!("  {id} {}\n", TEXTS[0]);
    let two = format!("{} {id}\n\n{}", TEXTS[1], TEXTS[2]);
    let body = json!({
        "texts": [one, two],
        "split": "sentences",
        "options": {"alternatives": 2}
    });
    let r = bus
        .rpc(&config.amqp.queue, &serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(translations(&r), [one.clone(), two.clone()]);
    let all = check_alternatives(&r, 2);
    // The one-sentence text keeps its own whitespace around each alternative.
    for a in &all[0] {
        assert!(a.starts_with("  ") && a.ends_with('\n'), "{a:?}");
    }
    assert!(!all[0].is_empty(), "{r}");
    assert_eq!(all[1], Vec::<String>::new(), "two sentences: none");
    // The two-sentence text's sentences were translated without alternatives at the
    // effective beam (3): a plain job at that beam finds them in the cache.
    wait_for_stores(&w.metrics, 3).await;
    let plain = json!({"texts": [two], "split": "sentences", "options": {"beam_size": 3}});
    let p = bus
        .rpc(&config.amqp.queue, &serde_json::to_vec(&plain).unwrap())
        .await;
    assert_eq!(cached(&p), [true], "{p}");
    assert!(p.get("alternatives").is_none(), "{p}");
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_alternatives_are_refused_with_invalid_request() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    for (body, message) in [
        (
            json!({"id": "a", "text": "x", "options": {"alternatives": 9}}),
            Some("options.alternatives must be in 0..=8, got 9"),
        ),
        (
            json!({"id": "a", "text": "<p>x</p>", "format": "html", "options": {"alternatives": 1}}),
            Some("`options.alternatives` is not available with `format: \"html\"`: leave it out or set it to 0"),
        ),
        // Wrong types: serde's message, as for every option.
        (
            json!({"id": "a", "text": "x", "options": {"alternatives": -1}}),
            None,
        ),
        (
            json!({"id": "a", "text": "x", "options": {"alternatives": "2"}}),
            None,
        ),
    ] {
        let r = bus
            .rpc(&config.amqp.queue, &serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(r["status"], "error", "{body}: {r}");
        assert_eq!(r["id"], "a", "{r}");
        assert_eq!(r["error"]["code"], "invalid_request", "{body}: {r}");
        let got = r["error"]["message"].as_str().unwrap();
        if let Some(m) = message {
            assert_eq!(got, m);
        }
    }
    w.stop().await;
    cleanup(&config).await;
}

/// One engine call: the alternatives its options asked for, and its texts.
type Call = (u32, Vec<String>);

/// The engine, recording what each batch asked for: its alternatives and texts.
struct Recording {
    engine: Arc<Engine>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Backend for Recording {
    fn translate(
        &self,
        sources: &[Vec<String>],
        prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<String>, EngineError> {
        self.translate_alternatives(sources, prefixes, options)
            .map(|v| v.into_iter().map(|t| t.best).collect())
    }

    fn translate_alternatives(
        &self,
        sources: &[Vec<String>],
        prefixes: &[Option<String>],
        options: &DecodeOptions,
    ) -> Result<Vec<Translation>, EngineError> {
        let out = self
            .engine
            .translate_alternatives(sources, prefixes, options)?;
        self.calls.lock().unwrap().push((
            options.alternatives,
            out.iter().map(|t| t.best.clone()).collect(),
        ));
        Ok(out)
    }

    fn replicas(&self) -> usize {
        self.engine.replicas()
    }
}

/// Jobs with and without alternatives at the same beam, all at once: no engine call
/// mixes them, so asking for alternatives never changes another job's decoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_with_and_without_alternatives_never_share_an_engine_call() {
    let mut config = test_config();
    // Room to batch what arrives together.
    config.batch.max_wait_ms = 50;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let w = start_worker_with(config.clone(), move |engine| {
        Arc::new(Recording {
            engine,
            calls: recorded,
        })
    })
    .await;
    let bus = Bus::connect().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut corrs = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..40 {
        let asks = i % 2 == 0;
        let text = format!(
            "{} {} #{i} {id}",
            if asks { "ALT" } else { "PLAIN" },
            TEXTS[i % 3]
        );
        let options = if asks {
            json!({"alternatives": 2, "beam_size": 3})
        } else {
            json!({"beam_size": 3})
        };
        let corr = format!("mix-{i}");
        let body = json!({"texts": [text], "options": options});
        bus.publish(
            &config.amqp.queue,
            &corr,
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
        corrs.push(corr);
        jobs.push((asks, text));
    }
    bus.wait_for(&corrs, Duration::from_secs(60)).await;
    for (corr, (asks, text)) in corrs.iter().zip(&jobs) {
        let r = &bus.replies(corr)[0];
        assert_eq!(translations(r), std::slice::from_ref(text), "{r}");
        assert_eq!(r.get("alternatives").is_some(), *asks, "{r}");
    }
    let calls: Vec<Call> = calls.lock().unwrap().clone();
    let mut seen = 0;
    for (alternatives, texts) in calls.iter() {
        for t in texts {
            let alt = t.starts_with("ALT");
            assert!(alt || t.starts_with("PLAIN"), "{t}");
            assert_eq!(
                alt,
                *alternatives == 2,
                "{texts:?} in a call with {alternatives}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 40, "{calls:?}");
    assert!(
        calls.len() < 40,
        "no batching at all: {} calls",
        calls.len()
    );
    w.stop().await;
    cleanup(&config).await;
}

/// `POST /translate` of `body` as `content_type`: status and JSON answer.
async fn post(gw: &RunningGateway, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, _, v) = answer(
        http_client()
            .post(gw.url("/translate"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request"),
    )
    .await;
    (status.as_u16(), v)
}

async fn post_json(gw: &RunningGateway, body: Value) -> (u16, Value) {
    post(gw, "application/json", serde_json::to_vec(&body).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn libretranslate_alternatives_through_the_gateway() {
    let mut config = test_config();
    config.model.pairs = vec!["ko-en".into(), "en-ko".into()];
    let w = start_worker(config.clone()).await;
    let gw = RunningGateway::start_healthy(config.clone()).await;
    let id = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
    // The gateway cuts texts into sentences: the id first keeps each one sentence.
    let ko = format!("{id} {}", TEXTS[0]);
    let ko2 = format!("{id} {}", TEXTS[2]);

    // One text: `alternatives` is a list of strings.
    let (status, v) = post_json(
        &gw,
        json!({"q": ko, "source": "ko", "target": "en", "alternatives": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["translatedText"], ko.as_str());
    let alts = v["alternatives"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!alts.is_empty() && alts.len() <= 3, "{v}");
    assert!(
        alts.iter().all(|a| a.is_string() && *a != ko.as_str()),
        "{v}"
    );

    // A list (and a form, as LibreTranslate's UI sends): a list per text.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &ko)
        .append_pair("q", &ko2)
        .append_pair("source", "ko")
        .append_pair("target", "en")
        .append_pair("alternatives", "2")
        .finish();
    let (status, v) = post(&gw, "application/x-www-form-urlencoded", form.into_bytes()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["translatedText"], json!([ko, ko2]));
    let per_text = v["alternatives"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(per_text.len(), 2, "{v}");
    assert!(
        per_text
            .iter()
            .all(|l| l.as_array().is_some_and(|l| l.len() <= 2)),
        "{v}"
    );

    // Not asked (or 0): no key, as LibreTranslate.
    for body in [
        json!({"q": ko, "source": "ko", "target": "en"}),
        json!({"q": ko, "source": "ko", "target": "en", "alternatives": 0}),
    ] {
        let (status, v) = post_json(&gw, body).await;
        assert_eq!(status, 200, "{v}");
        assert!(v.get("alternatives").is_none(), "{v}");
    }

    // HTML: none, as LibreTranslate (the wire contract has none for pages).
    let page = format!("<p>{ko}</p>");
    let (status, v) = post_json(
        &gw,
        json!({"q": page, "source": "ko", "target": "en", "format": "html", "alternatives": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["translatedText"], page.as_str());
    assert_eq!(v["alternatives"], json!([]), "{v}");

    // auto: the detected text's alternatives; one already in the target has none.
    let en = format!("The quarterly report is due on Friday. {id}");
    let (status, v) = post_json(
        &gw,
        json!({"q": [ko, en], "source": "auto", "target": "en", "alternatives": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["detectedLanguage"][0]["language"], "ko", "{v}");
    assert!(!v["alternatives"][0].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["alternatives"][1], json!([]), "{v}");

    // LibreTranslate's refusals.
    for (body, message) in [
        (
            json!({"q": ko, "source": "ko", "target": "en", "alternatives": 9}),
            "Invalid request: alternatives parameter must be <= 8",
        ),
        (
            json!({"q": ko, "source": "ko", "target": "en", "alternatives": "some"}),
            "Invalid request: alternatives parameter is not a number",
        ),
    ] {
        let (status, v) = post_json(&gw, body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"], message, "{v}");
    }
    gw.stop().await;
    w.stop().await;
    cleanup(&config).await;
}

/// Issue 16: `source: "auto"` with `format: "html"` is detected on the page's text,
/// not on its (English-looking) markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_source_detects_an_html_page_by_its_text() {
    let mut config = test_config();
    config.model.pairs = vec!["ko-en".into(), "en-ko".into()];
    let w = start_worker(config.clone()).await;
    let gw = RunningGateway::start_healthy(config.clone()).await;
    let style = ".navigation-menu { display: flex; background-color: white; }\n".repeat(40);
    let page = format!(
        "<html><head><style>{style}</style></head>\
         <body class=\"main-content-wrapper\"><p>{}</p></body></html>",
        TEXTS[0]
    );
    let (status, v) = post_json(
        &gw,
        json!({"q": page, "source": "auto", "target": "en", "format": "html"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["detectedLanguage"]["language"], "ko", "{v}");
    // Translated (ko→en, the copy model): the page comes back byte for byte.
    assert_eq!(v["translatedText"], page.as_str());
    gw.stop().await;
    w.stop().await;
    cleanup(&config).await;
}
