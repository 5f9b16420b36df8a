//! The operators' API errors: `{"error": ..., "detail": ...}` with a status that says what to do.

use crate::auth::AuthError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use trackgate_store::StoreError;

#[derive(Debug)]
pub enum ApiFailure {
    /// 401: no token, or a token that does not verify.
    Unauthorized(AuthError),
    /// 401 with RFC 9470's challenge: a change that needs a sign-in within this many seconds.
    StaleSignIn(u64),
    /// 403: signed in, but not allowed to change this.
    Forbidden(String),
    /// 404: does not exist, or is not visible to the caller (the two are not told apart).
    NotFound(String),
    /// 400: a parameter or field is wrong; the detail names it.
    BadRequest(String),
    /// 409: already exists.
    Conflict(String),
    /// 503: the database is unavailable; nothing was changed.
    Unavailable,
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } | StoreError::NoSuchKey { .. } => ApiFailure::NotFound(e.to_string()),
            StoreError::Exists { .. } | StoreError::IdTaken(_) | StoreError::KeyExists { .. } => {
                ApiFailure::Conflict(e.to_string())
            }
            StoreError::InvalidId { .. }
            | StoreError::InvalidText { .. }
            | StoreError::OutOfRange { .. }
            | StoreError::InvalidGeofence(_)
            | StoreError::InvalidLimits(_) => ApiFailure::BadRequest(e.to_string()),
            other => {
                tracing::error!(error = %other, "operators' API: database error");
                ApiFailure::Unavailable
            }
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let challenge = match &self {
            ApiFailure::StaleSignIn(secs) => HeaderValue::from_str(&format!(
                "Bearer error=\"insufficient_user_authentication\", \
                 error_description=\"a more recent sign-in is required\", max_age={secs}"
            ))
            .ok(),
            _ => Some(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        };
        let (status, error, detail) = match self {
            ApiFailure::Unauthorized(e) => (StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
            ApiFailure::StaleSignIn(secs) => (
                StatusCode::UNAUTHORIZED,
                "insufficient_user_authentication",
                format!(
                    "this change needs a sign-in within the last {secs} seconds (the token's auth_time is older, or \
                     absent): sign in again at the provider"
                ),
            ),
            ApiFailure::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d),
            ApiFailure::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", d),
            ApiFailure::BadRequest(d) => (StatusCode::BAD_REQUEST, "bad_request", d),
            ApiFailure::Conflict(d) => (StatusCode::CONFLICT, "conflict", d),
            ApiFailure::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; try again".to_owned(),
            ),
        };
        let mut resp = (
            status,
            axum::Json(serde_json::json!({ "error": error, "detail": detail })),
        )
            .into_response();
        let h = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED
            && let Some(c) = challenge
        {
            h.insert(header::WWW_AUTHENTICATE, c);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
