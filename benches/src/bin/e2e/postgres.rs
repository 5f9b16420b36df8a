//! Cases on PostgreSQL: the release trackgate on a throwaway PostgreSQL cluster on this machine
//! (TLS to it, verified), driven by firmware-sim, beside the raw `COPY` of the identical rows
//! into the same schema (partitioned positions, made by trackgate's own migration), measured in
//! the same run. One node against two: both share this machine's cores with PostgreSQL and the
//! load generators.

use crate::proc::{Usage, rate};
use crate::report;
use crate::sim::{provision, sim, stored_rows};
use std::process::{Command, Stdio};
use std::time::Instant;
use trackgate_benches::copy_positions;
use trackgate_e2e::postgres::Postgres;
use trackgate_e2e::{Server, built, wait_for_stored};
use trackgate_store::Row;

const DEVICES: usize = 100;

/// The server's version, for the record.
pub fn version(pg: &Postgres) -> String {
    pg.psql("postgres", "SHOW server_version")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A fresh database on `pg`, and its URL.
fn database(pg: &Postgres, name: &str) -> String {
    pg.create_database(name).unwrap();
    pg.url(name)
}

/// `nodes` trackgate nodes on one new database, HTTPS supplier batches of 1000 from one
/// firmware-sim per node (its own supplier and devices), all at once; committed records/s.
async fn https(pg: &Postgres, name: &str, nodes: usize, per_node_devices: usize) -> (f64, usize, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let url = database(pg, &format!("https_{nodes}"));
    // `E2E_TRACKGATE_TOML` adds settings to try (e.g. ingest.batch_max_rows), as in `sim`.
    let extra = std::env::var("E2E_TRACKGATE_TOML").unwrap_or_default();
    let base = format!("http.rate_limit_per_second = 0\ndatabase.url = {url:?}\n{extra}\n");
    let mut servers: Vec<Server> = Vec::new();
    for n in 0..nodes {
        let extra = if n == 0 {
            base.clone()
        } else {
            format!(
                "{base}security.master_key_file = {:?}\n",
                dir.path().join("node0/data/master.key")
            )
        };
        servers.push(Server::start_in(&dir.path().join(format!("node{n}")), &extra).unwrap());
    }
    for n in 0..nodes {
        let roster = format!("roster{n}.json");
        let devices = per_node_devices.to_string();
        sim(
            dir.path(),
            &[
                "roster",
                "--supplier",
                &format!("SIM{n}"),
                "--prefix",
                &format!("N{n}-TRK"),
                "--devices",
                &devices,
                "--out",
                &roster,
            ],
        );
        provision(dir.path(), &roster, &servers[0]);
    }
    // 500,000 records: several seconds, so that a checkpoint or a slow start weighs little.
    let records = 5000u64;
    // Requests in flight per firmware-sim; `E2E_SUPPLIER_CONCURRENCY` tries others.
    let concurrency = std::env::var("E2E_SUPPLIER_CONCURRENCY").unwrap_or_else(|_| "4".into());
    let total = (nodes * per_node_devices) as u64 * records;
    let usage = Usage::start(servers[0].pid());
    let t = Instant::now();
    let senders: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(n, s)| {
            Command::new(built("firmware-sim"))
                .current_dir(dir.path())
                .args(["send", "--url", &s.url(""), "--ca"])
                .arg(s.dir.join("data/tls/dev-cert.pem"))
                .args(["--roster", &format!("roster{n}.json"), "--mode", "supplier"])
                .args([
                    "--records",
                    &records.to_string(),
                    "--batch",
                    "1000",
                    "--concurrency",
                    &concurrency,
                ])
                .args(["--json", "--quiet"])
                .stdout(Stdio::null())
                .spawn()
                .expect("firmware-sim runs")
        })
        .collect();
    for mut s in senders {
        assert!(s.wait().unwrap().success(), "firmware-sim failed");
    }
    finished(name, &servers[0], total, t, usage, nodes == 1).await
}

/// A case's end: once `total` records are stored, its rate from `t`, printed and reported (with
/// what trackgate used when it is the only node), and the rows stored.
async fn finished(
    name: &str,
    server: &Server,
    total: u64,
    t: Instant,
    usage: Usage,
    one_node: bool,
) -> (f64, usize, Vec<Row>) {
    let db = server.db().await;
    assert_eq!(
        wait_for_stored(&db, total as i64).await,
        total as i64,
        "not everything was committed"
    );
    let took = t.elapsed();
    let used = usage.finish();
    println!("  {name:<40} {}  (node 0: {used})", rate(total, took));
    let per_s = total as f64 / took.as_secs_f64();
    let at = report::add("PostgreSQL", name.to_owned(), per_s);
    if one_node {
        report::used(at, used);
    }
    (per_s, at, stored_rows(&db).await)
}

/// MQTT arrays of 100 from firmware-sim to trackgate's own endpoint, one node.
async fn mqtt_arrays(pg: &Postgres) -> (f64, usize, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let url = database(pg, "mqtt");
    let config = format!(
        "http.rate_limit_per_second = 0\ndatabase.url = {url:?}\n{}",
        trackgate_e2e::MQTT_ENDPOINT
    );
    let server = Server::start_in(&dir.path().join("tg"), &config).unwrap();
    sim(dir.path(), &["roster", "--devices", "4"]);
    provision(dir.path(), "roster.json", &server);
    let records = 125_000u64;
    let total = 4 * records;
    let port = server.mqtt.expect("the endpoint").port().to_string();
    let usage = Usage::start(server.pid());
    let t = Instant::now();
    sim(
        dir.path(),
        &[
            "send",
            "--url",
            &server.url(""),
            "--ca",
            server.dir.join("data/tls/dev-cert.pem").to_str().unwrap(),
            "--mode",
            "mqtt",
            "--mqtt-port",
            &port,
            "--per-message",
            "100",
            "--records",
            &records.to_string(),
            "--json",
            "--quiet",
        ],
    );
    finished(
        "MQTT endpoint, arrays of 100, 4 devices",
        &server,
        total,
        t,
        usage,
        true,
    )
    .await
}

/// The storage limit: `rows` COPYed into a fresh database with trackgate's schema, `batch` rows
/// per transaction.
async fn copy_baseline(pg: &Postgres, name: &str, rows: &[Row], batch: usize) -> (f64, usize) {
    use sqlx::Connection as _;
    let db: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let url = database(pg, &format!("copy_{}", db.to_ascii_lowercase()));
    // trackgate's own schema and partitions: open it once with the store.
    let store = trackgate_benches::store_at(&url).await;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = conn.begin().await.unwrap();
        copy_positions(&mut tx, "positions", chunk).await;
        tx.commit().await.unwrap();
    }
    let took = t.elapsed();
    let name = format!("{name}: baseline, raw COPY of the same rows, {batch}/commit");
    println!("  {name:<40} {}", rate(rows.len() as u64, took));
    let per_s = rows.len() as f64 / took.as_secs_f64();
    (per_s, report::add("PostgreSQL", name, per_s))
}

pub async fn cases() -> String {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg")).unwrap();
    let version = version(&pg);
    println!("end-to-end on PostgreSQL {version} (same machine, TLS verify-full): firmware-sim -> trackgate");

    let (one, one_at, rows) = https(&pg, "HTTPS supplier batches of 1000, one node", 1, DEVICES).await;
    let (copy, copy_at) = copy_baseline(&pg, "HTTPS", &rows, 1000).await;
    println!("  ratio to the raw COPY: {:.2}", one / copy);
    report::ratio(one_at, one / copy);
    report::ratio(copy_at, 1.0);
    let (two, two_at, _) = https(&pg, "HTTPS supplier batches of 1000, two nodes", 2, DEVICES / 2).await;
    println!(
        "  two nodes to one: {:.2}; to the raw COPY: {:.2}",
        two / one,
        two / copy
    );
    report::ratio(two_at, two / copy);

    let (mqtt, mqtt_at, rows) = mqtt_arrays(&pg).await;
    let (copy, copy_at) = copy_baseline(&pg, "MQTT arrays", &rows, 1000).await;
    println!("  ratio to the raw COPY: {:.2}", mqtt / copy);
    report::ratio(mqtt_at, mqtt / copy);
    report::ratio(copy_at, 1.0);
    format!("PostgreSQL {version}")
}
