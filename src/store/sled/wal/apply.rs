//! Applying to sled: durable records reach sled later, in batches, one
//! sled transaction per batch; until then their changes live in the overlay.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{PendingRecord, Wal, lock};
use crate::store::sled::tx::Redo;

/// Log bytes waiting to be applied to sled before a committer applies them
/// (one sled transaction per batch).
const APPLY_BYTES: usize = 256 << 10;

impl Wal {
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
}
