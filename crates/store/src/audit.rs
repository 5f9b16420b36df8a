//! The audit log's tamper evidence and its personal data.
//!
//! Each entry carries `hash = SHA-256("tg-audit-v1" || prev_hash || digest)`, where `prev_hash`
//! (stored too) is the hash of the entry before it (32 zero bytes for the first), and, when it
//! belongs to an organization, `org_hash`, the same over the organization's previous entry
//! (`"tg-audit-org-v1"`), so an organization's admins can have their own entries proved without
//! seeing anyone else's. A change to an entry breaks its hash; a removal or a reordering breaks
//! the link of the entry after it. Removing the newest entries leaves no trace in the chain
//! itself: `trackgate audit verify` prints the head (id and hash) to be noted elsewhere.
//!
//! The digest covers every field, but the personal ones (the operator's e-mail, the remote
//! address) only as `hmac:<hex of HMAC-SHA256 under a key derived from the master key>`. After
//! `retention.audit_personal_days` the purge replaces those fields in place by exactly that text,
//! so an old entry still shows that the same person acted twice without saying who, and its hash
//! still verifies. This replacement is the audit log's one exception to append-only; the
//! database's triggers allow no other change and no deletion.

use crate::MasterKey;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) const PSEUDONYM_PREFIX: &str = "hmac:";

/// The fields an entry's digest covers, as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub actor_email: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    pub over_ride: bool,
}

/// A personal field as the digest (and, once past its period, the row) holds it.
pub(crate) fn pseudonym(master: &MasterKey, value: &str) -> String {
    if value.starts_with(PSEUDONYM_PREFIX) {
        return value.to_owned();
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master.audit_key()).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    format!("{PSEUDONYM_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn push(h: &mut Sha256, v: Option<&str>) {
    match v {
        None => h.update([0]),
        Some(s) => {
            h.update([1]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The digest of an entry: every field, length-prefixed, the personal ones as pseudonyms.
pub(crate) fn digest(master: &MasterKey, f: &Fields<'_>) -> [u8; 32] {
    let email = f.actor_email.map(|v| pseudonym(master, v));
    let addr = f.remote_addr.map(|v| pseudonym(master, v));
    let mut h = Sha256::new();
    h.update(f.at_ms.to_be_bytes());
    push(&mut h, Some(f.actor));
    push(&mut h, email.as_deref());
    push(&mut h, f.org_id);
    push(&mut h, Some(f.action));
    push(&mut h, f.target);
    push(&mut h, f.detail);
    push(&mut h, addr.as_deref());
    h.update([u8::from(f.over_ride)]);
    h.finalize().into()
}

/// The link of an entry after `prev` (`None`: the first) in the whole log.
pub(crate) fn link(prev: Option<&[u8]>, digest: &[u8; 32]) -> [u8; 32] {
    chain(b"tg-audit-v1", prev, digest)
}

/// The link of an entry after `prev` among its organization's entries.
pub(crate) fn org_link(prev: Option<&[u8]>, digest: &[u8; 32]) -> [u8; 32] {
    chain(b"tg-audit-org-v1", prev, digest)
}

fn chain(domain: &[u8], prev: Option<&[u8]>, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(prev.unwrap_or(&[0; 32]));
    h.update(digest);
    h.finalize().into()
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditVerdict {
    /// Entries checked (of the organization, when one was named).
    pub entries: u64,
    /// The newest entry checked and its hash (hex): note it elsewhere to detect a later removal
    /// of the newest entries.
    pub head: Option<(i64, String)>,
    /// The first entry that does not verify, and why.
    pub failure: Option<AuditFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditFailure {
    pub id: i64,
    pub reason: String,
}

impl AuditVerdict {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(email: Option<&'a str>) -> Fields<'a> {
        Fields {
            at_ms: 1,
            actor: "oidc:x#1",
            actor_email: email,
            org_id: Some("acme"),
            action: "rule.add",
            target: None,
            detail: Some("d"),
            remote_addr: Some("192.0.2.1:5"),
            over_ride: false,
        }
    }

    #[test]
    fn a_pseudonymized_entry_has_the_digest_of_its_original() {
        let k = MasterKey::from_bytes(&[7; 32]);
        let p = pseudonym(&k, "boss@acme.example");
        assert!(p.starts_with("hmac:") && p.len() == 5 + 64);
        assert_eq!(pseudonym(&k, "boss@acme.example"), p, "the same person hashes the same");
        assert_eq!(pseudonym(&k, &p), p);
        let addr = pseudonym(&k, "192.0.2.1:5");
        let mut hashed = fields(Some(&p));
        hashed.remote_addr = Some(&addr);
        assert_eq!(digest(&k, &fields(Some("boss@acme.example"))), digest(&k, &hashed));
        // Another key, another pseudonym; another field value, another digest.
        assert_ne!(pseudonym(&MasterKey::from_bytes(&[8; 32]), "boss@acme.example"), p);
        assert_ne!(
            digest(&k, &fields(Some("x@acme.example"))),
            digest(&k, &fields(Some(&p)))
        );
        assert_ne!(digest(&k, &fields(None)), digest(&k, &fields(Some(""))));
    }
}
