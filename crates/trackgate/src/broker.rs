//! The embedded MQTT broker (cargo feature `embedded-broker`, on by default), so a development
//! setup needs nothing else: rumqttd with a TLS listener on trackgate's certificate, devices
//! authenticated against the key store with the credentials of PROTOCOL.md §3, and trackgate's
//! own consumer logging in with a password generated at each start.
//!
//! Limits, documented for operators: rumqttd keeps sessions in memory only, so a message it has
//! acknowledged to a device but trackgate has not yet committed is lost if the process dies, and it
//! has no per-topic ACL (a device's records are still checked against the topic and its own key).
//! Failed logins are throttled per login name (rumqttd's login hook does not see the address).
//! Production deployments that promise "nothing acknowledged is lost" use an external broker with
//! persistence (see config/mosquitto.example.conf).

use crate::config::TlsFiles;
use crate::keys::KeyCache;
use crate::throttle::FailureThrottle;
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use trackgate_proto::sign::verify_mqtt_password;
use trackgate_store::Kind;

/// trackgate's own account on the embedded broker.
pub const SERVICE_USER: &str = "trackgate";

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub listen: SocketAddr,
    /// Generated at start, never written anywhere.
    pub service_password: String,
}

/// Start rumqttd on its own threads. `runtime` is trackgate's runtime, where key lookups run.
pub fn start(
    listen: SocketAddr,
    tls: &TlsFiles,
    keys: Arc<KeyCache>,
    throttle: Arc<FailureThrottle<String>>,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<EmbeddedBroker> {
    // rumqttd binds on its own thread and only logs a failure: check the port first, so a port in
    // use is an error at start with the key named.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("the embedded broker cannot listen on {listen} (`broker.listen`)"))?,
    );
    let mut pw = [0u8; 32];
    getrandom::fill(&mut pw).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    let service_password = hex::encode(pw);

    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: crate::sources::mqtt::MAX_PACKET_BYTES,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let expected = service_password.clone();
    connections.set_auth_handler(move |_client_id: String, user: String, pass: String| {
        let (keys, expected, runtime, throttle) = (keys.clone(), expected.clone(), runtime.clone(), throttle.clone());
        async move {
            if user == SERVICE_USER {
                return bool::from(pass.as_bytes().ct_eq(expected.as_bytes()));
            }
            // Key lookups (and the delay of a throttled failure) use trackgate's runtime and
            // database pool, not rumqttd's threads.
            let check = runtime.spawn(async move {
                let ok = match keys.get(&user).await {
                    Ok(Some(p)) if p.kind == Kind::Device && p.enabled => p
                        .keys
                        .iter()
                        .any(|k| verify_mqtt_password(&k.secret, &user, pass.as_bytes())),
                    Ok(_) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "broker login refused: key store unavailable");
                        return false;
                    }
                };
                if !ok {
                    tokio::time::sleep(throttle.failed(user, "mqtt")).await;
                }
                ok
            });
            check.await.unwrap_or(false)
        }
    });
    let server = rumqttd::ServerSettings {
        name: "tls".into(),
        listen,
        tls: Some(rumqttd::TlsConfig::Rustls {
            capath: None,
            certpath: tls.cert.display().to_string(),
            keypath: tls.key.display().to_string(),
        }),
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("tls".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded MQTT broker")?;
    // Return once devices can connect, so "listening" in the log is true.
    let probe = SocketAddr::new(
        if listen.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            listen.ip()
        },
        listen.port(),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(probe).is_ok() {
            return Ok(EmbeddedBroker {
                listen,
                service_password,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    anyhow::bail!("the embedded broker did not start listening on {listen} within 5 s")
}
