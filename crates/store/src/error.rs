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
    #[error("the master key does not open the secrets in this database (wrong key?)")]
    WrongMasterKey,
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The kinds [`StoreError::failure_kind`] reports, so metrics can start every label at zero.
pub const FAILURE_KINDS: [&str; 5] = ["disk_full", "locked", "read_only", "io", "other"];

impl StoreError {
    /// Could the same operation succeed if tried again later (the database was busy or away)?
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(_) => matches!(self.sqlite_code(), Some(5 | 6)),
                _ => false,
            },
            _ => false,
        }
    }

    /// What kind of storage failure this is, for one log line per episode and a metric label:
    /// one of [`FAILURE_KINDS`].
    pub fn failure_kind(&self) -> &'static str {
        match self.sqlite_code() {
            // SQLITE_FULL
            Some(13) => "disk_full",
            // SQLITE_BUSY, SQLITE_LOCKED
            Some(5 | 6) => "locked",
            // SQLITE_READONLY
            Some(8) => "read_only",
            // SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB
            Some(10 | 11 | 14 | 26) => "io",
            _ => match self {
                StoreError::Database(sqlx::Error::Io(_)) => "io",
                StoreError::Database(sqlx::Error::PoolTimedOut) => "locked",
                _ => "other",
            },
        }
    }

    /// SQLite's primary result code (the low byte of an extended one), when SQLite gave one.
    fn sqlite_code(&self) -> Option<i32> {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .as_deref()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff),
            _ => None,
        }
    }
}
