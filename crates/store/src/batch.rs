//! What a committed batch changes besides its rows, whatever the backend: the rules, computed
//! in Rust from the rows and their outcomes, so that each backend only writes them.
//!
//! - Each device's latest position moves forward only: the newest positioned row, by
//!   `(ts, seq)`, that this batch stored; the backend's upsert keeps whichever is newer.
//! - Each device's position spans: for every hour of `ts` the batch stored rows in, the lowest
//!   and highest `seq` and the newest `(ts, seq)`; the backend's upsert widens the stored span.

use crate::model::{Outcome, Row};
use std::collections::HashMap;

/// The length of a span: an hour of `ts`, in milliseconds.
pub const SPAN_MS: i64 = 3_600_000;

/// The span a `ts` falls in.
pub fn span_of(ts: i64) -> i64 {
    ts.div_euclid(SPAN_MS)
}

/// What a batch stored of one device in one hour of `ts`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span<'a> {
    pub device_id: &'a str,
    pub hour: i64,
    pub min_seq: i64,
    pub max_seq: i64,
    /// The newest row by `(ts, seq)`, and its battery and temperature: what the device list shows
    /// of a device's newest record without reading the positions table.
    pub newest_ts: i64,
    pub newest_seq: i64,
    pub newest_bat: Option<f64>,
    pub newest_tmp: Option<f64>,
}

/// The rows of a batch that were newly stored.
fn inserted<'a>(rows: &'a [Row], outcomes: &'a [Outcome]) -> impl Iterator<Item = &'a Row> {
    rows.iter()
        .zip(outcomes)
        .filter(|(_, o)| **o == Outcome::Inserted)
        .map(|(r, _)| r)
}

/// Each device's newest positioned row among those the batch stored.
pub fn latest_positions<'a>(rows: &'a [Row], outcomes: &'a [Outcome]) -> Vec<&'a Row> {
    let mut newest: HashMap<&str, &Row> = HashMap::new();
    for r in inserted(rows, outcomes).filter(|r| r.measurement.position().is_some()) {
        newest
            .entry(r.device_id.as_str())
            .and_modify(|cur| {
                if (r.ts, r.seq) > (cur.ts, cur.seq) {
                    *cur = r;
                }
            })
            .or_insert(r);
    }
    newest.into_values().collect()
}

/// The spans of the rows the batch stored.
pub fn spans<'a>(rows: &'a [Row], outcomes: &'a [Outcome]) -> Vec<Span<'a>> {
    let mut spans: HashMap<(&str, i64), Span<'a>> = HashMap::new();
    for r in inserted(rows, outcomes) {
        let hour = span_of(r.ts);
        spans
            .entry((r.device_id.as_str(), hour))
            .and_modify(|s| {
                s.min_seq = s.min_seq.min(r.seq);
                s.max_seq = s.max_seq.max(r.seq);
                if (r.ts, r.seq) > (s.newest_ts, s.newest_seq) {
                    (s.newest_ts, s.newest_seq) = (r.ts, r.seq);
                    (s.newest_bat, s.newest_tmp) = (r.measurement.bat, r.measurement.tmp);
                }
            })
            .or_insert(Span {
                device_id: &r.device_id,
                hour,
                min_seq: r.seq,
                max_seq: r.seq,
                newest_ts: r.ts,
                newest_seq: r.seq,
                newest_bat: r.measurement.bat,
                newest_tmp: r.measurement.tmp,
            });
    }
    spans.into_values().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use trackgate_proto::Measurement;

    /// A row of `dev`, with a position or without.
    pub(crate) fn row(dev: &str, seq: i64, ts: i64, positioned: bool) -> Row {
        let at = positioned.then_some(1.0);
        Row {
            device_id: dev.into(),
            seq,
            ts,
            measurement: Measurement {
                lat: at,
                lon: at,
                ..Measurement::default()
            },
            ext: None,
            record: String::new(),
            kid: "k1".into(),
            received_ms: 0,
        }
    }

    #[test]
    fn spans_cover_stored_rows_by_device_and_hour() {
        let h = SPAN_MS;
        let rows = [
            row("a", 5, 10, true),
            row("a", 3, 20, true),
            row("a", 9, h + 1, false),
            // A clock that jumped back into the first hour, with a later seq.
            row("a", 12, 15, false),
            row("b", 1, 10, true),
            // A resend: not stored by this batch, so it widens nothing.
            row("b", 100, 10, true),
        ];
        let outcomes = [
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Duplicate,
        ];
        let mut got = spans(&rows, &outcomes);
        got.sort_by_key(|s| (s.device_id, s.hour));
        let span = |device_id, hour, min_seq, max_seq, newest_ts, newest_seq| Span {
            device_id,
            hour,
            min_seq,
            max_seq,
            newest_ts,
            newest_seq,
            newest_bat: None,
            newest_tmp: None,
        };
        assert_eq!(
            got,
            [
                span("a", 0, 3, 12, 20, 3),
                span("a", 1, 9, 9, h + 1, 9),
                span("b", 0, 1, 1, 10, 1),
            ]
        );
    }

    #[test]
    fn the_latest_position_is_the_newest_positioned_stored_row() {
        let rows = [
            row("a", 1, 30, true),
            row("a", 2, 40, false),
            row("a", 3, 20, true),
            row("b", 7, 5, true),
        ];
        let outcomes = [
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Inserted,
            Outcome::Conflict,
        ];
        let latest = latest_positions(&rows, &outcomes);
        assert_eq!(latest.len(), 1);
        assert_eq!((latest[0].device_id.as_str(), latest[0].seq), ("a", 1));
    }
}
