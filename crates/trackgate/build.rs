//! Builds the map page's asset table.
//!
//! The page's own files live in `web/src/`. The third-party libraries it uses (Leaflet,
//! Leaflet.markercluster, oidc-client-ts) come from the npm registry, pinned by
//! `web/package-lock.json`: this script runs `npm ci` on a copy of `web/package.json` and the
//! lockfile in `OUT_DIR`, so nothing is installed into the source tree and nothing fetched is
//! committed. For an offline build, point `TRACKGATE_WEB_NODE_MODULES` at a `node_modules`
//! directory installed from the same lockfile.
//!
//! The result is `OUT_DIR/web_assets.rs`: a table of `(path, content type, bytes)` that
//! `src/web/assets.rs` includes, each file embedded with `include_bytes!`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// Files taken from the installed packages: (path under `node_modules`, path served under
/// `/assets/vendor/`).
const VENDOR: &[(&str, &str)] = &[
    ("leaflet/dist/leaflet.js", "leaflet/leaflet.js"),
    ("leaflet/dist/leaflet.css", "leaflet/leaflet.css"),
    ("leaflet/dist/images/layers.png", "leaflet/images/layers.png"),
    ("leaflet/dist/images/layers-2x.png", "leaflet/images/layers-2x.png"),
    ("leaflet/dist/images/marker-icon.png", "leaflet/images/marker-icon.png"),
    ("leaflet/LICENSE", "leaflet/LICENSE"),
    (
        "leaflet.markercluster/dist/leaflet.markercluster.js",
        "markercluster/leaflet.markercluster.js",
    ),
    (
        "leaflet.markercluster/dist/MarkerCluster.css",
        "markercluster/MarkerCluster.css",
    ),
    (
        "leaflet.markercluster/dist/MarkerCluster.Default.css",
        "markercluster/MarkerCluster.Default.css",
    ),
    ("leaflet.markercluster/MIT-LICENCE.txt", "markercluster/LICENSE"),
    (
        "oidc-client-ts/dist/browser/oidc-client-ts.min.js",
        "oidc-client-ts/oidc-client-ts.min.js",
    ),
    ("oidc-client-ts/LICENSE", "oidc-client-ts/LICENSE"),
    // The world basemap drawn when tiles are unavailable: Natural Earth's countries at 1:50m
    // (public domain) as TopoJSON, and the decoder that turns it into GeoJSON for Leaflet.
    ("world-atlas/countries-50m.json", "world-atlas/countries-50m.json"),
    ("world-atlas/LICENSE", "world-atlas/LICENSE"),
    (
        "topojson-client/dist/topojson-client.min.js",
        "topojson-client/topojson-client.min.js",
    ),
    ("topojson-client/LICENSE", "topojson-client/LICENSE"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let web = manifest.join("web");
    println!("cargo::rerun-if-changed=web/package.json");
    println!("cargo::rerun-if-changed=web/package-lock.json");
    println!("cargo::rerun-if-changed=web/src");
    println!("cargo::rerun-if-env-changed=TRACKGATE_WEB_NODE_MODULES");

    let modules = match env::var_os("TRACKGATE_WEB_NODE_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => npm_ci(&web, &out.join("web-vendor")),
    };

    // Each asset's name and the path `include_bytes!` reads it from, as Rust source.
    let mut assets: Vec<(String, String)> = Vec::new();
    for (from, to) in VENDOR {
        let path = modules.join(from);
        if !path.is_file() {
            panic!(
                "{} is missing: the npm packages of web/package-lock.json are not fully installed in {}",
                from,
                modules.display()
            );
        }
        assets.push((format!("vendor/{to}"), format!("{:?}", path.display().to_string())));
    }
    let src = web.join("src");
    let mut own: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    own.sort();
    for path in own {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        // Relative to the package being compiled, not to where this script last ran: a target
        // directory shared by two checkouts must not embed one checkout's files into the other.
        let source = format!(
            "concat!(env!(\"CARGO_MANIFEST_DIR\"), {:?})",
            format!("/web/src/{name}")
        );
        assets.push((name, source));
    }

    let mut table = String::from("&[\n");
    for (name, source) in &assets {
        let kind = content_type(name).unwrap_or_else(|| panic!("no content type known for web asset {name}"));
        writeln!(table, "    ({name:?}, {kind:?}, include_bytes!({source})),").expect("formatting");
    }
    table.push(']');
    fs::write(out.join("web_assets.rs"), table).expect("writing web_assets.rs");
}

/// `npm ci` from the lockfile into `dir` (a copy of `web/`), once per lockfile: a stamp holding
/// the lockfile's contents says the install is current.
fn npm_ci(web: &Path, dir: &Path) -> PathBuf {
    let lock = fs::read(web.join("package-lock.json")).expect("reading web/package-lock.json");
    let stamp = dir.join(".installed-lock.json");
    let modules = dir.join("node_modules");
    if fs::read(&stamp).ok().as_deref() == Some(&lock[..]) && modules.is_dir() {
        return modules;
    }
    fs::create_dir_all(dir).expect("creating the npm install directory");
    for f in ["package.json", "package-lock.json"] {
        fs::copy(web.join(f), dir.join(f)).unwrap_or_else(|e| panic!("copying web/{f}: {e}"));
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` for the map page's libraries failed ({s}) in {}: the npm registry must be \
             reachable, or set TRACKGATE_WEB_NODE_MODULES to a node_modules installed from \
             crates/trackgate/web/package-lock.json",
            dir.display()
        ),
        Err(e) => panic!(
            "running `npm` for the map page's libraries failed ({e}): install Node.js and npm \
             (Debian: apt install nodejs npm), or set TRACKGATE_WEB_NODE_MODULES"
        ),
    }
    fs::write(&stamp, &lock).expect("writing the install stamp");
    modules
}

fn content_type(name: &str) -> Option<&'static str> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or(file);
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "LICENSE" | "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}
