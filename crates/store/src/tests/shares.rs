//! Share links, the same on both backends: a token opens its link until it expires, is revoked
//! or its device leaves the organization; only the token's hash is stored; deleting the
//! organization takes its links.

use super::operators::seeded;
use super::{TestDb, audit, on_both_backends};
use crate::StoreError;
use crate::shares::{NewShareLink, token_hash};

fn link(device: &str, expires_ms: i64) -> NewShareLink {
    NewShareLink {
        device_id: device.into(),
        created_by: "oidc:test#ann".into(),
        expires_ms,
        from_ms: Some(1_000),
        to_ms: None,
    }
}

async fn a_token_opens_its_link_until_it_expires_is_revoked_or_the_device_leaves(mut db: TestDb) {
    let s = seeded(&db).await;
    let now = crate::now_ms();
    let a = audit("share.create");
    let made = s
        .add_share_link("acme", &link("a-n", now + 60_000), &token_hash("token-one"), &a)
        .await
        .unwrap();
    assert_eq!(
        (made.device_id.as_str(), made.from_ms, made.revoked_ms),
        ("a-n", Some(1_000), None)
    );
    let opened = s.open_share_link(&token_hash("token-one"), now).await.unwrap().unwrap();
    assert_eq!(opened, made);
    assert!(
        s.open_share_link(&token_hash("token-two"), now)
            .await
            .unwrap()
            .is_none()
    );
    // Expired.
    assert!(
        s.open_share_link(&token_hash("token-one"), now + 60_000)
            .await
            .unwrap()
            .is_none()
    );
    // Only for a device of the organization.
    let err = s
        .add_share_link("acme", &link("g-1", now + 60_000), &token_hash("t3"), &a)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

    // Revoked: once.
    s.revoke_share_link("a-n", made.id, &audit("share.revoke"))
        .await
        .unwrap();
    assert!(
        s.open_share_link(&token_hash("token-one"), now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.revoke_share_link("a-n", made.id, &audit("share.revoke"))
            .await
            .is_err()
    );
    assert!(s.share_links("a-n").await.unwrap()[0].revoked_ms.is_some());

    // The device leaves acme: its links open no more.
    s.add_share_link("acme", &link("a-s", now + 60_000), &token_hash("token-four"), &a)
        .await
        .unwrap();
    s.assign_device("a-s", "globex", &audit("device.assign")).await.unwrap();
    assert!(
        s.open_share_link(&token_hash("token-four"), now)
            .await
            .unwrap()
            .is_none()
    );
    let trail = s.audit_log(Some("acme"), None, 100).await.unwrap();
    let target = format!("a-n link {}", made.id);
    assert!(
        trail
            .iter()
            .any(|e| e.action == "share.create" && e.target.as_deref() == Some(target.as_str())),
        "the link is named in the organization's audit trail"
    );

    s.delete_org("acme", false, &audit("org.delete")).await.unwrap();
    assert!(s.share_links("a-n").await.unwrap().is_empty());
    s.close().await;
    // Nothing on disk holds a token.
    let disk = db.files_on_disk();
    for t in ["token-one", "token-four"] {
        assert!(!disk.windows(t.len()).any(|w| w == t.as_bytes()), "{t} is on disk");
    }
}

on_both_backends!(a_token_opens_its_link_until_it_expires_is_revoked_or_the_device_leaves);
