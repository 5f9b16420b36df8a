//! The bounded queue: capacity is counted in rows (rejects count too), held as semaphore permits
//! from admission until the writer has committed.

use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use trackgate_store::{Outcome, RejectRow, Row};

/// The batch holding a submission could not be committed; nothing of it was stored.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batch could not be committed")]
pub struct WriteFailed;

/// The queue cannot take the whole submission now.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the ingest queue is full")]
pub struct QueueFull;

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
}

impl Queue {
    /// A queue of `capacity` rows and the receiving end for the writer.
    pub fn new(capacity: usize, metrics: Metrics) -> (Queue, mpsc::UnboundedReceiver<Submission>, Arc<Semaphore>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(capacity));
        metrics.queue_capacity.set(capacity as i64);
        (
            Queue {
                tx,
                permits: permits.clone(),
                capacity,
                metrics,
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

    /// Admit the whole submission now, or refuse it (HTTPS: answer 503).
    pub fn try_submit(
        &self,
        rows: Vec<Row>,
        row_index: Vec<u32>,
        rejects: Vec<RejectRow>,
        source: Source,
    ) -> Result<Result<Ack, QueueClosed>, QueueFull> {
        let (sub, ack) = self.package(rows, row_index, rejects, source);
        match self.permits.try_acquire_many(sub.permits) {
            Ok(p) => p.forget(),
            Err(_) => return Err(QueueFull),
        }
        Ok(self.send(sub).map(|_| ack))
    }

    /// Wait until the whole submission fits (MQTT: the broker holds the backlog meanwhile).
    pub async fn submit(
        &self,
        rows: Vec<Row>,
        row_index: Vec<u32>,
        rejects: Vec<RejectRow>,
        source: Source,
    ) -> Result<Ack, QueueClosed> {
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
