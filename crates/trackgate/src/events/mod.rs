//! Events, computed after commit from what was stored: geofence `enter` and `exit`, GPS `jump`,
//! `battery_low`, `temperature_out` and `stale`.
//!
//! - [`rules`]: what turns one device's records, taken in `(ts, seq)` order, into events. Pure,
//!   with the device's state as plain data.
//! - [`processor`]: runs the rules over committed records and stores the events, each once. The
//!   writer (and, on PostgreSQL, other nodes' commit notifications) mark devices [`Dirty`]; one
//!   node at a time (a database lock) takes each dirty device's records after its cursor, once
//!   they have settled, and stores the events with the moved cursor in one transaction.

pub mod processor;
pub mod rules;

pub use processor::{Dirty, EventSettings};
pub use rules::{Event, KINDS, Rules};
