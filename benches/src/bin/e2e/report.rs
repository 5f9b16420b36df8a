//! The run's figures, gathered as the cases print them, and written out as one Markdown section
//! of `benches/RESULTS.md`: the machine, the versions, the command, and a table per transport.
//! `--record FILE` puts the section at the top of FILE's history (below its header paragraph),
//! so earlier runs stay below it.

use std::fmt::Write as _;
use std::sync::Mutex;
pub use trackgate_benches::results::record;
use trackgate_benches::results::{commit, first_line, machine};

/// What trackgate's process used during a case (see `proc`).
#[derive(Debug, Clone, Copy)]
pub struct Used {
    /// trackgate's own CPU, in cores.
    pub cores: f64,
    /// The whole machine's busy CPU (every process, kernel included), in cores.
    pub machine_cores: f64,
    pub rss_idle_mb: f64,
    pub rss_peak_mb: f64,
}

/// Acknowledgement latency as the devices saw it, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub section: &'static str,
    pub case: String,
    pub records_per_s: f64,
    pub latency: Option<Latency>,
    /// What trackgate and the machine used; without latency where the load was not firmware-sim.
    pub used: Option<Used>,
    /// The ratio to this section's baseline, and what the baseline is.
    pub ratio: Option<f64>,
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

fn lines() -> std::sync::MutexGuard<'static, Vec<Line>> {
    LINES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keep a line of the table; returns its place, for [`ratio`].
pub fn add(section: &'static str, case: impl Into<String>, records_per_s: f64) -> usize {
    let mut l = lines();
    l.push(Line {
        section,
        case: case.into(),
        records_per_s,
        latency: None,
        used: None,
        ratio: None,
    });
    l.len() - 1
}

pub fn measured(at: usize, latency: Latency, used: Used) {
    if let Some(line) = lines().get_mut(at) {
        line.latency = Some(latency);
        line.used = Some(used);
    }
}

pub fn used(at: usize, used: Used) {
    if let Some(line) = lines().get_mut(at) {
        line.used = Some(used);
    }
}

pub fn ratio(at: usize, ratio: f64) {
    if let Some(line) = lines().get_mut(at) {
        line.ratio = Some(ratio);
    }
}

/// The section for this run.
pub fn markdown(command: &str, databases: &str) -> String {
    let mut s = String::new();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let commit = commit();
    let _ = writeln!(s, "## {date}: end to end, written by the harness (`{command}`)\n");
    let _ = writeln!(s, "- **Machine**: {}; everything shares it.", machine());
    let _ = writeln!(
        s,
        "- **Software**: trackgate at commit {commit}, release profile; {}; {databases}; {}.",
        first_line("rustc", &["--version"]).unwrap_or_else(|| "rustc unknown".into()),
        first_line("mosquitto", &["-h"]).unwrap_or_else(|| "mosquitto unknown".into()),
    );
    let _ = writeln!(
        s,
        "- **Conditions**: loopback, TLS everywhere, trackgate with its defaults (SQLite \
         `synchronous=FULL`, or PostgreSQL on this machine over TLS with its defaults) and HTTP rate \
         limiting off. Committed records/s runs from the first \
         send to the last row in the database. Latency is the device's, from send to HTTP 200 or \
         PUBACK. trackgate's CPU and RSS are its own, and the machine's CPU is every process's and the \
         kernel's, all in cores (of the machine's total) from `/proc`."
    );
    let all = lines().clone();
    for section in ["HTTPS", "MQTT", "PostgreSQL"] {
        let rows: Vec<&Line> = all.iter().filter(|l| l.section == section).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n### {section}\n");
        let _ = writeln!(
            s,
            "| case | committed records/s | ack latency p50 / p90 / p99 / max (ms) | trackgate CPU | machine CPU busy | RSS idle / peak | ratio to baseline |"
        );
        let _ = writeln!(s, "| --- | ---: | --- | ---: | ---: | --- | ---: |");
        for l in rows {
            let latency = l.latency.map_or(String::new(), |x| {
                format!("{:.0} / {:.0} / {:.0} / {:.0}", x.p50, x.p90, x.p99, x.max)
            });
            let (cpu, machine, rss) = l.used.map_or((String::new(), String::new(), String::new()), |u| {
                (
                    format!("{:.2} cores", u.cores),
                    format!("{:.2} cores", u.machine_cores),
                    format!("{:.0} / {:.0} MB", u.rss_idle_mb, u.rss_peak_mb),
                )
            });
            let ratio = l.ratio.map_or(String::new(), |r| format!("{r:.2}"));
            let _ = writeln!(
                s,
                "| {} | {:.1} k | {latency} | {cpu} | {machine} | {rss} | {ratio} |",
                l.case,
                l.records_per_s / 1000.0
            );
        }
    }
    s
}
