//! Shared inputs for the benchmarks: signed envelopes and rows shaped like real traffic.
#![forbid(unsafe_code)]

use sqlx::QueryBuilder;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use trackgate_proto::{Measurement, Secret, sign};
use trackgate_store::Row;

/// trackgate's schema, for the raw baselines.
/// trackgate's SQLite schema, as its migrations leave it.
pub const SCHEMA: &str = concat!(
    include_str!("../../crates/store/migrations/sqlite/0001_init.sql"),
    include_str!("../../crates/store/migrations/sqlite/0002_operators.sql"),
    include_str!("../../crates/store/migrations/sqlite/0003_position_spans.sql"),
);
const COLUMNS: usize = 15;

/// A fresh SQLite database at `dir/raw.db` with `schema`, tuned as trackgate tunes its own
/// (WAL, 32 MiB cache, autocheckpoint at 10000 pages); `synchronous=FULL` (one fsync per
/// commit, trackgate's default) or NORMAL.
pub async fn raw_pool(dir: &std::path::Path, schema: &str, synchronous_full: bool) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.join("raw.db").display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if synchronous_full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .pragma("cache_size", "-32768")
        .pragma("wal_autocheckpoint", "10000");
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::raw_sql(schema).execute(&pool).await.unwrap();
    pool
}

/// The columns of `positions`, in the order [`push_row`] binds them.
pub fn position_columns() -> String {
    format!(
        "device_id, seq, ts, {}, ext, record, kid, received_ms",
        Measurement::NAMES.join(", ")
    )
}

/// One row's values for a multi-row INSERT into [`position_columns`], on either database.
pub fn push_row<'q, DB>(mut b: Separated<'_, 'q, DB, &'static str>, r: &'q Row)
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<f64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    b.push_bind(r.device_id.as_str()).push_bind(r.seq).push_bind(r.ts);
    for v in r.measurement.values() {
        b.push_bind(v);
    }
    b.push_bind(r.ext.as_deref())
        .push_bind(r.record.as_str())
        .push_bind(r.kid.as_str())
        .push_bind(r.received_ms);
}

/// The baseline write: `rows` as multi-row INSERTs in one transaction. Deliberately not the
/// store's code: a baseline must not share what it measures.
pub async fn raw_insert(pool: &SqlitePool, rows: &[Row]) {
    let mut tx = pool.begin().await.unwrap();
    for chunk in rows.chunks(32_766 / COLUMNS) {
        let mut q = QueryBuilder::new(format!("INSERT INTO positions ({}) ", position_columns()));
        q.push_values(chunk, push_row);
        q.build().execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

pub const DEVICE_KEY: [u8; 32] = [7; 32];

/// The baselines' crypto: HMAC-SHA256 under [`DEVICE_KEY`] of `domain` then `bytes`, written
/// directly against `hmac`, not through trackgate's code.
pub fn raw_hmac(domain: &[u8], bytes: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(&DEVICE_KEY).expect("any key length");
    m.update(domain);
    m.update(bytes);
    m.finalize().into_bytes().into()
}

/// A record as a tracker writes it: position, speed, heading, accuracy, battery, temperature.
pub fn record_text(dev: &str, seq: u64, ts: u64) -> String {
    format!(
        r#"{{"dev":"{dev}","seq":{seq},"ts":{ts},"lat":60.16{seq:04},"lon":24.93{seq:04},"spd":3.2,"hdg":181.5,"acc":4.5,"bat":87,"tmp":-3.25}}"#,
        seq = seq % 10_000
    )
}

/// A compact signed envelope for that record.
pub fn envelope(dev: &str, seq: u64, ts: u64) -> String {
    sign::envelope(&Secret::from_bytes(DEVICE_KEY), Some("k1"), &record_text(dev, seq, ts))
}

/// `n` rows spread over `devices` devices, seqs starting at `first_seq`.
pub fn rows(n: usize, devices: usize, first_seq: i64, ts: i64) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let seq = first_seq + i as i64;
            let dev = format!("TRK-{:06}", i % devices);
            let mut r = row(
                &dev,
                seq,
                ts,
                60.0 + (i % 1000) as f64 * 1e-4,
                24.0 + (i % 1000) as f64 * 1e-4,
            );
            // The record says `ts`; the rows are a millisecond apart.
            r.ts = ts + i as i64;
            r
        })
        .collect()
}

/// A row of `device` at `ts` and (`lat`, `lon`), with the other measurements a tracker sends,
/// received at `ts`.
pub fn row(device: &str, seq: i64, ts: i64, lat: f64, lon: f64) -> Row {
    Row {
        record: record_text(device, seq as u64, ts as u64),
        device_id: device.to_owned(),
        seq,
        ts,
        measurement: Measurement {
            lat: Some(lat),
            lon: Some(lon),
            alt: None,
            spd: Some(3.2),
            hdg: Some(181.5),
            acc: Some(4.5),
            bat: Some(87.0),
            tmp: Some(-3.25),
        },
        ext: None,
        kid: "k1".into(),
        received_ms: ts,
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// CSV for COPY: text quoted (quotes doubled), NULL as an unquoted empty field.
pub fn position_csv(rows: &[Row]) -> String {
    use std::fmt::Write;
    let text = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::with_capacity(rows.len() * 400);
    for r in rows {
        let _ = write!(out, "{},{},{}", text(&r.device_id), r.seq, r.ts);
        for v in r.measurement.values() {
            out.push(',');
            if let Some(v) = v {
                let _ = write!(out, "{v}");
            }
        }
        out.push(',');
        if let Some(e) = &r.ext {
            out.push_str(&text(e));
        }
        let _ = writeln!(out, ",{},{},{}", text(&r.record), text(&r.kid), r.received_ms);
    }
    out
}

/// COPY `rows` into `table` (its [`position_columns`]): the fastest way into PostgreSQL.
pub async fn copy_positions(conn: &mut sqlx::PgConnection, table: &str, rows: &[Row]) {
    let mut c = conn
        .copy_in_raw(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT csv)",
            position_columns()
        ))
        .await
        .unwrap();
    c.send(position_csv(rows).into_bytes()).await.unwrap();
    c.finish().await.unwrap();
}

/// trackgate's store on the database at `url` (migrated, and on PostgreSQL its partitions made).
pub async fn store_at(url: &str) -> trackgate_store::Store {
    let opts = trackgate_store::OpenOptions {
        url: url.to_owned(),
        max_connections: 2,
        sqlite: Default::default(),
        postgres: Default::default(),
        retention: Default::default(),
    };
    trackgate_store::Store::open(&opts, trackgate_store::MasterKey::from_bytes(&[1; 32]))
        .await
        .expect("the benchmark's database opens")
}

/// What a results section says about the run: the machine, the commit, tools' versions; and
/// putting the section into `benches/RESULTS.md`.
pub mod results {
    use std::path::Path;
    use std::process::Command;

    /// The first non-empty line `program args` prints (stdout, then stderr).
    pub fn first_line(program: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(program).args(args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
    }

    /// CPUs, model, memory and kernel.
    pub fn machine() -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        format!("{cpus} x {model}, {mem_gib:.0} GiB RAM, Linux {}", kernel.trim())
    }

    /// The commit measured, and whether the tree had changes.
    pub fn commit() -> String {
        let mut commit = first_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        if first_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_some() {
            commit.push_str(" with uncommitted changes");
        }
        commit
    }

    /// Put `section` into the results file above the newest run, below the file's header.
    pub fn record(file: &Path, section: &str) -> std::io::Result<()> {
        let old = std::fs::read_to_string(file).unwrap_or_else(|_| "# Benchmark results\n\n".into());
        let at = old.find("\n## ").map_or(old.len(), |i| i + 1);
        let new = format!("{}{section}\n{}", &old[..at], &old[at..]);
        std::fs::write(file, new)
    }
}
