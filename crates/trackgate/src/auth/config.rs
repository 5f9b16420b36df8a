//! The `[auth]` section: which OpenID Connect issuers trackgate trusts, and dev-mode tokens.

use anyhow::bail;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub dev_tokens: Option<bool>,
    pub leeway_secs: Option<u64>,
    pub jwks_min_refresh_secs: Option<u64>,
    pub grants_refresh_secs: Option<u64>,
    pub reauth_max_age_secs: Option<u64>,
    pub issuers: Vec<RawIssuer>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIssuer {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_url: Option<String>,
    pub ca: Option<PathBuf>,
    pub email_claims: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    pub tenant_claim: Option<String>,
    pub platform_admins: Vec<String>,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
}

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Trust tokens minted by `trackgate dev-token` (dev mode only).
    pub dev_tokens: bool,
    /// Allowed clock difference for `exp` and `nbf`.
    pub leeway: Duration,
    /// An unknown `kid` refetches an issuer's keys at most this often.
    pub jwks_min_refresh: Duration,
    /// How often a live stream re-reads which devices its caller may see.
    pub grants_refresh: Duration,
    /// Every administrative change needs a sign-in at the provider (`auth_time`) this recent.
    pub reauth_max_age: Duration,
    pub issuers: Vec<IssuerConfig>,
}

/// One trusted OpenID provider (for Entra ID: one per customer tenant).
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Exactly the `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry: trackgate's client id at that provider.
    pub audience: String,
    /// Where its signing keys are; `None`: from its discovery document.
    pub jwks_url: Option<String>,
    /// A CA to trust for its endpoints beyond the system's roots.
    pub ca: Option<PathBuf>,
    /// Claims tried in order for the user's email.
    pub email_claims: Vec<String>,
    pub groups_claim: String,
    pub tenant_claim: String,
    /// Emails (as this issuer asserts them) of platform administrators.
    pub platform_admins: Vec<String>,
    /// What the map page's sign-in button says.
    pub name: String,
    /// Scopes the map page asks for; its client id is `audience`.
    pub scopes: Vec<String>,
}

fn https(key: &str, url: &str) -> anyhow::Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        Ok(_) => bail!("`{key}` must be an https:// URL, not {url:?}"),
        Err(e) => bail!("`{key}` is not a URL ({e}): {url:?}"),
    }
}

impl RawAuth {
    pub fn validate(self, production: bool) -> anyhow::Result<AuthConfig> {
        let dev_tokens = self.dev_tokens.unwrap_or(!production);
        if production && dev_tokens {
            bail!("`auth.dev_tokens` must be off in production mode: dev tokens are signed by a local key");
        }
        let secs = |key: &str, v: Option<u64>, default: u64, max: u64| -> anyhow::Result<Duration> {
            let v = v.unwrap_or(default);
            if v > max {
                bail!("`auth.{key}` must be at most {max}, not {v}");
            }
            Ok(Duration::from_secs(v))
        };
        let mut issuers: Vec<IssuerConfig> = Vec::new();
        for (i, raw) in self.issuers.into_iter().enumerate() {
            let at = |k: &str| format!("auth.issuers[{i}].{k}");
            let Some(issuer) = raw.issuer else {
                bail!("`{}` is required", at("issuer"));
            };
            https(&at("issuer"), &issuer)?;
            let Some(audience) = raw.audience.filter(|a| !a.is_empty()) else {
                bail!("`{}` is required: trackgate's client id at {issuer}", at("audience"));
            };
            if let Some(j) = &raw.jwks_url {
                https(&at("jwks_url"), j)?;
            }
            let scopes = raw
                .scopes
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|s| s == "openid") {
                bail!("`{}` must include \"openid\"", at("scopes"));
            }
            let name = raw.name.unwrap_or_else(|| {
                reqwest::Url::parse(&issuer)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| issuer.clone())
            });
            if issuers.iter().any(|x| x.issuer == issuer) {
                bail!("`{}`: {issuer:?} is listed twice", at("issuer"));
            }
            issuers.push(IssuerConfig {
                issuer,
                audience,
                jwks_url: raw.jwks_url,
                ca: raw.ca,
                email_claims: raw
                    .email_claims
                    .unwrap_or_else(|| vec!["email".into(), "preferred_username".into(), "upn".into()]),
                groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".into()),
                tenant_claim: raw.tenant_claim.unwrap_or_else(|| "tid".into()),
                platform_admins: raw
                    .platform_admins
                    .iter()
                    .map(|e| e.trim().to_ascii_lowercase())
                    .collect(),
                name,
                scopes,
            });
        }
        Ok(AuthConfig {
            dev_tokens,
            leeway: secs("leeway_secs", self.leeway_secs, 60, 300)?,
            jwks_min_refresh: secs("jwks_min_refresh_secs", self.jwks_min_refresh_secs, 30, 86_400)?,
            grants_refresh: secs("grants_refresh_secs", self.grants_refresh_secs, 15, 3600)?
                .max(Duration::from_secs(1)),
            reauth_max_age: match secs("reauth_max_age_secs", self.reauth_max_age_secs, 900, 86_400)? {
                d if d < Duration::from_secs(10) => {
                    bail!(
                        "`auth.reauth_max_age_secs` must be at least 10 (a sign-in and the change it allows take that long), not {}",
                        d.as_secs()
                    )
                }
                d => d,
            },
            issuers,
        })
    }
}
