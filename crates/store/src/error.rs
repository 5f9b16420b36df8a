//! The store's one error type.

/// What went wrong at the storage boundary. Messages name the id or key involved, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("id {0:?} is already used by a device or supplier")]
    IdTaken(String),
    #[error("{kind} {id:?} already exists")]
    Exists { kind: &'static str, id: String },
    #[error("invalid {what}: must be 1 to {max} characters, not blank, without control characters")]
    InvalidText { what: &'static str, max: usize },
    #[error("no {kind} with id {id:?}")]
    NotFound { kind: &'static str, id: String },
    #[error("{owner:?} already has a key {kid:?}")]
    KeyExists { owner: String, kid: String },
    #[error("{owner:?} has no active key {kid:?}")]
    NoSuchKey { owner: String, kid: String },
    #[error("{0:?} already has two active keys: revoke one before adding another")]
    TooManyKeys(String),
    #[error("invalid {what} {value:?}: must match [A-Za-z0-9._-]{{1,{max}}}")]
    InvalidId {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} must be from {min} to {max}, not {value}")]
    OutOfRange {
        what: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("{0} works on SQLite databases only; on PostgreSQL use pg_dump or base backups (README: Data lifecycle)")]
    SqliteOnly(&'static str),
    #[error("{0}")]
    Refused(String),
    #[error("invalid geofence: {0}")]
    InvalidGeofence(String),
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    #[error("writing the export: {0}")]
    Export(#[from] std::io::Error),
    #[error("the master key does not open the secrets in this database (wrong key?)")]
    WrongMasterKey,
    #[error("the database is not as the write path left it: {0}")]
    Inconsistent(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The kinds [`StoreError::failure_kind`] reports, so metrics can start every label at zero.
pub const FAILURE_KINDS: [&str; 5] = ["disk_full", "locked", "read_only", "io", "other"];

impl StoreError {
    /// Could the same write succeed if tried again later? Yes when the database was busy,
    /// locked, full, read-only or unreachable: conditions that pass or that an operator clears.
    /// No for everything else (a statement the database rejects fails the same way again).
    pub fn is_retryable(&self) -> bool {
        self.failure_kind() != "other"
    }

    /// What kind of storage failure this is, for one log line per episode, a metric label and
    /// [`StoreError::is_retryable`]: one of [`FAILURE_KINDS`]. Each backend's codes map here.
    pub fn failure_kind(&self) -> &'static str {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => match db.code() {
                Some(code) if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => {
                    postgres_kind(&code)
                }
                Some(code) => sqlite_kind(&code),
                None => "other",
            },
            StoreError::Database(sqlx::Error::Io(_) | sqlx::Error::Tls(_)) => "io",
            StoreError::Database(sqlx::Error::PoolTimedOut) => "locked",
            StoreError::Database(sqlx::Error::PoolClosed) => "io",
            _ => "other",
        }
    }
}

/// A SQLite result code's kind: its primary code is the low byte of an extended one.
fn sqlite_kind(code: &str) -> &'static str {
    match code.parse::<i32>().map(|c| c & 0xff) {
        // SQLITE_FULL
        Ok(13) => "disk_full",
        // SQLITE_BUSY, SQLITE_LOCKED
        Ok(5 | 6) => "locked",
        // SQLITE_READONLY
        Ok(8) => "read_only",
        // SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB
        Ok(10 | 11 | 14 | 26) => "io",
        _ => "other",
    }
}

/// A PostgreSQL SQLSTATE's kind.
fn postgres_kind(code: &str) -> &'static str {
    match code {
        // disk_full
        "53100" => "disk_full",
        // serialization_failure, deadlock_detected, lock_not_available, too_many_connections,
        // out_of_memory, insufficient_resources, query_canceled (lock or statement timeout)
        "40001" | "40P01" | "55P03" | "53300" | "53200" | "53000" | "57014" => "locked",
        // read_only_sql_transaction (a standby, or a primary being switched over)
        "25006" => "read_only",
        // connection_exception (08xxx), admin, crash and cannot-connect-now shutdowns, io_error
        c if c.starts_with("08") => "io",
        "57P01" | "57P02" | "57P03" | "58030" => "io",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::str::FromStr;

    /// A statement the database rejects is not retried; a busy database is.
    #[tokio::test]
    async fn only_conditions_that_pass_are_retryable() {
        let mut a = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&mut a).await.unwrap();
        let dup = StoreError::from(
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut a)
                .await
                .unwrap_err(),
        );
        assert_eq!((dup.failure_kind(), dup.is_retryable()), ("other", false), "{dup}");
        let syntax = StoreError::from(
            sqlx::query("INSERT INTO nowhere VALUES (1)")
                .execute(&mut a)
                .await
                .unwrap_err(),
        );
        assert!(!syntax.is_retryable(), "{syntax}");

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&mut holder).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
        let no_wait = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .busy_timeout(std::time::Duration::ZERO);
        let mut other = sqlx::SqliteConnection::connect_with(&no_wait).await.unwrap();
        let busy = StoreError::from(
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut other)
                .await
                .unwrap_err(),
        );
        assert_eq!((busy.failure_kind(), busy.is_retryable()), ("locked", true), "{busy}");
        assert!(!StoreError::WrongMasterKey.is_retryable());
    }
}
