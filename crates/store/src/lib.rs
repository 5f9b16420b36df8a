//! trackgate's storage boundary. Everything that touches SQL lives here; the daemon sees only
//! [`Store`], so a PostgreSQL backend slots in beside SQLite without touching sources or pipeline.
//!
//! # Layout
//!
//! - [`model`]: what crosses the boundary: [`Row`] in, [`Outcome`] out, principals and keys.
//! - [`crypto`]: key secrets sealed with AES-256-GCM under the [`MasterKey`].
//! - [`access`]: operators: organizations, order groups, user groups and their membership rules,
//!   what a caller may see ([`Visibility`], applied in SQL), location reads, the audit log.
//! - `sqlite`: the embedded backend: WAL, one writer, multi-row inserts.
//! - `postgres`: the backend to scale out: TLS, positions partitioned by month, a batch as arrays
//!   (`unnest`) in two statements, `(device_id, seq)` kept unique across partitions (see its
//!   module docs).
//! - `queries/`: the SQL both backends speak, compiled once inside each backend module.
//! - `migrate`: each backend's schema, embedded and applied at open.
//! - `copy`: a whole database into another, of either backend (`trackgate db copy`).
//! - [`geofence`]: organizations' named areas: what a valid one is, and what lies inside it.
//!
//! The write path is [`Store::write_batch`]: one transaction inserts the rows, classifies the
//! ones not inserted as duplicates or conflicts by comparing the stored record text, moves each
//! device's latest position forward in `ts` only, widens its hourly spans, and keeps the batch's
//! rejected records. SQLite inserts with `ON CONFLICT DO NOTHING`; PostgreSQL, whose partitions
//! cannot hold one unique index, decides from each device's seq mark first (`postgres`).
#![forbid(unsafe_code)]

/// Call the same method on whichever backend `$self` (a [`Store`]) is.
macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match &$self.backend {
            $crate::Backend::Sqlite($db) => $call,
            $crate::Backend::Postgres($db) => $call,
        }
    };
}

pub mod access;
pub mod alerts;
pub mod audit;
mod batch;
mod columns;
mod copy;
pub mod crypto;
mod error;
pub mod events;
pub mod export;
pub mod geofence;
mod migrate;
pub mod model;
mod postgres;
pub mod retention;
mod rules;
pub mod shares;
mod sqlite;

pub use access::{
    Assignment, AuditEntry, AuditRecord, BBox, DeviceView, Fix, MemberKeys, Membership, OrderGroup, Organization, Role,
    Rule, RuleKind, Scope, TrackCursor, TrackPage, UserGroup, Visibility,
};
pub use audit::{AuditFailure, AuditVerdict};
pub use copy::TableCount;
pub use crypto::MasterKey;
pub use error::{FAILURE_KINDS, StoreError};
pub use events::{
    EventCursor, EventInput, EventLimits, EventQuery, EventSubject, LimitScope, NewEvent, ScopedLimits, StoredEvent,
};
pub use model::{Kind, Outcome, Principal, PrincipalInfo, RejectRow, Row, StoredPosition};
pub use postgres::PostgresOptions;
pub use postgres::commits::{CommitFollower, Followed, SeqRange};
pub use retention::{OrgDeletion, OrgPurge, PurgeReport, Retention};
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
    Postgres(postgres::Postgres),
}

/// A connection pool's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStatus {
    /// Connections open, in use or idle.
    pub open: u32,
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
    /// Batches that waited for a connection (1 ms or more), and how long in all, since start.
    pub waits: u64,
    pub wait_seconds: f64,
}

/// How often, and how long, the write path waited for a pooled connection.
#[derive(Debug, Default)]
pub(crate) struct PoolWaits {
    count: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl PoolWaits {
    /// An acquire that takes this long waited for a connection; one that did not takes microseconds.
    const WAITED: std::time::Duration = std::time::Duration::from_millis(1);

    /// A connection from `pool`, the wait counted.
    pub(crate) async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        let conn = pool.acquire().await;
        let waited = started.elapsed();
        if waited >= Self::WAITED {
            self.count.fetch_add(1, Relaxed);
            self.micros
                .fetch_add(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX), Relaxed);
        }
        conn
    }

    /// (waits, seconds waited) so far.
    pub(crate) fn totals(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.count.load(Relaxed), self.micros.load(Relaxed) as f64 / 1e6)
    }
}

/// Open options that apply to any backend.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://path/to/file.db` or `postgres://user:password@host/database`.
    pub url: String,
    pub max_connections: u32,
    pub sqlite: SqliteOptions,
    pub postgres: PostgresOptions,
    /// How long data is kept: reads hide what is past it, [`Store::purge`] removes it.
    pub retention: Retention,
}

impl Store {
    /// Connect, apply migrations, and check that `master` opens this database's secrets.
    pub async fn open(opts: &OpenOptions, master: MasterKey) -> Result<Store, StoreError> {
        let backend = if opts.url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::Sqlite::open(opts, master).await?)
        } else if opts.url.starts_with("postgres:") || opts.url.starts_with("postgresql:") {
            Backend::Postgres(postgres::Postgres::open(opts, master).await?)
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database url scheme in {:?}: expected sqlite:// or postgres://",
                    redact_url(&opts.url)
                )
                .into(),
            )));
        };
        Ok(Store { backend })
    }

    /// The positions other nodes commit, as they do, for the live streams; `None` on SQLite,
    /// whose one node sees every commit itself.
    pub async fn follow_commits(&self) -> Result<Option<CommitFollower>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(db) => db.follow_commits().await.map(Some),
        }
    }

    /// The positioned records of `ranges`, in seq order per range.
    pub async fn positions_in(&self, ranges: &[SeqRange]) -> Result<Vec<(String, Fix)>, StoreError> {
        dispatch!(self, db => db.positions_in(ranges).await)
    }

    /// Which backend this is: `sqlite` or `postgres`, for metrics and logs.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Periodic upkeep that is not tied to a batch: on PostgreSQL, the partitions of `positions`
    /// for this month and the next two.
    pub async fn maintain(&self, now_ms: i64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => db.prepare_partitions(now_ms).await,
        }
    }

    /// Remove what is past its retention at `now_ms` (see [`retention`]); `None` when another
    /// node is at it.
    pub async fn purge(&self, now_ms: i64) -> Result<Option<PurgeReport>, StoreError> {
        dispatch!(self, db => db.purge(now_ms).await)
    }

    /// A consistent copy of the whole SQLite database in `out` (`VACUUM INTO`; `out` must not exist
    /// or be empty, SQLite refuses anything else), taken while writers go on. Keys stay sealed under the master key, which is not in it.
    pub async fn backup_to(&self, out: &std::path::Path) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.backup_to(out).await,
            Backend::Postgres(_) => Err(StoreError::SqliteOnly("a backup by trackgate")),
        }
    }

    /// Bring the SQLite backup `from` back as the database of `opts`, which must not exist yet:
    /// the backup is copied beside it, opened (moved forward by migrations if it is older, and
    /// checked against `master`), then renamed into place. The file's path.
    pub async fn restore_sqlite(
        from: &std::path::Path,
        opts: &OpenOptions,
        master: MasterKey,
    ) -> Result<std::path::PathBuf, StoreError> {
        if !opts.url.starts_with("sqlite:") {
            return Err(StoreError::SqliteOnly("a restore by trackgate"));
        }
        sqlite::Sqlite::restore(from, opts, master).await
    }

    /// Write one batch in one transaction; the outcome of each row, in order.
    pub async fn write_batch(&self, rows: &[Row], rejects: &[RejectRow]) -> Result<Vec<Outcome>, StoreError> {
        dispatch!(self, db => db.write_batch(rows, rejects).await)
    }

    /// Keep only the newest `keep` rejected records.
    pub async fn prune_rejects(&self, keep: u64) -> Result<u64, StoreError> {
        dispatch!(self, db => db.prune_rejects(keep).await)
    }

    /// Write and commit a probe row: does the database take writes (after a failure)?
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        dispatch!(self, db => db.probe_write().await)
    }

    /// The local directory whose filesystem holds the database, for the free-space watermark;
    /// `None` for a database on another machine.
    pub fn local_directory(&self) -> Option<std::path::PathBuf> {
        dispatch!(self, db => db.directory())
    }

    /// The connection pool's state.
    pub fn pool_status(&self) -> PoolStatus {
        dispatch!(self, db => db.pool_status())
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

    /// Provision devices with one key each (`(id, kid, secret)`), all or nothing.
    pub async fn import_devices(
        &self,
        devices: &[(String, String, Secret)],
        supplier: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, db => db.import_devices(devices, supplier).await)
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

impl Store {
    #[cfg(test)]
    pub(crate) fn sqlite_for_tests(&self) -> &sqlite::Sqlite {
        match &self.backend {
            Backend::Sqlite(db) => db,
            Backend::Postgres(_) => panic!("a SQLite test opened PostgreSQL"),
        }
    }

    #[cfg(test)]
    pub(crate) fn postgres_for_tests(&self) -> &postgres::Postgres {
        match &self.backend {
            Backend::Postgres(db) => db,
            Backend::Sqlite(_) => panic!("a PostgreSQL test opened SQLite"),
        }
    }

    /// Run one statement directly, as a person with a SQL shell could.
    #[cfg(test)]
    pub(crate) async fn execute_for_tests(&self, sql: &str) -> Result<u64, sqlx::Error> {
        Ok(match &self.backend {
            Backend::Sqlite(db) => sqlx::query(sql).execute(&db.pool).await?.rows_affected(),
            Backend::Postgres(db) => sqlx::query(sql).execute(&db.pool).await?.rows_affected(),
        })
    }

    // Operators. Every administrative change is written with its audit row in one transaction.

    pub async fn add_organization(&self, id: &str, name: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_organization(id, name, audit).await)
    }

    /// All organizations, or only those in `only`.
    /// Keep `org`'s positions for `days` (from `Retention::min_positions_days` to the service's
    /// retention), or for the service's retention (`None`).
    pub async fn set_positions_retention(
        &self,
        org: &str,
        days: Option<u32>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        dispatch!(self, db => db.set_positions_retention(org, days, audit).await)
    }

    pub async fn organizations(&self, only: Option<&[String]>) -> Result<Vec<Organization>, StoreError> {
        dispatch!(self, db => db.organizations(only).await)
    }

    pub async fn add_order_group(&self, org: &str, id: &str, name: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_order_group(org, id, name, audit).await)
    }

    pub async fn order_groups(&self, org: &str) -> Result<Vec<OrderGroup>, StoreError> {
        dispatch!(self, db => db.order_groups(org).await)
    }

    /// Give a device to an organization, or move it; its order group and shipment are cleared.
    pub async fn assign_device(&self, device: &str, org: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.assign_device(device, org, audit).await)
    }

    /// Set the order group and shipment of a device of `a.org_id`.
    pub async fn set_shipment(&self, device: &str, a: &Assignment, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.set_shipment(device, a, audit).await)
    }

    /// Create a user group with its scope and initial rules.
    pub async fn add_user_group(&self, group: &UserGroup, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_user_group(group, audit).await)
    }

    pub async fn remove_user_group(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.remove_user_group(org, id, audit).await)
    }

    pub async fn user_groups(&self, org: &str) -> Result<Vec<UserGroup>, StoreError> {
        dispatch!(self, db => db.user_groups(org).await)
    }

    pub async fn add_rule(&self, org: &str, group: &str, rule: &Rule, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.add_rule(org, group, rule, audit).await)
    }

    pub async fn remove_rule(&self, org: &str, group: &str, rule: &Rule, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.remove_rule(org, group, rule, audit).await)
    }

    /// Create or replace geofence `id` of `org`; its area is checked first
    /// ([`geofence::Area::checked`]). Answers the geofence as stored.
    pub async fn put_geofence(
        &self,
        org: &str,
        id: &str,
        name: &str,
        area: geofence::Area,
        audit: &AuditEntry,
    ) -> Result<geofence::Geofence, StoreError> {
        dispatch!(self, db => db.put_geofence(org, id, name, area, audit).await)
    }

    pub async fn remove_geofence(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.remove_geofence(org, id, audit).await)
    }

    /// The geofences of the organizations in `orgs`, or of all of them (`None`).
    pub async fn geofences(&self, orgs: Option<&[String]>) -> Result<Vec<geofence::Geofence>, StoreError> {
        dispatch!(self, db => db.geofences(orgs).await)
    }

    /// The user groups a signed-in user belongs to, by any of the four rules.
    pub async fn memberships(&self, keys: &MemberKeys) -> Result<Vec<Membership>, StoreError> {
        dispatch!(self, db => db.memberships(keys).await)
    }

    // Location reads, filtered by what the caller may see.

    /// Visible devices with their latest fix; one device when `id` is given.
    pub async fn devices(&self, vis: &Visibility, id: Option<&str>) -> Result<Vec<DeviceView>, StoreError> {
        dispatch!(self, db => db.devices(vis, id).await)
    }

    pub async fn visible_device_ids(&self, vis: &Visibility) -> Result<Vec<String>, StoreError> {
        dispatch!(self, db => db.visible_device_ids(vis).await)
    }

    /// Latest fixes of visible devices, inside `bbox` when given.
    pub async fn latest(
        &self,
        vis: &Visibility,
        bbox: Option<BBox>,
    ) -> Result<Vec<(String, Assignment, Fix)>, StoreError> {
        dispatch!(self, db => db.latest(vis, bbox).await)
    }

    /// One page of a device's positioned records with `from_ms <= ts < to_ms`, oldest first.
    /// The caller checks visibility first.
    pub async fn track(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<TrackCursor>,
        limit: u32,
    ) -> Result<TrackPage, StoreError> {
        dispatch!(self, db => db.track(device, from_ms, to_ms, after, limit).await)
    }

    /// Append one audit entry on its own.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.audit(entry).await)
    }

    /// The audit log, newest first, for one organization or all.
    /// Delete organization `org` and everything it owns: its devices' positions and latest
    /// positions (in the purge's short transactions), its groups, rules and order groups; its
    /// devices unassigned, or deleted with their keys if `delete_devices`. Idempotent: an
    /// interrupted deletion is finished by asking again. Its audit entries stay.
    pub async fn delete_org(
        &self,
        org: &str,
        delete_devices: bool,
        audit: &AuditEntry,
    ) -> Result<retention::OrgDeletion, StoreError> {
        dispatch!(self, db => db.delete_org(org, delete_devices, audit).await)
    }

    /// Every row of organization `org`, part by part (see [`export`]), into `sink`.
    pub async fn export_org(&self, org: &str, sink: &mut (dyn export::ExportSink + Send)) -> Result<(), StoreError> {
        dispatch!(self, db => db.export_org(org, sink).await)
    }

    /// Walk the audit log's hash chain (of `org`'s entries only, when given) and say where it
    /// breaks; see [`audit`].
    pub async fn verify_audit(&self, org: Option<&str>) -> Result<AuditVerdict, StoreError> {
        dispatch!(self, db => db.verify_audit(org).await)
    }

    pub async fn audit_log(
        &self,
        org: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        dispatch!(self, db => db.audit_log(org, before_id, limit).await)
    }
}

/// This node's turn at a job that one node does at a time (see [`Store::take_events_lock`]).
#[derive(Debug)]
pub struct JobLock(JobLockInner);

#[derive(Debug)]
enum JobLockInner {
    Sqlite(sqlite::events::JobLockConn),
    Postgres(postgres::events::JobLockConn),
}

impl JobLock {
    /// Is the lock still this node's? A lock whose connection failed went with it.
    pub async fn held(&mut self) -> bool {
        match &mut self.0 {
            JobLockInner::Sqlite(c) => sqlite::Sqlite::job_lock_held(c).await,
            JobLockInner::Postgres(c) => postgres::Postgres::job_lock_held(c).await,
        }
    }

    /// Give the lock back.
    pub async fn release(self) {
        match self.0 {
            JobLockInner::Sqlite(c) => sqlite::Sqlite::release_job_lock(c).await,
            JobLockInner::Postgres(c) => postgres::Postgres::release_job_lock(c).await,
        }
    }
}

/// Events: the processor's side (one node at a time computes them) and the operators' reads.
impl Store {
    /// Become the node that computes events: `None` while another node is (PostgreSQL; on
    /// SQLite the one process always is).
    pub async fn take_events_lock(&self) -> Result<Option<JobLock>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(db) => db.take_events_lock().await?.map(|c| JobLock(JobLockInner::Sqlite(c))),
            Backend::Postgres(db) => db.take_events_lock().await?.map(|c| JobLock(JobLockInner::Postgres(c))),
        })
    }

    /// Become the node that delivers alerts: `None` while another node is.
    pub async fn take_deliveries_lock(&self) -> Result<Option<JobLock>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(db) => db
                .take_deliveries_lock()
                .await?
                .map(|c| JobLock(JobLockInner::Sqlite(c))),
            Backend::Postgres(db) => db
                .take_deliveries_lock()
                .await?
                .map(|c| JobLock(JobLockInner::Postgres(c))),
        })
    }

    /// Devices assigned to an organization with records their events have not taken.
    pub async fn devices_behind_events(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, db => db.devices_behind_events().await)
    }

    /// A device's organization and the limits in force for it; `None` if it is assigned to none.
    pub async fn event_subject(&self, device: &str) -> Result<Option<EventSubject>, StoreError> {
        dispatch!(self, db => db.event_subject(device).await)
    }

    pub async fn event_cursor(&self, device: &str) -> Result<Option<EventCursor>, StoreError> {
        dispatch!(self, db => db.event_cursor(device).await)
    }

    /// Up to `limit` of a device's records after `after` (`(ts, seq)`; from the start of its
    /// retention for `None`), in `(ts, seq)` order, positioned or not.
    pub async fn records_after(
        &self,
        device: &str,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<EventInput>, StoreError> {
        dispatch!(self, db => db.records_after(device, after, limit).await)
    }

    /// Store a device's events and move its cursor from `from` to `to`, together; `false` (and
    /// nothing stored) if the cursor had moved from `from` meanwhile.
    pub async fn save_events(
        &self,
        device: &str,
        org: &str,
        from: Option<(i64, i64)>,
        to: &EventCursor,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        dispatch!(self, db => db.save_events(device, org, from, to, events).await)
    }

    /// Devices silent past their stale limit at `now`, not yet reported.
    pub async fn devices_gone_stale(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        dispatch!(self, db => db.devices_gone_stale(now_ms).await)
    }

    /// Set (or, all `None`, remove) an organization's limits at one scope, audited.
    pub async fn set_event_limits(
        &self,
        org: &str,
        scope: &LimitScope,
        limits: EventLimits,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        dispatch!(self, db => db.set_event_limits(org, scope, limits, audit).await)
    }

    pub async fn event_limits(&self, org: &str) -> Result<Vec<ScopedLimits>, StoreError> {
        dispatch!(self, db => db.event_limits(org).await)
    }

    /// Events the caller may see, newest first (see the API's `/v1/events`).
    pub async fn events(&self, vis: &Visibility, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        dispatch!(self, db => db.events(vis, q).await)
    }
}

/// Alerts: organizations' rules and the outbox of their deliveries.
impl Store {
    /// Add an alert rule, audited; a webhook's signing secret is made, sealed, and returned
    /// this once.
    pub async fn add_alert_rule(
        &self,
        org: &str,
        rule: &alerts::NewAlertRule,
        audit: &AuditEntry,
    ) -> Result<Option<Secret>, StoreError> {
        dispatch!(self, db => db.add_alert_rule(org, rule, audit).await)
    }

    /// Remove an alert rule and its deliveries, audited.
    pub async fn remove_alert_rule(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.remove_alert_rule(org, id, audit).await)
    }

    pub async fn alert_rules(&self, org: &str) -> Result<Vec<alerts::AlertRule>, StoreError> {
        dispatch!(self, db => db.alert_rules(org).await)
    }

    /// A rule's newest deliveries, newest first.
    pub async fn deliveries(
        &self,
        org: &str,
        rule: &str,
        limit: u32,
    ) -> Result<Vec<alerts::DeliveryState>, StoreError> {
        dispatch!(self, db => db.deliveries(org, rule, limit).await)
    }

    /// Deliveries due at `now_ms`, the oldest waiting one of each rule and device.
    pub async fn due_deliveries(&self, now_ms: i64, limit: u32) -> Result<Vec<alerts::Delivery>, StoreError> {
        dispatch!(self, db => db.due_deliveries(now_ms, limit).await)
    }

    pub async fn record_delivery(&self, id: i64, outcome: &alerts::Outcome) -> Result<(), StoreError> {
        dispatch!(self, db => db.record_delivery(id, outcome).await)
    }

    /// E-mails sent to `address` since `since_ms` (for the per-recipient rate).
    pub async fn emails_sent_since(&self, address: &str, since_ms: i64) -> Result<i64, StoreError> {
        dispatch!(self, db => db.emails_sent_since(address, since_ms).await)
    }

    /// Deliveries waiting, across every organization.
    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        dispatch!(self, db => db.pending_deliveries().await)
    }
}

/// Share links: one shipment shown to whoever holds a link's token.
impl Store {
    /// Make a link to a device of `org` for the token hashed as `hash`, audited.
    pub async fn add_share_link(
        &self,
        org: &str,
        new: &shares::NewShareLink,
        hash: &[u8; 32],
        audit: &AuditEntry,
    ) -> Result<shares::ShareLink, StoreError> {
        dispatch!(self, db => db.add_share_link(org, new, hash, audit).await)
    }

    /// A device's links, newest first.
    pub async fn share_links(&self, device: &str) -> Result<Vec<shares::ShareLink>, StoreError> {
        dispatch!(self, db => db.share_links(device).await)
    }

    pub async fn revoke_share_link(&self, device: &str, id: i64, audit: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, db => db.revoke_share_link(device, id, audit).await)
    }

    /// The link a token (hashed) opens at `now_ms`, if it still opens.
    pub async fn open_share_link(&self, hash: &[u8; 32], now_ms: i64) -> Result<Option<shares::ShareLink>, StoreError> {
        dispatch!(self, db => db.open_share_link(hash, now_ms).await)
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

/// The daemon spawns the writer's calls: their futures must be `Send` on every backend (a
/// borrowed `raw_sql` once made PostgreSQL's not, and only the daemon's build said so).
#[cfg(test)]
mod send_check {
    fn spawnable<T: Send + 'static>(_: T) {}
    #[allow(dead_code)]
    fn futures_are_send(s: crate::Store) {
        let a = s.clone();
        spawnable(async move { a.write_batch(&[], &[]).await });
        let a = s.clone();
        spawnable(async move { a.prune_rejects(1).await });
        let a = s.clone();
        spawnable(async move { a.probe_write().await });
    }
}
