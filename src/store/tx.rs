//! The transaction handle the operations layer writes through.
//!
//! It wraps sled's transactional trees and records every write as a redo entry
//! (tree, key, value or delete), which is what the write-ahead log persists.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{TreeId, encoding};
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

/// Why a transaction closure stopped: an abort with a crate error, or sled's
/// own conflict/storage signal (which must propagate untouched).
pub(crate) struct TxError(pub(super) ConflictableTransactionError<Error>);

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError(ConflictableTransactionError::Abort(e))
    }
}

impl From<sled::transaction::UnabortableTransactionError> for TxError {
    fn from(e: sled::transaction::UnabortableTransactionError) -> Self {
        TxError(e.into())
    }
}

pub(crate) struct Tx<'a> {
    trees: &'a [TransactionalTree],
    pub(super) redo: RefCell<Vec<Redo>>,
    pub(super) fail_point: Option<&'a crate::ops::FailPoint>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        trees: &'a [TransactionalTree],
        fail_point: Option<&'a crate::ops::FailPoint>,
    ) -> Self {
        Self {
            trees,
            redo: RefCell::new(Vec::new()),
            fail_point,
        }
    }

    fn t(&self, id: TreeId) -> &TransactionalTree {
        &self.trees[id.index()]
    }

    pub fn get(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, TxError> {
        Ok(self.t(id).get(key)?)
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
        self.t(id).insert(key, value.as_slice())?;
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
        self.t(id).remove(key)?;
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
        if let Some(fp) = self.fail_point
            && fp.fires(name)
        {
            return Err(Error::Storage(crate::error::StorageError::new(
                "running a transaction",
                format!("injected failure at {name}"),
            ))
            .into());
        }
        Ok(())
    }
}
