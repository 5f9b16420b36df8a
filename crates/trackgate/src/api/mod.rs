//! The operators' API on the HTTPS listener: who am I (`/v1/me`), the location API
//! ([`location`]: devices, latest positions as GeoJSON, tracks, a live stream), geofences
//! (`geofences`), events and their limits (`events`), alert rules (`alerts`) and administration
//! ([`admin`]). Every request carries an ID token ([`crate::auth`]); what it may
//! see is resolved from the caller's user groups into a [`Visibility`] that every query applies
//! in SQL, and every read of location data and every change is written to the audit log first.

pub mod admin;
mod alerts;
mod download;
mod error;
mod events;
mod geofences;
pub mod geojson;
pub mod location;
mod shares;

pub use error::ApiFailure;

use crate::auth::{Auth, Identity, bearer};
use crate::feed::Feed;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::HeaderValue;
use axum::http::header::{self, AUTHORIZATION};
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use trackgate_store::{AuditEntry, Membership, Role, Store, Visibility};

#[derive(Clone)]
pub struct ApiState(Arc<ApiInner>);

pub struct ApiInner {
    pub store: Store,
    pub auth: Auth,
    pub feed: Feed,
    /// How often a live stream re-reads its caller's grants.
    pub grants_refresh: Duration,
    /// How recent a sign-in a dangerous change needs.
    pub reauth_max_age: Duration,
    /// Where exports are built before they are sent (in the data directory).
    pub export_dir: std::path::PathBuf,
    /// Where alert rules may send (webhook destinations are checked when a rule is made).
    pub alerts: crate::alerts::AlertSettings,
    /// The map page's address, which share links point into (`alerts.page_url`).
    pub page_url: String,
    /// The longest a share link may last.
    pub share_max_expiry: Duration,
    /// Cancelled at shutdown: live streams end so connections can close.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl ApiState {
    pub fn new(inner: ApiInner) -> Self {
        ApiState(Arc::new(inner))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiInner;
    fn deref(&self) -> &ApiInner {
        &self.0
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/devices", get(location::devices))
        .route("/v1/devices/{id}", get(location::device))
        .route("/v1/devices/{id}/track", get(location::track))
        .route("/v1/devices/{id}/track/download", get(download::download))
        .route("/v1/positions/latest", get(location::latest))
        .route("/v1/stream", get(location::stream))
        .route("/v1/devices/{id}/events", get(events::device))
        .route("/v1/devices/{id}/shares", get(shares::list).post(shares::add))
        .route("/v1/devices/{id}/shares/{link}", delete(shares::revoke))
        .route("/v1/shared", get(shares::shared))
        .route("/v1/events", get(events::list))
        .route("/v1/geofences", get(geofences::list))
        .route(
            "/v1/admin/orgs/{org}/geofences/{id}",
            put(geofences::put).delete(geofences::remove),
        )
        .route("/v1/admin/orgs", get(admin::list_orgs).post(admin::add_org))
        .route("/v1/admin/orgs/{org}", delete(admin::delete_org))
        .route("/v1/admin/orgs/{org}/retention", put(admin::set_retention))
        .route("/v1/admin/orgs/{org}/export", get(admin::export_org))
        .route("/v1/admin/devices/{id}/org", put(admin::assign_device))
        .route(
            "/v1/admin/orgs/{org}/order-groups",
            get(admin::list_order_groups).post(admin::add_order_group),
        )
        .route("/v1/admin/orgs/{org}/devices/{id}", put(admin::set_shipment))
        .route(
            "/v1/admin/orgs/{org}/event-limits",
            get(events::list_limits).put(events::set_org),
        )
        .route(
            "/v1/admin/orgs/{org}/order-groups/{group}/event-limits",
            put(events::set_order_group),
        )
        .route(
            "/v1/admin/orgs/{org}/devices/{id}/event-limits",
            put(events::set_device),
        )
        .route("/v1/admin/orgs/{org}/alert-rules", get(alerts::list).post(alerts::add))
        .route("/v1/admin/orgs/{org}/alert-rules/{id}", delete(alerts::remove))
        .route(
            "/v1/admin/orgs/{org}/alert-rules/{id}/deliveries",
            get(alerts::deliveries),
        )
        .route(
            "/v1/admin/orgs/{org}/user-groups",
            get(admin::list_user_groups).post(admin::add_user_group),
        )
        .route(
            "/v1/admin/orgs/{org}/user-groups/{group}",
            delete(admin::remove_user_group),
        )
        .route(
            "/v1/admin/orgs/{org}/user-groups/{group}/rules",
            post(admin::add_rule).delete(admin::remove_rule),
        )
        .route("/v1/admin/orgs/{org}/audit", get(admin::audit))
        .route("/v1/admin/orgs/{org}/audit/verify", get(admin::verify_audit))
        .with_state(state)
        .layer(axum::middleware::map_response(no_store))
}

/// Location data is not for caches, and JSON is not to be sniffed as anything else.
async fn no_store(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A signed-in caller, with the user groups its token makes it a member of.
pub struct Caller {
    pub identity: Identity,
    pub memberships: Vec<Membership>,
    pub remote: Option<SocketAddr>,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiFailure> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = bearer(header).map_err(ApiFailure::Unauthorized)?;
        let identity = state.auth.verify(token).await.map_err(|e| {
            tracing::info!(reason = %e, "operator token refused");
            ApiFailure::Unauthorized(e)
        })?;
        let memberships = state.store.memberships(&identity.member_keys()).await?;
        let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(Caller {
            identity,
            memberships,
            remote,
        })
    }
}

impl Caller {
    /// What the caller may see: everything for a platform administrator, else its groups' grants.
    pub fn visibility(&self) -> Visibility {
        if self.identity.platform_admin {
            Visibility::everything()
        } else {
            Visibility::of(&self.memberships)
        }
    }

    /// Refuse a caller whose sign-in at the provider (`auth_time`) is older than `max_age`, or
    /// unknown: every administrative change asks for a recent one (RFC 9470's step-up challenge).
    pub fn signed_in_within(&self, max_age: Duration) -> Result<(), ApiFailure> {
        let now = jsonwebtoken::get_current_timestamp();
        match self.identity.auth_time {
            Some(t) if now.saturating_sub(t) <= max_age.as_secs() => Ok(()),
            _ => Err(ApiFailure::StaleSignIn(max_age.as_secs())),
        }
    }

    /// Organizations the caller's own groups reach.
    pub fn orgs(&self) -> BTreeSet<&str> {
        self.memberships.iter().map(|m| m.org_id.as_str()).collect()
    }

    pub fn is_org_admin(&self, org: &str) -> bool {
        self.memberships
            .iter()
            .any(|m| m.org_id == org && m.role == Role::Admin)
    }

    /// An audit entry naming this caller. `over_ride` is set by the caller of this.
    pub fn audit(&self, action: &str, org: Option<&str>, target: Option<String>) -> AuditEntry {
        AuditEntry {
            actor: self.identity.actor(),
            actor_email: self.identity.email.clone(),
            org_id: org.map(str::to_owned),
            action: action.to_owned(),
            target,
            detail: None,
            remote_addr: self.remote.map(|a| a.to_string()),
            over_ride: false,
        }
    }
}

#[derive(Serialize)]
struct Me {
    issuer: String,
    subject: String,
    email: Option<String>,
    platform_admin: bool,
    memberships: Vec<Membership>,
}

async fn me(State(_): State<ApiState>, caller: Caller) -> Json<Me> {
    Json(Me {
        issuer: caller.identity.issuer,
        subject: caller.identity.subject,
        email: caller.identity.email,
        platform_admin: caller.identity.platform_admin,
        memberships: caller.memberships,
    })
}
