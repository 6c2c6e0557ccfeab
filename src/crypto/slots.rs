//! Hashing slots: at most `limit` password hashes (argon2 or bcrypt) run at
//! once in a store, each with argon2 memory from a pool of `limit` buffers.
//!
//! This bounds both the CPU given to hashing and its memory (a default
//! argon2id hash takes 19 MiB): a flood of logins queues here instead of
//! allocating without limit, and the buffers are reused (allocating and
//! faulting in 19 MiB is a measurable part of a hash).
//!
//! An async transport should not park many blocking threads here: it waits
//! for an admission asynchronously (two per slot), hands the request and
//! the admission to a blocking thread with [`admit`], and the admission is
//! given back as soon as that thread's first hash is done, so that the
//! request's later wait for its disk sync holds nothing (see `http`). Two
//! per slot, so that a request can do the durable commit before its hash
//! (a login's reservation) while the slots hash for others, instead of the
//! slots idling through that commit's sync: at most `limit` admitted
//! requests wait here at once, and memory stays bounded by the slots.
//! (HTTP bench, 2 cores, logins from 4 connections: 0.90x the argon2 limit
//! with one admission per slot, 0.92x and 0.94x with two; syncs per
//! password update from 8 connections 0.64 vs 0.37 and 0.52.)

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use argon2::Block;

pub(crate) struct HashSlots {
    limit: usize,
    /// Two permits per slot, for async callers to wait on before they take
    /// a blocking thread (see [`admit`] and the module's notes).
    #[cfg(feature = "tokio")]
    admission: std::sync::Arc<tokio::sync::Semaphore>,
    /// Idle slots, each with the argon2 memory it kept (empty until used).
    free: Mutex<Vec<Vec<Block>>>,
    freed: Condvar,
    waits: AtomicU64,
}

/// A slot held for one hash; given back on drop.
pub(crate) struct Slot<'a> {
    slots: &'a HashSlots,
    blocks: Vec<Block>,
}

impl HashSlots {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            free: Mutex::new((0..limit).map(|_| Vec::new()).collect()),
            freed: Condvar::new(),
            waits: AtomicU64::new(0),
            #[cfg(feature = "tokio")]
            admission: std::sync::Arc::new(tokio::sync::Semaphore::new(2 * limit)),
        }
    }

    /// The async admission: two permits per slot.
    #[cfg(feature = "tokio")]
    pub fn admission(&self) -> &std::sync::Arc<tokio::sync::Semaphore> {
        &self.admission
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a free slot.
    pub fn take(&self) -> Slot<'_> {
        let mut free = self.lock();
        if free.is_empty() {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            if let Some(blocks) = free.pop() {
                return Slot {
                    slots: self,
                    blocks,
                };
            }
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// How many hashes may run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many times a hash had to wait for a slot.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

impl Slot<'_> {
    /// `count` blocks of argon2 memory. Kept for the next hash when no
    /// bigger than `keep` blocks (the store's own parameters); a legacy
    /// hash asking for more gets memory of its own, freed after it.
    pub fn with_blocks<R>(
        &mut self,
        count: usize,
        keep: usize,
        f: impl FnOnce(&mut [Block]) -> R,
    ) -> R {
        if count > keep {
            return f(&mut vec![Block::default(); count]);
        }
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::default());
        }
        f(&mut self.blocks[..count])
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        self.slots.lock().push(blocks);
        self.slots.freed.notify_one();
        // This thread's hash is done: its admission goes back at once.
        ADMISSION.with(|a| a.borrow_mut().take());
    }
}

thread_local! {
    static ADMISSION: RefCell<Option<Box<dyn Send>>> = const { RefCell::new(None) };
}

/// Runs `f` (a request on a blocking thread) holding `admission` (e.g. an
/// async semaphore's permit) until the first password hash on this thread
/// is done, or until `f` returns if it hashes nothing.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub fn admit<R>(admission: Box<dyn Send>, f: impl FnOnce() -> R) -> R {
    ADMISSION.with(|a| *a.borrow_mut() = Some(admission));
    let out = f();
    ADMISSION.with(|a| a.borrow_mut().take());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn at_most_limit_slots_are_held_at_once() {
        let slots = Arc::new(HashSlots::new(2));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, now, most) = (slots.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    let mut slot = slots.take();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    slot.with_blocks(4, 8, |b| b.len());
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(slots.waits() > 0);
        // The memory was kept: two buffers of 4 blocks, no more.
        let free = slots.lock();
        assert_eq!(free.len(), 2);
        assert!(free.iter().all(|b| b.len() <= 4));
    }

    #[test]
    fn an_admission_goes_back_after_the_first_hash() {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let slots = HashSlots::new(1);
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        admit(Box::new(Flag(dropped.clone())), || {
            assert!(!dropped.load(Ordering::SeqCst));
            drop(slots.take());
            // Released before the request goes on (to its commit, say).
            assert!(dropped.load(Ordering::SeqCst));
        });
        // A request that hashes nothing gives it back when it returns.
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        admit(Box::new(Flag(dropped.clone())), || {});
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn oversized_requests_do_not_grow_the_pool() {
        let slots = HashSlots::new(1);
        {
            let mut s = slots.take();
            assert_eq!(s.with_blocks(100, 8, |b| b.len()), 100);
        }
        assert!(slots.lock()[0].is_empty());
    }
}
