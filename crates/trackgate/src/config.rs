//! Configuration: a TOML file (or the embedded defaults, which are `config/dev.toml`), then
//! environment overrides, then [`RawConfig::validate`] into a typed [`Config`] whose errors name
//! the key at fault.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded defaults: what `trackgate serve` runs with when no `--config` is given.
pub const DEV_TOML: &str = include_str!("../../../config/dev.toml");

/// Environment variables that override the file. Secrets come only from here or from files.
pub mod env {
    pub const CONFIG: &str = "TRACKGATE_CONFIG";
    pub const DATA_DIR: &str = "TRACKGATE_DATA_DIR";
    pub const HTTP_LISTEN: &str = "TRACKGATE_HTTP_LISTEN";
    pub const OPS_LISTEN: &str = "TRACKGATE_OPS_LISTEN";
    pub const DATABASE_URL: &str = "TRACKGATE_DATABASE_URL";
    pub const MASTER_KEY: &str = "TRACKGATE_MASTER_KEY";
    pub const MASTER_KEY_FILE: &str = "TRACKGATE_MASTER_KEY_FILE";
    pub const LOG_FORMAT: &str = "TRACKGATE_LOG_FORMAT";
    pub const MQTT_PASSWORD: &str = "TRACKGATE_MQTT_PASSWORD";
    pub const MQTT_LISTEN: &str = "TRACKGATE_MQTT_LISTEN";
    pub const SMTP_PASSWORD: &str = "TRACKGATE_SMTP_PASSWORD";
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub mode: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: RawHttp,
    pub tls: RawTls,
    pub ops: RawOps,
    pub database: RawDatabase,
    pub ingest: RawIngest,
    pub security: RawSecurity,
    pub shutdown: RawShutdown,
    pub log: RawLog,
    pub mqtt: RawMqtt,
    /// Gone: the embedded broker was replaced by `[mqtt_endpoint]`. Parsed only to say so.
    pub broker: Option<toml::Value>,
    pub mqtt_endpoint: RawMqttEndpoint,
    pub retention: RawRetention,
    pub events: RawEvents,
    pub alerts: RawAlerts,
    pub sharing: RawSharing,
    pub auth: crate::auth::config::RawAuth,
    pub ui: crate::web::config::RawUi,
}

/// How long data is kept beyond positions (whose retention is `ingest.retention_days`), and how
/// the purge runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    pub min_organization_days: Option<u64>,
    pub rejects_days: Option<u64>,
    pub interval_secs: Option<u64>,
    pub batch_rows: Option<u64>,
    pub audit_personal_days: Option<u64>,
    pub audit_days: Option<u64>,
}

/// The event processor (`crate::events`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEvents {
    pub enabled: Option<bool>,
    pub settle_ms: Option<u64>,
    pub interval_ms: Option<u64>,
    pub full_pass_secs: Option<u64>,
    pub geofence_margin_m: Option<f64>,
    pub max_speed_mps: Option<f64>,
}

/// Share links (`crate::api` `shares`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSharing {
    pub max_expiry_secs: Option<u64>,
}

/// Alert delivery (`crate::alerts`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    pub allow_private_destinations: Option<bool>,
    pub webhook_ca: Option<PathBuf>,
    pub webhook_timeout_secs: Option<u64>,
    pub retry_for_secs: Option<u64>,
    pub max_backoff_secs: Option<u64>,
    pub interval_ms: Option<u64>,
    pub page_url: Option<String>,
    pub email_per_recipient_per_hour: Option<u64>,
    pub smtp: Option<RawSmtp>,
}

/// The SMTP server e-mail alerts go through. The password comes from `password_file` or
/// `TRACKGATE_SMTP_PASSWORD`, never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSmtp {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `starttls` (default) or `tls`.
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password_env: Option<String>,
    pub from: Option<String>,
    pub ca: Option<PathBuf>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqttEndpoint {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub receive_maximum: Option<u64>,
    pub max_pending_bytes: Option<u64>,
    pub accept_qos0: Option<bool>,
    pub publish_rejections: Option<bool>,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMqtt {
    pub enabled: Option<bool>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub filter: Option<String>,
    pub publish_rejections: Option<bool>,
    pub keep_alive_secs: Option<u64>,
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_records: Option<u64>,
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<f64>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub min_body_bytes_per_second: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub unverified_body_bytes: Option<u64>,
    pub unverified_body_bytes_per_address: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOps {
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub url: Option<String>,
    pub max_connections: Option<u32>,
    pub sqlite_synchronous: Option<String>,
    pub sqlite_cache_mib: Option<u32>,
    pub sqlite_wal_autocheckpoint: Option<u32>,
    pub postgres_ca: Option<PathBuf>,
    pub postgres_client_cert: Option<PathBuf>,
    pub postgres_client_key: Option<PathBuf>,
    pub min_free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIngest {
    pub queue_capacity: Option<u64>,
    pub batch_max_rows: Option<u64>,
    pub batch_linger_ms: Option<u64>,
    pub retention_days: Option<u64>,
    pub rejects_keep: Option<u64>,
    pub key_refresh_ms: Option<u64>,
    pub key_cache_max_entries: Option<u64>,
    pub write_retry_secs: Option<u64>,
    pub stall_timeout_ms: Option<u64>,
    pub concurrent_batches: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecurity {
    pub master_key_file: Option<PathBuf>,
    pub auth_failures_per_minute: Option<u64>,
    pub auth_failure_delay_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShutdown {
    pub grace_period_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// Development conveniences (self-signed certificate, generated master key) or none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dev,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// `TRACKGATE_MASTER_KEY`, 64 hex characters.
    Env(String),
    /// A file holding 64 hex characters.
    File(PathBuf),
    /// Dev mode only: a file in the data directory, created on first start.
    DevFile(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::Env(_) => f.write_str("Env(<redacted>)"),
            MasterKeySource::File(p) => write!(f, "File({})", p.display()),
            MasterKeySource::DevFile(p) => write!(f, "DevFile({})", p.display()),
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    /// `None` in dev mode without a configured certificate: one is generated.
    pub tls: Option<TlsFiles>,
    pub ops_listen: SocketAddr,
    pub database: trackgate_store::OpenOptions,
    /// Under this many free bytes on the database's filesystem, new work is refused.
    pub min_free_bytes: u64,
    pub ingest: IngestConfig,
    /// How often the retention purge runs (its settings are `database.retention`).
    pub purge_interval: Duration,
    /// The event processor.
    pub events: crate::events::EventSettings,
    /// Alert delivery.
    pub alerts: crate::alerts::AlertSettings,
    /// The longest a share link may last.
    pub share_max_expiry: Duration,
    /// Throttling of failed authentications per client address.
    pub auth_throttle: AuthThrottle,
    pub master_key: MasterKeySource,
    pub grace_period: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `None` when MQTT ingest is off.
    pub mqtt: Option<MqttConfig>,
    /// trackgate's own MQTT endpoint; `None` when it is off.
    pub mqtt_endpoint: Option<MqttEndpointConfig>,
    /// Operator sign-in.
    pub auth: crate::auth::config::AuthConfig,
    /// The map page.
    pub ui: crate::web::config::UiConfig,
}

/// trackgate's own MQTT endpoint: where it listens, what a client may hold, how sessions behave.
#[derive(Debug, Clone)]
pub struct MqttEndpointConfig {
    pub listen: SocketAddr,
    /// The HTTPS listener's timeouts, with the endpoint's own connection caps.
    pub limits: ConnectionLimits,
    pub session: crate::sources::mqtt::endpoint::SessionSettings,
}

/// The broker trackgate consumes from. Secrets are resolved at start, not kept here.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: MqttPassword,
    /// CA that signs the broker's certificate; `None` in dev mode means the dev certificate.
    pub ca: Option<PathBuf>,
    pub client_cert: Option<TlsFiles>,
    pub filter: String,
    pub publish_rejections: bool,
    pub keep_alive: Duration,
    pub max_in_flight: usize,
}

/// Where the MQTT password comes from; never the config file itself.
#[derive(Clone)]
pub enum MqttPassword {
    None,
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for MqttPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MqttPassword::None => f.write_str("None"),
            MqttPassword::Env(_) => f.write_str("Env(<redacted>)"),
            MqttPassword::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_records: usize,
    /// Requests per second per key; 0 turns rate limiting off.
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: f64,
    pub limits: ConnectionLimits,
}

/// What one client may hold of a listener: connections, time and unverified bytes.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// TLS handshake and request headers must be complete within this.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A body must arrive within this plus its length at the minimum rate.
    pub body_timeout: Duration,
    pub min_body_bytes_per_second: u64,
    /// Open connections, in total and from one address.
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Body bytes buffered before their request signature is checked, in total and for one
    /// address.
    pub unverified_body_bytes: usize,
    pub unverified_body_bytes_per_address: usize,
}

/// Failed authentications from one address beyond `per_minute` are answered after `delay`.
#[derive(Debug, Clone, Copy)]
pub struct AuthThrottle {
    pub per_minute: u32,
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub queue_capacity: usize,
    pub batch_max_rows: usize,
    pub batch_linger: Duration,
    pub rejects_keep: u64,
    pub key_refresh: Duration,
    pub key_cache_max_entries: usize,
    pub write_retry: Duration,
    /// A write not committed for this long closes the door to new work.
    pub stall_timeout: Duration,
    /// Batches written at once: 1 on SQLite (one writer), and by default on PostgreSQL.
    pub concurrent_batches: usize,
}

impl RawConfig {
    /// The file at `path`, or the embedded defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<RawConfig> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (DEV_TOML.to_owned(), "embedded defaults".to_owned()),
        };
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config ({name}): {e}"))
    }

    /// The TOML text of a config file. Fuzzed (`fuzz/fuzz_targets/config.rs`).
    pub fn parse(text: &str) -> Result<RawConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Apply the environment overrides of [`env`].
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(env::DATA_DIR) {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = get(env::HTTP_LISTEN) {
            self.http.listen = Some(v);
        }
        if let Some(v) = get(env::OPS_LISTEN) {
            self.ops.listen = Some(v);
        }
        if let Some(v) = get(env::DATABASE_URL) {
            self.database.url = Some(v);
        }
        if let Some(v) = get(env::MASTER_KEY_FILE) {
            self.security.master_key_file = Some(v.into());
        }
        if let Some(v) = get(env::LOG_FORMAT) {
            self.log.format = Some(v);
        }
        if let Some(v) = get(env::MQTT_LISTEN) {
            self.mqtt_endpoint.listen = Some(v);
        }
        if let (Some(v), Some(smtp)) = (get(env::SMTP_PASSWORD), self.alerts.smtp.as_mut()) {
            smtp.password_env = Some(v);
        }
    }

    /// Check every value and fill in defaults. `master_key_env` is `TRACKGATE_MASTER_KEY`.
    pub fn validate(self, master_key_env: Option<String>) -> anyhow::Result<Config> {
        self.validate_with(master_key_env, None)
    }

    /// As [`RawConfig::validate`], with `TRACKGATE_MQTT_PASSWORD` too.
    pub fn validate_with(
        self,
        master_key_env: Option<String>,
        mqtt_password_env: Option<String>,
    ) -> anyhow::Result<Config> {
        let mode = match self.mode.as_deref().unwrap_or("production") {
            "dev" => Mode::Dev,
            "production" => Mode::Production,
            other => bail!("`mode` must be \"dev\" or \"production\", not {other:?}"),
        };
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        let addr = |key: &str, v: Option<String>, default: &str| -> anyhow::Result<SocketAddr> {
            let v = v.unwrap_or_else(|| default.to_owned());
            v.parse()
                .with_context(|| format!("`{key}` must be an address such as 127.0.0.1:8443, not {v:?}"))
        };
        let h = self.http;
        let handshake_timeout = Duration::from_millis(range(
            "http.handshake_timeout_ms",
            h.handshake_timeout_ms,
            10_000,
            100,
            600_000,
        )? as u64);
        let max_body_bytes = range(
            "http.max_body_bytes",
            h.max_body_bytes,
            4 * 1024 * 1024,
            1024,
            256 * 1024 * 1024,
        )?;
        let limits = ConnectionLimits {
            handshake_timeout,
            idle_timeout: Duration::from_millis(range(
                "http.idle_timeout_ms",
                h.idle_timeout_ms,
                60_000,
                100,
                3_600_000,
            )? as u64),
            body_timeout: Duration::from_millis(
                range("http.body_timeout_ms", h.body_timeout_ms, 10_000, 100, 600_000)? as u64,
            ),
            min_body_bytes_per_second: range(
                "http.min_body_bytes_per_second",
                h.min_body_bytes_per_second,
                65_536,
                1,
                1 << 40,
            )? as u64,
            max_connections: range("http.max_connections", h.max_connections, 10_000, 1, 10_000_000)?,
            max_connections_per_address: range(
                "http.max_connections_per_address",
                h.max_connections_per_address,
                512,
                1,
                10_000_000,
            )?,
            unverified_body_bytes: range(
                "http.unverified_body_bytes",
                h.unverified_body_bytes,
                64 * 1024 * 1024,
                1024,
                1 << 40,
            )?,
            unverified_body_bytes_per_address: range(
                "http.unverified_body_bytes_per_address",
                h.unverified_body_bytes_per_address,
                16 * 1024 * 1024,
                1024,
                1 << 40,
            )?,
        };
        if limits.unverified_body_bytes_per_address < max_body_bytes {
            bail!(
                "`http.unverified_body_bytes_per_address` ({}) must be at least `http.max_body_bytes` ({max_body_bytes}), \
                 or a largest request could never be read",
                limits.unverified_body_bytes_per_address
            );
        }
        if limits.unverified_body_bytes < limits.unverified_body_bytes_per_address {
            bail!(
                "`http.unverified_body_bytes` ({}) must be at least `http.unverified_body_bytes_per_address` ({})",
                limits.unverified_body_bytes,
                limits.unverified_body_bytes_per_address
            );
        }
        let http = HttpConfig {
            listen: addr("http.listen", h.listen, "127.0.0.1:8443")?,
            max_body_bytes,
            max_records: range("http.max_records", h.max_records, 10_000, 1, 1_000_000)?,
            rate_limit_per_second: frange("http.rate_limit_per_second", h.rate_limit_per_second, 1000.0, 0.0, 1e9)?,
            rate_limit_burst: frange("http.rate_limit_burst", h.rate_limit_burst, 2000.0, 1.0, 1e9)?,
            limits,
        };
        let tls = match (self.tls.cert, self.tls.key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) if mode == Mode::Dev => None,
            (None, None) => bail!("`tls.cert` and `tls.key` are required in production mode"),
            _ => bail!("`tls.cert` and `tls.key` must be given together"),
        };
        let d = self.database;
        let url = d
            .url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("trackgate.db").display()));
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !postgres && !url.starts_with("sqlite:") {
            bail!(
                "`database.url` must be a sqlite:// or postgres:// URL, not {:?}",
                trackgate_store::redact_url(&url)
            );
        }
        // Each backend's keys only with its URL, so a setting that would do nothing is not
        // silently ignored.
        let (theirs, other) = if postgres {
            (
                [
                    ("sqlite_synchronous", d.sqlite_synchronous.is_some()),
                    ("sqlite_cache_mib", d.sqlite_cache_mib.is_some()),
                    ("sqlite_wal_autocheckpoint", d.sqlite_wal_autocheckpoint.is_some()),
                ],
                "a postgres://",
            )
        } else {
            (
                [
                    ("postgres_ca", d.postgres_ca.is_some()),
                    ("postgres_client_cert", d.postgres_client_cert.is_some()),
                    ("postgres_client_key", d.postgres_client_key.is_some()),
                ],
                "a sqlite://",
            )
        };
        if let Some((key, _)) = theirs.iter().find(|(_, set)| *set) {
            bail!("`database.{key}` does not apply to {other} database.url");
        }
        if d.postgres_client_cert.is_some() != d.postgres_client_key.is_some() {
            bail!("`database.postgres_client_cert` and `database.postgres_client_key` must be given together");
        }
        let synchronous_full = match d.sqlite_synchronous.as_deref().unwrap_or("full") {
            "full" => true,
            "normal" => false,
            other => {
                bail!("`database.sqlite_synchronous` must be \"full\" or \"normal\", not {other:?}")
            }
        };
        let min_free_bytes = range(
            "database.min_free_bytes",
            d.min_free_bytes,
            100 * 1024 * 1024,
            0,
            1 << 50,
        )? as u64;
        let positions_days = range("ingest.retention_days", self.ingest.retention_days, 365, 1, 36_500)? as u32;
        let r = self.retention;
        let retention = trackgate_store::Retention {
            positions_days,
            min_positions_days: range(
                "retention.min_organization_days",
                r.min_organization_days,
                1,
                1,
                u64::from(positions_days),
            )? as u32,
            rejects_days: range("retention.rejects_days", r.rejects_days, 30, 1, 36_500)? as u32,
            batch_rows: range("retention.batch_rows", r.batch_rows, 5000, 100, 1_000_000)? as u32,
            audit_personal_days: range("retention.audit_personal_days", r.audit_personal_days, 30, 1, 36_500)? as u32,
            audit_days: range("retention.audit_days", r.audit_days, 730, 1, 36_500)? as u32,
        };
        let purge_interval =
            Duration::from_secs(range("retention.interval_secs", r.interval_secs, 3600, 1, 7 * 86_400)? as u64);
        let e = self.events;
        let events = crate::events::EventSettings {
            enabled: e.enabled.unwrap_or(true),
            settle: Duration::from_millis(range("events.settle_ms", e.settle_ms, 10_000, 0, 3_600_000)? as u64),
            interval: Duration::from_millis(range("events.interval_ms", e.interval_ms, 1000, 50, 60_000)? as u64),
            full_pass_every: Duration::from_secs(
                range("events.full_pass_secs", e.full_pass_secs, 60, 1, 86_400)? as u64
            ),
            rules: crate::events::Rules {
                geofence_margin_m: frange("events.geofence_margin_m", e.geofence_margin_m, 25.0, 0.0, 1000.0)?,
                max_speed_mps: frange("events.max_speed_mps", e.max_speed_mps, 300.0, 1.0, 10_000.0)?,
                ..Default::default()
            },
        };
        let a = self.alerts;
        let alerts = crate::alerts::AlertSettings {
            allow_private_destinations: a.allow_private_destinations.unwrap_or(false),
            webhook_ca: a.webhook_ca,
            webhook_timeout: Duration::from_secs(range(
                "alerts.webhook_timeout_secs",
                a.webhook_timeout_secs,
                10,
                1,
                120,
            )? as u64),
            retry_for: Duration::from_secs(
                range("alerts.retry_for_secs", a.retry_for_secs, 86_400, 10, 30 * 86_400)? as u64,
            ),
            max_backoff: Duration::from_secs(
                range("alerts.max_backoff_secs", a.max_backoff_secs, 600, 1, 86_400)? as u64
            ),
            interval: Duration::from_millis(range("alerts.interval_ms", a.interval_ms, 1000, 50, 60_000)? as u64),
            page_url: match (a.page_url, mode, &a.smtp) {
                (Some(url), _, _) => url,
                (None, Mode::Production, Some(_)) => {
                    bail!("`alerts.page_url` is required with `[alerts.smtp]`: the address e-mails link to")
                }
                (None, _, _) => format!("https://localhost:{}/", http.listen.port()),
            },
            email_per_recipient_per_hour: range(
                "alerts.email_per_recipient_per_hour",
                a.email_per_recipient_per_hour,
                20,
                1,
                10_000,
            )? as u32,
            smtp: a.smtp.map(smtp_settings).transpose()?,
        };
        let database = trackgate_store::OpenOptions {
            url,
            max_connections: range("database.max_connections", d.max_connections.map(u64::from), 8, 2, 256)? as u32,
            sqlite: trackgate_store::SqliteOptions {
                synchronous_full,
                cache_mib: range(
                    "database.sqlite_cache_mib",
                    d.sqlite_cache_mib.map(u64::from),
                    32,
                    1,
                    65_536,
                )? as u32,
                wal_autocheckpoint_pages: range(
                    "database.sqlite_wal_autocheckpoint",
                    d.sqlite_wal_autocheckpoint.map(u64::from),
                    10_000,
                    100,
                    10_000_000,
                )? as u32,
            },
            postgres: trackgate_store::PostgresOptions {
                ca_file: d.postgres_ca,
                client_cert: d.postgres_client_cert,
                client_key: d.postgres_client_key,
            },
            retention,
        };
        let i = self.ingest;
        let concurrent_batches = if postgres {
            range("ingest.concurrent_batches", i.concurrent_batches, 1, 1, 64)?
        } else {
            if let Some(n) = i.concurrent_batches.filter(|&n| n != 1) {
                bail!("`ingest.concurrent_batches` must be 1 with SQLite, which takes one writer at a time, not {n}");
            }
            1
        };
        let ingest = IngestConfig {
            concurrent_batches,
            queue_capacity: range("ingest.queue_capacity", i.queue_capacity, 100_000, 1, 100_000_000)?,
            batch_max_rows: range(
                "ingest.batch_max_rows",
                i.batch_max_rows,
                if postgres { 8000 } else { 2000 },
                1,
                100_000,
            )?,
            batch_linger: Duration::from_millis(
                range("ingest.batch_linger_ms", i.batch_linger_ms, 0, 0, 10_000)? as u64
            ),
            rejects_keep: range("ingest.rejects_keep", i.rejects_keep, 10_000, 0, 100_000_000)? as u64,
            key_refresh: Duration::from_millis(
                range("ingest.key_refresh_ms", i.key_refresh_ms, 1000, 50, 3_600_000)? as u64
            ),
            key_cache_max_entries: range(
                "ingest.key_cache_max_entries",
                i.key_cache_max_entries,
                200_000,
                100,
                100_000_000,
            )?,
            write_retry: Duration::from_secs(range("ingest.write_retry_secs", i.write_retry_secs, 30, 0, 3600)? as u64),
            stall_timeout: Duration::from_millis(range(
                "ingest.stall_timeout_ms",
                i.stall_timeout_ms,
                5000,
                100,
                600_000,
            )? as u64),
        };
        let largest = http.max_records.max(trackgate_proto::MAX_MQTT_ENVELOPES);
        if ingest.queue_capacity < largest {
            bail!(
                "`ingest.queue_capacity` ({}) must be at least {largest} (`http.max_records` and the MQTT payload limit), \
                 or a full request could never be queued",
                ingest.queue_capacity,
            );
        }
        let sec = self.security;
        let auth_throttle = AuthThrottle {
            per_minute: range(
                "security.auth_failures_per_minute",
                sec.auth_failures_per_minute,
                60,
                1,
                1_000_000,
            )? as u32,
            delay: Duration::from_millis(range(
                "security.auth_failure_delay_ms",
                sec.auth_failure_delay_ms,
                1000,
                0,
                60_000,
            )? as u64),
        };
        let master_key = match (master_key_env, sec.master_key_file) {
            (Some(hex), _) => MasterKeySource::Env(hex),
            (None, Some(file)) => MasterKeySource::File(file),
            (None, None) if mode == Mode::Dev => MasterKeySource::DevFile(data_dir.join("master.key")),
            (None, None) => bail!(
                "production mode needs a master key: set {} (64 hex characters) or `security.master_key_file` / {}",
                env::MASTER_KEY,
                env::MASTER_KEY_FILE
            ),
        };
        let log_format = match self.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("`log.format` must be \"text\" or \"json\", not {other:?}"),
        };
        if self.broker.is_some() {
            bail!(
                "`[broker]` is gone: trackgate's own MQTT endpoint replaced the embedded broker; \
                 configure `[mqtt_endpoint]` (enabled, listen) instead"
            );
        }
        let e = self.mqtt_endpoint;
        let mqtt_endpoint = if e.enabled.unwrap_or(false) {
            let limits = ConnectionLimits {
                max_connections: range(
                    "mqtt_endpoint.max_connections",
                    e.max_connections,
                    10_000,
                    1,
                    10_000_000,
                )?,
                max_connections_per_address: range(
                    "mqtt_endpoint.max_connections_per_address",
                    e.max_connections_per_address,
                    512,
                    1,
                    10_000_000,
                )?,
                ..http.limits.clone()
            };
            let max_packet_bytes = crate::sources::mqtt::MAX_PACKET_BYTES;
            Some(MqttEndpointConfig {
                listen: addr("mqtt_endpoint.listen", e.listen, "127.0.0.1:8883")?,
                session: crate::sources::mqtt::endpoint::SessionSettings {
                    connect_timeout: limits.handshake_timeout,
                    idle_timeout: Duration::from_millis(range(
                        "mqtt_endpoint.idle_timeout_ms",
                        e.idle_timeout_ms,
                        300_000,
                        1000,
                        86_400_000,
                    )? as u64),
                    receive_maximum: range("mqtt_endpoint.receive_maximum", e.receive_maximum, 1000, 1, 65_535)? as u16,
                    max_pending_bytes: range(
                        "mqtt_endpoint.max_pending_bytes",
                        e.max_pending_bytes,
                        16 * 1024 * 1024,
                        max_packet_bytes as u64,
                        1 << 40,
                    )?,
                    max_packet_bytes,
                    accept_qos0: e.accept_qos0.unwrap_or(false),
                    publish_rejections: e.publish_rejections.unwrap_or(true),
                },
                limits,
            })
        } else {
            None
        };
        let m = self.mqtt;
        let mqtt = if m.enabled.unwrap_or(false) {
            let filter = m.filter.unwrap_or_else(|| "devices/+/telemetry".to_owned());
            if !(filter.ends_with("devices/+/telemetry")) {
                bail!(
                    "`mqtt.filter` must be devices/+/telemetry or $share/<group>/devices/+/telemetry, not {filter:?}"
                );
            }
            let client_cert = match (m.client_cert, m.client_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => bail!("`mqtt.client_cert` and `mqtt.client_key` must be given together"),
            };
            if m.ca.is_none() && mode == Mode::Production {
                bail!("`mqtt.ca` is required in production mode: the CA that signs the broker's certificate");
            }
            Some(MqttConfig {
                host: m.host.unwrap_or_else(|| "localhost".to_owned()),
                port: range("mqtt.port", m.port.map(u64::from), 8883, 1, 65_535)? as u16,
                client_id: m.client_id.unwrap_or_else(|| "trackgate".to_owned()),
                username: m.username,
                password: match (mqtt_password_env, m.password_file) {
                    (Some(p), _) => MqttPassword::Env(p),
                    (None, Some(f)) => MqttPassword::File(f),
                    (None, None) => MqttPassword::None,
                },
                ca: m.ca,
                client_cert,
                filter,
                publish_rejections: m.publish_rejections.unwrap_or(true),
                keep_alive: Duration::from_secs(range("mqtt.keep_alive_secs", m.keep_alive_secs, 30, 5, 3600)? as u64),
                max_in_flight: range("mqtt.max_in_flight", m.max_in_flight, 1000, 1, 65_535)?,
            })
        } else {
            None
        };
        let auth = self.auth.validate(mode == Mode::Production)?;
        Ok(Config {
            auth,
            ui: self.ui.validate()?,
            mqtt_endpoint,
            mqtt,
            mode,
            data_dir,
            http,
            tls,
            ops_listen: addr("ops.listen", self.ops.listen, "127.0.0.1:9090")?,
            database,
            min_free_bytes,
            ingest,
            purge_interval,
            events,
            alerts,
            share_max_expiry: Duration::from_secs(range(
                "sharing.max_expiry_secs",
                self.sharing.max_expiry_secs,
                7 * 86_400,
                60,
                90 * 86_400,
            )? as u64),
            auth_throttle,
            master_key,
            grace_period: Duration::from_secs(range(
                "shutdown.grace_period_secs",
                self.shutdown.grace_period_secs,
                20,
                1,
                3600,
            )? as u64),
            log_format,
            log_level: self.log.level.unwrap_or_else(|| "info".to_owned()),
        })
    }
}

/// `[alerts.smtp]`, checked: a host and a sender; TLS always (`starttls` or `tls`).
fn smtp_settings(s: RawSmtp) -> anyhow::Result<crate::alerts::email::SmtpSettings> {
    let host = s
        .host
        .filter(|h| !h.trim().is_empty())
        .context("`alerts.smtp.host` is required")?;
    let implicit_tls = match s.tls.as_deref().unwrap_or("starttls") {
        "starttls" => false,
        "tls" => true,
        other => bail!("`alerts.smtp.tls` must be \"starttls\" or \"tls\", not {other:?}"),
    };
    let from = s
        .from
        .context("`alerts.smtp.from` is required (the sender, e.g. \"trackgate <alerts@example.com>\")")?;
    if from.parse::<lettre::message::Mailbox>().is_err() {
        bail!("`alerts.smtp.from` {from:?} is not a mailbox");
    }
    let password = match (s.password_env, &s.password_file) {
        (Some(p), _) => Some(p),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading `alerts.smtp.password_file` {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if password.is_some() != s.username.is_some() {
        bail!(
            "`alerts.smtp.username` and a password (`alerts.smtp.password_file` or {}) go together",
            env::SMTP_PASSWORD
        );
    }
    Ok(crate::alerts::email::SmtpSettings {
        host,
        port: s.port.unwrap_or(if implicit_tls { 465 } else { 587 }),
        implicit_tls,
        username: s.username,
        password,
        from,
        ca: s.ca,
        timeout: Duration::from_secs(range("alerts.smtp.timeout_secs", s.timeout_secs, 30, 1, 300)? as u64),
    })
}

fn range(key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> anyhow::Result<usize> {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        bail!("`{key}` must be between {min} and {max}, not {v}");
    }
    Ok(v as usize)
}

fn frange(key: &str, v: Option<f64>, default: f64, min: f64, max: f64) -> anyhow::Result<f64> {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        bail!("`{key}` must be between {min} and {max}, not {v}");
    }
    Ok(v)
}

impl Config {
    /// Load the file (or the embedded defaults), apply the environment, validate.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut raw = RawConfig::load(path)?;
        raw.apply_env(get);
        raw.validate_with(get(env::MASTER_KEY), get(env::MQTT_PASSWORD))
    }

    /// The service's positions retention in milliseconds, for `ts_out_of_range`.
    pub fn retention_ms(&self) -> u64 {
        u64::from(self.database.retention.positions_days) * 86_400_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> anyhow::Result<Config> {
        let raw: RawConfig = toml::from_str(toml)?;
        raw.validate(None)
    }

    #[test]
    fn the_embedded_defaults_are_a_working_dev_config() {
        let c = RawConfig::load(None).unwrap().validate(None).unwrap();
        assert_eq!(c.mode, Mode::Dev);
        assert!(c.tls.is_none());
        assert!(matches!(c.master_key, MasterKeySource::DevFile(_)));
        assert!(c.ops_listen.ip().is_loopback());
    }

    #[test]
    fn the_production_example_validates_with_a_master_key() {
        let text = include_str!("../../../config/production.example.toml");
        let raw: RawConfig = toml::from_str(text).unwrap();
        let c = raw.validate(Some("00".repeat(32))).unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert!(c.tls.is_some());
        assert!(c.ops_listen.ip().is_loopback());
    }

    #[test]
    fn retention_settings_reach_the_store_and_an_organizations_floor_is_under_the_service_retention() {
        let c = parse(
            "mode = \"dev\"\n[ingest]\nretention_days = 90\n[retention]\nmin_organization_days = 7\n\
             rejects_days = 14\ninterval_secs = 60\nbatch_rows = 1000",
        )
        .unwrap();
        let r = c.database.retention;
        assert_eq!(
            (r.positions_days, r.min_positions_days, r.rejects_days, r.batch_rows),
            (90, 7, 14, 1000)
        );
        assert_eq!(c.purge_interval, Duration::from_secs(60));
        assert_eq!(c.retention_ms(), 90 * 86_400_000);
        let e = parse("mode = \"dev\"\n[ingest]\nretention_days = 30\n[retention]\nmin_organization_days = 31")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`retention.min_organization_days` must be between 1 and 30, not 31");
    }

    #[test]
    fn events_settings_have_defaults_and_bounds() {
        let c = parse("mode = \"dev\"").unwrap();
        assert!(c.events.enabled);
        assert_eq!(c.events.settle, Duration::from_secs(10));
        assert_eq!(c.events.rules.geofence_margin_m, 25.0);
        let c = parse("mode = \"dev\"\n[events]\nenabled = false\nsettle_ms = 0\nmax_speed_mps = 80").unwrap();
        assert!(!c.events.enabled);
        assert_eq!((c.events.settle, c.events.rules.max_speed_mps), (Duration::ZERO, 80.0));
        let e = parse("mode = \"dev\"\n[events]\ninterval_ms = 10")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`events.interval_ms` must be between 50 and 60000, not 10");
        let e = parse("mode = \"dev\"\n[events]\nsettle = 5").unwrap_err().to_string();
        assert!(e.contains("settle"), "{e}");
    }

    #[test]
    fn smtp_settings_are_checked_and_the_password_never_printed() {
        let base = "mode = \"dev\"\n[alerts.smtp]\nhost = \"mail.example.com\"\n";
        let e = parse(base).unwrap_err().to_string();
        assert!(e.contains("`alerts.smtp.from` is required"), "{e}");
        let c = parse(&format!("{base}from = \"tg <a@example.com>\"\n")).unwrap();
        let smtp = c.alerts.smtp.unwrap();
        assert_eq!((smtp.port, smtp.implicit_tls), (587, false));
        let c = parse(&format!("{base}from = \"a@example.com\"\ntls = \"tls\"\n")).unwrap();
        assert_eq!(c.alerts.smtp.unwrap().port, 465);
        let e = parse(&format!("{base}from = \"a@example.com\"\ntls = \"none\"\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`alerts.smtp.tls` must be \"starttls\" or \"tls\", not \"none\"");
        let e = parse(&format!("{base}from = \"a@example.com\"\nusername = \"u\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("go together"), "{e}");
        let e = parse(&format!("{base}from = \"a@example.com\"\npassword = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("password"), "a password in the file is refused: {e}");
        // From the environment, and redacted when printed.
        let mut raw: RawConfig =
            toml::from_str(&format!("{base}from = \"a@example.com\"\nusername = \"u\"\n")).unwrap();
        raw.apply_env(|k| (k == env::SMTP_PASSWORD).then(|| "hunter2".to_owned()));
        let c = raw.validate(None).unwrap();
        let smtp = c.alerts.smtp.unwrap();
        assert_eq!(smtp.password.as_deref(), Some("hunter2"));
        assert!(!format!("{smtp:?}").contains("hunter2"));
        // Production needs the page e-mails link to.
        let text = include_str!("../../../config/production.example.toml")
            .replace(
                "[alerts]\n",
                "[alerts.smtp]\nhost = \"m\"\nfrom = \"a@example.com\"\n\n[alerts]\n",
            )
            .replace("page_url = ", "# page_url = ");
        let raw: RawConfig = toml::from_str(&text).unwrap();
        let e = raw.validate(Some("00".repeat(32))).unwrap_err().to_string();
        assert!(e.contains("`alerts.page_url` is required"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("mode = \"dev\"\n[http]\nlisten_on = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = parse("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("mode = \"dev\"\n[ingest]\nbatch_max_rows = 0")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`ingest.batch_max_rows` must be between 1 and 100000, not 0");
        let e = parse("mode = \"dev\"\n[http]\nlisten = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`http.listen` must be an address"), "{e}");
        let e = parse("mode = \"staging\"").unwrap_err().to_string();
        assert!(e.contains("`mode`"), "{e}");
        let e = parse("mode = \"dev\"\n[ingest]\nqueue_capacity = 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ingest.queue_capacity`"), "{e}");
    }

    #[test]
    fn database_keys_belong_to_their_backend() {
        let pg = "mode = \"dev\"\n[database]\nurl = \"postgres://tg:secret@db.internal/tg\"\n";
        let c = parse(&format!("{pg}postgres_ca = \"ca.pem\"")).unwrap();
        assert_eq!(c.database.postgres.ca_file.as_deref(), Some(Path::new("ca.pem")));
        let e = parse(&format!("{pg}sqlite_synchronous = \"full\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "`database.sqlite_synchronous` does not apply to a postgres:// database.url"
        );
        let e = parse(&format!("{pg}postgres_client_cert = \"c.pem\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`database.postgres_client_key`"), "{e}");
        let e = parse("mode = \"dev\"\n[database]\npostgres_ca = \"ca.pem\"")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "`database.postgres_ca` does not apply to a sqlite:// database.url");
        let ingest = parse(pg).unwrap().ingest;
        assert_eq!((ingest.concurrent_batches, ingest.batch_max_rows), (1, 8000));
        assert_eq!(parse("mode = \"dev\"").unwrap().ingest.batch_max_rows, 2000);
        assert_eq!(
            parse(&format!("{pg}\n[ingest]\nconcurrent_batches = 4\nbatch_max_rows = 500"))
                .map(|c| (c.ingest.concurrent_batches, c.ingest.batch_max_rows))
                .unwrap(),
            (4, 500)
        );
        let e = parse("mode = \"dev\"\n[ingest]\nconcurrent_batches = 2")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`ingest.concurrent_batches` must be 1 with SQLite"),
            "{e}"
        );
        let e = parse("mode = \"dev\"\n[database]\nurl = \"mysql://tg:hunter2@db/tg\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sqlite:// or postgres://") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn production_refuses_dev_conveniences() {
        let e = parse("mode = \"production\"").unwrap_err().to_string();
        assert!(e.contains("`tls.cert`"), "{e}");
        let e = parse("mode = \"production\"\n[tls]\ncert = \"c\"\nkey = \"k\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("master key"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut raw: RawConfig = toml::from_str("mode = \"dev\"").unwrap();
        raw.apply_env(|k| match k {
            env::HTTP_LISTEN => Some("127.0.0.1:0".into()),
            env::DATABASE_URL => Some("sqlite://elsewhere.db".into()),
            env::DATA_DIR => Some("/tmp/tg".into()),
            _ => None,
        });
        let c = raw.validate(None).unwrap();
        assert_eq!(c.http.listen.port(), 0);
        assert_eq!(c.database.url, "sqlite://elsewhere.db");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/tg"));
    }

    #[test]
    fn master_key_from_env_is_never_printed() {
        let c = parse("mode = \"dev\"").unwrap();
        let mut raw: RawConfig = toml::from_str("mode = \"dev\"").unwrap();
        raw.apply_env(|_| None);
        let with_env = raw.validate(Some("ab".repeat(32))).unwrap();
        assert!(!format!("{with_env:?}").contains(&"ab".repeat(32)));
        assert!(matches!(c.master_key, MasterKeySource::DevFile(_)));
    }
}
