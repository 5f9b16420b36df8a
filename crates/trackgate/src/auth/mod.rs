//! Operator sign-in: OpenID Connect ID tokens (RS256 or ES256) verified against each trusted
//! issuer's keys ([`jwks`]), or, in dev mode, against the local dev key ([`dev`]). The result is
//! an [`Identity`]: who the caller is and the facts membership rules match on. trackgate never
//! sees a password.

pub mod config;
pub mod dev;
pub mod jwks;

use config::AuthConfig;
use dev::{DEV_AUDIENCE, DEV_ISSUER, DevKey, PLATFORM_ADMIN_CLAIM};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use jwks::{IssuerKeys, VerifyKey};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use trackgate_store::MemberKeys;

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub tenant: Option<String>,
    /// A platform administrator: may override grants; every such access is audited.
    pub platform_admin: bool,
    /// The last second (Unix) the token is accepted in: its `exp` plus the leeway. A live stream
    /// opened with it ends after that.
    pub valid_until: u64,
    /// When the user signed in at the provider (`auth_time`), Unix seconds, if the token says.
    pub auth_time: Option<u64>,
}

impl Identity {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("oidc:{}#{}", self.issuer, self.subject)
    }

    pub fn member_keys(&self) -> MemberKeys {
        MemberKeys {
            email: self.email.clone(),
            groups: self.groups.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

/// Why a token was refused. Every one is a 401; the message says which check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <ID token>`")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted: only RS256 and ES256")]
    Algorithm,
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    #[error("the token's signing key is not among the issuer's keys")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for trackgate (aud)")]
    Audience,
    #[error("the token's claims are not acceptable: {0}")]
    Claims(&'static str),
}

pub struct Authenticator {
    issuers: HashMap<String, IssuerKeys>,
    dev: Option<VerifyKey>,
    leeway: Duration,
}

/// What an ID token says about itself before its signature is checked: its header (algorithm,
/// key id) and its issuer. It only picks whose keys to try; nothing else is trusted before the
/// signature holds. Fuzzed (`fuzz/fuzz_targets/id_token.rs`).
pub fn unverified_parts(token: &str) -> Result<(jsonwebtoken::Header, String), AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
        return Err(AuthError::Algorithm);
    }
    Ok((header, unverified_issuer(token)?))
}

/// `iss` from the payload, before the signature is checked.
fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    iss.iss.ok_or(AuthError::Claims("no `iss`"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

impl Authenticator {
    pub fn new(config: &AuthConfig, dev: Option<&DevKey>) -> anyhow::Result<Authenticator> {
        let mut issuers = HashMap::new();
        for i in &config.issuers {
            issuers.insert(i.issuer.clone(), IssuerKeys::new(i.clone(), config.jwks_min_refresh)?);
        }
        Ok(Authenticator {
            issuers,
            dev: dev.map(DevKey::verify_key),
            leeway: config.leeway,
        })
    }

    /// Fetch every issuer's keys now, so the first sign-in does not wait; failures are logged.
    pub async fn warm(&self) {
        for keys in self.issuers.values() {
            let _ = keys.key(Some("")).await;
        }
    }

    /// Origins a browser signing in talks to: each issuer's (discovery), and each token
    /// endpoint's that discovery has named so far.
    pub fn browser_origins(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut issuers: Vec<&IssuerKeys> = self.issuers.values().collect();
        issuers.sort_by(|a, b| a.config().issuer.cmp(&b.config().issuer));
        for keys in issuers {
            let issuer = reqwest::Url::parse(&keys.config().issuer)
                .ok()
                .map(|u| u.origin().ascii_serialization());
            for origin in issuer.into_iter().chain(keys.token_origin()) {
                if !out.contains(&origin) {
                    out.push(origin);
                }
            }
        }
        out
    }

    /// How many times `issuer`'s keys were fetched (for tests and metrics).
    pub fn jwks_fetches(&self, issuer: &str) -> Option<u64> {
        self.issuers.get(issuer).map(IssuerKeys::fetches)
    }

    /// Verify an ID token and say who it names.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let (header, iss) = unverified_parts(token)?;
        let (key, audience, issuer) = if iss == DEV_ISSUER {
            (self.dev.clone().ok_or(AuthError::UntrustedIssuer)?, DEV_AUDIENCE, None)
        } else {
            let keys = self.issuers.get(&iss).ok_or(AuthError::UntrustedIssuer)?;
            let key = keys.key(header.kid.as_deref()).await.ok_or(AuthError::UnknownKey)?;
            (key, keys.config().audience.as_str(), Some(keys.config()))
        };
        if key.alg != header.alg {
            return Err(AuthError::Algorithm);
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&iss]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = self.leeway.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer,
            ErrorKind::MissingRequiredClaim(_) => AuthError::Claims("exp, iss, aud and sub are required"),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let valid_until = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::Claims("`exp` must be a number of seconds"))?
            .saturating_add(self.leeway.as_secs());
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Claims("`sub` must be a non-empty string"))?
            .to_owned();
        let identity = match issuer {
            None => Identity {
                issuer: iss,
                subject,
                email: claims.get("email").and_then(Value::as_str).map(str::to_ascii_lowercase),
                groups: strings(claims.get("groups")),
                tenant: claims.get("tid").and_then(Value::as_str).map(str::to_owned),
                platform_admin: claims.get(PLATFORM_ADMIN_CLAIM) == Some(&Value::Bool(true)),
                valid_until,
                auth_time: claims.get("auth_time").and_then(Value::as_u64),
            },
            Some(cfg) => {
                // An email the provider says is unverified is not used for matching.
                let unverified = claims.get("email_verified") == Some(&Value::Bool(false));
                let email = cfg
                    .email_claims
                    .iter()
                    .find_map(|c| claims.get(c).and_then(Value::as_str))
                    .filter(|e| e.contains('@') && !unverified)
                    .map(str::to_ascii_lowercase);
                let platform_admin = email.as_ref().is_some_and(|e| cfg.platform_admins.contains(e));
                Identity {
                    issuer: iss,
                    subject,
                    email,
                    groups: strings(claims.get(&cfg.groups_claim)),
                    tenant: claims.get(&cfg.tenant_claim).and_then(Value::as_str).map(str::to_owned),
                    platform_admin,
                    valid_until,
                    auth_time: claims.get("auth_time").and_then(Value::as_u64),
                }
            }
        };
        Ok(identity)
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

/// Shared handle.
pub type Auth = Arc<Authenticator>;

#[cfg(test)]
mod tests;
