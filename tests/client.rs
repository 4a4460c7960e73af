//! The Rust client against the real broker and an in-process worker (copy model: every
//! translation equals its input).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use translation_client::wire::{ErrorCode, JobOptions};
use translation_client::{Client, ClientError, ClientOptions, TranslateRequest};
use translation_worker::config::Config;

fn options(config: &Config) -> ClientOptions {
    ClientOptions {
        exchange: config.amqp.exchange.clone(),
        timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_calls_on_one_client() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                // Two texts per job, unique to the job: a reply crossed with another
                // call's would show.
                let texts = vec![sample_text(i), sample_text(10_000 + i)];
                let request =
                    TranslateRequest::new("ko", "en", texts.clone()).with_id(format!("job-{i}"));
                (i, texts, client.translate(request).await)
            })
        })
        .collect();
    let mut corrs = std::collections::HashSet::new();
    for call in calls {
        let (i, texts, result) = call.await.unwrap();
        let reply = result.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(reply.translations, texts, "call {i}");
        assert_eq!(reply.cached.len(), 2);
        assert_eq!(reply.id.as_deref(), Some(format!("job-{i}").as_str()));
        assert!(corrs.insert(reply.correlation_id));
    }
    let stats = client.stats();
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.ignored_replies, 0);
    assert_eq!(worker.metrics.jobs_ok.get(), 200);
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_pair_fails_fast_and_the_client_keeps_working() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let t = Instant::now();
    let err = client
        .translate(TranslateRequest::new("ko", "ja", ["안녕"]))
        .await
        .unwrap_err();
    let took = t.elapsed();
    match &err {
        ClientError::Unroutable {
            routing_key,
            exchange,
            reply_code,
            ..
        } => {
            assert_eq!(routing_key, "ko-ja");
            assert_eq!(exchange, &config.amqp.exchange);
            assert_eq!(*reply_code, 312);
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    assert_eq!(err.label(), "unroutable");
    // The timeout is 30 s: a returned job must not wait for it.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(client.stats().returned, 1);

    // Several unserved calls at once next to served ones: each gets its own outcome
    // (returned messages are matched by correlation id, not by confirm order).
    let mixed: Vec<_> = (0..40)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let target = if i % 2 == 0 { "en" } else { "xx" };
                let text = sample_text(i);
                (
                    target,
                    text.clone(),
                    client
                        .translate(TranslateRequest::new("ko", target, [text]))
                        .await,
                )
            })
        })
        .collect();
    for call in mixed {
        let (target, text, result) = call.await.unwrap();
        match (target, result) {
            ("en", Ok(reply)) => assert_eq!(reply.translations, [text]),
            ("xx", Err(ClientError::Unroutable { routing_key, .. })) => {
                assert_eq!(routing_key, "ko-xx")
            }
            (t, r) => panic!("{t}: unexpected {r:?}"),
        }
    }
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_replies_carry_their_code() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let err = client
        .translate(
            TranslateRequest::new("ko", "en", ["a"])
                .with_id("bad-beam")
                .with_options(JobOptions {
                    beam_size: Some(99),
                    ..JobOptions::default()
                }),
        )
        .await
        .unwrap_err();
    match err {
        ClientError::Rejected { code, id, message } => {
            assert_eq!(code, ErrorCode::InvalidRequest);
            assert_eq!(id.as_deref(), Some("bad-beam"));
            assert!(message.contains("beam_size"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // call() hands the error reply back with its raw body.
    let raw = client
        .call(TranslateRequest::new("ko", "en", Vec::<String>::new()))
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_out_when_no_worker_consumes() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let t = Instant::now();
    let err = client
        .translate(
            TranslateRequest::new("ko", "en", ["nobody listens"])
                .with_timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, ClientError::Timeout(d) if d == Duration::from_millis(500)),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(client.stats().pending, 0, "the timed-out call is forgotten");

    // The job sits in the queue; a worker started now answers it, and the client
    // drops that late reply.
    let worker = start_worker(config.clone()).await;
    wait_until("the late reply", || client.stats().ignored_replies == 1).await;
    let reply = client
        .translate(TranslateRequest::new("ko", "en", ["now someone does"]))
        .await
        .unwrap();
    assert_eq!(reply.translations, ["now someone does"]);
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_replies_are_ignored() {
    let config = test_config();
    let worker = start_worker(config.clone()).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let first = client
        .translate(TranslateRequest::new("ko", "en", ["원본"]))
        .await
        .unwrap();
    assert_eq!(first.translations, ["원본"]);

    // A second reply for the settled correlation id, as after a redelivery, and one
    // with a different body: neither may reach any call.
    let bus = Bus::connect().await;
    for body in [
        r#"{"id":null,"status":"ok","translations":["원본"],"cached":[true],"model":"m"}"#,
        r#"{"id":null,"status":"ok","translations":["WRONG"],"cached":[true],"model":"m"}"#,
    ] {
        bus.publish_to(
            "",
            client.reply_queue(),
            &first.correlation_id,
            body.as_bytes(),
            false,
        )
        .await;
    }
    wait_until("two ignored replies", || {
        client.stats().ignored_replies == 2
    })
    .await;

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let text = sample_text(i);
                let r = client
                    .translate(TranslateRequest::new("ko", "en", [text.clone()]))
                    .await;
                (text, r)
            })
        })
        .collect();
    for call in calls {
        let (text, r) = call.await.unwrap();
        assert_eq!(r.unwrap().translations, [text]);
    }
    assert_eq!(client.stats().ignored_replies, 2);
    let _ = bus.conn.close(200, "ok".into()).await;
    client.close().await;
    worker.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_fail_when_the_client_closes() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let client = Client::connect(AMQP_URL, options(&config)).await.unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .translate(TranslateRequest::new("ko", "en", ["never answered"]))
                .await
        })
    };
    wait_until("the call to be pending", || client.stats().pending == 1).await;
    let t = Instant::now();
    client.close().await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = client
        .translate(TranslateRequest::new("ko", "en", ["after close"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    cleanup(&config).await;
}

/// Closes the broker connection named `name` from the server side (as a broker restart
/// or a network failure would), with `rabbitmqctl`.
fn close_connection_by_name(name: &str) {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    let listing = String::from_utf8_lossy(&out.stdout);
    let pid = listing
        .lines()
        .find(|l| l.contains(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("connection {name} not listed:\n{listing}"));
    let status = Command::new("rabbitmqctl")
        .args([
            "-q",
            "close_connection",
            pid,
            "test: simulated connection loss",
        ])
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl close_connection failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_fail_with_a_typed_error_when_the_connection_drops() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let name = format!("tw-client-test-{}", uuid::Uuid::new_v4().simple());
    let client = Client::connect(
        AMQP_URL,
        ClientOptions {
            connection_name: name.clone(),
            ..options(&config)
        },
    )
    .await
    .unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .translate(TranslateRequest::new("ko", "en", ["never answered"]))
                .await
        })
    };
    wait_until("the call to be pending", || client.stats().pending == 1).await;
    let t = Instant::now();
    tokio::task::spawn_blocking(move || close_connection_by_name(&name))
        .await
        .unwrap();
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost), "{err:?}");
    // Well before the call's 30 s timeout.
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let err = client
        .translate(TranslateRequest::new("ko", "en", ["after the loss"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost), "{err:?}");
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_the_pending_calls() {
    let config = test_config();
    declare_topology_at(AMQP_URL, &config).await;
    let client = Client::connect(
        AMQP_URL,
        ClientOptions {
            max_in_flight: 2,
            timeout: Duration::from_millis(1500),
            ..options(&config)
        },
    )
    .await
    .unwrap();
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .translate(TranslateRequest::new("ko", "en", [format!("queued {i}")]))
                    .await
            })
        })
        .collect();
    wait_until("two pending calls", || client.stats().pending == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.stats().pending, 2, "the other calls wait for a slot");
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    }
    assert_eq!(client.stats().pending, 0);
    client.close().await;
    cleanup(&config).await;
}

/// `amqp.url` and the client's URL may list several nodes of one cluster: a dead node
/// in the list is passed over (in whichever order the shuffle tries it), by the worker
/// at start and by the client at connect. The 3-node failover drill is issue 17's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_in_the_url_list_is_passed_over() {
    // Nothing listens on port 1.
    let dead = "amqp://guest:guest@127.0.0.1:1/%2f";
    let list = format!("{dead},{AMQP_URL}");
    let mut config = test_config();
    config.amqp.url = list.clone();
    config
        .validate()
        .expect("a list of amqp:// URLs is a valid amqp.url");
    let worker = start_worker(config.clone()).await;
    // Several connects, so that both orders of the shuffle are likely tried.
    for i in 0..4 {
        let client = Client::connect(&list, options(&config)).await.unwrap();
        let texts = vec![sample_text(i)];
        let reply = client
            .translate(TranslateRequest::new("ko", "en", texts.clone()))
            .await
            .unwrap();
        assert_eq!(reply.translations, texts);
        client.close().await;
    }
    assert_eq!(worker.metrics.jobs_ok.get(), 4);
    // Only dead nodes: the error names one of them, password hidden.
    let err = Client::connect(
        &format!("{dead},amqp://guest:guest@127.0.0.1:2/%2f"),
        options(&config),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(!err.to_string().contains("guest:guest"), "{err}");
    // Mixed schemes are refused by validation.
    config.amqp.url = format!("{AMQP_URL},amqps://guest:guest@127.0.0.1:5671/%2f");
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("amqp.url"), "{e}");
}
