//! Alert rules and their outbox, the same on both backends: an event queues one delivery per
//! rule that takes it (by kind and order group, in the event's own transaction, never twice), the
//! oldest waiting delivery of each rule and device is the one due, outcomes are recorded, a
//! webhook's secret opens only for its rule, and deleting a rule or its organization takes its
//! deliveries.

use super::operators::seeded;
use super::{TestDb, audit, on_both_backends};
use crate::StoreError;
use crate::alerts::{Channel, NewAlertRule, Outcome};
use crate::events::{EventCursor, NewEvent};

fn rule(id: &str, kinds: &[&str], group: Option<&str>) -> NewAlertRule {
    NewAlertRule {
        id: id.into(),
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        order_group_id: group.map(Into::into),
        channel: Channel::Webhook,
        target: format!("https://hooks.example.com/{id}"),
    }
}

fn event(seq: i64, kind: &'static str) -> NewEvent {
    NewEvent {
        ts: seq * 1000,
        seq,
        kind,
        subject: String::new(),
        detail: format!(r#"{{"kind":"{kind}"}}"#),
        lat: None,
        lon: None,
    }
}

fn at(seq: i64) -> EventCursor {
    EventCursor {
        ts: seq * 1000,
        seq,
        state: "{}".into(),
        stale: false,
    }
}

async fn events_queue_one_delivery_per_rule_that_takes_them(db: TestDb) {
    let s = seeded(&db).await;
    let a = audit("alert_rule.add");
    let all = s
        .add_alert_rule("acme", &rule("all", &[], None), &a)
        .await
        .unwrap()
        .unwrap();
    s.add_alert_rule("acme", &rule("exits", &["exit"], None), &a)
        .await
        .unwrap();
    s.add_alert_rule("acme", &rule("north", &[], Some("north")), &a)
        .await
        .unwrap();
    s.add_alert_rule("globex", &rule("g", &[], None), &a).await.unwrap();
    let err = s.add_alert_rule("acme", &rule("all", &[], None), &a).await.unwrap_err();
    assert!(matches!(err, StoreError::Exists { kind: "alert rule", .. }), "{err}");
    let err = s
        .add_alert_rule("acme", &rule("x", &[], Some("west")), &a)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no order group"), "{err}");

    // a-n (north): enter then exit; a-s (south): exit.
    s.save_events("a-n", "acme", None, &at(1), &[event(1, "enter")])
        .await
        .unwrap();
    s.save_events("a-n", "acme", Some((1000, 1)), &at(2), &[event(2, "exit")])
        .await
        .unwrap();
    s.save_events("a-s", "acme", None, &at(1), &[event(1, "exit")])
        .await
        .unwrap();
    let rules = s.alert_rules("acme").await.unwrap();
    let pending: Vec<(&str, i64)> = rules.iter().map(|r| (r.id.as_str(), r.pending)).collect();
    assert_eq!(pending, [("all", 3), ("exits", 2), ("north", 2)]);
    assert_eq!(s.alert_rules("globex").await.unwrap()[0].pending, 0);
    assert_eq!(s.pending_deliveries().await.unwrap(), 7);

    // Due: the oldest waiting of each rule and device only.
    let due = s.due_deliveries(crate::now_ms(), 100).await.unwrap();
    let heads: Vec<(&str, &str, i64)> = due
        .iter()
        .map(|d| (d.rule_id.as_str(), d.event.device_id.as_str(), d.event.seq))
        .collect();
    assert_eq!(
        heads,
        [
            ("all", "a-n", 1),
            ("north", "a-n", 1),
            ("exits", "a-n", 2),
            ("all", "a-s", 1),
            ("exits", "a-s", 1)
        ]
    );
    let first = &due[0];
    assert_eq!(first.org_name, "ACME");
    assert_eq!(first.secret.as_ref().unwrap(), &all, "the secret opens for its rule");
    assert_eq!(first.event.kind, "enter");

    // Delivered: the next of that rule and device is due. Retried later: nothing of it is due
    // until then.
    s.record_delivery(first.id, &Outcome::Delivered).await.unwrap();
    let north = due.iter().find(|d| d.rule_id == "north").unwrap();
    let later = crate::now_ms() + 60_000;
    s.record_delivery(
        north.id,
        &Outcome::Retry {
            next_ms: later,
            error: "refused".into(),
        },
    )
    .await
    .unwrap();
    let due = s.due_deliveries(crate::now_ms(), 100).await.unwrap();
    assert!(
        due.iter()
            .any(|d| d.rule_id == "all" && d.event.device_id == "a-n" && d.event.seq == 2)
    );
    assert!(due.iter().all(|d| d.rule_id != "north"), "north waits for its retry");
    let states = s.deliveries("acme", "north", 10).await.unwrap();
    let retried = states.iter().find(|d| d.attempts == 1).unwrap();
    assert_eq!(
        (retried.state.as_str(), retried.last_error.as_deref()),
        ("pending", Some("refused"))
    );
    assert_eq!(retried.next_ms, later);
    s.record_delivery(
        north.id,
        &Outcome::Failed {
            error: "gave up".into(),
        },
    )
    .await
    .unwrap();
    let due = s.due_deliveries(crate::now_ms(), 100).await.unwrap();
    assert!(
        due.iter().any(|d| d.rule_id == "north" && d.event.seq == 2),
        "after one given up on, the next is due"
    );
    assert_eq!(s.alert_rules("acme").await.unwrap()[2].failed, 1);

    // Removing a rule takes its deliveries; deleting the organization takes the rest.
    s.remove_alert_rule("acme", "exits", &audit("alert_rule.remove"))
        .await
        .unwrap();
    assert!(matches!(
        s.remove_alert_rule("acme", "exits", &audit("alert_rule.remove"))
            .await
            .unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert!(s.deliveries("acme", "exits", 10).await.unwrap().is_empty());
    let report = s.delete_org("acme", false, &audit("org.delete")).await.unwrap();
    assert_eq!(report.alert_rules, 2);
    assert_eq!(s.pending_deliveries().await.unwrap(), 0);
}

on_both_backends!(events_queue_one_delivery_per_rule_that_takes_them);
