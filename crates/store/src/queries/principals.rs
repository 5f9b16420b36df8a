//! Keys, principals and the raw position reads, in SQL both backends speak. This file is compiled
//! once inside each backend module (`#[path]`): `super` names that backend's `Db` (the sqlx
//! database), `Handle` (its pool and master key) and `MAX_BIND_PARAMS`. Placeholders are `$1`,
//! `$2`, ...: PostgreSQL's form, which sqlx's SQLite driver binds by the same numbers.

use super::{Db, Handle, MAX_BIND_PARAMS};
use crate::StoreError;
use crate::columns::measurement_columns;
use crate::model::{KeyInfo, Kind, Principal, PrincipalInfo, StoredPosition};
use crate::rules::{self, check_id, key_aad};
use sqlx::{Connection as _, QueryBuilder, Row as _};
use std::collections::HashMap;
use trackgate_proto::envelope::ActiveKey;
use trackgate_proto::{Measurement, Secret};

type DbRow = <Db as sqlx::Database>::Row;
type Conn = <Db as sqlx::Database>::Connection;

const MASTER_CHECK_AAD: &[u8] = b"trackgate master key check";

/// Background jobs that run once across the nodes, by their lock's number.
const JOB_PRUNE_REJECTS: i32 = 2;

/// A write on `conn` failed: close the connection instead of returning it to the pool, so no
/// state a failed write left behind is reused. On SQLite that is a transaction SQLite may have
/// rolled back by itself (see `sqlite::leaves_no_transaction_open`), or a connection opened while
/// the database file could not be written, which stays read-only for good (SQLite falls back to
/// read-only at open) and would keep failing after the disk is writable again.
pub(super) fn discard_on_error<T>(
    conn: &mut sqlx::pool::PoolConnection<Db>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Handle {
    /// The first open seals a known value; every later open must be able to open it, so a wrong
    /// master key is reported at start rather than as failed signatures later. Nodes opening a
    /// new database at once agree on the first value written.
    pub(super) async fn check_master_key(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('master_key_check', $1) ON CONFLICT (key) DO NOTHING")
            .bind(self.master.seal(MASTER_CHECK_AAD, b"trackgate"))
            .execute(&self.pool)
            .await?;
        let sealed: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'master_key_check'")
            .fetch_one(&self.pool)
            .await?;
        self.master
            .open(MASTER_CHECK_AAD, &sealed)
            .map_err(|_| StoreError::WrongMasterKey)?;
        Ok(())
    }

    /// A real write, committed: does the database take writes again?
    pub(crate) async fn probe_write(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let result = Self::probe_on(&mut conn).await;
        discard_on_error(&mut conn, result)
    }

    async fn probe_on(conn: &mut Conn) -> Result<(), StoreError> {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(crate::now_ms().to_be_bytes().to_vec())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) fn pool_status(&self) -> crate::PoolStatus {
        let (waits, wait_seconds) = self.waits.totals();
        crate::PoolStatus {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
            waits,
            wait_seconds,
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Keep the newest `keep` rejects. Every node's writer calls this; with several nodes on one
    /// database one of them prunes at a time and the others skip (`super::TRY_JOB_LOCK`).
    pub(crate) async fn prune_rejects(&self, keep: u64) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        if let Some(lock) = super::TRY_JOB_LOCK {
            let got: bool = sqlx::query_scalar(lock)
                .bind(JOB_PRUNE_REJECTS)
                .fetch_one(&mut *tx)
                .await?;
            if !got {
                return Ok(0);
            }
        }
        let done = sqlx::query("DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - $1")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Log a change to `id`, for every node's key cache (`changes_since`). Readers follow the log
    /// by `seq`, so `seq` must grow in commit order: `super::SERIALIZE_CHANGE_LOG` makes writers
    /// of the log take turns until they commit (SQLite has one writer anyway).
    pub(super) async fn note_change(tx: &mut Conn, id: &str) -> Result<(), StoreError> {
        if let Some(lock) = super::SERIALIZE_CHANGE_LOG {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO principal_changes (principal_id, changed_ms) VALUES ($1, $2)")
            .bind(id)
            .bind(crate::now_ms())
            .execute(tx)
            .await?;
        Ok(())
    }

    /// `id` must be a provisioned supplier.
    async fn require_supplier(tx: &mut Conn, id: &str) -> Result<(), StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT kind FROM principals WHERE id = $1")
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
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        if let Some(s) = supplier {
            Self::require_supplier(&mut tx, s).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO principals (id, kind, supplier_id, enabled, created_ms) VALUES ($1, $2, $3, TRUE, $4)",
        )
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
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        if let Some(s) = supplier {
            Self::require_supplier(&mut tx, s).await?;
        }
        let now = crate::now_ms();
        for (id, kid, secret) in devices {
            let inserted = sqlx::query(
                "INSERT INTO principals (id, kind, supplier_id, enabled, created_ms) VALUES ($1, 'device', $2, TRUE, $3)",
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
            sqlx::query("INSERT INTO keys (owner_id, kid, sealed, active, created_ms) VALUES ($1, $2, $3, TRUE, $4)")
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
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let done = sqlx::query("UPDATE principals SET enabled = $1 WHERE id = $2")
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
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let exists = sqlx::query("SELECT 1 FROM principals WHERE id = $1")
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                kind: "device or supplier",
                id: owner.to_owned(),
            });
        }
        let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE owner_id = $1 AND active = TRUE")
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?;
        rules::check_key_room(owner, active)?;
        let sealed = self.master.seal(&key_aad(owner, kid), secret.as_bytes());
        let inserted =
            sqlx::query("INSERT INTO keys (owner_id, kid, sealed, active, created_ms) VALUES ($1, $2, $3, TRUE, $4)")
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
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let done = sqlx::query(
            "UPDATE keys SET active = FALSE, revoked_ms = $1 WHERE owner_id = $2 AND kid = $3 AND active = TRUE",
        )
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
            "SELECT id, kind, supplier_id, enabled, created_ms FROM principals WHERE $1 IS NULL OR kind = $1 ORDER BY id",
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
            let mut q =
                QueryBuilder::new("SELECT owner_id, kid, sealed FROM keys WHERE active = TRUE AND owner_id IN (");
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

    pub(super) fn open_secret(&self, owner: &str, kid: &str, row: &DbRow) -> Result<Secret, StoreError> {
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
            sqlx::query("SELECT seq, principal_id FROM principal_changes WHERE seq > $1 ORDER BY seq LIMIT 10000")
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
            "SELECT device_id, seq, ts, {}, ext, record FROM positions WHERE device_id = $1 ORDER BY seq LIMIT $2",
            measurement_columns("", "")
        );
        let rows = sqlx::query(&sql).bind(device).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(stored_position).collect()
    }

    pub(crate) async fn latest_position(&self, device: &str) -> Result<Option<StoredPosition>, StoreError> {
        let sql = format!(
            "SELECT l.device_id, l.seq, l.ts, {}, p.ext, p.record FROM latest_positions l \
             JOIN positions p ON p.device_id = l.device_id AND p.seq = l.seq AND p.ts = l.ts WHERE l.device_id = $1",
            measurement_columns("l", "")
        );
        let row = sqlx::query(&sql).bind(device).fetch_optional(&self.pool).await?;
        row.as_ref().map(stored_position).transpose()
    }

    pub(crate) async fn positions_in(
        &self,
        ranges: &[crate::SeqRange],
    ) -> Result<Vec<(String, crate::access::Fix)>, StoreError> {
        let sql = format!(
            "SELECT seq, ts, {} FROM positions WHERE device_id = $1 AND seq >= $2 AND seq <= $3 \
             AND lat IS NOT NULL ORDER BY seq",
            measurement_columns("", "")
        );
        let mut out = Vec::new();
        for r in ranges {
            let rows = sqlx::query(&sql)
                .bind(&r.device)
                .bind(r.first)
                .bind(r.last)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let fix = crate::access::Fix::new(
                    row.try_get("seq")?,
                    row.try_get("ts")?,
                    measurement(row, &Measurement::NAMES)?,
                );
                out.extend(fix.map(|f| (r.device.clone(), f)));
            }
        }
        Ok(out)
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
        let rows = sqlx::query("SELECT device_id, reason, key_name FROM rejects ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("device_id")?, r.try_get("reason")?, r.try_get("key_name")?)))
            .collect()
    }
}

/// The measurement columns of a row, by their names in the row: [`Measurement::NAMES`], or
/// those renamed by `measurement_columns(_, alias)` (see `sqlite::access::LATEST_FIX`).
pub(crate) fn measurement<S: AsRef<str>>(r: &DbRow, names: &[S; 8]) -> Result<Measurement, StoreError> {
    let mut values = [None; 8];
    for (value, name) in values.iter_mut().zip(names) {
        *value = r.try_get(name.as_ref())?;
    }
    Ok(Measurement::from_values(values))
}

/// A stored position as the write path takes it (for a copy into another database).
pub(super) fn stored_row(r: &DbRow) -> Result<crate::model::Row, StoreError> {
    Ok(crate::model::Row {
        device_id: r.try_get("device_id")?,
        seq: r.try_get("seq")?,
        ts: r.try_get("ts")?,
        measurement: measurement(r, &Measurement::NAMES)?,
        ext: r.try_get("ext")?,
        record: r.try_get("record")?,
        kid: r.try_get("kid")?,
        received_ms: r.try_get("received_ms")?,
    })
}

fn stored_position(r: &DbRow) -> Result<StoredPosition, StoreError> {
    Ok(StoredPosition {
        device_id: r.try_get("device_id")?,
        seq: r.try_get("seq")?,
        ts: r.try_get("ts")?,
        measurement: measurement(r, &Measurement::NAMES)?,
        ext: r.try_get("ext")?,
        record: r.try_get("record")?,
    })
}
