//! A second backend: ordered maps in memory under one mutex, no files and
//! no log. It exists to prove the seam: the operations and their tests run
//! on it unchanged (`Store::in_memory_for_tests`). By default it runs every
//! transaction's body twice and keeps only the second run, as a backend
//! that retries on a serialization failure does, so that a body that is
//! not safe to run again shows up in the tests.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::EngineOptions;
use super::backend::{Backend, BackendTx, Rows, Writes};
use super::health::{Health, LogStats};
use super::meta;
use super::schema::{Counter, TreeId};
use crate::error::Error;

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// A buffered write: `None` deletes.
struct State {
    trees: Vec<Tree>,
    /// The next value of each counter (`None`: never used).
    counters: [Option<u64>; 2],
}

/// A memory backend's contents, which outlive the backend: a store opened
/// again over them (the model check's "crash") finds what was committed.
#[derive(Clone)]
pub(crate) struct MemoryState(Arc<Mutex<State>>);

impl MemoryState {
    /// Empty trees, counters never used.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(State {
            trees: TreeId::ALL.iter().map(|_| Tree::new()).collect(),
            counters: [None; 2],
        })))
    }
}

pub(crate) struct MemoryBackend {
    state: MemoryState,
    first_box_id: u64,
    /// Run each body once more than needed, discarding the first run.
    rerun: bool,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("rerun", &self.rerun)
            .finish_non_exhaustive()
    }
}

fn slot(counter: Counter) -> usize {
    match counter {
        Counter::BoxId => 0,
        Counter::EventSeq => 1,
    }
}

impl MemoryBackend {
    /// A new, empty store. With `rerun`, every transaction's body runs
    /// twice (the first run's writes discarded).
    pub fn open(opts: &EngineOptions, rerun: bool) -> Result<Self, Error> {
        Self::reopen(MemoryState::new(), opts, rerun)
    }

    /// The store held by `state`, created when `state` is empty.
    pub fn reopen(state: MemoryState, opts: &EngineOptions, rerun: bool) -> Result<Self, Error> {
        let backend = Self {
            state,
            first_box_id: opts.first_box_id,
            rerun,
        };
        meta::check_or_init(&backend, &opts.fingerprint, opts.first_box_id, || true)?;
        Ok(backend)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Writes are applied after the body succeeds, by code that does not
        // panic: a poisoned state is whole.
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One run: writes buffered, reads through them.
struct MemTx<'a> {
    state: &'a State,
    first_box_id: u64,
    writes: Writes,
    counters: RefCell<[Option<u64>; 2]>,
}

impl BackendTx for MemTx<'_> {
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        if !self.writes.read(tree, key, found) {
            found(self.state.trees[tree.index()].get(key).map(Vec::as_slice));
        }
        Ok(())
    }

    fn put(&self, tree: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.writes.push(tree, key, Some(value));
        Ok(())
    }

    fn delete(&self, tree: TreeId, key: &[u8]) -> Result<(), Error> {
        self.writes.push(tree, key, None);
        Ok(())
    }

    fn next(&self, counter: Counter) -> Result<u64, Error> {
        let initial = match counter {
            Counter::BoxId => self.first_box_id,
            Counter::EventSeq => 1,
        };
        let mut c = self.counters.borrow_mut();
        let current = c[slot(counter)].unwrap_or(initial);
        c[slot(counter)] = Some(current.saturating_add(1));
        Ok(current)
    }

    fn raise(&self, counter: Counter, floor: u64) -> Result<(), Error> {
        let mut c = self.counters.borrow_mut();
        if c[slot(counter)].unwrap_or(0) < floor {
            c[slot(counter)] = Some(floor);
        }
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        let state = self.lock();
        found(state.trees[tree.index()].get(key).map(Vec::as_slice));
        Ok(())
    }

    fn scan(&self, tree: TreeId, start: &[u8], limit: usize) -> Result<Rows, Error> {
        let state = self.lock();
        Ok(state.trees[tree.index()]
            .range(start.to_vec()..)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_last(&self, tree: TreeId, limit: usize) -> Result<Rows, Error> {
        let state = self.lock();
        let mut rows: Rows = state.trees[tree.index()]
            .iter()
            .rev()
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rows.reverse();
        Ok(rows)
    }

    fn transact(&self, body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>) -> Result<(), Error> {
        // One transaction at a time: serializable by construction.
        let mut state = self.lock();
        let run = |state: &State| {
            let tx = MemTx {
                state,
                first_box_id: self.first_box_id,
                writes: Writes::default(),
                counters: RefCell::new(state.counters),
            };
            body(&tx).map(|()| (tx.writes.into_inner(), tx.counters.into_inner()))
        };
        if self.rerun {
            // As if the first run met a serialization failure.
            drop(run(&state));
        }
        let (writes, counters) = run(&state)?;
        for (tree, key, value) in writes {
            let t = &mut state.trees[tree.index()];
            match value {
                Some(v) => t.insert(key, v),
                None => t.remove(&key),
            };
        }
        state.counters = counters;
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn health(&self) -> Health {
        Health::Writable
    }

    fn log_stats(&self) -> LogStats {
        LogStats::default()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(0)
    }
}
