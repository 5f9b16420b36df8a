//! The bounded queue: capacity is counted in rows (rejects count too), held as semaphore permits
//! from admission until the writer has committed.

use super::health::{Refusal, StoreHealth};
use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use trackgate_store::{Outcome, RejectRow, Row};

/// The batch holding a submission could not be committed; nothing of it was stored.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batch could not be committed")]
pub struct WriteFailed;

/// Why a submission was not admitted: nothing of it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the ingest queue is full; retry later")]
    Full,
    #[error("trackgate is shutting down; retry on another node or later")]
    Closed,
    #[error("{}", .0.detail())]
    Store(Refusal),
}

/// The writer has stopped (shutdown).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the ingest queue is closed")]
pub struct QueueClosed;

/// Resolves to each row's outcome, in order, once its batch is committed.
pub type Ack = oneshot::Receiver<Result<Vec<Outcome>, WriteFailed>>;

/// Where a submission came from, for the rejects kept for supplier support.
#[derive(Debug, Clone)]
pub struct Source {
    pub transport: &'static str,
    pub key_name: Option<String>,
}

/// One request's or message's verified rows and the rejections found before the queue.
pub struct Submission {
    pub rows: Vec<Row>,
    /// Index of each row in its request, for conflicts found at commit.
    pub row_index: Vec<u32>,
    pub rejects: Vec<RejectRow>,
    pub source: Source,
    pub(crate) done: oneshot::Sender<Result<Vec<Outcome>, WriteFailed>>,
    pub(crate) permits: u32,
}

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Submission>,
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: Metrics,
    health: Arc<StoreHealth>,
}

impl Queue {
    /// A queue of `capacity` rows that admits work while `health` allows, and the receiving end
    /// for the writer.
    pub fn new(
        capacity: usize,
        metrics: Metrics,
        health: Arc<StoreHealth>,
    ) -> (Queue, mpsc::UnboundedReceiver<Submission>, Arc<Semaphore>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(capacity));
        metrics.queue_capacity.set(capacity as i64);
        (
            Queue {
                tx,
                permits: permits.clone(),
                capacity,
                metrics,
                health,
            },
            rx,
            permits,
        )
    }

    fn package(
        &self,
        rows: Vec<Row>,
        row_index: Vec<u32>,
        rejects: Vec<RejectRow>,
        source: Source,
    ) -> (Submission, Ack) {
        let (done, ack) = oneshot::channel();
        // Config validation keeps the capacity at least the largest request or MQTT payload; the
        // cap only guards against waiting forever if that ever stopped holding.
        let permits = (rows.len() + rejects.len()).min(self.capacity) as u32;
        (
            Submission {
                rows,
                row_index,
                rejects,
                source,
                done,
                permits,
            },
            ack,
        )
    }

    fn send(&self, sub: Submission) -> Result<(), QueueClosed> {
        let n = sub.permits;
        self.metrics.queue_depth.add(i64::from(n));
        self.tx.send(sub).map_err(|e| {
            // Give the room back: the submission never reached the writer.
            self.permits.add_permits(e.0.permits as usize);
            self.metrics.queue_depth.sub(i64::from(n));
            QueueClosed
        })
    }

    /// The store's health, which decides admission.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Admit the whole submission now, or refuse it (HTTPS: answer 503).
    pub fn try_submit(
        &self,
        rows: Vec<Row>,
        row_index: Vec<u32>,
        rejects: Vec<RejectRow>,
        source: Source,
    ) -> Result<Ack, Refused> {
        if let Some(r) = self.health.refusal() {
            return Err(Refused::Store(r));
        }
        let (sub, ack) = self.package(rows, row_index, rejects, source);
        match self.permits.try_acquire_many(sub.permits) {
            Ok(p) => p.forget(),
            Err(_) => return Err(Refused::Full),
        }
        self.send(sub).map_err(|QueueClosed| Refused::Closed)?;
        Ok(ack)
    }

    /// Wait until the store admits work and the whole submission fits (MQTT: the device's or the
    /// broker's in-flight window holds the backlog meanwhile), or `stop` is cancelled.
    pub async fn submit(
        &self,
        rows: Vec<Row>,
        row_index: Vec<u32>,
        rejects: Vec<RejectRow>,
        source: Source,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Ack, QueueClosed> {
        self.health.admitted(stop).await;
        if stop.is_cancelled() {
            return Err(QueueClosed);
        }
        let (sub, ack) = self.package(rows, row_index, rejects, source);
        self.permits
            .acquire_many(sub.permits)
            .await
            .map_err(|_| QueueClosed)?
            .forget();
        self.send(sub)?;
        Ok(ack)
    }
}
