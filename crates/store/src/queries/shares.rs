//! Share links, in SQL both backends speak (compiled inside each backend module, like
//! `operators.rs`). See `crate::shares`.

use super::{Db, Handle};
use crate::StoreError;
use crate::access::AuditEntry;
use crate::shares::{NewShareLink, ShareLink};
use sqlx::Row as _;

const COLUMNS: &str =
    "l.id, l.org_id, l.device_id, l.created_by, l.created_ms, l.expires_ms, l.from_ms, l.to_ms, l.revoked_ms";

fn link(r: &<Db as sqlx::Database>::Row) -> Result<ShareLink, StoreError> {
    Ok(ShareLink {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        device_id: r.try_get("device_id")?,
        created_by: r.try_get("created_by")?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        from_ms: r.try_get("from_ms")?,
        to_ms: r.try_get("to_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

impl Handle {
    /// Make a link to `new.device_id` (which must be in `org`) for the token hashed as `hash`,
    /// with its audit row (which names the link, never the token).
    pub(crate) async fn add_share_link(
        &self,
        org: &str,
        new: &NewShareLink,
        hash: &[u8; 32],
        audit: &AuditEntry,
    ) -> Result<ShareLink, StoreError> {
        let now = crate::now_ms();
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require(
            &mut tx,
            "SELECT 1 FROM device_assignments WHERE org_id = $1 AND device_id = $2",
            &[org, &new.device_id],
            "device of the organization",
        )
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO share_links (org_id, device_id, token_hash, created_by, created_ms, expires_ms, from_ms, to_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(org)
        .bind(&new.device_id)
        .bind(hash.as_slice())
        .bind(&new.created_by)
        .bind(now)
        .bind(new.expires_ms)
        .bind(new.from_ms)
        .bind(new.to_ms)
        .fetch_one(&mut *tx)
        .await?;
        let audit = AuditEntry {
            org_id: Some(org.to_owned()),
            target: Some(format!("{} link {id}", new.device_id)),
            ..audit.clone()
        };
        super::operators::commit_audited(tx, &self.master, &audit).await?;
        Ok(ShareLink {
            id,
            org_id: org.to_owned(),
            device_id: new.device_id.clone(),
            created_by: new.created_by.clone(),
            created_ms: now,
            expires_ms: new.expires_ms,
            from_ms: new.from_ms,
            to_ms: new.to_ms,
            revoked_ms: None,
        })
    }

    /// The links of `device`, newest first.
    pub(crate) async fn share_links(&self, device: &str) -> Result<Vec<ShareLink>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM share_links l WHERE l.device_id = $1 ORDER BY l.id DESC");
        let rows = sqlx::query(&sql).bind(device).fetch_all(&self.pool).await?;
        rows.iter().map(link).collect()
    }

    /// Revoke link `id` of `device`, with its audit row.
    pub(crate) async fn revoke_share_link(&self, device: &str, id: i64, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let n = sqlx::query(
            "UPDATE share_links SET revoked_ms = $3 WHERE device_id = $1 AND id = $2 AND revoked_ms IS NULL",
        )
        .bind(device)
        .bind(id)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "share link",
                id: format!("{device}/{id}"),
            });
        }
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(())
    }

    /// The link a token opens at `now`: not revoked, not expired, its device still in the
    /// organization that shared it. `None` otherwise, whatever the reason.
    pub(crate) async fn open_share_link(&self, hash: &[u8; 32], now: i64) -> Result<Option<ShareLink>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM share_links l \
             JOIN device_assignments da ON da.device_id = l.device_id AND da.org_id = l.org_id \
             WHERE l.token_hash = $1 AND l.revoked_ms IS NULL AND l.expires_ms > $2"
        );
        let row = sqlx::query(&sql)
            .bind(hash.as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(link).transpose()
    }
}
