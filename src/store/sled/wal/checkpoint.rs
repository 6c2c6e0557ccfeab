//! Checkpoints: the caller notes where sled stands, makes sled durable, and
//! this records both in the `checkpoint` file and recycles the slots behind.

use std::io as stdio;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::format::Checkpoint;
use super::{Slot, Wal, first_unused, lock};

/// Where a checkpoint stands; see [`Wal::begin_checkpoint`].
pub(crate) struct CheckpointTicket<'a> {
    _one_at_a_time: MutexGuard<'a, ()>,
    checkpoint: Checkpoint,
}

impl Wal {
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
}
