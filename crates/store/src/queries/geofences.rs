//! Geofences, in SQL both backends speak (compiled inside each backend module, like
//! `operators.rs`): each change written with its audit row in one transaction.

use super::Handle;
use crate::StoreError;
use crate::access::AuditEntry;
use crate::geofence::{Area, Geofence};
use crate::rules::{check_id, check_text};
use sqlx::{QueryBuilder, Row as _};

impl Handle {
    /// Create or replace geofence `id` of `org`: the area checked first, then stored with its
    /// audit row.
    pub(crate) async fn put_geofence(
        &self,
        org: &str,
        id: &str,
        name: &str,
        area: Area,
        audit: &AuditEntry,
    ) -> Result<Geofence, StoreError> {
        check_id("geofence id", id)?;
        check_text("geofence name", name)?;
        let area = area.checked()?;
        let text = serde_json::to_string(&area).map_err(|e| StoreError::Inconsistent(e.to_string()))?;
        let now = crate::now_ms();
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        sqlx::query(
            "INSERT INTO geofences (org_id, id, name, area, updated_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org_id, id) DO UPDATE SET name = excluded.name, area = excluded.area, \
             updated_ms = excluded.updated_ms",
        )
        .bind(org)
        .bind(id)
        .bind(name)
        .bind(&text)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(Geofence {
            org_id: org.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            area,
            updated_ms: now,
        })
    }

    /// Remove geofence `id` of `org`, with its audit row.
    pub(crate) async fn remove_geofence(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let sql = "DELETE FROM geofences WHERE org_id = $1 AND id = $2";
        Self::delete_one(&mut tx, sql, org, id, "geofence").await?;
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(())
    }

    /// The geofences of the organizations in `orgs` (all of them for `None`), by organization and
    /// id.
    pub(crate) async fn geofences(&self, orgs: Option<&[String]>) -> Result<Vec<Geofence>, StoreError> {
        let mut b = QueryBuilder::new("SELECT org_id, id, name, area, updated_ms FROM geofences WHERE TRUE");
        if let Some(orgs) = orgs {
            if orgs.is_empty() {
                return Ok(Vec::new());
            }
            super::operators::push_in(&mut b, "org_id", orgs);
        }
        b.push(" ORDER BY org_id, id");
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let area: String = r.try_get("area")?;
                Ok(Geofence {
                    org_id: r.try_get("org_id")?,
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    area: serde_json::from_str(&area).map_err(|e| {
                        StoreError::Inconsistent(format!("the stored area of a geofence does not parse: {e}"))
                    })?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .collect()
    }
}
