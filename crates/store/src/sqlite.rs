//! The embedded SQLite backend: WAL, one writer at a time, multi-row inserts sized under the
//! bind-parameter limit, migrations embedded in the binary.

use crate::batch;
use crate::columns::{measurement_columns, measurement_from_excluded};
use crate::migrate::{self, Embedded};
use crate::model::{Outcome, RejectRow, Row};
use crate::{MasterKey, OpenOptions, Retention, StoreError};
use sqlx::migrate::Migrator;
use sqlx::query_builder::Separated;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

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

use principals::discard_on_error;

/// What the shared queries (`queries/`) are compiled against.
type Db = sqlx::Sqlite;
type Handle = Sqlite;
/// Principals' changes are logged by the one writer SQLite allows at a time.
const SERIALIZE_CHANGE_LOG: Option<&str> = None;
/// A transaction that will write takes the write lock at its start, waiting for it (busy
/// timeout) if another connection holds it. A deferred one that reads first and writes later can
/// instead fail at once with SQLITE_BUSY while another connection's transaction, such as one
/// rolled back on drop whose ROLLBACK is still queued, holds the lock.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// One writer at a time: jobs need no lock of their own.
const TRY_JOB_LOCK: Option<&str> = None;
const SESSION_JOB_LOCK: Option<(&str, &str)> = None;
/// SQLite keeps no seq marks (its one index is unique across the table).
const DELETE_DEVICE_MARK: Option<&str> = None;
/// The one writer appends to the audit log in turn anyway.
const SERIALIZE_AUDIT: Option<&str> = None;
/// A copy writes generated ids as given, and SQLite moves its counter past them by itself.
const INSERT_KEEPING_IDS: &str = "";
const SYNC_IDENTITY: Option<&str> = None;

/// SQLite allows this many bound parameters in one statement.
const MAX_BIND_PARAMS: usize = 32_766;
const POSITION_COLUMNS: usize = 15;
const LATEST_COLUMNS: usize = 12;
const REJECT_COLUMNS: usize = 8;
/// A span row as written; the bind-parameter budget per statement follows from the one list.
const SPAN_INSERT: &str = "device_id, hour, min_seq, max_seq, newest_ts, newest_seq, newest_bat, newest_tmp";
const SPAN_COLUMNS: usize = columns(SPAN_INSERT);

/// How many columns a comma-separated list names.
const fn columns(list: &str) -> usize {
    let b = list.as_bytes();
    let (mut n, mut i) = (1, 0);
    while i < b.len() {
        if b[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The head of the batch's multi-row position INSERT, built once.
static INSERT_POSITIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO positions (device_id, seq, ts, {}, ext, record, kid, received_ms) ",
        measurement_columns("", "")
    )
});

/// The head and tail of the latest-position upsert (forward in ts only), built once.
static UPSERT_LATEST: LazyLock<(String, String)> = LazyLock::new(|| {
    (
        format!(
            "INSERT INTO latest_positions (device_id, seq, ts, {}, received_ms) ",
            measurement_columns("", "")
        ),
        format!(
            " ON CONFLICT (device_id) DO UPDATE SET seq = excluded.seq, ts = excluded.ts, {}, \
             received_ms = excluded.received_ms WHERE excluded.ts > latest_positions.ts",
            measurement_from_excluded()
        ),
    )
});

/// `items` in chunks of at most `max_rows`, each a power of two long, largest first.
///
/// A multi-row INSERT's text depends on its row count, and SQLite parses each new text anew
/// (for a 2000-row statement that costs as much as a fifth of the commit). With power-of-two
/// chunks a batch of any size is a few statements from a dozen shapes, all in the connection's
/// statement cache after the first batches.
fn cached_chunks<T>(items: &[T], max_rows: usize) -> impl Iterator<Item = &[T]> {
    let largest = 1usize << max_rows.max(1).ilog2();
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = largest.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// Tuning of the embedded database.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (survives power loss) rather than `NORMAL` (survives a process crash).
    pub synchronous_full: bool,
    /// Page cache per connection, in MiB.
    pub cache_mib: u32,
    /// WAL pages written before an automatic checkpoint.
    pub wal_autocheckpoint_pages: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous_full: true,
            cache_mib: 32,
            wal_autocheckpoint_pages: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    pub(crate) pool: SqlitePool,
    master: MasterKey,
    waits: Arc<crate::PoolWaits>,
    retention: Retention,
}

/// Whether a pooled connection may be handed out again: it must hold no transaction.
///
/// SQLite rolls a whole transaction back by itself on some errors (`SQLITE_FULL`, `SQLITE_IOERR`,
/// `SQLITE_NOMEM`, and `SQLITE_BUSY` at commit). sqlx does not know: it counts transaction depth
/// itself and lowers it only when its own `COMMIT` or `ROLLBACK` succeeds. After such an error the
/// dropped transaction's `ROLLBACK` fails ("no transaction is active"), the depth stays at 1, and
/// the next `begin()` on that connection issues `SAVEPOINT` instead of `BEGIN`. Once one more
/// write fails there, `ROLLBACK TO SAVEPOINT` leaves a real transaction open, and every later
/// "commit" only releases a savepoint inside it: the caller is told the batch is committed while
/// nothing reaches the database file, and the open transaction holds the write lock ("database is
/// locked") until the process ends and loses it all. That is how a full disk made trackgate
/// acknowledge records it never stored. A connection left with any transaction depth is
/// therefore closed (which rolls back whatever SQLite still holds) and replaced, never reused.
fn leaves_no_transaction_open(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::debug!("discarding a database connection left inside a failed transaction");
    }
    clean
}

impl Sqlite {
    pub(crate) async fn open(opts: &OpenOptions, master: MasterKey) -> Result<Self, StoreError> {
        let s = &opts.sqlite;
        let connect = SqliteConnectOptions::from_str(&opts.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if s.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", format!("-{}", u64::from(s.cache_mib) * 1024))
            .pragma("wal_autocheckpoint", s.wal_autocheckpoint_pages.to_string())
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .before_acquire(|conn, _| Box::pin(async move { Ok(leaves_no_transaction_open(conn)) }))
            .connect_with(connect)
            .await?;
        Migrator::new(Embedded::all(migrate::SQLITE)).await?.run(&pool).await?;
        let db = Sqlite {
            pool,
            master,
            waits: Arc::default(),
            retention: opts.retention,
        };
        db.check_master_key().await?;
        db.seal_audit_log().await?;
        Ok(db)
    }

    pub(crate) async fn backup_to(&self, out: &std::path::Path) -> Result<(), StoreError> {
        let path = out
            .to_str()
            .ok_or_else(|| StoreError::Refused(format!("{} is not a UTF-8 path", out.display())))?;
        sqlx::query("VACUUM INTO $1").bind(path).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn restore(
        from: &std::path::Path,
        opts: &OpenOptions,
        master: MasterKey,
    ) -> Result<std::path::PathBuf, StoreError> {
        let target = SqliteConnectOptions::from_str(&opts.url)?.get_filename().to_path_buf();
        for f in [target.clone(), with_suffix(&target, "-wal")] {
            if f.exists() {
                return Err(StoreError::Refused(format!(
                    "{} exists: stop trackgate and move the current database away before restoring",
                    f.display()
                )));
            }
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let staged = with_suffix(&target, ".restoring");
        std::fs::copy(from, &staged).map_err(sqlx::Error::Io)?;
        let check = OpenOptions {
            url: format!("sqlite://{}", staged.display()),
            max_connections: 2,
            ..opts.clone()
        };
        let opened = Self::open(&check, master).await;
        match opened {
            Ok(db) => db.close().await,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        }
        // The check left its WAL checkpointed into the file; nothing else belongs with it.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&staged, suffix));
        }
        std::fs::rename(&staged, &target).map_err(sqlx::Error::Io)?;
        Ok(target)
    }

    /// One table, no partitions: expired positions go row by row.
    pub(crate) async fn drop_partitions_before(
        &self,
        _before: i64,
    ) -> Result<
        (
            Vec<(crate::retention::DroppedPartition, retention::RowsByOrg)>,
            Option<i64>,
        ),
        StoreError,
    > {
        Ok((Vec::new(), None))
    }

    /// The directory holding the database file.
    pub(crate) fn directory(&self) -> Option<std::path::PathBuf> {
        let file = self.pool.connect_options().get_filename().to_path_buf();
        let dir = file.parent()?;
        Some(if dir.as_os_str().is_empty() {
            std::path::PathBuf::from(".")
        } else {
            dir.to_path_buf()
        })
    }

    pub(crate) async fn write_batch(&self, rows: &[Row], rejects: &[RejectRow]) -> Result<Vec<Outcome>, StoreError> {
        let mut conn = self.waits.acquire(&self.pool).await?;
        let result = Self::write_batch_on(&mut conn, rows, rejects).await;
        discard_on_error(&mut conn, result)
    }

    async fn write_batch_on(
        conn: &mut sqlx::SqliteConnection,
        rows: &[Row],
        rejects: &[RejectRow],
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tx = conn.begin().await?;

        // The first row of each (device, seq) in the batch; later ones can only be resends.
        // (Built only when a chunk holds resends.)
        let mut first: Option<HashMap<(&str, i64), usize>> = None;
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(rows.len());
        for chunk in cached_chunks(rows, MAX_BIND_PARAMS / POSITION_COLUMNS) {
            let at = outcomes.len();
            let mut q = QueryBuilder::new(INSERT_POSITIONS.as_str());
            q.push_values(chunk, |mut b, r| {
                bind_measurement(&mut b, r);
                b.push_bind(r.ext.as_deref())
                    .push_bind(r.record.as_str())
                    .push_bind(r.kid.as_str())
                    .push_bind(r.received_ms);
            });
            q.push(" ON CONFLICT DO NOTHING");
            let done = q.build().execute(&mut *tx).await?;
            let inserted = done.rows_affected() as usize;
            if inserted == chunk.len() {
                // The common case: everything is new.
                outcomes.extend(std::iter::repeat_n(Outcome::Inserted, chunk.len()));
                continue;
            }
            // Resends in this chunk. The rows the statement inserted got consecutive rowids
            // ending at the last one inserted; a row of the chunk whose stored copy is among them,
            // and that is the first of its (device, seq) in the batch, is new. The others are
            // resends: equal text is a duplicate, other text a conflict.
            let first = first.get_or_insert_with(|| {
                let mut m = HashMap::with_capacity(rows.len());
                for (i, r) in rows.iter().enumerate() {
                    m.entry((r.device_id.as_str(), r.seq)).or_insert(i);
                }
                m
            });
            let last = done.last_insert_rowid();
            let new_rowids = (last - inserted as i64 + 1)..=last;
            for (k, r) in chunk.iter().enumerate() {
                let (rowid, stored): (i64, String) =
                    sqlx::query_as("SELECT rowid, record FROM positions WHERE device_id = ? AND seq = ?")
                        .bind(&r.device_id)
                        .bind(r.seq)
                        .fetch_one(&mut *tx)
                        .await?;
                let first_of_its_key = first.get(&(r.device_id.as_str(), r.seq)) == Some(&(at + k));
                outcomes.push(if inserted > 0 && new_rowids.contains(&rowid) && first_of_its_key {
                    Outcome::Inserted
                } else if stored == r.record {
                    Outcome::Duplicate
                } else {
                    Outcome::Conflict
                });
            }
        }

        // Each device's latest position moves forward only, and its spans widen.
        let newest = batch::latest_positions(rows, &outcomes);
        for chunk in cached_chunks(&newest, MAX_BIND_PARAMS / LATEST_COLUMNS) {
            let mut q = QueryBuilder::new(UPSERT_LATEST.0.as_str());
            q.push_values(chunk, |mut b, r| {
                bind_measurement(&mut b, r);
                b.push_bind(r.received_ms);
            });
            q.push(UPSERT_LATEST.1.as_str());
            q.build().execute(&mut *tx).await?;
        }

        let spans = batch::spans(rows, &outcomes);
        for chunk in cached_chunks(&spans, MAX_BIND_PARAMS / SPAN_COLUMNS) {
            let mut q = QueryBuilder::new(format!("INSERT INTO position_spans ({SPAN_INSERT}) "));
            q.push_values(chunk, |mut b, s| {
                b.push_bind(s.device_id)
                    .push_bind(s.hour)
                    .push_bind(s.min_seq)
                    .push_bind(s.max_seq)
                    .push_bind(s.newest_ts)
                    .push_bind(s.newest_seq)
                    .push_bind(s.newest_bat)
                    .push_bind(s.newest_tmp);
            });
            // The newest row's fields move together, decided before any of them changes (SQLite
            // evaluates every SET expression against the row as it was).
            q.push(
                " ON CONFLICT (device_id, hour) DO UPDATE SET \
                 min_seq = min(min_seq, excluded.min_seq), max_seq = max(max_seq, excluded.max_seq), \
                 newest_seq = CASE WHEN (excluded.newest_ts, excluded.newest_seq) > (newest_ts, newest_seq) \
                   THEN excluded.newest_seq ELSE newest_seq END, \
                 newest_bat = CASE WHEN (excluded.newest_ts, excluded.newest_seq) > (newest_ts, newest_seq) \
                   THEN excluded.newest_bat ELSE newest_bat END, \
                 newest_tmp = CASE WHEN (excluded.newest_ts, excluded.newest_seq) > (newest_ts, newest_seq) \
                   THEN excluded.newest_tmp ELSE newest_tmp END, \
                 newest_ts = max(newest_ts, excluded.newest_ts)",
            );
            q.build().execute(&mut *tx).await?;
        }

        for chunk in cached_chunks(rejects, MAX_BIND_PARAMS / REJECT_COLUMNS) {
            let mut q = QueryBuilder::new(
                "INSERT INTO rejects (received_ms, transport, key_name, device_id, idx, reason, envelope) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.received_ms)
                    .push_bind(r.transport)
                    .push_bind(r.key_name.as_deref())
                    .push_bind(r.device_id.as_deref())
                    .push_bind(r.index)
                    .push_bind(r.reason)
                    .push_bind(r.envelope.as_str());
            });
            q.build().execute(&mut *tx).await?;
        }

        tx.commit().await?;
        Ok(outcomes)
    }
}

/// The columns `positions` and `latest_positions` share, in their order: device_id, seq, ts and
/// the measurement columns.
fn bind_measurement<'q>(b: &mut Separated<'_, 'q, sqlx::Sqlite, &'static str>, r: &'q Row) {
    b.push_bind(r.device_id.as_str()).push_bind(r.seq).push_bind(r.ts);
    for value in r.measurement.values() {
        b.push_bind(value);
    }
}

/// `path` with `suffix` appended to its file name (`trackgate.db` + `-wal`).
fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    std::path::PathBuf::from(s)
}

#[cfg(test)]
mod chunk_tests {
    use super::cached_chunks;

    #[test]
    fn chunks_are_powers_of_two_under_the_limit_and_cover_everything_in_order() {
        for (n, max) in [
            (0, 2184),
            (1, 2184),
            (1818, 2184),
            (2184, 2184),
            (5000, 2184),
            (7, 3),
            (9, 1),
        ] {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = cached_chunks(&items, max).collect();
            assert!(
                chunks.iter().all(|c| c.len().is_power_of_two() && c.len() <= max),
                "{n}/{max}: {chunks:?}"
            );
            assert_eq!(chunks.concat(), items, "{n}/{max}");
        }
        let sizes: Vec<usize> = cached_chunks(&[0u8; 1818], 2184).map(<[u8]>::len).collect();
        assert_eq!(sizes, [1024, 512, 256, 16, 8, 2]);
    }
}

#[cfg(test)]
mod tests;
