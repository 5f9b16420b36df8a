//! Operators' store, the same on both backends: membership by each rule, visibility in every
//! read, tracks, and the audit log's append-only guard.

use super::{TestDb, audit, on_both_backends};
use crate::access::*;
use crate::{Row, Store};
use trackgate_proto::Measurement;

fn row(dev: &str, seq: i64, ts: i64, lat: f64, lon: f64) -> Row {
    Row {
        device_id: dev.into(),
        seq,
        ts,
        measurement: Measurement {
            lat: Some(lat),
            lon: Some(lon),
            bat: Some(50.0 + seq as f64),
            tmp: Some(4.0),
            ..Measurement::default()
        },
        ext: None,
        record: format!("{dev}/{seq}"),
        kid: "k1".into(),
        received_ms: ts,
    }
}

fn group(org: &str, id: &str, role: Role, scope: Scope, rules: &[(RuleKind, &str)]) -> UserGroup {
    UserGroup {
        org_id: org.into(),
        id: id.into(),
        name: id.into(),
        role,
        scope,
        rules: rules
            .iter()
            .map(|(kind, value)| Rule {
                kind: *kind,
                value: (*value).into(),
            })
            .collect(),
    }
}

/// Two organizations; acme has order groups `north` and `south` with one device each and a third
/// device in no order group; globex has one device.
pub(crate) async fn seeded(db: &TestDb) -> Store {
    let s = db.open().await;
    let a = audit("seed");
    for org in ["acme", "globex"] {
        s.add_organization(org, &org.to_uppercase(), &a).await.unwrap();
    }
    s.add_order_group("acme", "north", "North", &a).await.unwrap();
    s.add_order_group("acme", "south", "South", &a).await.unwrap();
    for (dev, org, og) in [
        ("a-n", "acme", Some("north")),
        ("a-s", "acme", Some("south")),
        ("a-x", "acme", None),
        ("g-1", "globex", None),
    ] {
        s.add_device(dev, None).await.unwrap();
        s.assign_device(dev, org, &a).await.unwrap();
        s.set_shipment(
            dev,
            &Assignment {
                org_id: org.into(),
                order_group_id: og.map(Into::into),
                shipment_label: Some(format!("crate {dev}")),
                shipment_ref: None,
            },
            &a,
        )
        .await
        .unwrap();
    }
    let groups = [
        group(
            "acme",
            "admins",
            Role::Admin,
            Scope::OrderGroups(vec![]),
            &[(RuleKind::Email, "Boss@Acme.example")],
        ),
        group(
            "acme",
            "everyone",
            Role::Viewer,
            Scope::AllOrderGroups,
            &[(RuleKind::Domain, "acme.example")],
        ),
        group(
            "acme",
            "north-desk",
            Role::Viewer,
            Scope::OrderGroups(vec!["north".into()]),
            &[(RuleKind::IdpGroup, "grp-north")],
        ),
        group(
            "acme",
            "south-partner",
            Role::Viewer,
            Scope::OrderGroups(vec!["south".into()]),
            &[(RuleKind::Tenant, "tenant-south")],
        ),
        group(
            "globex",
            "all",
            Role::Admin,
            Scope::AllOrderGroups,
            &[(RuleKind::Domain, "globex.example")],
        ),
    ];
    for g in &groups {
        s.add_user_group(g, &a).await.unwrap();
    }
    let rows = [
        row("a-n", 1, 1_000, 60.1, 24.9),
        row("a-n", 2, 2_000, 60.2, 24.8),
        row("a-s", 1, 1_000, 40.0, -3.7),
        row("a-x", 1, 1_000, 51.5, -0.1),
        row("g-1", 1, 1_000, -33.9, 151.2),
    ];
    s.write_batch(&rows, &[]).await.unwrap();
    s
}

async fn visible(s: &Store, keys: MemberKeys) -> Vec<String> {
    let vis = Visibility::of(&s.memberships(&keys).await.unwrap());
    let ids: Vec<String> = s.devices(&vis, None).await.unwrap().into_iter().map(|d| d.id).collect();
    let latest: Vec<String> = s
        .latest(&vis, None)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, latest, "devices and latest positions disagree");
    assert_eq!(ids, s.visible_device_ids(&vis).await.unwrap());
    ids
}

fn email(e: &str) -> MemberKeys {
    MemberKeys {
        email: Some(e.into()),
        ..Default::default()
    }
}

async fn each_membership_rule_grants_exactly_its_scope(db: TestDb) {
    let s = seeded(&db).await;
    // Direct invitation, compared case-insensitively; admin sees the whole organization.
    assert_eq!(visible(&s, email("boss@ACME.example")).await, ["a-n", "a-s", "a-x"]);
    // Email domain: viewer of all order groups.
    assert_eq!(visible(&s, email("clerk@acme.example")).await, ["a-n", "a-s", "a-x"]);
    // Identity-provider group: one order group.
    let north = MemberKeys {
        email: Some("temp@staffing.example".into()),
        groups: vec!["grp-other".into(), "grp-north".into()],
        tenant: None,
    };
    assert_eq!(visible(&s, north).await, ["a-n"]);
    // Tenant: the other order group.
    let south = MemberKeys {
        email: None,
        groups: vec![],
        tenant: Some("tenant-south".into()),
    };
    assert_eq!(visible(&s, south).await, ["a-s"]);
    // Another organization, and nobody at all.
    assert_eq!(visible(&s, email("ops@globex.example")).await, ["g-1"]);
    assert!(visible(&s, email("stranger@elsewhere.example")).await.is_empty());
    assert!(visible(&s, MemberKeys::default()).await.is_empty());
    // A domain rule does not match a sub-string of another domain.
    assert!(visible(&s, email("x@notacme.example")).await.is_empty());
}

async fn device_views_carry_assignment_latest_fix_and_last_seen(db: TestDb) {
    let s = seeded(&db).await;
    // A later battery-only record: last seen moves, the fix stays.
    let mut battery_only = row("a-n", 3, 3_000, 0.0, 0.0);
    battery_only.measurement.lat = None;
    battery_only.measurement.lon = None;
    battery_only.measurement.bat = Some(12.0);
    s.write_batch(&[battery_only], &[]).await.unwrap();
    let d = s
        .devices(&Visibility::everything(), Some("a-n"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(d.assignment.org_id, "acme");
    assert_eq!(d.assignment.order_group_id.as_deref(), Some("north"));
    assert_eq!(d.assignment.shipment_label.as_deref(), Some("crate a-n"));
    let fix = d.position.unwrap();
    assert_eq!((fix.seq(), fix.ts(), fix.position()), (2, 2_000, (60.2, 24.8)));
    assert_eq!(d.last_seen_ms, Some(3_000));
    assert_eq!(d.bat, Some(12.0));
    // Not visible: empty, not an error.
    let north_only = Visibility {
        order_groups: vec![("acme".into(), "south".into())],
        ..Default::default()
    };
    assert!(s.devices(&north_only, Some("a-n")).await.unwrap().is_empty());
}

async fn bounding_boxes_filter_and_may_cross_the_antimeridian(db: TestDb) {
    let s = seeded(&db).await;
    let all = Visibility::everything();
    let ids = |v: Vec<(String, Assignment, Fix)>| v.into_iter().map(|(id, _, _)| id).collect::<Vec<_>>();
    let europe = BBox {
        west: -10.0,
        south: 35.0,
        east: 30.0,
        north: 70.0,
    };
    assert_eq!(ids(s.latest(&all, Some(europe)).await.unwrap()), ["a-n", "a-s", "a-x"]);
    // From 150°E across 180° to 10°W: Sydney and London, not Helsinki or Madrid.
    let across = BBox {
        west: 150.0,
        south: -40.0,
        east: -0.05,
        north: 55.0,
    };
    assert_eq!(ids(s.latest(&all, Some(across)).await.unwrap()), ["a-s", "a-x", "g-1"]);
}

async fn track_pages_in_time_order_and_resume_after_the_cursor(db: TestDb) {
    let s = db.open().await;
    s.add_device("t", None).await.unwrap();
    // Two records share a ts; arrival order is not ts order.
    let rows: Vec<Row> = [(1, 500), (2, 100), (3, 300), (4, 300), (5, 900), (6, 200)]
        .iter()
        .map(|&(seq, ts)| row("t", seq, ts, 1.0, 2.0))
        .collect();
    s.write_batch(&rows, &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.track("t", 100, 900, after, 2).await.unwrap();
        assert!(page.points.len() <= 2);
        seen.extend(page.points.iter().map(|p| (p.seq(), p.ts())));
        match page.next {
            Some(c) => after = Some(TrackCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    // ts 900 is outside [100, 900).
    assert_eq!(seen, [(2, 100), (6, 200), (3, 300), (4, 300), (1, 500)]);
}

/// Tracks read through the per-hour seq spans: records over several hours, written in several
/// batches, a clock that jumps back into an earlier hour with a later seq and forward over an
/// empty hour, and range bounds inside hours. Every page equals the (ts, seq) order of the rows.
async fn tracks_across_hours_and_clock_jumps_match_the_rows_in_time_order(db: TestDb) {
    let s = db.open().await;
    s.add_device("t", None).await.unwrap();
    let h = crate::batch::SPAN_MS;
    let base = 480_000 * h;
    // (seq, ts): hours 0, 1 and 3; seq 9 jumps back into hour 0; seq 12 forward to hour 3.
    let points: Vec<(i64, i64)> = vec![
        (1, base + 10),
        (2, base + 20),
        (3, base + h - 1),
        (4, base + h),
        (5, base + h + 5),
        (6, base + h + 5),
        (9, base + 15),
        (10, base + h + 7),
        (12, base + 3 * h + 1),
    ];
    for batch in points.chunks(4) {
        let rows: Vec<Row> = batch.iter().map(|&(seq, ts)| row("t", seq, ts, 1.0, 2.0)).collect();
        s.write_batch(&rows, &[]).await.unwrap();
    }
    for (from, to) in [
        (0, i64::MAX),
        (base + 15, base + h + 6),
        (base + h, base + 4 * h),
        (base + 2 * h, base + 3 * h),
    ] {
        for limit in [1, 2, 3, 100] {
            let mut want: Vec<(i64, i64)> = points
                .iter()
                .copied()
                .filter(|&(_, ts)| from <= ts && ts < to)
                .collect();
            want.sort_by_key(|&(seq, ts)| (ts, seq));
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = s.track("t", from, to, after, limit).await.unwrap();
                assert!(page.points.len() <= limit as usize);
                seen.extend(page.points.iter().map(|p| (p.seq(), p.ts())));
                match page.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            assert_eq!(seen, want, "[{from}, {to}) by {limit}");
        }
    }
}

async fn admin_changes_are_audited_and_the_audit_log_is_append_only(db: TestDb) {
    let s = seeded(&db).await;
    let e = AuditEntry {
        actor: "oidc:https://idp.example#u1".into(),
        actor_email: Some("boss@acme.example".into()),
        org_id: Some("acme".into()),
        action: "rule.add".into(),
        target: Some("everyone".into()),
        detail: Some("domain acme.test".into()),
        remote_addr: Some("192.0.2.7:5555".into()),
        over_ride: false,
    };
    let rule = Rule {
        kind: RuleKind::Domain,
        value: "acme.test".into(),
    };
    s.add_rule("acme", "everyone", &rule, &e).await.unwrap();
    let log = s.audit_log(Some("acme"), None, 1).await.unwrap();
    assert_eq!(log[0].action, "rule.add");
    assert_eq!(log[0].remote_addr.as_deref(), Some("192.0.2.7:5555"));
    // A failed change writes no audit row.
    let before = s.audit_log(None, None, 1000).await.unwrap().len();
    assert!(matches!(
        s.add_rule("acme", "everyone", &rule, &e).await,
        Err(crate::StoreError::Exists { .. })
    ));
    assert!(s.add_rule("acme", "nobody", &rule, &e).await.is_err());
    assert_eq!(s.audit_log(None, None, 1000).await.unwrap().len(), before);

    for sql in ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"] {
        let err = s.execute_for_tests(sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

async fn invalid_input_names_the_field(db: TestDb) {
    let s = seeded(&db).await;
    let a = audit("x");
    let err = s.add_organization("bad id", "x", &a).await.unwrap_err().to_string();
    assert!(err.contains("organization id"), "{err}");
    let err = s.add_order_group("acme", "ok", " ", &a).await.unwrap_err().to_string();
    assert!(err.contains("order group name"), "{err}");
    let err = s.add_order_group("nope", "ok", "x", &a).await.unwrap_err().to_string();
    assert!(err.contains("organization") && err.contains("nope"), "{err}");
    let bad_email = Rule {
        kind: RuleKind::Email,
        value: "not-an-email".into(),
    };
    let err = s
        .add_rule("acme", "everyone", &bad_email, &a)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("email rule"), "{err}");
    // A device of another organization cannot be given a shipment by this one.
    let err = s
        .set_shipment(
            "g-1",
            &Assignment {
                org_id: "acme".into(),
                ..Default::default()
            },
            &a,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, crate::StoreError::NotFound { .. }), "{err}");
}

on_both_backends!(
    each_membership_rule_grants_exactly_its_scope,
    device_views_carry_assignment_latest_fix_and_last_seen,
    bounding_boxes_filter_and_may_cross_the_antimeridian,
    track_pages_in_time_order_and_resume_after_the_cursor,
    tracks_across_hours_and_clock_jumps_match_the_rows_in_time_order,
    admin_changes_are_audited_and_the_audit_log_is_append_only,
    invalid_input_names_the_field,
);
