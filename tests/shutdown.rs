//! SIGTERM under load, against the real binary: every job is answered exactly once
//! (by the draining worker, or after redelivery by its successor); none is lost.

mod common;

use std::time::{Duration, Instant};

use common::process::WorkerProcess;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_answers_once() {
    let mut config = test_config();
    config.amqp.prefetch = 64;
    config.shutdown.drain_timeout_secs = 20;
    let bus = Bus::connect().await;
    translation_worker::amqp::declare_topology(&bus.ch, &config.amqp, &["ko-en".into()])
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
    let mut first = WorkerProcess::spawn(&config, &[]);
    // Let it get going, then ask it to stop mid-load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while bus.reply_counts().len() < 100 {
        assert!(Instant::now() < deadline, "first worker answered nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.signal("TERM");
    let exit = first.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "draining worker exited with {exit}");
    // Give replies published just before exit time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered_by_first = bus.reply_counts().len();
    assert!(
        answered_by_first < n,
        "the first worker finished everything before SIGTERM; the test proves nothing"
    );
    let mut second = WorkerProcess::spawn(&config, &[]);
    bus.wait_for(&corrs, Duration::from_secs(240)).await;
    second.signal("TERM");
    second.wait_exit(Duration::from_secs(30));
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
