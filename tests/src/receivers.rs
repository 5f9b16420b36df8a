//! Receivers of what trackgate sends out, run as real servers: a webhook receiver over HTTPS
//! (Python's standard library, `tests/receivers/webhook.py`) on a certificate of its own test
//! CA, which checks every signature and logs every request; and an SMTP server (`aiosmtpd`,
//! `tests/receivers/smtp.py`) that takes mail over TLS only.

use crate::pki::{ServerCert, server_cert};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running webhook receiver on `127.0.0.1:port`, named `localhost` in its certificate.
pub struct WebhookReceiver {
    pub port: u16,
    pub tls: ServerCert,
    /// Rule id -> hex secret, read by the receiver on every request.
    pub secrets: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl WebhookReceiver {
    /// Start one in `dir` on a free port.
    pub fn start(dir: &Path) -> WebhookReceiver {
        std::fs::create_dir_all(dir).unwrap();
        let tls = server_cert(dir, "webhook", &["localhost"]);
        let mut r = WebhookReceiver {
            port: crate::free_port(),
            tls,
            secrets: dir.join("secrets.json"),
            log: dir.join("requests.jsonl"),
            child: None,
        };
        std::fs::write(&r.secrets, "{}").unwrap();
        r.up(200);
        r
    }

    /// Start the process (again, after [`WebhookReceiver::down`]), answering `status`.
    pub fn up(&mut self, status: u16) {
        self.down();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("receivers/webhook.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--cert")
            .arg(&self.tls.cert)
            .arg("--key")
            .arg(&self.tls.key)
            .arg("--secrets")
            .arg(&self.secrets)
            .arg("--log")
            .arg(&self.log)
            .arg("--status")
            .arg(status.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the webhook receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the webhook receiver did not start");
        self.child = Some(child);
    }

    /// Stop the process: connections are refused until [`WebhookReceiver::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Let the receiver verify rule `rule`'s signatures with `secret`.
    pub fn trust(&self, rule: &str, secret: &str) {
        let mut all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&self.secrets).unwrap()).unwrap();
        all.insert(rule.into(), secret.into());
        std::fs::write(&self.secrets, serde_json::Value::Object(all).to_string()).unwrap();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Wait until `n` requests (at least) were received; them.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// A running SMTP server (aiosmtpd) on `127.0.0.1:port`, named `localhost` in its certificate:
/// STARTTLS required, or TLS from the first byte.
pub struct SmtpReceiver {
    pub port: u16,
    pub tls: ServerCert,
    pub log: PathBuf,
    child: Child,
}

impl SmtpReceiver {
    /// Start one in `dir`; `implicit_tls` for TLS from the first byte, else STARTTLS.
    pub fn start(dir: &Path, implicit_tls: bool) -> SmtpReceiver {
        std::fs::create_dir_all(dir).unwrap();
        let tls = server_cert(dir, "smtp", &["localhost"]);
        let port = crate::free_port();
        let log = dir.join("messages.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("receivers/smtp.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .arg("--log")
            .arg(&log)
            .arg("--mode")
            .arg(if implicit_tls { "tls" } else { "starttls" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the SMTP server (aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the SMTP server did not start");
        SmtpReceiver { port, tls, log, child }
    }

    /// `[alerts.smtp]` settings (dotted keys) that reach this server.
    pub fn trackgate_settings(&self, implicit_tls: bool) -> String {
        format!(
            "alerts.smtp.host = \"localhost\"\nalerts.smtp.port = {}\nalerts.smtp.tls = {:?}\n\
             alerts.smtp.from = \"trackgate <alerts@trackgate.example>\"\nalerts.smtp.ca = {:?}\n",
            self.port,
            if implicit_tls { "tls" } else { "starttls" },
            self.tls.ca
        )
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Wait until `n` messages (at least) were received; them.
    pub async fn wait_messages(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
