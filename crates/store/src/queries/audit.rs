//! The audit log's chain and pseudonyms, in SQL both backends speak (compiled inside each backend
//! module, like `principals.rs`); the design is in `crate::audit`. Appends take turns
//! (`super::SERIALIZE_AUDIT` on PostgreSQL; SQLite's one writer), so each links to the newest.

use super::{Db, Handle};
use crate::StoreError;
use crate::access::{AuditEntry, AuditRecord};
use crate::audit::{self, AuditFailure, AuditVerdict, Fields};
use crate::{MasterKey, retention};
use sqlx::Row as _;
use std::collections::HashMap;

type Conn = <Db as sqlx::Database>::Connection;
type DbRow = <Db as sqlx::Database>::Row;

/// An entry's id, organization, hash and organization hash: what the anchors keep.
type ChainLinks = (i64, Option<String>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Rows read or changed per statement or transaction.
const PAGE: i64 = 1000;

const COLUMNS: &str =
    "id, at_ms, actor, actor_email, org_id, action, target, detail, remote_addr, override, prev_hash, hash, org_hash";

/// An audit row with its chain, as stored.
struct Stored {
    id: i64,
    at_ms: i64,
    actor: String,
    actor_email: Option<String>,
    org_id: Option<String>,
    action: String,
    target: Option<String>,
    detail: Option<String>,
    remote_addr: Option<String>,
    over_ride: bool,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
    org_hash: Option<Vec<u8>>,
}

impl Stored {
    fn read(r: &DbRow) -> Result<Stored, StoreError> {
        Ok(Stored {
            id: r.try_get("id")?,
            at_ms: r.try_get("at_ms")?,
            actor: r.try_get("actor")?,
            actor_email: r.try_get("actor_email")?,
            org_id: r.try_get("org_id")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            detail: r.try_get("detail")?,
            remote_addr: r.try_get("remote_addr")?,
            over_ride: r.try_get("override")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
            org_hash: r.try_get("org_hash")?,
        })
    }

    fn record(self) -> AuditRecord {
        AuditRecord {
            id: self.id,
            at_ms: self.at_ms,
            actor: self.actor,
            actor_email: self.actor_email,
            org_id: self.org_id,
            action: self.action,
            target: self.target,
            detail: self.detail,
            remote_addr: self.remote_addr,
            over_ride: self.over_ride,
        }
    }

    fn digest(&self, master: &MasterKey) -> [u8; 32] {
        audit::digest(
            master,
            &Fields {
                at_ms: self.at_ms,
                actor: &self.actor,
                actor_email: self.actor_email.as_deref(),
                org_id: self.org_id.as_deref(),
                action: &self.action,
                target: self.target.as_deref(),
                detail: self.detail.as_deref(),
                remote_addr: self.remote_addr.as_deref(),
                over_ride: self.over_ride,
            },
        )
    }
}

/// The newest entry's hash, and the newest of `org`'s.
async fn heads(conn: &mut Conn, org: Option<&str>) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), StoreError> {
    let last: Option<Option<Vec<u8>>> = sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let org_last: Option<Option<Vec<u8>>> = match org {
        Some(org) => {
            sqlx::query_scalar("SELECT org_hash FROM audit_log WHERE org_id = $1 ORDER BY id DESC LIMIT 1")
                .bind(org)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };
    Ok((last.flatten(), org_last.flatten()))
}

/// Append one audit row, linked to the newest, inside the caller's transaction (which holds the
/// turn until it commits).
pub(super) async fn append_audit(conn: &mut Conn, master: &MasterKey, e: &AuditEntry) -> Result<(), StoreError> {
    if let Some(lock) = super::SERIALIZE_AUDIT {
        sqlx::query(lock).execute(&mut *conn).await?;
    }
    let at_ms = crate::now_ms();
    let (prev, org_prev) = heads(conn, e.org_id.as_deref()).await?;
    let digest = audit::digest(
        master,
        &Fields {
            at_ms,
            actor: &e.actor,
            actor_email: e.actor_email.as_deref(),
            org_id: e.org_id.as_deref(),
            action: &e.action,
            target: e.target.as_deref(),
            detail: e.detail.as_deref(),
            remote_addr: e.remote_addr.as_deref(),
            over_ride: e.over_ride,
        },
    );
    let hash = audit::link(prev.as_deref(), &digest);
    let org_hash = e.org_id.as_ref().map(|_| audit::org_link(org_prev.as_deref(), &digest));
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, actor_email, org_id, action, target, detail, remote_addr, override, \
         prev_hash, hash, org_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(at_ms)
    .bind(&e.actor)
    .bind(&e.actor_email)
    .bind(&e.org_id)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.detail)
    .bind(&e.remote_addr)
    .bind(e.over_ride)
    .bind(prev)
    .bind(hash.to_vec())
    .bind(org_hash.map(|h| h.to_vec()))
    .execute(conn)
    .await?;
    Ok(())
}

impl Handle {
    /// The log (of `org`, when given), newest first, before entry `before_id` if given.
    pub(crate) async fn audit_log(
        &self,
        org: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut b = sqlx::QueryBuilder::<Db>::new(format!("SELECT {COLUMNS} FROM audit_log WHERE TRUE"));
        if let Some(org) = org {
            b.push(" AND org_id = ").push_bind(org);
        }
        if let Some(before) = before_id {
            b.push(" AND id < ").push_bind(before);
        }
        b.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| Stored::read(r).map(Stored::record)).collect()
    }

    /// Seal the entries made before the chain existed (the migration left their hashes empty),
    /// oldest first, in one transaction: a one-time step at open.
    pub(super) async fn seal_audit_log(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        if let Some(lock) = super::SERIALIZE_AUDIT {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE hash IS NULL ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (mut prev, mut org_prev): (Option<Vec<u8>>, HashMap<String, Vec<u8>>) = (None, HashMap::new());
        for r in &rows {
            let row = Stored::read(r)?;
            let digest = row.digest(&self.master);
            let hash = audit::link(prev.as_deref(), &digest).to_vec();
            let org_hash = match &row.org_id {
                Some(org) => {
                    let h = audit::org_link(org_prev.get(org).map(Vec::as_slice), &digest).to_vec();
                    org_prev.insert(org.clone(), h.clone());
                    Some(h)
                }
                None => None,
            };
            sqlx::query("UPDATE audit_log SET prev_hash = $1, hash = $2, org_hash = $3 WHERE id = $4")
                .bind(prev.clone())
                .bind(&hash)
                .bind(org_hash)
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
            prev = Some(hash);
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Replace the personal fields of entries older than `cut` by their pseudonyms, oldest first,
    /// a transaction per page, from where the last run stopped (`meta`: the id through which
    /// every entry is done), so a run reads only what is new. How many entries were changed.
    pub(super) async fn pseudonymize_audit_log(&self, cut: i64) -> Result<u64, StoreError> {
        const THROUGH: &str = "audit_pseudonymized_through";
        let mut changed = 0;
        loop {
            let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
            let through: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(THROUGH)
                .fetch_optional(&mut *tx)
                .await?;
            let through = through
                .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            let rows: Vec<(i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT id, at_ms, actor_email, remote_addr FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(through)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            let (mut last, mut done) = (through, (rows.len() as i64) < PAGE);
            for (id, at_ms, email, addr) in rows {
                // The first entry still inside its period ends the run: those after it are younger.
                if at_ms >= cut {
                    done = true;
                    break;
                }
                let hashed = |v: &Option<String>| v.as_deref().map(|v| audit::pseudonym(&self.master, v));
                let (new_email, new_addr) = (hashed(&email), hashed(&addr));
                if new_email != email || new_addr != addr {
                    sqlx::query("UPDATE audit_log SET actor_email = $1, remote_addr = $2 WHERE id = $3")
                        .bind(new_email)
                        .bind(new_addr)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    changed += 1;
                }
                last = id;
            }
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(THROUGH)
            .bind(last.to_string().into_bytes())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if done {
                return Ok(changed);
            }
        }
    }

    /// Remove the entries older than `cut`: a prefix of the log (up to the first entry at or past
    /// `cut`), a page a transaction, each page's newest entries kept as the anchors the first
    /// remaining ones follow. How many were removed.
    pub(super) async fn purge_audit_log(&self, cut: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
            if let Some(lock) = super::SERIALIZE_AUDIT {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let keep_from: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM audit_log WHERE at_ms >= $1")
                .bind(cut)
                .fetch_one(&mut *tx)
                .await?;
            let page: Vec<ChainLinks> =
                sqlx::query_as("SELECT id, org_id, hash, org_hash FROM audit_log WHERE id < $1 ORDER BY id LIMIT $2")
                    .bind(keep_from.unwrap_or(i64::MAX))
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
            let Some(&(last, ..)) = page.last() else {
                return Ok(removed);
            };
            let mut anchors: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
            for (id, org, hash, org_hash) in page.iter().cloned() {
                if let Some(h) = hash {
                    anchors.insert(String::new(), (id, h));
                }
                if let (Some(org), Some(h)) = (org, org_hash) {
                    anchors.insert(org, (id, h));
                }
            }
            for (scope, (id, hash)) in &anchors {
                sqlx::query(
                    "INSERT INTO audit_anchors (scope, last_id, hash) VALUES ($1, $2, $3) \
                     ON CONFLICT (scope) DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash",
                )
                .bind(scope)
                .bind(id)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            }
            // The guard lets this transaction, and no other, delete below the cutoff.
            sqlx::query("UPDATE audit_horizon SET before_ms = $1 WHERE one = 1")
                .bind(cut)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM audit_log WHERE id <= $1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_horizon SET before_ms = 0 WHERE one = 1")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            removed += page.len() as u64;
        }
    }

    /// Walk the chain (of `org`'s entries only, when given), oldest first, and say where it
    /// breaks.
    pub(crate) async fn verify_audit(&self, org: Option<&str>) -> Result<AuditVerdict, StoreError> {
        let mut verdict = AuditVerdict {
            entries: 0,
            head: None,
            failure: None,
        };
        // Where the retention purge left the chain: the newest entry it removed.
        let anchor: Option<(i64, Vec<u8>)> = sqlx::query_as("SELECT last_id, hash FROM audit_anchors WHERE scope = $1")
            .bind(org.unwrap_or(""))
            .fetch_optional(&self.pool)
            .await?;
        let (mut after, mut prev): (i64, Option<(i64, Vec<u8>)>) = (i64::MIN, anchor);
        loop {
            let mut q = sqlx::QueryBuilder::<Db>::new(format!("SELECT {COLUMNS} FROM audit_log WHERE id > "));
            q.push_bind(after);
            if let Some(org) = org {
                q.push(" AND org_id = ").push_bind(org);
            }
            q.push(" ORDER BY id LIMIT ").push_bind(PAGE);
            let rows = q.build().fetch_all(&self.pool).await?;
            for r in &rows {
                let row = Stored::read(r)?;
                after = row.id;
                verdict.entries += 1;
                let stored = if org.is_some() { &row.org_hash } else { &row.hash };
                let Some(stored) = stored else {
                    verdict.failure = Some(failure(row.id, "carries no hash: it was not written by trackgate"));
                    return Ok(verdict);
                };
                let digest = row.digest(&self.master);
                let prev_hash = prev.as_ref().map(|(_, h)| h.as_slice());
                let broken = match org {
                    Some(_) => (audit::org_link(prev_hash, &digest).as_slice() != stored.as_slice()).then(|| {
                        "does not verify: it was changed, or an entry of the organization before it was \
                         removed or moved"
                            .to_owned()
                    }),
                    None if row.prev_hash.as_deref() != prev_hash => Some(match &prev {
                        Some((id, _)) => {
                            format!("does not follow entry {id}: entries between them were removed or reordered")
                        }
                        None => "is not the first entry: the entries before it were removed".to_owned(),
                    }),
                    None => (audit::link(prev_hash, &digest).as_slice() != stored.as_slice())
                        .then(|| "was changed after it was written".to_owned()),
                };
                if let Some(reason) = broken {
                    verdict.failure = Some(failure(row.id, &reason));
                    return Ok(verdict);
                }
                prev = Some((row.id, stored.clone()));
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        verdict.head = prev.map(|(id, h)| (id, hex::encode(h)));
        Ok(verdict)
    }
}

fn failure(id: i64, reason: &str) -> AuditFailure {
    AuditFailure {
        id,
        reason: format!("entry {id} {reason}"),
    }
}

/// The cutoff of the personal fields' period.
pub(super) fn personal_cutoff(now: i64, r: &crate::Retention) -> i64 {
    retention::cutoff(now, r.audit_personal_days)
}
