//! HTML documents (`"format": "html"`) through the real broker, worker, Redis and the
//! copy model (whose translation is its input), on the queue and through the gateway:
//! every page of the corpus in `tests/fixtures/html/` must come back byte for byte,
//! which holds only if the markup is copied, the sentences are cut and put back
//! exactly, and the inline tags go back where they were.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::*;
use translation_worker::gateway::Gateway;

/// The corpus: (file name, page), in name order.
fn corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/html");
    let mut pages: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("UTF-8 page"))
        })
        .collect();
    pages.sort();
    assert!(pages.len() >= 8, "the corpus has {} pages", pages.len());
    pages
}

/// `(segments, cached)` per text of an ok reply.
fn segments(reply: &Value) -> Vec<(u64, u64)> {
    reply["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no segments in {reply}"))
        .iter()
        .map(|s| {
            (
                s["segments"].as_u64().unwrap(),
                s["cached"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_of_the_corpus_comes_back_byte_for_byte() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let q = &config.amqp.queue;
    let pages = corpus();
    let mut total = 0;
    for (name, page) in &pages {
        let misses = w.metrics.segments_cache_miss.get();
        let r = bus
            .rpc(
                q,
                json!({ "id": name, "text": page, "format": "html" })
                    .to_string()
                    .as_bytes(),
            )
            .await;
        assert_eq!(r["status"], "ok", "{name}: {r}");
        let got = translations(&r);
        assert!(
            got[0] == *page,
            "{name} changed:\n--- sent\n{page}\n--- got\n{}",
            got[0]
        );
        // The page was translated in sentences, each looked up in the cache.
        let (n, _) = segments(&r)[0];
        assert!(n >= 4, "{name}: only {n} segments");
        let looked_up = w.metrics.segments_cache_miss.get() - misses;
        assert!(
            looked_up <= n,
            "{name}: {looked_up} misses for {n} segments"
        );
        total += n;
    }
    assert!(total >= 80, "{total} segments in the whole corpus");

    // All pages in one job: every sentence from the cache once the stores landed
    // (they follow each reply), and still byte for byte.
    let texts: Vec<&str> = pages.iter().map(|(_, p)| p.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = bus
            .rpc(
                q,
                json!({ "texts": texts, "format": "html", "split": "sentences" })
                    .to_string()
                    .as_bytes(),
            )
            .await;
        assert_eq!(translations(&r), texts);
        if cached(&r).iter().all(|c| *c) {
            assert!(segments(&r).iter().all(|(n, hits)| n == hits), "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "never all cached: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_across_tags_is_one_plain_segment_shared_with_text_jobs() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let q = &config.amqp.queue;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let page = format!(
        "<p>Read the <a href=\"/guide?a=1&amp;b=2\">user <b>guide</b></a> {id} first. \
         Then <em>run</em> it.</p>"
    );
    let engine_before = w.metrics.batch_size.sum();
    let r = bus
        .rpc(
            q,
            json!({ "text": page, "format": "html" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(translations(&r), [page.as_str()]);
    // Two sentences, not one per text node (5) nor the whole page (1).
    assert_eq!(segments(&r), [(2, 0)], "{r}");
    assert_eq!(
        w.metrics.batch_size.sum() - engine_before,
        2.0,
        "two segments went to the engine"
    );
    wait_for_stores(&w.metrics, 2).await;
    // What was translated is the sentences' plain text: the same cache entries as
    // plain-text jobs.
    let r = bus
        .rpc(
            q,
            json!({ "texts": [format!("Read the user guide {id} first."), "Then run it."] })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(cached(&r), [true, true], "{r}");

    // The contract is strict about the field.
    for body in [
        json!({ "text": "<p>x</p>", "format": "HTML" }),
        json!({ "text": "<p>x</p>", "format": "markdown" }),
        json!({ "text": "<p>x</p>", "format": "html", "split": "none" }),
    ] {
        let r = bus.rpc(q, body.to_string().as_bytes()).await;
        assert_eq!(r["status"], "error", "{body}: {r}");
        assert_eq!(r["error"]["code"], "invalid_request", "{body}: {r}");
    }
    w.stop().await;
    cleanup(&config).await;
}

/// Status and JSON body of a gateway answer.
async fn answer(r: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = r.status();
    let body = r.text().await.expect("body");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body}"));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn html_through_the_gateway_in_both_dialects() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let mut gw_config = config.clone();
    gw_config.gateway.listen = "127.0.0.1:0".into();
    let gateway = Gateway::bind(&gw_config).await.expect("gateway binds");
    let base = format!("http://{}", gateway.local_addr().expect("bound address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.run(shutdown.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(
        http.get(format!("{base}/healthz")).send().await,
        Ok(r) if r.status() == reqwest::StatusCode::OK
    ) {
        assert!(Instant::now() < deadline, "gateway never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pages = corpus();
    let (_, korean) = pages
        .iter()
        .find(|(name, _)| name.contains("korean"))
        .expect("a Korean page");
    let (_, table) = pages
        .iter()
        .find(|(name, _)| name.contains("table"))
        .expect("a table page");

    // LibreTranslate's POST, JSON: a string and an array.
    let (status, v) = answer(
        http.post(format!("{base}/translate"))
            .json(&json!({"q": korean, "source": "ko", "target": "en", "format": "html"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": korean }));
    let (status, v) = answer(
        http.post(format!("{base}/translate"))
            .json(&json!({"q": [table, "<b>Hi</b> there."], "source": "ko", "target": "en", "format": "html"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": [table, "<b>Hi</b> there."] }));
    // A form, and GET with `format=html`.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", "<p>Tom &amp; Jerry&#x27;s <i>show</i>.</p>")
        .append_pair("source", "ko")
        .append_pair("target", "en")
        .append_pair("format", "html")
        .finish();
    let (status, v) = answer(
        http.post(format!("{base}/translate"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({ "translatedText": "<p>Tom &amp; Jerry&#x27;s <i>show</i>.</p>" })
    );
    let (status, v) = answer(
        http.get(format!("{base}/translate?{form}"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(
        v["translations"],
        json!(["<p>Tom &amp; Jerry&#x27;s <i>show</i>.</p>"])
    );
    // Unknown formats are refused.
    let (status, v) = answer(
        http.post(format!("{base}/translate"))
            .json(&json!({"q": "<b>x</b>", "source": "ko", "target": "en", "format": "xml"}))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{v}");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    w.stop().await;
    cleanup(&config).await;
}
