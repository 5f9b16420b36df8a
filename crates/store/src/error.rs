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

impl StoreError {
    /// Could the same operation succeed if tried again later (the database was busy or away)?
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => {
                    let code = db.code();
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                    code.as_deref()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
                }
                _ => false,
            },
            _ => false,
        }
    }
}
