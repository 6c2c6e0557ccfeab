//! The transaction handle the operations layer writes through.
//!
//! Commits are serialised by the write-ahead log's writer section, so a
//! transaction needs no optimistic concurrency control: it reads its own
//! writes first, then the changes logged but not yet applied to sled (the
//! [`Overlay`]), then sled, and records every write as a redo entry (tree,
//! key, value or delete), which is what the write-ahead log persists and what
//! is later applied to sled.

use std::cell::RefCell;

use sled::IVec;

use super::overlay::{Found, Overlay};
use super::schema::{self, Counter, Key, Table, TreeId, Value};
use super::{Engine, storage};
use crate::error::Error;
use crate::model::{BoxId, Event, EventKind, EventOutcome, Timestamp, UserCode};

/// One write of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redo {
    pub tree: TreeId,
    pub key: Vec<u8>,
    /// `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// Why a transaction closure stopped: the crate error it aborts with.
pub(crate) struct TxError(pub(super) Error);

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError(e)
    }
}

pub(crate) struct Tx<'a> {
    engine: &'a Engine,
    overlay: Option<&'a Overlay>,
    pub(super) redo: RefCell<Vec<Redo>>,
}

impl<'a> Tx<'a> {
    /// A transaction over sled plus `overlay` (every logged version in it,
    /// synced or not). Only inside the writer section.
    pub(super) fn new(engine: &'a Engine, overlay: Option<&'a Overlay>) -> Self {
        Self {
            engine,
            overlay,
            redo: RefCell::new(Vec::new()),
        }
    }

    pub fn get_bytes(&self, id: TreeId, key: &[u8]) -> Result<Option<IVec>, TxError> {
        // Its own writes first, newest last (transactions write a handful
        // of keys, so a backwards scan beats a map).
        if let Some(w) = self
            .redo
            .borrow()
            .iter()
            .rev()
            .find(|w| w.tree == id && w.key == key)
        {
            return Ok(w.value.as_deref().map(IVec::from));
        }
        if let Some(overlay) = self.overlay
            && let Found::Logged(v) = overlay.get_latest(id, key)
        {
            return Ok(v);
        }
        Ok(self
            .engine
            .tree(id)
            .get(key)
            .map_err(storage("reading in a transaction"))?)
    }

    pub fn put_bytes(&self, id: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), TxError> {
        self.redo.borrow_mut().push(Redo {
            tree: id,
            key: key.to_vec(),
            value: Some(value),
        });
        Ok(())
    }

    pub fn delete_bytes(&self, id: TreeId, key: &[u8]) -> Result<(), TxError> {
        self.redo.borrow_mut().push(Redo {
            tree: id,
            key: key.to_vec(),
            value: None,
        });
        Ok(())
    }

    /// Hands out the counter's next value.
    pub fn next(&self, counter: Counter) -> Result<u64, TxError> {
        let (key, initial) = self.engine.counter_row(counter);
        let current = self.counter_value(key)?.unwrap_or(initial);
        self.put_bytes(
            TreeId::Meta,
            key,
            current.saturating_add(1).to_be_bytes().to_vec(),
        )?;
        Ok(current)
    }

    /// Makes the counter's next value at least `floor`.
    pub fn raise(&self, counter: Counter, floor: u64) -> Result<(), TxError> {
        let (key, _) = self.engine.counter_row(counter);
        if self.counter_value(key)?.unwrap_or(0) < floor {
            self.put_bytes(TreeId::Meta, key, floor.to_be_bytes().to_vec())?;
        }
        Ok(())
    }

    fn counter_value(&self, key: &[u8]) -> Result<Option<u64>, TxError> {
        match self.get_bytes(TreeId::Meta, key)? {
            Some(v) => Ok(Some(u64::from_be_bytes(schema::fixed(
                TreeId::Meta,
                key,
                &v,
            )?))),
            None => Ok(None),
        }
    }

    /// The value of `key` in `table`, decoded.
    pub fn get<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<Option<V>, TxError> {
        K::with_bytes(key, |k| match self.get_bytes(table.tree, k)? {
            Some(v) => Ok(Some(V::decode(table.tree, k, &v)?)),
            None => Ok(None),
        })
    }

    /// Whether `table` holds `key` (its value is not decoded).
    pub fn contains<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<bool, TxError> {
        K::with_bytes(key, |k| Ok(self.get_bytes(table.tree, k)?.is_some()))
    }

    /// Sets the value of `key` in `table`.
    pub fn put<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
        value: &V,
    ) -> Result<(), TxError> {
        K::with_bytes(key, |k| self.put_bytes(table.tree, k, value.encode()))
    }

    /// Removes `key` from `table` (nothing if absent).
    pub fn delete<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<(), TxError> {
        K::with_bytes(key, |k| self.delete_bytes(table.tree, k))
    }

    /// Appends one event-log entry in this transaction.
    pub fn append_event(
        &self,
        at: Timestamp,
        kind: EventKind,
        outcome: EventOutcome,
        box_id: Option<BoxId>,
        user_code: Option<UserCode>,
    ) -> Result<u64, TxError> {
        let seq = self.next(Counter::EventSeq)?;
        let event = Event {
            seq,
            at,
            kind,
            outcome,
            box_id,
            user_code,
        };
        self.put(&schema::EVENTS, seq, &event)?;
        Ok(seq)
    }

    /// A test hook: aborts the transaction when the store's fail point fires
    /// at `name`. Does nothing in normal use.
    pub fn fail_point(&self, name: &'static str) -> Result<(), TxError> {
        super::FailPoint::check(
            self.engine.fail_point.as_ref(),
            "running a transaction",
            name,
        )
        .map_err(TxError)
    }
}
