//! Operator administration from the command line: organizations, order groups, geofences, device
//! assignment, user groups and membership rules, the audit log, and dev-mode tokens. Commands
//! work on the database directly, as a platform administrator would, and each change is audited
//! under `cli:<user>`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use trackgate_store::geofence::{Area, Circle, Geometry};
use trackgate_store::{Assignment, AuditEntry, Role, Rule, RuleKind, Scope, Store, UserGroup};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Add {
        id: String,
        #[arg(long)]
        name: String,
    },
    /// List organizations.
    List,
    /// Export everything of an organization (groups, rules, devices, positions as signed
    /// envelopes, audit trail) into a new tar archive of NDJSON files with a manifest of counts
    /// and SHA-256 digests.
    Export {
        id: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Delete an organization and everything it owns: its devices' positions, its groups, rules
    /// and order groups; its devices are unassigned, or deleted with their keys. Prints what was
    /// removed. Run it again to finish a deletion that was interrupted. Its audit entries stay.
    Delete {
        id: String,
        #[arg(long)]
        delete_devices: bool,
    },
    /// Keep an organization's positions for DAYS (from `retention.min_organization_days` to
    /// `ingest.retention_days`), or `default` for the service's retention.
    Retention { id: String, days: String },
}

#[derive(Debug, Subcommand)]
pub enum OrderGroupCommand {
    /// Create an order group in an organization.
    Add {
        #[arg(long)]
        org: String,
        id: String,
        #[arg(long)]
        name: String,
    },
    /// List an organization's order groups.
    List {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GeofenceCommand {
    /// Create or replace a geofence of an organization: a GeoJSON Polygon or MultiPolygon from a
    /// file, or a circle.
    Put {
        #[arg(long)]
        org: String,
        id: String,
        #[arg(long)]
        name: String,
        /// A file holding a GeoJSON geometry (`{"type": "Polygon", "coordinates": ...}`).
        #[arg(long, conflicts_with = "circle", required_unless_present = "circle")]
        geojson: Option<std::path::PathBuf>,
        /// `LON,LAT,RADIUS_M`: a circle by its centre in degrees and its radius in metres.
        #[arg(long)]
        circle: Option<String>,
    },
    /// List an organization's geofences, as JSON lines.
    List {
        #[arg(long)]
        org: String,
    },
    /// Remove a geofence.
    Remove {
        #[arg(long)]
        org: String,
        id: String,
    },
}

/// `--circle LON,LAT,RADIUS_M`.
fn circle(spec: &str) -> anyhow::Result<Area> {
    let v: Vec<f64> = spec
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--circle must be LON,LAT,RADIUS_M in degrees and metres, not {spec:?}"))?;
    let [lon, lat, radius_m] = v[..] else {
        anyhow::bail!("--circle must be LON,LAT,RADIUS_M in degrees and metres, not {spec:?}");
    };
    Ok(Area::Circle(Circle {
        center: vec![lon, lat],
        radius_m,
    }))
}

pub async fn geofence(store: &Store, c: GeofenceCommand) -> anyhow::Result<()> {
    match c {
        GeofenceCommand::Put {
            org,
            id,
            name,
            geojson,
            circle: spec,
        } => {
            let area = match (geojson, spec) {
                (Some(path), _) => {
                    let text =
                        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                    let g: Geometry = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a GeoJSON Polygon or MultiPolygon", path.display()))?;
                    Area::Geometry(g)
                }
                (None, Some(spec)) => circle(&spec)?,
                (None, None) => anyhow::bail!("give --geojson FILE or --circle LON,LAT,RADIUS_M"),
            };
            let audit = cli_audit("geofence.put", Some(&org), Some(id.clone()));
            store.put_geofence(&org, &id, &name, area, &audit).await?;
            eprintln!("geofence {org}/{id} saved");
        }
        GeofenceCommand::List { org } => {
            for g in store.geofences(Some(&[org])).await? {
                println!("{}", serde_json::to_string(&g)?);
            }
        }
        GeofenceCommand::Remove { org, id } => {
            let audit = cli_audit("geofence.remove", Some(&org), Some(id.clone()));
            store.remove_geofence(&org, &id, &audit).await?;
            eprintln!("geofence {org}/{id} removed");
        }
    }
    Ok(())
}

/// Membership rules: any number of each kind.
#[derive(Debug, Args, Default)]
pub struct RuleArgs {
    /// Direct invitation: this exact email address.
    #[arg(long = "email")]
    pub emails: Vec<String>,
    /// Everyone whose email is in this domain.
    #[arg(long = "domain")]
    pub domains: Vec<String>,
    /// An identity-provider group id (the token's `groups` claim).
    #[arg(long = "idp-group")]
    pub idp_groups: Vec<String>,
    /// An identity-provider tenant id (the token's `tid` claim).
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
}

impl RuleArgs {
    pub fn rules(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for (kind, values) in [
            (RuleKind::Email, &self.emails),
            (RuleKind::Domain, &self.domains),
            (RuleKind::IdpGroup, &self.idp_groups),
            (RuleKind::Tenant, &self.tenants),
        ] {
            out.extend(values.iter().map(|v| Rule { kind, value: v.clone() }));
        }
        out
    }
}

#[derive(Debug, Subcommand)]
pub enum UserGroupCommand {
    /// Create a user group with its role, scope and membership rules.
    Add {
        #[arg(long)]
        org: String,
        id: String,
        #[arg(long)]
        name: String,
        /// admin (manages the organization, sees all of it) or viewer.
        #[arg(long)]
        role: String,
        /// For viewers: `all`, or order group ids separated by commas.
        #[arg(long, default_value = "all")]
        order_groups: String,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// List an organization's user groups with their scopes and rules (JSON lines).
    List {
        #[arg(long)]
        org: String,
    },
    /// Delete a user group and its rules.
    Remove {
        #[arg(long)]
        org: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Add membership rules to a user group.
    Add {
        #[arg(long)]
        org: String,
        #[arg(long)]
        group: String,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Remove membership rules from a user group.
    Remove {
        #[arg(long)]
        org: String,
        #[arg(long)]
        group: String,
        #[command(flatten)]
        rules: RuleArgs,
    },
}

/// How the audit log names whoever runs the CLI.
pub fn cli_audit(action: &str, org: Option<&str>, target: Option<String>) -> AuditEntry {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    AuditEntry {
        actor: format!("cli:{user}"),
        actor_email: None,
        org_id: org.map(str::to_owned),
        action: action.to_owned(),
        target,
        detail: None,
        remote_addr: Some("local".into()),
        over_ride: false,
    }
}

fn scope(role: Role, spec: &str) -> anyhow::Result<Scope> {
    if spec == "all" || role == Role::Admin {
        return Ok(Scope::AllOrderGroups);
    }
    let groups: Vec<String> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!groups.is_empty(), "--order-groups must be `all` or order group ids");
    Ok(Scope::OrderGroups(groups))
}

pub async fn org(store: &Store, c: OrgCommand) -> anyhow::Result<()> {
    match c {
        OrgCommand::Add { id, name } => {
            store
                .add_organization(&id, &name, &cli_audit("org.add", Some(&id), Some(name.clone())))
                .await?;
            eprintln!("organization {id} added");
        }
        OrgCommand::List => {
            for o in store.organizations(None).await? {
                println!("{}", serde_json::to_string(&o)?);
            }
        }
        OrgCommand::Export { id, out } => {
            let manifest = crate::export::export(store, &id, &out, cli_audit("org.export", Some(&id), None)).await?;
            println!("{}", serde_json::to_string(&manifest)?);
            eprintln!("organization {id} exported to {} (mode 0600)", out.display());
        }
        OrgCommand::Delete { id, delete_devices } => {
            let audit = cli_audit("org.delete", Some(&id), Some(id.clone()));
            let report = store.delete_org(&id, delete_devices, &audit).await?;
            println!("{}", serde_json::to_string(&report)?);
            eprintln!("organization {id} deleted");
        }
        OrgCommand::Retention { id, days } => {
            let chosen = match days.as_str() {
                "default" => None,
                d => Some(
                    d.parse::<u32>()
                        .map_err(|_| anyhow::anyhow!("DAYS must be a number of days or `default`, not {d:?}"))?,
                ),
            };
            let audit = cli_audit("retention.set", Some(&id), Some(format!("positions_days={days}")));
            store.set_positions_retention(&id, chosen, &audit).await?;
            eprintln!("organization {id} keeps positions for {days} days");
        }
    }
    Ok(())
}

pub async fn order_group(store: &Store, c: OrderGroupCommand) -> anyhow::Result<()> {
    match c {
        OrderGroupCommand::Add { org, id, name } => {
            let audit = cli_audit("order_group.add", Some(&org), Some(id.clone()));
            store.add_order_group(&org, &id, &name, &audit).await?;
            eprintln!("order group {org}/{id} added");
        }
        OrderGroupCommand::List { org } => {
            for g in store.order_groups(&org).await? {
                println!("{}", serde_json::to_string(&g)?);
            }
        }
    }
    Ok(())
}

pub async fn assign(store: &Store, device: &str, org: &str) -> anyhow::Result<()> {
    store
        .assign_device(
            device,
            org,
            &cli_audit("device.assign", Some(org), Some(device.to_owned())),
        )
        .await?;
    eprintln!("device {device} belongs to {org}");
    Ok(())
}

pub async fn shipment(store: &Store, device: &str, a: Assignment) -> anyhow::Result<()> {
    let audit = cli_audit("device.shipment", Some(&a.org_id), Some(device.to_owned()));
    store.set_shipment(device, &a, &audit).await?;
    eprintln!("device {device} updated");
    Ok(())
}

pub async fn user_group(store: &Store, c: UserGroupCommand) -> anyhow::Result<()> {
    match c {
        UserGroupCommand::Add {
            org,
            id,
            name,
            role,
            order_groups,
            rules,
        } => {
            let role =
                Role::parse(&role).ok_or_else(|| anyhow::anyhow!("--role must be admin or viewer, not {role:?}"))?;
            let group = UserGroup {
                org_id: org.clone(),
                id: id.clone(),
                name,
                role,
                scope: scope(role, &order_groups)?,
                rules: rules.rules(),
            };
            store
                .add_user_group(&group, &cli_audit("user_group.add", Some(&org), Some(id.clone())))
                .await?;
            eprintln!("user group {org}/{id} added");
        }
        UserGroupCommand::List { org } => {
            for g in store.user_groups(&org).await? {
                println!("{}", serde_json::to_string(&g)?);
            }
        }
        UserGroupCommand::Remove { org, id } => {
            store
                .remove_user_group(&org, &id, &cli_audit("user_group.remove", Some(&org), Some(id.clone())))
                .await?;
            eprintln!("user group {org}/{id} removed");
        }
    }
    Ok(())
}

pub async fn rule(store: &Store, c: RuleCommand) -> anyhow::Result<()> {
    let (adding, org, group, rules) = match c {
        RuleCommand::Add { org, group, rules } => (true, org, group, rules.rules()),
        RuleCommand::Remove { org, group, rules } => (false, org, group, rules.rules()),
    };
    anyhow::ensure!(
        !rules.is_empty(),
        "give at least one of --email, --domain, --idp-group, --tenant"
    );
    for r in rules {
        let mut audit = cli_audit(
            if adding { "rule.add" } else { "rule.remove" },
            Some(&org),
            Some(group.clone()),
        );
        audit.detail = Some(format!("{} {}", r.kind.as_str(), r.value));
        if adding {
            store.add_rule(&org, &group, &r, &audit).await?;
        } else {
            store.remove_rule(&org, &group, &r, &audit).await?;
        }
        eprintln!(
            "{} rule {} {}",
            if adding { "added" } else { "removed" },
            r.kind.as_str(),
            r.value
        );
    }
    Ok(())
}

/// Check the audit log's hash chain (an organization's entries only, with `org`); print the
/// verdict as JSON, and fail naming the first entry that does not verify.
pub async fn verify_audit(store: &Store, org: Option<&str>) -> anyhow::Result<()> {
    let v = store.verify_audit(org).await?;
    println!("{}", serde_json::to_string(&v)?);
    match &v.failure {
        Some(f) => anyhow::bail!("the audit log does not verify: {}", f.reason),
        None => {
            eprintln!(
                "{} entries verify; note the head (id, hash) elsewhere to detect a later removal of the newest entries",
                v.entries
            );
            Ok(())
        }
    }
}

pub async fn audit(store: &Store, org: Option<&str>, limit: u32) -> anyhow::Result<()> {
    for e in store.audit_log(org, None, limit).await? {
        println!("{}", serde_json::to_string(&e)?);
    }
    Ok(())
}
