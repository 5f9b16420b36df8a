//! `firmware-sim send`: the fleet's trackers ([`crate::fleet`]) measure in turn, paced to a
//! target rate or as fast as trackgate answers, for a number of records or a duration; what
//! they produce goes out over one transport:
//!
//! - `supplier`: the supplier relays batches of many devices' records over HTTPS ([`crate::https`]);
//! - `device`: each device posts its own records over HTTPS (a backlog as one array);
//! - `mqtt`: each device publishes over its own MQTT/TLS connection ([`crate::mqtt`]).
//!
//! A progress line goes to stderr every second; the summary ([`crate::tally`]) at the end, as
//! text or JSON. Each device's next `seq` is kept in a state file, reserved ahead while running,
//! so a killed simulator never reuses one.

use crate::fleet::{Behaviour, Fault, Faults, Out, Tracker};
use crate::https::{Request, Transport};
use crate::motion::Rng;
use crate::roster::Roster;
use crate::tally::Tally;
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

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
    /// Records per device (unless --duration is given).
    #[arg(long, default_value_t = 10)]
    pub records: u64,
    /// Run for this many seconds instead of a number of records.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Target records per second across the fleet. Default: as fast as trackgate answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Use only the first N devices of the roster.
    #[arg(long)]
    pub devices: Option<usize>,
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
    /// Records per MQTT message (`--mode mqtt`): 1 publishes each record alone, more sends
    /// arrays.
    #[arg(long, default_value_t = 1)]
    pub per_message: usize,
    /// MQTT connections open at once (`--mode mqtt`). Default: one per device, kept for the whole
    /// run. Fewer: the devices take turns, each connecting, publishing what it has queued and
    /// disconnecting, so a fleet larger than one machine can hold connected still sends.
    #[arg(long)]
    pub connections: Option<usize>,
    /// A supplier batch waits at most this long to fill, milliseconds.
    #[arg(long, default_value_t = 50)]
    pub linger_ms: u64,
    /// HTTPS requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Simulated seconds per real second for the shipments' movement (60: a minute a second).
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// Share of time each device spends offline, buffering records it uploads later (0 to 0.9).
    #[arg(long, default_value_t = 0.0)]
    pub offline: f64,
    /// Faults to inject, as fractions of records (of requests, for `stale` over HTTPS):
    /// bad-signature, replay, malformed, stale, wrong-topic (MQTT only: a record naming another
    /// device, on its own topic). E.g.
    /// `bad-signature=0.01,replay=0.01`.
    #[arg(long, default_value = "")]
    pub faults: Faults,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
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

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Device => "https-device",
            Mode::Supplier => "https-supplier",
            Mode::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SeqState(BTreeMap<String, u64>);

/// Seqs reserved ahead in the state file while running.
const RESERVE: u64 = 1000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the fleet's records go.
enum Sink {
    Https(mpsc::Sender<Request>),
    Supplier(mpsc::Sender<Out>),
    Mqtt(Vec<mpsc::Sender<Vec<Out>>>),
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    if !(0.0..=0.9).contains(&args.offline) {
        bail!("--offline must be between 0 and 0.9, not {}", args.offline);
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of records per second");
    }
    if args.mode != Mode::Mqtt && args.faults.fraction(Fault::WrongTopic) > 0.0 {
        bail!("the wrong-topic fault exists only over MQTT (--mode mqtt)");
    }
    match args.connections {
        Some(0) => bail!("--connections must be at least 1"),
        Some(_) if args.mode != Mode::Mqtt => bail!("--connections applies only to --mode mqtt"),
        _ => {}
    }
    let mut roster = Roster::load(&args.roster)?;
    if let Some(n) = args.devices {
        if n == 0 || n > roster.devices.len() {
            bail!("--devices must be between 1 and the roster's {}", roster.devices.len());
        }
        roster.devices.truncate(n);
    }
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| args.roster.with_extension("seq.json"));
    let mut seqs = load_state(&state_path)?;
    let mut trackers = roster
        .devices
        .iter()
        .map(|d| Tracker::new(d.clone(), seqs.0.get(&d.id).copied().unwrap_or(0)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Reserve seqs ahead: if the simulator is killed, the next run starts past them.
    let mut reserved: Vec<u64> = trackers.iter().map(|t| t.seq + RESERVE).collect();
    for (t, r) in trackers.iter().zip(&reserved) {
        seqs.0.insert(t.member.id.clone(), *r);
    }
    save_state(&state_path, &seqs)?;

    let ca = std::fs::read(&args.ca).with_context(|| format!("reading CA certificate {}", args.ca.display()))?;
    let record_faults = match args.mode {
        Mode::Mqtt => Fault::ALL.to_vec(),
        _ => vec![Fault::BadSignature, Fault::Replay, Fault::Malformed],
    };
    let behaviour = Behaviour {
        time_scale: args.time_scale,
        offline: args.offline,
        faults: args.faults.clone(),
        record_faults,
    };
    let tally = Tally::new(args.mode.name(), trackers.len(), args.rate);
    let progress = (!args.quiet).then(|| {
        let tally = tally.clone();
        tokio::spawn(async move {
            let (mut acked, mut since) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("{}", tally.progress(&mut acked, &mut since, 1.0));
            }
        })
    });

    let (sink, transport) = match args.mode {
        Mode::Mqtt => {
            let (senders, handle) = crate::mqtt::connect_fleet(&args, &ca, &roster.devices, tally.clone())?;
            (Sink::Mqtt(senders), handle)
        }
        Mode::Device => {
            let (tx, handle) = Transport::start(&args, &ca, tally.clone())?;
            (Sink::Https(tx), handle)
        }
        Mode::Supplier => {
            let (tx, handle) = Transport::start(&args, &ca, tally.clone())?;
            let (out_tx, out_rx) = mpsc::channel(args.batch.max(1) * 4);
            let batcher = tokio::spawn(crate::https::batch_supplier(
                out_rx,
                tx,
                roster.supplier.clone(),
                args.batch.max(1),
                Duration::from_millis(args.linger_ms),
                args.faults.fraction(Fault::Stale),
                tally.clone(),
            ));
            (Sink::Supplier(out_tx), chain(handle, batcher))
        }
    };

    let started = Instant::now();
    let mut request_rng = Rng::new(0x5ca1ab1e);
    let stale = args.faults.fraction(Fault::Stale);
    let n = trackers.len();
    let total = args.records.saturating_mul(n as u64);
    let mut k: u64 = 0;
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        let done = match args.duration {
            Some(d) => elapsed >= d,
            None => k >= total,
        };
        if done {
            break;
        }
        if let Some(rate) = args.rate {
            let due = k as f64 / rate;
            if due > elapsed + 0.002 {
                tokio::time::sleep(Duration::from_secs_f64(due - elapsed)).await;
            }
        }
        let i = (k % n as u64) as usize;
        let outs = trackers[i].tick(i, now_ms(), &behaviour);
        if trackers[i].seq >= reserved[i] {
            reserved[i] = trackers[i].seq + RESERVE;
            seqs.0.insert(trackers[i].member.id.clone(), reserved[i]);
            save_state(&state_path, &seqs)?;
        }
        k += 1;
        if !outs.is_empty()
            && dispatch(&sink, &trackers[i], outs, &mut request_rng, stale, &tally)
                .await
                .is_err()
        {
            break;
        }
    }
    // Devices still offline come back and upload what they buffered.
    for tracker in trackers.iter_mut() {
        let outs = tracker.flush();
        if !outs.is_empty()
            && dispatch(&sink, tracker, outs, &mut request_rng, stale, &tally)
                .await
                .is_err()
        {
            break;
        }
    }
    drop(sink);
    // A transport that stopped early says why here.
    transport.await??;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    for t in &trackers {
        seqs.0.insert(t.member.id.clone(), t.seq);
    }
    save_state(&state_path, &seqs)?;
    let summary = tally.finish(seconds);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!("{}", summary.text());
    }
    Ok(())
}

async fn dispatch(
    sink: &Sink,
    tracker: &Tracker,
    outs: Vec<Out>,
    rng: &mut Rng,
    stale: f64,
    tally: &Tally,
) -> anyhow::Result<()> {
    let closed = || anyhow::anyhow!("the transport stopped");
    match sink {
        Sink::Supplier(tx) => {
            for o in outs {
                tx.send(o).await.map_err(|_| closed())?;
            }
        }
        Sink::Https(tx) => {
            let stale = rng.unit() < stale;
            if stale {
                tally.request_fault(Fault::Stale);
            }
            let request = Request {
                signer: tracker.member.clone(),
                outs,
                stale,
            };
            tx.send(request).await.map_err(|_| closed())?;
        }
        Sink::Mqtt(txs) => {
            let i = outs[0].device;
            txs[i].send(outs).await.map_err(|_| closed())?;
        }
    }
    Ok(())
}

/// Wait for both tasks; the first error wins.
fn chain(
    a: tokio::task::JoinHandle<anyhow::Result<()>>,
    b: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        b.await??;
        a.await?
    })
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
