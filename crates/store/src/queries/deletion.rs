//! Deleting an organization on request, in SQL both backends speak (compiled inside each backend
//! module, like `principals.rs`). Every step is idempotent and commits on its own, positions in
//! the purge's short transactions, so ingest never waits long and an interrupted deletion is
//! resumed by asking again. The organization's row goes last: until then it is still there to be
//! deleted.

use super::Handle;
use crate::StoreError;
use crate::access::AuditEntry;
use crate::retention::OrgDeletion;

impl Handle {
    pub(crate) async fn delete_org(
        &self,
        org: &str,
        delete_devices: bool,
        audit: &AuditEntry,
    ) -> Result<OrgDeletion, StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        // Asked for, before anything is gone: the request is on the trail even if it stops.
        let started = AuditEntry {
            action: "org.delete.start".into(),
            org_id: Some(org.to_owned()),
            detail: Some(serde_json::json!({ "delete_devices": delete_devices }).to_string()),
            ..audit.clone()
        };
        super::audit::append_audit(&mut tx, &self.master, &started).await?;
        tx.commit().await?;

        let devices: Vec<String> =
            sqlx::query_scalar("SELECT device_id FROM device_assignments WHERE org_id = $1 ORDER BY device_id")
                .bind(org)
                .fetch_all(&self.pool)
                .await?;
        let mut report = OrgDeletion {
            org_id: org.to_owned(),
            devices: devices.len() as u64,
            devices_deleted: delete_devices,
            positions: self.purge_positions(&devices, i64::MAX, None).await?,
            latest_positions: self.purge_latest(&devices, i64::MAX).await?,
            ..OrgDeletion::default()
        };

        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        for d in &devices {
            if delete_devices {
                for sql in [
                    "DELETE FROM device_assignments WHERE device_id = $1",
                    "DELETE FROM keys WHERE owner_id = $1",
                    "DELETE FROM principals WHERE id = $1 AND kind = 'device'",
                ]
                .into_iter()
                .chain(super::DELETE_DEVICE_MARK)
                {
                    sqlx::query(sql).bind(d).execute(&mut *tx).await?;
                }
                // Every node's key cache forgets it.
                Self::note_change(&mut tx, d).await?;
            } else {
                sqlx::query("DELETE FROM device_assignments WHERE device_id = $1")
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
            }
            // Its events start afresh with the organization it is given next, if any.
            sqlx::query("DELETE FROM event_cursors WHERE device_id = $1")
                .bind(d)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM share_links WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?;
        report.alert_rules = sqlx::query("DELETE FROM alert_rules WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM alert_outbox WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?;
        report.events = sqlx::query("DELETE FROM device_events WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.event_limits = sqlx::query("DELETE FROM event_limits WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.membership_rules = sqlx::query("DELETE FROM membership_rules WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM user_group_scopes WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?;
        report.user_groups = sqlx::query("DELETE FROM user_groups WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.geofences = sqlx::query("DELETE FROM geofences WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        report.order_groups = sqlx::query("DELETE FROM order_groups WHERE org_id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM organizations WHERE id = $1")
            .bind(org)
            .execute(&mut *tx)
            .await?;
        let done = AuditEntry {
            action: "org.delete".into(),
            org_id: Some(org.to_owned()),
            detail: Some(serde_json::to_string(&report).map_err(|e| StoreError::Inconsistent(e.to_string()))?),
            ..audit.clone()
        };
        super::audit::append_audit(&mut tx, &self.master, &done).await?;
        tx.commit().await?;
        Ok(report)
    }
}
