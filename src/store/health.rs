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
