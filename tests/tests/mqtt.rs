//! MQTT ingest against a real Mosquitto over TLS, published to by the real `mosquitto_pub`, with
//! trackgate storing into SQLite and into PostgreSQL.

use std::time::Duration;
use trackgate_e2e::mosquitto::Mosquitto;
use trackgate_e2e::*;
use trackgate_proto::sign::mqtt_password;

struct Rig {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    server: Server,
}

/// A broker, trackgate on `backend` consuming from it, and `devices` provisioned with broker
/// credentials.
fn rig(backend: Backend, devices: &[Key], extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let settings = format!("{}{extra}", broker.trackgate_settings());
    let server = Server::start_on(backend, &dir.path().join("trackgate"), &settings).unwrap();
    for d in devices {
        server.add_device(d, None);
    }
    let rig = Rig {
        _dir: dir,
        broker,
        server,
    };
    rig.load_credentials();
    rig
}

impl Rig {
    fn load_credentials(&self) {
        self.broker.load_credentials(&self.server);
    }

    fn publish(&self, dev: &Key, topic_dev: &str, message: &str) {
        let out = self.broker.publish(
            &dev.owner,
            &mqtt_password(&dev.secret, &dev.owner),
            &format!("devices/{topic_dev}/telemetry"),
            message,
        );
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        for _ in 0..600 {
            let v = self.server.metric(series).await;
            if v >= at_least {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{series} never reached {at_least}:\n{}\n{}",
            self.server.log_text(),
            self.broker.log()
        );
    }

    async fn wait_stored(&self, n: i64) {
        let db = self.server.db().await;
        for _ in 0..1200 {
            if stored(&db, None).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "only {} of {n} records stored:\n{}",
            stored(&db, None).await,
            self.server.log_text()
        );
    }
}

async fn records_published_by_mosquitto_pub_are_stored(backend: Backend) {
    let dev = vector_device();
    let rig = rig(backend, std::slice::from_ref(&dev), "");
    let first = dev.envelope(&record("TRK-0001", 1));
    rig.publish(&dev, "TRK-0001", &first);
    let array = format!(
        "[{},{}]",
        dev.envelope(&record("TRK-0001", 2)),
        dev.envelope(&record("TRK-0001", 3))
    );
    rig.publish(&dev, "TRK-0001", &array);
    rig.publish(&dev, "TRK-0001", &first);
    rig.wait_metric(r#"trackgate_mqtt_messages_total{outcome="acknowledged"}"#, 3.0)
        .await;
    assert_eq!(stored(&rig.server.db().await, Some("TRK-0001")).await, 3);
    assert_eq!(
        rig.server
            .metric(r#"trackgate_records_total{outcome="accepted",transport="mqtt"}"#)
            .await,
        3.0
    );
    assert_eq!(
        rig.server
            .metric(r#"trackgate_records_total{outcome="duplicate",transport="mqtt"}"#)
            .await,
        1.0
    );
    assert_eq!(rig.server.metric("trackgate_mqtt_connected").await, 1.0);
}

async fn bad_messages_are_rejected_acknowledged_counted_and_reported_to_the_device(backend: Backend) {
    let (dev, other) = (vector_device(), Key::derived("TRK-0002", "k1"));
    let rig = rig(backend, &[dev.clone(), other.clone()], "");
    // The device listens for its rejections (its ACL allows reading only its own topic).
    let listener = std::process::Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &rig.broker.port.to_string(), "--cafile"])
        .arg(&rig.broker.ca)
        .args(["-u", "TRK-0001", "-P", &mqtt_password(&dev.secret, "TRK-0001")])
        .args(["-t", "devices/TRK-0001/rejections", "-q", "1", "-C", "3", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bad_sig = dev.envelope(&record("TRK-0001", 1)).replace("\"bat\":87", "\"bat\":86");
    rig.publish(&dev, "TRK-0001", &bad_sig);
    // TRK-0002's own, validly signed record, on TRK-0001's topic.
    rig.publish(&dev, "TRK-0001", &other.envelope(&record("TRK-0002", 1)));
    rig.publish(&dev, "TRK-0001", "not json at all");
    let good = dev.envelope(&record("TRK-0001", 2));
    rig.publish(&dev, "TRK-0001", &good);
    rig.wait_metric(r#"trackgate_mqtt_messages_total{outcome="acknowledged"}"#, 4.0)
        .await;
    for reason in ["bad_signature", "topic_mismatch", "malformed"] {
        let series = format!(r#"trackgate_rejections_total{{reason="{reason}",transport="mqtt"}}"#);
        assert_eq!(rig.server.metric(&series).await, 1.0, "{reason}");
    }
    let out = listener.wait_with_output().unwrap();
    let said = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<serde_json::Value> = said.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reasons: Vec<&str> = answers
        .iter()
        .map(|a| a["rejected"][0]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["bad_signature", "topic_mismatch", "malformed"]);
    assert_eq!(answers[0]["accepted"], 0);
    // Acknowledged, so not redelivered: the counts stay put, and only the good record is stored.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rig.server
            .metric(r#"trackgate_mqtt_messages_total{outcome="received"}"#)
            .await,
        4.0
    );
    let db = rig.server.db().await;
    let seqs: Vec<(String, i64)> = sqlx::query_as("SELECT device_id, seq FROM positions")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(seqs, [("TRK-0001".to_owned(), 2)]);
}

/// Devices, each with `n` records as mosquitto_pub lines (one message per record).
fn fleet(count: usize, n: u64) -> Vec<(Key, Vec<String>)> {
    (0..count)
        .map(|i| {
            let key = Key::derived(&format!("TRK-{i:04}"), "k1");
            let lines = (0..n).map(|seq| key.envelope(&record(&key.owner, seq))).collect();
            (key, lines)
        })
        .collect()
}

async fn every_record_the_broker_accepted_is_stored_once_across_kill_9(backend: Backend) {
    let devices = fleet(4, 5000);
    let keys: Vec<Key> = devices.iter().map(|(k, _)| k.clone()).collect();
    let mut rig = rig(backend, &keys, "");
    // The publishers run to completion on their own: mosquitto_pub exits 0 only when the broker
    // has acknowledged every message.
    let publishers: Vec<_> = devices
        .into_iter()
        .map(|(key, lines)| {
            let (port, ca) = (rig.broker.port, rig.broker.ca.clone());
            std::thread::spawn(move || {
                let b = Mosquitto::connect_only(port, ca);
                let out = b.publish_lines(
                    &key.owner,
                    &mqtt_password(&key.secret, &key.owner),
                    &format!("devices/{}/telemetry", key.owner),
                    &lines,
                );
                assert!(
                    out.status.success(),
                    "mosquitto_pub: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            })
        })
        .collect();
    // Kill trackgate twice while it consumes, at random moments: after a random number of stored
    // records in the first and second halves of the run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as i64;
    let kills = [500 + nanos % 7_000, 10_000 + (nanos / 7_000) % 8_000];
    eprintln!("kill -9 after {kills:?} stored records");
    for threshold in kills {
        rig.wait_stored(threshold).await;
        rig.server.restart().unwrap();
    }
    for p in publishers {
        p.join().unwrap();
    }
    rig.wait_stored(20_000).await;
    let db = rig.server.db().await;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT device_id || '/' || seq) FROM positions")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (20_000, 20_000),
        "kills after {kills:?} stored records"
    );
    let per_device: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT device_id, COUNT(*), MIN(seq), MAX(seq) FROM positions GROUP BY device_id ORDER BY device_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    for (dev, n, lo, hi) in per_device {
        assert_eq!((n, lo, hi), (5000, 0, 4999), "{dev}");
    }
}

async fn trackgate_reconnects_after_a_broker_restart_and_loses_nothing(backend: Backend) {
    let devices = fleet(1, 2000);
    let (key, lines) = devices.into_iter().next().unwrap();
    let mut rig = rig(backend, std::slice::from_ref(&key), "");
    let pw = mqtt_password(&key.secret, &key.owner);
    let topic = format!("devices/{}/telemetry", key.owner);
    let out = rig.broker.publish_lines(&key.owner, &pw, &topic, &lines[..1000]);
    assert!(out.status.success());
    rig.broker.restart().unwrap();
    let out = rig.broker.publish_lines(&key.owner, &pw, &topic, &lines[1000..]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rig.wait_stored(2000).await;
    assert!(rig.server.metric("trackgate_mqtt_reconnects_total").await >= 1.0);
    rig.wait_metric("trackgate_mqtt_connected", 1.0).await;
    // The persistent session (subscription and queue) survived the restart.
    let log = rig.server.log_text();
    let connects: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connected to the MQTT broker"))
        .collect();
    assert!(connects.len() >= 2, "{log}");
    assert!(connects.last().unwrap().contains(r#""session_present":true"#), "{log}");
}

async fn a_stalled_database_holds_pubacks_back_and_everything_lands_after(backend: Backend) {
    let devices = fleet(2, 3000);
    let keys: Vec<Key> = devices.iter().map(|(k, _)| k.clone()).collect();
    let rig = rig(
        backend,
        &keys,
        "ingest.queue_capacity = 2000\nhttp.max_records = 1000\ningest.write_retry_secs = 120",
    );
    let acked = r#"trackgate_mqtt_messages_total{outcome="acknowledged"}"#;
    let received = r#"trackgate_mqtt_messages_total{outcome="received"}"#;
    let rss_before = trackgate_e2e::rss_mb(rig.server.pid());

    // Stall the writer: hold the database's write lock.
    let hold = WriteHold::take(&rig.server).await;
    for (key, lines) in &devices {
        let out = rig.broker.publish_lines(
            &key.owner,
            &mqtt_password(&key.secret, &key.owner),
            &format!("devices/{}/telemetry", key.owner),
            lines,
        );
        assert!(out.status.success());
    }
    rig.wait_metric(received, 100.0).await;
    let acked_during = rig.server.metric(acked).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.server.metric(acked).await,
        acked_during,
        "a PUBACK went out while nothing could commit"
    );
    assert_eq!(acked_during, 0.0);
    // What trackgate holds is bounded by the queue and the broker's in-flight window, not by the
    // 6000 messages waiting at the broker.
    assert!(rig.server.metric(received).await < 6000.0);
    let rss_stalled = trackgate_e2e::rss_mb(rig.server.pid());
    assert!(
        rss_stalled < rss_before + 64.0,
        "RSS grew from {rss_before:.1} MB to {rss_stalled:.1} MB"
    );

    hold.release().await;
    rig.wait_stored(6000).await;
    rig.wait_metric(acked, 6000.0).await;
}

async fn a_payload_of_more_than_1000_envelopes_is_rejected_whole_as_too_large(backend: Backend) {
    let dev = vector_device();
    let rig = rig(backend, std::slice::from_ref(&dev), "");
    let envs: Vec<String> = (0..1001).map(|s| dev.envelope(&record("TRK-0001", s))).collect();
    // Sent through stdin as one line: a single 200 KB argument would exceed the kernel's limit.
    let pw = mqtt_password(&dev.secret, "TRK-0001");
    let out = rig.broker.publish_lines(
        "TRK-0001",
        &pw,
        "devices/TRK-0001/telemetry",
        &[format!("[{}]", envs.join(","))],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rig.wait_metric(r#"trackgate_mqtt_messages_total{outcome="acknowledged"}"#, 1.0)
        .await;
    assert_eq!(
        rig.server
            .metric(r#"trackgate_rejections_total{reason="too_large",transport="mqtt"}"#)
            .await,
        1001.0
    );
    assert_eq!(stored(&rig.server.db().await, None).await, 0);
    // 1000 is fine.
    let out = rig.broker.publish_lines(
        "TRK-0001",
        &pw,
        "devices/TRK-0001/telemetry",
        &[format!("[{}]", envs[..1000].join(","))],
    );
    assert!(out.status.success());
    rig.wait_stored(1000).await;
}

/// A broker whose certificate trackgate does not trust is an error, never a connection: there is
/// no switch that turns verification off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_trackgate_does_not_trust_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong_ca = dir.path().join("stranger.pem");
    std::fs::write(&wrong_ca, stranger.cert.pem()).unwrap();
    let settings = broker.trackgate_settings().replace(
        &format!("mqtt.ca = {:?}", broker.ca),
        &format!("mqtt.ca = {wrong_ca:?}"),
    );
    assert!(settings.contains("stranger.pem"), "{settings}");
    let server = Server::start_in(&dir.path().join("trackgate"), &settings).unwrap();
    let mut refused = false;
    for _ in 0..300 {
        let log = server.log_text();
        if log.contains("MQTT connection lost") && log.contains("certificate") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "no certificate error in the log:\n{}", server.log_text());
    assert_eq!(server.metric("trackgate_mqtt_connected").await, 0.0);
}

trackgate_e2e::on_both_backends!(
    records_published_by_mosquitto_pub_are_stored,
    bad_messages_are_rejected_acknowledged_counted_and_reported_to_the_device,
    every_record_the_broker_accepted_is_stored_once_across_kill_9,
    trackgate_reconnects_after_a_broker_restart_and_loses_nothing,
    a_stalled_database_holds_pubacks_back_and_everything_lands_after,
    a_payload_of_more_than_1000_envelopes_is_rejected_whole_as_too_large,
);
