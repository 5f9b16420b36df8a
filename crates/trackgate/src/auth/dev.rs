//! Dev-mode tokens: an ES256 key in the data directory signs tokens for `trackgate dev-token`,
//! and a dev-mode server trusts them under the issuer [`DEV_ISSUER`]. Production refuses them.

use super::jwks::VerifyKey;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `iss` of dev tokens.
pub const DEV_ISSUER: &str = "trackgate-dev";
/// The `aud` of dev tokens.
pub const DEV_AUDIENCE: &str = "trackgate";
/// The claim that makes a dev token's holder a platform administrator.
pub const PLATFORM_ADMIN_CLAIM: &str = "trackgate_platform_admin";

pub struct DevKey {
    pub(crate) encoding: EncodingKey,
    verify: VerifyKey,
}

/// What a dev token says about its holder.
#[derive(Debug, Clone, Default)]
pub struct DevClaims {
    pub email: String,
    pub groups: Vec<String>,
    pub tenant: Option<String>,
    pub platform_admin: bool,
    pub ttl_secs: u64,
    /// How long ago the holder signed in (`auth_time`), seconds.
    pub auth_age_secs: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    email: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not", rename = "trackgate_platform_admin")]
    platform_admin: bool,
    iat: u64,
    nbf: u64,
    exp: u64,
    auth_time: u64,
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-token-key.pem")
}

impl DevKey {
    /// Load the dev signing key, generating it on first use.
    pub fn ensure(data_dir: &Path) -> anyhow::Result<DevKey> {
        let path = key_path(data_dir);
        if !path.exists() {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let pair =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the dev token key")?;
            crate::fsutil::write_private(&path, pair.serialize_pem().as_bytes())?;
        }
        let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let pair =
            rcgen::KeyPair::from_pem(&pem).with_context(|| format!("{} is not a PEM private key", path.display()))?;
        anyhow::ensure!(
            pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256,
            "{} is not a P-256 key",
            path.display()
        );
        let point = pair.public_key_raw();
        anyhow::ensure!(
            point.len() == 65 && point[0] == 4,
            "unexpected P-256 public key encoding"
        );
        let decoding = DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..]),
        )
        .context("the dev token public key")?;
        Ok(DevKey {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            verify: VerifyKey {
                alg: Algorithm::ES256,
                key: Arc::new(decoding),
            },
        })
    }

    pub fn verify_key(&self) -> VerifyKey {
        self.verify.clone()
    }

    /// A signed ID token for `c`, valid from now for `c.ttl_secs`.
    pub fn mint(&self, c: &DevClaims) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: DEV_ISSUER,
            aud: DEV_AUDIENCE,
            sub: &c.email,
            email: &c.email,
            groups: &c.groups,
            tid: c.tenant.as_deref(),
            platform_admin: c.platform_admin,
            iat: now,
            nbf: now,
            exp: now + c.ttl_secs,
            auth_time: now.saturating_sub(c.auth_age_secs),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("dev".into());
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}
