//! The crate's one error type, with precise variants.
//!
//! Refusals (wrong password, invalid token, conflict, lock-out) and faults
//! (storage, corruption) share one enum so that a caller handles both with a
//! single `match`; [`Error::is_fault`] tells them apart. No message here ever
//! contains a secret.

use std::fmt;

pub use crate::model::InputError;
use crate::model::Timestamp;

/// Everything that can go wrong in credstore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist.
    #[error("{0} not found")]
    NotFound(Entity),
    /// A record with that identity already exists.
    #[error("{0} already exists")]
    AlreadyExists(Entity),
    /// The credential presented does not match.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(Credential),
    /// Too many failed logins; try again after `until`.
    #[error("account locked until {until}")]
    Locked {
        /// When the lock ends.
        until: Timestamp,
    },
    /// The account is disabled (`is_enable: false`): it cannot log in,
    /// change or reset its password. Only said to a caller that proved the
    /// credential (the right password or key).
    #[error("the account is disabled")]
    Disabled,
    /// Every box_id the store may assign (1 to [`crate::MAX_BOX_ID`]) is
    /// taken or past: registering needs an operator (import with free ids,
    /// or a store with a lower first box_id).
    #[error("no box_id left to assign: the next one would pass {max}")]
    BoxIdsExhausted {
        /// The largest box_id the store assigns.
        max: u64,
    },
    /// The password was right, but the customer must change it before logging in.
    #[error("the password must be changed before logging in")]
    MustChangePassword,
    /// The reset token is unknown, expired, used, or issued before the last
    /// credential change.
    #[error("invalid, expired or used token")]
    InvalidToken,
    /// A new password breaks the policy.
    #[error("password does not meet the policy: {0}")]
    Policy(PolicyViolation),
    /// A request for the same address came too soon after the last one.
    #[error("too many requests; try again later")]
    Throttled,
    /// The record changed between the read and the write (another credential
    /// change won); re-read and try again.
    #[error("conflict: the credentials changed concurrently; retry with fresh data")]
    Conflict,
    /// The input is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InputError),
    /// The store was created with another secret.
    #[error(
        "wrong store secret: this store was created with a different secret; \
         open it with the secret file it was created with"
    )]
    WrongSecret,
    /// The directory holds something that is not a credstore database.
    #[error(
        "not a credstore database ({found}); point at a credstore data directory \
         or at an empty or absent one to create a store"
    )]
    UnknownFormat {
        /// What was found instead.
        found: String,
    },
    /// The database was written by a format version this build does not know.
    #[error(
        "unsupported store format version {found} (this build reads version {supported}); \
         open it with a credstore release that supports it"
    )]
    UnsupportedVersion {
        /// The version on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record in tree `{tree}` at key {key}; run the integrity check")]
    CorruptRecord {
        /// The tree holding the record.
        tree: &'static str,
        /// The record's key, printable.
        key: String,
    },
    /// The storage engine or file system failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something inside the process failed that is not the store's files:
    /// the OS random number generator, the password hasher, an operation
    /// that did not finish on its blocking thread.
    #[error(transparent)]
    Internal(#[from] InternalError),
    /// The write-ahead log is damaged in its middle: a record is corrupt
    /// and valid records follow it (media corruption, not a torn tail left
    /// by a crash). The store refuses to open rather than silently drop the
    /// records after the damage; reopening with truncation (the `credstore
    /// recover --truncate-at-corruption` command) accepts losing them.
    #[error(
        "the write-ahead log is corrupt at {file} offset {offset}: record {record} is damaged \
         and valid records follow it (up to record {last_valid}); nothing was changed. \
         `credstore recover --truncate-at-corruption` accepts losing the records from {record} on"
    )]
    CorruptLog {
        /// The log file (slot) holding the damaged record.
        file: String,
        /// Where in that file the damaged record starts.
        offset: u64,
        /// The sequence number of the damaged record.
        record: u64,
        /// The highest sequence number found valid after it.
        last_valid: u64,
    },
    /// A signed request's digest does not match the request.
    #[error("invalid digest")]
    InvalidDigest,
    /// A signed request reused a salt the same app sent before (salts are
    /// kept for good).
    #[error("salt already used")]
    ReplayedSalt,
}

impl Error {
    /// `true` for faults of the store itself (storage, corruption, format),
    /// `false` for refusals and bad input that the caller caused.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Error::Storage(_)
                | Error::Internal(_)
                | Error::CorruptRecord { .. }
                | Error::CorruptLog { .. }
                | Error::UnknownFormat { .. }
                | Error::UnsupportedVersion { .. }
                | Error::WrongSecret
        )
    }
}

/// What kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entity {
    /// A customer.
    Customer,
    /// A customer's email address.
    Email,
    /// A partner app.
    App,
    /// A shop key.
    Shop,
    /// A password reset.
    Reset,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Customer => "customer",
            Entity::Email => "email",
            Entity::App => "app",
            Entity::Shop => "shop",
            Entity::Reset => "password reset",
        })
    }
}

/// Which credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// Login email or password (deliberately not told apart).
    Password,
    /// The customer's box_id and key.
    CustomerKey,
    /// The email presented is not the account's.
    Email,
    /// The app's user_code and key, or the app is disabled.
    App,
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Password => "wrong email or password",
            Credential::CustomerKey => "wrong customer box_id or key",
            Credential::Email => "email is not the account's",
            Credential::App => "unknown or disabled app, or wrong app key",
        })
    }
}

/// The password rule a new password breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// Fewer characters than the minimum (after NFKC).
    TooShort {
        /// Minimum number of characters.
        min: usize,
    },
    /// More characters than the maximum (after NFKC).
    TooLong {
        /// Maximum number of characters.
        max: usize,
    },
    /// Contains NUL or another control character.
    ControlCharacter,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyViolation::TooShort { min } => write!(f, "at least {min} characters"),
            PolicyViolation::TooLong { max } => write!(f, "at most {max} characters"),
            PolicyViolation::ControlCharacter => f.write_str("no control characters"),
        }
    }
}

/// An opaque failure of the storage engine or the file system.
///
/// Only the store layer (`src/store/`) constructs it, so that replacing the
/// engine breaks no caller; failures elsewhere in the process are
/// [`InternalError`]s. Two questions about it have answers: whether the store must be
/// reopened before it accepts writes again ([`StorageError::must_reopen`]),
/// and whether the disk was full ([`StorageError::is_disk_full`]).
pub struct StorageError {
    context: &'static str,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
    must_reopen: bool,
    /// A transaction met serialization failures (PostgreSQL's 40001/40P01)
    /// on every attempt the retry policy allows: nothing of it was written.
    contention: bool,
    /// The connection was lost while a commit was in flight and the
    /// server could not be asked whether it committed.
    outcome_unknown: bool,
    /// The store logged it already (a refused write): callers that turn it
    /// into a 5xx do not log it again.
    logged: bool,
}

impl StorageError {
    pub(crate) fn new(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            context,
            source: source.into(),
            must_reopen: false,
            contention: false,
            outcome_unknown: false,
            logged: false,
        }
    }

    /// A transaction that met a serialization failure on every attempt
    /// (see [`StorageError::is_contention`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn contention(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            contention: true,
            ..Self::new(context, source)
        }
    }

    /// A commit whose outcome could not be learnt (see
    /// [`StorageError::is_outcome_unknown`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn outcome_unknown(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            outcome_unknown: true,
            ..Self::new(context, source)
        }
    }

    /// `true` when the operation met conflicting concurrent transactions
    /// (PostgreSQL's serialization failures) on every attempt its backend's
    /// retry policy allows. Nothing of it was written; trying again later
    /// may succeed.
    pub fn is_contention(&self) -> bool {
        self.contention
    }

    /// `true` when the connection to the database server was lost while
    /// the commit was in flight and the server could not be asked
    /// afterwards whether it had committed: the change **may have been
    /// made**. Read before trying again. (The PostgreSQL backend asks the
    /// server by transaction id first, and only reports this when it
    /// cannot get an answer.)
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// Marks the error as logged with its cause (by the store).
    pub(crate) fn logged(mut self) -> Self {
        self.logged = true;
        self
    }

    /// `true` when the store has logged this error with its cause already.
    pub(crate) fn was_logged(&self) -> bool {
        self.logged
    }

    /// An error after which the store refuses every write until it is
    /// reopened (its failed state: a sync or write of its log or data
    /// files failed).
    pub(crate) fn failed(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            must_reopen: true,
            ..Self::new(context, source)
        }
    }

    /// `true` when the store is in its failed state: a sync or write of its
    /// files failed, and it refuses every write until it is reopened
    /// (reopening recovers every acknowledged change). Reads go on.
    pub fn must_reopen(&self) -> bool {
        self.must_reopen
    }

    /// `true` when the disk was full. The write that met it changed nothing.
    pub fn is_disk_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageError")
            .field("context", &self.context)
            .field("source", &self.source)
            .field("must_reopen", &self.must_reopen)
            .field("contention", &self.contention)
            .field("outcome_unknown", &self.outcome_unknown)
            .finish()
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error while {}: {}", self.context, self.source)?;
        if self.must_reopen {
            f.write_str("; the store refuses writes until it is reopened")?;
        }
        if self.outcome_unknown {
            f.write_str("; the change may or may not have been made: read before retrying")?;
        }
        Ok(())
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// An opaque failure inside the process that is not the store's files:
/// the OS random number generator, the password hasher, a blocking task
/// that did not finish. Its text names what was being done; it never holds
/// a secret.
pub struct InternalError {
    context: &'static str,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl InternalError {
    pub(crate) fn new(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            context,
            source: source.into(),
        }
    }
}

impl fmt::Debug for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalError")
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for InternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "internal error while {}: {}", self.context, self.source)
    }
}

impl std::error::Error for InternalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Shorthand for `Result<T, credstore::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
