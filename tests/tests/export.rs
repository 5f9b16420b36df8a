//! The tenant export against the real binary, on both backends: `trackgate org export` of one
//! organization holds exactly its data and nothing of another's; its manifest's counts and
//! SHA-256 digests match the files; every exported record verifies against its signature with the
//! device's key, including records signed with a key revoked since; the export is audited.

use serde_json::Value;
use sha2::{Digest, Sha256};
use trackgate_e2e::{Backend, Key, Server, now_ms, started_on};

fn seed(s: &Server) {
    for org in ["acme", "globex"] {
        s.ok(&["org", "add", org, "--name", org], None);
    }
    s.ok(
        &["order-group", "add", "--org", "acme", "north", "--name", "North"],
        None,
    );
    for (dev, org) in [("a-1", "acme"), ("a-2", "acme"), ("g-1", "globex")] {
        s.add_device(&Key::derived(dev, "k1"), Some("ACME"));
        s.ok(&["device", "assign", dev, "--org", org], None);
    }
    s.add_user_group("acme", "admins", "admin", "--email", "boss@acme.example");
    s.add_user_group("globex", "ops", "admin", "--domain", "globex.example");
    for (org, id) in [("acme", "depot"), ("globex", "globex-hq")] {
        s.ok(
            &[
                "geofence",
                "put",
                "--org",
                org,
                id,
                "--name",
                id,
                "--circle",
                "10,53.5,200",
            ],
            None,
        );
    }
}

/// `n` records of `key`'s device from `first`, through the supplier.
async fn send(s: &Server, key: &Key, first: u64, n: u64) {
    let envelopes: Vec<String> = (first..first + n)
        .map(|seq| {
            key.envelope(&format!(
                r#"{{"dev":"{}","seq":{seq},"ts":{},"lat":60.1,"lon":24.9,"bat":80}}"#,
                key.owner,
                now_ms() - 1000 + seq
            ))
        })
        .collect();
    // A key imported a moment ago reaches the server within `ingest.key_refresh_ms`.
    for _ in 0..100 {
        let reply = s.post_envelopes(&s.client(), &envelopes).await;
        if reply.body.to_string().contains("unknown_key") {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(reply.counts().0, n, "{}", reply.body);
        return;
    }
    panic!("the key of {} never reached the server", key.owner);
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    m: &'a serde_json::value::RawValue,
    kid: String,
    sig: String,
}

async fn one_organizations_export_holds_exactly_its_data_and_verifies(backend: Backend) {
    let (dir, s) = started_on(backend, "");
    seed(&s);
    let (k1, k2) = (Key::derived("a-1", "k1"), Key::derived("a-1", "k2"));
    send(&s, &k1, 0, 30).await;
    // a-1 rotates: k2 in, k1 revoked; its older records stay signed by k1.
    s.import_key(&k2);
    s.ok(&["key", "revoke", "a-1", "k1"], None);
    send(&s, &k2, 30, 20).await;
    send(&s, &Key::derived("a-2", "k1"), 0, 25).await;
    send(&s, &Key::derived("g-1", "k1"), 0, 40).await;
    // acme's trail gets a read by its admin.
    let boss = s.dev_token(&["--email", "boss@acme.example"]);
    let r = s
        .client()
        .get(s.url("/v1/devices"))
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let out = dir.path().join("acme.tar");
    let printed: Value =
        serde_json::from_str(&s.ok(&["org", "export", "acme", "--out", out.to_str().unwrap()], None)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&out)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(untar.success());
    let manifest: Value = serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest, printed);
    assert_eq!(
        (manifest["format"].as_str(), manifest["organization"].as_str()),
        (Some("trackgate-export-1"), Some("acme"))
    );

    // Counts and digests as the manifest says.
    let mut rows: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for f in manifest["files"].as_array().unwrap() {
        let name = f["file"].as_str().unwrap();
        let bytes = std::fs::read(x.join(name)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            f["sha256"].as_str().unwrap(),
            "{name}"
        );
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count() as u64, f["rows"].as_u64().unwrap(), "{name}");
        // Nothing of globex anywhere.
        assert!(
            !text.contains("globex") && !text.contains("g-1"),
            "{name} holds another organization's data"
        );
        if name == "positions.ndjson" {
            for line in text.lines() {
                let row: Value = serde_json::from_str(line).unwrap();
                // The envelope verifies with the device's key of its kid, on the exact bytes.
                let raw_row: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
                let start = line.find(r#""envelope":"#).unwrap() + r#""envelope":"#.len();
                let envelope: Envelope = serde_json::from_str(&line[start..line.len() - 1]).unwrap();
                let key = Key::derived(row["device_id"].as_str().unwrap(), &envelope.kid);
                let sig = trackgate_proto::sign::parse_sig_hex(&envelope.sig).unwrap();
                assert!(
                    trackgate_proto::sign::verify_record(&key.secret, envelope.m.get().as_bytes(), &sig),
                    "{line}"
                );
                assert!(raw_row.contains_key("seq"));
            }
        }
        rows.insert(
            name.to_owned(),
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        );
    }
    let devices: Vec<&str> = rows["devices.ndjson"]
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["a-1", "a-2"]);
    let positions = &rows["positions.ndjson"];
    assert_eq!(positions.len(), 75);
    let kids: Vec<&str> = positions
        .iter()
        .filter(|p| p["device_id"] == "a-1")
        .map(|p| p["envelope"]["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        (
            kids.iter().filter(|k| **k == "k1").count(),
            kids.iter().filter(|k| **k == "k2").count()
        ),
        (30, 20)
    );
    assert_eq!(rows["organization.ndjson"][0]["id"], "acme");
    assert_eq!(rows["order_groups.ndjson"].len(), 1);
    assert_eq!(rows["geofences.ndjson"].len(), 1);
    assert_eq!(rows["geofences.ndjson"][0]["circle"]["radius_m"], 200.0);
    assert_eq!(rows["user_groups.ndjson"][0]["rules"][0]["value"], "boss@acme.example");
    let trail = &rows["audit_log.ndjson"];
    assert!(trail.iter().all(|e| e["org_id"] == "acme" && e["hash"].is_string()));
    assert!(
        trail
            .iter()
            .any(|e| e["action"] == "devices.read" || e["action"].as_str().unwrap().contains("read")),
        "{trail:?}"
    );
    // No key material: key ids only.
    let all = std::fs::read_dir(&x)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(!all.contains(&k1.secret.to_hex()) && !all.contains(&k2.secret.to_hex()));

    // The export itself is on acme's trail, with its counts.
    let log = s.ok(&["audit", "--org", "acme", "--limit", "5"], None);
    let newest: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(newest["action"], "org.export");
    let counts: Value = serde_json::from_str(newest["detail"].as_str().unwrap()).unwrap();
    assert_eq!(counts["positions.ndjson"], 75);
    // An unknown organization is an error that names it; an existing file is never overwritten.
    let o = s.cli(
        &[
            "org",
            "export",
            "nope",
            "--out",
            dir.path().join("nope.tar").to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nope"));
    let o = s.cli(&["org", "export", "acme", "--out", out.to_str().unwrap()], None);
    assert!(!o.status.success());
}

/// An admin of the organization downloads the same archive from the API; a viewer may not.
async fn an_organization_admin_downloads_the_export(backend: Backend) {
    let (dir, s) = started_on(backend, "");
    seed(&s);
    send(&s, &Key::derived("a-1", "k1"), 0, 40).await;
    let token = |email: &str| s.dev_token(&["--email", email]);
    s.add_user_group("acme", "staff", "viewer", "--domain", "acme.example");
    let get = |t: String| {
        let r = s.client().get(s.url("/v1/admin/orgs/acme/export")).bearer_auth(t);
        async move { r.send().await.unwrap() }
    };
    assert_eq!(get(token("clerk@acme.example")).await.status().as_u16(), 403);
    let r = get(token("boss@acme.example")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-tar");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("acme-export.tar")
    );
    let bytes = r.bytes().await.unwrap();
    let archive = dir.path().join("download.tar");
    std::fs::write(&archive, &bytes).unwrap();
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success()
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["organization"], "acme");
    let positions = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "positions.ndjson")
        .unwrap();
    assert_eq!(positions["rows"], 40);
    // Audited under the admin who asked, and no working file is left behind.
    let log = s.ok(&["audit", "--org", "acme", "--limit", "5"], None);
    let newest: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        (newest["action"].as_str(), newest["actor_email"].as_str()),
        (Some("org.export"), Some("boss@acme.example"))
    );
    let left: Vec<_> = std::fs::read_dir(s.dir.join("data/exports")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

trackgate_e2e::on_both_backends!(
    one_organizations_export_holds_exactly_its_data_and_verifies,
    an_organization_admin_downloads_the_export,
);
