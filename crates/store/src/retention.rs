//! How long data is kept, and what a purge removed.
//!
//! Positions are kept for the service's retention (`ingest.retention_days`, which also refuses
//! older records at ingest), or for less where an organization's admins chose less, within the
//! operator's lower bound. A device assigned to no organization keeps the service's retention.
//! Reads never show a position past its organization's retention, whether or not the purge has
//! removed it yet.
//!
//! The purge ([`crate::Store::purge`]) runs once across the nodes at a time and never holds a
//! long transaction: on PostgreSQL it first drops whole monthly partitions past the longest
//! retention in force (detached concurrently, so no writer waits on a lock), then, device by
//! device, deletes expired rows through each hour's seq range (`position_spans`) and the
//! `(device_id, seq)` index, committing every `batch_rows` rows or so; SQLite takes the same row
//! path, its transactions interleaving with the writer's. Latest positions past their retention
//! and rejected records past theirs go too.

use serde::Serialize;

pub const DAY_MS: i64 = 86_400_000;

/// The operator's retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Positions are kept this long unless their organization keeps them for less.
    pub positions_days: u32,
    /// The least an organization may choose.
    pub min_positions_days: u32,
    /// Rejected records (they hold the raw envelopes) are kept this long.
    pub rejects_days: u32,
    /// Rows a purge deletes per transaction, about.
    pub batch_rows: u32,
    /// The audit log's personal fields are replaced by their pseudonyms after this many days.
    pub audit_personal_days: u32,
    /// Audit entries are kept this long.
    pub audit_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            positions_days: 365,
            min_positions_days: 1,
            rejects_days: 30,
            batch_rows: 5000,
            audit_personal_days: 30,
            audit_days: 730,
        }
    }
}

impl Retention {
    /// The days positions of an organization that chose `chosen` (or nothing) are kept.
    pub fn positions_days_for(&self, chosen: Option<u32>) -> u32 {
        chosen.map_or(self.positions_days, |d| d.min(self.positions_days))
    }

    /// Is `days` a retention an organization may choose?
    pub(crate) fn check_choice(&self, days: u32) -> Result<(), crate::StoreError> {
        if (self.min_positions_days..=self.positions_days).contains(&days) {
            Ok(())
        } else {
            Err(crate::StoreError::OutOfRange {
                what: "positions_retention_days",
                value: i64::from(days),
                min: i64::from(self.min_positions_days),
                max: i64::from(self.positions_days),
            })
        }
    }
}

/// The cutoff of a retention of `days` at `now_ms`: records with `ts` below it are expired.
pub fn cutoff(now_ms: i64, days: u32) -> i64 {
    now_ms.saturating_sub(i64::from(days) * DAY_MS)
}

/// What one purge removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurgeReport {
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Per organization, and one entry with no `org_id` for devices assigned to none.
    pub organizations: Vec<OrgPurge>,
    /// Whole partitions dropped (PostgreSQL).
    pub partitions: Vec<DroppedPartition>,
    /// Rejected records removed.
    pub rejects: u64,
    /// Audit entries whose personal fields were replaced by pseudonyms.
    pub audit_pseudonymized: u64,
    /// Audit entries past `audit_days`, removed.
    pub audit_removed: u64,
}

impl PurgeReport {
    pub fn positions(&self) -> u64 {
        self.organizations.iter().map(|o| o.positions).sum()
    }
}

/// What a purge removed of one organization's data (`org_id` `None`: devices assigned to none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgPurge {
    pub org_id: Option<String>,
    pub retention_days: u32,
    /// Records with `ts` below this were expired.
    pub cutoff_ms: i64,
    /// Positions removed, by row deletes and with dropped partitions.
    pub positions: u64,
    /// Latest positions removed.
    pub latest: u64,
    /// Events removed (by the `ts` of the record that gave them).
    pub events: u64,
}

/// A partition dropped whole, and how many rows it held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroppedPartition {
    pub name: String,
    pub rows: u64,
}

/// What deleting an organization removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrgDeletion {
    pub org_id: String,
    /// Its devices: unassigned, or deleted with their keys when `devices_deleted`.
    pub devices: u64,
    pub devices_deleted: bool,
    pub positions: u64,
    pub latest_positions: u64,
    pub order_groups: u64,
    pub user_groups: u64,
    pub membership_rules: u64,
    pub geofences: u64,
    /// Its events, the event limits and alert rules it had set (with their deliveries).
    pub events: u64,
    pub event_limits: u64,
    pub alert_rules: u64,
}
