//! The roster: who the simulator is, with secrets, kept in a file only the operator reads.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub kid: String,
    /// 64 hex characters.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roster {
    pub supplier: Member,
    pub devices: Vec<Member>,
}

fn fresh_secret() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
    Ok(hex::encode(b))
}

impl Roster {
    pub fn generate(supplier: &str, devices: usize, prefix: &str) -> anyhow::Result<Roster> {
        let supplier = Member {
            id: supplier.into(),
            kid: "s1".into(),
            secret: fresh_secret()?,
        };
        let devices = (1..=devices)
            .map(|i| {
                Ok(Member {
                    id: format!("{prefix}-{i:06}"),
                    kid: "k1".into(),
                    secret: fresh_secret()?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Roster { supplier, devices })
    }

    pub fn load(path: &Path) -> anyhow::Result<Roster> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading roster {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing roster {}", path.display()))
    }

    /// Written with mode 0600: the roster holds secrets.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing roster {}", path.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }

    /// Provision the supplier, its devices and their keys with the trackgate CLI.
    pub fn provision(&self, trackgate: &Path, config: Option<&Path>, org: Option<&str>) -> anyhow::Result<()> {
        let run = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<()> {
            let mut cmd = Command::new(trackgate);
            if let Some(c) = config {
                cmd.arg("--config").arg(c);
            }
            let mut child = cmd
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("running {}", trackgate.display()))?;
            if let Some(s) = stdin {
                child.stdin.take().expect("piped").write_all(s.as_bytes())?;
            }
            drop(child.stdin.take());
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "trackgate {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        let s = &self.supplier;
        run(&["supplier", "add", &s.id], None)?;
        run(&["key", "import", &s.id, &s.kid], Some(&s.secret))?;
        // One bulk import for the whole fleet: lines of `<id> <kid> <hex>` on its stdin.
        let mut lines = String::with_capacity(self.devices.len() * 100);
        for d in &self.devices {
            lines.push_str(&format!("{} {} {}\n", d.id, d.kid, d.secret));
        }
        run(&["device", "import", "--supplier", &s.id], Some(&lines))?;
        if let Some(org) = org {
            match run(&["org", "add", org, "--name", org], None) {
                Ok(()) => {}
                Err(e) if e.to_string().contains("already exists") => {}
                Err(e) => return Err(e),
            }
            for (i, d) in self.devices.iter().enumerate() {
                let label = format!("shipment {}", i + 1);
                run(&["device", "assign", &d.id, "--org", org], None)?;
                run(&["device", "shipment", &d.id, "--org", org, "--label", &label], None)?;
            }
            eprintln!("assigned {} devices to organization {org}", self.devices.len());
        }
        eprintln!("provisioned supplier {} and {} devices", s.id, self.devices.len());
        Ok(())
    }
}
