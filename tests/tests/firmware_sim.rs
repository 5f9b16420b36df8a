//! firmware-sim against the Quick start server: a roster, provisioned through the trackgate CLI,
//! sending over MQTT (embedded broker) as devices and over HTTPS as the supplier relay.

use std::process::Command;
use trackgate_e2e::*;

#[tokio::test]
async fn the_simulator_provisions_a_fleet_and_its_records_arrive_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_defaults(dir.path(), port).unwrap();
    let sim = |args: &[&str]| {
        let out = Command::new(built("firmware-sim"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TRACKGATE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "firmware-sim {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    sim(&["roster", "--devices", "3"]);
    sim(&["provision", "--trackgate", binary().to_str().unwrap()]);

    let url = format!("https://localhost:{}", server.https.port());
    let mqtt: serde_json::Value = serde_json::from_str(&sim(&[
        "send",
        "--mode",
        "mqtt",
        "--mqtt-port",
        &port.to_string(),
        "--records",
        "20",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (mqtt["records_sent"].as_u64(), mqtt["accepted"].as_u64()),
        (Some(60), Some(60)),
        "{mqtt}"
    );
    let https: serde_json::Value = serde_json::from_str(&sim(&[
        "send",
        "--url",
        &url,
        "--records",
        "10",
        "--batch",
        "7",
        "--json",
    ]))
    .unwrap();
    assert_eq!(https["accepted"].as_u64(), Some(30), "{https}");
    assert!(https["failed_requests"].as_object().unwrap().is_empty(), "{https}");

    // 60 over MQTT then 30 over HTTPS, per device seqs 0..=29 in order: the seq state survived
    // between the two runs of the simulator.
    let db = server.db().await;
    wait_for_stored(&db, 90).await;
    let per_device: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT device_id, COUNT(*), MIN(seq), MAX(seq) FROM positions GROUP BY device_id ORDER BY device_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(per_device.len(), 3);
    for (dev, n, lo, hi) in per_device {
        assert_eq!((n, lo, hi), (30, 0, 29), "{dev}");
    }
    let latest: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM latest_positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(latest, 3, "every simulated device has a position on the map");
}
