//! firmware-sim against the Quick start server: a roster, provisioned through the trackgate CLI,
//! sending over MQTT (embedded broker) as devices and over HTTPS as the supplier relay.

use trackgate_e2e::*;

#[tokio::test]
async fn the_simulator_provisions_a_fleet_and_its_records_arrive_over_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_defaults(dir.path(), port).unwrap();
    let sim = |args: &[&str]| run_ok(dir.path(), &built("firmware-sim"), args);
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

/// Realism and faults, checked against what trackgate stored: devices going offline upload
/// their backlogs behind live records (so rows arrive out of `seq` order), and every injected
/// fault gets the answer the protocol gives it, matched record by record over HTTPS.
#[tokio::test]
async fn backlogs_arrive_out_of_order_and_faults_get_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_defaults(dir.path(), port).unwrap();
    let sim = |args: &[&str]| {
        serde_json::from_str::<serde_json::Value>(&run_ok(dir.path(), &built("firmware-sim"), args)).unwrap_or_default()
    };
    sim(&["roster", "--devices", "5"]);
    sim(&["provision", "--trackgate", binary().to_str().unwrap()]);
    let url = format!("https://localhost:{}", server.https.port());
    let faults = "bad-signature=0.05,malformed=0.05,replay=0.05,stale=0.1";
    let s = sim(&[
        "send",
        "--url",
        &url,
        "--records",
        "60",
        "--batch",
        "10",
        "--offline",
        "0.3",
        "--faults",
        faults,
        "--json",
        "--quiet",
    ]);
    assert_eq!(s["records_sent"], 300, "{s}");
    let f = &s["faults"];
    for (fault, answer) in [
        ("bad-signature", "bad_signature"),
        ("malformed", "malformed"),
        ("replay", "acknowledged"),
    ] {
        let sent = f[fault]["sent"].as_u64().unwrap();
        let answers = f[fault]["answers"].as_object().unwrap();
        let matched = answers.get(answer).and_then(|v| v.as_u64()).unwrap_or(0);
        let in_stale_requests = answers.get("http_401").and_then(|v| v.as_u64()).unwrap_or(0);
        assert!(sent > 0, "{fault} never injected: {s}");
        assert_eq!(matched + in_stale_requests, sent, "{fault}: {s}");
    }
    let stale = f["stale"]["sent"].as_u64().unwrap();
    assert!(stale > 0, "{s}");
    assert_eq!(
        s["failed_requests"]["401"].as_u64(),
        Some(stale),
        "stale requests are refused: {s}"
    );

    // What trackgate stored is exactly what it acknowledged as new.
    let db = server.db().await;
    let accepted = s["accepted"].as_i64().unwrap();
    wait_for_stored(&db, accepted).await;
    assert_eq!(stored(&db, None).await, accepted);
    // Backlogs came in behind newer records: arrival order (rowid) is not seq order.
    let inversions: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM positions a JOIN positions b \
         ON a.device_id = b.device_id AND a.rowid < b.rowid AND a.seq > b.seq",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(inversions > 0, "no record arrived after a newer one");

    // Over MQTT, a record under another device's topic is refused as `topic_mismatch`.
    let m = sim(&[
        "send",
        "--mode",
        "mqtt",
        "--mqtt-port",
        &port.to_string(),
        "--records",
        "40",
        "--faults",
        "wrong-topic=0.1,bad-signature=0.05",
        "--json",
        "--quiet",
    ]);
    assert!(m["faults"]["wrong-topic"]["sent"].as_u64().unwrap() > 0, "{m}");
    assert!(m["rejected"]["topic_mismatch"].as_u64().unwrap_or(0) > 0, "{m}");
    assert!(m["rejected"]["bad_signature"].as_u64().unwrap_or(0) > 0, "{m}");
}
