//! Events, in SQL both backends speak (compiled inside each backend module, like `operators.rs`):
//! which devices have records their events have not taken, those records in `(ts, seq)` order,
//! the events and the cursor stored together, the limits, and the events operators read. See
//! `crate::events`.

use super::operators::push_visible;
use super::{Db, Handle};
use crate::StoreError;
use crate::access::{AuditEntry, Visibility};
use crate::batch::{SPAN_MS, span_of};
use crate::events::{
    EventCursor, EventInput, EventLimits, EventQuery, EventSubject, LimitScope, NewEvent, ScopedLimits, StoredEvent,
};
use crate::rules::check_id;
use sqlx::{QueryBuilder, Row as _};

/// The event processor's number among the jobs that run once across the nodes.
const JOB_EVENTS: i32 = 5;

/// Spans read per device and query.
const SPANS_PER_READ: i64 = 64;

/// The limits in force for each device: the most specific level that sets each one. Joined as
/// `o` (organization), `g` (order group) and `d` (device) onto `da`.
const EFFECTIVE_LIMITS: &str = "COALESCE(d.stale_after_ms, g.stale_after_ms, o.stale_after_ms) AS stale_after_ms, \
     COALESCE(d.battery_low, g.battery_low, o.battery_low) AS battery_low, \
     CASE WHEN d.tmp_min IS NOT NULL THEN d.tmp_min WHEN g.tmp_min IS NOT NULL THEN g.tmp_min ELSE o.tmp_min END AS tmp_min, \
     CASE WHEN d.tmp_min IS NOT NULL THEN d.tmp_max WHEN g.tmp_min IS NOT NULL THEN g.tmp_max ELSE o.tmp_max END AS tmp_max";
const LIMIT_JOINS: &str = " LEFT JOIN event_limits o ON o.org_id = da.org_id AND o.scope = 'org' AND o.scope_id = '' \
     LEFT JOIN event_limits g ON g.org_id = da.org_id AND g.scope = 'order_group' AND g.scope_id = da.order_group_id \
     LEFT JOIN event_limits d ON d.org_id = da.org_id AND d.scope = 'device' AND d.scope_id = da.device_id";

/// A device's records of one span after the cursor `($4, $5)`: seqs from $2 to $3, `$4 <= ts < $6`,
/// in `(ts, seq)` order.
const RECORDS_SQL: &str = "SELECT seq, ts, lat, lon, bat, tmp, received_ms FROM positions \
     WHERE device_id = $1 AND seq >= $2 AND seq <= $3 AND ts >= $4 AND ts < $6 AND (ts > $4 OR seq > $5) \
     ORDER BY ts, seq LIMIT $7";

/// A job's session lock that makes one node do it (PostgreSQL), on a connection of its own
/// outside the pool (a lock held for hours must not take a connection from the writer); SQLite's
/// one process needs none.
#[derive(Debug)]
pub(crate) struct JobLockConn {
    conn: Option<<Db as sqlx::Database>::Connection>,
    job: i32,
}

/// The columns [`stored_event`] reads, of `device_events e`.
pub(super) const EVENT_COLUMNS: &str =
    "e.id, e.org_id, e.device_id, e.ts, e.seq, e.kind, e.detail, e.lat, e.lon, e.created_ms";

/// An event as [`EVENT_COLUMNS`] selected it.
pub(super) fn stored_event(r: &<Db as sqlx::Database>::Row) -> Result<StoredEvent, StoreError> {
    let detail: String = r.try_get("detail")?;
    let mut detail: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&detail)
        .map_err(|e| StoreError::Inconsistent(format!("a stored event's detail does not parse: {e}")))?;
    detail.remove("kind");
    Ok(StoredEvent {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        device_id: r.try_get("device_id")?,
        ts: r.try_get("ts")?,
        seq: r.try_get("seq")?,
        kind: r.try_get("kind")?,
        detail,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn limits_of(r: &<Db as sqlx::Database>::Row) -> Result<EventLimits, StoreError> {
    let (min, max): (Option<f64>, Option<f64>) = (r.try_get("tmp_min")?, r.try_get("tmp_max")?);
    Ok(EventLimits {
        stale_after_ms: r.try_get("stale_after_ms")?,
        battery_low: r.try_get("battery_low")?,
        temperature: min.zip(max),
    })
}

impl Handle {
    /// Become the node that does `job`: `None` while another node does.
    pub(crate) async fn take_job_lock(&self, job: i32) -> Result<Option<JobLockConn>, StoreError> {
        let Some((take, _)) = super::SESSION_JOB_LOCK else {
            return Ok(Some(JobLockConn { conn: None, job }));
        };
        use sqlx::Connection as _;
        let mut conn = <Db as sqlx::Database>::Connection::connect_with(&self.pool.connect_options()).await?;
        let got: bool = sqlx::query_scalar(take).bind(job).fetch_one(&mut conn).await?;
        if !got {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(JobLockConn { conn: Some(conn), job }))
    }

    /// Is the lock still held? A lock whose connection failed went with it.
    pub(crate) async fn job_lock_held(lock: &mut JobLockConn) -> bool {
        match &mut lock.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }

    /// Give the lock back (on shutdown): closing its connection ends the session and its locks.
    pub(crate) async fn release_job_lock(lock: JobLockConn) {
        use sqlx::Connection as _;
        if let (Some(mut conn), Some((_, release))) = (lock.conn, super::SESSION_JOB_LOCK) {
            let _ = sqlx::query(release).bind(lock.job).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }

    /// Become the event processor: `None` while another node is.
    pub(crate) async fn take_events_lock(&self) -> Result<Option<JobLockConn>, StoreError> {
        self.take_job_lock(JOB_EVENTS).await
    }

    /// The devices assigned to an organization that have records after their event cursor (or
    /// no cursor yet): each device's newest span tells, one index lookup per device.
    pub(crate) async fn devices_behind_events(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT da.device_id FROM device_assignments da \
             LEFT JOIN event_cursors c ON c.device_id = da.device_id \
             WHERE EXISTS (SELECT 1 FROM position_spans s WHERE s.device_id = da.device_id \
                 AND (c.device_id IS NULL OR (s.hour >= c.ts / 3600000 \
                      AND (s.newest_ts > c.ts OR (s.newest_ts = c.ts AND s.newest_seq > c.seq))))) \
             ORDER BY da.device_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The organization of `device` and the limits in force for it; `None` for a device assigned
    /// to none.
    pub(crate) async fn event_subject(&self, device: &str) -> Result<Option<EventSubject>, StoreError> {
        let sql = format!(
            "SELECT da.org_id, {EFFECTIVE_LIMITS} FROM device_assignments da {LIMIT_JOINS} WHERE da.device_id = $1"
        );
        let row = sqlx::query(&sql).bind(device).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(EventSubject {
                org_id: r.try_get("org_id")?,
                limits: limits_of(&r)?,
            })
        })
        .transpose()
    }

    pub(crate) async fn event_cursor(&self, device: &str) -> Result<Option<EventCursor>, StoreError> {
        let row = sqlx::query("SELECT ts, seq, state, stale FROM event_cursors WHERE device_id = $1")
            .bind(device)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(EventCursor {
                ts: r.try_get("ts")?,
                seq: r.try_get("seq")?,
                state: r.try_get("state")?,
                stale: r.try_get("stale")?,
            })
        })
        .transpose()
    }

    /// Up to `limit` of `device`'s records after `after` (from the start of its retention when
    /// `None`), in `(ts, seq)` order, read hour by hour through its spans.
    pub(crate) async fn records_after(
        &self,
        device: &str,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<EventInput>, StoreError> {
        let (start, after_seq) = match after {
            Some(a) => a,
            None => (self.device_cutoff(device).await?, i64::MIN),
        };
        let mut out = Vec::new();
        let mut from_hour = span_of(start);
        while out.len() < limit as usize {
            let spans: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT hour, min_seq, max_seq FROM position_spans WHERE device_id = $1 AND hour >= $2 \
                 ORDER BY hour LIMIT $3",
            )
            .bind(device)
            .bind(from_hour)
            .bind(SPANS_PER_READ)
            .fetch_all(&self.pool)
            .await?;
            let read_all = spans.len() < SPANS_PER_READ as usize;
            for &(hour, min_seq, max_seq) in &spans {
                let from_ts = start.max(hour * SPAN_MS);
                let rows = sqlx::query(RECORDS_SQL)
                    .bind(device)
                    .bind(min_seq)
                    .bind(max_seq)
                    .bind(from_ts)
                    .bind(if from_ts == start { after_seq } else { i64::MIN })
                    .bind((hour + 1).saturating_mul(SPAN_MS))
                    .bind((limit as usize - out.len()) as i64)
                    .fetch_all(&self.pool)
                    .await?;
                for r in &rows {
                    out.push(EventInput {
                        ts: r.try_get("ts")?,
                        seq: r.try_get("seq")?,
                        lat: r.try_get("lat")?,
                        lon: r.try_get("lon")?,
                        bat: r.try_get("bat")?,
                        tmp: r.try_get("tmp")?,
                        received_ms: r.try_get("received_ms")?,
                    });
                }
                if out.len() >= limit as usize {
                    return Ok(out);
                }
                from_hour = hour + 1;
            }
            if read_all {
                break;
            }
        }
        Ok(out)
    }

    /// Store `events` of `device` and move its cursor from `from` (`None`: it had none) to `to`,
    /// in one transaction. An event already stored is not stored again. `false`, and nothing
    /// written, if the cursor is no longer at `from` (another node took these records).
    pub(crate) async fn save_events(
        &self,
        device: &str,
        org: &str,
        from: Option<(i64, i64)>,
        to: &EventCursor,
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let now = crate::now_ms();
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let moved = match from {
            Some((ts, seq)) => sqlx::query(
                "UPDATE event_cursors SET ts = $2, seq = $3, state = $4, stale = $5, updated_ms = $6 \
                 WHERE device_id = $1 AND ts = $7 AND seq = $8",
            )
            .bind(device)
            .bind(to.ts)
            .bind(to.seq)
            .bind(&to.state)
            .bind(to.stale)
            .bind(now)
            .bind(ts)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => sqlx::query(
                "INSERT INTO event_cursors (device_id, ts, seq, state, stale, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id) DO NOTHING",
            )
            .bind(device)
            .bind(to.ts)
            .bind(to.seq)
            .bind(&to.state)
            .bind(to.stale)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if moved == 0 {
            return Ok(false);
        }
        for e in events {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO device_events (org_id, device_id, ts, seq, kind, subject, detail, lat, lon, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (device_id, ts, seq, kind, subject) DO NOTHING RETURNING id",
            )
            .bind(org)
            .bind(device)
            .bind(e.ts)
            .bind(e.seq)
            .bind(e.kind)
            .bind(&e.subject)
            .bind(&e.detail)
            .bind(e.lat)
            .bind(e.lon)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = id {
                Self::queue_deliveries(&mut tx, org, device, id, e.kind, now).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Devices whose newest record taken is older than their stale limit at `now`, and whose
    /// silence is not reported yet.
    pub(crate) async fn devices_gone_stale(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT device_id FROM (SELECT c.device_id, c.ts, {EFFECTIVE_LIMITS} FROM event_cursors c \
             JOIN device_assignments da ON da.device_id = c.device_id {LIMIT_JOINS} WHERE c.stale = $2) x \
             WHERE stale_after_ms IS NOT NULL AND ts < $1 - stale_after_ms ORDER BY device_id"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(now)
            .bind(false)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Set the limits of `org` at `scope` (all `None`: remove them), with the audit row.
    pub(crate) async fn set_event_limits(
        &self,
        org: &str,
        scope: &LimitScope,
        limits: EventLimits,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let limits = limits.checked()?;
        let (kind, id) = scope.parts();
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        match scope {
            LimitScope::Org => {}
            LimitScope::OrderGroup(g) => {
                check_id("order group id", g)?;
                Self::require(
                    &mut tx,
                    "SELECT 1 FROM order_groups WHERE org_id = $1 AND id = $2",
                    &[org, g],
                    "order group",
                )
                .await?;
            }
            LimitScope::Device(d) => {
                check_id("device id", d)?;
                Self::require(
                    &mut tx,
                    "SELECT 1 FROM device_assignments WHERE org_id = $1 AND device_id = $2",
                    &[org, d],
                    "device of the organization",
                )
                .await?;
            }
        }
        if limits == EventLimits::default() {
            sqlx::query("DELETE FROM event_limits WHERE org_id = $1 AND scope = $2 AND scope_id = $3")
                .bind(org)
                .bind(kind)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        } else {
            let (min, max) = limits.temperature.unzip();
            sqlx::query(
                "INSERT INTO event_limits (org_id, scope, scope_id, stale_after_ms, battery_low, tmp_min, tmp_max, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (org_id, scope, scope_id) DO UPDATE SET \
                 stale_after_ms = excluded.stale_after_ms, battery_low = excluded.battery_low, \
                 tmp_min = excluded.tmp_min, tmp_max = excluded.tmp_max, updated_ms = excluded.updated_ms",
            )
            .bind(org)
            .bind(kind)
            .bind(id)
            .bind(limits.stale_after_ms)
            .bind(limits.battery_low)
            .bind(min)
            .bind(max)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(())
    }

    /// Every set of limits of `org`: the organization's first, then order groups', then devices'.
    pub(crate) async fn event_limits(&self, org: &str) -> Result<Vec<ScopedLimits>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, scope_id, stale_after_ms, battery_low, tmp_min, tmp_max, updated_ms FROM event_limits \
             WHERE org_id = $1 ORDER BY CASE scope WHEN 'org' THEN 0 WHEN 'order_group' THEN 1 ELSE 2 END, scope_id",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ScopedLimits {
                    scope: LimitScope::from_parts(r.try_get::<String, _>("scope")?.as_str(), r.try_get("scope_id")?)?,
                    limits: limits_of(r)?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    /// Events the caller may see that `q` asks for, newest first. An event is visible to its
    /// own organization only, through the same grants as its device.
    pub(crate) async fn events(&self, vis: &Visibility, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        if vis.is_nothing() {
            return Ok(Vec::new());
        }
        let mut b = QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM device_events e \
             JOIN device_assignments da ON da.device_id = e.device_id AND da.org_id = e.org_id WHERE TRUE"
        ));
        push_visible(&mut b, vis);
        if let Some(o) = &q.org {
            b.push(" AND e.org_id = ").push_bind(o.clone());
        }
        if let Some(d) = &q.device {
            b.push(" AND e.device_id = ").push_bind(d.clone());
        }
        if let Some(k) = &q.kind {
            b.push(" AND e.kind = ").push_bind(k.clone());
        }
        if let Some(id) = q.before_id {
            b.push(" AND e.id < ").push_bind(id);
        }
        b.push(" ORDER BY e.id DESC LIMIT ").push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(stored_event).collect()
    }
}
