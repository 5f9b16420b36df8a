//! What a run saw, as the devices saw it: records sent and how trackgate answered them, per fault
//! kind too, and the latency from send to HTTP 200 or PUBACK. Shared by the transports; read
//! every second for the live progress line and at the end for the summary.

use crate::fleet::{Fault, Out};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The final summary (printed as text, or as JSON with `--json`).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub mode: String,
    pub devices: usize,
    pub records_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Records refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Requests answered with another status than 200, by status (or "error").
    pub failed_requests: BTreeMap<String, u64>,
    pub requests: u64,
    /// MQTT connections made by devices taking turns (`--connections` below the fleet size).
    pub sessions: u64,
    pub seconds: f64,
    /// Records acknowledged (accepted or duplicate) per second.
    pub records_per_second: f64,
    pub target_rate: Option<f64>,
    /// From send to HTTP 200 or PUBACK.
    pub latency_ms: Latency,
    /// Faults injected, and how trackgate answered each.
    pub faults: BTreeMap<&'static str, FaultTally>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles of latencies in milliseconds.
    pub fn of(l: &mut [f64]) -> Latency {
        l.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        Latency {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: l.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FaultTally {
    pub sent: u64,
    /// Over HTTPS, each faulty record's own answer: a rejection reason, `acknowledged`
    /// (accepted or duplicate), or `http_<status>` for a refused request. Over MQTT the answers
    /// come back on the rejections topic without saying which message they are about: see the
    /// run's `rejected`.
    pub answers: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    s: Summary,
    latencies: Vec<f64>,
}

#[derive(Clone)]
pub struct Tally {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

impl Tally {
    pub fn new(mode: &str, devices: usize, target_rate: Option<f64>) -> Tally {
        let mut inner = Inner::default();
        inner.s.mode = mode.to_owned();
        inner.s.devices = devices;
        inner.s.target_rate = target_rate;
        Tally {
            inner: Arc::new(Mutex::new(inner)),
            started: Instant::now(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("tally lock"))
    }

    /// Records about to go out (counted when sent, whatever the answer).
    pub fn sent(&self, outs: &[Out]) {
        self.with(|i| {
            i.s.records_sent += outs.len() as u64;
            for f in outs.iter().filter_map(|o| o.fault) {
                i.s.faults.entry(f.name()).or_default().sent += 1;
            }
        });
    }

    /// A request-level fault (a stale HTTPS request) was injected.
    pub fn request_fault(&self, f: Fault) {
        self.with(|i| i.s.faults.entry(f.name()).or_default().sent += 1);
    }

    /// An HTTPS 200: per-record answers (`rejected` pairs index and reason).
    pub fn answered(&self, outs: &[Out], accepted: u64, duplicates: u64, rejected: &[(usize, String)], ms: f64) {
        self.with(|i| {
            i.s.requests += 1;
            i.s.accepted += accepted;
            i.s.duplicates += duplicates;
            i.latencies.push(ms);
            let mut reasons: Vec<Option<&str>> = vec![None; outs.len()];
            for (idx, reason) in rejected {
                *i.s.rejected.entry(reason.clone()).or_default() += 1;
                if let Some(r) = reasons.get_mut(*idx) {
                    *r = Some(reason);
                }
            }
            for (o, r) in outs.iter().zip(reasons) {
                if let Some(f) = o.fault {
                    let answer = r.unwrap_or("acknowledged").to_owned();
                    *i.s.faults
                        .entry(f.name())
                        .or_default()
                        .answers
                        .entry(answer)
                        .or_default() += 1;
                }
            }
        });
    }

    /// A request refused as a whole (`status`, or "error" without one); `fault` if injected.
    pub fn refused(&self, outs: &[Out], status: String, fault: Option<Fault>, ms: f64) {
        self.with(|i| {
            i.s.requests += 1;
            i.latencies.push(ms);
            let answer = format!("http_{status}");
            *i.s.failed_requests.entry(status).or_default() += 1;
            let faults = outs.iter().filter_map(|o| o.fault).chain(fault);
            for f in faults {
                *i.s.faults
                    .entry(f.name())
                    .or_default()
                    .answers
                    .entry(answer.clone())
                    .or_default() += 1;
            }
        });
    }

    /// An MQTT PUBACK for one message.
    pub fn puback(&self, records: u64, ms: f64) {
        self.with(|i| {
            i.s.requests += 1;
            i.s.accepted += records;
            i.latencies.push(ms);
        });
    }

    /// A device connected for one more session.
    pub fn session(&self) {
        self.with(|i| i.s.sessions += 1);
    }

    /// Rejections published back on a device's rejections topic.
    pub fn mqtt_rejections(&self, reasons: impl IntoIterator<Item = String>) {
        self.with(|i| {
            for r in reasons {
                i.s.accepted = i.s.accepted.saturating_sub(1);
                *i.s.rejected.entry(r).or_default() += 1;
            }
        });
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One line of live progress: totals, the rate over the last interval, p99 latency of the
    /// answers since `since` (the latency count returned by the previous call).
    pub fn progress(&self, last_acked: &mut u64, since: &mut usize, interval_s: f64) -> String {
        self.with(|i| {
            let acked = i.s.accepted + i.s.duplicates;
            let rate = (acked - (*last_acked).min(acked)) as f64 / interval_s.max(1e-9);
            *last_acked = acked;
            let mut recent: Vec<f64> = i.latencies[(*since).min(i.latencies.len())..].to_vec();
            *since = i.latencies.len();
            let p99 = Latency::of(&mut recent).p99;
            let rejected: u64 = i.s.rejected.values().sum();
            let failed: u64 = i.s.failed_requests.values().sum();
            format!(
                "{:6.1} s  sent {:>9}  acked {:>9} ({:>7.0}/s)  rejected {:>6}  failed requests {:>4}  p99 {:>6.1} ms",
                self.elapsed_s(),
                i.s.records_sent,
                acked,
                rate,
                rejected,
                failed,
                p99
            )
        })
    }

    /// The summary; latencies are summarised and the rate computed over `seconds`.
    pub fn finish(self, seconds: f64) -> Summary {
        self.with(|i| {
            let mut s = std::mem::take(&mut i.s);
            s.seconds = seconds;
            s.records_per_second = (s.accepted + s.duplicates) as f64 / seconds.max(1e-9);
            s.latency_ms = Latency::of(&mut i.latencies);
            s
        })
    }
}

impl Summary {
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} devices over {}: sent {} records in {} requests over {:.2} s: {} accepted, {} duplicates, \
             rejected {:?}, failed requests {:?}; {:.0} records/s acknowledged; latency ms p50 {:.1} p90 {:.1} \
             p99 {:.1} max {:.1}",
            self.devices,
            self.mode,
            self.records_sent,
            self.requests,
            self.seconds,
            self.accepted,
            self.duplicates,
            self.rejected,
            self.failed_requests,
            self.records_per_second,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max
        );
        if self.sessions > 0 {
            t.push_str(&format!("; {} MQTT sessions", self.sessions));
        }
        for (name, f) in &self.faults {
            t.push_str(&format!("\nfault {name}: sent {}, answered {:?}", f.sent, f.answers));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(fault: Option<Fault>) -> Out {
        Out {
            device: 0,
            envelope: String::new(),
            fault,
        }
    }

    #[test]
    fn faulty_records_are_matched_to_their_answers() {
        let t = Tally::new("supplier", 1, None);
        let outs = [out(None), out(Some(Fault::BadSignature)), out(Some(Fault::Replay))];
        t.sent(&outs);
        t.answered(&outs, 1, 1, &[(1, "bad_signature".into())], 3.0);
        t.refused(&[out(None)], "401".into(), Some(Fault::Stale), 1.0);
        t.request_fault(Fault::Stale);
        let s = t.finish(1.0);
        assert_eq!(s.records_sent, 3);
        assert_eq!((s.accepted, s.duplicates), (1, 1));
        assert_eq!(s.rejected["bad_signature"], 1);
        assert_eq!(s.faults["bad-signature"].answers["bad_signature"], 1);
        assert_eq!(s.faults["replay"].answers["acknowledged"], 1);
        assert_eq!(s.faults["stale"].sent, 1);
        assert_eq!(s.faults["stale"].answers["http_401"], 1);
        assert_eq!(s.failed_requests["401"], 1);
        assert_eq!(s.latency_ms.max, 3.0);
    }

    #[test]
    fn percentiles() {
        let mut l: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Latency::of(&mut l);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Latency::of(&mut []).p99, 0.0);
    }
}
