//! Moving up: a Quick start's SQLite database (positions, operators, geofences, audit rows) copied into
//! PostgreSQL with `trackgate db copy`, interrupted by `kill -9` and resumed; then trackgate on
//! PostgreSQL answers the API as it did on SQLite.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trackgate_e2e::postgres::Postgres;
use trackgate_e2e::*;

const JSON: &str = "application/json";

async fn get(s: &Server, c: &reqwest::Client, token: &str, path: &str) -> Value {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// What an operator and an administrator see, as the API and the CLI answer.
async fn answers(s: &Server, to_ms: u64) -> Vec<String> {
    let token = s
        .ok(&["dev-token", "--email", "root@ops.example", "--platform-admin"], None)
        .trim()
        .to_owned();
    let c = s.client();
    let mut out = Vec::new();
    for path in [
        "/v1/devices".to_owned(),
        "/v1/positions/latest".to_owned(),
        "/v1/geofences".to_owned(),
        format!("/v1/devices/TRK-0001/track?from=0&to={to_ms}&limit=5000"),
    ] {
        out.push(get(s, &c, &token, &path).await.to_string());
    }
    out.push(s.ok(&["device", "list", "--json"], None));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_start_database_moves_to_postgres_and_answers_the_same() {
    let (dir, mut server) = started("");
    let (dev, sup) = (vector_device(), vector_supplier());
    server.ok(&["org", "add", "acme", "--name", "Acme"], None);
    server.ok(&["device", "assign", "TRK-0001", "--org", "acme"], None);
    server.ok(
        &[
            "geofence",
            "put",
            "--org",
            "acme",
            "depot",
            "--name",
            "Depot",
            "--circle",
            "24.9,60.1,300",
        ],
        None,
    );
    let c = server.client();
    let t0 = now_ms() - 3_600_000;
    for batch in 0..20u64 {
        let envelopes: Vec<String> = (0..1000u64)
            .map(|i| {
                let seq = batch * 1000 + i;
                let m = format!(
                    "{{\"dev\":\"TRK-0001\",\"seq\":{seq},\"ts\":{},\"lat\":60.1,\"lon\":24.9,\"bat\":80}}",
                    t0 + seq * 100
                );
                dev.envelope(&m)
            })
            .collect();
        let reply = server.post(&c, &sup, JSON, &format!("[{}]", envelopes.join(","))).await;
        assert_eq!(reply.counts(), (1000, 0));
    }
    let to_ms = now_ms() + 60_000;
    let before = answers(&server, to_ms).await;
    // The reads above are audited too: the log as it stands is what must move.
    let audit_before = server.ok(&["audit", "--limit", "1000"], None);
    server.stop_with("-TERM").unwrap();

    let pg = Postgres::start(&dir.path().join("pg")).unwrap();
    pg.create_database(DATABASE).unwrap();
    let url = pg.url(DATABASE);
    let copy = |extra: &[&str]| {
        let mut c = Command::new(binary());
        c.arg("--config")
            .arg(&server.config)
            .args(["db", "copy", "--to", &url, "--page-rows", "500"])
            .args(extra)
            .env_remove("TRACKGATE_CONFIG")
            .env_remove("TRACKGATE_MASTER_KEY");
        c
    };

    // Interrupted: killed once the positions are under way.
    let mut child = copy(&[]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = progress.next().expect("progress lines").unwrap();
        if line.contains("positions:") {
            child.kill().unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "no positions progress");
    }
    child.wait().unwrap();

    // A target holding data is refused unless the copy is resumed.
    let refused = copy(&[]).output().unwrap();
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("already holds data") && msg.contains("--resume"), "{msg}");
    assert!(
        !msg.contains(postgres::PASSWORD),
        "the password is never printed: {msg}"
    );

    let resumed = copy(&["--resume"]).output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr),
    );
    assert!(resumed.status.success(), "{out}\n{err}");
    assert!(err.contains("every table's count agrees"), "{err}");
    assert!(!err.contains(postgres::PASSWORD) && !out.contains(postgres::PASSWORD));
    let positions = out.lines().find(|l| l.starts_with("positions ")).unwrap();
    assert_eq!(
        positions.split_whitespace().collect::<Vec<_>>(),
        ["positions", "20000", "20000"],
        "{out}"
    );
    println!("{out}");

    // trackgate on PostgreSQL, same config and master key otherwise.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&server.config)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("database.url = {url:?}\n").as_bytes()))
        .unwrap();
    server.restart().unwrap();
    assert_eq!(server.postgres_url.as_deref(), Some(url.as_str()));
    assert_eq!(server.ok(&["audit", "--limit", "1000"], None), audit_before);
    let after = answers(&server, to_ms).await;
    assert_eq!(before.len(), after.len());
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(b == a, "answer {i} differs:\n{:.2000}\n{:.2000}", b, a);
    }
    // And it takes new records on PostgreSQL.
    assert_eq!(server.post_record(&c, &dev, 99_999).await.counts(), (1, 0));
    assert_eq!(stored(&server.db().await, Some("TRK-0001")).await, 20_001);
    drop(pg);
}
