//! An issuer's signing keys: found through its discovery document (or configured), cached by
//! `kid`, and fetched again when a token names a `kid` the cache lacks, at most once per
//! `jwks_min_refresh`, so a stream of made-up `kid`s cannot turn into a stream of fetches.

use super::config::IssuerConfig;
use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A verification key and the one algorithm it may verify.
#[derive(Clone)]
pub struct VerifyKey {
    pub alg: Algorithm,
    pub key: Arc<DecodingKey>,
}

pub struct IssuerKeys {
    config: IssuerConfig,
    http: reqwest::Client,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, VerifyKey>>,
    /// Held while fetching; holds when the last fetch started.
    fetch: Mutex<Option<Instant>>,
    fetches: std::sync::atomic::AtomicU64,
    /// The origin of the token endpoint its discovery document names, once fetched: the map
    /// page's browser posts the authorization code there.
    token_origin: RwLock<Option<String>>,
}

/// The algorithm a JWK may verify: RS256 for RSA keys, ES256 for P-256 keys; others are skipped.
fn usable(jwk: &Jwk) -> Option<(Algorithm, DecodingKey)> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return None,
    };
    // A key marked for another algorithm or for encryption is not for this.
    if let Some(declared) = jwk.common.key_algorithm
        && format!("{declared:?}") != format!("{alg:?}")
    {
        return None;
    }
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    Some((alg, DecodingKey::from_jwk(jwk).ok()?))
}

/// Parse a JWKS document, keeping the keys trackgate can use and skipping the rest.
pub fn parse_jwks(body: &[u8]) -> anyhow::Result<HashMap<String, VerifyKey>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).context("the JWKS is not a JSON object with `keys`")?;
    let mut out = HashMap::new();
    for (i, v) in doc.keys.into_iter().enumerate() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
            continue;
        };
        if let Some((alg, key)) = usable(&jwk) {
            // A key without a kid is addressed by its position.
            let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
            out.insert(
                kid,
                VerifyKey {
                    alg,
                    key: Arc::new(key),
                },
            );
        }
    }
    Ok(out)
}

/// An HTTPS client trusting the system's roots and, when given, the issuer's own CA.
pub fn http_client(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca {
        for cert in crate::tls::read_certs(path)? {
            roots
                .add(cert)
                .with_context(|| format!("adding the CA in {}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()?)
}

impl IssuerKeys {
    pub fn new(config: IssuerConfig, min_refresh: Duration) -> anyhow::Result<IssuerKeys> {
        let http = http_client(config.ca.as_deref())
            .with_context(|| format!("setting up HTTPS for the issuer {}", config.issuer))?;
        Ok(IssuerKeys {
            config,
            http,
            min_refresh,
            keys: RwLock::new(HashMap::new()),
            fetch: Mutex::new(None),
            fetches: Default::default(),
            token_origin: RwLock::new(None),
        })
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The token endpoint's origin, when discovery has named one.
    pub fn token_origin(&self) -> Option<String> {
        self.token_origin.read().expect("token origin lock").clone()
    }

    /// How many times the keys were fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, kid: Option<&str>) -> Option<VerifyKey> {
        let keys = self.keys.read().expect("jwks lock");
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            // No kid in the token: usable only when the issuer has exactly one key.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// The key for `kid`, fetching the issuer's keys once if it is not cached.
    pub async fn key(&self, kid: Option<&str>) -> Option<VerifyKey> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        let mut last = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return None;
        }
        *last = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "fetched the issuer's signing keys");
                *self.keys.write().expect("jwks lock") = keys;
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = format!("{e:#}"), "fetching the issuer's signing keys failed")
            }
        }
        self.cached(kid)
    }

    async fn fetch_keys(&self) -> anyhow::Result<HashMap<String, VerifyKey>> {
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let jwks_url = match &self.config.jwks_url {
            Some(u) => u.clone(),
            None => self.discover().await?,
        };
        let body = self
            .http
            .get(&jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {jwks_url}"))?
            .bytes()
            .await?;
        parse_jwks(&body).with_context(|| format!("reading {jwks_url}"))
    }

    /// `jwks_uri` from the discovery document, whose `issuer` must be this issuer exactly.
    async fn discover(&self) -> anyhow::Result<String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
            token_endpoint: Option<String>,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let d: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("reading {url}"))?;
        anyhow::ensure!(
            d.issuer == self.config.issuer,
            "{url} names the issuer {:?}, not {:?}",
            d.issuer,
            self.config.issuer
        );
        let origin = d
            .token_endpoint
            .as_deref()
            .and_then(|t| reqwest::Url::parse(t).ok())
            .filter(|u| u.scheme() == "https")
            .map(|u| u.origin().ascii_serialization());
        *self.token_origin.write().expect("token origin lock") = origin;
        Ok(d.jwks_uri)
    }
}
