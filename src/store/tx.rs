//! The transaction handle operations write through: typed tables over one
//! run of a backend transaction ([`BackendTx`]).
//!
//! A transaction's closure may run more than once (a backend retries it on
//! a conflict): it does no I/O, no hashing (debug builds assert it: the
//! password hasher refuses to run inside a closure) and nothing with
//! effects outside the [`Tx`]; what it returns comes from its last run.

use super::backend::BackendTx;
use super::fail_point::FailPoint;
use super::schema::{self, Counter, Key, Table, Value};
use crate::error::Error;
use crate::model::{BoxId, Event, EventKind, EventOutcome, Timestamp, UserCode};

/// Why a transaction closure stopped: the crate error it aborts with.
pub(crate) struct TxError(pub(super) Error);

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError(e)
    }
}

pub(crate) struct Tx<'a> {
    raw: &'a dyn BackendTx,
    fail_point: Option<&'a FailPoint>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(raw: &'a dyn BackendTx, fail_point: Option<&'a FailPoint>) -> Self {
        Self { raw, fail_point }
    }

    /// The value of `key` in `table`, decoded.
    pub fn get<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<Option<V>, TxError> {
        K::with_bytes(key, |k| {
            let mut out = None;
            self.raw.get(table.tree, k, &mut |v| {
                out = v.map(|v| V::decode(table.tree, k, v));
            })?;
            Ok(out.transpose()?)
        })
    }

    /// Whether `table` holds `key` (its value is not decoded).
    pub fn contains<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<bool, TxError> {
        K::with_bytes(key, |k| {
            let mut found = false;
            self.raw.get(table.tree, k, &mut |v| found = v.is_some())?;
            Ok(found)
        })
    }

    /// Sets the value of `key` in `table`.
    pub fn put<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
        value: &V,
    ) -> Result<(), TxError> {
        K::with_bytes(key, |k| Ok(self.raw.put(table.tree, k, value.encode())?))
    }

    /// Removes `key` from `table` (nothing if absent).
    pub fn delete<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<(), TxError> {
        K::with_bytes(key, |k| Ok(self.raw.delete(table.tree, k)?))
    }

    /// Hands out the counter's next value.
    pub fn next(&self, counter: Counter) -> Result<u64, TxError> {
        Ok(self.raw.next(counter)?)
    }

    /// Makes the counter's next value at least `floor`.
    pub fn raise(&self, counter: Counter, floor: u64) -> Result<(), TxError> {
        Ok(self.raw.raise(counter, floor)?)
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
        FailPoint::check(self.fail_point, "running a transaction", name).map_err(TxError)
    }
}
