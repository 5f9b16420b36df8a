//! The live feed: positions committed, by this node's writer or (on PostgreSQL) by another node,
//! broadcast in batches to the location API's streams. Sending never waits: a stream that falls
//! behind loses its place and is closed, so a slow client can never slow ingestion.

use serde::Serialize;
use std::sync::{Arc, Mutex};
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
    /// Shared by every clone, so that `interrupt` ends the streams of all of them.
    tx: Arc<Mutex<broadcast::Sender<FeedBatch>>>,
    capacity: usize,
}

impl Feed {
    /// A feed that keeps up to `capacity` batches for a stream that is behind.
    pub fn new(capacity: usize) -> Feed {
        let capacity = capacity.max(1);
        Feed {
            tx: Arc::new(Mutex::new(broadcast::channel(capacity).0)),
            capacity,
        }
    }

    fn sender(&self) -> broadcast::Sender<FeedBatch> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FeedBatch> {
        self.sender().subscribe()
    }

    /// Is any stream listening?
    pub fn has_subscribers(&self) -> bool {
        self.sender().receiver_count() > 0
    }

    /// Publish the rows of a committed batch that were newly stored and carry a position.
    pub fn publish(&self, rows: &[Row], outcomes: &[Outcome]) {
        if !self.has_subscribers() {
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
        self.publish_positions(batch);
    }

    /// Publish positions another node committed.
    pub fn publish_positions(&self, batch: Vec<FeedPosition>) {
        if !batch.is_empty() {
            // No receiver left is not an error.
            let _ = self.sender().send(Arc::new(batch));
        }
    }

    /// Positions may have been missed (the link to the other nodes' commits was down): end every
    /// stream, so its client reconnects and reloads, as a stream that falls behind does.
    pub fn interrupt(&self) {
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = broadcast::channel(self.capacity).0;
    }
}

/// Feed the positions other nodes commit (PostgreSQL) to this node's streams, and their devices
/// to the event processor, until `stop`. Positions are read back only while a stream listens; a
/// gap in the notifications ends the streams, whose clients reconnect and reload what they show,
/// and has the event processor look at every device.
pub async fn follow_other_nodes(
    mut follower: trackgate_store::CommitFollower,
    store: trackgate_store::Store,
    feed: Feed,
    events: crate::events::Dirty,
    stop: tokio_util::sync::CancellationToken,
) {
    use trackgate_store::Followed;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = follower.next() => next,
        };
        if let Ok(Followed::Stored(ranges)) = &next {
            events.mark(ranges.iter().map(|r| r.device.as_str()));
        } else {
            events.mark_all();
        }
        match next {
            Ok(Followed::Stored(ranges)) if feed.has_subscribers() => match store.positions_in(&ranges).await {
                Ok(fixes) => feed.publish_positions(
                    fixes
                        .into_iter()
                        .map(|(device_id, fix)| FeedPosition { device_id, fix })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read another node's positions; live streams are restarted");
                    feed.interrupt();
                }
            },
            Ok(Followed::Stored(_)) => {}
            Ok(Followed::Gap) => {
                tracing::warn!("lost the other nodes' commit notifications for a while; live streams are restarted");
                feed.interrupt();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the other nodes' commits; trying again");
                feed.interrupt();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
