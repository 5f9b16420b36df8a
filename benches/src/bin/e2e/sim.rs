//! Cases where firmware-sim drives the release trackgate (SQLite, synchronous=FULL, rate limiting
//! off): over HTTPS as the supplier relay or as devices, or over MQTT through Mosquitto; and the
//! storage limit: the same rows inserted raw into a fresh database, in the same run.

use crate::proc::{Usage, rate};
use crate::report;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use trackgate_benches::{SCHEMA, raw_insert, raw_pool};
use trackgate_e2e::mosquitto::Mosquitto;
use trackgate_e2e::{Server, binary, built, wait_for_stored};
use trackgate_proto::Measurement;
use trackgate_store::Row;

pub struct Case {
    pub name: String,
    /// firmware-sim's `--mode`: supplier, device or mqtt.
    pub mode: &'static str,
    /// MQTT to trackgate's own endpoint rather than through Mosquitto.
    pub endpoint: bool,
    /// Records per MQTT message.
    pub per_message: usize,
    pub devices: usize,
    pub records_per_device: u64,
    pub batch: usize,
    pub concurrency: usize,
    /// Records/s to hold; `None`: as fast as trackgate answers.
    pub rate: Option<f64>,
}

pub fn sim(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(built("firmware-sim"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("firmware-sim runs");
    assert!(
        out.status.success(),
        "firmware-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Provision the roster file `roster` (in `dir`) into `server` through its CLI.
pub fn provision(dir: &Path, roster: &str, server: &Server) {
    sim(
        dir,
        &[
            "provision",
            "--roster",
            roster,
            "--trackgate",
            binary().to_str().unwrap(),
            "--config",
            server.config.to_str().unwrap(),
        ],
    );
}

/// Run one case; prints its line and returns the committed rate, its line in the report and the
/// rows stored.
pub async fn run(case: &Case) -> (f64, usize, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    // Rate limiting off; `E2E_TRACKGATE_TOML` adds settings to try (e.g. ingest.batch_max_rows).
    let extra = std::env::var("E2E_TRACKGATE_TOML").unwrap_or_default();
    let broker = (case.mode == "mqtt" && !case.endpoint).then(|| Mosquitto::start(&dir.path().join("broker")).unwrap());
    let mqtt = match &broker {
        Some(b) => b.trackgate_settings(),
        None if case.endpoint => trackgate_e2e::MQTT_ENDPOINT.to_owned(),
        None => String::new(),
    };
    let config = format!("http.rate_limit_per_second = 0\n{mqtt}{extra}\n");
    let server = Server::start_in(&dir.path().join("tg"), &config).unwrap();
    let n = case.devices.to_string();
    sim(dir.path(), &["roster", "--devices", &n]);
    provision(dir.path(), "roster.json", &server);
    if let Some(b) = &broker {
        b.load_credentials(&server);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let db = server.db().await;
    let total = case.devices as u64 * case.records_per_device;
    let usage = Usage::start(server.pid());
    let writer = crate::proc::WriterShare::start(&server).await;
    let t = Instant::now();
    let (records, batch, concurrency) = (
        case.records_per_device.to_string(),
        case.batch.to_string(),
        case.concurrency.to_string(),
    );
    let ca = match &broker {
        Some(b) => b.ca.clone(),
        None => server.dir.join("data/tls/dev-cert.pem"),
    };
    let url = server.url("");
    let port = match (&broker, server.mqtt) {
        (Some(b), _) => b.port,
        (None, Some(endpoint)) => endpoint.port(),
        (None, None) => 0,
    };
    let (port, per_message) = (port.to_string(), case.per_message.to_string());
    let mut args = vec![
        "send",
        "--url",
        &url,
        "--ca",
        ca.to_str().unwrap(),
        "--mode",
        case.mode,
        "--records",
        &records,
        "--batch",
        &batch,
        "--concurrency",
        &concurrency,
        "--per-message",
        &per_message,
        "--json",
        "--quiet",
    ];
    if case.mode == "mqtt" {
        args.extend(["--mqtt-port", &port]);
    }
    let rate_arg = case.rate.map(|r| format!("{r:.0}"));
    if let Some(r) = &rate_arg {
        args.extend(["--rate", r]);
    }
    let summary = sim(dir.path(), &args);
    let stored = wait_for_stored(&db, total as i64).await;
    let elapsed = t.elapsed();
    let used = usage.finish();
    let writer = writer.finish(&server, elapsed).await;
    assert_eq!(stored, total as i64, "not everything was committed: {summary}");
    assert_eq!(summary["accepted"].as_u64(), Some(total), "{summary}");
    let l = &summary["latency_ms"];
    let ms = |k: &str| l[k].as_f64().unwrap_or(0.0);
    let latency = report::Latency {
        p50: ms("p50"),
        p90: ms("p90"),
        p99: ms("p99"),
        max: ms("max"),
    };
    println!(
        "  {:<34} {}  ack latency ms p50 {:>5.1} p90 {:>5.1} p99 {:>5.1} max {:>6.1}  {}; {}",
        case.name,
        rate(total, elapsed),
        latency.p50,
        latency.p90,
        latency.p99,
        latency.max,
        used,
        writer,
    );
    let per_s = total as f64 / elapsed.as_secs_f64();
    let at = report::add(case.section(), case.name.clone(), per_s);
    report::measured(at, latency, used);
    (per_s, at, stored_rows(&db).await)
}

impl Case {
    /// firmware-sim as the MQTT devices (one connection each), through Mosquitto or to the
    /// endpoint, as fast as trackgate answers or at `rate`.
    pub fn mqtt(
        name: String,
        endpoint: bool,
        per_message: usize,
        devices: usize,
        records_per_device: u64,
        rate: Option<f64>,
    ) -> Case {
        Case {
            name,
            mode: "mqtt",
            endpoint,
            per_message,
            devices,
            records_per_device,
            batch: 1,
            concurrency: 1,
            rate,
        }
    }

    fn section(&self) -> &'static str {
        if self.mode == "mqtt" { "MQTT" } else { "HTTPS" }
    }
}

/// The schema a raw baseline inserts into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// trackgate's own.
    Shipped,
    /// With the `(device_id, ts)` index of versions before position spans (two indexes a row).
    WithTsIndex,
    /// Devices as integer keys in `positions` and its indexes, instead of their text ids.
    IntegerDeviceKeys,
}

impl Schema {
    fn sql(self) -> String {
        match self {
            Schema::Shipped => SCHEMA.to_owned(),
            Schema::WithTsIndex => format!("{SCHEMA}\nCREATE INDEX positions_device_ts ON positions (device_id, ts);"),
            Schema::IntegerDeviceKeys => {
                SCHEMA.replacen("device_id   TEXT NOT NULL,", "device_id   INTEGER NOT NULL,", 1)
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Schema::Shipped => "",
            Schema::WithTsIndex => ", with the (device_id, ts) index of earlier versions",
            Schema::IntegerDeviceKeys => ", integer device keys",
        }
    }
}

/// The storage limit: the rows a case stored, inserted raw into a fresh database with
/// trackgate's settings (synchronous=FULL) and `schema`, `batch` rows per transaction.
pub async fn raw_baseline(
    section: &'static str,
    prefix: &str,
    rows: &[Row],
    batch: usize,
    schema: Schema,
) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let pool = raw_pool(dir.path(), &schema.sql(), true).await;
    let keyed: Vec<Row>;
    let rows = if schema == Schema::IntegerDeviceKeys {
        // Integer text in an INTEGER column is stored as an integer (type affinity).
        let mut keys = std::collections::HashMap::new();
        keyed = rows
            .iter()
            .map(|r| {
                let n = keys.len();
                let key = *keys.entry(r.device_id.clone()).or_insert(n);
                Row {
                    device_id: key.to_string(),
                    ..r.clone()
                }
            })
            .collect();
        &keyed[..]
    } else {
        rows
    };
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        raw_insert(&pool, chunk).await;
    }
    let elapsed = t.elapsed();
    let name = format!("{prefix}baseline: raw INSERT, {batch}/commit{}", schema.name());
    println!("  {name:<34} {}", rate(rows.len() as u64, elapsed));
    let per_s = rows.len() as f64 / elapsed.as_secs_f64();
    (per_s, report::add(section, name, per_s))
}

/// Every row trackgate stored, in arrival order (SQLite's rowid; on PostgreSQL, the time each
/// was received): the baseline's identical rows.
pub async fn stored_rows(db: &sqlx::AnyPool) -> Vec<Row> {
    use sqlx::Row as _;
    let order = if db.connect_options().database_url.scheme() == "sqlite" {
        "rowid"
    } else {
        "received_ms, device_id, seq"
    };
    let sql = format!(
        "SELECT device_id, seq, ts, {}, ext, record, kid, received_ms FROM positions ORDER BY {order}",
        Measurement::NAMES.join(", ")
    );
    let rows = sqlx::query(&sql).fetch_all(db).await.unwrap();
    rows.iter()
        .map(|r| {
            let mut values = [None; 8];
            for (v, name) in values.iter_mut().zip(Measurement::NAMES) {
                *v = r.get(name);
            }
            Row {
                device_id: r.get("device_id"),
                seq: r.get("seq"),
                ts: r.get("ts"),
                measurement: Measurement::from_values(values),
                ext: r.get("ext"),
                record: r.get("record"),
                kid: r.get("kid"),
                received_ms: r.get("received_ms"),
            }
        })
        .collect()
}
