//! Idle connections: a connection is idle while no request is in flight on it, from the moment its
//! last response body ended. Streams (server-sent events) count as in flight until they end, so a
//! live map is never cut; a keep-alive connection that sends nothing is.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// One connection's requests in flight and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request starts; it is in flight until the guard (carried by its response body) drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let wake = if self.in_flight.load(Ordering::Acquire) > 0 {
                Instant::now() + limit
            } else {
                let at = self.last() + limit;
                if Instant::now() >= at && self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                at
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request in flight; dropping it ends the request and restarts the idle clock.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as one connection serves it: every request carries the peer's address (the audit
/// log and the limits read it) and counts as in flight on the connection's [`Activity`] until its
/// response body ends. A thin wrapper rather than `Router::layer`, which would rebuild every route
/// for every connection.
#[derive(Clone)]
pub struct PerConnection {
    pub router: Router,
    pub activity: Arc<Activity>,
    pub peer: SocketAddr,
}

impl tower::Service<Request<Incoming>> for PerConnection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let guard = self.activity.start();
        let served = tower::ServiceExt::oneshot(self.router.clone(), req);
        Box::pin(async move {
            let resp = served.await?;
            Ok(resp.map(|body| Body::new(Tracked { body, _guard: guard })))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it is dropped.
struct Tracked {
    body: Body,
    _guard: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let a = Activity::new();
        let t0 = Instant::now();
        let req = a.start();
        let idle = {
            let a = a.clone();
            tokio::spawn(async move {
                a.idle_for(Duration::from_secs(10)).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!idle.is_finished(), "a request in flight is never idle");
        drop(req);
        let at = idle.await.unwrap();
        assert!(at >= t0 + Duration::from_secs(35), "{:?}", at - t0);
        assert!(at < t0 + Duration::from_secs(36), "{:?}", at - t0);
    }
}
