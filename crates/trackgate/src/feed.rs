//! The live feed: positions the writer has committed, broadcast in batches to the location API's
//! streams. Sending never waits: a stream that falls behind loses its place and is closed, so a
//! slow client can never slow ingestion.

use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;
use trackgate_store::{Fix, Outcome, Row};

/// A newly committed position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedPosition {
    pub device_id: String,
    #[serde(flatten)]
    pub fix: Fix,
}

pub type FeedBatch = Arc<Vec<FeedPosition>>;

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<FeedBatch>,
}

impl Feed {
    /// A feed that keeps up to `capacity` batches for a stream that is behind.
    pub fn new(capacity: usize) -> Feed {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Feed { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedBatch> {
        self.tx.subscribe()
    }

    /// Publish the rows of a committed batch that were newly stored and carry a position.
    pub fn publish(&self, rows: &[Row], outcomes: &[Outcome]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let batch: Vec<FeedPosition> = rows
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| **o == Outcome::Inserted)
            .filter_map(|(r, _)| {
                Some(FeedPosition {
                    device_id: r.device_id.clone(),
                    fix: Fix::new(r.seq, r.ts, r.measurement)?,
                })
            })
            .collect();
        if !batch.is_empty() {
            // No receiver left is not an error.
            let _ = self.tx.send(Arc::new(batch));
        }
    }
}
