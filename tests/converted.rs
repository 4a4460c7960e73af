//! Models made by the real converter: tiny random Hugging Face models (Marian with
//! `source.spm`/`target.spm`, M2M-100 with `sentencepiece.bpe.model`, NLLB with a
//! `tokenizer.json`) converted by `ct2-transformers-converter`, with the outputs of the
//! Python pipeline (the ctranslate2 wheel and each model's own Hugging Face
//! tokenizer) recorded beside them by `scripts/make_converted_fixtures.py`.
//!
//! The worker's replies must be byte-identical to those references, for every input,
//! whether the inputs come one per job (and are batched together across target
//! languages) or all in one job, and again from the cache. The one documented
//! difference: the contract answers an empty text with an empty text without asking
//! the model, where the pipeline lets a random multilingual model write something.
//!
//! Both sides run with the same int8 kernels on every x86-64 CPU ([`PINNED_KERNELS`]):
//! oneDNN sums u8 x s8 products exactly with AVX-512 VNNI but saturates pairs of them
//! at 16 bits with AVX2, and a random model's outputs sit on such near-ties, so
//! references recorded on an Intel Xeon failed on an AMD EPYC (AVX2 only).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use translation_worker::config::{Config, LanguageTokens, ModelConfig};
use translation_worker::translate::Engine;

use common::*;

/// The kernel pins `scripts/make_converted_fixtures.py` records the references under
/// (its `PINNED_KERNELS`): oneDNN rather than oneMKL (the worker's backend; the wheel
/// picks oneMKL on Intel CPUs) and no ISA above AVX2 (CTranslate2's own kernels stop
/// at AVX2 unless told otherwise). Every x86-64 CPU CI runs on has AVX2.
const PINNED_KERNELS: [(&str, &str); 2] = [("CT2_USE_MKL", "0"), ("ONEDNN_MAX_CPU_ISA", "AVX2")];

/// Sets [`PINNED_KERNELS`] once, before any engine in this test binary loads (oneDNN
/// and CTranslate2 read them on first use). Every test here calls it first; the
/// `Once` holds the others back until the variables are set.
fn pin_kernels() {
    static PIN: std::sync::Once = std::sync::Once::new();
    PIN.call_once(|| {
        for (name, value) in PINNED_KERNELS {
            std::env::set_var(name, value);
        }
    });
}

#[derive(Deserialize)]
struct References {
    source_positions: usize,
    max_decoding_length: usize,
    cases: Vec<Case>,
    /// Output token sequences with special tokens in them, and the tokenizer's text.
    decode_cases: Vec<DecodeCase>,
}

#[derive(Deserialize)]
struct DecodeCase {
    tokens: Vec<String>,
    text: String,
}

#[derive(Deserialize, Clone)]
struct Case {
    text: String,
    source: String,
    target: String,
    translation: String,
    /// The pipeline's source had more tokens than the model has positions.
    truncated: bool,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/converted/{name}"))
}

fn references(name: &str) -> References {
    let path = fixture(name).join("references.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("references.json parses")
}

/// What the worker must answer for `case`.
fn expected(case: &Case) -> &str {
    if case.text.is_empty() {
        ""
    } else {
        &case.translation
    }
}

fn config_for(name: &str, refs: &References, tokens: LanguageTokens) -> Config {
    let mut config = test_config();
    config.model.path = fixture(name);
    config.model.id = name.into();
    config.model.language_tokens = tokens;
    config.model.max_decoding_length = refs.max_decoding_length;
    // 0: the model's own limit, read from its position table.
    config.model.max_input_length = 0;
    let mut pairs: Vec<String> = refs
        .cases
        .iter()
        .map(|c| format!("{}-{}", c.source, c.target))
        .collect();
    pairs.sort();
    pairs.dedup();
    config.model.pairs = pairs;
    config.limits.max_texts = 64;
    config
}

/// Sends every case as its own job, all at once, and checks each reply. Returns how
/// many came from the cache.
async fn one_per_job(bus: &Bus, config: &Config, cases: &[Case], round: &str) -> usize {
    let mut corrs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let corr = format!("{round}-{i}");
        let body = json!({"text": case.text, "source": case.source, "target": case.target});
        bus.publish(&config.amqp.queue, &corr, body.to_string().as_bytes())
            .await;
        corrs.push(corr);
    }
    bus.wait_for(&corrs, Duration::from_secs(120)).await;
    let mut hits = 0;
    let mut wrong = Vec::new();
    for (case, corr) in cases.iter().zip(&corrs) {
        let r = &bus.replies(corr)[0];
        assert_eq!(r["status"], "ok", "{round}: {r}");
        hits += usize::from(cached(r)[0]);
        let got = &translations(r)[0];
        if got != expected(case) {
            wrong.push(format!(
                "{:?} {}-{}: got {got:?}, want {:?}",
                case.text, case.source, case.target, case.translation
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{round}: {} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    hits
}

/// Sends each pair's cases as one job and checks the replies, and the `truncated`
/// flag of the text over the model's position limit.
async fn one_job_per_pair(bus: &Bus, config: &Config, refs: &References) {
    let mut by_pair: BTreeMap<(String, String), Vec<&Case>> = BTreeMap::new();
    for c in &refs.cases {
        by_pair
            .entry((c.source.clone(), c.target.clone()))
            .or_default()
            .push(c);
    }
    for ((source, target), cases) in by_pair {
        let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
        let body = json!({"texts": texts, "source": source, "target": target});
        let r = bus
            .rpc(&config.amqp.queue, body.to_string().as_bytes())
            .await;
        assert_eq!(r["status"], "ok", "{r}");
        let got = translations(&r);
        for (case, got) in cases.iter().zip(&got) {
            assert_eq!(got, expected(case), "{source}-{target} {:?}", case.text);
        }
        // Texts over the position limit: the reply says which were cut (and has no
        // `truncated` when none was).
        let long: Vec<bool> = cases.iter().map(|c| c.truncated).collect();
        let want = if long.contains(&true) {
            json!(long)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(r["truncated"], want, "{source}-{target}: {r}");
    }
}

async fn check_model(name: &str, tokens: LanguageTokens) {
    pin_kernels();
    let refs = references(name);
    assert!(refs.cases.len() >= 30, "{name}: {} cases", refs.cases.len());
    assert!(
        refs.cases.iter().any(|c| c.truncated),
        "{name}: the references hold a text over the position limit"
    );
    let config = config_for(name, &refs, tokens);
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    // First from the engine (batched across pairs), then all from the cache.
    let hits = one_per_job(&bus, &config, &refs.cases, "engine").await;
    assert_eq!(hits, 0, "{name}: a fresh key prefix has no hits");
    let distinct: std::collections::HashSet<(&str, &str, &str)> = refs
        .cases
        .iter()
        .filter(|c| !c.text.is_empty())
        .map(|c| (c.text.as_str(), c.source.as_str(), c.target.as_str()))
        .collect();
    wait_for_stores(&w.metrics, distinct.len() as u64).await;
    let hits = one_per_job(&bus, &config, &refs.cases, "cache").await;
    assert_eq!(
        hits,
        refs.cases.iter().filter(|c| !c.text.is_empty()).count(),
        "{name}: the repeat came from the cache"
    );
    one_job_per_pair(&bus, &config, &refs).await;
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marian_replies_match_the_python_pipeline() {
    check_model("marian", LanguageTokens::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2m100_replies_match_the_python_pipeline() {
    check_model("m2m100", LanguageTokens::M2m100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nllb_replies_match_the_python_pipeline() {
    check_model("nllb", LanguageTokens::Nllb).await;
}

/// Special tokens among ordinary pieces (`<unk>`, `</s>`, language codes, M2M-100's
/// fillers) come out as each model's own tokenizer writes them.
#[test]
fn output_tokens_decode_as_the_models_tokenizer_does() {
    pin_kernels();
    for (name, tokens) in [
        ("marian", LanguageTokens::None),
        ("m2m100", LanguageTokens::M2m100),
        ("nllb", LanguageTokens::Nllb),
    ] {
        let refs = references(name);
        assert!(refs.decode_cases.len() >= 9, "{name}");
        let cfg = ModelConfig {
            path: fixture(name),
            language_tokens: tokens,
            ..ModelConfig::default()
        };
        let engine = Engine::load(&cfg).expect("fixture loads");
        for case in &refs.decode_cases {
            assert_eq!(
                engine.detokenize(case.tokens.clone()).unwrap(),
                case.text,
                "{name}: {:?}",
                case.tokens
            );
        }
    }
}

/// The limit comes from each model's own position table.
#[test]
fn limits_are_read_from_the_converted_models() {
    pin_kernels();
    for (name, positions) in [("marian", 512), ("m2m100", 256), ("nllb", 256)] {
        let limits = translation_worker::translate::read_limits(&fixture(name)).unwrap();
        assert_eq!(limits.source_positions, Some(positions), "{name}");
        assert_eq!(references(name).source_positions, positions, "{name}");
    }
}
