//! Tracks sized for a screen: top-down time-ratio simplification (Douglas–Peucker measured with
//! the synchronized Euclidean distance; Meratnia & de By, 2004). A fix is measured against where
//! the simplified line puts the device *at the fix's time*, not against the nearest point of the
//! line, so a stop (the device still while time passes) keeps its arrival and departure, a jump
//! (a fix far off the line) is kept, and every fix dropped lies within the tolerance of the line
//! in space and in time.
//!
//! Splitting is best-first: the segment whose worst fix is farthest off is split first, so a
//! point budget keeps the fixes that matter most, and a tolerance stops the splitting once every
//! fix is within it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use trackgate_store::geofence::EARTH_RADIUS_M;

/// A fix as the simplification sees it: time (Unix ms) and position (degrees).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedPoint {
    pub ts: i64,
    pub lat: f64,
    pub lon: f64,
}

/// The longitude difference `b - a` in degrees, the short way round (-180..=180).
fn delta_lon(a: f64, b: f64) -> f64 {
    let d = (b - a) % 360.0;
    if d > 180.0 {
        d - 360.0
    } else if d < -180.0 {
        d + 360.0
    } else {
        d
    }
}

/// Distance in metres between two nearby positions (equirectangular: within a small fraction of
/// a per cent of the great circle at the distances a tolerance is about).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let mean_lat = ((a.0 + b.0) / 2.0).to_radians();
    let x = delta_lon(a.1, b.1).to_radians() * mean_lat.cos();
    let y = (b.0 - a.0).to_radians();
    EARTH_RADIUS_M * x.hypot(y)
}

/// Where the line from `a` to `b` puts the device at `ts` (interpolated in time).
fn at_time(a: &TimedPoint, b: &TimedPoint, ts: i64) -> (f64, f64) {
    let span = b.ts - a.ts;
    let f = if span <= 0 {
        0.0
    } else {
        (ts - a.ts) as f64 / span as f64
    };
    (a.lat + f * (b.lat - a.lat), a.lon + f * delta_lon(a.lon, b.lon))
}

/// The fix between `first` and `last` (exclusive) farthest from where the segment puts the
/// device at its time, with that distance in metres.
fn worst(points: &[TimedPoint], first: usize, last: usize) -> Option<(f64, usize)> {
    let (a, b) = (&points[first], &points[last]);
    (first + 1..last)
        .map(|i| {
            let p = &points[i];
            (distance_m((p.lat, p.lon), at_time(a, b, p.ts)), i)
        })
        .max_by(|x, y| x.0.total_cmp(&y.0))
}

/// A segment to split, ordered by its worst fix's distance.
struct Segment {
    error: f64,
    first: usize,
    split: usize,
    last: usize,
}

impl PartialEq for Segment {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Segment {}
impl PartialOrd for Segment {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Segment {
    fn cmp(&self, other: &Self) -> Ordering {
        // Equal errors split the earlier segment first: the result does not depend on the heap.
        self.error
            .total_cmp(&other.error)
            .then_with(|| other.first.cmp(&self.first))
    }
}

/// The indices of the fixes to keep, ascending, first and last always among them: splitting
/// stops once every dropped fix is within `tolerance_m` of the kept line at its time, or when
/// `max_points` are kept (at least 2), whichever comes first.
pub fn keep(points: &[TimedPoint], tolerance_m: f64, max_points: usize) -> Vec<usize> {
    let n = points.len();
    if n <= 2 {
        return (0..n).collect();
    }
    let max_points = max_points.max(2);
    let mut kept = vec![0, n - 1];
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Segment>, first: usize, last: usize| {
        if let Some((error, split)) = worst(points, first, last) {
            heap.push(Segment {
                error,
                first,
                split,
                last,
            });
        }
    };
    push(&mut heap, 0, n - 1);
    while kept.len() < max_points {
        let Some(s) = heap.pop() else { break };
        if s.error <= tolerance_m {
            break;
        }
        kept.push(s.split);
        push(&mut heap, s.first, s.split);
        push(&mut heap, s.split, s.last);
    }
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(ts: i64, lat: f64, lon: f64) -> TimedPoint {
        TimedPoint { ts, lat, lon }
    }

    /// The largest distance of a dropped fix from where the kept line puts it at its time.
    fn max_error(points: &[TimedPoint], kept: &[usize]) -> f64 {
        kept.windows(2)
            .flat_map(|w| {
                (w[0] + 1..w[1]).map(move |i| {
                    let q = &points[i];
                    distance_m((q.lat, q.lon), at_time(&points[w[0]], &points[w[1]], q.ts))
                })
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_straight_steady_line_keeps_its_ends() {
        let line: Vec<_> = (0..1000).map(|i| p(i * 1000, 50.0 + i as f64 * 1e-5, 8.0)).collect();
        assert_eq!(keep(&line, 1.0, usize::MAX), vec![0, 999]);
    }

    #[test]
    fn a_stop_keeps_its_arrival_and_departure_and_a_jump_is_kept() {
        // East for 100 s, still for 100 s, on east for 100 s, with one fix 5 km off at t=250.
        let mut day = Vec::new();
        for i in 0..300i64 {
            let moving = if i < 100 {
                i
            } else if i < 200 {
                100
            } else {
                i - 100
            };
            let lon = 8.0 + moving as f64 * 1e-4;
            day.push(p(i * 1000, 50.0, if i == 250 { lon + 0.07 } else { lon }));
        }
        let kept = keep(&day, 5.0, usize::MAX);
        for must in [0, 99, 100, 199, 200, 249, 250, 251, 299] {
            assert!(
                kept.iter().any(|&k| k.abs_diff(must) <= 1),
                "{must} (or a neighbour) is not kept: {kept:?}"
            );
        }
        assert!(kept.contains(&250), "{kept:?}");
        assert!(kept.len() < 20, "{kept:?}");
        assert!(max_error(&day, &kept) <= 5.0);
    }

    #[test]
    fn a_budget_keeps_the_largest_errors_first() {
        // A steady line east with three detours north, of 300 m, 900 m and 600 m.
        let bumps = [(25, 0.0027), (50, 0.0081), (75, 0.0054)];
        let line: Vec<_> = (0..101)
            .map(|i| {
                let north = bumps.iter().find(|b| b.0 == i).map_or(0.0, |b| b.1);
                p(i * 1000, 50.0 + north, 8.0 + i as f64 * 1e-4)
            })
            .collect();
        assert_eq!(keep(&line, 0.0, 3), vec![0, 50, 100]);
        // Each detour is kept with the fixes either side of it, where the line leaves and
        // rejoins the road.
        let all = keep(&line, 1.0, usize::MAX);
        assert_eq!(all, vec![0, 24, 25, 26, 49, 50, 51, 74, 75, 76, 100]);
    }

    #[test]
    fn distances_cross_the_antimeridian_the_short_way() {
        let d = distance_m((0.0, 179.9995), (0.0, -179.9995));
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    proptest! {
        /// Any walk: first and last kept, ascending, every dropped fix within the tolerance,
        /// never more than the budget.
        #[test]
        fn every_dropped_fix_is_within_the_tolerance(
            steps in proptest::collection::vec((1i64..5000, -0.001f64..0.001, -0.001f64..0.001), 2..400),
            tolerance in 0.5f64..200.0,
            budget in 2usize..500,
        ) {
            let mut walk = vec![p(0, 45.0, 7.0)];
            for (dt, dlat, dlon) in steps {
                let last = *walk.last().unwrap();
                walk.push(p(last.ts + dt, last.lat + dlat, last.lon + dlon));
            }
            let kept = keep(&walk, tolerance, usize::MAX);
            prop_assert_eq!(kept[0], 0);
            prop_assert_eq!(*kept.last().unwrap(), walk.len() - 1);
            prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(max_error(&walk, &kept) <= tolerance);
            let budgeted = keep(&walk, tolerance, budget);
            prop_assert!(budgeted.len() <= budget.max(2));
            prop_assert!(budgeted.len() <= kept.len());
        }
    }
}
