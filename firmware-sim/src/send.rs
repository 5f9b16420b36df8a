//! Sending: each device walks from a start point, draining its battery; records go out as the
//! device (one request each) or relayed by the supplier (batches of many devices), and every
//! answer is tallied with its latency.

use crate::roster::{Member, Roster};
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trackgate_proto::Secret;
use trackgate_proto::sign::{self, RequestParts};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// trackgate's HTTPS base URL.
    #[arg(long, default_value = "https://localhost:8443")]
    pub url: String,
    /// CA certificate to trust (the dev certificate, for a dev server).
    #[arg(long, default_value = "data/tls/dev-cert.pem")]
    pub ca: PathBuf,
    #[arg(long, default_value = "roster.json")]
    pub roster: PathBuf,
    /// Where each device's next seq is kept between runs. Default: <roster>.seq.json
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Records per device.
    #[arg(long, default_value_t = 10)]
    pub records: u64,
    /// `device`: each device posts its own records over HTTPS; `supplier`: the supplier relays
    /// batches over HTTPS; `mqtt`: each device publishes to the broker over its own connection.
    #[arg(long, value_enum, default_value = "supplier")]
    pub mode: Mode,
    /// The MQTT broker (TLS), for `--mode mqtt`; trusted with `--ca`.
    #[arg(long, default_value = "localhost")]
    pub mqtt_host: String,
    #[arg(long, default_value_t = 8883)]
    pub mqtt_port: u16,
    /// Envelopes per supplier request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Device,
    Supplier,
    Mqtt,
}

/// What the run saw, as the devices saw it.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub records_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    /// Requests answered with another status than 200, by status (or "error").
    pub failed_requests: BTreeMap<String, u64>,
    pub requests: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    pub latency_ms: Latency,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SeqState(BTreeMap<String, u64>);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A small deterministic generator per device, so runs are reproducible.
fn next_rand(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// The `n`-th record of a device: a random walk from a point near Helsinki, battery draining.
pub(crate) fn record(dev: &str, index: u64, seq: u64, ts: u64) -> String {
    let mut rng = dev
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let (lat0, lon0) = (60.0 + next_rand(&mut rng), 24.0 + 2.0 * next_rand(&mut rng));
    rng ^= seq;
    let step = index as f64 * 1e-4;
    let lat = lat0 + step * next_rand(&mut rng).mul_add(2.0, -1.0).signum() * 0.5;
    let lon = lon0 + step;
    let bat = (100.0 - index as f64 * 0.01).max(1.0);
    let tmp = 4.0 + 3.0 * next_rand(&mut rng);
    let spd = 5.0 + 10.0 * next_rand(&mut rng);
    format!(
        r#"{{"dev":"{dev}","seq":{seq},"ts":{ts},"lat":{lat:.6},"lon":{lon:.6},"spd":{spd:.1},"bat":{bat:.1},"tmp":{tmp:.2}}}"#
    )
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let roster = Roster::load(&args.roster)?;
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| args.roster.with_extension("seq.json"));
    let mut seqs = load_state(&state_path)?;
    let ca = std::fs::read(&args.ca).with_context(|| format!("reading CA certificate {}", args.ca.display()))?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .timeout(Duration::from_secs(60))
        .build()?;

    // Every request body, signed by whom, planned up front so the seqs are claimed before sending.
    let mut requests: Vec<(Member, String, u64)> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut by_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for index in 0..args.records {
        for d in &roster.devices {
            let seq = seqs.0.entry(d.id.clone()).or_insert(0);
            let secret = Secret::from_hex(&d.secret)?;
            let env = sign::envelope(&secret, Some(&d.kid), &record(&d.id, index, *seq, now_ms()));
            *seq += 1;
            match args.mode {
                Mode::Device => requests.push((d.clone(), format!("[{env}]"), 1)),
                Mode::Supplier => pending.push(env),
                Mode::Mqtt => by_device.entry(d.id.clone()).or_default().push(env),
            }
            if pending.len() >= args.batch {
                let n = pending.len() as u64;
                requests.push((roster.supplier.clone(), format!("[{}]", pending.join(",")), n));
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        let n = pending.len() as u64;
        requests.push((roster.supplier.clone(), format!("[{}]", pending.join(",")), n));
    }
    save_state(&state_path, &seqs)?;
    if args.mode == Mode::Mqtt {
        let fleet = roster
            .devices
            .iter()
            .map(|d| (d.clone(), by_device.remove(&d.id).unwrap_or_default()))
            .collect();
        let summary = crate::mqtt::publish_all(&args, &ca, fleet).await?;
        return report(&args, summary);
    }

    let summary = Arc::new(Mutex::new(Summary::default()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests.len())));
    let queue = Arc::new(Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, queue, summary, latencies, url) = (
            client.clone(),
            queue.clone(),
            summary.clone(),
            latencies.clone(),
            args.url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some((signer, body, n)) = queue.lock().unwrap().next() else {
                    return;
                };
                let t = Instant::now();
                let outcome = post(&client, &url, &signer, body).await;
                latencies.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                let mut s = summary.lock().unwrap();
                s.requests += 1;
                s.records_sent += n;
                match outcome {
                    Ok((200, v)) => {
                        s.accepted += v["accepted"].as_u64().unwrap_or(0);
                        s.duplicates += v["duplicates"].as_u64().unwrap_or(0);
                        for r in v["rejected"].as_array().into_iter().flatten() {
                            *s.rejected
                                .entry(r["reason"].as_str().unwrap_or("?").to_owned())
                                .or_default() += 1;
                        }
                    }
                    Ok((status, _)) => *s.failed_requests.entry(status.to_string()).or_default() += 1,
                    Err(_) => *s.failed_requests.entry("error".into()).or_default() += 1,
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let mut summary = Arc::try_unwrap(summary)
        .map_err(|_| anyhow::anyhow!("workers still running"))?
        .into_inner()
        .unwrap();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.records_per_second = summary.accepted as f64 / summary.seconds.max(1e-9);
    summary.latency_ms = Latency::of(latencies.lock().unwrap().clone());
    report(&args, summary)
}

impl Latency {
    /// Percentiles of latencies in milliseconds.
    pub fn of(mut l: Vec<f64>) -> Latency {
        l.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        Latency {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: l.last().copied().unwrap_or(0.0),
        }
    }
}

/// Print the summary: text on stderr, or JSON on stdout.
pub fn report(args: &SendArgs, summary: Summary) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "sent {} records in {} requests over {:.2} s: {} accepted, {} duplicates, rejected {:?}, failed requests {:?}; \
             {:.0} records/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            summary.records_sent,
            summary.requests,
            summary.seconds,
            summary.accepted,
            summary.duplicates,
            summary.rejected,
            summary.failed_requests,
            summary.records_per_second,
            summary.latency_ms.p50,
            summary.latency_ms.p90,
            summary.latency_ms.p99,
            summary.latency_ms.max
        );
    }
    Ok(())
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    signer: &Member,
    body: String,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let secret = Secret::from_hex(&signer.secret)?;
    let ts = (now_ms() / 1000).to_string();
    let parts = RequestParts {
        timestamp: &ts,
        method: "POST",
        path: "/v1/records",
        body: body.as_bytes(),
    };
    let sig = hex::encode(sign::request_signature(&secret, &parts));
    let resp = client
        .post(format!("{url}/v1/records"))
        .header("content-type", "application/json")
        .header("x-tg-key", format!("{}/{}", signer.id, signer.kid))
        .header("x-tg-timestamp", ts)
        .header("x-tg-signature", sig)
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

fn load_state(path: &Path) -> anyhow::Result<SeqState> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SeqState::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_state(path: &Path, state: &SeqState) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string(state)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_valid_protocol_records() {
        let r = record("SIM-TRK-000001", 3, 17, 1_763_800_000_000);
        let key = Secret::from_bytes([1; 32]);
        let env = sign::envelope(&key, Some("k1"), &r);
        let p = trackgate_proto::Parsed::parse(&env).unwrap();
        let keys = [trackgate_proto::envelope::ActiveKey {
            kid: "k1".into(),
            secret: key,
        }];
        let view = trackgate_proto::DeviceView {
            enabled: true,
            supplier: None,
            keys: &keys,
        };
        let clock = trackgate_proto::envelope::Clock {
            now_ms: 1_763_800_000_000,
            retention_ms: 86_400_000,
        };
        let v = p
            .verify(trackgate_proto::Origin::Device("SIM-TRK-000001"), Some(view), clock)
            .unwrap();
        assert_eq!(v.record.seq, 17);
        assert!(v.record.lat.is_some() && v.record.bat.is_some());
    }
}
