//! Documents (`"split": "sentences"`): sentence by sentence through the cache and the
//! model, rebuilt with the original whitespace, against the real broker and Redis.
//! The copy model translates a text into itself, so every rebuilt document must equal
//! its input byte for byte.

mod common;

use serde_json::{json, Value};

use common::*;

/// Paragraphs in several scripts, with every kind of whitespace a document has.
const DOC_A: &str =
    "  분기 보고서 초안\r\n\r\n회의는 오전 10시에 시작합니다. 자료를 준비해 주세요! \
질문 있나요?\n\nThe report is due on Friday. Dr. Kim will review it at 3.30 p.m. tomorrow.\n\
- 첫째 항목\n- second item\t(draft)\n\n\
会議は十時に始まります。資料を準備してください。\n\
会议十点开始。请准备材料！\u{3000}\n\n\n\
He said \"Stop.\" Then he left.   ";

/// Five sentences, three of them shared with `DOC_A` (in another order).
const DOC_B: &str = "새 문서입니다.\n회의는 오전 10시에 시작합니다. 완전히 새로운 문장입니다.\n\n\
The report is due on Friday.\t会議は十時に始まります。";

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
async fn documents_round_trip_exactly_and_share_cached_sentences() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let q = &config.amqp.queue;

    let r = bus
        .rpc(
            q,
            json!({ "texts": [DOC_A, "", " \n\t "], "split": "sentences" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(translations(&r), [DOC_A, "", " \n\t "]);
    let seg_a = segments(&r);
    // Heading, 3 Korean, 2 English, 2 list items, 2 Japanese, 2 Chinese, 2 quoted.
    assert!(
        (14..=15).contains(&seg_a[0].0),
        "expected 14 sentences in DOC_A (15 if \"p.m.\" ends one), got {seg_a:?}"
    );
    assert_eq!(seg_a[0].1, 0, "nothing was cached yet");
    assert_eq!(seg_a[1], (0, 0), "an empty text has no segments");
    assert_eq!(seg_a[2], (0, 0), "whitespace has no segments");
    assert_eq!(cached(&r), [false, false, false]);

    wait_for_stores(&w.metrics, seg_a[0].0).await;

    // The second document: its three sentences shared with the first come from the
    // cache, the others do not.
    let r = bus
        .rpc(
            q,
            json!({ "text": DOC_B, "split": "sentences" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(translations(&r), [DOC_B]);
    let seg_b = segments(&r);
    assert_eq!(seg_b[0], (5, 3), "{r}");
    assert_eq!(cached(&r), [false]);

    // The same document again: all from the cache.
    let r = bus
        .rpc(
            q,
            json!({ "text": DOC_A, "split": "sentences" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(translations(&r), [DOC_A]);
    assert_eq!(segments(&r)[0], (seg_a[0].0, seg_a[0].0));
    assert_eq!(cached(&r), [true]);

    // A sentence sent on its own (no split) is the same cache entry.
    let r = bus
        .rpc(
            q,
            json!({ "text": "자료를 준비해 주세요!" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(cached(&r), [true], "{r}");
    assert!(
        r.get("segments").is_none(),
        "no segments without split: {r}"
    );
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentences_over_the_input_limit_are_split_not_truncated() {
    let mut config = test_config();
    config.model.max_input_length = 24;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let q = &config.amqp.queue;
    // One long "sentence" with no full stop: clauses, then plain words, then a
    // run of CJK without spaces, all far over 24 tokens.
    let long = format!(
        "{}, {}; {} {}\n{}",
        "본사 3층 회의실에서 열리는 분기 회의에는 모든 팀장이 참석해야 하며",
        "참석하지 못하는 경우에는 사전에 대리인을 지정하여 알려 주시기 바랍니다",
        "the agenda covers budget staffing and the new office lease in detail",
        "with time for questions at the end of every single item on the list",
        "会議資料は前日までに各部署の担当者が共有フォルダに保存してください"
    );
    let r = bus
        .rpc(
            q,
            json!({ "text": long, "split": "sentences" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(translations(&r), [long.as_str()], "nothing may be cut off");
    assert!(r.get("truncated").is_none(), "nothing was truncated: {r}");
    let seg = segments(&r);
    assert!(
        seg[0].0 >= 6,
        "the long sentences were split further: {seg:?}"
    );
    // The reply can arrive before its segments' cache writes end (they run side by
    // side): wait for them, so that the count below starts after them.
    wait_for_stores(&w.metrics, seg[0].0).await;
    // Without split the model truncates the same text at its input limit: the
    // difference the splitting makes, and the reply says which text it cut.
    let stored = w.metrics.cache_stores.get();
    for (round, from_cache) in [("translated", false), ("cached", true)] {
        if from_cache {
            // Both texts of the first round, stored after its reply.
            wait_for_stores(&w.metrics, stored + 2).await;
        }
        let r = bus
            .rpc(
                q,
                json!({ "texts": ["short one", long] })
                    .to_string()
                    .as_bytes(),
            )
            .await;
        let whole = &translations(&r)[1];
        assert!(
            whole.len() < long.len() / 2,
            "unsplit, the copy model truncates at 24 tokens: {whole:?}"
        );
        assert_eq!(r["truncated"], json!([false, true]), "{round}: {r}");
        assert_eq!(cached(&r)[1], from_cache, "{round}: {r}");
    }
    assert_eq!(w.metrics.texts_truncated.get(), 2, "the two unsplit rounds");
    w.stop().await;
    cleanup(&config).await;
}

/// With `split`, only a single character longer than the limit cannot be cut to fit:
/// the reply says that text was truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_character_over_the_limit_is_reported_truncated() {
    let mut config = test_config();
    // An emoji is 4 byte tokens and `</s>`: over 3. ASCII letters are not.
    config.model.max_input_length = 3;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let r = bus
        .rpc(
            &config.amqp.queue,
            json!({ "texts": ["Fine. 😀 fine.", "ok. yes."], "split": "sentences" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["truncated"], json!([true, false]), "{r}");
    assert_eq!(translations(&r)[1], "ok. yes.", "{r}");
    assert_eq!(w.metrics.texts_truncated.get(), 1);
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_is_validated() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    let r = bus
        .rpc(
            &config.amqp.queue,
            br#"{"id":"s1","text":"a. b.","split":"paragraphs"}"#,
        )
        .await;
    assert_eq!(r["error"]["code"], "invalid_request", "{r}");
    assert_eq!(r["id"], "s1");
    w.stop().await;
    cleanup(&config).await;
}

/// Cache misses and segments the engine translated while `body` was answered (the
/// worker handles nothing else meanwhile), with the reply.
async fn counted(w: &RunningWorker, bus: &Bus, body: Value) -> (Value, u64, u64) {
    let misses = w.metrics.segments_cache_miss.get();
    let engine = w.metrics.batch_size.sum();
    let r = bus
        .rpc(&w.config.amqp.queue, body.to_string().as_bytes())
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let translated = w.metrics.batch_size.sum() - engine;
    (
        r,
        w.metrics.segments_cache_miss.get() - misses,
        translated as u64,
    )
}

/// A 50-paragraph report: English paragraphs of three sentences, Korean ones of two.
fn report(edited: Option<(usize, &str)>) -> String {
    (0..50)
        .map(|i| match edited {
            Some((j, text)) if i == j => text.to_owned(),
            _ if i % 2 == 0 => format!(
                "Paragraph {i} opens the section on topic {i}. It explains why item {i} \
                 matters to the team.\nDr. Kim reviews figure {i}.5 on Friday."
            ),
            _ => format!("회의 {i}번은 오전 10시에 시작합니다. 자료 {i}번을 준비해 주세요!"),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_paragraph_retranslates_only_its_changed_sentences() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;

    let doc = report(None);
    let (r, misses, translated) = counted(
        &w,
        &bus,
        json!({ "text": doc, "split": "sentences", "id": "v1" }),
    )
    .await;
    assert_eq!(translations(&r), [doc.as_str()]);
    let (n, hits) = segments(&r)[0];
    assert_eq!((n, hits), (25 * 3 + 25 * 2, 0), "{r}");
    assert_eq!((misses, translated), (n, n), "every sentence is new");
    wait_for_stores(&w.metrics, n).await;

    // Paragraph 16: two of its three sentences rewritten, one kept.
    let edited = report(Some((
        16,
        "Paragraph 16 now opens a different section. It explains why item 16 \
         matters to the team.\nDr. Kim reviews the new figure on Monday.",
    )));
    let (r, misses, translated) = counted(
        &w,
        &bus,
        json!({ "text": edited, "split": "sentences", "id": "v2" }),
    )
    .await;
    assert_eq!(translations(&r), [edited.as_str()]);
    assert_eq!(segments(&r)[0], (n, n - 2), "{r}");
    assert_eq!(misses, 2, "only the two changed sentences missed the cache");
    assert_eq!(
        translated, 2,
        "only the two changed sentences reached the engine"
    );
    w.stop().await;
    cleanup(&config).await;
}

/// A 50-paragraph HTML page with inline markup in its sentences.
fn page(edited: Option<(usize, &str)>) -> String {
    let body: String = (0..50)
        .map(|i| match edited {
            Some((j, p)) if i == j => format!("  {p}\n"),
            _ if i % 2 == 0 => format!(
                "  <p id=\"p{i}\">Paragraph {i} opens <b>the section</b> on topic {i}. It \
                 explains why <a href=\"/item/{i}?x=1&amp;y=2\">item {i}</a> matters.</p>\n"
            ),
            _ => format!(
                "  <p>회의 {i}번은 <em>오전 10시</em>에 시작합니다. 자료 {i}번을 준비해 주세요!</p>\n"
            ),
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><title>Report</title></head>\n<body>\n{body}</body></html>\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_html_paragraph_retranslates_only_its_changed_sentence() {
    let config = test_config();
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;

    let html = page(None);
    let (r, misses, translated) =
        counted(&w, &bus, json!({ "text": html, "format": "html" })).await;
    assert_eq!(translations(&r), [html.as_str()]);
    let (n, hits) = segments(&r)[0];
    assert_eq!(
        (n, hits),
        (1 + 50 * 2, 0),
        "title and two sentences a paragraph: {r}"
    );
    assert_eq!((misses, translated), (n, n));
    wait_for_stores(&w.metrics, n).await;

    // Paragraph 10: its first sentence rewritten (with new markup), its second kept.
    // Paragraph 20: only its markup changed (another link, a word made italic),
    // which changes no sentence's text.
    let edited = page(Some((
        10,
        "<p id=\"p10\">Paragraph 10 now covers <i>another</i> topic. It explains why \
         <a href=\"/item/10?x=1&amp;y=2\">item 10</a> matters.</p>",
    )))
    .replace(
        "<a href=\"/item/20?x=1&amp;y=2\">item 20</a>",
        "<a href=\"/v2/item/20\" class=\"new\">item <i>20</i></a>",
    );
    assert_ne!(edited, html);
    let (r, misses, translated) =
        counted(&w, &bus, json!({ "text": edited, "format": "html" })).await;
    assert_eq!(translations(&r), [edited.as_str()]);
    assert_eq!(segments(&r)[0], (n, n - 1), "{r}");
    assert_eq!(misses, 1, "only the changed sentence missed the cache");
    assert_eq!(
        translated, 1,
        "only the changed sentence reached the engine"
    );
    w.stop().await;
    cleanup(&config).await;
}
