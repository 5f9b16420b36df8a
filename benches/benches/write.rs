//! One batch written into SQLite by the store (insert ON CONFLICT DO NOTHING RETURNING, latest
//! position upsert, one transaction), beside the baseline: a raw sqlx multi-row INSERT of
//! identical rows into the same schema in a fresh database, in one transaction.
//!
//! Both use synchronous=NORMAL here so the figures show the SQL work, not the disk's fsync
//! latency; the end-to-end harness measures the shipped default (FULL).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use tokio::runtime::Runtime;
use trackgate_benches::{SCHEMA, now_ms, raw_insert, raw_pool, rows};
use trackgate_store::{MasterKey, OpenOptions, Row, SqliteOptions, Store};

/// The variant measured against the shipped schema when choosing it: a table clustered on
/// `(device_id, seq)` (`WITHOUT ROWID`), instead of a rowid table with narrow indexes.
const CLUSTERED_SCHEMA: &str = "CREATE TABLE positions (device_id TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, \
     lat REAL, lon REAL, alt REAL, spd REAL, hdg REAL, acc REAL, bat REAL, tmp REAL, ext TEXT, record TEXT NOT NULL, \
     kid TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (device_id, seq)) WITHOUT ROWID; \
     CREATE INDEX positions_device_ts ON positions (device_id, ts);";

async fn store(dir: &std::path::Path) -> Store {
    let opts = OpenOptions {
        url: format!("sqlite://{}", dir.join("store.db").display()),
        max_connections: 2,
        sqlite: SqliteOptions {
            synchronous_full: false,
            cache_mib: 32,
            wal_autocheckpoint_pages: 10_000,
        },
        postgres: Default::default(),
        retention: Default::default(),
    };
    Store::open(&opts, MasterKey::from_bytes(&[1; 32])).await.unwrap()
}

fn batch_write(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut g = c.benchmark_group("sqlite batch write");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for (batch, devices) in [(1000usize, 10usize), (1000, 1000), (10_000, 100), (10_000, 10_000)] {
        g.throughput(Throughput::Elements(batch as u64));
        let label = format!("{batch} rows over {devices} devices");
        let ts = now_ms() as i64;

        // Each variant writes fresh (device, seq) keys into its own database.
        let mut variant = |name: &str, write: &mut dyn FnMut(&[Row])| {
            let mut next = 0i64;
            g.bench_function(BenchmarkId::new(name, &label), |b| {
                b.iter_batched(
                    || {
                        next += batch as i64;
                        rows(batch, devices, next, ts)
                    },
                    |rs| write(&rs),
                    criterion::BatchSize::LargeInput,
                )
            });
        };
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let raw = rt.block_on(raw_pool(d1.path(), SCHEMA, false));
        variant("baseline: raw multi-row INSERT", &mut |rs| {
            rt.block_on(raw_insert(&raw, rs))
        });
        let clustered = rt.block_on(raw_pool(d2.path(), CLUSTERED_SCHEMA, false));
        variant("variant: raw INSERT, WITHOUT ROWID clustered table", &mut |rs| {
            rt.block_on(raw_insert(&clustered, rs))
        });
        let s = rt.block_on(store(d3.path()));
        variant("store.write_batch", &mut |rs| {
            rt.block_on(s.write_batch(rs, &[])).unwrap();
        });
    }
    g.finish();
}

criterion_group!(benches, batch_write);
criterion_main!(benches);
