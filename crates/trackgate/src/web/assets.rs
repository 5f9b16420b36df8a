//! The map page's files, embedded at build time by `build.rs`: the page's own (`web/src/`) and
//! the third-party libraries installed from `web/package-lock.json` (under `vendor/`).

/// `(path under /assets/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

pub struct Asset {
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The file served at `/assets/{path}`.
pub fn get(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, content_type, bytes)| Asset { content_type, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_libraries_are_embedded() {
        for path in [
            "index.html",
            "app.js",
            "app.css",
            "vendor/leaflet/leaflet.js",
            "vendor/leaflet/leaflet.css",
            "vendor/markercluster/leaflet.markercluster.js",
            "vendor/oidc-client-ts/oidc-client-ts.min.js",
        ] {
            let a = get(path).unwrap_or_else(|| panic!("{path} is not embedded"));
            assert!(!a.bytes.is_empty(), "{path} is empty");
        }
        assert_eq!(get("app.js").unwrap().content_type, "text/javascript; charset=utf-8");
        assert!(get("../Cargo.toml").is_none());
    }
}
