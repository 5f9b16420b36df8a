//! A real Mosquitto broker for the MQTT tests: TLS on loopback with its own certificate,
//! per-device credentials written by `trackgate mqtt passwd-file`, the ACL patterns of
//! PROTOCOL.md §3, persistence on, and queue limits raised so nothing is dropped while trackgate
//! is down.

use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Server, free_port};

/// trackgate's own account on the broker.
pub const SERVICE_USER: &str = "trackgate";
pub const SERVICE_PASSWORD: &str = "service-password-for-tests";

pub struct Mosquitto {
    pub dir: PathBuf,
    pub port: u16,
    /// The CA clients trust: the broker's self-signed certificate.
    pub ca: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Start a broker in `dir` (created), with only trackgate's service account.
    pub fn start(dir: &Path) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
        std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
        // The service account is there from the start; devices are added by `set_passwd`.
        let status = Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(dir.join("passwd"))
            .args([SERVICE_USER, SERVICE_PASSWORD])
            .status()
            .context("mosquitto_passwd (Debian package mosquitto)")?;
        anyhow::ensure!(status.success(), "mosquitto_passwd failed");
        std::fs::write(
            dir.join("acl"),
            format!(
                "user {SERVICE_USER}\ntopic read devices/+/telemetry\ntopic write devices/+/rejections\n\n\
                 pattern write devices/%u/telemetry\npattern read devices/%u/rejections\n"
            ),
        )?;
        let port = free_port();
        // Started as root, Mosquitto switches to its own user, which cannot write persistence
        // or its log in this directory: the session would silently not survive a restart.
        let me = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_owned();
        let conf = format!(
            "user {me}\nper_listener_settings false\nallow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl\n\
             persistence true\npersistence_location {d}/\nautosave_interval 1\n\
             max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 100\n\
             log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             listener {port} 127.0.0.1\ncertfile {d}/cert.pem\nkeyfile {d}/key.pem\ntls_version tlsv1.2\n",
            d = dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf)?;
        let mut m = Mosquitto {
            dir: dir.into(),
            port,
            ca: dir.join("cert.pem"),
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (Debian package mosquitto, installed by .ci/run)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("mosquitto did not listen on {}:\n{}", self.port, self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Give the broker every device's credentials, derived by trackgate's own
    /// `mqtt passwd-file` from `server`'s database, plus the service account; reload it.
    pub fn load_credentials(&self, server: &Server) {
        let pw = self.dir.join("service-password");
        std::fs::write(&pw, SERVICE_PASSWORD).unwrap();
        let args = [
            "mqtt",
            "passwd-file",
            "--service-user",
            SERVICE_USER,
            "--service-password-file",
            pw.to_str().unwrap(),
        ];
        self.set_passwd(&server.ok(&args, None));
    }

    /// Replace the password file and make the broker reload it.
    pub fn set_passwd(&self, passwd: &str) {
        std::fs::write(self.dir.join("passwd"), passwd).unwrap();
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Stop (SIGTERM: persistence is written) and start again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// A handle for publishing to a broker started elsewhere (from another thread).
    pub fn connect_only(port: u16, ca: PathBuf) -> Mosquitto {
        Mosquitto {
            dir: PathBuf::new(),
            port,
            ca,
            child: None,
        }
    }

    /// Settings for a trackgate config (dotted keys) that consume from this broker.
    pub fn trackgate_settings(&self) -> String {
        let pw = self.dir.join("service-password");
        std::fs::write(&pw, SERVICE_PASSWORD).unwrap();
        format!(
            "mqtt.enabled = true\nmqtt.host = \"localhost\"\nmqtt.port = {}\nmqtt.ca = {:?}\nmqtt.username = \"{SERVICE_USER}\"\n\
             mqtt.password_file = {:?}\nmqtt.client_id = \"trackgate-test\"\n",
            self.port, self.ca, pw
        )
    }

    /// `mosquitto_pub` as a device: each line of `lines` is one message (QoS 1). Returns when
    /// the broker has acknowledged every message, or with its error.
    pub fn publish_lines(&self, user: &str, password: &str, topic: &str, lines: &[String]) -> Output {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.port.to_string(), "--cafile"])
            .arg(&self.ca)
            .args(["-u", user, "-P", password, "-t", topic, "-q", "1", "-l", "-i"])
            .arg(format!("pub-{user}-{}", std::process::id()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub runs (Debian package mosquitto-clients)");
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        // A publisher that hangs is a failure with the broker's side of the story, not a hang.
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(45));
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        });
        let out = child.wait_with_output().unwrap();
        drop(watchdog);
        if !out.status.success() {
            eprintln!(
                "mosquitto_pub as {user} failed: {}\nbroker log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        out
    }

    /// `mosquitto_pub -m` of one message.
    pub fn publish(&self, user: &str, password: &str, topic: &str, message: &str) -> Output {
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.port.to_string(), "--cafile"])
            .arg(&self.ca)
            .args(["-u", user, "-P", password, "-t", topic, "-q", "1", "-m", message])
            .output()
            .expect("mosquitto_pub runs (Debian package mosquitto-clients)")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
