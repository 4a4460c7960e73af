//! Private RabbitMQ and Redis servers for fault drills and TLS tests.
//!
//! Each instance has its own ports, node name and data directory, so a test may stop,
//! kill or restart it while other tests keep using the shared services on 5672/6379.
//! The data directory survives `stop`/`kill` and `start_again`: durable queues and
//! persistent messages come back, as after a real broker restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 whose `+ offset` neighbours are free too.
///
/// Ports handed out earlier in this process are never handed out again, even before
/// their server binds them: otherwise a broker's distribution port (`port + 1`) could
/// land on a TLS port another call just picked for the same test.
///
/// Ports come from below the kernel's ephemeral range: a port inside it can be taken
/// as the source port of some outgoing connection before the server binds it, and a
/// readiness probe to an unbound ephemeral port can connect to itself (TCP
/// simultaneous open), which once made a broker look up before it listened.
pub fn free_port(neighbours: &[u16]) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let (low, high) = private_port_range();
    let span = u128::from(high - low);
    let seed = uuid::Uuid::new_v4().as_u128();
    for i in 0..4000u128 {
        let port = low + ((seed + i * 7919) % span) as u16;
        let wanted: Vec<u16> = std::iter::once(port)
            .chain(neighbours.iter().map(|&n| port + n))
            .collect();
        let free =
            |p: &u16| !handed.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok();
        if wanted.iter().all(free) {
            handed.extend(wanted);
            return port;
        }
    }
    panic!("no free port");
}

/// `[low, high)` for private servers: from 10000 up to the start of the kernel's
/// ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 by default).
fn private_port_range() -> (u16, u16) {
    const LOW: u16 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Neighbours (`port + 1`, TLS ports) need a little room under the range's start.
    let high = ephemeral_start.saturating_sub(16);
    assert!(
        high > LOW + 1000,
        "the ephemeral port range starts at {ephemeral_start}: no room for private servers"
    );
    (LOW, high)
}

fn private_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tw-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Blocks until `port` accepts TCP connections.
pub fn wait_port(port: u16, timeout: Duration) {
    assert!(try_wait_port(port, timeout), "port {port} never opened");
}

/// Waits until `port` accepts TCP connections; false after `timeout`.
pub fn try_wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // A socket connected to itself (same local and peer address) means nothing
            // listens there yet.
            if s.local_addr().ok() != s.peer_addr().ok() {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// A private single-node RabbitMQ broker (the Debian `rabbitmq-server` package).
pub struct PrivateRabbit {
    /// AMQP port (plain TCP).
    pub port: u16,
    /// Erlang node name, for `rabbitmqctl -n`.
    pub node: String,
    /// Holds the config, the cookie (`HOME`), the database and the logs.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRabbit {
    /// Starts a node whose `rabbitmq.conf` is the plain listener plus `extra_conf`
    /// (for instance a TLS listener), and waits until its AMQP port is open.
    pub fn start(extra_conf: &str) -> Self {
        let port = free_port(&[1]);
        let dir = private_dir("rabbit");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("temp dir is writable");
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("temp dir is writable");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.default = {port}\nloopback_users = none\n{extra_conf}\n"),
        )
        .expect("temp dir is writable");
        let node = format!(
            "tw{}@localhost",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let mut rabbit = Self {
            port,
            node,
            dir,
            child: None,
        };
        rabbit.start_again();
        rabbit
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn env(&self, cmd: &mut Command) {
        let d = &self.dir;
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", (self.port + 1).to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"));
    }

    /// (Re)starts the node on the same ports and data; waits for the AMQP port.
    pub fn start_again(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("temp dir is writable");
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        self.env(&mut cmd);
        let child = cmd
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server is installed (scripts/setup.sh)");
        self.child = Some(child);
        self.wait_port(self.port, Duration::from_secs(60));
    }

    /// Waits for one of the node's ports; on timeout, panics with the end of its logs
    /// (the temp dir holding them is gone once the test unwinds).
    pub fn wait_port(&self, port: u16, timeout: Duration) {
        if !try_wait_port(port, timeout) {
            panic!(
                "port {port} never opened; broker logs:\n{}",
                self.log_tail(40)
            );
        }
    }

    /// The last `lines` lines of the node's stdout/stderr and of its own log files.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut files = vec![self.dir.join("server.log")];
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            files.extend(entries.filter_map(|e| Some(e.ok()?.path())));
        }
        let mut out = String::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("== {}\n{}\n", f.display(), tail.join("\n")));
        }
        out
    }

    /// Stops the node cleanly (`rabbitmqctl stop`), as an operator's restart does.
    pub fn stop(&mut self) {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut cmd);
        let status = cmd
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmqctl is installed");
        assert!(status.success(), "rabbitmqctl stop failed");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Kills the node (SIGKILL), as a crash or an evicted pod does.
    pub fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            if let Ok(pid) = pid.trim().parse() {
                kill_pid(pid);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "broker still listening after kill"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `rabbitmqctl <args>` against this node and returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut cmd);
        let out = cmd
            .args(["-n", &self.node, "-q"])
            .args(args)
            .output()
            .expect("rabbitmqctl is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private `redis-server` (no persistence), stoppable and restartable.
pub struct PrivateRedis {
    /// Plain TCP port (a TLS port, if any, comes from `extra_args`).
    pub port: u16,
    /// Working directory.
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts `redis-server --port <free> <extra_args>` and waits for the plain port.
    pub fn start(extra_args: &[&str]) -> Self {
        let port = free_port(&[]);
        let dir = private_dir("redis");
        let mut redis = Self {
            port,
            dir,
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port.
    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(10));
    }

    /// Kills the server; its data is gone (no persistence), like a fresh pod.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Path inside this server's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        Path::new(&self.dir).join(name)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
