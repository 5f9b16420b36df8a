//! Alert rules over HTTPS: an organization's admins subscribe a webhook or an e-mail address to
//! its events (some kinds or all, optionally of one order group), list the rules with their deliveries waiting
//! and given up on, read a rule's recent deliveries (failures with their reason), and remove a
//! rule. Each change is audited and needs a recent sign-in; a webhook's secret is shown once,
//! when the rule is made.

use super::admin::{body, org_admin};
use super::location::int;
use super::{ApiFailure, ApiState, Caller};
use crate::alerts::{destination, email};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trackgate_store::alerts::{AlertRule, Channel, DeliveryState, NewAlertRule};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    id: String,
    /// Event kinds; left out or empty for every kind.
    #[serde(default)]
    kinds: Vec<String>,
    order_group: Option<String>,
    webhook: Option<String>,
    email: Option<String>,
}

#[derive(Serialize)]
pub struct Created {
    #[serde(flatten)]
    rule: AlertRule,
    /// The webhook's signing secret (64 hex): shown this once.
    secret: Option<String>,
}

/// `POST /v1/admin/orgs/{org}/alert-rules` `{"id", "kinds": [...], "order_group", "webhook":
/// "https://..." | "email": "ops@example.com"}`: the rule, with its webhook's secret (this once).
pub async fn add(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    bytes: Bytes,
) -> Result<Json<Created>, ApiFailure> {
    let b: RuleBody = body(&bytes)?;
    let audit = org_admin(&caller, &org, "alert_rule.add", Some(b.id.clone()))?;
    for k in &b.kinds {
        if !crate::events::KINDS.contains(&k.as_str()) {
            return Err(ApiFailure::BadRequest(format!(
                "`kinds`: {k:?} is not an event kind ({})",
                crate::events::KINDS.join(", ")
            )));
        }
    }
    let (channel, target) = match (&b.webhook, &b.email) {
        (Some(w), None) => (Channel::Webhook, webhook_target(&s, w).await?),
        (None, Some(e)) => {
            if s.alerts.smtp.is_none() {
                return Err(ApiFailure::BadRequest(
                    "e-mail alerts need an SMTP server: `[alerts.smtp]` in trackgate's configuration".into(),
                ));
            }
            if !email::valid_address(e) {
                return Err(ApiFailure::BadRequest(format!(
                    "`email` {e:?} is not an e-mail address"
                )));
            }
            (Channel::Email, e.clone())
        }
        _ => {
            return Err(ApiFailure::BadRequest(
                "request body: give exactly one destination, `webhook` (an https:// URL) or `email`".into(),
            ));
        }
    };
    caller.signed_in_within(s.reauth_max_age)?;
    let rule = NewAlertRule {
        id: b.id.clone(),
        kinds: b.kinds,
        order_group_id: b.order_group,
        channel,
        target,
    };
    let secret = s.store.add_alert_rule(&org, &rule, &audit).await?;
    let stored = s
        .store
        .alert_rules(&org)
        .await?
        .into_iter()
        .find(|r| r.id == b.id)
        .ok_or_else(|| ApiFailure::NotFound(format!("alert rule {:?} went away", b.id)))?;
    Ok(Json(Created {
        rule: stored,
        secret: secret.map(|s| s.to_hex()),
    }))
}

/// A webhook URL an admin gave, checked (HTTPS; its host resolved, and public unless allowed).
async fn webhook_target(s: &ApiState, text: &str) -> Result<String, ApiFailure> {
    let allow_private = s.alerts.allow_private_destinations;
    let url = destination::webhook_url(text, allow_private).map_err(ApiFailure::BadRequest)?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    destination::check_host(host, url.port_or_known_default().unwrap_or(443), allow_private)
        .await
        .map_err(|e| ApiFailure::BadRequest(format!("`webhook`: {e}")))?;
    Ok(url.to_string())
}

#[derive(Serialize)]
pub struct Rules {
    rules: Vec<AlertRule>,
}

/// `GET /v1/admin/orgs/{org}/alert-rules`.
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<Rules>, ApiFailure> {
    org_admin(&caller, &org, "alert_rule.read", None)?;
    Ok(Json(Rules {
        rules: s.store.alert_rules(&org).await?,
    }))
}

/// `DELETE /v1/admin/orgs/{org}/alert-rules/{id}`: the rule and its deliveries, waiting or not.
pub async fn remove(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiFailure> {
    let audit = org_admin(&caller, &org, "alert_rule.remove", Some(id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.remove_alert_rule(&org, &id, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    limit: Option<String>,
}

#[derive(Serialize)]
pub struct Deliveries {
    deliveries: Vec<DeliveryState>,
}

/// `GET /v1/admin/orgs/{org}/alert-rules/{id}/deliveries?limit=`: the newest deliveries, with
/// their state, attempts and last error.
pub async fn deliveries(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Json<Deliveries>, ApiFailure> {
    org_admin(&caller, &org, "alert_rule.read", None)?;
    let limit = int::<u32>("limit", &p.limit)?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiFailure::BadRequest(format!(
            "`limit` must be between 1 and 1000, not {limit}"
        )));
    }
    if !s.store.alert_rules(&org).await?.iter().any(|r| r.id == id) {
        return Err(ApiFailure::NotFound(format!(
            "no alert rule {id:?} in organization {org:?}"
        )));
    }
    Ok(Json(Deliveries {
        deliveries: s.store.deliveries(&org, &id, limit).await?,
    }))
}
