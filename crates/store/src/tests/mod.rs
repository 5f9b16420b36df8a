//! The store's suite, run against both backends: each test is an `async fn(TestDb)`, and
//! `on_both_backends!` makes a `sqlite` and a `postgres` test of it. A PostgreSQL test gets its own
//! throwaway cluster (TLS on a test CA, verified; `tests/src/postgres.rs`), started in well under
//! a second.

use crate::{MasterKey, OpenOptions, PostgresOptions, SqliteOptions, Store, StoreError};
use trackgate_e2e::postgres::Postgres;

mod alerts;
mod audit;
mod deletion;
mod events;
mod geofences;
pub(crate) mod operators;
mod retention;
mod shares;
pub(crate) mod store;

/// An audit entry of the CLI's test user.
pub(crate) fn audit(action: &str) -> crate::AuditEntry {
    crate::AuditEntry {
        actor: "cli:test".into(),
        action: action.into(),
        ..Default::default()
    }
}

/// A database to test against, and what it lives in.
pub(crate) struct TestDb {
    pub dir: tempfile::TempDir,
    pub pg: Option<Postgres>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb {
            dir: tempfile::tempdir().unwrap(),
            pg: None,
        }
    }

    pub fn postgres() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let pg = Postgres::start(&dir.path().join("pg")).unwrap();
        pg.create_database("t").unwrap();
        TestDb { dir, pg: Some(pg) }
    }

    pub fn options(&self) -> OpenOptions {
        let url = match &self.pg {
            Some(pg) => pg.url("t"),
            None => format!("sqlite://{}", self.dir.path().join("t.db").display()),
        };
        OpenOptions {
            url,
            max_connections: 4,
            sqlite: SqliteOptions {
                synchronous_full: false,
                ..Default::default()
            },
            postgres: PostgresOptions::default(),
            // Test rows are from 1970 on: all of them kept unless a test says otherwise.
            retention: crate::Retention {
                positions_days: 36_500,
                ..Default::default()
            },
        }
    }

    pub fn master() -> MasterKey {
        MasterKey::from_hex(&"42".repeat(32)).unwrap()
    }

    pub async fn open_with(&self, master: MasterKey) -> Result<Store, StoreError> {
        Store::open(&self.options(), master).await
    }

    pub async fn open(&self) -> Store {
        self.open_with(Self::master()).await.unwrap()
    }

    /// Every byte the database keeps on disk, after the server (if any) has stopped.
    pub fn files_on_disk(&mut self) -> Vec<u8> {
        if let Some(pg) = &mut self.pg {
            pg.stop();
        }
        let mut all = Vec::new();
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    all.extend(std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        all
    }
}

/// A `sqlite` and a `postgres` test of each named `async fn(TestDb)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::tests::TestDb::sqlite()).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::tests::TestDb::postgres()).await
            })*
        }
    };
}
pub(crate) use on_both_backends;
