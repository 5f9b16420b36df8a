//! firmware-sim: virtual trackers and supplier relays that speak the trackgate protocol.
//!
//! This first version drives HTTPS only: it writes a roster of devices with fresh keys, provisions
//! it into trackgate through the `trackgate` CLI, and sends signed records (moving positions,
//! draining batteries) either as each device or relayed in batches by the supplier. Each device's
//! `seq` is kept in a state file, so a restarted simulator never reuses one.
#![forbid(unsafe_code)]

mod mqtt;
mod roster;
mod send;

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
    /// Send signed records over HTTPS and print a summary (text, and JSON with --json).
    Send(send::SendArgs),
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
    }
}
