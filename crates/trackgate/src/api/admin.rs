//! Administration over HTTPS, authorized by the same model as reads: platform administrators
//! create organizations and give devices to them; an organization's admins manage its order
//! groups, shipments, user groups and membership rules, and read its audit trail. A platform
//! administrator acting inside an organization where they hold no admin group is an override:
//! allowed, and marked so in the audit row. Each change and its audit row commit together.

use super::{ApiFailure, ApiState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use trackgate_store::{
    Assignment, AuditEntry, AuditRecord, OrderGroup, Organization, Role, Rule, RuleKind, Scope, UserGroup,
};

const MAX_AUDIT_PAGE: u32 = 1000;

/// A JSON body, or a 400 that says what is wrong with it.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiFailure> {
    serde_json::from_slice(bytes).map_err(|e| ApiFailure::BadRequest(format!("request body: {e}")))
}

/// The audit entry for a change in `org`, if the caller may make it there.
pub(super) fn org_admin(
    caller: &Caller,
    org: &str,
    action: &str,
    target: Option<String>,
) -> Result<AuditEntry, ApiFailure> {
    let mut e = caller.audit(action, Some(org), target);
    if caller.is_org_admin(org) {
        Ok(e)
    } else if caller.identity.platform_admin {
        e.over_ride = true;
        Ok(e)
    } else {
        Err(ApiFailure::Forbidden(format!(
            "not an administrator of organization {org:?}"
        )))
    }
}

fn platform_admin(
    caller: &Caller,
    action: &str,
    org: Option<&str>,
    target: Option<String>,
) -> Result<AuditEntry, ApiFailure> {
    if caller.identity.platform_admin {
        Ok(caller.audit(action, org, target))
    } else {
        Err(ApiFailure::Forbidden(
            "only a platform administrator may do this".into(),
        ))
    }
}

fn created() -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({"ok": true})))
}

/// `GET /v1/admin/orgs`: every organization for a platform administrator, else the caller's own.
pub async fn list_orgs(State(s): State<ApiState>, caller: Caller) -> Result<Json<Vec<Organization>>, ApiFailure> {
    let mine: Vec<String> = caller.orgs().into_iter().map(str::to_owned).collect();
    let only = (!caller.identity.platform_admin).then_some(mine.as_slice());
    Ok(Json(s.store.organizations(only).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    id: String,
    name: String,
}

/// `POST /v1/admin/orgs {"id", "name"}` (platform administrators).
pub async fn add_org(
    State(s): State<ApiState>,
    caller: Caller,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiFailure> {
    let b: NewOrg = body(&bytes)?;
    let audit = platform_admin(&caller, "org.add", Some(&b.id), Some(b.name.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.add_organization(&b.id, &b.name, &audit).await?;
    Ok(created())
}

/// `GET /v1/admin/orgs/{org}/export`: the organization's export archive (`application/x-tar`, as
/// `trackgate org export` makes it), for its admins. Built in a private file in the data
/// directory, then streamed from it: memory stays flat. Audited as `org.export`.
pub async fn export_org(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<axum::response::Response, ApiFailure> {
    let audit = org_admin(&caller, &org, "org.export", None)?;
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot make the export's working file");
        ApiFailure::Unavailable
    };
    std::fs::create_dir_all(&s.export_dir).map_err(failed)?;
    let dir = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&s.export_dir)
        .map_err(failed)?;
    let path = dir.path().join("export.tar");
    if let Err(e) = crate::export::export(&s.store, &org, &path, audit).await {
        return Err(match e.downcast::<trackgate_store::StoreError>() {
            Ok(store) => store.into(),
            Err(other) => {
                tracing::error!(error = %other, "export failed");
                ApiFailure::Unavailable
            }
        });
    }
    let file = tokio::fs::File::open(&path).await.map_err(failed)?;
    // The open file outlives its directory (removed when `dir` drops at the end of this call).
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition = format!("attachment; filename=\"{org}-export.tar\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteOrg {
    #[serde(default)]
    delete_devices: bool,
}

/// `DELETE /v1/admin/orgs/{org}?delete_devices=true|false`: the organization and everything it
/// owns (its devices unassigned, or deleted with their keys), for an admin of it who signed in
/// within `auth.reauth_max_age_secs`. Answers what was removed; its audit entries stay.
pub async fn delete_org(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    Query(q): Query<DeleteOrg>,
) -> Result<Json<Value>, ApiFailure> {
    let audit = org_admin(&caller, &org, "org.delete", Some(org.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    let report = s.store.delete_org(&org, q.delete_devices, &audit).await?;
    Ok(Json(json!(report)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgRetention {
    /// Days, or `null` for the service's retention.
    positions_days: Option<u32>,
}

/// `PUT /v1/admin/orgs/{org}/retention {"positions_days": 30}` (or `null`): how long the
/// organization's positions are kept, within the operator's bounds (400 names them).
pub async fn set_retention(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    let b: OrgRetention = body(&bytes)?;
    let days = b.positions_days.map_or_else(|| "default".to_owned(), |d| d.to_string());
    let audit = org_admin(&caller, &org, "retention.set", Some(format!("positions_days={days}")))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.set_positions_retention(&org, b.positions_days, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOrg {
    org: String,
}

/// `PUT /v1/admin/devices/{id}/org {"org"}` (platform administrators): give a device to an
/// organization; its order group and shipment are cleared.
pub async fn assign_device(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    let b: DeviceOrg = body(&bytes)?;
    let audit = platform_admin(&caller, "device.assign", Some(&b.org), Some(id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.assign_device(&id, &b.org, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

/// `GET /v1/admin/orgs/{org}/order-groups`.
pub async fn list_order_groups(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<Vec<OrderGroup>>, ApiFailure> {
    org_admin(&caller, &org, "order_group.list", None)?;
    Ok(Json(s.store.order_groups(&org).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrderGroup {
    id: String,
    name: String,
}

/// `POST /v1/admin/orgs/{org}/order-groups {"id", "name"}`.
pub async fn add_order_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiFailure> {
    let b: NewOrderGroup = body(&bytes)?;
    let audit = org_admin(&caller, &org, "order_group.add", Some(b.id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.add_order_group(&org, &b.id, &b.name, &audit).await?;
    Ok(created())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    #[serde(default)]
    order_group: Option<String>,
    #[serde(default)]
    shipment_label: Option<String>,
    #[serde(default)]
    shipment_ref: Option<String>,
}

/// `PUT /v1/admin/orgs/{org}/devices/{id} {"order_group", "shipment_label", "shipment_ref"}`:
/// attach one of the organization's devices to a shipment and an order group.
pub async fn set_shipment(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiFailure> {
    let b: Shipment = body(&bytes)?;
    let mut audit = org_admin(&caller, &org, "device.shipment", Some(id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    audit.detail = Some(
        json!({"order_group": b.order_group, "shipment_label": b.shipment_label, "shipment_ref": b.shipment_ref})
            .to_string(),
    );
    let a = Assignment {
        org_id: org,
        order_group_id: b.order_group,
        shipment_label: b.shipment_label,
        shipment_ref: b.shipment_ref,
    };
    s.store.set_shipment(&id, &a, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

/// `GET /v1/admin/orgs/{org}/user-groups`: groups with their scope and rules.
pub async fn list_user_groups(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<Vec<UserGroup>>, ApiFailure> {
    org_admin(&caller, &org, "user_group.list", None)?;
    Ok(Json(s.store.user_groups(&org).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    kind: String,
    value: String,
}

impl NewRule {
    fn rule(&self) -> Result<Rule, ApiFailure> {
        let kind = RuleKind::parse(&self.kind).ok_or_else(|| {
            ApiFailure::BadRequest(format!(
                "rule `kind` must be email, domain, idp_group or tenant, not {:?}",
                self.kind
            ))
        })?;
        Ok(Rule {
            kind,
            value: self.value.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserGroup {
    id: String,
    name: String,
    role: String,
    /// `"all"` or a list of order group ids; required for viewers.
    #[serde(default)]
    order_groups: Option<Value>,
    #[serde(default)]
    rules: Vec<NewRule>,
}

/// `POST /v1/admin/orgs/{org}/user-groups {"id", "name", "role": "admin"|"viewer",
/// "order_groups": "all"|[ids], "rules": [{"kind", "value"}]}`.
pub async fn add_user_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiFailure> {
    let b: NewUserGroup = body(&bytes)?;
    let role = Role::parse(&b.role)
        .ok_or_else(|| ApiFailure::BadRequest(format!("`role` must be admin or viewer, not {:?}", b.role)))?;
    let scope = match (&b.order_groups, role) {
        (None, Role::Admin) => Scope::AllOrderGroups,
        (Some(Value::String(all)), _) if all == "all" => Scope::AllOrderGroups,
        (Some(Value::Array(items)), _) => Scope::OrderGroups(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiFailure::BadRequest("`order_groups` must be \"all\" or a list of ids".into()))?,
        ),
        _ => {
            return Err(ApiFailure::BadRequest(
                "`order_groups` must be \"all\" or a list of order group ids".into(),
            ));
        }
    };
    let rules = b.rules.iter().map(NewRule::rule).collect::<Result<Vec<_>, _>>()?;
    let mut audit = org_admin(&caller, &org, "user_group.add", Some(b.id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    audit.detail = Some(json!({"role": role, "scope": scope, "rules": rules}).to_string());
    let group = UserGroup {
        org_id: org,
        id: b.id,
        name: b.name,
        role,
        scope,
        rules,
    };
    s.store.add_user_group(&group, &audit).await?;
    Ok(created())
}

/// `DELETE /v1/admin/orgs/{org}/user-groups/{group}`.
pub async fn remove_user_group(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiFailure> {
    let audit = org_admin(&caller, &org, "user_group.remove", Some(group.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.remove_user_group(&org, &group, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

/// `POST /v1/admin/orgs/{org}/user-groups/{group}/rules {"kind", "value"}`.
pub async fn add_rule(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, group)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiFailure> {
    let rule = body::<NewRule>(&bytes)?.rule()?;
    let mut audit = org_admin(&caller, &org, "rule.add", Some(group.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    audit.detail = Some(format!("{} {}", rule.kind.as_str(), rule.value));
    s.store.add_rule(&org, &group, &rule, &audit).await?;
    Ok(created())
}

/// `DELETE /v1/admin/orgs/{org}/user-groups/{group}/rules?kind=&value=`.
pub async fn remove_rule(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, group)): Path<(String, String)>,
    Query(q): Query<NewRule>,
) -> Result<Json<Value>, ApiFailure> {
    let rule = q.rule()?;
    let mut audit = org_admin(&caller, &org, "rule.remove", Some(group.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    audit.detail = Some(format!("{} {}", rule.kind.as_str(), rule.value));
    s.store.remove_rule(&org, &group, &rule, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/admin/orgs/{org}/audit/verify`: the organization's entries checked against their hash
/// chain: `{"ok", "entries", "head": [id, hash], "failure": {"id", "reason"}}`.
pub async fn verify_audit(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    org_admin(&caller, &org, "audit.verify", None)?;
    let v = s.store.verify_audit(Some(&org)).await?;
    Ok(Json(json!({
        "ok": v.ok(),
        "entries": v.entries,
        "head": v.head,
        "failure": v.failure,
    })))
}

/// `GET /v1/admin/orgs/{org}/audit?before=&limit=`: the organization's trail, newest first.
pub async fn audit(
    State(s): State<ApiState>,
    caller: Caller,
    Path(org): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiFailure> {
    org_admin(&caller, &org, "audit.read", None)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
    Ok(Json(s.store.audit_log(Some(&org), q.before, limit).await?))
}
