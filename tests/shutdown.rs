//! SIGTERM under load, against the real binary: every job is answered exactly once
//! (by the draining worker, or after redelivery by its successor); none is lost.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use translation_worker::config::Config;

fn spawn_worker(config: &Config) -> Child {
    Command::new(env!("CARGO_BIN_EXE_translation-worker"))
        .arg("serve")
        .env("TW_AMQP__QUEUE", &config.amqp.queue)
        .env("TW_AMQP__EXCHANGE", &config.amqp.exchange)
        .env("TW_AMQP__DEAD_LETTER", &config.amqp.dead_letter)
        .env("TW_AMQP__PREFETCH", "64")
        .env("TW_REDIS__KEY_PREFIX", &config.redis.key_prefix)
        .env("TW_MODEL__PATH", &config.model.path)
        .env("TW_MODEL__THREADS", "2")
        .env("TW_SHUTDOWN__DRAIN_TIMEOUT_SECS", "20")
        .env("TW_LOG__FORMAT", "json")
        // Several test binaries run at once: no fixed metrics port.
        .env("TW_HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker binary starts")
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_answers_once() {
    let config = test_config();
    let bus = Bus::connect().await;
    translation_worker::broker::declare_topology(&bus.ch, &config.amqp, &["ko-en".into()])
        .await
        .unwrap();
    let n = 1500;
    let corrs: Vec<String> = (0..n).map(|i| format!("t-{i}")).collect();
    for (i, c) in corrs.iter().enumerate() {
        // Multi-text jobs make each one take a while, so many are in flight at SIGTERM.
        let texts: Vec<String> = (0..4).map(|k| sample_text(i * 4 + k)).collect();
        let body = serde_json::to_vec(&json!({"id": c, "texts": texts})).unwrap();
        bus.publish(&config.amqp.queue, c, &body).await;
    }
    let mut first = spawn_worker(&config);
    // Let it get going, then ask it to stop mid-load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.reply_counts().len() < 100 {
        assert!(Instant::now() < deadline, "first worker answered nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = first.id() as i32;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut first, Duration::from_secs(30));
    assert!(exit.success(), "draining worker exited with {exit}");
    // Give replies published just before exit time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered_by_first = bus.reply_counts().len();
    assert!(
        answered_by_first < n,
        "the first worker finished everything before SIGTERM; the test proves nothing"
    );
    let mut second = spawn_worker(&config);
    bus.wait_for(&corrs, Duration::from_secs(240)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    wait_exit(&mut second, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = bus.reply_counts();
    for (i, c) in corrs.iter().enumerate() {
        let replies = bus.replies(c);
        assert_eq!(
            counts.get(c),
            Some(&1),
            "{c} answered {:?} times",
            counts.get(c)
        );
        let want: Vec<String> = (0..4).map(|k| sample_text(i * 4 + k)).collect();
        let got: Vec<String> = replies[0]["translations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want);
    }
    eprintln!(
        "sigterm drill: {n} jobs, {answered_by_first} answered before exit, rest after restart, 0 lost, 0 duplicates"
    );
    cleanup(&config).await;
}
