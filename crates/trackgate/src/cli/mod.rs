//! The command line: `trackgate serve` and the provisioning commands, which work on the database
//! directly (a running server picks their changes up within `ingest.key_refresh_ms`).

mod backup;
mod copy;
mod import;
mod operators;

use crate::app;
use crate::config::Config;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use trackgate_proto::Secret;
use trackgate_store::{Kind, PrincipalInfo, Store};

#[derive(Debug, Parser)]
#[command(
    name = "trackgate",
    version,
    about = "Signed tracker telemetry over HTTPS into SQL, acknowledged only after commit"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, the embedded dev defaults (config/dev.toml).
    #[arg(long, global = true, env = "TRACKGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM.
    Serve,
    /// Suppliers: tracking-device vendors whose backends relay their devices' records.
    #[command(subcommand)]
    Supplier(PrincipalCommand),
    /// Devices: trackers that sign their own records.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Keys of a device or supplier: at most two active at a time, for rotation.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Helpers for an external MQTT broker.
    #[command(subcommand)]
    Mqtt(MqttCommand),
    /// Organizations: the customers whose operators see their devices.
    #[command(subcommand)]
    Org(operators::OrgCommand),
    /// Order groups of an organization: what viewer groups are scoped to.
    #[command(subcommand)]
    OrderGroup(operators::OrderGroupCommand),
    /// Geofences of an organization: named areas, polygons or circles.
    #[command(subcommand)]
    Geofence(operators::GeofenceCommand),
    /// User groups of an organization: a role, a scope, and who is a member.
    #[command(subcommand)]
    UserGroup(operators::UserGroupCommand),
    /// Membership rules of a user group.
    #[command(subcommand)]
    Rule(operators::RuleCommand),
    /// Print the audit log, newest first, as JSON lines; `audit verify` checks its hash chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// An online copy of the SQLite database into a new file, taken while trackgate keeps
    /// ingesting. The master key is not in it.
    Backup(backup::BackupArgs),
    /// Bring a backup back as the configured SQLite database, which must not exist yet (stop
    /// trackgate and move the current one away first). Checked against the master key.
    Restore(backup::RestoreArgs),
    /// Dev mode only: print an ID token signed with the local dev key, for the operators' API.
    DevToken(DevTokenArgs),
    /// The database as a whole.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no entry was changed, removed or reordered (of --org only, if given), and
    /// print the verdict; exit 1 naming the first entry that does not verify.
    Verify {
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy every table into another database (for example from the Quick start's SQLite file
    /// into PostgreSQL), with progress; resumable; ends with each table's counts compared.
    Copy(copy::CopyArgs),
    /// Remove now what is past its retention (the server does it every `retention.interval_secs`);
    /// prints what was removed as JSON.
    Purge,
}

#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The user's email (also the token's subject).
    #[arg(long)]
    pub email: String,
    /// Identity-provider group ids (the `groups` claim); repeat or separate by commas.
    #[arg(long = "groups", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Identity-provider tenant id (the `tid` claim).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Make the holder a platform administrator.
    #[arg(long)]
    pub platform_admin: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    pub ttl_secs: u64,
    /// How long ago the holder signed in (the `auth_time` claim), in seconds.
    #[arg(long, default_value_t = 0)]
    pub auth_age_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum MqttCommand {
    /// Write every enabled device's broker credentials in Mosquitto's password-file format
    /// (username = device id, password derived from its key). Mosquitto holds one password per
    /// user, so a device with two active keys gets its oldest one (or --newest-key): regenerate
    /// the file when a rotation moves devices to their new key.
    PasswdFile {
        /// Write here (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use each device's newest active key instead of its oldest.
        #[arg(long)]
        newest_key: bool,
        /// Also add a line for trackgate's own broker account...
        #[arg(long, requires = "service_password_file")]
        service_user: Option<String>,
        /// ...whose password is read from this file.
        #[arg(long, requires = "service_user")]
        service_password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Provision a supplier.
    Add {
        id: String,
    },
    /// List suppliers and their key ids (never their secrets).
    List(ListArgs),
    /// Refuse the supplier's requests from now on.
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Provision a device, optionally relayed by a supplier.
    Add {
        id: String,
        /// The supplier whose key may carry this device's records.
        #[arg(long)]
        supplier: Option<String>,
    },
    /// Provision many devices with one key each: lines of `<device id> <key id> <64 hex>` on
    /// standard input (or --from-file), committed 10,000 at a time.
    Import {
        /// The supplier whose key may carry these devices' records.
        #[arg(long)]
        supplier: Option<String>,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List devices and their key ids (never their secrets).
    List(ListArgs),
    /// Reject the device's records (device_disabled) from now on.
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    /// Give the device to an organization (clears its order group and shipment).
    Assign {
        id: String,
        #[arg(long)]
        org: String,
    },
    /// Attach the device to a shipment and an order group within its organization.
    Shipment {
        id: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        order_group: Option<String>,
        /// The shipment's label, as operators know it.
        #[arg(long)]
        label: Option<String>,
        /// An optional reference (order number, container id).
        #[arg(long)]
        reference: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key and print its secret once, as 64 hex characters on standard output.
    Generate { owner: String, kid: String },
    /// Import a key burned in at the factory: 64 hex characters read from standard input
    /// (or --from-file), never from the command line.
    Import {
        owner: String,
        kid: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Revoke a key: records and requests signed with it are refused from now on.
    Revoke { owner: String, kid: String },
}

/// Run a provisioning command.
pub async fn run(config: &Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::DevToken(args) => return dev_token(config, args),
        Command::Db(DbCommand::Copy(args)) => return copy::run(config, args).await,
        Command::Restore(args) => return backup::restore(config, args).await,
        _ => {}
    }
    let store = app::open_store(config).await?;
    let result = provision(&store, command).await;
    store.close().await;
    result
}

async fn provision(store: &Store, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is dispatched by main"),
        Command::Supplier(c) => match c {
            PrincipalCommand::Add { id } => {
                store.add_supplier(&id).await?;
                eprintln!("supplier {id} added");
            }
            PrincipalCommand::List(a) => print_list(&store.list(Some(Kind::Supplier)).await?, a.json)?,
            PrincipalCommand::Disable { id } => set_enabled(store, &id, false).await?,
            PrincipalCommand::Enable { id } => set_enabled(store, &id, true).await?,
        },
        Command::Device(c) => match c {
            DeviceCommand::Add { id, supplier } => {
                store.add_device(&id, supplier.as_deref()).await?;
                eprintln!("device {id} added");
            }
            DeviceCommand::Import { supplier, from_file } => {
                let input: Box<dyn std::io::BufRead> = match &from_file {
                    Some(path) => Box::new(std::io::BufReader::new(
                        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
                    )),
                    None => Box::new(std::io::stdin().lock()),
                };
                let n = import::devices(store, input, supplier.as_deref()).await?;
                eprintln!("{n} devices imported");
            }
            DeviceCommand::List(a) => print_list(&store.list(Some(Kind::Device)).await?, a.json)?,
            DeviceCommand::Disable { id } => set_enabled(store, &id, false).await?,
            DeviceCommand::Enable { id } => set_enabled(store, &id, true).await?,
            DeviceCommand::Assign { id, org } => operators::assign(store, &id, &org).await?,
            DeviceCommand::Shipment {
                id,
                org,
                order_group,
                label,
                reference,
            } => {
                let a = trackgate_store::Assignment {
                    org_id: org,
                    order_group_id: order_group,
                    shipment_label: label,
                    shipment_ref: reference,
                };
                operators::shipment(store, &id, a).await?
            }
        },
        Command::Org(c) => operators::org(store, c).await?,
        Command::OrderGroup(c) => operators::order_group(store, c).await?,
        Command::Geofence(c) => operators::geofence(store, c).await?,
        Command::UserGroup(c) => operators::user_group(store, c).await?,
        Command::Rule(c) => operators::rule(store, c).await?,
        Command::Audit {
            verify: Some(AuditCommand::Verify { org }),
            ..
        } => operators::verify_audit(store, org.as_deref()).await?,
        Command::Audit { org, limit, .. } => operators::audit(store, org.as_deref(), limit).await?,
        Command::DevToken(_) => unreachable!("dev-token needs no database"),
        Command::Db(DbCommand::Purge) => match store.purge(trackgate_store::now_ms()).await? {
            Some(report) => println!("{}", serde_json::to_string(&report)?),
            None => anyhow::bail!("another node is purging now; try again later"),
        },
        Command::Backup(args) => backup::backup(store, args).await?,
        Command::Db(DbCommand::Copy(_)) | Command::Restore(_) => unreachable!("these open their own databases"),
        Command::Key(c) => match c {
            KeyCommand::Generate { owner, kid } => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
                let secret = Secret::from_bytes(bytes);
                store.add_key(&owner, &kid, &secret).await?;
                println!("{}", secret.to_hex());
                eprintln!("key {owner}/{kid} added; the secret above is shown only this once");
            }
            KeyCommand::Import { owner, kid, from_file } => {
                let mut text = String::new();
                match &from_file {
                    Some(path) => {
                        text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
                    }
                    None => {
                        std::io::stdin()
                            .read_to_string(&mut text)
                            .context("reading the secret from standard input")?;
                    }
                }
                let secret = Secret::from_hex(&text)?;
                store.add_key(&owner, &kid, &secret).await?;
                eprintln!("key {owner}/{kid} imported");
            }
            KeyCommand::Revoke { owner, kid } => {
                store.revoke_key(&owner, &kid).await?;
                eprintln!("key {owner}/{kid} revoked");
            }
        },
        Command::Mqtt(MqttCommand::PasswdFile {
            out,
            newest_key,
            service_user,
            service_password_file,
        }) => {
            let mut text = String::new();
            if let (Some(user), Some(file)) = (service_user, service_password_file) {
                let password = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                let mut salt = [0u8; 12];
                getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
                text += &crate::mosquitto::line(&user, password.trim(), &salt);
                text.push('\n');
            }
            let devices = store.list(Some(Kind::Device)).await?;
            let ids: Vec<&str> = devices.iter().filter(|d| d.enabled).map(|d| d.id.as_str()).collect();
            let principals = store.principals(&ids).await?;
            let mut written = 0;
            for id in ids {
                let keys = principals.get(id).map(|p| p.keys.as_slice()).unwrap_or_default();
                let key = if newest_key { keys.last() } else { keys.first() };
                if let Some(k) = key {
                    text += &crate::mosquitto::device_line(id, &k.secret)?;
                    text.push('\n');
                    written += 1;
                }
            }
            match out {
                Some(path) => {
                    let _ = std::fs::remove_file(&path);
                    crate::fsutil::write_private(&path, text.as_bytes())?;
                    eprintln!("wrote credentials of {written} devices to {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// Mint a dev token: only where the configuration trusts dev tokens.
fn dev_token(config: &Config, a: DevTokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.auth.dev_tokens,
        "dev tokens are off in this configuration (`auth.dev_tokens`; never in production mode)"
    );
    anyhow::ensure!(
        a.email.contains('@'),
        "--email must be an email address, not {:?}",
        a.email
    );
    let key = crate::auth::dev::DevKey::ensure(&config.data_dir)?;
    let token = key.mint(&crate::auth::dev::DevClaims {
        email: a.email,
        groups: a.groups,
        tenant: a.tenant,
        platform_admin: a.platform_admin,
        ttl_secs: a.ttl_secs,
        auth_age_secs: a.auth_age_secs,
    })?;
    println!("{token}");
    Ok(())
}

async fn set_enabled(store: &Store, id: &str, enabled: bool) -> anyhow::Result<()> {
    store.set_enabled(id, enabled).await?;
    eprintln!("{id} {}", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

fn print_list(items: &[PrincipalInfo], json: bool) -> anyhow::Result<()> {
    if json {
        for p in items {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    println!("{:<24} {:<16} {:<8} KEYS", "ID", "SUPPLIER", "ENABLED");
    for p in items {
        let keys: Vec<String> = p
            .keys
            .iter()
            .map(|k| {
                if k.active {
                    k.kid.clone()
                } else {
                    format!("{}(revoked)", k.kid)
                }
            })
            .collect();
        println!(
            "{:<24} {:<16} {:<8} {}",
            p.id,
            p.supplier.as_deref().unwrap_or("-"),
            p.enabled,
            keys.join(",")
        );
    }
    Ok(())
}
