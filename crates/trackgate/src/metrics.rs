//! Every Prometheus series trackgate exports, declared in one place with its help text.
//! Labels are bounded: transport, outcome, reason, status. Never a device or key id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The process's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records by transport and outcome (`accepted`, `duplicate`, `rejected`).
    pub records: IntCounterVec,
    /// Rejected records by transport and reason.
    pub rejections: IntCounterVec,
    /// HTTPS requests answered, by status code.
    pub http_requests: IntCounterVec,
    /// Time from request received to response, by status code class.
    pub http_request_seconds: HistogramVec,
    /// Rows per committed batch.
    pub batch_rows: Histogram,
    /// Time to write and commit one batch, by database backend (`sqlite`, `postgres`).
    pub commit_seconds: HistogramVec,
    /// Rows (and rejects) queued for the writer.
    pub queue_depth: IntGauge,
    pub queue_capacity: IntGauge,
    /// Failed batch writes (each retry counts).
    pub database_errors: IntCounter,
    /// Failed write attempts by kind (disk_full, locked, read_only, io, other).
    pub storage_failures: IntCounterVec,
    /// 1 while a storage failure episode runs (no write has committed since a failure).
    pub storage_failing: IntGauge,
    /// 1 while a write has not committed for longer than `ingest.stall_timeout_ms`.
    pub storage_stalled: IntGauge,
    /// Free bytes on the database's filesystem, and the watermark under which work is refused.
    pub storage_free_bytes: IntGauge,
    pub storage_min_free_bytes: IntGauge,
    /// 1 while new work is admitted (what `/readyz` says).
    pub ready: IntGauge,
    /// The database connection pool: connections in use, idle, and the most it opens.
    pub db_connections: IntGaugeVec,
    /// Batches that waited for a pooled connection, and the time they waited.
    pub db_pool_waits: IntCounter,
    pub db_pool_wait_seconds: prometheus::Counter,
    /// Open connections by listener (https, ops).
    pub connections_open: IntGaugeVec,
    /// Connections closed or refused by trackgate, by listener and reason.
    pub connections_closed: IntCounterVec,
    /// Authentication failures by transport.
    pub auth_failures: IntCounterVec,
    /// Authentication failures answered late because their address is over its failure rate.
    pub auth_throttled: IntCounterVec,
    /// Principals held in the key cache.
    pub key_cache_entries: IntGauge,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: IntGauge,
    /// MQTT messages by outcome: received, acknowledged, redelivery_expected.
    pub mqtt_messages: IntCounterVec,
    pub mqtt_reconnects: IntCounter,
    /// Messages received and not yet acknowledged or given up for redelivery.
    pub mqtt_unacked: IntGauge,
    /// Time from a message's receipt to its PUBACK.
    pub mqtt_ack_seconds: Histogram,
    pub build_info: IntGaugeVec,
    /// The HTTPS certificate's `notAfter`, Unix seconds.
    pub tls_not_after: IntGauge,
    /// Retention purges, by outcome (`done`, `skipped` while another node purges, `failed`).
    pub purges: IntCounterVec,
    /// Rows the retention purge removed, by table and organization (`""`: none).
    pub purged_rows: IntCounterVec,
    pub purged_partitions: IntCounter,
    /// When a purge last finished, Unix seconds.
    pub purge_last_success: IntGauge,
    /// Events stored, by kind.
    pub events: IntCounterVec,
    /// Event passes that failed (the database failing), by step.
    pub event_failures: IntCounterVec,
    /// 1 on the node that computes events (one across the nodes).
    pub event_processor: IntGauge,
    /// Alert delivery attempts, by channel and outcome.
    pub alert_deliveries: IntCounterVec,
    /// Deliveries waiting in the outbox (as last counted by the delivering node).
    pub alert_outbox_pending: IntGauge,
    /// 1 on the node that delivers alerts.
    pub alert_deliverer: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
];

impl Metrics {
    /// Show the database pool's state.
    pub fn set_pool(&self, pool: trackgate_store::PoolStatus) {
        let set = |state: &str, v: u32| self.db_connections.with_label_values(&[state]).set(i64::from(v));
        set("in_use", pool.open.saturating_sub(pool.idle));
        set("idle", pool.idle);
        set("max", pool.max);
        // The store counts from start; the counters move up by what is new.
        self.db_pool_waits
            .inc_by(pool.waits.saturating_sub(self.db_pool_waits.get()));
        let seconds = pool.wait_seconds - self.db_pool_wait_seconds.get();
        if seconds > 0.0 {
            self.db_pool_wait_seconds.inc_by(seconds);
        }
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let records = counter_vec(
            "trackgate_records_total",
            "Records received, by transport and outcome (accepted, duplicate, rejected).",
            &["transport", "outcome"],
        );
        let rejections = counter_vec(
            "trackgate_rejections_total",
            "Rejected records, by transport and rejection reason.",
            &["transport", "reason"],
        );
        let http_requests = counter_vec(
            "trackgate_http_requests_total",
            "HTTPS requests answered, by status code.",
            &["status"],
        );
        let http_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "trackgate_http_request_duration_seconds",
                "Time from an HTTPS request's arrival to its response, by status class.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["class"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_request_seconds.clone()))
            .expect("unique metric");
        let commit_seconds = HistogramVec::new(
            HistogramOpts::new(
                "trackgate_commit_duration_seconds",
                "Time to write and commit one batch, by database backend.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_seconds.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("trackgate_build_info", "Always 1; labelled with the version."),
            &["version"],
        )
        .expect("valid metric");
        registry.register(Box::new(build_info.clone())).expect("unique metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let m = Metrics {
            records,
            rejections,
            http_requests,
            http_request_seconds,
            batch_rows: histogram(
                "trackgate_batch_rows",
                "Rows written per committed batch.",
                BATCH_BUCKETS,
            ),
            commit_seconds,
            queue_depth: gauge("trackgate_queue_depth", "Rows waiting in the queue for the writer."),
            queue_capacity: gauge("trackgate_queue_capacity", "Rows the queue holds at most."),
            database_errors: {
                let c = IntCounter::new(
                    "trackgate_database_errors_total",
                    "Failed batch writes, each retry counted.",
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            storage_failures: counter_vec(
                "trackgate_storage_failures_total",
                "Failed write attempts (batches and probes), by kind: disk_full, locked, read_only, io, other.",
                &["kind"],
            ),
            storage_failing: gauge(
                "trackgate_storage_failing",
                "1 while writes fail and none has committed since; new work is refused.",
            ),
            storage_stalled: gauge(
                "trackgate_storage_stalled",
                "1 while a write has not committed for longer than ingest.stall_timeout_ms; new work is refused.",
            ),
            storage_free_bytes: gauge(
                "trackgate_storage_free_bytes",
                "Bytes free on the filesystem holding the database.",
            ),
            storage_min_free_bytes: gauge(
                "trackgate_storage_min_free_bytes",
                "database.min_free_bytes: under it new work is refused.",
            ),
            ready: gauge(
                "trackgate_ready",
                "1 while new work is admitted (what /readyz says), else 0.",
            ),
            db_pool_waits: {
                let c = IntCounter::new(
                    "trackgate_db_pool_waits_total",
                    "Batches that waited 1 ms or more for a database connection.",
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            db_pool_wait_seconds: {
                let c = prometheus::Counter::new(
                    "trackgate_db_pool_wait_seconds_total",
                    "Time batches spent waiting for a database connection.",
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            db_connections: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "trackgate_db_connections",
                        "The database connection pool, by state: in_use, idle, max (the most it opens).",
                    ),
                    &["state"],
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            connections_open: {
                let g = IntGaugeVec::new(
                    Opts::new("trackgate_connections_open", "Open client connections, by listener."),
                    &["listener"],
                )
                .expect("valid metric");
                registry.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            connections_closed: counter_vec(
                "trackgate_connections_closed_total",
                "Connections trackgate closed or refused itself, by listener and reason \
                 (limit_total, limit_address, handshake_timeout, idle, body_timeout).",
                &["listener", "reason"],
            ),
            auth_failures: counter_vec(
                "trackgate_auth_failures_total",
                "Failed authentications (request signatures, unknown keys, MQTT logins), by transport.",
                &["transport"],
            ),
            auth_throttled: counter_vec(
                "trackgate_auth_throttled_total",
                "Failed authentications answered late because their address was over its failure rate, by transport.",
                &["transport"],
            ),
            key_cache_entries: gauge(
                "trackgate_key_cache_entries",
                "Devices and suppliers held in the key cache.",
            ),
            mqtt_connected: gauge(
                "trackgate_mqtt_connected",
                "1 while connected to the MQTT broker, else 0.",
            ),
            mqtt_unacked: gauge(
                "trackgate_mqtt_unacked_messages",
                "MQTT messages received and not yet acknowledged (bounded by the broker's in-flight window).",
            ),
            mqtt_messages: counter_vec(
                "trackgate_mqtt_messages_total",
                "MQTT messages by outcome: received, acknowledged, redelivery_expected (ack dropped after a reconnect).",
                &["outcome"],
            ),
            mqtt_reconnects: {
                let c = IntCounter::new(
                    "trackgate_mqtt_reconnects_total",
                    "Lost MQTT connections, each followed by a reconnect attempt.",
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            mqtt_ack_seconds: histogram(
                "trackgate_mqtt_ack_duration_seconds",
                "Time from an MQTT message's receipt to its PUBACK.",
                LATENCY_BUCKETS,
            ),
            build_info,
            tls_not_after: gauge(
                "trackgate_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the HTTPS listener's certificate, in Unix seconds.",
            ),
            purges: counter_vec(
                "trackgate_retention_purges_total",
                "Retention purges, by outcome: done, skipped (another node was purging), failed.",
                &["outcome"],
            ),
            purged_rows: counter_vec(
                "trackgate_retention_deleted_rows_total",
                "Rows the retention purge removed, by table (positions, latest_positions, events, rejects) and organization.",
                &["table", "org"],
            ),
            purged_partitions: {
                let c = IntCounter::new(
                    "trackgate_retention_dropped_partitions_total",
                    "Whole positions partitions the retention purge dropped (PostgreSQL).",
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            purge_last_success: gauge(
                "trackgate_retention_last_success_timestamp_seconds",
                "When the last retention purge finished, Unix seconds; 0 before the first.",
            ),
            events: counter_vec(
                "trackgate_events_total",
                "Events stored, by kind (enter, exit, jump, battery_low, temperature_out, stale).",
                &["kind"],
            ),
            event_failures: counter_vec(
                "trackgate_event_failures_total",
                "Event computations that failed and are tried again, by step (records, stale, lock).",
                &["step"],
            ),
            event_processor: gauge(
                "trackgate_event_processor",
                "1 on the node that computes events (one node across a cluster), else 0.",
            ),
            alert_deliveries: counter_vec(
                "trackgate_alert_deliveries_total",
                "Alert delivery attempts, by channel (webhook) and outcome: delivered, retry (failed, tried again), failed (given up on).",
                &["channel", "outcome"],
            ),
            alert_outbox_pending: gauge(
                "trackgate_alert_outbox_pending",
                "Alert deliveries waiting in the outbox, as the delivering node last counted them.",
            ),
            alert_deliverer: gauge(
                "trackgate_alert_deliverer",
                "1 on the node that delivers alerts (one node across a cluster), else 0.",
            ),
            registry,
        };
        for o in ["done", "skipped", "failed"] {
            m.purges.with_label_values(&[o]);
        }
        for k in crate::events::KINDS {
            m.events.with_label_values(&[k]);
        }
        for s in ["records", "stale", "lock"] {
            m.event_failures.with_label_values(&[s]);
        }
        for o in ["delivered", "retry", "failed"] {
            m.alert_deliveries.with_label_values(&["webhook", o]);
        }
        m.purged_rows.with_label_values(&["rejects", ""]);
        // Every bounded label value exists from the start, so a scrape shows zeros, not gaps.
        for o in ["received", "acknowledged", "redelivery_expected"] {
            m.mqtt_messages.with_label_values(&[o]);
        }
        for l in ["https", "ops"] {
            m.connections_open.with_label_values(&[l]);
            for r in [
                "limit_total",
                "limit_address",
                "handshake_timeout",
                "idle",
                "body_timeout",
            ] {
                m.connections_closed.with_label_values(&[l, r]);
            }
        }
        m.ready.set(1);
        // The statuses of PROTOCOL.md §4 (and 408 for a body that never arrives).
        for status in ["200", "400", "401", "408", "413", "415", "429", "503"] {
            m.http_requests.with_label_values(&[status]);
        }
        for class in ["2xx", "4xx", "5xx"] {
            m.http_request_seconds.with_label_values(&[class]);
        }
        for t in ["https", "mqtt"] {
            m.auth_failures.with_label_values(&[t]);
            m.auth_throttled.with_label_values(&[t]);
            for o in ["accepted", "duplicate", "rejected"] {
                m.records.with_label_values(&[t, o]);
            }
            for r in trackgate_proto::Reason::ALL {
                m.rejections.with_label_values(&[t, r.as_str()]);
            }
        }
        m
    }

    /// Count what a purge removed.
    pub fn purged(&self, report: &trackgate_store::PurgeReport) {
        for o in &report.organizations {
            let org = o.org_id.as_deref().unwrap_or("");
            self.purged_rows
                .with_label_values(&["positions", org])
                .inc_by(o.positions);
            self.purged_rows
                .with_label_values(&["latest_positions", org])
                .inc_by(o.latest);
            self.purged_rows.with_label_values(&["events", org]).inc_by(o.events);
        }
        self.purged_rows
            .with_label_values(&["rejects", ""])
            .inc_by(report.rejects);
        self.purged_partitions.inc_by(report.partitions.len() as u64);
        self.purge_last_success.set(report.finished_ms / 1000);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to memory cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
