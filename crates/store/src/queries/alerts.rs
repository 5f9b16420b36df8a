//! Alert rules and their outbox, in SQL both backends speak (compiled inside each backend module,
//! like `operators.rs`). See `crate::alerts`.

use super::events::{EVENT_COLUMNS, stored_event};
use super::{Db, Handle};
use crate::StoreError;
use crate::access::AuditEntry;
use crate::alerts::{AlertRule, Channel, Delivery, DeliveryState, NewAlertRule, Outcome, secret_aad};
use crate::rules::check_id;
use sqlx::Row as _;
use trackgate_proto::Secret;

type Conn = <Db as sqlx::Database>::Connection;

/// The deliverer's number among the jobs that run once across the nodes.
const JOB_DELIVERIES: i32 = 6;

/// Rules a rule row is read with: its counts of deliveries waiting and given up on.
const RULE_COLUMNS: &str = "r.org_id, r.id, r.kinds, r.order_group_id, r.channel, r.target, r.created_ms, \
     (SELECT COUNT(*) FROM alert_outbox o WHERE o.org_id = r.org_id AND o.rule_id = r.id AND o.state = 'pending') AS pending, \
     (SELECT COUNT(*) FROM alert_outbox o WHERE o.org_id = r.org_id AND o.rule_id = r.id AND o.state = 'failed') AS failed";

fn channel(r: &<Db as sqlx::Database>::Row) -> Result<Channel, StoreError> {
    let c: String = r.try_get("channel")?;
    Channel::parse(&c).ok_or_else(|| StoreError::Inconsistent(format!("unknown alert channel {c:?}")))
}

fn rule(r: &<Db as sqlx::Database>::Row) -> Result<AlertRule, StoreError> {
    let kinds: String = r.try_get("kinds")?;
    Ok(AlertRule {
        org_id: r.try_get("org_id")?,
        id: r.try_get("id")?,
        kinds: if kinds == "*" {
            Vec::new()
        } else {
            kinds.split(',').map(str::to_owned).collect()
        },
        order_group_id: r.try_get("order_group_id")?,
        channel: channel(r)?,
        target: r.try_get("target")?,
        created_ms: r.try_get("created_ms")?,
        pending: r.try_get("pending")?,
        failed: r.try_get("failed")?,
    })
}

impl Handle {
    /// Queue event `event` (of `kind`, for `device` of `org`) for every rule of `org` that takes
    /// it, in the transaction that stores it.
    pub(super) async fn queue_deliveries(
        conn: &mut Conn,
        org: &str,
        device: &str,
        event: i64,
        kind: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_outbox (org_id, rule_id, event_id, device_id, next_ms, created_ms) \
             SELECT r.org_id, r.id, $1, $2, $3, $3 FROM alert_rules r \
             WHERE r.org_id = $4 \
               AND (r.kinds = '*' OR ',' || r.kinds || ',' LIKE '%,' || CAST($5 AS TEXT) || ',%') \
               AND (r.order_group_id IS NULL OR r.order_group_id = \
                    (SELECT da.order_group_id FROM device_assignments da WHERE da.device_id = $2)) \
             ON CONFLICT (org_id, rule_id, event_id) DO NOTHING",
        )
        .bind(event)
        .bind(device)
        .bind(now)
        .bind(org)
        .bind(kind)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Add a rule to `org`, with its audit row; a webhook's new secret is sealed, and returned
    /// (this once).
    pub(crate) async fn add_alert_rule(
        &self,
        org: &str,
        rule: &NewAlertRule,
        audit: &AuditEntry,
    ) -> Result<Option<Secret>, StoreError> {
        check_id("alert rule id", &rule.id)?;
        if let Some(g) = &rule.order_group_id {
            check_id("order group id", g)?;
        }
        let secret = (rule.channel == Channel::Webhook).then(crate::MasterKey::random_secret);
        let sealed = secret
            .as_ref()
            .map(|s| self.master.seal(&secret_aad(org, &rule.id), s.as_bytes()));
        let kinds = if rule.kinds.is_empty() {
            "*".to_owned()
        } else {
            rule.kinds.join(",")
        };
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        Self::require_org(&mut tx, org).await?;
        if let Some(g) = &rule.order_group_id {
            Self::require(
                &mut tx,
                "SELECT 1 FROM order_groups WHERE org_id = $1 AND id = $2",
                &[org, g],
                "order group",
            )
            .await?;
        }
        sqlx::query(
            "INSERT INTO alert_rules (org_id, id, kinds, order_group_id, channel, target, sealed_secret, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(org)
        .bind(&rule.id)
        .bind(&kinds)
        .bind(&rule.order_group_id)
        .bind(rule.channel.as_str())
        .bind(&rule.target)
        .bind(sealed)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| super::operators::unique_or(e, "alert rule", &rule.id))?;
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(secret)
    }

    /// Remove rule `id` of `org` and its deliveries, with the audit row.
    pub(crate) async fn remove_alert_rule(&self, org: &str, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(super::BEGIN_WRITE).await?;
        let sql = "DELETE FROM alert_rules WHERE org_id = $1 AND id = $2";
        Self::delete_one(&mut tx, sql, org, id, "alert rule").await?;
        sqlx::query("DELETE FROM alert_outbox WHERE org_id = $1 AND rule_id = $2")
            .bind(org)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::operators::commit_audited(tx, &self.master, audit).await?;
        Ok(())
    }

    pub(crate) async fn alert_rules(&self, org: &str) -> Result<Vec<AlertRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules r WHERE r.org_id = $1 ORDER BY r.id");
        let rows = sqlx::query(&sql).bind(org).fetch_all(&self.pool).await?;
        rows.iter().map(rule).collect()
    }

    /// The newest deliveries of rule `id` of `org`, newest first.
    pub(crate) async fn deliveries(&self, org: &str, id: &str, limit: u32) -> Result<Vec<DeliveryState>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.event_id, o.device_id, e.kind, o.state, o.attempts, o.next_ms, o.last_error, \
             o.created_ms, o.done_ms FROM alert_outbox o JOIN device_events e ON e.id = o.event_id \
             WHERE o.org_id = $1 AND o.rule_id = $2 ORDER BY o.id DESC LIMIT $3",
        )
        .bind(org)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryState {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    device_id: r.try_get("device_id")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    next_ms: r.try_get("next_ms")?,
                    last_error: r.try_get("last_error")?,
                    created_ms: r.try_get("created_ms")?,
                    done_ms: r.try_get("done_ms")?,
                })
            })
            .collect()
    }

    /// Up to `limit` deliveries due at `now`, oldest first: of each rule and device only the
    /// oldest waiting one, so each rule gets a device's events in order.
    pub(crate) async fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT o.id AS o_id, o.rule_id, o.attempts, o.created_ms AS o_created_ms, r.channel, r.target, \
             r.sealed_secret, g.name AS org_name, {EVENT_COLUMNS} \
             FROM alert_outbox o \
             JOIN alert_rules r ON r.org_id = o.org_id AND r.id = o.rule_id \
             JOIN organizations g ON g.id = o.org_id \
             JOIN device_events e ON e.id = o.event_id \
             WHERE o.state = 'pending' AND o.next_ms <= $1 \
               AND NOT EXISTS (SELECT 1 FROM alert_outbox p WHERE p.org_id = o.org_id AND p.rule_id = o.rule_id \
                   AND p.device_id = o.device_id AND p.state = 'pending' AND p.id < o.id) \
             ORDER BY o.id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let event = stored_event(r)?;
                let rule_id: String = r.try_get("rule_id")?;
                let sealed: Option<Vec<u8>> = r.try_get("sealed_secret")?;
                let secret = sealed
                    .map(|s| {
                        let plain = self
                            .master
                            .open(&secret_aad(&event.org_id, &rule_id), &s)
                            .map_err(|_| StoreError::WrongMasterKey)?;
                        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| StoreError::WrongMasterKey)?;
                        Ok::<_, StoreError>(Secret::from_bytes(bytes))
                    })
                    .transpose()?;
                Ok(Delivery {
                    id: r.try_get("o_id")?,
                    org_id: event.org_id.clone(),
                    org_name: r.try_get("org_name")?,
                    rule_id,
                    channel: channel(r)?,
                    target: r.try_get("target")?,
                    secret,
                    attempts: r.try_get("attempts")?,
                    created_ms: r.try_get("o_created_ms")?,
                    event,
                })
            })
            .collect()
    }

    /// Record how delivery `id` went.
    pub(crate) async fn record_delivery(&self, id: i64, outcome: &Outcome) -> Result<(), StoreError> {
        let now = crate::now_ms();
        let q = match outcome {
            Outcome::Delivered => {
                sqlx::query("UPDATE alert_outbox SET state = 'delivered', attempts = attempts + 1, done_ms = $2, last_error = NULL WHERE id = $1")
                    .bind(id)
                    .bind(now)
            }
            Outcome::Retry { next_ms, error } => sqlx::query(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_ms = $2, last_error = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(*next_ms)
            .bind(error.clone()),
            Outcome::Failed { error } => sqlx::query(
                "UPDATE alert_outbox SET state = 'failed', attempts = attempts + 1, done_ms = $2, last_error = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .bind(error.clone()),
            Outcome::Suppressed { reason } => sqlx::query(
                "UPDATE alert_outbox SET state = 'suppressed', done_ms = $2, last_error = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .bind(reason.clone()),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// E-mails sent to `address` since `since_ms`, by any rule of any organization.
    pub(crate) async fn emails_sent_since(&self, address: &str, since_ms: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM alert_outbox o JOIN alert_rules r ON r.org_id = o.org_id AND r.id = o.rule_id \
             WHERE r.channel = 'email' AND r.target = $1 AND o.state = 'delivered' AND o.done_ms >= $2",
        )
        .bind(address)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Deliveries waiting, across every organization.
    pub(crate) async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM alert_outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Become the node that delivers alerts: `None` while another node is.
    pub(crate) async fn take_deliveries_lock(&self) -> Result<Option<super::events::JobLockConn>, StoreError> {
        self.take_job_lock(JOB_DELIVERIES).await
    }
}
