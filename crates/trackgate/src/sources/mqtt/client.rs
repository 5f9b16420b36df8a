//! MQTT through an external broker (PROTOCOL.md §3): trackgate consumes `devices/+/telemetry` as a client with a
//! persistent session and QoS 1, and sends a message's PUBACK only after every record in it is
//! committed or rejected, in the order the messages arrived.
//!
//! Three tasks. A slow database holds PUBACKs back, and the broker stops sending once its
//! in-flight window for trackgate is full (Mosquitto's `max_inflight_messages`), so the backlog
//! stays at the broker. The poller never waits for the other two: rumqttc sends PUBACKs from the
//! same event loop that receives messages, so a poller blocked on a full channel would stop its
//! own acknowledgements and deadlock (seen in the kill -9 test). The channels are therefore
//! unbounded; what they hold is bounded by the broker's window, and shown by
//! `trackgate_mqtt_unacked_messages`.
//!
//! ```text
//! poller (rumqttc event loop) ──publish──> processor: verify, queue.submit (waits for room)
//!                                              └──(message, ack)──> acker: await commit, PUBACK
//! ```
//!
//! After a reconnect the broker redelivers every unacknowledged message under its old packet id,
//! so acks still pending from the previous connection are dropped, never sent: a late PUBACK could
//! otherwise acknowledge a newer message that reuses the id. The redelivered copies are committed
//! as duplicates and acknowledged then.

use super::{Answer, NotTaken, take};
use crate::metrics::Metrics;
use crate::pipeline::{Ack, Queue};
use crate::verify::Verifier;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use trackgate_proto::topic;

/// How trackgate connects to its broker.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
    /// `devices/+/telemetry`, or `$share/<group>/devices/+/telemetry` for several nodes.
    pub filter: String,
    pub publish_rejections: bool,
    pub keep_alive: Duration,
    /// Messages between the event loop and the acker; the broker's own in-flight limit usually
    /// binds first.
    pub max_in_flight: usize,
    pub max_packet_bytes: usize,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// A message waiting for its commit.
struct Pending {
    generation: u64,
    publish: Publish,
    received: Instant,
    device: Option<String>,
    answer: Answer,
    rows: Option<(Ack, Vec<u32>)>,
    /// Could not be verified (the key store was unreachable): handled like a failed commit.
    failed: bool,
}

/// Run the MQTT source until `stop` is cancelled; returns once every message taken in has been
/// acknowledged or left for redelivery.
pub async fn run(
    settings: MqttSettings,
    verifier: Arc<Verifier>,
    queue: Queue,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(settings.keep_alive)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(settings.tls.clone())));
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, settings.max_in_flight.max(10));
    let generation = Arc::new(AtomicU64::new(0));
    let (publish_tx, publish_rx) = mpsc::unbounded_channel();
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let acker_done = CancellationToken::new();
    let reconnect = Arc::new(Notify::new());

    let processor = tokio::spawn(process(
        publish_rx,
        pending_tx,
        verifier,
        queue,
        metrics.clone(),
        stop.clone(),
    ));
    let acker = tokio::spawn(acknowledge(
        pending_rx,
        client.clone(),
        generation.clone(),
        settings.publish_rejections,
        metrics.clone(),
        reconnect.clone(),
        acker_done.clone(),
    ));
    let channels = PollChannels {
        publish_tx,
        generation,
        reconnect,
        stop,
        acker_done,
    };
    let poller = poll(eventloop, client.clone(), settings.filter.clone(), channels, metrics);
    let _ = tokio::join!(poller, processor, acker);
}

/// What the poller shares with the other two tasks.
struct PollChannels {
    publish_tx: mpsc::UnboundedSender<(u64, Publish)>,
    /// Bumped on every connect; acks of an older generation are never sent.
    generation: Arc<AtomicU64>,
    /// The acker asks for a fresh connection when a message could not be committed, so the broker
    /// redelivers it.
    reconnect: Arc<Notify>,
    stop: CancellationToken,
    acker_done: CancellationToken,
}

/// Drive the connection: (re)connect with capped exponential backoff, subscribe on every
/// connect, hand publishes to the processor. Keeps polling after `stop` until the acker is done,
/// so the last PUBACKs go out, then disconnects.
async fn poll(mut eventloop: EventLoop, client: AsyncClient, filter: String, ch: PollChannels, metrics: Metrics) {
    let PollChannels {
        publish_tx,
        generation,
        reconnect,
        stop,
        acker_done,
    } = ch;
    let mut publish_tx = Some(publish_tx);
    let mut backoff = Duration::from_millis(100);
    let mut disconnecting = false;
    loop {
        if stop.is_cancelled() {
            // Take nothing more in; unacknowledged messages stay with the broker.
            publish_tx = None;
        }
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = acker_done.cancelled(), if !disconnecting => {
                disconnecting = true;
                let _ = client.try_disconnect();
                continue;
            }
            _ = reconnect.notified() => {
                // Drop the connection; the next poll reconnects and the broker redelivers.
                eventloop.clean();
                metrics.mqtt_connected.set(0);
                metrics.mqtt_reconnects.inc();
                continue;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let g = generation.fetch_add(1, Ordering::SeqCst) + 1;
                backoff = Duration::from_millis(100);
                metrics.mqtt_connected.set(1);
                tracing::info!(
                    generation = g,
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::error!(error = %e, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.mqtt_messages.with_label_values(&["received"]).inc();
                if let Some(tx) = &publish_tx {
                    metrics.mqtt_unacked.inc();
                    if tx.send((generation.load(Ordering::SeqCst), p)).is_err() {
                        metrics.mqtt_unacked.dec();
                    }
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if disconnecting => break,
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.set(0);
                if disconnecting || acker_done.is_cancelled() {
                    break;
                }
                metrics.mqtt_reconnects.inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = acker_done.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    metrics.mqtt_connected.set(0);
}

/// Verify each message's records and queue them, waiting for room (backpressure).
async fn process(
    mut publish_rx: mpsc::UnboundedReceiver<(u64, Publish)>,
    pending_tx: mpsc::UnboundedSender<Pending>,
    verifier: Arc<Verifier>,
    queue: Queue,
    metrics: Metrics,
    stop: CancellationToken,
) {
    loop {
        let (generation, publish) = tokio::select! {
            m = publish_rx.recv() => match m { Some(m) => m, None => break },
            _ = stop.cancelled() => break,
        };
        let received = Instant::now();
        let device = topic::telemetry_device(&publish.topic).map(str::to_owned);
        let taken = take(&publish.payload, device.as_deref(), &verifier, &queue, &metrics, &stop).await;
        let (answer, rows, failed) = match taken {
            Ok(t) => (t.answer, t.rows, false),
            Err(NotTaken::Stopping) => break,
            Err(NotTaken::KeyStore(e)) => {
                tracing::error!(error = %e, "device lookup failed; message left for redelivery");
                (Answer::default(), None, true)
            }
        };
        let pending = Pending {
            generation,
            publish,
            received,
            device,
            answer,
            rows,
            failed,
        };
        if pending_tx.send(pending).is_err() {
            break;
        }
    }
}

/// Await each message's commit in arrival order, then PUBACK it (unless it came on an earlier
/// connection) and tell the device what was rejected.
async fn acknowledge(
    mut pending_rx: mpsc::UnboundedReceiver<Pending>,
    client: AsyncClient,
    generation: Arc<AtomicU64>,
    publish_rejections: bool,
    metrics: Metrics,
    reconnect: Arc<Notify>,
    done: CancellationToken,
) {
    // After a failed commit nothing more of that connection is acknowledged, so PUBACKs stay in
    // arrival order; everything unacknowledged comes again on the next connection.
    let mut failed_generation = 0;
    while let Some(mut p) = pending_rx.recv().await {
        metrics.mqtt_unacked.dec();
        let committed = match p.rows.take() {
            _ if p.failed => None,
            Some((ack, row_index)) => match ack.await {
                Ok(Ok(outcomes)) => Some((outcomes, row_index)),
                _ => None,
            },
            None => Some((Vec::new(), Vec::new())),
        };
        match committed {
            Some((outcomes, row_index)) => p.answer.settle(outcomes, row_index, &metrics),
            // Not committed: no PUBACK, and a new connection so the broker redelivers it.
            None => {
                tracing::warn!(topic = %p.publish.topic, "message not committed; reconnecting for redelivery");
                if failed_generation < p.generation {
                    failed_generation = p.generation;
                    reconnect.notify_one();
                }
                continue;
            }
        }
        if p.generation != generation.load(Ordering::SeqCst) || p.generation <= failed_generation {
            metrics.mqtt_messages.with_label_values(&["redelivery_expected"]).inc();
            continue;
        }
        if client.ack(&p.publish).await.is_err() {
            continue;
        }
        metrics.mqtt_messages.with_label_values(&["acknowledged"]).inc();
        metrics.mqtt_ack_seconds.observe(p.received.elapsed().as_secs_f64());
        if publish_rejections
            && !p.answer.rejected.is_empty()
            && let Some(dev) = &p.device
        {
            let body = serde_json::to_vec(&p.answer).expect("serialisable");
            if let Err(e) = client
                .publish(topic::rejections(dev), QoS::AtLeastOnce, false, body)
                .await
            {
                tracing::warn!(error = %e, "cannot publish rejections");
            }
        }
    }
    done.cancel();
}
