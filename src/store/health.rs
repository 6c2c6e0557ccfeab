//! Whether a store accepts writes: [`Health`].

use std::fmt;

/// Whether a store accepts writes ([`crate::Store::health`]). Cheap to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The store accepts reads and writes.
    Writable,
    /// The store is in its failed state: a sync or write of its files
    /// failed, so it can no longer promise that a change it acknowledges
    /// survives. Reads go on; every write is refused with a storage error
    /// ([`crate::StorageError::must_reopen`]) until the store is reopened,
    /// which recovers every change acknowledged before the failure.
    Failed {
        /// What failed, in one line (no secret).
        cause: String,
    },
}

impl Health {
    /// `true` while the store accepts writes.
    pub fn is_writable(&self) -> bool {
        matches!(self, Health::Writable)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Writable => f.write_str("writable"),
            Health::Failed { cause } => {
                write!(f, "failed ({cause}); reopen the store to accept writes")
            }
        }
    }
}

/// What the store's write-ahead log did since the store was opened, for
/// operators' dashboards ([`crate::Store::log_stats`]). All counts; a temporary
/// store (no log) reports zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// Durable commits (records appended to the log).
    pub commits: u64,
    /// Bytes of log records written.
    pub bytes: u64,
    /// Group-commit syncs (each `fdatasync`s every log file written since
    /// the last one).
    pub syncs: u64,
    /// Syncs by how many commits each made durable: 1, 2–3, 4–7, 8–15,
    /// 16–31, 32–63, 64 or more.
    pub group_sizes: [u64; 7],
    /// Checkpoints recorded.
    pub checkpoints: u64,
    /// Transactions run again (the PostgreSQL backend; zeros elsewhere), by
    /// cause: SQLSTATE 40001 (serialization failure), 40P01 (deadlock),
    /// and anything else retried (a connection lost mid-transaction).
    pub retries: Retries,
}

/// Transactions the PostgreSQL backend ran again, by cause (see
/// [`LogStats::retries`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retries {
    /// SQLSTATE 40001, `serialization_failure` (also the test hook's).
    pub serialization_failure: u64,
    /// SQLSTATE 40P01, `deadlock_detected`.
    pub deadlock_detected: u64,
    /// A connection lost or a transaction aborted without a SQLSTATE.
    pub other: u64,
}
