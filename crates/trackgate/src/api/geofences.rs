//! Geofences over HTTPS: every member of an organization reads its geofences (the map draws
//! them); its admins create, replace and remove them, each change audited like any other admin
//! change (and, like them, only after a recent sign-in).

use super::admin::{body, org_admin};
use super::{ApiFailure, ApiState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trackgate_store::geofence::{Area, Circle, Geofence, Geometry};

#[derive(Serialize)]
pub struct Geofences {
    geofences: Vec<Geofence>,
}

/// `GET /v1/geofences`: the geofences of every organization the caller is a member of (all of
/// them for a platform administrator), by organization and id.
pub async fn list(State(s): State<ApiState>, caller: Caller) -> Result<Json<Geofences>, ApiFailure> {
    let orgs: Vec<String> = caller.orgs().into_iter().map(str::to_owned).collect();
    let only = (!caller.identity.platform_admin).then_some(orgs.as_slice());
    Ok(Json(Geofences {
        geofences: s.store.geofences(only).await?,
    }))
}

/// A geofence as given: a name, and its area as exactly one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeofenceBody {
    name: String,
    geometry: Option<Geometry>,
    circle: Option<Circle>,
}

impl GeofenceBody {
    fn area(self) -> Result<(String, Area), ApiFailure> {
        let area = match (self.geometry, self.circle) {
            (Some(g), None) => Area::Geometry(g),
            (None, Some(c)) => Area::Circle(c),
            (Some(_), Some(_)) => {
                return Err(ApiFailure::BadRequest(
                    "request body: give the area as `geometry` or as `circle`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(ApiFailure::BadRequest(
                    "request body: the area is missing: `geometry` (a GeoJSON Polygon or MultiPolygon) or \
                     `circle` ({\"center\": [lon, lat], \"radius_m\": r})"
                        .into(),
                ));
            }
        };
        Ok((self.name, area))
    }
}

/// `PUT /v1/admin/orgs/{org}/geofences/{id}` `{"name", "geometry" | "circle"}`: create or
/// replace; answers the geofence as stored.
pub async fn put(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Geofence>, ApiFailure> {
    let audit = org_admin(&caller, &org, "geofence.put", Some(id.clone()))?;
    let (name, area) = body::<GeofenceBody>(&bytes)?.area()?;
    caller.signed_in_within(s.reauth_max_age)?;
    Ok(Json(s.store.put_geofence(&org, &id, &name, area, &audit).await?))
}

/// `DELETE /v1/admin/orgs/{org}/geofences/{id}`.
pub async fn remove(
    State(s): State<ApiState>,
    caller: Caller,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiFailure> {
    let audit = org_admin(&caller, &org, "geofence.remove", Some(id.clone()))?;
    caller.signed_in_within(s.reauth_max_age)?;
    s.store.remove_geofence(&org, &id, &audit).await?;
    Ok(Json(json!({"ok": true})))
}
