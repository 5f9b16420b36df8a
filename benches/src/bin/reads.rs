//! Operators' reads at fleet scale (issue 16). On each backend: `--devices` devices (10,000) of one
//! organization with `--positions` positions (10 million) interleaved in time over ten days, as
//! ingest appends them, plus one device with a whole day at 1 Hz (86,400 fixes), all written
//! through trackgate's own store (`Store::write_batch`: the rows, spans and latest positions as
//! ingest leaves them). Then the release server on that database, and the operators' API timed
//! with keep-alive over TLS, as an admin of the organization who sees every device:
//!
//! - `GET /v1/positions/latest` and `GET /v1/devices` (every device);
//! - the day's first track page of 1000, and the whole day in pages of 10,000;
//! - the whole day simplified (`tolerance_m=5`);
//!
//! each beside its baseline from the same run: the same rows fetched raw through sqlx, no HTTP.
//! The API is timed from the request to the answer's last byte; the client parses nothing meanwhile.
//! Medians of `--rounds` (10), after one warm-up round. Prints a table; with `--record FILE`,
//! writes it as a section of FILE (`benches/RESULTS.md`).
//!
//! `target/release/reads [--devices N] [--positions M] [--rounds R] [--backend sqlite|postgres|all] [--record FILE]`

use sqlx::{PgPool, SqlitePool};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;
use trackgate_benches::results::{commit, first_line, machine, record};
use trackgate_benches::{now_ms, row};
use trackgate_e2e::{Backend, Server};
use trackgate_store::{AuditEntry, Row, Store};

const ORG: &str = "fleet";
const DAY_DEVICE: &str = "DAY-000001";
const DAY_MS: i64 = 86_400_000;
/// The fleet's positions span this long, ending now.
const SPAN_MS: i64 = 10 * DAY_MS;
const WRITE_BATCH: usize = 10_000;

struct Args {
    devices: usize,
    positions: usize,
    rounds: usize,
    backends: Vec<Backend>,
    record: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        devices: 10_000,
        positions: 10_000_000,
        rounds: 10,
        backends: vec![Backend::Sqlite, Backend::Postgres],
        record: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match (k.as_str(), it.next()) {
            ("--devices", Some(v)) => a.devices = v.parse().expect("--devices N"),
            ("--positions", Some(v)) => a.positions = v.parse().expect("--positions M"),
            ("--rounds", Some(v)) => a.rounds = v.parse().expect("--rounds R"),
            ("--backend", Some(v)) => {
                a.backends = match v.as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "all" => vec![Backend::Sqlite, Backend::Postgres],
                    _ => panic!("--backend sqlite|postgres|all"),
                }
            }
            ("--record", Some(v)) => a.record = Some(v),
            _ => {
                eprintln!(
                    "usage: reads [--devices N] [--positions M] [--rounds R] [--backend sqlite|postgres|all] [--record FILE]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

/// The organization, its devices, the fleet's positions and the 1 Hz day (which starts at the
/// returned time).
async fn seed(store: &Store, devices: usize, positions: usize, now: i64) -> i64 {
    let a = AuditEntry {
        actor: "bench".into(),
        action: "seed".into(),
        ..Default::default()
    };
    store.add_organization(ORG, "Fleet", &a).await.unwrap();
    let ids: Vec<String> = (0..devices).map(|d| format!("TRK-{d:06}")).collect();
    for id in ids.iter().map(String::as_str).chain([DAY_DEVICE]) {
        store.add_device(id, None).await.unwrap();
        store.assign_device(id, ORG, &a).await.unwrap();
    }
    let t = Instant::now();
    let start = now - SPAN_MS;
    let step = SPAN_MS as f64 / positions as f64;
    for first in (0..positions).step_by(WRITE_BATCH) {
        let batch: Vec<Row> = (first..positions.min(first + WRITE_BATCH))
            .map(|i| {
                let d = i % devices;
                // Each device wanders around its own spot of Europe.
                let (lat, lon) = (
                    40.0 + (d % 100) as f64 * 0.2 + (i / devices % 50) as f64 * 1e-3,
                    -5.0 + (d / 100) as f64 * 0.3,
                );
                row(
                    &ids[d],
                    (i / devices) as i64 + 1,
                    start + (i as f64 * step) as i64,
                    lat,
                    lon,
                )
            })
            .collect();
        store.write_batch(&batch, &[]).await.unwrap();
        if first % 1_000_000 == 0 && first > 0 {
            eprintln!("  {first} positions written ({:.0} s)", t.elapsed().as_secs_f64());
        }
    }
    // Yesterday, one fix a second, driving a loop with a stop at noon.
    let day0 = now / DAY_MS * DAY_MS - DAY_MS;
    for first in (0..86_400).step_by(WRITE_BATCH) {
        let batch: Vec<Row> = (first..86_400.min(first + WRITE_BATCH))
            .map(|s| {
                let moving = if (43_200..46_800).contains(&s) { 43_200 } else { s };
                let a = moving as f64 / 86_400.0 * std::f64::consts::TAU;
                row(
                    DAY_DEVICE,
                    s as i64 + 1,
                    day0 + s as i64 * 1000,
                    52.0 + 0.3 * a.sin(),
                    13.0 + 0.5 * a.cos(),
                )
            })
            .collect();
        store.write_batch(&batch, &[]).await.unwrap();
    }
    eprintln!(
        "  seeded {positions} + 86400 positions in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    day0
}

/// A direct pool on trackgate's database, for the baselines.
enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

type FixRow = (
    i64,
    i64,
    f64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);
type DeviceRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

const LATEST_SQL: &str = "SELECT seq, ts, lat, lon, alt, spd, hdg, acc, bat, tmp FROM latest_positions";
const DEVICES_SQL: &str = "SELECT p.id, a.org_id, a.order_group_id, a.shipment_label, a.shipment_ref, \
     l.ts, l.lat, l.lon, l.bat, l.tmp FROM principals p JOIN device_assignments a ON a.device_id = p.id \
     LEFT JOIN latest_positions l ON l.device_id = p.id WHERE p.kind = 'device' ORDER BY p.id";
const FIXES_SQL: &str = "SELECT seq, ts, lat, lon, alt, spd, hdg, acc, bat, tmp FROM positions \
     WHERE device_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq";

/// Fetch every row of a query with the binds given, decoded: how many.
macro_rules! fetch {
    ($raw:expr, $row:ty, $sql:expr $(, $b:expr)*) => {
        match $raw {
            Raw::Sqlite(p) => sqlx::query_as::<_, $row>($sql)$(.bind($b))*.fetch_all(p).await.unwrap().len(),
            Raw::Postgres(p) => sqlx::query_as::<_, $row>($sql)$(.bind($b))*.fetch_all(p).await.unwrap().len(),
        }
    };
}

struct Case {
    name: &'static str,
    rows: usize,
    api_ms: f64,
    raw_ms: f64,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over `rounds` (after one warm-up) of `f`'s milliseconds.
async fn timed<F, Fut, T>(rounds: usize, mut f: F) -> (f64, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut last = f().await;
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        last = f().await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (median(ms), last)
}

struct Api {
    server: Server,
    client: reqwest::Client,
    token: String,
}

impl Api {
    /// The answer's bytes: what is timed (the client does not parse it meanwhile).
    async fn get(&self, path: &str) -> bytes::Bytes {
        let r = self
            .client
            .get(self.server.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap()
    }

    /// A track followed page by page: the pages. Only the cursor is looked for (the API writes
    /// `next` after the features).
    async fn pages(&self, path: &str) -> Vec<bytes::Bytes> {
        let mut pages = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self.get(&format!("{path}{cursor}")).await;
            let next = next_cursor(&page);
            pages.push(page);
            match next {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return pages,
            }
        }
    }
}

fn next_cursor(page: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"next\":\"";
    let at = page.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let end = page[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&page[at..at + end]).into_owned())
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Fixes in a track answer (its features but the line).
fn fixes(bytes: &[u8]) -> usize {
    json(bytes)["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["kind"] == "fix")
        .count()
}

async fn run(backend: Backend, a: &Args, dir: &Path) -> Vec<Case> {
    let name = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    eprintln!("{name}: seeding {} devices, {} positions", a.devices, a.positions);
    // The server makes its database, configuration and master key; stopped, the store is opened
    // from the same configuration to write the rows as ingest would; then it serves them.
    let mut server = Server::start_on(backend, dir, "").expect("trackgate starts");
    server.stop_with("-TERM").unwrap();
    let config = trackgate::config::Config::load(Some(&dir.join("trackgate.toml"))).unwrap();
    let store = trackgate::app::open_store(&config).await.unwrap();
    let now = now_ms() as i64;
    let day0 = seed(&store, a.devices, a.positions, now).await;
    store.close().await;
    server.restart().unwrap();
    server.add_user_group(ORG, "ops", "admin", "--email", "ops@fleet.example");
    let token = server.dev_token(&["--email", "ops@fleet.example"]);
    let raw = match backend {
        Backend::Sqlite => Raw::Sqlite(
            SqlitePool::connect(&format!("sqlite://{}", dir.join("data/trackgate.db").display()))
                .await
                .unwrap(),
        ),
        Backend::Postgres => Raw::Postgres(PgPool::connect(server.postgres_url.as_ref().unwrap()).await.unwrap()),
    };
    let api = Api {
        client: server.client(),
        server,
        token,
    };
    let r = a.rounds;
    let day = format!("/v1/devices/{DAY_DEVICE}/track?from={day0}&to={}", day0 + DAY_MS);
    let mut cases = Vec::new();

    let (api_ms, v) = timed(r, || api.get("/v1/positions/latest")).await;
    let (raw_ms, n) = timed(r, || async { fetch!(&raw, FixRow, LATEST_SQL) }).await;
    assert_eq!(json(&v)["features"].as_array().unwrap().len(), n);
    cases.push(Case {
        name: "`GET /v1/positions/latest`",
        rows: n,
        api_ms,
        raw_ms,
        note: String::new(),
    });

    let (api_ms, v) = timed(r, || api.get("/v1/devices")).await;
    let (raw_ms, n) = timed(r, || async { fetch!(&raw, DeviceRow, DEVICES_SQL) }).await;
    assert_eq!(json(&v)["devices"].as_array().unwrap().len(), n);
    cases.push(Case {
        name: "`GET /v1/devices`",
        rows: n,
        api_ms,
        raw_ms,
        note: String::new(),
    });

    let page = format!("{day}&limit=1000");
    let (api_ms, v) = timed(r, || api.get(&page)).await;
    let (raw_ms, n) = timed(r, || async {
        fetch!(&raw, FixRow, FIXES_SQL, DAY_DEVICE, 1i64, 1000i64)
    })
    .await;
    assert_eq!(fixes(&v), n);
    cases.push(Case {
        name: "a 1 Hz day's first track page of 1000",
        rows: n,
        api_ms,
        raw_ms,
        note: String::new(),
    });

    let pages = format!("{day}&limit=10000");
    let (api_ms, got) = timed(r, || api.pages(&pages)).await;
    let (whole_raw_ms, n) = timed(r, || async {
        fetch!(&raw, FixRow, FIXES_SQL, DAY_DEVICE, 1i64, 86_400i64)
    })
    .await;
    assert_eq!(got.iter().map(|p| fixes(p)).sum::<usize>(), n);
    cases.push(Case {
        name: "the whole day in pages of 10,000",
        rows: n,
        api_ms,
        raw_ms: whole_raw_ms,
        note: format!("{} requests", got.len()),
    });

    let simplified = format!("{day}&tolerance_m=5");
    let (api_ms, v) = timed(r, || api.get(&simplified)).await;
    cases.push(Case {
        name: "the whole day simplified (`tolerance_m=5`)",
        rows: n,
        api_ms,
        raw_ms: whole_raw_ms,
        note: format!("{} points kept", json(&v)["simplified"]["kept"]),
    });
    cases
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = String::new();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let _ = writeln!(
        out,
        "## {date}: operators' reads at fleet scale (`target/release/reads --devices {} --positions {} --rounds {}`)\n",
        a.devices, a.positions, a.rounds
    );
    let _ = writeln!(out, "- **Machine**: {}; everything shares it.", machine());
    let _ = writeln!(
        out,
        "- **Software**: trackgate at commit {}, release profile; SQLite as bundled; PostgreSQL {} on this machine over TLS.",
        commit(),
        first_line("sh", &["-c", "ls /usr/lib/postgresql | sort -n | tail -1"]).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "- **Conditions**: {} devices of one organization with {} positions interleaved over ten days, plus \
         one device with a day at 1 Hz; the caller is an admin of the organization (sees every device). \
         API: keep-alive HTTPS on loopback, request to last byte, each read audited as in production. Raw: \
         the same rows through sqlx on the same database, no HTTP. Medians of {} after one warm-up.",
        a.devices, a.positions, a.rounds
    );
    for backend in &a.backends {
        let dir = tempfile::tempdir().unwrap();
        let cases = rt.block_on(run(*backend, &a, dir.path()));
        let name = match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        let _ = writeln!(out, "\n### {name}\n");
        let _ = writeln!(out, "| read | rows | API (ms) | raw sqlx (ms) | API / raw | |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- |");
        for c in cases {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                c.name,
                c.rows,
                c.api_ms,
                c.raw_ms,
                c.api_ms / c.raw_ms,
                c.note
            );
        }
    }
    print!("{out}");
    if let Some(file) = a.record {
        record(Path::new(&file), &out).expect("writing the results file");
    }
}
