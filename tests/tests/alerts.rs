//! What operations see: the alerting rules pass `promtool check rules` and their unit tests, the
//! Grafana dashboard's queries are valid PromQL, and every trackgate series either names is one
//! the real binary exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use trackgate_e2e::*;

fn config_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian package prometheus, installed by .ci/run)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

/// Every `trackgate_*` name in `text`, with a histogram's `_bucket`, `_sum` and `_count` taken
/// back to the histogram.
fn series_named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("trackgate_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        i = end;
    }
    out
}

/// The dashboard's query expressions, with Grafana's variables given values.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(config_file("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    out
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let dir = config_file("");
    let said = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
    let said = promtool(&["test", "rules", "alerts.test.yml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    // promtool checks PromQL in rule files: each query becomes a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let said = promtool(&["check", "rules", "dashboard.yml"], dir.path());
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{said}"
    );
}

#[tokio::test]
async fn every_series_the_rules_and_the_dashboard_name_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), "").unwrap();
    let exported = series_named(&server.metrics().await);
    let rules = series_named(&std::fs::read_to_string(config_file("alerts.yml")).unwrap());
    let dashboard = series_named(&dashboard_queries().join("\n"));
    assert!(rules.len() >= 8 && dashboard.len() >= 20, "{rules:?} {dashboard:?}");
    let missing: Vec<_> = rules.union(&dashboard).filter(|s| !exported.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "named but not exported: {missing:?}\nexported: {exported:?}"
    );
}
