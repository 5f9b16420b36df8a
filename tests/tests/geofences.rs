//! Geofences against the real binary, on both backends: an organization's admins create,
//! replace and remove them through the API (the CLI too), every member reads its own
//! organization's and no other's, an invalid area is refused with what is wrong and nothing is
//! stored, and each change is in the organization's audit trail.

use reqwest::Method;
use serde_json::{Value, json};
use trackgate_e2e::{Backend, started_on};

const DEPOT: &str = r#"{"type": "Polygon", "coordinates": [[[10.0, 53.5], [10.01, 53.5], [10.01, 53.51], [10.0, 53.51], [10.0, 53.5]]]}"#;

/// The `id`s of the geofences in a `GET /v1/geofences` answer, as `org/id`.
fn ids(b: &Value) -> Vec<String> {
    b["geofences"]
        .as_array()
        .unwrap_or_else(|| panic!("no geofences in {b}"))
        .iter()
        .map(|g| format!("{}/{}", g["org_id"].as_str().unwrap(), g["id"].as_str().unwrap()))
        .collect()
}

async fn admins_keep_geofences_that_members_of_their_organization_alone_see(backend: Backend) {
    let (_dir, s) = started_on(backend, "");
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
    }
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.add_user_group("acme", "staff", "viewer", "--domain", "acme.example");
    s.add_user_group("globex", "admins", "admin", "--email", "chief@globex.example");
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let clerk = s.dev_token(&["--email", "clerk@acme.example"]);
    let chief = s.dev_token(&["--email", "chief@globex.example"]);
    let stale = s.dev_token(&["--email", "boss@acme.example", "--auth-age-secs", "3600"]);
    let c = s.client();
    let depot: Value = serde_json::from_str(DEPOT).unwrap();

    let (st, b) = s
        .api(
            &c,
            Method::PUT,
            "/v1/admin/orgs/acme/geofences/depot",
            &boss,
            Some(json!({"name": "Depot", "geometry": depot})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!((b["id"].as_str(), b["name"].as_str()), (Some("depot"), Some("Depot")));
    assert_eq!(b["geometry"], depot);
    let customer = json!({"name": "Customer", "circle": {"center": [9.95, 53.55], "radius_m": 400}});
    let (st, b) = s
        .api(
            &c,
            Method::PUT,
            "/v1/admin/orgs/acme/geofences/customer",
            &boss,
            Some(customer.clone()),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    s.ok(
        &[
            "geofence",
            "put",
            "--org",
            "globex",
            "hq",
            "--name",
            "HQ",
            "--circle",
            "2.35,48.85,150",
        ],
        None,
    );

    // Members read their organization's, and only theirs.
    let (st, b) = s.api(&c, Method::GET, "/v1/geofences", &clerk, None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(ids(&b), ["acme/customer", "acme/depot"]);
    let (_, b) = s.api(&c, Method::GET, "/v1/geofences", &chief, None).await;
    assert_eq!(ids(&b), ["globex/hq"]);
    assert_eq!(
        b["geofences"][0]["circle"],
        json!({"center": [2.35, 48.85], "radius_m": 150.0})
    );

    // Changes: an admin of the organization, recently signed in.
    let path = "/v1/admin/orgs/acme/geofences/depot";
    let (st, b) = s.api(&c, Method::PUT, path, &clerk, Some(customer.clone())).await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = s.api(&c, Method::PUT, path, &chief, Some(customer.clone())).await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = s.api(&c, Method::DELETE, path, &chief, None).await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = s.api(&c, Method::PUT, path, &stale, Some(customer.clone())).await;
    assert_eq!(
        (st, b["error"].as_str()),
        (401, Some("insufficient_user_authentication")),
        "{b}"
    );

    // Invalid areas: 400 with what is wrong; nothing stored or changed.
    let open =
        json!({"name": "Open", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}});
    let both = json!({"name": "Both", "geometry": depot, "circle": {"center": [0, 0], "radius_m": 100}});
    let point = json!({"name": "Point", "geometry": {"type": "Point", "coordinates": [0, 0]}});
    let huge = json!({"name": "Huge", "circle": {"center": [0, 0], "radius_m": 5e6}});
    let neither = json!({"name": "Nothing"});
    for (body, says) in [
        (open, "geometry.coordinates[0]: the ring is not closed"),
        (both, "not both"),
        (point, "unknown variant `Point`"),
        (huge, "circle.radius_m must be from 10 to 500000 metres"),
        (neither, "the area is missing"),
    ] {
        for target in ["/v1/admin/orgs/acme/geofences/new", path] {
            let (st, b) = s.api(&c, Method::PUT, target, &boss, Some(body.clone())).await;
            assert_eq!(st, 400, "{b}");
            assert!(b["detail"].as_str().unwrap().contains(says), "{says}: {b}");
        }
    }
    let (_, b) = s.api(&c, Method::GET, "/v1/geofences", &boss, None).await;
    assert_eq!(ids(&b), ["acme/customer", "acme/depot"]);
    assert_eq!(b["geofences"][1]["geometry"], depot, "unchanged by the refused puts");

    // Replace, then remove; removing again is a 404.
    let (st, _) = s.api(&c, Method::PUT, path, &boss, Some(customer.clone())).await;
    assert_eq!(st, 200);
    let lines = s.json_lines(&["geofence", "list", "--org", "acme"]);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["circle"], json!({"center": [9.95, 53.55], "radius_m": 400.0}));
    let (st, b) = s.api(&c, Method::DELETE, path, &boss, None).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.api(&c, Method::DELETE, path, &boss, None).await;
    assert_eq!(st, 404, "{b}");
    let (_, b) = s.api(&c, Method::GET, "/v1/geofences", &clerk, None).await;
    assert_eq!(ids(&b), ["acme/customer"]);

    // The CLI says what is wrong with its arguments.
    let out = s.cli(
        &[
            "geofence", "put", "--org", "acme", "x", "--name", "X", "--circle", "10,53",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--circle must be LON,LAT,RADIUS_M"));

    // Each change is in acme's audit trail, by whom.
    let trail = s.json_lines(&["audit", "--org", "acme"]);
    let puts: Vec<&Value> = trail.iter().filter(|e| e["action"] == "geofence.put").collect();
    assert_eq!(puts.len(), 3, "{trail:?}");
    assert!(
        puts.iter()
            .any(|e| e["actor_email"] == "boss@acme.example" && e["target"] == "depot")
    );
    assert_eq!(trail.iter().filter(|e| e["action"] == "geofence.remove").count(), 1);
}

trackgate_e2e::on_both_backends!(admins_keep_geofences_that_members_of_their_organization_alone_see);
