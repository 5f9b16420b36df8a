//! The audit log's chain and pseudonyms, the same on both backends: `verify_audit` passes on an
//! untouched log (whole, and per organization), names the first entry changed or following a
//! removed one when the database is altered behind trackgate's back, and still passes after
//! personal fields past their period were replaced by pseudonyms.

use super::{TestDb, on_both_backends};
use crate::access::AuditEntry;
use crate::{AuditRecord, Store};

fn entry(org: Option<&str>, email: &str, n: u32) -> AuditEntry {
    AuditEntry {
        actor: format!("oidc:https://idp.example#{email}"),
        actor_email: Some(email.into()),
        org_id: org.map(Into::into),
        action: "device.read".into(),
        target: Some(format!("dev-{n}")),
        detail: Some(format!("{{\"n\":{n}}}")),
        remote_addr: Some(format!("192.0.2.{n}:443")),
        over_ride: false,
    }
}

/// Twelve entries over two organizations and none.
async fn logged(db: &TestDb) -> Store {
    let s = db.open().await;
    for n in 0..12 {
        let (org, email) = match n % 3 {
            0 => (Some("acme"), "boss@acme.example"),
            1 => (Some("globex"), "ops@globex.example"),
            _ => (None, "root@service.example"),
        };
        s.audit(&entry(org, email, n)).await.unwrap();
    }
    s
}

/// Behind trackgate's back, as someone with the database's credentials could: the append-only
/// guard off.
async fn guard_off(s: &Store) {
    let sql = match s.backend_name() {
        "sqlite" => "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete",
        _ => "ALTER TABLE audit_log DISABLE TRIGGER USER",
    };
    for statement in sql.split("; ") {
        s.execute_for_tests(statement).await.unwrap();
    }
}

/// The twelve entries, then a moment `mid`, then three more of acme: the moment.
async fn logged_then_three(db: &TestDb) -> (Store, i64) {
    let s = logged(db).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mid = crate::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for n in 12..15 {
        s.audit(&entry(Some("acme"), "boss@acme.example", n)).await.unwrap();
    }
    (s, mid)
}

async fn log(s: &Store) -> Vec<AuditRecord> {
    let mut all = s.audit_log(None, None, 1000).await.unwrap();
    all.reverse();
    all
}

async fn verify_names_the_first_entry_changed_or_following_a_removal(db: TestDb) {
    let s = logged(&db).await;
    let all = log(&s).await;
    let whole = s.verify_audit(None).await.unwrap();
    assert!(whole.ok(), "{whole:?}");
    assert_eq!(whole.entries, 12);
    assert_eq!(whole.head.as_ref().unwrap().0, all[11].id);
    let acme = s.verify_audit(Some("acme")).await.unwrap();
    assert!(acme.ok() && acme.entries == 4, "{acme:?}");

    guard_off(&s).await;
    // A changed field.
    let victim = all[4].id;
    s.execute_for_tests(&format!(
        "UPDATE audit_log SET detail = 'nothing to see' WHERE id = {victim}"
    ))
    .await
    .unwrap();
    let v = s.verify_audit(None).await.unwrap();
    let f = v.failure.expect("a changed entry is found");
    assert_eq!(f.id, victim);
    assert!(f.reason.contains(&format!("entry {victim} was changed")), "{f:?}");
    // Its organization's chain finds it too; the other organization's is whole.
    let globex = s.verify_audit(Some("globex")).await.unwrap();
    assert_eq!(globex.failure.map(|f| f.id), Some(victim), "entry 4 is globex's");
    assert!(s.verify_audit(Some("acme")).await.unwrap().ok());
    s.execute_for_tests(&format!(
        "UPDATE audit_log SET detail = '{}' WHERE id = {victim}",
        all[4].detail.as_deref().unwrap()
    ))
    .await
    .unwrap();
    assert!(
        s.verify_audit(None).await.unwrap().ok(),
        "put back as it was, it verifies"
    );

    // A removed entry: the one after it no longer follows.
    s.execute_for_tests(&format!("DELETE FROM audit_log WHERE id = {}", all[6].id))
        .await
        .unwrap();
    let f = s.verify_audit(None).await.unwrap().failure.unwrap();
    assert_eq!(f.id, all[7].id);
    assert!(
        f.reason.contains(&format!("does not follow entry {}", all[5].id)),
        "{f:?}"
    );
    let f = s.verify_audit(Some("acme")).await.unwrap().failure.unwrap();
    assert_eq!(f.id, all[9].id, "acme's entry after the removed one");

    // Two entries' contents swapped: reordering is found at the first.
    let t = log(&s).await;
    let (a, b) = (&t[0], &t[1]);
    for (id, from) in [(a.id, b), (b.id, a)] {
        s.execute_for_tests(&format!(
            "UPDATE audit_log SET target = '{}' WHERE id = {id}",
            from.target.as_deref().unwrap()
        ))
        .await
        .unwrap();
    }
    assert_eq!(s.verify_audit(None).await.unwrap().failure.unwrap().id, a.id);
}

async fn personal_fields_past_their_period_become_pseudonyms_and_the_chain_holds(db: TestDb) {
    let (s, mid) = logged_then_three(&db).await;
    let before = log(&s).await;
    // The purge as it would run 30 days after `mid`: the first twelve are past the period.
    let report = s.purge(mid + 30 * crate::retention::DAY_MS).await.unwrap().unwrap();
    assert_eq!(report.audit_pseudonymized, 12);
    let after = log(&s).await;
    for (old, new) in before.iter().zip(&after) {
        let past = old.at_ms < mid;
        let email = new.actor_email.as_deref().unwrap();
        let addr = new.remote_addr.as_deref().unwrap();
        assert_eq!(email.starts_with("hmac:"), past, "{new:?}");
        assert_eq!(addr.starts_with("hmac:"), past, "{new:?}");
        if !past {
            assert_eq!(new, old);
        }
        // Nothing else in the row changed.
        let mut same = new.clone();
        same.actor_email = old.actor_email.clone();
        same.remote_addr = old.remote_addr.clone();
        assert_eq!(&same, old);
    }
    // The same person hashes the same; different people differently.
    let emails: Vec<&str> = after[..12].iter().map(|e| e.actor_email.as_deref().unwrap()).collect();
    assert_eq!(emails[0], emails[3]);
    assert_ne!(emails[0], emails[1]);
    assert!(!emails.iter().any(|e| e.contains("acme.example")));
    // The chain still holds, whole and per organization, with the purge's own entries on it.
    let v = s.verify_audit(None).await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert!(v.entries > 15);
    assert!(s.verify_audit(Some("acme")).await.unwrap().ok());
    // A later run takes up where this one stopped: the three younger entries, nothing twice.
    let later = s
        .purge(crate::now_ms() + 31 * crate::retention::DAY_MS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(later.audit_pseudonymized, 3);
    let all = log(&s).await;
    assert!(
        all.iter()
            .all(|e| e.actor_email.as_deref().is_none_or(|m| m.starts_with("hmac:")))
    );
    assert!(s.verify_audit(None).await.unwrap().ok());
    // The guard still refuses any other change, and a pseudonym back to a clear value.
    for sql in [
        "UPDATE audit_log SET action = 'x'".to_owned(),
        format!(
            "UPDATE audit_log SET actor_email = 'boss@acme.example' WHERE id = {}",
            after[0].id
        ),
        "DELETE FROM audit_log".to_owned(),
    ] {
        let err = s.execute_for_tests(&sql).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// Entries made before the chain existed are sealed at open, oldest first.
async fn entries_from_before_the_chain_are_sealed_at_open(db: TestDb) {
    let s = logged(&db).await;
    guard_off(&s).await;
    s.execute_for_tests("UPDATE audit_log SET prev_hash = NULL, hash = NULL, org_hash = NULL")
        .await
        .unwrap();
    assert!(!s.verify_audit(None).await.unwrap().ok());
    s.close().await;
    let s = db.open().await;
    let v = s.verify_audit(None).await.unwrap();
    assert!(v.ok() && v.entries == 12, "{v:?}");
    assert!(s.verify_audit(Some("globex")).await.unwrap().ok());
}

/// Entries past the audit log's retention go, oldest first; the chain goes on from the newest one
/// removed, and no other deletion is allowed.
async fn entries_past_the_audit_retention_go_and_the_chain_still_verifies(db: TestDb) {
    let (s, mid) = logged_then_three(&db).await;
    let before = log(&s).await;
    // The purge as it would run 730 days (the default) after `mid`.
    let report = s.purge(mid + 730 * crate::retention::DAY_MS).await.unwrap().unwrap();
    assert_eq!(report.audit_removed, 12);
    let after = log(&s).await;
    assert_eq!(after[0].id, before[12].id, "the oldest twelve went, the rest stayed");
    assert!(after.iter().all(|e| e.at_ms >= mid));
    let v = s.verify_audit(None).await.unwrap();
    assert!(v.ok(), "{v:?}");
    for org in ["acme", "globex"] {
        let v = s.verify_audit(Some(org)).await.unwrap();
        assert!(v.ok(), "{org}: {v:?}");
    }
    // Outside the purge, deleting stays refused.
    let err = s
        .execute_for_tests(&format!("DELETE FROM audit_log WHERE id = {}", after[0].id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    // And the first entry left is still held to the anchor: removing it is found.
    guard_off(&s).await;
    s.execute_for_tests(&format!("DELETE FROM audit_log WHERE id = {}", after[0].id))
        .await
        .unwrap();
    let f = s.verify_audit(None).await.unwrap().failure.unwrap();
    assert_eq!(f.id, after[1].id);
    assert!(
        f.reason.contains(&format!("does not follow entry {}", before[11].id)),
        "{f:?}"
    );
}

on_both_backends!(
    entries_past_the_audit_retention_go_and_the_chain_still_verifies,
    verify_names_the_first_entry_changed_or_following_a_removal,
    personal_fields_past_their_period_become_pseudonyms_and_the_chain_holds,
    entries_from_before_the_chain_are_sealed_at_open,
);
