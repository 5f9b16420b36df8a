//! The queue's admission rule and the writer's batching, acks and drain, against a real SQLite
//! file in a temporary directory.

use super::*;
use crate::metrics::Metrics;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trackgate_proto::Measurement;
use trackgate_store::{MasterKey, OpenOptions, Outcome, Row, SqliteOptions, Store};

fn rows(dev: &str, seqs: std::ops::Range<i64>) -> Vec<Row> {
    seqs.map(|seq| Row {
        device_id: dev.into(),
        seq,
        ts: seq,
        measurement: Measurement {
            lat: Some(1.0),
            lon: Some(2.0),
            ..Measurement::default()
        },
        ext: None,
        record: format!("{dev}/{seq}"),
        kid: "k1".into(),
        received_ms: 0,
    })
    .collect()
}

fn source() -> Source {
    Source {
        transport: "https",
        key_name: None,
    }
}

fn index(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

async fn store(dir: &std::path::Path) -> Store {
    let opts = OpenOptions {
        url: format!("sqlite://{}", dir.join("t.db").display()),
        max_connections: 2,
        sqlite: SqliteOptions {
            synchronous_full: false,
            ..Default::default()
        },
        postgres: Default::default(),
        retention: Default::default(),
    };
    Store::open(&opts, MasterKey::from_bytes(&[3; 32])).await.unwrap()
}

/// The writer over `store`, running until the returned token is cancelled.
fn start_writer(
    store: &Store,
    rx: tokio::sync::mpsc::UnboundedReceiver<super::Submission>,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    settings: WriterSettings,
    queue: &Queue,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let drain = CancellationToken::new();
    let writer = Writer::new(store.clone(), rx, permits, metrics, settings, queue.health().clone());
    (tokio::spawn(writer.run(drain.clone())), drain)
}

fn health() -> std::sync::Arc<StoreHealth> {
    std::sync::Arc::new(StoreHealth::new(Duration::from_secs(60), Metrics::new()))
}

fn settings(max_rows: usize) -> WriterSettings {
    WriterSettings {
        batch_max_rows: max_rows,
        batch_linger: Duration::from_millis(50),
        write_retry: Duration::from_secs(1),
        rejects_keep: 100,
        concurrent_batches: 1,
    }
}

#[tokio::test]
async fn admission_is_whole_or_nothing() {
    let (queue, _rx, permits) = Queue::new(10, Metrics::new(), health());
    let a = queue.try_submit(rows("A", 0..6), index(6), vec![], source());
    assert!(a.is_ok());
    assert_eq!(permits.available_permits(), 4);
    let b = queue.try_submit(rows("A", 6..11), index(5), vec![], source());
    assert!(matches!(b, Err(Refused::Full)), "5 rows do not fit in the 4 left");
    assert_eq!(permits.available_permits(), 4, "a refused submission takes no room");
    assert!(queue.try_submit(rows("A", 6..10), index(4), vec![], source()).is_ok());
}

#[tokio::test]
async fn a_closed_queue_gives_its_room_back() {
    let (queue, rx, permits) = Queue::new(10, Metrics::new(), health());
    drop(rx);
    assert!(matches!(
        queue.try_submit(rows("A", 0..3), index(3), vec![], source()),
        Err(Refused::Closed)
    ));
    assert_eq!(permits.available_permits(), 10);
}

#[tokio::test]
async fn batches_respect_max_rows_without_splitting_and_acks_follow_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let metrics = Metrics::new();
    let (queue, rx, permits) = Queue::new(100, metrics.clone(), health());
    // Three submissions of 4 rows with batches of at most 5: none fits beside another.
    let acks: Vec<Ack> = (0..3)
        .map(|i| {
            queue
                .try_submit(rows("A", i * 4..i * 4 + 4), index(4), vec![], source())
                .unwrap()
        })
        .collect();
    let (writer, drain) = start_writer(&store, rx, permits.clone(), metrics.clone(), settings(5), &queue);
    for ack in acks {
        assert_eq!(ack.await.unwrap().unwrap(), vec![Outcome::Inserted; 4]);
    }
    assert_eq!(metrics.batch_rows.get_sample_count(), 3);
    assert_eq!(metrics.batch_rows.get_sample_sum(), 12.0);
    assert_eq!(permits.available_permits(), 100, "room is given back after commit");
    assert_eq!(store.count_positions().await.unwrap(), 12);

    // Small submissions share a batch; a resend is a duplicate.
    let a = queue.try_submit(rows("B", 0..2), index(2), vec![], source()).unwrap();
    let b = queue.try_submit(rows("B", 0..1), index(1), vec![], source()).unwrap();
    assert_eq!(a.await.unwrap().unwrap(), [Outcome::Inserted, Outcome::Inserted]);
    assert_eq!(b.await.unwrap().unwrap(), [Outcome::Duplicate]);
    assert_eq!(metrics.batch_rows.get_sample_count(), 4, "both went in one batch");

    drain.cancel();
    writer.await.unwrap();
}

#[tokio::test]
async fn drain_writes_everything_queued_before_the_writer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let metrics = Metrics::new();
    let (queue, rx, permits) = Queue::new(1000, metrics.clone(), health());
    let acks: Vec<Ack> = (0..20)
        .map(|i| {
            queue
                .try_submit(rows("C", i * 10..i * 10 + 10), index(10), vec![], source())
                .unwrap()
        })
        .collect();
    let drain = CancellationToken::new();
    drain.cancel();
    Writer::new(
        store.clone(),
        rx,
        permits,
        metrics,
        settings(50),
        queue.health().clone(),
    )
    .run(drain)
    .await;
    for ack in acks {
        assert_eq!(ack.await.unwrap().unwrap().len(), 10);
    }
    assert_eq!(store.count_positions().await.unwrap(), 200);
}

#[tokio::test]
async fn a_conflict_is_answered_and_kept_for_support() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let metrics = Metrics::new();
    let (queue, rx, permits) = Queue::new(100, metrics.clone(), health());
    let (writer, drain) = start_writer(&store, rx, permits, metrics, settings(100), &queue);
    let first = queue.try_submit(rows("D", 0..1), index(1), vec![], source()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), [Outcome::Inserted]);
    let mut changed = rows("D", 0..1);
    changed[0].record = "different".into();
    let src = Source {
        transport: "https",
        key_name: Some("ACME/s1".into()),
    };
    let second = queue.try_submit(changed, vec![7], vec![], src).unwrap();
    assert_eq!(second.await.unwrap().unwrap(), [Outcome::Conflict]);
    drain.cancel();
    writer.await.unwrap();
    let kept = store.recent_rejects(10).await.unwrap();
    assert_eq!(kept, [(Some("D".into()), "conflict".into(), Some("ACME/s1".into()))]);
}

/// A batch the database rejects (here a trigger refuses one device's rows) would be rejected
/// again: it is answered at once, not retried for `write_retry`, and the store stays open.
#[tokio::test]
async fn a_batch_the_database_rejects_is_answered_at_once_and_admission_goes_on() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut side = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON positions WHEN NEW.device_id = 'BAD' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut side)
    .await
    .unwrap();
    let metrics = Metrics::new();
    let (queue, rx, permits) = Queue::new(100, metrics.clone(), health());
    let mut patient = settings(100);
    patient.write_retry = Duration::from_secs(3600);
    let (writer, drain) = start_writer(&store, rx, permits, metrics.clone(), patient, &queue);
    let bad = queue.try_submit(rows("BAD", 0..2), index(2), vec![], source()).unwrap();
    assert!(bad.await.unwrap().is_err(), "nothing of the batch was stored");
    assert_eq!(metrics.database_errors.get(), 1, "tried once");
    assert_eq!(queue.health().refusal(), None, "the store is not failing");
    let good = queue.try_submit(rows("A", 0..2), index(2), vec![], source()).unwrap();
    assert_eq!(good.await.unwrap().unwrap(), [Outcome::Inserted, Outcome::Inserted]);
    drain.cancel();
    writer.await.unwrap();
    assert_eq!(store.count_positions().await.unwrap(), 2);
}
