//! trackgate's own MQTT endpoint: devices connect over TLS and publish to trackgate directly, on
//! the same verify -> queue -> commit path as HTTPS, and each PUBACK is the same promise as a 200.
//!
//! The listener admits connections under the same caps as HTTPS (total and per address,
//! handshake deadline; [`crate::listener::accept`]); each connection is one
//! [`session`](super::session). The endpoint keeps nothing beyond its connections, so several
//! nodes behind a TCP load balancer serve devices exactly as they serve HTTPS: a device that
//! reconnects to another node sends its unacknowledged messages there, and duplicates are absorbed
//! by `(device, seq)`.

use super::session::{self, Shared};
use crate::listener::{self, Listener};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use super::session::{SessionSettings, Shared as EndpointShared};

/// Serve devices until `stop` is cancelled; returns once every connection has answered what was
/// committed and closed.
pub async fn serve(listener: TcpListener, how: Listener, shared: Arc<Shared>, stop: CancellationToken) {
    let session_stop = stop.clone();
    listener::accept(listener, how, stop, move |io, peer| {
        session::run(io, peer, shared.clone(), session_stop.clone())
    })
    .await;
}
