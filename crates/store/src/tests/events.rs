//! Events' storage, the same on both backends: records read back in `(ts, seq)` order after a
//! cursor, the cursor moved once (a second mover is refused), each event stored once, limits at
//! three scopes with the most specific winning, silent devices found, and events read only by
//! their own organization through the devices' grants.

use super::operators::seeded;
use super::{TestDb, audit, on_both_backends};
use crate::access::{Assignment, Visibility};
use crate::batch::SPAN_MS;
use crate::events::{EventCursor, EventLimits, EventQuery, LimitScope, NewEvent};
use crate::{Row, StoreError};
use trackgate_proto::Measurement;

fn record(dev: &str, seq: i64, ts: i64, received_ms: i64) -> Row {
    Row {
        device_id: dev.into(),
        seq,
        ts,
        measurement: Measurement {
            lat: (seq % 3 != 0).then_some(53.5),
            lon: (seq % 3 != 0).then_some(10.0),
            bat: Some(seq as f64),
            ..Measurement::default()
        },
        ext: None,
        record: format!("{dev}/{seq}"),
        kid: "k1".into(),
        received_ms,
    }
}

fn cursor(ts: i64, seq: i64) -> EventCursor {
    EventCursor {
        ts,
        seq,
        state: "{}".into(),
        stale: false,
    }
}

fn event(ts: i64, seq: i64, kind: &'static str, subject: &str) -> NewEvent {
    NewEvent {
        ts,
        seq,
        kind,
        subject: subject.into(),
        detail: format!(r#"{{"kind":"{kind}","geofence":"{subject}"}}"#),
        lat: Some(53.5),
        lon: Some(10.0),
    }
}

async fn records_come_back_in_time_order_after_the_cursor_across_hours(db: TestDb) {
    let s = seeded(&db).await;
    let h = SPAN_MS;
    // Sent out of order, over three hours, with a clock that jumped back into the first hour.
    let rows = [
        record("a-x", 10, 3 * h + 5, 7),
        record("a-x", 11, 2 * h + 1, 7),
        record("a-x", 12, 2 * h + 1, 7),
        record("a-x", 13, 4 * h + 9, 8),
        record("a-x", 14, 2 * h + 500, 9),
        record("a-x", 15, 5 * h, 9),
    ];
    s.write_batch(&rows, &[]).await.unwrap();
    let all = s.records_after("a-x", Some((2 * h, 0)), 100).await.unwrap();
    let order: Vec<(i64, i64)> = all.iter().map(|r| (r.ts, r.seq)).collect();
    let mut expected: Vec<(i64, i64)> = rows.iter().map(|r| (r.ts, r.seq)).collect();
    expected.sort();
    assert_eq!(order, expected);
    assert_eq!(all[0].bat, Some(11.0));
    assert_eq!(
        (all[1].lat, all[1].received_ms),
        (None, 7),
        "seq 12 has no position, and is read"
    );

    // After a cursor, and the same ts with a higher seq; a limit.
    let after = s.records_after("a-x", Some((2 * h + 1, 11)), 100).await.unwrap();
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), [12, 14, 10, 13, 15]);
    let two = s.records_after("a-x", Some((2 * h + 1, 11)), 2).await.unwrap();
    assert_eq!(two.iter().map(|r| r.seq).collect::<Vec<_>>(), [12, 14]);
    assert!(s.records_after("a-x", Some((5 * h, 15)), 100).await.unwrap().is_empty());
    // From the start of the device's retention: every record, the seeded one first.
    let from_start = s.records_after("a-x", None, 100).await.unwrap();
    assert_eq!(from_start.len(), 7);
    assert_eq!((from_start[0].ts, from_start[0].seq), (1_000, 1));
}

async fn a_cursor_moves_once_and_an_event_is_stored_once(db: TestDb) {
    let s = seeded(&db).await;
    // Every assigned device with records is behind; none has a cursor yet.
    assert_eq!(s.devices_behind_events().await.unwrap(), ["a-n", "a-s", "a-x", "g-1"]);
    assert!(s.event_cursor("a-n").await.unwrap().is_none());

    let e1 = event(1_000, 1, "enter", "depot");
    assert!(
        s.save_events("a-n", "acme", None, &cursor(1_000, 1), std::slice::from_ref(&e1))
            .await
            .unwrap()
    );
    // A second node that read no cursor either: refused, nothing stored.
    assert!(
        !s.save_events("a-n", "acme", None, &cursor(1_000, 1), std::slice::from_ref(&e1))
            .await
            .unwrap()
    );
    // One that read the cursor before it moved: refused.
    let e2 = event(2_000, 2, "exit", "depot");
    assert!(
        s.save_events(
            "a-n",
            "acme",
            Some((1_000, 1)),
            &cursor(2_000, 2),
            std::slice::from_ref(&e2)
        )
        .await
        .unwrap()
    );
    assert!(
        !s.save_events(
            "a-n",
            "acme",
            Some((1_000, 1)),
            &cursor(2_000, 2),
            std::slice::from_ref(&e2)
        )
        .await
        .unwrap()
    );
    // The same event offered again with a move that is allowed: stored once all the same.
    assert!(
        s.save_events("a-n", "acme", Some((2_000, 2)), &cursor(2_000, 2), &[e2])
            .await
            .unwrap()
    );
    let got = s
        .events(
            &Visibility::everything(),
            &EventQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let kinds: Vec<(&str, i64, &str)> = got
        .iter()
        .map(|e| (e.kind.as_str(), e.seq, e.device_id.as_str()))
        .collect();
    assert_eq!(kinds, [("exit", 2, "a-n"), ("enter", 1, "a-n")], "newest first");
    assert_eq!(got[0].detail["geofence"], "depot");
    assert!(!got[0].detail.contains_key("kind"), "the kind is said once");
    assert_eq!(s.event_cursor("a-n").await.unwrap().unwrap(), cursor(2_000, 2));

    // a-n's cursor is at its newest record: not behind, until a new one comes.
    assert_eq!(s.devices_behind_events().await.unwrap(), ["a-s", "a-x", "g-1"]);
    s.write_batch(&[record("a-n", 3, 2_500, 0)], &[]).await.unwrap();
    assert!(s.devices_behind_events().await.unwrap().contains(&"a-n".to_owned()));
    // A record behind the cursor does not make it behind: it is past taking.
    let s2 = &s;
    s2.save_events("a-n", "acme", Some((2_000, 2)), &cursor(2_500, 3), &[])
        .await
        .unwrap();
    s.write_batch(&[record("a-n", 4, 1_500, 0)], &[]).await.unwrap();
    assert!(!s.devices_behind_events().await.unwrap().contains(&"a-n".to_owned()));
    // Paging: before an id.
    let older = s
        .events(
            &Visibility::everything(),
            &EventQuery {
                before_id: Some(got[0].id),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].kind, "enter");
}

async fn events_are_seen_by_their_organization_through_the_devices_grants(db: TestDb) {
    let s = seeded(&db).await;
    for (dev, org) in [("a-n", "acme"), ("a-s", "acme"), ("g-1", "globex")] {
        assert!(
            s.save_events(dev, org, None, &cursor(1_000, 1), &[event(1_000, 1, "enter", "d")])
                .await
                .unwrap()
        );
    }
    let ids = |v: Vec<crate::StoredEvent>| v.into_iter().map(|e| e.device_id).collect::<Vec<_>>();
    let q = EventQuery {
        limit: 10,
        ..Default::default()
    };
    let acme = Visibility {
        orgs: vec!["acme".into()],
        ..Default::default()
    };
    let mut seen = ids(s.events(&acme, &q).await.unwrap());
    seen.sort();
    assert_eq!(seen, ["a-n", "a-s"]);
    let north = Visibility {
        order_groups: vec![("acme".into(), "north".into())],
        ..Default::default()
    };
    assert_eq!(ids(s.events(&north, &q).await.unwrap()), ["a-n"]);
    assert!(s.events(&Visibility::default(), &q).await.unwrap().is_empty());
    let only_globex = EventQuery {
        org: Some("globex".into()),
        ..q.clone()
    };
    assert!(s.events(&acme, &only_globex).await.unwrap().is_empty());

    // a-s moves to globex: its acme events stay acme's, and globex does not see them.
    let a = audit("seed");
    s.set_shipment(
        "a-s",
        &Assignment {
            org_id: "acme".into(),
            order_group_id: None,
            shipment_label: None,
            shipment_ref: None,
        },
        &a,
    )
    .await
    .unwrap();
    s.assign_device("a-s", "globex", &a).await.unwrap();
    let globex = Visibility {
        orgs: vec!["globex".into()],
        ..Default::default()
    };
    assert_eq!(ids(s.events(&globex, &q).await.unwrap()), ["g-1"]);
}

async fn limits_apply_from_the_most_specific_scope(db: TestDb) {
    let s = seeded(&db).await;
    let a = audit("event_limits.set");
    let org = EventLimits {
        stale_after_ms: Some(3_600_000),
        battery_low: Some(20.0),
        temperature: Some((2.0, 8.0)),
    };
    s.set_event_limits("acme", &LimitScope::Org, org.clone(), &a)
        .await
        .unwrap();
    s.set_event_limits(
        "acme",
        &LimitScope::OrderGroup("north".into()),
        EventLimits {
            temperature: Some((-20.0, -15.0)),
            ..Default::default()
        },
        &a,
    )
    .await
    .unwrap();
    s.set_event_limits(
        "acme",
        &LimitScope::Device("a-n".into()),
        EventLimits {
            battery_low: Some(35.0),
            ..Default::default()
        },
        &a,
    )
    .await
    .unwrap();
    let limits = |d: &'static str| {
        let s = &s;
        async move { s.event_subject(d).await.unwrap().unwrap().limits }
    };
    assert_eq!(
        limits("a-n").await,
        EventLimits {
            stale_after_ms: Some(3_600_000),
            battery_low: Some(35.0),
            temperature: Some((-20.0, -15.0)),
        }
    );
    assert_eq!(limits("a-s").await, org);
    assert_eq!(limits("g-1").await, EventLimits::default());
    assert!(s.event_subject("nobody").await.unwrap().is_none());
    let listed = s.event_limits("acme").await.unwrap();
    let scopes: Vec<LimitScope> = listed.into_iter().map(|l| l.scope).collect();
    assert_eq!(
        scopes,
        [
            LimitScope::Org,
            LimitScope::OrderGroup("north".into()),
            LimitScope::Device("a-n".into())
        ]
    );
    // All unset: removed.
    s.set_event_limits("acme", &LimitScope::Device("a-n".into()), EventLimits::default(), &a)
        .await
        .unwrap();
    assert_eq!(limits("a-n").await.battery_low, Some(20.0));

    // Refused, with the reason, and nothing changed.
    for (scope, bad, says) in [
        (
            LimitScope::Org,
            EventLimits {
                temperature: Some((8.0, 2.0)),
                ..Default::default()
            },
            "temperature must be a range min < max",
        ),
        (
            LimitScope::Org,
            EventLimits {
                battery_low: Some(120.0),
                ..Default::default()
            },
            "battery_low must be from 0 to 100",
        ),
        (
            LimitScope::Org,
            EventLimits {
                stale_after_ms: Some(1000),
                ..Default::default()
            },
            "stale_after must be from 60 s",
        ),
        (LimitScope::OrderGroup("west".into()), org.clone(), "no order group"),
        (
            LimitScope::Device("g-1".into()),
            org.clone(),
            "no device of the organization",
        ),
    ] {
        let err = s.set_event_limits("acme", &scope, bad, &a).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(matches!(
        s.set_event_limits("nobody", &LimitScope::Org, org, &a)
            .await
            .unwrap_err(),
        StoreError::NotFound {
            kind: "organization",
            ..
        }
    ));
    assert_eq!(limits("a-s").await.temperature, Some((2.0, 8.0)));
}

async fn silent_devices_are_found_once(db: TestDb) {
    let s = seeded(&db).await;
    let a = audit("event_limits.set");
    s.set_event_limits(
        "acme",
        &LimitScope::Org,
        EventLimits {
            stale_after_ms: Some(60_000),
            ..Default::default()
        },
        &a,
    )
    .await
    .unwrap();
    for dev in ["a-n", "a-s", "g-1"] {
        s.save_events(dev, "x", None, &cursor(1_000, 1), &[]).await.unwrap();
    }
    // Globex has no stale limit; a-x has no cursor yet.
    assert!(s.devices_gone_stale(61_000).await.unwrap().is_empty());
    assert_eq!(s.devices_gone_stale(61_001).await.unwrap(), ["a-n", "a-s"]);
    let reported = EventCursor {
        stale: true,
        ..cursor(1_000, 1)
    };
    s.save_events("a-n", "acme", Some((1_000, 1)), &reported, &[])
        .await
        .unwrap();
    assert_eq!(s.devices_gone_stale(100_000).await.unwrap(), ["a-s"]);
}

on_both_backends!(
    records_come_back_in_time_order_after_the_cursor_across_hours,
    a_cursor_moves_once_and_an_event_is_stored_once,
    events_are_seen_by_their_organization_through_the_devices_grants,
    limits_apply_from_the_most_specific_scope,
    silent_devices_are_found_once,
);
