//! What the store keeps of alerts: an organization's rules (which events go where) and the
//! durable outbox of deliveries, one per rule and event, written in the transaction that stores
//! the event (`save_events`), so an event is never stored without its deliveries or delivered
//! without being stored. The daemon's `alerts` delivers them.

use crate::events::StoredEvent;
use serde::Serialize;
use trackgate_proto::Secret;

/// Where a rule's alerts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A POST to an HTTPS URL, signed with the rule's secret.
    Webhook,
    /// A message to an e-mail address.
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Channel> {
        match s {
            "webhook" => Some(Channel::Webhook),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

/// A rule as given: the daemon checks the target (URL or address) and the kinds first.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlertRule {
    pub id: String,
    /// The event kinds it takes; empty for every kind.
    pub kinds: Vec<String>,
    /// Only the events of this order group's devices.
    pub order_group_id: Option<String>,
    pub channel: Channel,
    /// The webhook's URL or the e-mail address.
    pub target: String,
}

/// A stored rule, as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    pub org_id: String,
    pub id: String,
    /// Empty: every kind.
    pub kinds: Vec<String>,
    pub order_group_id: Option<String>,
    pub channel: Channel,
    pub target: String,
    pub created_ms: i64,
    /// Its deliveries waiting, and those given up on.
    pub pending: i64,
    pub failed: i64,
}

/// A delivery due now, with what it needs: the rule's target and secret, and the event.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub org_id: String,
    pub org_name: String,
    pub rule_id: String,
    pub channel: Channel,
    pub target: String,
    /// The webhook's signing secret.
    pub secret: Option<Secret>,
    pub attempts: i64,
    pub created_ms: i64,
    pub event: StoredEvent,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Failed for now: tried again at `next_ms`.
    Retry {
        next_ms: i64,
        error: String,
    },
    /// Given up on.
    Failed {
        error: String,
    },
    /// Not sent, on purpose (an e-mail over its recipient's rate).
    Suppressed {
        reason: String,
    },
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryState {
    pub id: i64,
    pub event_id: i64,
    pub device_id: String,
    pub kind: String,
    /// `pending`, `delivered`, `failed`, `suppressed`.
    pub state: String,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub done_ms: Option<i64>,
}

/// The associated data a rule's secret is sealed with: it opens for that rule only.
pub(crate) fn secret_aad(org: &str, id: &str) -> Vec<u8> {
    format!("alert-rule\n{org}\n{id}").into_bytes()
}
