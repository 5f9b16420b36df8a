//! The key cache: devices and suppliers with their active keys, opened, in memory.
//!
//! Filled from the store on a miss (in bulk for a request's devices), negative entries included
//! so an unknown id costs one query, not one per record. Provisioning may happen in another
//! process (the CLI), so a background task follows the store's change log and drops the entries
//! it names; a revocation takes effect within `ingest.key_refresh_ms`. The database is the truth:
//! when the cache is full it is simply emptied.

use crate::metrics::Metrics;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trackgate_store::{Principal, Store, StoreError};

/// `None` records that the id is not provisioned.
type Entry = Option<Arc<Principal>>;

pub struct KeyCache {
    store: Store,
    entries: DashMap<String, Entry>,
    max_entries: usize,
    metrics: Metrics,
}

impl KeyCache {
    pub fn new(store: Store, max_entries: usize, metrics: Metrics) -> Self {
        KeyCache {
            store,
            entries: DashMap::new(),
            max_entries,
            metrics,
        }
    }

    /// The cached entry, if this id has been looked up: `Some(None)` means "not provisioned".
    pub fn cached(&self, id: &str) -> Option<Entry> {
        self.entries.get(id).map(|e| e.value().clone())
    }

    /// One principal, from the cache or the store.
    pub async fn get(&self, id: &str) -> Result<Entry, StoreError> {
        if let Some(e) = self.cached(id) {
            return Ok(e);
        }
        Ok(self.lookup(&[id]).await?.remove(id))
    }

    /// The provisioned principals among `ids`, from the cache, with one store query for all the
    /// misses. The answer is self-contained: an invalidation racing with it cannot turn a known
    /// device into an unknown one.
    pub async fn lookup(&self, ids: &[&str]) -> Result<HashMap<String, Arc<Principal>>, StoreError> {
        let mut out = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        for id in ids {
            match self.entries.get(*id) {
                Some(e) => {
                    if let Some(p) = e.value() {
                        out.entry((*id).to_owned()).or_insert_with(|| p.clone());
                    }
                }
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        missing.sort_unstable();
        missing.dedup();
        let mut found = self.store.principals(&missing).await?;
        if self.entries.len() + missing.len() > self.max_entries {
            self.entries.clear();
        }
        for id in missing {
            let entry = found.remove(id).map(Arc::new);
            if let Some(p) = &entry {
                out.insert(id.to_owned(), p.clone());
            }
            self.entries.insert(id.to_owned(), entry);
        }
        self.metrics.key_cache_entries.set(self.entries.len() as i64);
        Ok(out)
    }

    pub fn invalidate(&self, id: &str) {
        self.entries.remove(id);
    }

    /// Follow the store's change log until cancelled, dropping the entries it names.
    pub async fn follow_changes(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut cursor = loop {
            match self.store.change_cursor().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the provisioning change log; retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        };
        // Anything cached before the cursor was read could be stale: start clean.
        self.entries.clear();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.store.changes_since(cursor).await {
                Ok((ids, next)) => {
                    for id in &ids {
                        self.invalidate(id);
                    }
                    if !ids.is_empty() {
                        tracing::debug!(changed = ids.len(), "provisioning changes picked up");
                    }
                    cursor = next;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the provisioning change log"),
            }
            self.metrics.key_cache_entries.set(self.entries.len() as i64);
        }
    }
}
