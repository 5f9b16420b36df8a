//! Devices over MQTT: each publishes over its own TLS connection at QoS 1, logging in with the
//! credentials of PROTOCOL.md §3, and listens on its rejections topic. A live record is one
//! message; a backlog goes as one array. Latency is from the publish leaving to its PUBACK.
//!
//! A connection only ever carries its own device (the broker lets a device publish under its own
//! topic only), so a fleet larger than one machine's connections is multiplexed in time:
//! with `--connections N` below the fleet size, at most N devices are connected at once. A device
//! waits for a free connection, connects with a persistent session, publishes everything it has
//! queued, waits for the PUBACKs and disconnects, as battery-powered trackers do; rejections
//! published while it was away reach it at its next session.

use crate::fleet::{Fault, Out};
use crate::roster::Member;
use crate::send::SendArgs;
use crate::tally::Tally;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use trackgate_proto::sign::mqtt_password;
use trackgate_proto::{Secret, topic};

fn tls(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c?)?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Where a device's groups of records go, and the task that ends when every device has finished.
pub type Fleet = (Vec<mpsc::Sender<Vec<Out>>>, tokio::task::JoinHandle<anyhow::Result<()>>);

/// After its last PUBACK, a device listens this much longer for rejections of its last messages.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// What a device needs to connect: who it is and where the broker is.
struct Device {
    member: Member,
    /// A wrong-topic fault publishes, on this device's own topic, a record naming this (the next)
    /// device: the endpoint (or a broker's ACL) would refuse a publish under another device's
    /// topic outright, so a mismatch reaches trackgate only this way (a relay's mistake).
    other: String,
    per_message: usize,
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    /// Keep the session (and the rejections queued for it) across connections.
    persistent: bool,
    tally: Tally,
}

/// Each device takes groups of records from its channel until it closes: over one connection
/// for the whole run, or, with `--connections` below the fleet size, in sessions that take turns
/// on that many connections.
pub fn connect_fleet(args: &SendArgs, ca_pem: &[u8], devices: &[Member], tally: Tally) -> anyhow::Result<Fleet> {
    let tls = tls(ca_pem)?;
    let slots = args
        .connections
        .filter(|&n| n < devices.len())
        .map(|n| Arc::new(Semaphore::new(n)));
    let mut senders = Vec::with_capacity(devices.len());
    let mut tasks = Vec::with_capacity(devices.len());
    for (i, member) in devices.iter().enumerate() {
        let (tx, rx) = mpsc::channel(256);
        senders.push(tx);
        let device = Device {
            member: member.clone(),
            other: devices[(i + 1) % devices.len()].id.clone(),
            per_message: args.per_message.max(1),
            tls: tls.clone(),
            host: args.mqtt_host.clone(),
            port: args.mqtt_port,
            persistent: slots.is_some(),
            tally: tally.clone(),
        };
        let slots = slots.clone();
        tasks.push(tokio::spawn(async move {
            match slots {
                None => connection(&device, rx, LAST_WORDS).await,
                Some(slots) => sessions(&device, rx, &slots).await,
            }
        }));
    }
    let handle = tokio::spawn(async move {
        for t in tasks {
            t.await??;
        }
        Ok(())
    });
    Ok((senders, handle))
}

/// Sessions of one device: wait for records, then for a free connection; publish everything
/// queued by then; disconnect. The last session, once the run has ended, listens for the last
/// rejections; if the run ended while the device was disconnected, one more session collects them.
async fn sessions(device: &Device, mut rx: mpsc::Receiver<Vec<Out>>, slots: &Semaphore) -> anyhow::Result<()> {
    let mut owed = false;
    while let Some(first) = rx.recv().await {
        let _slot = slots.acquire().await?;
        let mut queued = vec![first];
        while let Ok(more) = rx.try_recv() {
            queued.push(more);
        }
        let last = rx.is_closed() && rx.is_empty();
        let (tx, session_rx) = mpsc::channel(queued.len());
        for group in queued {
            tx.try_send(group).expect("room for every queued group");
        }
        drop(tx);
        device.tally.session();
        connection(device, session_rx, if last { LAST_WORDS } else { Duration::ZERO }).await?;
        owed = !last;
    }
    if owed {
        let _slot = slots.acquire().await?;
        let (nothing, no_records) = mpsc::channel(1);
        drop(nothing);
        device.tally.session();
        connection(device, no_records, LAST_WORDS).await?;
    }
    Ok(())
}

/// One connection: publish the groups from `rx` until it closes and every message is
/// acknowledged, listen `last_words` longer for rejections, disconnect.
async fn connection(device: &Device, mut rx: mpsc::Receiver<Vec<Out>>, last_words: Duration) -> anyhow::Result<()> {
    let Device {
        member,
        other,
        per_message,
        tls,
        host,
        port,
        persistent,
        tally,
    } = device;
    let per_message = *per_message;
    let secret = Secret::from_hex(&member.secret)?;
    let mut options = MqttOptions::new(format!("sim-{}", member.id), host.as_str(), *port);
    options
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())))
        .set_credentials(&member.id, mqtt_password(&secret, &member.id))
        .set_clean_session(!persistent)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        // Arrays (backlogs, --per-message) are far larger than rumqttc's 10 KiB default.
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 100);
    client
        .subscribe(topic::rejections(&member.id), QoS::AtLeastOnce)
        .await?;
    // Records per message, in publish order: matched to packet ids as they go out.
    let sizes: Arc<std::sync::Mutex<VecDeque<u64>>> = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (client, sizes, published, done, tally) = (
            client.clone(),
            sizes.clone(),
            published.clone(),
            done.clone(),
            tally.clone(),
        );
        let own = topic::telemetry(&member.id);
        let (own_dev, other_dev) = (format!("\"dev\":\"{}\"", member.id), format!("\"dev\":\"{other}\""));
        tokio::spawn(async move {
            // With `per_message` > 1, records wait here until an array is full (or the run ends).
            let mut held: Vec<Out> = Vec::new();
            loop {
                let outs = match rx.recv().await {
                    Some(outs) if per_message > 1 && outs.len() == 1 => {
                        held.extend(outs);
                        if held.len() < per_message {
                            continue;
                        }
                        std::mem::take(&mut held)
                    }
                    Some(outs) => outs,
                    None if !held.is_empty() => std::mem::take(&mut held),
                    None => break,
                };
                tally.sent(&outs);
                let (astray, rest): (Vec<Out>, Vec<Out>) =
                    outs.into_iter().partition(|o| o.fault == Some(Fault::WrongTopic));
                let mut messages: Vec<(&str, String, u64)> = astray
                    .into_iter()
                    .map(|o| (own.as_str(), o.envelope.replacen(&own_dev, &other_dev, 1), 1))
                    .collect();
                match rest.len() {
                    0 => {}
                    1 => messages.push((own.as_str(), rest.into_iter().next().expect("one").envelope, 1)),
                    n => {
                        let body = rest.iter().map(|o| o.envelope.as_str()).collect::<Vec<_>>().join(",");
                        messages.push((own.as_str(), format!("[{body}]"), n as u64));
                    }
                }
                for (t, payload, n) in messages {
                    sizes.lock().expect("sizes").push_back(n);
                    if client.publish(t, QoS::AtLeastOnce, false, payload).await.is_err() {
                        done.store(true, Ordering::SeqCst);
                        return;
                    }
                    published.fetch_add(1, Ordering::SeqCst);
                }
            }
            done.store(true, Ordering::SeqCst);
        });
    }
    let mut in_flight: HashMap<u16, (Instant, u64)> = HashMap::new();
    let mut acked: u64 = 0;
    let mut quiet_until: Option<Instant> = None;
    let mut last_event = Instant::now();
    loop {
        let finished = done.load(Ordering::SeqCst) && acked == published.load(Ordering::SeqCst);
        if finished && quiet_until.is_none() {
            // After the last PUBACK, listen a little longer for rejections of the last messages.
            quiet_until = Some(Instant::now() + last_words);
        }
        let wait = match quiet_until {
            Some(t) if Instant::now() >= t => break,
            Some(t) => t - Instant::now(),
            None => Duration::from_millis(200),
        };
        let event = match tokio::time::timeout(wait, events.poll()).await {
            Ok(e) => e?,
            Err(_) if in_flight.is_empty() || last_event.elapsed() < Duration::from_secs(60) => continue,
            Err(_) => anyhow::bail!("{}: no answer from the broker for 60 s", member.id),
        };
        last_event = Instant::now();
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let n = sizes.lock().expect("sizes").pop_front().unwrap_or(1);
                in_flight.insert(pkid, (Instant::now(), n));
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some((t, n)) = in_flight.remove(&ack.pkid) {
                    tally.puback(n, t.elapsed().as_secs_f64() * 1000.0);
                }
                acked += 1;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let answer: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                tally.mqtt_rejections(
                    answer["rejected"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| r["reason"].as_str().unwrap_or("?").to_owned()),
                );
            }
            _ => {}
        }
    }
    // Send the DISCONNECT before the connection is dropped, so the broker sees a device saying
    // goodbye rather than a connection lost.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}
