//! What a recovery that accepts losing a damaged log's tail dropped.

use std::fmt;

/// The records a recovery with truncation dropped after a damaged record
/// in the middle of the write-ahead log ([`crate::Store::recover_truncating_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogTruncation {
    /// The log file (slot) holding the damaged record.
    pub file: String,
    /// Where in that file the damaged record starts.
    pub offset: u64,
    /// The sequence number of the first record dropped.
    pub first_dropped: u64,
    /// The sequence number of the last record dropped (the highest found
    /// valid after the damage).
    pub last_dropped: u64,
}

impl LogTruncation {
    /// How many records were dropped (the damaged ones and the valid ones
    /// after them).
    pub fn dropped_records(&self) -> u64 {
        self.last_dropped + 1 - self.first_dropped
    }
}

impl fmt::Display for LogTruncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {} records ({} to {}) of the write-ahead log from {} offset {}",
            self.dropped_records(),
            self.first_dropped,
            self.last_dropped,
            self.file,
            self.offset
        )
    }
}
