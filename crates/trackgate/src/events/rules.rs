//! Events from what was stored: the rules that turn one device's records, taken in `(ts, seq)`
//! order, into the events operators act on. A device's [`DeviceState`] and its next record go
//! in, the record's events come out; the state is plain data (serde), so whoever feeds the rules
//! can keep it beside a cursor and pick up after a restart exactly where it stopped.
//!
//! - **Geofences**: `enter` when a fix is inside a geofence by at least the margin, `exit` when
//!   one is outside by at least the margin; a fix within the margin of the border changes nothing,
//!   so GPS noise along a fence does not flap. A device's first fix inside a geofence enters it.
//! - **Jumps**: a fix that implies a speed above `max_speed_mps` from the last accepted fix is a
//!   `jump`: marked, and it moves the device across no geofence. If the next fix agrees with the
//!   jumped one (a plausible speed between them), the device really was moved: that fix is
//!   accepted and geofences follow it.
//! - **Battery** and **temperature**: `battery_low` when the battery falls below its threshold,
//!   `temperature_out` when the temperature leaves its range; each fires once per episode and
//!   re-arms only when the value is back past a margin (so a value hovering at the threshold does
//!   not repeat the alert).
//! - **Stale**: `stale` once when a device's newest record is older than the organization's limit
//!   ([`DeviceState::check_stale`], called on a clock); any newer record re-arms it.
//!
//! A record at or before the last one a state has taken is ignored: feeding the same records
//! again (a redelivery, a restart that replays) gives no event twice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use trackgate_store::geofence::{Shape, distance_m};

/// The limits events are measured against (per organization, order group or shipment).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// How far from a geofence's border a fix must be to count as inside or outside, metres.
    pub geofence_margin_m: f64,
    /// Above this speed between two fixes, metres per second, the second is a jump.
    pub max_speed_mps: f64,
    /// `battery_low` below this (the record's `bat`, per cent); re-armed at `+ battery_rearm`.
    pub battery_low: Option<f64>,
    pub battery_rearm: f64,
    /// `temperature_out` outside `[min, max]` (°C); re-armed within `[min + m, max - m]`.
    pub temperature: Option<(f64, f64)>,
    pub temperature_rearm: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            geofence_margin_m: 25.0,
            // 300 m/s: faster than any freight, air included.
            max_speed_mps: 300.0,
            battery_low: None,
            battery_rearm: 5.0,
            temperature: None,
            temperature_rearm: 0.5,
        }
    }
}

/// A geofence as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    pub id: String,
    pub shape: Shape,
}

/// What the rules read of a stored record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    pub ts: i64,
    pub seq: i64,
    /// `[lon, lat]`, if the record has a position.
    pub position: Option<[f64; 2]>,
    pub bat: Option<f64>,
    pub tmp: Option<f64>,
}

/// An event, with what it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Enter { geofence: String },
    Exit { geofence: String },
    Jump { speed_mps: f64 },
    BatteryLow { bat: f64 },
    TemperatureOut { tmp: f64 },
    Stale { silent_ms: i64 },
}

impl Event {
    /// The kind, as stored and counted.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Enter { .. } => "enter",
            Event::Exit { .. } => "exit",
            Event::Jump { .. } => "jump",
            Event::BatteryLow { .. } => "battery_low",
            Event::TemperatureOut { .. } => "temperature_out",
            Event::Stale { .. } => "stale",
        }
    }

    /// What the event is about beside its device: a geofence's id, or nothing.
    pub fn subject(&self) -> &str {
        match self {
            Event::Enter { geofence } | Event::Exit { geofence } => geofence,
            _ => "",
        }
    }
}

/// Every kind of event.
pub const KINDS: [&str; 6] = ["enter", "exit", "jump", "battery_low", "temperature_out", "stale"];

/// A fix: where and when.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct At {
    ts: i64,
    lon: f64,
    lat: f64,
}

impl At {
    fn speed_to(&self, other: &At) -> f64 {
        let d = distance_m([self.lon, self.lat], [other.lon, other.lat]);
        let secs = (other.ts - self.ts) as f64 / 1000.0;
        if secs > 0.0 {
            d / secs
        } else if d > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }
}

/// What the rules remember of one device between records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceState {
    /// The last record taken, `(ts, seq)`.
    last: Option<(i64, i64)>,
    /// The last accepted fix, and a jumped fix waiting for the next to confirm it.
    fix: Option<At>,
    jumped: Option<At>,
    /// The geofences the device is inside.
    inside: BTreeSet<String>,
    battery_low: bool,
    temperature_out: bool,
    stale: bool,
}

impl DeviceState {
    /// A state whose records up to `(ts, seq)` are taken (a cursor made before the state was
    /// kept starts empty there).
    pub fn resume(mut self, last: (i64, i64)) -> DeviceState {
        self.last = Some(self.last.map_or(last, |l| l.max(last)));
        self
    }

    /// The last record taken, `(ts, seq)`.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.last
    }

    /// Was the device's silence reported, with no record since?
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The events of the device's next record.
    pub fn step(&mut self, rules: &Rules, fences: &[Fence], r: &Record) -> Vec<Event> {
        if self.last.is_some_and(|last| (r.ts, r.seq) <= last) {
            return Vec::new();
        }
        self.last = Some((r.ts, r.seq));
        self.stale = false;
        let mut events = Vec::new();
        if let Some([lon, lat]) = r.position {
            self.fix(rules, fences, At { ts: r.ts, lon, lat }, &mut events);
        }
        if let (Some(bat), Some(low)) = (r.bat, rules.battery_low) {
            if !self.battery_low && bat < low {
                self.battery_low = true;
                events.push(Event::BatteryLow { bat });
            } else if self.battery_low && bat >= low + rules.battery_rearm {
                self.battery_low = false;
            }
        }
        if let (Some(tmp), Some((min, max))) = (r.tmp, rules.temperature) {
            if !self.temperature_out && !(min..=max).contains(&tmp) {
                self.temperature_out = true;
                events.push(Event::TemperatureOut { tmp });
            } else if self.temperature_out
                && (min + rules.temperature_rearm..=max - rules.temperature_rearm).contains(&tmp)
            {
                self.temperature_out = false;
            }
        }
        events
    }

    fn fix(&mut self, rules: &Rules, fences: &[Fence], at: At, events: &mut Vec<Event>) {
        if let Some(prev) = self.fix {
            let speed = prev.speed_to(&at);
            let confirmed = self.jumped.is_some_and(|j| j.speed_to(&at) <= rules.max_speed_mps);
            if speed > rules.max_speed_mps && !confirmed {
                self.jumped = Some(at);
                events.push(Event::Jump { speed_mps: speed });
                return;
            }
        }
        self.fix = Some(at);
        self.jumped = None;
        for f in fences {
            match f.shape.side([at.lon, at.lat], rules.geofence_margin_m) {
                Some(true) if self.inside.insert(f.id.clone()) => events.push(Event::Enter { geofence: f.id.clone() }),
                Some(false) if self.inside.remove(&f.id) => events.push(Event::Exit { geofence: f.id.clone() }),
                _ => {}
            }
        }
        // A geofence that no longer exists is left without an event.
        self.inside.retain(|id| fences.iter().any(|f| &f.id == id));
    }

    /// `stale` once, if the newest record is more than `after_ms` older than `now`.
    pub fn check_stale(&mut self, now: i64, after_ms: i64) -> Option<Event> {
        let (ts, _) = self.last?;
        if self.stale || now - ts <= after_ms {
            return None;
        }
        self.stale = true;
        Some(Event::Stale { silent_ms: now - ts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use trackgate_store::geofence::Area;

    /// Two depots 10 km apart on a line of latitude near Hamburg, each about 660 m square.
    fn depots() -> Vec<Fence> {
        let square = |lon: f64| {
            let json = format!(
                r#"{{"geometry": {{"type": "Polygon", "coordinates": [[[{lon}, 53.5], [{e}, 53.5], [{e}, 53.506], [{lon}, 53.506], [{lon}, 53.5]]]}}}}"#,
                e = lon + 0.01
            );
            serde_json::from_str::<Area>(&json).unwrap().checked().unwrap().shape()
        };
        vec![
            Fence {
                id: "a".into(),
                shape: square(10.0),
            },
            Fence {
                id: "b".into(),
                shape: square(10.15),
            },
        ]
    }

    fn fix(ts_s: i64, lon: f64, lat: f64) -> Record {
        Record {
            ts: ts_s * 1000,
            seq: ts_s,
            position: Some([lon, lat]),
            bat: None,
            tmp: None,
        }
    }

    /// From inside depot a to inside depot b, a fix every 10 s.
    fn trip() -> Vec<Record> {
        // 0.00025° of longitude at 53.5° N is about 17 m.
        (0..=600)
            .map(|i| fix(i * 10, 10.005 + i as f64 * 0.00025, 53.503))
            .collect()
    }

    fn run(state: &mut DeviceState, rules: &Rules, records: &[Record]) -> Vec<(i64, Event)> {
        records
            .iter()
            .flat_map(|r| state.step(rules, &depots(), r).into_iter().map(move |e| (r.seq, e)))
            .collect()
    }

    fn kinds(events: &[(i64, Event)]) -> Vec<String> {
        events
            .iter()
            .map(|(_, e)| match e {
                Event::Enter { geofence } => format!("enter {geofence}"),
                Event::Exit { geofence } => format!("exit {geofence}"),
                other => serde_json::to_value(other).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_trip_between_two_depots_leaves_one_and_enters_the_other() {
        let events = run(&mut DeviceState::default(), &Rules::default(), &trip());
        assert_eq!(kinds(&events), ["enter a", "exit a", "enter b"]);
    }

    #[test]
    fn the_same_records_again_give_no_event_twice() {
        let mut state = DeviceState::default();
        let first = run(&mut state, &Rules::default(), &trip());
        assert_eq!(first.len(), 3);
        assert!(run(&mut state, &Rules::default(), &trip()).is_empty());
        assert!(run(&mut state, &Rules::default(), &trip()[100..200]).is_empty());
    }

    #[test]
    fn noise_along_the_border_does_not_flap() {
        // The east border of depot a is at 10.01; 0.00015° is about 10 m either side of it.
        // First 33 m inside, then 10 m either side of the border, a fix a second.
        let mut records = vec![fix(0, 10.0095, 53.503)];
        records.extend((1..100).map(|i| fix(i, if i % 2 == 0 { 10.00985 } else { 10.01015 }, 53.503)));
        let events = run(&mut DeviceState::default(), &Rules::default(), &records);
        assert_eq!(kinds(&events), ["enter a"]);
    }

    #[test]
    fn a_jump_across_a_border_enters_nothing_and_a_confirmed_move_does() {
        let rules = Rules::default();
        // Far outside both depots, then one fix inside b 10 s later (about 7 km away: 690 m/s),
        // then back where it was.
        let outside = |t| fix(t, 10.1, 53.45);
        let records = [outside(0), fix(10, 10.155, 53.503), outside(20), outside(30)];
        let events = run(&mut DeviceState::default(), &rules, &records);
        assert_eq!(kinds(&events), ["jump"]);
        // Moved for real: the next fix agrees with the jumped one, so it is taken.
        let records = [outside(0), fix(10, 10.155, 53.503), fix(20, 10.1551, 53.503)];
        let events = run(&mut DeviceState::default(), &rules, &records);
        assert_eq!(kinds(&events), ["jump", "enter b"]);
        assert_eq!(events[1].0, 20, "entered with the confirming fix");
    }

    #[test]
    fn battery_and_temperature_fire_once_per_episode_and_rearm() {
        let rules = Rules {
            battery_low: Some(20.0),
            temperature: Some((2.0, 8.0)),
            ..Rules::default()
        };
        let r = |t: i64, bat: f64, tmp: f64| Record {
            ts: t,
            seq: t,
            position: None,
            bat: Some(bat),
            tmp: Some(tmp),
        };
        let records = [
            r(1, 50.0, 5.0),
            r(2, 19.0, 8.5), // both fire
            r(3, 18.0, 9.0), // still the same episodes
            r(4, 22.0, 7.8), // recovered, but within the margins: not re-armed
            r(5, 19.5, 8.2), // so no new alert
            r(6, 26.0, 7.0), // re-armed
            r(7, 19.0, 1.0), // a second episode of each
        ];
        let events = run(&mut DeviceState::default(), &rules, &records);
        assert_eq!(
            events,
            [
                (2, Event::BatteryLow { bat: 19.0 }),
                (2, Event::TemperatureOut { tmp: 8.5 }),
                (7, Event::BatteryLow { bat: 19.0 }),
                (7, Event::TemperatureOut { tmp: 1.0 }),
            ]
        );
    }

    #[test]
    fn stale_fires_once_and_rearms_with_the_next_record() {
        let mut state = DeviceState::default();
        assert_eq!(state.check_stale(1_000_000, 60_000), None, "no record yet");
        state.step(&Rules::default(), &[], &fix(100, 10.0, 53.0));
        assert_eq!(state.check_stale(150_000, 60_000), None);
        assert_eq!(
            state.check_stale(170_000, 60_000),
            Some(Event::Stale { silent_ms: 70_000 })
        );
        assert_eq!(state.check_stale(500_000, 60_000), None, "once per episode");
        state.step(&Rules::default(), &[], &fix(600, 10.0, 53.0));
        assert_eq!(
            state.check_stale(700_000, 60_000),
            Some(Event::Stale { silent_ms: 100_000 })
        );
    }

    proptest! {
        /// A restart anywhere (the state saved as JSON and read back between any two records)
        /// gives exactly the events of one uninterrupted run.
        #[test]
        fn a_restart_anywhere_changes_no_event(cuts in proptest::collection::btree_set(0usize..601, 0..6)) {
            let records = trip();
            let rules = Rules::default();
            let whole = run(&mut DeviceState::default(), &rules, &records);
            let mut state = DeviceState::default();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([records.len()]) {
                pieces.extend(run(&mut state, &rules, &records[start..cut]));
                state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
                start = cut;
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}
