//! firmware-sim: virtual trackers and supplier relays that speak the trackgate protocol.
//!
//! `roster` writes a fleet with fresh keys; `provision` puts it into trackgate through the
//! `trackgate` CLI (optionally assigned to an organization); `send` runs it:
//!
//! - [`motion`]: each shipment's round trip between depots along great-circle legs, dwells, GPS
//!   noise and jumps, battery and temperature;
//! - [`fleet`]: each tracker's records, clock skew, offline backlogs and injected faults;
//! - [`send`]: pacing (a rate, a count or a duration) and the transports, [`https`] (as devices
//!   or as the supplier relay) and [`mqtt`] (one TLS connection per device);
//! - [`tally`]: progress and the summary, as the devices saw it;
//! - [`trip`]: the last hours of each device's trip, uploaded at once as a backlog (in order or
//!   shuffled), for what trackgate computes from a whole trip (events).
//!
//! Each device's `seq` is kept in a state file, so a restarted simulator never reuses one.
#![forbid(unsafe_code)]

mod fleet;
mod https;
mod motion;
mod mqtt;
mod roster;
mod send;
mod tally;
mod trip;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "firmware-sim", about = "Virtual trackers and supplier relays for trackgate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a roster: one supplier and N devices, each with a fresh random key.
    Roster {
        #[arg(long, default_value = "SIM")]
        supplier: String,
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Device ids are <prefix>-000001, ...
        #[arg(long, default_value = "SIM-TRK")]
        prefix: String,
        #[arg(long, default_value = "roster.json")]
        out: PathBuf,
    },
    /// Provision a roster into trackgate by running its CLI (same config as the server).
    Provision {
        #[arg(long, default_value = "roster.json")]
        roster: PathBuf,
        /// The trackgate binary.
        #[arg(long, default_value = "trackgate")]
        trackgate: PathBuf,
        /// Passed to trackgate as --config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also assign every device to this organization (created if missing), each on its own
        /// shipment, so operators of that organization see them on the map.
        #[arg(long)]
        org: Option<String>,
    },
    /// Send signed records (HTTPS as devices or supplier, or MQTT) and print a summary.
    Send(send::SendArgs),
    /// Print the depots and customer sites the trips run between, one per line:
    /// `name,longitude,latitude`.
    Sites,
    /// Upload the last hours of each device's trip as a backlog through the supplier relay and
    /// print a summary (JSON) with each device's stops.
    Trip(trip::TripArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Roster {
            supplier,
            devices,
            prefix,
            out,
        } => {
            let r = roster::Roster::generate(&supplier, devices, &prefix)?;
            r.save(&out)?;
            eprintln!("wrote {} with supplier {supplier} and {devices} devices", out.display());
            Ok(())
        }
        Command::Provision {
            roster,
            trackgate,
            config,
            org,
        } => roster::Roster::load(&roster)?.provision(&trackgate, config.as_deref(), org.as_deref()),
        Command::Send(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(send::run(args))
        }
        Command::Sites => {
            for (name, lat, lon) in motion::SITES {
                println!("{name},{lon},{lat}");
            }
            Ok(())
        }
        Command::Trip(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(trip::run(args))
        }
    }
}
