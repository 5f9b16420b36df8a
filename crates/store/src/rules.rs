//! The store's rules that do not depend on a backend: which ids and texts are accepted, how
//! many keys a principal may hold, what a membership rule may say, and what a sealed key is
//! bound to. Each backend applies them before it writes.

use crate::StoreError;
use crate::access::{Rule, RuleKind};
use trackgate_proto::ids;

/// Longest name, label or rule value accepted.
pub(crate) const MAX_TEXT: usize = 200;

/// Active keys a device or supplier may hold at once: the current one and its successor, so a
/// key can be rotated without a gap (PROTOCOL.md §4).
pub(crate) const MAX_ACTIVE_KEYS: i64 = 2;

/// A device, supplier, organization, group or key id.
pub(crate) fn check_id(what: &'static str, value: &str) -> Result<(), StoreError> {
    let (ok, max) = if what == "key id" {
        (ids::is_valid_kid(value), 32)
    } else {
        (ids::is_valid_id(value), 64)
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            what,
            value: value.to_owned(),
            max,
        })
    }
}

/// A name, label or rule value: not blank, at most [`MAX_TEXT`] bytes, no control characters.
pub(crate) fn check_text(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(StoreError::InvalidText { what, max: MAX_TEXT });
    }
    Ok(())
}

/// A membership rule, normalized: its value as stored, or why it is refused.
pub(crate) fn checked_rule(rule: &Rule) -> Result<String, StoreError> {
    let value = rule.kind.normalize(&rule.value);
    check_text("rule value", &value)?;
    if rule.kind == RuleKind::Email && !value.contains('@') {
        return Err(StoreError::InvalidText {
            what: "email rule (needs an @)",
            max: MAX_TEXT,
        });
    }
    if rule.kind == RuleKind::Domain && value.contains('@') {
        return Err(StoreError::InvalidText {
            what: "domain rule (a domain, without @)",
            max: MAX_TEXT,
        });
    }
    Ok(value)
}

/// Room for one more active key beside the `active` ones `owner` holds.
pub(crate) fn check_key_room(owner: &str, active: i64) -> Result<(), StoreError> {
    if active >= MAX_ACTIVE_KEYS {
        return Err(StoreError::TooManyKeys(owner.to_owned()));
    }
    Ok(())
}

/// What a sealed key is bound to: its owner and id, so a sealed secret moved to another row
/// does not open.
pub(crate) fn key_aad(owner: &str, kid: &str) -> Vec<u8> {
    format!("trackgate key\n{owner}/{kid}").into_bytes()
}
