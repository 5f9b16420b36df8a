//! A real, throwaway PostgreSQL cluster: `initdb` into a temporary directory, TLS only (a test
//! CA signs its certificate for `localhost`), password logins (SCRAM), on a free loopback port.
//! Run as the `postgres` system user when the tests run as root, since PostgreSQL refuses to.
//! The Debian package `postgresql` provides it.

use anyhow::{Context, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role and database the cluster is made with.
pub const USER: &str = "trackgate";
pub const PASSWORD: &str = "pg-password-for-tests";

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    child: Option<Child>,
}

/// The newest installed PostgreSQL's programs (Debian keeps them off PATH).
fn bin(program: &str) -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian package postgresql; .ci/install-test-deps)")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()?.parse::<u32>().ok()));
    let found = versions
        .last()
        .context("no PostgreSQL version under /usr/lib/postgresql")?;
    Ok(found.join("bin").join(program))
}

/// `program`, as the `postgres` system user when we are root.
fn as_server_user(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if rustix::process::geteuid().is_root() {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a `postgres` system user (Debian package postgresql)")
        };
        c.uid(id("-u")).gid(id("-g"));
    }
    c
}

/// Hand `path` to the server's user when we are root.
fn give(path: &Path) -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()?;
        anyhow::ensure!(status.success(), "chown {}", path.display());
    }
    Ok(())
}

impl Postgres {
    /// Make and start a cluster in `dir` (created; it must be reachable by the server's user).
    pub fn start(dir: &Path) -> anyhow::Result<Postgres> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let tls = crate::pki::server_cert(dir, "pg", &["localhost"]);
        std::fs::set_permissions(&tls.key, std::fs::Permissions::from_mode(0o600))?;
        std::fs::write(dir.join("pwfile"), PASSWORD)?;
        let data = dir.join("data");
        give(dir)?;
        let out = as_server_user(&bin("initdb")?)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .output()
            .context("initdb")?;
        anyhow::ensure!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = crate::free_port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\nssl_min_protocol_version = 'TLSv1.2'\n\
             logging_collector = off\nlog_min_messages = warning\n",
            d = dir.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
        );
        let mut pg_conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut pg_conf, conf.as_bytes())?;
        // TLS or nothing over TCP; the local socket is for the harness's own setup.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        give(dir)?;
        let mut pg = Postgres {
            dir: dir.into(),
            port,
            ca: tls.ca,
            child: None,
        };
        pg.spawn()?;
        Ok(pg)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))?;
        let child = as_server_user(&bin("postgres")?)
            .arg("-D")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = as_server_user(&bin("pg_isready")?)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("postgres did not become ready:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The URL of database `db`: TLS verified against the test CA, as trackgate's default.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca.display()
        )
    }

    /// Run `sql` through psql over the local socket (setup only), failing on any error.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = as_server_user(&bin("psql")?)
            .args(["-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ])
            .output()
            .context("psql")?;
        anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `pg_dump` of database `from` (custom format, over TLS as an operator would run it) restored
    /// with `pg_restore` into the existing, empty database `to`: README, "Data lifecycle".
    pub fn dump_and_restore(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let file = self.dir.join(format!("{from}.dump"));
        let out = Command::new(bin("pg_dump")?)
            .args(["--format=custom", "--file"])
            .arg(&file)
            .arg(self.url(from))
            .output()
            .context("pg_dump")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(bin("pg_restore")?)
            .args(["--no-owner", "--exit-on-error", "--dbname"])
            .arg(self.url(to))
            .arg(&file)
            .output()
            .context("pg_restore")?;
        anyhow::ensure!(
            out.status.success(),
            "pg_restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A fresh, empty database.
    pub fn create_database(&self, db: &str) -> anyhow::Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""))?;
        Ok(())
    }

    /// Stop the server (fast shutdown: sessions end, committed work is kept).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ =
                rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::INT);
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
