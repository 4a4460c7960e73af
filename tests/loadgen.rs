//! `loadgen` against an in-process worker (library call), lost jobs without a consumer,
//! and the compiled binary's `loadgen`, `translate` and `echo` wiring.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lapin::{Connection, ConnectionProperties};
use translation_worker::config::Config;
use translation_worker::tools::loadgen::{self, LoadgenOptions};
use translation_worker::tools::ConnectOptions;

const BIN: &str = env!("CARGO_BIN_EXE_translation-worker");

fn args(config: &Config) -> LoadgenOptions {
    LoadgenOptions::new(ConnectOptions {
        amqp_url: AMQP_URL.into(),
        exchange: config.amqp.exchange.clone(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_copy_against_the_worker_loses_nothing() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let mut a = args(&config);
    a.jobs = 500;
    a.concurrency = 64;
    a.texts_per_job = 2;
    a.unique = true;
    a.verify_copy = true;
    a.timeout_ms = 60_000;
    let report = loadgen::run(&a).await.expect("loadgen runs");
    assert_eq!(report.sent, 500, "{report:?}");
    assert_eq!(report.answered, 500, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.mismatches, 0, "{report:?}");
    assert_eq!(report.segments, 1000);
    assert_eq!(
        report.cached_segments, 0,
        "unique texts never hit the cache"
    );
    assert!(report.tokens >= 2 * report.segments, "{report:?}");
    let l = report.latency_ms;
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
    assert!(report.jobs_per_sec > 0.0);
    assert!(report.passed(false));
    assert_eq!(worker.metrics.jobs_ok.get(), 500);

    // A pool of 5 jobs, sent once to fill the cache, then repeated: all cache hits.
    let mut warm = args(&config);
    warm.jobs = 5;
    warm.pool = Some(5);
    warm.verify_copy = true;
    let report = loadgen::run(&warm).await.expect("loadgen runs");
    assert!(report.passed(false), "{report:?}");
    // The cache is written while the reply is published: let the writes land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    warm.jobs = 20;
    let report = loadgen::run(&warm).await.expect("loadgen runs");
    assert!(report.passed(false), "{report:?}");
    assert_eq!(report.cached_segments, 20, "{report:?}");
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_without_a_consumer_are_reported_lost() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let mut a = args(&config);
    a.jobs = 12;
    a.concurrency = 4;
    a.timeout_ms = 300;
    let t = Instant::now();
    let report = loadgen::run(&a).await.expect("loadgen runs");
    assert_eq!(report.sent, 12, "{report:?}");
    assert_eq!(report.lost, 12, "{report:?}");
    assert_eq!(report.answered, 0);
    assert_eq!(report.error_kinds.get("timeout"), Some(&12));
    assert!(
        !report.passed(true),
        "lost jobs fail even with --allow-errors"
    );
    // 12 jobs, 4 at a time, 300 ms each: about 0.9 s.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(report.to_text().contains("12 lost"), "{}", report.to_text());
    cleanup(&config).await;
}

/// A consumer that answers every job in the reply shape but with wrong translations.
async fn start_liar(config: &Config) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;
    use lapin::BasicProperties;
    declare_topology_at(AMQP_URL, config).await;
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            config.amqp.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(d)) = consumer.next().await {
            let job: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
            let n = job["texts"].as_array().unwrap().len();
            let reply = serde_json::json!({
                "id": null, "status": "ok", "translations": vec!["WRONG"; n],
                "cached": vec![false; n], "model": "liar"
            });
            let mut props = BasicProperties::default();
            if let Some(c) = d.properties.correlation_id() {
                props = props.with_correlation_id(c.clone());
            }
            let reply_to = d.properties.reply_to().clone().unwrap();
            let _ = ch
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&reply).unwrap(),
                    props,
                )
                .await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_translations_are_reported_as_mismatches() {
    let config = test_config();
    let liar = start_liar(&config).await;
    let mut a = args(&config);
    a.jobs = 12;
    a.concurrency = 3;
    a.verify_copy = true;
    let report = loadgen::run(&a).await.expect("loadgen runs");
    assert_eq!(report.answered, 12, "{report:?}");
    assert_eq!(report.mismatches, 12, "{report:?}");
    assert_eq!(report.mismatch_examples.len(), 5);
    assert_eq!(report.mismatch_examples[0].received, ["WRONG"]);
    assert!(
        !report.passed(true),
        "mismatches fail even with --allow-errors"
    );
    // Without --verify-copy the same replies are fine.
    a.verify_copy = false;
    let report = loadgen::run(&a).await.expect("loadgen runs");
    assert_eq!(report.mismatches, 0);
    assert!(report.passed(false));
    liar.abort();
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_pair_is_reported_as_errors() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let mut a = args(&config);
    a.target = "xx".into();
    a.jobs = 10;
    a.concurrency = 5;
    let report = loadgen::run(&a).await.expect("loadgen runs");
    assert_eq!(report.errors, 10, "{report:?}");
    assert_eq!(report.error_kinds.get("unroutable"), Some(&10));
    assert!(!report.passed(false));
    assert!(report.passed(true));
    cleanup(&config).await;
}

/// Stops the child with SIGTERM if the test fails before it does.
struct Echo(Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(config: &Config, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--amqp-url", AMQP_URL, "--exchange", &config.amqp.exchange])
        .env_remove("RUST_LOG")
        .env_remove("TW_AMQP__URL");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_wires_loadgen_translate_and_echo() {
    let config = test_config();
    let mut echo = Echo(
        cli(
            &config,
            &[
                "echo",
                "--queue",
                &config.amqp.queue,
                "--dead-letter",
                &config.amqp.dead_letter,
                "--pair",
                "ko-en",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("echo starts"),
    );
    wait_for_consumer(&config.amqp.queue).await;

    // loadgen --json: the report is the only thing on stdout.
    let out = cli(
        &config,
        &[
            "loadgen",
            "--jobs",
            "300",
            "--concurrency",
            "32",
            "--texts-per-job",
            "3",
            "--unique",
            "--verify-copy",
            "--json",
        ],
    )
    .output()
    .expect("loadgen runs");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["sent"], 300, "{report}");
    assert_eq!(report["answered"], 300, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    assert_eq!(report["segments"], 900, "{report}");
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    // translate: arguments, then stdin; one translation per line, in order.
    let out = cli(
        &config,
        &[
            "translate",
            "--source",
            "ko",
            "--target",
            "en",
            "a",
            "회의는 10시에",
        ],
    )
    .output()
    .expect("translate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\n회의는 10시에\n");

    let lines: Vec<String> = (0..70).map(sample_text).collect();
    let mut child = cli(&config, &["translate", "--texts-per-job", "16"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("translate runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", lines.join("\n"))
    );

    // --document: stdin is one text (one job), printed back exactly as answered.
    let doc = "첫 문단입니다. 둘째 문장.\n\n  Second paragraph.\r\n\tLast line";
    let mut child = cli(&config, &["translate", "--document"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("translate runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), doc);

    // --json prints the reply bodies.
    let out = cli(&config, &["translate", "--json", "x"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["translations"], serde_json::json!(["x"]));
    assert_eq!(reply["model"], "echo");

    // An unserved pair: nonzero exit, the reason on stderr.
    let out = cli(&config, &["translate", "--target", "xx", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no worker serves"), "{stderr}");

    // An error reply (a text over limits.max_text_chars): nonzero exit.
    let long = "x".repeat(10_001);
    let out = cli(&config, &["translate", &long]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too_large"), "{stderr}");

    // SIGTERM stops echo cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &echo.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = echo.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "echo did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "echo exited with {exit}");

    // No consumer left: loadgen reports the jobs lost and exits nonzero.
    let out = cli(
        &config,
        &["loadgen", "--jobs", "5", "--timeout-ms", "300", "--json"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["lost"], 5, "{report}");
    cleanup(&config).await;
}
