//! One device's connection to the MQTT endpoint, from CONNECT to close.
//!
//! ```text
//! CONNECT (within the handshake timeout, at most 64 KiB) ─> login: device id + derived password
//!   ─> CONNACK (MQTT 5: Receive Maximum, Maximum QoS 1, Maximum Packet Size)
//! PUBLISH QoS 1 on devices/<own id>/telemetry ─> take (verify, queue; waits while the store
//!   refuses work) ─> in flight, in arrival order ─> commit ─> rejections (if subscribed) ─> PUBACK
//! ```
//!
//! The connection holds at most `receive_maximum` messages (and `max_pending_bytes` of payload)
//! in flight; past that it stops reading, so a slow store holds the device back through TCP
//! without trackgate buffering for it. PUBACKs leave in the order the PUBLISHes came, as MQTT
//! requires; a message that cannot be committed is never acknowledged, and the connection is
//! closed so that the device sends it again on its next one. Nothing outlives the connection:
//! there is no session state to lose, and any node can serve the device next time.
//!
//! A message's rejections go to every connection of the device on this node that subscribed to
//! its rejections topic (a device's firmware, or `mosquitto_sub` beside `mosquitto_pub`), the
//! publishing connection first and before its PUBACK. They are not kept for a device that is not
//! connected, and a subscriber on another node does not see them.

use super::codec::{DisconnectReason, Incoming, Outgoing, Qos, ReadError, Refusal, Version, connect_level};
use super::{Answer, NotTaken, take};
use crate::keys::KeyCache;
use crate::listener::Stream;
use crate::metrics::Metrics;
use crate::pipeline::Queue;
use crate::throttle::FailureThrottle;
use crate::verify::Verifier;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trackgate_proto::sign::verify_mqtt_password;
use trackgate_proto::{ids, topic};
use trackgate_store::Kind;

/// A CONNECT larger than this is refused: nothing unauthenticated gets more.
const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// Room made in a connection's input buffer before a read: one TLS record's plaintext once the
/// previous read filled what it had, else a little.
const BUSY_READ_BYTES: usize = 16 * 1024;
const IDLE_READ_BYTES: usize = 1024;

/// Rejection messages waiting for one subscribed connection; past it they are dropped for that
/// connection (it is not reading).
const SUBSCRIBER_BACKLOG: usize = 64;

/// How the endpoint treats its devices.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// CONNECT must arrive within this after the TLS handshake.
    pub connect_timeout: Duration,
    /// A device that asked for no keep-alive is closed after this long without a packet.
    pub idle_timeout: Duration,
    /// Messages a device may have in flight (unacknowledged); MQTT 5 is told so.
    pub receive_maximum: u16,
    /// Payload bytes of the messages in flight, at most.
    pub max_pending_bytes: usize,
    pub max_packet_bytes: usize,
    /// QoS 0 publishes are taken (and may be lost); otherwise they close the connection.
    pub accept_qos0: bool,
    pub publish_rejections: bool,
}

/// What every session shares.
pub struct Shared {
    pub keys: Arc<KeyCache>,
    pub verifier: Arc<Verifier>,
    pub queue: Queue,
    pub metrics: Metrics,
    pub throttle: Arc<FailureThrottle<IpAddr>>,
    pub settings: SessionSettings,
    pub subscribers: Subscribers,
}

/// The connections on this node subscribed to each device's rejections.
#[derive(Default)]
pub struct Subscribers {
    by_device: DashMap<String, Vec<(u64, mpsc::Sender<Bytes>)>>,
    next_id: AtomicU64,
}

impl Subscribers {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn add(&self, device: &str, id: u64, tx: mpsc::Sender<Bytes>) {
        let mut list = self.by_device.entry(device.to_owned()).or_default();
        if !list.iter().any(|(i, _)| *i == id) {
            list.push((id, tx));
        }
    }

    fn remove(&self, device: &str, id: u64) {
        self.by_device.remove_if_mut(device, |_, list| {
            list.retain(|(i, _)| *i != id);
            list.is_empty()
        });
    }

    /// Hand `payload` to the device's other subscribed connections.
    fn send(&self, device: &str, except: u64, payload: &Bytes) {
        if let Some(list) = self.by_device.get(device) {
            for (id, tx) in list.iter() {
                if *id != except {
                    let _ = tx.try_send(payload.clone());
                }
            }
        }
    }
}

/// A message in flight: its packet id, and what became of it.
struct Settled {
    pkid: u16,
    /// Published under a topic the device may not use: acknowledged, not taken.
    denied: bool,
    bytes: usize,
    received: std::time::Instant,
    outcome: Result<Option<Answer>, ()>,
}

type InFlight = FuturesOrdered<Pin<Box<dyn Future<Output = Settled> + Send>>>;

struct Conn {
    rd: ReadHalf<Box<dyn Stream>>,
    wr: WriteHalf<Box<dyn Stream>>,
    inbuf: BytesMut,
    /// The last read filled the room it had.
    busy: bool,
    out: BytesMut,
}

impl Conn {
    /// Read more bytes; `false` when the peer closed or the read failed.
    async fn fill(&mut self) -> bool {
        // A device that filled the room it had gets room for a whole TLS record, so that a busy
        // one's packets come in few reads; an idle one holds little.
        self.inbuf
            .reserve(if self.busy { BUSY_READ_BYTES } else { IDLE_READ_BYTES });
        let room = self.inbuf.capacity() - self.inbuf.len();
        match self.rd.read_buf(&mut self.inbuf).await {
            Ok(n) if n > 0 => {
                self.busy = n == room;
                true
            }
            _ => false,
        }
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.wr.write_all(&self.out).await.is_ok() && self.wr.flush().await.is_ok();
        self.out.clear();
        ok
    }

    async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.wr.shutdown().await;
    }
}

/// Serve one connection until the device leaves, breaks the protocol, or `stop` is cancelled.
pub async fn run(io: Box<dyn Stream>, peer: SocketAddr, shared: Arc<Shared>, stop: CancellationToken) {
    let (rd, wr) = tokio::io::split(io);
    let mut conn = Conn {
        rd,
        wr,
        inbuf: BytesMut::new(),
        busy: false,
        out: BytesMut::new(),
    };
    let deadline = Instant::now() + shared.settings.connect_timeout;
    let Some((version, device, keep_alive)) = login(&mut conn, peer, &shared, deadline).await else {
        conn.close().await;
        return;
    };
    version.write(
        Outgoing::ConnAck {
            receive_max: shared.settings.receive_maximum,
            max_packet: u32::try_from(shared.settings.max_packet_bytes).unwrap_or(u32::MAX),
        },
        &mut conn.out,
    );
    if !conn.flush().await {
        return;
    }
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BACKLOG);
    let reason = Session {
        id: shared.subscribers.id(),
        tx,
        version,
        telemetry: topic::telemetry(&device),
        rejections: topic::rejections(&device),
        device,
        subscribed: false,
        next_pkid: 0,
        received: shared.metrics.mqtt_messages.with_label_values(&["received"]),
        acknowledged: shared.metrics.mqtt_messages.with_label_values(&["acknowledged"]),
        keep_alive: if keep_alive == 0 {
            shared.settings.idle_timeout
        } else {
            // MQTT: the server closes a connection silent for one and a half keep-alives.
            Duration::from_millis(u64::from(keep_alive) * 1500)
        },
        shared,
    }
    .serve(&mut conn, rx, &stop)
    .await;
    if let Some(reason) = reason {
        version.write(Outgoing::Disconnect(reason), &mut conn.out);
    }
    conn.close().await;
}

/// Read the CONNECT and authenticate it; the CONNACK refusal is written here.
async fn login(
    conn: &mut Conn,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
) -> Option<(Version, String, u16)> {
    let version = loop {
        match connect_level(&conn.inbuf) {
            Ok(Some(4)) => break Version::V311,
            Ok(Some(5)) => break Version::V5,
            Ok(Some(_)) => {
                Version::V311.write(Outgoing::ConnRefused(Refusal::UnsupportedVersion), &mut conn.out);
                return None;
            }
            Ok(None) if conn.inbuf.len() < 16 => {}
            _ => return None,
        }
        if !matches!(tokio::time::timeout_at(deadline, conn.fill()).await, Ok(true)) {
            return None;
        }
    };
    let connect = loop {
        match version.read(&mut conn.inbuf, MAX_CONNECT_BYTES) {
            Ok(p) => break p,
            Err(ReadError::Incomplete) => {
                if !matches!(tokio::time::timeout_at(deadline, conn.fill()).await, Ok(true)) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    };
    let Incoming::Connect {
        client_id,
        login,
        keep_alive,
    } = connect
    else {
        return None;
    };
    let (user, password) = login.unwrap_or_default();
    match authenticate(&shared.keys, &user, &password).await {
        Ok(true) => {
            tracing::debug!(%peer, device = %user, client_id = %client_id, ?version, "MQTT device connected");
            Some((version, user, keep_alive))
        }
        Ok(false) => {
            let wait = shared.throttle.failed(peer.ip(), super::TRANSPORT);
            tokio::time::sleep(wait).await;
            tracing::debug!(%peer, "MQTT login refused");
            version.write(Outgoing::ConnRefused(Refusal::BadCredentials), &mut conn.out);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "MQTT login refused: key store unavailable");
            version.write(Outgoing::ConnRefused(Refusal::Unavailable), &mut conn.out);
            None
        }
    }
}

/// Username = an enabled device's id, password = the credential derived from any of its active
/// keys (PROTOCOL.md §3), compared in constant time.
async fn authenticate(keys: &KeyCache, user: &str, password: &str) -> Result<bool, trackgate_store::StoreError> {
    if !ids::is_valid_id(user) {
        return Ok(false);
    }
    Ok(match keys.get(user).await? {
        Some(p) if p.kind == Kind::Device && p.enabled => p
            .keys
            .iter()
            .any(|k| verify_mqtt_password(&k.secret, user, password.as_bytes())),
        _ => false,
    })
}

struct Session {
    /// This connection, among the device's subscribers.
    id: u64,
    /// Where other connections send this one the rejections of their messages.
    tx: mpsc::Sender<Bytes>,
    version: Version,
    device: String,
    telemetry: String,
    rejections: String,
    subscribed: bool,
    next_pkid: u16,
    /// `mqtt_messages` counters taken for every message, looked up once.
    received: prometheus::IntCounter,
    acknowledged: prometheus::IntCounter,
    keep_alive: Duration,
    shared: Arc<Shared>,
}

impl Session {
    /// The session loop; the MQTT 5 DISCONNECT reason to close with, if any.
    async fn serve(
        mut self,
        conn: &mut Conn,
        mut rx: mpsc::Receiver<Bytes>,
        stop: &CancellationToken,
    ) -> Option<DisconnectReason> {
        let reason = self.serve_packets(conn, &mut rx, stop).await;
        self.shared.subscribers.remove(&self.device, self.id);
        reason
    }

    async fn serve_packets(
        &mut self,
        conn: &mut Conn,
        rx: &mut mpsc::Receiver<Bytes>,
        stop: &CancellationToken,
    ) -> Option<DisconnectReason> {
        let mut in_flight: InFlight = FuturesOrdered::new();
        let mut pending_bytes = 0usize;
        let mut last_heard = Instant::now();
        let mut stopping = false;
        loop {
            // Whole packets already buffered, while there is room in flight.
            while !stopping && self.has_room(&in_flight, pending_bytes) {
                match self
                    .version
                    .read(&mut conn.inbuf, self.shared.settings.max_packet_bytes)
                {
                    Ok(packet) => {
                        last_heard = Instant::now();
                        match self.handle(packet, conn, &mut in_flight, &mut pending_bytes, stop) {
                            Step::Go => {}
                            Step::Leave => return None,
                            Step::Close(reason) => return reason,
                        }
                    }
                    Err(ReadError::Incomplete) => break,
                    Err(ReadError::TooLarge) => {
                        self.shared
                            .metrics
                            .mqtt_messages
                            .with_label_values(&["too_large"])
                            .inc();
                        return Some(DisconnectReason::PacketTooLarge);
                    }
                    Err(ReadError::Malformed(e)) => {
                        tracing::debug!(device = %self.device, error = %e, "malformed MQTT packet");
                        return Some(DisconnectReason::Protocol);
                    }
                }
            }
            if !conn.flush().await {
                return None;
            }
            if stopping && in_flight.is_empty() {
                return Some(DisconnectReason::ShuttingDown);
            }
            let can_read = !stopping && self.has_room(&in_flight, pending_bytes);
            tokio::select! {
                biased;
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                    // Every message of the same commit is settled by now: answer them all before
                    // the one write that carries their PUBACKs.
                    let mut next = Some(settled);
                    while let Some(settled) = next {
                        pending_bytes -= settled.bytes;
                        self.shared.metrics.mqtt_unacked.dec();
                        if !self.settle(settled, conn) {
                            // Not committed: nothing after it may be acknowledged either. The
                            // device sends everything unacknowledged again on its next connection.
                            self.shared.metrics.mqtt_unacked.sub(in_flight.len() as i64);
                            return Some(if stopping { DisconnectReason::ShuttingDown } else { DisconnectReason::Unavailable });
                        }
                        next = in_flight.next().now_or_never().flatten();
                    }
                }
                Some(payload) = rx.recv() => self.publish_rejections(payload, conn),
                filled = conn.fill(), if can_read => {
                    if !filled {
                        return None;
                    }
                    last_heard = Instant::now();
                }
                _ = tokio::time::sleep_until(last_heard + self.keep_alive), if can_read => {
                    self.shared.metrics.connections_closed.with_label_values(&["mqtt", "idle"]).inc();
                    return Some(DisconnectReason::KeepAliveTimeout);
                }
                _ = stop.cancelled(), if !stopping => stopping = true,
            }
        }
    }

    fn has_room(&self, in_flight: &InFlight, pending_bytes: usize) -> bool {
        in_flight.len() < usize::from(self.shared.settings.receive_maximum)
            && pending_bytes < self.shared.settings.max_pending_bytes
    }

    fn handle(
        &mut self,
        packet: Incoming,
        conn: &mut Conn,
        in_flight: &mut InFlight,
        pending_bytes: &mut usize,
        stop: &CancellationToken,
    ) -> Step {
        let metrics = &self.shared.metrics;
        match packet {
            Incoming::Publish {
                topic,
                qos,
                pkid,
                payload,
            } => {
                self.received.inc();
                match qos {
                    Qos::AtLeast => {}
                    Qos::AtMost if self.shared.settings.accept_qos0 => {}
                    _ => {
                        metrics.mqtt_messages.with_label_values(&["qos_refused"]).inc();
                        return Step::Close(Some(DisconnectReason::QosNotSupported));
                    }
                }
                let received = std::time::Instant::now();
                let bytes = payload.len();
                metrics.mqtt_unacked.inc();
                *pending_bytes += bytes;
                if topic != self.telemetry {
                    // Another device's topic, or none of ours: acknowledged in its turn and
                    // dropped (MQTT 5 says Not authorized), as a broker's ACL would.
                    metrics.mqtt_messages.with_label_values(&["denied"]).inc();
                    tracing::debug!(device = %self.device, topic = %topic, "publish denied");
                    in_flight.push_back(Box::pin(async move {
                        Settled {
                            pkid,
                            denied: true,
                            bytes,
                            received,
                            outcome: Ok(None),
                        }
                    }));
                    return Step::Go;
                }
                let fut = taken(self.shared.clone(), self.device.clone(), payload, stop.clone());
                let acknowledge = qos == Qos::AtLeast;
                in_flight.push_back(Box::pin(async move {
                    let outcome = fut.await;
                    Settled {
                        // QoS 0 has no packet id and no PUBACK.
                        pkid: if acknowledge { pkid } else { 0 },
                        denied: false,
                        bytes,
                        received,
                        outcome: outcome.map(Some),
                    }
                }));
            }
            Incoming::Subscribe { pkid, filters } => {
                let granted: Vec<bool> = filters.iter().map(|f| *f == self.rejections).collect();
                if granted.iter().any(|g| *g) {
                    self.subscribed = true;
                    self.shared.subscribers.add(&self.device, self.id, self.tx.clone());
                }
                self.version.write(Outgoing::SubAck { pkid, granted }, &mut conn.out);
            }
            Incoming::Unsubscribe { pkid, filters } => {
                if filters.contains(&self.rejections) {
                    self.subscribed = false;
                    self.shared.subscribers.remove(&self.device, self.id);
                }
                self.version.write(
                    Outgoing::UnsubAck {
                        pkid,
                        count: filters.len(),
                    },
                    &mut conn.out,
                );
            }
            Incoming::PingReq => self.version.write(Outgoing::PingResp, &mut conn.out),
            Incoming::PubAck => {}
            Incoming::Disconnect => return Step::Leave,
            Incoming::Connect { .. } => return Step::Close(Some(DisconnectReason::Protocol)),
            Incoming::Unsupported(what) => {
                tracing::debug!(device = %self.device, what, "unsupported MQTT packet");
                return Step::Close(Some(DisconnectReason::Protocol));
            }
        }
        Step::Go
    }

    /// Answer a settled message; `false` when it was not committed.
    fn settle(&mut self, settled: Settled, conn: &mut Conn) -> bool {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let answer = match settled.outcome {
            Err(()) => {
                metrics.mqtt_messages.with_label_values(&["not_committed"]).inc();
                return false;
            }
            Ok(answer) => answer,
        };
        if let Some(answer) = answer
            && self.shared.settings.publish_rejections
            && !answer.rejected.is_empty()
        {
            let payload = Bytes::from(serde_json::to_vec(&answer).expect("serialisable"));
            self.shared.subscribers.send(&self.device, self.id, &payload);
            if self.subscribed {
                self.publish_rejections(payload, conn);
            }
        }
        if settled.pkid != 0 {
            self.version.write(
                Outgoing::PubAck {
                    pkid: settled.pkid,
                    denied: settled.denied,
                },
                &mut conn.out,
            );
            if !settled.denied {
                self.acknowledged.inc();
                metrics
                    .mqtt_ack_seconds
                    .observe(settled.received.elapsed().as_secs_f64());
            }
        }
        true
    }
}

impl Session {
    /// A rejections message to this connection (QoS 1; the device's PUBACK is not awaited).
    fn publish_rejections(&mut self, payload: Bytes, conn: &mut Conn) {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.version.write(
            Outgoing::Publish {
                topic: self.rejections.clone(),
                pkid: self.next_pkid,
                payload,
            },
            &mut conn.out,
        );
    }
}

/// What the session does after a packet.
enum Step {
    Go,
    /// The device said DISCONNECT.
    Leave,
    /// Close, with this MQTT 5 reason.
    Close(Option<DisconnectReason>),
}

/// Take a message in and wait for its commit: its answer, or `Err` when it was not committed.
async fn taken(shared: Arc<Shared>, device: String, payload: Bytes, stop: CancellationToken) -> Result<Answer, ()> {
    let s = &shared;
    match take(&payload, Some(&device), &s.verifier, &s.queue, &s.metrics, &stop).await {
        Ok(t) => {
            let mut answer = t.answer;
            if let Some((ack, row_index)) = t.rows {
                let outcomes = ack.await.map_err(|_| ())?.map_err(|_| ())?;
                answer.settle(outcomes, row_index, &s.metrics);
            }
            Ok(answer)
        }
        Err(NotTaken::KeyStore(e)) => {
            tracing::error!(error = %e, "device lookup failed; the message is not acknowledged");
            Err(())
        }
        Err(NotTaken::Stopping) => Err(()),
    }
}
