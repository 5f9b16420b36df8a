//! Operators' side of the store: organizations, order groups, device assignments, user groups
//! with their membership rules, what a caller may see, location reads and the audit log.
//!
//! Access is resolved in two steps. [`MemberKeys`] (the facts a verified ID token gives: email,
//! identity-provider groups, tenant) select the user groups whose rules match; those groups become
//! a [`Visibility`], which every location query applies in SQL.

use serde::Serialize;
use trackgate_proto::Measurement;

/// A user group's role in its organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages the organization's groups and grants; sees all of its devices.
    Admin,
    /// Sees devices, scoped to all order groups or to chosen ones.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The order groups a viewer group sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    AllOrderGroups,
    OrderGroups(Vec<String>),
}

/// The four ways a signed-in user becomes a member of a user group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Direct invitation: the exact email address (compared case-insensitively).
    Email,
    /// Everyone whose email is in this domain.
    Domain,
    /// An identity-provider group id, from the token's `groups` claim.
    IdpGroup,
    /// An identity-provider tenant id, from the token's `tid` claim.
    Tenant,
}

impl RuleKind {
    pub const ALL: [RuleKind; 4] = [RuleKind::Email, RuleKind::Domain, RuleKind::IdpGroup, RuleKind::Tenant];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Email => "email",
            RuleKind::Domain => "domain",
            RuleKind::IdpGroup => "idp_group",
            RuleKind::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The value as stored and compared: emails and domains lower-case, ids as given.
    pub fn normalize(self, value: &str) -> String {
        match self {
            RuleKind::Email | RuleKind::Domain => value.trim().to_ascii_lowercase(),
            RuleKind::IdpGroup | RuleKind::Tenant => value.trim().to_owned(),
        }
    }
}

/// What a verified identity offers for matching membership rules.
#[derive(Debug, Clone, Default)]
pub struct MemberKeys {
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub tenant: Option<String>,
}

impl MemberKeys {
    fn domain(&self) -> Option<String> {
        let email = self.email.as_deref()?;
        let (_, domain) = email.rsplit_once('@')?;
        (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
    }

    /// The (kind, value) pairs to look up, normalised.
    pub(crate) fn lookups(&self) -> Vec<(RuleKind, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.email {
            out.push((RuleKind::Email, RuleKind::Email.normalize(e)));
        }
        if let Some(d) = self.domain() {
            out.push((RuleKind::Domain, d));
        }
        for g in &self.groups {
            out.push((RuleKind::IdpGroup, RuleKind::IdpGroup.normalize(g)));
        }
        if let Some(t) = &self.tenant {
            out.push((RuleKind::Tenant, RuleKind::Tenant.normalize(t)));
        }
        out
    }
}

/// A user group the caller is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub org_id: String,
    pub user_group_id: String,
    pub role: Role,
    pub scope: Scope,
}

/// Which devices a caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Visibility {
    /// Platform administrator override: everything.
    pub everything: bool,
    /// Organizations seen whole (admin, or viewer of all order groups).
    pub orgs: Vec<String>,
    /// (organization, order group) pairs seen.
    pub order_groups: Vec<(String, String)>,
}

impl Visibility {
    pub fn everything() -> Visibility {
        Visibility {
            everything: true,
            ..Default::default()
        }
    }

    /// What these memberships grant.
    pub fn of(memberships: &[Membership]) -> Visibility {
        let mut v = Visibility::default();
        for m in memberships {
            match (&m.role, &m.scope) {
                (Role::Admin, _) | (Role::Viewer, Scope::AllOrderGroups) => v.orgs.push(m.org_id.clone()),
                (Role::Viewer, Scope::OrderGroups(groups)) => v
                    .order_groups
                    .extend(groups.iter().map(|g| (m.org_id.clone(), g.clone()))),
            }
        }
        v.orgs.sort();
        v.orgs.dedup();
        v.order_groups.sort();
        v.order_groups.dedup();
        v
    }

    pub fn is_nothing(&self) -> bool {
        !self.everything && self.orgs.is_empty() && self.order_groups.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    /// The positions retention the organization chose, if any.
    pub positions_retention_days: Option<u32>,
    /// How long its positions are kept: its choice, or the service's retention.
    pub positions_kept_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderGroup {
    pub org_id: String,
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// A user group as listed to an administrator, with its scope and rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserGroup {
    pub org_id: String,
    pub id: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub kind: RuleKind,
    pub value: String,
}

/// Where a device is assigned: its organization, order group and shipment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assignment {
    pub org_id: String,
    pub order_group_id: Option<String>,
    pub shipment_label: Option<String>,
    pub shipment_ref: Option<String>,
}

/// A position fix as the location API serves it: `seq`, `ts` and the measurements, which always
/// include `lat` and `lon`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fix {
    seq: i64,
    ts: i64,
    #[serde(flatten)]
    measurement: Measurement,
}

impl Fix {
    /// The fix of a record, if it has a position.
    pub fn new(seq: i64, ts: i64, measurement: Measurement) -> Option<Fix> {
        measurement.position()?;
        Some(Fix { seq, ts, measurement })
    }

    pub fn seq(&self) -> i64 {
        self.seq
    }

    pub fn ts(&self) -> i64 {
        self.ts
    }

    /// `(lat, lon)`.
    pub fn position(&self) -> (f64, f64) {
        self.measurement.position().expect("a fix has a position")
    }

    pub fn measurement(&self) -> &Measurement {
        &self.measurement
    }
}

/// A visible device: where it is assigned, its latest fix, and its newest record of any kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    pub id: String,
    #[serde(flatten)]
    pub assignment: Assignment,
    /// The newest record with a position (never moved back by a late backlog).
    pub position: Option<Fix>,
    /// Battery and temperature of the newest record.
    pub bat: Option<f64>,
    pub tmp: Option<f64>,
    /// `ts` of the newest record of any kind.
    pub last_seen_ms: Option<i64>,
}

/// A south-west / north-east box in degrees. `west > east` crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
    pub north: f64,
}

/// One page of a device's track, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackPage {
    pub points: Vec<Fix>,
    pub next: Option<TrackCursor>,
}

/// Where a track page ends: the last point's `(ts, seq)`, opaque to API callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackCursor {
    pub ts: i64,
    pub seq: i64,
}

impl TrackCursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts, self.seq)
    }

    pub fn decode(s: &str) -> Option<TrackCursor> {
        let (ts, seq) = s.split_once('.')?;
        Some(TrackCursor {
            ts: ts.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One audit entry to append.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// `oidc:<issuer>#<subject>` or `cli:<user>`.
    pub actor: String,
    pub actor_email: Option<String>,
    pub org_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub remote_addr: Option<String>,
    /// A platform administrator acting beyond their own groups' grants.
    pub over_ride: bool,
}

/// An audit entry as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub actor_email: Option<String>,
    pub org_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub remote_addr: Option<String>,
    #[serde(rename = "override")]
    pub over_ride: bool,
}
