//! Devices over MQTT: each publishes its records (one per message) over its own TLS connection at
//! QoS 1, logging in with the credentials of PROTOCOL.md §3, and listens on its rejections topic.
//! Latency is from the publish leaving to its PUBACK, per packet id.

use crate::roster::Member;
use crate::send::{Latency, SendArgs, Summary};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// What one device saw.
#[derive(Default)]
struct DeviceRun {
    sent: u64,
    acked: u64,
    rejected: HashMap<String, u64>,
    latencies: Vec<f64>,
}

pub async fn publish_all(args: &SendArgs, ca_pem: &[u8], fleet: Vec<(Member, Vec<String>)>) -> anyhow::Result<Summary> {
    let tls = tls(ca_pem)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (member, envelopes) in fleet {
        let (tls, host, port) = (tls.clone(), args.mqtt_host.clone(), args.mqtt_port);
        tasks.push(tokio::spawn(
            async move { device(member, envelopes, tls, host, port).await },
        ));
    }
    let mut summary = Summary::default();
    let mut latencies = Vec::new();
    for t in tasks {
        let run = t.await??;
        summary.records_sent += run.sent;
        summary.requests += run.sent;
        summary.accepted += run.acked;
        for (reason, n) in run.rejected {
            *summary.rejected.entry(reason).or_default() += n;
        }
        latencies.extend(run.latencies);
    }
    // Over MQTT a PUBACK means committed or rejected; rejected ones are reported on the
    // rejections topic and taken out of the accepted count.
    let rejected: u64 = summary.rejected.values().sum();
    summary.accepted = summary.accepted.saturating_sub(rejected);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = summary.accepted as f64 / summary.seconds.max(1e-9);
    summary.latency_ms = Latency::of(latencies);
    Ok(summary)
}

async fn device(
    member: Member,
    envelopes: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
) -> anyhow::Result<DeviceRun> {
    let secret = Secret::from_hex(&member.secret)?;
    let mut options = MqttOptions::new(format!("sim-{}", member.id), host, port);
    options
        .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)))
        .set_credentials(&member.id, mqtt_password(&secret, &member.id))
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    let (client, mut events) = AsyncClient::new(options, 100);
    client
        .subscribe(topic::rejections(&member.id), QoS::AtLeastOnce)
        .await?;
    let total = envelopes.len() as u64;
    let telemetry = topic::telemetry(&member.id);
    let publisher = client.clone();
    tokio::spawn(async move {
        for e in envelopes {
            if publisher.publish(&telemetry, QoS::AtLeastOnce, false, e).await.is_err() {
                return;
            }
        }
    });
    let mut run = DeviceRun {
        sent: total,
        ..Default::default()
    };
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut quiet_until: Option<Instant> = (total == 0).then(Instant::now);
    loop {
        // After the last PUBACK, listen a little longer for rejections of the last messages.
        let wait = match quiet_until {
            Some(t) if Instant::now() >= t => break,
            Some(t) => t - Instant::now(),
            None => Duration::from_secs(60),
        };
        let event = match tokio::time::timeout(wait, events.poll()).await {
            Ok(e) => e?,
            Err(_) if quiet_until.is_some() => break,
            Err(_) => anyhow::bail!("{}: no answer from the broker for 60 s", member.id),
        };
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                in_flight.insert(pkid, Instant::now());
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(t) = in_flight.remove(&ack.pkid) {
                    run.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                run.acked += 1;
                if run.acked == total {
                    quiet_until = Some(Instant::now() + Duration::from_millis(500));
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let answer: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                for r in answer["rejected"].as_array().into_iter().flatten() {
                    *run.rejected
                        .entry(r["reason"].as_str().unwrap_or("?").to_owned())
                        .or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(run)
}
