//! Beyond one machine: quorum job queues on the real RabbitMQ, and the cache on a real
//! three-node Redis Cluster started by the test itself.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::json;
use translation_worker::amqp::{self, BrokerError};
use translation_worker::config::{QueueType, RedisMode};

async fn connect() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("broker reachable")
}

/// Declares `queue` durable with `args` on a fresh channel (a refusal closes it).
async fn declare(conn: &Connection, queue: &str, args: FieldTable) -> Result<(), lapin::Error> {
    let ch: Channel = conn.create_channel().await.expect("channel");
    let res = ch
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await;
    let _ = ch.close(200, "ok".into()).await;
    res.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_consumes_a_quorum_queue_that_refuses_a_classic_redeclare() {
    let mut config = test_config();
    config.amqp.queue_type = QueueType::Quorum;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;
    for i in 0..3 {
        let text = format!("{} quorum", sample_text(i));
        let r = bus
            .rpc(
                &config.amqp.queue,
                &serde_json::to_vec(&json!({"text": text})).unwrap(),
            )
            .await;
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(translations(&r), vec![text]);
    }

    // The queue really is a quorum queue: redeclaring it as such is a no-op, as a
    // classic queue (same dead-letter exchange, no type) the broker refuses with 406.
    let conn = connect().await;
    declare(
        &conn,
        &config.amqp.queue,
        amqp::job_queue_arguments(&config.amqp),
    )
    .await
    .expect("same arguments redeclare");
    let mut classic = config.amqp.clone();
    classic.queue_type = QueueType::Classic;
    let err = declare(
        &conn,
        &config.amqp.queue,
        amqp::job_queue_arguments(&classic),
    )
    .await
    .expect_err("a classic redeclare of a quorum queue is refused");
    assert!(amqp::is_precondition_failed(&err), "{err}");
    // A worker configured classic on it fails to start its topology, saying why: first
    // at the dead-letter queue, which is of the job queues' type (quorum here)...
    let ch = conn.create_channel().await.expect("channel");
    let err = amqp::declare_topology(&ch, &classic, &["ko-en".into()])
        .await
        .expect_err("topology with the other queue type");
    assert!(matches!(err, BrokerError::QueueMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&config.amqp.dead_letter)
            && msg.contains("new amqp.dead_letter name")
            && msg.contains("classic"),
        "{msg}"
    );
    // ...and, with a dead-letter queue of its own, at the job queue.
    classic.dead_letter = format!("{}.classic", config.amqp.dead_letter);
    let ch = conn.create_channel().await.expect("channel");
    let err = amqp::declare_topology(&ch, &classic, &["ko-en".into()])
        .await
        .expect_err("topology with the other queue type");
    assert!(matches!(err, BrokerError::QueueMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&config.amqp.queue)
            && msg.contains("new amqp.queue name")
            && msg.contains("classic"),
        "{msg}"
    );
    let ch = conn.create_channel().await.expect("channel");
    let _ = ch
        .queue_delete(classic.dead_letter.as_str().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(classic.dead_letter.as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "ok".into()).await;
    w.stop().await;
    cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_dead_letters_a_job_past_its_delivery_limit() {
    let mut config = test_config();
    config.amqp.queue_type = QueueType::Quorum;
    config.amqp.delivery_limit = 2;
    let bus = Bus::connect().await;
    amqp::declare_topology(&bus.ch, &config.amqp, &["ko-en".into()])
        .await
        .unwrap();
    bus.publish(&config.amqp.queue, "poison", b"{\"text\":\"poison\"}")
        .await;
    // Each "worker" takes the job and dies (its channel closes without an ack).
    let conn = connect().await;
    let mut deliveries = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ch = conn.create_channel().await.expect("channel");
        let got = ch
            .basic_get(
                config.amqp.queue.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .expect("basic.get");
        let _ = ch.close(200, "crash".into()).await;
        match got {
            Some(_) => deliveries += 1,
            None => {
                let dead = conn.create_channel().await.expect("channel");
                let q = dead
                    .queue_declare(
                        config.amqp.dead_letter.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("dead-letter queue");
                if q.message_count() == 1 {
                    break;
                }
            }
        }
        assert!(deliveries <= 10, "the poison job keeps coming back");
        assert!(Instant::now() < deadline, "the job was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The limit counts redeliveries: first delivery + `delivery_limit` more at most.
    assert!(
        (2..=3).contains(&deliveries),
        "{deliveries} deliveries with delivery_limit 2"
    );
    let ch = conn.create_channel().await.expect("channel");
    let dead = ch
        .basic_get(
            config.amqp.dead_letter.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
        .expect("the dead letter");
    assert_eq!(dead.delivery.data, b"{\"text\":\"poison\"}");
    let headers = dead
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death header: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("empty x-death: {deaths:?}");
    };
    let reason = match death.inner().get("reason") {
        Some(AMQPValue::LongString(r)) => r.to_string(),
        other => panic!("x-death reason: {other:?}"),
    };
    assert_eq!(reason, "delivery_limit");
    let _ = conn.close(200, "ok".into()).await;
    cleanup(&config).await;
}

/// A three-node Redis Cluster (no replicas) on free loopback ports, in a temp dir;
/// killed and removed on drop.
struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

/// A port that is free, and whose cluster bus port (+10000) is free too; both below
/// the kernel's ephemeral range (32768), for the reason `common::private::free_port`
/// gives.
fn free_cluster_port(taken: &[u16]) -> u16 {
    let seed = uuid::Uuid::new_v4().as_u128();
    for i in 0..2000u128 {
        let port = 10_000 + ((seed + i * 7919) % 12_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    fn start() -> Self {
        Self::start_on(None)
    }

    /// A fresh cluster (empty, new node ids) on `ports`, or on free ports.
    fn start_on(ports: Option<Vec<u16>>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tw-redis-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let port = match &ports {
                Some(p) => p[i],
                None => free_cluster_port(&cluster.ports),
            };
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(&conf)
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &cluster.ports {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                common::private::try_wait_port(port, left),
                "redis node {port} did not start"
            );
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &cluster.ports {
            while !redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Seed list for `redis.url`.
    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Keys held by each node.
    fn keys_per_node(&self) -> Vec<usize> {
        self.ports
            .iter()
            .map(|&p| redis_cli(p, &["dbsize"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_a_redis_cluster_spreads_keys_and_serves_hits() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let mut config = test_config();
    config.redis.mode = RedisMode::Cluster;
    config.redis.url = cluster.url();
    // Generous on a loaded 2-core machine; the point here is routing, not latency.
    config.redis.timeout_ms = 2_000;
    config.redis.breaker_cooldown_ms = 200;
    let w = start_worker(config.clone()).await;
    let bus = Bus::connect().await;

    let run = uuid::Uuid::new_v4().simple().to_string();
    let texts: Vec<String> = (0..24)
        .map(|i| format!("{} [{run}]", sample_text(i)))
        .collect();
    let body = serde_json::to_vec(&json!({"texts": texts})).unwrap();
    let first = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(translations(&first), texts);
    assert_eq!(cached(&first), vec![false; texts.len()]);

    // The store runs alongside the reply: wait until it has landed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.metrics.cache_stores.get() < texts.len() as u64 {
        assert!(Instant::now() < deadline, "stores never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = bus.rpc(&config.amqp.queue, &body).await;
    assert_eq!(translations(&second), texts);
    assert_eq!(cached(&second), vec![true; texts.len()], "{second}");
    assert_eq!(w.metrics.cache_errors.get(), 0);

    // No hash tag: the keys live on several nodes, not pinned to one.
    let per_node = cluster.keys_per_node();
    assert_eq!(per_node.iter().sum::<usize>(), texts.len(), "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "keys on one node only: {per_node:?}"
    );

    // The whole cluster goes away: jobs are still answered, without the cache ...
    let ports = cluster.ports.clone();
    drop(cluster);
    let job = |t: &str| serde_json::to_vec(&json!({"text": format!("{t} [{run}]")})).unwrap();
    for _ in 0..3 {
        let r = bus.rpc(&config.amqp.queue, &job("during")).await;
        assert_eq!(cached(&r), vec![false]);
    }
    assert!(w.metrics.cache_errors.get() >= 1);
    // ... and a new cluster on the same seeds is picked up after the breaker's cool-down.
    let _cluster = tokio::task::spawn_blocking(move || RedisCluster::start_on(Some(ports)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = bus.rpc(&config.amqp.queue, &job("after")).await;
        assert_eq!(translations(&r), vec![format!("after [{run}]")]);
        if cached(&r) == vec![true] {
            break;
        }
        assert!(Instant::now() < deadline, "caching did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.stop().await;
    cleanup(&config).await;
}
