//! A real browser for the map page's tests: Debian's Chromium driven by `tests/browser/agent.mjs`
//! (playwright-core), one JSON command per line. Screenshots go to [`artefacts`].

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where the browser tests leave their screenshots: `$TRACKGATE_TEST_ARTEFACTS`, else
/// `target/test-artefacts` in the workspace.
pub fn artefacts(test: &str) -> PathBuf {
    let root = std::env::var_os("TRACKGATE_TEST_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts"));
    root.join(test)
}

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
}

impl Browser {
    /// Start the agent; `launch` opens Chromium with a fresh profile.
    pub fn start() -> Browser {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed: run `npm ci` in {} (.ci/install-test-deps does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("agent.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting node for the browser agent");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser { child, stdin, replies }
    }

    /// Run one command; its value, or the agent's error.
    pub fn try_call(&mut self, op: &str, args: Value) -> Result<Value, String> {
        let mut cmd = args;
        if cmd.is_null() {
            cmd = json!({});
        }
        cmd["op"] = json!(op);
        writeln!(self.stdin, "{cmd}").map_err(|e| format!("writing to the browser agent: {e}"))?;
        let line = self
            .replies
            .recv_timeout(Duration::from_secs(90))
            .map_err(|e| format!("no answer from the browser agent to {op}: {e}"))?;
        let reply: Value = serde_json::from_str(&line).map_err(|e| format!("agent said {line:?}: {e}"))?;
        if reply["ok"] == true {
            Ok(reply["value"].clone())
        } else {
            Err(reply["error"].as_str().unwrap_or("unknown error").to_owned())
        }
    }

    /// Run one command that must succeed. On failure the panic carries what the page logged,
    /// and a screenshot named `failed-<op>` is saved.
    pub fn call(&mut self, op: &str, args: Value) -> Value {
        match self.try_call(op, args) {
            Ok(v) => v,
            Err(e) => {
                let seen = self.try_call("errors", Value::Null).unwrap_or_default();
                let shot = self
                    .try_call("screenshot", json!({"name": format!("failed-{op}")}))
                    .unwrap_or_default();
                panic!("browser {op} failed: {e}\npage: {seen}\nscreenshot: {shot}")
            }
        }
    }

    /// Console errors, uncaught exceptions and requests to anywhere but trackgate and the tiles.
    pub fn errors(&mut self) -> Value {
        self.call("errors", Value::Null)
    }

    /// Fail unless the page logged no console error, threw nothing and fetched nothing foreign.
    pub fn assert_clean(&mut self, when: &str) {
        let e = self.errors();
        assert_eq!(e["console"], json!([]), "console errors {when}");
        assert_eq!(e["page"], json!([]), "uncaught exceptions {when}");
        assert_eq!(e["external"], json!([]), "requests to other hosts {when}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
