//! Copying a whole database into another, of either backend: how a Quick start user moves from
//! SQLite to PostgreSQL (`trackgate db copy`).
//!
//! Tables are copied in an order that satisfies their foreign keys, each in pages in its key's
//! order (keyset paging, so a page costs the same at the end as at the start). Every page is
//! committed on its own and written with `ON CONFLICT DO NOTHING`, so a copy that was
//! interrupted resumes after the last key the target holds, and a page written twice changes
//! nothing. Positions go through the target's own write path, which derives their spans, the
//! latest positions and (on PostgreSQL) the partitions and device marks as for ingested records.
//!
//! Not copied: `meta` (each database binds itself to the master key, and the same key opens the
//! sealed key secrets in both), the principals' change log (a cache-invalidation log of the
//! source's nodes), and what the write path derives from positions.

use crate::{Row, Store, StoreError};

/// A column's type, as both backends store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Text,
    Int,
    Real,
    Bool,
    Blob,
}

/// A value of a column, NULL as `None`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(Option<bool>),
    Blob(Option<Vec<u8>>),
}

/// A table (or part of one) as the copy reads and writes it.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    /// What the copy calls it in progress and counts.
    pub label: &'static str,
    /// Which rows: principals are copied suppliers first, then the devices that name them.
    pub filter: &'static str,
    /// The key the pages follow; its columns come first in `columns`.
    pub key: usize,
    pub columns: &'static [(&'static str, Type)],
    /// An id the database generates, copied as it is (and the generator moved past it).
    pub identity: Option<&'static str>,
}

use Type::{Blob, Bool, Int, Real, Text};

const PRINCIPAL: &[(&str, Type)] = &[
    ("id", Text),
    ("kind", Text),
    ("supplier_id", Text),
    ("enabled", Bool),
    ("created_ms", Int),
];

pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "principals",
        label: "suppliers",
        filter: "kind = 'supplier'",
        key: 1,
        columns: PRINCIPAL,
        identity: None,
    },
    Table {
        name: "principals",
        label: "devices",
        filter: "kind = 'device'",
        key: 1,
        columns: PRINCIPAL,
        identity: None,
    },
    Table {
        name: "keys",
        label: "keys",
        filter: "TRUE",
        key: 2,
        columns: &[
            ("owner_id", Text),
            ("kid", Text),
            ("sealed", Blob),
            ("active", Bool),
            ("created_ms", Int),
            ("revoked_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "organizations",
        label: "organizations",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Text),
            ("name", Text),
            ("created_ms", Int),
            ("positions_retention_days", Int),
        ],
        identity: None,
    },
    Table {
        name: "order_groups",
        label: "order_groups",
        filter: "TRUE",
        key: 2,
        columns: &[("org_id", Text), ("id", Text), ("name", Text), ("created_ms", Int)],
        identity: None,
    },
    Table {
        name: "geofences",
        label: "geofences",
        filter: "TRUE",
        key: 2,
        columns: &[
            ("org_id", Text),
            ("id", Text),
            ("name", Text),
            ("area", Text),
            ("updated_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "user_groups",
        label: "user_groups",
        filter: "TRUE",
        key: 2,
        columns: &[
            ("org_id", Text),
            ("id", Text),
            ("name", Text),
            ("role", Text),
            ("all_order_groups", Bool),
            ("created_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "user_group_scopes",
        label: "user_group_scopes",
        filter: "TRUE",
        key: 3,
        columns: &[("org_id", Text), ("user_group_id", Text), ("order_group_id", Text)],
        identity: None,
    },
    Table {
        name: "membership_rules",
        label: "membership_rules",
        filter: "TRUE",
        key: 4,
        columns: &[
            ("kind", Text),
            ("value", Text),
            ("org_id", Text),
            ("user_group_id", Text),
            ("created_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "device_assignments",
        label: "device_assignments",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("device_id", Text),
            ("org_id", Text),
            ("order_group_id", Text),
            ("shipment_label", Text),
            ("shipment_ref", Text),
            ("assigned_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "event_limits",
        label: "event_limits",
        filter: "TRUE",
        key: 3,
        columns: &[
            ("org_id", Text),
            ("scope", Text),
            ("scope_id", Text),
            ("stale_after_ms", Int),
            ("battery_low", Real),
            ("tmp_min", Real),
            ("tmp_max", Real),
            ("updated_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "event_cursors",
        label: "event_cursors",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("device_id", Text),
            ("ts", Int),
            ("seq", Int),
            ("state", Text),
            ("stale", Bool),
            ("updated_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "device_events",
        label: "device_events",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Int),
            ("org_id", Text),
            ("device_id", Text),
            ("ts", Int),
            ("seq", Int),
            ("kind", Text),
            ("subject", Text),
            ("detail", Text),
            ("lat", Real),
            ("lon", Real),
            ("created_ms", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "alert_rules",
        label: "alert_rules",
        filter: "TRUE",
        key: 2,
        columns: &[
            ("org_id", Text),
            ("id", Text),
            ("kinds", Text),
            ("order_group_id", Text),
            ("channel", Text),
            ("target", Text),
            ("sealed_secret", Blob),
            ("created_ms", Int),
        ],
        identity: None,
    },
    Table {
        name: "alert_outbox",
        label: "alert_outbox",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Int),
            ("org_id", Text),
            ("rule_id", Text),
            ("event_id", Int),
            ("device_id", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_ms", Int),
            ("last_error", Text),
            ("created_ms", Int),
            ("done_ms", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "share_links",
        label: "share_links",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Int),
            ("org_id", Text),
            ("device_id", Text),
            ("token_hash", Blob),
            ("created_by", Text),
            ("created_ms", Int),
            ("expires_ms", Int),
            ("from_ms", Int),
            ("to_ms", Int),
            ("revoked_ms", Int),
        ],
        identity: Some("id"),
    },
    Table {
        name: "rejects",
        label: "rejects",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Int),
            ("received_ms", Int),
            ("transport", Text),
            ("key_name", Text),
            ("device_id", Text),
            ("idx", Int),
            ("reason", Text),
            ("envelope", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "audit_log",
        label: "audit_log",
        filter: "TRUE",
        key: 1,
        columns: &[
            ("id", Int),
            ("at_ms", Int),
            ("actor", Text),
            ("actor_email", Text),
            ("org_id", Text),
            ("action", Text),
            ("target", Text),
            ("detail", Text),
            ("remote_addr", Text),
            ("override", Bool),
            ("prev_hash", Blob),
            ("hash", Blob),
            ("org_hash", Blob),
        ],
        identity: Some("id"),
    },
    Table {
        name: "audit_anchors",
        label: "audit_anchors",
        filter: "TRUE",
        key: 1,
        columns: &[("scope", Text), ("last_id", Int), ("hash", Blob)],
        identity: None,
    },
];

/// One table's rows in the source and in the target once the copy is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: i64,
    pub target: i64,
}

/// The tables whose rows say a database is in use (a copy into it is refused unless resumed).
const IN_USE: &[&str] = &["principals", "organizations", "audit_log", "rejects", "positions"];

impl Store {
    /// Does this database hold anything a copy would collide with?
    pub async fn holds_data(&self) -> Result<bool, StoreError> {
        for table in IN_USE {
            if self.count_rows(table, "TRUE").await? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copy everything into `target`, `page` rows at a time, after what `target` already holds
    /// (so an interrupted copy resumes); `progress(table, copied, of)` after every page. The
    /// counts of every table in both, for the caller to compare.
    pub async fn copy_into(
        &self,
        target: &Store,
        page: u32,
        mut progress: impl FnMut(&str, i64, i64),
    ) -> Result<Vec<TableCount>, StoreError> {
        let page = i64::from(page.max(1));
        let mut counts = Vec::new();
        for table in TABLES {
            let total = self.count_rows(table.name, table.filter).await?;
            let mut after = target.last_key(table).await?;
            let mut done = target.count_rows(table.name, table.filter).await?;
            loop {
                let rows = self.read_page(table, after.as_deref(), page).await?;
                let Some(last) = rows.last() else { break };
                after = Some(last[..table.key].to_vec());
                target.write_page(table, &rows).await?;
                done = target.count_rows(table.name, table.filter).await?;
                progress(table.label, done, total);
            }
            target.sync_identity(table).await?;
            counts.push(TableCount {
                table: table.label,
                source: total,
                target: done,
            });
        }

        let total = self.count_positions().await?;
        let mut after = target.last_position_key().await?;
        loop {
            let rows: Vec<Row> = self.positions_page(after.as_ref(), page).await?;
            let Some(last) = rows.last() else { break };
            after = Some((last.device_id.clone(), last.seq));
            target.write_batch(&rows, &[]).await?;
            progress("positions", target.count_positions().await?, total);
        }
        counts.push(TableCount {
            table: "positions",
            source: total,
            target: target.count_positions().await?,
        });
        counts.push(TableCount {
            table: "latest_positions",
            source: self.count_rows("latest_positions", "TRUE").await?,
            target: target.count_rows("latest_positions", "TRUE").await?,
        });
        Ok(counts)
    }

    async fn count_rows(&self, table: &str, filter: &str) -> Result<i64, StoreError> {
        dispatch!(self, db => db.count_rows(table, filter).await)
    }

    async fn last_key(&self, table: &Table) -> Result<Option<Vec<Value>>, StoreError> {
        dispatch!(self, db => db.last_key(table).await)
    }

    async fn read_page(
        &self,
        table: &Table,
        after: Option<&[Value]>,
        limit: i64,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        dispatch!(self, db => db.read_page(table, after, limit).await)
    }

    async fn write_page(&self, table: &Table, rows: &[Vec<Value>]) -> Result<(), StoreError> {
        dispatch!(self, db => db.write_page(table, rows).await)
    }

    async fn sync_identity(&self, table: &Table) -> Result<(), StoreError> {
        dispatch!(self, db => db.sync_identity(table).await)
    }

    async fn last_position_key(&self) -> Result<Option<(String, i64)>, StoreError> {
        dispatch!(self, db => db.last_position_key().await)
    }

    async fn positions_page(&self, after: Option<&(String, i64)>, limit: i64) -> Result<Vec<Row>, StoreError> {
        dispatch!(self, db => db.positions_page(after, limit).await)
    }
}
