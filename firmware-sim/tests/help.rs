//! The simulator's command line. (Living in this package also makes cargo build the
//! `firmware-sim` binary with the workspace's tests, which the end-to-end package runs.)

use std::process::Command;

#[test]
fn help_lists_every_command_and_mode() {
    let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["roster", "provision", "send"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
        .args(["send", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("mqtt") && help.contains("supplier"), "{help}");
}

/// `--connections` is checked before anything is read or sent: at least one, and MQTT only.
#[test]
fn connections_must_be_positive_and_mqtt_only() {
    for (args, expected) in [
        (
            &["--mode", "mqtt", "--connections", "0"][..],
            "--connections must be at least 1",
        ),
        (
            &["--mode", "supplier", "--connections", "2"][..],
            "--connections applies only to --mode mqtt",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_firmware-sim"))
            .arg("send")
            .args(args)
            .args(["--roster", "/nonexistent/roster.json"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
