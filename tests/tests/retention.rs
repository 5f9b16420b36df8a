//! Retention against the real binary, on both backends: an organization admin shortens the
//! organization's retention through the API (within the operator's bounds), reads stop showing
//! what is past it at once, the server's purge removes it while records keep arriving, and the
//! purge shows in the metrics, the organization's audit trail and `trackgate db purge`.

use serde_json::{Value, json};
use trackgate_e2e::{Backend, Key, Server, now_ms, started_on};

const DAY_MS: u64 = 86_400_000;

fn key(id: &str) -> Key {
    Key::derived(id, "k1")
}

/// acme and globex, a device each, acme's admins by e-mail.
fn seed(s: &Server) {
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
    }
    for (dev, org) in [("a-1", "acme"), ("g-1", "globex")] {
        s.add_device(&key(dev), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
    }
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.add_user_group("acme", "staff", "viewer", "--domain", "acme.example");
}

/// Records `seqs` of `dev`, each `age_ms` old, in one supplier request.
async fn ingest(s: &Server, c: &reqwest::Client, dev: &str, seqs: std::ops::Range<u64>, age_ms: u64) {
    let ts = now_ms() - age_ms;
    let envelopes: Vec<String> = seqs
        .clone()
        .map(|seq| {
            key(dev).envelope(&format!(
                r#"{{"dev":"{dev}","seq":{seq},"ts":{},"lat":60.1,"lon":24.9}}"#,
                ts + seq
            ))
        })
        .collect();
    let reply = s.post_envelopes(c, &envelopes).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.counts().0, seqs.count() as u64, "{}", reply.body);
}

async fn track_seqs(c: &reqwest::Client, s: &Server, token: &str, dev: &str) -> Vec<u64> {
    let (st, b) = s
        .api(
            c,
            reqwest::Method::GET,
            &format!("/v1/devices/{dev}/track?from=0&limit=1000"),
            token,
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let mut seqs: Vec<u64> = b["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no features in {b}"))
        .iter()
        .filter(|f| f["properties"]["kind"] == "fix")
        .map(|f| f["properties"]["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    seqs
}

async fn stored_seqs(s: &Server, dev: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM positions WHERE device_id = $1 ORDER BY seq")
        .bind(dev)
        .fetch_all(&s.db().await)
        .await
        .unwrap()
}

async fn an_organizations_retention_hides_then_purges_its_old_positions(backend: Backend) {
    let (_dir, s) = started_on(
        backend,
        "retention.interval_secs = 1\nretention.min_organization_days = 7",
    );
    seed(&s);
    let c = s.client();
    // 40 days old and 1 day old, for both devices.
    for dev in ["a-1", "g-1"] {
        ingest(&s, &c, dev, 0..10, 40 * DAY_MS).await;
        ingest(&s, &c, dev, 10..20, DAY_MS).await;
    }
    let root = s.dev_token(&["--email", "root@service.example", "--platform-admin"]);
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let clerk = s.dev_token(&["--email", "clerk@acme.example"]);
    assert_eq!(track_seqs(&c, &s, &root, "a-1").await, (0..20).collect::<Vec<_>>());

    // Within the operator's bounds, by an admin of the organization only.
    use reqwest::Method;
    let path = "/v1/admin/orgs/acme/retention";
    let (st, b) = s
        .api(&c, Method::PUT, path, &boss, Some(json!({"positions_days": 3})))
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("positions_retention_days must be from 7 to 365"),
        "{b}"
    );
    let (st, b) = s
        .api(&c, Method::PUT, path, &clerk, Some(json!({"positions_days": 30})))
        .await;
    assert_eq!(st, 403, "{b}");
    let (st, b) = s
        .api(&c, Method::PUT, path, &boss, Some(json!({"positions_days": 30})))
        .await;
    assert_eq!(st, 200, "{b}");

    // Hidden at once, purged within a purge interval, while records keep arriving.
    assert_eq!(track_seqs(&c, &s, &root, "a-1").await, (10..20).collect::<Vec<_>>());
    let purged = r#"trackgate_retention_deleted_rows_total{org="acme",table="positions"}"#;
    let mut next = 100;
    for _ in 0..600 {
        ingest(&s, &c, "a-1", next..next + 20, 0).await;
        next += 20;
        if s.metric(purged).await >= 10.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(s.metric(purged).await, 10.0, "{}", s.log_text());
    let want: Vec<i64> = (10..20).chain(100..next as i64).collect();
    assert_eq!(stored_seqs(&s, "a-1").await, want);
    assert_eq!(stored_seqs(&s, "g-1").await, (0..20).collect::<Vec<i64>>());
    assert!(s.metric(r#"trackgate_retention_purges_total{outcome="done"}"#).await >= 1.0);
    assert_eq!(
        s.metric(r#"trackgate_retention_purges_total{outcome="failed"}"#).await,
        0.0
    );

    // The organization's audit trail shows the purge and the change that caused it.
    let (st, b) = s
        .api(&c, Method::GET, "/v1/admin/orgs/acme/audit?limit=50", &boss, None)
        .await;
    assert_eq!(st, 200, "{b}");
    let entries = b.as_array().unwrap_or_else(|| panic!("{b}"));
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"retention.set"), "{actions:?}");
    let purge = entries
        .iter()
        .find(|e| e["action"] == "retention.purge")
        .unwrap_or_else(|| panic!("{actions:?}"));
    let detail: Value = serde_json::from_str(purge["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (detail["positions"].as_u64(), detail["retention_days"].as_u64()),
        (Some(10), Some(30))
    );

    // The operator's command runs one now and says what it removed: nothing left to remove.
    let report: Value = serde_json::from_str(s.ok(&["db", "purge"], None).trim()).unwrap();
    let acme = report["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["org_id"] == "acme")
        .unwrap();
    assert_eq!(acme["positions"], 0, "{report}");
    assert_eq!(acme["retention_days"], 30, "{report}");
}

trackgate_e2e::on_both_backends!(an_organizations_retention_hides_then_purges_its_old_positions);
