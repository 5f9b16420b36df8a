//! Webhooks against the real binary and a real HTTPS receiver (Python, its own test CA), which
//! checks every signature: events arrive signed, in order per device, each delivery once; a
//! receiver that is down for a while (with trackgate killed and restarted meanwhile) then gets
//! everything, in order; failures show in the API and the metrics, and a delivery past its retry
//! time is given up on; one organization's receiver never gets another's events; private
//! destinations are refused unless allowed; two nodes deliver each event from one of them.

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use trackgate_e2e::receivers::WebhookReceiver;
use trackgate_e2e::*;

/// Quick events and deliveries, webhooks to this machine allowed, receivers' CA trusted.
fn settings(ca: &Path, extra: &str) -> String {
    format!(
        "events.settle_ms = 300\nevents.interval_ms = 100\nalerts.interval_ms = 100\n\
         alerts.allow_private_destinations = true\nalerts.webhook_ca = {ca:?}\nalerts.max_backoff_secs = 1\n{extra}"
    )
}

/// Organizations acme and globex, each with an admin and a device (`EV-A`, `EV-G`) and a depot
/// geofence round (10.0, 53.5); the admins' tokens.
fn seed(s: &Server) -> (String, String) {
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
        s.add_user_group(org, "admins", "admin", "--email", &format!("boss@{org}.example"));
        s.ok(
            &[
                "geofence",
                "put",
                "--org",
                org,
                "depot",
                "--name",
                "Depot",
                "--circle",
                "10.0,53.5,1000",
            ],
            None,
        );
    }
    for (dev, org) in [("EV-A", "acme"), ("EV-G", "globex")] {
        s.add_device(&Key::derived(dev, "k1"), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
    }
    (
        s.dev_token(&["--email", "boss@acme.example"]),
        s.dev_token(&["--email", "boss@globex.example"]),
    )
}

/// A rule of `org` sending `kinds` to `url`; the receiver is told its secret.
async fn rule(s: &Server, token: &str, org: &str, id: &str, kinds: &[&str], url: &str, r: &WebhookReceiver) {
    let (st, b) = s
        .api(
            &s.client(),
            Method::POST,
            &format!("/v1/admin/orgs/{org}/alert-rules"),
            token,
            Some(json!({"id": id, "kinds": kinds, "webhook": url})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let secret = b["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    r.trust(id, secret);
}

/// Records of `dev` alternating inside and outside the depot, a minute apart from `t0`: each
/// gives an event (enter, exit, enter, ...). Seqs from `first`.
async fn trips(s: &Server, dev: &str, first: u64, n: u64, t0: u64) {
    let key = Key::derived(dev, "k1");
    let envelopes: Vec<String> = (first..first + n)
        .map(|seq| {
            let lat = if seq % 2 == 1 { 53.5 } else { 53.55 };
            key.envelope(&format!(
                r#"{{"dev":"{dev}","seq":{seq},"ts":{},"lat":{lat},"lon":10.0}}"#,
                t0 + seq * 60_000
            ))
        })
        .collect();
    let reply = s.post_envelopes(&s.client(), &envelopes).await;
    assert_eq!(reply.counts(), (n, 0), "{:?}", reply.body);
}

/// The requests that reached `path`, each delivery once (a redelivery after a kill is allowed,
/// and must be the same delivery), as (delivery, event seq, kind).
fn deliveries(requests: &[Value], path: &str) -> Vec<(i64, i64, String)> {
    let mut seen = BTreeSet::new();
    requests
        .iter()
        .filter(|r| r["path"] == path)
        .filter_map(|r| {
            assert_eq!(r["verified"], true, "a signature did not verify: {r}");
            assert_eq!(r["fresh"], true, "a stale timestamp: {r}");
            let d: i64 = r["delivery"].as_str().unwrap().parse().unwrap();
            assert_eq!(r["body"]["delivery"], d, "{r}");
            seen.insert(d).then(|| {
                (
                    d,
                    r["body"]["event"]["seq"].as_i64().unwrap(),
                    r["body"]["event"]["kind"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_through_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = WebhookReceiver::start(&dir.path().join("receiver"));
    let mut broken = WebhookReceiver::start(&dir.path().join("broken"));
    broken.up(500);
    // Each receiver has a CA of its own: trust both.
    let both = dir.path().join("both-ca.pem");
    std::fs::write(
        &both,
        [
            std::fs::read(&receiver.tls.ca).unwrap(),
            std::fs::read(&broken.tls.ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let (_tg_dir, mut s) = started_on(Backend::Sqlite, &settings(&both, "alerts.retry_for_secs = 30\n"));
    let (acme, globex) = seed(&s);
    rule(&s, &acme, "acme", "acme-hook", &[], &receiver.url("/acme"), &receiver).await;
    rule(
        &s,
        &globex,
        "globex",
        "globex-hook",
        &["enter"],
        &receiver.url("/globex?x=1"),
        &receiver,
    )
    .await;
    rule(
        &s,
        &acme,
        "acme",
        "broken-hook",
        &["exit"],
        &broken.url("/broken"),
        &broken,
    )
    .await;
    let t0 = now_ms() - 3_600_000;

    // Four events of acme's device; globex's device enters once.
    trips(&s, "EV-A", 1, 4, t0).await;
    trips(&s, "EV-G", 1, 2, t0).await;
    let got = receiver.wait_requests(5, Duration::from_secs(30)).await;
    let a = deliveries(&got, "/acme");
    assert_eq!(
        a.iter().map(|(_, seq, kind)| (*seq, kind.as_str())).collect::<Vec<_>>(),
        [(1, "enter"), (2, "exit"), (3, "enter"), (4, "exit")],
        "{got:?}"
    );
    let g = deliveries(&got, "/globex?x=1");
    assert_eq!(g.len(), 1, "globex's rule takes enter only: {got:?}");
    assert_eq!(g[0].1, 1);
    // What acme's receiver got is acme's, and globex's is globex's.
    for r in &got {
        let dev = r["body"]["event"]["device_id"].as_str().unwrap();
        let org = r["body"]["event"]["org_id"].as_str().unwrap();
        match r["path"].as_str().unwrap() {
            "/acme" => assert_eq!((dev, org), ("EV-A", "acme"), "{r}"),
            _ => assert_eq!((dev, org), ("EV-G", "globex"), "{r}"),
        }
    }

    // The receiver goes down; four more events wait, retried; trackgate is killed and restarted
    // meanwhile; the receiver comes back and gets all of them, in order.
    receiver.down();
    trips(&s, "EV-A", 5, 4, t0).await;
    let c = s.client();
    wait_for("a failed attempt in the API", Duration::from_secs(30), async || {
        let (_, b) = s
            .api(
                &c,
                Method::GET,
                "/v1/admin/orgs/acme/alert-rules/acme-hook/deliveries",
                &acme,
                None,
            )
            .await;
        b["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["state"] == "pending" && d["attempts"].as_i64() >= Some(1) && d["last_error"].is_string())
    })
    .await;
    assert!(
        s.metric("trackgate_alert_deliveries_total{channel=\"webhook\",outcome=\"retry\"}")
            .await
            >= 1.0
    );
    let (_, b) = s
        .api(&c, Method::GET, "/v1/admin/orgs/acme/alert-rules", &acme, None)
        .await;
    let hook = b["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "acme-hook")
        .unwrap();
    assert_eq!(hook["pending"], 4, "{b}");
    assert!(hook.get("secret").is_none(), "a rule's secret is shown once: {b}");
    s.stop_with("-KILL").unwrap();
    s.restart().unwrap();
    receiver.up(200);
    let got = receiver.wait_requests(9, Duration::from_secs(60)).await;
    let a = deliveries(&got, "/acme");
    assert_eq!(
        a.iter().map(|(_, seq, _)| *seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>(),
        "{got:?}"
    );

    // The broken receiver answers 500: its deliveries are given up on after retry_for_secs.
    wait_for("a delivery given up on", Duration::from_secs(60), async || {
        let (_, b) = s
            .api(
                &c,
                Method::GET,
                "/v1/admin/orgs/acme/alert-rules/broken-hook/deliveries",
                &acme,
                None,
            )
            .await;
        b["deliveries"].as_array().unwrap().iter().any(|d| {
            d["state"] == "failed"
                && d["last_error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("gave up after") && e.contains("500"))
        })
    })
    .await;
    assert!(broken.requests().iter().all(|r| r["verified"] == true));
    assert!(
        s.metric("trackgate_alert_deliveries_total{channel=\"webhook\",outcome=\"failed\"}")
            .await
            >= 1.0
    );
    // Removing a rule: audited, and gone.
    let (st, _) = s
        .api(
            &c,
            Method::DELETE,
            "/v1/admin/orgs/acme/alert-rules/broken-hook",
            &acme,
            None,
        )
        .await;
    assert_eq!(st, 200);
    let trail = s.json_lines(&["audit", "--org", "acme"]);
    for action in ["alert_rule.add", "alert_rule.remove"] {
        assert!(trail.iter().any(|e| e["action"] == action), "{action}: {trail:?}");
    }
    // A secret never reaches the log.
    let log = s.log_text();
    for r in ["acme-hook", "globex-hook"] {
        let secrets: Value = serde_json::from_str(&std::fs::read_to_string(&receiver.secrets).unwrap()).unwrap();
        assert!(
            !log.contains(secrets[r].as_str().unwrap()),
            "{r}'s secret is in the log"
        );
    }
}

#[tokio::test]
async fn private_destinations_and_bad_rules_are_refused() {
    let (_dir, s) = started_on(Backend::Sqlite, "");
    let (acme, globex) = seed(&s);
    let c = s.client();
    for (body, says) in [
        (
            json!({"id": "h", "webhook": "https://127.0.0.1:8443/x"}),
            "127.0.0.1 is a loopback, private or reserved address",
        ),
        (
            json!({"id": "h", "webhook": "https://169.254.169.254/latest"}),
            "private or reserved",
        ),
        (json!({"id": "h", "webhook": "https://[::1]/x"}), "::1 is a loopback"),
        (
            json!({"id": "h", "webhook": "https://localhost:9/x"}),
            "\"localhost\" resolves to",
        ),
        (
            json!({"id": "h", "webhook": "http://hooks.example.com/x"}),
            "must be an https:// URL",
        ),
        (
            json!({"id": "h", "webhook": "https://hooks.example.com/", "kinds": ["teleport"]}),
            "\"teleport\" is not an event kind",
        ),
        (
            json!({"id": "bad id", "webhook": "https://8.8.8.8/"}),
            "invalid alert rule id",
        ),
    ] {
        let (st, b) = s
            .api(
                &c,
                Method::POST,
                "/v1/admin/orgs/acme/alert-rules",
                &acme,
                Some(body.clone()),
            )
            .await;
        assert_eq!(st, 400, "{body}: {b}");
        assert!(b["detail"].as_str().unwrap().contains(says), "{body}: {b}");
    }
    // Another organization's admin may not add or read acme's rules.
    let body = json!({"id": "h", "webhook": "https://8.8.8.8/"});
    let (st, _) = s
        .api(&c, Method::POST, "/v1/admin/orgs/acme/alert-rules", &globex, Some(body))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .api(&c, Method::GET, "/v1/admin/orgs/acme/alert-rules", &globex, None)
        .await;
    assert_eq!(st, 403);
    let (_, b) = s
        .api(&c, Method::GET, "/v1/admin/orgs/acme/alert-rules", &acme, None)
        .await;
    assert_eq!(b["rules"], json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_event_from_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(&dir.path().join("receiver"));
    let a = Server::start_on(
        Backend::Postgres,
        &dir.path().join("a"),
        &settings(&receiver.tls.ca, ""),
    )
    .unwrap();
    let b = Server::start_in(
        &dir.path().join("b"),
        &settings(
            &receiver.tls.ca,
            &format!(
                "database.url = {:?}\nsecurity.master_key_file = {:?}\n",
                a.postgres_url.clone().unwrap(),
                dir.path().join("a/data/master.key")
            ),
        ),
    )
    .unwrap();
    a.add_supplier(&vector_supplier());
    let (acme, _) = seed(&a);
    rule(&a, &acme, "acme", "acme-hook", &[], &receiver.url("/acme"), &receiver).await;
    let t0 = now_ms() - 3_600_000;
    // Records through both nodes, in turn.
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        trips(node, "EV-A", 1 + i as u64 * 3, 3, t0).await;
    }
    let got = receiver.wait_requests(12, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = receiver.requests();
    assert_eq!(got.len(), got_after.len(), "more than one delivery per event");
    let d = deliveries(&got_after, "/acme");
    assert_eq!(d.len(), 12, "{got_after:?}");
    assert_eq!(got_after.len(), 12, "a delivery was made twice: {got_after:?}");
    assert_eq!(
        d.iter().map(|(_, seq, _)| *seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    let delivering: f64 = a.metric("trackgate_alert_deliverer").await + b.metric("trackgate_alert_deliverer").await;
    assert_eq!(delivering, 1.0);
}
