//! The operators' map page, served at `/` on the HTTPS listener: one HTML page, its scripts and
//! styles ([`assets`], embedded at build time), and `/ui/config.json`, which tells the page how
//! to sign in (the configured OpenID providers; dev tokens in dev mode) and where its map tiles
//! come from ([`config`]). The page itself only calls the location API ([`crate::api`]) with the
//! caller's ID token, so it sees exactly what the API lets that caller see.
//!
//! Every response carries a Content-Security-Policy that allows only this origin's scripts and
//! styles, the tile server's images, and the providers' endpoints for sign-in.

pub mod assets;
pub mod config;

use crate::auth::Auth;
use crate::auth::config::AuthConfig;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::get;
use config::UiConfig;
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
pub struct WebState(Arc<Inner>);

struct Inner {
    /// The body of `/ui/config.json`.
    page_config: Vec<u8>,
    ui: UiConfig,
    /// Which providers the browser may reach (their token endpoints become known by discovery).
    auth: Auth,
    hsts: bool,
}

impl WebState {
    /// `production` adds Strict-Transport-Security (a dev certificate on localhost should not pin
    /// the browser to HTTPS for that host).
    pub fn new(ui: &UiConfig, auth: &AuthConfig, verifier: Auth, production: bool) -> anyhow::Result<WebState> {
        let page_config = json!({
            "tiles": ui.tile_url.as_ref().map(|url| json!({
                "url": url,
                "attribution": ui.tile_attribution,
                "max_zoom": ui.tile_max_zoom,
            })),
            "stale_after_secs": ui.stale_after.as_secs(),
            "idle_timeout_secs": ui.idle_timeout.as_secs(),
            "dev_tokens": auth.dev_tokens,
            "issuers": auth.issuers.iter().map(|i| json!({
                "name": i.name,
                "issuer": i.issuer,
                "client_id": i.audience,
                "scopes": i.scopes.join(" "),
            })).collect::<Vec<_>>(),
        });
        Ok(WebState(Arc::new(Inner {
            page_config: serde_json::to_vec(&page_config)?,
            ui: ui.clone(),
            auth: verifier,
            hsts: production,
        })))
    }
}

/// Only what the page uses: its own scripts and styles (no inline script or style), images from
/// itself and the tile server, requests to itself and to the providers (`provider_origins`:
/// discovery and the token endpoint of the code flow), no frames, no plugins, no forms posted
/// anywhere.
pub fn content_security_policy(ui: &UiConfig, provider_origins: &[String]) -> String {
    let mut img = vec!["'self'".to_owned(), "data:".to_owned()];
    img.extend(ui.tile_url.as_deref().and_then(config::tile_origin));
    let mut connect = vec!["'self'".to_owned()];
    connect.extend(provider_origins.iter().cloned());
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {}; connect-src {}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        img.join(" "),
        connect.join(" ")
    )
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/share", get(share))
        .route("/ui/config.json", get(page_config))
        .route("/assets/{*path}", get(asset))
        .with_state(state)
}

async fn index(State(s): State<WebState>) -> Response<Body> {
    let page = assets::get("index.html").expect("index.html is embedded");
    respond(&s, StatusCode::OK, page.content_type, Body::from(page.bytes))
}

/// The page a share link opens (`/share#<token>`): it needs no sign-in.
async fn share(State(s): State<WebState>) -> Response<Body> {
    let page = assets::get("share.html").expect("share.html is embedded");
    respond(&s, StatusCode::OK, page.content_type, Body::from(page.bytes))
}

async fn page_config(State(s): State<WebState>) -> Response<Body> {
    respond(
        &s,
        StatusCode::OK,
        "application/json",
        Body::from(s.0.page_config.clone()),
    )
}

async fn asset(State(s): State<WebState>, Path(path): Path<String>) -> Response<Body> {
    match assets::get(&path) {
        Some(a) => respond(&s, StatusCode::OK, a.content_type, Body::from(a.bytes)),
        None => respond(
            &s,
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Body::from(format!("no asset {path:?}\n")),
        ),
    }
}

fn respond(s: &WebState, status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let csp = content_security_policy(&s.0.ui, &s.0.auth.browser_origins());
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Tile servers (OpenStreetMap among them) ask for a Referer; the origin alone is enough, so
    // no path or query ever leaves the page.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if s.0.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::RawAuth;

    #[test]
    fn the_policy_allows_only_the_tiles_and_the_providers() {
        let auth: RawAuth = toml::from_str(
            r#"
            [[issuers]]
            issuer = "https://login.example.com/tenant/v2.0"
            audience = "client-1"
            "#,
        )
        .unwrap();
        let auth = auth.validate(true).unwrap();
        let verifier = crate::auth::Authenticator::new(&auth, None).unwrap();
        let origins = verifier.browser_origins();
        assert_eq!(origins, ["https://login.example.com"]);
        let csp = content_security_policy(&UiConfig::default(), &origins);
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(
            csp.contains("img-src 'self' data: https://tile.openstreetmap.org;"),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self' https://login.example.com;"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let no_tiles = config::RawUi {
            tile_url: Some(String::new()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let csp = content_security_policy(&no_tiles, &origins);
        assert!(csp.contains("img-src 'self' data:;"), "{csp}");
    }
}
