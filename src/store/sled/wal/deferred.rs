//! Deferred durability: commits that return once their record is appended,
//! and a caller that waits for the sync elsewhere.
//!
//! A thread that runs code inside [`Wal::deferring`] commits as usual (the
//! writer section, the record appended in log order) but does not wait for
//! the group commit: the call tells it the last record it appended, and the
//! caller holds back every effect visible outside the process (the HTTP
//! answer) until [`Wal::sync_appended`], run by another thread, has made that
//! record durable. So an async server answers a write that hashes nothing
//! from its worker thread and awaits the sync without parking a thread per
//! request; one thread syncs for all of them.
//!
//! What holds while deferring, on the deferring thread:
//! - its reads see its own records (and those before them) at once, durable
//!   or not: it reads what its commits computed over, so an operation that
//!   commits and then reads behaves as it would have after a durable commit;
//!   other threads see nothing before the sync, as always;
//! - nothing after its commits is housekeeping's: applying to sled,
//!   checkpoints and spare segments (blocking I/O) are left to the syncing
//!   thread;
//! - a deferred record that waits for a sync is never held by the commit
//!   delay ([`Wal::gather`] treats it as a commit that announced nothing).

// Used by the async transports only (features `tokio` and `server`).
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::cell::Cell;
use std::io as stdio;
use std::sync::atomic::Ordering;

use super::Wal;

thread_local! {
    /// The log (its address) this thread defers its commits to (0: none),
    /// and the last record it appended meanwhile (0: none).
    static DEFERRING: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

/// Ends a thread's deferring on drop (also when its code panics).
struct Restore<'a> {
    wal: &'a Wal,
    before: (usize, u64),
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let (_, last) = DEFERRING.with(|d| d.replace(self.before));
        if last == 0 {
            // It appended nothing: a gathering leader waits for it no more.
            self.wal.deferring_unlogged.fetch_sub(1, Ordering::SeqCst);
            self.wal.nudge_leader();
        }
    }
}

impl Wal {
    /// Runs `f` with this thread's commits to this log deferred (see the
    /// module's doc); returns its result and the last record it appended
    /// (0: none). Without syncing, or when the thread defers already, `f`
    /// runs as usual and 0 is returned.
    pub(crate) fn deferring<R>(&self, f: impl FnOnce() -> R) -> (R, u64) {
        let me = self as *const Wal as usize;
        if !self.syncing() || DEFERRING.with(|d| d.get().0 != 0) {
            return (f(), 0);
        }
        self.deferring_unlogged.fetch_add(1, Ordering::SeqCst);
        let restore = Restore {
            wal: self,
            before: DEFERRING.with(|d| d.replace((me, 0))),
        };
        let out = f();
        let (_, last) = DEFERRING.with(Cell::get);
        drop(restore);
        (out, last)
    }

    /// The last record this thread appended while deferring to this log:
    /// `Some(0)` before its first; `None` when it does not defer.
    pub(crate) fn deferred_here(&self) -> Option<u64> {
        let me = self as *const Wal as usize;
        let (wal, last) = DEFERRING.with(Cell::get);
        (wal == me).then_some(last)
    }

    /// A deferred commit appended record `seq`: the thread's last, and one
    /// that a gathering leader must not hold back.
    pub(super) fn note_deferred(&self, seq: u64) {
        let first = DEFERRING.with(|d| {
            let (wal, last) = d.get();
            d.set((wal, last.max(seq)));
            last == 0
        });
        self.deferred_max.fetch_max(seq, Ordering::SeqCst);
        if first {
            self.deferring_unlogged.fetch_sub(1, Ordering::SeqCst);
            self.nudge_leader();
        }
    }

    /// Whether a deferred record waits for a sync.
    pub(super) fn deferred_waiting(&self) -> bool {
        self.deferred_max.load(Ordering::SeqCst) > self.overlay.durable()
    }

    /// The newest record a reader on this thread may see: the durable ones,
    /// and while deferring, its own (and those before them).
    pub(crate) fn visible(&self) -> u64 {
        let durable = self.overlay.durable();
        self.deferred_here()
            .map_or(durable, |last| durable.max(last))
    }

    /// The last record appended.
    pub(crate) fn appended_seq(&self) -> u64 {
        self.appended.load(Ordering::SeqCst)
    }

    /// Whether a commit's housekeeping is due: applying records to sled, a
    /// checkpoint, or a spare segment to prepare.
    pub(crate) fn housekeeping_due(&self) -> bool {
        !self.is_failed()
            && (self.apply_due()
                || self.checkpoint_due()
                || self.spare_wanted.load(Ordering::Relaxed))
    }

    /// Makes every record appended so far durable (as a group commit's
    /// leader, or waiting for the one syncing); returns the last durable
    /// record. Fails in the failed state, and when the sync fails.
    pub(crate) fn sync_appended(&self) -> stdio::Result<u64> {
        let target = self.appended_seq();
        if self.syncing() && target > self.overlay.durable() {
            self.wait_durable(target)?;
        }
        Ok(self.overlay.durable())
    }
}
