//! The worker binary as a child process: for drills that SIGKILL or SIGTERM it and
//! for memory measurements (RSS from `/proc`).

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use translation_worker::config::Config;

/// A `translation-worker serve` child process configured from a [`Config`].
pub struct WorkerProcess {
    /// The running child; `None` once it has exited and been reaped.
    pub child: Option<Child>,
    /// Its JSON log (stdout), for a failing test's message ([`log_tail`]).
    log: std::path::PathBuf,
}

impl WorkerProcess {
    /// Spawns the binary with `config`'s broker, Redis, queue, exchange, cache prefix
    /// and model passed as `TW_*` variables, then `extra_env` (which wins).
    /// Logs (at `warn` unless `extra_env` sets `RUST_LOG`) go to a file in the temp
    /// dir ([`Self::log_path`], [`log_tail`]); HTTP listens on an ephemeral port.
    pub fn spawn(config: &Config, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_translation-worker"));
        cmd.arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("TW_AMQP__URL", &config.amqp.url)
            .env("TW_AMQP__QUEUE", &config.amqp.queue)
            .env("TW_AMQP__EXCHANGE", &config.amqp.exchange)
            .env("TW_AMQP__DEAD_LETTER", &config.amqp.dead_letter)
            .env("TW_AMQP__PREFETCH", config.amqp.prefetch.to_string())
            .env(
                "TW_AMQP__RECONNECT_INITIAL_MS",
                config.amqp.reconnect_initial_ms.to_string(),
            )
            .env(
                "TW_AMQP__RECONNECT_MAX_MS",
                config.amqp.reconnect_max_ms.to_string(),
            )
            .env("TW_REDIS__URL", &config.redis.url)
            .env("TW_REDIS__ENABLED", config.redis.enabled.to_string())
            .env("TW_REDIS__KEY_PREFIX", &config.redis.key_prefix)
            .env("TW_REDIS__TTL_SECS", config.redis.ttl_secs.to_string())
            .env("TW_MODEL__PATH", &config.model.path)
            .env("TW_MODEL__THREADS", config.model.threads.to_string())
            .env(
                "TW_SHUTDOWN__DRAIN_TIMEOUT_SECS",
                config.shutdown.drain_timeout_secs.to_string(),
            )
            .env("TW_LOG__FORMAT", "json")
            // Several test binaries run at once: no fixed metrics port.
            .env("TW_HTTP__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let log =
            std::env::temp_dir().join(format!("tw-worker-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("temp dir is writable");
        let child = cmd
            .stdout(file)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("worker binary starts");
        Self {
            child: Some(child),
            log,
        }
    }

    /// Process id (panics once the child has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("worker still running").id()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill(1) exists");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL and reap: the crash of a pod.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the child to exit; kills it and panics past `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("worker still running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait on child") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("worker did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Wraps a child started elsewhere (another subcommand, e.g. `gateway`), whose
    /// output the caller directed: no log file.
    pub fn adopt(child: Child) -> Self {
        Self {
            child: Some(child),
            log: std::path::PathBuf::new(),
        }
    }

    /// Where the worker's log is written.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.log.clone()
    }

    /// Current resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    fn status_field(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }
}

/// The last `lines` lines of the log file at `path` (empty when unreadable).
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `/proc/<pid>/status` field in kB, e.g. `VmRSS:` or `VmHWM:`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("status has the field in kB")
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        if !self.log.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks (`/proc/<pid>/stat`
/// fields 14 and 15); `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is index 11.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The first process whose command name (`/proc/<pid>/comm`) is `comm`, e.g.
/// "beam.smp" for RabbitMQ or "redis-server"; `None` when there is none.
pub fn find_process(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
}

/// The whole machine's CPU time from `/proc/stat`, in clock ticks summed over all CPUs.
#[derive(Debug, Clone, Copy)]
pub struct SystemTicks {
    /// Ticks not idle (iowait counts as idle).
    pub busy: u64,
    /// All ticks.
    pub total: u64,
    /// Ticks the hypervisor gave another guest while this one wanted to run.
    pub steal: u64,
    /// Number of CPUs (`cpuN` lines): `total / cpus` ticks pass per CPU.
    pub cpus: u64,
}

/// Reads [`SystemTicks`] now.
pub fn system_ticks() -> SystemTicks {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat is readable");
    let mut lines = stat.lines();
    let cpu: Vec<u64> = lines
        .next()
        .expect("/proc/stat has the cpu line")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a tick count"))
        .collect();
    let cpus = lines.filter(|l| l.starts_with("cpu")).count() as u64;
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: u64 = cpu.iter().take(8).sum();
    SystemTicks {
        busy: total - cpu[3] - cpu[4],
        total,
        steal: cpu.get(7).copied().unwrap_or(0),
        cpus,
    }
}
