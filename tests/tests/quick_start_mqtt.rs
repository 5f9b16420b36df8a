//! The Quick start run command alone takes MQTT: trackgate's own endpoint accepts a device's
//! `mosquitto_pub` over TLS with the credentials of PROTOCOL.md §3, and nothing else.

use std::process::Command;
use trackgate_e2e::*;
use trackgate_proto::sign::mqtt_password;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_pub(port: u16, ca: &std::path::Path, user: &str, password: &str, message: &str) -> std::process::Output {
    Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
        .arg(ca)
        .args([
            "-u",
            user,
            "-P",
            password,
            "-q",
            "1",
            "-t",
            &format!("devices/{user}/telemetry"),
            "-m",
            message,
        ])
        .output()
        .expect("mosquitto_pub runs (Debian package mosquitto-clients)")
}

#[tokio::test]
async fn the_quick_start_command_alone_accepts_mosquitto_pub_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_defaults(dir.path(), port).unwrap();
    // The CLI, too, runs on the embedded defaults from the same directory.
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(binary());
        c.args(args).current_dir(dir.path()).env_remove("TRACKGATE_CONFIG");
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dev = vector_device();
    cli(&["device", "add", "TRK-0001"], None);
    cli(&["key", "import", "TRK-0001", "k1"], Some(&dev.secret.to_hex()));

    let ca = dir.path().join("data/tls/dev-cert.pem");
    let password = mqtt_password(&dev.secret, "TRK-0001");
    let out = mosquitto_pub(port, &ca, "TRK-0001", &password, &dev.envelope(&record("TRK-0001", 1)));
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Wrong credentials are refused by the broker itself; nothing is published.
    let out = mosquitto_pub(
        port,
        &ca,
        "TRK-0001",
        &"0".repeat(64),
        &dev.envelope(&record("TRK-0001", 2)),
    );
    assert!(!out.status.success());
    let out = mosquitto_pub(port, &ca, "NOBODY", &password, &dev.envelope(&record("TRK-0001", 3)));
    assert!(!out.status.success());

    let db = server.db().await;
    wait_for_stored(&db, 1).await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM positions")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(seqs, [1]);
    assert_eq!(
        server
            .metric(r#"trackgate_records_total{outcome="accepted",transport="mqtt"}"#)
            .await,
        1.0
    );
}
