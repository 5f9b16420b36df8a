//! The retention purge, in SQL both backends speak (compiled inside each backend module, like
//! `principals.rs`). The backend adds its whole-partition drops (`drop_partitions_before`, which
//! does nothing on SQLite) and, on PostgreSQL, the session lock that lets one node purge at a time
//! (`super::SESSION_JOB_LOCK`). See `crate::retention` for the design.

use super::{Db, Handle};
use crate::StoreError;
use crate::access::AuditEntry;
use crate::batch::span_of;
use crate::retention::{OrgPurge, PurgeReport, cutoff};

/// The purge's number among the jobs that run once across the nodes.
const JOB_PURGE: i32 = 3;

/// Spans read per device and query.
const SPANS_PER_READ: i64 = 512;

/// Rows of whole partitions dropped, per organization (`None`: devices assigned to none).
pub(crate) type RowsByOrg = Vec<(Option<String>, i64)>;

/// Expired hours of positions waiting to be deleted in one transaction.
struct Pending {
    /// (device, hour, min_seq, max_seq, whole hour expired)
    spans: Vec<(String, i64, i64, i64, bool)>,
    /// Spans below the oldest partition left (their rows went with dropped partitions).
    below: Vec<(String, i64)>,
    rows: i64,
}

impl Handle {
    /// Remove what is past its retention at `now`: positions per organization (whole partitions
    /// first where the backend has them), latest positions, rejected records. `None` when
    /// another node is purging.
    pub(crate) async fn purge(&self, now: i64) -> Result<Option<PurgeReport>, StoreError> {
        let lock = match super::SESSION_JOB_LOCK {
            Some((take, _)) => {
                let mut conn = self.pool.acquire().await?;
                let got: bool = sqlx::query_scalar(take).bind(JOB_PURGE).fetch_one(&mut *conn).await?;
                if !got {
                    return Ok(None);
                }
                Some(conn)
            }
            None => None,
        };
        let result = self.purge_now(now).await;
        if let (Some(mut conn), Some((_, release))) = (lock, super::SESSION_JOB_LOCK) {
            // A lock not released goes with its connection.
            if sqlx::query(release).bind(JOB_PURGE).execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
        }
        result.map(Some)
    }

    async fn purge_now(&self, now: i64) -> Result<PurgeReport, StoreError> {
        let started_ms = crate::now_ms();
        let r = self.retention;
        let chosen: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT id, positions_retention_days FROM organizations ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let mut groups: Vec<OrgPurge> = chosen
            .into_iter()
            .map(|(id, days)| (Some(id), days.map(|d| u32::try_from(d).unwrap_or(u32::MAX))))
            .chain([(None, None)])
            .map(|(org_id, days)| {
                let days = r.positions_days_for(days);
                OrgPurge {
                    org_id,
                    retention_days: days,
                    cutoff_ms: cutoff(now, days),
                    positions: 0,
                    latest: 0,
                    events: 0,
                }
            })
            .collect();

        // Whole partitions past the longest retention in force.
        let longest = groups
            .iter()
            .map(|g| g.retention_days)
            .max()
            .unwrap_or(r.positions_days);
        let (partitions, floor) = self.drop_partitions_before(cutoff(now, longest)).await?;
        for (_, by_org) in &partitions {
            for (org, rows) in by_org {
                // An organization made since the list was read counts with the unassigned (last).
                let i = groups.iter().position(|g| &g.org_id == org).unwrap_or(groups.len() - 1);
                groups[i].positions += u64::try_from(*rows).unwrap_or(0);
            }
        }

        for g in &mut groups {
            let devices: Vec<String> = match &g.org_id {
                Some(org) => {
                    sqlx::query_scalar("SELECT device_id FROM device_assignments WHERE org_id = $1 ORDER BY device_id")
                        .bind(org)
                        .fetch_all(&self.pool)
                        .await?
                }
                None => {
                    sqlx::query_scalar(
                        "SELECT id FROM principals p WHERE kind = 'device' AND NOT EXISTS \
                         (SELECT 1 FROM device_assignments da WHERE da.device_id = p.id) ORDER BY id",
                    )
                    .fetch_all(&self.pool)
                    .await?
                }
            };
            g.positions += self.purge_positions(&devices, g.cutoff_ms, floor).await?;
            g.latest = self.purge_latest(&devices, g.cutoff_ms).await?;
            if let Some(org) = &g.org_id {
                // Deliveries go with their events (those still waiting too: past retention,
                // the event is not to be sent anywhere any more).
                sqlx::query(
                    "DELETE FROM alert_outbox WHERE org_id = $1 AND event_id IN \
                     (SELECT id FROM device_events WHERE org_id = $1 AND ts < $2)",
                )
                .bind(org)
                .bind(g.cutoff_ms)
                .execute(&self.pool)
                .await?;
                g.events = sqlx::query("DELETE FROM device_events WHERE org_id = $1 AND ts < $2")
                    .bind(org)
                    .bind(g.cutoff_ms)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
        }
        let rejects = self.purge_rejects(cutoff(now, r.rejects_days)).await?;
        let audit_pseudonymized = self
            .pseudonymize_audit_log(super::audit::personal_cutoff(now, &r))
            .await?;
        let audit_removed = self.purge_audit_log(cutoff(now, r.audit_days)).await?;

        let report = PurgeReport {
            started_ms,
            finished_ms: crate::now_ms(),
            organizations: groups,
            partitions: partitions.into_iter().map(|(p, _)| p).collect(),
            rejects,
            audit_pseudonymized,
            audit_removed,
        };
        self.audit_purge(&report).await?;
        Ok(report)
    }

    /// Delete the positions of `devices` with `ts` below `cut`, hour by hour, a transaction per
    /// `batch_rows` rows or so. Spans below `floor` (the oldest partition left after drops) have
    /// no rows left and only their span rows go.
    pub(super) async fn purge_positions(
        &self,
        devices: &[String],
        cut: i64,
        floor: Option<i64>,
    ) -> Result<u64, StoreError> {
        let cut_hour = span_of(cut);
        let floor_hour = floor.map(span_of);
        let mut pending = Pending {
            spans: Vec::new(),
            below: Vec::new(),
            rows: 0,
        };
        let mut deleted = 0;
        for device in devices {
            let mut after = i64::MIN;
            loop {
                let spans: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT hour, min_seq, max_seq FROM position_spans \
                     WHERE device_id = $1 AND hour > $2 AND hour <= $3 ORDER BY hour LIMIT $4",
                )
                .bind(device)
                .bind(after)
                .bind(cut_hour)
                .bind(SPANS_PER_READ)
                .fetch_all(&self.pool)
                .await?;
                for &(hour, min_seq, max_seq) in &spans {
                    after = hour;
                    if floor_hour.is_some_and(|f| hour < f) {
                        pending.below.push((device.clone(), hour));
                        pending.rows += 1;
                    } else {
                        pending
                            .spans
                            .push((device.clone(), hour, min_seq, max_seq, hour < cut_hour));
                        pending.rows += max_seq.saturating_sub(min_seq).saturating_add(1);
                    }
                    if pending.rows >= i64::from(self.retention.batch_rows) {
                        deleted += self.delete_expired(&mut pending, cut).await?;
                    }
                }
                if (spans.len() as i64) < SPANS_PER_READ {
                    break;
                }
            }
        }
        deleted += self.delete_expired(&mut pending, cut).await?;
        Ok(deleted)
    }

    /// One transaction: the pending hours' rows below `cut`, through `(device_id, seq)`, and the
    /// spans of hours wholly expired.
    async fn delete_expired(&self, pending: &mut Pending, cut: i64) -> Result<u64, StoreError> {
        if pending.spans.is_empty() && pending.below.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let mut deleted = 0;
        for (device, hour, min_seq, max_seq, whole) in &pending.spans {
            deleted +=
                sqlx::query("DELETE FROM positions WHERE device_id = $1 AND seq >= $2 AND seq <= $3 AND ts < $4")
                    .bind(device)
                    .bind(min_seq)
                    .bind(max_seq)
                    .bind(cut)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if *whole {
                Self::delete_span(&mut tx, device, *hour).await?;
            }
        }
        for (device, hour) in &pending.below {
            Self::delete_span(&mut tx, device, *hour).await?;
        }
        tx.commit().await?;
        pending.spans.clear();
        pending.below.clear();
        pending.rows = 0;
        // Then as long again (at most a second) for everyone else: the purge holds the database at
        // most about half of its time, and SQLite's one writer gets its turns.
        tokio::time::sleep(started.elapsed().min(std::time::Duration::from_secs(1))).await;
        Ok(deleted)
    }

    async fn delete_span(tx: &mut sqlx::Transaction<'_, Db>, device: &str, hour: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM position_spans WHERE device_id = $1 AND hour = $2")
            .bind(device)
            .bind(hour)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Latest positions of `devices` older than `cut`, a transaction per 500 devices.
    pub(super) async fn purge_latest(&self, devices: &[String], cut: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for chunk in devices.chunks(500) {
            let mut b = sqlx::QueryBuilder::<Db>::new("DELETE FROM latest_positions WHERE ts < ");
            b.push_bind(cut).push(" AND device_id IN (");
            let mut list = b.separated(", ");
            for d in chunk {
                list.push_bind(d.as_str());
            }
            b.push(")");
            deleted += b.build().execute(&self.pool).await?.rows_affected();
        }
        Ok(deleted)
    }

    /// Rejected records received before `cut`, oldest first, `batch_rows` a transaction.
    async fn purge_rejects(&self, cut: i64) -> Result<u64, StoreError> {
        let batch = i64::from(self.retention.batch_rows);
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM rejects WHERE id IN \
                 (SELECT id FROM rejects WHERE received_ms < $1 ORDER BY id LIMIT $2)",
            )
            .bind(cut)
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < batch as u64 {
                return Ok(deleted);
            }
        }
    }

    /// One audit row per organization that lost data, and one for the run.
    async fn audit_purge(&self, report: &PurgeReport) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let entry = |org_id: Option<String>, detail: serde_json::Value| AuditEntry {
            actor: "trackgate:retention".to_owned(),
            actor_email: None,
            org_id,
            action: "retention.purge".to_owned(),
            target: None,
            detail: Some(detail.to_string()),
            remote_addr: None,
            over_ride: false,
        };
        for g in &report.organizations {
            if let Some(org) = &g.org_id
                && (g.positions > 0 || g.latest > 0)
            {
                let detail = serde_json::json!({
                    "retention_days": g.retention_days,
                    "cutoff_ms": g.cutoff_ms,
                    "positions": g.positions,
                    "latest_positions": g.latest,
                });
                super::audit::append_audit(&mut tx, &self.master, &entry(Some(org.clone()), detail)).await?;
            }
        }
        let run = serde_json::to_value(report).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        super::audit::append_audit(&mut tx, &self.master, &entry(None, run)).await?;
        tx.commit().await?;
        Ok(())
    }
}
