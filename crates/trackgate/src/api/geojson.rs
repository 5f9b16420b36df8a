//! GeoJSON (RFC 7946) for the location API: positions as `Point` features with `[lon, lat]`
//! (and altitude when known), a track as a `LineString` beside its points.

use serde_json::{Map, Value, json};
use trackgate_proto::Measurement;
use trackgate_store::{Assignment, Fix};

/// `[lon, lat]` or `[lon, lat, alt]`: RFC 7946 §3.1.1, longitude first.
pub fn position(f: &Fix) -> Value {
    let (lat, lon) = f.position();
    match f.measurement().alt {
        Some(alt) => json!([lon, lat, alt]),
        None => json!([lon, lat]),
    }
}

/// `seq`, `ts` and the measurements the geometry does not carry, when present.
fn fix_properties(f: &Fix) -> Map<String, Value> {
    const IN_GEOMETRY: [&str; 3] = ["lat", "lon", "alt"];
    let mut p = Map::new();
    p.insert("seq".into(), json!(f.seq()));
    p.insert("ts".into(), json!(f.ts()));
    for (name, value) in Measurement::NAMES.into_iter().zip(f.measurement().values()) {
        if let Some(v) = value
            && !IN_GEOMETRY.contains(&name)
        {
            p.insert(name.into(), json!(v));
        }
    }
    p
}

/// A device's position as a `Point` feature whose `id` is the device id.
pub fn device_point(device: &str, assignment: Option<&Assignment>, f: &Fix) -> Value {
    let mut props = fix_properties(f);
    props.insert("device_id".into(), json!(device));
    if let Some(a) = assignment {
        props.insert("org_id".into(), json!(a.org_id));
        props.insert("order_group_id".into(), json!(a.order_group_id));
        props.insert("shipment_label".into(), json!(a.shipment_label));
        props.insert("shipment_ref".into(), json!(a.shipment_ref));
    }
    json!({
        "type": "Feature",
        "id": device,
        "geometry": {"type": "Point", "coordinates": position(f)},
        "properties": props,
    })
}

pub fn collection(features: Vec<Value>) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("type".into(), json!("FeatureCollection"));
    c.insert("features".into(), Value::Array(features));
    c
}

/// A track: one `LineString` through the points (when there are at least two), then each point.
pub fn track(device: &str, points: &[Fix]) -> Vec<Value> {
    let mut features = Vec::with_capacity(points.len() + 1);
    if points.len() >= 2 {
        let coords: Vec<Value> = points.iter().map(position).collect();
        features.push(json!({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {
                "device_id": device,
                "kind": "track",
                "from_ts": points.first().map(Fix::ts),
                "to_ts": points.last().map(Fix::ts),
            },
        }));
    }
    features.extend(points.iter().map(|p| fix(device, p)));
    features
}

/// One fix of a track as a `Point` feature (`kind: "fix"`).
pub fn fix(device: &str, f: &Fix) -> Value {
    let mut props = fix_properties(f);
    props.insert("device_id".into(), json!(device));
    props.insert("kind".into(), json!("fix"));
    json!({
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": position(f)},
        "properties": props,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(lat: f64, lon: f64, alt: Option<f64>) -> Fix {
        let m = Measurement {
            lat: Some(lat),
            lon: Some(lon),
            alt,
            bat: Some(90.0),
            ..Measurement::default()
        };
        Fix::new(1, 5, m).unwrap()
    }

    #[test]
    fn longitude_comes_first() {
        let f = device_point("d1", None, &fix(60.17, 24.94, None));
        assert_eq!(f["geometry"]["coordinates"], json!([24.94, 60.17]));
        assert_eq!(f["id"], "d1");
        assert_eq!(f["properties"]["bat"], json!(90.0));
        assert!(f["properties"].get("tmp").is_none());
        assert_eq!(position(&fix(1.0, 2.0, Some(30.0))), json!([2.0, 1.0, 30.0]));
    }

    #[test]
    fn a_track_of_one_point_has_no_line() {
        assert_eq!(track("d", &[fix(1.0, 2.0, None)]).len(), 1);
        let t = track("d", &[fix(1.0, 2.0, None), fix(1.5, 2.5, None)]);
        assert_eq!(t[0]["geometry"]["type"], "LineString");
        assert_eq!(t[0]["geometry"]["coordinates"], json!([[2.0, 1.0], [2.5, 1.5]]));
        assert_eq!(t.len(), 3);
    }
}
