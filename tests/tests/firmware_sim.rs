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

/// A fleet larger than the connections firmware-sim may hold takes turns over MQTT (through
/// Mosquitto): each device connects, publishes what it has queued and disconnects. Mosquitto's own
/// log shows that no more connections than allowed were open at once and that devices came back;
/// every record is stored or refused, and rejections published while a device was away reach it
/// at its next session.
#[tokio::test]
async fn a_fleet_takes_turns_on_few_mqtt_connections() {
    let dir = tempfile::tempdir().unwrap();
    let broker = trackgate_e2e::mosquitto::Mosquitto::start(&dir.path().join("broker")).unwrap();
    let server = Server::start_in(&dir.path().join("tg"), &broker.trackgate_settings()).unwrap();
    let sim = |args: &[&str]| {
        serde_json::from_str::<serde_json::Value>(&run_ok(dir.path(), &built("firmware-sim"), args)).unwrap_or_default()
    };
    sim(&["roster", "--devices", "12"]);
    sim(&[
        "provision",
        "--trackgate",
        binary().to_str().unwrap(),
        "--config",
        server.config.to_str().unwrap(),
    ]);
    broker.load_credentials(&server);
    let s = sim(&[
        "send",
        "--mode",
        "mqtt",
        "--mqtt-port",
        &broker.port.to_string(),
        "--ca",
        broker.ca.to_str().unwrap(),
        "--connections",
        "3",
        "--records",
        "6",
        "--rate",
        "100",
        "--faults",
        "bad-signature=0.1",
        "--json",
        "--quiet",
    ]);
    assert_eq!(s["records_sent"], 72, "{s}");
    let bad = s["faults"]["bad-signature"]["sent"].as_u64().unwrap();
    assert!(bad > 0, "{s}");
    assert_eq!(
        s["rejected"]["bad_signature"].as_u64(),
        Some(bad),
        "every rejection came back: {s}"
    );
    let accepted = s["accepted"].as_i64().unwrap();
    assert_eq!(accepted, 72 - bad as i64, "{s}");
    let db = server.db().await;
    wait_for_stored(&db, accepted).await;
    assert_eq!(stored(&db, None).await, accepted);

    // Mosquitto's account of the devices' connections, in the order it saw them.
    let log = broker.log();
    let (mut open, mut most, mut goodbyes) = (0i64, 0i64, 0u64);
    let mut connects = std::collections::BTreeMap::<String, u64>::new();
    for line in log.lines() {
        if let Some(rest) = line.split("New client connected from ").nth(1)
            && let Some(id) = rest.split(" as ").nth(1).and_then(|r| r.split(' ').next())
            && id.starts_with("sim-")
        {
            open += 1;
            most = most.max(open);
            *connects.entry(id.to_owned()).or_default() += 1;
        } else if line.contains("Client sim-") && line.ends_with(" disconnected.") {
            open -= 1;
            goodbyes += 1;
        } else if line.contains("Client sim-") && line.contains(" closed its connection") {
            open -= 1;
        }
    }
    assert_eq!(connects.len(), 12, "every device connected:\n{log}");
    assert!(most <= 3, "{most} devices connected at once:\n{log}");
    assert!(connects.values().all(|&n| n >= 2), "devices took turns: {connects:?}");
    assert_eq!(connects.values().sum::<u64>(), s["sessions"].as_u64().unwrap(), "{s}");
    assert_eq!(
        goodbyes,
        s["sessions"].as_u64().unwrap(),
        "every session ended with a DISCONNECT:\n{log}"
    );
}
