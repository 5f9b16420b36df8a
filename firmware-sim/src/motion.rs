//! How a simulated shipment moves and what its sensors read: a round trip between European
//! depots and customer sites along great-circle legs at a truck's speed, a dwell at every stop,
//! GPS noise with the occasional jump, a draining battery and a temperature that follows the day.
//!
//! Everything is a pure function of the device's seed and the simulated time, so a restarted
//! simulator puts every device where it would have been.

use std::f64::consts::PI;

/// Depots and customer sites: (name, latitude, longitude).
pub const SITES: [(&str, f64, f64); 12] = [
    ("Hamburg", 53.5511, 9.9937),
    ("Rotterdam", 51.9244, 4.4777),
    ("Antwerp", 51.2194, 4.4025),
    ("Duisburg", 51.4344, 6.7623),
    ("Lyon", 45.7640, 4.8357),
    ("Milan", 45.4642, 9.1900),
    ("Munich", 48.1351, 11.5820),
    ("Poznan", 52.4064, 16.9252),
    ("Prague", 50.0755, 14.4378),
    ("Barcelona", 41.3874, 2.1686),
    ("Vienna", 48.2082, 16.3738),
    ("Gothenburg", 57.7089, 11.9746),
];

const EARTH_RADIUS_KM: f64 = 6371.0;
/// Stops on a device's round trip.
const STOPS: usize = 4;

/// A small deterministic generator (SplitMix64): reproducible per device and per fix.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from a device id (FNV-1a).
    pub fn seed_of(id: &str) -> u64 {
        id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }
}

fn rad(d: f64) -> f64 {
    d.to_radians()
}

/// Great-circle distance in km (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (rad(a.0), rad(a.1), rad(b.0), rad(b.1));
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

/// The point a fraction `f` of the way from `a` to `b` along the great circle (slerp).
pub fn along(a: (f64, f64), b: (f64, f64), f: f64) -> (f64, f64) {
    let d = distance_km(a, b) / EARTH_RADIUS_KM;
    if d < 1e-12 {
        return a;
    }
    let (la1, lo1, la2, lo2) = (rad(a.0), rad(a.1), rad(b.0), rad(b.1));
    let (wa, wb) = (((1.0 - f) * d).sin() / d.sin(), (f * d).sin() / d.sin());
    let x = wa * la1.cos() * lo1.cos() + wb * la2.cos() * lo2.cos();
    let y = wa * la1.cos() * lo1.sin() + wb * la2.cos() * lo2.sin();
    let z = wa * la1.sin() + wb * la2.sin();
    (z.atan2(x.hypot(y)).to_degrees(), y.atan2(x).to_degrees())
}

/// Initial bearing from `a` towards `b`, degrees in [0, 360).
pub fn bearing(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (rad(a.0), rad(a.1), rad(b.0), rad(b.1));
    let y = (lo2 - lo1).sin() * la2.cos();
    let x = la1.cos() * la2.sin() - la1.sin() * la2.cos() * (lo2 - lo1).cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// A device's round trip and its sensors' character, drawn once from its seed.
#[derive(Debug, Clone)]
pub struct Trip {
    stops: Vec<(f64, f64)>,
    pub speed_kmh: f64,
    /// Dwell at each stop, seconds.
    dwell_s: Vec<f64>,
    /// Typical horizontal accuracy, metres.
    pub accuracy_m: f64,
    /// Battery drain, percent per simulated day.
    drain_per_day: f64,
    /// The cargo's temperature around which the day swings, °C.
    base_temp: f64,
}

/// What a device reads at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// km/h over ground (0 while dwelling).
    pub spd: f64,
    /// Degrees; `None` while standing still.
    pub hdg: Option<f64>,
    /// Reported accuracy, metres.
    pub acc: f64,
    pub bat: f64,
    pub tmp: f64,
}

impl Trip {
    pub fn new(seed: u64) -> Trip {
        let mut r = Rng::new(seed);
        let mut stops = Vec::with_capacity(STOPS);
        let mut last = usize::MAX;
        while stops.len() < STOPS {
            let i = (r.next_u64() % SITES.len() as u64) as usize;
            if i == last || (stops.len() == STOPS - 1 && stops.first() == Some(&(SITES[i].1, SITES[i].2))) {
                continue;
            }
            last = i;
            stops.push((SITES[i].1, SITES[i].2));
        }
        Trip {
            speed_kmh: r.range(55.0, 85.0),
            dwell_s: (0..STOPS).map(|_| r.range(20.0, 120.0) * 60.0).collect(),
            accuracy_m: r.range(3.0, 12.0),
            drain_per_day: r.range(1.0, 3.0),
            base_temp: r.range(2.0, 20.0),
            stops,
        }
    }

    /// The stops of the round trip, in order: (latitude, longitude).
    pub fn stops(&self) -> &[(f64, f64)] {
        &self.stops
    }

    /// Seconds of one round trip: every leg driven and every dwell.
    pub fn cycle_s(&self) -> f64 {
        (0..self.stops.len()).map(|i| self.leg_s(i) + self.dwell_s[i]).sum()
    }

    fn leg_s(&self, i: usize) -> f64 {
        let (a, b) = (self.stops[i], self.stops[(i + 1) % self.stops.len()]);
        distance_km(a, b) / self.speed_kmh * 3600.0
    }

    /// Where the truck truly is at simulated second `t`, its speed and heading.
    pub fn truth(&self, t: f64) -> ((f64, f64), f64, Option<f64>) {
        let mut rem = t.rem_euclid(self.cycle_s());
        for i in 0..self.stops.len() {
            let (a, b) = (self.stops[i], self.stops[(i + 1) % self.stops.len()]);
            let leg = self.leg_s(i);
            if rem < leg {
                let p = along(a, b, rem / leg);
                return (p, self.speed_kmh, Some(bearing(p, b)));
            }
            rem -= leg;
            if rem < self.dwell_s[i] {
                return (b, 0.0, None);
            }
            rem -= self.dwell_s[i];
        }
        (self.stops[0], 0.0, None)
    }

    /// What the device reports at simulated second `t` for its fix number `n`: the truth with
    /// GPS noise (now and then a jump of a few km that the receiver still calls accurate), the
    /// battery drained by time and by transmissions, and the day's temperature swing.
    pub fn fix(&self, t: f64, n: u64, seed: u64) -> Fix {
        let ((lat, lon), spd, hdg) = self.truth(t);
        let mut r = Rng::new(seed ^ n.wrapping_mul(0x9e3779b97f4a7c15));
        let (north_m, east_m) = if r.unit() < 0.003 {
            let d = r.range(500.0, 3000.0);
            let a = r.range(0.0, 2.0 * PI);
            (d * a.cos(), d * a.sin())
        } else {
            let sigma = self.accuracy_m / 2.0;
            (r.normal() * sigma, r.normal() * sigma)
        };
        let lat = (lat + north_m / 111_320.0).clamp(-90.0, 90.0);
        let lon = lon + east_m / (111_320.0 * rad(lat).cos().max(1e-6));
        let lon = (lon + 180.0).rem_euclid(360.0) - 180.0;
        let days = t / 86_400.0;
        let bat = (100.0 - (self.drain_per_day * days.rem_euclid(30.0)) - n as f64 * 0.001).clamp(1.0, 100.0);
        let hour = (t / 3600.0).rem_euclid(24.0);
        let tmp = self.base_temp + 3.0 * (2.0 * PI * (hour - 9.0) / 24.0).sin() + r.normal() * 0.2;
        Fix {
            lat,
            lon,
            spd: if spd > 0.0 {
                (spd + r.normal() * 2.0).max(0.0)
            } else {
                0.0
            },
            hdg,
            acc: (self.accuracy_m * r.range(0.7, 1.3)).max(1.0),
            bat,
            tmp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAMBURG: (f64, f64) = (53.5511, 9.9937);
    const MUNICH: (f64, f64) = (48.1351, 11.5820);

    #[test]
    fn great_circle_geometry() {
        let d = distance_km(HAMBURG, MUNICH);
        assert!((d - 612.0).abs() < 5.0, "{d}");
        assert_eq!(along(HAMBURG, MUNICH, 0.0), HAMBURG);
        let end = along(HAMBURG, MUNICH, 1.0);
        assert!(distance_km(end, MUNICH) < 1e-6, "{end:?}");
        let mid = along(HAMBURG, MUNICH, 0.5);
        let (d1, d2) = (distance_km(HAMBURG, mid), distance_km(mid, MUNICH));
        assert!((d1 - d2).abs() < 1e-6 && (d1 + d2 - d).abs() < 1e-6, "{d1} {d2}");
        let south = bearing(HAMBURG, MUNICH);
        assert!((160.0..190.0).contains(&south), "{south}");
    }

    #[test]
    fn a_trip_drives_its_legs_and_dwells_at_its_stops() {
        let trip = Trip::new(Rng::seed_of("SIM-TRK-000001"));
        let cycle = trip.cycle_s();
        assert!(cycle > 3600.0, "{cycle}");
        // The truth never jumps: a minute apart it is at most a minute's drive away.
        let mut prev = trip.truth(0.0).0;
        let (mut moving, mut still) = (0, 0);
        for minute in 1..(cycle / 60.0) as u64 {
            let (p, spd, hdg) = trip.truth(minute as f64 * 60.0);
            assert!(distance_km(prev, p) <= trip.speed_kmh / 60.0 + 1e-6, "minute {minute}");
            if spd > 0.0 {
                assert!(hdg.is_some());
                moving += 1;
            } else {
                assert!(
                    SITES.iter().any(|s| distance_km((s.1, s.2), p) < 1e-6),
                    "dwelling away from a site"
                );
                still += 1;
            }
            prev = p;
        }
        assert!(moving > 0 && still > 0, "{moving} {still}");
        // Periodic: one round trip later it is where it started.
        assert!(distance_km(trip.truth(10.0).0, trip.truth(10.0 + cycle).0) < 1e-6);
    }

    #[test]
    fn fixes_are_noisy_but_close_and_in_range() {
        let seed = Rng::seed_of("SIM-TRK-000002");
        let trip = Trip::new(seed);
        let mut far = 0;
        for n in 0..5000u64 {
            let t = n as f64 * 30.0;
            let f = trip.fix(t, n, seed);
            let off_m = distance_km(trip.truth(t).0, (f.lat, f.lon)) * 1000.0;
            if off_m > 100.0 {
                far += 1;
            }
            assert!((-90.0..=90.0).contains(&f.lat) && (-180.0..180.0).contains(&f.lon));
            assert!((1.0..=100.0).contains(&f.bat) && f.spd >= 0.0 && f.acc >= 1.0);
            assert!(f.hdg.is_none_or(|h| (0.0..360.0).contains(&h)));
        }
        // Jumps are occasional (0.3 % of fixes), never the rule.
        assert!((1..=50).contains(&far), "{far} fixes more than 100 m off");
        // Reproducible.
        assert_eq!(trip.fix(1234.0, 7, seed), trip.fix(1234.0, 7, seed));
    }
}
