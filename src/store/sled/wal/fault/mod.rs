//! A WAL directory in memory that remembers which bytes were synced, so that
//! tests can freeze it at a simulated crash (as redb's crash tests freeze a
//! backend) and lose, tear or corrupt what the OS might have lost.
//!
//! It can also fail one chosen write or sync ([`Faults`], in the spirit of
//! SQLite's I/O-error tests), the way Linux does: a failed write may have
//! written part of its bytes; after a failed sync the dirty pages are gone
//! for good, and a later sync of the file "succeeds" without making them
//! durable (fsyncgate). [`FaultyData`] does the same for sled's files at a
//! checkpoint, keeping sled's contents as of its last good sync for a crash.

mod data;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::format::{SEG_HEADER_LEN, SegmentHeader};
use super::io::{WalDir, WalFile};
pub(crate) use data::{FaultyData, open_faulty};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An I/O operation that [`Faults`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A write of a WAL slot (records or a segment header).
    WalWrite,
    /// An `fdatasync` of a WAL slot.
    WalSync,
    /// Creating a WAL slot (zero-filled, synced).
    CreateSlot,
    /// Deleting a surplus WAL slot.
    RemoveSlot,
    /// Replacing the checkpoint file.
    WriteCheckpoint,
    /// sled's flush at a checkpoint (writes its files).
    DataFlush,
    /// The sync of sled's files at a checkpoint.
    DataSync,
}

/// Counts the I/O operations of a [`MemDir`] and a [`FaultyData`] and
/// fails the one armed, once.
#[derive(Clone, Default)]
pub(crate) struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    ops: AtomicU64,
    /// 1 + the index of the operation to fail; 0: none.
    armed: AtomicU64,
    fired: Mutex<Option<Fired>>,
    /// Each sync of a log file takes this long (microseconds), like a disk.
    sync_micros: AtomicU64,
    /// Fails the next operation of this kind, once.
    next_of: Mutex<Option<Op>>,
}

/// The operation that failed, and the checkpoint file as it stood then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fired {
    pub op: Op,
    pub checkpoint: Option<Vec<u8>>,
}

impl Faults {
    /// Operations counted so far.
    pub fn count(&self) -> u64 {
        self.0.ops.load(Ordering::SeqCst)
    }

    /// Fails the operation `n` operations from now (0: the next one).
    pub fn arm(&self, n: u64) {
        self.0.armed.store(self.count() + n + 1, Ordering::SeqCst);
    }

    /// Fails the next operation of kind `op`, once (what runs in the
    /// background meanwhile does not move it, as it moves [`Faults::arm`]).
    pub fn fail_next(&self, op: Op) {
        *lock(&self.0.next_of) = Some(op);
    }

    /// Makes every sync of a log file take `d` (a slow disk).
    pub fn slow_syncs(&self, d: std::time::Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.sync_micros.store(micros, Ordering::SeqCst);
    }

    /// The failed operation, once it failed.
    pub fn fired(&self) -> Option<Fired> {
        lock(&self.0.fired).clone()
    }

    /// Counts `op`: `true` when it must fail (`dir`: where the checkpoint
    /// file stands at that moment).
    fn hit(&self, op: Op, dir: &MemDir) -> bool {
        let n = self.0.ops.fetch_add(1, Ordering::SeqCst);
        let next_of = {
            let mut next = lock(&self.0.next_of);
            let this = *next == Some(op);
            if this {
                *next = None;
            }
            this
        };
        if !next_of && self.0.armed.load(Ordering::SeqCst) != n + 1 {
            return false;
        }
        *lock(&self.0.fired) = Some(Fired {
            op,
            checkpoint: lock(&dir.state).checkpoint.clone(),
        });
        true
    }
}

fn injected(op: Op) -> io::Error {
    match op {
        Op::CreateSlot => io::Error::new(io::ErrorKind::StorageFull, "injected: no space left"),
        _ => io::Error::other(format!("injected I/O error ({op:?})")),
    }
}

#[derive(Default)]
struct FileData {
    /// What a crash keeps for sure.
    synced: Vec<u8>,
    /// What the process sees.
    current: Vec<u8>,
    /// A sync failed: the kernel dropped the dirty pages, and later syncs
    /// keep nothing more (fsyncgate).
    poisoned: bool,
}

/// One file of a [`MemDir`].
#[derive(Default)]
pub(crate) struct MemFile {
    data: Mutex<FileData>,
    /// The directory, when it injects faults or checks the write order.
    dir: Option<MemDir>,
}

impl MemFile {
    fn fails(&self, op: Op) -> bool {
        self.dir.as_ref().is_some_and(|d| d.fails(op))
    }

    /// The segment header this file holds: (epoch, segment).
    fn header(&self) -> Option<(u64, u64)> {
        let d = lock(&self.data);
        SegmentHeader::decode(&d.current).map(|h| (h.epoch, h.segment))
    }

    /// Notes a violation when a record is written here while a file holding
    /// an earlier segment of the same generation has bytes not yet synced.
    fn check_order(&self, offset: u64) {
        let Some(dir) = self.dir.as_ref().filter(|d| d.check_order) else {
            return;
        };
        if offset < SEG_HEADER_LEN as u64 {
            return;
        }
        let Some((epoch, segment)) = self.header() else {
            return;
        };
        let mut st = lock(&dir.state);
        let mut late = Vec::new();
        for (no, file) in &st.slots {
            if std::ptr::eq(Arc::as_ptr(file), self) {
                continue;
            }
            let d = lock(&file.data);
            let earlier = SegmentHeader::decode(&d.current)
                .is_some_and(|h| h.epoch == epoch && h.segment < segment);
            if earlier && d.current != d.synced {
                late.push(format!(
                    "a record of segment {segment} written while slot {no} has unsynced bytes"
                ));
            }
        }
        st.order_violations.extend(late);
    }
}

impl WalFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = lock(&self.data);
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        let src = d
            .current
            .get(at..at + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_order(offset);
        // A failed write may have written a part of its bytes.
        let (buf, result) = if self.fails(Op::WalWrite) {
            (&buf[..buf.len() / 2], Err(injected(Op::WalWrite)))
        } else {
            (buf, Ok(()))
        };
        let mut d = lock(&self.data);
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        if d.current.len() < at + buf.len() {
            d.current.resize(at + buf.len(), 0);
        }
        d.current[at..at + buf.len()].copy_from_slice(buf);
        result
    }

    fn sync(&self) -> io::Result<()> {
        if let Some(d) = &self.dir {
            let micros = d.faults.0.sync_micros.load(Ordering::SeqCst);
            if micros > 0 {
                std::thread::sleep(std::time::Duration::from_micros(micros));
            }
        }
        if self.fails(Op::WalSync) {
            lock(&self.data).poisoned = true;
            return Err(injected(Op::WalSync));
        }
        let mut d = lock(&self.data);
        if !d.poisoned {
            d.synced = d.current.clone();
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).current.len() as u64)
    }
}

/// How a simulated crash treats bytes written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// All of them are lost.
    DropUnsynced,
    /// Each file keeps the first `n` bytes of its unsynced range (from its
    /// first to its last changed byte) and loses the rest: a torn write.
    KeepUnsyncedPrefix(usize),
    /// Nothing is lost (a process kill: the OS still has every byte).
    KeepAll,
}

/// A WAL directory in memory.
#[derive(Clone, Default)]
pub(crate) struct MemDir {
    state: Arc<Mutex<DirState>>,
    faults: Faults,
    /// Its files count their operations in `faults`.
    injecting: bool,
    /// Its files note records written before an earlier segment was synced.
    check_order: bool,
}

#[derive(Default)]
struct DirState {
    slots: BTreeMap<u32, Arc<MemFile>>,
    /// Checkpoints are written durably (the real one syncs before rename).
    checkpoint: Option<Vec<u8>>,
    /// See [`MemDir::checking_order`].
    order_violations: Vec<String>,
}

impl MemDir {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory whose writes and syncs `faults` counts and can fail.
    pub fn with_faults(faults: Faults) -> Self {
        Self {
            faults,
            injecting: true,
            ..Self::default()
        }
    }

    fn fails(&self, op: Op) -> bool {
        self.injecting && self.faults.hit(op, self)
    }

    /// A directory that notes every record written to a segment while a
    /// file holding an earlier segment of the same generation has unsynced
    /// bytes ([`MemDir::order_violations`]).
    pub fn checking_order() -> Self {
        Self {
            check_order: true,
            ..Self::default()
        }
    }

    pub fn order_violations(&self) -> Vec<String> {
        lock(&self.state).order_violations.clone()
    }

    /// The checkpoint file's bytes.
    pub fn checkpoint(&self) -> Option<Vec<u8>> {
        lock(&self.state).checkpoint.clone()
    }

    /// The directory as a crash leaves it: a new, independent copy.
    pub fn crash(&self, how: Crash) -> MemDir {
        let st = lock(&self.state);
        let mut slots = BTreeMap::new();
        for (&no, file) in &st.slots {
            let d = lock(&file.data);
            let mut kept = d.synced.clone();
            kept.resize(d.current.len(), 0);
            let first = d.current.iter().zip(&kept).position(|(a, b)| a != b);
            let last = d.current.iter().zip(&kept).rposition(|(a, b)| a != b);
            if let (Some(first), Some(last)) = (first, last) {
                let keep_to = match how {
                    Crash::DropUnsynced => first,
                    Crash::KeepUnsyncedPrefix(n) => (first + n).min(last + 1),
                    Crash::KeepAll => last + 1,
                };
                kept[first..keep_to].copy_from_slice(&d.current[first..keep_to]);
            }
            let file = MemFile {
                data: Mutex::new(FileData {
                    synced: kept.clone(),
                    current: kept,
                    poisoned: false,
                }),
                dir: None,
            };
            slots.insert(no, Arc::new(file));
        }
        MemDir {
            state: Arc::new(Mutex::new(DirState {
                slots,
                checkpoint: st.checkpoint.clone(),
                order_violations: Vec::new(),
            })),
            ..MemDir::default()
        }
    }

    /// Flips one bit of a slot's bytes (synced or not): bit rot or a bad sector.
    pub fn flip_bit(&self, slot: u32, offset: usize, bit: u8) {
        let st = lock(&self.state);
        if let Some(file) = st.slots.get(&slot) {
            let mut d = lock(&file.data);
            let d = &mut *d;
            for bytes in [&mut d.synced, &mut d.current] {
                if let Some(b) = bytes.get_mut(offset) {
                    *b ^= 1 << (bit % 8);
                }
            }
        }
    }

    /// A slot's bytes as the process sees them.
    pub fn current_bytes(&self, slot: u32) -> Vec<u8> {
        let st = lock(&self.state);
        st.slots
            .get(&slot)
            .map(|f| lock(&f.data).current.clone())
            .unwrap_or_default()
    }

    /// Bytes of unsynced data across all slots.
    pub fn unsynced_bytes(&self) -> usize {
        let st = lock(&self.state);
        st.slots
            .values()
            .map(|f| {
                let d = lock(&f.data);
                d.current
                    .iter()
                    .zip(d.synced.iter().chain(std::iter::repeat(&0)))
                    .filter(|(a, b)| a != b)
                    .count()
            })
            .sum()
    }
}

impl WalDir for MemDir {
    fn list_slots(&self) -> io::Result<Vec<u32>> {
        Ok(lock(&self.state).slots.keys().copied().collect())
    }

    fn open_slot(&self, slot: u32) -> io::Result<Arc<dyn WalFile>> {
        match lock(&self.state).slots.get(&slot) {
            Some(f) => Ok(f.clone()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn create_slot(&self, slot: u32, size: u64) -> io::Result<Arc<dyn WalFile>> {
        if self.fails(Op::CreateSlot) {
            return Err(injected(Op::CreateSlot));
        }
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let file = Arc::new(MemFile {
            data: Mutex::new(FileData {
                synced: vec![0; len],
                current: vec![0; len],
                poisoned: false,
            }),
            dir: (self.injecting || self.check_order).then(|| self.clone()),
        });
        lock(&self.state).slots.insert(slot, file.clone());
        Ok(file)
    }

    fn remove_slot(&self, slot: u32) -> io::Result<()> {
        if self.fails(Op::RemoveSlot) {
            return Err(injected(Op::RemoveSlot));
        }
        lock(&self.state).slots.remove(&slot);
        Ok(())
    }

    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(lock(&self.state).checkpoint.clone())
    }

    fn write_checkpoint(&self, bytes: &[u8]) -> io::Result<()> {
        if self.fails(Op::WriteCheckpoint) {
            return Err(injected(Op::WriteCheckpoint));
        }
        lock(&self.state).checkpoint = Some(bytes.to_vec());
        Ok(())
    }
}
