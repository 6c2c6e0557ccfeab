//! The store's write-ahead log: what makes an acknowledged change durable.
//!
//! sled 0.34.7's flush issues `sync_file_range`, not `fsync`, and has no group
//! commit, so durability comes from here (SPEC §5.5):
//!
//! - **Slots.** The log lives in preallocated *slot* files (zero-filled and
//!   synced once when created), each holding one *segment* of the log at a
//!   time behind a segment header (epoch, segment number). Records are written
//!   in place over old bytes, so a commit's `fdatasync` moves no file metadata.
//! - **One writer section** (`writer.rs`): the caller computes its change
//!   (its transaction reads sled plus the changes logged but not yet applied
//!   to sled, the overlay) and appends the record under the same lock, so
//!   the log order is the order in which changes build on each other.
//!   Appending copies the record into memory; nothing is written yet.
//!   [`Wal::commit`] drives a commit through these steps and group commit's,
//!   in the order these rules require: the only caller of them.
//! - **Group commit** (`group.rs`): a committer waits until its record is
//!   synced. The first waiter becomes the leader. It first lets every thread
//!   that is committing append (at most 200 µs; a leader whose own commit
//!   was announced waits up to the commit delay for announced ones while
//!   no unannounced commit is underway), then takes the records
//!   appended so far (briefly under the writer lock), writes them with one `pwrite` per run and `fdatasync`s
//!   the files holding no lock, publishes the highest record covered and
//!   wakes the others; appends made during its sync are covered by the next
//!   leader.
//! - **Deferred commits** (`deferred.rs`: [`Wal::deferring`],
//!   [`Wal::sync_appended`]): code run inside `deferring` commits without
//!   waiting for the group commit (its thread reads its own records at
//!   once); another thread makes them durable, and the caller holds back
//!   every effect visible outside the process until then (the HTTP layer's
//!   answers to requests that hash nothing).
//! - **Applying to sled** (`apply.rs`: [`Wal::applicable`] /
//!   [`Wal::applied`]): sled receives durable records later, in batches: one sled transaction per
//!   batch (sled 0.34.7 writes its log buffer synchronously at every
//!   transaction commit, which is why a commit does not wait for one). Until
//!   then the changes live in the [`Overlay`], where readers find them once
//!   durable. sled thus holds only durable changes, whole records at a time,
//!   in log order, with the last one's sequence number. (Without syncing,
//!   [`WalOptions::sync`] `false`, each record is written at once and counts
//!   as durable when appended.)
//! - **Checkpoints** (`checkpoint.rs`: [`Wal::begin_checkpoint`] /
//!   [`Wal::finish_checkpoint`]):
//!   the caller notes the last applied sequence number and the log position,
//!   makes sled durable, then this module records both in the `checkpoint`
//!   file (atomically, by rename) and recycles the slots behind that position.
//! - **Recovery** (`recovery.rs`, [`Recovery`]): read the checkpoint, follow
//!   the chain of records after it and stop at the first one that is torn, corrupt, stale
//!   or missing. When valid records follow that point, it is damage, not the
//!   log's end ([`Recovery::corruption`], `corruption.rs`). The caller
//!   replays them; [`Recovery::start`] then opens a new *generation*
//!   (epoch + 1) in fresh segments, so bytes left over from the old one can
//!   never be mistaken for new records.
//! - **Faults** (`failure.rs`): a failed write or sync of the log (or of
//!   sled's files at a checkpoint) puts the log in its failed state for good:
//!   no write, no checkpoint, no recycling until the store is reopened.
//!
//! Sizes and thresholds are in `options.rs` ([`WalOptions`]); byte formats in
//! [`format`]; the record payload (a redo set) in [`redo`]. The tests are in
//! `tests/`, one file per part (recovery, group commit, apply, checkpoint),
//! and `fault_tests.rs`.

mod apply;
mod checkpoint;
mod corruption;
mod deferred;
mod failure;
pub(crate) mod format;
mod group;
#[cfg(test)]
pub(crate) use group::announced_here;
pub(crate) mod io;
mod options;
mod recovery;
pub(crate) mod redo;
mod writer;

#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code, clippy::unwrap_used))]
pub(crate) mod fault;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
pub(super) mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io as stdio;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::overlay::{Frozen, Overlay};
use super::tx::Redo;
pub(crate) use corruption::Corruption;
use failure::{Backoff, FailedState, FailureLog};
use format::{Checkpoint, REC_OVERHEAD, SEG_HEADER_LEN, SegmentHeader};
use group::Group;
pub(crate) use io::{FsDir, WalDir, WalFile};
pub(crate) use options::WalOptions;
pub(crate) use recovery::{Loaded, Recovery};
pub(crate) use writer::CommitError;

/// Writes per pending chunk of a deferred replay.
const RESUME_CHUNK: usize = if cfg!(test) { 3 } else { 4096 };

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before anything that
    // can panic, so a poisoned lock's data is still sound.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt(what: &'static str) -> stdio::Error {
    stdio::Error::new(stdio::ErrorKind::InvalidData, what)
}

#[derive(Clone)]
struct Slot {
    no: u32,
    file: Arc<dyn WalFile>,
}

impl Wal {
    fn new(
        dir: Box<dyn WalDir>,
        opts: WalOptions,
        writer: Writer,
        overlay: Overlay,
        unapplied: usize,
    ) -> Self {
        let appended = writer.appended_seq;
        Wal {
            dir,
            opts,
            sync_enabled: AtomicBool::new(opts.sync),
            state: FailedState::new(),
            failures: FailureLog::new(),
            spare_backoff: Backoff::new(),
            apply_backoff: Backoff::new(),
            checkpoint_backoff: Backoff::new(),
            #[cfg(test)]
            between_thaw_and_forget: Mutex::new(None),
            writer: Mutex::new(writer),
            group: Mutex::new(Group { leader: false }),
            synced: Condvar::new(),
            checkpointing: Mutex::new(()),
            applying: Mutex::new(()),
            spare: Mutex::new(()),
            syncs: AtomicU64::new(0),
            counters: Counters::default(),
            since_checkpoint: AtomicU64::new(0),
            last_checkpoint_ms: AtomicU64::new(0),
            started: Instant::now(),
            spare_wanted: AtomicBool::new(false),
            gathering: Mutex::new(()),
            leader_gathering: AtomicBool::new(false),
            gathered_cv: Condvar::new(),
            in_commit: AtomicUsize::new(0),
            expected: AtomicUsize::new(0),
            impatient: AtomicUsize::new(0),
            leader_delaying: AtomicBool::new(false),
            deferred_max: AtomicU64::new(0),
            deferring_unlogged: AtomicUsize::new(0),
            appended: AtomicU64::new(appended),
            unapplied: AtomicUsize::new(unapplied),
            overlay,
        }
    }
}

fn first_unused(used: &BTreeSet<u32>) -> u32 {
    (0..).find(|n| !used.contains(n)).unwrap_or(u32::MAX)
}

/// The write-ahead log of an open store.
pub(crate) struct Wal {
    dir: Box<dyn WalDir>,
    opts: WalOptions,
    sync_enabled: AtomicBool,
    /// Set by a failed write or sync of the log or of sled's files: the store
    /// can no longer promise anything, so every later commit fails and no
    /// checkpoint is recorded until the store is reopened (and recovers).
    state: FailedState,
    /// Failures that changed nothing a caller was told about.
    failures: FailureLog,
    /// Retries of housekeeping after a failure wait a while: preparing a
    /// spare slot, applying records to sled, checkpoints.
    spare_backoff: Backoff,
    apply_backoff: Backoff,
    checkpoint_backoff: Backoff,
    /// Test hook: runs in [`Wal::applied`] between releasing a deferred
    /// replay's changes and forgetting the applied versions.
    #[cfg(test)]
    pub(crate) between_thaw_and_forget: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    writer: Mutex<Writer>,
    group: Mutex<Group>,
    synced: Condvar,
    checkpointing: Mutex<()>,
    /// One batch of records is applied to sled at a time.
    applying: Mutex<()>,
    spare: Mutex<()>,
    syncs: AtomicU64,
    /// What [`Wal::counters`] reports (for operators' metrics).
    counters: Counters,
    /// Log bytes written since the last checkpoint began, and when it began
    /// (milliseconds after `started`).
    since_checkpoint: AtomicU64,
    last_checkpoint_ms: AtomicU64,
    started: Instant,
    /// No free slot is left for the next segment.
    spare_wanted: AtomicBool,
    /// A leader waits in [`Wal::gather`] (`true` while it does).
    gathering: Mutex<()>,
    leader_gathering: AtomicBool,
    gathered_cv: Condvar,
    /// Threads committing ([`Wal::enter`]).
    in_commit: AtomicUsize,
    /// Threads that announced a commit not yet begun ([`Wal::expect_commit`]).
    expected: AtomicUsize,
    /// Committing threads that did not announce their commit (a write that
    /// hashes nothing): while there is one, no leader waits for announced
    /// commits.
    impatient: AtomicUsize,
    /// A leader is waiting for announced commits (the commit delay).
    leader_delaying: AtomicBool,
    /// The last record a deferred commit appended (`deferred.rs`).
    deferred_max: AtomicU64,
    /// Threads running deferring code that have appended nothing yet: a
    /// gathering leader lets them append first (they are about to, most
    /// of the time: an async worker handling a write).
    deferring_unlogged: AtomicUsize,
    /// The last record appended (a copy readable without the writer lock).
    appended: AtomicU64,
    /// Bytes of records appended but not yet applied to sled.
    unapplied: AtomicUsize,
    /// The changes of those records, for reads until sled holds them.
    overlay: Overlay,
}

struct Writer {
    epoch: u64,
    /// The sequence number the next record gets.
    next_seq: u64,
    /// The last record written to a slot (not necessarily synced).
    appended_seq: u64,
    /// The last record whose change sled holds, and where the next record
    /// after it starts: what a checkpoint records.
    applied_seq: u64,
    applied_pos: (u64, u64),
    /// Records appended but not yet applied to sled, oldest first.
    pending: std::collections::VecDeque<Arc<PendingRecord>>,
    /// The segment being written and the offset of the next record in it.
    segment: u64,
    offset: u64,
    current: Option<Slot>,
    /// Slots holding segments not yet behind a checkpoint: (segment, slot).
    in_use: Vec<(u64, Slot)>,
    free: Vec<Slot>,
    all_slots: BTreeSet<u32>,
    /// Slots written since the last leader took the list.
    dirty: Vec<Slot>,
    /// Records appended and not yet written (syncing mode: the next
    /// group's leader writes them before it syncs).
    unwritten: Vec<Chunk>,
    buf: Vec<u8>,
}

/// Consecutive records of one slot, not yet written.
struct Chunk {
    slot: Slot,
    at: u64,
    bytes: Vec<u8>,
}

/// A record appended but not yet applied to sled.
pub(crate) struct PendingRecord {
    pub seq: u64,
    pub redo: Vec<Redo>,
    /// Where the record ends: (segment, offset).
    end: (u64, u64),
    /// Its size in the log.
    len: usize,
    /// The newest record whose changes it holds: `seq`, except for the
    /// chunks of a deferred replay ([`Recovery::resume`]).
    content_seq: u64,
    /// A chunk of a deferred replay: its writes are these entries of the
    /// overlay's [`Frozen`] changes (`redo` is empty).
    pub frozen: Option<Range<usize>>,
}

/// Counts since the log was opened, for operators (SPEC §14).
#[derive(Default)]
pub(crate) struct Counters {
    /// Records appended.
    pub records: AtomicU64,
    /// Bytes of records appended.
    pub bytes: AtomicU64,
    /// Checkpoints recorded.
    pub checkpoints: AtomicU64,
    /// Syncs by how many records each made durable: 1, 2–3, 4–7, 8–15,
    /// 16–31, 32–63, 64 or more.
    pub group_sizes: [AtomicU64; 7],
}

/// Counters for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalStats {
    /// Slot files in the WAL directory.
    pub slots: usize,
    /// Leader syncs (each syncs one or more files).
    pub syncs: u64,
    /// The last sequence number handed out.
    pub last_seq: u64,
    /// Log bytes written since the last checkpoint began.
    pub since_checkpoint: u64,
}

impl Wal {
    /// `Err` in the failed state.
    pub fn check(&self) -> stdio::Result<()> {
        self.state.check()
    }

    /// `true` once a write or sync of the log or of sled's files failed:
    /// every write is refused until the store is reopened.
    pub fn is_failed(&self) -> bool {
        self.state.is_failed()
    }

    /// What failed, in the failed state.
    pub fn failure(&self) -> Option<String> {
        self.state.cause()
    }

    /// Enters the failed state: `what` failed with `e`.
    pub fn fail(&self, what: &'static str, e: &stdio::Error) {
        self.state.fail(what, e);
    }

    /// Logs a failure that changed nothing a caller was told about
    /// (housekeeping after a durable commit, a refused write), rate-limited.
    pub fn report(&self, what: &'static str, e: &dyn std::fmt::Display) {
        self.failures.report(what, e);
    }

    /// `false` when records are appended without waiting for a sync (each
    /// is written at once and counts as durable when appended).
    pub fn syncing(&self) -> bool {
        self.sync_enabled.load(Ordering::Relaxed)
    }

    /// The changes logged but not yet in sled.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Turns waiting for `fdatasync` on or off (tests make an unsynced tail).
    #[cfg(test)]
    pub fn set_sync(&self, on: bool) {
        self.sync_enabled.store(on, Ordering::Relaxed);
    }

    /// (segment, slot, offset of the next record).
    #[cfg(test)]
    pub fn position(&self) -> (u64, Option<u32>, u64) {
        let w = lock(&self.writer);
        (w.segment, w.current.as_ref().map(|s| s.no), w.offset)
    }

    /// The counts since the log was opened.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Leader syncs so far (each syncs every file written since the last).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn stats(&self) -> WalStats {
        let w = lock(&self.writer);
        WalStats {
            slots: w.all_slots.len(),
            syncs: self.syncs.load(Ordering::Relaxed),
            last_seq: w.next_seq - 1,
            since_checkpoint: self.since_checkpoint.load(Ordering::Relaxed),
        }
    }
}
