//! The listeners: accept TCP, admit the connection under the caps of [`limits`], complete the TLS
//! handshake within a deadline (HTTPS), serve HTTP/1.1 or HTTP/2 (by ALPN) with an axum router,
//! and close connections that sit idle ([`idle`]). The ops listener is served the same way
//! without TLS. On shutdown a listener stops accepting and lets open connections finish their
//! requests.
//!
//! Every resource a client holds before it has authenticated is bounded here or in the ingest
//! handler: connections (total and per address), time (handshake and header deadline, idle
//! timeout, body deadline) and bytes (unverified body bytes, [`limits::Capped`]).

pub mod idle;
pub mod limits;

use crate::config::ConnectionLimits;
use crate::metrics::Metrics;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use idle::Activity;
use limits::Capped;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After an idle connection is asked to close (HTTP/2: GOAWAY), it is dropped after this.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// File descriptors kept for everything that is not a client connection: the database, the
/// listeners, the broker's connections, logs.
const RESERVED_FDS: u64 = 256;

/// Raise the soft file-descriptor limit to the hard one, and keep `max_connections` under what
/// is left after `others` (descriptors other listeners may hold), so that accepting never fails
/// for want of descriptors: a client over the cap is closed at once instead.
pub fn fit_to_descriptors(limits: &mut ConnectionLimits, others: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let got = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (got.current, got.maximum)
        && cur < max
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        )
        .is_err()
    {
        tracing::warn!(soft = cur, hard = max, "cannot raise the file-descriptor limit");
    }
    let Some(available) = getrlimit(Resource::Nofile).current else {
        return;
    };
    let fit = available.saturating_sub(RESERVED_FDS + others as u64) as usize;
    if limits.max_connections > fit {
        tracing::warn!(
            configured = limits.max_connections,
            fd_limit = available,
            using = fit,
            "`http.max_connections` lowered to fit the file-descriptor limit"
        );
        limits.max_connections = fit.max(1);
        limits.max_connections_per_address = limits.max_connections_per_address.min(limits.max_connections);
    }
}

/// The ops listener (loopback, for Prometheus and health checks) holds at most this many
/// connections, with the HTTPS listener's timeouts.
pub const OPS_MAX_CONNECTIONS: usize = 256;

/// One listener's name (for logs and metrics), its limits and its TLS, if any.
#[derive(Clone)]
pub struct Listener {
    pub name: &'static str,
    pub limits: ConnectionLimits,
    pub tls: Option<Arc<ServerConfig>>,
    pub metrics: Metrics,
}

/// A client connection after admission (and its TLS handshake, where the listener has TLS).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Accept connections until `stop` is cancelled, admit each under the listener's caps, complete
/// its TLS handshake within the handshake timeout, and hand it to `handle` on a task of its own.
/// Returns once every connection's task has ended. Shared by the HTTPS, ops and MQTT listeners.
pub async fn accept<H, F>(listener: TcpListener, how: Listener, stop: CancellationToken, handle: H)
where
    H: Fn(Box<dyn Stream>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = how.tls.clone().map(TlsAcceptor::from);
    let connections = Capped::new(how.limits.max_connections, how.limits.max_connections_per_address);
    let open = how.metrics.connections_open.with_label_values(&[how.name]);
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning, and say
                    // so once per backoff step rather than per attempt.
                    tracing::warn!(listener = how.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let held = match connections.take(peer.ip(), 1) {
            Ok(h) => h,
            Err(over) => {
                // Closed before any byte is read: the cheapest answer there is.
                how.metrics
                    .connections_closed
                    .with_label_values(&[how.name, over.as_str()])
                    .inc();
                tracing::debug!(listener = how.name, %peer, limit = over.as_str(), "connection refused");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, how, open, handle) = (acceptor.clone(), how.clone(), open.clone(), handle.clone());
        tracker.spawn(async move {
            let _held = held;
            open.inc();
            match acceptor {
                None => handle(Box::new(tcp), peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(how.limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => handle(Box::new(tls), peer).await,
                        Ok(Err(e)) => tracing::debug!(listener = how.name, %peer, error = %e, "TLS handshake failed"),
                        Err(_) => {
                            how.metrics
                                .connections_closed
                                .with_label_values(&[how.name, "handshake_timeout"])
                                .inc();
                            tracing::debug!(listener = how.name, %peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            open.dec();
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Serve HTTP/1.1 and HTTP/2 with `app` until `stop` is cancelled, then wait for open connections
/// to finish their requests.
pub async fn serve(listener: TcpListener, how: Listener, app: Router, stop: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its request headers is dropped rather than kept forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(how.limits.handshake_timeout);
    builder.http2().timer(TokioTimer::new());
    let handler_how = how.clone();
    let handler_stop = stop.clone();
    accept(listener, how, stop, move |io, peer| {
        let activity = Activity::new();
        let service = TowerToHyperService::new(idle::PerConnection {
            router: app.clone(),
            activity: activity.clone(),
            peer,
        });
        let (builder, how, stop) = (builder.clone(), handler_how.clone(), handler_stop.clone());
        async move { serve_connection(io, &builder, service, &activity, &how, &stop).await }
    })
    .await;
}

/// Serve one connection until it ends, it has been idle for the idle timeout, or `stop` asks it
/// to finish its requests and close.
async fn serve_connection<I, S>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    service: TowerToHyperService<S>,
    activity: &Activity,
    how: &Listener,
    stop: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<axum::http::Request<hyper::body::Incoming>, Response = axum::response::Response>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    // Set when an idle connection was asked to close: it is dropped at this instant.
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(listener = how.name, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                // Shutdown: finish the requests in flight (they wait for their commit), then close.
                // The daemon's grace period bounds how long that may take.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(how.limits.idle_timeout), if !stopping && drop_at.is_none() => {
                how.metrics.connections_closed.with_label_values(&[how.name, "idle"]).inc();
                conn.as_mut().graceful_shutdown();
                drop_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = tokio::time::sleep_until(drop_at.unwrap_or_else(tokio::time::Instant::now)), if drop_at.is_some() => {
                return;
            }
        }
    }
}
