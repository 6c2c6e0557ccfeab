//! One run of a transaction on the sled backend ([`SledTx`]).
//!
//! Commits are serialised by the write-ahead log's writer section, so a
//! transaction needs no optimistic concurrency control and this backend
//! runs its body once (the seam's contract lets a backend run it again, and
//! the memory backend does: bodies are written for that). A run reads its
//! own writes first, then the changes logged but
//! not yet applied to sled (the [`Overlay`]), then sled, and records every
//! write as a redo entry (tree, key, value or delete), which is what the
//! write-ahead log persists and what is later applied to sled.

use std::cell::RefCell;

use super::SledBackend;
use super::overlay::{Found, Overlay};
use crate::error::Error;
use crate::store::backend::BackendTx;
use crate::store::schema::{self, Counter, TreeId};

/// One write of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redo {
    pub tree: TreeId,
    pub key: Vec<u8>,
    /// `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// The meta rows of the counters (u64 big-endian: the next value).
pub(crate) const NEXT_BOX_ID: &[u8] = b"next_box_id";
pub(crate) const EVENT_SEQ: &[u8] = b"next_event_seq";

pub(crate) struct SledTx<'a> {
    backend: &'a SledBackend,
    overlay: Option<&'a Overlay>,
    pub(super) redo: RefCell<Vec<Redo>>,
}

impl<'a> SledTx<'a> {
    /// A transaction over sled plus `overlay` (every logged version in it,
    /// synced or not). Only inside the writer section.
    pub(super) fn new(backend: &'a SledBackend, overlay: Option<&'a Overlay>) -> Self {
        Self {
            backend,
            overlay,
            redo: RefCell::new(Vec::new()),
        }
    }

    fn push(&self, tree: TreeId, key: &[u8], value: Option<Vec<u8>>) {
        self.redo.borrow_mut().push(Redo {
            tree,
            key: key.to_vec(),
            value,
        });
    }

    /// The meta row a counter lives in, and its value when the row is absent.
    fn counter_row(&self, counter: Counter) -> (&'static [u8], u64) {
        match counter {
            Counter::BoxId => (NEXT_BOX_ID, self.backend.first_box_id),
            Counter::EventSeq => (EVENT_SEQ, 1),
        }
    }

    fn counter_value(&self, key: &[u8]) -> Result<Option<u64>, Error> {
        let mut out = None;
        self.get(TreeId::Meta, key, &mut |v| {
            out = v.map(|v| schema::fixed(TreeId::Meta, key, v).map(u64::from_be_bytes));
        })?;
        out.transpose()
    }
}

impl BackendTx for SledTx<'_> {
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        // Its own writes first, newest last (transactions write a handful
        // of keys, so a backwards scan beats a map).
        if let Some(w) = self
            .redo
            .borrow()
            .iter()
            .rev()
            .find(|w| w.tree == tree && w.key == key)
        {
            found(w.value.as_deref());
            return Ok(());
        }
        if let Some(overlay) = self.overlay
            && let Found::Logged(v) = overlay.get_latest(tree, key)
        {
            found(v.as_deref());
            return Ok(());
        }
        let v = self.backend.sled_get(tree, key)?;
        found(v.as_deref());
        Ok(())
    }

    fn put(&self, tree: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.push(tree, key, Some(value));
        Ok(())
    }

    fn delete(&self, tree: TreeId, key: &[u8]) -> Result<(), Error> {
        self.push(tree, key, None);
        Ok(())
    }

    fn next(&self, counter: Counter) -> Result<u64, Error> {
        let (key, initial) = self.counter_row(counter);
        let current = self.counter_value(key)?.unwrap_or(initial);
        let next = current.saturating_add(1);
        self.push(TreeId::Meta, key, Some(next.to_be_bytes().to_vec()));
        Ok(current)
    }

    fn raise(&self, counter: Counter, floor: u64) -> Result<(), Error> {
        let (key, _) = self.counter_row(counter);
        if self.counter_value(key)?.unwrap_or(0) < floor {
            self.push(TreeId::Meta, key, Some(floor.to_be_bytes().to_vec()));
        }
        Ok(())
    }
}
