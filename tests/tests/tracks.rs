//! Tracks at full and at screen resolution against the real binary, on both backends: a
//! synthetic day at one fix per 10 s with a stop and a GPS jump, simplified (ends, stop and jump
//! kept, every fix within the tolerance of the line at its time, a budget respected), paged
//! whole, and downloaded as GeoJSON (checked by the independent validator), GPX (checked by
//! xmllint against the GPX 1.1 schema) and CSV, each holding exactly the fixes of its range; a
//! large download streams without growing the server's memory; another organization's device
//! answers 404 to all of it.

use serde_json::Value;
use trackgate_e2e::{Backend, Key, Server, now_ms, on_both_backends, rss_mb, started_on};

/// One fix every 10 s for a day.
const FIXES: usize = 8_640;
const STEP_MS: i64 = 10_000;
/// Moving east until here, then stopped for two hours, then north; one fix far off the road.
const STOP_FROM: usize = 2_000;
const STOP_TO: usize = 2_720;
const JUMP: usize = 5_000;

fn key(id: &str) -> Key {
    Key::derived(id, "k1")
}

/// `truck` is acme's, `barge` globex's; boss@acme.example administers acme, clerk@globex.example
/// sees globex.
fn seed(s: &Server) {
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
    }
    for (dev, org) in [("truck", "acme"), ("barge", "globex")] {
        s.add_device(&key(dev), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
    }
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.add_user_group("globex", "staff", "viewer", "--domain", "globex.example");
}

/// The day's fix `i` (seq `i + 1`): time and position, with half a metre of GPS noise.
fn day_fix(day0: i64, i: usize) -> (i64, f64, f64) {
    let east = i.min(STOP_FROM) as f64 * 3e-4;
    let north = i.saturating_sub(STOP_TO) as f64 * 2e-4;
    let noise = (((i * 7919) % 11) as f64 - 5.0) * 1e-6;
    let off = if i == JUMP { 0.05 } else { 0.0 };
    (day0 + i as i64 * STEP_MS, 50.0 + north + noise, 8.0 + east + off)
}

/// Post `n` fixes of `dev` made by `fix` in requests of 1000.
async fn post_fixes(s: &Server, dev: &str, n: usize, fix: impl Fn(usize) -> (i64, f64, f64)) {
    let c = s.client();
    let k = key(dev);
    for start in (0..n).step_by(1000) {
        let batch: Vec<String> = (start..n.min(start + 1000))
            .map(|i| {
                let (ts, lat, lon) = fix(i);
                k.envelope(&format!(
                    r#"{{"dev":"{dev}","seq":{},"ts":{ts},"lat":{lat},"lon":{lon},"bat":77}}"#,
                    i + 1
                ))
            })
            .collect();
        let reply = s.post_envelopes(&c, &batch).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.counts().0, batch.len() as u64, "{}", reply.body);
    }
}

async fn get(s: &Server, token: &str, path: &str) -> (u16, String) {
    let r = s.client().get(s.url(path)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(s: &Server, token: &str, path: &str) -> Value {
    let (status, body) = get(s, token, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The fixes (`kind: "fix"`) of a track answer: `(seq, ts, lat, lon)`.
fn fixes(v: &Value) -> Vec<(usize, i64, f64, f64)> {
    v["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["kind"] == "fix")
        .map(|f| {
            let c = &f["geometry"]["coordinates"];
            (
                f["properties"]["seq"].as_u64().unwrap() as usize,
                f["properties"]["ts"].as_i64().unwrap(),
                c[1].as_f64().unwrap(),
                c[0].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Metres between two nearby positions.
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let x = (b.1 - a.1).to_radians() * ((a.0 + b.0) / 2.0).to_radians().cos();
    let y = (b.0 - a.0).to_radians();
    6_371_008.8 * x.hypot(y)
}

/// The largest distance of any fix of the day from where the simplified line puts the device at
/// that fix's time.
fn worst_error(day0: i64, kept: &[(usize, i64, f64, f64)]) -> f64 {
    let mut worst: f64 = 0.0;
    for w in kept.windows(2) {
        let ((s0, t0, la0, lo0), (s1, t1, la1, lo1)) = (w[0], w[1]);
        for i in s0..s1 - 1 {
            let (ts, lat, lon) = day_fix(day0, i);
            let f = (ts - t0) as f64 / (t1 - t0) as f64;
            let at = (la0 + f * (la1 - la0), lo0 + f * (lo1 - lo0));
            worst = worst.max(metres((lat, lon), at));
        }
    }
    worst
}

fn kept_near(kept: &[(usize, i64, f64, f64)], seq: usize) -> bool {
    kept.iter().any(|k| k.0.abs_diff(seq) <= 1)
}

async fn a_day_is_simplified_paged_and_downloaded_exactly(backend: Backend) {
    let (dir, s) = started_on(backend, "");
    seed(&s);
    let day0 = (now_ms() as i64 - 25 * 3_600_000) / 1000 * 1000;
    post_fixes(&s, "truck", FIXES, |i| day_fix(day0, i)).await;
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let day = format!("/v1/devices/truck/track?from={day0}&to={}", day0 + 24 * 3_600_000);

    // Simplified to 10 m: the ends, the stop's arrival and departure and the jump (with the fixes
    // either side of it) are kept, every fix is within 10 m of the line at its time, and a small
    // fraction of the day remains.
    let v = get_json(&s, &boss, &format!("{day}&tolerance_m=10")).await;
    let kept = fixes(&v);
    assert_eq!(v["simplified"]["fixes"], FIXES, "{}", v["simplified"]);
    assert_eq!(v["simplified"]["kept"], kept.len());
    assert_eq!(v["next"], Value::Null);
    assert_eq!(kept.first().unwrap().0, 1);
    assert_eq!(kept.last().unwrap().0, FIXES);
    for seq in [STOP_FROM + 1, STOP_TO + 1, JUMP, JUMP + 1, JUMP + 2] {
        assert!(
            kept_near(&kept, seq),
            "fix {seq} is not kept: {:?}",
            kept.iter().map(|k| k.0).collect::<Vec<_>>()
        );
    }
    assert!(kept.iter().any(|k| k.0 == JUMP + 1), "the jump itself is kept");
    let worst = worst_error(day0, &kept);
    assert!(worst <= 10.0, "a fix is {worst:.2} m off the simplified line");
    assert!(kept.len() < 100, "{} of {FIXES} kept", kept.len());
    assert_eq!(v["features"][0]["geometry"]["type"], "LineString");
    assert_eq!(
        v["features"][0]["geometry"]["coordinates"].as_array().unwrap().len(),
        kept.len()
    );

    // A point budget: at most that many, ends kept, and the jump (the largest error) among them.
    let v = get_json(&s, &boss, &format!("{day}&max_points=12")).await;
    let budget = fixes(&v);
    assert!(budget.len() <= 12 && budget.len() >= 3, "{}", budget.len());
    assert_eq!((budget[0].0, budget.last().unwrap().0), (1, FIXES));
    assert!(budget.iter().any(|k| k.0 == JUMP + 1));

    // The full resolution in pages: every fix once, in order.
    let mut seqs = Vec::new();
    let mut next = None::<String>;
    loop {
        let cursor = next.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = get_json(&s, &boss, &format!("{day}&limit=5000{cursor}")).await;
        seqs.extend(fixes(&page).into_iter().map(|f| f.0));
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=FIXES).collect::<Vec<_>>());

    // Downloads of [fix 1000, fix 3000): exactly seqs 1001..=3000 in each format.
    let (from, to) = (day_fix(day0, 1000).0, day_fix(day0, 3000).0);
    let range = format!("/v1/devices/truck/track/download?from={from}&to={to}");
    let want: Vec<usize> = (1001..=3000).collect();

    let (status, text) = get(&s, &boss, &format!("{range}&format=geojson")).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fixes(&v).iter().map(|f| f.0).collect::<Vec<_>>(), want);
    let file = dir.path().join("range.geojson");
    std::fs::write(&file, &text).unwrap();
    let out = trackgate_e2e::check_geojson(&[&file]);
    assert!(
        out.status.success(),
        "GeoJSON validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid 2000");

    let (status, csv) = get(&s, &boss, &format!("{range}&format=csv")).await;
    assert_eq!(status, 200, "{csv}");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "device_id,seq,ts,time,lat,lon,alt,spd,hdg,acc,bat,tmp"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.iter().map(|r| r[1].parse().unwrap()).collect::<Vec<usize>>(), want);
    let (ts, lat, lon) = day_fix(day0, 1000);
    assert_eq!(rows[0][2], ts.to_string());
    assert_eq!(
        (rows[0][4].parse::<f64>().unwrap(), rows[0][5].parse::<f64>().unwrap()),
        (lat, lon)
    );
    assert!(rows.iter().all(|r| r.len() == 12 && r[0] == "truck" && r[10] == "77"));

    let (status, gpx) = get(&s, &boss, &format!("{range}&format=gpx")).await;
    assert_eq!(status, 200, "{gpx}");
    assert_eq!(gpx.matches("<trkpt ").count(), 2000);
    let file = dir.path().join("range.gpx");
    std::fs::write(&file, &gpx).unwrap();
    assert_gpx_valid(&file);
    // And xmllint is not a rubber stamp: a point without its latitude fails.
    std::fs::write(&file, gpx.replacen("<trkpt lat=", "<trkpt x=", 1)).unwrap();
    let out = xmllint(&file);
    assert!(!out.status.success(), "xmllint accepted a trkpt without lat");

    // Bad requests say which parameter is wrong.
    for (path, names) in [
        (format!("{day}&tolerance_m=abc"), "tolerance_m"),
        (format!("{day}&tolerance_m=0"), "tolerance_m"),
        (format!("{day}&max_points=1"), "max_points"),
        (format!("{day}&tolerance_m=5&limit=10"), "limit"),
        (format!("{range}&format=kml"), "format"),
    ] {
        let (status, body) = get(&s, &boss, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(names), "{path}: {body}");
    }

    // Another organization's device answers 404 to all of it, as one that does not exist.
    let clerk = s.dev_token(&["--email", "clerk@globex.example"]);
    for path in [
        format!("{day}&tolerance_m=10"),
        format!("{day}&max_points=100"),
        format!("{range}&format=gpx"),
        format!("{range}&format=csv"),
        format!("{range}&format=geojson"),
    ] {
        let (status, body) = get(&s, &clerk, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("trkpt") && !body.contains("\"seq\""), "{body}");
    }
    // The downloads were audited.
    let audit = s.json_lines(&["audit", "--org", "acme", "--limit", "1000"]);
    assert_eq!(audit.iter().filter(|e| e["action"] == "read.download").count(), 3);
}

fn xmllint(file: &std::path::Path) -> std::process::Output {
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/gpx/gpx11.xsd");
    assert!(
        std::path::Path::new(xsd).exists(),
        "{xsd} is missing: .ci/install-test-deps fetches the GPX 1.1 schema"
    );
    std::process::Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(file)
        .output()
        .expect("xmllint runs (Debian's libxml2-utils)")
}

fn assert_gpx_valid(file: &std::path::Path) {
    let out = xmllint(file);
    assert!(
        out.status.success(),
        "GPX does not validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 200,000 fixes downloaded as GeoJSON (about 34 MB): the server's memory stays within a few
/// megabytes of where it was after a small download, sampled all along the transfer. (SQLite's page cache, which would
/// fill with the rows read up to its 32 MiB per connection, is kept at 1 MiB here so that what
/// is measured is the download's own memory.)
async fn a_large_download_streams_in_flat_memory(backend: Backend) {
    const N: usize = 200_000;
    let (_dir, s) = started_on(backend, "database.sqlite_cache_mib = 1");
    seed(&s);
    let t0 = now_ms() as i64 - 3 * 86_400_000;
    post_fixes(&s, "truck", N, |i| (t0 + i as i64 * 1000, 45.0 + i as f64 * 1e-6, 7.0)).await;
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let path = format!(
        "/v1/devices/truck/track/download?from={t0}&to={}&format=geojson",
        t0 + N as i64 * 1000
    );
    // A small download first: what any download costs once (code paged in, allocator arenas, the
    // connection) is not what is measured.
    let warm = format!(
        "/v1/devices/truck/track/download?from={t0}&to={}&format=geojson",
        t0 + 20_000_000
    );
    let (status, _) = get(&s, &boss, &warm).await;
    assert_eq!(status, 200);
    let pid = s.pid();
    let before = rss_mb(pid);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        })
    };
    let resp = s.client().get(s.url(&path)).bearer_auth(&boss).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    let bytes = body.len();
    let features = body.windows(9).filter(|w| w == b"\"Feature\"").count();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!("downloaded {bytes} bytes ({N} fixes): RSS {before:.1} MB before, peak {peak:.1} MB");
    assert_eq!(features, N, "{bytes} bytes");
    assert!(bytes > 30_000_000, "{bytes}");
    let grown = peak - before;
    // What may grow: each pooled database connection's page cache (1 MiB here) and a page of
    // fixes in flight. Building the body whole would hold its 34 MB and the fixes behind it.
    assert!(grown < 20.0, "RSS grew by {grown:.1} MB while streaming {bytes} bytes");
}

on_both_backends!(a_day_is_simplified_paged_and_downloaded_exactly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_in_flat_memory_on_sqlite() {
    a_large_download_streams_in_flat_memory(Backend::Sqlite).await
}
