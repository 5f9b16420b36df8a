//! What trackgate's process used during a case: CPU (from /proc/<pid>/stat, in cores) and its
//! resident memory (VmRSS before, VmHWM peak, from /proc/<pid>/status).

pub use crate::report::Used;
use std::time::{Duration, Instant};

pub struct Usage {
    pid: u32,
    cpu_s: f64,
    machine_busy_s: f64,
    rss_idle_mb: f64,
    t: Instant,
}

fn ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / ticks_per_s()
}

/// CPU seconds the whole machine has been busy (all cores; not idle, not waiting for I/O).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle) / ticks_per_s()
}

fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Usage {
    pub fn start(pid: u32) -> Usage {
        Usage {
            pid,
            cpu_s: cpu_seconds(pid),
            machine_busy_s: machine_busy_seconds(),
            rss_idle_mb: status_mb(pid, "VmRSS:"),
            t: Instant::now(),
        }
    }

    pub fn finish(self) -> Used {
        let wall = self.t.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        Used {
            cores: (cpu_seconds(self.pid) - self.cpu_s) / wall,
            machine_cores: (machine_busy_seconds() - self.machine_busy_s) / wall,
            rss_idle_mb: self.rss_idle_mb,
            rss_peak_mb: status_mb(self.pid, "VmHWM:"),
        }
    }
}

/// "trackgate CPU x.xx cores, RSS idle a MB, peak b MB".
impl std::fmt::Display for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trackgate CPU {:.2} cores (machine {:.2} busy), RSS idle {:.0} MB, peak {:.0} MB",
            self.cores, self.machine_cores, self.rss_idle_mb, self.rss_peak_mb
        )
    }
}

pub fn rate(records: u64, t: Duration) -> String {
    format!(
        "{:>7.0} records/s ({records} in {:.2} s)",
        records as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    )
}

/// The writer's share of a case, from trackgate's own metrics: how much of the wall time it spent
/// inside commits, and how many rows a commit held.
pub struct WriterShare {
    commit_s: f64,
    commits: f64,
    rows: f64,
}

/// The commit histogram's `_sum` or `_count`, whichever backend the server runs on.
async fn commit_metric(server: &trackgate_e2e::Server, part: &str) -> f64 {
    let page = server.metrics().await;
    let name = format!("trackgate_commit_duration_seconds_{part}{{");
    page.lines()
        .filter(|l| l.starts_with(&name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl WriterShare {
    pub async fn start(server: &trackgate_e2e::Server) -> WriterShare {
        WriterShare {
            commit_s: commit_metric(server, "sum").await,
            commits: commit_metric(server, "count").await,
            rows: server.metric("trackgate_batch_rows_sum").await,
        }
    }

    /// "writer in a commit x % of the time, y rows per commit"
    pub async fn finish(self, server: &trackgate_e2e::Server, wall: Duration) -> String {
        let commit_s = commit_metric(server, "sum").await - self.commit_s;
        let commits = commit_metric(server, "count").await - self.commits;
        let rows = server.metric("trackgate_batch_rows_sum").await - self.rows;
        format!(
            "writer in a commit {:.0} % of the time, {:.0} rows and {:.1} ms per commit",
            100.0 * commit_s / wall.as_secs_f64().max(1e-9),
            rows / commits.max(1.0),
            1000.0 * commit_s / commits.max(1.0)
        )
    }
}
