//! Deleting an organization, the same on both backends: nothing of it is left but its audit
//! entries, another organization is untouched, devices are unassigned or deleted with their keys,
//! and a deletion cut off halfway is finished by asking again.

use super::{TestDb, audit, on_both_backends};
use crate::access::*;
use crate::{Row, Store};
use trackgate_proto::Secret;

fn row(dev: &str, seq: i64) -> Row {
    let ts = crate::now_ms() - 3_600_000 * 24 + seq * 60_000;
    super::store::row(dev, seq, ts, &format!("{dev}/{seq}"))
}

/// acme (two devices, `n` positions each, groups and rules) and globex (one device, 600).
async fn seeded_with(db: &TestDb, n: i64, batch_rows: u32) -> Store {
    let mut opts = db.options();
    opts.retention.batch_rows = batch_rows;
    let s = Store::open(&opts, TestDb::master()).await.unwrap();
    let a = audit("seed");
    for org in ["acme", "globex"] {
        s.add_organization(org, org, &a).await.unwrap();
        s.add_order_group(org, "north", "North", &a).await.unwrap();
        let depot = r#"{"circle": {"center": [10.0, 53.5], "radius_m": 300}}"#;
        s.put_geofence(org, "depot", "Depot", serde_json::from_str(depot).unwrap(), &a)
            .await
            .unwrap();
        s.add_user_group(
            &UserGroup {
                org_id: org.into(),
                id: "admins".into(),
                name: "Admins".into(),
                role: Role::Admin,
                scope: Scope::OrderGroups(vec!["north".into()]),
                rules: vec![Rule {
                    kind: RuleKind::Domain,
                    value: format!("{org}.example"),
                }],
            },
            &a,
        )
        .await
        .unwrap();
    }
    for (dev, org) in [("a-1", "acme"), ("a-2", "acme"), ("g-1", "globex")] {
        s.add_device(dev, None).await.unwrap();
        s.add_key(dev, "k1", &Secret::from_bytes([7; 32])).await.unwrap();
        s.assign_device(dev, org, &a).await.unwrap();
        let n = if org == "acme" { n } else { 600 };
        let rows: Vec<Row> = (0..n).map(|q| row(dev, q)).collect();
        s.write_batch(&rows, &[]).await.unwrap();
    }
    s
}

async fn seeded(db: &TestDb) -> Store {
    seeded_with(db, 600, 100).await
}

async fn stored(s: &Store, dev: &str) -> usize {
    s.positions(dev, 100_000).await.unwrap().len()
}

async fn globex_is_untouched(s: &Store) {
    assert_eq!(stored(s, "g-1").await, 600);
    assert!(s.latest_position("g-1").await.unwrap().is_some());
    assert_eq!(s.user_groups("globex").await.unwrap().len(), 1);
    assert_eq!(s.order_groups("globex").await.unwrap().len(), 1);
    assert_eq!(s.geofences(None).await.unwrap().len(), 1);
    assert_eq!(s.geofences(Some(&["globex".into()])).await.unwrap().len(), 1);
    assert_eq!(
        s.devices(&Visibility::everything(), Some("g-1")).await.unwrap().len(),
        1
    );
}

async fn an_organization_is_deleted_with_everything_it_owns_and_only_that(db: TestDb) {
    let s = seeded(&db).await;
    let report = s.delete_org("acme", false, &audit("org.delete")).await.unwrap();
    assert_eq!(
        (report.devices, report.positions, report.latest_positions),
        (2, 1200, 2)
    );
    assert_eq!(
        (
            report.order_groups,
            report.user_groups,
            report.membership_rules,
            report.geofences
        ),
        (1, 1, 1, 1)
    );
    for dev in ["a-1", "a-2"] {
        assert_eq!(stored(&s, dev).await, 0);
        assert!(s.latest_position(dev).await.unwrap().is_none());
        // Unassigned, still provisioned with its key.
        assert!(s.principal(dev).await.unwrap().is_some_and(|p| p.keys.len() == 1));
    }
    let orgs: Vec<String> = s.organizations(None).await.unwrap().into_iter().map(|o| o.id).collect();
    assert_eq!(orgs, ["globex"]);
    assert!(
        s.devices(&Visibility::everything(), None)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id == "g-1")
    );
    assert!(
        s.memberships(&MemberKeys {
            email: Some("x@acme.example".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
    globex_is_untouched(&s).await;
    // What stays: the audit trail of acme, the deletion on it.
    let trail = s.audit_log(Some("acme"), None, 100).await.unwrap();
    assert_eq!(trail[0].action, "org.delete");
    assert!(trail.iter().any(|e| e.action == "org.delete.start"));
    assert!(s.verify_audit(None).await.unwrap().ok());
    // Asking again: nothing is left to delete.
    let err = s.delete_org("acme", false, &audit("org.delete")).await.unwrap_err();
    assert!(
        matches!(
            err,
            crate::StoreError::NotFound {
                kind: "organization",
                ..
            }
        ),
        "{err}"
    );
}

async fn devices_can_go_with_their_keys(db: TestDb) {
    let s = seeded(&db).await;
    let report = s.delete_org("acme", true, &audit("org.delete")).await.unwrap();
    assert!(report.devices_deleted);
    for dev in ["a-1", "a-2"] {
        assert!(s.principal(dev).await.unwrap().is_none(), "{dev} deleted");
    }
    // The id is free again, and the change log tells every node's key cache.
    s.add_device("a-1", None).await.unwrap();
    let (changed, _) = s.changes_since(0).await.unwrap();
    assert!(changed.iter().filter(|d| *d == "a-2").count() >= 2);
    globex_is_untouched(&s).await;
}

async fn a_deletion_cut_off_halfway_is_finished_by_asking_again(db: TestDb) {
    let s = seeded_with(&db, 5000, 10).await;
    // The deletion on threads of its own, watched from here and cut off once some positions are
    // gone (each batch of 10 commits on its own; there are 1000 batches).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Its own store, so no connection of this test's pool belongs to that runtime.
    let mut opts = db.options();
    opts.retention.batch_rows = 10;
    let deleting = runtime.spawn(async move {
        let other = Store::open(&opts, TestDb::master()).await.unwrap();
        other.delete_org("acme", false, &audit("org.delete")).await
    });
    loop {
        if s.count_positions().await.unwrap() < 10_600 {
            deleting.abort();
            break;
        }
    }
    let _ = deleting.await;
    runtime.shutdown_background();
    let left = stored(&s, "a-1").await + stored(&s, "a-2").await;
    let still_there = s.organizations(None).await.unwrap().iter().any(|o| o.id == "acme");
    assert!(
        still_there,
        "cut off before its end, the organization is still there to delete"
    );
    assert!(left < 10_000, "{left}");
    let report = s.delete_org("acme", false, &audit("org.delete")).await.unwrap();
    // The rest (a commit the cut-off run had already sent may land after `left` was counted).
    assert!(
        report.positions > 0 && report.positions as usize <= left,
        "{report:?}, {left} left"
    );
    assert_eq!(stored(&s, "a-1").await + stored(&s, "a-2").await, 0);
    globex_is_untouched(&s).await;
}

on_both_backends!(
    an_organization_is_deleted_with_everything_it_owns_and_only_that,
    devices_can_go_with_their_keys,
    a_deletion_cut_off_halfway_is_finished_by_asking_again,
);
