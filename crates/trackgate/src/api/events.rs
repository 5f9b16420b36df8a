//! Events over HTTPS: what the event processor stored, read through the same grants as the
//! devices (an event is its organization's alone), each read audited like a location read; and
//! the limits events are measured against, set by an organization's admins.

use super::admin::{body, org_admin};
use super::location::{audit_read, int, visible_device};
use super::{ApiFailure, ApiState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trackgate_store::{EventLimits, EventQuery, LimitScope, ScopedLimits, StoredEvent};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    org: Option<String>,
    kind: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
pub struct Events {
    events: Vec<StoredEvent>,
    /// Where the next (older) page starts: pass it as `before`.
    next: Option<i64>,
}

impl EventsParams {
    fn query(self, device: Option<String>) -> Result<EventQuery, ApiFailure> {
        let limit = int::<u32>("limit", &self.limit)?.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiFailure::BadRequest(format!(
                "`limit` must be between 1 and {MAX_LIMIT}, not {limit}"
            )));
        }
        if let Some(k) = &self.kind
            && !crate::events::KINDS.contains(&k.as_str())
        {
            return Err(ApiFailure::BadRequest(format!(
                "`kind` must be one of {}, not {k:?}",
                crate::events::KINDS.join(", ")
            )));
        }
        Ok(EventQuery {
            org: self.org,
            device,
            kind: self.kind,
            before_id: int::<i64>("before", &self.before)?,
            limit,
        })
    }
}

async fn read(s: &ApiState, caller: &Caller, q: EventQuery) -> Result<Json<Events>, ApiFailure> {
    let limit = q.limit as usize;
    let events = s.store.events(&caller.visibility(), &q).await?;
    let next = (events.len() == limit).then(|| events.last().map(|e| e.id)).flatten();
    Ok(Json(Events { events, next }))
}

/// `GET /v1/events?org=&kind=&before=&limit=`: the events of the devices the caller may see,
/// newest first.
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    Query(p): Query<EventsParams>,
) -> Result<Json<Events>, ApiFailure> {
    let q = p.query(None)?;
    audit_read(&s, &caller, "read.events", q.org.as_deref(), None).await?;
    read(&s, &caller, q).await
}

/// `GET /v1/devices/{id}/events?kind=&before=&limit=`: one device's events, newest first.
pub async fn device(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<EventsParams>,
) -> Result<Json<Events>, ApiFailure> {
    let mut q = p.query(Some(id.clone()))?;
    let d = visible_device(&s, &caller, &id).await?;
    q.org = Some(d.assignment.org_id.clone());
    audit_read(&s, &caller, "read.events", Some(&d.assignment.org_id), Some(id)).await?;
    read(&s, &caller, q).await
}

/// Limits as given: seconds for the stale limit, per cent, °C. A limit left out (or `null`) is
/// not set at this scope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    stale_after_secs: Option<u64>,
    battery_low: Option<f64>,
    temperature: Option<Range>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    min: f64,
    max: f64,
}

impl LimitsBody {
    fn limits(self) -> EventLimits {
        EventLimits {
            stale_after_ms: self
                .stale_after_secs
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
            battery_low: self.battery_low,
            temperature: self.temperature.map(|r| (r.min, r.max)),
        }
    }
}

async fn set(
    s: &ApiState,
    caller: &Caller,
    org: &str,
    scope: LimitScope,
    bytes: &Bytes,
) -> Result<Json<Value>, ApiFailure> {
    let limits = body::<LimitsBody>(bytes)?.limits();
    let target = match &scope {
        LimitScope::Org => "org".to_owned(),
        LimitScope::OrderGroup(g) => format!("order_group {g}"),
        LimitScope::Device(d) => format!("device {d}"),
    };
    let audit = org_admin(caller, org, "event_limits.set", Some(target))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.set_event_limits(org, &scope, limits, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

/// `PUT /v1/admin/orgs/{org}/event-limits` `{"stale_after_secs", "battery_low", "temperature":
/// {"min", "max"}}`: the organization's limits (`{}` removes them).
pub async fn set_org(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    set(&s, &caller, &org, LimitScope::Org, &bytes).await
}

/// `PUT /v1/admin/orgs/{org}/order-groups/{group}/event-limits`: an order group's limits, above
/// the organization's.
pub async fn set_order_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, group)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    set(&s, &caller, &org, LimitScope::OrderGroup(group), &bytes).await
}

/// `PUT /v1/admin/orgs/{org}/devices/{id}/event-limits`: one shipment's limits, above its order
/// group's.
pub async fn set_device(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    set(&s, &caller, &org, LimitScope::Device(id), &bytes).await
}

#[derive(Serialize)]
pub struct Limits {
    limits: Vec<ScopedLimits>,
}

/// `GET /v1/admin/orgs/{org}/event-limits`: every scope's limits.
pub async fn list_limits(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<Limits>, ApiFailure> {
    org_admin(&caller, &org, "event_limits.read", None)?;
    Ok(Json(Limits {
        limits: s.store.event_limits(&org).await?,
    }))
}
