//! What trackgate's process used during a case: CPU (from /proc/<pid>/stat, in cores) and its
//! resident memory (VmRSS before, VmHWM peak, from /proc/<pid>/status).

pub use crate::report::Used;
use std::time::{Duration, Instant};

pub struct Usage {
    pid: u32,
    cpu_s: f64,
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
            rss_idle_mb: status_mb(pid, "VmRSS:"),
            t: Instant::now(),
        }
    }

    pub fn finish(self) -> Used {
        let wall = self.t.elapsed().max(Duration::from_millis(1)).as_secs_f64();
        Used {
            cores: (cpu_seconds(self.pid) - self.cpu_s) / wall,
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
            "trackgate CPU {:.2} cores, RSS idle {:.0} MB, peak {:.0} MB",
            self.cores, self.rss_idle_mb, self.rss_peak_mb
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
