//! What only PostgreSQL has: `(device_id, seq)` unique across monthly partitions, whoever writes
//! and in whatever order; partitions made on demand; error kinds; and the query plans.

use super::partitions::Month;
use crate::tests::TestDb;
use crate::tests::operators::seeded;
use crate::tests::store::{rejects, row};
use crate::{Outcome, Row, Store};
use sqlx::Row as _;

const NOV_2025: i64 = 1_762_000_000_000;
const JAN_2026: i64 = 1_768_000_000_000;

fn at(dev: &str, seq: i64, ts: i64, text: &str) -> Row {
    row(dev, seq, ts, text)
}

async fn partitions_of(s: &Store) -> Vec<String> {
    let pool = &s.postgres_for_tests().pool;
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'positions'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn stored(s: &Store, dev: &str, seq: i64) -> Vec<(i64, String)> {
    let pool = &s.postgres_for_tests().pool;
    sqlx::query_as("SELECT ts, record FROM positions WHERE device_id = $1 AND seq = $2")
        .bind(dev)
        .bind(seq)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A resend whose two versions carry timestamps in different partitions is a conflict, in
/// either order, in one batch or two, and above or below the device's mark.
#[tokio::test]
async fn a_conflict_across_partitions_is_a_conflict() {
    let db = TestDb::postgres();
    let s = db.open().await;
    assert_eq!(
        s.write_batch(&[at("A", 10, NOV_2025, "a10-nov")], &[]).await.unwrap(),
        [Outcome::Inserted]
    );
    // The same seq with a January ts: another partition, the same (device, seq).
    assert_eq!(
        s.write_batch(&[at("A", 10, JAN_2026, "a10-jan")], &[]).await.unwrap(),
        [Outcome::Conflict]
    );
    // A seq below the mark that was never stored is new; its resend in another month is not.
    assert_eq!(
        s.write_batch(&[at("A", 3, JAN_2026, "a3-jan"), at("A", 3, NOV_2025, "a3-nov")], &[])
            .await
            .unwrap(),
        [Outcome::Inserted, Outcome::Conflict]
    );
    assert_eq!(
        s.write_batch(&[at("A", 3, JAN_2026, "a3-jan"), at("A", 3, NOV_2025, "a3-nov")], &[])
            .await
            .unwrap(),
        [Outcome::Duplicate, Outcome::Conflict]
    );
    // A new device whose first batch holds both versions.
    assert_eq!(
        s.write_batch(&[at("B", 1, JAN_2026, "b1-jan"), at("B", 1, NOV_2025, "b1-nov")], &[])
            .await
            .unwrap(),
        [Outcome::Inserted, Outcome::Conflict]
    );
    assert_eq!(stored(&s, "A", 10).await, [(NOV_2025, "a10-nov".to_owned())]);
    assert_eq!(stored(&s, "A", 3).await, [(JAN_2026, "a3-jan".to_owned())]);
    assert_eq!(stored(&s, "B", 1).await, [(JAN_2026, "b1-jan".to_owned())]);
    assert_eq!(s.count_positions().await.unwrap(), 3);
    let parts = partitions_of(&s).await;
    for want in ["positions_p20251101", "positions_p20260101"] {
        assert!(parts.iter().any(|p| p == want), "{want} in {parts:?}");
    }
}

/// Two nodes (two pools) write the same devices at once, each seq in two versions whose
/// timestamps fall in different partitions: each (device, seq) is stored exactly once, and
/// exactly one of its two writes is told it was inserted.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_store_each_seq_once_across_partitions() {
    let db = TestDb::postgres();
    let a = db.open().await;
    let b = db.open().await;
    let devices = ["D1", "D2", "D3"];
    let batch = |ts: i64, tag: &str, round: i64| -> Vec<Row> {
        devices
            .iter()
            .flat_map(|d| (0..20).map(move |k| (d, round * 20 + k)))
            .map(|(d, seq)| at(d, seq, ts + seq, &format!("{d}-{seq}-{tag}")))
            .collect()
    };
    let mut inserted = 0;
    for round in 0..10 {
        let (nov, jan) = (batch(NOV_2025, "nov", round), batch(JAN_2026, "jan", round));
        let (x, y) = tokio::join!(a.write_batch(&nov, &[]), b.write_batch(&jan, &[]));
        let (x, y) = (x.unwrap(), y.unwrap());
        for (p, q) in x.iter().zip(&y) {
            assert!(
                matches!(
                    (p, q),
                    (Outcome::Inserted, Outcome::Conflict) | (Outcome::Conflict, Outcome::Inserted)
                ),
                "{p:?} / {q:?}"
            );
            inserted += 1;
        }
    }
    assert_eq!(inserted, 600);
    assert_eq!(a.count_positions().await.unwrap(), 600);
    let pool = &a.postgres_for_tests().pool;
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT device_id, seq FROM positions GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(twice, 0);
}

/// A row the marks do not account for (written behind the store's back, above the device's
/// mark) fails the whole batch that brings its seq again: an error, not a retry, nothing of the
/// batch stored, and the mark where it was.
#[tokio::test]
async fn a_row_behind_the_marks_fails_its_batch_and_nothing_of_it_is_stored() {
    let db = TestDb::postgres();
    let s = db.open().await;
    s.write_batch(&[at("A", 1, NOV_2025, "a1")], &[]).await.unwrap();
    let pool = &s.postgres_for_tests().pool;
    sqlx::query(
        "INSERT INTO positions (device_id, seq, ts, record, kid, received_ms) VALUES ('A', 5, $1, 'behind', 'k1', 0)",
    )
    .bind(NOV_2025)
    .execute(pool)
    .await
    .unwrap();
    let err = s
        .write_batch(
            &[at("A", 2, NOV_2025, "a2"), at("A", 5, NOV_2025, "a5")],
            &rejects(1, "A"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(stored(&s, "A", 2).await, []);
    assert_eq!(stored(&s, "A", 5).await, [(NOV_2025, "behind".to_owned())]);
    let mark: i64 = sqlx::query_scalar("SELECT max_seq FROM device_marks WHERE device_id = 'A'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mark, 1);
    let rejects: i64 = sqlx::query_scalar("SELECT count(*) FROM rejects")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rejects, 0);
}

/// A record for a month without a partition makes one; the months ahead exist from the start.
#[tokio::test]
async fn partitions_are_made_ahead_and_on_demand() {
    let db = TestDb::postgres();
    let s = db.open().await;
    let now = Month::of(crate::now_ms());
    let parts = partitions_of(&s).await;
    for m in [now, now.next(), now.next().next()] {
        assert!(parts.contains(&m.table()), "{} in {parts:?}", m.table());
    }
    let old = 1_500_000_000_000; // July 2017
    s.write_batch(&[at("OLD", 1, old, "old")], &[]).await.unwrap();
    assert!(partitions_of(&s).await.contains(&"positions_p20170701".to_owned()));
    // Another node that did not see it made still writes there.
    let other = db.open().await;
    other.write_batch(&[at("OLD", 2, old + 1, "old2")], &[]).await.unwrap();
    // A partition dropped behind a node's back (retention on another node) is made again.
    s.execute_for_tests("DROP TABLE positions_p20170701").await.unwrap();
    assert_eq!(
        other.write_batch(&[at("OLD", 3, old + 2, "old3")], &[]).await.unwrap(),
        [Outcome::Inserted]
    );
    assert_eq!(stored(&s, "OLD", 3).await.len(), 1);
}

/// A server that went away is an `io` failure, retried; a statement it refuses is not.
#[tokio::test]
async fn a_server_that_is_gone_is_retryable() {
    let mut db = TestDb::postgres();
    let s = db.open().await;
    let refused = s.execute_for_tests("INSERT INTO nowhere VALUES (1)").await.unwrap_err();
    let refused = crate::StoreError::from(refused);
    assert!(!refused.is_retryable(), "{refused}");
    db.pg.as_mut().unwrap().stop();
    let e = s.write_batch(&[at("A", 1, JAN_2026, "a1")], &[]).await.unwrap_err();
    assert!(e.is_retryable(), "{} is {}", e, e.failure_kind());
    db.pg.as_mut().unwrap().restart().unwrap();
    // The pool reconnects by itself.
    let mut ok = None;
    for _ in 0..50 {
        match s.write_batch(&[at("A", 1, JAN_2026, "a1")], &[]).await {
            Ok(o) => {
                ok = Some(o);
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ok, Some(vec![Outcome::Inserted]));
}

/// The location reads' plans on 400,000 positions over four months: index scans only, never a
/// sequential scan of positions; a track of one hour reads one partition's index.
#[tokio::test]
async fn location_reads_use_the_indexes_and_only_the_partitions_of_the_range() {
    let db = TestDb::postgres();
    let s = seeded(&db).await;
    // Four months of 400 devices, one position an hour... written in SQL to keep the test quick.
    for m in 0..4 {
        let start = Month::of(NOV_2025);
        let month = (0..m).fold(start, |x, _| x.next());
        s.write_batch(&[at("bulk-0", 1_000_000 + m, month.start, "seed")], &[])
            .await
            .unwrap();
    }
    let pool = &s.postgres_for_tests().pool;
    sqlx::query(
        "INSERT INTO positions (device_id, seq, ts, lat, lon, bat, record, kid, received_ms) \
         SELECT 'bulk-' || (i % 400), i / 400, $1 + (i / 400) * 3600000, 50.0 + (i % 7), 10.0 + (i % 11), \
                80.0, 'r' || i, 'k1', 0 FROM generate_series(0::bigint, 399999) AS i",
    )
    .bind(Month::of(NOV_2025).start)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO position_spans (device_id, hour, min_seq, max_seq, newest_ts, newest_seq) \
         SELECT device_id, ts / 3600000, MIN(seq), MAX(seq), MAX(ts), MAX(seq) FROM positions \
         WHERE device_id LIKE 'bulk-%' GROUP BY 1, 2 ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO latest_positions (device_id, seq, ts, lat, lon, received_ms) \
         SELECT device_id, MAX(seq), MAX(ts), 50.0, 10.0, 0 FROM positions GROUP BY device_id \
         ON CONFLICT (device_id) DO NOTHING",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();

    async fn explain(pool: &sqlx::PgPool, mut b: sqlx::QueryBuilder<'_, sqlx::Postgres>) -> String {
        let rows = b.build().fetch_all(pool).await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }
    let scoped = crate::Visibility {
        everything: false,
        orgs: vec!["globex".into()],
        order_groups: vec![("acme".into(), "north".into())],
    };
    // Run, so that partitions pruned at run time (the newest record's ts comes from its span)
    // show as never executed. The bulk's two partitions are never scanned whole (the seeded
    // devices' few rows in 1970 may be: a scan of five rows is the planner's right choice).
    let ex = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ";
    // Reads hide what is past each organization's retention.
    let kept = super::operators::Kept {
        retention: crate::Retention {
            positions_days: 36_500,
            ..Default::default()
        },
        now: crate::now_ms(),
    };
    for vis in [&scoped, &crate::Visibility::everything()] {
        let one = explain(pool, super::operators::devices_query(ex, vis, Some("bulk-7"), kept)).await;
        let all = explain(pool, super::operators::devices_query(ex, vis, None, kept)).await;
        let latest = explain(pool, super::operators::latest_query(ex, vis, None, kept)).await;
        for (name, p) in [("device", &one), ("devices", &all), ("latest", &latest)] {
            let scans: Vec<&str> = p
                .lines()
                .filter(|l| l.contains("Seq Scan on positions_p2025") && !l.contains("never executed"))
                .collect();
            assert!(scans.is_empty(), "{name} plan scans positions:\n{p}");
        }
        // A device's newest record comes from its newest span: the device list reads no
        // positions at all.
        for p in [&one, &all] {
            assert!(!p.contains(" on positions_p"), "the device list reads positions:\n{p}");
        }
        assert!(one.contains("position_spans"), "{one}");
    }

    // One hour's track: the spans by primary key, then one partition's (device_id, seq) index.
    let hour = Month::of(NOV_2025).next().start / 3_600_000 + 5;
    let spans = sqlx::query(&format!("EXPLAIN {}", super::operators::SPANS_SQL))
        .bind("bulk-7")
        .bind(hour)
        .bind(hour)
        .fetch_all(pool)
        .await
        .unwrap();
    let spans: Vec<String> = spans.iter().map(|r| r.get(0)).collect();
    let (min_seq, max_seq): (i64, i64) =
        sqlx::query_as("SELECT min_seq, max_seq FROM position_spans WHERE device_id = 'bulk-7' AND hour = $1")
            .bind(hour)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(spans.iter().any(|l| l.contains("position_spans_pkey")), "{spans:?}");
    // As the server plans it for the bound values (a custom plan): pruned to one partition.
    let track: Vec<String> = sqlx::query(&format!("EXPLAIN {}", *super::operators::TRACK_SQL))
        .bind("bulk-7")
        .bind(min_seq)
        .bind(max_seq)
        .bind(hour * 3_600_000)
        .bind((hour + 1) * 3_600_000)
        .bind(i64::MIN)
        .bind(i64::MIN)
        .bind(100_i64)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = track.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    let mut partitions: Vec<&str> = plan
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("positions_p"))
        .map(|w| w.trim_end_matches("_device_seq"))
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    assert_eq!(partitions, ["positions_p20251201"], "{plan}");
    assert!(
        plan.contains("positions_p20251201_device_seq"),
        "through its index:\n{plan}"
    );
}

/// `s` and `t` answer the same: `device`'s track, the audit log and the recent rejects.
async fn same_reads(s: &Store, t: &Store, device: &str) {
    assert_eq!(
        s.track(device, 0, i64::MAX, None, 5000).await.unwrap(),
        t.track(device, 0, i64::MAX, None, 5000).await.unwrap()
    );
    assert_eq!(
        s.audit_log(None, None, 1000).await.unwrap(),
        t.audit_log(None, None, 1000).await.unwrap()
    );
    assert_eq!(
        s.recent_rejects(100).await.unwrap(),
        t.recent_rejects(100).await.unwrap()
    );
}

/// A SQLite database with keys, operators, audit rows, rejects and positions over several
/// months copies into PostgreSQL: every table's count agrees, the same reads answer the same,
/// the keys open with the same master key, and a copy that stopped part way resumes.
#[tokio::test]
async fn a_sqlite_database_copies_into_postgres_and_reads_the_same() {
    use crate::access::{MemberKeys, Visibility};
    let from_db = TestDb::sqlite();
    let s = seeded(&from_db).await;
    s.add_supplier("ACME").await.unwrap();
    s.add_device("TRK-9", Some("ACME")).await.unwrap();
    s.add_key("TRK-9", "k1", &trackgate_proto::Secret::from_bytes([7; 32]))
        .await
        .unwrap();
    s.revoke_key("TRK-9", "k1").await.unwrap();
    s.add_key("TRK-9", "k2", &trackgate_proto::Secret::from_bytes([8; 32]))
        .await
        .unwrap();
    let rows: Vec<Row> = (0..2500)
        .map(|i| at("TRK-9", i, NOV_2025 + i * 3_600_000, &format!("r{i}")))
        .collect();
    s.write_batch(&rows, &[]).await.unwrap();
    s.write_batch(&[], &rejects(30, "TRK-9")).await.unwrap();

    let to_db = TestDb::postgres();
    let t = to_db.open().await;
    assert!(s.holds_data().await.unwrap());
    assert!(!t.holds_data().await.unwrap());
    let mut pages = 0;
    let counts = s.copy_into(&t, 1000, |_, _, _| pages += 1).await.unwrap();
    assert!(pages >= 14, "{pages} pages");
    for c in &counts {
        assert_eq!(c.source, c.target, "{c:?}");
    }
    let count = |name: &str| counts.iter().find(|c| c.table == name).unwrap().source;
    assert_eq!(count("positions"), 2505);
    assert_eq!(count("devices"), 5);
    assert_eq!(count("suppliers"), 1);
    assert_eq!(count("rejects"), 30);
    assert!(count("audit_log") >= 15, "{counts:?}");
    assert!(t.holds_data().await.unwrap());

    // The same answers from both.
    let p = t.principal("TRK-9").await.unwrap().unwrap();
    assert_eq!(p.keys.len(), 1);
    assert_eq!(p.keys[0].secret, trackgate_proto::Secret::from_bytes([8; 32]));
    assert_eq!(s.list(None).await.unwrap(), t.list(None).await.unwrap());
    let keys = MemberKeys {
        email: Some("boss@acme.example".into()),
        ..Default::default()
    };
    for store in [&s, &t] {
        assert_eq!(store.memberships(&keys).await.unwrap().len(), 2);
    }
    let vis = Visibility::everything();
    assert_eq!(
        s.devices(&vis, None).await.unwrap(),
        t.devices(&vis, None).await.unwrap()
    );
    assert_eq!(s.latest(&vis, None).await.unwrap(), t.latest(&vis, None).await.unwrap());
    same_reads(&s, &t, "TRK-9").await;
    // As if the copy had stopped part way: the target lacks a tail of some tables.
    t.execute_for_tests("DELETE FROM positions WHERE (device_id, seq) >= ('TRK-9', 1700)")
        .await
        .unwrap();
    t.execute_for_tests("DELETE FROM membership_rules WHERE kind = 'tenant'")
        .await
        .unwrap();
    t.execute_for_tests("DELETE FROM rejects WHERE id > 12").await.unwrap();
    let again = s.copy_into(&t, 1000, |_, _, _| {}).await.unwrap();
    for c in &again {
        assert_eq!(c.source, c.target, "after resuming: {c:?}");
    }
    assert_eq!(
        s.track("TRK-9", 0, i64::MAX, None, 5000).await.unwrap(),
        t.track("TRK-9", 0, i64::MAX, None, 5000).await.unwrap()
    );
    // New rows get new ids after the copied ones.
    let e = crate::AuditEntry {
        actor: "cli:test".into(),
        action: "after.copy".into(),
        ..Default::default()
    };
    t.audit(&e).await.unwrap();
    let newest = t.audit_log(None, None, 1).await.unwrap();
    assert_eq!(newest[0].action, "after.copy");
    assert_eq!(newest[0].id, s.audit_log(None, None, 1).await.unwrap()[0].id + 1);
}

/// Pruning rejects runs on one node at a time: while another holds the job's lock, a node skips.
#[tokio::test]
async fn a_job_another_node_is_running_is_skipped() {
    let db = TestDb::postgres();
    let s = db.open().await;
    s.write_batch(&[], &rejects(10, "A")).await.unwrap();
    let pool = &s.postgres_for_tests().pool;
    let mut other = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, 2)")
        .bind(super::JOB_LOCKS)
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(
        s.prune_rejects(3).await.unwrap(),
        0,
        "skipped while another node prunes"
    );
    assert_eq!(s.recent_rejects(100).await.unwrap().len(), 10);
    sqlx::query("SELECT pg_advisory_unlock($1, 2)")
        .bind(super::JOB_LOCKS)
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(s.prune_rejects(3).await.unwrap(), 7);
}

/// The purge holds its lock for the whole run, across its many transactions: while another node
/// holds it, a purge is skipped; a purge that ran releases it (the next one runs).
#[tokio::test]
async fn a_purge_runs_on_one_node_at_a_time() {
    let db = TestDb::postgres();
    let s = db.open().await;
    let old = crate::now_ms() - 40_000 * crate::retention::DAY_MS;
    s.write_batch(&[], &rejects(3, "A")).await.unwrap();
    s.execute_for_tests(&format!("UPDATE rejects SET received_ms = {old}"))
        .await
        .unwrap();
    let pool = &s.postgres_for_tests().pool;
    let mut other = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, 3)")
        .bind(super::JOB_LOCKS)
        .execute(&mut *other)
        .await
        .unwrap();
    assert!(
        s.purge(crate::now_ms()).await.unwrap().is_none(),
        "skipped while another node purges"
    );
    assert_eq!(s.recent_rejects(100).await.unwrap().len(), 3);
    sqlx::query("SELECT pg_advisory_unlock($1, 3)")
        .bind(super::JOB_LOCKS)
        .execute(&mut *other)
        .await
        .unwrap();
    let report = s.purge(crate::now_ms()).await.unwrap().expect("the lock is free");
    assert_eq!(report.rejects, 3);
    // Released after the run: a purge right after runs too.
    assert!(s.purge(crate::now_ms()).await.unwrap().is_some());
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 3")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(held, 0);
}

/// Without an sslmode in the URL, the server's certificate is verified against the configured
/// CA (and its host name): a server whose certificate another CA signed is refused.
#[tokio::test]
async fn the_server_is_verified_against_the_configured_ca() {
    let db = TestDb::postgres();
    let pg = db.pg.as_ref().unwrap();
    let bare = format!(
        "postgres://{}:{}@localhost:{}/t",
        trackgate_e2e::postgres::USER,
        trackgate_e2e::postgres::PASSWORD,
        pg.port
    );
    let mut opts = db.options();
    opts.url = bare;
    opts.postgres.ca_file = Some(pg.ca.clone());
    Store::open(&opts, TestDb::master()).await.unwrap().close().await;

    let other = trackgate_e2e::pki::server_cert(db.dir.path(), "other", &["localhost"]);
    opts.postgres.ca_file = Some(other.ca);
    let e = Store::open(&opts, TestDb::master()).await.unwrap_err();
    assert!(e.is_retryable(), "a TLS failure: {e}");
    assert!(!e.to_string().contains(trackgate_e2e::postgres::PASSWORD), "{e}");
    // By IP address, the name in the certificate does not match.
    opts.url = opts.url.replace("@localhost:", "@127.0.0.1:");
    opts.postgres.ca_file = Some(pg.ca.clone());
    assert!(Store::open(&opts, TestDb::master()).await.is_err());
}

/// And back: PostgreSQL copies into SQLite by the same code, with the same answers.
#[tokio::test]
async fn a_postgres_database_copies_into_sqlite_and_reads_the_same() {
    use crate::access::Visibility;
    let from_db = TestDb::postgres();
    let s = seeded(&from_db).await;
    let rows: Vec<Row> = (0..1500)
        .map(|i| at("a-n", 100 + i, NOV_2025 + i * 3_600_000, &format!("r{i}")))
        .collect();
    s.write_batch(&rows, &rejects(12, "a-n")).await.unwrap();
    let to_db = TestDb::sqlite();
    let t = to_db.open().await;
    let counts = s.copy_into(&t, 400, |_, _, _| {}).await.unwrap();
    for c in &counts {
        assert_eq!(c.source, c.target, "{c:?}");
    }
    assert_eq!(counts.iter().find(|c| c.table == "positions").unwrap().target, 1505);
    let vis = Visibility::everything();
    assert_eq!(
        s.devices(&vis, None).await.unwrap(),
        t.devices(&vis, None).await.unwrap()
    );
    same_reads(&s, &t, "a-n").await;
}
