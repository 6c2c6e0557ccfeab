//! The transaction handle the operations layer writes through.
//!
//! Commits are serialised by the write-ahead log's writer section, so a
//! transaction needs no optimistic concurrency control: it reads its own
//! writes first, then the changes logged but not yet applied to sled (the
//! [`Overlay`]), then sled, and records every write as a redo entry (tree,
//! key, value or delete), which is what the write-ahead log persists and what
//! is later applied to sled.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::IVec;

use super::overlay::{Found, Overlay};
use super::{Engine, TreeId, encoding, storage};
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

    pub fn get(&self, id: TreeId, key: &[u8]) -> Result<Option<IVec>, TxError> {
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

    pub fn get_record<T: DeserializeOwned>(
        &self,
        id: TreeId,
        key: &[u8],
    ) -> Result<Option<T>, TxError> {
        match self.get(id, key)? {
            Some(v) => Ok(Some(encoding::decode(id, key, &v)?)),
            None => Ok(None),
        }
    }

    pub fn insert(&self, id: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), TxError> {
        self.redo.borrow_mut().push(Redo {
            tree: id,
            key: key.to_vec(),
            value: Some(value),
        });
        Ok(())
    }

    pub fn put_record<T: Serialize>(
        &self,
        id: TreeId,
        key: &[u8],
        value: &T,
    ) -> Result<(), TxError> {
        self.insert(id, key, encoding::encode(value))
    }

    pub fn remove(&self, id: TreeId, key: &[u8]) -> Result<(), TxError> {
        self.redo.borrow_mut().push(Redo {
            tree: id,
            key: key.to_vec(),
            value: None,
        });
        Ok(())
    }

    /// A u64 counter in the meta tree: returns the current value and stores value + 1.
    pub fn next_counter(&self, key: &[u8], initial: u64) -> Result<u64, TxError> {
        let current = match self.get(TreeId::Meta, key)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                TxError::from(Error::CorruptRecord {
                    tree: TreeId::Meta.name(),
                    key: encoding::printable_key(key),
                })
            })?),
            None => initial,
        };
        self.insert(
            TreeId::Meta,
            key,
            current.saturating_add(1).to_be_bytes().to_vec(),
        )?;
        Ok(current)
    }

    /// Raises a u64 counter in the meta tree to at least `floor`.
    pub fn raise_counter(&self, key: &[u8], floor: u64) -> Result<(), TxError> {
        let current = self
            .get(TreeId::Meta, key)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        if current < floor {
            self.insert(TreeId::Meta, key, floor.to_be_bytes().to_vec())?;
        }
        Ok(())
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
        let seq = self.next_counter(super::meta::EVENT_SEQ, 1)?;
        let event = Event {
            seq,
            at,
            kind,
            outcome,
            box_id,
            user_code,
        };
        self.put_record(TreeId::Events, &seq.to_be_bytes(), &event)?;
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
