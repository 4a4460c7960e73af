//! The CPUs this process may use, from the container's cgroup CPU quota: the default
//! of `model.threads`.

/// CPUs this process may use: the cgroup CPU quota (rounded up, at least 1) when one
/// is set, capped by the cores it may run on. A pod limited to 2 CPUs on a 64-core node
/// gets 2, not 64: more threads than quota only adds throttling.
pub fn available_cpus() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match cgroup_cpu_quota() {
        Some(q) => (q.ceil() as usize).clamp(1, cores),
        None => cores,
    }
}

/// The CPU quota of this process's cgroup in CPUs (v2 `cpu.max`, else v1
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us`), or `None` when unlimited or unknown.
pub fn cgroup_cpu_quota() -> Option<f64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    // The process's own cgroup; in a container that is usually the root of its view.
    let v2_dir = read("/proc/self/cgroup")
        .and_then(|s| parse_cgroup_v2_path(&s))
        .unwrap_or_default();
    for dir in [format!("/sys/fs/cgroup{v2_dir}"), "/sys/fs/cgroup".into()] {
        if let Some(max) = read(&format!("{}/cpu.max", dir.trim_end_matches('/'))) {
            return parse_cpu_max(&max);
        }
    }
    let quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?;
    let period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?;
    parse_cfs_quota(&quota, &period)
}

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::<path>` line).
fn parse_cgroup_v2_path(s: &str) -> Option<String> {
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
        .filter(|p| p != "/")
}

/// Parses cgroup v2 `cpu.max` (`"<quota> <period>"`, quota `max` = unlimited).
fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

/// Parses cgroup v1 CFS quota and period (`-1` quota = unlimited).
fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_quota_parsing() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_cfs_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(
            parse_cgroup_v2_path("0::/kubepods/pod1/ctr\n"),
            Some("/kubepods/pod1/ctr".into())
        );
        assert_eq!(parse_cgroup_v2_path("0::/\n"), None);
        assert_eq!(parse_cgroup_v2_path("4:cpu,cpuacct:/docker/x\n"), None);
        let cpus = available_cpus();
        assert!(cpus >= 1 && cpus <= std::thread::available_parallelism().unwrap().get());
    }
}
