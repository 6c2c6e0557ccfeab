//! Group commit: a committer waits until its record is synced; the first
//! waiter leads, lets every committing thread append first ([`Wal::gather`]),
//! writes and syncs what was appended holding no lock, and wakes the others.
//!
//! With a commit delay ([`super::WalOptions::commit_delay`]), a leader
//! whose own commit was announced ([`Wal::expect_commit`]: a password
//! change, whose hash took milliseconds already) also waits, up to that
//! delay, while more announced commits have not begun than hashes can run
//! at once ([`super::WalOptions::delay_beyond`]: some wait for a hashing
//! slot, so the CPU keeps hashing during the wait) — PostgreSQL's
//! `commit_delay`, but waiting only when commits are known to be coming and
//! only on behalf of commits that announced themselves: a lone writer never
//! waits, and a commit that did not announce itself (a write that hashes
//! nothing) is never held by the delay: while one is committing, the
//! leader syncs at once.

use std::cell::Cell;
use std::io as stdio;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Chunk, Slot, Wal, lock};

/// The longest a group commit's leader waits for writers about to append.
const GATHER_LIMIT: Duration = Duration::from_micros(200);

/// Group commit's state, beside the durable sequence number (the
/// overlay's, raised under this lock while syncing).
pub(super) struct Group {
    /// A leader is syncing right now.
    pub(super) leader: bool,
}

/// A committing thread; see [`Wal::enter`]. `patient`: it announced its
/// commit ([`Wal::expect_commit`]), and may wait for other announced ones.
pub(crate) struct Committing<'a> {
    wal: &'a Wal,
    patient: bool,
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        if !self.patient {
            self.wal.impatient.fetch_sub(1, Ordering::SeqCst);
        }
        self.wal.in_commit.fetch_sub(1, Ordering::SeqCst);
        self.wal.nudge_leader();
    }
}

thread_local! {
    /// The log (its address) this thread announced a commit to and has not
    /// begun committing to yet; 0: none.
    static EXPECTING: Cell<usize> = const { Cell::new(0) };
}

/// Whether the calling thread announced a commit it has not begun (tests:
/// the operations that hash a new password announce their commit first).
#[cfg(test)]
pub(crate) fn announced_here() -> bool {
    EXPECTING.with(|e| e.get() != 0)
}

/// A commit announced by [`Wal::expect_commit`]: withdrawn on drop unless
/// the thread began committing meanwhile ([`Wal::enter`] takes it over).
pub(crate) struct Expectation<'a>(&'a Wal);

impl crate::store::backend::Expected for Expectation<'_> {}

impl Drop for Expectation<'_> {
    fn drop(&mut self) {
        if self.0.take_expectation() {
            self.0.nudge_leader();
        }
    }
}

impl Wal {
    /// Marks the calling thread as committing until the returned value is
    /// dropped: from before it enters the writer section until its record
    /// is durable. A group's leader waits for such threads to append.
    pub(super) fn enter(&self) -> Committing<'_> {
        self.in_commit.fetch_add(1, Ordering::SeqCst);
        // Counted as committing first, so that a gathering leader never
        // sees this thread as neither expected nor committing.
        let patient = self.take_expectation();
        if !patient {
            self.impatient.fetch_add(1, Ordering::SeqCst);
            // A leader waiting for announced commits stops: this commit
            // is not to be held (it then gathers as without a delay).
            if self.leader_delaying.load(Ordering::SeqCst) {
                let _g = lock(&self.gathering);
                self.gathered_cv.notify_one();
            }
        }
        Committing { wal: self, patient }
    }

    /// Announces that the calling thread will commit soon: until it begins
    /// (or drops the value), a group commit's leader waits for it, up to
    /// the commit delay. `None` without a commit delay, or when the thread
    /// announced one already.
    pub(crate) fn expect_commit(&self) -> Option<Expectation<'_>> {
        if self.opts.commit_delay.is_zero() {
            return None;
        }
        let me = self as *const Wal as usize;
        let fresh = EXPECTING.with(|e| {
            let fresh = e.get() == 0;
            if fresh {
                e.set(me);
            }
            fresh
        });
        if !fresh {
            return None;
        }
        self.expected.fetch_add(1, Ordering::SeqCst);
        Some(Expectation(self))
    }

    /// Ends this thread's announcement to this log, if any; whether it did.
    fn take_expectation(&self) -> bool {
        let me = self as *const Wal as usize;
        let mine = EXPECTING.with(|e| {
            let mine = e.get() == me;
            if mine {
                e.set(0);
            }
            mine
        });
        if mine {
            self.expected.fetch_sub(1, Ordering::SeqCst);
        }
        mine
    }

    /// Returns once record `seq` is durable, as the group's leader when no
    /// one else is: the leader syncs every file written since the last sync
    /// (holding no lock, so that writers keep appending meanwhile), then
    /// publishes the highest record it covered and wakes the others.
    pub(super) fn wait_durable(&self, seq: u64) -> stdio::Result<()> {
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
    /// threads wait for this sync already (one writer: always). While more
    /// commits are expected than hashes can run at once (some wait for a
    /// hashing slot: the CPU stays busy hashing meanwhile) and every
    /// committing thread announced its commit (the leader too), waits up to
    /// the commit delay instead; once a commit that was not announced is
    /// underway, or the expected ones are no more than the hashes running,
    /// gathers as without a delay.
    fn gather(&self) {
        let start = Instant::now();
        let mut short = start + GATHER_LIMIT;
        let long = start + self.opts.commit_delay.max(GATHER_LIMIT);
        let mut g = lock(&self.gathering);
        self.leader_gathering.store(true, Ordering::SeqCst);
        let mut delayed = false;
        loop {
            let mut expecting = self.expected.load(Ordering::SeqCst) > self.opts.delay_beyond;
            if expecting {
                // Raised before `impatient` is read: a commit that begins
                // now either is counted there or sees the flag and wakes
                // this leader (`enter`), so none is held for the delay.
                self.leader_delaying.store(true, Ordering::SeqCst);
                expecting = self.impatient.load(Ordering::SeqCst) == 0 && !self.deferred_waiting();
            }
            if delayed && !expecting {
                // The delay ended early: the usual gathering from now on.
                short = Instant::now() + GATHER_LIMIT;
            }
            delayed = expecting;
            self.leader_delaying.store(expecting, Ordering::SeqCst);
            if !expecting && self.gathered() {
                break;
            }
            let deadline = if expecting { long } else { short };
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
        self.leader_delaying.store(false, Ordering::SeqCst);
        self.leader_gathering.store(false, Ordering::SeqCst);
        drop(g);
    }

    /// Every committing thread has a record waiting for the next sync, and
    /// no thread runs deferring code that has not appended yet.
    pub(super) fn gathered(&self) -> bool {
        let committing = self.in_commit.load(Ordering::SeqCst) as u64;
        let waiting = self
            .appended
            .load(Ordering::SeqCst)
            .saturating_sub(self.overlay.durable());
        waiting >= committing && self.deferring_unlogged.load(Ordering::SeqCst) == 0
    }

    /// Wakes a gathering leader once [`Wal::gathered`] holds (after an
    /// append, when a thread stops committing, and when an expected commit
    /// is withdrawn); it then checks what it waits for again.
    pub(super) fn nudge_leader(&self) {
        if self.leader_gathering.load(Ordering::SeqCst) && self.gathered() {
            let _g = lock(&self.gathering);
            self.gathered_cv.notify_one();
        }
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
