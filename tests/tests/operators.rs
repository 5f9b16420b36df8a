//! Operators against the real binary: the authorization matrix (each of the four membership
//! rules, cross-organization isolation, a platform administrator) on every location endpoint
//! including the live stream, GeoJSON checked by an independent validator, track pagination,
//! the admin API, and the audit rows both leave.

use serde_json::Value;
use trackgate_e2e::sse::Sse;
use trackgate_e2e::{Backend, Key, Server, now_ms, started, started_on};

const DEVICES: [&str; 4] = ["a-n1", "a-s1", "a-x1", "g-1"];

fn device_key(id: &str) -> Key {
    Key::derived(id, "k1")
}

/// Where each device is, far enough apart that a swapped lon/lat would be out of range.
fn place(id: &str) -> (f64, f64) {
    match id {
        "a-n1" => (60.17, 24.94),
        "a-s1" => (40.42, -3.70),
        "a-x1" => (51.51, -0.13),
        _ => (-33.87, 151.21),
    }
}

/// Two organizations; acme's devices spread over order groups `north` and `south` and none;
/// user groups that each admit by one rule.
fn seed(s: &Server) {
    for (org, name) in [("acme", "Acme Packaging"), ("globex", "Globex")] {
        s.ok(&["org", "add", org, "--name", name], None);
    }
    for og in ["north", "south"] {
        s.ok(&["order-group", "add", "--org", "acme", og, "--name", og], None);
    }
    for (dev, org, og) in [
        ("a-n1", "acme", Some("north")),
        ("a-s1", "acme", Some("south")),
        ("a-x1", "acme", None),
        ("g-1", "globex", None),
    ] {
        s.add_device(&device_key(dev), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
        let label = format!("crate {dev}");
        let mut args = vec!["device", "shipment", dev, "--org", org, "--label", &label];
        if let Some(og) = og {
            args.extend(["--order-group", og]);
        }
        s.ok(&args, None);
    }
    let groups: [&[&str]; 6] = [
        &["acme", "admins", "--role", "admin", "--email", "boss@acme.example"],
        &[
            "acme",
            "everyone",
            "--role",
            "viewer",
            "--order-groups",
            "all",
            "--domain",
            "acme.example",
        ],
        &[
            "acme",
            "invited",
            "--role",
            "viewer",
            "--order-groups",
            "south",
            "--email",
            "Consultant@Freelance.example",
        ],
        &[
            "acme",
            "north-desk",
            "--role",
            "viewer",
            "--order-groups",
            "north",
            "--idp-group",
            "grp-north",
        ],
        &[
            "acme",
            "partner",
            "--role",
            "viewer",
            "--order-groups",
            "north,south",
            "--tenant",
            "tenant-partner",
        ],
        &["globex", "ops", "--role", "admin", "--domain", "globex.example"],
    ];
    for g in groups {
        let mut args = vec!["user-group", "add", "--org", g[0], g[1], "--name", g[1]];
        args.extend(&g[2..]);
        s.ok(&args, None);
    }
}

struct User {
    name: &'static str,
    args: &'static [&'static str],
    sees: &'static [&'static str],
}

const USERS: [User; 7] = [
    User {
        name: "email rule",
        args: &["--email", "consultant@freelance.example"],
        sees: &["a-s1"],
    },
    User {
        name: "domain rule",
        args: &["--email", "clerk@acme.example"],
        sees: &["a-n1", "a-s1", "a-x1"],
    },
    User {
        name: "idp group rule",
        args: &["--email", "temp@staffing.example", "--groups", "grp-other,grp-north"],
        sees: &["a-n1"],
    },
    User {
        name: "tenant rule",
        args: &["--email", "x@partner.example", "--tenant", "tenant-partner"],
        sees: &["a-n1", "a-s1"],
    },
    User {
        name: "other organization",
        args: &["--email", "ops@globex.example"],
        sees: &["g-1"],
    },
    User {
        name: "no rule",
        args: &[
            "--email",
            "nobody@elsewhere.example",
            "--groups",
            "grp-south",
            "--tenant",
            "t-other",
        ],
        sees: &[],
    },
    User {
        name: "platform administrator",
        args: &["--email", "root@service.example", "--platform-admin"],
        sees: &["a-n1", "a-s1", "a-x1", "g-1"],
    },
];

fn token(s: &Server, args: &[&str]) -> String {
    let mut a = vec!["dev-token"];
    a.extend(args);
    s.ok(&a, None).trim().to_owned()
}

async fn get(s: &Server, c: &reqwest::Client, token: &str, path: &str) -> (u16, Value) {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Post one record per device (seq given) through the supplier, all in one request.
async fn ingest(s: &Server, c: &reqwest::Client, seq: u64, ts: u64) {
    let envelopes: Vec<String> = DEVICES
        .iter()
        .map(|d| {
            let (lat, lon) = place(d);
            let lat = lat + seq as f64 * 0.001;
            device_key(d).envelope(&format!(
                r#"{{"dev":"{d}","seq":{seq},"ts":{ts},"lat":{lat},"lon":{lon},"bat":{},"tmp":4.5}}"#,
                90 - seq
            ))
        })
        .collect();
    let reply = s.post_envelopes(c, &envelopes).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.counts().0, DEVICES.len() as u64, "{}", reply.body);
}

fn ids(v: &Value, list: &str, key: &str) -> Vec<String> {
    let mut out: Vec<String> = v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|x| x[key].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn each_membership_rule_sees_exactly_its_devices_on_every_endpoint(backend: Backend) {
    let (_dir, s) = started_on(backend, "");
    seed(&s);
    let c = s.client();
    let t0 = now_ms() - 60_000;
    ingest(&s, &c, 1, t0).await;
    ingest(&s, &c, 2, t0 + 1000).await;

    let tokens: Vec<String> = USERS.iter().map(|u| token(&s, u.args)).collect();
    for (u, t) in USERS.iter().zip(&tokens) {
        let want: Vec<String> = u.sees.iter().map(|x| x.to_string()).collect();
        let (status, devices) = get(&s, &c, t, "/v1/devices").await;
        assert_eq!(status, 200, "{}: {devices}", u.name);
        assert_eq!(ids(&devices, "devices", "id"), want, "{}: /v1/devices", u.name);
        let (_, latest) = get(&s, &c, t, "/v1/positions/latest").await;
        assert_eq!(ids(&latest, "features", "id"), want, "{}: /v1/positions/latest", u.name);
        for d in DEVICES {
            let visible = u.sees.contains(&d);
            let (status, one) = get(&s, &c, t, &format!("/v1/devices/{d}")).await;
            assert_eq!(
                status,
                if visible { 200 } else { 404 },
                "{}: /v1/devices/{d}: {one}",
                u.name
            );
            let (status, track) = get(&s, &c, t, &format!("/v1/devices/{d}/track?from={t0}")).await;
            assert_eq!(
                status,
                if visible { 200 } else { 404 },
                "{}: track of {d}: {track}",
                u.name
            );
            if visible {
                assert_eq!(one["position"]["seq"], 2);
                assert_eq!(one["shipment_label"], format!("crate {d}"));
                // A LineString and two points.
                assert_eq!(track["features"].as_array().unwrap().len(), 3, "{track}");
            } else {
                assert_eq!(one["error"], "not_found");
            }
        }
    }
    // A device that does not exist answers exactly like one that is not visible.
    let (status, body) = get(&s, &c, &tokens[0], "/v1/devices/no-such-device").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // The live stream: every user subscribed, then one batch with a record of every device.
    let mut streams = Vec::new();
    for t in &tokens {
        streams.push(Sse::open(&s, &c, t).await);
    }
    ingest(&s, &c, 3, now_ms()).await;
    ingest(&s, &c, 4, now_ms()).await;
    for (u, sse) in USERS.iter().zip(streams.iter_mut()) {
        if u.sees.is_empty() {
            continue;
        }
        let want: Vec<String> = u.sees.iter().map(|x| x.to_string()).collect();
        assert_eq!(sse.positions(want.len()).await, want, "{}: stream, first batch", u.name);
        assert_eq!(
            sse.positions(want.len()).await,
            want,
            "{}: stream, second batch",
            u.name
        );
    }
    // Both batches were broadcast to every stream at once, and the others have already received
    // theirs, so anything the caller without grants could have been sent is on its way: after a
    // keep-alive-free pause its stream has produced nothing.
    let (i, _) = USERS.iter().enumerate().find(|(_, u)| u.sees.is_empty()).unwrap();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), streams[i].next()).await;
    assert!(quiet.is_err(), "a caller without grants received {quiet:?}");
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let (_dir, s) = started("");
    let c = s.client();
    let r = c.get(s.url("/v1/devices")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let t = token(&s, &["--email", "a@b.example"]);
    let mut forged = t.clone();
    forged.pop();
    forged.push(if t.ends_with('A') { 'B' } else { 'A' });
    for bad in [forged.as_str(), "abc.def.ghi", ""] {
        let (status, body) = get(&s, &c, bad, "/v1/devices").await;
        assert_eq!(status, 401, "{bad}: {body}");
    }
    let (status, _) = get(&s, &c, &t, "/v1/devices").await;
    assert_eq!(status, 200, "the unaltered token is accepted");
}

async fn geojson_output_is_valid_rfc_7946(backend: Backend) {
    let (dir, s) = started_on(backend, "");
    seed(&s);
    let c = s.client();
    let t0 = now_ms() - 60_000;
    for seq in 1..=3 {
        ingest(&s, &c, seq, t0 + seq * 1000).await;
    }
    let admin = token(&s, &["--email", "root@service.example", "--platform-admin"]);
    let mut files = Vec::new();
    for path in [
        "/v1/positions/latest".to_owned(),
        "/v1/positions/latest?bbox=150,-40,-0.05,55".to_owned(),
        format!("/v1/devices/g-1/track?from={t0}"),
        format!("/v1/devices/a-n1/track?from={t0}&limit=2"),
    ] {
        let (status, body) = get(&s, &c, &admin, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let f = dir.path().join(format!("geo-{}.json", files.len()));
        std::fs::write(&f, body.to_string()).unwrap();
        files.push(f);
    }
    // The bbox crossing the antimeridian holds Sydney, London and Madrid, not Helsinki.
    let (_, across) = get(&s, &c, &admin, "/v1/positions/latest?bbox=150,-40,-0.05,55").await;
    assert_eq!(ids(&across, "features", "id"), ["a-s1", "a-x1", "g-1"]);
    // Longitude first.
    let (_, g) = get(&s, &c, &admin, &format!("/v1/devices/g-1/track?from={t0}")).await;
    assert_eq!(g["features"][0]["geometry"]["type"], "LineString");
    assert_eq!(g["features"][0]["geometry"]["coordinates"][0][0], 151.21);

    let out = trackgate_e2e::check_geojson(&files);
    assert!(
        out.status.success(),
        "GeoJSON validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 4 + 3 latest points; a line and 3 points; a line and 2 points (the first page of 3).
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid 14");
    // And the validator is not a rubber stamp: a LineString of one position fails it.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"LineString","coordinates":[[1,2]]}}]}"#,
    )
    .unwrap();
    let out = trackgate_e2e::check_geojson(&[&bad]);
    assert!(!out.status.success());
}

async fn a_long_track_pages_through_every_point_once(backend: Backend) {
    let (_dir, s) = started_on(backend, "");
    seed(&s);
    let c = s.client();
    let t0 = now_ms() - 3_600_000;
    // 25 records of a-n1 in one request, out of time order.
    let key = device_key("a-n1");
    let envelopes: Vec<String> = (1..=25u64)
        .map(|seq| {
            let ts = t0 + ((seq * 7) % 25) * 1000;
            key.envelope(&format!(
                r#"{{"dev":"a-n1","seq":{seq},"ts":{ts},"lat":60.1,"lon":24.9}}"#
            ))
        })
        .collect();
    let reply = s
        .post(
            &c,
            &trackgate_e2e::vector_supplier(),
            "application/json",
            &format!("[{}]", envelopes.join(",")),
        )
        .await;
    assert_eq!(reply.counts().0, 25, "{}", reply.body);
    let t = token(&s, &["--email", "clerk@acme.example"]);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = get(
            &s,
            &c,
            &t,
            &format!("/v1/devices/a-n1/track?from={t0}&limit=10{cursor}"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for f in page["features"].as_array().unwrap() {
            if f["properties"]["kind"] == "fix" {
                seen.push(f["properties"]["ts"].as_u64().unwrap());
            }
        }
        match page["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<u64> = (0..25).map(|i| t0 + i * 1000).collect();
    assert_eq!(seen, want, "every point once, in time order");
    for (q, what) in [
        ("limit=0", "`limit`"),
        ("limit=x", "`limit`"),
        ("cursor=zz", "`cursor`"),
        ("from=5&to=5", "`from`"),
    ] {
        let (status, body) = get(&s, &c, &t, &format!("/v1/devices/a-n1/track?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(what), "{q}: {body}");
    }
}

async fn admin_changes_and_location_reads_leave_audit_rows(backend: Backend) {
    let (_dir, s) = started_on(backend, "");
    seed(&s);
    let c = s.client();
    let boss = token(&s, &["--email", "boss@acme.example"]);
    let clerk = token(&s, &["--email", "clerk@acme.example"]);
    let globex = token(&s, &["--email", "ops@globex.example"]);
    let root = token(&s, &["--email", "root@service.example", "--platform-admin"]);
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut r = c.request(method, s.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;

    // The org admin adds an order group, moves a device into it and grants a new group.
    let (st, b) = send(
        Method::POST,
        "/v1/admin/orgs/acme/order-groups",
        &boss,
        Some(serde_json::json!({"id": "east", "name": "East"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = send(
        Method::PUT,
        "/v1/admin/orgs/acme/devices/a-x1",
        &boss,
        Some(serde_json::json!({"order_group": "east", "shipment_label": "pallet 7"})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = send(
        Method::POST,
        "/v1/admin/orgs/acme/user-groups",
        &boss,
        Some(
            serde_json::json!({"id": "east-desk", "name": "East desk", "role": "viewer", "order_groups": ["east"],
                                "rules": [{"kind": "email", "value": "east@freelance.example"}]}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let east = token(&s, &["--email", "east@freelance.example"]);
    let (_, d) = get(&s, &c, &east, "/v1/devices").await;
    assert_eq!(ids(&d, "devices", "id"), ["a-x1"]);
    // Clear errors for bad input; nothing changed.
    let (st, b) = send(
        Method::POST,
        "/v1/admin/orgs/acme/user-groups/east-desk/rules",
        &boss,
        Some(serde_json::json!({"kind": "phone", "value": "1"})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(b["detail"].as_str().unwrap().contains("kind"), "{b}");
    let (st, _) = send(
        Method::POST,
        "/v1/admin/orgs/acme/order-groups",
        &boss,
        Some(serde_json::json!({"id": "east", "name": "again"})),
    )
    .await;
    assert_eq!(st, 409);

    // Neither a viewer nor another organization's admin may administer acme; only a platform
    // admin creates organizations.
    for t in [&clerk, &globex] {
        let (st, b) = send(
            Method::POST,
            "/v1/admin/orgs/acme/order-groups",
            t,
            Some(serde_json::json!({"id": "x", "name": "x"})),
        )
        .await;
        assert_eq!(st, 403, "{b}");
        let (st, _) = send(Method::GET, "/v1/admin/orgs/acme/audit", t, None).await;
        assert_eq!(st, 403);
    }
    let (st, _) = send(
        Method::POST,
        "/v1/admin/orgs",
        &boss,
        Some(serde_json::json!({"id": "initech", "name": "Initech"})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = send(
        Method::POST,
        "/v1/admin/orgs",
        &root,
        Some(serde_json::json!({"id": "initech", "name": "Initech"})),
    )
    .await;
    assert_eq!(st, 201);
    // A platform administrator's change inside acme is an override.
    let (st, b) = send(
        Method::DELETE,
        "/v1/admin/orgs/acme/user-groups/east-desk/rules?kind=email&value=east@freelance.example",
        &root,
        None,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let (_, d) = get(&s, &c, &east, "/v1/devices").await;
    assert_eq!(
        ids(&d, "devices", "id"),
        Vec::<String>::new(),
        "the removed rule no longer admits"
    );

    // Reads.
    get(&s, &c, &clerk, "/v1/devices/a-n1/track").await;
    get(&s, &c, &root, "/v1/devices/g-1").await;

    let (st, trail) = send(Method::GET, "/v1/admin/orgs/acme/audit?limit=1000", &boss, None).await;
    assert_eq!(st, 200, "{trail}");
    let rows = trail.as_array().unwrap();
    let has = |action: &str, actor_email: &str, over: bool| {
        rows.iter().any(|r| {
            r["action"] == action
                && r["actor_email"] == actor_email
                && r["override"] == over
                && r["remote_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:"))
        })
    };
    assert!(has("order_group.add", "boss@acme.example", false), "{trail}");
    assert!(has("device.shipment", "boss@acme.example", false), "{trail}");
    assert!(has("user_group.add", "boss@acme.example", false), "{trail}");
    assert!(has("rule.remove", "root@service.example", true), "{trail}");
    assert!(has("read.track", "clerk@acme.example", false), "{trail}");
    assert!(has("read.devices", "east@freelance.example", false), "{trail}");
    // Globex's read is in globex's trail, not acme's.
    assert!(!rows.iter().any(|r| r["org_id"] != "acme"), "{trail}");
    let (_, g) = send(Method::GET, "/v1/admin/orgs/globex/audit", &globex, None).await;
    let g = g.as_array().unwrap();
    assert!(
        g.iter().any(|r| r["action"] == "read.device"
            && r["actor_email"] == "root@service.example"
            && r["override"] == true),
        "{g:?}"
    );
    // Refused changes left no rows.
    assert!(
        !rows
            .iter()
            .any(|r| r["actor_email"] == "clerk@acme.example" && r["action"] == "order_group.add")
    );
    // The CLI's changes are there too, as the CLI.
    assert!(
        rows.iter()
            .any(|r| r["action"] == "device.assign" && r["actor"].as_str().unwrap().starts_with("cli:"))
    );
}

/// A live stream lasts only as long as the token it was opened with; reconnecting with the
/// expired token is refused.
async fn a_live_stream_ends_when_its_token_expires(backend: Backend) {
    let (_dir, s) = started_on(backend, "auth.leeway_secs = 0\n");
    seed(&s);
    let c = s.client();
    let t = token(&s, &["--email", "clerk@acme.example", "--ttl-secs", "3"]);
    let mut sse = Sse::open(&s, &c, &t).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while sse.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token by a minute");
    let again = c.get(s.url("/v1/stream")).bearer_auth(&t).send().await.unwrap();
    assert_eq!(again.status(), 401);
}

trackgate_e2e::on_both_backends!(
    each_membership_rule_sees_exactly_its_devices_on_every_endpoint,
    geojson_output_is_valid_rfc_7946,
    a_long_track_pages_through_every_point_once,
    admin_changes_and_location_reads_leave_audit_rows,
    a_live_stream_ends_when_its_token_expires,
);
