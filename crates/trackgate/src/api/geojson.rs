//! GeoJSON (RFC 7946) for the location API: positions as `Point` features with `[lon, lat]`
//! (and altitude when known), a track as a `LineString` beside its points. Written by serde
//! straight from the rows (no JSON tree in between: a 10,000-feature answer is one pass).

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use trackgate_proto::Measurement;
use trackgate_store::{Assignment, Fix};

/// `[lon, lat]` or `[lon, lat, alt]`: RFC 7946 §3.1.1, longitude first.
pub struct Position<'a>(pub &'a Fix);

impl Serialize for Position<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (lat, lon) = self.0.position();
        let alt = self.0.measurement().alt;
        let mut seq = s.serialize_seq(Some(if alt.is_some() { 3 } else { 2 }))?;
        seq.serialize_element(&lon)?;
        seq.serialize_element(&lat)?;
        if let Some(alt) = alt {
            seq.serialize_element(&alt)?;
        }
        seq.end()
    }
}

/// A fix's `properties`: `seq`, `ts`, the measurements the geometry does not carry (when
/// present), `device_id`; then a track's `kind: "fix"`, or a device's assignment.
struct Properties<'a> {
    fix: &'a Fix,
    device: &'a str,
    kind: Option<&'static str>,
    assignment: Option<&'a Assignment>,
}

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const IN_GEOMETRY: [&str; 3] = ["lat", "lon", "alt"];
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.fix.seq())?;
        m.serialize_entry("ts", &self.fix.ts())?;
        for (name, value) in Measurement::NAMES.into_iter().zip(self.fix.measurement().values()) {
            if let Some(v) = value
                && !IN_GEOMETRY.contains(&name)
            {
                m.serialize_entry(name, &v)?;
            }
        }
        m.serialize_entry("device_id", self.device)?;
        if let Some(kind) = self.kind {
            m.serialize_entry("kind", kind)?;
        }
        if let Some(a) = self.assignment {
            m.serialize_entry("org_id", &a.org_id)?;
            m.serialize_entry("order_group_id", &a.order_group_id)?;
            m.serialize_entry("shipment_label", &a.shipment_label)?;
            m.serialize_entry("shipment_ref", &a.shipment_ref)?;
        }
        m.end()
    }
}

/// A `Point` feature of one fix.
pub struct Point<'a> {
    id: Option<&'a str>,
    properties: Properties<'a>,
}

impl Serialize for Point<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", "Feature")?;
        if let Some(id) = self.id {
            m.serialize_entry("id", id)?;
        }
        m.serialize_entry("geometry", &Geometry::Point(self.properties.fix))?;
        m.serialize_entry("properties", &self.properties)?;
        m.end()
    }
}

enum Geometry<'a> {
    Point(&'a Fix),
    LineString(&'a [Fix]),
}

impl Serialize for Geometry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            Geometry::Point(f) => {
                m.serialize_entry("type", "Point")?;
                m.serialize_entry("coordinates", &Position(f))?;
            }
            Geometry::LineString(points) => {
                m.serialize_entry("type", "LineString")?;
                m.serialize_entry("coordinates", &Each(points.iter().map(Position)))?;
            }
        }
        m.end()
    }
}

/// A sequence serialized from an iterator that can be cloned (walked once per serialization).
struct Each<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Each<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// A device's position as a `Point` feature whose `id` is the device id.
pub fn device_point<'a>(device: &'a str, assignment: Option<&'a Assignment>, f: &'a Fix) -> Point<'a> {
    Point {
        id: Some(device),
        properties: Properties {
            fix: f,
            device,
            kind: None,
            assignment,
        },
    }
}

/// One fix of a track as a `Point` feature (`kind: "fix"`).
pub fn fix<'a>(device: &'a str, f: &'a Fix) -> Point<'a> {
    Point {
        id: None,
        properties: Properties {
            fix: f,
            device,
            kind: Some("fix"),
            assignment: None,
        },
    }
}

/// A track's features: one `LineString` through the points (when there are at least two), then
/// each point.
pub struct Track<'a> {
    pub device: &'a str,
    pub points: &'a [Fix],
}

impl Serialize for Track<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let line = self.points.len() >= 2;
        let mut seq = s.serialize_seq(Some(self.points.len() + usize::from(line)))?;
        if line {
            seq.serialize_element(&Line(self))?;
        }
        for p in self.points {
            seq.serialize_element(&fix(self.device, p))?;
        }
        seq.end()
    }
}

struct Line<'a>(&'a Track<'a>);

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct LineProperties<'a> {
            device_id: &'a str,
            kind: &'static str,
            from_ts: Option<i64>,
            to_ts: Option<i64>,
        }
        let t = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("type", "Feature")?;
        m.serialize_entry("geometry", &Geometry::LineString(t.points))?;
        m.serialize_entry(
            "properties",
            &LineProperties {
                device_id: t.device,
                kind: "track",
                from_ts: t.points.first().map(Fix::ts),
                to_ts: t.points.last().map(Fix::ts),
            },
        )?;
        m.end()
    }
}

/// A FeatureCollection of `features`, with foreign members (RFC 7946 §6.1) `M` after them.
#[derive(Serialize)]
pub struct Collection<F: Serialize, M: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    features: F,
    #[serde(flatten)]
    members: M,
}

pub fn collection<F: Serialize, M: Serialize>(features: F, members: M) -> Collection<F, M> {
    Collection {
        kind: "FeatureCollection",
        features,
        members,
    }
}

/// No foreign members.
#[derive(Serialize)]
pub struct Plain {}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    fn fix_at(lat: f64, lon: f64, alt: Option<f64>) -> Fix {
        let m = Measurement {
            lat: Some(lat),
            lon: Some(lon),
            alt,
            bat: Some(90.0),
            ..Measurement::default()
        };
        Fix::new(1, 5, m).unwrap()
    }

    fn value(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn track(device: &str, points: &[Fix]) -> Vec<Value> {
        value(Track { device, points }).as_array().unwrap().clone()
    }

    #[test]
    fn longitude_comes_first() {
        let p = fix_at(60.17, 24.94, None);
        let f = value(device_point("d1", None, &p));
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["geometry"], json!({"type": "Point", "coordinates": [24.94, 60.17]}));
        assert_eq!(f["id"], "d1");
        assert_eq!(f["properties"]["bat"], json!(90.0));
        assert_eq!(f["properties"]["device_id"], "d1");
        assert!(f["properties"].get("tmp").is_none());
        assert!(f["properties"].get("lat").is_none());
        assert_eq!(value(Position(&fix_at(1.0, 2.0, Some(30.0)))), json!([2.0, 1.0, 30.0]));
    }

    #[test]
    fn a_device_point_carries_its_assignment_and_a_track_fix_its_kind() {
        let p = fix_at(1.0, 2.0, None);
        let a = Assignment {
            org_id: "acme".into(),
            order_group_id: None,
            shipment_label: Some("crate".into()),
            shipment_ref: None,
        };
        let f = value(device_point("d1", Some(&a), &p));
        assert_eq!(f["properties"]["org_id"], "acme");
        assert_eq!(f["properties"]["order_group_id"], Value::Null);
        assert_eq!(f["properties"]["shipment_label"], "crate");
        let t = value(fix("d1", &p));
        assert_eq!(t["properties"]["kind"], "fix");
        assert!(t.get("id").is_none() && t["properties"].get("org_id").is_none());
        let c = value(collection(vec![fix("d1", &p)], Plain {}));
        assert_eq!(c["type"], "FeatureCollection");
        assert_eq!(c["features"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_track_of_one_point_has_no_line() {
        assert_eq!(track("d", &[fix_at(1.0, 2.0, None)]).len(), 1);
        let t = track("d", &[fix_at(1.0, 2.0, None), fix_at(1.5, 2.5, None)]);
        assert_eq!(t[0]["geometry"]["type"], "LineString");
        assert_eq!(t[0]["geometry"]["coordinates"], json!([[2.0, 1.0], [2.5, 1.5]]));
        assert_eq!(
            t[0]["properties"],
            json!({"device_id": "d", "kind": "track", "from_ts": 5, "to_ts": 5})
        );
        assert_eq!(t.len(), 3);
    }
}
