//! The store's write-ahead log: what makes an acknowledged change durable.
//!
//! sled 0.34.7's flush issues `sync_file_range`, not `fsync`, and has no group
//! commit, so durability comes from here (SPEC §5.5):
//!
//! - **Slots.** The log lives in preallocated *slot* files (zero-filled and
//!   synced once when created), each holding one *segment* of the log at a
//!   time behind a segment header (epoch, segment number). Records are written
//!   in place over old bytes, so a commit's `fdatasync` moves no file metadata.
//! - **One writer section** ([`Wal::writer`]): the caller computes its change
//!   (its transaction reads sled plus the changes logged but not yet applied
//!   to sled, [`WriterGuard::overlay`]) and appends the record under the same
//!   lock, so the log order is the order in which changes build on each
//!   other. Appending copies the record into memory; nothing is written yet.
//! - **Group commit** ([`Wal::wait_durable`]): a committer waits until its
//!   record is synced. The first waiter becomes the leader. It first lets
//!   every thread that is committing append ([`Wal::gather`], at most
//!   [`GATHER_LIMIT`]), then takes the records appended so far (briefly under
//!   the writer lock), writes them with one `pwrite` per run and `fdatasync`s
//!   the files holding no lock, publishes the highest record covered and
//!   wakes the others; appends made during its sync are covered by the next
//!   leader.
//! - **Applying to sled** ([`Wal::applicable`] / [`Wal::applied`]): sled
//!   receives durable records later, in batches: one sled transaction per
//!   batch (sled 0.34.7 writes its log buffer synchronously at every
//!   transaction commit, which is why a commit does not wait for one). Until
//!   then the changes live in the [`Overlay`], where readers find them once
//!   durable. sled thus holds only durable changes, whole records at a time,
//!   in log order, with the last one's sequence number. (Without syncing,
//!   [`WalOptions::sync`] `false`, each record is written at once and counts
//!   as durable when appended.)
//! - **Checkpoints** ([`Wal::begin_checkpoint`] / [`Wal::finish_checkpoint`]):
//!   the caller notes the last applied sequence number and the log position,
//!   makes sled durable, then this module records both in the `checkpoint`
//!   file (atomically, by rename) and recycles the slots behind that position.
//! - **Recovery** ([`Recovery`]): read the checkpoint, follow the chain of
//!   records after it and stop at the first one that is torn, corrupt, stale
//!   or missing. When valid records follow that point, it is damage, not the
//!   log's end ([`Recovery::corruption`], `corruption.rs`). The caller
//!   replays them; [`Recovery::start`] then opens a new *generation*
//!   (epoch + 1) in fresh segments, so bytes left over from the old one can
//!   never be mistaken for new records.
//! - **Faults** (`failure.rs`): a failed write or sync of the log (or of
//!   sled's files at a checkpoint) puts the log in its failed state for good:
//!   no write, no checkpoint, no recycling until the store is reopened.
//!
//! Byte formats are in [`format`]; the record payload (a redo set) in [`redo`].

mod corruption;
mod failure;
pub(crate) mod format;
pub(crate) mod io;
mod recovery;
pub(crate) mod redo;

#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code, clippy::unwrap_used))]
pub(crate) mod fault;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io as stdio;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::overlay::{Frozen, Overlay};
use super::tx::Redo;
pub(crate) use corruption::Corruption;
use failure::{Backoff, FailedState, FailureLog};
use format::{Checkpoint, REC_OVERHEAD, SEG_HEADER_LEN, SegmentHeader};
pub(crate) use io::{FsDir, WalDir, WalFile};
pub(crate) use recovery::{Loaded, Recovery};

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
}

/// Log bytes waiting to be applied to sled before a committer applies them
/// (one sled transaction per batch).
const APPLY_BYTES: usize = 256 << 10;

/// Writes per pending chunk of a deferred replay.
const RESUME_CHUNK: usize = if cfg!(test) { 3 } else { 4096 };

/// The longest a group commit's leader waits for writers about to append.
const GATHER_LIMIT: Duration = Duration::from_micros(200);

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
        }
    }

    /// The largest record payload that fits a segment.
    pub fn max_payload(&self) -> usize {
        usize::try_from(self.segment_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(SEG_HEADER_LEN + REC_OVERHEAD)
    }

    /// Free slots kept for reuse after a checkpoint; others are deleted.
    fn max_free_slots(&self) -> usize {
        usize::try_from(self.checkpoint_bytes.div_ceil(self.segment_size.max(1)))
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }
}

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

/// Group commit's state, beside the durable sequence number (the
/// overlay's, raised under this lock while syncing).
struct Group {
    /// A leader is syncing right now.
    leader: bool,
}

/// The writer section: hold it across computing a change and
/// [`WriterGuard::append`]ing its record.
pub(crate) struct WriterGuard<'a> {
    wal: &'a Wal,
    w: MutexGuard<'a, Writer>,
}

/// Where a checkpoint stands; see [`Wal::begin_checkpoint`].
pub(crate) struct CheckpointTicket<'a> {
    _one_at_a_time: MutexGuard<'a, ()>,
    checkpoint: Checkpoint,
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
    /// Enters the writer section; fails when the log failed earlier.
    pub fn writer(&self) -> stdio::Result<WriterGuard<'_>> {
        let w = lock(&self.writer);
        self.check()?;
        Ok(WriterGuard { wal: self, w })
    }

    /// Marks the calling thread as committing until the returned value is
    /// dropped: from before it enters the writer section until its record
    /// is durable. A group's leader waits for such threads to append.
    pub fn enter(&self) -> Committing<'_> {
        self.in_commit.fetch_add(1, Ordering::SeqCst);
        Committing(self)
    }

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

    /// Returns once record `seq` is durable, as the group's leader when no
    /// one else is: the leader syncs every file written since the last sync
    /// (holding no lock, so that writers keep appending meanwhile), then
    /// publishes the highest record it covered and wakes the others.
    pub fn wait_durable(&self, seq: u64) -> stdio::Result<()> {
        let mut g = lock(&self.group);
        loop {
            // Raised under this lock by leaders (always, when syncing).
            if self.overlay.durable() >= seq {
                return Ok(());
            }
            self.check()?;
            if g.leader {
                g = self.synced.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.leader = true;
            drop(g);
            self.gather();
            let (target, files, chunks) = {
                let mut w = lock(&self.writer);
                (
                    w.appended_seq,
                    std::mem::take(&mut w.dirty),
                    std::mem::take(&mut w.unwritten),
                )
            };
            let result = write_group(&chunks, &files);
            self.syncs.fetch_add(1, Ordering::Relaxed);
            // After a failed fsync the kernel may have dropped the dirty
            // pages: nothing written since the last good sync can be
            // trusted, so stop acknowledging anything (set before waking
            // the others, who then see it).
            if let Err((what, e)) = &result {
                self.state.fail(what, e);
            }
            g = lock(&self.group);
            g.leader = false;
            if result.is_ok() {
                let made_durable = target.saturating_sub(self.overlay.durable());
                if made_durable > 0 {
                    let bucket = (63 - made_durable.leading_zeros() as usize).min(6);
                    self.counters.group_sizes[bucket].fetch_add(1, Ordering::Relaxed);
                }
                self.overlay.set_durable(target);
            }
            self.synced.notify_all();
            result.map_err(|(_, e)| e)?;
        }
    }

    /// Before a leader syncs: lets every thread that is committing and has
    /// no record waiting for a sync append first, so that one sync covers
    /// them too (they would otherwise wait for this sync and then another).
    /// Bounded by [`GATHER_LIMIT`]; returns at once when all committing
    /// threads wait for this sync already (one writer: always).
    fn gather(&self) {
        let deadline = Instant::now() + GATHER_LIMIT;
        let mut g = lock(&self.gathering);
        self.leader_gathering.store(true, Ordering::SeqCst);
        while !self.gathered() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .gathered_cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        self.leader_gathering.store(false, Ordering::SeqCst);
        drop(g);
    }

    /// Every committing thread has a record waiting for the next sync.
    fn gathered(&self) -> bool {
        let committing = self.in_commit.load(Ordering::SeqCst) as u64;
        let waiting = self
            .appended
            .load(Ordering::SeqCst)
            .saturating_sub(self.overlay.durable());
        waiting >= committing
    }

    /// Wakes a gathering leader once [`Wal::gathered`] holds (after an
    /// append, and when a thread stops committing).
    pub fn nudge_leader(&self) {
        if self.leader_gathering.load(Ordering::SeqCst) && self.gathered() {
            let _g = lock(&self.gathering);
            self.gathered_cv.notify_one();
        }
    }

    /// The changes logged but not yet in sled.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// `true` when enough records wait to be applied to sled that the next
    /// committer should apply them ([`super::commit::settle`]), unless the
    /// last attempt failed a moment ago ([`Wal::applying_went`]).
    pub fn apply_due(&self) -> bool {
        self.unapplied.load(Ordering::Relaxed) >= APPLY_BYTES && self.apply_backoff.ready()
    }

    /// Notes how a committer's attempt to apply records went.
    pub fn applying_went<T, E>(&self, result: &Result<T, E>) {
        self.apply_backoff.note(result);
    }

    /// Takes the right to apply records to sled: one batch at a time. With
    /// `wait == false`, `None` when another thread is applying.
    pub fn begin_apply(&self, wait: bool) -> Option<MutexGuard<'_, ()>> {
        if wait {
            return Some(lock(&self.applying));
        }
        match self.applying.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The durable records not yet applied to sled, oldest first (at most
    /// `limit`). Call with the guard of [`Wal::begin_apply`].
    pub fn applicable(
        &self,
        _apply: &MutexGuard<'_, ()>,
        max_writes: usize,
    ) -> Vec<Arc<PendingRecord>> {
        let durable = self.overlay.durable();
        let w = lock(&self.writer);
        let mut writes = 0;
        w.pending
            .iter()
            .take_while(|p| p.seq <= durable)
            .take_while(|p| {
                let first = writes == 0;
                writes += p.frozen.as_ref().map_or(p.redo.len(), Range::len).max(1);
                first || writes <= max_writes
            })
            .cloned()
            .collect()
    }

    /// Notes that sled holds `records` (the oldest pending ones, as returned
    /// by [`Wal::applicable`]): a checkpoint may now pass them, and their
    /// versions leave the overlay.
    pub fn applied(&self, _apply: &MutexGuard<'_, ()>, records: &[Arc<PendingRecord>]) {
        let Some(last) = records.last() else {
            return;
        };
        {
            let mut w = lock(&self.writer);
            // They are the front of the queue: only the holder of the
            // applying guard removes records, oldest first.
            let n = records.len().min(w.pending.len());
            debug_assert!(
                w.pending
                    .iter()
                    .zip(records)
                    .all(|(a, b)| Arc::ptr_eq(a, b))
            );
            w.pending.drain(..n);
            w.applied_seq = last.seq;
            w.applied_pos = last.end;
        }
        let bytes: usize = records.iter().map(|r| r.len).sum();
        self.unapplied.fetch_sub(bytes, Ordering::Relaxed);
        // Oldest first, so that no reader or writer ever sees a value older
        // than one already visible: the deferred replay's changes lie below
        // the versions of later records, so they go first (sled holds all of
        // them once the last chunk is applied); a reader that then misses
        // them finds the later versions, still held, or sled. Forgetting the
        // later versions first would let the replay's older values show
        // through for a moment (a used token could look unused).
        if records
            .iter()
            .any(|r| r.frozen.is_some() && r.seq == r.content_seq)
        {
            self.overlay.thaw();
        }
        #[cfg(test)]
        if let Some(hook) = lock(&self.between_thaw_and_forget).clone() {
            hook();
        }
        let redo: Vec<&[Redo]> = records.iter().map(|r| r.redo.as_slice()).collect();
        let newest = records
            .iter()
            .map(|r| r.content_seq)
            .max()
            .unwrap_or(last.seq);
        self.overlay.forget_upto(newest, &redo);
    }

    /// `true` when the size or time threshold for a checkpoint is reached,
    /// unless the last attempt failed a moment ago.
    pub fn checkpoint_due(&self) -> bool {
        let since = self.since_checkpoint.load(Ordering::Relaxed);
        let last = Duration::from_millis(self.last_checkpoint_ms.load(Ordering::Relaxed));
        (since >= self.opts.checkpoint_bytes
            || (since > 0
                && self.started.elapsed().saturating_sub(last) >= self.opts.checkpoint_interval))
            && self.checkpoint_backoff.ready()
    }

    /// Notes how a committer's checkpoint went.
    pub fn checkpoint_went<T, E>(&self, result: &Result<T, E>) {
        self.checkpoint_backoff.note(result);
    }

    /// Notes the last applied sequence number and the log position. The
    /// caller then makes sled durable and calls [`Wal::finish_checkpoint`].
    /// One checkpoint at a time: with `wait == false`, `None` when another
    /// one is running. `Err` in the failed state.
    pub fn begin_checkpoint(&self, wait: bool) -> stdio::Result<Option<CheckpointTicket<'_>>> {
        let guard = if wait {
            lock(&self.checkpointing)
        } else {
            match self.checkpointing.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            }
        };
        self.check()?;
        let w = lock(&self.writer);
        let checkpoint = Checkpoint {
            epoch: w.epoch,
            seq: w.applied_seq,
            segment: w.applied_pos.0,
            offset: w.applied_pos.1,
        };
        self.since_checkpoint.store(0, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_checkpoint_ms.store(now, Ordering::Relaxed);
        Ok(Some(CheckpointTicket {
            _one_at_a_time: guard,
            checkpoint,
        }))
    }

    /// Records the checkpoint (sled must be durable up to its sequence number
    /// by now) and recycles the slots behind it. Records nothing in the
    /// failed state, and a failure to record enters it (whether the new
    /// checkpoint file is durable is then unknown, so no slot may be
    /// recycled on its word).
    pub fn finish_checkpoint(&self, ticket: CheckpointTicket<'_>) -> stdio::Result<()> {
        let cp = ticket.checkpoint;
        // No failure may be recorded between the check and the recording.
        // (Held across no lock: a writer enters the failed state while it
        // holds the writer lock.)
        let not_failed = self.state.hold_off()?;
        let recorded = self.dir.write_checkpoint(&cp.encode());
        drop(not_failed);
        if let Err(e) = recorded {
            self.state.fail("recording a checkpoint", &e);
            return Err(e);
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        // The slots behind a recorded checkpoint hold nothing needed, even if
        // the log fails meanwhile.
        let surplus = {
            let mut w = lock(&self.writer);
            let (behind, live): (Vec<_>, Vec<_>) = std::mem::take(&mut w.in_use)
                .into_iter()
                .partition(|(segment, _)| *segment < cp.segment);
            w.in_use = live;
            w.free.extend(behind.into_iter().map(|(_, s)| s));
            if !w.free.is_empty() {
                self.spare_wanted.store(false, Ordering::Relaxed);
            }
            let keep = self.opts.max_free_slots();
            let mut surplus = Vec::new();
            while w.free.len() > keep {
                if let Some(s) = w.free.pop() {
                    w.all_slots.remove(&s.no);
                    surplus.push(s.no);
                }
            }
            surplus
        };
        // A slot left behind holds nothing needed: it is only disk space.
        for no in surplus {
            if let Err(e) = self.dir.remove_slot(no) {
                self.report("removing a surplus write-ahead log slot", &e);
            }
        }
        Ok(())
    }

    /// Prepares a spare slot when none is free, outside the writer section,
    /// so that a writer moving to a new segment rarely waits for one.
    /// After a failure (a full disk), the next attempt waits a while.
    pub fn prepare_spare(&self) -> stdio::Result<()> {
        if !self.spare_wanted.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Ok(_one) = self.spare.try_lock() else {
            return Ok(());
        };
        if !self.spare_backoff.ready() {
            return Ok(());
        }
        let no = {
            let mut w = lock(&self.writer);
            if !w.free.is_empty() {
                self.spare_wanted.store(false, Ordering::Relaxed);
                return Ok(());
            }
            let no = first_unused(&w.all_slots);
            w.all_slots.insert(no);
            no
        };
        let created = self.dir.create_slot(no, self.opts.segment_size);
        self.spare_backoff.note(&created);
        match created {
            Ok(file) => {
                lock(&self.writer).free.push(Slot { no, file });
                self.spare_wanted.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                lock(&self.writer).all_slots.remove(&no);
                Err(e)
            }
        }
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

/// A committing thread; see [`Wal::enter`].
pub(crate) struct Committing<'a>(&'a Wal);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.in_commit.fetch_sub(1, Ordering::SeqCst);
        self.0.nudge_leader();
    }
}

impl WriterGuard<'_> {
    /// The largest payload [`WriterGuard::append`] accepts.
    pub fn max_payload(&self) -> usize {
        self.wal.opts.max_payload()
    }

    /// The changes logged and not yet in sled: a new change is computed
    /// over sled *and* these.
    pub fn overlay(&self) -> &Overlay {
        &self.wal.overlay
    }

    /// Appends the record of a change and returns its sequence number.
    /// Its writes join the overlay at once (visible to writers; to readers
    /// once durable: after a sync, or at once when syncing is off) and wait
    /// there until a batch applies them to sled.
    ///
    /// Failing to find room (no slot for the next segment: a full disk)
    /// refuses the record and changes nothing; the log goes on. A failed
    /// write of the log enters the failed state.
    pub fn append(&mut self, payload: &[u8], redo: Vec<Redo>) -> stdio::Result<u64> {
        if payload.len() > self.max_payload() {
            return Err(stdio::Error::other(
                "a transaction too large for a write-ahead log segment",
            ));
        }
        let len = (REC_OVERHEAD + payload.len()) as u64;
        if self.w.current.is_none() || self.w.offset + len > self.wal.opts.segment_size {
            self.next_segment()?;
        }
        // From here on the number is used up: a failure stops the log.
        let seq = self.w.next_seq;
        self.w.next_seq += 1;
        match self.write(seq, payload) {
            Ok(()) => {
                let w = &mut *self.w;
                w.appended_seq = seq;
                self.wal.appended.store(seq, Ordering::SeqCst);
                let end = (w.segment, w.offset);
                let len = REC_OVERHEAD + payload.len();
                self.wal.overlay.add(seq, &redo);
                w.pending.push_back(Arc::new(PendingRecord {
                    seq,
                    content_seq: seq,
                    redo,
                    frozen: None,
                    end,
                    len,
                }));
                self.wal.unapplied.fetch_add(len, Ordering::Relaxed);
                self.wal.counters.records.fetch_add(1, Ordering::Relaxed);
                self.wal
                    .counters
                    .bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                if !self.wal.syncing() {
                    self.wal.overlay.set_durable(seq);
                }
                Ok(seq)
            }
            Err(e) => {
                self.wal.state.fail("writing the write-ahead log", &e);
                Err(e)
            }
        }
    }

    /// Writes (or, when syncing, buffers for the group's leader) record
    /// `seq`, which fits the current segment.
    fn write(&mut self, seq: u64, payload: &[u8]) -> stdio::Result<()> {
        let len = (REC_OVERHEAD + payload.len()) as u64;
        let syncing = self.wal.syncing();
        let w = &mut *self.w;
        let Some(slot) = &w.current else {
            return Err(stdio::Error::other("no write-ahead log segment"));
        };
        if syncing {
            // The group's leader writes the bytes, then syncs them.
            match w.unwritten.last_mut() {
                Some(c) if c.slot.no == slot.no && c.at + c.bytes.len() as u64 == w.offset => {
                    format::encode_record(&mut c.bytes, w.epoch, seq, payload);
                }
                _ => {
                    let mut bytes = Vec::with_capacity(4096);
                    format::encode_record(&mut bytes, w.epoch, seq, payload);
                    w.unwritten.push(Chunk {
                        slot: slot.clone(),
                        at: w.offset,
                        bytes,
                    });
                }
            }
        } else {
            for c in std::mem::take(&mut w.unwritten) {
                c.slot.file.write_at(&c.bytes, c.at)?;
            }
            w.buf.clear();
            format::encode_record(&mut w.buf, w.epoch, seq, payload);
            slot.file.write_at(&w.buf, w.offset)?;
        }
        w.offset += len;
        self.wal.since_checkpoint.fetch_add(len, Ordering::Relaxed);
        let slot = slot.clone();
        mark_dirty(&mut w.dirty, slot);
        Ok(())
    }

    /// Moves to the next segment, in a free slot (or a new one). A slot
    /// that cannot be created (a full disk) changes nothing; a failed write
    /// of the new segment's header enters the failed state.
    fn next_segment(&mut self) -> stdio::Result<()> {
        if !self.wal.syncing()
            && let Some(old) = &self.w.current
        {
            // Without group commit records are written at once: the segment
            // left behind is synced before anything reaches the next one
            // (see `write_group`).
            if let Err(e) = old.file.sync() {
                self.wal.state.fail("syncing the write-ahead log", &e);
                return Err(e);
            }
        }
        let w = &mut *self.w;
        let segment = if w.current.is_some() {
            w.segment + 1
        } else {
            w.segment
        };
        let popped = w.free.pop();
        if w.free.is_empty() {
            self.wal.spare_wanted.store(true, Ordering::Relaxed);
        }
        let slot = match popped {
            Some(s) => s,
            None => {
                let no = first_unused(&w.all_slots);
                let file = self.wal.dir.create_slot(no, self.wal.opts.segment_size)?;
                w.all_slots.insert(no);
                Slot { no, file }
            }
        };
        let header = SegmentHeader {
            epoch: w.epoch,
            segment,
        };
        if let Err(e) = slot.file.write_at(&header.encode(), 0) {
            w.free.push(slot);
            self.wal.state.fail("writing the write-ahead log", &e);
            return Err(e);
        }
        w.segment = segment;
        w.offset = SEG_HEADER_LEN as u64;
        w.in_use.push((segment, slot.clone()));
        mark_dirty(&mut w.dirty, slot.clone());
        w.current = Some(slot);
        Ok(())
    }
}

/// A group commit's I/O: one write per run of records, then one sync per
/// file. When the group moves on to a new segment, the earlier segment's
/// file is synced before anything is written to the new one: records of a
/// later segment then never reach the disk while an earlier segment's may
/// still be lost, so a valid record after a missing one always means damage
/// (corruption.rs), never a torn group. On failure: what failed, and how.
fn write_group(chunks: &[Chunk], files: &[Slot]) -> Result<(), (&'static str, stdio::Error)> {
    let write = |e| ("writing the write-ahead log", e);
    let sync = |e| ("syncing the write-ahead log", e);
    let mut synced: Vec<u32> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        if let Some(prev) = i.checked_sub(1).map(|p| &chunks[p].slot)
            && prev.no != c.slot.no
        {
            prev.file.sync().map_err(sync)?;
            synced.push(prev.no);
        }
        c.slot.file.write_at(&c.bytes, c.at).map_err(write)?;
    }
    files
        .iter()
        .filter(|s| !synced.contains(&s.no))
        .try_for_each(|s| s.file.sync())
        .map_err(sync)
}

fn mark_dirty(dirty: &mut Vec<Slot>, slot: Slot) {
    if !dirty.iter().any(|s| s.no == slot.no) {
        dirty.push(slot);
    }
}
