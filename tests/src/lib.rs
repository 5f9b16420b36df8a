//! Harness for the end-to-end tests: the real `trackgate` binary, started in a temporary data
//! directory with listeners on `127.0.0.1:0`, real TLS (its dev certificate trusted by the
//! client), and the real SQLite file read back directly.
#![forbid(unsafe_code)]

pub mod browser;
pub mod idp;
pub mod mosquitto;
pub mod op;
pub mod pki;
pub mod postgres;
pub mod receivers;
pub mod sse;

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trackgate_proto::Secret;
use trackgate_proto::sign::{self, RequestParts};

/// Run `program` in `dir` as a user would there (no `TRACKGATE_CONFIG`: the embedded defaults),
/// asserting it succeeds; its standard output.
pub fn run_ok(dir: &Path, program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("TRACKGATE_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The `trackgate` binary: `TRACKGATE_BIN`, or the one cargo built beside this test.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TRACKGATE_BIN") {
        return p.into();
    }
    built("trackgate")
}

/// A workspace binary cargo built beside the running executable. A test runs from
/// target/<profile>/deps/, the benchmark harness from target/<profile>/.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable dir");
    let candidates = [dir.join(name), dir.parent().expect("target dir").join(name)];
    let found = candidates.iter().find(|p| p.exists());
    found
        .unwrap_or_else(|| {
            panic!(
                "{} not built: run the tests with `cargo nextest run --workspace`, which builds it",
                candidates[1].display()
            )
        })
        .clone()
}

/// A rustls client configuration that trusts the certificates in the PEM file `ca` (a server's
/// dev certificate), for tests that speak TLS below HTTP.
pub fn tls_client(ca: &Path, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("reading {}: {e}", ca.display()));
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable trust anchor");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    std::sync::Arc::new(config)
}

/// A port free on loopback right now (for listeners whose port must be known in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A key as the tests hold it: its wire name and its secret.
#[derive(Clone, Debug)]
pub struct Key {
    pub owner: String,
    pub kid: String,
    pub secret: Secret,
}

impl Key {
    pub fn new(owner: &str, kid: &str, hex: &str) -> Key {
        Key {
            owner: owner.into(),
            kid: kid.into(),
            secret: Secret::from_hex(hex).unwrap(),
        }
    }

    /// A fresh random-looking key derived from a label (deterministic, for reproducible tests).
    pub fn derived(owner: &str, kid: &str) -> Key {
        let digest = sign::record_signature(&Secret::from_bytes([7; 32]), format!("{owner}/{kid}").as_bytes());
        Key {
            owner: owner.into(),
            kid: kid.into(),
            secret: Secret::from_bytes(digest),
        }
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.owner, self.kid)
    }

    /// A signed envelope around `record` text, naming this key.
    pub fn envelope(&self, record: &str) -> String {
        sign::envelope(&self.secret, Some(&self.kid), record)
    }
}

/// A record text for `dev` with a current timestamp and a position.
pub fn record(dev: &str, seq: u64) -> String {
    format!(
        r#"{{"dev":"{dev}","seq":{seq},"ts":{},"lat":60.1699,"lon":24.9384,"spd":3.2,"bat":87}}"#,
        now_ms()
    )
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default, `data/trackgate.db`.
    Sqlite,
    /// A throwaway PostgreSQL cluster of the test's own (TLS, verified against its test CA).
    Postgres,
}

/// The database the test servers use.
pub const DATABASE: &str = "trackgate";

/// A running trackgate.
pub struct Server {
    pub dir: PathBuf,
    /// The PostgreSQL cluster it runs on, if not SQLite and if this server made it; it outlives
    /// restarts of the server.
    pub pg: Option<postgres::Postgres>,
    /// Its `database.url` when that is PostgreSQL (read from its config file).
    pub postgres_url: Option<String>,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub ops: SocketAddr,
    /// trackgate's own MQTT endpoint, when it is on.
    pub mqtt: Option<SocketAddr>,
    child: Option<Child>,
    log: PathBuf,
    ca: Vec<u8>,
}

impl Server {
    /// Start in `dir` (kept across restarts) with extra settings appended to the test config, as
    /// dotted keys (`ingest.batch_max_rows = 10`).
    pub fn start_in(dir: &Path, extra_toml: &str) -> anyhow::Result<Server> {
        Self::start_on(Backend::Sqlite, dir, extra_toml)
    }

    /// As [`Server::start_in`], on `backend`; on PostgreSQL, a cluster is made in `dir/pg`.
    pub fn start_on(backend: Backend, dir: &Path, extra_toml: &str) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("trackgate.toml");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let pg = postgres::Postgres::start(&dir.join("pg"))?;
                pg.create_database(DATABASE)?;
                Some(pg)
            }
        };
        if !config.exists() {
            let mut f = std::fs::File::create(&config)?;
            writeln!(
                f,
                "mode = \"dev\"\ndata_dir = {:?}\nhttp.listen = \"127.0.0.1:0\"\nops.listen = \"127.0.0.1:0\"\nlog.format = \"json\"\nlog.level = \"info\"\n",
                dir.join("data")
            )?;
            if let Some(pg) = &pg {
                writeln!(f, "database.url = {:?}", pg.url(DATABASE))?;
            }
            f.write_all(merge_note(extra_toml).as_bytes())?;
        }
        let mut server = Self::spawn(dir, &config)?;
        server.pg = pg;
        Ok(server)
    }

    /// Start exactly as the Quick start does (`trackgate serve`, embedded defaults, data in
    /// `dir/data`), with only the listen addresses moved off their fixed ports and JSON logs.
    pub fn start_defaults(dir: &Path, mqtt_port: u16) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("trackgate-{}.log", now_ms()));
        let child = Command::new(binary())
            .arg("serve")
            .current_dir(dir)
            .env_remove("TRACKGATE_MASTER_KEY")
            .env_remove("TRACKGATE_CONFIG")
            .env("TRACKGATE_HTTP_LISTEN", "127.0.0.1:0")
            .env("TRACKGATE_OPS_LISTEN", "127.0.0.1:0")
            .env("TRACKGATE_MQTT_LISTEN", format!("127.0.0.1:{mqtt_port}"))
            .env("TRACKGATE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning trackgate")?;
        Self::attach(dir, dir.join("no-config"), child, log)
    }

    fn spawn(dir: &Path, config: &Path) -> anyhow::Result<Server> {
        let log = dir.join(format!("trackgate-{}.log", now_ms()));
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(binary())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("TRACKGATE_MASTER_KEY")
            .env_remove("TRACKGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning trackgate")?;
        Self::attach(dir, config.into(), child, log)
    }

    fn attach(dir: &Path, config: PathBuf, child: Child, log: PathBuf) -> anyhow::Result<Server> {
        let postgres_url = std::fs::read_to_string(&config).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("database.url = "))
                .map(|v| v.trim().trim_matches('"').to_owned())
                .filter(|url| url.starts_with("postgres"))
        });
        let mut server = Server {
            dir: dir.into(),
            pg: None,
            postgres_url,
            config,
            https: "0.0.0.0:0".parse()?,
            ops: "0.0.0.0:0".parse()?,
            mqtt: None,
            child: Some(child),
            log,
            ca: Vec::new(),
        };
        server.wait_listening()?;
        server.ca = std::fs::read(dir.join("data/tls/dev-cert.pem"))?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let (mut https, mut ops, mut mqtt) = (None, None, None);
            for line in BufReader::new(std::fs::File::open(&self.log)?).lines() {
                let Ok(v) = serde_json::from_str::<Value>(&line?) else {
                    continue;
                };
                let f = &v["fields"];
                if f["message"] == "listening" {
                    let addr = f["addr"].as_str().unwrap_or_default().parse().ok();
                    match f["listener"].as_str() {
                        Some("https") => https = addr,
                        Some("ops") => ops = addr,
                        Some("mqtt") => mqtt = addr,
                        _ => {}
                    }
                }
            }
            if let (Some(h), Some(o)) = (https, ops) {
                (self.https, self.ops, self.mqtt) = (h, o, mqtt);
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("trackgate exited with {status} before listening:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("trackgate did not start listening within 60 s:\n{}", self.log_text())
    }

    /// Start again on the same data directory and config.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.stop_with("-KILL");
        let dir = self.dir.clone();
        let config = self.config.clone();
        let pg = self.pg.take();
        *self = Self::spawn(&dir, &config)?;
        self.pg = pg;
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether this value still owns a running process (not stopped or killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Send a signal (`-KILL`, `-TERM`) and wait for the exit; the exit code if there was one.
    pub fn stop_with(&mut self, signal: &str) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        Command::new("kill").arg(signal).arg(child.id().to_string()).status()?;
        Ok(child.wait()?.code())
    }

    /// Wait for the process to exit by itself; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.take().and_then(|mut c| c.wait().ok()?.code())
    }

    /// Run a CLI command against this server's config; stdin is fed if given.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(&self.config, args, stdin)
    }

    /// Provision `key.owner` as a supplier and give it `key`.
    pub fn add_supplier(&self, key: &Key) {
        self.ok(&["supplier", "add", &key.owner], None);
        self.import_key(key);
    }

    /// Provision a device, optionally under a supplier, and give it `key`.
    pub fn add_device(&self, key: &Key, supplier: Option<&str>) {
        let mut args = vec!["device", "add", &key.owner];
        if let Some(s) = supplier {
            args.extend(["--supplier", s]);
        }
        self.ok(&args, None);
        self.import_key(key);
    }

    pub fn import_key(&self, key: &Key) {
        self.ok(&["key", "import", &key.owner, &key.kid], Some(&key.secret.to_hex()));
    }

    /// An ID token from `trackgate dev-token` with `args` (`--email`, `--groups`, ...).
    pub fn dev_token(&self, args: &[&str]) -> String {
        let mut a = vec!["dev-token"];
        a.extend(args);
        self.ok(&a, None).trim().to_owned()
    }

    /// A user group `id` of `org` with `role` (`admin`, `viewer`) admitting by one membership
    /// rule: `rule` is the CLI's flag (`--email`, `--domain`, `--idp-group`, `--tenant`).
    pub fn add_user_group(&self, org: &str, id: &str, role: &str, rule: &str, value: &str) {
        self.ok(
            &[
                "user-group",
                "add",
                "--org",
                org,
                id,
                "--name",
                id,
                "--role",
                role,
                rule,
                value,
            ],
            None,
        );
    }

    /// Run a CLI command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "trackgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run a CLI command that must succeed and prints JSON lines; those values.
    pub fn json_lines(&self, args: &[&str]) -> Vec<serde_json::Value> {
        self.ok(args, None)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("trackgate {args:?} printed {l:?}: {e}")))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    /// An operators' API call with `token`, and a JSON body if given: the status and the JSON
    /// answer (`null` when it is not JSON).
    pub async fn api(
        &self,
        c: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = c.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// An HTTPS client that trusts this server's dev certificate.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// POST a body to /v1/records signed by `key` at the current time.
    pub async fn post(&self, client: &reqwest::Client, key: &Key, content_type: &str, body: &str) -> Reply {
        let ts = (now_ms() / 1000).to_string();
        self.post_at(client, key, content_type, body, &ts).await
    }

    /// POST `envelopes` as one JSON array through the vector supplier, now.
    pub async fn post_envelopes(&self, client: &reqwest::Client, envelopes: &[String]) -> Reply {
        let body = format!("[{}]", envelopes.join(","));
        self.post(client, &vector_supplier(), "application/json", &body).await
    }

    /// POST one record of `key`'s device with `seq`, signed by that key, now.
    pub async fn post_record(&self, client: &reqwest::Client, key: &Key, seq: u64) -> Reply {
        self.post(client, key, "application/json", &key.envelope(&record(&key.owner, seq)))
            .await
    }

    /// POST signed with an explicit `X-TG-Timestamp`.
    pub async fn post_at(&self, client: &reqwest::Client, key: &Key, ct: &str, body: &str, ts: &str) -> Reply {
        self.try_post_at(client, key, ct, body, ts).await.expect("request sent")
    }

    /// POST signed by `key` now; `None` when no answer came (the connection failed or was cut).
    pub async fn try_post(&self, client: &reqwest::Client, key: &Key, ct: &str, body: &str) -> Option<Reply> {
        let ts = (now_ms() / 1000).to_string();
        self.try_post_at(client, key, ct, body, &ts).await
    }

    async fn try_post_at(&self, client: &reqwest::Client, key: &Key, ct: &str, body: &str, ts: &str) -> Option<Reply> {
        post_signed(client, &self.url("/v1/records"), key, ct, body, ts).await
    }

    /// The status of `/readyz` (0 when the ops listener does not answer).
    pub async fn readyz(&self) -> u16 {
        match reqwest::get(format!("http://{}/readyz", self.ops)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Wait (at most `limit`, polling every 50 ms) until `/readyz` answers `status`; whether it did.
    pub async fn wait_readyz(&self, status: u16, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.readyz().await != status {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The metrics page as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series in the metrics page (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// The database, as a person with SQL access would read it: SQLite opened read-only, or
    /// PostgreSQL over TLS. Placeholders are `$1`, `$2`, ... on both.
    pub async fn db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match &self.postgres_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=ro", self.dir.join("data/trackgate.db").display()),
        };
        sqlx::AnyPool::connect(&url).await.expect("database opens")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_with("-KILL");
    }
}

fn merge_note(extra: &str) -> String {
    format!("# test overrides\n{extra}\n")
}

/// POST `body` to `url` (a `/v1/records` URL) signed by `key` with `X-TG-Timestamp: ts`; `None`
/// when no whole answer came (the connection failed or was cut).
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    key: &Key,
    ct: &str,
    body: &str,
    ts: &str,
) -> Option<Reply> {
    let parts = RequestParts {
        timestamp: ts,
        method: "POST",
        path: "/v1/records",
        body: body.as_bytes(),
    };
    let sig = hex::encode(sign::request_signature(&key.secret, &parts));
    let resp = client
        .post(url)
        .header("content-type", ct)
        .header("x-tg-key", key.name())
        .header("x-tg-timestamp", ts)
        .header("x-tg-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    Reply::try_from(resp).await
}

/// Run the CLI with a given config file.
pub fn run_cli(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("TRACKGATE_MASTER_KEY")
        .env_remove("TRACKGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the trackgate CLI");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The value of `series` (name with labels, exactly as exposed) in a metrics page.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Settings that turn trackgate's own MQTT endpoint on, on a free port (`Server::mqtt`).
pub const MQTT_ENDPOINT: &str = "mqtt_endpoint.enabled = true\nmqtt_endpoint.listen = \"127.0.0.1:0\"\n";

/// A response: status, headers of interest, JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    /// The response read whole; `None` if its body was cut off.
    async fn try_from(resp: reqwest::Response) -> Option<Reply> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.ok()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Some(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// `(accepted, duplicates)` of a 200.
    pub fn counts(&self) -> (u64, u64) {
        assert_eq!(self.status, 200, "{:?}", self.body);
        (
            self.body["accepted"].as_u64().unwrap(),
            self.body["duplicates"].as_u64().unwrap(),
        )
    }

    /// `[(index, reason)]` of a 200.
    pub fn rejected(&self) -> Vec<(u64, String)> {
        assert_eq!(self.status, 200, "{:?}", self.body);
        self.body["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_owned()))
            .collect()
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// The seqs stored for `device`.
pub async fn stored_seqs(server: &Server, device: &str) -> std::collections::BTreeSet<u64> {
    let db = server.db().await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM positions WHERE device_id = $1")
        .bind(device)
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    seqs.into_iter().map(|s| s as u64).collect()
}

/// Resident memory of a process in MB, from /proc.
/// GeoJSON files checked by the independent validator (`geojson/check.py`: the `geojson` package
/// from PyPI, and longitude first and in range); it prints `valid N` (features) when all are.
pub fn check_geojson<P: AsRef<Path>>(files: &[P]) -> Output {
    Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/geojson/check.py"))
        .args(files.iter().map(AsRef::as_ref))
        .output()
        .expect("python3 runs")
}

pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How many positions are stored, for one device or all.
pub async fn stored(db: &sqlx::AnyPool, device: Option<&str>) -> i64 {
    match device {
        Some(d) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM positions WHERE device_id = $1")
                .bind(d)
                .fetch_one(db)
                .await
        }
        None => sqlx::query_scalar("SELECT COUNT(*) FROM positions").fetch_one(db).await,
    }
    .unwrap()
}

/// Wait (polling every 10 ms, at most 30 s) until at least `n` positions are stored; the count.
/// Assertions on what was stored come after, so a timeout shows up as their failure.
pub async fn wait_for_stored(db: &sqlx::AnyPool, n: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = stored(db, None).await;
        if got >= n || std::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The well-known test device of PROTOCOL.md §5.
pub fn vector_device() -> Key {
    Key::new(
        "TRK-0001",
        "k1",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    )
}

/// The well-known test supplier of PROTOCOL.md §5.
pub fn vector_supplier() -> Key {
    Key::new(
        "ACME",
        "s1",
        "f0e0d0c0b0a090807060504030201000ffeeddccbbaa99887766554433221100",
    )
}

/// A started server with the §5 supplier and device provisioned, in a fresh temporary directory.
pub fn started(extra_toml: &str) -> (tempfile::TempDir, Server) {
    started_on(Backend::Sqlite, extra_toml)
}

/// As [`started`], on `backend`.
pub fn started_on(backend: Backend, extra_toml: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on(backend, dir.path(), extra_toml).unwrap();
    server.add_supplier(&vector_supplier());
    server.add_device(&vector_device(), Some("ACME"));
    (dir, server)
}

/// A `sqlite` and a `postgres` test of each named `async fn(Backend)`, in modules of those names.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::Backend::Postgres).await
            })*
        }
    };
}

/// Another client's transaction that keeps trackgate's writer from committing until released:
/// SQLite's write lock (`BEGIN IMMEDIATE`), or on PostgreSQL a SHARE lock on `positions`, which
/// inserts wait for.
pub enum WriteHold {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteHold {
    pub async fn take(server: &Server) -> WriteHold {
        use sqlx::Connection as _;
        match &server.postgres_url {
            None => {
                let url = format!("sqlite://{}", server.dir.join("data/trackgate.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
                WriteHold::Sqlite(c)
            }
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE positions IN SHARE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteHold::Postgres(c)
            }
        }
    }

    pub async fn release(self) {
        match self {
            WriteHold::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            WriteHold::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}
