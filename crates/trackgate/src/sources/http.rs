//! `POST /v1/records` (PROTOCOL.md §4).
//!
//! Checks run in the contract's order: media type (415), declared length (413), request
//! signature over the raw body (401), the key's rate (429), body structure (400), envelope count
//! (413). Nothing is parsed before the signature holds. Then every record is verified, the
//! verified ones are queued whole or not at all (503), and the answer waits for the commit.
//!
//! Before any of that, a store that cannot commit refuses with 503. Within the 401 step, a key
//! that names no active key is refused before the body is read; the body is then read under a
//! deadline (`http.body_timeout_ms` plus its length at `http.min_body_bytes_per_second`) and a
//! budget of unverified bytes per address and in total, given back once the signature holds.
//! Failed authentications are counted per address and answered late past their budget
//! ([`crate::throttle`]).

use super::error::ApiError;
use crate::keys::KeyCache;
use crate::listener::limits::{Capped, Held};
use crate::metrics::Metrics;
use crate::pipeline::{Queue, Refused, Source};
use crate::ratelimit::RateLimiter;
use crate::throttle::FailureThrottle;
use crate::verify::Verifier;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trackgate_proto::envelope::Origin;
use trackgate_proto::sign::{self, RequestParts};
use trackgate_proto::{Reason, body, ids};
use trackgate_store::{Kind, Outcome};

pub const RECORDS_PATH: &str = "/v1/records";
const TRANSPORT: &str = "https";

#[derive(Clone)]
pub struct HttpState(Arc<Inner>);

pub struct Inner {
    pub keys: Arc<KeyCache>,
    pub verifier: Arc<Verifier>,
    pub queue: Queue,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub max_records: usize,
    /// A body must arrive within this plus its length at `min_body_bytes_per_second`.
    pub body_timeout: Duration,
    pub min_body_bytes_per_second: u64,
    /// Body bytes held before their signature is checked, per address and in total.
    pub unverified: Capped,
    pub throttle: Arc<FailureThrottle<IpAddr>>,
    /// Cancelled when shutdown starts: new requests are answered 503.
    pub stopping: CancellationToken,
}

impl HttpState {
    pub fn new(inner: Inner) -> Self {
        HttpState(Arc::new(inner))
    }
}

/// The 200 body.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    pub index: u32,
    pub reason: Reason,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            RECORDS_PATH,
            post(records).fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

async fn records(State(s): State<HttpState>, req: Request) -> Response {
    let started = Instant::now();
    let response = match s.handle(req).await {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(e) => e.into_response(),
    };
    let status = response.status();
    s.0.metrics.http_requests.with_label_values(&[status.as_str()]).inc();
    let class = ["1xx", "2xx", "3xx", "4xx", "5xx"][(status.as_u16() / 100).clamp(1, 5) as usize - 1];
    s.0.metrics
        .http_request_seconds
        .with_label_values(&[class])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Ndjson,
}

/// `application/json` or `application/x-ndjson`, case-insensitive; parameters are ignored except
/// a charset, which must be utf-8. Fuzzed (`fuzz/fuzz_targets/request_headers.rs`).
pub fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    const WRONG: &str = "Content-Type must be application/json or application/x-ndjson";
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::UnsupportedMediaType(WRONG))?;
    let mut parts = value.split(';');
    let kind = match parts.next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "application/json" => BodyKind::Json,
        "application/x-ndjson" => BodyKind::Ndjson,
        _ => return Err(ApiError::UnsupportedMediaType(WRONG)),
    };
    for param in parts {
        if let Some((name, v)) = param.split_once('=') {
            let v = v.trim().trim_matches('"');
            if name.trim().eq_ignore_ascii_case("charset") && !v.eq_ignore_ascii_case("utf-8") {
                return Err(ApiError::UnsupportedMediaType("the only charset accepted is utf-8"));
            }
        }
    }
    Ok(kind)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl HttpState {
    async fn handle(&self, req: Request) -> Result<Answer, ApiError> {
        let s = &self.0;
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if s.stopping.is_cancelled() {
            return Err(ApiError::Refused(Refused::Closed));
        }
        // A store that cannot commit, or a disk under its watermark, refuses before the body is
        // read: the answer would be 503 anyway, after holding the client and its bytes.
        if let Some(r) = s.queue.health().refusal() {
            return Err(ApiError::Refused(Refused::Store(r)));
        }
        let (parts, body) = req.into_parts();
        let kind = body_kind(&parts.headers)?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.max_body_bytes as u64) {
            return Err(self.too_large_body());
        }

        // Authentication: the window is checked before any key is looked up, and the key before
        // any body byte is read.
        let timestamp = header_str(&parts.headers, "x-tg-timestamp");
        let ts = timestamp.and_then(sign::parse_request_timestamp);
        let (Some(timestamp), Some(ts)) = (timestamp, ts) else {
            return Err(self.auth_failed(peer, ApiError::Unauthorized).await);
        };
        let now_secs = (trackgate_store::now_ms() / 1000) as u64;
        if !sign::request_is_fresh(ts, now_secs) {
            return Err(self.auth_failed(peer, ApiError::Stale).await);
        }
        let key_name = header_str(&parts.headers, "x-tg-key");
        let named = key_name.and_then(ids::parse_key_name);
        let sig = header_str(&parts.headers, "x-tg-signature").and_then(sign::parse_sig_hex);
        let (Some(key_name), Some((owner, kid)), Some(sig)) = (key_name, named, sig) else {
            return Err(self.auth_failed(peer, ApiError::Unauthorized).await);
        };
        let principal = s.keys.get(owner).await.map_err(|e| {
            tracing::error!(error = %e, "key lookup failed");
            ApiError::Unavailable("the key store is unavailable")
        })?;
        let key = principal.as_ref().and_then(|p| match p.kind {
            Kind::Supplier if !p.enabled => None,
            _ => p.keys.iter().find(|k| k.kid == kid),
        });
        let (Some(principal), Some(key)) = (principal.as_ref(), key) else {
            return Err(self.auth_failed(peer, ApiError::Unauthorized).await);
        };
        let (body, unverified) = self.read_body(body, peer, declared).await?;
        let signed = RequestParts {
            timestamp,
            method: Method::POST.as_str(),
            path: parts.uri.path(),
            body: &body,
        };
        if !sign::verify_request(&key.secret, &signed, &sig) {
            return Err(self.auth_failed(peer, ApiError::Unauthorized).await);
        }
        // Verified: these bytes are a known key's, bounded by its rate and the queue from here.
        drop(unverified);
        let origin = match principal.kind {
            Kind::Supplier => Origin::Supplier(owner),
            Kind::Device => Origin::Device(owner),
        };
        s.limiter
            .check(key_name, Instant::now())
            .map_err(ApiError::RateLimited)?;

        let envelopes = match kind {
            BodyKind::Json => body::json_envelopes(&body),
            BodyKind::Ndjson => body::ndjson_envelopes(&body),
        }
        .map_err(|e| ApiError::Malformed(e.to_string()))?;
        if envelopes.len() > s.max_records {
            return Err(ApiError::TooLarge(format!(
                "{} envelopes in one request; at most {} are accepted",
                envelopes.len(),
                s.max_records
            )));
        }

        let checked = s
            .verifier
            .check(&envelopes, origin, TRANSPORT, Some(key_name))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "device lookup failed");
                ApiError::Unavailable("the key store is unavailable")
            })?;
        let mut answer = Answer {
            accepted: 0,
            duplicates: 0,
            rejected: Vec::with_capacity(checked.rejected.len()),
        };
        for &(index, reason) in &checked.rejected {
            answer.rejected.push(Rejected { index, reason });
        }
        let row_index = checked.row_index.clone();
        if !checked.rows.is_empty() || !checked.rejects.is_empty() {
            let source = Source {
                transport: TRANSPORT,
                key_name: Some(key_name.to_owned()),
            };
            let ack = s
                .queue
                .try_submit(checked.rows, checked.row_index, checked.rejects, source)
                .map_err(ApiError::Refused)?;
            let outcomes = ack
                .await
                .map_err(|_| ApiError::Unavailable("trackgate is shutting down"))?
                .map_err(|_| ApiError::Unavailable("the database is unavailable; nothing was stored"))?;
            for (o, index) in outcomes.into_iter().zip(row_index) {
                match o {
                    Outcome::Inserted => answer.accepted += 1,
                    Outcome::Duplicate => answer.duplicates += 1,
                    Outcome::Conflict => answer.rejected.push(Rejected {
                        index,
                        reason: Reason::Conflict,
                    }),
                }
            }
            answer.rejected.sort_by_key(|r| r.index);
        }
        self.count(&answer);
        Ok(answer)
    }

    fn too_large_body(&self) -> ApiError {
        ApiError::TooLarge(format!("request body over {} bytes", self.0.max_body_bytes))
    }

    /// A failed authentication from `peer`: counted, and answered late once the address is over
    /// its failure budget.
    async fn auth_failed(&self, peer: IpAddr, e: ApiError) -> ApiError {
        let wait = self.0.throttle.failed(peer, TRANSPORT);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        e
    }

    /// Read the whole body under its deadline, holding budget for every byte until the caller
    /// drops the [`Held`] (once the signature holds).
    async fn read_body(&self, mut body: Body, peer: IpAddr, declared: Option<u64>) -> Result<(Bytes, Held), ApiError> {
        let s = &self.0;
        let expected = declared.unwrap_or(s.max_body_bytes as u64);
        let allowed = s.body_timeout + Duration::from_secs_f64(expected as f64 / s.min_body_bytes_per_second as f64);
        let deadline = tokio::time::Instant::now() + allowed;
        let mut held = s.unverified.holding(peer);
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(ApiError::Malformed("the request body could not be read".into())),
                Err(_) => {
                    s.metrics
                        .connections_closed
                        .with_label_values(&[TRANSPORT, "body_timeout"])
                        .inc();
                    return Err(ApiError::BodyTimeout(allowed));
                }
            };
            let Ok(data) = frame.into_data() else { continue };
            len += data.len();
            if len > s.max_body_bytes {
                return Err(self.too_large_body());
            }
            if held.grow(data.len()).is_err() {
                return Err(ApiError::Unavailable(
                    "too many request bodies are being received; retry later",
                ));
            }
            chunks.push(data);
        }
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().expect("one chunk"),
            _ => {
                let mut all = Vec::with_capacity(len);
                for c in &chunks {
                    all.extend_from_slice(c);
                }
                Bytes::from(all)
            }
        };
        Ok((body, held))
    }

    fn count(&self, a: &Answer) {
        let m = &self.0.metrics;
        m.records.with_label_values(&[TRANSPORT, "accepted"]).inc_by(a.accepted);
        m.records
            .with_label_values(&[TRANSPORT, "duplicate"])
            .inc_by(a.duplicates);
        m.records
            .with_label_values(&[TRANSPORT, "rejected"])
            .inc_by(a.rejected.len() as u64);
        for r in &a.rejected {
            m.rejections.with_label_values(&[TRANSPORT, r.reason.as_str()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn media_types() {
        assert_eq!(body_kind(&ct("application/json")).unwrap(), BodyKind::Json);
        assert_eq!(
            body_kind(&ct("Application/JSON; charset=UTF-8")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            body_kind(&ct("application/json; charset=\"utf-8\"; q=1")).unwrap(),
            BodyKind::Json
        );
        assert_eq!(body_kind(&ct("application/x-ndjson")).unwrap(), BodyKind::Ndjson);
        assert!(matches!(
            body_kind(&ct("application/json; charset=latin1")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            body_kind(&ct("text/plain")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            body_kind(&HeaderMap::new()),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
