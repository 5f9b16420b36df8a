//! What the store keeps of events (the rules that compute them live in the daemon,
//! `trackgate::events`): the events themselves, stored once each; each device's cursor, how far its
//! records have been taken and what the rules remember; and the limits events are measured
//! against, set for an organization, an order group or one shipment.

use crate::StoreError;
use serde::Serialize;

/// Where a set of limits applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum LimitScope {
    /// Every device of the organization.
    Org,
    /// The devices of one order group.
    OrderGroup(String),
    /// One device's shipment.
    Device(String),
}

impl LimitScope {
    pub(crate) fn parts(&self) -> (&'static str, &str) {
        match self {
            LimitScope::Org => ("org", ""),
            LimitScope::OrderGroup(id) => ("order_group", id),
            LimitScope::Device(id) => ("device", id),
        }
    }

    pub(crate) fn from_parts(scope: &str, id: String) -> Result<LimitScope, StoreError> {
        match scope {
            "org" => Ok(LimitScope::Org),
            "order_group" => Ok(LimitScope::OrderGroup(id)),
            "device" => Ok(LimitScope::Device(id)),
            other => Err(StoreError::Inconsistent(format!("unknown limit scope {other:?}"))),
        }
    }
}

/// The limits of one scope; `None` leaves the limit to the wider scope (or off).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventLimits {
    /// `stale` when a device's newest record is older than this, milliseconds.
    pub stale_after_ms: Option<i64>,
    /// `battery_low` below this, per cent.
    pub battery_low: Option<f64>,
    /// `temperature_out` outside `[min, max]`, °C.
    pub temperature: Option<(f64, f64)>,
}

/// Bounds of the limits.
pub const STALE_AFTER_MS: std::ops::RangeInclusive<i64> = 60_000..=30 * 86_400_000;
pub const BATTERY_LOW: std::ops::RangeInclusive<f64> = 0.0..=100.0;
pub const TEMPERATURE: std::ops::RangeInclusive<f64> = -100.0..=150.0;

impl EventLimits {
    /// The limits if each is in range, else an error that names the one that is not.
    pub fn checked(self) -> Result<EventLimits, StoreError> {
        if let Some(ms) = self.stale_after_ms
            && !STALE_AFTER_MS.contains(&ms)
        {
            return Err(StoreError::InvalidLimits(format!(
                "stale_after must be from 60 s to 30 days, not {} s",
                ms / 1000
            )));
        }
        if let Some(b) = self.battery_low
            && !BATTERY_LOW.contains(&b)
        {
            return Err(StoreError::InvalidLimits(format!(
                "battery_low must be from 0 to 100 (per cent), not {b}"
            )));
        }
        if let Some((min, max)) = self.temperature
            && !(TEMPERATURE.contains(&min) && TEMPERATURE.contains(&max) && min < max)
        {
            return Err(StoreError::InvalidLimits(format!(
                "temperature must be a range min < max within -100 to 150 °C, not {min} to {max}"
            )));
        }
        Ok(self)
    }
}

/// An organization's limits at one scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopedLimits {
    #[serde(flatten)]
    pub scope: LimitScope,
    #[serde(flatten)]
    pub limits: EventLimits,
    pub updated_ms: i64,
}

/// A device as the event rules see it: its organization and the limits in force for it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSubject {
    pub org_id: String,
    pub limits: EventLimits,
}

/// How far a device's events are computed: the last record taken, and the rules' state (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct EventCursor {
    pub ts: i64,
    pub seq: i64,
    pub state: String,
    /// The device's silence was reported (and no record came since).
    pub stale: bool,
}

/// What the rules read of a stored record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventInput {
    pub ts: i64,
    pub seq: i64,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub bat: Option<f64>,
    pub tmp: Option<f64>,
    pub received_ms: i64,
}

/// An event to store, of the record `(ts, seq)`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub ts: i64,
    pub seq: i64,
    pub kind: &'static str,
    /// What the event is about (a geofence's id), or empty.
    pub subject: String,
    /// The event as JSON.
    pub detail: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// A stored event, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub org_id: String,
    pub device_id: String,
    pub ts: i64,
    pub seq: i64,
    pub kind: String,
    /// The event's own fields, by kind (`geofence`, `speed_mps`, `bat`, `tmp`, `silent_ms`).
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    pub created_ms: i64,
}

/// Which events to read: the caller's visibility applies on top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    pub org: Option<String>,
    pub device: Option<String>,
    pub kind: Option<String>,
    /// Only events with a smaller id (the next page, newest first).
    pub before_id: Option<i64>,
    pub limit: u32,
}
