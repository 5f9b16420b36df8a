//! Does ingest keep its rate while the retention purge runs? On each backend, into a fresh
//! database per run: 100 devices of an organization that keeps 30 days, `--expired` rows of theirs
//! 33 to 40 days old (a record a minute per device), then `--rows` fresh rows written through
//! `Store::write_batch` in batches of 1000, once alone (the baseline) and once while
//! `Store::purge` deletes the expired rows. Prints both write rates, their ratio, and what the
//! purge removed in how long. The runs alternate, `--rounds` of each (default 3); medians.
//!
//! `target/release/purge [--rows N] [--expired M] [--rounds R]`

use std::time::Instant;
use trackgate_benches::{now_ms, rows};
use trackgate_e2e::postgres::Postgres;
use trackgate_store::{AuditEntry, Row, Store};

const DEVICES: usize = 100;
const BATCH: usize = 1000;
const DAY_MS: i64 = 86_400_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut n, mut expired, mut rounds) = (200_000usize, 500_000usize, 3usize);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--rows", Some(v)) => n = v.parse().expect("--rows N"),
            ("--expired", Some(v)) => expired = v.parse().expect("--expired M"),
            ("--rounds", Some(v)) => rounds = v.parse().expect("--rounds R"),
            _ => {
                eprintln!("usage: purge [--rows N] [--expired M] [--rounds R]");
                std::process::exit(2);
            }
        }
    }
    let now = now_ms() as i64;
    // A record a minute per device: 600 ms apart over the 100 devices, from 40 days ago.
    let old: Vec<Row> = rows(expired, DEVICES, 0, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.ts = now - 40 * DAY_MS + i as i64 * 600;
            r
        })
        .collect();
    let fresh = rows(n, DEVICES, expired as i64, now - 60_000);
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg")).expect("a throwaway PostgreSQL cluster");
    println!(
        "{expired} expired rows (33-40 days old, organization keeps 30), then {n} fresh rows in batches of {BATCH}, {DEVICES} devices"
    );
    for backend in ["sqlite", "postgres"] {
        let (mut alone, mut beside, mut purges) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for with_purge in [false, true] {
                let url = match backend {
                    "sqlite" => format!("sqlite://{}/r{round}{with_purge}.db", dir.path().display()),
                    _ => {
                        let db = format!("r{round}{with_purge}");
                        pg.create_database(&db).unwrap();
                        pg.url(&db)
                    }
                };
                let store = seeded(&url, &old).await;
                let (rate, purge) = write(&store, &fresh, with_purge, now).await;
                if with_purge {
                    beside.push(rate);
                    purges.push(purge.expect("the purge ran"));
                } else {
                    alone.push(rate);
                }
                store.close().await;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(&mut alone), median(&mut beside));
        purges.sort_by(|x, y| x.1.total_cmp(&y.1));
        let (removed, secs) = purges[purges.len() / 2];
        println!(
            "  {backend:<8} writes alone {:>6.1} k rows/s (runs {}), beside the purge {:>6.1} k rows/s (runs {}): ratio {:.2}; \
             the purge removed {removed} rows in {secs:.1} s ({:.1} k rows/s)",
            a / 1000.0,
            runs(&alone),
            b / 1000.0,
            runs(&beside),
            b / a,
            removed as f64 / secs / 1000.0
        );
    }
}

fn runs(v: &[f64]) -> String {
    v.iter()
        .map(|r| format!("{:.1}", r / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fresh database with acme (30 days), its devices, and the expired rows.
async fn seeded(url: &str, old: &[Row]) -> Store {
    // trackgate's default pool: the purge holds one connection for its lock and uses another.
    let opts = trackgate_store::OpenOptions {
        url: url.to_owned(),
        max_connections: 8,
        sqlite: Default::default(),
        postgres: Default::default(),
        retention: Default::default(),
    };
    let store = Store::open(&opts, trackgate_store::MasterKey::from_bytes(&[1; 32]))
        .await
        .expect("the benchmark's database opens");
    let a = AuditEntry {
        actor: "bench".into(),
        action: "seed".into(),
        ..Default::default()
    };
    store.add_organization("acme", "Acme", &a).await.unwrap();
    store.set_positions_retention("acme", Some(30), &a).await.unwrap();
    for d in 0..DEVICES {
        let id = format!("TRK-{d:06}");
        store.add_device(&id, None).await.unwrap();
        store.assign_device(&id, "acme", &a).await.unwrap();
    }
    for chunk in old.chunks(BATCH * 5) {
        store.write_batch(chunk, &[]).await.unwrap();
    }
    store
}

/// Write `fresh` in batches, with the purge running beside if asked: rows/s, and the purge's
/// (rows removed, seconds).
async fn write(store: &Store, fresh: &[Row], with_purge: bool, now: i64) -> (f64, Option<(u64, f64)>) {
    let purge = with_purge.then(|| {
        let s = store.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let report = s.purge(now).await.unwrap().expect("no other purge");
            (report.positions(), t.elapsed().as_secs_f64())
        })
    });
    let t = Instant::now();
    for chunk in fresh.chunks(BATCH) {
        store.write_batch(chunk, &[]).await.unwrap();
    }
    let rate = fresh.len() as f64 / t.elapsed().as_secs_f64();
    let purged = match purge {
        Some(p) => Some(p.await.unwrap()),
        None => None,
    };
    (rate, purged)
}
