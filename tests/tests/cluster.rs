//! Two trackgate nodes on one PostgreSQL and one Mosquitto behave as one service: HTTPS to
//! either, MQTT through one shared subscription, each record stored once, a key revoked through
//! one refused by the other, and `kill -9` of one losing nothing it acknowledged while the other
//! keeps serving. (Both nodes share this machine's two cores.)

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trackgate_e2e::mosquitto::Mosquitto;
use trackgate_e2e::*;
use trackgate_proto::sign::mqtt_password;

const JSON: &str = "application/json";

struct Cluster {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    a: Server,
    b: Server,
}

/// Node A makes the database; node B is started on it with its own data directory and client
/// id, and A's master key file (the one secret every node must share).
fn cluster(extra: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
    let node = |id: &str| {
        broker
            .trackgate_settings()
            .replace("trackgate-test", &format!("trackgate-{id}"))
            + "mqtt.filter = \"$share/trackgate/devices/+/telemetry\"\ningest.key_refresh_ms = 200\n"
            + extra
    };
    let a = Server::start_on(Backend::Postgres, &dir.path().join("a"), &node("a")).unwrap();
    let b_settings = format!(
        "{}database.url = {:?}\nsecurity.master_key_file = {:?}\n",
        node("b"),
        a.postgres_url.clone().unwrap(),
        dir.path().join("a/data/master.key")
    );
    let b = Server::start_in(&dir.path().join("b"), &b_settings).unwrap();
    assert!(b.postgres_url.is_some());
    a.add_supplier(&vector_supplier());
    a.add_device(&vector_device(), Some("ACME"));
    broker.load_credentials(&a);
    Cluster {
        _dir: dir,
        broker,
        a,
        b,
    }
}

async fn wait_stored(server: &Server, n: i64) -> i64 {
    let db = server.db().await;
    let got = wait_for_stored(&db, n).await;
    db.close().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_through_both_nodes_and_a_shared_subscription_are_stored_once() {
    let c = cluster("");
    let dev = vector_device();
    let (ca, cb) = (c.a.client(), c.b.client());
    // HTTPS: odd seqs to A, even to B; then the first 50 again, each to the other node.
    let envelopes: Vec<String> = (0..=200u64).map(|s| dev.envelope(&record("TRK-0001", s))).collect();
    for (seq, envelope) in envelopes.iter().enumerate().skip(1) {
        let (node, client) = if seq % 2 == 1 { (&c.a, &ca) } else { (&c.b, &cb) };
        assert_eq!(
            node.post(client, &dev, JSON, envelope).await.counts(),
            (1, 0),
            "seq {seq}"
        );
    }
    for (seq, envelope) in envelopes.iter().enumerate().take(51).skip(1) {
        let (node, client) = if seq % 2 == 1 { (&c.b, &cb) } else { (&c.a, &ca) };
        let reply = node.post(client, &dev, JSON, envelope).await;
        assert_eq!(
            (reply.status, reply.body["duplicates"].as_u64()),
            (200, Some(1)),
            "{:?}",
            reply.body
        );
    }
    // MQTT through the broker: one shared subscription, so each message goes to one node.
    let lines: Vec<String> = (1001..=1400u64).map(|s| dev.envelope(&record("TRK-0001", s))).collect();
    let out = c.broker.publish_lines(
        "TRK-0001",
        &mqtt_password(&dev.secret, "TRK-0001"),
        "devices/TRK-0001/telemetry",
        &lines,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(wait_stored(&c.a, 600).await, 600);
    let series = "trackgate_mqtt_messages_total{outcome=\"acknowledged\"}";
    let (by_a, by_b) = (c.a.metric(series).await, c.b.metric(series).await);
    assert_eq!(by_a + by_b, 400.0, "A took {by_a}, B took {by_b}");
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "the subscription is shared: A took {by_a}, B took {by_b}"
    );

    let db = c.b.db().await;
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT seq) FROM positions WHERE device_id = 'TRK-0001'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (600, 600), "each record stored once");
    assert_eq!(
        stored_seqs(&c.a, "TRK-0001").await,
        (1..=200).chain(1001..=1400).collect::<BTreeSet<u64>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_node_is_refused_by_the_other() {
    let c = cluster("");
    let dev = vector_device();
    let cb = c.b.client();
    assert_eq!(c.b.post_record(&cb, &dev, 1).await.counts(), (1, 0));
    c.a.ok(&["key", "revoke", "TRK-0001", "k1"], None);
    let revoked = Instant::now();
    let mut seq = 2;
    let refused_after = loop {
        let reply = c.b.post_record(&cb, &dev, seq).await;
        if reply.status == 401 {
            break revoked.elapsed();
        }
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "node B still takes the revoked key"
        );
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("node B refused the key revoked through node A after {refused_after:?} (key_refresh_ms = 200)");
    // Refused from then on, on both nodes.
    let ca = c.a.client();
    assert_eq!(c.a.post_record(&ca, &dev, 1000).await.status, 401);
    assert_eq!(c.b.post_record(&cb, &dev, 1001).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_node_loses_nothing_and_the_other_keeps_serving() {
    let mut c = cluster("");
    let acked = Arc::new(Mutex::new((BTreeSet::new(), 0u64)));
    let a_dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    // Two clients per node, each record to one node; seqs apart per worker.
    for (w, node) in [&c.a, &c.a, &c.b, &c.b].into_iter().enumerate() {
        let (client, url, acked, a_dead) = (node.client(), node.url("/v1/records"), acked.clone(), a_dead.clone());
        let on_b = w >= 2;
        workers.push(tokio::spawn(async move {
            let dev = vector_device();
            for k in 0..100_000u64 {
                let seq = w as u64 * 1_000_000 + k;
                let body = dev.envelope(&record("TRK-0001", seq));
                let ts = (now_ms() / 1000).to_string();
                let Some(reply) = post_signed(&client, &url, &dev, JSON, &body, &ts).await else {
                    return; // node A is gone
                };
                if reply.status == 200 && reply.counts() == (1, 0) {
                    let mut a = acked.lock().unwrap();
                    a.0.insert(seq);
                    if on_b && a_dead.load(std::sync::atomic::Ordering::Relaxed) {
                        a.1 += 1;
                    }
                    if a.1 >= 300 {
                        return;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().0.len() < 500 {
        assert!(Instant::now() < deadline, "traffic never reached 500 records");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.a.stop_with("-KILL").unwrap();
    a_dead.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .unwrap()
            .unwrap();
    }
    let (acked, after) = acked.lock().unwrap().clone();
    assert!(after >= 300, "node B kept acknowledging after A died: {after}");
    let stored = stored_seqs(&c.b, "TRK-0001").await;
    let lost: Vec<_> = acked.difference(&stored).take(10).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    println!(
        "{} records acknowledged by two nodes, {after} by node B after kill -9 of A; all stored",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_on_one_node_shows_what_the_other_stored() {
    let mut c = cluster("");
    c.a.ok(&["org", "add", "acme", "--name", "Acme"], None);
    c.a.ok(&["device", "assign", "TRK-0001", "--org", "acme"], None);
    let token =
        c.b.ok(&["dev-token", "--email", "root@ops.example", "--platform-admin"], None)
            .trim()
            .to_owned();
    let cb = c.b.client();
    let mut stream = trackgate_e2e::sse::Sse::open(&c.b, &cb, &token).await;
    let (ca, dev) = (c.a.client(), vector_device());
    for seq in 1..=5u64 {
        assert_eq!(c.a.post_record(&ca, &dev, seq).await.counts(), (1, 0));
    }
    let mut seen = Vec::new();
    for _ in 1..=5 {
        let f = tokio::time::timeout(Duration::from_secs(10), stream.position())
            .await
            .expect("node B streams node A's positions");
        assert_eq!(f["properties"]["device_id"], "TRK-0001");
        seen.push(f["properties"]["seq"].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    // And B's own, once each (its own notifications are not read back twice).
    assert_eq!(c.b.post_record(&cb, &dev, 6).await.counts(), (1, 0));
    let f = tokio::time::timeout(Duration::from_secs(10), stream.position())
        .await
        .unwrap();
    assert_eq!(f["properties"]["seq"], 6);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), stream.position())
            .await
            .is_err(),
        "a position streamed twice"
    );
    // A database restart loses notifications: the stream is ended, not left silently missing
    // positions, and its client reconnects.
    let pg = c.a.pg.as_mut().unwrap();
    pg.restart().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived lost notifications");
    let mut again = trackgate_e2e::sse::Sse::open(&c.b, &cb, &token).await;
    assert_eq!(c.a.post_record(&ca, &dev, 7).await.counts(), (1, 0));
    let f = tokio::time::timeout(Duration::from_secs(10), again.position())
        .await
        .unwrap();
    assert_eq!(f["properties"]["seq"], 7);
}
