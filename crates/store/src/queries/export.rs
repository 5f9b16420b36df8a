//! An organization's data, page by page, in SQL both backends speak (compiled inside each backend
//! module, like `principals.rs`); what each part holds is in `crate::export`.

use super::Handle;
use crate::StoreError;
use crate::access::Visibility;
use crate::export::ExportSink;
use serde_json::json;
use sqlx::Row as _;
use std::collections::HashMap;
use trackgate_proto::Secret;

/// Rows per query.
const PAGE: i64 = 5000;

impl Handle {
    pub(crate) async fn export_org(&self, org: &str, sink: &mut (dyn ExportSink + Send)) -> Result<(), StoreError> {
        let only = [org.to_owned()];
        let Some(o) = self.organizations(Some(&only)).await?.into_iter().next() else {
            return Err(StoreError::NotFound {
                kind: "organization",
                id: org.to_owned(),
            });
        };
        sink.row("organization", &json!(o).to_string())?;
        for g in self.order_groups(org).await? {
            sink.row("order_groups", &json!(g).to_string())?;
        }
        for g in self.user_groups(org).await? {
            sink.row("user_groups", &json!(g).to_string())?;
        }
        for g in self.geofences(Some(&only)).await? {
            sink.row("geofences", &json!(g).to_string())?;
        }
        for l in self.event_limits(org).await? {
            sink.row("event_limits", &json!(l).to_string())?;
        }
        for r in self.alert_rules(org).await? {
            sink.row("alert_rules", &json!(r).to_string())?;
        }
        let vis = Visibility {
            everything: false,
            orgs: only.to_vec(),
            order_groups: Vec::new(),
        };
        let devices: Vec<String> = self.visible_device_ids(&vis).await?;
        let rows = sqlx::query(
            "SELECT da.device_id, da.order_group_id, da.shipment_label, da.shipment_ref, da.assigned_ms, \
             p.supplier_id, p.enabled, p.created_ms FROM device_assignments da \
             JOIN principals p ON p.id = da.device_id WHERE da.org_id = $1 ORDER BY da.device_id",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let row = json!({
                "id": r.try_get::<String, _>("device_id")?,
                "order_group_id": r.try_get::<Option<String>, _>("order_group_id")?,
                "shipment_label": r.try_get::<Option<String>, _>("shipment_label")?,
                "shipment_ref": r.try_get::<Option<String>, _>("shipment_ref")?,
                "assigned_ms": r.try_get::<i64, _>("assigned_ms")?,
                "supplier_id": r.try_get::<Option<String>, _>("supplier_id")?,
                "enabled": r.try_get::<bool, _>("enabled")?,
                "created_ms": r.try_get::<i64, _>("created_ms")?,
            });
            sink.row("devices", &row.to_string())?;
        }
        for device in &devices {
            self.export_positions(device, sink).await?;
        }
        self.export_events(org, &vis, sink).await?;
        self.export_audit(org, sink).await
    }

    /// A device's records as signed envelopes, by seq, a page at a time.
    async fn export_positions(&self, device: &str, sink: &mut (dyn ExportSink + Send)) -> Result<(), StoreError> {
        // Every key the device ever had, revoked ones too: old records were signed with them.
        let mut keys: HashMap<String, Secret> = HashMap::new();
        for r in sqlx::query("SELECT owner_id, kid, sealed FROM keys WHERE owner_id = $1")
            .bind(device)
            .fetch_all(&self.pool)
            .await?
        {
            let kid: String = r.try_get("kid")?;
            let secret = self.open_secret(device, &kid, &r)?;
            keys.insert(kid, secret);
        }
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(
                "SELECT seq, ts, received_ms, record, kid FROM positions \
                 WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(device)
            .bind(after)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                let (seq, record, kid): (i64, String, String) =
                    (r.try_get("seq")?, r.try_get("record")?, r.try_get("kid")?);
                after = seq;
                let sig = keys
                    .get(&kid)
                    .map(|k| hex::encode(trackgate_proto::sign::record_signature(k, record.as_bytes())));
                let envelope = match &sig {
                    Some(sig) => format!(r#"{{"m":{record},"kid":"{kid}","sig":"{sig}"}}"#),
                    None => format!(r#"{{"m":{record},"kid":"{kid}","sig":null}}"#),
                };
                // The envelope as text: the record's bytes exactly as stored and signed.
                let row = format!(
                    r#"{{"device_id":{},"seq":{seq},"ts":{},"received_ms":{},"envelope":{envelope}}}"#,
                    json!(device),
                    r.try_get::<i64, _>("ts")?,
                    r.try_get::<i64, _>("received_ms")?,
                );
                sink.row("positions", &row)?;
            }
            if (rows.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// The organization's events, newest first, a page at a time.
    async fn export_events(
        &self,
        org: &str,
        vis: &Visibility,
        sink: &mut (dyn ExportSink + Send),
    ) -> Result<(), StoreError> {
        let mut q = crate::events::EventQuery {
            org: Some(org.to_owned()),
            limit: PAGE as u32,
            ..Default::default()
        };
        loop {
            let events = self.events(vis, &q).await?;
            for e in &events {
                sink.row("events", &json!(e).to_string())?;
            }
            match events.last() {
                Some(last) if events.len() as i64 == PAGE => q.before_id = Some(last.id),
                _ => return Ok(()),
            }
        }
    }

    /// The organization's audit entries, oldest first, with their chain.
    async fn export_audit(&self, org: &str, sink: &mut (dyn ExportSink + Send)) -> Result<(), StoreError> {
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(
                "SELECT id, at_ms, actor, actor_email, org_id, action, target, detail, remote_addr, override, \
                 prev_hash, hash, org_hash FROM audit_log WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(org)
            .bind(after)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                after = r.try_get("id")?;
                let hex_of = |c: &str| -> Result<Option<String>, StoreError> {
                    Ok(r.try_get::<Option<Vec<u8>>, _>(c)?.map(hex::encode))
                };
                let row = json!({
                    "id": after,
                    "at_ms": r.try_get::<i64, _>("at_ms")?,
                    "actor": r.try_get::<String, _>("actor")?,
                    "actor_email": r.try_get::<Option<String>, _>("actor_email")?,
                    "org_id": r.try_get::<Option<String>, _>("org_id")?,
                    "action": r.try_get::<String, _>("action")?,
                    "target": r.try_get::<Option<String>, _>("target")?,
                    "detail": r.try_get::<Option<String>, _>("detail")?,
                    "remote_addr": r.try_get::<Option<String>, _>("remote_addr")?,
                    "override": r.try_get::<bool, _>("override")?,
                    "prev_hash": hex_of("prev_hash")?,
                    "hash": hex_of("hash")?,
                    "org_hash": hex_of("org_hash")?,
                });
                sink.row("audit_log", &row.to_string())?;
            }
            if (rows.len() as i64) < PAGE {
                return Ok(());
            }
        }
    }
}
