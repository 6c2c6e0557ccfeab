//! Hashing slots: at most `limit` password hashes (argon2 or bcrypt) run at
//! once in a store, each on one of `limit` hashing threads of the store's
//! own, with the argon2 memory that thread keeps.
//!
//! This bounds both the CPU given to hashing and its memory (a default
//! argon2id hash takes 19 MiB): a flood of logins queues here instead of
//! allocating without limit, and the buffers are reused (allocating and
//! faulting in 19 MiB is a measurable part of a hash).
//!
//! Why threads of its own, rather than hashing on the caller's thread under
//! a counted lock: a caller's thread hashes, then commits and sleeps
//! through its disk sync, and the thread woken for the next hash is often
//! placed on a CPU that is still busy while the other one falls idle; the
//! scheduler moves it only after a few milliseconds. `perf sched timehist`
//! during password updates from 8 connections on 2 cores showed one CPU
//! idle 7% of the time while both hashes took turns on the other, though
//! both slots were always held (0.91x the rate of 2 hashes at once). A
//! hashing thread takes the next queued hash without sleeping, so the
//! scheduler keeps the busy hashing threads apart. The caller hands its
//! inputs over (copies, zeroized after) and sleeps until the output
//! comes back: two thread switches, microseconds against a hash's ~13 ms.
//! The threads start with the first hashes and end with the store.
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
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};

use argon2::Block;

/// A hash to run on a hashing thread, with that thread's argon2 memory; it
/// returns the delivery of its result, which the thread makes once its own
/// bookkeeping is done.
type Job = Box<dyn FnOnce(&mut Vec<Block>) -> Deliver + Send>;
type Deliver = Box<dyn FnOnce() + Send>;

pub(crate) struct HashSlots {
    limit: usize,
    /// Two permits per slot, for async callers to wait on before they take
    /// a blocking thread (see [`admit`] and the module's notes).
    #[cfg(feature = "tokio")]
    admission: std::sync::Arc<tokio::sync::Semaphore>,
    shared: Arc<Shared>,
    waits: AtomicU64,
    /// Tests: starting a hashing thread fails.
    #[cfg(test)]
    refuse_threads: std::sync::atomic::AtomicBool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, or when the slots close.
    queued: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Hashing threads started (at most `limit`).
    threads: usize,
    /// Hashing threads waiting for a job (or woken, not yet running).
    idle: usize,
    /// Of those, how many a caller has woken already: a caller that finds
    /// every idle thread woken starts another thread (up to `limit`)
    /// rather than count on one of them.
    woken: usize,
    /// Jobs being hashed now (a test's view of the bound).
    running: usize,
    /// The store is gone: the threads end.
    closed: bool,
    /// The argon2 memory each thread keeps, in blocks (a test's view).
    #[cfg(test)]
    kept: Vec<usize>,
}

impl HashSlots {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                queued: Condvar::new(),
            }),
            waits: AtomicU64::new(0),
            #[cfg(test)]
            refuse_threads: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "tokio")]
            admission: std::sync::Arc::new(tokio::sync::Semaphore::new(2 * limit)),
        }
    }

    /// The async admission: two permits per slot.
    #[cfg(feature = "tokio")]
    pub fn admission(&self) -> &std::sync::Arc<tokio::sync::Semaphore> {
        &self.admission
    }

    /// Runs `job` on a hashing thread (waiting for one to be free), with
    /// that thread's argon2 memory, and returns its result. A panic in the
    /// job comes back as `Err` (the thread lives on). Then gives back this
    /// thread's admission ([`admit`]): its hash is done.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> R + Send + 'static,
    ) -> std::thread::Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |blocks: &mut Vec<Block>| {
            let out = catch_unwind(AssertUnwindSafe(|| job(blocks)));
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        let inline = {
            let mut q = self.shared.lock();
            // Every slot is taken by a hash running or queued before this one.
            if q.running + q.jobs.len() >= self.limit {
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            q.jobs.push_back(job);
            if q.idle > q.woken {
                q.woken += 1;
                self.shared.queued.notify_one();
                None
            } else if q.threads < self.limit {
                match self.spawn(q.threads) {
                    Ok(()) => {
                        q.threads += 1;
                        None
                    }
                    // No thread could be started and none runs: this one
                    // hashes (with memory of its own).
                    Err(_) if q.threads == 0 => q.jobs.pop_back(),
                    Err(_) => None,
                }
            } else {
                None
            }
        };
        if let Some(job) = inline {
            job(&mut Vec::new())();
        }
        let out = rx
            .recv()
            .unwrap_or_else(|_| Err(Box::new("the hashing thread ended")));
        // This thread's hash is done: its admission goes back at once.
        ADMISSION.with(|a| a.borrow_mut().take());
        out
    }

    fn spawn(&self, n: usize) -> std::io::Result<()> {
        #[cfg(test)]
        if self.refuse_threads.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("no thread (test)"));
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name(format!("credstore-hash-{n}"))
            .spawn(move || shared.work(n))
            .map(drop)
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

impl Drop for HashSlots {
    fn drop(&mut self) {
        // No job is queued: each `run` borrows the slots until its answer.
        self.shared.lock().closed = true;
        self.shared.queued.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hashing thread: takes the queued jobs one after the other, and
    /// sleeps only when there is none.
    fn work(&self, #[cfg_attr(not(test), allow(unused_variables))] n: usize) {
        let mut blocks = Vec::new();
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                q.running += 1;
                drop(q);
                let deliver = job(&mut blocks);
                q = self.lock();
                q.running -= 1;
                #[cfg(test)]
                {
                    if q.kept.len() <= n {
                        q.kept.resize(n + 1, 0);
                    }
                    q.kept[n] = blocks.len();
                }
                drop(q);
                deliver();
                q = self.lock();
                continue;
            }
            if q.closed {
                return;
            }
            q.idle += 1;
            q = self.queued.wait(q).unwrap_or_else(PoisonError::into_inner);
            q.idle -= 1;
            // (A spurious wake-up takes one too: at worst a later caller
            // wakes a thread more than needed.)
            q.woken = q.woken.saturating_sub(1);
        }
    }
}

/// `count` blocks of argon2 memory from `kept` (a hashing thread's),
/// which keeps them for the next hash when no bigger than `keep` blocks
/// (the store's own parameters); a legacy hash asking for more gets memory
/// of its own, freed after it.
pub(crate) fn with_blocks<R>(
    kept: &mut Vec<Block>,
    count: usize,
    keep: usize,
    f: impl FnOnce(&mut [Block]) -> R,
) -> R {
    if count > keep {
        return f(&mut vec![Block::default(); count]);
    }
    if kept.len() < count {
        kept.resize(count, Block::default());
    }
    f(&mut kept[..count])
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
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::{Duration, Instant};

    #[test]
    fn at_most_limit_hashes_run_at_once_each_thread_keeping_its_memory() {
        assert_eq!(HashSlots::new(0).limit(), 1, "at least one slot");
        let slots = Arc::new(HashSlots::new(2));
        assert_eq!(slots.limit(), 2);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (slots, now, most) = (slots.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    slots
                        .run(move |kept| {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            let len = with_blocks(kept, 4, 8, |b| b.len());
                            std::thread::sleep(Duration::from_millis(20));
                            now.fetch_sub(1, Ordering::SeqCst);
                            (len, std::thread::current().name().map(str::to_owned))
                        })
                        .unwrap()
                })
            })
            .collect();
        let ran: Vec<_> = callers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert!(slots.waits() > 0);
        // On the store's hashing threads, two of them, not the callers'.
        assert!(ran.iter().all(|(len, _)| *len == 4));
        let mut names: Vec<_> = ran.into_iter().map(|(_, n)| n.unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names, ["credstore-hash-0", "credstore-hash-1"]);
        // The memory was kept: two buffers of 4 blocks, no more.
        let q = slots.shared.lock();
        assert_eq!((q.threads, q.running), (2, 0));
        assert_eq!(q.kept, [4, 4]);
    }

    #[test]
    fn a_hash_waits_only_when_every_hashing_thread_is_busy() {
        let slots = HashSlots::new(1);
        // The first hash starts the thread; the next finds it idle.
        assert_eq!(slots.run(|_| 1).unwrap(), 1);
        assert_eq!(slots.run(|_| 2).unwrap(), 2);
        assert_eq!(slots.waits(), 0);
        let (release, held) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let first = s.spawn(|| slots.run(move |_| held.recv().is_ok()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while slots.shared.lock().running == 0 {
                assert!(Instant::now() < deadline, "the first hash never started");
                std::thread::sleep(Duration::from_millis(1));
            }
            let second = s.spawn(|| slots.run(|_| 3));
            while slots.waits() == 0 {
                assert!(Instant::now() < deadline, "the second hash did not wait");
                std::thread::sleep(Duration::from_millis(1));
            }
            release.send(()).unwrap();
            assert!(first.join().unwrap().unwrap());
            assert_eq!(second.join().unwrap().unwrap(), 3);
        });
        assert_eq!(slots.waits(), 1);
        assert_eq!(slots.shared.lock().threads, 1);
    }

    #[test]
    fn without_a_hashing_thread_the_caller_hashes_and_with_one_it_waits_for_it() {
        let name = || std::thread::current().name().map(str::to_owned);
        let slots = HashSlots::new(2);
        slots.refuse_threads.store(true, Ordering::SeqCst);
        // No thread could start and none runs: the caller's thread hashes.
        let here = name();
        assert_eq!(slots.run(move |_| name()).unwrap(), here);
        assert_eq!(slots.shared.lock().threads, 0);
        // One thread runs: a hash that finds it busy and cannot start a
        // second one waits for it, not on the caller's thread.
        slots.refuse_threads.store(false, Ordering::SeqCst);
        let (release, held) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let first = s.spawn(|| slots.run(move |_| (held.recv().is_ok(), name())));
            let deadline = Instant::now() + Duration::from_secs(10);
            while slots.shared.lock().running == 0 {
                assert!(Instant::now() < deadline, "the first hash never started");
                std::thread::sleep(Duration::from_millis(1));
            }
            slots.refuse_threads.store(true, Ordering::SeqCst);
            let second = s.spawn(|| slots.run(move |_| name()));
            while slots.shared.lock().jobs.is_empty() {
                assert!(Instant::now() < deadline, "the second hash was not queued");
                std::thread::sleep(Duration::from_millis(1));
            }
            release.send(()).unwrap();
            let thread = Some("credstore-hash-0".to_owned());
            assert_eq!(first.join().unwrap().unwrap(), (true, thread.clone()));
            assert_eq!(second.join().unwrap().unwrap(), thread);
        });
        assert_eq!(slots.shared.lock().threads, 1);
    }

    #[test]
    fn an_admission_goes_back_after_the_first_hash() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let slots = HashSlots::new(1);
        let dropped = Arc::new(AtomicBool::new(false));
        admit(Box::new(Flag(dropped.clone())), || {
            let seen = dropped.clone();
            // Held while the hash runs (on the hashing thread)...
            assert!(!slots.run(move |_| seen.load(Ordering::SeqCst)).unwrap());
            // ...and released before the request goes on (to its commit, say).
            assert!(dropped.load(Ordering::SeqCst));
        });
        // A request that hashes nothing gives it back when it returns.
        let dropped = Arc::new(AtomicBool::new(false));
        admit(Box::new(Flag(dropped.clone())), || {});
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn oversized_requests_do_not_grow_the_kept_memory() {
        let slots = HashSlots::new(1);
        assert_eq!(
            slots
                .run(|kept| with_blocks(kept, 100, 8, |b| b.len()))
                .unwrap(),
            100
        );
        assert_eq!(slots.shared.lock().kept, [0]);
        assert_eq!(
            slots
                .run(|kept| with_blocks(kept, 8, 8, |b| b.len()))
                .unwrap(),
            8
        );
        assert_eq!(slots.shared.lock().kept, [8]);
    }

    #[test]
    fn a_panicking_hash_is_an_error_and_its_thread_lives_on() {
        let slots = HashSlots::new(1);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = slots.run(|_| -> u32 { panic!("in a hash") });
        std::panic::set_hook(hook);
        assert!(out.is_err());
        assert_eq!(slots.run(|_| 7).unwrap(), 7);
        assert_eq!(slots.shared.lock().threads, 1);
    }

    #[test]
    fn the_hashing_threads_end_with_the_slots() {
        let slots = HashSlots::new(3);
        // One thread started, then idle, then woken for a second hash...
        assert_eq!(slots.run(|_| 1).unwrap(), 1);
        assert_eq!(slots.run(|_| 2).unwrap(), 2);
        // ...and three hashes that can only end together: on three threads,
        // though the first one's thread may be woken and not yet running.
        let all = Arc::new(std::sync::Barrier::new(3));
        std::thread::scope(|s| {
            let callers: Vec<_> = (0..3)
                .map(|_| {
                    let all = all.clone();
                    s.spawn(|| slots.run(move |_| all.wait().is_leader()))
                })
                .collect();
            assert!(callers.into_iter().all(|c| c.join().unwrap().is_ok()));
        });
        assert_eq!(slots.shared.lock().threads, 3);
        let shared = Arc::downgrade(&slots.shared);
        assert!(
            shared.strong_count() > 1,
            "a hashing thread holds the queue"
        );
        drop(slots);
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.strong_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            shared.strong_count(),
            0,
            "a hashing thread outlived its store"
        );
    }
}
