//! Operators, in SQL both backends speak (compiled inside each backend module, like
//! `principals.rs`): administration (each change written with its audit row in one
//! transaction), membership resolution, and location reads filtered by [`Visibility`] in SQL.

use super::principals::{is_unique_violation, measurement};
use super::{Db, Handle};
use crate::StoreError;
use crate::access::{
    Assignment, AuditEntry, BBox, DeviceView, Fix, MemberKeys, Membership, OrderGroup, Organization, Role, Rule,
    RuleKind, Scope, TrackCursor, TrackPage, UserGroup, Visibility,
};
use crate::batch::{SPAN_MS, span_of};
use crate::columns::measurement_columns;
use crate::retention::{self, Retention};
use crate::rules::{check_id, check_text, checked_rule};
use sqlx::{QueryBuilder, Row as _};
use std::sync::LazyLock;
use trackgate_proto::Measurement;

type DbRow = <Db as sqlx::Database>::Row;
type Conn = <Db as sqlx::Database>::Connection;

pub(super) fn unique_or(e: sqlx::Error, kind: &'static str, id: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Exists {
            kind,
            id: id.to_owned(),
        }
    } else {
        e.into()
    }
}

/// Append the change's audit row and commit both together.
pub(super) async fn commit_audited(
    mut tx: sqlx::Transaction<'_, Db>,
    master: &crate::MasterKey,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    super::audit::append_audit(&mut tx, master, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// ` AND {column} IN (<values>)`; `values` must not be empty.
pub(super) fn push_in(b: &mut QueryBuilder<'_, Db>, column: &str, values: &[String]) {
    b.push(format!(" AND {column} IN ("));
    let mut list = b.separated(", ");
    for v in values {
        list.push_bind(v.clone());
    }
    b.push(")");
}

/// `AND (<the devices `da` the caller may see>)`; nothing to append for everything.
pub(super) fn push_visible(b: &mut QueryBuilder<'_, Db>, vis: &Visibility) {
    if vis.everything {
        return;
    }
    b.push(" AND (FALSE");
    if !vis.orgs.is_empty() {
        b.push(" OR da.org_id IN (");
        let mut list = b.separated(", ");
        for org in &vis.orgs {
            list.push_bind(org.clone());
        }
        b.push(")");
    }
    if !vis.order_groups.is_empty() {
        b.push(" OR (da.org_id, da.order_group_id) IN (VALUES ");
        let mut list = b.separated(", ");
        for (org, group) in &vis.order_groups {
            list.push("(")
                .push_bind_unseparated(org.clone())
                .push_unseparated(", ")
                .push_bind_unseparated(group.clone())
                .push_unseparated(")");
        }
        b.push(")");
    }
    b.push(")");
}

/// A device's assignment and its latest fix (columns `l_*`), as [`fix`] and [`assignment`] read
/// them.
fn assigned_with_latest() -> String {
    format!(
        "SELECT da.device_id, da.org_id, da.order_group_id, da.shipment_label, da.shipment_ref, \
         l.seq AS l_seq, l.ts AS l_ts, {}",
        measurement_columns("l", "l_")
    )
}

/// ` AND {ts} >= <the cutoff of organization o's retention at kept.now>`: what the retention of
/// the device's organization (`o`) still shows.
fn push_kept(b: &mut QueryBuilder<'_, Db>, ts: &str, kept: Kept) {
    b.push(format!(" AND {ts} >= CASE WHEN o.positions_retention_days < "))
        .push_bind(i64::from(kept.retention.positions_days))
        .push(" THEN ")
        .push_bind(kept.now)
        .push(" - o.positions_retention_days * 86400000 ELSE ")
        .push_bind(retention::cutoff(kept.now, kept.retention.positions_days))
        .push(" END");
}

/// A read's retention and clock: positions past their organization's retention are not shown.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    pub retention: Retention,
    pub now: i64,
}

/// The visible devices (one when `id` is given) with their latest fix and newest record.
pub(super) fn devices_query<'a>(
    prefix: &str,
    vis: &'a Visibility,
    id: Option<&'a str>,
    kept: Kept,
) -> QueryBuilder<'a, Db> {
    let mut b = QueryBuilder::new(prefix);
    b.push(assigned_with_latest());
    // The newest record of any kind is the newest span's (its battery and temperature are kept
    // there), so listing devices reads no positions.
    b.push(
        ", s.newest_ts AS r_ts, s.newest_bat AS r_bat, s.newest_tmp AS r_tmp \
         FROM device_assignments da \
         JOIN organizations o ON o.id = da.org_id \
         LEFT JOIN latest_positions l ON l.device_id = da.device_id",
    );
    push_kept(&mut b, "l.ts", kept);
    b.push(
        " LEFT JOIN position_spans s ON s.device_id = da.device_id \
           AND s.hour = (SELECT MAX(m.hour) FROM position_spans m WHERE m.device_id = da.device_id)",
    );
    push_kept(&mut b, "s.newest_ts", kept);
    b.push(" WHERE TRUE");
    push_visible(&mut b, vis);
    match id {
        Some(id) => b.push(" AND da.device_id = ").push_bind(id),
        None => b.push(" ORDER BY da.device_id"),
    };
    b
}

/// Latest fixes of visible devices inside `bbox`.
pub(super) fn latest_query<'a>(
    prefix: &str,
    vis: &'a Visibility,
    bbox: Option<BBox>,
    kept: Kept,
) -> QueryBuilder<'a, Db> {
    let mut b = QueryBuilder::new(prefix);
    b.push(assigned_with_latest());
    b.push(
        " FROM device_assignments da JOIN organizations o ON o.id = da.org_id \
         JOIN latest_positions l ON l.device_id = da.device_id WHERE TRUE",
    );
    push_kept(&mut b, "l.ts", kept);
    if let Some(bb) = bbox {
        b.push(" AND l.lat >= ").push_bind(bb.south);
        b.push(" AND l.lat <= ").push_bind(bb.north);
        if bb.west <= bb.east {
            b.push(" AND l.lon >= ").push_bind(bb.west);
            b.push(" AND l.lon <= ").push_bind(bb.east);
        } else {
            b.push(" AND (l.lon >= ").push_bind(bb.west);
            b.push(" OR l.lon <= ").push_bind(bb.east).push(")");
        }
    }
    push_visible(&mut b, vis);
    b.push(" ORDER BY da.device_id");
    b
}

/// A device's spans (hour, lowest and highest seq) between two hours, oldest first.
pub(super) const SPANS_SQL: &str = "SELECT hour, min_seq, max_seq FROM position_spans \
     WHERE device_id = $1 AND hour >= $2 AND hour <= $3 ORDER BY hour";

/// A device's positioned records of one span: seqs from $2 to $3, `$4 <= ts < $5`, after the
/// cursor `($6, $7)`, in `(ts, seq)` order. The sort is over one hour's rows at most.
pub(super) static TRACK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT seq, ts, {} FROM positions \
         WHERE device_id = $1 AND seq >= $2 AND seq <= $3 AND ts >= $4 AND ts < $5 \
           AND (ts > $6 OR seq > $7) AND lat IS NOT NULL \
         ORDER BY ts, seq LIMIT $8",
        measurement_columns("", "")
    )
});

/// The names of a fix's columns in a row: `seq`, `ts` and the measurements.
pub(super) struct FixColumns {
    seq: String,
    ts: String,
    measurement: [String; 8],
}

impl FixColumns {
    fn with_prefix(alias: &str) -> FixColumns {
        FixColumns {
            seq: format!("{alias}seq"),
            ts: format!("{alias}ts"),
            measurement: Measurement::NAMES.map(|n| format!("{alias}{n}")),
        }
    }
}

/// The latest fix as [`assigned_with_latest`] names it: `l_seq`, `l_ts`, `l_lat`, ...
pub(super) static LATEST_FIX: LazyLock<FixColumns> = LazyLock::new(|| FixColumns::with_prefix("l_"));

/// The fix in the columns named by `cols`, if the row has one.
fn fix(r: &DbRow, cols: &FixColumns) -> Result<Option<Fix>, StoreError> {
    let ts: Option<i64> = r.try_get(cols.ts.as_str())?;
    let Some(ts) = ts else { return Ok(None) };
    Ok(Fix::new(
        r.try_get(cols.seq.as_str())?,
        ts,
        measurement(r, &cols.measurement)?,
    ))
}

fn assignment(r: &DbRow) -> Result<Assignment, StoreError> {
    Ok(Assignment {
        org_id: r.try_get("org_id")?,
        order_group_id: r.try_get("order_group_id")?,
        shipment_label: r.try_get("shipment_label")?,
        shipment_ref: r.try_get("shipment_ref")?,
    })
}

fn device_view(r: &DbRow) -> Result<DeviceView, StoreError> {
    Ok(DeviceView {
        id: r.try_get("device_id")?,
        assignment: assignment(r)?,
        position: fix(r, &LATEST_FIX)?,
        bat: r.try_get("r_bat")?,
        tmp: r.try_get("r_tmp")?,
        last_seen_ms: r.try_get("r_ts")?,
    })
}

impl Handle {
    async fn exists(conn: &mut Conn, sql: &str, binds: &[&str]) -> Result<bool, StoreError> {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        Ok(q.fetch_optional(conn).await?.is_some())
    }

    /// `Ok` when `sql` (a `SELECT 1 ...`) finds a row, else `NotFound` naming `kind` and `id`.
    pub(super) async fn require(
        conn: &mut Conn,
        sql: &str,
        binds: &[&str],
        kind: &'static str,
    ) -> Result<(), StoreError> {
        if Self::exists(conn, sql, binds).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound {
                kind,
                id: binds.join("/"),
            })
        }
    }

    /// Delete `kind` `id` of `org` with `sql` (`$1` the organization, `$2` the id); not found if
    /// there was none.
    pub(super) async fn delete_one(
        conn: &mut Conn,
        sql: &str,
        org: &str,
        id: &str,
        kind: &'static str,
    ) -> Result<(), StoreError> {
        let removed = sqlx::query(sql)
            .bind(org)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(StoreError::NotFound {
                kind,
                id: format!("{org}/{id}"),
            });
        }
        Ok(())
    }

    pub(super) async fn require_org(conn: &mut Conn, org: &str) -> Result<(), StoreError> {
        Self::require(
            conn,
            "SELECT 1 FROM organizations WHERE id = $1",
            &[org],
            "organization",
        )
        .await
    }

    async fn require_order_group(conn: &mut Conn, org: &str, group: &str) -> Result<(), StoreError> {
        let sql = "SELECT 1 FROM order_groups WHERE org_id = $1 AND id = $2";
        Self::require(conn, sql, &[org, group], "order group").await
    }

    async fn require_user_group(conn: &mut Conn, org: &str, group: &str) -> Result<(), StoreError> {
        let sql = "SELECT 1 FROM user_groups WHERE org_id = $1 AND id = $2";
        Self::require(conn, sql, &[org, group], "user group").await
    }

    pub(crate) async fn add_organization(&self, id: &str, name: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        check_id("organization id", id)?;
        check_text("organization name", name)?;
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        sqlx::query("INSERT INTO organizations (id, name, created_ms) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_or(e, "organization", id))?;
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn organizations(&self, only: Option<&[String]>) -> Result<Vec<Organization>, StoreError> {
        let mut b =
            QueryBuilder::new("SELECT id, name, created_ms, positions_retention_days FROM organizations WHERE TRUE");
        if let Some(ids) = only {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            push_in(&mut b, "id", ids);
        }
        b.push(" ORDER BY id");
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let chosen: Option<i64> = r.try_get("positions_retention_days")?;
                let chosen = chosen.map(|d| u32::try_from(d).unwrap_or(u32::MAX));
                Ok(Organization {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_ms: r.try_get("created_ms")?,
                    positions_retention_days: chosen,
                    positions_kept_days: self.retention.positions_days_for(chosen),
                })
            })
            .collect()
    }

    /// Keep `org`'s positions for `days` (within the operator's bounds), or for the service's
    /// retention (`None`).
    pub(crate) async fn set_positions_retention(
        &self,
        org: &str,
        days: Option<u32>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        if let Some(d) = days {
            self.retention.check_choice(d)?;
        }
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        sqlx::query("UPDATE organizations SET positions_retention_days = $1 WHERE id = $2")
            .bind(days.map(i64::from))
            .bind(org)
            .execute(&mut *tx)
            .await?;
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn add_order_group(
        &self,
        org: &str,
        id: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        check_id("order group id", id)?;
        check_text("order group name", name)?;
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        sqlx::query("INSERT INTO order_groups (org_id, id, name, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(org)
            .bind(id)
            .bind(name)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_or(e, "order group", &format!("{org}/{id}")))?;
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn order_groups(&self, org: &str) -> Result<Vec<OrderGroup>, StoreError> {
        let rows = sqlx::query("SELECT org_id, id, name, created_ms FROM order_groups WHERE org_id = $1 ORDER BY id")
            .bind(org)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OrderGroup {
                    org_id: r.try_get("org_id")?,
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// Give a device to an organization (or move it), clearing its order group and shipment.
    pub(crate) async fn assign_device(&self, device: &str, org: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        if !Self::exists(
            &mut tx,
            "SELECT 1 FROM principals WHERE id = $1 AND kind = 'device'",
            &[device],
        )
        .await?
        {
            return Err(StoreError::NotFound {
                kind: "device",
                id: device.to_owned(),
            });
        }
        sqlx::query(
            "INSERT INTO device_assignments (device_id, org_id, assigned_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (device_id) DO UPDATE SET org_id = excluded.org_id, order_group_id = NULL, \
             shipment_label = NULL, shipment_ref = NULL, assigned_ms = excluded.assigned_ms",
        )
        .bind(device)
        .bind(org)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        commit_audited(tx, &self.master, audit).await
    }

    /// Set a device's order group and shipment within its organization.
    pub(crate) async fn set_shipment(
        &self,
        device: &str,
        a: &Assignment,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        if let Some(label) = &a.shipment_label {
            check_text("shipment label", label)?;
        }
        if let Some(r) = &a.shipment_ref {
            check_text("shipment reference", r)?;
        }
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        if let Some(group) = &a.order_group_id {
            Self::require_order_group(&mut tx, &a.org_id, group).await?;
        }
        let done = sqlx::query(
            "UPDATE device_assignments SET order_group_id = $1, shipment_label = $2, shipment_ref = $3 \
             WHERE device_id = $4 AND org_id = $5",
        )
        .bind(&a.order_group_id)
        .bind(&a.shipment_label)
        .bind(&a.shipment_ref)
        .bind(device)
        .bind(&a.org_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "device",
                id: format!("{}/{device}", a.org_id),
            });
        }
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn add_user_group(&self, g: &UserGroup, audit: &AuditEntry) -> Result<(), StoreError> {
        check_id("user group id", &g.id)?;
        check_text("user group name", &g.name)?;
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, &g.org_id).await?;
        sqlx::query(
            "INSERT INTO user_groups (org_id, id, name, role, all_order_groups, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&g.org_id)
        .bind(&g.id)
        .bind(&g.name)
        .bind(g.role.as_str())
        .bind(matches!(g.scope, Scope::AllOrderGroups))
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "user group", &format!("{}/{}", g.org_id, g.id)))?;
        if let Scope::OrderGroups(groups) = &g.scope {
            for og in groups {
                Self::require_order_group(&mut tx, &g.org_id, og).await?;
                sqlx::query(
                    "INSERT INTO user_group_scopes (org_id, user_group_id, order_group_id) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&g.org_id)
                .bind(&g.id)
                .bind(og)
                .execute(&mut *tx)
                .await?;
            }
        }
        for rule in &g.rules {
            Self::insert_rule(&mut tx, &g.org_id, &g.id, rule).await?;
        }
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn remove_user_group(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_user_group(&mut tx, org, id).await?;
        // Children first: the cascade is declared, but do not depend on the connection's pragma.
        for sql in [
            "DELETE FROM membership_rules WHERE org_id = $1 AND user_group_id = $2",
            "DELETE FROM user_group_scopes WHERE org_id = $1 AND user_group_id = $2",
            "DELETE FROM user_groups WHERE org_id = $1 AND id = $2",
        ] {
            sqlx::query(sql).bind(org).bind(id).execute(&mut *tx).await?;
        }
        commit_audited(tx, &self.master, audit).await
    }

    async fn insert_rule(conn: &mut Conn, org: &str, group: &str, rule: &Rule) -> Result<(), StoreError> {
        let value = checked_rule(rule)?;
        sqlx::query(
            "INSERT INTO membership_rules (kind, value, org_id, user_group_id, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(rule.kind.as_str())
        .bind(&value)
        .bind(org)
        .bind(group)
        .bind(crate::now_ms())
        .execute(conn)
        .await
        .map_err(|e| unique_or(e, "membership rule", &format!("{} {value}", rule.kind.as_str())))?;
        Ok(())
    }

    pub(crate) async fn add_rule(
        &self,
        org: &str,
        group: &str,
        rule: &Rule,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_user_group(&mut tx, org, group).await?;
        Self::insert_rule(&mut tx, org, group, rule).await?;
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn remove_rule(
        &self,
        org: &str,
        group: &str,
        rule: &Rule,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let value = rule.kind.normalize(&rule.value);
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let done = sqlx::query(
            "DELETE FROM membership_rules WHERE kind = $1 AND value = $2 AND org_id = $3 AND user_group_id = $4",
        )
        .bind(rule.kind.as_str())
        .bind(&value)
        .bind(org)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "membership rule",
                id: format!("{org}/{group} {} {value}", rule.kind.as_str()),
            });
        }
        commit_audited(tx, &self.master, audit).await
    }

    pub(crate) async fn user_groups(&self, org: &str) -> Result<Vec<UserGroup>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, role, all_order_groups FROM user_groups WHERE org_id = $1 ORDER BY id")
                .bind(org)
                .fetch_all(&self.pool)
                .await?;
        let scopes = sqlx::query("SELECT user_group_id, order_group_id FROM user_group_scopes WHERE org_id = $1")
            .bind(org)
            .fetch_all(&self.pool)
            .await?;
        let rules = sqlx::query(
            "SELECT user_group_id, kind, value FROM membership_rules WHERE org_id = $1 ORDER BY kind, value",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let all: bool = r.try_get("all_order_groups")?;
            let scope = if all {
                Scope::AllOrderGroups
            } else {
                let mut groups = Vec::new();
                for s in &scopes {
                    if s.try_get::<String, _>("user_group_id")? == id {
                        groups.push(s.try_get("order_group_id")?);
                    }
                }
                groups.sort();
                Scope::OrderGroups(groups)
            };
            let mut group_rules = Vec::new();
            for x in &rules {
                if x.try_get::<String, _>("user_group_id")? == id {
                    let kind: String = x.try_get("kind")?;
                    group_rules.push(Rule {
                        kind: RuleKind::parse(&kind).unwrap_or(RuleKind::Email),
                        value: x.try_get("value")?,
                    });
                }
            }
            let role: String = r.try_get("role")?;
            out.push(UserGroup {
                org_id: org.to_owned(),
                id,
                name: r.try_get("name")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                scope,
                rules: group_rules,
            });
        }
        Ok(out)
    }

    /// The user groups whose rules match `keys`, with their scopes.
    pub(crate) async fn memberships(&self, keys: &MemberKeys) -> Result<Vec<Membership>, StoreError> {
        let lookups = keys.lookups();
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let mut b = QueryBuilder::new(
            "SELECT DISTINCT g.org_id, g.id, g.role, g.all_order_groups FROM membership_rules r \
             JOIN user_groups g ON g.org_id = r.org_id AND g.id = r.user_group_id WHERE (r.kind, r.value) IN (VALUES ",
        );
        let mut list = b.separated(", ");
        for (kind, value) in &lookups {
            list.push("(")
                .push_bind_unseparated(kind.as_str())
                .push_unseparated(", ")
                .push_bind_unseparated(value.clone())
                .push_unseparated(")");
        }
        b.push(") ORDER BY g.org_id, g.id");
        let rows = b.build().fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let org_id: String = r.try_get("org_id")?;
            let user_group_id: String = r.try_get("id")?;
            let role: String = r.try_get("role")?;
            let all: bool = r.try_get("all_order_groups")?;
            let scope = if all {
                Scope::AllOrderGroups
            } else {
                Scope::OrderGroups(
                    sqlx::query_scalar(
                        "SELECT order_group_id FROM user_group_scopes WHERE org_id = $1 AND user_group_id = $2 \
                         ORDER BY order_group_id",
                    )
                    .bind(&org_id)
                    .bind(&user_group_id)
                    .fetch_all(&self.pool)
                    .await?,
                )
            };
            out.push(Membership {
                org_id,
                user_group_id,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
                scope,
            });
        }
        Ok(out)
    }

    /// The retention reads apply now.
    fn kept(&self) -> Kept {
        Kept {
            retention: self.retention,
            now: crate::now_ms(),
        }
    }

    /// The oldest `ts` of `device` that its organization's retention (or the service's, for a
    /// device assigned to none) still shows.
    pub(crate) async fn device_cutoff(&self, device: &str) -> Result<i64, StoreError> {
        let chosen: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT o.positions_retention_days FROM device_assignments da \
             JOIN organizations o ON o.id = da.org_id WHERE da.device_id = $1",
        )
        .bind(device)
        .fetch_optional(&self.pool)
        .await?;
        let days = self
            .retention
            .positions_days_for(chosen.flatten().map(|d| u32::try_from(d).unwrap_or(u32::MAX)));
        Ok(retention::cutoff(crate::now_ms(), days))
    }

    pub(crate) async fn devices(&self, vis: &Visibility, id: Option<&str>) -> Result<Vec<DeviceView>, StoreError> {
        if vis.is_nothing() {
            return Ok(Vec::new());
        }
        let rows = devices_query("", vis, id, self.kept())
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_view).collect()
    }

    pub(crate) async fn visible_device_ids(&self, vis: &Visibility) -> Result<Vec<String>, StoreError> {
        if vis.is_nothing() {
            return Ok(Vec::new());
        }
        let mut b = QueryBuilder::new("SELECT da.device_id FROM device_assignments da WHERE TRUE");
        push_visible(&mut b, vis);
        b.push(" ORDER BY da.device_id");
        Ok(b.build_query_scalar().fetch_all(&self.pool).await?)
    }

    pub(crate) async fn latest(
        &self,
        vis: &Visibility,
        bbox: Option<BBox>,
    ) -> Result<Vec<(String, Assignment, Fix)>, StoreError> {
        if vis.is_nothing() {
            return Ok(Vec::new());
        }
        let rows = latest_query("", vis, bbox, self.kept())
            .build()
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(f) = fix(r, &LATEST_FIX)? {
                out.push((r.try_get("device_id")?, assignment(r)?, f));
            }
        }
        Ok(out)
    }

    pub(crate) async fn track(
        &self,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<TrackCursor>,
        limit: u32,
    ) -> Result<TrackPage, StoreError> {
        // Nothing from before the device's retention.
        let from_ms = from_ms.max(self.device_cutoff(device).await?);
        // Resume after the cursor: a higher start bound, and past the cursor's seq at that ts.
        let (start, after_seq) = match after {
            Some(c) if c.ts >= from_ms => (c.ts, c.seq),
            _ => (from_ms, i64::MIN),
        };
        let mut points = Vec::new();
        let mut last = None;
        if start >= to_ms {
            return Ok(TrackPage { points, next: None });
        }
        // The hours of the range that hold records, each read through (device_id, seq) and
        // filtered by ts; one row more than the page shows whether there is a next page.
        let want = i64::from(limit) + 1;
        let spans: Vec<(i64, i64, i64)> = sqlx::query_as(SPANS_SQL)
            .bind(device)
            .bind(span_of(start))
            .bind(span_of(to_ms - 1))
            .fetch_all(&self.pool)
            .await?;
        let mut found = 0;
        for (hour, min_seq, max_seq) in spans {
            let rows = sqlx::query(&TRACK_SQL)
                .bind(device)
                .bind(min_seq)
                .bind(max_seq)
                .bind(start.max(hour * SPAN_MS))
                .bind(to_ms.min((hour + 1).saturating_mul(SPAN_MS)))
                .bind(start)
                .bind(after_seq)
                .bind(want - found)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                found += 1;
                if found > i64::from(limit) {
                    break;
                }
                let (seq, ts) = (r.try_get("seq")?, r.try_get("ts")?);
                last = Some(TrackCursor { ts, seq });
                points.extend(Fix::new(seq, ts, measurement(r, &Measurement::NAMES)?));
            }
            if found >= want {
                break;
            }
        }
        let next = if found > i64::from(limit) { last } else { None };
        Ok(TrackPage { points, next })
    }

    pub(crate) async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        // In a transaction that writes: the chain's link to the entry before is read and
        // written under one lock.
        let tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        commit_audited(tx, &self.master, e).await
    }
}
