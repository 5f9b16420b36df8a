//! `trackgate backup` and `trackgate restore`: an online copy of an SQLite database, taken
//! while trackgate keeps ingesting (`VACUUM INTO`, one read transaction: a consistent snapshot),
//! and its way back. The keys in it stay sealed under the master key, which is not in it: keep
//! the key apart from the backups, and both, since neither opens anything without the other.
//! PostgreSQL is backed up with its own tools (README, "Data lifecycle").

use crate::app;
use crate::config::Config;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use trackgate_store::Store;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to make; it must not exist.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file made by `trackgate backup`.
    #[arg(long)]
    pub from: PathBuf,
}

pub async fn backup(store: &Store, args: BackupArgs) -> anyhow::Result<()> {
    if store.backend_name() != "sqlite" {
        return Err(trackgate_store::StoreError::SqliteOnly("a backup by trackgate").into());
    }
    // Made empty with mode 0600 first, so the copy is never readable by others, not even briefly;
    // an existing file is refused.
    crate::fsutil::write_private(&args.out, b"")?;
    if let Err(e) = store.backup_to(&args.out).await {
        let _ = std::fs::remove_file(&args.out);
        return Err(e).with_context(|| format!("backing up into {}", args.out.display()));
    }
    eprintln!(
        "backup written to {} (mode 0600). It does not contain the master key: the device and \
         supplier keys in it open only with the key this server runs with, so keep that key, \
         apart from the backup.",
        args.out.display()
    );
    Ok(())
}

pub async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<()> {
    let master = app::load_master_key(&config.master_key)?;
    let path = Store::restore_sqlite(&args.from, &config.database, master)
        .await
        .with_context(|| format!("restoring from {}", args.from.display()))?;
    eprintln!(
        "restored {} into {}; it opens with this server's master key",
        args.from.display(),
        path.display()
    );
    Ok(())
}
