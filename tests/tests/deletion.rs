//! Deleting an organization on request against the real binary, on both backends: an admin of it
//! needs a fresh sign-in (a token whose `auth_time` is older than `auth.reauth_max_age_secs` gets
//! a 401 that says why, and nothing is deleted), a viewer may not, and the deletion answers what
//! it removed; another organization is untouched; the operator's `trackgate org delete` does the
//! same from the command line.

use serde_json::Value;
use trackgate_e2e::{Backend, Key, Server, now_ms, started_on};

fn seed(s: &Server) {
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
    }
    for (dev, org) in [("a-1", "acme"), ("g-1", "globex")] {
        s.add_device(&Key::derived(dev, "k1"), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
    }
    for (group, role, rule, who) in [
        ("admins", "admin", "--email", "boss@acme.example"),
        ("staff", "viewer", "--domain", "acme.example"),
    ] {
        s.add_user_group("acme", group, role, rule, who);
    }
}

async fn send(s: &Server, dev: &str, n: u64) {
    let key = Key::derived(dev, "k1");
    let envelopes: Vec<String> = (0..n)
        .map(|seq| {
            key.envelope(&format!(
                r#"{{"dev":"{dev}","seq":{seq},"ts":{},"lat":60.1,"lon":24.9}}"#,
                now_ms() - 5000 + seq
            ))
        })
        .collect();
    let reply = s.post_envelopes(&s.client(), &envelopes).await;
    assert_eq!(reply.counts().0, n, "{}", reply.body);
}

async fn stored(s: &Server, dev: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM positions WHERE device_id = $1")
        .bind(dev)
        .fetch_one(&s.db().await)
        .await
        .unwrap()
}

async fn delete(s: &Server, token: &str, query: &str) -> (u16, Value) {
    let r = s
        .client()
        .delete(s.url(&format!("/v1/admin/orgs/acme{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn an_admin_deletes_the_organization_after_a_fresh_sign_in(backend: Backend) {
    let (_dir, s) = started_on(backend, "auth.reauth_max_age_secs = 300");
    seed(&s);
    send(&s, "a-1", 50).await;
    send(&s, "g-1", 30).await;
    let token = |args: &[&str]| s.dev_token(args);
    let stale = token(&["--email", "boss@acme.example", "--auth-age-secs", "3600"]);
    let (st, b) = delete(&s, &stale, "").await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(b["error"], "insufficient_user_authentication");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains("sign-in within the last 300 seconds") && detail.contains("sign in again"),
        "{b}"
    );
    assert_eq!(stored(&s, "a-1").await, 50, "nothing deleted");
    let clerk = token(&["--email", "clerk@acme.example"]);
    assert_eq!(delete(&s, &clerk, "").await.0, 403);

    let fresh = token(&["--email", "boss@acme.example"]);
    let (st, report) = delete(&s, &fresh, "?delete_devices=true").await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(
        (report["positions"].as_u64(), report["devices"].as_u64()),
        (Some(50), Some(1)),
        "{report}"
    );
    assert_eq!(report["devices_deleted"], true);
    assert_eq!(stored(&s, "a-1").await, 0);
    assert_eq!(stored(&s, "g-1").await, 30);
    let orgs: Vec<Value> = s
        .ok(&["org", "list"], None)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0]["id"], "globex");
    // The device is gone with its key.
    let list = s.ok(&["device", "list"], None);
    assert!(!list.contains("a-1") && list.contains("g-1"), "{list}");
    // What stays: acme's trail, ending with the deletion and its counts.
    let trail = s.ok(&["audit", "--org", "acme", "--limit", "1"], None);
    let last: Value = serde_json::from_str(trail.lines().next().unwrap()).unwrap();
    assert_eq!(last["action"], "org.delete");
    assert_eq!(last["actor_email"], "boss@acme.example");

    // The operator's command, for globex.
    let report: Value = serde_json::from_str(&s.ok(&["org", "delete", "globex"], None)).unwrap();
    assert_eq!(
        (report["positions"].as_u64(), report["devices_deleted"].as_bool()),
        (Some(30), Some(false))
    );
    assert_eq!(stored(&s, "g-1").await, 0);
    assert!(
        s.ok(&["device", "list"], None).contains("g-1"),
        "unassigned, still provisioned"
    );
}

trackgate_e2e::on_both_backends!(an_admin_deletes_the_organization_after_a_fresh_sign_in);
