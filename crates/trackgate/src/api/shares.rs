//! Share links: an operator who may see a shipment makes a link that shows it, and nothing else,
//! to whoever opens it, without an account: its position and track on a read-only map page
//! (`/share#<token>`), live, until the link expires (at most `sharing.max_expiry_secs`) or is
//! revoked, optionally limited to a time range. The token is 256 random bits, shown once, kept
//! only as its SHA-256, sent by the page in a header (never in a URL the server sees: it travels
//! in the page address's fragment), and never logged. Every use is audited. A link that expired,
//! was revoked, or whose device left the organization answers exactly like one that never was.

use super::location::visible_device;
use super::{ApiFailure, ApiState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::SocketAddr;
use trackgate_store::shares::{NewShareLink, ShareLink, token_hash};
use trackgate_store::{AuditEntry, TrackCursor};

/// The header the share page sends its token in.
pub const TOKEN_HEADER: &str = "x-tg-share";
/// Fixes of the track a link shows, at most: the newest.
const MAX_POINTS: usize = 5000;
/// Without a range, a link shows the track from this long before it was made.
const DEFAULT_BACK_MS: i64 = 24 * 3_600_000;

/// A new random token: 32 bytes as unpadded base64url (43 characters).
fn new_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    expires_in_secs: u64,
    /// Only the track with `from <= ts < to` (Unix ms).
    from: Option<i64>,
    to: Option<i64>,
}

#[derive(Serialize)]
pub struct Made {
    link: ShareLink,
    /// Shown this once.
    token: String,
    url: String,
}

/// `POST /v1/devices/{id}/shares` `{"expires_in_secs", "from", "to"}`: a link, its token and
/// its page's address (this once).
pub async fn add(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Made>, ApiFailure> {
    let b: LinkBody = super::admin::body(&bytes)?;
    let max = s.share_max_expiry.as_secs();
    if !(1..=max).contains(&b.expires_in_secs) {
        return Err(ApiFailure::BadRequest(format!(
            "`expires_in_secs` must be between 1 and {max} (`sharing.max_expiry_secs`), not {}",
            b.expires_in_secs
        )));
    }
    if let (Some(from), Some(to)) = (b.from, b.to)
        && from >= to
    {
        return Err(ApiFailure::BadRequest(format!(
            "`from` ({from}) must be before `to` ({to})"
        )));
    }
    let d = visible_device(&s, &caller, &id).await?;
    caller.signed_in_within(s.reauth_max_age)?;
    let token = new_token();
    let now = trackgate_store::now_ms();
    let new = NewShareLink {
        device_id: id.clone(),
        created_by: caller.identity.actor(),
        expires_ms: now + i64::try_from(b.expires_in_secs).unwrap_or(i64::MAX / 2) * 1000,
        from_ms: b.from,
        to_ms: b.to,
    };
    let audit = caller.audit("share.create", Some(&d.assignment.org_id), None);
    let link = s
        .store
        .add_share_link(&d.assignment.org_id, &new, &token_hash(&token), &audit)
        .await?;
    let url = format!("{}share#{token}", s.page_url);
    Ok(Json(Made { link, token, url }))
}

#[derive(Serialize)]
pub struct Links {
    links: Vec<ShareLink>,
}

/// `GET /v1/devices/{id}/shares`: the device's links, newest first (never a token).
pub async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Links>, ApiFailure> {
    let d = visible_device(&s, &caller, &id).await?;
    let links = s
        .store
        .share_links(&id)
        .await?
        .into_iter()
        .filter(|l| l.org_id == d.assignment.org_id)
        .collect();
    Ok(Json(Links { links }))
}

/// `DELETE /v1/devices/{id}/shares/{link}`: revoke at once.
pub async fn revoke(
    State(s): State<ApiState>,
    caller: Caller,
    Path((id, link)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiFailure> {
    let d = visible_device(&s, &caller, &id).await?;
    caller.signed_in_within(s.reauth_max_age)?;
    let audit = caller.audit(
        "share.revoke",
        Some(&d.assignment.org_id),
        Some(format!("{id} link {link}")),
    );
    s.store.revoke_share_link(&id, link, &audit).await?;
    Ok(Json(json!({"ok": true})))
}

/// The answer to every token that does not open a link, whatever the reason.
fn gone() -> ApiFailure {
    ApiFailure::NotFound("no such link".into())
}

/// `GET /v1/shared` with `X-TG-Share: <token>`: the linked shipment's label, the link's range
/// and expiry, its track in range (the newest fixes, oldest first) and its newest position.
pub async fn shared(State(s): State<ApiState>, req: axum::extract::Request) -> Result<Json<Value>, ApiFailure> {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let token = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.len() == 43)
        .ok_or_else(gone)?;
    let now = trackgate_store::now_ms();
    let link = s
        .store
        .open_share_link(&token_hash(token), now)
        .await?
        .ok_or_else(gone)?;
    s.store
        .audit(&AuditEntry {
            actor: format!("share:{}", link.id),
            org_id: Some(link.org_id.clone()),
            action: "share.read".into(),
            target: Some(format!("{} link {}", link.device_id, link.id)),
            remote_addr: remote,
            ..Default::default()
        })
        .await?;
    let label = s
        .store
        .devices(&trackgate_store::Visibility::everything(), Some(&link.device_id))
        .await?
        .pop()
        .and_then(|d| d.assignment.shipment_label)
        .unwrap_or_else(|| "Shipment".to_owned());
    let from = link.from_ms.unwrap_or(link.created_ms - DEFAULT_BACK_MS);
    let to = link.to_ms.unwrap_or(now + 1).min(now + 1);
    let mut points: std::collections::VecDeque<[f64; 3]> = std::collections::VecDeque::new();
    let mut after: Option<TrackCursor> = None;
    let mut truncated = false;
    loop {
        let page = s.store.track(&link.device_id, from, to, after, 10_000).await?;
        for f in &page.points {
            let (lat, lon) = f.position();
            points.push_back([lon, lat, f.ts() as f64]);
            if points.len() > MAX_POINTS {
                points.pop_front();
                truncated = true;
            }
        }
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let position = points
        .back()
        .map(|p| json!({"lon": p[0], "lat": p[1], "ts": p[2] as i64}));
    Ok(Json(json!({
        "label": label,
        "expires_ms": link.expires_ms,
        "from_ms": link.from_ms,
        "to_ms": link.to_ms,
        "position": position,
        "track": points,
        "truncated": truncated,
    })))
}
