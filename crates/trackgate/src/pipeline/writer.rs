//! The writer: gathers submissions into a batch until it holds `batch_max_rows` rows or
//! `batch_linger` has passed since its first submission, writes the batch in one transaction,
//! and only then answers each submission and gives its room in the queue back. With the default
//! linger of 0 this is group commit: a batch is whatever queued up while the previous commit ran,
//! so a lone record commits at once and a busy queue still makes large commits.
//!
//! Up to `concurrent_batches` batches are written at once, each in its own transaction: one on
//! SQLite, which has one writer; one by default on PostgreSQL too, where more may be set: a
//! batch's locks on its devices' marks serialize only the batches that share a device, and each
//! transaction gets a server process of its own.
//!
//! Every attempt is reported to [`StoreHealth`]: a failing or stalled store closes the door to new
//! work, and a commit (of a batch, or of the probe the writer sends while idle and failing) opens
//! it again.

use super::health::StoreHealth;
use super::queue::{Submission, WriteFailed};
use crate::events::Dirty;
use crate::feed::Feed;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trackgate_store::{Outcome, RejectRow, Row, Store};

#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub batch_max_rows: usize,
    pub batch_linger: Duration,
    /// How long a failing write is retried before its submissions are failed.
    pub write_retry: Duration,
    /// Rejected records kept; older ones are pruned now and then.
    pub rejects_keep: u64,
    /// Batches written at once, each in its own transaction.
    pub concurrent_batches: usize,
}

pub struct Writer {
    rx: mpsc::UnboundedReceiver<Submission>,
    commits: Committer,
}

/// What writing a batch needs, shared by the batches in flight.
#[derive(Clone)]
struct Committer {
    store: Store,
    permits: Arc<Semaphore>,
    metrics: Metrics,
    settings: WriterSettings,
    batches_since_prune: Arc<AtomicU32>,
    feed: Option<Feed>,
    events: Option<Dirty>,
    health: Arc<StoreHealth>,
}

/// Prune the rejects table once per this many batches.
const PRUNE_EVERY: u32 = 200;

/// While the store is failing and no work is queued, probe it this often.
const PROBE_EVERY: Duration = Duration::from_millis(500);

impl Writer {
    pub fn new(
        store: Store,
        rx: mpsc::UnboundedReceiver<Submission>,
        permits: Arc<Semaphore>,
        metrics: Metrics,
        settings: WriterSettings,
        health: Arc<StoreHealth>,
    ) -> Self {
        Writer {
            rx,
            commits: Committer {
                store,
                permits,
                metrics,
                settings,
                batches_since_prune: Arc::default(),
                feed: None,
                events: None,
                health,
            },
        }
    }

    /// Publish committed positions to `feed` (the location API's live streams).
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.commits.feed = Some(feed);
        self
    }

    /// Mark the devices of committed rows for the event processor.
    pub fn with_events(mut self, dirty: Dirty) -> Self {
        self.commits.events = Some(dirty);
        self
    }

    /// Run until `drain` is cancelled and everything queued by then is written, or until every
    /// sender is gone.
    pub async fn run(mut self, drain: CancellationToken) {
        let mut carry: Option<Submission> = None;
        let mut draining = false;
        let settings = self.commits.settings.clone();
        let mut writing: JoinSet<()> = JoinSet::new();
        loop {
            // Room for one more batch in flight.
            while writing.len() >= settings.concurrent_batches.max(1) {
                reap(writing.join_next().await);
            }
            while let Some(done) = writing.try_join_next() {
                reap(Some(done));
            }
            let first = match carry.take() {
                Some(s) => s,
                None if draining => match self.rx.try_recv() {
                    Ok(s) => s,
                    Err(_) => break,
                },
                None => tokio::select! {
                    s = self.rx.recv() => match s {
                        Some(s) => s,
                        None => break,
                    },
                    _ = drain.cancelled() => {
                        draining = true;
                        continue;
                    }
                    _ = tokio::time::sleep(PROBE_EVERY), if self.commits.health.is_failing() && writing.is_empty() => {
                        self.commits.probe().await;
                        continue;
                    }
                    done = writing.join_next(), if !writing.is_empty() => {
                        reap(done);
                        continue;
                    }
                },
            };
            let mut rows = first.rows.len();
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + settings.batch_linger;
            while rows < settings.batch_max_rows {
                // Without a linger (group commit), the batch is what is queued now: taken without
                // a timer per submission, which at 100 k messages a second is the writer's cost.
                let next = if draining || settings.batch_linger.is_zero() {
                    self.rx.try_recv().ok()
                } else {
                    tokio::select! {
                        biased;
                        s = self.rx.recv() => s,
                        _ = tokio::time::sleep_until(deadline) => None,
                        _ = drain.cancelled() => { draining = true; continue; }
                    }
                };
                let Some(s) = next else { break };
                if rows + s.rows.len() > settings.batch_max_rows {
                    carry = Some(s);
                    break;
                }
                rows += s.rows.len();
                batch.push(s);
            }
            let commits = self.commits.clone();
            writing.spawn(async move { commits.write(batch).await });
        }
        while let Some(done) = writing.join_next().await {
            reap(Some(done));
        }
        tracing::info!("writer drained");
    }
}

/// A batch's task ended; a panic in it is a bug, said loudly (its submissions were answered
/// unavailable when their senders were dropped).
fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        tracing::error!(error = %e, "a batch's write task failed");
    }
}

impl Committer {
    async fn write(&self, batch: Vec<Submission>) {
        let total_rows: usize = batch.iter().map(|s| s.rows.len()).sum();
        let mut rows: Vec<Row> = Vec::with_capacity(total_rows);
        let mut rejects: Vec<RejectRow> = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        let mut permits = 0usize;
        for mut s in batch {
            let n = s.rows.len();
            rows.append(&mut s.rows);
            rejects.append(&mut s.rejects);
            permits += s.permits as usize;
            answers.push((n, s.done, s.row_index, s.source));
        }

        let started = Instant::now();
        let result = self.write_with_retry(&rows, &rejects, started).await;
        self.metrics
            .commit_seconds
            .with_label_values(&[self.store.backend_name()])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_rows.observe(total_rows as f64);

        let mut conflicts = Vec::new();
        match result {
            Ok(outcomes) => {
                if let Some(feed) = &self.feed {
                    feed.publish(&rows, &outcomes);
                }
                if let Some(dirty) = &self.events {
                    dirty.mark_rows(&rows, &outcomes);
                }
                let mut at = 0;
                for (n, done, row_index, source) in answers {
                    let mine = outcomes[at..at + n].to_vec();
                    for (i, o) in mine.iter().enumerate() {
                        if *o == Outcome::Conflict {
                            let row = &rows[at + i];
                            tracing::warn!(device = %row.device_id, seq = row.seq, reason = "conflict", "record differs from the one stored with the same (device, seq)");
                            conflicts.push(RejectRow {
                                received_ms: row.received_ms,
                                transport: source.transport,
                                key_name: source.key_name.clone(),
                                device_id: Some(row.device_id.clone()),
                                index: i64::from(row_index[i]),
                                reason: "conflict",
                                envelope: row.record.clone(),
                            });
                        }
                    }
                    at += n;
                    let _ = done.send(Ok(mine));
                }
            }
            Err(WriteFailed) => {
                for (_, done, _, _) in answers {
                    let _ = done.send(Err(WriteFailed));
                }
            }
        }
        self.permits.add_permits(permits);
        self.metrics.queue_depth.sub(permits as i64);

        // Conflicts are rare; they are kept for supplier support in a small transaction of their own.
        if !conflicts.is_empty()
            && let Err(e) = self.store.write_batch(&[], &conflicts).await
        {
            tracing::warn!(error = %e, "cannot keep conflict rejects");
        }
        if self.batches_since_prune.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            self.batches_since_prune.store(0, Ordering::Relaxed);
            if let Err(e) = self.store.prune_rejects(self.settings.rejects_keep).await {
                tracing::warn!(error = %e, "cannot prune the rejects table");
            }
        }
    }

    /// Nothing is queued while the store is failing (new work is refused): find out whether it
    /// takes writes again.
    async fn probe(&self) {
        self.health.write_started();
        match self.store.probe_write().await {
            Ok(()) => self.health.write_committed(),
            Err(e) => self.health.write_failed(&e),
        }
    }

    async fn write_with_retry(
        &self,
        rows: &[Row],
        rejects: &[RejectRow],
        started: Instant,
    ) -> Result<Vec<Outcome>, WriteFailed> {
        let mut backoff = Duration::from_millis(50);
        loop {
            self.health.write_started();
            match self.store.write_batch(rows, rejects).await {
                Ok(outcomes) => {
                    self.health.write_committed();
                    return Ok(outcomes);
                }
                Err(e) => {
                    self.metrics.database_errors.inc();
                    if !e.is_retryable() {
                        // The database works but rejects this batch, and would again: answer
                        // now. The store is not failing, so admission goes on.
                        self.health.write_rejected();
                        tracing::error!(error = %e, rows = rows.len(), "batch rejected by the database; its requests are answered unavailable");
                        return Err(WriteFailed);
                    }
                    // The episode is logged once by the health state; retries only count.
                    self.health.write_failed(&e);
                    if started.elapsed() + backoff > self.settings.write_retry {
                        tracing::warn!(error = %e, rows = rows.len(), "batch not committed within `ingest.write_retry_secs`; its requests are answered unavailable");
                        return Err(WriteFailed);
                    }
                    tracing::debug!(error = %e, rows = rows.len(), retry_in_ms = backoff.as_millis() as u64, "batch write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
