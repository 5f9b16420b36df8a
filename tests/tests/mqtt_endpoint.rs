//! trackgate's own MQTT endpoint against the real `mosquitto_pub` and `mosquitto_sub` clients (and
//! rumqttc's MQTT 5 client): records stored, rejections reported, each device confined to its own
//! topics, PUBACKs only after the commit (across kill -9 and a stalled store), Receive Maximum
//! honoured, and valid devices served while others flood it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trackgate_e2e::*;
use trackgate_proto::sign::mqtt_password;

struct Endpoint {
    _dir: Option<tempfile::TempDir>,
    server: Server,
    port: u16,
    ca: PathBuf,
}

/// trackgate with its endpoint on, the §5 device and `others` provisioned.
fn endpoint(extra: &str, others: &[&Key]) -> Endpoint {
    endpoint_on(Backend::Sqlite, extra, others)
}

/// As [`endpoint`], on `backend`.
fn endpoint_on(backend: Backend, extra: &str, others: &[&Key]) -> Endpoint {
    let (dir, server) = started_on(backend, &format!("{MQTT_ENDPOINT}{extra}"));
    for k in others {
        server.add_device(k, None);
    }
    let port = server.mqtt.expect("the endpoint is listening").port();
    let ca = server.dir.join("data/tls/dev-cert.pem");
    Endpoint {
        _dir: Some(dir),
        server,
        port,
        ca,
    }
}

/// A client's output lines, collected as they come by one reader thread per stream.
#[derive(Clone, Default)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    readers: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Lines {
    fn follow(&self, out: impl std::io::Read + Send + 'static) {
        let lines = self.lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        self.readers.lock().unwrap().push(reader);
    }

    /// The lines so far; the client may still be printing.
    fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line the client printed. Only once the client has exited: this reads its output
    /// to the end, which a reader thread may not have reached when `wait` returns.
    fn closed(&self) -> Vec<String> {
        let readers = std::mem::take(&mut *self.readers.lock().unwrap());
        for reader in readers {
            reader.join().unwrap();
        }
        self.all()
    }

    fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait (at most `limit`) until `n` lines contain `needle`.
    fn wait_for(&self, needle: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.count(needle) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Endpoint {
    /// A Mosquitto client as `key`'s device, its output line-buffered (stdbuf) so that what it
    /// printed is there even when it is killed.
    fn client(&self, program: &str, key: &Key, args: &[&str]) -> Command {
        let mut c = Command::new("stdbuf");
        c.args([
            "-oL",
            "-eL",
            program,
            "-h",
            "localhost",
            "-p",
            &self.port.to_string(),
            "--cafile",
        ])
        .arg(&self.ca)
        .args(["-u", &key.owner, "-P", &mqtt_password(&key.secret, &key.owner)])
        .args(args);
        c
    }

    /// `mosquitto_pub -q 1` of one message on `topic`: it exits 0 only once PUBACKed.
    fn publish(&self, key: &Key, topic: &str, message: &str, extra: &[&str]) -> Output {
        let mut args = vec!["-q", "1", "-t", topic, "-m", message];
        args.extend_from_slice(extra);
        self.client("mosquitto_pub", key, &args)
            .output()
            .expect("mosquitto_pub runs (Debian package mosquitto-clients)")
    }

    /// `mosquitto_sub -d` on `topic`, its output followed.
    fn subscribe(&self, key: &Key, topic: &str, extra: &[&str]) -> (Child, Lines) {
        let mut args = vec!["-q", "1", "-t", topic, "-W", "60", "-d"];
        args.extend_from_slice(extra);
        let mut child = self
            .client("mosquitto_sub", key, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs (Debian package mosquitto-clients)");
        let lines = Lines::default();
        lines.follow(child.stdout.take().unwrap());
        lines.follow(child.stderr.take().unwrap());
        (child, lines)
    }

    /// `mosquitto_pub -d -q 1 -l` of one record per line, `key`'s device with each of `seqs`,
    /// with its output followed. mosquitto_pub numbers the messages 1, 2, ... in this order.
    fn publish_lines(&self, key: &Key, seqs: &[u64]) -> (Child, Lines) {
        let messages: Vec<String> = seqs.iter().map(|&s| key.envelope(&record(&key.owner, s))).collect();
        let mut child = self
            .client(
                "mosquitto_pub",
                key,
                &["-d", "-q", "1", "-l", "-t", &telemetry(&key.owner)],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub runs");
        let mut stdin = child.stdin.take().unwrap();
        let body = messages.join("\n") + "\n";
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(body.as_bytes());
        });
        let lines = Lines::default();
        lines.follow(child.stdout.take().unwrap());
        lines.follow(child.stderr.take().unwrap());
        (child, lines)
    }

    async fn stored_seqs(&self, device: &str) -> BTreeSet<u64> {
        stored_seqs(&self.server, device).await
    }
}

fn telemetry(dev: &str) -> String {
    format!("devices/{dev}/telemetry")
}

/// The seqs of `publish_lines(.., seqs)` whose PUBACK its `-d` log shows.
fn pubacked_seqs(lines: &Lines, seqs: &[u64]) -> BTreeSet<u64> {
    pubacked_mids(lines).into_iter().map(|m| seqs[m as usize - 1]).collect()
}

/// A device that loses its connection: its client dies with it.
fn kill(child: &Child) {
    let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
}

/// The mids mosquitto_pub's `-d` log says were PUBACKed; once it has exited.
fn pubacked_mids(lines: &Lines) -> BTreeSet<u64> {
    lines
        .closed()
        .iter()
        .filter_map(|l| {
            let rest = l.split("received PUBACK (Mid: ").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

async fn mosquitto_pub_records_are_stored_and_rejections_reach_the_subscriber(backend: Backend) {
    let other = Key::derived("TRK-0002", "k1");
    let e = endpoint_on(backend, "", &[&other]);
    let dev = vector_device();
    let topic = telemetry("TRK-0001");
    let (sub, rejections) = e.subscribe(&dev, "devices/TRK-0001/rejections", &["-C", "3", "-v"]);
    assert!(
        rejections.wait_for("SUBACK", 1, Duration::from_secs(20)),
        "{:?}",
        rejections.all()
    );

    // One envelope, and an array of three: mosquitto_pub -q 1 exits 0 only after the PUBACK.
    let out = e.publish(&dev, &topic, &dev.envelope(&record("TRK-0001", 1)), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let array = format!(
        "[{}]",
        (2..=4)
            .map(|s| dev.envelope(&record("TRK-0001", s)))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(e.publish(&dev, &topic, &array, &["-V", "mqttv5"]).status.success());
    assert_eq!(e.stored_seqs("TRK-0001").await, BTreeSet::from([1, 2, 3, 4]));

    // Bad records are rejected, acknowledged, and reported to the device's subscriber.
    let bad_sig = dev.envelope(&record("TRK-0001", 5)).replace("\"bat\":87", "\"bat\":88");
    let mismatch = other.envelope(&record("TRK-0002", 6));
    for bad in [bad_sig.as_str(), mismatch.as_str(), "{\"m\":"] {
        let out = e.publish(&dev, &topic, bad, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = sub.wait_with_output().unwrap();
    assert!(out.status.success(), "mosquitto_sub: {:?}", rejections.closed());
    let got: Vec<String> = rejections
        .closed()
        .into_iter()
        .filter(|l| l.starts_with("devices/TRK-0001/rejections "))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (line, reason) in got.iter().zip(["bad_signature", "topic_mismatch", "malformed"]) {
        let v: serde_json::Value = serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(v["rejected"][0]["reason"], reason, "{line}");
        assert_eq!(v["accepted"], 0);
    }
    assert_eq!(e.stored_seqs("TRK-0001").await, BTreeSet::from([1, 2, 3, 4]));
    assert!(e.stored_seqs("TRK-0002").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_or_subscribe_beyond_its_own_topics() {
    let other = Key::derived("TRK-0002", "k1");
    let e = endpoint("", &[&other]);
    let dev = vector_device();

    // Subscriptions to another device's topics, or to everything, are refused.
    for filter in [
        "#",
        "devices/+/telemetry",
        "devices/TRK-0002/rejections",
        "devices/TRK-0002/telemetry",
    ] {
        let (mut sub, lines) = e.subscribe(&dev, filter, &["-C", "1"]);
        assert!(
            lines.wait_for("SUBACK", 1, Duration::from_secs(20)),
            "{filter}: {:?}",
            lines.all()
        );
        let _ = sub.wait();
        assert!(
            lines.wait_for("All subscription requests were denied", 1, Duration::from_secs(5)),
            "{filter}: {:?}",
            lines.all()
        );
        assert_eq!(
            lines.count("Subscribed (mid: 1): 128"),
            1,
            "{filter}: {:?}",
            lines.all()
        );
    }

    // A publish under another device's topic is acknowledged (3.1.1 has no refusal) or refused
    // as not authorized (MQTT 5), and never stored.
    let theirs = other.envelope(&record("TRK-0002", 1));
    let mine = dev.envelope(&record("TRK-0001", 1));
    let out = e.publish(&dev, &telemetry("TRK-0002"), &theirs, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = e.publish(&dev, &telemetry("TRK-0002"), &mine, &["-V", "mqttv5", "-d"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("PUBACK") && said.contains("135"),
        "MQTT 5 reason 0x87: {said}"
    );
    assert!(e.stored_seqs("TRK-0002").await.is_empty());
    assert!(e.stored_seqs("TRK-0001").await.is_empty());
    assert_eq!(
        e.server
            .metric("trackgate_mqtt_messages_total{outcome=\"denied\"}")
            .await,
        2.0
    );

    // Wrong passwords and unknown devices are refused at CONNECT.
    let wrong = Key::derived("TRK-0001", "nope");
    let out = e.publish(&wrong, &telemetry("TRK-0001"), &mine, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authorised")
            || String::from_utf8_lossy(&out.stderr).contains("bad user name or password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        e.server
            .metric("trackgate_auth_failures_total{transport=\"mqtt\"}")
            .await
            >= 1.0
    );
}

async fn every_message_acknowledged_before_kill_9_is_stored_exactly_once(backend: Backend) {
    let devices: Vec<Key> = (1..=4).map(|i| Key::derived(&format!("KILL-{i}"), "k1")).collect();
    let mut e = endpoint_on(backend, "", &devices.iter().collect::<Vec<_>>());
    let per_device = 5000u64;
    // What each device still has to send, and what it saw acknowledged.
    let mut left: Vec<Vec<u64>> = vec![(1..=per_device).collect(); devices.len()];
    let mut acked: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); devices.len()];
    let mut kills = 0;
    for round in 0..8 {
        let runs: Vec<(usize, Child, Lines)> = devices
            .iter()
            .enumerate()
            .filter(|(i, _)| !left[*i].is_empty())
            .map(|(i, d)| {
                let (child, lines) = e.publish_lines(d, &left[i]);
                (i, child, lines)
            })
            .collect();
        if runs.is_empty() {
            break;
        }
        // Kill trackgate at a moment between 0.3 and 1.5 s into the round, three times in all.
        if round < 3 {
            let wait = Duration::from_millis(300 + (round as u64 * 487) % 1200);
            tokio::time::sleep(wait).await;
            e.server.stop_with("-KILL").unwrap();
            kills += 1;
            // The devices lose their connection; they send what was not acknowledged next round.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (_, child, _) in &runs {
                kill(child);
            }
        }
        for (i, mut child, lines) in runs {
            let _ = child.wait();
            acked[i].extend(pubacked_seqs(&lines, &left[i]));
        }
        if !e.server.is_running() {
            e.server.restart().unwrap();
            e.port = e.server.mqtt.unwrap().port();
        }
        for (l, a) in left.iter_mut().zip(&acked) {
            l.retain(|s| !a.contains(s));
        }
    }
    assert_eq!(kills, 3);
    let db = e.server.db().await;
    for (d, a) in devices.iter().zip(&acked) {
        let stored = e.stored_seqs(&d.owner).await;
        let missing: Vec<_> = a.difference(&stored).take(10).collect();
        assert!(
            missing.is_empty(),
            "{}: acknowledged but not stored: {missing:?}",
            d.owner
        );
        assert_eq!(
            stored.len() as u64,
            per_device,
            "{}: every record arrives in the end",
            d.owner
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows as u64, per_device * devices.len() as u64, "stored exactly once");
    println!(
        "kill -9 x{kills}: {} records acknowledged over {} devices, all stored once",
        acked.iter().map(BTreeSet::len).sum::<usize>(),
        devices.len()
    );
}

async fn a_stalled_store_withholds_pubacks_and_everything_lands_after(backend: Backend) {
    let e = endpoint_on(backend, "", &[]);
    let dev = vector_device();
    let before = rss_mb(e.server.pid());
    let lock = WriteHold::take(&e.server).await;
    let seqs: Vec<u64> = (1..=300).collect();
    let (mut child, lines) = e.publish_lines(&dev, &seqs);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lines.count("received PUBACK"), 0, "a PUBACK went out before the commit");
    let unacked = e.server.metric("trackgate_mqtt_unacked_messages").await;
    assert!(
        (1.0..=32.0).contains(&unacked),
        "in flight: {unacked} (Receive Maximum 32)"
    );
    let grown = rss_mb(e.server.pid()) - before;
    assert!(grown < 64.0, "RSS grew by {grown} MB while the store stalled");
    lock.release().await;
    let status = child.wait().unwrap();
    assert!(status.success(), "{:?}", lines.closed());
    assert_eq!(pubacked_mids(&lines).len(), 300);
    assert_eq!(e.stored_seqs("TRK-0001").await.len(), 300);
}

/// PostgreSQL gone for a while under a connected device: PUBACKs are withheld (and /readyz says
/// not ready) until it is back; then every message is acknowledged and stored, without a
/// restart of trackgate and without the device reconnecting. (A device connecting meanwhile is
/// refused with CONNACK "server unavailable", and retries.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_withholds_pubacks_and_everything_lands_after() {
    // The writer keeps retrying its batch through the outage (rather than giving up on it, which
    // closes the connection so that the device resends).
    let mut e = endpoint_on(Backend::Postgres, "ingest.write_retry_secs = 120", &[]);
    let dev = vector_device();
    let mut options = rumqttc::MqttOptions::new("outage", "localhost", e.port);
    options
        .set_credentials("TRK-0001", mqtt_password(&dev.secret, "TRK-0001"))
        .set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            tls_client(&e.ca, &[]),
        )));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 300);
    let pubacks = Arc::new(Mutex::new(0usize));
    let poller = {
        let pubacks = pubacks.clone();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
                    *pubacks.lock().unwrap() += 1;
                }
            }
        })
    };
    let publish = |seqs: std::ops::RangeInclusive<u64>| {
        let (client, dev) = (client.clone(), dev.clone());
        async move {
            for seq in seqs {
                let body = dev.envelope(&record("TRK-0001", seq));
                client
                    .publish("devices/TRK-0001/telemetry", rumqttc::QoS::AtLeastOnce, false, body)
                    .await
                    .unwrap();
            }
        }
    };
    let acked = |n: usize| {
        let pubacks = pubacks.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while *pubacks.lock().unwrap() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            *pubacks.lock().unwrap()
        }
    };
    publish(1..=10).await;
    assert_eq!(acked(10).await, 10);

    let mut pg = e.server.pg.take().unwrap();
    pg.stop();
    publish(11..=110).await;
    assert!(
        e.server.wait_readyz(503, Duration::from_secs(20)).await,
        "/readyz stayed ready"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        *pubacks.lock().unwrap(),
        10,
        "a PUBACK went out while PostgreSQL was gone"
    );

    pg.restart().unwrap();
    e.server.pg = Some(pg);
    assert_eq!(acked(110).await, 110, "every message is acknowledged once it is back");
    assert!(
        e.server.wait_readyz(200, Duration::from_secs(20)).await,
        "/readyz never ready again"
    );
    assert_eq!(e.stored_seqs("TRK-0001").await, (1..=110).collect::<BTreeSet<u64>>());
    poller.abort();
}

/// A TLS connection from `from` to the endpoint (no MQTT yet).
async fn tls_to(
    e: &Endpoint,
    from: std::net::IpAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = tls_client(&e.ca, &[]);
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let tcp = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], e.port)))
        .await
        .ok()?;
    tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .ok()
}

/// CONNECT with a wrong password over a fresh connection; the CONNACK return code.
async fn wrong_login(e: &Endpoint, user: &str) -> Option<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tls_to(e, "127.0.0.1".parse().unwrap()).await?;
    let mut c = rumqttc::mqttbytes::v4::Connect::new(format!("flood-{user}"));
    c.set_login(user, "0".repeat(64));
    let mut buf = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(c)
        .write(&mut buf, usize::MAX)
        .ok()?;
    conn.write_all(&buf).await.ok()?;
    conn.flush().await.ok()?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut ack))
        .await
        .ok()?
        .ok()?;
    (ack[0] == 0x20).then_some(ack[3])
}

/// Idle TLS connections the flood test holds while it floods.
const IDLE: u32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_a_password_flood_leave_valid_devices_served() {
    // The HTTPS cap is small so that the endpoint's fits the descriptor limit beside it; the
    // handshake timeout is long so that the idle connections stay for the whole test.
    let e = endpoint(
        "http.max_connections = 100\nhttp.handshake_timeout_ms = 120000\nmqtt_endpoint.max_connections = 12000\n\
         security.auth_failures_per_minute = 30\nsecurity.auth_failure_delay_ms = 300\n",
        &[],
    );
    let dev = vector_device();
    let want = IDLE;
    let mut idle = Vec::new();
    for i in 0..want {
        let from = std::net::IpAddr::from([127, 4, (i / 400 / 250) as u8, (i / 400 % 250 + 1) as u8]);
        if let Some(c) = tls_to(&e, from).await {
            idle.push(c);
        }
    }
    assert_eq!(idle.len() as u32, want);
    // 200 wrong passwords from one address, 50 at a time, while the device publishes.
    let flood = async {
        let mut codes = Vec::new();
        for round in 0..4 {
            let tries = (0..50).map(|i| wrong_login(&e, if (round + i) % 2 == 0 { "TRK-0001" } else { "NOBODY" }));
            codes.extend(futures_util::future::join_all(tries).await);
        }
        codes
    };
    let device = async {
        let mut ok = 0;
        for seq in 1..=5u64 {
            let out = e.publish(
                &dev,
                &telemetry("TRK-0001"),
                &dev.envelope(&record("TRK-0001", seq)),
                &[],
            );
            if out.status.success() {
                ok += 1;
            }
        }
        ok
    };
    let (codes, ok) = tokio::join!(flood, device);
    assert!(!codes.contains(&Some(0)), "a wrong password was accepted: {codes:?}");
    let refused = codes.iter().filter(|c| **c == Some(4)).count();
    assert!(refused >= 190, "wrong passwords are refused with CONNACK 4: {codes:?}");
    assert_eq!(ok, 5, "the valid device published and got its PUBACKs");
    assert_eq!(e.stored_seqs("TRK-0001").await.len(), 5);
    let m = e.server.metrics().await;
    assert!(metric_value(&m, "trackgate_auth_failures_total{transport=\"mqtt\"}") >= refused as f64);
    assert!(metric_value(&m, "trackgate_auth_throttled_total{transport=\"mqtt\"}") >= 150.0);
    assert!(metric_value(&m, "trackgate_connections_open{listener=\"mqtt\"}") >= f64::from(want));
    println!("{want} idle TLS connections held; {refused} of 200 wrong passwords refused; the device's 5 PUBACKs came");
    assert_eq!(
        e.server
            .log_text()
            .matches("authentication failures over the limit")
            .count(),
        1,
        "one log line per episode"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_5_client_is_told_receive_maximum_and_it_holds() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let e = endpoint("mqtt_endpoint.receive_maximum = 4\n", &[]);
    let dev = vector_device();
    let tls = tls_client(&e.ca, &[]);
    let mut options = MqttOptions::new("rx-max", "localhost", e.port);
    options
        .set_credentials("TRK-0001", mqtt_password(&dev.secret, "TRK-0001"))
        .set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            tls,
        )));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let seen = std::sync::Arc::new(Mutex::new((None::<u16>, 0usize)));
    let poller = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::ConnAck(ack)) => {
                        seen.lock().unwrap().0 = ack.properties.and_then(|p| p.receive_max);
                    }
                    Event::Incoming(Packet::PubAck(_)) => seen.lock().unwrap().1 += 1,
                    _ => {}
                }
            }
        })
    };
    let lock = WriteHold::take(&e.server).await;
    for seq in 1..=20u64 {
        client
            .publish(
                "devices/TRK-0001/telemetry",
                QoS::AtLeastOnce,
                false,
                dev.envelope(&record("TRK-0001", seq)),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seen.lock().unwrap().0, Some(4), "CONNACK announces Receive Maximum 4");
    assert_eq!(seen.lock().unwrap().1, 0, "no PUBACK before the commit");
    let unacked = e.server.metric("trackgate_mqtt_unacked_messages").await;
    assert!((1.0..=4.0).contains(&unacked), "{unacked} in flight");
    lock.release().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().1 < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.lock().unwrap().1, 20);
    assert_eq!(e.stored_seqs("TRK-0001").await.len(), 20);
    poller.abort();
}

/// Two nodes on one database: the endpoint holds nothing beyond its connections, so a device can
/// publish through either, and when one dies it sends what was not acknowledged through the other.
async fn two_nodes_serve_a_device_and_one_dying_loses_nothing(backend: Backend) {
    let mut a = endpoint_on(backend, "", &[]);
    // The second node: the same config and data directory (database, certificate, master key).
    let b_server = Server::start_in(&a.server.dir, "").unwrap();
    let b = Endpoint {
        _dir: None,
        port: b_server.mqtt.expect("the second node's endpoint").port(),
        ca: a.ca.clone(),
        server: b_server,
    };
    assert_ne!(a.port, b.port);
    let dev = vector_device();
    let records: Vec<u64> = (1..=3000).collect();

    // Through node A, which is killed part way.
    let (mut child, lines) = a.publish_lines(&dev, &records);
    assert!(
        lines.wait_for("received PUBACK", 200, Duration::from_secs(30)),
        "{:?}",
        lines.all()
    );
    a.server.stop_with("-KILL").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(&child);
    let _ = child.wait();
    let acked_a = pubacked_seqs(&lines, &records);
    assert!(acked_a.len() < records.len(), "node A was killed before the end");

    // The device reconnects to node B and sends what A did not acknowledge.
    let rest: Vec<u64> = records.iter().copied().filter(|s| !acked_a.contains(s)).collect();
    let (mut child, lines) = b.publish_lines(&dev, &rest);
    assert!(child.wait().unwrap().success(), "{:?}", lines.all());
    assert_eq!(pubacked_mids(&lines).len(), rest.len());

    let stored = b.stored_seqs("TRK-0001").await;
    let lost: Vec<_> = acked_a.difference(&stored).take(10).collect();
    assert!(lost.is_empty(), "acknowledged by node A but not stored: {lost:?}");
    assert_eq!(stored.len(), records.len(), "every record stored once");
    println!(
        "node A acknowledged {} of {} before kill -9; node B took the other {}",
        acked_a.len(),
        records.len(),
        rest.len()
    );
}

/// SIGTERM: the endpoint stops taking messages, answers what was committed, closes, and trackgate
/// exits cleanly; every message a device saw acknowledged is stored.
async fn sigterm_answers_what_was_committed_then_closes(backend: Backend) {
    let mut e = endpoint_on(backend, "", &[]);
    let dev = vector_device();
    let seqs: Vec<u64> = (1..=5000).collect();
    let (mut child, lines) = e.publish_lines(&dev, &seqs);
    assert!(
        lines.wait_for("received PUBACK", 300, Duration::from_secs(30)),
        "{:?}",
        lines.all()
    );
    let code = e.server.stop_with("-TERM").unwrap();
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{}", e.server.log_text());
    assert!(e.server.log_text().contains("shut down cleanly"));
    kill(&child);
    let _ = child.wait();
    let acked = pubacked_seqs(&lines, &seqs);
    e.server.restart().unwrap();
    let stored = e.stored_seqs("TRK-0001").await;
    let lost: Vec<_> = acked.difference(&stored).take(10).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert!(acked.len() < seqs.len(), "the shutdown came mid-stream");
}

trackgate_e2e::on_both_backends!(
    mosquitto_pub_records_are_stored_and_rejections_reach_the_subscriber,
    every_message_acknowledged_before_kill_9_is_stored_exactly_once,
    a_stalled_store_withholds_pubacks_and_everything_lands_after,
    two_nodes_serve_a_device_and_one_dying_loses_nothing,
    sigterm_answers_what_was_committed_then_closes,
);
