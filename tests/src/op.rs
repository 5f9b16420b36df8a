//! A real OpenID provider for the tests: `oidc-provider` from npm (`tests/oidc/op.mjs`) over
//! HTTPS, with a certificate signed by a private CA, as an enterprise would run it. Node trusts
//! the CA through `NODE_EXTRA_CA_CERTS`, trackgate through the issuer's `ca`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct RealOp {
    /// `https://localhost:PORT`.
    pub issuer: String,
    /// The CA that signed the provider's certificate.
    pub ca: PathBuf,
    child: Child,
}

/// The public client `op.mjs` registers for the map page when given a redirect URI.
pub const MAP_CLIENT: &str = "trackgate-map";

impl RealOp {
    /// Start the provider with files in `dir`. With `map_redirect`, it also registers the map
    /// page as a public client (`trackgate-map`, PKCE, no secret) redirecting there.
    pub fn start(dir: &Path, map_redirect: Option<&str>) -> RealOp {
        std::fs::create_dir_all(dir).unwrap();
        let crate::pki::ServerCert {
            ca,
            cert: leaf_path,
            key: key_path,
        } = crate::pki::server_cert(dir, "op", &["localhost"]);

        let port = crate::free_port();
        let op_dir = Self::dir();
        assert!(
            op_dir.join("node_modules/oidc-provider").exists(),
            "run `npm ci` in tests/oidc (.ci/run does)"
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(&op_dir)
            .args(["op.mjs", "serve", &port.to_string()])
            .arg(&leaf_path)
            .arg(&key_path);
        if let Some(r) = map_redirect {
            cmd.arg(r);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        // Keep reading its stdout for as long as it runs: a closed pipe would end it.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let op = RealOp {
            issuer: format!("https://localhost:{port}"),
            ca,
            child,
        };
        assert_eq!(line.trim(), "ready", "the provider did not start");
        op
    }

    /// Sign `user` in through the provider's pages (a scripted browser, `op.mjs login`): the ID
    /// token it issues to the `trackgate` client.
    pub fn login(&self, user: &str) -> String {
        let out = Command::new("node")
            .current_dir(Self::dir())
            .args(["op.mjs", "login", &self.issuer, user])
            .env("NODE_EXTRA_CA_CERTS", &self.ca)
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "sign-in: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `tests/oidc`, where `op.mjs` and its npm packages are.
    pub fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
    }
}

impl Drop for RealOp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
