//! Backups against the real binary. SQLite: `trackgate backup` taken while records keep
//! arriving is a consistent copy (every record acknowledged before it began is in it, each device's
//! seqs without holes), private to its owner, never written over an existing file; `trackgate db
//! restore` brings it back only beside the same master key, and the restored server answers the
//! API as the original did and takes new records with the restored keys. PostgreSQL: the
//! documented `pg_dump` / `pg_restore` round trip into a fresh database serves the same answers.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use trackgate_e2e::{Backend, Server, binary, record, started_on, vector_device};

/// The operator's view of the API: the devices, and the vector device's whole track.
async fn answers(s: &Server, upto_seq: u64) -> (Value, Vec<u64>) {
    let token = s.dev_token(&["--email", "root@service.example", "--platform-admin"]);
    let c = s.client();
    let get = |path: String| {
        let r = c.get(s.url(&path)).bearer_auth(&token);
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let mut devices = get("/v1/devices".into()).await;
    // Last seen moves with later records: compared through the track instead.
    for d in devices["devices"].as_array_mut().unwrap() {
        d.as_object_mut()
            .unwrap()
            .retain(|k, _| !["last_seen_ms", "position", "bat", "tmp"].contains(&k.as_str()));
    }
    let track = get("/v1/devices/TRK-0001/track?from=0&limit=5000".into()).await;
    let seqs = track["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["kind"] == "fix")
        .map(|f| f["properties"]["seq"].as_u64().unwrap())
        .filter(|&q| q <= upto_seq)
        .collect();
    (devices, seqs)
}

/// The vector device's signed records `seqs`.
fn envelopes(seqs: std::ops::Range<u64>) -> Vec<String> {
    let dev = vector_device();
    seqs.map(|q| dev.envelope(&record("TRK-0001", q))).collect()
}

fn seed(s: &Server) {
    s.ok(&["org", "add", "acme", "--name", "Acme"], None);
    s.ok(&["device", "assign", "TRK-0001", "--org", "acme"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_taken_during_ingest_restores_and_answers_the_same() {
    let (dir, s) = started_on(Backend::Sqlite, "");
    seed(&s);
    let s = Arc::new(s);
    // Records keep arriving, one request at a time, until told to stop.
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sender = {
        let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let c = s.client();
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                let reply = s.post_envelopes(&c, &envelopes(seq..seq + 20)).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                seq += 20;
                acked.store(seq, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = acked.load(Ordering::SeqCst);
    let out = dir.path().join("backup.db");
    let o = s.cli(&["backup", "--out", out.to_str().unwrap()], None);
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{said}");
    assert!(said.contains("does not contain the master key"), "{said}");
    let during = acked.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    assert!(
        during > before,
        "records kept arriving during the backup ({before} then {during})"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    // Never over an existing file.
    let o = s.cli(&["backup", "--out", out.to_str().unwrap()], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("backup.db"));

    // In the copy: everything acknowledged before the backup began, and no holes.
    let copy = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", out.display()))
        .await
        .unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM positions WHERE device_id = 'TRK-0001' ORDER BY seq")
        .fetch_all(&copy)
        .await
        .unwrap();
    copy.close().await;
    let n = seqs.len() as u64;
    assert!(n >= before, "{n} stored of {before} acknowledged before the backup");
    assert_eq!(seqs, (0..n as i64).collect::<Vec<_>>());
    let original = answers(&s, n - 1).await;

    // Restore beside a different master key: refused, nothing left behind.
    let restored = dir.path().join("restored");
    beside(&s, &restored, None);
    let restore = |dir: &Path| {
        std::process::Command::new(binary())
            .arg("--config")
            .arg(dir.join("trackgate.toml"))
            .args(["restore", "--from", out.to_str().unwrap()])
            .env_remove("TRACKGATE_MASTER_KEY")
            .output()
            .unwrap()
    };
    let own_key = std::fs::read(restored.join("data/master.key")).unwrap();
    std::fs::write(restored.join("data/master.key"), "11".repeat(32)).unwrap();
    let o = restore(&restored);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("master key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!restored.join("data/trackgate.db").exists());
    // With the server's own key it is restored, and a second restore over it is refused.
    std::fs::write(restored.join("data/master.key"), own_key).unwrap();
    let o = restore(&restored);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = restore(&restored);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("move the current database away"));

    let back = Server::start_in(&restored, "").unwrap();
    assert_eq!(answers(&back, n - 1).await, original);
    // The restored keys verify new records.
    let c = back.client();
    let reply = back.post_record(&c, &vector_device(), n + 1000).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.counts().0, 1, "{}", reply.body);
}

/// The configuration of `s` for a second server in `dir`: its own data directory (with `s`'s
/// master key copied in) and, if given, another database URL.
fn beside(s: &Server, dir: &Path, url: Option<&str>) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(s.dir.join("data/master.key"), dir.join("data/master.key")).unwrap();
    let mut config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("{:?}", s.dir.join("data")), &format!("{:?}", dir.join("data")));
    if let (Some(url), Some(old)) = (url, &s.postgres_url) {
        config = config.replace(&format!("{old:?}"), &format!("{url:?}"));
    }
    std::fs::write(dir.join("trackgate.toml"), config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_dump_restored_into_a_fresh_database_answers_the_same() {
    let (dir, s) = started_on(Backend::Postgres, "");
    seed(&s);
    let c = s.client();
    let batch = envelopes(0..200);
    let reply = s.post_envelopes(&c, &batch).await;
    assert_eq!(reply.counts().0, 200, "{}", reply.body);
    let original = answers(&s, u64::MAX).await;
    assert_eq!(original.1.len(), 200);

    let pg = s.pg.as_ref().unwrap();
    pg.create_database("restored").unwrap();
    pg.dump_and_restore(trackgate_e2e::DATABASE, "restored").unwrap();
    let restored = dir.path().join("restored");
    beside(&s, &restored, Some(&pg.url("restored")));
    let back = Server::start_in(&restored, "").unwrap();
    assert_eq!(back.postgres_url.as_deref(), Some(pg.url("restored").as_str()));
    assert_eq!(answers(&back, u64::MAX).await, original);
    // Keys, partitions and seq marks came along: a resend is a duplicate, a new record is stored.
    let c = back.client();
    let reply = back.post_envelopes(&c, &batch[..1]).await;
    assert_eq!(reply.counts(), (0, 1), "{}", reply.body);
    let reply = back.post_record(&c, &vector_device(), 200).await;
    assert_eq!(reply.counts(), (1, 0), "{}", reply.body);
}
