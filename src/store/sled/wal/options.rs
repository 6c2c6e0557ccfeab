//! How the log is sized and when it checkpoints.

use std::time::Duration;

use super::format::{REC_OVERHEAD, SEG_HEADER_LEN};

/// How the log is sized and when it checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalOptions {
    /// Bytes per slot file (one segment).
    pub segment_size: u64,
    /// Checkpoint once this many log bytes were written since the last one.
    pub checkpoint_bytes: u64,
    /// Checkpoint when this much time passed since the last one and
    /// something was written.
    pub checkpoint_interval: Duration,
    /// `false`: append without waiting for `fdatasync`
    /// ([`super::Durability::PeriodicFlushLosesRecentChanges`]).
    pub sync: bool,
    /// At open, a log with at least this many bytes to replay is not
    /// replayed into sled first: its records become pending changes and
    /// reach sled in batches later ([`Recovery::resume`]).
    pub defer_replay_bytes: u64,
    /// How long a group commit's leader waits, before it syncs, for the
    /// commits that threads announced ([`super::Wal::expect_commit`]: a
    /// password hash underway); zero: it never waits for them.
    pub commit_delay: Duration,
    /// The commit delay applies only while more commits are announced than
    /// this (the store's hashing limit: then some of them wait for a
    /// hashing slot, every slot is busy, and a wait leaves no CPU idle).
    pub delay_beyond: usize,
}

impl WalOptions {
    /// 16 MiB segments.
    pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;
    /// A checkpoint every 64 MiB of log: the most a reopen replays.
    pub const DEFAULT_CHECKPOINT_BYTES: u64 = 64 << 20;
    /// ... or every minute.
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
    /// Replays of 1 MiB or more are deferred (about 0.1–0.2 s of sled
    /// updates per MiB).
    pub const DEFAULT_DEFER_REPLAY_BYTES: u64 = 1 << 20;

    pub fn new(sync: bool) -> Self {
        Self {
            segment_size: Self::DEFAULT_SEGMENT_SIZE,
            checkpoint_bytes: Self::DEFAULT_CHECKPOINT_BYTES,
            checkpoint_interval: Self::DEFAULT_CHECKPOINT_INTERVAL,
            sync,
            defer_replay_bytes: Self::DEFAULT_DEFER_REPLAY_BYTES,
            commit_delay: Duration::ZERO,
            delay_beyond: 0,
        }
    }

    /// The largest record payload that fits a segment.
    pub fn max_payload(&self) -> usize {
        usize::try_from(self.segment_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(SEG_HEADER_LEN + REC_OVERHEAD)
    }

    /// Free slots kept for reuse after a checkpoint; others are deleted.
    pub(super) fn max_free_slots(&self) -> usize {
        usize::try_from(self.checkpoint_bytes.div_ceil(self.segment_size.max(1)))
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }
}
