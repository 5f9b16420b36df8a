//! Record verification shared by every source: parse each envelope, look up its device (one
//! store query for all of a payload's cache misses), run the contract's checks, and turn what
//! passes into rows. Nothing unverified reaches the queue.

use crate::keys::KeyCache;
use std::collections::HashMap;
use std::sync::Arc;
use trackgate_proto::Reason;
use trackgate_proto::envelope::{Clock, DeviceView, Origin, Parsed};
use trackgate_store::{Kind, Principal, RejectRow, Row, StoreError};

/// Envelopes checked between two yields to the scheduler: about 0.5 ms of work, so a request of
/// 10,000 envelopes never holds a runtime thread for its whole verification.
const YIELD_EVERY: usize = 256;

/// Kept envelopes are cut to this many bytes.
const MAX_KEPT_ENVELOPE: usize = trackgate_proto::MAX_ENVELOPE_BYTES;

pub struct Verifier {
    keys: Arc<KeyCache>,
    retention_ms: u64,
}

/// The verdict on every envelope of one payload.
#[derive(Debug, Default)]
pub struct Checked {
    /// Records that passed, ready for the queue.
    pub rows: Vec<Row>,
    /// The payload index of each row.
    pub row_index: Vec<u32>,
    /// Envelopes rejected before the queue, by payload index.
    pub rejected: Vec<(u32, Reason)>,
    /// The same rejections as kept for supplier support.
    pub rejects: Vec<RejectRow>,
}

impl Verifier {
    pub fn new(keys: Arc<KeyCache>, retention_ms: u64) -> Self {
        Verifier { keys, retention_ms }
    }

    /// Check every envelope of a payload delivered by `origin`.
    pub async fn check(
        &self,
        envelopes: &[&str],
        origin: Origin<'_>,
        transport: &'static str,
        key_name: Option<&str>,
    ) -> Result<Checked, StoreError> {
        let now_ms = trackgate_store::now_ms();
        let clock = Clock {
            now_ms: now_ms as u64,
            retention_ms: self.retention_ms,
        };
        let mut parsed: Vec<Result<Parsed<'_>, Reason>> = Vec::with_capacity(envelopes.len());
        for chunk in envelopes.chunks(YIELD_EVERY) {
            parsed.extend(chunk.iter().map(|e| Parsed::parse(e)));
            if envelopes.len() > YIELD_EVERY {
                tokio::task::yield_now().await;
            }
        }
        let devices = self.devices(&parsed).await?;

        let mut out = Checked {
            rows: Vec::with_capacity(parsed.len()),
            ..Default::default()
        };
        for (i, p) in parsed.iter().enumerate() {
            if i > 0 && i % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
            let verdict = p.as_ref().map_err(|r| *r).and_then(|p| {
                let view = devices.get(p.dev()).map(|d| DeviceView {
                    enabled: d.enabled,
                    supplier: d.supplier.as_deref(),
                    keys: &d.keys,
                });
                p.verify(origin, view, clock)
                    .map(|v| Row::new(&v.record, v.kid, now_ms))
            });
            match verdict {
                Ok(row) => {
                    out.rows.push(row);
                    out.row_index.push(i as u32);
                }
                Err(reason) => {
                    out.rejected.push((i as u32, reason));
                    out.rejects.push(RejectRow {
                        received_ms: now_ms,
                        transport,
                        key_name: key_name.map(str::to_owned),
                        device_id: p.as_ref().ok().map(|p| p.dev().to_owned()),
                        index: i as i64,
                        reason: reason.as_str(),
                        envelope: truncate(envelopes[i], MAX_KEPT_ENVELOPE).to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The provisioned devices among the records' `dev` ids. A supplier id is not a device.
    async fn devices<'p>(
        &self,
        parsed: &'p [Result<Parsed<'_>, Reason>],
    ) -> Result<HashMap<&'p str, Arc<Principal>>, StoreError> {
        let ids: Vec<&str> = parsed.iter().filter_map(|p| p.as_ref().ok().map(Parsed::dev)).collect();
        let found = self.keys.lookup(&ids).await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                found
                    .get(id)
                    .filter(|p| p.kind == Kind::Device)
                    .map(|p| (id, p.clone()))
            })
            .collect())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
