//! Wiring: open the store, build the pipeline and the sources, run until a signal, then shut
//! down in order: stop accepting, let in-flight requests finish (they wait for their commit),
//! drain the queue, close the database. All within the grace period.

use crate::api::{self, ApiInner, ApiState};
use crate::auth::{Auth, Authenticator, dev::DevKey};
use crate::config::{Config, ConnectionLimits, MasterKeySource, Mode, MqttConfig, MqttPassword};
use crate::feed::Feed;
use crate::keys::KeyCache;
use crate::listener::limits::Capped;
use crate::listener::{self, Listener};
use crate::metrics::Metrics;
use crate::pipeline::{DiskWatch, Queue, StoreHealth, Writer, WriterSettings};
use crate::ratelimit::RateLimiter;
use crate::sources::http::{self, HttpState};
use crate::sources::mqtt::{self, endpoint, endpoint::EndpointShared};
use crate::throttle::FailureThrottle;
use crate::verify::Verifier;
use crate::{fsutil, ops, tls, web};
use anyhow::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use trackgate_store::{MasterKey, Store};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything accepted was committed and answered.
    Clean,
    /// The grace period ran out before the queue drained: what was not committed was not
    /// acknowledged either.
    GraceExceeded,
}

/// Read the master key from its source; in dev mode create the key file on first use.
pub fn load_master_key(source: &MasterKeySource) -> anyhow::Result<MasterKey> {
    let (hex, origin) = match source {
        MasterKeySource::Env(hex) => (hex.clone(), crate::config::env::MASTER_KEY.to_owned()),
        MasterKeySource::File(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading the master key file {}", path.display()))?,
            path.display().to_string(),
        ),
        MasterKeySource::DevFile(path) => {
            if !path.exists() {
                fsutil::write_private(path, MasterKey::generate_hex().as_bytes())?;
                tracing::warn!(path = %path.display(), "dev mode: generated a master key file; production must supply its own");
            }
            (
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the master key file {}", path.display()))?,
                path.display().to_string(),
            )
        }
    };
    MasterKey::from_hex(&hex)
        .with_context(|| format!("the master key in {origin} must be 64 hex characters (32 bytes)"))
}

/// Open the database the configuration names, creating the data directory if needed.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let master = load_master_key(&config.master_key)?;
    Store::open(&config.database, master).await.with_context(|| {
        format!(
            "opening the database {}",
            trackgate_store::redact_url(&config.database.url)
        )
    })
}

/// Run the daemon until SIGINT or SIGTERM, then shut down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<Exit> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    serve_until(config, shutdown).await
}

/// Run the daemon until `shutdown` is cancelled.
pub async fn serve_until(config: Config, shutdown: CancellationToken) -> anyhow::Result<Exit> {
    let store = open_store(&config).await?;
    let tls_files = match (&config.tls, config.mode) {
        (Some(files), _) => files.clone(),
        (None, Mode::Dev) => tls::ensure_dev_certificate(&config.data_dir)?,
        (None, Mode::Production) => anyhow::bail!("production mode needs `tls.cert` and `tls.key`"),
    };
    let (tls_config, leaf) = tls::server_config(&tls_files)?;
    tracing::info!(cert = %tls_files.cert.display(), sha256 = %leaf.fingerprint, not_after = leaf.not_after, "TLS certificate");

    let metrics = Metrics::new();
    // Its series exist from the start, at zero.
    metrics.commit_seconds.with_label_values(&[store.backend_name()]);
    metrics.tls_not_after.set(leaf.not_after);
    let keys = Arc::new(KeyCache::new(
        store.clone(),
        config.ingest.key_cache_max_entries,
        metrics.clone(),
    ));
    let health = Arc::new(StoreHealth::new(config.ingest.stall_timeout, metrics.clone()));
    let (queue, rx, permits) = Queue::new(config.ingest.queue_capacity, metrics.clone(), health.clone());
    let feed = Feed::new(FEED_BATCHES);
    let dirty = crate::events::Dirty::default();
    let writer = Writer::new(
        store.clone(),
        rx,
        permits,
        metrics.clone(),
        WriterSettings {
            batch_max_rows: config.ingest.batch_max_rows,
            batch_linger: config.ingest.batch_linger,
            write_retry: config.ingest.write_retry,
            rejects_keep: config.ingest.rejects_keep,
            concurrent_batches: config.ingest.concurrent_batches,
        },
        health.clone(),
    )
    .with_feed(feed.clone())
    .with_events(dirty.clone());
    let auth = operator_auth(&config)?;

    let https = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding the HTTPS listener to {} (`http.listen`)", config.http.listen))?;
    let ops_listener = TcpListener::bind(config.ops_listen)
        .await
        .with_context(|| format!("binding the ops listener to {} (`ops.listen`)", config.ops_listen))?;
    let mqtt_listener = match &config.mqtt_endpoint {
        Some(e) => Some(
            TcpListener::bind(e.listen)
                .await
                .with_context(|| format!("binding the MQTT endpoint to {} (`mqtt_endpoint.listen`)", e.listen))?,
        ),
        None => None,
    };
    tracing::info!(listener = "https", addr = %https.local_addr()?, "listening");
    tracing::info!(listener = "ops", addr = %ops_listener.local_addr()?, "listening");
    if let Some(l) = &mqtt_listener {
        tracing::info!(listener = "mqtt", addr = %l.local_addr()?, "listening");
    }
    if !config.ops_listen.ip().is_loopback() {
        tracing::warn!(addr = %config.ops_listen, "the ops listener (plain HTTP) is not on loopback");
    }

    let tasks = TaskTracker::new();
    let background = CancellationToken::new();
    let drain = CancellationToken::new();
    tasks.spawn(writer.run(drain.clone()));
    let disk = store.local_directory().map(|dir| DiskWatch {
        dir,
        min_free: config.min_free_bytes,
    });
    let monitor = health.clone();
    let monitor_stop = background.clone();
    tasks.spawn(async move { monitor.monitor(disk, HEALTH_EVERY, monitor_stop).await });
    let (pool_store, pool_metrics, pool_stop) = (store.clone(), metrics.clone(), background.clone());
    tasks.spawn(async move {
        loop {
            pool_metrics.set_pool(pool_store.pool_status());
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
                _ = pool_stop.cancelled() => return,
            }
        }
    });
    tasks.spawn(
        keys.clone()
            .follow_changes(config.ingest.key_refresh, background.clone()),
    );
    if let Some(follower) = store.follow_commits().await.context("following other nodes' commits")? {
        tasks.spawn(crate::feed::follow_other_nodes(
            follower,
            store.clone(),
            feed.clone(),
            dirty.clone(),
            background.clone(),
        ));
    }
    if config.events.enabled {
        tasks.spawn(crate::events::processor::run(
            store.clone(),
            dirty,
            metrics.clone(),
            config.events.clone(),
            background.clone(),
        ));
        tasks.spawn(crate::alerts::run(
            store.clone(),
            metrics.clone(),
            config.alerts.clone(),
            background.clone(),
        ));
    } else {
        tracing::info!("events (and so alerts) are off (`events.enabled = false`)");
    }
    let (upkeep_store, upkeep_stop) = (store.clone(), background.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP_EVERY) => {}
                _ = upkeep_stop.cancelled() => return,
            }
            if let Err(e) = upkeep_store.maintain(trackgate_store::now_ms()).await {
                tracing::warn!(error = %e, "database upkeep failed; it is tried again in an hour");
            }
        }
    });
    tasks.spawn(purge_now_and_then(
        store.clone(),
        metrics.clone(),
        config.purge_interval,
        background.clone(),
    ));

    let throttle = Arc::new(FailureThrottle::new(config.auth_throttle, metrics.clone()));
    let sweeper = throttle.clone();
    let sweeper_stop = background.clone();
    tasks.spawn(async move { sweeper.run_sweeper(THROTTLE_SWEEP_EVERY, sweeper_stop).await });
    let verifier = Arc::new(Verifier::new(keys.clone(), config.retention_ms()));
    let mqtt = config.mqtt.as_ref().map(|m| mqtt_settings(&config, m)).transpose()?;
    let mqtt_task = match mqtt {
        Some(settings) => {
            tracing::info!(host = %settings.host, port = settings.port, filter = %settings.filter, "MQTT ingest on");
            Some(tokio::spawn(mqtt::run(
                settings,
                verifier.clone(),
                queue.clone(),
                metrics.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let endpoint_task = match (mqtt_listener, &config.mqtt_endpoint) {
        (Some(listener), Some(e)) => {
            let shared = Arc::new(EndpointShared {
                keys: keys.clone(),
                verifier: verifier.clone(),
                queue: queue.clone(),
                metrics: metrics.clone(),
                throttle: throttle.clone(),
                settings: e.session.clone(),
                subscribers: Default::default(),
            });
            let mut limits = e.limits.clone();
            listener::fit_to_descriptors(
                &mut limits,
                listener::OPS_MAX_CONNECTIONS + config.http.limits.max_connections,
            );
            let how = Listener {
                name: "mqtt",
                limits,
                tls: Some(tls::without_alpn(&tls_config)),
                metrics: metrics.clone(),
            };
            Some(tokio::spawn(endpoint::serve(listener, how, shared, shutdown.clone())))
        }
        _ => None,
    };
    let state = HttpState::new(http::Inner {
        keys: keys.clone(),
        verifier,
        queue,
        limiter: RateLimiter::new(config.http.rate_limit_per_second, config.http.rate_limit_burst),
        metrics: metrics.clone(),
        max_body_bytes: config.http.max_body_bytes,
        max_records: config.http.max_records,
        body_timeout: config.http.limits.body_timeout,
        min_body_bytes_per_second: config.http.limits.min_body_bytes_per_second,
        unverified: Capped::new(
            config.http.limits.unverified_body_bytes,
            config.http.limits.unverified_body_bytes_per_address,
        ),
        throttle: throttle.clone(),
        stopping: shutdown.clone(),
    });
    let api_state = ApiState::new(ApiInner {
        store: store.clone(),
        auth: auth.clone(),
        feed,
        grants_refresh: config.auth.grants_refresh,
        reauth_max_age: config.auth.reauth_max_age,
        export_dir: config.data_dir.join("exports"),
        alerts: config.alerts.clone(),
        page_url: config.alerts.page_url.clone(),
        share_max_expiry: config.share_max_expiry,
        stopping: shutdown.clone(),
    });
    let mut routes = http::router(state).merge(api::router(api_state));
    if config.ui.enabled {
        let web = web::WebState::new(&config.ui, &config.auth, auth.clone(), config.mode == Mode::Production)?;
        routes = routes.merge(web::router(web));
    }
    // The ops listener has a small cap of its own; HTTPS gets what the descriptor limit leaves.
    let mut limits = config.http.limits.clone();
    listener::fit_to_descriptors(&mut limits, listener::OPS_MAX_CONNECTIONS);
    let ops_limits = ConnectionLimits {
        max_connections: listener::OPS_MAX_CONNECTIONS,
        max_connections_per_address: listener::OPS_MAX_CONNECTIONS,
        ..limits.clone()
    };
    let https_task = tokio::spawn(listener::serve(
        https,
        Listener {
            name: "https",
            limits: limits.clone(),
            tls: Some(tls_config),
            metrics: metrics.clone(),
        },
        routes,
        shutdown.clone(),
    ));
    // The ops listener gets the same timeouts, without TLS (it binds to loopback).
    let ops = Listener {
        name: "ops",
        limits: ops_limits,
        tls: None,
        metrics: metrics.clone(),
    };
    tasks.spawn(listener::serve(
        ops_listener,
        ops,
        ops::router(metrics, store.clone(), health),
        background.clone(),
    ));

    shutdown.cancelled().await;
    let drained = tokio::time::timeout(config.grace_period, async {
        // In-flight requests and messages finish first: each waits for its commit, which the
        // writer still serves.
        let _ = https_task.await;
        if let Some(t) = mqtt_task {
            let _ = t.await;
        }
        if let Some(t) = endpoint_task {
            let _ = t.await;
        }
        drain.cancel();
        background.cancel();
        tasks.close();
        tasks.wait().await;
    })
    .await;
    let exit = match drained {
        Ok(()) => {
            store.close().await;
            tracing::info!("shut down cleanly");
            Exit::Clean
        }
        Err(_) => {
            tracing::error!(
                grace_secs = config.grace_period.as_secs(),
                "grace period exceeded; exiting with work unacknowledged"
            );
            Exit::GraceExceeded
        }
    };
    Ok(exit)
}

/// How often addresses quiet after authentication failures are forgotten.
const THROTTLE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// How often free space is measured and a stall looked for.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How often the database's upkeep runs (on PostgreSQL: partitions made ahead).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Committed batches a live stream may fall behind by before it is closed.
const FEED_BATCHES: usize = 1024;

/// The retention purge every `every` (the first one `every` after start), counted and logged.
async fn purge_now_and_then(
    store: trackgate_store::Store,
    metrics: Metrics,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let outcome = match store.purge(trackgate_store::now_ms()).await {
            Ok(Some(report)) => {
                metrics.purged(&report);
                tracing::info!(
                    positions = report.positions(),
                    partitions = report.partitions.len(),
                    rejects = report.rejects,
                    millis = report.finished_ms - report.started_ms,
                    "retention purge done"
                );
                "done"
            }
            Ok(None) => "skipped",
            Err(e) => {
                tracing::warn!(error = %e, "retention purge failed; it is tried again at the next interval");
                "failed"
            }
        };
        metrics.purges.with_label_values(&[outcome]).inc();
    }
}

/// The operators' sign-in: configured issuers, and the dev key where dev tokens are trusted.
fn operator_auth(config: &Config) -> anyhow::Result<Auth> {
    let dev = if config.auth.dev_tokens {
        let key = DevKey::ensure(&config.data_dir)?;
        tracing::warn!(
            key = %crate::auth::dev::key_path(&config.data_dir).display(),
            "dev mode: operator tokens minted by `trackgate dev-token` are trusted"
        );
        Some(key)
    } else {
        None
    };
    let auth = Arc::new(Authenticator::new(&config.auth, dev.as_ref())?);
    for i in &config.auth.issuers {
        tracing::info!(issuer = %i.issuer, audience = %i.audience, "trusting OpenID provider");
    }
    let warm = auth.clone();
    tokio::spawn(async move { warm.warm().await });
    Ok(auth)
}

/// Resolve the MQTT settings: TLS trust (the dev certificate in dev mode), the password.
fn mqtt_settings(config: &Config, m: &MqttConfig) -> anyhow::Result<mqtt::MqttSettings> {
    // Validation requires `mqtt.ca` in production; dev mode trusts its own dev certificate.
    let ca = m.ca.clone().unwrap_or_else(|| tls::dev_paths(&config.data_dir).cert);
    let password = match &m.password {
        MqttPassword::None => None,
        MqttPassword::Env(p) => Some(p.clone()),
        MqttPassword::File(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading `mqtt.password_file` {}", f.display()))?
                .trim()
                .to_owned(),
        ),
    };
    Ok(mqtt::MqttSettings {
        host: m.host.clone(),
        port: m.port,
        client_id: m.client_id.clone(),
        username: m.username.clone(),
        password,
        tls: tls::client_config(&ca, m.client_cert.as_ref())?,
        filter: m.filter.clone(),
        publish_rejections: m.publish_rejections,
        keep_alive: m.keep_alive,
        max_in_flight: m.max_in_flight,
        max_packet_bytes: mqtt::MAX_PACKET_BYTES,
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
