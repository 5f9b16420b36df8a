//! Geofences, the same on both backends: created, replaced, listed per organization, removed,
//! each change audited; an invalid area is refused with its reason and nothing is stored.

use super::{TestDb, audit, on_both_backends};
use crate::StoreError;
use crate::geofence::{Area, Geometry};

fn area(json: &str) -> Area {
    serde_json::from_str(json).unwrap()
}

const SQUARE: &str = r#"{"geometry": {"type": "Polygon", "coordinates": [[[10.0, 53.5], [10.01, 53.5], [10.01, 53.51], [10.0, 53.51], [10.0, 53.5]]]}}"#;
const CIRCLE: &str = r#"{"circle": {"center": [9.9, 53.55], "radius_m": 250}}"#;

async fn geofences_are_kept_per_organization_and_audited(db: TestDb) {
    let s = db.open().await;
    let a = audit("seed");
    for org in ["acme", "globex"] {
        s.add_organization(org, org, &a).await.unwrap();
    }
    let put = s
        .put_geofence("acme", "depot", "Depot Hamburg", area(SQUARE), &audit("geofence.put"))
        .await
        .unwrap();
    assert_eq!(put.area, area(SQUARE));
    s.put_geofence("acme", "customer", "Customer", area(CIRCLE), &audit("geofence.put"))
        .await
        .unwrap();
    s.put_geofence("globex", "depot", "Globex depot", area(CIRCLE), &audit("geofence.put"))
        .await
        .unwrap();

    let acme = s.geofences(Some(&["acme".into()])).await.unwrap();
    let ids: Vec<(&str, &str)> = acme.iter().map(|g| (g.org_id.as_str(), g.id.as_str())).collect();
    assert_eq!(ids, [("acme", "customer"), ("acme", "depot")]);
    assert_eq!(acme[1], put);
    assert!(acme[1].area.shape().contains([10.005, 53.505]));
    assert_eq!(s.geofences(None).await.unwrap().len(), 3);
    assert!(s.geofences(Some(&[])).await.unwrap().is_empty());

    // Replaced whole: name and area.
    s.put_geofence("acme", "depot", "Depot (moved)", area(CIRCLE), &audit("geofence.put"))
        .await
        .unwrap();
    let depot = &s.geofences(Some(&["acme".into()])).await.unwrap()[1];
    assert_eq!((depot.name.as_str(), &depot.area), ("Depot (moved)", &area(CIRCLE)));

    s.remove_geofence("acme", "customer", &audit("geofence.remove"))
        .await
        .unwrap();
    let err = s
        .remove_geofence("acme", "customer", &audit("geofence.remove"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: "geofence", .. }), "{err}");
    assert_eq!(s.geofences(Some(&["acme".into()])).await.unwrap().len(), 1);
    assert_eq!(
        s.geofences(Some(&["globex".into()])).await.unwrap()[0].name,
        "Globex depot"
    );

    let actions: Vec<String> = s
        .audit_log(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("geofence."))
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "geofence.put").count(), 4);
    assert_eq!(
        actions.iter().filter(|a| *a == "geofence.remove").count(),
        1,
        "{actions:?}"
    );
}

async fn an_invalid_geofence_is_refused_and_nothing_is_stored(db: TestDb) {
    let s = db.open().await;
    s.add_organization("acme", "acme", &audit("seed")).await.unwrap();
    let open_ring = Area::Geometry(Geometry::Polygon {
        coordinates: vec![vec![vec![0.0, 0.0], vec![0.1, 0.0], vec![0.1, 0.1], vec![0.0, 0.1]]],
    });
    let err = s
        .put_geofence("acme", "bad", "Bad", open_ring, &audit("geofence.put"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("geometry.coordinates[0]: the ring is not closed"),
        "{err}"
    );
    let err = s
        .put_geofence("acme", "bad id", "Bad", area(CIRCLE), &audit("geofence.put"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid geofence id"), "{err}");
    let err = s
        .put_geofence("nobody", "depot", "Depot", area(CIRCLE), &audit("geofence.put"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                kind: "organization",
                ..
            }
        ),
        "{err}"
    );
    assert!(s.geofences(None).await.unwrap().is_empty());
    let trail = s.audit_log(None, None, 100).await.unwrap();
    assert!(trail.iter().all(|e| !e.action.starts_with("geofence.")));
}

on_both_backends!(
    geofences_are_kept_per_organization_and_audited,
    an_invalid_geofence_is_refused_and_nothing_is_stored
);
