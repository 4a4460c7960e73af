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
    /// `HOME` of the node and its CLI (the Erlang cookie's directory): `dir`, or the
    /// directory a [`PrivateCluster`]'s nodes share, so that they share one cookie.
    home: PathBuf,
    /// `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS`, if any (a cluster's lean VMs).
    erl_args: Option<&'static str>,
    child: Option<Child>,
}

impl PrivateRabbit {
    /// Starts a node whose `rabbitmq.conf` is the plain listener plus `extra_conf`
    /// (for instance a TLS listener), and waits until its AMQP port is open.
    pub fn start(extra_conf: &str) -> Self {
        let mut rabbit = Self::prepare(extra_conf, None, None);
        rabbit.start_again();
        rabbit
    }

    /// A node ready to start (config, directories, name, ports), not started yet;
    /// `home` (the cookie's directory) defaults to its own directory.
    fn prepare(extra_conf: &str, home: Option<PathBuf>, erl_args: Option<&'static str>) -> Self {
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
        Self {
            port,
            node,
            home: home.unwrap_or_else(|| dir.clone()),
            dir,
            erl_args,
            child: None,
        }
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn env(&self, cmd: &mut Command) {
        let d = &self.dir;
        if let Some(args) = self.erl_args {
            cmd.env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", args);
        }
        cmd.env("HOME", &self.home)
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

    /// Whether the node was started and not killed or stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `rabbitmqctl <args>` against this node, killed past `timeout`: its stdout,
    /// or why it failed (exit status and stderr).
    pub fn ctl_within(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        // Output goes to files: a pipe nobody reads while we poll could fill and block
        // the CLI.
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (out_path, err_path) = (
            self.dir.join(format!("ctl-{tag}.out")),
            self.dir.join(format!("ctl-{tag}.err")),
        );
        let out = std::fs::File::create(&out_path).expect("temp dir is writable");
        let err = std::fs::File::create(&err_path).expect("temp dir is writable");
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        self.env(&mut cmd);
        let mut child = cmd
            .args(["-n", &self.node, "-q"])
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("rabbitmqctl is installed");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait on rabbitmqctl") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(out_path);
        let _ = std::fs::remove_file(err_path);
        match status {
            Some(s) if s.success() => Ok(stdout),
            Some(s) => Err(format!(
                "rabbitmqctl {args:?} on {}: {s}: {stderr}",
                self.node
            )),
            None => Err(format!(
                "rabbitmqctl {args:?} on {} took over {timeout:?}",
                self.node
            )),
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

/// Erlang VM flags of a [`PrivateCluster`]'s nodes: three brokers and the service
/// share two cores in CI, so each node runs one scheduler (and one dirty CPU
/// scheduler), a small async pool and never busy-waits.
const LEAN_ERL_ARGS: &str =
    "+S 1:1 +SDcpu 1:1 +SDio 2 +A 4 +sbwt none +sbwtdcpu none +sbwtdio none";

/// Longest wait for one `rabbitmqctl` call of a cluster (it boots an Erlang VM first,
/// seconds on a busy machine).
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A private RabbitMQ cluster: `n` [`PrivateRabbit`] nodes on loopback, each with its
/// own node name, AMQP and distribution ports and data directory, one shared Erlang
/// cookie, joined with `rabbitmqctl join_cluster`. A node can be SIGKILLed and started
/// again on its data; it rejoins the cluster by itself.
pub struct PrivateCluster {
    /// The nodes; index `i` is "node i" in the other methods.
    pub nodes: Vec<PrivateRabbit>,
    /// Shared `HOME` of the nodes and their CLI: holds the one `.erlang.cookie`.
    home: PathBuf,
}

impl PrivateCluster {
    /// Boots `n` nodes at once, joins nodes `1..n` to node 0 and waits until every
    /// node runs the cluster. Panics (with the failing node's log) if a node or a
    /// join does not come up in time: never a silent skip.
    pub fn start(n: usize) -> Self {
        assert!(
            Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
            "the cluster drills need RabbitMQ's rabbitmq-server (Debian package \
             rabbitmq-server, scripts/setup.sh)"
        );
        let home = private_dir("cluster");
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string())
            .expect("temp dir is writable");
        // Erlang refuses a cookie file that others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .expect("cookie permissions");
        let mut nodes: Vec<PrivateRabbit> = (0..n)
            .map(|_| PrivateRabbit::prepare("", Some(home.clone()), Some(LEAN_ERL_ARGS)))
            .collect();
        // Boot in parallel: each boot mostly waits on the others' CPU anyway.
        std::thread::scope(|s| {
            for node in nodes.iter_mut() {
                s.spawn(move || node.start_again());
            }
        });
        let cluster = Self { nodes, home };
        let seed = cluster.nodes[0].node.clone();
        for node in &cluster.nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["join_cluster", seed.as_str()],
                vec!["start_app"],
            ] {
                if let Err(e) = node.ctl_within(&args, CTL_TIMEOUT) {
                    panic!("joining the cluster failed: {e}\n{}", node.log_tail(40));
                }
            }
        }
        cluster.wait_running(n, Duration::from_secs(60));
        cluster
    }

    /// Every node's AMQP URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRabbit::url).collect()
    }

    /// The URLs as one comma-separated `amqp.url` list.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Indices of the nodes started and not killed since.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// SIGKILLs node `i` (a crash); returns once its AMQP port is closed.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its data and waits until the cluster counts it as
    /// running again.
    pub fn start_again(&mut self, i: usize) {
        self.nodes[i].start_again();
        let running = self.running().len();
        self.wait_running(running, Duration::from_secs(90));
    }

    /// Runs `rabbitmqctl <args>` on the first running node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let i = *self.running().first().ok_or("no node runs")?;
        self.nodes[i].ctl_within(args, CTL_TIMEOUT)
    }

    /// Waits until `n` nodes are listed as running by `cluster_status`.
    fn wait_running(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.ctl(&["cluster_status", "--formatter", "json"]);
            let running = status
                .as_ref()
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["running_nodes"].as_array().map(Vec::len));
            if running.is_some_and(|r| r >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {running:?} of {n} nodes running after {timeout:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The index of the node named `name` (`tw…@localhost`).
    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node == name)
    }

    /// `list_queues name leader online` (RabbitMQ 3.10 lists `leader` and `online`
    /// members for quorum queues) for `queue`: the leader's index and the indices of
    /// its online members; `None` while no running node answers or the queue is not
    /// there.
    pub fn quorum_state(&self, queue: &str) -> Option<(Option<usize>, Vec<usize>)> {
        let out = self
            .ctl(&[
                "list_queues",
                "name",
                "leader",
                "online",
                "--formatter",
                "json",
            ])
            .ok()?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        let row = rows.into_iter().find(|r| r["name"] == queue)?;
        let leader = row["leader"].as_str().and_then(|l| self.index_of(l));
        let online = row["online"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| self.index_of(m.as_str()?))
                    .collect()
            })
            .unwrap_or_default();
        Some((leader, online))
    }

    /// The node leading quorum queue `queue`, once it has one (bounded wait).
    pub fn leader_of(&self, queue: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((Some(leader), _)) = self.quorum_state(queue) {
                if self.nodes[leader].is_running() {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "{queue} has no leader");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until quorum queue `queue` has a leader and every running node is one of
    /// its online members (a restarted node has rejoined the queue's Raft group).
    pub fn wait_queue_members(&self, queue: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.quorum_state(queue);
            if let Some((Some(_), online)) = &state {
                if self.running().iter().all(|i| online.contains(i)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{queue}: members never all online: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The nodes process `pid` has an established TCP connection to (by AMQP port):
    /// its sockets (`/proc/<pid>/fd`) looked up in `/proc/<pid>/net/tcp{,6}`. Exact,
    /// instant, and needs no CLI round trip while the machine is loaded.
    pub fn nodes_of_process(&self, pid: u32) -> Vec<usize> {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        let link = std::fs::read_link(e.ok()?.path()).ok()?;
                        let link = link.to_str()?;
                        Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                let (Some(rem), Some(st), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else {
                    continue;
                };
                // 01 = ESTABLISHED.
                if *st != "01" || !inodes.iter().any(|i| i == inode) {
                    continue;
                }
                if let Some(port) = rem
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
        let mut nodes: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| ports.contains(&self.nodes[i].port))
            .collect();
        nodes.dedup();
        nodes
    }

    /// The one node process `pid` is connected to, once it is connected to exactly one
    /// (bounded wait: a client between two connections has none for a moment).
    pub fn node_of_process(&self, pid: u32) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = self.nodes_of_process(pid);
            if let [one] = nodes[..] {
                return one;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} is connected to nodes {nodes:?}, not to exactly one"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // The nodes go first (each kills its VM and removes its directory).
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.home);
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
