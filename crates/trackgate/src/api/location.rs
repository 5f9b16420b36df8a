//! The location API. Each handler resolves what the caller may see, writes the audit row, and
//! answers from the store with that visibility applied in SQL. A device the caller may not see
//! answers 404, exactly like one that does not exist.

use super::geojson;
use super::{ApiFailure, ApiState, Caller};
use crate::feed::FeedBatch;
use crate::simplify::{self, TimedPoint};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use trackgate_store::{BBox, DeviceView, Fix, TrackCursor, Visibility};

/// Track pages hold at most this many points.
pub const MAX_TRACK_LIMIT: u32 = 10_000;
const DEFAULT_TRACK_LIMIT: u32 = 1_000;
/// A track without `from` covers this much before `to`.
const DEFAULT_TRACK_SPAN_MS: i64 = 24 * 3600 * 1000;

/// Record a read of location data: one row per organization the caller's groups reach (so each
/// organization's admins see it in their trail), or one override row for a platform administrator.
pub(super) async fn audit_read(
    s: &ApiState,
    caller: &Caller,
    action: &str,
    org: Option<&str>,
    target: Option<String>,
) -> Result<(), ApiFailure> {
    let over_ride = caller.identity.platform_admin;
    let orgs: Vec<Option<&str>> = match org {
        Some(o) => vec![Some(o)],
        None if over_ride => vec![None],
        None => {
            let mine: Vec<Option<&str>> = caller.orgs().into_iter().map(Some).collect();
            if mine.is_empty() { vec![None] } else { mine }
        }
    };
    for org in orgs {
        let mut e = caller.audit(action, org, target.clone());
        e.over_ride = over_ride && !org.is_some_and(|o| caller.orgs().contains(o));
        s.store.audit(&e).await?;
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Devices {
    devices: Vec<DeviceView>,
}

/// `GET /v1/devices`: every visible device with its latest position, battery, temperature and
/// last-seen time.
pub async fn devices(State(s): State<ApiState>, caller: Caller) -> Result<Json<Devices>, ApiFailure> {
    audit_read(&s, &caller, "read.devices", None, None).await?;
    let devices = s.store.devices(&caller.visibility(), None).await?;
    Ok(Json(Devices { devices }))
}

pub(super) async fn visible_device(s: &ApiState, caller: &Caller, id: &str) -> Result<DeviceView, ApiFailure> {
    s.store
        .devices(&caller.visibility(), Some(id))
        .await?
        .pop()
        .ok_or_else(|| ApiFailure::NotFound(format!("no device {id:?}")))
}

/// `GET /v1/devices/{id}`.
pub async fn device(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiFailure> {
    let d = visible_device(&s, &caller, &id).await?;
    audit_read(&s, &caller, "read.device", Some(&d.assignment.org_id), Some(id)).await?;
    Ok(Json(d))
}

#[derive(Debug, Deserialize)]
pub struct LatestQuery {
    bbox: Option<String>,
}

/// `west,south,east,north` in degrees, RFC 7946 §5 order.
fn parse_bbox(s: &str) -> Result<BBox, ApiFailure> {
    let bad = || ApiFailure::BadRequest(format!("`bbox` must be west,south,east,north in degrees, not {s:?}"));
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [west, south, east, north] = v[..] else {
        return Err(bad());
    };
    let lon = |x: f64| (-180.0..=180.0).contains(&x);
    let lat = |x: f64| (-90.0..=90.0).contains(&x);
    if !(lon(west) && lon(east) && lat(south) && lat(north)) || south > north {
        return Err(bad());
    }
    Ok(BBox {
        west,
        south,
        east,
        north,
    })
}

/// `GET /v1/positions/latest[?bbox=w,s,e,n]`: a FeatureCollection of the latest positions.
pub async fn latest(
    State(s): State<ApiState>,
    caller: Caller,
    Query(q): Query<LatestQuery>,
) -> Result<Response, ApiFailure> {
    let bbox = q.bbox.as_deref().map(parse_bbox).transpose()?;
    audit_read(&s, &caller, "read.latest", None, q.bbox.clone()).await?;
    let rows = s.store.latest(&caller.visibility(), bbox).await?;
    let features: Vec<_> = rows
        .iter()
        .map(|(id, a, f)| geojson::device_point(id, Some(a), f))
        .collect();
    Ok(Json(geojson::collection(features, geojson::Plain {})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TrackQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    tolerance_m: Option<String>,
    max_points: Option<String>,
}

/// The range of a track, `[from, to)` in Unix ms: by default the last 24 hours (and the next
/// minute, for clocks a little ahead).
pub(super) struct TrackRange {
    pub from: i64,
    pub to: i64,
}

impl TrackRange {
    pub(super) fn parse(from: &Option<String>, to: &Option<String>) -> Result<TrackRange, ApiFailure> {
        let to = int::<i64>("to", to)?.unwrap_or_else(|| trackgate_store::now_ms() + 60_000);
        let from = int::<i64>("from", from)?.unwrap_or(to.saturating_sub(DEFAULT_TRACK_SPAN_MS));
        if from >= to {
            return Err(ApiFailure::BadRequest(format!(
                "`from` ({from}) must be before `to` ({to})"
            )));
        }
        Ok(TrackRange { from, to })
    }
}

/// How a simplified track was asked for: a tolerance in metres, a point budget, or both.
#[derive(Debug, Clone, Copy)]
struct Simplify {
    tolerance_m: f64,
    max_points: u32,
}

impl Simplify {
    /// The largest tolerance asked for: 100 km.
    const MAX_TOLERANCE_M: f64 = 100_000.0;

    fn from_query(q: &TrackQuery) -> Result<Option<Simplify>, ApiFailure> {
        if q.tolerance_m.is_none() && q.max_points.is_none() {
            return Ok(None);
        }
        if q.limit.is_some() || q.cursor.is_some() {
            return Err(ApiFailure::BadRequest(
                "a simplified track (`tolerance_m` or `max_points`) is one answer for the whole range: \
                 it takes no `limit` or `cursor`"
                    .into(),
            ));
        }
        let tolerance_m = match q.tolerance_m.as_deref() {
            None => 0.0,
            Some(t) => match t.parse::<f64>() {
                Ok(v) if v > 0.0 && v <= Self::MAX_TOLERANCE_M => v,
                _ => {
                    return Err(ApiFailure::BadRequest(format!(
                        "`tolerance_m` must be a number of metres above 0 and at most {}, not {t:?}",
                        Self::MAX_TOLERANCE_M
                    )));
                }
            },
        };
        let max_points = int::<u32>("max_points", &q.max_points)?.unwrap_or(MAX_TRACK_LIMIT);
        if !(2..=MAX_TRACK_LIMIT).contains(&max_points) {
            return Err(ApiFailure::BadRequest(format!(
                "`max_points` must be between 2 and {MAX_TRACK_LIMIT}, not {max_points}"
            )));
        }
        Ok(Some(Simplify {
            tolerance_m,
            max_points,
        }))
    }

    /// The fixes of `id` in `[from, to)`, simplified. The range is read in chunks of
    /// `SIMPLIFY_CHUNK` fixes, each simplified on its own from the last fix kept before it, so
    /// memory stays bounded however long the range is; with a budget, what is kept is simplified
    /// again whenever it grows past four budgets, and once at the end. Also: how many fixes the
    /// range holds.
    async fn track(self, s: &ApiState, id: &str, from: i64, to: i64) -> Result<(Vec<Fix>, usize), ApiFailure> {
        const SIMPLIFY_CHUNK: u32 = 50_000;
        let budget = self.max_points as usize;
        let mut kept: Vec<Fix> = Vec::new();
        let mut read = 0;
        let mut after = None;
        loop {
            let page = s.store.track(id, from, to, after, SIMPLIFY_CHUNK).await?;
            read += page.points.len();
            let first_is_kept = !kept.is_empty();
            let chunk: Vec<Fix> = kept.last().cloned().into_iter().chain(page.points).collect();
            let picked = self.keep(&chunk, budget);
            kept.extend(
                picked
                    .into_iter()
                    .skip(usize::from(first_is_kept))
                    .map(|i| chunk[i].clone()),
            );
            if kept.len() > 4 * budget {
                kept = self.thin(kept, budget);
            }
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        Ok((self.thin(kept, budget), read))
    }

    fn keep(self, fixes: &[Fix], budget: usize) -> Vec<usize> {
        let points: Vec<TimedPoint> = fixes
            .iter()
            .map(|f| {
                let (lat, lon) = f.position();
                TimedPoint { ts: f.ts(), lat, lon }
            })
            .collect();
        simplify::keep(&points, self.tolerance_m, budget)
    }

    fn thin(self, fixes: Vec<Fix>, budget: usize) -> Vec<Fix> {
        if fixes.len() <= budget {
            return fixes;
        }
        let picked = self.keep(&fixes, budget);
        let mut fixes: Vec<Option<Fix>> = fixes.into_iter().map(Some).collect();
        picked.into_iter().filter_map(|i| fixes[i].take()).collect()
    }
}

pub(super) fn int<T: std::str::FromStr>(name: &str, v: &Option<String>) -> Result<Option<T>, ApiFailure> {
    v.as_deref()
        .map(|x| {
            x.parse::<T>()
                .map_err(|_| ApiFailure::BadRequest(format!("`{name}` must be an integer, not {x:?}")))
        })
        .transpose()
}

/// `GET /v1/devices/{id}/track?from=&to=&limit=&cursor=`: positions with `from <= ts < to`
/// (Unix ms), oldest first, as a LineString and its points. A full page carries `next`, the
/// cursor for the page after it.
///
/// With `tolerance_m` and/or `max_points`, the whole range in one answer, simplified for a
/// screen (`crate::simplify`): every fix left out lies within `tolerance_m` of the line at its
/// time, and at most `max_points` (default and most: 10,000) are kept; the foreign member
/// `simplified` says how many fixes the range holds and how many were kept.
pub async fn track(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TrackQuery>,
) -> Result<Response, ApiFailure> {
    let TrackRange { from, to } = TrackRange::parse(&q.from, &q.to)?;
    let limit = int::<u32>("limit", &q.limit)?.unwrap_or(DEFAULT_TRACK_LIMIT);
    if !(1..=MAX_TRACK_LIMIT).contains(&limit) {
        return Err(ApiFailure::BadRequest(format!(
            "`limit` must be between 1 and {MAX_TRACK_LIMIT}, not {limit}"
        )));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            TrackCursor::decode(c)
                .ok_or_else(|| ApiFailure::BadRequest(format!("`cursor` {c:?} is not one this API gave")))
        })
        .transpose()?;
    let simplify = Simplify::from_query(&q)?;
    let d = visible_device(&s, &caller, &id).await?;
    audit_read(
        &s,
        &caller,
        "read.track",
        Some(&d.assignment.org_id),
        Some(format!("{id} {from}..{to}")),
    )
    .await?;
    let (points, next, simplified) = match simplify {
        None => {
            let page = s.store.track(&id, from, to, after, limit).await?;
            (page.points, page.next, None)
        }
        Some(how) => {
            let (points, read) = how.track(&s, &id, from, to).await?;
            let said = json!({
                "tolerance_m": how.tolerance_m,
                "max_points": how.max_points,
                "fixes": read,
                "kept": points.len(),
            });
            (points, None, Some(said))
        }
    };
    // Foreign members (RFC 7946 §6.1): the range served and where the next page starts.
    #[derive(Serialize)]
    struct Range<'a> {
        device_id: &'a str,
        from: i64,
        to: i64,
        next: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        simplified: Option<Value>,
    }
    let members = Range {
        device_id: &id,
        from,
        to,
        next: next.map(|c| c.encode()),
        simplified,
    };
    let features = geojson::Track {
        device: &id,
        points: &points,
    };
    Ok(Json(geojson::collection(features, members)).into_response())
}

struct Live {
    state: ApiState,
    caller: Caller,
    rx: broadcast::Receiver<FeedBatch>,
    visible: HashSet<String>,
    everything: bool,
    refresh_at: Instant,
    pending: VecDeque<Event>,
    ready: Option<Event>,
    /// The caller's token expires: the stream ends, and reconnecting needs a fresh token.
    expires: Instant,
}

impl Live {
    /// Re-read the caller's groups and the devices they grant.
    async fn refresh(&mut self) -> Result<(), ApiFailure> {
        let vis = if self.caller.identity.platform_admin {
            Visibility::everything()
        } else {
            Visibility::of(
                &self
                    .state
                    .store
                    .memberships(&self.caller.identity.member_keys())
                    .await?,
            )
        };
        self.everything = vis.everything;
        self.visible = if vis.everything {
            HashSet::new()
        } else {
            self.state.store.visible_device_ids(&vis).await?.into_iter().collect()
        };
        self.refresh_at = Instant::now() + self.state.grants_refresh;
        Ok(())
    }

    async fn next_event(&mut self) -> Option<Event> {
        if let Some(ready) = self.ready.take() {
            return Some(ready);
        }
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if Instant::now() >= self.refresh_at && self.refresh().await.is_err() {
                return None;
            }
            let received = tokio::select! {
                _ = self.state.stopping.cancelled() => return None,
                _ = tokio::time::sleep_until(self.expires) => {
                    tracing::info!("live stream closed: its token expired");
                    return None;
                }
                r = tokio::time::timeout_at(self.refresh_at, self.rx.recv()) => r,
            };
            match received {
                Err(_) => continue,
                Ok(Ok(batch)) => {
                    for p in batch.iter() {
                        if self.everything || self.visible.contains(&p.device_id) {
                            let feature = geojson::device_point(&p.device_id, None, &p.fix);
                            let data = serde_json::to_string(&feature).unwrap_or_default();
                            self.pending.push_back(Event::default().event("position").data(data));
                        }
                    }
                }
                Ok(Err(RecvError::Lagged(missed))) => {
                    tracing::info!(missed_batches = missed, "live stream fell behind; closing it");
                    return None;
                }
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    }
}

/// `GET /v1/stream`: Server-Sent Events, one `position` event (a GeoJSON Point feature) per
/// committed position of a device the caller may see. The first event, `ready`, says the stream
/// is subscribed. A client that does not keep up is disconnected; reconnecting resumes with
/// new positions (use the track endpoint for what was missed). The stream ends when the
/// caller's token expires.
pub async fn stream(
    State(s): State<ApiState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    audit_read(&s, &caller, "read.stream", None, None).await?;
    let rx = s.feed.subscribe();
    // A token is accepted through the second `valid_until`; the stream ends right after it.
    let end_ms = caller.identity.valid_until.saturating_add(1).saturating_mul(1000);
    let now_ms = u64::try_from(trackgate_store::now_ms()).unwrap_or(0);
    let expires = Instant::now() + Duration::from_millis(end_ms.saturating_sub(now_ms));
    let mut live = Live {
        expires,
        state: s.clone(),
        caller,
        rx,
        visible: HashSet::new(),
        everything: false,
        refresh_at: Instant::now(),
        pending: VecDeque::new(),
        ready: None,
    };
    live.refresh().await?;
    let count = if live.everything {
        None
    } else {
        Some(live.visible.len())
    };
    live.ready = Some(
        Event::default()
            .event("ready")
            .data(json!({ "devices": count }).to_string()),
    );
    let events = futures_util::stream::unfold(live, |mut live| async move {
        live.next_event().await.map(|e| (Ok(e), live))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounding_boxes_are_checked() {
        let b = parse_bbox("-10,35,30,70").unwrap();
        assert_eq!((b.west, b.south, b.east, b.north), (-10.0, 35.0, 30.0, 70.0));
        assert!(parse_bbox("170,-10,-170,10").is_ok(), "crossing the antimeridian");
        for bad in ["1,2,3", "a,b,c,d", "0,10,5,0", "0,-91,5,0", "-181,0,0,1", "1,2,3,4,5"] {
            assert!(parse_bbox(bad).is_err(), "{bad}");
        }
    }
}
