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
