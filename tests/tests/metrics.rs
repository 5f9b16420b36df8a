//! The ops listener: metrics that pass `promtool check metrics` and show what was sent.

use std::io::Write;
use std::process::{Command, Stdio};
use trackgate_e2e::*;

#[tokio::test]
async fn a_scrape_after_traffic_passes_promtool_and_shows_the_counts() {
    let (_dir, server) = started("");
    let (dev, sup, c) = (vector_device(), vector_supplier(), server.client());
    let good: Vec<String> = (1..=5).map(|s| dev.envelope(&record("TRK-0001", s))).collect();
    let bad = dev.envelope(&record("TRK-0001", 6)).replace("\"seq\":6", "\"seq\":60");
    let body = format!("[{},{bad}]", good.join(","));
    assert_eq!(server.post(&c, &sup, "application/json", &body).await.counts(), (5, 0));
    assert_eq!(
        server.post(&c, &sup, "application/json", &good[0]).await.counts(),
        (0, 1)
    );
    assert_eq!(server.post(&c, &sup, "text/plain", "[]").await.status, 415);

    let page = server.metrics().await;
    let check = |series: &str| metric_value(&page, series);
    assert_eq!(
        check(r#"trackgate_records_total{outcome="accepted",transport="https"}"#),
        5.0
    );
    assert_eq!(
        check(r#"trackgate_records_total{outcome="duplicate",transport="https"}"#),
        1.0
    );
    assert_eq!(
        check(r#"trackgate_records_total{outcome="rejected",transport="https"}"#),
        1.0
    );
    assert_eq!(
        check(r#"trackgate_rejections_total{reason="bad_signature",transport="https"}"#),
        1.0
    );
    assert_eq!(check(r#"trackgate_http_requests_total{status="200"}"#), 2.0);
    assert_eq!(check(r#"trackgate_http_requests_total{status="415"}"#), 1.0);
    assert_eq!(
        check("trackgate_batch_rows_sum"),
        6.0,
        "5 new rows and 1 duplicate were written"
    );
    assert!(check(r#"trackgate_commit_duration_seconds_count{backend="sqlite"}"#) >= 2.0);
    assert_eq!(check("trackgate_queue_depth"), 0.0);
    assert_eq!(check("trackgate_queue_capacity"), 100_000.0);
    assert!(page.contains("# HELP trackgate_database_errors_total"));
    assert!(page.contains("# TYPE trackgate_db_pool_waits_total counter"));
    assert!(page.contains("# TYPE trackgate_db_pool_wait_seconds_total counter"));
    // The pool: trackgate's SQLite pool opens at most max(pool_size, 2) connections.
    assert!(check(r#"trackgate_db_connections{state="max"}"#) >= 2.0);
    assert!(
        check(r#"trackgate_db_connections{state="idle"}"#) + check(r#"trackgate_db_connections{state="in_use"}"#)
            >= 1.0
    );
    assert!(!page.contains("TRK-0001"), "no device ids in labels");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus, installed by .ci/run)");
    promtool.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics failed:\n{said}");
    assert!(said.trim().is_empty(), "promtool has remarks:\n{said}");
}

#[tokio::test]
async fn health_and_readiness() {
    let (_dir, server) = started("");
    let h = reqwest::get(format!("http://{}/healthz", server.ops)).await.unwrap();
    assert_eq!(h.status(), 200);
    let r = reqwest::get(format!("http://{}/readyz", server.ops)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(server.ops.ip().is_loopback());
}
