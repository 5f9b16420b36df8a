//! How positions are best written into PostgreSQL, measured before the backend chooses: the same
//! rows (as trackgate stores them: 100 devices, 1000 rows a commit, text ids, the record text)
//! over TLS into a throwaway cluster on this machine, each way into a fresh database:
//!
//! - the baseline: raw `COPY` into the table, no conflict handling (the fastest way in);
//! - multi-row `INSERT .. ON CONFLICT DO NOTHING`, with two indexes a row (`(device_id, seq)`
//!   unique and `(device_id, ts)`) and with the unique one alone;
//! - `INSERT .. SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING`, one index; and the same
//!   arrays unnested in the select list (`SELECT unnest($1), unnest($2), ...`);
//! - `COPY` into a temporary staging table, then `INSERT .. SELECT .. ON CONFLICT DO NOTHING`;
//! - the fastest of those with the per-device hourly spans upserted in the same transaction,
//!   as the store keeps them;
//! - that again into `positions` partitioned by 31 days of `ts`, where a unique index can only be
//!   per partition: each batch first locks its devices (advisory locks, in id order) and looks
//!   for stored spans whose seqs overlap the batch's (the rare path: a resend whose copy may sit
//!   in another partition), which a device counting up never has.
//!
//! Each case runs `--rounds` times (default 3), the cases taking turns so that the cluster's
//! checkpoints fall on all of them alike; the median is printed, with its ratio to the raw
//! `COPY`'s median. `target/release/pg_write [--rows N] [--rounds R] [--only TEXT]...`: with
//! `--only`, the cases whose name contains one of the texts, beside the baseline;
//! `--async-commit` sets `synchronous_commit = off` in every database, which takes the disk's
//! flush out of the figures and leaves what each way costs the server's CPU.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, QueryBuilder};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Instant;
use trackgate_benches::{copy_positions, now_ms, position_columns, push_row, rows};
use trackgate_e2e::postgres::Postgres;
use trackgate_proto::Measurement;
use trackgate_store::Row;

const BATCH: usize = 1000;
const DEVICES: usize = 100;

const TABLE: &str = "CREATE TABLE positions (device_id TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL, \
     lat DOUBLE PRECISION, lon DOUBLE PRECISION, alt DOUBLE PRECISION, spd DOUBLE PRECISION, \
     hdg DOUBLE PRECISION, acc DOUBLE PRECISION, bat DOUBLE PRECISION, tmp DOUBLE PRECISION, \
     ext TEXT, record TEXT NOT NULL, kid TEXT NOT NULL, received_ms BIGINT NOT NULL); \
     CREATE UNIQUE INDEX positions_device_seq ON positions (device_id, seq); \
     CREATE TABLE position_spans (device_id TEXT NOT NULL, hour BIGINT NOT NULL, min_seq BIGINT NOT NULL, \
     max_seq BIGINT NOT NULL, newest_ts BIGINT NOT NULL, newest_seq BIGINT NOT NULL, PRIMARY KEY (device_id, hour));";
const TS_INDEX: &str = "CREATE INDEX positions_device_ts ON positions (device_id, ts);";

fn columns() -> String {
    position_columns()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    RawCopy,
    Insert,
    Unnest,
    /// The same arrays unnested in the select list (`SELECT unnest($1), ...`), which streams the
    /// rows where `FROM UNNEST(...)` first copies them into a tuple store.
    UnnestInSelect,
    StagedCopy,
    /// UNNEST into 31-day partitions; first, if asked, lock the batch's devices and look for
    /// stored spans over its seqs.
    Partitioned {
        locks: bool,
        check: bool,
    },
    /// trackgate's own write path, `Store::write_batch`, on its own schema (monthly partitions,
    /// marks locked and raised, spans, latest positions, the commit notification).
    Store,
}

/// `positions` by 31 days of `ts`, the current range and the next two made ahead; the unique
/// `(device_id, seq)` index on each partition; with `check`, the spans' `(device_id, max_seq)`
/// index the span check reads.
fn partitioned_table(check: bool) -> String {
    let month_ms = 31 * 24 * 3_600_000i64;
    let start = (now_ms() as i64).div_euclid(month_ms) * month_ms;
    let mut sql = TABLE.replacen(
        "received_ms BIGINT NOT NULL); \
     CREATE UNIQUE INDEX positions_device_seq ON positions (device_id, seq);",
        "received_ms BIGINT NOT NULL) PARTITION BY RANGE (ts);",
        1,
    );
    assert!(sql.contains("PARTITION BY"), "the table text changed");
    for m in 0..3 {
        let (from, to) = (start + m * month_ms, start + (m + 1) * month_ms);
        sql.push_str(&format!(
            " CREATE TABLE positions_p{m} PARTITION OF positions FOR VALUES FROM ({from}) TO ({to}); \
             CREATE UNIQUE INDEX ON positions_p{m} (device_id, seq);"
        ));
    }
    if check {
        sql.push_str(" CREATE INDEX position_spans_device_max ON position_spans (device_id, max_seq);");
    }
    sql
}

struct Case {
    name: &'static str,
    method: Method,
    ts_index: bool,
    spans: bool,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut n, mut rounds, mut only, mut async_commit) = (200_000usize, 3usize, Vec::new(), false);
    while let Some(a) = args.next() {
        if a == "--async-commit" {
            async_commit = true;
            continue;
        }
        match (a.as_str(), args.next()) {
            ("--rows", Some(v)) => n = v.parse().expect("--rows N"),
            ("--rounds", Some(v)) => rounds = v.parse().expect("--rounds R"),
            ("--only", Some(v)) => only.push(v),
            _ => {
                eprintln!("usage: pg_write [--rows N] [--rounds R] [--only TEXT]... [--async-commit]");
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg")).expect("a throwaway PostgreSQL cluster");
    let version = pg.psql("postgres", "SHOW server_version").unwrap();
    println!(
        "PostgreSQL {} over TLS on loopback, {n} rows over {DEVICES} devices, {BATCH} rows a commit, synchronous_commit {}",
        version.trim(),
        if async_commit { "off" } else { "on" }
    );
    let data = rows(n, DEVICES, 0, now_ms() as i64);
    let cases = [
        Case {
            name: "baseline: raw COPY, one index",
            method: Method::RawCopy,
            ts_index: false,
            spans: false,
        },
        Case {
            name: "multi-row INSERT ON CONFLICT, two indexes",
            method: Method::Insert,
            ts_index: true,
            spans: false,
        },
        Case {
            name: "multi-row INSERT ON CONFLICT, one index",
            method: Method::Insert,
            ts_index: false,
            spans: false,
        },
        Case {
            name: "UNNEST INSERT ON CONFLICT, one index",
            method: Method::Unnest,
            ts_index: false,
            spans: false,
        },
        Case {
            name: "select-list unnest INSERT ON CONFLICT, one index",
            method: Method::UnnestInSelect,
            ts_index: false,
            spans: false,
        },
        Case {
            name: "COPY to staging, INSERT ON CONFLICT, one index",
            method: Method::StagedCopy,
            ts_index: false,
            spans: false,
        },
        Case {
            name: "UNNEST INSERT ON CONFLICT, one index, with spans",
            method: Method::Unnest,
            ts_index: false,
            spans: true,
        },
        Case {
            name: "COPY to staging, INSERT ON CONFLICT, one index, with spans",
            method: Method::StagedCopy,
            ts_index: false,
            spans: true,
        },
        Case {
            name: "UNNEST, 31-day partitions, spans",
            method: Method::Partitioned {
                locks: false,
                check: false,
            },
            ts_index: false,
            spans: true,
        },
        Case {
            name: "UNNEST, 31-day partitions, device locks, spans",
            method: Method::Partitioned {
                locks: true,
                check: false,
            },
            ts_index: false,
            spans: true,
        },
        Case {
            name: "UNNEST, 31-day partitions, span check, spans",
            method: Method::Partitioned {
                locks: false,
                check: true,
            },
            ts_index: false,
            spans: true,
        },
        Case {
            name: "UNNEST, 31-day partitions, device locks, span check, spans",
            method: Method::Partitioned {
                locks: true,
                check: true,
            },
            ts_index: false,
            spans: true,
        },
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .chain([Case {
            name: "trackgate's write path (Store::write_batch)",
            method: Method::Store,
            ts_index: false,
            spans: true,
        }])
        .enumerate()
        .filter(|(i, c)| *i == 0 || only.is_empty() || only.iter().any(|o| c.name.contains(o.as_str())))
        .map(|(_, c)| c)
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let per_s = measure(&pg, &format!("r{round}c{i}"), case, &data, async_commit).await;
            rates[i].push(per_s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut rates[0]);
    for (case, r) in cases.iter().zip(&mut rates) {
        let m = median(r);
        let spread = format!("{:.1} to {:.1}", r[0] / 1000.0, r[r.len() - 1] / 1000.0);
        println!(
            "  {:<62} {:>7.1} k rows/s (runs {spread})  ratio {:.2}",
            case.name,
            m / 1000.0,
            m / base
        );
    }
}

/// One case into a fresh database `db`: rows committed per second.
async fn measure(pg: &Postgres, db: &str, case: &Case, data: &[Row], async_commit: bool) -> f64 {
    pg.create_database(db).unwrap();
    if async_commit {
        pg.psql(
            "postgres",
            &format!("ALTER DATABASE \"{db}\" SET synchronous_commit = off"),
        )
        .unwrap();
    }
    if case.method == Method::Store {
        let store = trackgate_benches::store_at(&pg.url(db)).await;
        let t = Instant::now();
        for chunk in data.chunks(BATCH) {
            store.write_batch(chunk, &[]).await.unwrap();
        }
        let per_s = data.len() as f64 / t.elapsed().as_secs_f64();
        assert_eq!(store.count_positions().await.unwrap(), data.len() as i64);
        store.close().await;
        pg.psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
            .unwrap();
        return per_s;
    }
    let opts = PgConnectOptions::from_str(&pg.url(db)).unwrap();
    let mut conn = PgConnection::connect_with(&opts).await.unwrap();
    if let Method::Partitioned { check, .. } = case.method {
        sqlx::raw_sql(&partitioned_table(check))
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        sqlx::raw_sql(TABLE).execute(&mut conn).await.unwrap();
    }
    if case.ts_index {
        sqlx::raw_sql(TS_INDEX).execute(&mut conn).await.unwrap();
    }
    let t = Instant::now();
    for chunk in data.chunks(BATCH) {
        let mut tx = conn.begin().await.unwrap();
        match case.method {
            Method::RawCopy => copy_positions(&mut tx, "positions", chunk).await,
            Method::Insert => insert(&mut tx, chunk).await,
            Method::Unnest => unnest(&mut tx, chunk, false).await,
            Method::UnnestInSelect => unnest(&mut tx, chunk, true).await,
            Method::StagedCopy => staged(&mut tx, chunk).await,
            Method::Store => unreachable!("measured above"),
            Method::Partitioned { locks, check } => {
                let devices = seq_bounds(chunk);
                if locks {
                    lock_devices(&mut tx, &devices).await;
                }
                if check {
                    let overlaps = overlapping_spans(&mut tx, &devices).await;
                    assert_eq!(overlaps, 0, "a device counting up has no stored span over its new seqs");
                }
                unnest(&mut tx, chunk, false).await;
            }
        }
        if case.spans {
            upsert_spans(&mut tx, chunk).await;
        }
        tx.commit().await.unwrap();
    }
    let per_s = data.len() as f64 / t.elapsed().as_secs_f64();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, data.len() as i64, "{}", case.name);
    conn.close().await.unwrap();
    pg.psql("postgres", &format!("DROP DATABASE \"{db}\"")).unwrap();
    per_s
}

async fn insert(conn: &mut PgConnection, rows: &[Row]) {
    let mut q = QueryBuilder::new(format!("INSERT INTO positions ({}) ", columns()));
    q.push_values(rows, push_row);
    q.push(" ON CONFLICT DO NOTHING");
    q.build().execute(conn).await.unwrap();
}

async fn unnest(conn: &mut PgConnection, rows: &[Row], in_select: bool) {
    let types = ["text", "int8", "int8"]
        .into_iter()
        .chain(Measurement::NAMES.map(|_| "float8"))
        .chain(["text", "text", "text", "int8"]);
    let arrays: Vec<String> = (1..)
        .zip(types)
        .map(|(i, t)| match in_select {
            true => format!("unnest(${i}::{t}[])"),
            false => format!("${i}::{t}[]"),
        })
        .collect();
    let source = match in_select {
        true => arrays.join(", "),
        false => format!("* FROM UNNEST({})", arrays.join(", ")),
    };
    let sql = format!(
        "INSERT INTO positions ({}) SELECT {source} ON CONFLICT DO NOTHING",
        columns()
    );
    let mut q = sqlx::query(&sql)
        .bind(rows.iter().map(|r| r.device_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts).collect::<Vec<_>>());
    for i in 0..Measurement::NAMES.len() {
        q = q.bind(rows.iter().map(|r| r.measurement.values()[i]).collect::<Vec<_>>());
    }
    q.bind(rows.iter().map(|r| r.ext.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.record.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kid.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.received_ms).collect::<Vec<_>>())
        .execute(conn)
        .await
        .unwrap();
}

async fn staged(conn: &mut PgConnection, rows: &[Row]) {
    sqlx::raw_sql("CREATE TEMP TABLE IF NOT EXISTS staging (LIKE positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        .execute(&mut *conn)
        .await
        .unwrap();
    copy_positions(conn, "staging", rows).await;
    sqlx::raw_sql(&format!(
        "INSERT INTO positions ({c}) SELECT {c} FROM staging ON CONFLICT DO NOTHING",
        c = columns()
    ))
    .execute(conn)
    .await
    .unwrap();
}

/// Each device of a batch with the lowest and highest seq it brings, in id order.
fn seq_bounds(rows: &[Row]) -> Vec<(&str, i64, i64)> {
    let mut bounds: HashMap<&str, (i64, i64)> = HashMap::new();
    for r in rows {
        let b = bounds.entry(r.device_id.as_str()).or_insert((r.seq, r.seq));
        b.0 = b.0.min(r.seq);
        b.1 = b.1.max(r.seq);
    }
    let mut devices: Vec<(&str, i64, i64)> = bounds.into_iter().map(|(d, (lo, hi))| (d, lo, hi)).collect();
    devices.sort_unstable();
    devices
}

/// Lock the batch's devices for the transaction, in id order so two writers cannot deadlock.
async fn lock_devices(conn: &mut PgConnection, devices: &[(&str, i64, i64)]) {
    let ids: Vec<&str> = devices.iter().map(|d| d.0).collect();
    sqlx::query("SELECT count(pg_advisory_xact_lock(hashtextextended(d, 0))) FROM unnest($1::text[]) AS d")
        .bind(&ids)
        .execute(conn)
        .await
        .unwrap();
}

/// The stored spans whose seqs overlap the batch's seqs of the same device: the rows that may
/// be resends stored in another partition, to be looked up one by one.
async fn overlapping_spans(conn: &mut PgConnection, devices: &[(&str, i64, i64)]) -> i64 {
    let ids: Vec<&str> = devices.iter().map(|d| d.0).collect();
    let lo: Vec<i64> = devices.iter().map(|d| d.1).collect();
    let hi: Vec<i64> = devices.iter().map(|d| d.2).collect();
    sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[], $2::int8[], $3::int8[]) AS b(dev, lo, hi) \
         JOIN position_spans s ON s.device_id = b.dev AND s.max_seq >= b.lo AND s.min_seq <= b.hi",
    )
    .bind(&ids)
    .bind(&lo)
    .bind(&hi)
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Per device and hour: lowest and highest seq, and the newest (ts, seq), widened on conflict.
async fn upsert_spans(conn: &mut PgConnection, rows: &[Row]) {
    let mut spans: HashMap<(&str, i64), (i64, i64, i64, i64)> = HashMap::new();
    for r in rows {
        let e = spans
            .entry((r.device_id.as_str(), r.ts.div_euclid(3_600_000)))
            .or_insert((r.seq, r.seq, r.ts, r.seq));
        e.0 = e.0.min(r.seq);
        e.1 = e.1.max(r.seq);
        if (r.ts, r.seq) > (e.2, e.3) {
            (e.2, e.3) = (r.ts, r.seq);
        }
    }
    let mut q =
        QueryBuilder::new("INSERT INTO position_spans (device_id, hour, min_seq, max_seq, newest_ts, newest_seq) ");
    q.push_values(spans, |mut b, ((dev, hour), (lo, hi, nts, nseq))| {
        b.push_bind(dev)
            .push_bind(hour)
            .push_bind(lo)
            .push_bind(hi)
            .push_bind(nts)
            .push_bind(nseq);
    });
    q.push(
        " ON CONFLICT (device_id, hour) DO UPDATE SET \
         min_seq = LEAST(position_spans.min_seq, excluded.min_seq), \
         max_seq = GREATEST(position_spans.max_seq, excluded.max_seq), \
         newest_seq = CASE WHEN (excluded.newest_ts, excluded.newest_seq) > (position_spans.newest_ts, position_spans.newest_seq) \
           THEN excluded.newest_seq ELSE position_spans.newest_seq END, \
         newest_ts = GREATEST(position_spans.newest_ts, excluded.newest_ts)",
    );
    q.build().execute(conn).await.unwrap();
}
