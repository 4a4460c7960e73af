//! Real third-party LibreTranslate clients against the gateway: the PyPI libraries
//! `libretranslatepy` and `libretranslate-aio` (sync and async) and the npm library
//! `libretranslate`, pinned in `tests/clients/` and installed by
//! `scripts/lt-clients.sh` (into a cache; a no-op when warm). Each runs a script under
//! `tests/clients/` against a gateway in front of a worker (copy model: a translation
//! equals its input) serving ko-en, ja-en and en-ko, and prints what every call
//! returned; this test asserts it. The clients cannot be installed → the test fails
//! (no silent skip).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use translation_worker::gateway::Gateway;

/// Korean, Japanese and English texts, unambiguous for detection.
const KO: &str = "회의는 내일 오전 10시에 본사 3층 회의실에서 열립니다.";
const JA: &str = "会議は明日の午前十時に本社の会議室で始まります。";
const EN: &str = "The meeting starts tomorrow at ten in the main office.";

/// Runs `scripts/lt-clients.sh` and returns the clients' directory.
fn install_clients() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/lt-clients.sh"))
        .output()
        .expect("bash runs scripts/lt-clients.sh");
    assert!(
        out.status.success(),
        "the LibreTranslate clients could not be installed (scripts/lt-clients.sh): {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match std::env::var_os("TW_LT_CLIENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/translation-worker/lt-clients"),
    }
}

/// Runs one client script (blocking) and parses the JSON object it prints.
fn run_client(mut cmd: Command) -> Value {
    let out = cmd.output().expect("client script starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_libretranslate_clients_work_against_the_gateway() {
    let clients = tokio::task::spawn_blocking(install_clients)
        .await
        .expect("install task");
    let mut config = test_config();
    config.model.pairs = vec!["ko-en".into(), "ja-en".into(), "en-ko".into()];
    let worker = start_worker(config.clone()).await;
    let mut gw_config = config.clone();
    gw_config.gateway.listen = "127.0.0.1:0".into();
    let gateway = Gateway::bind(&gw_config).await.expect("gateway binds");
    let base = format!("http://{}", gateway.local_addr().expect("bound address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.run(shutdown.clone()));
    // Ready when LibreTranslate's health check says so.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "gateway never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs_before = worker.metrics.jobs_ok.get();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut python = Command::new(clients.join("venv/bin/python"));
    python
        .arg(root.join("tests/clients/python_clients.py"))
        .args([&base, KO, JA, EN])
        .env("NO_PROXY", "*");
    let mut node = Command::new("node");
    node.arg(root.join("tests/clients/node_client.js"))
        .args([&base, KO, JA, EN])
        .env("NODE_PATH", clients.join("node/node_modules"));
    let (py, nd) = tokio::task::spawn_blocking(move || (run_client(python), run_client(node)))
        .await
        .expect("client task");

    // --- libretranslatepy: translate (explicit and auto), detect, languages.
    assert_eq!(py["py.translate"], json!(KO), "{py}");
    assert_eq!(py["py.translate_auto"], json!(JA), "{py}");
    let detected = py["py.detect"].as_array().expect("a list of candidates");
    assert_eq!(detected[0]["language"], "en", "{py}");
    assert!(detected[0]["confidence"].as_f64().unwrap() > 50.0, "{py}");
    for d in detected {
        let c = d["confidence"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&c), "{py}");
        assert!(["ko", "en", "ja"].contains(&d["language"].as_str().unwrap()));
    }
    let languages = json!([
        {"code": "ko", "name": "Korean", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": ["ko"]},
        {"code": "ja", "name": "Japanese", "targets": ["en"]},
    ]);
    assert_eq!(py["py.languages"], languages, "{py}");

    // --- libretranslate-aio (sync): every endpoint it has.
    assert_eq!(
        py["aio.translate"],
        json!({"translated_text": KO, "detected_language": null, "alternatives": null}),
        "{py}"
    );
    // `alternatives=2` (a form field): up to two other translations of the
    // one-sentence text, none of them the translation itself.
    let alt = &py["aio.translate_alternatives"];
    assert_eq!(alt["translated_text"], KO, "{py}");
    let alts = alt["alternatives"]
        .as_array()
        .expect("alternatives: a list");
    assert!((1..=2).contains(&alts.len()), "{py}");
    assert!(alts.iter().all(|a| a.is_string() && a != KO), "{py}");
    assert_eq!(
        py["aio.translate_list"]["translated_text"],
        json!([KO, format!("{KO} 2")]),
        "{py}"
    );
    assert_eq!(
        py["aio.translate_auto"],
        json!({
            "translated_text": JA,
            "detected_language": {"confidence": 100.0, "language": "ja"},
            "alternatives": null
        }),
        "{py}"
    );
    let auto = &py["aio.translate_auto_list"];
    assert_eq!(auto["translated_text"], json!([KO, JA, EN]), "{py}");
    let langs: Vec<&str> = auto["detected_language"]
        .as_array()
        .expect("one detection per text")
        .iter()
        .map(|d| d["language"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["ko", "ja", "en"], "{py}");
    // Japanese has no pair to Korean: LibreTranslate's 400 and message.
    assert_eq!(py["aio.translate_unavailable"]["status"], 400, "{py}");
    assert_eq!(
        py["aio.translate_unavailable"]["error"],
        "Korean (ko) is not available as a target language from Japanese (ja)",
        "{py}"
    );
    assert_eq!(py["aio.detect"][0]["language"], "ja", "{py}");
    assert_eq!(
        py["aio.languages"],
        json!([
            {"code": "ko", "name": "Korean", "targets": ["en"]},
            {"code": "en", "name": "English", "targets": ["ko"]},
            {"code": "ja", "name": "Japanese", "targets": ["en"]},
        ]),
        "{py}"
    );
    assert_eq!(
        py["aio.frontend_settings"]["char_limit"],
        json!(config.limits.max_text_chars),
        "{py}"
    );
    assert_eq!(
        py["aio.frontend_settings"]["language"]["source"],
        json!({"code": "ko", "name": "Korean"}),
        "{py}"
    );
    assert_eq!(py["aio.health"], json!(true), "{py}");

    // --- libretranslate-aio (async): calls in flight together.
    assert_eq!(
        py["aio_async.translate_auto_list"]["translated_text"],
        json!([KO, JA]),
        "{py}"
    );
    assert_eq!(py["aio_async.detect"][0]["language"], "ko", "{py}");
    assert_eq!(py["aio_async.health"], json!(true), "{py}");

    // --- libretranslate (npm): GET /languages, then JSON POST /translate.
    assert_eq!(nd["node.translate"], json!(KO), "{nd}");
    assert_eq!(
        nd["node.translate_list"],
        json!([KO, format!("{KO} 2")]),
        "{nd}"
    );
    assert_eq!(nd["node.translate_auto"], json!(JA), "{nd}");
    assert_eq!(nd["node.translate_auto_list"], json!([KO, JA, EN]), "{nd}");
    assert!(
        nd["node.unknown_language"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{nd}"
    );

    // The translations went through the worker, one job per request and per detected
    // source of an auto list (2 for [KO, JA, EN]: the English text is already in the
    // target language and is not sent); the refused one sent none. A job is counted
    // after its reply, so wait for the count.
    let deadline = Instant::now() + Duration::from_secs(10);
    // (15 with the alternatives call.)
    while worker.metrics.jobs_ok.get() < jobs_before + 15 {
        assert!(
            Instant::now() < deadline,
            "jobs: {}",
            worker.metrics.jobs_ok.get() - jobs_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(worker.metrics.jobs_ok.get(), jobs_before + 15);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let detects = metric_sample(
        &metrics,
        r#"translation_gateway_requests_total{method="POST",route="/detect",status="200"}"#,
    );
    assert_eq!(detects, Some(3.0), "{metrics}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("gateway stops")
        .expect("gateway task")
        .expect("gateway served without error");
    worker.stop().await;
    cleanup(&config).await;
}

/// The PyPI clients against a gateway that requires API keys: `api_key` in their
/// form bodies, LibreTranslate's errors without or with a wrong key, and
/// libretranslate-aio's `translate_file` (multipart) with the download it names. The
/// npm client sends its key as `apiKey` (not LibreTranslate's `api_key`), so it has
/// no working key support to test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_send_api_keys_and_translate_files() {
    let clients = tokio::task::spawn_blocking(install_clients)
        .await
        .expect("install task");
    let mut config = test_config();
    config.model.pairs = vec!["ko-en".into(), "en-ko".into()];
    let key = format!("key-{}", uuid::Uuid::new_v4().simple());
    let keys_file = std::env::temp_dir().join(format!("tw-keys-{key}"));
    std::fs::write(&keys_file, format!("{key}\n")).expect("keys file");
    config.gateway.api_keys_file = keys_file.clone();
    let worker = start_worker(config.clone()).await;
    let mut gw_config = config.clone();
    gw_config.gateway.listen = "127.0.0.1:0".into();
    let gateway = Gateway::bind(&gw_config).await.expect("gateway binds");
    let base = format!("http://{}", gateway.local_addr().expect("bound address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.run(shutdown.clone()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "gateway never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/files");
    let names = ["notes.txt", "page.html", "report.docx"];
    let mut python = Command::new(clients.join("venv/bin/python"));
    python
        .arg(root.join("tests/clients/python_files_keys.py"))
        .args([&base, &key])
        .args(names.iter().map(|n| fixtures.join(n)))
        .env("NO_PROXY", "*");
    let py = tokio::task::spawn_blocking(move || run_client(python))
        .await
        .expect("client task");

    assert_eq!(py["py.translate_key"], json!("안녕"), "{py}");
    assert_eq!(py["py.translate_no_key"]["status"], 400, "{py}");
    assert_eq!(py["py.translate_bad_key"]["status"], 403, "{py}");
    let settings = &py["aio.frontend_settings"];
    // (The client's settings have no `filesTranslation`: the formats tell.)
    assert_eq!(settings["api_keys"], true, "{settings}");
    assert_eq!(settings["key_required"], true, "{settings}");
    assert!(
        settings["supported_files_format"]
            .as_array()
            .is_some_and(|f| f.contains(&json!(".docx"))),
        "{settings}"
    );
    assert_eq!(py["aio.translate_key"]["translated_text"], "안녕", "{py}");
    for name in names {
        let url = py[format!("aio.file.{name}")]["translated_file_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {py}"));
        assert!(url.starts_with(&format!("{base}/download_file/")), "{url}");
        let got = &py[format!("aio.download.{name}")];
        assert_eq!(
            got["disposition"],
            json!(format!("attachment; filename=\"{name}\"")),
            "{py}"
        );
        let body = base64_decode(got["body"].as_str().expect("a body"));
        let input = std::fs::read(fixtures.join(name)).expect("fixture");
        if name.ends_with(".docx") {
            // Rewritten archive: the same texts (copy model).
            let kind = translation_worker::documents::FileKind::Docx;
            let limit = 64 * 1024 * 1024;
            let before = translation_worker::documents::extract(kind, &input, limit).unwrap();
            let after = translation_worker::documents::extract(kind, &body, limit).unwrap();
            assert_eq!(after.texts(), before.texts(), "{name}");
        } else {
            assert_eq!(body, input, "{name}");
        }
    }
    assert_eq!(py["aio.file_no_key"]["status"], 400, "{py}");
    assert_eq!(
        py["aio.file_no_key"]["error"], "Please contact the server operator to get an API key",
        "{py}"
    );
    assert_eq!(py["aio.detect_no_key"]["status"], 400, "{py}");
    let body = base64_decode(
        py["aio_async.download"]["body"]
            .as_str()
            .expect("async file"),
    );
    assert_eq!(body, std::fs::read(fixtures.join(names[0])).unwrap());

    let _ = std::fs::remove_file(&keys_file);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    worker.stop().await;
}

/// Standard base64 (what the client script prints downloads as).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
