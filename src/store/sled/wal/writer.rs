//! The writer section: a change is computed and its record appended under
//! one lock, so that the log order is the order in which changes build on
//! each other; and [`Wal::commit`], the commit protocol in one place.

use std::io as stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::format::{self, REC_OVERHEAD, SEG_HEADER_LEN, SegmentHeader};
use super::{Chunk, PendingRecord, Slot, Wal, Writer, first_unused, lock};
use crate::store::sled::overlay::Overlay;
use crate::store::sled::tx::Redo;

/// The writer section: hold it across computing a change and
/// [`WriterGuard::append`]ing its record.
pub(crate) struct WriterGuard<'a> {
    wal: &'a Wal,
    w: MutexGuard<'a, Writer>,
}

impl Wal {
    /// Enters the writer section; fails when the log failed earlier.
    pub(super) fn writer(&self) -> stdio::Result<WriterGuard<'_>> {
        let w = lock(&self.writer);
        self.check()?;
        Ok(WriterGuard { wal: self, w })
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

fn mark_dirty(dirty: &mut Vec<Slot>, slot: Slot) {
    if !dirty.iter().any(|s| s.no == slot.no) {
        dirty.push(slot);
    }
}

/// Why [`Wal::commit`] logged nothing, or does not know that it did.
pub(crate) enum CommitError<E> {
    /// The body failed: nothing was logged.
    Body(E),
    /// `what` failed with the error: the log refused the record (nothing
    /// logged), failed writing it (the failed state), or failed syncing it
    /// (whether the record survives a reopen is unknown).
    Log(&'static str, stdio::Error),
}

/// What a commit's body hands over to be logged: the record's payload and
/// its redo set (the writes, for the overlay and later for sled).
pub(crate) type Record = (Vec<u8>, Vec<Redo>);

impl Wal {
    /// The commit protocol, every step in the order the rules of this module
    /// require (the only caller of the steps):
    ///
    /// 1. the thread counts as committing ([`Wal::enter`]) from before it
    ///    enters the writer section until its record is durable, so that a
    ///    gathering leader waits for its record;
    /// 2. the writer section is entered ([`Wal::writer`]; refused in the
    ///    failed state);
    /// 3. `body` computes the change over sled *and* the overlay (the
    ///    changes logged but not yet in sled), given the largest payload a
    ///    record may have, and returns its record, or `None` when it changed
    ///    nothing (then nothing is logged);
    /// 4. the record is appended under the same lock
    ///    ([`WriterGuard::append`]): the log order is the order in which
    ///    changes build on each other. The section is left and a gathering
    ///    leader nudged;
    /// 5. when syncing, the call waits until the record is durable
    ///    ([`Wal::wait_durable`]: group commit).
    ///
    /// Returns the record's sequence number once it is durable.
    pub fn commit<E>(
        &self,
        body: impl FnOnce(&Overlay, usize) -> Result<Option<Record>, E>,
    ) -> Result<Option<u64>, CommitError<E>> {
        let committing = self.enter();
        let mut writer = self
            .writer()
            .map_err(|e| CommitError::Log("committing a transaction", e))?;
        let Some((payload, redo)) =
            body(writer.overlay(), writer.max_payload()).map_err(CommitError::Body)?
        else {
            return Ok(None);
        };
        // A refusal here (no room for the record: a full disk) changes nothing.
        let seq = writer
            .append(&payload, redo)
            .map_err(|e| CommitError::Log("writing the write-ahead log", e))?;
        drop(writer);
        self.nudge_leader();
        if self.deferred_here().is_some() {
            // Deferred (`deferred.rs`): the caller waits for the sync.
            self.note_deferred(seq);
        } else if self.syncing() {
            // A failed sync leaves the record's fate unknown: it may or may
            // not be found when the store is reopened.
            self.wait_durable(seq).map_err(|e| {
                CommitError::Log(
                    "syncing the write-ahead log (whether this change survives a reopen is unknown)",
                    e,
                )
            })?;
        }
        drop(committing);
        Ok(Some(seq))
    }
}
