//! Geofences: named areas of an organization, as GeoJSON polygons (RFC 7946 `Polygon` or
//! `MultiPolygon`) or circles by centre and radius. The rules, whatever the backend: what a valid
//! area is, with errors that name the ring and position at fault, and whether a point lies inside.
//!
//! Accepted: rings of either orientation (RFC 7946 §3.1.6 asks for counterclockwise outer rings
//! but says parsers should not reject the other), an altitude in a position (ignored and dropped).
//! Refused: rings that are not closed or have fewer than four positions, coordinates out of range,
//! rings without area, a ring wider than 180° of longitude (RFC 7946 §3.1.9: cut it at the
//! antimeridian), more than [`MAX_POSITIONS`] positions, areas wider than [`MAX_EXTENT_M`] and
//! circles outside [`RADIUS_M`]. Not checked: rings that cross themselves, and holes outside their
//! polygon (the even-odd rule then decides what is inside).

use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

/// Positions in one geofence, all rings together.
pub const MAX_POSITIONS: usize = 10_000;
/// The largest distance across a geofence (the diagonal of its bounding box), metres.
pub const MAX_EXTENT_M: f64 = 1_000_000.0;
/// A circle's radius, metres.
pub const RADIUS_M: RangeInclusive<f64> = 10.0..=500_000.0;
/// The mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// `[longitude, latitude]` in degrees (WGS 84), RFC 7946 order; an altitude may follow on input.
pub type Position = Vec<f64>;

/// A GeoJSON polygon or multipolygon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Geometry {
    Polygon { coordinates: Vec<Vec<Position>> },
    MultiPolygon { coordinates: Vec<Vec<Vec<Position>>> },
}

/// A circle by its centre and radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circle {
    pub center: Position,
    pub radius_m: f64,
}

/// The area of a geofence: `{"geometry": {...}}` or `{"circle": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Area {
    Geometry(Geometry),
    Circle(Circle),
}

/// A named area of an organization.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Geofence {
    pub org_id: String,
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub area: Area,
    pub updated_ms: i64,
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidGeofence(msg)
}

/// A checked position: `[lon, lat]`, finite and in range.
fn point(p: &Position, at: &str) -> Result<[f64; 2], StoreError> {
    let [lon, lat] = match p[..] {
        [lon, lat] | [lon, lat, _] => [lon, lat],
        _ => {
            return Err(invalid(format!(
                "{at}: a position is [longitude, latitude] (and an optional altitude), not {} numbers",
                p.len()
            )));
        }
    };
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        return Err(invalid(format!("{at}: longitude {lon} is not within -180..180")));
    }
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        return Err(invalid(format!("{at}: latitude {lat} is not within -90..90")));
    }
    Ok([lon, lat])
}

/// Twice the signed area of a ring in square degrees (the shoelace formula).
fn doubled_area(ring: &[[f64; 2]]) -> f64 {
    ring.windows(2).map(|w| w[0][0] * w[1][1] - w[1][0] * w[0][1]).sum()
}

/// A checked ring, at `at` (for errors): its positions, altitude dropped.
fn ring(r: &[Position], at: &str) -> Result<Vec<[f64; 2]>, StoreError> {
    if r.len() < 4 {
        return Err(invalid(format!(
            "{at}: a ring needs at least 4 positions (the first repeated last), not {}",
            r.len()
        )));
    }
    let pts = r
        .iter()
        .enumerate()
        .map(|(i, p)| point(p, &format!("{at}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let (first, last) = (pts[0], pts[pts.len() - 1]);
    if first != last {
        return Err(invalid(format!(
            "{at}: the ring is not closed: its last position {last:?} must repeat its first {first:?}"
        )));
    }
    let (west, east) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(w, e), p| (w.min(p[0]), e.max(p[0])));
    if east - west > 180.0 {
        return Err(invalid(format!(
            "{at}: the ring spans {:.1}° of longitude; a ring that crosses the antimeridian must be cut there (RFC 7946 §3.1.9)",
            east - west
        )));
    }
    if doubled_area(&pts) == 0.0 {
        return Err(invalid(format!(
            "{at}: the ring has no area (its positions lie on one line)"
        )));
    }
    Ok(pts)
}

/// Great-circle distance between two `[lon, lat]` positions, metres (haversine).
pub fn distance_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la1, la2) = (a[1].to_radians(), b[1].to_radians());
    let dlat = la2 - la1;
    let dlon = (b[0] - a[0]).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Is `p` inside `ring` (even-odd rule, either orientation)?
fn in_ring(ring: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let ([x1, y1], [x2, y2]) = (w[0], w[1]);
        if (y1 > p[1]) != (y2 > p[1]) && p[0] < (x2 - x1) * (p[1] - y1) / (y2 - y1) + x1 {
            inside = !inside;
        }
    }
    inside
}

impl Area {
    /// The area checked and normalized (altitudes dropped), or what is wrong with it.
    pub fn checked(self) -> Result<Area, StoreError> {
        match self {
            Area::Circle(c) => {
                let center = point(&c.center, "circle.center")?;
                if !(c.radius_m.is_finite() && RADIUS_M.contains(&c.radius_m)) {
                    return Err(invalid(format!(
                        "circle.radius_m must be from {} to {} metres, not {}",
                        RADIUS_M.start(),
                        RADIUS_M.end(),
                        c.radius_m
                    )));
                }
                Ok(Area::Circle(Circle {
                    center: center.to_vec(),
                    radius_m: c.radius_m,
                }))
            }
            Area::Geometry(g) => {
                let polygons = match &g {
                    Geometry::Polygon { coordinates } => vec![("geometry.coordinates".to_owned(), coordinates)],
                    Geometry::MultiPolygon { coordinates } => coordinates
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (format!("geometry.coordinates[{i}]"), p))
                        .collect(),
                };
                if polygons.is_empty() {
                    return Err(invalid(
                        "geometry.coordinates: a MultiPolygon needs at least one polygon".into(),
                    ));
                }
                let total: usize = polygons.iter().flat_map(|(_, p)| p.iter()).map(Vec::len).sum();
                if total > MAX_POSITIONS {
                    return Err(invalid(format!(
                        "geometry has {total} positions; at most {MAX_POSITIONS} are allowed"
                    )));
                }
                let mut out = Vec::with_capacity(polygons.len());
                for (at, rings) in &polygons {
                    if rings.is_empty() {
                        return Err(invalid(format!("{at}: a polygon needs at least its outer ring")));
                    }
                    let checked = rings
                        .iter()
                        .enumerate()
                        .map(|(i, r)| ring(r, &format!("{at}[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(checked);
                }
                let extent = extent_m(&out);
                if extent > MAX_EXTENT_M {
                    return Err(invalid(format!(
                        "geometry is {:.0} km across; at most {:.0} km is allowed",
                        extent / 1000.0,
                        MAX_EXTENT_M / 1000.0
                    )));
                }
                let positions = |r: Vec<[f64; 2]>| r.into_iter().map(|p| p.to_vec()).collect::<Vec<_>>();
                let polygon = |p: Vec<Vec<[f64; 2]>>| p.into_iter().map(positions).collect::<Vec<_>>();
                Ok(Area::Geometry(match g {
                    Geometry::Polygon { .. } => Geometry::Polygon {
                        coordinates: out.into_iter().map(polygon).next().unwrap_or_default(),
                    },
                    Geometry::MultiPolygon { .. } => Geometry::MultiPolygon {
                        coordinates: out.into_iter().map(polygon).collect(),
                    },
                }))
            }
        }
    }

    /// The shape to test points against. The area must have been [`checked`](Area::checked).
    pub fn shape(&self) -> Shape {
        let xy = |p: &Position| [p[0], p[1]];
        let polygon = |rings: &Vec<Vec<Position>>| rings.iter().map(|r| r.iter().map(xy).collect()).collect();
        match self {
            Area::Circle(c) => Shape::Circle {
                center: xy(&c.center),
                radius_m: c.radius_m,
            },
            Area::Geometry(Geometry::Polygon { coordinates }) => Shape::Polygons(vec![polygon(coordinates)]),
            Area::Geometry(Geometry::MultiPolygon { coordinates }) => {
                Shape::Polygons(coordinates.iter().map(polygon).collect())
            }
        }
    }
}

/// A checked area in the form point tests use: `[lon, lat]` pairs.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle {
        center: [f64; 2],
        radius_m: f64,
    },
    /// Polygons, each its outer ring then its holes.
    Polygons(Vec<Vec<Vec<[f64; 2]>>>),
}

impl Shape {
    /// Is `[lon, lat]` inside?
    pub fn contains(&self, p: [f64; 2]) -> bool {
        match self {
            Shape::Circle { center, radius_m } => distance_m(*center, p) <= *radius_m,
            Shape::Polygons(polygons) => polygons
                .iter()
                .any(|rings| rings.iter().filter(|r| in_ring(r, p)).count() % 2 == 1),
        }
    }

    /// Which side of the border `p` is on, if it is at least `margin_m` metres from it: `Some(true)`
    /// inside, `Some(false)` outside, `None` within the margin (where GPS noise would flap).
    pub fn side(&self, p: [f64; 2], margin_m: f64) -> Option<bool> {
        let (inside, border_m) = match self {
            Shape::Circle { center, radius_m } => {
                let d = distance_m(*center, p);
                (d <= *radius_m, (d - radius_m).abs())
            }
            Shape::Polygons(polygons) => {
                let border = polygons
                    .iter()
                    .flatten()
                    .flat_map(|r| r.windows(2))
                    .map(|w| segment_distance_m(p, w[0], w[1]))
                    .fold(f64::INFINITY, f64::min);
                (self.contains(p), border)
            }
        };
        (border_m >= margin_m).then_some(inside)
    }
}

/// Distance from `p` to the segment `a`-`b`, metres, in a plane tangent at `p` (equirectangular:
/// close to the great circle over the lengths of a geofence's edges near `p`, and only used to
/// tell whether `p` is within a margin of tens of metres of the border).
fn segment_distance_m(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let k = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
    let cos = p[1].to_radians().cos();
    let xy = |q: [f64; 2]| ((q[0] - p[0]) * cos * k, (q[1] - p[1]) * k);
    let ((ax, ay), (bx, by)) = (xy(a), xy(b));
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    };
    (ax + t * dx).hypot(ay + t * dy)
}

/// The diagonal of the polygons' bounding box, metres.
fn extent_m(polygons: &[Vec<Vec<[f64; 2]>>]) -> f64 {
    let (mut w, mut s, mut e, mut n) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in polygons.iter().flatten().flatten() {
        (w, s, e, n) = (w.min(p[0]), s.min(p[1]), e.max(p[0]), n.max(p[1]));
    }
    distance_m([w, s], [e, n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polygon(json: &str) -> Result<Area, StoreError> {
        serde_json::from_str::<Area>(json).unwrap().checked()
    }

    fn message(r: Result<Area, StoreError>) -> String {
        r.unwrap_err().to_string()
    }

    /// A depot of about 1.1 km square near Hamburg, counterclockwise.
    const DEPOT: &str = r#"{"geometry": {"type": "Polygon", "coordinates": [[[10.0, 53.5], [10.01, 53.5], [10.01, 53.51], [10.0, 53.51], [10.0, 53.5]]]}}"#;

    #[test]
    fn a_polygon_of_either_orientation_holds_its_inside_and_not_its_outside() {
        let ccw = polygon(DEPOT).unwrap().shape();
        let cw = polygon(
            r#"{"geometry": {"type": "Polygon", "coordinates": [[[10.0, 53.5], [10.0, 53.51], [10.01, 53.51], [10.01, 53.5], [10.0, 53.5, 12.5]]]}}"#,
        )
        .unwrap()
        .shape();
        for s in [&ccw, &cw] {
            assert!(s.contains([10.005, 53.505]));
            assert!(!s.contains([10.02, 53.505]));
            assert!(!s.contains([10.005, 53.49]));
        }
    }

    #[test]
    fn holes_and_multipolygons_follow_the_even_odd_rule() {
        let a = polygon(
            r#"{"geometry": {"type": "MultiPolygon", "coordinates": [
                [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6], [0.4, 0.4]]],
                [[[2, 2], [3, 2], [3, 3], [2, 3], [2, 2]]]
            ]}}"#,
        )
        .unwrap()
        .shape();
        assert!(a.contains([0.2, 0.2]));
        assert!(!a.contains([0.5, 0.5]), "inside the hole");
        assert!(a.contains([2.5, 2.5]));
        assert!(!a.contains([1.5, 1.5]));
    }

    #[test]
    fn a_circle_holds_what_is_within_its_radius() {
        let c = polygon(r#"{"circle": {"center": [10.0, 53.5], "radius_m": 500}}"#)
            .unwrap()
            .shape();
        // 0.004° of latitude is about 445 m, 0.005° about 556 m.
        assert!(c.contains([10.0, 53.504]));
        assert!(!c.contains([10.0, 53.505]));
    }

    #[test]
    fn altitudes_are_dropped() {
        let a = polygon(
            r#"{"geometry": {"type": "Polygon", "coordinates": [[[10.0, 53.5, 3], [10.01, 53.5, 3], [10.01, 53.51, 3], [10.0, 53.5, 3]]]}}"#,
        )
        .unwrap();
        let Area::Geometry(Geometry::Polygon { coordinates }) = a else {
            panic!("{a:?}")
        };
        assert!(coordinates[0].iter().all(|p| p.len() == 2), "{coordinates:?}");
    }

    #[test]
    fn errors_name_the_ring_and_the_position_at_fault() {
        let open = r#"{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}"#;
        assert_eq!(
            message(polygon(open)),
            "invalid geofence: geometry.coordinates[0]: the ring is not closed: its last position [0.0, 1.0] must repeat its first [0.0, 0.0]"
        );
        let short = r#"{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}"#;
        assert!(message(polygon(short)).contains("geometry.coordinates[0]: a ring needs at least 4 positions"));
        let lat = r#"{"geometry": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[0, 0], [1, 0], [1, 91], [0, 0]]]]}}"#;
        assert_eq!(
            message(polygon(lat)),
            "invalid geofence: geometry.coordinates[1][0][2]: latitude 91 is not within -90..90"
        );
        let flat = r#"{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}}"#;
        assert!(message(polygon(flat)).contains("has no area"));
        let wide = r#"{"geometry": {"type": "Polygon", "coordinates": [[[-170, 0], [170, 0], [170, 1], [-170, 0]]]}}"#;
        assert!(message(polygon(wide)).contains("antimeridian"));
        let big = r#"{"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]}}"#;
        assert!(
            message(polygon(big)).contains("km across; at most 1000 km"),
            "{}",
            message(polygon(big))
        );
        let dims = r#"{"geometry": {"type": "Polygon", "coordinates": [[[0], [1, 0], [1, 1], [0, 0]]]}}"#;
        assert!(message(polygon(dims)).contains("geometry.coordinates[0][0]: a position is [longitude, latitude]"));
        let radius = r#"{"circle": {"center": [0, 0], "radius_m": 1}}"#;
        assert_eq!(
            message(polygon(radius)),
            "invalid geofence: circle.radius_m must be from 10 to 500000 metres, not 1"
        );
        let empty = r#"{"geometry": {"type": "Polygon", "coordinates": []}}"#;
        assert!(message(polygon(empty)).contains("at least its outer ring"));
        let many: Vec<String> = (0..MAX_POSITIONS)
            .map(|i| format!("[{}, 0]", i as f64 * 1e-5))
            .collect();
        let too_many = format!(
            r#"{{"geometry": {{"type": "Polygon", "coordinates": [[[0, 1], {}, [0, 1]]]}}}}"#,
            many.join(", ")
        );
        assert!(message(polygon(&too_many)).contains("positions; at most 10000"));
    }

    #[test]
    fn a_point_near_the_border_is_on_neither_side() {
        let depot = polygon(DEPOT).unwrap().shape();
        // 0.01° of longitude at 53.5° N is about 662 m; the west border is at 10.0.
        assert_eq!(depot.side([10.005, 53.505], 25.0), Some(true));
        assert_eq!(depot.side([10.0002, 53.505], 25.0), None, "13 m inside");
        assert_eq!(depot.side([9.9998, 53.505], 25.0), None, "13 m outside");
        assert_eq!(depot.side([9.999, 53.505], 25.0), Some(false), "66 m outside");
        let c = polygon(r#"{"circle": {"center": [10.0, 53.5], "radius_m": 500}}"#)
            .unwrap()
            .shape();
        assert_eq!(c.side([10.0, 53.5], 25.0), Some(true));
        assert_eq!(c.side([10.0, 53.5045], 25.0), None, "500.4 m from the centre");
        assert_eq!(c.side([10.0, 53.51], 25.0), Some(false));
    }

    #[test]
    fn distances_are_great_circle_metres() {
        // One degree of latitude is about 111.2 km.
        let d = distance_m([0.0, 0.0], [0.0, 1.0]);
        assert!((d - 111_195.0).abs() < 10.0, "{d}");
    }
}
