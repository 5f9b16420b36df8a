//! Retention, the same on both backends: reads hide what is past each organization's retention,
//! the purge removes exactly that (whole partitions first on PostgreSQL), latest positions and
//! rejects follow, each run is audited, and a writer running beside the purge loses nothing.

use super::{TestDb, audit, on_both_backends};
use crate::access::*;
use crate::retention::{DAY_MS, Retention, cutoff};
use crate::{Outcome, RejectRow, Row, Store};
use std::collections::BTreeMap;

fn row(dev: &str, seq: i64, ts: i64) -> Row {
    super::store::row(dev, seq, ts, &format!("{dev}/{seq}"))
}

fn reject(received_ms: i64) -> RejectRow {
    RejectRow {
        received_ms,
        transport: "https",
        key_name: None,
        device_id: None,
        index: 0,
        reason: "bad_signature",
        envelope: "{}".into(),
    }
}

/// The service keeps positions 400 days and lets an organization choose from 7; rejects 10 days;
/// the purge commits every 100 rows or so.
const RETENTION: Retention = Retention {
    positions_days: 400,
    min_positions_days: 7,
    rejects_days: 10,
    batch_rows: 100,
    audit_personal_days: 30,
    audit_days: 730,
};

async fn open(db: &TestDb) -> Store {
    let mut opts = db.options();
    opts.retention = RETENTION;
    Store::open(&opts, TestDb::master()).await.unwrap()
}

/// Ages in days (fractions allowed) of each device's records, oldest first.
const AGES: &[f64] = &[500.0, 450.0, 401.0, 399.0, 100.0, 35.0, 30.01, 29.99, 1.0];

async fn seeded(db: &TestDb, now: i64) -> (Store, BTreeMap<String, Vec<(i64, i64)>>) {
    let s = open(db).await;
    let a = audit("seed");
    for org in ["acme", "globex"] {
        s.add_organization(org, org, &a).await.unwrap();
    }
    s.set_positions_retention("acme", Some(30), &a).await.unwrap();
    let mut rows = Vec::new();
    // a-1, g-1, u-1: records of every age; a-1 also 300 in one expired hour (batches of the
    // purge); a-2 only 40 days old, g-2 only 450: their latest positions expire too.
    for (dev, org) in [
        ("a-1", Some("acme")),
        ("a-2", Some("acme")),
        ("g-1", Some("globex")),
        ("g-2", Some("globex")),
        ("u-1", None),
    ] {
        s.add_device(dev, None).await.unwrap();
        if let Some(org) = org {
            s.assign_device(dev, org, &a).await.unwrap();
        }
        let ages: Vec<f64> = match dev {
            "a-2" => vec![40.0],
            "g-2" => vec![450.0],
            _ => AGES.to_vec(),
        };
        for age in ages {
            let seq = rows.iter().filter(|r: &&Row| r.device_id == dev).count() as i64;
            rows.push(row(dev, seq, now - (age * DAY_MS as f64) as i64));
        }
    }
    let base = now - 35 * DAY_MS;
    for i in 0..300 {
        rows.push(row("a-1", 100 + i, base + i * 5_000));
    }
    // One batch per device, as the write path groups them anyway.
    let outcomes = s
        .write_batch(&rows, &[reject(now - 20 * DAY_MS), reject(now - 5 * DAY_MS)])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Inserted));
    let mut stored: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &rows {
        stored.entry(r.device_id.clone()).or_default().push((r.seq, r.ts));
    }
    (s, stored)
}

/// The cutoff of each device at `now`.
fn cutoffs(now: i64) -> BTreeMap<&'static str, i64> {
    let (acme, service) = (cutoff(now, 30), cutoff(now, 400));
    [
        ("a-1", acme),
        ("a-2", acme),
        ("g-1", service),
        ("g-2", service),
        ("u-1", service),
    ]
    .into()
}

async fn seqs_stored(s: &Store, dev: &str) -> Vec<i64> {
    let mut seqs: Vec<i64> = s.positions(dev, 100_000).await.unwrap().iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    seqs
}

async fn reads_hide_what_is_past_each_organizations_retention(db: TestDb) {
    let now = crate::now_ms();
    let (s, stored) = seeded(&db, now).await;
    let cut = cutoffs(now);
    for dev in ["a-1", "g-1"] {
        let page = s.track(dev, 0, i64::MAX, None, 10_000).await.unwrap();
        let want: Vec<i64> = stored[dev]
            .iter()
            .filter(|(_, ts)| *ts >= cut[dev])
            .map(|(seq, _)| *seq)
            .collect();
        let mut got: Vec<i64> = page.points.iter().map(|p| p.seq()).collect();
        got.sort_unstable();
        assert_eq!(got, want, "{dev}");
        // Nothing was deleted yet: the read filtered.
        assert_eq!(seqs_stored(&s, dev).await.len(), stored[dev].len());
    }
    let everything = Visibility::everything();
    let latest: Vec<String> = s
        .latest(&everything, None)
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _, _)| d)
        .collect();
    assert_eq!(
        latest,
        ["a-1", "g-1"],
        "a-2's and g-2's newest records are past retention"
    );
    let devices = s.devices(&everything, None).await.unwrap();
    let a2 = devices.iter().find(|d| d.id == "a-2").unwrap();
    assert!(a2.position.is_none() && a2.last_seen_ms.is_none(), "{a2:?}");
}

async fn the_purge_removes_exactly_what_is_past_retention_and_is_audited(db: TestDb) {
    let now = crate::now_ms();
    let (s, stored) = seeded(&db, now).await;
    let cut = cutoffs(now);
    let report = s.purge(now).await.unwrap().expect("no other node purges");

    let mut removed_by_org: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for (dev, rows) in &stored {
        let want: Vec<i64> = rows
            .iter()
            .filter(|(_, ts)| *ts >= cut[dev.as_str()])
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs_stored(&s, dev).await, want, "{dev}");
        let org = match &dev[..1] {
            "a" => Some("acme".to_owned()),
            "g" => Some("globex".to_owned()),
            _ => None,
        };
        *removed_by_org.entry(org).or_default() += (rows.len() - want.len()) as u64;
    }
    let reported: BTreeMap<Option<String>, u64> = report
        .organizations
        .iter()
        .map(|o| (o.org_id.clone(), o.positions))
        .collect();
    assert_eq!(reported, removed_by_org);
    let acme = report
        .organizations
        .iter()
        .find(|o| o.org_id.as_deref() == Some("acme"))
        .unwrap();
    assert_eq!((acme.retention_days, acme.cutoff_ms, acme.latest), (30, cut["a-1"], 1));
    let globex = report
        .organizations
        .iter()
        .find(|o| o.org_id.as_deref() == Some("globex"))
        .unwrap();
    assert_eq!((globex.retention_days, globex.latest), (400, 1));
    // Whole months past 400 days went as partitions on PostgreSQL, with the rows they held.
    if db.pg.is_some() {
        assert!(!report.partitions.is_empty(), "{report:?}");
        assert!(report.partitions.iter().all(|p| p.name.starts_with("positions_p")));
        assert!(report.partitions.iter().map(|p| p.rows).sum::<u64>() >= 5, "{report:?}");
    } else {
        assert!(report.partitions.is_empty());
    }
    assert_eq!(report.rejects, 1);
    assert_eq!(s.recent_rejects(10).await.unwrap().len(), 1);
    assert!(s.latest_position("a-2").await.unwrap().is_none());
    assert!(s.latest_position("g-2").await.unwrap().is_none());
    assert!(s.latest_position("a-1").await.unwrap().is_some());

    // Audited: per organization that lost data, and the run.
    let acme_log = s.audit_log(Some("acme"), None, 10).await.unwrap();
    let entry = acme_log
        .iter()
        .find(|e| e.action == "retention.purge")
        .expect("acme's purge audited");
    let detail: serde_json::Value = serde_json::from_str(entry.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["positions"], removed_by_org[&Some("acme".to_owned())]);
    let all = s.audit_log(None, None, 100).await.unwrap();
    assert_eq!(all.iter().filter(|e| e.action == "retention.purge").count(), 3);

    // Reads agree with the rows, and a second run finds nothing more.
    let page = s.track("a-1", 0, i64::MAX, None, 10_000).await.unwrap();
    assert_eq!(page.points.len(), seqs_stored(&s, "a-1").await.len());
    let again = s.purge(now).await.unwrap().unwrap();
    assert_eq!((again.positions(), again.rejects), (0, 0));
    assert!(again.partitions.is_empty());
}

async fn a_writer_beside_the_purge_loses_nothing(db: TestDb) {
    let now = crate::now_ms();
    let (s, _) = seeded(&db, now).await;
    // Fresh records of the devices being purged, in batches, while the purge runs.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut written = 0;
            for b in 0..40_i64 {
                let rows: Vec<Row> = (0..50)
                    .map(|i| row("a-1", 10_000 + b * 50 + i, now - 1000 + b * 50 + i))
                    .collect();
                let out = s.write_batch(&rows, &[]).await.expect("a write beside the purge");
                written += out.iter().filter(|o| **o == Outcome::Inserted).count();
            }
            written
        })
    };
    let report = s.purge(now).await.unwrap().unwrap();
    assert!(report.positions() > 300, "{report:?}");
    assert_eq!(writer.await.unwrap(), 2000);
    let fresh = seqs_stored(&s, "a-1")
        .await
        .into_iter()
        .filter(|&q| q >= 10_000)
        .count();
    assert_eq!(fresh, 2000);
}

async fn an_organization_chooses_a_retention_within_the_operators_bounds(db: TestDb) {
    let s = open(&db).await;
    let a = audit("retention.set");
    s.add_organization("acme", "Acme", &a).await.unwrap();
    for bad in [0, 6, 401] {
        let err = s.set_positions_retention("acme", Some(bad), &a).await.unwrap_err();
        assert!(
            matches!(
                err,
                crate::StoreError::OutOfRange {
                    what: "positions_retention_days",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("from 7 to 400"), "{err}");
    }
    let before = s.audit_log(None, None, 100).await.unwrap().len();
    s.set_positions_retention("acme", Some(7), &a).await.unwrap();
    let org = &s.organizations(None).await.unwrap()[0];
    assert_eq!((org.positions_retention_days, org.positions_kept_days), (Some(7), 7));
    s.set_positions_retention("acme", None, &a).await.unwrap();
    let org = &s.organizations(None).await.unwrap()[0];
    assert_eq!((org.positions_retention_days, org.positions_kept_days), (None, 400));
    assert_eq!(s.audit_log(None, None, 100).await.unwrap().len(), before + 2);
    let err = s.set_positions_retention("nope", Some(30), &a).await.unwrap_err();
    assert!(matches!(err, crate::StoreError::NotFound { .. }), "{err}");
}

on_both_backends!(
    reads_hide_what_is_past_each_organizations_retention,
    the_purge_removes_exactly_what_is_past_retention_and_is_audited,
    a_writer_beside_the_purge_loses_nothing,
    an_organization_chooses_a_retention_within_the_operators_bounds,
);
