//! LibreTranslate's file translation, API keys and rate limit through the gateway,
//! end to end: real HTTP (reqwest), an in-process worker (copy model: a translation
//! equals its input), the broker and Redis, and two gateway replicas sharing Redis.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::gateway::*;
use common::*;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::{json, Value};
use translation_worker::config::Config;
use translation_worker::documents::{self, FileKind};
use translation_worker::gateway::{Gateway, GatewayError};

/// Everything this test binary logs, to check that no API key is ever logged.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(logs.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(move || sink.clone())
            .try_init();
        logs
    })
    .clone()
}

/// A config serving ko-en and en-ko (the fixtures mix Korean and English).
fn files_config() -> Config {
    let mut c = test_config();
    c.model.pairs = vec!["ko-en".into(), "en-ko".into()];
    c
}

/// `POST /translate_file` of `bytes` named `name`, with extra form fields.
async fn post_file(
    gw: &RunningGateway,
    name: &str,
    bytes: Vec<u8>,
    fields: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_owned()));
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    answer(
        http_client()
            .post(gw.url("/translate_file"))
            .multipart(form)
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// Downloads `url` from `gw` (whatever host the URL names): status, headers, bytes.
async fn download(
    gw: &RunningGateway,
    url: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let path = url
        .find("/download_file/")
        .map(|i| &url[i..])
        .unwrap_or_else(|| panic!("not a download URL: {url}"));
    let r = http_client()
        .get(gw.url(path))
        .send()
        .await
        .expect("download");
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.expect("body").to_vec())
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/files")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_round_trip_through_either_replica() {
    let config = files_config();
    let worker = start_worker(config.clone()).await;
    let gw1 = RunningGateway::start_healthy(config.clone()).await;
    let gw2 = RunningGateway::start_healthy(config.clone()).await;
    let http = http_client();

    let (status, _, settings) = answer(
        http.get(gw1.url("/frontend/settings"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["filesTranslation"], true);
    let want: Vec<&str> = FileKind::ALL.iter().map(|k| k.extension()).collect();
    assert_eq!(settings["supportedFilesFormat"], json!(want));
    assert_eq!(settings["apiKeys"], false);
    assert_eq!(settings["keyRequired"], false);

    // Small inline files first, then every fixture of tests/fixtures/files.
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "hello world.txt".into(),
            "안녕하세요.\n\nThe end.\n".as_bytes().to_vec(),
        ),
        (
            "page.html".into(),
            b"<html><body><h1>Title</h1><p>Some <b>bold</b> text.</p></body></html>".to_vec(),
        ),
    ];
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/files exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, std::fs::read(&path).expect("fixture")));
    }
    let mut kinds = Vec::new();
    for (name, bytes) in &files {
        let kind = FileKind::from_name(name).expect("a supported fixture");
        kinds.push(kind);
        for source in ["ko", "auto"] {
            let (status, _, v) = post_file(
                &gw1,
                name,
                bytes.clone(),
                &[("source", source), ("target", "en")],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{name} from {source}: {v}");
            let url = v["translatedFileUrl"].as_str().expect("translatedFileUrl");
            assert!(
                url.starts_with(&format!("{}/download_file/", gw1.base)),
                "{url}"
            );
            // The stored name: a uuid, the original stem, the kind's extension.
            let stored = url.rsplit('/').next().unwrap();
            let (id, rest) = stored.split_once('.').unwrap();
            assert!(uuid::Uuid::try_parse(id).is_ok(), "{stored}");
            assert!(rest.ends_with(kind.extension()), "{stored}");
            // Served by the other replica: the file lives in Redis.
            let (status, headers, out) = download(&gw2, url).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            assert_eq!(headers["content-type"], kind.content_type(), "{name}");
            let disposition = headers["content-disposition"].to_str().unwrap();
            assert_eq!(disposition, format!("attachment; filename=\"{rest}\""));
            let limit = 64 * 1024 * 1024;
            match kind {
                // The copy model: text formats come back byte for byte.
                FileKind::Txt | FileKind::Html | FileKind::Markdown => {
                    assert_eq!(out, *bytes, "{name} from {source}")
                }
                // Archives are rewritten: the same texts in the same places.
                _ => {
                    let before = documents::extract(kind, bytes, limit).expect("input");
                    let after = documents::extract(kind, &out, limit).expect("output reads");
                    assert_eq!(after.texts(), before.texts(), "{name} from {source}");
                }
            }
        }
    }
    for kind in [
        FileKind::Docx,
        FileKind::Odt,
        FileKind::Pptx,
        FileKind::Markdown,
    ] {
        if !kinds.contains(&kind) {
            eprintln!(
                "NOTE: no {} fixture in tests/fixtures/files",
                kind.extension()
            );
        }
    }
    let metrics = gw1.handle.metrics().render();
    assert!(
        metrics.contains("translation_gateway_files_translated_total{kind=\"txt\"}"),
        "{metrics}"
    );
    gw1.stop().await;
    gw2.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_files_are_refused_and_files_expire() {
    let mut config = files_config();
    config.gateway.max_file_bytes = 2048;
    config.gateway.file_ttl_secs = 1;
    let worker = start_worker(config.clone()).await;
    let gw = RunningGateway::start_healthy(config.clone()).await;
    let http = http_client();
    let fields = [("source", "ko"), ("target", "en")];

    // 413: announced by Content-Length, and refused before translation.
    let (status, _, v) = post_file(&gw, "big.txt", vec![b'a'; 100_000], &fields).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Just over the limit (within the form's overhead): refused while reading.
    let (status, _, v) = post_file(&gw, "big.txt", vec![b'a'; 2049], &fields).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // LibreTranslate's messages.
    let (status, _, v) = post_file(&gw, "scan.pdf", b"%PDF-1.4".to_vec(), &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "Invalid request: file format not supported");
    let (status, _, v) = post_file(&gw, "broken.docx", b"not a zip".to_vec(), &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "corrupt_file", "{v}");
    let (status, _, v) = post_file(&gw, "a.txt", b"x".to_vec(), &[("target", "en")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "Invalid request: missing source parameter");
    let (status, _, v) = post_file(
        &gw,
        "a.txt",
        b"x".to_vec(),
        &[("source", "xx"), ("target", "en")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "xx is not supported");
    let form = Form::new().text("source", "ko").text("target", "en");
    let (status, _, v) = answer(
        http.post(gw.url("/translate_file"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "Invalid request: missing file parameter");
    let metrics = gw.handle.metrics();
    assert!(metrics.file_rejects("too_large") >= 2);
    assert!(metrics.file_rejects("unsupported") >= 1);
    assert!(metrics.file_rejects("corrupt") >= 1);

    // 404 for a name never given out, 400 for one the gateway could not have made.
    let unknown = format!("/download_file/{}.notes.txt", uuid::Uuid::new_v4());
    let (status, _, v) = answer(http.get(gw.url(&unknown)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["code"], "not_found");
    let (status, _, v) = answer(
        http.get(gw.url("/download_file/..%2F..%2Fetc%2Fpasswd"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // A file lives file_ttl_secs (1 s here).
    let (status, _, v) = post_file(&gw, "notes.txt", b"short".to_vec(), &fields).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let url = v["translatedFileUrl"].as_str().unwrap().to_owned();
    let (status, _, out) = download(&gw, &url).await;
    assert_eq!((status, out.as_slice()), (StatusCode::OK, &b"short"[..]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, _) = download(&gw, &url).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_and_a_rate_limit_shared_by_replicas() {
    let logs = captured_logs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (limited, unlimited) = (format!("limited-{id}"), format!("free-{id}"));
    let keys_file = std::env::temp_dir().join(format!("tw-keys-{id}"));
    std::fs::write(
        &keys_file,
        format!("# test keys\n{limited} 3\n{unlimited}\n"),
    )
    .unwrap();
    let mut config = files_config();
    config.gateway.api_keys_file = keys_file.clone();
    let worker = start_worker(config.clone()).await;
    let gw1 = RunningGateway::start_healthy(config.clone()).await;
    let gw2 = RunningGateway::start_healthy(config.clone()).await;
    let http = http_client();
    let (_, _, settings) = answer(
        http.get(gw1.url("/frontend/settings"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (settings["apiKeys"].clone(), settings["keyRequired"].clone()),
        (json!(true), json!(true))
    );

    let post = |gw: &RunningGateway, body: Value| {
        let req = http.post(gw.url("/translate")).json(&body);
        async move { answer(req.send().await.expect("request")).await }
    };
    let text = json!({"q": "안녕", "source": "ko", "target": "en"});
    // No key: LibreTranslate's 400; an unknown key: 403.
    let (status, _, v) = post(&gw1, text.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["error"],
        "Please contact the server operator to get an API key"
    );
    let mut bad = text.clone();
    bad["api_key"] = json!(format!("wrong-{id}"));
    let (status, _, v) = post(&gw1, bad).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "Invalid API key");
    let (status, _, v) = answer(
        http.post(gw1.url("/detect"))
            .json(&json!({"q": "안녕하세요"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "/detect is checked too: {v}"
    );

    // The unlimited key, in JSON, a form, the query and a multipart body.
    let mut good = text.clone();
    good["api_key"] = json!(unlimited);
    for _ in 0..5 {
        let (status, _, v) = post(&gw1, good.clone()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, _, v) = answer(
        http.post(gw2.url("/translate"))
            .form(&[
                ("q", "안녕"),
                ("source", "ko"),
                ("target", "en"),
                ("api_key", &unlimited),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = answer(
        http.get(gw2.url(&format!(
            "/translate?q=x&source=ko&target=en&api_key={unlimited}"
        )))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = post_file(
        &gw1,
        "a.txt",
        b"hello".to_vec(),
        &[("source", "ko"), ("target", "en"), ("api_key", &unlimited)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = post_file(
        &gw1,
        "a.txt",
        b"hello".to_vec(),
        &[("source", "ko"), ("target", "en")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // The limited key: 3 a minute across both replicas, then 429 on either.
    let mut limited_body = text.clone();
    limited_body["api_key"] = json!(limited);
    for gw in [&gw1, &gw2, &gw1] {
        let (status, _, v) = post(gw, limited_body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    for gw in [&gw2, &gw1] {
        let (status, retry, v) = post(gw, limited_body.clone()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["error"], "Slowdown: 3 per 1 minute");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    assert_eq!(
        gw1.handle.metrics().rate_limited() + gw2.handle.metrics().rate_limited(),
        2
    );

    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logged.is_empty(), "the log capture works");
    for key in [&limited, &unlimited] {
        assert!(!logged.contains(key.as_str()), "a key was logged");
    }
    let _ = std::fs::remove_file(&keys_file);
    gw1.stop().await;
    gw2.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_ip_limit_without_keys_and_redis_down() {
    let mut config = files_config();
    config.gateway.req_limit_per_minute = 2;
    let worker = start_worker(config.clone()).await;
    let gw1 = RunningGateway::start_healthy(config.clone()).await;
    let gw2 = RunningGateway::start_healthy(config.clone()).await;
    let http = http_client();
    let ip = format!("198.51.100.{}", uuid::Uuid::new_v4().as_bytes()[0]);
    let send = |gw: &RunningGateway, ip: &str| {
        let req = http
            .post(gw.url("/translate"))
            .header("x-forwarded-for", format!("{ip}, 10.0.0.1"))
            .json(&json!({"q": "안녕", "source": "ko", "target": "en"}));
        async move { answer(req.send().await.expect("request")).await }
    };
    assert_eq!(send(&gw1, &ip).await.0, StatusCode::OK);
    assert_eq!(send(&gw2, &ip).await.0, StatusCode::OK);
    let (status, retry, v) = send(&gw1, &ip).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"], "Slowdown: 2 per 1 minute");
    assert!(retry.is_some());
    // Another client is counted on its own.
    assert_eq!(send(&gw2, "203.0.113.9").await.0, StatusCode::OK);
    gw1.stop().await;
    gw2.stop().await;

    // Redis unreachable: translations pass (the limit fails open), files answer 503
    // with Retry-After at once.
    let mut down = config.clone();
    down.redis.url = "redis://127.0.0.1:1".into();
    let gw = RunningGateway::start_healthy(down).await;
    let (status, _, v) = send(&gw, &ip).await;
    assert_eq!(status, StatusCode::OK, "fail-open: {v}");
    let start = Instant::now();
    let (status, retry, v) = post_file(
        &gw,
        "a.txt",
        b"x".to_vec(),
        &[("source", "ko"), ("target", "en")],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(retry.is_some());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let (status, retry, _) = answer(
        http.get(gw.url(&format!("/download_file/{}.a.txt", uuid::Uuid::new_v4())))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, retry.is_some()),
        (StatusCode::SERVICE_UNAVAILABLE, true)
    );
    gw.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_off_are_reported_and_refused_as_libretranslate() {
    let mut config = files_config();
    config.gateway.files_translation = false;
    let gw = RunningGateway::start_healthy(config).await;
    let http = http_client();
    let (_, _, settings) =
        answer(http.get(gw.url("/frontend/settings")).send().await.unwrap()).await;
    assert_eq!(settings["filesTranslation"], false);
    assert_eq!(settings["supportedFilesFormat"], json!([]));
    let (status, _, v) = post_file(
        &gw,
        "a.txt",
        b"x".to_vec(),
        &[("source", "ko"), ("target", "en")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "Files translation are disabled on this server.");
    let name = format!("/download_file/{}.a.txt", uuid::Uuid::new_v4());
    let (status, _, v) = answer(http.get(gw.url(&name)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    gw.stop().await;
}

#[tokio::test]
async fn bad_key_settings_stop_the_gateway_at_start() {
    let mut config = files_config();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.api_keys_file = std::env::temp_dir().join("tw-no-such-keys-file");
    let e = Gateway::bind(&config)
        .await
        .err()
        .expect("a missing keys file");
    assert!(matches!(e, GatewayError::Keys(_)), "{e}");
    let mut config = files_config();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.req_limit_per_minute = 10;
    config.redis.enabled = false;
    let e = Gateway::bind(&config)
        .await
        .err()
        .expect("a limit without Redis");
    assert!(matches!(e, GatewayError::LimitWithoutRedis), "{e}");
}
