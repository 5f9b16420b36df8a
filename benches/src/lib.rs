//! Shared inputs for the benchmarks: signed envelopes and rows shaped like real traffic.
#![forbid(unsafe_code)]

use trackgate_proto::{Secret, sign};
use trackgate_store::Row;

pub const DEVICE_KEY: [u8; 32] = [7; 32];

/// A record as a tracker writes it: position, speed, heading, accuracy, battery, temperature.
pub fn record_text(dev: &str, seq: u64, ts: u64) -> String {
    format!(
        r#"{{"dev":"{dev}","seq":{seq},"ts":{ts},"lat":60.16{seq:04},"lon":24.93{seq:04},"spd":3.2,"hdg":181.5,"acc":4.5,"bat":87,"tmp":-3.25}}"#,
        seq = seq % 10_000
    )
}

/// A compact signed envelope for that record.
pub fn envelope(dev: &str, seq: u64, ts: u64) -> String {
    sign::envelope(&Secret::from_bytes(DEVICE_KEY), Some("k1"), &record_text(dev, seq, ts))
}

/// `n` rows spread over `devices` devices, seqs starting at `first_seq`.
pub fn rows(n: usize, devices: usize, first_seq: i64, ts: i64) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let seq = first_seq + i as i64;
            let dev = format!("TRK-{:06}", i % devices);
            Row {
                record: record_text(&dev, seq as u64, ts as u64),
                device_id: dev,
                seq,
                ts: ts + i as i64,
                lat: Some(60.0 + (i % 1000) as f64 * 1e-4),
                lon: Some(24.0 + (i % 1000) as f64 * 1e-4),
                alt: None,
                spd: Some(3.2),
                hdg: Some(181.5),
                acc: Some(4.5),
                bat: Some(87.0),
                tmp: Some(-3.25),
                ext: None,
                kid: "k1".into(),
                received_ms: ts,
            }
        })
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
