//! The command line: provisioning, configuration errors, and secrets that never leak.

use std::process::Command;
use trackgate_e2e::*;

#[test]
fn configuration_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        (
            "mode = \"dev\"\n[ingest]\nbatch_max_rows = 0\n",
            "`ingest.batch_max_rows`",
        ),
        ("mode = \"dev\"\n[http]\nlisten_address = \"x\"\n", "listen_address"),
        ("mode = \"production\"\n", "`tls.cert`"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[test]
fn production_refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.toml");
    std::fs::write(
        &path,
        "mode = \"production\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .env_remove("TRACKGATE_MASTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"));
}

#[tokio::test]
async fn provisioning_keeps_one_namespace_and_never_shows_a_secret_twice() {
    let (_dir, server) = started("");
    let out = server.cli(&["device", "add", "ACME"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"ACME\" is already used"),
        "{out:?}"
    );
    let out = server.cli(&["supplier", "add", "TRK-0001"], None);
    assert!(!out.status.success());
    let out = server.cli(&["device", "add", "bad/id"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid device id"));

    server.ok(&["device", "add", "TRK-0009", "--supplier", "ACME"], None);
    let secret = server.ok(&["key", "generate", "TRK-0009", "k1"], None);
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let out = server.cli(&["key", "generate", "TRK-0009", "k1"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has a key \"k1\""));
    server.ok(&["key", "generate", "TRK-0009", "k2"], None);
    let out = server.cli(&["key", "generate", "TRK-0009", "k3"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("two active keys"));
    let out = server.cli(&["key", "import", "TRK-0009", "k4"], Some("not hex"));
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not hex"),
        "the input is not echoed"
    );

    // The generated key works, and nothing shows it again.
    let key = Key::new("TRK-0009", "k1", secret);
    let c = server.client();
    let reply = server
        .post(
            &c,
            &vector_supplier(),
            "application/json",
            &key.envelope(&record("TRK-0009", 1)),
        )
        .await;
    assert_eq!(reply.counts(), (1, 0));
    let listed = server.ok(&["device", "list", "--json"], None) + &server.ok(&["device", "list"], None);
    assert!(listed.contains("TRK-0009") && listed.contains("k1"));
    for s in [
        secret,
        &vector_device().secret.to_hex(),
        &vector_supplier().secret.to_hex(),
    ] {
        assert!(!listed.contains(s), "a secret is listed");
        assert!(!server.log_text().contains(s), "a secret is in the server log");
    }
}

/// Fleet provisioning in one command: the imported keys sign records trackgate accepts; a bad
/// line stops the import naming its line, and never echoes a secret.
#[tokio::test]
async fn devices_import_in_bulk_from_standard_input() {
    let (_dir, s) = started("");
    let keys: Vec<Key> = (0..3).map(|i| Key::derived(&format!("BULK-{i}"), "k1")).collect();
    let lines: String = keys
        .iter()
        .map(|k| format!("{} {} {}\n", k.owner, k.kid, k.secret.to_hex()))
        .collect();
    let out = s.cli(
        &["device", "import", "--supplier", "ACME"],
        Some(&format!("# fleet\n{lines}")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 devices imported"));

    let body = format!(
        "[{}]",
        keys.iter()
            .map(|k| k.envelope(&record(&k.owner, 1)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let reply = s.post(&s.client(), &vector_supplier(), "application/json", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.counts(), (3, 0), "{}", reply.body);

    let secret = "ab".repeat(31);
    let out = s.cli(
        &["device", "import"],
        Some(&format!("BULK-9 k1 {}\nBULK-10 k1 {secret}\n", "cd".repeat(32))),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 2") && err.contains("BULK-10"), "{err}");
    assert!(!err.contains(&secret), "a secret was echoed: {err}");
    // Nothing was committed from the failed run (both lines were in one batch).
    let out = s.cli(&["device", "list", "--json"], None);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("BULK-9"));
}
