//! Whether the store is taking writes, as the writer and the disk watermark see it, and so whether
//! new work is admitted.
//!
//! Three things close the door to new work (HTTPS answers 503 with Retry-After before reading the
//! body, MQTT withholds PUBACKs by not taking the next message, `/readyz` says not ready):
//!
//! - **stalled**: the oldest write attempt that has not committed started longer ago than
//!   `ingest.stall_timeout_ms`: the database is locked, failing or full. Work already queued keeps
//!   waiting for its honest answer (committed, or 503 after `ingest.write_retry_secs`).
//! - **failing**: the last write attempt failed and none has committed since. The writer probes
//!   the store while it is idle, so the door opens by itself within a probe interval of the store
//!   coming back.
//! - **low on space**: the filesystem holding the database has less than
//!   `database.min_free_bytes` free. Refused before SQLite hits the wall, the way search engines
//!   stop taking writes at a disk watermark.
//!
//! Each episode is logged once when it starts and once when it ends, never per retry.

use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why new work is refused right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A write has not committed for longer than the stall timeout.
    Stalled,
    /// The last write failed and nothing has committed since.
    Failing,
    /// Free space under the watermark.
    LowSpace,
}

impl Refusal {
    /// For the 503 body and `/readyz`: what is wrong, never internals.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Stalled => "the database is not committing; nothing was stored, retry later",
            Refusal::Failing => "the database is failing; nothing was stored, retry later",
            Refusal::LowSpace => "the database disk is nearly full; nothing was stored, retry later",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// When the oldest write attempt that has not committed started.
    pending_since: Option<Instant>,
    /// The running failure episode: when it started, its kind and how many attempts failed.
    failing: Option<(Instant, &'static str, u64)>,
    /// Set while the stall is logged, so the log says so once.
    stall_logged: bool,
    /// Free bytes when they last fell under the watermark; `None` above it.
    low_space: Option<u64>,
}

pub struct StoreHealth {
    stall_after: Duration,
    state: Mutex<State>,
    /// Woken when the door may have opened.
    changed: Notify,
    metrics: Metrics,
}

impl StoreHealth {
    pub fn new(stall_after: Duration, metrics: Metrics) -> Self {
        for k in trackgate_store::FAILURE_KINDS {
            metrics.storage_failures.with_label_values(&[k]);
        }
        StoreHealth {
            stall_after,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            metrics,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse new work? Checked by every source before it takes a request or message.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal_at(Instant::now())
    }

    fn refusal_at(&self, now: Instant) -> Option<Refusal> {
        let s = self.state();
        if s.low_space.is_some() {
            Some(Refusal::LowSpace)
        } else if s.failing.is_some() {
            Some(Refusal::Failing)
        } else if s
            .pending_since
            .is_some_and(|t| now.saturating_duration_since(t) > self.stall_after)
        {
            Some(Refusal::Stalled)
        } else {
            None
        }
    }

    /// Wait until new work is admitted (MQTT: the device's or broker's in-flight window holds the
    /// backlog meanwhile), or `stop` is cancelled.
    pub async fn admitted(&self, stop: &CancellationToken) {
        while self.refusal().is_some() {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// The writer starts a write attempt.
    pub fn write_started(&self) {
        let mut s = self.state();
        s.pending_since.get_or_insert_with(Instant::now);
    }

    /// A write attempt ended without a commit for a reason of its batch, not of the store (the
    /// database rejected its statement): nothing is pending, and the store's state stands.
    pub fn write_rejected(&self) {
        self.state().pending_since = None;
    }

    /// A write attempt failed.
    pub fn write_failed(&self, e: &trackgate_store::StoreError) {
        let kind = e.failure_kind();
        self.metrics.storage_failures.with_label_values(&[kind]).inc();
        let mut s = self.state();
        match &mut s.failing {
            Some((_, _, attempts)) => *attempts += 1,
            None => {
                tracing::error!(kind, error = %e, "storage failing: nothing more is acknowledged and new work is refused until a write commits");
                s.failing = Some((Instant::now(), kind, 1));
                self.metrics.storage_failing.set(1);
            }
        }
    }

    /// A write committed: whatever was wrong is over.
    pub fn write_committed(&self) {
        let mut s = self.state();
        s.pending_since = None;
        if s.stall_logged {
            s.stall_logged = false;
            tracing::info!("storage commits again after a stall");
        }
        if let Some((since, kind, attempts)) = s.failing.take() {
            tracing::info!(
                kind,
                failed_attempts = attempts,
                after_ms = since.elapsed().as_millis() as u64,
                "storage recovered: writes commit again"
            );
            self.metrics.storage_failing.set(0);
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// Is a failure episode running (the writer probes the store while idle)?
    pub fn is_failing(&self) -> bool {
        self.state().failing.is_some()
    }

    /// Record the free space just measured against the watermark.
    pub fn set_free_space(&self, free: u64, min_free: u64) {
        self.metrics.storage_free_bytes.set(free as i64);
        let mut s = self.state();
        match (s.low_space, free < min_free) {
            (None, true) => {
                tracing::error!(
                    free_bytes = free,
                    min_free_bytes = min_free,
                    "database disk under `database.min_free_bytes`: new work is refused until space is freed"
                );
                s.low_space = Some(free);
            }
            (Some(_), false) => {
                tracing::info!(free_bytes = free, "database disk has room again: new work is admitted");
                s.low_space = None;
                drop(s);
                self.changed.notify_waiters();
            }
            _ => {}
        }
    }

    /// Log a stall once, and keep the gauges current. Called by the monitor.
    fn tick(&self) {
        let refusal = self.refusal();
        self.metrics.ready.set(i64::from(refusal.is_none()));
        if refusal == Some(Refusal::Stalled) {
            let mut s = self.state();
            if !s.stall_logged {
                s.stall_logged = true;
                let for_ms = s.pending_since.map_or(0, |t| t.elapsed().as_millis() as u64);
                tracing::error!(
                    for_ms,
                    "storage stalled: a write has not committed; new work is refused"
                );
            }
        }
        self.metrics
            .storage_stalled
            .set(i64::from(refusal == Some(Refusal::Stalled)));
    }

    /// Measure free space every `every` and keep the state's gauges and log current, until `stop`.
    pub async fn monitor(&self, disk: Option<DiskWatch>, every: Duration, stop: CancellationToken) {
        if let Some(d) = &disk {
            self.metrics.storage_min_free_bytes.set(d.min_free as i64);
        }
        let mut warned = false;
        loop {
            if let Some(d) = &disk {
                match free_bytes(&d.dir) {
                    Ok(free) => self.set_free_space(free, d.min_free),
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(dir = %d.dir.display(), error = %e, "cannot measure free space of the database disk");
                    }
                    Err(_) => {}
                }
            }
            self.tick();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The directory whose filesystem holds the database, and the watermark under which new work is
/// refused.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    pub dir: PathBuf,
    pub min_free: u64,
}

/// Bytes available to an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(stall_ms: u64) -> StoreHealth {
        StoreHealth::new(Duration::from_millis(stall_ms), Metrics::new())
    }

    #[test]
    fn a_write_pending_past_the_stall_timeout_closes_the_door_until_it_commits() {
        let h = health(1000);
        h.write_started();
        let t0 = h.state().pending_since.unwrap();
        assert_eq!(h.refusal_at(t0 + Duration::from_millis(999)), None);
        assert_eq!(h.refusal_at(t0 + Duration::from_millis(1001)), Some(Refusal::Stalled));
        h.write_started(); // a retry keeps the first start
        assert_eq!(h.state().pending_since, Some(t0));
        h.write_committed();
        assert_eq!(h.refusal_at(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_failure_refuses_until_a_commit_and_is_one_episode() {
        let h = health(60_000);
        let e = trackgate_store::StoreError::WrongMasterKey;
        h.write_started();
        h.write_failed(&e);
        h.write_failed(&e);
        assert_eq!(h.refusal(), Some(Refusal::Failing));
        assert_eq!(h.state().failing.map(|f| f.2), Some(2));
        assert_eq!(h.metrics.storage_failing.get(), 1);
        h.write_committed();
        assert_eq!(h.refusal(), None);
        assert_eq!(h.metrics.storage_failing.get(), 0);
    }

    #[test]
    fn the_watermark_refuses_below_and_admits_above() {
        let h = health(60_000);
        h.set_free_space(10, 100);
        assert_eq!(h.refusal(), Some(Refusal::LowSpace));
        h.set_free_space(99, 100);
        assert_eq!(h.refusal(), Some(Refusal::LowSpace));
        h.set_free_space(100, 100);
        assert_eq!(h.refusal(), None);
    }

    #[test]
    fn free_space_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
