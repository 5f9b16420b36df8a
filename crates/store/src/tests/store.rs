//! Store behaviour, the same on both backends.

use super::{TestDb, on_both_backends};
use crate::*;
use trackgate_proto::Measurement;

/// `n` rejected records of device `dev`, as supplier key ACME/k1 relayed them.
pub(crate) fn rejects(n: i64, dev: &str) -> Vec<RejectRow> {
    (0..n)
        .map(|i| RejectRow {
            received_ms: 1,
            transport: "https",
            key_name: Some("ACME/k1".into()),
            device_id: Some(dev.into()),
            index: i,
            reason: "bad_signature",
            envelope: "{}".into(),
        })
        .collect()
}

pub(crate) fn row(dev: &str, seq: i64, ts: i64, text: &str) -> Row {
    Row {
        device_id: dev.into(),
        seq,
        ts,
        measurement: Measurement {
            lat: Some(60.0 + seq as f64 / 100.0),
            lon: Some(24.0),
            bat: Some(80.0),
            ..Measurement::default()
        },
        ext: None,
        record: text.into(),
        kid: "k1".into(),
        received_ms: 1,
    }
}

fn secret(b: u8) -> Secret {
    Secret::from_bytes([b; 32])
}

async fn ids_share_one_namespace(db: TestDb) {
    let s = db.open().await;
    s.add_supplier("ACME").await.unwrap();
    s.add_device("TRK-1", Some("ACME")).await.unwrap();
    assert!(matches!(s.add_device("ACME", None).await, Err(StoreError::IdTaken(id)) if id == "ACME"));
    assert!(matches!(s.add_supplier("TRK-1").await, Err(StoreError::IdTaken(_))));
    assert!(matches!(
        s.add_device("TRK-2", Some("NOPE")).await,
        Err(StoreError::NotFound { kind: "supplier", .. })
    ));
    assert!(matches!(
        s.add_device("TRK-2", Some("TRK-1")).await,
        Err(StoreError::NotFound { kind: "supplier", .. })
    ));
    let e = s.add_device("bad id", None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid device id \"bad id\": must match [A-Za-z0-9._-]{1,64}"
    );
    let listed = s.list(Some(Kind::Device)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].supplier.as_deref(), Some("ACME"));
}

async fn keys_are_sealed_limited_to_two_and_revocable(mut db: TestDb) {
    let s = db.open().await;
    s.add_device("TRK-1", None).await.unwrap();
    s.add_key("TRK-1", "k1", &secret(1)).await.unwrap();
    s.add_key("TRK-1", "k2", &secret(2)).await.unwrap();
    assert!(matches!(
        s.add_key("TRK-1", "k3", &secret(3)).await,
        Err(StoreError::TooManyKeys(_))
    ));
    let p = s.principal("TRK-1").await.unwrap().unwrap();
    assert_eq!(p.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!(p.keys[1].secret, secret(2));
    s.revoke_key("TRK-1", "k1").await.unwrap();
    assert!(matches!(
        s.revoke_key("TRK-1", "k1").await,
        Err(StoreError::NoSuchKey { .. })
    ));
    // A revoked kid is never reused.
    assert!(matches!(
        s.add_key("TRK-1", "k1", &secret(4)).await,
        Err(StoreError::KeyExists { .. })
    ));
    s.add_key("TRK-1", "k3", &secret(3)).await.unwrap();
    let p = s.principal("TRK-1").await.unwrap().unwrap();
    assert_eq!(p.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2", "k3"]);
    // The secret bytes are nowhere in the database's files in the clear.
    s.close().await;
    let raw = db.files_on_disk();
    assert!(raw.len() > 10_000, "the database's files were read");
    assert!(!raw.windows(32).any(|w| w == [2u8; 32]), "secret found in the clear");
}

async fn a_wrong_master_key_is_refused_at_open(db: TestDb) {
    db.open().await.close().await;
    let other = MasterKey::from_hex(&"43".repeat(32)).unwrap();
    assert!(matches!(db.open_with(other).await, Err(StoreError::WrongMasterKey)));
    db.open().await;
}

async fn batches_insert_once_and_classify_resends(db: TestDb) {
    let s = db.open().await;
    let first = s
        .write_batch(&[row("A", 1, 100, "a1"), row("A", 2, 200, "a2")], &[])
        .await
        .unwrap();
    assert_eq!(first, [Outcome::Inserted, Outcome::Inserted]);
    let again = s
        .write_batch(
            &[
                row("A", 1, 100, "a1"),
                row("A", 2, 200, "changed"),
                row("B", 1, 50, "b1"),
                row("B", 1, 50, "b1"),
                row("B", 1, 50, "b1x"),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        [
            Outcome::Duplicate,
            Outcome::Conflict,
            Outcome::Inserted,
            Outcome::Duplicate,
            Outcome::Conflict
        ]
    );
    assert_eq!(s.count_positions().await.unwrap(), 3);
    assert_eq!(
        s.positions("A", 10).await.unwrap()[1].record,
        "a2",
        "the stored row is kept on conflict"
    );
}

async fn latest_position_only_moves_forward_in_ts(db: TestDb) {
    let s = db.open().await;
    s.write_batch(&[row("A", 5, 500, "a5"), row("A", 6, 400, "a6")], &[])
        .await
        .unwrap();
    assert_eq!(s.latest_position("A").await.unwrap().unwrap().seq, 5);
    // A late backlog with older ts does not move the marker back.
    s.write_batch(&[row("A", 1, 100, "a1"), row("A", 2, 200, "a2")], &[])
        .await
        .unwrap();
    assert_eq!(s.latest_position("A").await.unwrap().unwrap().seq, 5);
    // A record without a position does not move it either.
    let mut no_fix = row("A", 7, 900, "a7");
    (no_fix.measurement.lat, no_fix.measurement.lon) = (None, None);
    s.write_batch(&[no_fix], &[]).await.unwrap();
    assert_eq!(s.latest_position("A").await.unwrap().unwrap().seq, 5);
    s.write_batch(&[row("A", 8, 800, "a8")], &[]).await.unwrap();
    assert_eq!(s.latest_position("A").await.unwrap().unwrap().ts, 800);
}

/// A batch past one statement's bind parameters, for each table it writes: 5000 positions, and
/// the latest positions and spans of 4500 devices.
async fn large_batches_span_statements(db: TestDb) {
    let s = db.open().await;
    let rows: Vec<Row> = (0..5000)
        .map(|i| row(&format!("D{}", i % 4500), i, i, &format!("r{i}")))
        .collect();
    let out = s.write_batch(&rows, &[]).await.unwrap();
    assert!(out.iter().all(|o| *o == Outcome::Inserted));
    assert_eq!(s.count_positions().await.unwrap(), 5000);
}

async fn rejects_are_kept_and_bounded(db: TestDb) {
    let s = db.open().await;
    s.write_batch(&[], &rejects(10, "A")).await.unwrap();
    assert_eq!(s.prune_rejects(4).await.unwrap(), 6);
    let kept = s.recent_rejects(100).await.unwrap();
    assert_eq!(kept.len(), 4);
    assert_eq!(
        kept[0],
        (Some("A".into()), "bad_signature".into(), Some("ACME/k1".into()))
    );
}

async fn changes_are_logged_for_cache_invalidation(db: TestDb) {
    let s = db.open().await;
    let start = s.change_cursor().await.unwrap();
    s.add_device("TRK-1", None).await.unwrap();
    s.add_key("TRK-1", "k1", &secret(1)).await.unwrap();
    s.set_enabled("TRK-1", false).await.unwrap();
    let (ids, cursor) = s.changes_since(start).await.unwrap();
    assert_eq!(ids, ["TRK-1", "TRK-1", "TRK-1"]);
    assert_eq!(s.changes_since(cursor).await.unwrap().0.len(), 0);
    assert!(!s.principal("TRK-1").await.unwrap().unwrap().enabled);
}

#[test]
fn urls_are_redacted() {
    assert_eq!(redact_url("postgres://tg:hunter2@db/x"), "postgres://tg:***@db/x");
    assert_eq!(redact_url("sqlite://data/t.db"), "sqlite://data/t.db");
}

async fn devices_import_in_bulk_all_or_nothing(db: TestDb) {
    let s = db.open().await;
    s.add_supplier("ACME").await.unwrap();
    s.add_device("TAKEN", None).await.unwrap();
    let fleet = |ids: &[&str]| -> Vec<(String, String, Secret)> {
        ids.iter()
            .map(|id| (id.to_string(), "k1".to_owned(), Secret::from_bytes([9; 32])))
            .collect()
    };
    s.import_devices(&fleet(&["B-1", "B-2", "B-3"]), Some("ACME"))
        .await
        .unwrap();
    let p = s.principal("B-2").await.unwrap().unwrap();
    assert_eq!(p.supplier.as_deref(), Some("ACME"));
    assert_eq!(p.keys.len(), 1, "its key is usable");
    // One taken id fails the whole call, naming it; nothing of it is kept.
    let e = s.import_devices(&fleet(&["C-1", "TAKEN"]), None).await.unwrap_err();
    assert!(matches!(&e, StoreError::IdTaken(id) if id == "TAKEN"), "{e}");
    assert!(s.principal("C-1").await.unwrap().is_none());
    assert!(matches!(
        s.import_devices(&fleet(&["C-2"]), Some("NOPE")).await,
        Err(StoreError::NotFound { kind: "supplier", .. })
    ));
    assert!(s.import_devices(&fleet(&["bad id"]), None).await.is_err());
}

/// Resends spread over several statements: a repeat of a row inserted by an earlier statement of
/// the same batch, an old row among new ones, and a conflict, each classified where it falls.
async fn resends_are_classified_across_statements(db: TestDb) {
    let s = db.open().await;
    s.write_batch(&[row("OLD", 1, 10, "old1")], &[]).await.unwrap();
    // More rows than one statement takes (2184), so the batch spans two.
    let mut rows: Vec<Row> = (0..3000).map(|i| row("N", i, i, &format!("n{i}"))).collect();
    rows.push(row("N", 5, 5, "n5")); // inserted by the first statement: a duplicate
    rows.push(row("N", 6, 6, "other")); // a conflict with a row of the first statement
    rows.push(row("OLD", 1, 10, "old1")); // stored before this batch: a duplicate
    rows.push(row("N", 3000, 3000, "n3000")); // new, in the statement with the resends
    rows.push(row("N", 3000, 3000, "n3000")); // and its repeat
    let out = s.write_batch(&rows, &[]).await.unwrap();
    assert!(out[..3000].iter().all(|o| *o == Outcome::Inserted));
    assert_eq!(
        out[3000..],
        [
            Outcome::Duplicate,
            Outcome::Conflict,
            Outcome::Duplicate,
            Outcome::Inserted,
            Outcome::Duplicate
        ]
    );
    assert_eq!(s.count_positions().await.unwrap(), 3002);
}

on_both_backends!(
    ids_share_one_namespace,
    keys_are_sealed_limited_to_two_and_revocable,
    a_wrong_master_key_is_refused_at_open,
    batches_insert_once_and_classify_resends,
    latest_position_only_moves_forward_in_ts,
    large_batches_span_statements,
    rejects_are_kept_and_bounded,
    changes_are_logged_for_cache_invalidation,
    devices_import_in_bulk_all_or_nothing,
    resends_are_classified_across_statements,
);
