//! The operations listener: `/metrics` (Prometheus text format), `/healthz` (the process is up)
//! and `/readyz` (the database answers and new work is admitted: not stalled, not failing, not
//! under the disk watermark). Plain HTTP, so it binds to loopback by default.

use crate::metrics::Metrics;
use crate::pipeline::StoreHealth;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use trackgate_store::Store;

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    store: Store,
    health: Arc<StoreHealth>,
}

pub fn router(metrics: Metrics, store: Store, health: Arc<StoreHealth>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ops { metrics, store, health })
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        ops.metrics.render(),
    )
}

async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    if let Some(r) = ops.health.refusal() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", r.detail()));
    }
    match ops.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database unreachable\n".to_owned(),
            )
        }
    }
}
