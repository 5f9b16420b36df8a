//! The `[ui]` section: what the map page shows and where its tiles come from.

use anyhow::bail;
use serde::Deserialize;
use std::time::Duration;

/// OpenStreetMap's standard tiles; see <https://operations.osmfoundation.org/policies/tiles/>.
pub const OSM_TILES: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
pub const OSM_ATTRIBUTION: &str =
    "&copy; <a href=\"https://www.openstreetmap.org/copyright\">OpenStreetMap</a> contributors";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUi {
    pub enabled: Option<bool>,
    pub tile_url: Option<String>,
    pub tile_attribution: Option<String>,
    pub tile_max_zoom: Option<u8>,
    pub stale_after_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
}

/// Validated `[ui]`.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Serve the map page at `/`.
    pub enabled: bool,
    /// A Leaflet tile URL template (`{s}`, `{z}`, `{x}`, `{y}`); `None`: no tiles, markers and
    /// tracks on a plain background.
    pub tile_url: Option<String>,
    /// HTML shown in the map's attribution control.
    pub tile_attribution: String,
    pub tile_max_zoom: u8,
    /// A device with no record for this long is marked stale.
    pub stale_after: Duration,
    /// The page signs its user out after this long without a key, click, touch or scroll.
    pub idle_timeout: Duration,
}

impl Default for UiConfig {
    fn default() -> Self {
        RawUi::default().validate().expect("the defaults are valid")
    }
}

impl RawUi {
    pub fn validate(self) -> anyhow::Result<UiConfig> {
        let tile_url = match self.tile_url {
            None => Some(OSM_TILES.to_owned()),
            Some(u) if u.is_empty() => None,
            Some(u) => {
                if !u.starts_with("https://") {
                    bail!("`ui.tile_url` must be an https:// URL template (or \"\" for no tiles), not {u:?}");
                }
                if ["{z}", "{x}", "{y}"].iter().any(|p| !u.contains(p)) {
                    bail!("`ui.tile_url` must contain {{z}}, {{x}} and {{y}}, not {u:?}");
                }
                if tile_origin(&u).is_none() {
                    bail!("`ui.tile_url` has no usable host: {u:?}");
                }
                Some(u)
            }
        };
        let tile_attribution = match (&tile_url, self.tile_attribution) {
            (_, Some(a)) => a,
            (Some(u), None) if u == OSM_TILES => OSM_ATTRIBUTION.to_owned(),
            (Some(_), None) => bail!("`ui.tile_attribution` is required with a custom `ui.tile_url`"),
            (None, None) => String::new(),
        };
        let tile_max_zoom = self.tile_max_zoom.unwrap_or(19);
        if !(1..=22).contains(&tile_max_zoom) {
            bail!("`ui.tile_max_zoom` must be between 1 and 22, not {tile_max_zoom}");
        }
        let stale = self.stale_after_secs.unwrap_or(3600);
        if !(60..=30 * 86_400).contains(&stale) {
            bail!("`ui.stale_after_secs` must be between 60 and 2592000, not {stale}");
        }
        let idle = self.idle_timeout_secs.unwrap_or(1800);
        if !(1..=86_400).contains(&idle) {
            bail!("`ui.idle_timeout_secs` must be between 1 and 86400, not {idle}");
        }
        Ok(UiConfig {
            idle_timeout: Duration::from_secs(idle),
            enabled: self.enabled.unwrap_or(true),
            tile_url,
            tile_attribution,
            tile_max_zoom,
            stale_after: Duration::from_secs(stale),
        })
    }
}

/// The CSP source for a tile URL template: its scheme and host, `{s}` as a wildcard label.
pub fn tile_origin(template: &str) -> Option<String> {
    let rest = template.strip_prefix("https://")?;
    let host = rest.split('/').next()?;
    let host = host.replace("{s}", "*");
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '[' | ']'));
    ok.then(|| format!("https://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui(toml: &str) -> anyhow::Result<UiConfig> {
        toml::from_str::<RawUi>(toml).unwrap().validate()
    }

    #[test]
    fn defaults_are_openstreetmap_with_attribution() {
        let c = ui("").unwrap();
        assert_eq!(c.tile_url.as_deref(), Some(OSM_TILES));
        assert!(c.tile_attribution.contains("OpenStreetMap"));
        assert_eq!(c.stale_after, Duration::from_secs(3600));
        assert!(c.enabled);
    }

    #[test]
    fn empty_tile_url_means_no_tiles() {
        let c = ui("tile_url = \"\"").unwrap();
        assert_eq!(c.tile_url, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("tile_url = \"http://tiles.example/{z}/{x}/{y}.png\"", "ui.tile_url"),
            ("tile_url = \"https://tiles.example/{z}/{x}.png\"", "ui.tile_url"),
            (
                "tile_url = \"https://tiles.example/{z}/{x}/{y}.png\"",
                "ui.tile_attribution",
            ),
            ("stale_after_secs = 5", "ui.stale_after_secs"),
            ("tile_max_zoom = 30", "ui.tile_max_zoom"),
        ] {
            let e = ui(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn tile_origins_for_the_content_security_policy() {
        assert_eq!(
            tile_origin(OSM_TILES).as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(
            tile_origin("https://{s}.tiles.example:8443/a/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tiles.example:8443")
        );
        assert_eq!(tile_origin("https://a b/{z}/{x}/{y}"), None);
        assert_eq!(tile_origin("https://x;script-src/{z}"), None);
    }
}
