//! What crosses the storage boundary.

use trackgate_proto::envelope::ActiveKey;
use trackgate_proto::{Measurement, Record};

/// A verified record, owned, ready to be written. Built once per record on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub device_id: String,
    pub seq: i64,
    pub ts: i64,
    pub measurement: Measurement,
    pub ext: Option<String>,
    /// The record exactly as signed.
    pub record: String,
    /// The key that signed it.
    pub kid: String,
    pub received_ms: i64,
}

impl Row {
    pub fn new(r: &Record<'_>, kid: &str, received_ms: i64) -> Self {
        // seq and ts are at most 2^53 - 1, so they fit i64.
        Row {
            device_id: r.dev.to_owned(),
            seq: r.seq as i64,
            ts: r.ts as i64,
            measurement: r.measurement,
            ext: r.ext.map(str::to_owned),
            record: r.text.to_owned(),
            kid: kid.to_owned(),
            received_ms,
        }
    }
}

/// What happened to a row in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Newly stored.
    Inserted,
    /// Already stored with the same content: acknowledged, not stored again.
    Duplicate,
    /// `(device, seq)` already stored with different content: rejected, the stored row kept.
    Conflict,
}

/// A rejected record kept for supplier support.
#[derive(Debug, Clone)]
pub struct RejectRow {
    pub received_ms: i64,
    /// `https` or `mqtt`.
    pub transport: &'static str,
    /// The request key (`owner/kid`) or MQTT client that delivered it, if known.
    pub key_name: Option<String>,
    /// The device the record claims, if it got that far.
    pub device_id: Option<String>,
    pub index: i64,
    pub reason: &'static str,
    /// The envelope as received, cut at 8 KiB.
    pub envelope: String,
}

/// Devices and suppliers share one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Supplier,
    Device,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Supplier => "supplier",
            Kind::Device => "device",
        }
    }

    pub(crate) fn parse(s: &str) -> Kind {
        if s == "supplier" { Kind::Supplier } else { Kind::Device }
    }
}

/// What authentication needs to know of a principal: never leaves the process.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub kind: Kind,
    pub enabled: bool,
    pub supplier: Option<String>,
    pub keys: Vec<ActiveKey>,
}

/// A principal as listed to an administrator: no secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrincipalInfo {
    pub id: String,
    pub kind: &'static str,
    pub supplier: Option<String>,
    pub enabled: bool,
    pub created_ms: i64,
    pub keys: Vec<KeyInfo>,
}

/// A key as listed to an administrator: no secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub active: bool,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A stored position, as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredPosition {
    pub device_id: String,
    pub seq: i64,
    pub ts: i64,
    pub measurement: Measurement,
    pub ext: Option<String>,
    pub record: String,
}
