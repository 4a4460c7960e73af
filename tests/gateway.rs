//! The HTTP gateway end to end: a real HTTP client (reqwest) against the gateway, an
//! in-process worker (copy model: every translation equals its input), the broker and
//! Redis.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::*;
use common::process::WorkerProcess;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use translation_worker::gateway::GatewayError;

/// `GET /translate` with `texts` as repeated `q`.
async fn get_translate(
    http: &reqwest::Client,
    gw: &RunningGateway,
    source: &str,
    target: &str,
    texts: &[&str],
) -> (StatusCode, Option<String>, Value) {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for t in texts {
        query.append_pair("q", t);
    }
    query.append_pair("source", source);
    query.append_pair("target", target);
    let url = format!("{}?{}", gw.url("/translate"), query.finish());
    answer(http.get(url).send().await.expect("request")).await
}

async fn post_json(
    http: &reqwest::Client,
    gw: &RunningGateway,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    answer(
        http.post(gw.url("/translate"))
            .json(&body)
            .send()
            .await
            .expect("request"),
    )
    .await
}

fn error_code(v: &Value) -> &str {
    assert!(v["error"].is_string(), "LibreTranslate error shape: {v}");
    v["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn translates_through_the_worker_in_both_dialects() {
    let mut config = test_config();
    // The worker refuses texts over 200 characters: its too_large must become a 413.
    config.limits.max_text_chars = 200;
    config.gateway.max_texts = 4;
    config.gateway.max_body_bytes = 4096;
    // The engine fails on MARKER (and only on it).
    let worker = start_worker_with(config.clone(), fail_on_marker).await;
    let gw = RunningGateway::start(config.clone()).await;
    let http = http_client();
    gw.wait_healthy(&http).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (t1, t2) = (
        format!("회의는 오전 10시에 시작합니다. {id}"),
        format!("a&b=c?d #{id}"),
    );

    // GET with two q: translations in order, neither cached; then both cached.
    let stored = worker.metrics.cache_stores.get();
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &[&t1, &t2]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["translations"], json!([t1, t2]));
    assert_eq!(v["cached"], json!([false, false]));
    assert_eq!(v["model"], "copy-model");
    // One job, its segments stored in one round trip after its reply.
    wait_for_stores(&worker.metrics, stored + 2).await;
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &[&t1, &t2]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["translations"], json!([t1, t2]));
    assert_eq!(v["cached"], json!([true, true]));

    // LibreTranslate POST: JSON with a string, JSON with an array, a form.
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": t1, "source": "ko", "target": "en", "format": "text", "api_key": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": t1 }));
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": [t2, "", "감사합니다"], "source": "ko", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": [t2, "", "감사합니다"] }));
    // A text the worker could not translate (its reply is ok, with `errors`) fails the
    // request, as LibreTranslate has no per-text errors: a 500 naming the text.
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": [t2, MARKER], "source": "ko", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(error_code(&v), "internal", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("text 1 could not be translated"),
        "{v}"
    );
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &t2)
        .append_pair("source", "ko")
        .append_pair("target", "en")
        .append_pair("format", "text")
        .finish();
    let (status, _, v) = answer(
        http.post(gw.url("/translate"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": t2 }));

    // /languages lists the served pair in LibreTranslate's shape.
    let (status, _, v) = answer(http.get(gw.url("/languages")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!([
            {"code": "ko", "name": "Korean", "targets": ["en"]},
            {"code": "en", "name": "English", "targets": []},
        ])
    );

    // LibreTranslate's health check and UI settings, as its clients read them.
    let (status, _, v) = answer(http.get(gw.url("/health")).send().await.unwrap()).await;
    assert_eq!((status, v), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, _, v) = answer(http.post(gw.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    let (status, _, v) = answer(http.get(gw.url("/frontend/settings")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["charLimit"], json!(config.limits.max_text_chars));
    // Files are on by default (issue 16; tests/gateway_files.rs covers them).
    assert_eq!(v["filesTranslation"], json!(true));
    assert_eq!(v["apiKeys"], json!(false));
    assert_eq!(
        v["language"]["source"],
        json!({"code": "ko", "name": "Korean"})
    );
    assert_eq!(
        v["language"]["target"],
        json!({"code": "en", "name": "English"})
    );

    // Refused before anything is published.
    let jobs_before = worker.metrics.jobs_ok.get();
    let (status, _, v) = get_translate(&http, &gw, "ko", "ja", &["x"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "unsupported_language_pair");
    for (body, needle) in [
        // auto works (see detect_and_auto_source_answer_as_libretranslate), but only
        // into a served language.
        (
            json!({"q": "x", "source": "auto", "target": "ja"}),
            "ja is not supported",
        ),
        // html works (tests/html.rs); other formats do not.
        (
            json!({"q": "x", "source": "ko", "target": "en", "format": "markdown"}),
            "markdown",
        ),
        (json!({"source": "ko", "target": "en"}), "q"),
        (json!({"q": "x", "target": "en"}), "source"),
    ] {
        let (status, _, v) = post_json(&http, &gw, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let (status, _, v) = answer(
        http.get(gw.url("/translate?q=x&source=ko&target=en&beam=4"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &["1", "2", "3", "4", "5"]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_code(&v), "too_large");
    let big = "가".repeat(2000); // 6,000 bytes of UTF-8 against a 4,096-byte limit
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": big, "source": "ko", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_code(&v), "too_large");
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &[&"a".repeat(5000)]).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG, "{v}");
    assert_eq!(worker.metrics.jobs_ok.get(), jobs_before);

    // The worker's own error reply keeps its code: a text over limits.max_text_chars.
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &[&"a".repeat(300)]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_code(&v), "too_large");
    assert!(v["error"].as_str().unwrap().contains("200"), "{v}");

    // Health and metrics.
    let (status, _, v) = answer(http.get(gw.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["broker"], "up");
    let text = gw.metrics_text(&http).await;
    let sample =
        |series: &str| metric_sample(&text, series).unwrap_or_else(|| panic!("{series}: {text}"));
    assert_eq!(
        sample(
            r#"translation_gateway_requests_total{method="GET",route="/translate",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            r#"translation_gateway_requests_total{method="POST",route="/translate",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            r#"translation_gateway_requests_total{method="GET",route="/translate",status="413"}"#
        ),
        2.0
    );
    assert_eq!(sample("translation_gateway_pending_requests"), 0.0);
    assert_eq!(sample("translation_gateway_broker_connected"), 1.0);
    assert!(
        sample(r#"translation_gateway_request_duration_seconds_count{route="/translate"}"#) >= 13.0
    );

    // A lost broker connection is replaced: close the gateway's client under it.
    let client = gw.handle.client().expect("connected");
    client.close().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.handle.metrics().broker_reconnects.get() < 1 || gw.handle.client().is_none() {
        assert!(Instant::now() < deadline, "the gateway never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &[&t1]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["translations"], json!([t1]));

    gw.stop().await;
    worker.stop().await;
    cleanup(&config).await;
}

/// Sends `request` raw over TCP (reading while writing: the server may answer and
/// close before it has read everything) and returns status, head and body.
async fn raw_exchange(addr: &str, request: Vec<u8>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("gateway port");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may stop reading and close: a failed write is expected then.
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no end of response within 10 s: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    drop(writer.await);
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// The gateway's promise "every error is `{"error","code"}`" holds for the answers
/// hyper gives before any handler runs (a request line over 64 KiB, a head over its
/// read buffer, bytes that are not HTTP) and for a method a route does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_even_those_hyper_answers_itself() {
    let config = test_config();
    // The default body limit (1 MiB): the sizes below are the ones a user hit with it.
    assert_eq!(config.gateway.max_body_bytes, 1_048_576);
    let gw = RunningGateway::start(config.clone()).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let json_error = |status: u16, head: &str, body: &str| -> Value {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{status}: {head}"
        );
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {body:?}"));
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    };
    let get_with_query = |len: usize| {
        let query = format!("source=ko&target=en&q={}", "a".repeat(len));
        format!("GET /translate?{query} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    };

    // PUT on a GET/POST route: 405 with Allow, JSON body.
    let (status, head, body) = raw_exchange(
        &addr,
        b"PUT /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert_eq!(status, 405, "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: "), "{head}");
    assert!(head.contains("POST"), "{head}");
    assert_eq!(
        json_error(status, &head, &body)["code"],
        "method_not_allowed"
    );

    // A 65,600-byte query string: over the `http` crate's URI limit, so hyper answers.
    let (status, head, body) = raw_exchange(&addr, get_with_query(65_600)).await;
    assert_eq!(status, 414, "{head}");
    let v = json_error(status, &head, &body);
    assert_eq!(v["code"], "too_large");
    assert!(v["error"].as_str().unwrap().contains("POST"), "{v}");

    // A 1,048,600-byte one: over hyper's read buffer.
    let (status, head, body) = raw_exchange(&addr, get_with_query(1_048_600)).await;
    assert_eq!(status, 431, "{head}");
    assert_eq!(json_error(status, &head, &body)["code"], "too_large");

    // Not HTTP at all.
    let (status, head, body) = raw_exchange(&addr, b"HELLO\r\n\r\n".to_vec()).await;
    assert_eq!(status, 400, "{head}");
    assert_eq!(json_error(status, &head, &body)["code"], "invalid_request");

    // The rewritten answers are counted.
    let text = gw.metrics_text(&http_client()).await;
    for status in [414, 431, 400] {
        let series = format!(
            r#"translation_gateway_requests_total{{method="other",route="other",status="{status}"}}"#
        );
        assert_eq!(metric_sample(&text, &series), Some(1.0), "{series}: {text}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consumer_times_out_overload_is_503_and_shutdown_drains() {
    let mut config = test_config();
    config.gateway.request_timeout_ms = 1500;
    config.gateway.max_pending = 1;
    config.gateway.retry_after_secs = 2;
    // The queue is bound but nobody consumes it: jobs are accepted, never answered.
    declare_topology_at(AMQP_URL, &config).await;
    let gw = RunningGateway::start(config.clone()).await;
    let http = http_client();
    gw.wait_healthy(&http).await;

    let t = Instant::now();
    let (status, _, v) = get_translate(&http, &gw, "ko", "en", &["x"]).await;
    let took = t.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(error_code(&v), "timeout");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // One request pending fills max_pending = 1: the next one is refused at once.
    let first = {
        let (http, url) = (http.clone(), gw.url("/translate?q=a&source=ko&target=en"));
        tokio::spawn(async move { answer(http.get(url).send().await.unwrap()).await })
    };
    let metrics = gw.handle.metrics();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.pending() < 1 {
        assert!(Instant::now() < deadline, "first request never pending");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let (status, retry, v) = post_json(
        &http,
        &gw,
        json!({"q": "b", "source": "ko", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("2"));
    assert_eq!(error_code(&v), "overloaded");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (status, _, _) = first.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(metrics.pending(), 0);
    // Refused requests do not hold a slot: the next one is admitted (and times out).
    let (status, _, _) = get_translate(&http, &gw, "ko", "en", &["c"]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(metrics.requests("POST", "/translate", 503), 1);
    assert_eq!(metrics.requests("GET", "/translate", 504), 3);

    // Shutdown with a request in flight: it is still answered, then the gateway stops.
    let last = {
        let (http, url) = (http.clone(), gw.url("/translate?q=d&source=ko&target=en"));
        tokio::spawn(async move { answer(http.get(url).send().await.unwrap()).await })
    };
    while metrics.pending() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let url = gw.url("/healthz");
    gw.stop().await;
    let (status, _, _) = last.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(http.get(url).send().await.is_err(), "still listening");
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_no_worker_binds_is_400_from_the_broker() {
    // The gateway believes it serves ko-ja (its model section says so), but only ko-en
    // is bound on the exchange: the broker returns the job and the gateway says 400.
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let mut gw_config = config.clone();
    gw_config.model.target = "ja".into();
    let gw = RunningGateway::start(gw_config).await;
    let http = http_client();
    gw.wait_healthy(&http).await;
    let t = Instant::now();
    let (status, _, v) = get_translate(&http, &gw, "ko", "ja", &["x"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(error_code(&v), "unsupported_language_pair");
    assert!(v["error"].as_str().unwrap().contains("ko-ja"), "{v}");
    // Returned at once, not after the 30 s timeout.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    gw.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_503_with_retry_after() {
    let mut config = test_config();
    // Nothing listens on port 1.
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let gw = RunningGateway::start(config).await;
    let http = http_client();
    let (status, _, v) = answer(http.get(gw.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["broker"], "down");
    let (status, retry, v) = answer(http.get(gw.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(error_code(&v), "broker_unavailable");
    let (status, retry, v) = get_translate(&http, &gw, "ko", "en", &["x"]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(error_code(&v), "broker_unavailable");
    // What needs no broker still answers.
    let (status, _, _) = answer(http.get(gw.url("/languages")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, v) = answer(http.get(gw.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_subcommand_serves_and_stops_on_sigterm() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let port = common::private::free_port(&[]);
    let child = Command::new(env!("CARGO_BIN_EXE_translation-worker"))
        .arg("gateway")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TW_AMQP__URL", AMQP_URL)
        .env("TW_AMQP__EXCHANGE", &config.amqp.exchange)
        .env("TW_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("TW_LOG__FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway binary starts");
    let mut process = WorkerProcess::adopt(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = http.get(format!("{base}/healthz")).send().await;
        if up.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "gateway process never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, v) = answer(
        http.post(format!("{base}/translate"))
            .json(&json!({"q": "안녕하세요", "source": "ko", "target": "en"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "translatedText": "안녕하세요" }));
    process.signal("TERM");
    let exit = tokio::task::spawn_blocking(move || process.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    worker.stop().await;
    cleanup(&config).await;
}

/// A gateway whose first login the broker refuses stops with that error (the binary
/// exits non-zero) instead of answering 503 for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_login_stops_the_gateway() {
    let mut config = test_config();
    config.amqp.url = "amqp://guest:not-the-password@127.0.0.1:5672/%2f".into();
    let gw = RunningGateway::start(config).await;
    let ran = tokio::time::timeout(Duration::from_secs(20), gw.task)
        .await
        .expect("the gateway stops on a refused first login")
        .expect("gateway task");
    match ran {
        Err(GatewayError::Refused(e)) => {
            let said = e.to_string();
            assert!(
                said.contains("ACCESS_REFUSED") && said.contains("amqp.url"),
                "{said}"
            );
            assert!(!said.contains("not-the-password"), "{said}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `POST /detect` and `source: "auto"` as LibreTranslate answers them, through a worker
/// serving ko-en, ja-en and en-ko (copy model: a translation equals its input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_and_auto_source_answer_as_libretranslate() {
    let mut config = test_config();
    config.model.pairs = vec!["ko-en".into(), "ja-en".into(), "en-ko".into()];
    let worker = start_worker(config.clone()).await;
    let gw = RunningGateway::start(config.clone()).await;
    let http = http_client();
    gw.wait_healthy(&http).await;
    // Digits only: letters of a hex id would be text to detect.
    let id = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
    let ko = format!("회의는 오전 10시에 본사 회의실에서 시작합니다. {id}");
    let ja = format!("会議は午前十時に本社の会議室で始まります。{id}");
    let en = format!("The meeting starts at ten in the main office. {id}");
    let detect = |body: Value| {
        let (http, url) = (http.clone(), gw.url("/detect"));
        async move { answer(http.post(url).json(&body).send().await.unwrap()).await }
    };

    // One text: every served language that is a candidate, most likely first, 0–100.
    let (status, _, v) = detect(json!({"q": ko, "api_key": ""})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v[0], json!({"confidence": 100.0, "language": "ko"}), "{v}");
    let (status, _, v) = detect(json!({"q": en})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let list = v.as_array().unwrap();
    assert_eq!(list[0]["language"], "en", "{v}");
    assert!(list[0]["confidence"].as_f64().unwrap() > 50.0, "{v}");
    for pair in list.windows(2) {
        assert!(
            pair[0]["confidence"].as_f64() >= pair[1]["confidence"].as_f64(),
            "{v}"
        );
    }
    for d in list {
        assert!(
            ["ko", "ja", "en"].contains(&d["language"].as_str().unwrap()),
            "{v}"
        );
    }
    // A form body, as most clients send.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &ja)
        .finish();
    let (status, _, v) = answer(
        http.post(gw.url("/detect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v[0]["language"], "ja", "{v}");
    // A list is detected as a whole, weighted by length.
    let (status, _, v) = detect(json!({"q": [en, "안녕"]})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v[0]["language"], "en", "{v}");
    // Nothing to tell by: `en` at confidence 0, as LibreTranslate answers.
    let (status, _, v) = detect(json!({"q": "12345"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!([{"confidence": 0.0, "language": "en"}]));
    // LibreTranslate's errors: a missing or empty q is a 400, GET is a 405.
    for body in [json!({}), json!({"q": ""}), json!({"q": []})] {
        let (status, _, v) = detect(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"], "Invalid request: missing q parameter", "{body}");
    }
    let (status, _, v) = answer(http.post(gw.url("/detect")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _, v) = answer(http.get(gw.url("/detect")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{v}");

    // auto, one text: translatedText and one detectedLanguage object.
    let jobs = worker.metrics.jobs_ok.get();
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": ja, "source": "auto", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"translatedText": ja, "detectedLanguage": {"confidence": 100.0, "language": "ja"}})
    );
    // auto, a list of mixed languages: grouped by detected source (one job for ko,
    // one for ja; the English text is already in the target language and the digits
    // go with the first source served to the target), answered in order.
    let texts = json!([ko, ja, en, "12345", format!("{ko} 2")]);
    let (status, _, v) = post_json(
        &http,
        &gw,
        json!({"q": texts, "source": "auto", "target": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["translatedText"], texts, "{v}");
    let detected: Vec<(&str, f64)> = v["detectedLanguage"]
        .as_array()
        .expect("one per text")
        .iter()
        .map(|d| {
            (
                d["language"].as_str().unwrap(),
                d["confidence"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        detected.iter().map(|d| d.0).collect::<Vec<_>>(),
        ["ko", "ja", "en", "ko", "ko"],
        "{v}"
    );
    assert_eq!(detected[3].1, 0.0, "{v}");
    assert!(detected[0].1 > 90.0 && detected[2].1 > 50.0, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker.metrics.jobs_ok.get() < jobs + 3 {
        assert!(Instant::now() < deadline, "jobs never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(worker.metrics.jobs_ok.get(), jobs + 3, "1 + 2 jobs");

    // GET in this gateway's own dialect: detectedLanguage per text too.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &ko)
        .append_pair("q", &en)
        .append_pair("source", "auto")
        .append_pair("target", "ko")
        .finish();
    let (status, _, v) = answer(
        http.get(format!("{}?{query}", gw.url("/translate")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["translations"], json!([ko, en]), "{v}");
    assert_eq!(v["detectedLanguage"][0]["language"], "ko", "{v}");
    assert_eq!(v["detectedLanguage"][1]["language"], "en", "{v}");
    // A form POST with auto.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &ko)
        .append_pair("source", "auto")
        .append_pair("target", "en")
        .finish();
    let (status, _, v) = answer(
        http.post(gw.url("/translate"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["detectedLanguage"]["language"], "ko", "{v}");

    // LibreTranslate's errors with auto, nothing published.
    let jobs = worker.metrics.jobs_ok.get();
    for (body, message) in [
        (
            json!({"q": [en, ja], "source": "auto", "target": "ko"}),
            "Korean (ko) is not available as a target language from Japanese (ja)",
        ),
        (
            json!({"q": ko, "source": "auto", "target": "fr"}),
            "fr is not supported",
        ),
        (
            json!({"q": ko, "source": "auto"}),
            "Invalid request: missing target parameter",
        ),
        (
            json!({"q": [], "source": "auto", "target": "en"}),
            "Invalid request: missing q parameter",
        ),
    ] {
        let (status, _, v) = post_json(&http, &gw, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"], message, "{body}: {v}");
    }
    assert_eq!(worker.metrics.jobs_ok.get(), jobs);
    let text = gw.metrics_text(&http).await;
    assert_eq!(
        metric_sample(
            &text,
            r#"translation_gateway_requests_total{method="POST",route="/detect",status="200"}"#
        ),
        Some(5.0),
        "{text}"
    );
    gw.stop().await;
    worker.stop().await;
    cleanup(&config).await;
}
