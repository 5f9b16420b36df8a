//! The README's examples, run as written.

use std::process::Command;
use trackgate_e2e::*;

const README: &str = include_str!("../../README.md");

/// The fenced block that follows `<!-- example: NAME ...-->`.
fn example(name: &str) -> String {
    let marker = format!("<!-- example: {name}");
    let after = &README[README.find(&marker).expect("example marker")..];
    let start = after.find("```bash\n").expect("bash block") + "```bash\n".len();
    let end = after[start..].find("\n```").expect("end of block");
    after[start..start + end].to_owned()
}

/// Run example `name` against `server` in its directory, as the README says (`TG`, the config,
/// `URL`), with `env` beside; its standard output, after it succeeded.
fn run_example(name: &str, server: &Server, env: &[(&str, String)]) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(example(name))
        .current_dir(&server.dir)
        .env("TG", binary())
        .env("TRACKGATE_CONFIG", &server.config)
        .env("URL", format!("https://localhost:{}", server.https.port()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the example {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_openssl_curl_example_gets_a_200_and_the_record_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let script = example("openssl-curl");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("TG", binary())
        .env("TRACKGATE_CONFIG", &server.config)
        .env("URL", format!("https://localhost:{}", server.https.port()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"{"accepted":1,"duplicates":0,"rejected":[]}"#),
        "{stdout}"
    );
    let db = server.db().await;
    let (dev, seq, lat): (String, i64, f64) = sqlx::query_as("SELECT device_id, seq, lat FROM positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!((dev.as_str(), seq, lat), ("TRK-0001", 1, 60.1699));
}

#[tokio::test]
async fn the_dev_sign_in_example_lists_the_device_it_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let stdout = run_example("dev-sign-in", &server, &[]);
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["devices"][0]["id"], "TRK-0100");
    assert_eq!(answer["devices"][0]["org_id"], "acme");
}

#[tokio::test]
async fn the_events_example_sets_limits_and_reads_the_trip_s_geofence_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let stdout = run_example(
        "events",
        &server,
        &[("SIM", built("firmware-sim").to_string_lossy().into_owned())],
    );
    let mut lines = stdout.lines().filter(|l| l.starts_with('{'));
    assert_eq!(lines.next(), Some(r#"{"ok":true}"#), "{stdout}");
    let answer: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let events = answer["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{answer}");
    for e in events {
        assert_eq!(
            (e["org_id"].as_str(), e["kind"].as_str()),
            (Some("acme"), Some("enter")),
            "{e}"
        );
        assert!(e["geofence"].is_string(), "{e}");
    }
}

#[tokio::test]
async fn the_webhook_example_makes_a_rule_and_shows_its_secret_once() {
    let dir = tempfile::tempdir().unwrap();
    // The example's receiver is on the internet; here it is on this machine.
    let server = Server::start_in(dir.path(), "alerts.allow_private_destinations = true").unwrap();
    let stdout = run_example(
        "webhook",
        &server,
        &[("HOOK", "https://localhost:9/trackgate".to_owned())],
    );
    let rule: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(rule["id"], "dispatch");
    assert_eq!(rule["kinds"], serde_json::json!(["enter", "exit"]));
    assert_eq!(rule["secret"].as_str().map(str::len), Some(64), "{rule}");
}

#[tokio::test]
async fn the_sharing_example_makes_a_link_whose_token_opens_the_shipment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let stdout = run_example("sharing", &server, &[]);
    let made: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let token = made["token"].as_str().unwrap();
    assert!(
        made["url"].as_str().unwrap().ends_with(&format!("/share#{token}")),
        "{made}"
    );
    let shared: serde_json::Value = server
        .client()
        .get(server.url("/v1/shared"))
        .header("x-tg-share", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shared["label"], "Order 4711", "{shared}");
}

#[tokio::test]
async fn on_the_embedded_defaults_both_examples_run_as_written_and_store_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_defaults(dir.path(), port).unwrap();
    for (name, env) in [
        (
            "openssl-curl",
            vec![("URL", format!("https://localhost:{}", server.https.port()))],
        ),
        ("mosquitto-endpoint", vec![("PORT", port.to_string())]),
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(example(name))
            .current_dir(dir.path())
            .env("TG", binary())
            .env_remove("TRACKGATE_CONFIG")
            .envs(env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = server.db().await;
    wait_for_stored(&db, 2).await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM positions ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(seqs, [1, 2], "seq 1 came over HTTPS, seq 2 over MQTT");
    assert_eq!(
        server
            .metric(r#"trackgate_records_total{outcome="accepted",transport="mqtt"}"#)
            .await,
        1.0
    );
}

#[test]
fn the_quick_start_has_exactly_two_commands() {
    let start = README.find("## Quick start").expect("Quick start section");
    let section = &README[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let blocks: Vec<&str> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    assert_eq!(blocks, ["cargo run --release -p trackgate -- serve", ".ci/run"]);
}
