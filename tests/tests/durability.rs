//! Nothing acknowledged is lost and nothing refused is stored: across `kill -9`, across a
//! graceful shutdown, and when the queue is full.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use trackgate_e2e::*;

const JSON: &str = "application/json";

/// What the senders saw: seqs acknowledged stored (200 accepted or duplicate), seqs refused
/// (rejected in a 200, or in a 503 which stores nothing).
#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    refused: BTreeSet<u64>,
    unavailable: u64,
}

/// Post batches of 20 good records and 1 bad-signature record from `workers` tasks until a
/// request fails (the server is gone) or `batches` per worker are sent.
async fn traffic(server: &Server, workers: u64, batches: u64, base: u64, seen: Arc<Mutex<Seen>>) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (c, https, seen) = (server.client(), server.https, seen.clone());
        tasks.push(tokio::spawn(async move {
            let (dev, sup) = (vector_device(), vector_supplier());
            for b in 0..batches {
                let first = base + (w * batches + b) * 100;
                let good: Vec<u64> = (first..first + 20).collect();
                let bad = first + 50;
                let mut envs: Vec<String> = good.iter().map(|&s| dev.envelope(&record("TRK-0001", s))).collect();
                // Changed after signing: a bad signature.
                envs.push(
                    dev.envelope(&record("TRK-0001", bad))
                        .replace("\"bat\":87", "\"bat\":88"),
                );
                let body = format!("[{}]", envs.join(","));
                let ts = (now_ms() / 1000).to_string();
                let parts = trackgate_proto::sign::RequestParts {
                    timestamp: &ts,
                    method: "POST",
                    path: "/v1/records",
                    body: body.as_bytes(),
                };
                let sig = hex::encode(trackgate_proto::sign::request_signature(&sup.secret, &parts));
                let resp = c
                    .post(format!("https://localhost:{}/v1/records", https.port()))
                    .header("content-type", JSON)
                    .header("x-tg-key", sup.name())
                    .header("x-tg-timestamp", &ts)
                    .header("x-tg-signature", sig)
                    .body(body)
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                let status = resp.status().as_u16();
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let mut seen = seen.lock().unwrap();
                match status {
                    200 => {
                        assert_eq!(
                            v["accepted"].as_u64().unwrap() + v["duplicates"].as_u64().unwrap(),
                            20,
                            "{v}"
                        );
                        assert_eq!(v["rejected"][0]["reason"], "bad_signature");
                        seen.acked.extend(&good);
                        seen.refused.insert(bad);
                    }
                    503 => {
                        seen.unavailable += 1;
                        seen.refused.extend(&good);
                        seen.refused.insert(bad);
                        return;
                    }
                    other => panic!("unexpected status {other}: {v}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Wait until at least `n` seqs are acknowledged.
async fn until_acked(seen: &Arc<Mutex<Seen>>, n: usize) {
    for _ in 0..600 {
        if seen.lock().unwrap().acked.len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("traffic never reached {n} acknowledged records");
}

async fn records_acknowledged_before_kill_9_are_all_there_after_restart(backend: Backend) {
    let (_dir, mut server) = started_on(backend, "");
    for round in 0..2u64 {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = round * 100_000_000;
        // The traffic runs while the killer pulls the server from under it.
        let sender = traffic(&server, 4, 100_000, base, seen.clone());
        let killer = async {
            until_acked(&seen, 1000 + round as usize * 500).await;
            let pid = server.pid();
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        };
        tokio::join!(sender, killer);
        server.restart().unwrap();
        let stored = stored_seqs(&server, "TRK-0001").await;
        let seen = seen.lock().unwrap();
        let lost: Vec<_> = seen.acked.difference(&stored).take(10).collect();
        assert!(lost.is_empty(), "round {round}: acknowledged but not stored: {lost:?}");
        let leaked: Vec<_> = seen.refused.intersection(&stored).take(10).collect();
        assert!(leaked.is_empty(), "round {round}: refused but stored: {leaked:?}");
        assert!(seen.acked.len() >= 1000);
    }
}

async fn sigterm_drains_commits_and_answers_before_exit(backend: Backend) {
    let (_dir, mut server) = started_on(backend, "shutdown.grace_period_secs = 30");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sender = traffic(&server, 4, 100_000, 0, seen.clone());
    let stopper = async {
        until_acked(&seen, 1000).await;
        std::process::Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status()
            .unwrap();
    };
    tokio::join!(sender, stopper);
    let code = server.wait();
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{}", server.log_text());
    assert!(server.log_text().contains("shut down cleanly"));
    server.restart().unwrap();
    let stored = stored_seqs(&server, "TRK-0001").await;
    let seen = seen.lock().unwrap();
    assert!(seen.acked.is_subset(&stored), "an acknowledged record is missing");
    assert!(seen.refused.is_disjoint(&stored), "a refused record was stored");
}

async fn a_full_queue_answers_503_and_stores_nothing_of_that_request(backend: Backend) {
    // The stall timeout is out of the way: this test is about the full queue, not the stalled store.
    let (_dir, server) = started_on(
        backend,
        "ingest.queue_capacity = 1000\nhttp.max_records = 1000\ningest.write_retry_secs = 120\ningest.stall_timeout_ms = 600000",
    );
    let (dev, sup) = (vector_device(), vector_supplier());
    let batch = |from: u64| {
        format!(
            "[{}]",
            (from..from + 600)
                .map(|s| dev.envelope(&record("TRK-0001", s)))
                .collect::<Vec<_>>()
                .join(",")
        )
    };

    // Hold the database so the writer cannot commit: request A waits in the queue.
    let lock = WriteHold::take(&server).await;

    let c = server.client();
    let body_a = batch(0);
    let a = {
        let (c, sup) = (c.clone(), sup.clone());
        let s = &server;
        async move { s.post(&c, &sup, JSON, &body_a).await }
    };
    let b = async {
        for _ in 0..600 {
            if server.metric("trackgate_queue_depth").await >= 600.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(server.metric("trackgate_queue_depth").await, 600.0);
        let reply = server.post(&c, &sup, JSON, &batch(10_000)).await;
        lock.release().await;
        reply
    };
    let (a, b) = tokio::join!(a, b);
    assert_eq!((b.status, b.error()), (503, "unavailable"), "{:?}", b.body);
    assert_eq!(b.retry_after.as_deref(), Some("1"));
    assert_eq!(
        a.counts(),
        (600, 0),
        "the queued request commits once the database is free"
    );
    let db = server.db().await;
    assert_eq!(stored(&db, None).await, 600);
    let leaked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM positions WHERE seq >= 10000")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(leaked, 0, "nothing of the refused request is stored");
    // Retried later, it goes through.
    assert_eq!(server.post(&c, &sup, JSON, &batch(10_000)).await.counts(), (600, 0));
}

trackgate_e2e::on_both_backends!(
    records_acknowledged_before_kill_9_are_all_there_after_restart,
    sigterm_drains_commits_and_answers_before_exit,
    a_full_queue_answers_503_and_stores_nothing_of_that_request,
);
