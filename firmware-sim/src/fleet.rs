//! The virtual trackers: each makes signed records from its [`Trip`], with its own clock skew,
//! goes offline now and then (buffering what it measures and uploading it later as a backlog,
//! behind its live records), and on demand sends faulty records: a bad signature, a replay, a
//! malformed record, a stale request, a wrong topic.

use crate::motion::{Rng, Trip};
use crate::roster::Member;
use serde::Serialize;
use std::collections::BTreeMap;
use trackgate_proto::{Secret, sign};

/// A fault the simulator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The record's signature does not match its bytes.
    BadSignature,
    /// A record already sent, sent again (same `seq`, same bytes).
    Replay,
    /// A record without `dev`: `malformed`.
    Malformed,
    /// A request (HTTPS) or record (MQTT) timestamped long ago.
    Stale,
    /// A record published under another device's topic (MQTT).
    WrongTopic,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::BadSignature,
        Fault::Replay,
        Fault::Malformed,
        Fault::Stale,
        Fault::WrongTopic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::BadSignature => "bad-signature",
            Fault::Replay => "replay",
            Fault::Malformed => "malformed",
            Fault::Stale => "stale",
            Fault::WrongTopic => "wrong-topic",
        }
    }
}

/// Fractions of records (or requests, for `stale` over HTTPS) that carry each fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults(pub BTreeMap<Fault, f64>);

impl std::str::FromStr for Faults {
    type Err = String;

    /// `bad-signature=0.01,replay=0.02`.
    fn from_str(s: &str) -> Result<Faults, String> {
        let mut out = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, frac) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=FRACTION"))?;
            let fault = Fault::ALL
                .into_iter()
                .find(|f| f.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown fault {name:?}; known: {}", names.join(", "))
                })?;
            let frac: f64 = frac
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the fraction must be a number"))?;
            if !(0.0..=1.0).contains(&frac) {
                return Err(format!("{part:?}: the fraction must be between 0 and 1"));
            }
            out.insert(fault, frac);
        }
        if out.values().sum::<f64>() > 1.0 {
            return Err("the fault fractions add up to more than 1".into());
        }
        Ok(Faults(out))
    }
}

impl Faults {
    /// Draw the fault for one record, among the `allowed` ones (over HTTPS `stale` is drawn per
    /// request instead, and `wrong-topic` does not exist).
    pub fn draw(&self, rng: &mut Rng, allowed: &[Fault]) -> Option<Fault> {
        let mut x = rng.unit();
        for (f, p) in &self.0 {
            if !allowed.contains(f) {
                continue;
            }
            if x < *p {
                return Some(*f);
            }
            x -= p;
        }
        None
    }

    pub fn fraction(&self, f: Fault) -> f64 {
        self.0.get(&f).copied().unwrap_or(0.0)
    }
}

/// One record ready to send: its envelope and the fault it carries, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub device: usize,
    pub envelope: String,
    pub fault: Option<Fault>,
}

/// How the fleet behaves beyond its trips.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Simulated seconds per real second: shipments move visibly on a map at 60 and above.
    pub time_scale: f64,
    /// Share of a device's time spent offline (buffering), 0 to 0.9.
    pub offline: f64,
    pub faults: Faults,
    /// Faults that apply per record on this transport.
    pub record_faults: Vec<Fault>,
}

pub struct Tracker {
    pub member: Member,
    secret: Secret,
    seed: u64,
    trip: Trip,
    /// This device's clock error, ms (most within a couple of seconds, a few by minutes).
    pub skew_ms: i64,
    pub seq: u64,
    rng: Rng,
    offline_left: u32,
    backlog: Vec<Out>,
    /// Recent envelopes that were sent, for replays.
    recent: Vec<String>,
}

impl Tracker {
    pub fn new(member: Member, seq: u64) -> anyhow::Result<Tracker> {
        let secret = Secret::from_hex(&member.secret)?;
        let seed = Rng::seed_of(&member.id);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let skew_ms = if rng.unit() < 0.9 {
            rng.range(-2000.0, 2000.0)
        } else {
            rng.range(-240_000.0, 240_000.0)
        } as i64;
        Ok(Tracker {
            trip: Trip::new(seed),
            secret,
            seed,
            skew_ms,
            seq,
            rng: Rng::new(seed ^ seq.wrapping_mul(0x2545f4914f6cdd1d)),
            offline_left: 0,
            backlog: Vec::new(),
            recent: Vec::new(),
            member,
        })
    }

    /// The record text for the next `seq`, measured at real time `now_ms`.
    fn record(&self, now_ms: u64, b: &Behaviour) -> String {
        let sim_t = now_ms as f64 / 1000.0 * b.time_scale;
        let f = self.trip.fix(sim_t, self.seq, self.seed);
        let ts = (now_ms as i64 + self.skew_ms).max(0);
        let hdg = f.hdg.map(|h| format!(r#","hdg":{h:.1}"#)).unwrap_or_default();
        format!(
            r#"{{"dev":"{}","seq":{},"ts":{ts},"lat":{:.6},"lon":{:.6},"spd":{:.1}{hdg},"acc":{:.1},"bat":{:.1},"tmp":{:.2}}}"#,
            self.member.id, self.seq, f.lat, f.lon, f.spd, f.acc, f.bat, f.tmp
        )
    }

    /// One measurement at `now_ms`: what to send now. Usually one record; nothing while offline
    /// (it is buffered); the live record then the whole backlog when back online.
    pub fn tick(&mut self, index: usize, now_ms: u64, b: &Behaviour) -> Vec<Out> {
        let fault = b.faults.draw(&mut self.rng, &b.record_faults);
        let out = match fault {
            Some(Fault::Replay) if !self.recent.is_empty() => {
                let i = (self.rng.next_u64() % self.recent.len() as u64) as usize;
                Out {
                    device: index,
                    envelope: self.recent[i].clone(),
                    fault,
                }
            }
            _ => {
                let fault = fault.filter(|f| *f != Fault::Replay);
                let text = match fault {
                    // Well-formed JSON (so a batch around it still parses) without `dev`.
                    Some(Fault::Malformed) => format!(r#"{{"device":"{}","seq":{}}}"#, self.member.id, self.seq),
                    Some(Fault::Stale) => {
                        // Older than any retention: `ts_out_of_range`.
                        let mut r = self.record(now_ms, b);
                        let ts = format!(r#""ts":{}"#, (now_ms as i64 + self.skew_ms).max(0));
                        r = r.replace(&ts, r#""ts":1000"#);
                        r
                    }
                    _ => self.record(now_ms, b),
                };
                let mut envelope = sign::envelope(&self.secret, Some(&self.member.kid), &text);
                if fault == Some(Fault::BadSignature) {
                    envelope = corrupt_signature(&envelope);
                }
                self.seq += 1;
                if fault.is_none() {
                    self.recent.push(envelope.clone());
                    if self.recent.len() > 16 {
                        self.recent.remove(0);
                    }
                }
                Out {
                    device: index,
                    envelope,
                    fault,
                }
            }
        };
        if self.offline_left > 0 {
            self.offline_left -= 1;
            self.backlog.push(out);
            if self.offline_left == 0 {
                // Back online: the newest first, then everything buffered (older) behind it.
                let newest = self.backlog.pop().expect("just pushed");
                let mut all = vec![newest];
                all.append(&mut self.backlog);
                return all;
            }
            return Vec::new();
        }
        // Go offline now and then: periods of 5 to 30 measurements, often enough that the
        // share of time offline is `offline`.
        if b.offline > 0.0 {
            let mean = 17.5;
            let p = b.offline / (mean * (1.0 - b.offline.min(0.9)));
            if self.rng.unit() < p {
                self.offline_left = self.rng.range(5.0, 31.0) as u32;
            }
        }
        vec![out]
    }

    /// Records still buffered (a run that ends while a device is offline).
    #[cfg(test)]
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Back online for good: everything still buffered, oldest first.
    pub fn flush(&mut self) -> Vec<Out> {
        self.offline_left = 0;
        std::mem::take(&mut self.backlog)
    }
}

/// The same envelope with one hex digit of its signature changed.
fn corrupt_signature(envelope: &str) -> String {
    let key = "\"sig\":\"";
    let Some(at) = envelope.find(key) else {
        return envelope.to_owned();
    };
    let i = at + key.len();
    let mut bytes = envelope.as_bytes().to_vec();
    bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).expect("hex stays ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackgate_proto::envelope::{ActiveKey, Clock};
    use trackgate_proto::{DeviceView, Origin, Parsed};

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            kid: "k1".into(),
            secret: hex::encode([3u8; 32]),
        }
    }

    fn behaviour(faults: &str, offline: f64) -> Behaviour {
        Behaviour {
            time_scale: 60.0,
            offline,
            faults: faults.parse().unwrap(),
            record_faults: vec![Fault::BadSignature, Fault::Replay, Fault::Malformed, Fault::Stale],
        }
    }

    /// What trackgate would say about an envelope: Ok(seq) or the rejection reason.
    fn check(env: &str, now_ms: u64) -> Result<u64, String> {
        let keys = [ActiveKey {
            kid: "k1".into(),
            secret: Secret::from_bytes([3; 32]),
        }];
        let view = DeviceView {
            enabled: true,
            supplier: None,
            keys: &keys,
        };
        let clock = Clock {
            now_ms,
            retention_ms: 365 * 86_400_000,
        };
        let p = Parsed::parse(env).map_err(|e| e.as_str().to_owned())?;
        p.verify(Origin::Device("SIM-1"), Some(view), clock)
            .map(|v| v.record.seq)
            .map_err(|e| e.as_str().to_owned())
    }

    #[test]
    fn fault_lists_parse_and_are_checked() {
        let f: Faults = "bad-signature=0.01, replay=0.02".parse().unwrap();
        assert_eq!(f.fraction(Fault::Replay), 0.02);
        for bad in ["nope=0.1", "replay", "replay=2", "replay=x", "replay=0.6,stale=0.6"] {
            assert!(bad.parse::<Faults>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clean_records_verify_and_faults_are_refused_for_their_reason() {
        let now = 1_790_000_000_000;
        let mut t = Tracker::new(member("SIM-1"), 0).unwrap();
        let clean = behaviour("", 0.0);
        for i in 0..50 {
            let out = t.tick(0, now + i * 1000, &clean);
            assert_eq!(out.len(), 1);
            assert_eq!(check(&out[0].envelope, now + i * 1000), Ok(i));
        }
        for (fault, reason) in [
            ("bad-signature=1", "bad_signature"),
            ("malformed=1", "malformed"),
            ("stale=1", "ts_out_of_range"),
        ] {
            let out = t.tick(0, now, &behaviour(fault, 0.0));
            assert_eq!(check(&out[0].envelope, now), Err(reason.to_owned()), "{fault}");
        }
        let replay = t.tick(0, now, &behaviour("replay=1", 0.0));
        assert_eq!(replay[0].fault, Some(Fault::Replay));
        let seq = check(&replay[0].envelope, now).unwrap();
        assert!(seq < 50, "a replay repeats an earlier record: {seq}");
    }

    #[test]
    fn offline_devices_upload_their_backlog_behind_the_live_record() {
        let now = 1_790_000_000_000;
        let mut t = Tracker::new(member("SIM-1"), 100).unwrap();
        let b = behaviour("", 0.5);
        let (mut sent, mut backlogs, mut silent) = (Vec::new(), 0, 0);
        for i in 0..2000u64 {
            let out = t.tick(0, now + i * 1000, &b);
            if out.is_empty() {
                silent += 1;
            }
            if out.len() > 1 {
                backlogs += 1;
                let seqs: Vec<u64> = out
                    .iter()
                    .map(|o| check(&o.envelope, now + i * 1000).unwrap())
                    .collect();
                assert!(seqs[0] > seqs[1], "the live record leads its backlog: {seqs:?}");
                assert!(seqs[1..].windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            }
            sent.extend(out.iter().map(|o| check(&o.envelope, now + i * 1000).unwrap()));
        }
        assert!(backlogs > 10, "{backlogs}");
        let buffered = t.backlog_len() as u64;
        // Every seq from 100 on, once, except what is still buffered.
        sent.sort_unstable();
        assert_eq!(sent.len() as u64 + buffered, 2000);
        assert!(sent.windows(2).all(|w| w[0] < w[1]));
        // About half the time offline.
        assert!((600..=1400).contains(&silent), "{silent} of 2000 measurements offline");
    }

    #[test]
    fn clocks_are_skewed_but_within_what_trackgate_accepts() {
        let mut big = 0;
        for i in 0..200 {
            let t = Tracker::new(member(&format!("SIM-{i}")), 0).unwrap();
            assert!(t.skew_ms.abs() < 240_000, "{}", t.skew_ms);
            if t.skew_ms.abs() > 2000 {
                big += 1;
            }
        }
        assert!((5..=50).contains(&big), "{big} of 200 clocks off by more than 2 s");
    }
}
