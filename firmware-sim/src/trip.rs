//! A trip history: what each device of a roster recorded over the last hours of its round trip
//! (one fix every `--every` seconds of real time, the simulated time running at real speed, so
//! the implied speeds are a truck's), uploaded through the supplier relay as a backlog: in
//! order, or shuffled, the way an uplink that buffered and retried delivers. Each device's seqs
//! count from `--first-seq` in time order, and `--end-ms` pins the history, so two runs with the
//! same arguments upload exactly the same records.

use crate::motion::{Rng, SITES, Trip};
use crate::roster::Roster;
use anyhow::{Context, bail};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use trackgate_proto::Secret;
use trackgate_proto::sign;

#[derive(Debug, clap::Args)]
pub struct TripArgs {
    #[arg(long, default_value = "https://localhost:8443")]
    pub url: String,
    /// CA certificate (PEM) that signed trackgate's certificate.
    #[arg(long, default_value = "data/tls/dev-cert.pem")]
    pub ca: PathBuf,
    #[arg(long, default_value = "roster.json")]
    pub roster: PathBuf,
    /// Only the first N devices of the roster.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Hours of history up to `--end-ms`.
    #[arg(long, default_value_t = 12.0)]
    pub hours: f64,
    /// Seconds between two fixes.
    #[arg(long, default_value_t = 30.0)]
    pub every: f64,
    /// The end of the history, Unix ms (default: now).
    #[arg(long)]
    pub end_ms: Option<u64>,
    /// Each device's first seq.
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
    /// Upload in a random order (seeded by `--seed`) instead of in time order.
    #[arg(long)]
    pub shuffle: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Records per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Only upload the records from this index of the (possibly shuffled) order on.
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub async fn run(args: TripArgs) -> anyhow::Result<()> {
    if !(args.every >= 1.0 && args.every.is_finite()) {
        bail!("--every must be at least 1 (seconds), not {}", args.every);
    }
    if !(args.hours > 0.0 && args.hours <= 24.0 * 31.0) {
        bail!("--hours must be more than 0 and at most 744, not {}", args.hours);
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut roster = Roster::load(&args.roster)?;
    if let Some(n) = args.devices {
        roster.devices.truncate(n);
    }
    let end_ms = args.end_ms.unwrap_or_else(crate::send::now_ms);
    let span_ms = (args.hours * 3_600_000.0) as u64;
    let step_ms = (args.every * 1000.0) as u64;
    // (ts, device, envelope): uploaded in time order across devices, as they were recorded.
    let mut records: Vec<(u64, usize, String)> = Vec::new();
    let mut devices = Vec::new();
    for (i, d) in roster.devices.iter().enumerate() {
        let seed = Rng::seed_of(&d.id);
        let trip = Trip::new(seed);
        let secret = Secret::from_hex(&d.secret)?;
        let mut ts = end_ms.saturating_sub(span_ms);
        let mut seq = args.first_seq;
        while ts <= end_ms {
            let f = trip.fix(ts as f64 / 1000.0, seq, seed);
            let hdg = f.hdg.map(|h| format!(r#","hdg":{h:.1}"#)).unwrap_or_default();
            let text = format!(
                r#"{{"dev":"{}","seq":{seq},"ts":{ts},"lat":{:.6},"lon":{:.6},"spd":{:.1}{hdg},"acc":{:.1},"bat":{:.1},"tmp":{:.2}}}"#,
                d.id, f.lat, f.lon, f.spd, f.acc, f.bat, f.tmp
            );
            records.push((ts, i, sign::envelope(&secret, Some(&d.kid), &text)));
            ts += step_ms;
            seq += 1;
        }
        let stops: Vec<_> = trip
            .stops()
            .iter()
            .map(|&(lat, lon)| {
                let name = SITES.iter().find(|s| (s.1, s.2) == (lat, lon)).map_or("?", |s| s.0);
                json!({"name": name, "lat": lat, "lon": lon})
            })
            .collect();
        devices.push(json!({"id": d.id, "stops": stops, "first_seq": args.first_seq, "last_seq": seq - 1}));
    }
    records.sort_by_key(|&(ts, i, _)| (ts, i));
    if args.shuffle {
        let mut rng = Rng::new(args.seed);
        for i in (1..records.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            records.swap(i, j);
        }
    }
    let records: Vec<String> = records
        .into_iter()
        .map(|(_, _, envelope)| envelope)
        .skip(args.skip)
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();

    let ca = std::fs::read(&args.ca).with_context(|| format!("reading CA certificate {}", args.ca.display()))?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}/v1/records", args.url.trim_end_matches('/'));
    let (mut accepted, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    for chunk in records.chunks(args.batch) {
        let body = format!("[{}]", chunk.join(","));
        // Refused for now (503 while the server is busy or starting): try again, as a relay does.
        let mut tries = 0;
        let v = loop {
            match crate::https::post(&client, &url, &roster.supplier, body.clone(), false).await {
                Ok((200, v)) => break v,
                Ok((status, v)) if tries >= 60 => bail!("the upload was refused: {status} {v}"),
                Err(e) if tries >= 60 => return Err(e.context("uploading the trip")),
                _ => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        accepted += v["accepted"].as_u64().unwrap_or(0);
        duplicates += v["duplicates"].as_u64().unwrap_or(0);
        rejected += v["rejected"].as_array().map_or(0, |r| r.len() as u64);
    }
    println!(
        "{}",
        json!({
            "records": records.len(),
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "end_ms": end_ms,
            "devices": devices,
        })
    );
    Ok(())
}
