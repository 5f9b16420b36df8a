//! The embedded SQLite backend: WAL, one writer at a time, multi-row inserts sized under the
//! bind-parameter limit, migrations embedded in the binary.

use crate::batch;
use crate::columns::{measurement_columns, measurement_from_excluded};
use crate::model::{KeyInfo, Kind, Outcome, Principal, PrincipalInfo, RejectRow, Row, StoredPosition};
use crate::rules::{self, check_id, key_aad};
use crate::{MasterKey, OpenOptions, StoreError};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::query_builder::Separated;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection as _, QueryBuilder, Row as _};
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;
use trackgate_proto::envelope::ActiveKey;
use trackgate_proto::{Measurement, Secret};

pub(crate) mod access;

/// SQLite allows this many bound parameters in one statement.
const MAX_BIND_PARAMS: usize = 32_766;
const POSITION_COLUMNS: usize = 15;
const LATEST_COLUMNS: usize = 12;
const REJECT_COLUMNS: usize = 8;
const SPAN_COLUMNS: usize = 6;
const MASTER_CHECK_AAD: &[u8] = b"trackgate master key check";

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

/// The schema, embedded: applied in version order, each once, recorded by sqlx. A database
/// made by an older version is moved forward at open.
#[derive(Debug)]
struct Embedded {
    /// The newest version to apply (tests make older databases with it).
    upto: i64,
}

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "operators", include_str!("../migrations/sqlite/0002_operators.sql")),
    (
        3,
        "position spans",
        include_str!("../migrations/sqlite/0003_position_spans.sql"),
    ),
];

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .filter(|&&(v, _, _)| v <= self.upto)
                .map(|&(v, d, sql)| {
                    Migration::new(v, Cow::Borrowed(d), MigrationType::Simple, Cow::Borrowed(sql), false)
                })
                .collect())
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    pub(crate) pool: SqlitePool,
    master: MasterKey,
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

/// A write on `conn` failed: close the connection instead of returning it to the pool. Besides a
/// transaction SQLite may have rolled back by itself (see [`leaves_no_transaction_open`]), a
/// connection opened while the database file could not be written is read-only for good (SQLite
/// falls back to read-only at open), and would keep failing after the disk is writable again.
fn discard_on_error<T>(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
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
        Migrator::new(Embedded { upto: i64::MAX }).await?.run(&pool).await?;
        let db = Sqlite { pool, master };
        db.check_master_key().await?;
        Ok(db)
    }

    /// The first open seals a known value; every later open must be able to open it, so a wrong
    /// master key is reported at start rather than as failed signatures later.
    async fn check_master_key(&self) -> Result<(), StoreError> {
        let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'master_key_check'")
            .fetch_optional(&self.pool)
            .await?;
        match stored {
            Some(sealed) => {
                self.master
                    .open(MASTER_CHECK_AAD, &sealed)
                    .map_err(|_| StoreError::WrongMasterKey)?;
            }
            None => {
                sqlx::query("INSERT INTO meta (key, value) VALUES ('master_key_check', ?)")
                    .bind(self.master.seal(MASTER_CHECK_AAD, b"trackgate"))
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A real write, committed: does the database take writes again?
    pub(crate) async fn probe_write(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = Self::probe_on(&mut conn).await;
        discard_on_error(&mut conn, result)
    }

    async fn probe_on(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(crate::now_ms().to_be_bytes().to_vec())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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

    pub(crate) fn pool_status(&self) -> crate::PoolStatus {
        crate::PoolStatus {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn write_batch(&self, rows: &[Row], rejects: &[RejectRow]) -> Result<Vec<Outcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
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
            let mut q = QueryBuilder::new(
                "INSERT INTO position_spans (device_id, hour, min_seq, max_seq, newest_ts, newest_seq) ",
            );
            q.push_values(chunk, |mut b, s| {
                b.push_bind(s.device_id)
                    .push_bind(s.hour)
                    .push_bind(s.min_seq)
                    .push_bind(s.max_seq)
                    .push_bind(s.newest_ts)
                    .push_bind(s.newest_seq);
            });
            q.push(
                " ON CONFLICT (device_id, hour) DO UPDATE SET \
                 min_seq = min(min_seq, excluded.min_seq), max_seq = max(max_seq, excluded.max_seq), \
                 newest_seq = CASE WHEN (excluded.newest_ts, excluded.newest_seq) > (newest_ts, newest_seq) \
                   THEN excluded.newest_seq ELSE newest_seq END, \
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

    pub(crate) async fn prune_rejects(&self, keep: u64) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?")
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn note_change(tx: &mut sqlx::SqliteConnection, id: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO principal_changes (principal_id, changed_ms) VALUES (?, ?)")
            .bind(id)
            .bind(crate::now_ms())
            .execute(tx)
            .await?;
        Ok(())
    }

    /// `id` must be a provisioned supplier.
    async fn require_supplier(tx: &mut sqlx::SqliteConnection, id: &str) -> Result<(), StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT kind FROM principals WHERE id = ?")
            .bind(id)
            .fetch_optional(tx)
            .await?;
        if found.as_deref() != Some("supplier") {
            return Err(StoreError::NotFound {
                kind: "supplier",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) async fn add_principal(&self, id: &str, kind: Kind, supplier: Option<&str>) -> Result<(), StoreError> {
        check_id(
            if kind == Kind::Device {
                "device id"
            } else {
                "supplier id"
            },
            id,
        )?;
        let mut tx = self.pool.begin().await?;
        if let Some(s) = supplier {
            Self::require_supplier(&mut tx, s).await?;
        }
        let inserted =
            sqlx::query("INSERT INTO principals (id, kind, supplier_id, enabled, created_ms) VALUES (?, ?, ?, 1, ?)")
                .bind(id)
                .bind(kind.as_str())
                .bind(supplier)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::IdTaken(id.to_owned())),
            other => other?,
        };
        Self::note_change(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Devices with one key each, many per transaction: fleet provisioning. All or nothing per
    /// call: an id already taken or a bad id fails the whole call, naming it.
    pub(crate) async fn import_devices(
        &self,
        devices: &[(String, String, Secret)],
        supplier: Option<&str>,
    ) -> Result<(), StoreError> {
        for (id, kid, _) in devices {
            check_id("device id", id)?;
            check_id("key id", kid)?;
        }
        let mut tx = self.pool.begin().await?;
        if let Some(s) = supplier {
            Self::require_supplier(&mut tx, s).await?;
        }
        let now = crate::now_ms();
        for (id, kid, secret) in devices {
            let inserted = sqlx::query(
                "INSERT INTO principals (id, kind, supplier_id, enabled, created_ms) VALUES (?, 'device', ?, 1, ?)",
            )
            .bind(id)
            .bind(supplier)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::IdTaken(id.clone())),
                other => other?,
            };
            let sealed = self.master.seal(&key_aad(id, kid), secret.as_bytes());
            sqlx::query("INSERT INTO keys (owner_id, kid, sealed, active, created_ms) VALUES (?, ?, ?, 1, ?)")
                .bind(id)
                .bind(kid)
                .bind(sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            Self::note_change(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE principals SET enabled = ? WHERE id = ?")
            .bind(enabled)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "device or supplier",
                id: id.to_owned(),
            });
        }
        Self::note_change(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn add_key(&self, owner: &str, kid: &str, secret: &Secret) -> Result<(), StoreError> {
        check_id("key id", kid)?;
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM principals WHERE id = ?")
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "device or supplier",
                id: owner.to_owned(),
            });
        }
        let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE owner_id = ? AND active = 1")
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
        rules::check_key_room(owner, active)?;
        let sealed = self.master.seal(&key_aad(owner, kid), secret.as_bytes());
        let inserted =
            sqlx::query("INSERT INTO keys (owner_id, kid, sealed, active, created_ms) VALUES (?, ?, ?, 1, ?)")
                .bind(owner)
                .bind(kid)
                .bind(sealed)
                .bind(crate::now_ms())
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::KeyExists {
                    owner: owner.to_owned(),
                    kid: kid.to_owned(),
                });
            }
            other => other?,
        };
        Self::note_change(&mut tx, owner).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn revoke_key(&self, owner: &str, kid: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE keys SET active = 0, revoked_ms = ? WHERE owner_id = ? AND kid = ? AND active = 1")
                .bind(crate::now_ms())
                .bind(owner)
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchKey {
                owner: owner.to_owned(),
                kid: kid.to_owned(),
            });
        }
        Self::note_change(&mut tx, owner).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn list(&self, kind: Option<Kind>) -> Result<Vec<PrincipalInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, supplier_id, enabled, created_ms FROM principals WHERE ?1 IS NULL OR kind = ?1 ORDER BY id",
        )
        .bind(kind.map(Kind::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut keys: HashMap<String, Vec<KeyInfo>> = HashMap::new();
        for k in
            sqlx::query("SELECT owner_id, kid, active, created_ms, revoked_ms FROM keys ORDER BY owner_id, created_ms")
                .fetch_all(&self.pool)
                .await?
        {
            keys.entry(k.try_get("owner_id")?).or_default().push(KeyInfo {
                kid: k.try_get("kid")?,
                active: k.try_get("active")?,
                created_ms: k.try_get("created_ms")?,
                revoked_ms: k.try_get("revoked_ms")?,
            });
        }
        rows.into_iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(PrincipalInfo {
                    keys: keys.remove(&id).unwrap_or_default(),
                    kind: Kind::parse(r.try_get("kind")?).as_str(),
                    supplier: r.try_get("supplier_id")?,
                    enabled: r.try_get("enabled")?,
                    created_ms: r.try_get("created_ms")?,
                    id,
                })
            })
            .collect()
    }

    pub(crate) async fn principals(&self, ids: &[&str]) -> Result<HashMap<String, Principal>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BIND_PARAMS / 2) {
            let mut q = QueryBuilder::new("SELECT id, kind, supplier_id, enabled FROM principals WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let id: String = r.try_get("id")?;
                let p = Principal {
                    kind: Kind::parse(r.try_get("kind")?),
                    enabled: r.try_get("enabled")?,
                    supplier: r.try_get("supplier_id")?,
                    keys: Vec::new(),
                    id: id.clone(),
                };
                out.insert(id, p);
            }
            let mut q = QueryBuilder::new("SELECT owner_id, kid, sealed FROM keys WHERE active = 1 AND owner_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(") ORDER BY owner_id, created_ms");
            for r in q.build().fetch_all(&self.pool).await? {
                let (owner, kid) = (r.try_get::<&str, _>("owner_id")?, r.try_get::<&str, _>("kid")?);
                let secret = self.open_secret(owner, kid, &r)?;
                if let Some(p) = out.get_mut(owner) {
                    p.keys.push(ActiveKey {
                        kid: kid.to_owned(),
                        secret,
                    });
                }
            }
        }
        Ok(out)
    }

    fn open_secret(&self, owner: &str, kid: &str, row: &SqliteRow) -> Result<Secret, StoreError> {
        let sealed: &[u8] = row.try_get("sealed")?;
        let plain = self
            .master
            .open(&key_aad(owner, kid), sealed)
            .map_err(|_| StoreError::WrongMasterKey)?;
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| StoreError::WrongMasterKey)?;
        Ok(Secret::from_bytes(bytes))
    }

    pub(crate) async fn changes_since(&self, cursor: i64) -> Result<(Vec<String>, i64), StoreError> {
        let rows =
            sqlx::query("SELECT seq, principal_id FROM principal_changes WHERE seq > ? ORDER BY seq LIMIT 10000")
                .bind(cursor)
                .fetch_all(&self.pool)
                .await?;
        let mut next = cursor;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            next = r.try_get("seq")?;
            ids.push(r.try_get("principal_id")?);
        }
        Ok((ids, next))
    }

    pub(crate) async fn change_cursor(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM principal_changes")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn positions(&self, device: &str, limit: i64) -> Result<Vec<StoredPosition>, StoreError> {
        let sql = format!(
            "SELECT device_id, seq, ts, {}, ext, record FROM positions WHERE device_id = ? ORDER BY seq LIMIT ?",
            measurement_columns("", "")
        );
        let rows = sqlx::query(&sql).bind(device).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(stored_position).collect()
    }

    pub(crate) async fn latest_position(&self, device: &str) -> Result<Option<StoredPosition>, StoreError> {
        let sql = format!(
            "SELECT l.device_id, l.seq, l.ts, {}, p.ext, p.record FROM latest_positions l \
             JOIN positions p ON p.device_id = l.device_id AND p.seq = l.seq WHERE l.device_id = ?",
            measurement_columns("l", "")
        );
        let row = sqlx::query(&sql).bind(device).fetch_optional(&self.pool).await?;
        row.as_ref().map(stored_position).transpose()
    }

    pub(crate) async fn count_positions(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM positions")
            .fetch_one(&self.pool)
            .await?)
    }

    pub(crate) async fn recent_rejects(
        &self,
        limit: i64,
    ) -> Result<Vec<(Option<String>, String, Option<String>)>, StoreError> {
        let rows = sqlx::query("SELECT device_id, reason, key_name FROM rejects ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("device_id")?, r.try_get("reason")?, r.try_get("key_name")?)))
            .collect()
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

/// The measurement columns of a row, by their names in the row: [`Measurement::NAMES`], or
/// those renamed by `measurement_columns(_, alias)` (see `sqlite::access::LATEST_FIX`).
pub(crate) fn measurement<S: AsRef<str>>(r: &SqliteRow, names: &[S; 8]) -> Result<Measurement, StoreError> {
    let mut values = [None; 8];
    for (value, name) in values.iter_mut().zip(names) {
        *value = r.try_get(name.as_ref())?;
    }
    Ok(Measurement::from_values(values))
}

fn stored_position(r: &SqliteRow) -> Result<StoredPosition, StoreError> {
    Ok(StoredPosition {
        device_id: r.try_get("device_id")?,
        seq: r.try_get("seq")?,
        ts: r.try_get("ts")?,
        measurement: measurement(r, &Measurement::NAMES)?,
        ext: r.try_get("ext")?,
        record: r.try_get("record")?,
    })
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
mod migration_tests {
    use super::*;
    use crate::batch::SPAN_MS;
    use crate::{Store, access::TrackCursor};

    /// A database made before position spans (migrations 1 and 2) is moved forward at open: its
    /// spans are built from its rows, the (device_id, ts) index is gone, and tracks read right.
    #[tokio::test]
    async fn a_database_from_before_spans_is_moved_forward_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let old = SqlitePool::connect_with(SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true))
            .await
            .unwrap();
        Migrator::new(Embedded { upto: 2 })
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        // (seq, hour, minute): seq 6's clock jumped back an hour; seq 7 has no position.
        let h0 = 490_000;
        for (seq, hour, minute) in [
            (1, h0, 0),
            (2, h0, 30),
            (3, h0 + 1, 5),
            (4, h0 + 1, 5),
            (6, h0, 45),
            (7, h0 + 1, 9),
        ] {
            let ts = hour * SPAN_MS + minute * 60_000;
            sqlx::query(
                "INSERT INTO positions (device_id, seq, ts, lat, lon, record, kid, received_ms) \
                 VALUES ('old-1', ?, ?, CASE WHEN ? = 7 THEN NULL ELSE 60.0 END, CASE WHEN ? = 7 THEN NULL ELSE 24.0 END, \
                 'r', 'k1', 0)",
            )
            .bind(seq)
            .bind(ts)
            .bind(seq)
            .bind(seq)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let opts = OpenOptions {
            url,
            max_connections: 2,
            sqlite: SqliteOptions::default(),
        };
        let s = Store::open(&opts, MasterKey::from_bytes(&[3; 32])).await.unwrap();
        let db = s.sqlite_for_tests();
        let spans: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT hour, min_seq, max_seq, newest_ts, newest_seq FROM position_spans WHERE device_id = 'old-1' ORDER BY hour",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let at = |hour: i64, minute: i64| hour * SPAN_MS + minute * 60_000;
        assert_eq!(spans, [(h0, 1, 6, at(h0, 45), 6), (h0 + 1, 3, 7, at(h0 + 1, 9), 7)]);
        let ts_index: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'positions_device_ts'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(ts_index, 0);

        // The whole track, two points a page: (ts, seq) order, the jumped record in its place.
        let mut seen = Vec::new();
        let mut after: Option<TrackCursor> = None;
        loop {
            let page = s.track("old-1", 0, i64::MAX, after, 2).await.unwrap();
            seen.extend(page.points.iter().map(|p| p.seq()));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, [1, 2, 6, 3, 4]);
    }
}
