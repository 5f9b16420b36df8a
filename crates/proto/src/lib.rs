//! The trackgate ingest protocol, version 1: the contract between trackgate and the devices and
//! supplier backends that send it telemetry. Pure functions, no IO: shared by the daemon and by
//! `firmware-sim`. `docs/PROTOCOL.md` in the repository restates the contract.
//!
//! # Layout
//!
//! In the order a payload travels through it:
//!
//! - [`body`]: split an HTTPS body (JSON object, JSON array, NDJSON) or an MQTT payload into
//!   envelope texts, enforcing the body-level rules (UTF-8, no BOM, nesting depth).
//! - [`envelope`]: parse one envelope `{"m":..,"kid":..,"sig":..}` keeping the exact bytes of `m`,
//!   then run the ordered checks of PROTOCOL.md §2 against the device's keys ([`envelope::Parsed`]).
//! - [`sign`]: HMAC-SHA256 for records, requests and MQTT passwords, compared in constant time.
//! - [`record`]: field rules of §1, turning verified bytes into a typed [`record::Record`].
//! - [`reason`]: the stable rejection reason strings.
//! - [`ids`], [`secret`]: principal ids, key ids and 32-byte secrets.
//! - [`topic`]: MQTT topic names.
#![forbid(unsafe_code)]

pub mod body;
pub mod envelope;
pub mod ids;
mod json;
pub mod reason;
pub mod record;
pub mod secret;
pub mod sign;
pub mod topic;

pub use envelope::{DeviceView, Origin, Parsed};
pub use reason::Reason;
pub use record::{Measurement, Record};
pub use secret::Secret;

/// Largest record (`m` as transmitted), in bytes.
pub const MAX_RECORD_BYTES: usize = 4096;
/// Largest envelope, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 8192;
/// Largest `ext` object as transmitted, in bytes.
pub const MAX_EXT_BYTES: usize = 1024;
/// Deepest JSON nesting accepted in a body.
pub const MAX_NESTING: usize = 32;
/// Most envelopes in one MQTT payload.
pub const MAX_MQTT_ENVELOPES: usize = 1000;
/// How far a record's `ts` may be ahead of the receiver's clock, in milliseconds.
pub const MAX_FUTURE_MS: u64 = 5 * 60 * 1000;
/// How far a request's `X-TG-Timestamp` may be from the receiver's clock, in seconds.
pub const REQUEST_WINDOW_SECS: u64 = 300;
/// Largest `seq` and `ts` (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
