//! End-to-end harness: the release `trackgate` binary with SQLite or PostgreSQL, real brokers, real TLS, on
//! loopback. Measures committed records/s for each case beside its baseline in the same run,
//! with acknowledgement latency and trackgate's CPU and memory where firmware-sim drives it.
//!
//! ```sh
//! cargo build --release -p trackgate -p firmware-sim -p trackgate-benches && target/release/e2e [https|mqtt] [--record benches/RESULTS.md]
//! ```
//!
//! `--record FILE` writes the run's section (machine, versions, tables; [`report`]) into FILE.
//!
//! HTTPS ([`sim`], driven by firmware-sim): supplier batches of 1000, then the same at half
//! that rate (for latency), then single records as devices; beside them, the identical rows
//! inserted raw into a fresh database (the storage limit).
//!
//! MQTT (one record per message and arrays of 100):
//! - baseline: Mosquitto pass-through to a bare QoS 1 subscriber (the broker's limit);
//! - trackgate consuming from Mosquitto, the same pre-signed messages;
//! - the same driven by firmware-sim (PUBACK latency, trackgate's CPU and RSS);
//! - trackgate's own MQTT endpoint (no broker), the same pre-signed messages;
//! - the endpoint driven by firmware-sim, at full rate and at half of it (PUBACK latency).
//!
//! PostgreSQL ([`postgres`]): HTTPS supplier batches on one node and on two, and MQTT arrays of
//! 100 to the endpoint, each beside the raw `COPY` of the identical rows into the same schema.
#![forbid(unsafe_code)]

mod postgres;
mod proc;
mod report;
mod sim;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use sim::Schema;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trackgate_e2e::mosquitto::{Mosquitto, SERVICE_PASSWORD, SERVICE_USER};
use trackgate_e2e::{Key, Server, record, wait_for_stored};
use trackgate_proto::sign::mqtt_password;

const DEVICES: usize = 4;
/// Records per device: arrays go faster, so they send more, for a run long enough to measure.
fn records_per_device(per_message: usize) -> u64 {
    if per_message == 1 { 50_000 } else { 125_000 }
}

fn tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn options(id: &str, port: u16, ca: &Path, user: &str, pass: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls(ca))))
        .set_credentials(user, pass)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(16 << 20, 16 << 20);
    o
}

/// Each device's signed messages, `per_message` envelopes each, built before any clock starts.
fn messages(devices: &[Key], per_message: usize) -> Vec<(Key, Vec<String>)> {
    let records = records_per_device(per_message);
    devices
        .iter()
        .map(|key| {
            let envelopes: Vec<String> = (0..records).map(|s| key.envelope(&record(&key.owner, s))).collect();
            let messages = envelopes
                .chunks(per_message)
                .map(|c| {
                    if per_message == 1 {
                        c[0].clone()
                    } else {
                        format!("[{}]", c.join(","))
                    }
                })
                .collect();
            (key.clone(), messages)
        })
        .collect()
}

/// Each device publishes its messages at QoS 1 over its own connection and waits for every PUBACK.
async fn publish(fleet: Vec<(Key, Vec<String>)>, port: u16, ca: &Path) {
    let mut tasks = Vec::new();
    for (key, messages) in fleet {
        let ca = ca.to_owned();
        tasks.push(tokio::spawn(async move {
            let pass = mqtt_password(&key.secret, &key.owner);
            let (client, mut events) = AsyncClient::new(
                options(&format!("pub-{}", key.owner), port, &ca, &key.owner, &pass),
                1000,
            );
            let total = messages.len();
            let topic = format!("devices/{}/telemetry", key.owner);
            let sender = tokio::spawn(async move {
                for m in messages {
                    client.publish(&topic, QoS::AtLeastOnce, false, m).await.unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < total {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("publisher {}: {e}", key.owner),
                }
            }
            let _client = sender.await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A bare QoS 1 subscriber as trackgate's account; returns once it has received `messages`.
async fn subscribe(port: u16, ca: std::path::PathBuf, messages: usize, ready: tokio::sync::oneshot::Sender<()>) {
    let (client, mut events) = AsyncClient::new(
        options("bare-subscriber", port, &ca, SERVICE_USER, SERVICE_PASSWORD),
        1000,
    );
    client.subscribe("devices/+/telemetry", QoS::AtLeastOnce).await.unwrap();
    let mut ready = Some(ready);
    let mut got = 0;
    while got < messages {
        match events.poll().await.unwrap() {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Event::Incoming(Packet::Publish(_)) => got += 1,
            _ => {}
        }
    }
}

async fn wait_stored(server: &Server, n: i64) {
    let got = wait_for_stored(&server.db().await, n).await;
    assert_eq!(got, n, "not everything was committed");
}

use proc::rate;

#[tokio::main]
async fn main() {
    let usage = || -> ! {
        eprintln!("usage: e2e [all|https|mqtt|postgres] [--record RESULTS.md]");
        std::process::exit(2);
    };
    let (mut which, mut record) = ("all".to_owned(), None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "all" | "https" | "mqtt" | "postgres" => which = a,
            "--record" => record = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let mut database = format!("SQLite {}", sqlite_version().await);
    if which == "all" || which == "https" {
        https_cases().await;
    }
    if which == "all" || which == "mqtt" {
        mqtt_cases().await;
    }
    if which == "all" || which == "postgres" {
        database = format!("{database}; {}", postgres::cases().await);
    }
    if let Some(file) = record {
        let command = format!("target/release/e2e {which}");
        let section = report::markdown(&command, &database);
        report::record(Path::new(&file), &section).expect("writing the results file");
        println!("\nrecorded in {file}:\n\n{section}");
    }
}

async fn sqlite_version() -> String {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
    sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn https_cases() {
    println!("end-to-end HTTPS: firmware-sim -> trackgate, TLS, loopback, SQLite synchronous=FULL");
    let supplier = sim::Case {
        name: "supplier batches of 1000".into(),
        mode: "supplier",
        endpoint: false,
        per_message: 1,
        devices: 100,
        records_per_device: 2000,
        batch: 1000,
        // Requests in flight; `E2E_SUPPLIER_CONCURRENCY` tries others.
        concurrency: std::env::var("E2E_SUPPLIER_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
        rate: None,
    };
    let (max, at, rows) = sim::run(&supplier).await;
    let (raw, raw_at) = sim::raw_baseline("HTTPS", "", &rows, 1000, Schema::Shipped).await;
    println!("  ratio to the raw insert: {:.2}", max / raw);
    report::ratio(at, max / raw);
    report::ratio(raw_at, 1.0);
    // What stands in the storage's way: bigger commits, and the schema's indexes and keys.
    for (batch, schema) in [
        (10_000, Schema::Shipped),
        (1000, Schema::WithTsIndex),
        (1000, Schema::IntegerDeviceKeys),
    ] {
        let (r, at) = sim::raw_baseline("HTTPS", "", &rows, batch, schema).await;
        report::ratio(at, r / raw);
    }
    sim::run(&sim::Case {
        name: "supplier batches, at half that rate".into(),
        rate: Some(max / 2.0),
        // 1000 requests, so that the p99 is the 10th slowest rather than the 2nd.
        records_per_device: 10_000,
        ..supplier
    })
    .await;
    let (single, single_at, _) = sim::run(&sim::Case {
        name: "single records (as devices)".into(),
        mode: "device",
        endpoint: false,
        per_message: 1,
        devices: 100,
        records_per_device: 200,
        batch: 1,
        concurrency: 128,
        rate: None,
    })
    .await;
    println!("  ratio to the raw insert: {:.3}", single / raw);
    report::ratio(single_at, single / raw);
}

/// One pre-signed MQTT case: the fleet published through `path`, timed until every row is
/// stored, beside the broker's pass-through (`baseline`) and the raw insert of the same rows.
struct PreSigned {
    what: &'static str,
    path: &'static str,
    total: u64,
    baseline: Duration,
}

impl PreSigned {
    async fn measure(&self, server: &Server, fleet: Vec<(Key, Vec<String>)>, port: u16, ca: &Path) {
        let per = |t: Duration| self.total as f64 / t.as_secs_f64();
        let usage = proc::Usage::start(server.pid());
        let writer = proc::WriterShare::start(server).await;
        let t = Instant::now();
        publish(fleet, port, ca).await;
        wait_stored(server, self.total as i64).await;
        let took = t.elapsed();
        let used = usage.finish();
        let writer = writer.finish(server, took).await;
        let ratio = self.baseline.as_secs_f64() / took.as_secs_f64();
        println!(
            "  {:<33} {}  ratio {ratio:.2}  {used}; {writer}",
            self.path,
            rate(self.total, took)
        );
        let at = report::add(
            "MQTT",
            format!("{}: {}, same pre-signed messages", self.what, self.path),
            per(took),
        );
        report::ratio(at, ratio);
        report::used(at, used);
        // The storage limit for the same rows: what trackgate stored, inserted raw.
        let rows = sim::stored_rows(&server.db().await).await;
        let prefix = format!("{}: storage limit (ratio: {} to it), ", self.what, self.path);
        let (raw, raw_at) = sim::raw_baseline("MQTT", &prefix, &rows, 1000, Schema::Shipped).await;
        println!("  ratio to the raw insert: {:.2}", per(took) / raw);
        report::ratio(raw_at, per(took) / raw);
    }
}

async fn mqtt_cases() {
    let devices: Vec<Key> = (0..DEVICES)
        .map(|i| Key::derived(&format!("BENCH-{i:03}"), "k1"))
        .collect();
    println!("end-to-end MQTT: {DEVICES} devices, QoS 1, TLS, loopback, SQLite synchronous=FULL");
    for per_message in [1usize, 100] {
        let total = DEVICES as u64 * records_per_device(per_message);
        let n_messages = (total as usize).div_ceil(per_message);
        println!("\n{per_message} record(s) per message ({total} records in {n_messages} messages)");

        // Baseline: the broker alone, to a bare subscriber. trackgate only derives credentials.
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
        let server = Server::start_in(&dir.path().join("tg"), "").unwrap();
        for d in &devices {
            server.add_device(d, None);
        }
        broker.load_credentials(&server);
        drop(server);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sub = tokio::spawn(subscribe(broker.port, broker.ca.clone(), n_messages, ready_tx));
        ready_rx.await.unwrap();
        let fleet = messages(&devices, per_message);
        let t = Instant::now();
        publish(fleet, broker.port, &broker.ca).await;
        sub.await.unwrap();
        let baseline = t.elapsed();
        println!("  baseline: Mosquitto pass-through  {}", rate(total, baseline));
        let per = |t: Duration| total as f64 / t.as_secs_f64();
        let what = if per_message == 1 {
            "1 record per message"
        } else {
            "arrays of 100"
        };
        let at = report::add(
            "MQTT",
            format!("{what}: baseline, Mosquitto pass-through to a bare subscriber"),
            per(baseline),
        );
        report::ratio(at, 1.0);
        drop(broker);

        // trackgate consuming from Mosquitto.
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(&dir.path().join("broker")).unwrap();
        let server = Server::start_in(&dir.path().join("tg"), &broker.trackgate_settings()).unwrap();
        for d in &devices {
            server.add_device(d, None);
        }
        broker.load_credentials(&server);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pre_signed = PreSigned {
            what,
            path: "trackgate via Mosquitto",
            total,
            baseline,
        };
        pre_signed
            .measure(&server, messages(&devices, per_message), broker.port, &broker.ca)
            .await;
        drop(server);
        drop(broker);

        // The same through Mosquitto with firmware-sim as the devices (signing as it goes):
        // what a device waits for its PUBACK, and what trackgate uses.
        sim::run(&sim::Case::mqtt(
            format!("{what}: firmware-sim via Mosquitto (signing as it goes)"),
            false,
            per_message,
            DEVICES,
            records_per_device(per_message),
            None,
        ))
        .await;

        // trackgate's own endpoint: no broker in the way.
        let dir = tempfile::tempdir().unwrap();
        // `E2E_TRACKGATE_TOML` adds settings to try here too, as in the firmware-sim cases.
        let extra = std::env::var("E2E_TRACKGATE_TOML").unwrap_or_default();
        let settings = format!("{}{extra}\n", trackgate_e2e::MQTT_ENDPOINT);
        let server = Server::start_in(&dir.path().join("tg"), &settings).unwrap();
        for d in &devices {
            server.add_device(d, None);
        }
        let port = server.mqtt.expect("the endpoint listens").port();
        let ca = server.dir.join("data/tls/dev-cert.pem");
        let pre_signed = PreSigned {
            what,
            path: "trackgate's endpoint",
            total,
            baseline,
        };
        pre_signed
            .measure(&server, messages(&devices, per_message), port, &ca)
            .await;
        drop(server);

        // The endpoint with firmware-sim as the devices, as fast as it answers and at half that:
        // what a device waits for its PUBACK.
        let (full, _, _) = sim::run(&sim::Case::mqtt(
            format!("{what}: firmware-sim to trackgate's endpoint"),
            true,
            per_message,
            DEVICES,
            records_per_device(per_message),
            None,
        ))
        .await;
        sim::run(&sim::Case::mqtt(
            format!("{what}: firmware-sim to trackgate's endpoint, at half that rate"),
            true,
            per_message,
            DEVICES,
            records_per_device(per_message) / 2,
            Some(full / 2.0),
        ))
        .await;
    }
}
