//! The audit trail's tamper evidence against the real binary, on both backends: `trackgate audit
//! verify` and an organization admin's `GET /v1/admin/orgs/{org}/audit/verify` pass on the
//! trail trackgate wrote, and name the entry once a row is changed behind trackgate's back (with
//! the database's append-only guard switched off, as someone holding its credentials could).

use serde_json::Value;
use sqlx::Connection as _;
use trackgate_e2e::{Backend, Server, started_on};

fn seed(s: &Server) {
    s.ok(&["org", "add", "acme", "--name", "Acme"], None);
    for (group, role, rule) in [("admins", "admin", "--email"), ("staff", "viewer", "--domain")] {
        let who = if role == "admin" {
            "boss@acme.example"
        } else {
            "acme.example"
        };
        s.add_user_group("acme", group, role, rule, who);
    }
}

async fn verify_api(s: &Server, token: &str) -> (u16, Value) {
    let r = s
        .client()
        .get(s.url("/v1/admin/orgs/acme/audit/verify"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Change an entry's detail with the guard off, directly in the database.
async fn tamper(s: &Server, id: i64) {
    sqlx::any::install_default_drivers();
    let (url, guard_off) = match &s.postgres_url {
        Some(url) => (url.clone(), "ALTER TABLE audit_log DISABLE TRIGGER USER"),
        None => (
            format!("sqlite://{}", s.dir.join("data/trackgate.db").display()),
            "DROP TRIGGER audit_log_no_update",
        ),
    };
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(guard_off).execute(&mut c).await.unwrap();
    let changed = sqlx::query(&format!(
        "UPDATE audit_log SET detail = 'nothing happened' WHERE id = {id}"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
}

async fn a_changed_entry_is_named_by_the_cli_and_the_organizations_api(backend: Backend) {
    let (_dir, s) = started_on(backend, "");
    seed(&s);
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let clerk = s.dev_token(&["--email", "clerk@acme.example"]);

    let out = s.cli(&["audit", "verify"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["failure"].is_null() && v["entries"].as_u64().unwrap() >= 3, "{v}");
    let (st, v) = verify_api(&s, &boss).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let (st, _) = verify_api(&s, &clerk).await;
    assert_eq!(st, 403, "a viewer may not");

    // acme's first entry (the organization's creation), changed behind trackgate's back.
    let first = s
        .json_lines(&["audit", "--org", "acme", "--limit", "1000"])
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .min()
        .unwrap();
    tamper(&s, first).await;
    let out = s.cli(&["audit", "verify"], None);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("entry {first} was changed")), "{said}");
    let (st, v) = verify_api(&s, &boss).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["failure"]["id"].as_i64()),
        (Some(false), Some(first)),
        "{v}"
    );
}

trackgate_e2e::on_both_backends!(a_changed_entry_is_named_by_the_cli_and_the_organizations_api);
