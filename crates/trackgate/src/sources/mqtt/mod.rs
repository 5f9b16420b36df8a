//! MQTT over TLS (PROTOCOL.md §3), two ways in, one way through:
//!
//! - [`endpoint`]: trackgate's own MQTT endpoint. Devices connect to trackgate, log in with their
//!   derived credentials, publish to their own telemetry topic and get each PUBACK after the
//!   commit. No broker holds anything that could be lost.
//! - [`client`]: for customers who run a broker already, trackgate consumes from it as a client
//!   with a persistent session and a shared subscription.
//!
//! Both hand every message to [`take`] (verify, queue, waiting for room) and fold its commit into
//! the device's [`Answer`]; only the transport differs.

pub mod client;
pub mod codec;
pub mod endpoint;
mod session;

pub use client::{MqttSettings, run};

use crate::metrics::Metrics;
use crate::pipeline::{Ack, Queue, Source};
use crate::verify::{Checked, Verifier};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trackgate_proto::envelope::Origin;
use trackgate_proto::{MAX_MQTT_ENVELOPES, Reason, body};
use trackgate_store::{Outcome, RejectRow};

const TRANSPORT: &str = "mqtt";

/// The largest MQTT packet accepted: 1000 envelopes of 8 KiB, with room for the array around them.
pub const MAX_PACKET_BYTES: usize = MAX_MQTT_ENVELOPES * (trackgate_proto::MAX_ENVELOPE_BYTES + 1) + 1024;

/// The 200-shaped answer published to `devices/<dev>/rejections`.
#[derive(Debug, Default, Serialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
struct Rejected {
    index: u32,
    reason: Reason,
}

impl Answer {
    /// Fold a committed message's outcomes in, and count them.
    fn settle(&mut self, outcomes: Vec<Outcome>, row_index: Vec<u32>, metrics: &Metrics) {
        for (o, index) in outcomes.into_iter().zip(row_index) {
            match o {
                Outcome::Inserted => self.accepted += 1,
                Outcome::Duplicate => self.duplicates += 1,
                Outcome::Conflict => {
                    self.rejected.push(Rejected {
                        index,
                        reason: Reason::Conflict,
                    });
                    metrics.rejections.with_label_values(&[TRANSPORT, "conflict"]).inc();
                    metrics.records.with_label_values(&[TRANSPORT, "rejected"]).inc();
                }
            }
        }
        self.rejected.sort_by_key(|r| r.index);
        count_records(metrics, "accepted", self.accepted);
        count_records(metrics, "duplicate", self.duplicates);
    }
}

/// Count `n` records of an `outcome` (a message's counts are often 0: no lookup then).
fn count_records(metrics: &Metrics, outcome: &str, n: u64) {
    if n > 0 {
        metrics.records.with_label_values(&[TRANSPORT, outcome]).inc_by(n);
    }
}

/// A message taken in: what was rejected before the queue, and the commit of the rest.
struct Taken {
    answer: Answer,
    /// `None` when nothing of the message needs writing.
    rows: Option<(Ack, Vec<u32>)>,
}

/// Why a message could not be taken in.
enum NotTaken {
    /// The key store did not answer: the message is left for the device or broker to send again.
    KeyStore(trackgate_store::StoreError),
    /// Shutting down.
    Stopping,
}

/// Verify a message published on `device`'s telemetry topic and queue its verified records,
/// waiting while the store refuses work or the queue is full.
async fn take(
    payload: &[u8],
    device: Option<&str>,
    verifier: &Verifier,
    queue: &Queue,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<Taken, NotTaken> {
    let checked = check(payload, device, verifier).await.map_err(NotTaken::KeyStore)?;
    let mut answer = Answer::default();
    for &(index, reason) in &checked.rejected {
        answer.rejected.push(Rejected { index, reason });
        metrics
            .rejections
            .with_label_values(&[TRANSPORT, reason.as_str()])
            .inc();
    }
    count_records(metrics, "rejected", checked.rejected.len() as u64);
    if checked.rows.is_empty() && checked.rejects.is_empty() {
        return Ok(Taken { answer, rows: None });
    }
    let row_index = checked.row_index.clone();
    let source = Source {
        transport: TRANSPORT,
        key_name: device.map(str::to_owned),
    };
    let ack = tokio::select! {
        s = queue.submit(checked.rows, checked.row_index, checked.rejects, source, stop) => s,
        _ = stop.cancelled() => return Err(NotTaken::Stopping),
    }
    .map_err(|_closed| NotTaken::Stopping)?;
    Ok(Taken {
        answer,
        rows: Some((ack, row_index)),
    })
}

async fn check(
    payload: &[u8],
    device: Option<&str>,
    verifier: &Verifier,
) -> Result<Checked, trackgate_store::StoreError> {
    let envelopes = match body::json_envelopes(payload) {
        Ok(e) => e,
        // The whole payload is unreadable: one malformed record.
        Err(_) => return Ok(rejected_all(1, Reason::Malformed, device, payload)),
    };
    if envelopes.len() > MAX_MQTT_ENVELOPES {
        return Ok(rejected_all(envelopes.len(), Reason::TooLarge, device, payload));
    }
    let origin = Origin::Topic(device.unwrap_or(""));
    verifier.check(&envelopes, origin, TRANSPORT, device).await
}

/// Every record of a payload rejected for one reason, before any parsing of its envelopes.
fn rejected_all(n: usize, reason: Reason, device: Option<&str>, payload: &[u8]) -> Checked {
    let now = trackgate_store::now_ms();
    let text = String::from_utf8_lossy(&payload[..payload.len().min(trackgate_proto::MAX_ENVELOPE_BYTES)]).into_owned();
    Checked {
        rejected: (0..n as u32).map(|i| (i, reason)).collect(),
        rejects: vec![RejectRow {
            received_ms: now,
            transport: TRANSPORT,
            key_name: device.map(str::to_owned),
            device_id: device.map(str::to_owned),
            index: 0,
            reason: reason.as_str(),
            envelope: text,
        }],
        ..Default::default()
    }
}
