//! The HTTPS listener speaks TLS 1.2 and 1.3 only, and nothing in the clear.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use trackgate_e2e::*;

fn s_client(server: &Server, version_flag: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.https.to_string(),
            version_flag,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn tls_1_1_is_refused_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let (ok, text) = s_client(&server, "-tls1_1");
    assert!(!ok, "a TLS 1.1 handshake succeeded:\n{text}");
    // The client offered TLS 1.1 and the server answered with an alert: refused by the server.
    assert!(text.contains("alert"), "no alert from the server:\n{text}");
    assert!(text.contains("Cipher is (NONE)"), "a session was established:\n{text}");
    let (ok, text) = s_client(&server, "-tls1");
    assert!(!ok, "a TLS 1.0 handshake succeeded:\n{text}");
    assert!(text.contains("Cipher is (NONE)"), "a session was established:\n{text}");
}

#[test]
fn tls_1_2_and_1_3_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    for (flag, proto) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(&server, flag);
        assert!(ok, "{flag} failed:\n{text}");
        assert!(text.contains(proto), "{flag}:\n{text}");
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let mut tcp = std::net::TcpStream::connect(server.https).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    tcp.write_all(b"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n[]")
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "answered in the clear: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Whatever came back is a TLS alert record (content type 21) or nothing at all.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
}
