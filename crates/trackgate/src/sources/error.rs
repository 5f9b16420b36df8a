//! The HTTPS error responses of PROTOCOL.md §4: `{"error": ..., "detail": ...}` with the status
//! the contract gives. Details say what the client did wrong; they never carry internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

#[derive(Debug)]
pub enum ApiError {
    UnsupportedMediaType(&'static str),
    TooLarge(String),
    Stale,
    Unauthorized,
    RateLimited(Duration),
    Malformed(String),
    /// The body did not arrive within the time allowed for it.
    BodyTimeout(Duration),
    /// Overloaded, shutting down, or the database is unavailable: nothing was stored.
    Unavailable(&'static str),
    /// Not admitted to the queue (full, shutting down, store failing): nothing was stored.
    Refused(crate::pipeline::Refused),
    NotFound,
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Stale | ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (error, detail, retry_after): (&str, String, Option<u64>) = match self {
            ApiError::UnsupportedMediaType(d) => ("unsupported_media_type", d.into(), None),
            ApiError::TooLarge(d) => ("too_large", d, None),
            ApiError::Stale => (
                "stale_request",
                "X-TG-Timestamp is more than 300 s from the server's clock".into(),
                None,
            ),
            ApiError::Unauthorized => (
                "unauthorized",
                "the request is not signed by an active key".into(),
                None,
            ),
            ApiError::RateLimited(wait) => (
                "rate_limited",
                "this key is over its request rate".into(),
                Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ),
            ApiError::Malformed(d) => ("malformed", d, None),
            ApiError::BodyTimeout(allowed) => (
                "timeout",
                format!("the request body did not arrive within {} s", allowed.as_secs()),
                None,
            ),
            ApiError::Unavailable(d) => ("unavailable", d.into(), Some(1)),
            ApiError::Refused(r) => {
                // A failing store takes seconds to come back; a full queue drains in milliseconds.
                let wait = if matches!(r, crate::pipeline::Refused::Store(_)) {
                    5
                } else {
                    1
                };
                ("unavailable", r.to_string(), Some(wait))
            }
            ApiError::NotFound => ("not_found", "no such endpoint".into(), None),
            ApiError::MethodNotAllowed => ("method_not_allowed", "use POST".into(), None),
        };
        let body = serde_json::json!({ "error": error, "detail": detail });
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: this connection carries nothing more.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
