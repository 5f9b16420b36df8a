//! Acknowledged means stored, with the world broken on purpose: the database's disk full, its
//! write lock held by another process for 30 s, its filesystem made read-only, and the process
//! killed in the middle of each. Four clients post one signed record per request throughout.
//!
//! For every run the test prints and checks the figures: requests answered by status, records
//! acknowledged, records stored, "acknowledged but not stored" (must be 0) and "stored but
//! refused" (must be 0). It also checks that the fault really bit (503s were answered and
//! `/readyz` said not ready while it lasted) and that trackgate recovered by itself (a fresh
//! request is acknowledged once the fault is cleared, without a restart).
//!
//! The full disk is a small tmpfs mounted by the test; the read-only database is made immutable
//! with `chattr +i` (writes through descriptors SQLite already holds then fail, as on a disk
//! remounted read-only). Both need root, so the suite runs as root (CI does). On PostgreSQL, the
//! server itself goes away for 30 s (and comes back on the same port and data).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trackgate_e2e::*;

const JSON: &str = "application/json";

/// A tmpfs mounted at a directory for the life of the value.
struct Tmpfs {
    path: PathBuf,
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the fault suite mounts a tmpfs and sets immutable files: it must run as root (CI does)"
    );
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        require_root();
        std::fs::create_dir_all(path).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Tmpfs { path: path.into() }
    }

    /// Bytes available.
    fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        it.next().unwrap() * it.next().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// What the clients saw.
#[derive(Default, Debug)]
struct Ledger {
    /// Seqs answered 200 accepted or duplicate.
    acked: BTreeSet<u64>,
    /// Seqs answered 503 (nothing stored) or rejected in a 200.
    refused: BTreeSet<u64>,
    /// Requests by status.
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (the connection failed or was cut).
    unanswered: u64,
    /// Requests answered 200 since `mark` was set.
    acked_since_mark: u64,
}

struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    mark: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Four clients posting one record per request, each with a new seq, until stopped.
    fn start(server: &Server) -> Traffic {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mark = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (ledger, stop, mark, next) = (ledger.clone(), stop.clone(), mark.clone(), next.clone());
            let (client, url, dev) = (server.client(), server.url("/v1/records"), vector_device());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let body = dev.envelope(&record("TRK-0001", seq));
                    let ts = (now_ms() / 1000).to_string();
                    let reply = post_signed(&client, &url, &dev, JSON, &body, &ts).await;
                    // Back off a little after a refusal, as a client honouring Retry-After would.
                    let back_off = {
                        let mut l = ledger.lock().unwrap();
                        match reply {
                            None => {
                                l.unanswered += 1;
                                true
                            }
                            Some(reply) => {
                                *l.statuses.entry(reply.status).or_default() += 1;
                                match reply.status {
                                    200 if reply.body["rejected"].as_array().is_some_and(|r| r.is_empty()) => {
                                        l.acked.insert(seq);
                                        if mark.load(Ordering::Relaxed) {
                                            l.acked_since_mark += 1;
                                        }
                                        false
                                    }
                                    200 => {
                                        l.refused.insert(seq);
                                        false
                                    }
                                    503 => {
                                        assert_eq!(reply.error(), "unavailable", "{:?}", reply.body);
                                        assert!(reply.retry_after.is_some(), "503 without Retry-After");
                                        l.refused.insert(seq);
                                        true
                                    }
                                    other => panic!("unexpected status {other}: {:?}", reply.body),
                                }
                            }
                        }
                    };
                    if back_off {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        Traffic {
            ledger,
            stop,
            mark,
            workers,
        }
    }

    async fn until(&self, what: &str, limit: Duration, ok: impl Fn(&Ledger) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(&self.ledger.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "traffic never reached: {what}: {:?}",
                self.ledger.lock().unwrap().statuses
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(self.ledger).unwrap().into_inner().unwrap()
    }
}

/// Print the figures and check the two invariants.
fn account(name: &str, ledger: &Ledger, stored: &BTreeSet<u64>) {
    let lost: Vec<_> = ledger.acked.difference(stored).collect();
    let leaked: Vec<_> = ledger.refused.intersection(stored).collect();
    println!(
        "{name}: requests by status {:?}, unanswered {}; acknowledged {}, stored {}; \
         acknowledged but not stored {}; stored but refused {}",
        ledger.statuses,
        ledger.unanswered,
        ledger.acked.len(),
        stored.len(),
        lost.len(),
        leaked.len()
    );
    assert!(lost.is_empty(), "{name}: acknowledged but not stored: {lost:?}");
    assert!(leaked.is_empty(), "{name}: refused but stored: {leaked:?}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The filesystem filled to ~300 KB free, so SQLite itself hits the wall (the watermark off).
    DiskFull,
    /// Another process holds SQLite's write lock.
    Locked,
    /// The database and its write-ahead log made immutable under SQLite's open descriptors.
    ReadOnly,
    /// The PostgreSQL server stopped (fast shutdown: every session cut) for 30 s.
    PostgresGone,
}

/// The fault's state while it lasts.
enum Injected {
    Filler(PathBuf),
    Lock(sqlx::SqliteConnection),
    ReadOnly(Immutable),
    Stopped(postgres::Postgres),
}

/// Files made immutable, made writable again on drop (also when a test fails, so the temporary
/// directory can be removed).
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

impl Fault {
    fn hold(self) -> Duration {
        match self {
            Fault::Locked | Fault::PostgresGone => Duration::from_secs(30),
            _ => Duration::from_secs(8),
        }
    }

    fn backend(self) -> Backend {
        match self {
            Fault::PostgresGone => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }

    /// The test's settings: stalls and failures are called within a second or two. On SQLite the
    /// watermark is off so SQLite meets the real wall, and checkpoints keep the WAL small as on
    /// a busy production disk.
    fn settings(self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => {
                "database.min_free_bytes = 0\ndatabase.sqlite_wal_autocheckpoint = 100\n\
                 ingest.stall_timeout_ms = 1000\ningest.write_retry_secs = 2"
            }
            Backend::Postgres => "ingest.stall_timeout_ms = 1000\ningest.write_retry_secs = 2",
        }
    }

    /// `data` is the data directory; for a full disk it is the tmpfs `fs`.
    async fn inject(self, data: &Path, fs: Option<&Tmpfs>, server: &mut Server) -> Injected {
        match self {
            Fault::PostgresGone => {
                let mut pg = server.pg.take().expect("a PostgreSQL server");
                pg.stop();
                Injected::Stopped(pg)
            }
            Fault::DiskFull => {
                let fs = fs.expect("a full disk needs its tmpfs");
                let filler = fs.path.join("filler");
                let size = fs.free().saturating_sub(300 * 1024);
                sh("fallocate", &["-l", &size.to_string(), filler.to_str().unwrap()]);
                Injected::Filler(filler)
            }
            Fault::Locked => {
                let url = format!("sqlite://{}", data.join("trackgate.db").display());
                let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
                Injected::Lock(c)
            }
            Fault::ReadOnly => {
                require_root();
                let files = vec![data.join("trackgate.db"), data.join("trackgate.db-wal")];
                for f in &files {
                    sh("chattr", &["+i", f.to_str().unwrap()]);
                }
                Injected::ReadOnly(Immutable(files))
            }
        }
    }
}

impl Injected {
    async fn clear(self, server: &mut Server) {
        match self {
            Injected::Stopped(mut pg) => {
                pg.restart().unwrap();
                server.pg = Some(pg);
            }
            Injected::Filler(f) => std::fs::remove_file(f).unwrap(),
            Injected::Lock(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Injected::ReadOnly(files) => drop(files),
        }
    }
}

/// Run traffic, break the world with `fault` for its hold time, then either clear it and watch
/// trackgate recover by itself, or kill -9 trackgate in the middle, clear it and restart.
async fn under(fault: Fault, kill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fs = (fault == Fault::DiskFull).then(|| Tmpfs::mount(&data, "24m"));
    let mut server = Server::start_on(fault.backend(), dir.path(), fault.settings()).unwrap();
    server.add_device(&vector_device(), None);
    let name = format!("{fault:?}{}", if kill { " + kill -9" } else { "" });

    let traffic = Traffic::start(&server);
    traffic
        .until("200 acknowledged", Duration::from_secs(60), |l| l.acked.len() >= 200)
        .await;
    let injected = fault.inject(&data, fs.as_ref(), &mut server).await;
    let before = traffic.ledger.lock().unwrap().statuses.get(&503).copied().unwrap_or(0);

    // While the fault lasts, /readyz must say so, and clients must be refused, not held.
    let refused_since = || traffic.ledger.lock().unwrap().statuses.get(&503).copied().unwrap_or(0) - before;
    let mut not_ready = false;
    let until = Instant::now() + fault.hold();
    let mut killed = false;
    while Instant::now() < until {
        not_ready |= server.readyz().await == 503;
        if kill && not_ready && refused_since() > 0 && !killed {
            // Refusals are being answered: pull the plug mid-fault.
            server.stop_with("-KILL").unwrap();
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        not_ready,
        "{name}: /readyz never said not ready:\n{}",
        server.log_text()
    );
    assert!(
        refused_since() > 0,
        "{name}: no request was refused with 503 while the fault lasted"
    );
    assert_eq!(killed, kill, "{name}: the kill never happened");

    injected.clear(&mut server).await;
    if kill {
        let ledger = traffic.finish().await;
        server.restart().unwrap();
        let stored = stored_seqs(&server, "TRK-0001").await;
        account(&name, &ledger, &stored);
        return;
    }

    // Recovery without a restart: ready again and acknowledging fresh requests.
    traffic.mark.store(true, Ordering::Relaxed);
    assert!(
        server.wait_readyz(200, Duration::from_secs(60)).await,
        "{name}: not ready again after the fault cleared:\n{}",
        server.log_text()
    );
    traffic
        .until("acknowledged again after the fault", Duration::from_secs(60), |l| {
            l.acked_since_mark >= 50
        })
        .await;
    let ledger = traffic.finish().await;
    let failures = server.metric("trackgate_storage_failing").await;
    assert_eq!(failures, 0.0, "{name}: still failing after recovery");
    let log = server.log_text();
    let episodes = log.matches("storage failing").count() + log.matches("storage stalled").count();
    assert!(
        (1..=4).contains(&episodes),
        "{name}: the fault is logged once per episode, not per retry ({episodes} lines):\n{log}"
    );
    // After a clean stop and a restart, everything acknowledged is there.
    server.stop_with("-TERM").unwrap();
    server.restart().unwrap();
    let stored = stored_seqs(&server, "TRK-0001").await;
    account(&name, &ledger, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_honestly_and_recovers_by_itself() {
    under(Fault::DiskFull, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_kill_9_loses_nothing_acknowledged() {
    under(Fault::DiskFull, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_locked_for_30_s_refuses_honestly_and_recovers_by_itself() {
    under(Fault::Locked, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_locked_then_kill_9_loses_nothing_acknowledged() {
    under(Fault::Locked, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_refuses_honestly_and_recovers_by_itself() {
    under(Fault::ReadOnly, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_database_then_kill_9_loses_nothing_acknowledged() {
    under(Fault::ReadOnly, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_for_30_s_refuses_honestly_and_recovers_by_itself() {
    under(Fault::PostgresGone, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_gone_then_kill_9_loses_nothing_acknowledged() {
    under(Fault::PostgresGone, true).await;
}

/// The watermark: under `database.min_free_bytes` new work is refused with 503 before SQLite
/// hits the wall, nothing of it is stored, and work is admitted again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_free_space_watermark_refuses_before_the_disk_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("data"), "24m");
    let server = Server::start_in(dir.path(), "database.min_free_bytes = 8388608").unwrap();
    server.add_device(&vector_device(), None);
    let (c, dev) = (server.client(), vector_device());
    assert_eq!(server.post_record(&c, &dev, 1).await.counts(), (1, 0));
    let filler = fs.path.join("filler");
    let size = fs.free().saturating_sub(4 * 1024 * 1024);
    sh("fallocate", &["-l", &size.to_string(), filler.to_str().unwrap()]);
    assert!(
        server.wait_readyz(503, Duration::from_secs(10)).await,
        "/readyz never turned not ready"
    );
    let refused = server.post_record(&c, &dev, 2).await;
    assert_eq!(
        (refused.status, refused.error()),
        (503, "unavailable"),
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["detail"].as_str().unwrap().contains("disk is nearly full"),
        "{:?}",
        refused.body
    );
    assert_eq!(refused.retry_after.as_deref(), Some("5"));
    assert!(server.metric("trackgate_storage_free_bytes").await < 8388608.0);
    assert_eq!(server.metric("trackgate_ready").await, 0.0);

    std::fs::remove_file(&filler).unwrap();
    assert!(
        server.wait_readyz(200, Duration::from_secs(10)).await,
        "/readyz never turned ready again"
    );
    assert_eq!(server.post_record(&c, &dev, 3).await.counts(), (1, 0));
    let stored = stored_seqs(&server, "TRK-0001").await;
    assert_eq!(stored, BTreeSet::from([1, 3]), "the refused record is not stored");
    let log = server.log_text();
    assert_eq!(log.matches("under `database.min_free_bytes`").count(), 1, "{log}");
    assert_eq!(log.matches("database disk has room again").count(), 1, "{log}");
}
