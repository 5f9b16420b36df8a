//! `trackgate db copy`: every table of one database into another (SQLite to PostgreSQL, the
//! usual way up from the Quick start), resumable, ending with the counts of both compared.

use crate::app;
use crate::config::Config;
use anyhow::{Context, bail};
use clap::Args;
use std::time::{Duration, Instant};
use trackgate_store::{Store, redact_url};

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The database to copy from. Default: the configuration's `database.url`.
    #[arg(long)]
    pub from: Option<String>,
    /// The database to copy into, e.g. `postgres://trackgate@db.internal/trackgate` (TLS
    /// verify-full by default; the CA from `database.postgres_ca` or the URL's `sslrootcert`).
    #[arg(long)]
    pub to: String,
    /// Continue a copy that stopped part way. Without it, a target that holds data is refused.
    #[arg(long)]
    pub resume: bool,
    /// Rows per page; each page is committed on its own.
    #[arg(long, default_value_t = 5000)]
    pub page_rows: u32,
}

/// Open `url` with the configuration's database options (pool, SQLite tuning, TLS to PostgreSQL).
async fn open(config: &Config, url: &str) -> anyhow::Result<Store> {
    let mut opts = config.database.clone();
    opts.url = url.to_owned();
    let master = app::load_master_key(&config.master_key)?;
    Store::open(&opts, master)
        .await
        .with_context(|| format!("opening {}", redact_url(url)))
}

pub async fn run(config: &Config, args: CopyArgs) -> anyhow::Result<()> {
    let from = args.from.clone().unwrap_or_else(|| config.database.url.clone());
    if from == args.to {
        bail!("--from and --to name the same database");
    }
    let source = open(config, &from).await?;
    let target = open(config, &args.to).await?;
    if target.holds_data().await? && !args.resume {
        bail!(
            "{} already holds data: pass --resume to continue a copy that stopped part way, \
             or copy into an empty database",
            redact_url(&args.to)
        );
    }
    eprintln!("copying {} into {}", redact_url(&from), redact_url(&args.to));
    let started = Instant::now();
    let mut shown = Instant::now() - Duration::from_secs(10);
    let mut current = String::new();
    let counts = source
        .copy_into(&target, args.page_rows, |table, done, of| {
            if table != current || shown.elapsed() >= Duration::from_secs(1) || done >= of {
                eprintln!("  {table}: {done} of {of}");
                current = table.to_owned();
                shown = Instant::now();
            }
        })
        .await?;
    source.close().await;
    target.close().await;
    println!("{:<20} {:>12} {:>12}", "table", "source", "target");
    for c in &counts {
        println!("{:<20} {:>12} {:>12}", c.table, c.source, c.target);
    }
    let differ: Vec<&str> = counts
        .iter()
        .filter(|c| c.source != c.target)
        .map(|c| c.table)
        .collect();
    if !differ.is_empty() {
        bail!("the counts differ for {}: the copy is not complete", differ.join(", "));
    }
    eprintln!(
        "copied in {:.1} s; every table's count agrees",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
