//! Hostile and careless clients against the real binary: what one client can hold (connections,
//! time, unverified bytes) is bounded, and legitimate devices keep being served meanwhile.
//!
//! Clients use several loopback source addresses (127.0.0.0/8 is all loopback on Linux), so the
//! per-address caps can be told apart from the total ones.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use trackgate_e2e::*;

const JSON: &str = "application/json";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// TCP from `from` to the server's HTTPS port.
async fn tcp_from(server: &Server, from: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(server.https).await
}

/// A TLS connection from `from` that trusts the server's dev certificate, offering `alpn`.
async fn tls_from(server: &Server, from: IpAddr, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let config = tls_client(&server.dir.join("data/tls/dev-cert.pem"), &[alpn]);
    let tcp = tcp_from(server, from).await?;
    TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// Read until the server closes the connection (or resets it); how long that took. Fails the test
/// past `limit`.
async fn closed_within(conn: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// A client bound to `from`, trusting the server.
fn client_from(server: &Server, from: IpAddr) -> reqwest::Client {
    let pem = std::fs::read(server.dir.join("data/tls/dev-cert.pem")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Headers of a signed-looking request from the vector device (the signature is wrong: the body
/// never arrives whole anyway).
fn declared_post(key_name: &str, length: usize) -> String {
    format!(
        "POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nX-TG-Key: {key_name}\r\nX-TG-Timestamp: {}\r\n\
         X-TG-Signature: {}\r\n\r\n",
        now_ms() / 1000,
        "00".repeat(32)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_http_1_and_http_2() {
    let (_dir, server) = started("http.idle_timeout_ms = 1000");
    let me = ip("127.0.0.1");

    // HTTP/1.1, never a request.
    let mut silent = tls_from(&server, me, b"http/1.1").await.unwrap();
    closed_within(&mut silent, Duration::from_secs(10)).await;

    // HTTP/1.1 keep-alive after one request.
    let mut kept = tls_from(&server, me, b"http/1.1").await.unwrap();
    kept.write_all(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut kept, Duration::from_secs(10)).await;
    assert!(got.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&got));

    // HTTP/2: the preface and an empty SETTINGS frame, then nothing.
    let mut h2 = tls_from(&server, me, b"h2").await.unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let (_, got) = closed_within(&mut h2, Duration::from_secs(10)).await;
    // The server's frames end with a GOAWAY (type 7) before it closes.
    assert!(got.windows(4).any(|w| w[3] == 7), "no GOAWAY in {got:?}");

    assert!(
        server
            .metric("trackgate_connections_closed_total{listener=\"https\",reason=\"idle\"}")
            .await
            >= 3.0
    );
    // Still serving.
    let dev = vector_device();
    let c = server.client();
    assert_eq!(server.post_record(&c, &dev, 1).await.counts(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_timed_out_and_a_key_that_names_nothing_is_refused_unread() {
    let (_dir, server) =
        started("http.body_timeout_ms = 1000\nhttp.min_body_bytes_per_second = 1000000\nhttp.idle_timeout_ms = 600000");
    let me = ip("127.0.0.1");

    let mut slow = tls_from(&server, me, b"http/1.1").await.unwrap();
    slow.write_all(declared_post("TRK-0001/k1", 100_000).as_bytes())
        .await
        .unwrap();
    slow.write_all(b"[{\"m\":").await.unwrap();
    let (_, got) = closed_within(&mut slow, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    assert!(
        server
            .metric("trackgate_connections_closed_total{listener=\"https\",reason=\"body_timeout\"}")
            .await
            >= 1.0
    );

    // A key that names no active key: 401 before a byte of the declared 4 MiB body is read.
    let mut unknown = tls_from(&server, me, b"http/1.1").await.unwrap();
    unknown
        .write_all(declared_post("NOBODY/k9", 4 * 1024 * 1024).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(15), unknown.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("\"error\":\"unauthorized\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_the_excess_and_other_addresses_are_served() {
    let (_dir, server) = started("http.max_connections_per_address = 20\nhttp.max_connections = 40");
    let hog = ip("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tls_from(&server, hog, b"http/1.1").await.unwrap());
    }
    // The 21st from the same address is closed before its handshake completes.
    let refused = tls_from(&server, hog, b"http/1.1").await;
    assert!(refused.is_err(), "a 21st connection from one address was served");
    assert!(
        server
            .metric("trackgate_connections_closed_total{listener=\"https\",reason=\"limit_address\"}")
            .await
            >= 1.0
    );

    // Another address is served while the first holds its 20.
    let dev = vector_device();
    let c = client_from(&server, ip("127.0.0.3"));
    assert_eq!(server.post_record(&c, &dev, 1).await.counts(), (1, 0));
    // Total cap: 20 more from a third address fill it; the next one from anywhere is refused.
    for _ in 0..19 {
        held.push(tls_from(&server, ip("127.0.0.4"), b"http/1.1").await.unwrap());
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut more = Vec::new();
    while let Ok(conn) = tls_from(&server, ip("127.0.0.5"), b"http/1.1").await {
        more.push(conn);
        assert!(more.len() <= 2, "the total cap of 40 does not hold");
    }
    assert!(
        server
            .metric("trackgate_connections_closed_total{listener=\"https\",reason=\"limit_total\"}")
            .await
            >= 1.0
    );
    let open = server.metric("trackgate_connections_open{listener=\"https\"}").await;
    assert!(open <= 40.0, "{open} open");
    drop((held, more));
    // Given back: served again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client_from(&server, ip("127.0.0.6"));
    assert_eq!(server.post_record(&c, &dev, 2).await.counts(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_bodies_are_bounded_in_bytes_and_others_are_served() {
    // 256 KiB bodies; one address may hold 1 MiB unverified, everyone 2 MiB.
    let (_dir, server) = started(
        "http.max_body_bytes = 262144\nhttp.unverified_body_bytes_per_address = 1048576\n\
         http.unverified_body_bytes = 2097152\nhttp.body_timeout_ms = 60000\nhttp.idle_timeout_ms = 600000",
    );
    let before = rss_mb(server.pid());
    // 60 connections from two addresses each declare 256 KiB, send all but 100 bytes and stop.
    let mut stalled = Vec::new();
    let mut answered = Vec::new();
    for i in 0..60 {
        let from = ip(if i % 2 == 0 { "127.0.0.7" } else { "127.0.0.8" });
        let mut conn = tls_from(&server, from, b"http/1.1").await.unwrap();
        conn.write_all(declared_post("TRK-0001/k1", 262_144).as_bytes())
            .await
            .unwrap();
        let sent = conn.write_all(&vec![b' '; 262_044]).await;
        // Refused connections answer 503 and may close while we are still writing.
        let mut buf = vec![0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answered.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ if sent.is_err() => answered.push(String::new()),
            _ => stalled.push(conn),
        }
    }
    // At most 1 MiB per address is held: 4 bodies of 256 KiB each for the two addresses.
    assert!(stalled.len() <= 8, "{} bodies held unverified", stalled.len());
    assert!(
        answered
            .iter()
            .filter(|a| !a.is_empty())
            .all(|a| a.starts_with("HTTP/1.1 503")),
        "{answered:?}"
    );
    let grown = (rss_mb(server.pid()) - before).max(0.0);
    println!(
        "60 slow bodies of 256 KiB: {} held, {} refused; RSS grew by {grown:.1} MB",
        stalled.len(),
        answered.len(),
    );
    // Unbounded, 60 x 256 KiB would be 15 MiB of bodies alone.
    assert!(grown < 12.0, "RSS grew by {grown} MB");

    // A legitimate device from a third address is served meanwhile.
    let dev = vector_device();
    let c = client_from(&server, ip("127.0.0.9"));
    assert_eq!(server.post_record(&c, &dev, 1).await.counts(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_signatures_are_throttled_per_address_and_valid_devices_are_not() {
    let (_dir, server) = started("security.auth_failures_per_minute = 5\nsecurity.auth_failure_delay_ms = 200");
    let dev = vector_device();
    let wrong = Key::derived("TRK-0001", "k1");
    let c = client_from(&server, ip("127.0.0.10"));
    for seq in 0..12 {
        let r = server
            .post(&c, &wrong, JSON, &dev.envelope(&record("TRK-0001", seq)))
            .await;
        assert_eq!((r.status, r.error()), (401, "unauthorized"));
        // The device itself, from the same address, is never held back.
        let ok = server
            .post(&c, &dev, JSON, &dev.envelope(&record("TRK-0001", 100 + seq)))
            .await;
        assert_eq!(ok.counts(), (1, 0));
    }
    assert_eq!(
        server
            .metric("trackgate_auth_failures_total{transport=\"https\"}")
            .await,
        12.0
    );
    assert_eq!(
        server
            .metric("trackgate_auth_throttled_total{transport=\"https\"}")
            .await,
        7.0
    );
    let log = server.log_text();
    assert_eq!(
        log.matches("authentication failures over the limit").count(),
        1,
        "logged once per episode:\n{log}"
    );
}
