//! The PostgreSQL backend: TLS to the server verified against a CA by default, `positions`
//! partitioned by month (`partitions`), and a batch written in one transaction of a few
//! statements that each carry the whole batch as arrays (`UNNEST`).
//!
//! # Why resends are classified this way
//!
//! PostgreSQL enforces a unique index only within one partition, and a record's partition
//! follows its `ts`: a resend of `(device, seq)` with another `ts` would land in another
//! partition and be stored twice. So the write path enforces `(device_id, seq)` across
//! partitions itself:
//!
//! 1. its first statement raises the mark of each device of the batch (`device_marks`, the
//!    highest seq stored) to the batch's highest seq and reads back the mark it replaced. The
//!    upsert locks each mark's row until the batch commits, in device id order (no two writers
//!    deadlock), so no other batch writes those devices meanwhile, and it sees the newest
//!    committed mark whatever the statement's snapshot;
//! 2. a row above its device's former mark cannot be stored anywhere: the common case, inserted
//!    without a lookup. Every such row is stored, so the raised mark is the highest seq stored;
//! 3. a row at or below the former mark (a resend, or a gap filled late) is looked up by
//!    `(device_id, seq)` in every partition's index: equal text is a duplicate, other text a
//!    conflict, nothing found is new;
//! 4. one more statement writes the rest: the new rows, the latest positions and spans moved
//!    forward, the rejects, and the commit notifications (data-modifying CTEs). A batch is two
//!    statements besides `BEGIN` and `COMMIT`, three when a resend is looked up.
//!
//! Each partition's own unique index still backs the insert: a row the lookup did not find but
//! the index holds fails the batch with a unique violation, never reported as stored.
//!
//! # Many nodes
//!
//! Several nodes (and several batches of one node) write at once: the marks' row locks serialize
//! only the batches that share a device. A batch that stores positions announces them to the
//! other nodes' live streams inside its transaction (`commits`). The change log's writers take
//! turns (`SERIALIZE_CHANGE_LOG`), and background jobs run on one node at a time (`JOB_LOCKS`).

use crate::batch;
use crate::columns::{measurement_columns, measurement_from_excluded};
use crate::migrate::{self, Embedded};
use crate::model::{Outcome, RejectRow, Row};
use crate::{MasterKey, OpenOptions, StoreError};
use partitions::{Month, Partitions};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use trackgate_proto::Measurement;

// The SQL both backends speak (`queries/`), compiled against this backend's sqlx driver.
#[allow(clippy::duplicate_mod)]
#[path = "queries/alerts.rs"]
mod alerts;
#[allow(clippy::duplicate_mod)]
#[path = "queries/audit.rs"]
mod audit;
#[allow(clippy::duplicate_mod)]
#[path = "queries/copy.rs"]
mod copy;
#[allow(clippy::duplicate_mod)]
#[path = "queries/deletion.rs"]
mod deletion;
#[allow(clippy::duplicate_mod)]
#[path = "queries/events.rs"]
pub(crate) mod events;
#[allow(clippy::duplicate_mod)]
#[path = "queries/export.rs"]
mod export;
#[allow(clippy::duplicate_mod)]
#[path = "queries/geofences.rs"]
mod geofences;
#[allow(clippy::duplicate_mod)]
#[path = "queries/operators.rs"]
mod operators;
#[allow(clippy::duplicate_mod)]
#[path = "queries/principals.rs"]
pub(crate) mod principals;
#[allow(clippy::duplicate_mod)]
#[path = "queries/retention.rs"]
mod retention;
#[allow(clippy::duplicate_mod)]
#[path = "queries/shares.rs"]
mod shares;

pub(crate) mod commits;
mod partitions;

use crate::retention::DroppedPartition;
use principals::discard_on_error;

/// What the shared queries (`queries/`) are compiled against.
type Db = sqlx::Postgres;
type Handle = Postgres;
/// PostgreSQL's limit on bound parameters in one statement.
const MAX_BIND_PARAMS: usize = 65_535;
/// Writers of the change log take turns until they commit, so its `seq` grows in commit order.
const SERIALIZE_CHANGE_LOG: Option<&str> = Some("LOCK TABLE principal_changes IN EXCLUSIVE MODE");
/// Transactions that write begin as any other.
const BEGIN_WRITE: &str = "BEGIN";
/// The advisory locks (two-key space) of jobs that run once across the nodes: 1 partition
/// changes, 2 pruning rejects, 3 the retention purge, 4 appending to the audit log.
pub(crate) const JOB_LOCKS: i32 = 0x7467_6174;
/// A background job's lock for the transaction, if no other node holds it (`$1`: the job).
const TRY_JOB_LOCK: Option<&str> = Some("SELECT pg_try_advisory_xact_lock(1952932212, $1)");
/// A deleted device's seq mark (`device_marks`, PostgreSQL's alone).
const DELETE_DEVICE_MARK: Option<&str> = Some("DELETE FROM device_marks WHERE device_id = $1");
/// Writers of the audit log take turns until they commit, so each entry links to the one before.
const SERIALIZE_AUDIT: Option<&str> = Some("SELECT pg_advisory_xact_lock(1952932212, 4)");
/// A job that runs many transactions holds its lock for the session, on a connection of its own
/// (`$1`: the job): taken if no other node holds it, and released.
const SESSION_JOB_LOCK: Option<(&str, &str)> = Some((
    "SELECT pg_try_advisory_lock(1952932212, $1)",
    "SELECT pg_advisory_unlock(1952932212, $1)",
));
/// A copy writes generated ids as given, then moves the identity's sequence past them.
const INSERT_KEEPING_IDS: &str = " OVERRIDING SYSTEM VALUE";
const SYNC_IDENTITY: Option<&str> = Some(
    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
     COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)",
);

/// TLS to the server, beside what the URL says.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// The CA certificates (PEM) the server's certificate must chain to; without it, the URL's
    /// `sslrootcert` or the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that require one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The value of query parameter `name` in `url`, if given.
fn url_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The connection options: `sslmode=verify-full` unless the URL says otherwise, and then a
/// warning that says what is lost.
fn connect_options(opts: &OpenOptions) -> Result<PgConnectOptions, StoreError> {
    let mut o = PgConnectOptions::from_str(&opts.url)?.application_name("trackgate");
    match url_param(&opts.url, "sslmode") {
        None => o = o.ssl_mode(PgSslMode::VerifyFull),
        Some("verify-full") => {}
        Some(mode @ ("disable" | "allow" | "prefer")) => tracing::warn!(
            sslmode = mode,
            "database.url allows a plaintext connection to PostgreSQL: data and credentials may cross \
             the network unencrypted"
        ),
        Some(mode) => tracing::warn!(
            sslmode = mode,
            "database.url does not verify PostgreSQL's certificate and host name (verify-full): \
             the connection is encrypted but a machine in the middle can read it"
        ),
    }
    let p = &opts.postgres;
    if let Some(ca) = &p.ca_file {
        o = o.ssl_root_cert(ca);
    }
    match (&p.client_cert, &p.client_key) {
        (Some(cert), Some(key)) => o = o.ssl_client_cert(cert).ssl_client_key(key),
        (None, None) => {}
        _ => {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "a PostgreSQL client certificate and its key must be given together".into(),
            )));
        }
    }
    Ok(o)
}

#[derive(Debug, Clone)]
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
    master: MasterKey,
    partitions: Arc<Partitions>,
    /// This process among the nodes, for its own commit notifications.
    node: Arc<str>,
    waits: Arc<crate::PoolWaits>,
    retention: crate::Retention,
}

/// `unnest($first::type[]), ...`: one array parameter per type, numbered from `first`, as rows.
///
/// The arrays are unnested in the select list, not with `FROM UNNEST(...)`: a function in `FROM`
/// is first copied whole into a tuple store, which cost a third of the write path (measured with
/// `pg_write`: 0.66 to 0.76 of the raw COPY that way, 0.98 to 1.04 this way).
fn arrays(first: usize, types: &[&str]) -> String {
    let args: Vec<String> = (first..)
        .zip(types)
        .map(|(i, t)| format!("unnest(${i}::{t}[])"))
        .collect();
    args.join(", ")
}

/// The arrays a batch binds, in the order of `WRITE`'s parameters: per table, one array per
/// column.
const POSITION_TYPES: [&str; 15] = [
    "text", "int8", "int8", "float8", "float8", "float8", "float8", "float8", "float8", "float8", "float8", "text",
    "text", "text", "int8",
];
const LATEST_TYPES: [&str; 12] = [
    "text", "int8", "int8", "float8", "float8", "float8", "float8", "float8", "float8", "float8", "float8", "int8",
];
const SPAN_TYPES: [&str; 8] = ["text", "int8", "int8", "int8", "int8", "int8", "float8", "float8"];
const REJECT_TYPES: [&str; 7] = ["int8", "text", "text", "text", "int8", "text", "text"];

/// Everything a batch writes, in one statement of data-modifying CTEs, each a table's rows as
/// arrays (`UNNEST`): the new positions, the latest positions (forward in ts only), the spans
/// (widened), the rejects, and the commit notifications for the other nodes.
///
/// The positions are inserted without `ON CONFLICT`: under the locks of their marks every row
/// given is new (above its device's mark, or looked up and not found), so a row that is there
/// after all fails the whole batch with the partition's unique violation, and nothing of it is
/// stored. That spares each row the index probe that `ON CONFLICT` makes before it inserts.
static WRITE: LazyLock<String> = LazyLock::new(|| {
    const { assert!(POSITION_TYPES.len() == 7 + Measurement::NAMES.len()) };
    const { assert!(LATEST_TYPES.len() == 4 + Measurement::NAMES.len()) };
    let latest = 1 + POSITION_TYPES.len();
    let spans = latest + LATEST_TYPES.len();
    let rejects = spans + SPAN_TYPES.len();
    let notify = rejects + REJECT_TYPES.len();
    let newer = "(excluded.newest_ts, excluded.newest_seq) > (s.newest_ts, s.newest_seq)";
    format!(
        "WITH inserted AS (\
           INSERT INTO positions (device_id, seq, ts, {m}, ext, record, kid, received_ms) \
           SELECT {positions}), \
         latest AS (\
           INSERT INTO latest_positions AS l (device_id, seq, ts, {m}, received_ms) \
           SELECT {latest} \
           ON CONFLICT (device_id) DO UPDATE SET seq = excluded.seq, ts = excluded.ts, {from_excluded}, \
           received_ms = excluded.received_ms WHERE excluded.ts > l.ts), \
         spans AS (\
           INSERT INTO position_spans AS s \
           (device_id, hour, min_seq, max_seq, newest_ts, newest_seq, newest_bat, newest_tmp) \
           SELECT {spans} \
           ON CONFLICT (device_id, hour) DO UPDATE SET \
           min_seq = LEAST(s.min_seq, excluded.min_seq), \
           max_seq = GREATEST(s.max_seq, excluded.max_seq), \
           newest_seq = CASE WHEN {newer} THEN excluded.newest_seq ELSE s.newest_seq END, \
           newest_bat = CASE WHEN {newer} THEN excluded.newest_bat ELSE s.newest_bat END, \
           newest_tmp = CASE WHEN {newer} THEN excluded.newest_tmp ELSE s.newest_tmp END, \
           newest_ts = GREATEST(s.newest_ts, excluded.newest_ts)), \
         rejected AS (\
           INSERT INTO rejects (received_ms, transport, key_name, device_id, idx, reason, envelope) \
           SELECT {rejects}) \
         SELECT count(pg_notify('{channel}', p)) FROM unnest(${notify}::text[]) AS p",
        m = measurement_columns("", ""),
        positions = arrays(1, &POSITION_TYPES),
        latest = arrays(latest, &LATEST_TYPES),
        from_excluded = measurement_from_excluded(),
        spans = arrays(spans, &SPAN_TYPES),
        rejects = arrays(rejects, &REJECT_TYPES),
        channel = commits::CHANNEL,
    )
});

/// Raise the marks of a batch's devices (`$1` sorted, so every writer locks the rows in one
/// order; `$2` each device's highest seq in the batch) and answer the mark each had before.
/// The upsert locks each mark's row until the batch commits, and reads the newest committed
/// mark whatever the statement's snapshot: the batches of a device take turns from here on.
const RAISE_MARKS: &str = "INSERT INTO device_marks AS m (device_id, max_seq) \
     SELECT unnest($1::text[]), unnest($2::int8[]) \
     ON CONFLICT (device_id) DO UPDATE SET prev_seq = m.max_seq, max_seq = GREATEST(m.max_seq, excluded.max_seq) \
     RETURNING device_id, prev_seq";

/// The stored records of `(device_id, seq)` pairs, in whichever partitions hold them.
const LOOKUP: &str = "SELECT b.d, b.s, p.record FROM unnest($1::text[], $2::int8[]) AS b(d, s) \
     JOIN positions p ON p.device_id = b.d AND p.seq = b.s";

/// Is this the error of a row whose partition does not exist?
fn is_missing_partition(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of relation"))
}

impl Postgres {
    pub(crate) async fn open(opts: &OpenOptions, master: MasterKey) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect_options(opts)?)
            .await?;
        Migrator::new(Embedded::all(migrate::POSTGRES))
            .await?
            .run(&pool)
            .await?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the operating system's random source failed");
        let db = Postgres {
            pool,
            master,
            partitions: Arc::default(),
            node: hex::encode(id).into(),
            waits: Arc::default(),
            retention: opts.retention,
        };
        db.check_master_key().await?;
        db.seal_audit_log().await?;
        db.partitions.load(&db.pool).await?;
        db.prepare_partitions(crate::now_ms()).await?;
        Ok(db)
    }

    /// Make the partitions of the month of `now` and the two after it, if missing.
    pub(crate) async fn prepare_partitions(&self, now: i64) -> Result<(), StoreError> {
        let this = Month::of(now);
        let ahead = [this.start, this.next().start, this.next().next().start];
        let missing = self.partitions.missing(ahead.into_iter());
        self.partitions.create(&self.pool, &missing).await
    }

    pub(crate) async fn write_batch(&self, rows: &[Row], rejects: &[RejectRow]) -> Result<Vec<Outcome>, StoreError> {
        let mut retried = false;
        loop {
            let missing = self.partitions.missing(rows.iter().map(|r| r.ts));
            self.partitions.create(&self.pool, &missing).await?;
            let mut conn = self.waits.acquire(&self.pool).await?;
            let result = Self::write_batch_on(&mut conn, rows, rejects, &self.node).await;
            match discard_on_error(&mut conn, result) {
                // A partition this node counted on was dropped meanwhile: learn again, once.
                Err(e) if is_missing_partition(&e) && !retried => {
                    retried = true;
                    self.partitions.load(&self.pool).await?;
                }
                other => return other,
            }
        }
    }

    async fn write_batch_on(
        conn: &mut PgConnection,
        rows: &[Row],
        rejects: &[RejectRow],
        node: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = conn.begin().await?;
        let mut outcomes = vec![Outcome::Inserted; rows.len()];
        let mut insert = Vec::with_capacity(rows.len());
        if !rows.is_empty() {
            let mut highest: HashMap<&str, i64> = HashMap::new();
            for r in rows {
                let h = highest.entry(r.device_id.as_str()).or_insert(r.seq);
                *h = (*h).max(r.seq);
            }
            let mut raise: Vec<(&str, i64)> = highest.into_iter().collect();
            raise.sort_unstable();
            let marks: HashMap<String, Option<i64>> = sqlx::query_as(RAISE_MARKS)
                .bind(raise.iter().map(|r| r.0).collect::<Vec<_>>())
                .bind(raise.iter().map(|r| r.1).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();

            // The first row of each (device, seq): new above the device's mark, else looked up.
            // Later rows of the same key are resends of it. Every row above its device's mark is
            // stored, so the mark just raised to the batch's highest seq is the highest stored.
            let mut first: HashMap<(&str, i64), usize> = HashMap::with_capacity(rows.len());
            let (mut lookup, mut repeats) = (Vec::new(), Vec::new());
            for (i, r) in rows.iter().enumerate() {
                match first.entry((r.device_id.as_str(), r.seq)) {
                    Entry::Occupied(_) => repeats.push(i),
                    Entry::Vacant(v) => {
                        v.insert(i);
                        if marks
                            .get(r.device_id.as_str())
                            .copied()
                            .flatten()
                            .is_some_and(|m| r.seq <= m)
                        {
                            lookup.push(i);
                        } else {
                            insert.push(i);
                        }
                    }
                }
            }
            let stored: HashMap<(String, i64), String> = if lookup.is_empty() {
                HashMap::new()
            } else {
                let found: Vec<(String, i64, String)> = sqlx::query_as(LOOKUP)
                    .bind(lookup.iter().map(|&i| rows[i].device_id.as_str()).collect::<Vec<_>>())
                    .bind(lookup.iter().map(|&i| rows[i].seq).collect::<Vec<_>>())
                    .fetch_all(&mut *tx)
                    .await?;
                found.into_iter().map(|(d, s, text)| ((d, s), text)).collect()
            };
            for &i in &lookup {
                let r = &rows[i];
                match stored.get(&(r.device_id.clone(), r.seq)) {
                    Some(text) => outcomes[i] = resend(text, &r.record),
                    None => insert.push(i),
                }
            }
            for &i in &repeats {
                let r = &rows[i];
                let key_row = &rows[first[&(r.device_id.as_str(), r.seq)]];
                let text = stored.get(&(r.device_id.clone(), r.seq)).unwrap_or(&key_row.record);
                outcomes[i] = resend(text, &r.record);
            }
        }

        bind_write(sqlx::query(&WRITE), rows, &insert, &outcomes, rejects, node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Drop the partitions wholly before `before`: each with its rows per organization, and the
    /// start of the oldest partition left.
    pub(crate) async fn drop_partitions_before(
        &self,
        before: i64,
    ) -> Result<(Vec<(DroppedPartition, retention::RowsByOrg)>, Option<i64>), StoreError> {
        self.partitions.drop_before(&self.pool, before).await
    }

    /// The other nodes' commits of positions, from now on.
    pub(crate) async fn follow_commits(&self) -> Result<commits::CommitFollower, StoreError> {
        commits::CommitFollower::start(&self.pool, &self.node).await
    }

    /// A database on another machine: no local directory to watch.
    pub(crate) fn directory(&self) -> Option<PathBuf> {
        None
    }
}

/// A resend's outcome against the stored text.
fn resend(stored: &str, record: &str) -> Outcome {
    if stored == record {
        Outcome::Duplicate
    } else {
        Outcome::Conflict
    }
}

type WriteQuery<'q> = sqlx::query::Query<'q, Db, sqlx::postgres::PgArguments>;

/// `WRITE`'s arrays: the rows at `insert`, what they change besides (from the outcomes), the
/// rejects, and the notifications of what this node stored.
fn bind_write<'q>(
    q: WriteQuery<'q>,
    rows: &'q [Row],
    insert: &[usize],
    outcomes: &'q [Outcome],
    rejects: &'q [RejectRow],
    node: &str,
) -> WriteQuery<'q> {
    let pick = || insert.iter().map(|&i| &rows[i]);
    let mut q = q
        .bind(pick().map(|r| r.device_id.as_str()).collect::<Vec<_>>())
        .bind(pick().map(|r| r.seq).collect::<Vec<_>>())
        .bind(pick().map(|r| r.ts).collect::<Vec<_>>());
    for k in 0..Measurement::NAMES.len() {
        q = q.bind(pick().map(|r| r.measurement.values()[k]).collect::<Vec<_>>());
    }
    q = q
        .bind(pick().map(|r| r.ext.as_deref()).collect::<Vec<_>>())
        .bind(pick().map(|r| r.record.as_str()).collect::<Vec<_>>())
        .bind(pick().map(|r| r.kid.as_str()).collect::<Vec<_>>())
        .bind(pick().map(|r| r.received_ms).collect::<Vec<_>>());

    let newest = batch::latest_positions(rows, outcomes);
    q = q
        .bind(newest.iter().map(|r| r.device_id.as_str()).collect::<Vec<_>>())
        .bind(newest.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(newest.iter().map(|r| r.ts).collect::<Vec<_>>());
    for k in 0..Measurement::NAMES.len() {
        q = q.bind(newest.iter().map(|r| r.measurement.values()[k]).collect::<Vec<_>>());
    }
    q = q.bind(newest.iter().map(|r| r.received_ms).collect::<Vec<_>>());

    let spans = batch::spans(rows, outcomes);
    q.bind(spans.iter().map(|s| s.device_id).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.hour).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.min_seq).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.max_seq).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.newest_ts).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.newest_seq).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.newest_bat).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| s.newest_tmp).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.received_ms).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.transport).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.key_name.as_deref()).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.device_id.as_deref()).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.index).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.reason).collect::<Vec<_>>())
        .bind(rejects.iter().map(|r| r.envelope.as_str()).collect::<Vec<_>>())
        // Delivered to the other nodes only if this commits.
        .bind(commits::payloads(node, rows, outcomes))
}

#[cfg(test)]
mod tests;
