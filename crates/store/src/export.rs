//! An organization's data as it leaves: the rows of each part, handed one at a time to an
//! [`ExportSink`] (the daemon writes them as NDJSON files into an archive), so an export never
//! holds more than a page of rows in memory.
//!
//! Parts, in order: `organization`, `order_groups`, `user_groups` (with their scope and
//! membership rules), `geofences`, `event_limits`, `alert_rules` (never a webhook's secret),
//! `devices` (assignment and shipment; never a
//! key), `positions` (each as the signed envelope the device sent: `{"m": record, "kid", "sig"}`),
//! `events` (as the events API serves them), `audit_log` (with each entry's
//! chain hashes, so the trail can be checked). A record's signature is HMAC-SHA256 under the
//! device's key, which is deterministic: it is computed again from the stored record text and
//! the sealed key, and is exactly what the device sent. With a symmetric key it proves what any
//! signature of the protocol proves: that a holder of the key (the device, or trackgate) made it.

/// Where exported rows go.
pub trait ExportSink {
    /// One row of `part`: one JSON document, without a newline. (Text, not a parsed value, so a
    /// record's exact bytes, which its signature covers, pass through unchanged.)
    fn row(&mut self, part: &'static str, row: &str) -> std::io::Result<()>;
}

/// The parts, in the order they are exported.
pub const PARTS: [&str; 10] = [
    "organization",
    "order_groups",
    "user_groups",
    "geofences",
    "event_limits",
    "alert_rules",
    "devices",
    "positions",
    "events",
    "audit_log",
];
