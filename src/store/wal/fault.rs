//! A WAL directory in memory that remembers which bytes were synced, so that
//! tests can freeze it at a simulated crash (as redb's crash tests freeze a
//! backend) and lose, tear or corrupt what the OS might have lost.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::io::{WalDir, WalFile};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct FileData {
    /// What a crash keeps for sure.
    synced: Vec<u8>,
    /// What the process sees.
    current: Vec<u8>,
}

/// One file of a [`MemDir`].
#[derive(Default)]
pub(crate) struct MemFile {
    data: Mutex<FileData>,
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
        let mut d = lock(&self.data);
        let at = usize::try_from(offset).map_err(io::Error::other)?;
        if d.current.len() < at + buf.len() {
            d.current.resize(at + buf.len(), 0);
        }
        d.current[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut d = lock(&self.data);
        d.synced = d.current.clone();
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
}

#[derive(Default)]
struct DirState {
    slots: BTreeMap<u32, Arc<MemFile>>,
    /// Checkpoints are written durably (the real one syncs before rename).
    checkpoint: Option<Vec<u8>>,
}

impl MemDir {
    pub fn new() -> Self {
        Self::default()
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
                }),
            };
            slots.insert(no, Arc::new(file));
        }
        MemDir {
            state: Arc::new(Mutex::new(DirState {
                slots,
                checkpoint: st.checkpoint.clone(),
            })),
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
        let len = usize::try_from(size).map_err(io::Error::other)?;
        let file = Arc::new(MemFile {
            data: Mutex::new(FileData {
                synced: vec![0; len],
                current: vec![0; len],
            }),
        });
        lock(&self.state).slots.insert(slot, file.clone());
        Ok(file)
    }

    fn remove_slot(&self, slot: u32) -> io::Result<()> {
        lock(&self.state).slots.remove(&slot);
        Ok(())
    }

    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(lock(&self.state).checkpoint.clone())
    }

    fn write_checkpoint(&self, bytes: &[u8]) -> io::Result<()> {
        lock(&self.state).checkpoint = Some(bytes.to_vec());
        Ok(())
    }
}
