//! trackgate's storage boundary. Everything that touches SQL lives here; the daemon sees only
//! [`Store`], so a PostgreSQL backend slots in beside SQLite without touching sources or pipeline.
//!
//! # Layout
//!
//! - [`model`]: what crosses the boundary: [`Row`] in, [`Outcome`] out, principals and keys.
//! - [`crypto`]: key secrets sealed with AES-256-GCM under the [`MasterKey`].
//! - `sqlite`: the embedded backend: WAL, one writer, multi-row inserts, embedded migrations.
//!
//! The write path is [`Store::write_batch`]: one transaction inserts the rows
//! (`ON CONFLICT DO NOTHING`), classifies the ones not inserted as duplicates or conflicts by
//! comparing the stored record text, moves each device's latest position forward in `ts` only,
//! and keeps the batch's rejected records.
#![forbid(unsafe_code)]

pub mod crypto;
mod error;
pub mod model;
mod sqlite;

pub use crypto::MasterKey;
pub use error::StoreError;
pub use model::{Kind, Outcome, Principal, PrincipalInfo, RejectRow, Row, StoredPosition};
pub use sqlite::SqliteOptions;

use std::collections::HashMap;
use trackgate_proto::Secret;

/// The database, whichever backend it is.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
}

/// Open options that apply to any backend.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://path/to/file.db`.
    pub url: String,
    pub max_connections: u32,
    pub sqlite: SqliteOptions,
}

macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($db) => $call,
        }
    };
}

impl Store {
    /// Connect, apply migrations, and check that `master` opens this database's secrets.
    pub async fn open(opts: &OpenOptions, master: MasterKey) -> Result<Store, StoreError> {
        if opts.url.starts_with("sqlite:") {
            let db = sqlite::Sqlite::open(opts, master).await?;
            return Ok(Store {
                backend: Backend::Sqlite(db),
            });
        }
        Err(StoreError::Database(sqlx::Error::Configuration(
            format!(
                "unsupported database url scheme in {:?}: expected sqlite://",
                redact_url(&opts.url)
            )
            .into(),
        )))
    }

    /// Write one batch in one transaction; the outcome of each row, in order.
    pub async fn write_batch(&self, rows: &[Row], rejects: &[RejectRow]) -> Result<Vec<Outcome>, StoreError> {
        dispatch!(self, db => db.write_batch(rows, rejects).await)
    }

    /// Keep only the newest `keep` rejected records.
    pub async fn prune_rejects(&self, keep: u64) -> Result<u64, StoreError> {
        dispatch!(self, db => db.prune_rejects(keep).await)
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, db => db.ping().await)
    }

    pub async fn close(&self) {
        dispatch!(self, db => db.close().await)
    }

    // Provisioning.

    pub async fn add_supplier(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_principal(id, Kind::Supplier, None).await)
    }

    pub async fn add_device(&self, id: &str, supplier: Option<&str>) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_principal(id, Kind::Device, supplier).await)
    }

    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), StoreError> {
        dispatch!(self, db => db.set_enabled(id, enabled).await)
    }

    pub async fn list(&self, kind: Option<Kind>) -> Result<Vec<PrincipalInfo>, StoreError> {
        dispatch!(self, db => db.list(kind).await)
    }

    /// Add an active key; an owner has at most two.
    pub async fn add_key(&self, owner: &str, kid: &str, secret: &Secret) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_key(owner, kid, secret).await)
    }

    pub async fn revoke_key(&self, owner: &str, kid: &str) -> Result<(), StoreError> {
        dispatch!(self, db => db.revoke_key(owner, kid).await)
    }

    // Authentication.

    /// A principal with its active keys opened, for the key cache.
    pub async fn principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self.principals(&[id]).await?.remove(id))
    }

    /// Several principals at once, keyed by id; ids that do not exist are absent.
    pub async fn principals(&self, ids: &[&str]) -> Result<HashMap<String, Principal>, StoreError> {
        dispatch!(self, db => db.principals(ids).await)
    }

    /// Where the change log stands now: the cursor to start following it from.
    pub async fn change_cursor(&self) -> Result<i64, StoreError> {
        dispatch!(self, db => db.change_cursor().await)
    }

    /// Principals changed after `cursor`, and the new cursor.
    pub async fn changes_since(&self, cursor: i64) -> Result<(Vec<String>, i64), StoreError> {
        dispatch!(self, db => db.changes_since(cursor).await)
    }

    // Reads.

    /// A device's stored positions in `seq` order.
    pub async fn positions(&self, device: &str, limit: i64) -> Result<Vec<StoredPosition>, StoreError> {
        dispatch!(self, db => db.positions(device, limit).await)
    }

    pub async fn latest_position(&self, device: &str) -> Result<Option<StoredPosition>, StoreError> {
        dispatch!(self, db => db.latest_position(device).await)
    }

    pub async fn count_positions(&self) -> Result<i64, StoreError> {
        dispatch!(self, db => db.count_positions().await)
    }

    /// The newest rejected records, newest first: (device, reason, key name).
    pub async fn recent_rejects(
        &self,
        limit: i64,
    ) -> Result<Vec<(Option<String>, String, Option<String>)>, StoreError> {
        dispatch!(self, db => db.recent_rejects(limit).await)
    }
}

/// A database URL with any password removed, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
