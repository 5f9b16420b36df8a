//! What only SQLite has: a database from before position spans moved forward, the pool's guard
//! against a transaction SQLite rolled back by itself, and the query plans of the location reads.

use super::*;
use crate::access::{TrackCursor, Visibility};
use crate::batch::SPAN_MS;
use crate::tests::TestDb;
use crate::tests::operators::seeded;
use crate::tests::store::row;
use crate::{Row, Store};
use sqlx::Row as _;
use sqlx::sqlite::SqliteConnectOptions;

/// A database made before position spans (migrations 1 and 2) is moved forward at open: its
/// spans are built from its rows (with their newest record's battery and temperature), the
/// (device_id, ts) index is gone, and tracks read right.
#[tokio::test]
async fn a_database_from_before_spans_is_moved_forward_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let old = SqlitePool::connect_with(SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true))
        .await
        .unwrap();
    Migrator::new(Embedded {
        steps: migrate::SQLITE,
        upto: 2,
    })
    .await
    .unwrap()
    .run(&old)
    .await
    .unwrap();
    // (seq, hour, minute): seq 6's clock jumped back an hour; seq 7 has no position.
    let h0 = 490_000;
    for (seq, hour, minute) in [
        (1, h0, 0),
        (2, h0, 30),
        (3, h0 + 1, 5),
        (4, h0 + 1, 5),
        (6, h0, 45),
        (7, h0 + 1, 9),
    ] {
        let ts = hour * SPAN_MS + minute * 60_000;
        sqlx::query(
            "INSERT INTO positions (device_id, seq, ts, lat, lon, bat, tmp, record, kid, received_ms) \
             VALUES ('old-1', ?, ?, CASE WHEN ? = 7 THEN NULL ELSE 60.0 END, CASE WHEN ? = 7 THEN NULL ELSE 24.0 END, \
             ? * 10.0, -?, 'r', 'k1', 0)",
        )
        .bind(seq)
        .bind(ts)
        .bind(seq)
        .bind(seq)
        .bind(seq)
        .bind(seq)
        .execute(&old)
        .await
        .unwrap();
    }
    old.close().await;

    let opts = OpenOptions {
        url,
        max_connections: 2,
        sqlite: SqliteOptions::default(),
        postgres: crate::PostgresOptions::default(),
        // The rows are from 1970: kept.
        retention: crate::Retention {
            positions_days: 36_500,
            ..Default::default()
        },
    };
    let s = Store::open(&opts, MasterKey::from_bytes(&[3; 32])).await.unwrap();
    let db = s.sqlite_for_tests();
    let spans: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT hour, min_seq, max_seq, newest_ts, newest_seq FROM position_spans WHERE device_id = 'old-1' ORDER BY hour",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let at = |hour: i64, minute: i64| hour * SPAN_MS + minute * 60_000;
    assert_eq!(spans, [(h0, 1, 6, at(h0, 45), 6), (h0 + 1, 3, 7, at(h0 + 1, 9), 7)]);
    // And each span's newest record's battery and temperature (migration 7), which the device
    // list shows.
    let newest: Vec<(f64, f64)> =
        sqlx::query_as("SELECT newest_bat, newest_tmp FROM position_spans WHERE device_id = 'old-1' ORDER BY hour")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(newest, [(60.0, -6.0), (70.0, -7.0)]);
    let ts_index: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'positions_device_ts'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ts_index, 0);

    // The whole track, two points a page: (ts, seq) order, the jumped record in its place.
    let mut seen = Vec::new();
    let mut after: Option<TrackCursor> = None;
    loop {
        let page = s.track("old-1", 0, i64::MAX, after, 2).await.unwrap();
        seen.extend(page.points.iter().map(|p| p.seq()));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 6, 3, 4]);
}

/// What a full disk does underneath sqlx, replayed on every pooled connection: SQLite rolls the
/// transaction back by itself (here: a plain `ROLLBACK` inside it), so sqlx's own `ROLLBACK` on
/// drop fails and its transaction depth stays at 1; one more failed write on that connection
/// (`SAVEPOINT`, then `ROLLBACK TO`) leaves a real transaction open. A batch written after that
/// must still reach the database file when `write_batch` says it did.
#[tokio::test]
async fn a_connection_left_in_a_failed_transaction_never_swallows_a_commit() {
    let db = TestDb::sqlite();
    use sqlx::Connection as _;
    let s = db.open().await;
    let pool = s.sqlite_for_tests().pool.clone();
    // All of the pool's connections (`TestDb` allows 4), so the batch lands on one of them.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(pool.acquire().await.unwrap());
    }
    for c in &mut conns {
        let mut tx = c.begin().await.unwrap();
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
        drop(tx);
        let mut tx = c.begin().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM positions")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
    }
    drop(conns);

    let rows: Vec<Row> = (1..=3).map(|i| row("A", i, i * 100, &format!("a{i}"))).collect();
    let outcomes = s.write_batch(&rows, &[]).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Inserted; 3]);

    // Read through a connection of our own, as after a restart.
    let url = format!("sqlite://{}?mode=ro", db.dir.path().join("t.db").display());
    let other = sqlx::SqlitePool::connect(&url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions")
        .fetch_one(&other)
        .await
        .unwrap();
    assert_eq!(
        stored, 3,
        "write_batch said committed, but the rows are not in the file"
    );
    // And the connection pool still writes.
    s.write_batch(&[row("A", 4, 400, "a4")], &[]).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions")
        .fetch_one(&other)
        .await
        .unwrap();
    assert_eq!(stored, 4);
}

/// The plans the location reads use on a database of a million positions: index searches only,
/// never a scan of `positions`; a track sorts at most one hour of one device's rows.
#[tokio::test]
async fn location_reads_use_the_indexes_on_a_million_positions() {
    let db = TestDb::sqlite();
    let s = seeded(&db).await;
    let db = s.sqlite_for_tests();
    // 1,000 devices of 1,000 positions each, written in SQL to keep the test quick.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) \
         INSERT INTO positions (device_id, seq, ts, lat, lon, bat, record, kid, received_ms) \
         SELECT 'bulk-' || (i % 1000), i / 1000, 1700000000000 + i, 50.0 + (i % 7), 10.0 + (i % 11), 80.0, \
                'r' || i, 'k1', 0 FROM n",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO latest_positions (device_id, seq, ts, lat, lon, received_ms) \
         SELECT device_id, MAX(seq), MAX(ts), 50.0, 10.0, 0 FROM positions GROUP BY device_id \
         ON CONFLICT (device_id) DO NOTHING",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Their spans, as the writer keeps them (seq grows with ts here).
    sqlx::query(
        "INSERT INTO position_spans (device_id, hour, min_seq, max_seq, newest_ts, newest_seq) \
         SELECT device_id, ts / 3600000, MIN(seq), MAX(seq), MAX(ts), MAX(seq) FROM positions \
         WHERE device_id LIKE 'bulk-%' GROUP BY 1, 2",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    assert!(s.count_positions().await.unwrap() >= 1_000_000);

    async fn plan(pool: &sqlx::SqlitePool, mut b: sqlx::QueryBuilder<'_, sqlx::Sqlite>) -> String {
        let rows = b.build().fetch_all(pool).await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }
    let scoped = Visibility {
        everything: false,
        orgs: vec!["globex".into()],
        order_groups: vec![("acme".into(), "north".into())],
    };
    let explain = "EXPLAIN QUERY PLAN ";
    // Reads hide what is past each organization's retention.
    let kept = operators::Kept {
        retention: crate::Retention {
            positions_days: 36_500,
            ..Default::default()
        },
        now: crate::now_ms(),
    };
    for vis in [&scoped, &Visibility::everything()] {
        let devices = plan(&db.pool, operators::devices_query(explain, vis, None, kept)).await;
        let one = plan(&db.pool, operators::devices_query(explain, vis, Some("bulk-7"), kept)).await;
        let latest = plan(&db.pool, operators::latest_query(explain, vis, None, kept)).await;
        for (name, p) in [("devices", &devices), ("device", &one), ("latest", &latest)] {
            for scan in [
                "SCAN r",
                "SCAN s",
                "SCAN m",
                "SCAN positions",
                "SCAN l",
                "SCAN latest_positions",
            ] {
                assert!(!p.lines().any(|l| l.starts_with(scan)), "{name} plan scans:\n{p}");
            }
        }
        assert!(
            devices.contains("SEARCH s USING PRIMARY KEY (device_id=? AND hour=?)"),
            "{devices}"
        );
        // A device's newest record comes from its newest span: the device list reads no
        // positions at all.
        for p in [&devices, &one] {
            assert!(!p.contains("positions_device"), "the device list reads positions:\n{p}");
        }
    }
    let explained = |sql: String| async move {
        let rows = sqlx::query(&format!("{explain}{sql}"))
            .bind("bulk-7")
            .bind(0_i64)
            .bind(i64::MAX)
            .bind(0_i64)
            .bind(i64::MAX)
            .bind(0_i64)
            .bind(0_i64)
            .bind(100_i64)
            .fetch_all(&db.pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let spans = explained(operators::SPANS_SQL.to_owned()).await;
    assert!(
        spans.contains("SEARCH position_spans USING PRIMARY KEY (device_id=? AND hour>? AND hour<?)"),
        "spans plan:\n{spans}"
    );
    let p = explained(operators::TRACK_SQL.clone()).await;
    assert!(
        p.contains("SEARCH positions USING INDEX positions_device_seq (device_id=? AND seq>? AND seq<?)"),
        "track plan:\n{p}"
    );
    // And the query answers from it.
    let page = s.track("bulk-7", 0, i64::MAX, None, 100).await.unwrap();
    assert_eq!(page.points.len(), 100);
    assert!(page.points.windows(2).all(|w| w[0].ts() <= w[1].ts()));
}

/// A batch that has to wait for a pooled connection is counted, with the time it waited.
#[tokio::test]
async fn waits_for_a_connection_are_counted() {
    let db = TestDb::sqlite();
    let s = db.open().await;
    s.write_batch(&[row("A", 1, 100, "a1")], &[]).await.unwrap();
    // (Opening a connection the pool did not have yet can itself count as a short wait.)
    let before = s.pool_status();
    let pool = s.sqlite_for_tests().pool.clone();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.acquire().await.unwrap());
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move { s.write_batch(&[row("A", 2, 200, "a2")], &[]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!writer.is_finished());
    drop(held);
    writer.await.unwrap().unwrap();
    let after = s.pool_status();
    assert_eq!(after.waits, before.waits + 1, "{before:?} {after:?}");
    assert!(after.wait_seconds - before.wait_seconds >= 0.09, "{before:?} {after:?}");
}
