//! Events against the real binary: a firmware-sim trip between depots gives the same geofence
//! events whether it arrives live (in order), as a shuffled backlog, across a `kill -9` and
//! restart, or through two nodes of which the one computing is killed; each event exactly once,
//! a redelivered trip adds none. Hand-made records show the rest: a jump across a border is
//! marked and moves the device out of no geofence, battery and temperature alerts fire once per
//! episode and re-arm, a silent device is reported once per silence, and an organization reads
//! its own events and no other's.

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use trackgate_e2e::*;

/// Settle time of the servers that get a backlog in order: records are taken 2 s after arrival.
const LIVE: &str = "events.settle_ms = 2000\nevents.interval_ms = 200\nevents.full_pass_secs = 2\n";
/// Settle time for a shuffled backlog: longer than its upload takes, so it is taken in order.
const BACKLOG: &str = "events.settle_ms = 20000\nevents.interval_ms = 200\nevents.full_pass_secs = 2\n";

/// An event as compared across servers: device, ts, seq, kind, geofence.
type Key = (String, i64, i64, String, String);

/// A roster of two devices, written once and provisioned into every server of a test.
struct Fleet {
    dir: tempfile::TempDir,
    /// The end of the trip history, the same for every upload.
    end_ms: u64,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            dir.path(),
            &built("firmware-sim"),
            &["roster", "--devices", "2", "--out", "roster.json"],
        );
        Fleet {
            dir,
            // A minute ago: every record is in the past when it is sent.
            end_ms: now_ms() - 60_000,
        }
    }

    /// Provision the roster into `s` in organization acme, with a 5 km circle around every stop
    /// of every trip and an admin; the admin's token.
    fn provision(&self, s: &Server) -> String {
        run_ok(
            self.dir.path(),
            &built("firmware-sim"),
            &[
                "provision",
                "--roster",
                "roster.json",
                "--trackgate",
                binary().to_str().unwrap(),
                "--config",
                s.config.to_str().unwrap(),
                "--org",
                "acme",
            ],
        );
        let plan: Value = serde_json::from_str(&self.trip(s, &["--limit", "0"])).unwrap();
        let mut sites = BTreeSet::new();
        for d in plan["devices"].as_array().unwrap() {
            for stop in d["stops"].as_array().unwrap() {
                let name = stop["name"].as_str().unwrap().to_lowercase();
                if sites.insert(name.clone()) {
                    let circle = format!("{},{},5000", stop["lon"], stop["lat"]);
                    s.ok(
                        &[
                            "geofence", "put", "--org", "acme", &name, "--name", &name, "--circle", &circle,
                        ],
                        None,
                    );
                }
            }
        }
        s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
        s.dev_token(&["--email", "boss@acme.example"])
    }

    /// Run `firmware-sim trip` against `s` (three days, a fix a minute: several drives from depot
    /// to depot) with `extra` arguments; its summary.
    fn trip(&self, s: &Server, extra: &[&str]) -> String {
        let url = format!("https://localhost:{}", s.https.port());
        let ca = s.dir.join("data/tls/dev-cert.pem");
        let end = self.end_ms.to_string();
        let mut args = vec![
            "trip",
            "--roster",
            "roster.json",
            "--url",
            &url,
            "--ca",
            ca.to_str().unwrap(),
            "--end-ms",
            &end,
            "--hours",
            "72",
            "--every",
            "60",
        ];
        args.extend(extra);
        run_ok(self.dir.path(), &built("firmware-sim"), &args)
    }

    /// Upload the whole trip; the number of records.
    fn upload(&self, s: &Server, extra: &[&str]) -> u64 {
        let out: Value = serde_json::from_str(&self.trip(s, extra)).unwrap();
        assert_eq!(out["rejected"], 0, "{out}");
        out["records"].as_u64().unwrap()
    }
}

/// The newest seq of each device in the trip (seqs count up in time order from 0).
fn last_seqs(records: u64) -> BTreeMap<String, i64> {
    (1..=2)
        .map(|i| (format!("SIM-TRK-{i:06}"), (records / 2) as i64 - 1))
        .collect()
}

/// Wait until every device's event cursor is at its newest record.
async fn wait_taken(s: &Server, last: &BTreeMap<String, i64>) {
    let db = s.db().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>("SELECT device_id, seq FROM event_cursors")
            .fetch_all(&db)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        if last.iter().all(|(d, seq)| at.get(d) == Some(seq)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not taken: cursors at {at:?}, want {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await;
}

/// Every event the token's holder may read, all pages, as comparable keys; each exactly once.
async fn events(s: &Server, token: &str, query: &str) -> Vec<Value> {
    let c = s.client();
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let (st, b) = s
            .api(
                &c,
                Method::GET,
                &format!("/v1/events?limit=100{query}{before}"),
                token,
                None,
            )
            .await;
        assert_eq!(st, 200, "{b}");
        all.extend(b["events"].as_array().unwrap().iter().cloned());
        match b["next"].as_i64() {
            Some(id) => before = format!("&before={id}"),
            None => return all,
        }
    }
}

fn keys(events: &[Value]) -> BTreeSet<Key> {
    let keys: Vec<Key> = events
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap().to_owned(),
                e["ts"].as_i64().unwrap(),
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
                e["geofence"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let set: BTreeSet<Key> = keys.iter().cloned().collect();
    assert_eq!(set.len(), keys.len(), "an event came twice: {keys:?}");
    set
}

/// Each device's geofence events in time order, as "enter x" / "exit x".
fn story(set: &BTreeSet<Key>) -> BTreeMap<String, Vec<String>> {
    let mut by_device: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for (d, ts, seq, kind, fence) in set {
        if kind == "enter" || kind == "exit" {
            by_device
                .entry(d.clone())
                .or_default()
                .push((*ts, *seq, format!("{kind} {fence}")));
        }
    }
    by_device
        .into_iter()
        .map(|(d, mut v)| {
            v.sort();
            (d, v.into_iter().map(|(_, _, e)| e).collect())
        })
        .collect()
}

/// The trip's events must say something: each device enters and leaves geofences in turn, and
/// some device drives from one depot to another.
fn assert_a_real_trip(set: &BTreeSet<Key>) {
    let story = story(set);
    assert!(
        story.values().any(|v| v.len() >= 3),
        "too few events to compare: {story:?}"
    );
    for (device, events) in &story {
        let mut inside: Option<&str> = None;
        for e in events {
            let (kind, fence) = e.split_once(' ').unwrap();
            match (kind, inside) {
                ("enter", None) => inside = Some(fence),
                ("exit", Some(f)) if f == fence => inside = None,
                _ => panic!("{device}: {e} out of turn in {events:?}"),
            }
        }
    }
    let between = story.values().any(|v| {
        v.windows(2)
            .any(|w| w[0].starts_with("exit ") && w[1].starts_with("enter ") && w[0][5..] != w[1][6..])
    });
    assert!(between, "no trip from one depot to another: {story:?}");
}

fn server(dir: &Path, name: &str, backend: Backend, extra: &str) -> Server {
    Server::start_on(backend, &dir.join(name), extra).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_gives_the_same_events_live_as_a_shuffled_backlog_and_across_a_kill() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();

    // Live: in time order, in small requests.
    let live = server(dir.path(), "live", Backend::Sqlite, LIVE);
    let live_token = fleet.provision(&live);
    let n = fleet.upload(&live, &["--batch", "50"]);
    let last = last_seqs(n);
    wait_taken(&live, &last).await;
    let expected = keys(&events(&live, &live_token, "").await);
    assert_a_real_trip(&expected);
    assert!(live.metric("trackgate_events_total{kind=\"enter\"}").await >= 1.0);

    // Redelivered whole: duplicates, and no event twice.
    let again: Value = serde_json::from_str(&fleet.trip(&live, &[])).unwrap();
    assert_eq!(again["duplicates"].as_u64(), Some(n), "{again}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(keys(&events(&live, &live_token, "").await), expected);

    // A backlog in random order: the same events.
    let backlog = server(dir.path(), "backlog", Backend::Sqlite, BACKLOG);
    let backlog_token = fleet.provision(&backlog);
    let started = Instant::now();
    fleet.upload(&backlog, &["--shuffle", "--seed", "7"]);
    let upload = started.elapsed();
    wait_taken(&backlog, &last).await;
    assert_eq!(
        keys(&events(&backlog, &backlog_token, "").await),
        expected,
        "the shuffled upload took {upload:?}, against a settle time of 20 s"
    );

    // Killed (SIGKILL) with the first half taken, restarted, the rest sent: the same events.
    let mut killed = server(dir.path(), "killed", Backend::Sqlite, LIVE);
    let killed_token = fleet.provision(&killed);
    let half = (n / 2).to_string();
    fleet.upload(&killed, &["--batch", "50", "--limit", &half]);
    let db = killed.db().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM event_cursors")
        .fetch_one(&db)
        .await
        .unwrap_or(0)
        < 1
    {
        assert!(Instant::now() < deadline, "no cursor moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
    killed.stop_with("-KILL").unwrap();
    killed.restart().unwrap();
    fleet.upload(&killed, &["--batch", "50", "--skip", &half]);
    wait_taken(&killed, &last).await;
    assert_eq!(keys(&events(&killed, &killed_token, "").await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_give_each_event_once_when_the_one_computing_is_killed() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    // What one node on SQLite makes of the trip.
    let reference = server(dir.path(), "reference", Backend::Sqlite, LIVE);
    let reference_token = fleet.provision(&reference);
    let n = fleet.upload(&reference, &["--batch", "50"]);
    let last = last_seqs(n);
    wait_taken(&reference, &last).await;
    let expected = keys(&events(&reference, &reference_token, "").await);
    assert_a_real_trip(&expected);
    drop(reference);

    // The smallest pool there is: the events lock holds a connection of its own, outside it.
    let small = format!("{LIVE}database.max_connections = 2\n");
    let a = server(dir.path(), "a", Backend::Postgres, &small);
    let b = Server::start_in(
        &dir.path().join("b"),
        &format!(
            "{small}database.url = {:?}\nsecurity.master_key_file = {:?}\n",
            a.postgres_url.clone().unwrap(),
            dir.path().join("a/data/master.key")
        ),
    )
    .unwrap();
    fleet.provision(&a);
    // One node computes; the other waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut computing, mut other) = loop {
        let (ma, mb) = (
            a.metric("trackgate_event_processor").await,
            b.metric("trackgate_event_processor").await,
        );
        match (ma, mb) {
            (1.0, 0.0) => break (a, b),
            (0.0, 1.0) => break (b, a),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not exactly one node computes: {ma} {mb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first half through the node that computes, and taken in part; it is killed.
    let half = (n / 2).to_string();
    fleet.upload(&computing, &["--batch", "50", "--limit", &half]);
    let db = other.db().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM device_events")
        .fetch_one(&db)
        .await
        .unwrap_or(0)
        < 1
    {
        assert!(Instant::now() < deadline, "no event computed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.close().await;
    computing.stop_with("-KILL").unwrap();
    // The rest through the other node, which takes over.
    fleet.upload(&other, &["--batch", "50", "--skip", &half]);
    wait_taken(&other, &last).await;
    assert_eq!(other.metric("trackgate_event_processor").await, 1.0);
    // Each node trusts the dev tokens it mints.
    let token = other.dev_token(&["--email", "boss@acme.example"]);
    assert_eq!(keys(&events(&other, &token, "").await), expected);
    // The killed node comes back: it does not compute again what was computed.
    computing.restart().unwrap();
    fleet.upload(&computing, &["--batch", "500"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let token = computing.dev_token(&["--email", "boss@acme.example"]);
    assert_eq!(keys(&events(&computing, &token, "").await), expected);
    other.stop_with("-TERM").unwrap();
}

/// A device of acme in order group `cold`, its key, and the events API's view for acme's admin.
struct Hand {
    s: Server,
    _dir: tempfile::TempDir,
    key: trackgate_e2e::Key,
    boss: String,
}

impl Hand {
    async fn post(&self, seq: u64, ts: u64, fields: &str) {
        let record = format!(r#"{{"dev":"EV-1","seq":{seq},"ts":{ts}{fields}}}"#);
        let c = self.s.client();
        let reply = self.s.post_envelopes(&c, &[self.key.envelope(&record)]).await;
        assert_eq!(reply.counts(), (1, 0), "{:?}", reply.body);
    }
}

async fn hand(backend: Backend) -> Hand {
    let (dir, s) = started_on(backend, LIVE);
    let key = trackgate_e2e::Key::derived("EV-1", "k1");
    s.add_device(&key, Some("ACME"));
    s.ok(&["org", "add", "acme", "--name", "Acme"], None);
    s.ok(&["org", "add", "globex", "--name", "Globex"], None);
    s.ok(&["device", "assign", "EV-1", "--org", "acme"], None);
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.add_user_group("globex", "admins", "admin", "--email", "chief@globex.example");
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    s.ok(
        &[
            "geofence",
            "put",
            "--org",
            "acme",
            "depot",
            "--name",
            "Depot",
            "--circle",
            "10.0,53.5,1000",
        ],
        None,
    );
    Hand {
        s,
        _dir: dir,
        key,
        boss,
    }
}

/// The kinds of acme's events, oldest first, with their geofence if any.
async fn kinds(h: &Hand, settled: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = events(&h.s, &h.boss, "").await;
        all.reverse();
        if all.len() >= settled || Instant::now() > deadline {
            return all
                .iter()
                .map(|e| match e["geofence"].as_str() {
                    Some(g) => format!("{} {g}", e["kind"].as_str().unwrap()),
                    None => e["kind"].as_str().unwrap().to_owned(),
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_jump_across_a_border_moves_the_device_out_of_no_geofence(backend: Backend) {
    let h = hand(backend).await;
    let t0 = now_ms() - 600_000;
    // Inside the depot; a fix 50 km away 10 s later (5 km/s); back inside; then really leaving
    // at a truck's speed (2 km in 2 min).
    h.post(1, t0, r#","lat":53.5,"lon":10.0"#).await;
    h.post(2, t0 + 10_000, r#","lat":53.95,"lon":10.0"#).await;
    h.post(3, t0 + 20_000, r#","lat":53.5001,"lon":10.0"#).await;
    h.post(4, t0 + 140_000, r#","lat":53.518,"lon":10.0"#).await;
    assert_eq!(kinds(&h, 3).await, ["enter depot", "jump", "exit depot"]);
    let all = events(&h.s, &h.boss, "&kind=jump").await;
    assert_eq!(all.len(), 1);
    assert!(all[0]["speed_mps"].as_f64().unwrap() > 4000.0, "{}", all[0]);
    assert_eq!(all[0]["seq"], 2);
}

async fn alerts_fire_once_per_episode_and_rearm(backend: Backend) {
    let h = hand(backend).await;
    let c = h.s.client();
    // Battery for the organization; temperature for the device's shipment; stale after a minute.
    for (path, body) in [
        (
            "/v1/admin/orgs/acme/event-limits",
            json!({"battery_low": 20, "stale_after_secs": 60}),
        ),
        (
            "/v1/admin/orgs/acme/devices/EV-1/event-limits",
            json!({"temperature": {"min": 2, "max": 8}}),
        ),
    ] {
        let (st, b) = h.s.api(&c, Method::PUT, path, &h.boss, Some(body)).await;
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) =
        h.s.api(
            &c,
            Method::PUT,
            "/v1/admin/orgs/acme/event-limits",
            &h.boss,
            Some(json!({"temperature": {"min": 8, "max": 2}})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        b["detail"].as_str().unwrap().contains("temperature must be a range"),
        "{b}"
    );
    let (_, b) =
        h.s.api(&c, Method::GET, "/v1/admin/orgs/acme/event-limits", &h.boss, None)
            .await;
    assert_eq!(b["limits"][0]["battery_low"], 20.0, "{b}");
    assert_eq!(b["limits"][1]["scope"], "device", "{b}");

    // Ten minutes ago, a minute apart: battery 30, 19 (low), 18, 26 (re-armed), 15 (low);
    // temperature 5, 9 (out), 10, 7 (re-armed), 1 (out).
    let t0 = now_ms() - 600_000;
    for (i, (bat, tmp)) in [(30, 5), (19, 9), (18, 10), (26, 7), (15, 1)].into_iter().enumerate() {
        let i = i as u64;
        h.post(i + 1, t0 + i * 60_000, &format!(r#","bat":{bat},"tmp":{tmp}"#))
            .await;
    }
    // The newest record is six minutes old: silent past the limit, reported once.
    let got = kinds(&h, 5).await;
    assert_eq!(
        got,
        [
            "battery_low",
            "temperature_out",
            "battery_low",
            "temperature_out",
            "stale"
        ]
    );
    let stale = events(&h.s, &h.boss, "&kind=stale").await;
    assert_eq!(stale[0]["seq"], 5);
    assert!(stale[0]["silent_ms"].as_i64().unwrap() > 300_000, "{}", stale[0]);
    // A newer record ends the silence; it is old too, so a new silence is reported, once.
    h.post(6, t0 + 300_000, r#","bat":14,"tmp":1"#).await;
    let got = kinds(&h, 6).await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[5], "stale");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(kinds(&h, 6).await.len(), 6);
}

async fn an_organization_reads_its_own_events_alone(backend: Backend) {
    let h = hand(backend).await;
    h.post(1, now_ms() - 60_000, r#","lat":53.5,"lon":10.0"#).await;
    assert_eq!(kinds(&h, 1).await, ["enter depot"]);
    let chief = h.s.dev_token(&["--email", "chief@globex.example"]);
    assert!(events(&h.s, &chief, "").await.is_empty());
    let c = h.s.client();
    let (st, _) = h.s.api(&c, Method::GET, "/v1/devices/EV-1/events", &chief, None).await;
    assert_eq!(st, 404);
    let (st, b) = h.s.api(&c, Method::GET, "/v1/devices/EV-1/events", &h.boss, None).await;
    assert_eq!(st, 200);
    assert_eq!(b["events"][0]["kind"], "enter", "{b}");
    assert_eq!(b["events"][0]["lat"], 53.5, "{b}");
    let (st, b) =
        h.s.api(&c, Method::GET, "/v1/events?kind=teleport", &h.boss, None)
            .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) =
        h.s.api(
            &c,
            Method::PUT,
            "/v1/admin/orgs/acme/event-limits",
            &chief,
            Some(json!({"battery_low": 10})),
        )
        .await;
    assert_eq!(st, 403);
    // Reads are audited like location reads.
    let trail = h.s.json_lines(&["audit", "--org", "acme"]);
    assert!(trail.iter().any(|e| e["action"] == "read.events"), "{trail:?}");
}

on_both_backends!(
    a_jump_across_a_border_moves_the_device_out_of_no_geofence,
    alerts_fire_once_per_episode_and_rearm,
    an_organization_reads_its_own_events_alone,
);
