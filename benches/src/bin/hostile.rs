//! Hostile clients, measured: N idle TLS connections and M slow-body connections against a
//! release trackgate, while a legitimate device (from an address of its own) keeps posting.
//! Prints trackgate's resident memory before, during and after, the connections it holds, and the
//! legitimate requests by status.
//!
//! ```sh
//! target/release/hostile 20000 300 1      # one hostile address, default limits
//! target/release/hostile 15000 300 all    # one address per 400 connections, caps raised so
//!                                         # that every connection is held (the worst case)
//! ```
//!
//! Both processes need a descriptor per held connection: with `all`, the idle count must stay
//! under the file-descriptor hard limit (`ulimit -Hn`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use trackgate_e2e::*;

/// Loopback source address number `i` (127.1.x.y).
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn connector(server: &Server) -> TlsConnector {
    TlsConnector::from(tls_client(&server.dir.join("data/tls/dev-cert.pem"), &[b"http/1.1"]))
}

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn open(server: &Server, tls: &TlsConnector, from: IpAddr) -> Option<Conn> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let tcp = socket.connect(server.https).await.ok()?;
    tls.connect("localhost".try_into().unwrap(), tcp).await.ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let idle: usize = args.next().map_or(15_000, |a| a.parse().expect("idle connections"));
    let slow: usize = args.next().map_or(300, |a| a.parse().expect("slow-body connections"));
    let spread = args.next().is_some_and(|a| a == "all");
    // Which hostile address the i-th connection comes from.
    let hostile = |i: usize| if spread { source(i / 400) } else { source(0) };
    let dir = tempfile::tempdir().unwrap();
    // The idle timeout is raised so that connections stay for the measurement; with `all` the
    // total cap is raised too, so that every connection is held.
    let settings = if spread {
        "http.max_connections = 30000\nhttp.idle_timeout_ms = 600000"
    } else {
        "http.idle_timeout_ms = 600000"
    };
    let server = Server::start_in(dir.path(), settings).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("data/tls/dev-cert.pem")).unwrap()).unwrap(),
        )
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1)))
        .build()
        .unwrap();
    let dev = vector_device();
    server.add_device(&dev, None);
    let pid = server.pid();
    let mut seq = 0u64;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut post = async |statuses: &mut BTreeMap<u16, u64>| {
        seq += 1;
        let reply = server
            .try_post(
                &client,
                &dev,
                "application/json",
                &dev.envelope(&record("TRK-0001", seq)),
            )
            .await;
        *statuses.entry(reply.map_or(0, |r| r.status)).or_default() += 1;
    };
    for _ in 0..20 {
        post(&mut statuses).await;
    }
    let before = rss_mb(pid);
    let tls = connector(&server);

    let started = Instant::now();
    let mut held = Vec::with_capacity(idle + slow);
    // Connections the server refused at once: closed before their handshake completed.
    let mut failed = 0;
    for i in 0..idle {
        match open(&server, &tls, hostile(i)).await {
            Some(c) => held.push(c),
            None => failed += 1,
        }
        if i % 2000 == 1999 {
            post(&mut statuses).await;
        }
    }
    let idle_open = held.len();
    let after_idle = rss_mb(pid);
    println!(
        "{idle} idle TLS connections tried, {idle_open} held, {failed} refused, in {:.1} s; RSS {before:.0} MB -> {after_idle:.0} MB",
        started.elapsed().as_secs_f64()
    );

    // Slow bodies: a known key, 4 MiB declared, all but 200 bytes sent, a wrong signature.
    let mut slow_open = 0;
    for i in 0..slow {
        let Some(mut c) = open(&server, &tls, if spread { source(100 + i) } else { source(0) }).await else {
            continue;
        };
        let head = format!(
            "POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 4194304\r\nX-TG-Key: TRK-0001/k1\r\nX-TG-Timestamp: {}\r\nX-TG-Signature: {}\r\n\r\n",
            now_ms() / 1000,
            "00".repeat(32)
        );
        let body = vec![b' '; 4 * 1024 * 1024 - 200];
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            c.write_all(head.as_bytes()).await?;
            c.write_all(&body).await?;
            c.flush().await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            slow_open += 1;
        }
        held.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_mb(pid);
    let open_metric = server.metric("trackgate_connections_open{listener=\"https\"}").await;
    let mut during_statuses = BTreeMap::new();
    for _ in 0..50 {
        post(&mut during_statuses).await;
    }
    println!(
        "+ {slow} slow bodies ({slow_open} sent their 4 MiB - 200 B): trackgate holds {open_metric} connections, RSS {during:.0} MB; \
         50 legitimate requests meanwhile by status {during_statuses:?}"
    );
    let refused = server.metrics().await;
    let unavailable = metric_value(&refused, "trackgate_http_requests_total{status=\"503\"}");
    println!("answered 503 (unverified-byte budget): {unavailable}");
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "after they leave: RSS {:.0} MB; legitimate requests before and between by status {statuses:?}",
        rss_mb(pid)
    );
}
