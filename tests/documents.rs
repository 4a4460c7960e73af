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
