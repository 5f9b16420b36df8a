//! The map page in a real browser (Debian's Chromium, driven by playwright-core) against the
//! real binary: dev-token sign-in, exactly the user's devices on the map and in the list, stale
//! and low-battery marks, search, a record ingested over HTTPS moving its marker without a
//! reload, a device's track, reconnecting after the server restarts, another organization's user
//! seeing none of it, a phone-sized screen, and the page working with the tile servers blocked.
//! Screenshots are written under `target/test-artefacts/map/`.

use serde_json::{Value, json};
use std::io::Write;
use trackgate_e2e::browser::{Browser, artefacts};
use trackgate_e2e::op::{MAP_CLIENT, RealOp};
use trackgate_e2e::{Key, Server, free_port, now_ms, vector_supplier};

/// (device, organization, latitude, longitude): cities far enough apart never to cluster.
const DEVICES: [(&str, &str, f64, f64); 6] = [
    ("a-ham", "acme", 53.55, 9.99),
    ("a-mun", "acme", 48.14, 11.58),
    ("a-par", "acme", 48.86, 2.35),
    ("a-old", "acme", 48.21, 16.37),
    ("g-mad", "globex", 40.42, -3.70),
    ("g-rom", "globex", 41.90, 12.50),
];
const ACME: [&str; 4] = ["a-ham", "a-mun", "a-old", "a-par"];
const GLOBEX: [&str; 2] = ["g-mad", "g-rom"];
/// Positions per device in the seeded track.
const TRACK: u64 = 5;

fn key(id: &str) -> Key {
    Key::derived(id, "k1")
}

/// A server on a fixed port (so the page can reconnect to the same origin after a restart).
fn server(dir: &std::path::Path) -> Server {
    server_on(dir, free_port(), "")
}

fn server_on(dir: &std::path::Path, port: u16, extra_toml: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::File::create(dir.join("trackgate.toml")).unwrap();
    writeln!(
        f,
        "mode = \"dev\"\ndata_dir = {:?}\nhttp.listen = \"127.0.0.1:{port}\"\nops.listen = \"127.0.0.1:0\"\n\
         log.format = \"json\"\nlog.level = \"info\"\nauth.grants_refresh_secs = 1\n\
         events.settle_ms = 200\nevents.interval_ms = 100\n{extra_toml}",
        dir.join("data"),
    )
    .unwrap();
    Server::start_in(dir, "").unwrap()
}

fn seed(s: &Server) {
    s.add_supplier(&vector_supplier());
    for (org, name) in [("acme", "Acme Packaging"), ("globex", "Globex")] {
        s.ok(&["org", "add", org, "--name", name], None);
        s.ok(
            &[
                "user-group",
                "add",
                "--org",
                org,
                "staff",
                "--name",
                "staff",
                "--role",
                "viewer",
                "--domain",
                &format!("{org}.example"),
            ],
            None,
        );
    }
    // A geofence each: a circle round Hamburg's port for acme, a square over Rome for globex.
    s.ok(
        &[
            "geofence",
            "put",
            "--org",
            "acme",
            "port",
            "--name",
            "Acme port",
            "--circle",
            "9.99,53.55,2000",
        ],
        None,
    );
    let rome = r#"{"type": "Polygon", "coordinates": [[[12.4, 41.85], [12.6, 41.85], [12.6, 41.95], [12.4, 41.95], [12.4, 41.85]]]}"#;
    let file = s.dir.join("rome.json");
    std::fs::write(&file, rome).unwrap();
    s.ok(
        &[
            "geofence",
            "put",
            "--org",
            "globex",
            "rome",
            "--name",
            "Globex Rome",
            "--geojson",
            file.to_str().unwrap(),
        ],
        None,
    );
    for (dev, org, _, _) in DEVICES {
        s.add_device(&key(dev), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
        let label = format!("crate {dev}");
        s.ok(&["device", "shipment", dev, "--org", org, "--label", &label], None);
    }
}

fn envelope(dev: &str, seq: u64, ts: u64, lat: f64, lon: f64, bat: f64) -> String {
    key(dev).envelope(&format!(
        r#"{{"dev":"{dev}","seq":{seq},"ts":{ts},"lat":{lat},"lon":{lon},"bat":{bat},"tmp":4.5}}"#
    ))
}

async fn post(s: &Server, envelopes: &[String]) {
    let body = format!("[{}]", envelopes.join(","));
    let reply = s.post(&s.client(), &vector_supplier(), "application/json", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.counts().0, envelopes.len() as u64, "{}", reply.body);
}

/// Five positions per device over the last 50 minutes, zigzagging north (a-old's three hours ago: stale);
/// a-par's battery is low.
async fn seed_tracks(s: &Server) {
    let now = now_ms();
    let mut all = Vec::new();
    for (dev, _, lat, lon) in DEVICES {
        let end = if dev == "a-old" {
            now - 3 * 3600 * 1000
        } else {
            now - 60_000
        };
        let bat = if dev == "a-par" { 12.0 } else { 80.0 };
        for seq in 1..=TRACK {
            let ts = end - (TRACK - seq) * 600_000;
            // A zigzag, so no point of the drawn line is redundant.
            let (north, east) = (seq as f64 * 0.01, (seq % 2) as f64 * 0.01);
            all.push(envelope(dev, seq, ts, lat + north, lon + east, bat));
        }
    }
    post(s, &all).await;
}

fn token(s: &Server, email: &str) -> String {
    s.ok(&["dev-token", "--email", email], None).trim().to_owned()
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

fn marker<'a>(markers: &'a Value, id: &str) -> &'a Value {
    markers
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no marker for {id} in {markers}"))
}

fn classes(v: &Value) -> Vec<&str> {
    v["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

/// Open the page in a fresh browser context and sign in with a dev token for `email`.
fn sign_in(b: &mut Browser, s: &Server, email: &str, viewport: (u32, u32), tiles: &str) -> Value {
    sign_in_with(b, s, &token(s, email), email, viewport, tiles)
}

fn sign_in_with(b: &mut Browser, s: &Server, token: &str, email: &str, viewport: (u32, u32), tiles: &str) -> Value {
    b.call(
        "launch",
        json!({"viewport": {"width": viewport.0, "height": viewport.1}, "tiles": tiles, "dir": artefacts("map")}),
    );
    let page = b.call("goto", json!({"url": s.url("/")}));
    assert_eq!(page["status"], 200);
    let who = b.call("dev_sign_in", json!({"token": token}));
    assert_eq!(who, email);
    page
}

#[tokio::test]
async fn operator_sees_own_devices_live_with_tracks_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = server(dir.path());
    seed(&s);
    seed_tracks(&s).await;
    let mut b = Browser::start();

    // The page's security headers.
    let page = sign_in(&mut b, &s, "clerk@acme.example", (1280, 800), "serve");
    let h = &page["headers"];
    let csp = h["content-security-policy"].as_str().unwrap();
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        csp.contains("img-src 'self' data: https://tile.openstreetmap.org;"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin");

    // Exactly acme's devices, on the map and in the list; stale and low battery marked.
    let markers = b.call("wait_markers", json!({"ids": ACME}));
    assert!(classes(marker(&markers, "a-old")).contains(&"stale"), "{markers}");
    assert!(classes(marker(&markers, "a-par")).contains(&"low"), "{markers}");
    assert!(!classes(marker(&markers, "a-ham")).contains(&"stale"), "{markers}");
    let list = b.call("list", Value::Null);
    assert_eq!(ids(&list), ACME);
    let par = list.as_array().unwrap().iter().find(|x| x["id"] == "a-par").unwrap();
    assert!(par["text"].as_str().unwrap().contains("12 %"), "{par}");
    assert!(par["text"].as_str().unwrap().contains("low battery"), "{par}");
    let old = list.as_array().unwrap().iter().find(|x| x["id"] == "a-old").unwrap();
    assert!(old["text"].as_str().unwrap().contains("stale"), "{old}");
    let tiles = b.errors()["tiles"]["served"].as_u64().unwrap();
    assert!(tiles > 0, "the map asked for no tiles");
    b.call("wait_live", json!({"state": "live"}));
    b.call("screenshot", json!({"name": "desktop-signed-in"}));

    // Search by device id or shipment label.
    assert_eq!(b.call("search", json!({"text": "MUN"})), json!(["a-mun"]));
    assert_eq!(
        b.call("search", json!({"text": "crate a-"})).as_array().unwrap().len(),
        4
    );
    assert_eq!(b.call("search", json!({"text": "g-mad"})), json!([]));
    b.call("search", json!({"text": ""}));

    // A record ingested over HTTPS moves its marker, without a reload; another organization's
    // record in the same batch shows nowhere.
    let before = marker(&b.call("markers", Value::Null), "a-ham").clone();
    b.call("eval", json!({"expr": "window.__samePage = 42"}));
    let now = now_ms();
    post(
        &s,
        &[
            envelope("g-mad", TRACK + 1, now, 40.0, -3.0, 50.0),
            envelope("a-ham", TRACK + 1, now, 54.2, 10.6, 77.0),
        ],
    )
    .await;
    let moved = b.call("wait_moved", json!({"id": "a-ham", "x": before["x"], "y": before["y"]}));
    assert!(
        moved["x"].as_f64().unwrap() > before["x"].as_f64().unwrap(),
        "moved east: {moved}"
    );
    assert!(
        moved["y"].as_f64().unwrap() < before["y"].as_f64().unwrap(),
        "moved north: {moved}"
    );
    assert_eq!(
        b.call("eval", json!({"expr": "window.__samePage"})),
        42,
        "the page reloaded"
    );
    assert_eq!(ids(&b.call("markers", Value::Null)), ACME);
    b.call(
        "wait_text",
        json!({"selector": "#devices li[data-device=a-ham]", "contains": "77 %"}),
    );

    // A late record from a device's backlog (older than what the map shows) moves nothing.
    let ham = marker(&b.call("markers", Value::Null), "a-ham").clone();
    let mun = marker(&b.call("markers", Value::Null), "a-mun").clone();
    post(
        &s,
        &[
            envelope("a-ham", TRACK + 2, now - 30 * 60_000, 50.0, 5.0, 20.0),
            envelope("a-mun", TRACK + 1, now_ms(), 47.6, 12.2, 79.0),
        ],
    )
    .await;
    b.call("wait_moved", json!({"id": "a-mun", "x": mun["x"], "y": mun["y"]}));
    assert_eq!(
        marker(&b.call("markers", Value::Null), "a-ham"),
        &ham,
        "a late record moved a-ham"
    );
    let list = b.call("list", Value::Null);
    let ham_item = list.as_array().unwrap().iter().find(|x| x["id"] == "a-ham").unwrap();
    assert!(ham_item["text"].as_str().unwrap().contains("77 %"), "{ham_item}");
    b.call("screenshot", json!({"name": "desktop-live-moved"}));

    // A device's details and its track over the chosen range (the default: the last 24 h).
    let fields = b.call("select", json!({"id": "a-mun"}));
    assert!(fields.as_str().unwrap().contains("crate a-mun"), "{fields}");
    let track = b.call("track", json!({}));
    assert_eq!(track["points"], TRACK + 1, "{track}");
    assert_eq!(track["lines"], 1, "{track}");
    // Leaflet simplifies what it draws at the current zoom, so only a line is certain.
    assert!(track["vertices"].as_u64().unwrap() >= 2, "{track}");
    // A day is more than the page draws from every fix: it asked for the simplified track (here
    // every fix of the zigzag is kept).
    assert!(track["status"].as_str().unwrap().contains("simplified"), "{track}");
    b.call("screenshot", json!({"name": "desktop-track"}));
    // The range at full resolution as a file, through the page.
    let csv = b.call("download", json!({"format": "csv"}));
    assert!(csv["name"].as_str().unwrap().starts_with("a-mun-"), "{csv}");
    assert!(csv["name"].as_str().unwrap().ends_with(".csv"), "{csv}");
    let rows: Vec<&str> = csv["text"].as_str().unwrap().lines().collect();
    assert!(rows[0].starts_with("device_id,seq,ts,time,lat,lon"), "{csv}");
    assert_eq!(rows.len() as u64, TRACK + 2, "{csv}");
    assert!(rows[1..].iter().all(|r| r.starts_with("a-mun,")), "{csv}");
    // Playback: the marker starts at the first fix, the slider puts it at any fix or between two
    // (interpolated in time), and playing moves it along the track.
    let fixes: Vec<(f64, f64, f64)> = rows[1..]
        .iter()
        .map(|r| {
            let c: Vec<f64> = r.split(',').skip(2).map(|x| x.parse().unwrap_or(f64::NAN)).collect();
            (c[0], c[2], c[3])
        })
        .collect();
    assert_eq!(b.call("visible", json!({"selector": "#playback"})), true);
    let head = |b: &mut Browser| -> (f64, f64, f64) {
        let v = b.call(
            "eval",
            json!({"expr": "(() => { const d = document.getElementById('p-at').dataset; return [Number(d.ts), Number(d.lat), Number(d.lon)]; })()"}),
        );
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap(), v[2].as_f64().unwrap())
    };
    let seek = |b: &mut Browser, ts: f64| {
        b.call(
            "eval",
            json!({"expr": format!("(() => {{ const s = document.getElementById('p-time'); s.value = '{ts}'; s.dispatchEvent(new Event('input')); }})()")}),
        );
    };
    assert_eq!(head(&mut b), fixes[0]);
    seek(&mut b, fixes[2].0);
    assert_eq!(head(&mut b), fixes[2]);
    seek(&mut b, (fixes[1].0 + fixes[2].0) / 2.0);
    let mid = head(&mut b);
    assert!(
        (mid.1 - (fixes[1].1 + fixes[2].1) / 2.0).abs() < 1e-9,
        "{mid:?} {fixes:?}"
    );
    assert!(
        (mid.2 - (fixes[1].2 + fixes[2].2) / 2.0).abs() < 1e-9,
        "{mid:?} {fixes:?}"
    );
    seek(&mut b, fixes[0].0);
    let at = b.call("eval", json!({"expr": "document.getElementById('p-at').textContent"}));
    b.call("click", json!({"selector": "#p-play"}));
    b.call("wait_changed", json!({"selector": "#p-at", "from": at}));
    b.call("click", json!({"selector": "#p-play"}));
    let moved = head(&mut b);
    let last = fixes[fixes.len() - 1];
    assert!(moved.0 > fixes[0].0 && moved.0 < last.0, "{moved:?} {fixes:?}");
    b.call("screenshot", json!({"name": "playback"}));
    // A range with nothing in it draws nothing.
    let empty = b.call(
        "track",
        json!({"from": "2020-01-01T00:00:00", "to": "2020-01-02T00:00:00"}),
    );
    assert_eq!(empty["points"], 0, "{empty}");
    assert_eq!(empty["lines"], 0, "{empty}");
    b.assert_clean("while signed in");

    // Back to every device.
    b.call("click", json!({"selector": "#d-close"}));
    b.call("click", json!({"selector": ".tg-fit-all"}));
    b.call("wait_markers", json!({"ids": ACME}));

    // The server restarts: the page notices, reconnects to the stream, and follows it again.
    s.restart().unwrap();
    b.call("wait_live", json!({"state": "reconnecting"}));
    b.call("wait_live", json!({"state": "live"}));
    let before = marker(&b.call("markers", Value::Null), "a-par").clone();
    post(&s, &[envelope("a-par", TRACK + 1, now_ms(), 47.9, 1.9, 11.0)]).await;
    b.call("wait_moved", json!({"id": "a-par", "x": before["x"], "y": before["y"]}));
    assert_eq!(
        b.call("eval", json!({"expr": "window.__samePage"})),
        42,
        "the page reloaded"
    );
    let e = b.errors();
    // Only the dropped stream may have logged (Chromium reports a broken chunked response).
    for c in e["console"].as_array().unwrap() {
        assert!(
            c["url"].as_str().unwrap_or_default().contains("/v1/stream"),
            "console error: {c}"
        );
    }
    assert_eq!(e["page"], json!([]));
    assert_eq!(e["external"], json!([]));
}

/// Wait until the seeded tracks' geofence events are computed: a-ham enters and leaves acme's
/// port, g-rom enters globex's Rome.
async fn wait_seeded_events(s: &Server) {
    let db = s.db().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_events")
            .fetch_one(&db)
            .await
            .unwrap();
        if n >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{n} events computed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.close().await;
}

#[tokio::test]
async fn other_organizations_phones_and_no_tiles() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    seed(&s);
    seed_tracks(&s).await;
    wait_seeded_events(&s).await;
    let mut b = Browser::start();

    // Globex's user sees Globex's devices and nothing of acme's, anywhere on the page.
    sign_in(&mut b, &s, "ops@globex.example", (1280, 800), "serve");
    b.call("wait_markers", json!({"ids": GLOBEX}));
    b.call("wait_live", json!({"state": "live"}));
    assert_eq!(ids(&b.call("list", Value::Null)), GLOBEX);
    post(&s, &[envelope("a-mun", TRACK + 1, now_ms(), 48.5, 11.9, 70.0)]).await;
    // The acme record is committed and streamed to whoever may see it; give the page a moment
    // to (wrongly) show it, then look for any trace of acme.
    let before = marker(&b.call("markers", Value::Null), "g-rom").clone();
    post(&s, &[envelope("g-rom", TRACK + 1, now_ms(), 42.5, 13.0, 70.0)]).await;
    b.call("wait_moved", json!({"id": "g-rom", "x": before["x"], "y": before["y"]}));
    // Globex's geofence is drawn; acme's is not. Its event is listed, named; acme's are not.
    assert_eq!(
        b.call("wait_attr", json!({"selector": "#map", "name": "data-geofences"})),
        "1"
    );
    b.call(
        "wait_text",
        json!({"selector": "#event-list", "contains": "crate g-rom: entered Globex Rome"}),
    );
    assert_eq!(
        b.call("wait_attr", json!({"selector": "#event-list", "name": "data-count"})),
        "1"
    );
    assert_eq!(
        b.call(
            "eval",
            json!({"expr": "document.querySelectorAll('.leaflet-geofences-pane path').length"})
        ),
        1
    );
    let html = b.call("eval", json!({"expr": "document.documentElement.outerHTML"}));
    for dev in ACME.iter().chain(&["Acme port"]) {
        assert!(!html.as_str().unwrap().contains(dev), "{dev} appears on Globex's page");
    }
    assert_eq!(ids(&b.call("markers", Value::Null)), GLOBEX);
    b.call("screenshot", json!({"name": "other-organization"}));
    b.assert_clean("for the other organization");

    // A user in no group signs in and sees an empty map.
    sign_in(&mut b, &s, "nobody@elsewhere.example", (1280, 800), "serve");
    b.call("wait_live", json!({"state": "live"}));
    assert_eq!(b.call("markers", Value::Null), json!([]));
    assert_eq!(b.call("list", Value::Null), json!([]));

    // A phone-sized screen: the map on top, the list below it, both usable.
    sign_in(&mut b, &s, "clerk@acme.example", (390, 844), "serve");
    b.call("wait_markers", json!({"ids": ACME}));
    let layout = b.call(
        "eval",
        json!({"expr": "(() => { const m = document.getElementById('map').getBoundingClientRect(); \
            const l = document.querySelector('.side').getBoundingClientRect(); \
            return { mapBottom: m.bottom, mapWidth: m.width, listTop: l.top, listWidth: l.width, \
                     scrollWidth: document.documentElement.scrollWidth }; })()"}),
    );
    assert!(layout["mapBottom"].as_f64() <= layout["listTop"].as_f64(), "{layout}");
    assert_eq!(layout["mapWidth"], 390, "{layout}");
    assert_eq!(layout["listWidth"], 390, "{layout}");
    assert_eq!(layout["scrollWidth"], 390, "no sideways scrolling: {layout}");
    let title = b.call("select_marker", json!({"id": "a-ham"}));
    assert_eq!(title, "crate a-ham");
    // The device's own events, in its details: into acme's port and out again.
    b.call(
        "wait_text",
        json!({"selector": "#d-events", "contains": "left Acme port"}),
    );
    b.call(
        "wait_text",
        json!({"selector": "#d-events", "contains": "entered Acme port"}),
    );
    b.call("screenshot", json!({"name": "phone"}));
    // Zoomed out, nearby devices fold into clusters that count them.
    b.call("click", json!({"selector": "#d-close"}));
    let clusters = b.call("zoom_out_until_clustered", json!({"total": ACME.len()}));
    assert!(!clusters.as_array().unwrap().is_empty(), "{clusters}");
    b.call("screenshot", json!({"name": "phone-clustered"}));
    b.assert_clean("on a phone");

    // The tile servers are unreachable: markers still appear, on the world basemap, the page
    // says the tiles are unavailable, and the only errors are the failed tile requests.
    sign_in(&mut b, &s, "clerk@acme.example", (1280, 800), "block");
    b.call("wait_markers", json!({"ids": ACME}));
    b.call("wait_live", json!({"state": "live"}));
    b.call(
        "wait_text",
        json!({"selector": ".leaflet-control-container", "contains": "tiles unavailable"}),
    );
    // Under the markers, the world basemap (Natural Earth's countries) instead of a blank plane.
    let countries = b.call("wait_attr", json!({"selector": "#map", "name": "data-basemap"}));
    assert!(
        countries.as_str().unwrap().parse::<u32>().unwrap_or(0) > 200,
        "{countries}"
    );
    let canvas = b.call(
        "eval",
        json!({"expr": "(() => { const c = document.querySelector('.leaflet-basemap-pane canvas'); \
            if (!c) return 0; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
            let land = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) land++; return land; })()"}),
    );
    assert!(
        canvas.as_u64().unwrap() > 10_000,
        "the basemap's canvas is empty: {canvas}"
    );
    // Acme's geofence, drawn on it.
    assert_eq!(
        b.call("wait_attr", json!({"selector": "#map", "name": "data-geofences"})),
        "1"
    );
    b.call("screenshot", json!({"name": "basemap"}));
    b.call("select", json!({"id": "a-par"}));
    assert_eq!(b.call("track", json!({}))["points"], TRACK);
    b.call("screenshot", json!({"name": "tiles-blocked"}));
    let e = b.errors();
    assert!(e["tiles"]["blocked"].as_u64().unwrap() > 0, "{e}");
    for c in e["console"].as_array().unwrap() {
        assert!(
            c["url"]
                .as_str()
                .unwrap_or_default()
                .starts_with("https://tile.openstreetmap.org/"),
            "an error other than a blocked tile: {c}"
        );
    }
    assert_eq!(e["page"], json!([]));
    assert_eq!(e["external"], json!([]));
}

/// The seeded server signing in through a real OpenID provider (oidc-provider from npm), whose
/// users are all in `op-group` (here a group of acme with `role`) and have @op.example addresses.
/// `extra_toml` is top-level keys (dotted).
fn with_provider(dir: &std::path::Path, role: &str, extra_toml: &str) -> (RealOp, Server) {
    let port = free_port();
    let op = RealOp::start(&dir.join("op"), Some(&format!("https://localhost:{port}/")));
    let issuer = format!(
        "{extra_toml}[[auth.issuers]]\nissuer = {:?}\naudience = {MAP_CLIENT:?}\nca = {:?}\n\
         name = \"Test OP\"\nscopes = [\"openid\", \"email\", \"groups\"]\n",
        op.issuer, op.ca
    );
    let s = server_on(&dir.join("tg"), port, &issuer);
    seed(&s);
    s.add_user_group("acme", "op-users", role, "--idp-group", "op-group");
    (op, s)
}

/// Sign in through a real OpenID provider (oidc-provider from npm): the authorization code flow
/// with PKCE, in the browser, through the provider's own login and consent pages. The page ends
/// up signed in as the provider's user, with no code or token left in its address.
#[tokio::test]
async fn operator_signs_in_through_an_openid_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (op, s) = with_provider(dir.path(), "viewer", "");
    seed_tracks(&s).await;

    let mut b = Browser::start();
    b.call("launch", json!({"dir": artefacts("map"), "allow": [op.issuer]}));
    b.call("goto", json!({"url": s.url("/")}));
    let csp = b.call(
        "eval",
        json!({"expr": "fetch('/').then(r => r.headers.get('content-security-policy'))"}),
    );
    assert!(
        csp.as_str()
            .unwrap()
            .contains(&format!("connect-src 'self' {};", op.issuer)),
        "{csp}"
    );
    let signed_in = b.call(
        "provider_sign_in",
        json!({"button": "Sign in with Test OP", "login": "ann"}),
    );
    assert_eq!(signed_in["who"], "ann@op.example", "{signed_in}");
    assert_eq!(signed_in["url"], s.url("/"), "the code must not stay in the address");
    b.call("wait_markers", json!({"ids": ACME}));
    b.call("wait_live", json!({"state": "live"}));
    b.call("screenshot", json!({"name": "provider-signed-in"}));
    // The token is kept for this tab only, never in localStorage or a cookie.
    let stored = b.call(
        "eval",
        json!({"expr": "({ local: localStorage.length, cookies: document.cookie, \
            session: Object.keys(sessionStorage).some(k => sessionStorage.getItem(k).includes('id_token')) })"}),
    );
    assert_eq!(stored["local"], 0, "{stored}");
    assert_eq!(stored["cookies"], "", "{stored}");
    assert_eq!(stored["session"], true, "{stored}");
    // Neither the token nor the code reached trackgate's log.
    let id_token = b.call(
        "eval",
        json!({"expr": "Object.keys(sessionStorage).map(k => sessionStorage.getItem(k)).filter(v => v.includes('id_token')).map(v => JSON.parse(v).id_token)[0]"}),
    );
    let id_token = id_token.as_str().unwrap();
    assert!(id_token.len() > 100, "{id_token}");
    let log = s.log_text();
    assert!(!log.contains(id_token), "the ID token is in trackgate's log");
    assert!(!log.contains("code="), "an authorization code is in trackgate's log");
    // Signing out forgets it.
    b.call("click", json!({"selector": "#sign-out"}));
    b.call(
        "wait_text",
        json!({"selector": "#issuers", "contains": "Sign in with Test OP"}),
    );
    let left = b.call(
        "eval",
        json!({"expr": "Object.keys(sessionStorage).filter(k => sessionStorage.getItem(k).includes('id_token')).length"}),
    );
    assert_eq!(left, 0);
    let e = b.errors();
    assert_eq!(e["page"], json!([]), "{e}");
    // The provider's own pages fetch fonts from elsewhere (blocked here); trackgate's never do.
    for x in e["external"].as_array().unwrap() {
        assert!(
            x["page"].as_str().unwrap_or_default().starts_with(&op.issuer),
            "trackgate's page fetched from elsewhere: {x}"
        );
    }
    for c in e["console"].as_array().unwrap() {
        assert!(
            c["page"].as_str().unwrap_or_default().starts_with(&op.issuer),
            "a console error on trackgate's page: {c}"
        );
    }
}

/// The issue's demonstration: the Quick start server (embedded defaults), a fleet from
/// firmware-sim assigned to an organization, and its shipments appearing and moving on the map
/// as the simulator sends.
#[tokio::test]
async fn firmware_sim_shipments_move_on_the_quick_start_map() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_defaults(dir.path(), free_port()).unwrap();
    // Both run as the README says: in the server's directory, on the embedded defaults.
    let run = |program: &std::path::Path, args: &[&str]| trackgate_e2e::run_ok(dir.path(), program, args);
    let trackgate = trackgate_e2e::binary();
    let sim = |args: &[&str]| run(&trackgate_e2e::built("firmware-sim"), args);
    sim(&["roster", "--devices", "3"]);
    sim(&["provision", "--trackgate", trackgate.to_str().unwrap(), "--org", "demo"]);
    let staff = [
        "user-group",
        "add",
        "--org",
        "demo",
        "staff",
        "--name",
        "Staff",
        "--role",
        "viewer",
    ];
    run(&trackgate, &[&staff[..], &["--domain", "demo.example"]].concat());
    let token = run(&trackgate, &["dev-token", "--email", "ann@demo.example"]);

    let mut b = Browser::start();
    sign_in_with(&mut b, &s, token.trim(), "ann@demo.example", (1280, 800), "serve");
    b.call("wait_live", json!({"state": "live"}));
    // Provisioned, assigned, never seen: listed, not yet on the map.
    let list = b.call("list", Value::Null);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert!(list[0]["text"].as_str().unwrap().contains("never seen"), "{list}");
    assert!(list[0]["text"].as_str().unwrap().contains("shipment "), "{list}");
    assert_eq!(b.call("markers", Value::Null), json!([]));

    let url = s.url("");
    sim(&["send", "--url", &url, "--records", "1"]);
    b.call("wait_shown", json!({"total": 3}));
    let first = list[0]["id"].as_str().unwrap().to_owned();
    b.call("select", json!({"id": first}));
    let position = "#d-fields dd[data-field=position]";
    let before = b.call("wait_text", json!({"selector": position, "contains": "."}));
    sim(&["send", "--url", &url, "--records", "3"]);
    let after = b.call("wait_changed", json!({"selector": position, "from": before}));
    assert_ne!(before, after);
    b.call("wait_shown", json!({"total": 3}));
    b.call("screenshot", json!({"name": "firmware-sim"}));
    b.assert_clean("with firmware-sim sending");
}

/// What the page is served with, without a browser: its configuration, an unknown asset, and
/// `ui.enabled = false` leaving only the API.
#[tokio::test]
async fn the_page_follows_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[ui]\ntile_url = \"\"\nstale_after_secs = 600\n").unwrap();
    let c = s.client();
    let config: Value = c
        .get(s.url("/ui/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["tiles"], Value::Null, "{config}");
    assert_eq!(config["stale_after_secs"], 600, "{config}");
    assert_eq!(config["dev_tokens"], true, "{config}");
    let page = c.get(s.url("/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("img-src 'self' data:;"), "no tile server to allow: {csp}");
    assert!(
        page.headers().get("strict-transport-security").is_none(),
        "no HSTS in dev mode"
    );
    let js = c.get(s.url("/assets/vendor/leaflet/leaflet.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(js.headers()["x-content-type-options"], "nosniff");
    let missing = c.get(s.url("/assets/../Cargo.toml")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), "[ui]\nenabled = false\n").unwrap();
    let c = s.client();
    assert_eq!(c.get(s.url("/")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(s.url("/ui/config.json")).send().await.unwrap().status(), 404);
    assert_eq!(
        c.get(s.url("/v1/devices")).send().await.unwrap().status(),
        401,
        "the API stays"
    );
}

/// The page signs its user out after `ui.idle_timeout_secs` without activity, and not while the
/// user is active; the token leaves the tab's storage and the sign-in page says why.
#[tokio::test]
async fn an_idle_page_signs_its_user_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_on(
        dir.path(),
        free_port(),
        "[ui]\nidle_timeout_secs = 5\ntile_url = \"\"\n",
    );
    seed(&s);
    let mut b = Browser::start();
    sign_in(&mut b, &s, "clerk@acme.example", (1280, 800), "block");
    // Keys pressed every second for eight seconds: still signed in.
    for _ in 0..8 {
        b.call(
            "eval",
            json!({"expr": "window.dispatchEvent(new KeyboardEvent('keydown')); true"}),
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(
        b.call("visible", json!({"selector": "#app"})),
        json!(true),
        "active, so still signed in"
    );
    // Then nothing: signed out, with the reason, and the token gone from the tab.
    let said = b.call(
        "wait_text",
        json!({"selector": "#signin-error", "contains": "without activity"}),
    );
    assert!(
        said.as_str()
            .unwrap()
            .contains("Signed out after 5 seconds without activity"),
        "{said}"
    );
    // The notice shows as the fresh page loads; the sign-in form once its config has come.
    let mut shown = false;
    for _ in 0..100 {
        if b.call("visible", json!({"selector": "#signin"})) == json!(true) {
            shown = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(shown, "the sign-in form is shown");
    assert_eq!(b.call("visible", json!({"selector": "#app"})), json!(false));
    assert_eq!(
        b.call("eval", json!({"expr": "sessionStorage.getItem('trackgate.dev-token')"})),
        Value::Null
    );
    b.assert_clean("after the idle sign-out");
}

/// An admin change with a sign-in older than `auth.reauth_max_age_secs`: the API answers 401
/// `insufficient_user_authentication`, the page sends its user back to the provider for a fresh
/// sign-in (`prompt=login`: the provider shows its login page though its session is alive), and
/// makes the change once back, under the new token.
#[tokio::test]
async fn an_admin_change_asks_for_a_fresh_sign_in_and_is_made_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (op, s) = with_provider(dir.path(), "admin", "auth.reauth_max_age_secs = 10\n");
    let mut b = Browser::start();
    b.call("launch", json!({"dir": artefacts("map"), "allow": [op.issuer]}));
    b.call("goto", json!({"url": s.url("/")}));
    let first = b.call(
        "provider_sign_in",
        json!({"button": "Sign in with Test OP", "login": "ann"}),
    );
    assert_eq!(first["logins"], 1, "{first}");
    let auth_time = "Object.keys(sessionStorage).map(k => sessionStorage.getItem(k)).filter(v => v.includes('id_token'))\
        .map(v => JSON.parse(atob(JSON.parse(v).id_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).auth_time)[0]";
    let before = b.call("eval", json!({"expr": auth_time})).as_u64().unwrap();
    b.call("click", json!({"selector": "#settings-open"}));
    b.call(
        "wait_text",
        json!({"selector": "#s-kept", "contains": "days (the service's default)"}),
    );
    // Let the sign-in grow older than the 10 s the server allows for a change.
    std::thread::sleep(std::time::Duration::from_secs(12));
    b.call("fill", json!({"selector": "#s-days", "value": "30"}));
    let again = b.call("provider_sign_in", json!({"button": "Save retention", "login": "ann"}));
    assert_eq!(
        again["logins"], 1,
        "the provider did not ask for a fresh sign-in: {again}"
    );
    assert_eq!(again["url"], s.url("/"), "{again}");
    b.call(
        "wait_text",
        json!({"selector": "#s-status", "contains": "Saved after a fresh sign-in: acme's positions retention is 30 days"}),
    );
    b.call("wait_text", json!({"selector": "#s-kept", "contains": "kept 30 days."}));
    b.call("screenshot", json!({"name": "fresh-sign-in-saved"}));
    let after = b.call("eval", json!({"expr": auth_time})).as_u64().unwrap();
    assert!(after > before, "auth_time {before} -> {after}");
    // Made once, by ann, after the fresh sign-in; the stale attempt changed nothing.
    let orgs = s.json_lines(&["org", "list"]);
    let acme = orgs.iter().find(|o| o["id"] == "acme").unwrap();
    assert_eq!(acme["positions_retention_days"], 30, "{acme}");
    let audit = s.json_lines(&["audit", "--org", "acme"]);
    let set: Vec<&Value> = audit.iter().filter(|e| e["action"] == "retention.set").collect();
    assert_eq!(set.len(), 1, "{audit:?}");
    assert_eq!(set[0]["actor_email"], "ann@op.example", "{audit:?}");
    assert_eq!(set[0]["target"], "positions_days=30", "{audit:?}");
    assert!(!s.json_lines(&["audit", "verify"]).is_empty());
    let e = b.errors();
    assert_eq!(e["page"], json!([]), "{e}");
}

/// A fleet: 10,000 visible devices (four provisioned as usual, the rest with their assignment and
/// latest position written straight into the database). They all load on the map, the list holds
/// only the rows in view, search finds one at once, and while records stream in at about 1,000 a
/// second the page keeps drawing and a live record moves its marker. What it measured (sign-in to
/// every marker, the JS heap, frames dropped under the stream) is printed and kept beside the
/// screenshots as `fleet.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_load_search_and_follow_the_stream() {
    const FLEET: usize = 9_996;
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    seed(&s);
    let db = format!("sqlite://{}", dir.path().join("data/trackgate.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let now = now_ms() as i64;
    for sql in [
        "INSERT INTO principals (id, kind, enabled, created_ms) SELECT printf('f-%05d', value), 'device', 1, 0 FROM n",
        "INSERT INTO device_assignments (device_id, org_id, shipment_label, assigned_ms) \
         SELECT printf('f-%05d', value), 'acme', printf('crate f-%05d', value), 0 FROM n",
        "INSERT INTO latest_positions (device_id, seq, ts, lat, lon, bat, tmp, received_ms) \
         SELECT printf('f-%05d', value), 1, $1 - value * 1000, 36.0 + (value % 100) * 0.2, -8.0 + (value / 100) * 0.25, 80, 5, $1 FROM n",
    ] {
        let sql = format!(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < {FLEET}) {sql}"
        );
        sqlx::query(&sql).bind(now).execute(&pool).await.unwrap();
    }
    pool.close().await;
    seed_tracks(&s).await;
    let total = FLEET + ACME.len();

    let mut b = Browser::start();
    let started = std::time::Instant::now();
    sign_in(&mut b, &s, "clerk@acme.example", (1280, 800), "serve");
    b.call(
        "wait_text",
        json!({"selector": "#count", "contains": format!("{total} devices")}),
    );
    b.call("wait_shown", json!({"total": total}));
    let loaded_s = started.elapsed().as_secs_f64();
    b.call("screenshot", json!({"name": "fleet"}));
    // The list is as long as the fleet, but only the rows in view are in the page.
    let rows = b.call("list", json!({})).as_array().unwrap().len();
    assert!(rows > 5 && rows < 60, "{rows} rows in the page");
    let height = b.call(
        "eval",
        json!({"expr": "document.getElementById('devices').scrollHeight"}),
    );
    assert!(height.as_u64().unwrap() > 52 * total as u64 - 100, "{height}");
    // Scrolled to the end, the last devices are there.
    b.call(
        "eval",
        json!({"expr": "(() => { const l = document.getElementById('devices'); l.scrollTop = l.scrollHeight; l.dispatchEvent(new Event('scroll')); })()"}),
    );
    b.call(
        "wait_text",
        json!({"selector": "#devices", "contains": "crate f-09996"}),
    );
    // Search finds one device among them.
    assert_eq!(b.call("search", json!({"text": "f-04321"})), json!(["f-04321"]));
    b.call(
        "wait_text",
        json!({"selector": "#count", "contains": format!("1 of {total} devices")}),
    );

    // a-mun, shown on its own, then records streaming in for acme's devices at about 1,000 a
    // second for five seconds; the last of them moves a-mun.
    assert_eq!(b.call("search", json!({"text": "a-mun"})), json!(["a-mun"]));
    b.call("select", json!({"id": "a-mun"}));
    // The map zooms until a-mun stands on its own: where it rests.
    let mut last = Value::Null;
    let m = loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = b.call("markers", json!({}));
        let at = now
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == "a-mun")
            .cloned()
            .unwrap_or(Value::Null);
        if !at.is_null() && at == last {
            break at;
        }
        assert!(started.elapsed().as_secs() < 120, "a-mun's marker never showed: {now}");
        last = at;
    };
    let heap_before = b.call("heap", json!({})).as_f64().unwrap();
    b.call("frames_start", json!({}));
    let posted = stream_records(&s, 5, 1000).await;
    let frames = b.call("frames_stop", json!({}));
    b.call("wait_moved", json!({"id": "a-mun", "x": m["x"], "y": m["y"]}));
    let heap = b.call("heap", json!({})).as_f64().unwrap();
    b.call("screenshot", json!({"name": "fleet-live"}));
    b.assert_clean("with ten thousand devices");
    assert!(frames["frames"].as_u64().unwrap() > 60, "{frames}");

    let measured = json!({
        "devices": total,
        "sign_in_to_all_markers_s": loaded_s,
        "js_heap_mb": heap_before / 1e6,
        "js_heap_after_stream_mb": heap / 1e6,
        "records_streamed": posted,
        "frames": frames,
    });
    eprintln!("fleet: {measured}");
    std::fs::write(artefacts("map").join("fleet.json"), measured.to_string()).unwrap();
}

/// Post records for acme's devices at about `per_s` a second for `secs` seconds (batches every
/// 100 ms), each device moving a little north; a-mun's last record is well away. How many.
async fn stream_records(s: &Server, secs: u64, per_s: u64) -> u64 {
    let base = now_ms();
    let ticks = secs * 10;
    let per_tick = per_s / 10;
    let mut seq = 1000;
    let mut posted = 0;
    let mut at = tokio::time::interval(std::time::Duration::from_millis(100));
    for tick in 0..ticks {
        at.tick().await;
        let mut batch = Vec::new();
        for i in 0..per_tick {
            let (dev, _, lat, lon) = DEVICES[(i % 4) as usize];
            seq += 1;
            let last = tick == ticks - 1 && i >= per_tick - 4;
            let north = if last && dev == "a-mun" {
                0.05
            } else {
                seq as f64 * 1e-7
            };
            batch.push(envelope(dev, seq, base + seq, lat + north, lon, 80.0));
        }
        posted += batch.len() as u64;
        post(s, &batch).await;
    }
    posted
}

/// The value of `#share`'s `data-<name>` in the open page.
fn share_attr(b: &mut Browser, name: &str) -> Value {
    b.call(
        "eval",
        json!({"expr": format!("document.getElementById('share').dataset.{name} || ''")}),
    )
}

#[tokio::test]
async fn a_share_link_shows_one_shipment_live_until_it_is_revoked_or_expires() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    seed(&s);
    seed_tracks(&s).await;
    let clerk = token(&s, "clerk@acme.example");
    let c = s.client();
    let (st, made) = s
        .api(
            &c,
            reqwest::Method::POST,
            "/v1/devices/a-ham/shares",
            &clerk,
            Some(json!({"expires_in_secs": 3600})),
        )
        .await;
    assert_eq!(st, 200, "{made}");
    let tok = made["token"].as_str().unwrap().to_owned();
    assert_eq!(tok.len(), 43);
    let url = made["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/share#{tok}")), "{url}");
    // A globex user may not share acme's device: it is not theirs to see.
    let ops = token(&s, "ops@globex.example");
    let (st, _) = s
        .api(
            &c,
            reqwest::Method::POST,
            "/v1/devices/a-ham/shares",
            &ops,
            Some(json!({"expires_in_secs": 60})),
        )
        .await;
    assert_eq!(st, 404);

    // Whoever opens it sees that one shipment, its track and position, and nothing else.
    let mut b = Browser::start();
    b.call(
        "launch",
        json!({"viewport": {"width": 1000, "height": 700}, "tiles": "serve", "dir": artefacts("map")}),
    );
    let page = b.call("goto", json!({"url": s.url(&format!("/share#{tok}"))}));
    assert_eq!(page["status"], 200);
    b.call("wait_text", json!({"selector": "#live", "contains": "live"}));
    assert_eq!(share_attr(&mut b, "points"), json!(TRACK.to_string()));
    b.call(
        "wait_text",
        json!({"selector": "#share-label", "contains": "crate a-ham"}),
    );
    let html = b.call("eval", json!({"expr": "document.documentElement.outerHTML"}));
    for other in ["a-mun", "a-par", "a-old", "g-mad", "g-rom", "Acme port", &tok] {
        assert!(!html.as_str().unwrap().contains(other), "{other} is on the shared page");
    }
    b.call("screenshot", json!({"name": "share"}));
    // Live: a new position of the shipment moves it on the page.
    post(&s, &[envelope("a-ham", TRACK + 1, now_ms(), 53.7, 10.2, 80.0)]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    while share_attr(&mut b, "position") != json!("53.7,10.2") {
        assert!(std::time::Instant::now() < deadline, "the shared page did not update");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(share_attr(&mut b, "points"), json!((TRACK + 1).to_string()));
    // The token reaches only its shipment, whatever else the request says.
    let r = c
        .get(s.url("/v1/shared?device=a-mun"))
        .header("x-tg-share", &tok)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["label"], "crate a-ham", "{body}");
    for bad in ["", "x", &"A".repeat(43)] {
        let r = c
            .get(s.url("/v1/shared"))
            .header("x-tg-share", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{bad:?}");
    }

    // Revoked: the page takes everything away at its next refresh.
    let id = made["link"]["id"].as_i64().unwrap();
    let (st, _) = s
        .api(
            &c,
            reqwest::Method::DELETE,
            &format!("/v1/devices/a-ham/shares/{id}"),
            &clerk,
            None,
        )
        .await;
    assert_eq!(st, 200);
    b.call(
        "wait_text",
        json!({"selector": "#share-status", "contains": "expired or was revoked"}),
    );
    assert_eq!(share_attr(&mut b, "state"), json!("gone"));
    assert_eq!(b.call("markers", Value::Null), json!([]));
    // The only error the page saw is the revoked link's 404.
    let e = b.errors();
    for c in e["console"].as_array().unwrap() {
        assert!(
            c["url"].as_str().unwrap_or_default().ends_with("/v1/shared")
                && c["text"].as_str().unwrap().contains("404"),
            "{c}"
        );
    }
    assert_eq!(e["page"], json!([]));
    assert_eq!(e["external"], json!([]));

    // Expired: a five-second link shows the shipment, then, once its time is up, nothing, and
    // answers like a missing one.
    let (_, short) = s
        .api(
            &c,
            reqwest::Method::POST,
            "/v1/devices/a-ham/shares",
            &clerk,
            Some(json!({"expires_in_secs": 5})),
        )
        .await;
    let short = short["token"].as_str().unwrap().to_owned();
    b.call(
        "launch",
        json!({"viewport": {"width": 1000, "height": 700}, "tiles": "serve", "dir": artefacts("map")}),
    );
    b.call("goto", json!({"url": s.url(&format!("/share#{short}"))}));
    b.call("wait_text", json!({"selector": "#live", "contains": "live"}));
    assert_eq!(share_attr(&mut b, "points"), json!((TRACK + 1).to_string()));
    b.call(
        "wait_text",
        json!({"selector": "#share-status", "contains": "expired or was revoked"}),
    );
    assert_eq!(share_attr(&mut b, "state"), json!("gone"));
    assert_eq!(b.call("markers", Value::Null), json!([]));
    let r = c
        .get(s.url("/v1/shared"))
        .header("x-tg-share", &short)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Each use is audited under the link; no token is in the audit log or the server's log.
    let trail = s.ok(&["audit", "--org", "acme", "--limit", "1000"], None);
    assert!(trail.contains("\"share.create\""), "{trail}");
    assert!(trail.contains("\"share.revoke\""), "{trail}");
    assert!(trail.contains(&format!("\"share:{id}\"")), "{trail}");
    let log = s.log_text();
    for t in [&tok, &short] {
        assert!(
            !trail.contains(t.as_str()) && !log.contains(t.as_str()),
            "a token was written down"
        );
    }
}
