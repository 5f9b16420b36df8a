//! The tenant export (`trackgate org export ORG --out FILE`, `GET /v1/admin/orgs/{org}/export`):
//! everything of one organization in one tar archive of
//! NDJSON files (one per part, see `trackgate_store::export`), each row written as it is read, so
//! memory stays flat however many positions there are. The archive starts with `manifest.json`:
//! the organization, when, and for each file its row count and SHA-256. The export is audited.

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use trackgate_store::export::{ExportSink, PARTS};
use trackgate_store::{AuditEntry, Store};

/// The archive's format, named in its manifest.
pub const FORMAT: &str = "trackgate-export-1";

/// One NDJSON file being written, with its count and digest.
struct Part {
    out: BufWriter<File>,
    sha: Sha256,
    rows: u64,
}

/// Parts spooled as files in a private directory, then packed.
struct Spool {
    dir: PathBuf,
    parts: BTreeMap<&'static str, Part>,
}

impl ExportSink for Spool {
    fn row(&mut self, part: &'static str, row: &str) -> std::io::Result<()> {
        let p = match self.parts.get_mut(part) {
            Some(p) => p,
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(self.dir.join(format!("{part}.ndjson")))?;
                self.parts.entry(part).or_insert(Part {
                    out: BufWriter::new(file),
                    sha: Sha256::new(),
                    rows: 0,
                })
            }
        };
        for bytes in [row.as_bytes(), b"\n"] {
            p.sha.update(bytes);
            p.out.write_all(bytes)?;
        }
        p.rows += 1;
        Ok(())
    }
}

/// Write the archive of `org` to `out` (a new file, mode 0600); the manifest.
pub async fn export(store: &Store, org: &str, out: &Path, actor: AuditEntry) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        !out.exists(),
        "{} already exists: an export never overwrites",
        out.display()
    );
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix(".trackgate-export-")
        .tempdir_in(parent)
        .with_context(|| format!("making a working directory in {}", parent.display()))?;
    let mut spool = Spool {
        dir: dir.path().to_owned(),
        parts: BTreeMap::new(),
    };
    store.export_org(org, &mut spool).await?;
    let mut files = Vec::new();
    for name in PARTS {
        let (rows, sha) = match spool.parts.remove(name) {
            Some(mut p) => {
                p.out.flush()?;
                (p.rows, hex::encode(p.sha.finalize()))
            }
            None => {
                File::create(dir.path().join(format!("{name}.ndjson")))?;
                (0, hex::encode(Sha256::digest(b"")))
            }
        };
        files.push(json!({"file": format!("{name}.ndjson"), "rows": rows, "sha256": sha}));
    }
    let manifest = json!({
        "format": FORMAT,
        "organization": org,
        "exported_at_ms": trackgate_store::now_ms(),
        "trackgate_version": env!("CARGO_PKG_VERSION"),
        "files": files,
    });
    let archive = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(BufWriter::new(archive));
    let text = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(trackgate_store::now_ms() / 1000).unwrap_or(0));
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", text.as_slice())?;
    for name in PARTS {
        let file = format!("{name}.ndjson");
        tar.append_path_with_name(dir.path().join(&file), &file)?;
    }
    tar.into_inner()?.flush()?;
    let counts: serde_json::Map<String, serde_json::Value> = manifest["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (f["file"].as_str().unwrap_or_default().to_owned(), f["rows"].clone()))
        .collect();
    store
        .audit(&AuditEntry {
            action: "org.export".into(),
            org_id: Some(org.to_owned()),
            detail: Some(serde_json::Value::Object(counts).to_string()),
            ..actor
        })
        .await?;
    Ok(manifest)
}
