//! The typed layer over a [`Backend`]: reads and scans of [`Table`]s,
//! transactions through [`Tx`], and what the store does the same way on
//! every backend (trimming the event log, the integrity check).

use std::cell::RefCell;

use super::backend::{Backend, Rows, get_owned};
use super::fail_point::FailPoint;
use super::health::{Health, LogStats};
use super::integrity::{self, IntegrityReport};
use super::schema::{EVENTS, Key, Table, TreeId, Value};
use super::tx::{Tx, TxError};
use crate::error::{Error, InternalError};

/// Events removed per transaction by [`Engine::trim_events`].
const TRIM_BATCH: usize = 256;

/// Rows per page of [`Engine::for_each_row`].
const PAGE: usize = 1024;

thread_local! {
    /// [`Engine::transact`] calls made on this thread.
    static COMMITS_BEGUN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many transactions this thread began so far (any store): a caller
/// compares two readings to learn whether code between them tried to write.
#[cfg(feature = "server")]
pub(crate) fn commits_begun() -> u64 {
    COMMITS_BEGUN.with(std::cell::Cell::get)
}

/// A store's storage: its backend, seen through the schema.
pub(crate) struct Engine {
    backend: Box<dyn Backend>,
    fail_point: Option<FailPoint>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(backend: Box<dyn Backend>, fail_point: Option<FailPoint>) -> Self {
        Self {
            backend,
            fail_point,
        }
    }

    /// The backend, in bytes (tests damage it under the typed layer).
    #[cfg(test)]
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// See [`Backend::expect_commit`]: hold the value over a password hash
    /// whose transaction follows it.
    pub fn expect_commit(&self) -> Option<super::backend::ExpectedCommit<'_>> {
        self.backend.expect_commit()
    }

    /// See [`Backend::shared`].
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// See [`Backend::defers`].
    pub fn defers(&self) -> bool {
        self.backend.defers()
    }

    /// See [`Backend::deferring`].
    pub fn deferring(&self, f: &mut dyn FnMut()) -> u64 {
        self.backend.deferring(f)
    }

    /// See [`Backend::durable_seq`].
    pub fn durable_seq(&self) -> u64 {
        self.backend.durable_seq()
    }

    /// See [`Backend::logged_seq`].
    pub fn logged_seq(&self) -> u64 {
        self.backend.logged_seq()
    }

    /// See [`Backend::sync_deferred`].
    pub fn sync_deferred(&self) -> Result<u64, Error> {
        self.backend.sync_deferred()
    }

    /// See [`Backend::housekeeping_due`].
    pub fn housekeeping_due(&self) -> bool {
        self.backend.housekeeping_due()
    }

    /// See [`Backend::housekeep`].
    pub fn housekeep(&self) {
        self.backend.housekeep();
    }

    /// The value of `key` in `table` (the newest durable one).
    pub fn get<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<Option<V>, Error> {
        self.read(table, key, |k, v| V::decode(table.tree, k, v))
    }

    /// Whether `table` holds `key` (its value is not decoded).
    pub fn contains<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<bool, Error> {
        Ok(self.read(table, key, |_, _| Ok(()))?.is_some())
    }

    /// `read(key bytes, value bytes)` over the value of `key` in `table`,
    /// without copying it (a decoder that borrows from the value).
    pub fn read<K: Key + ?Sized, V: Value, R>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
        read: impl FnOnce(&[u8], &[u8]) -> Result<R, Error>,
    ) -> Result<Option<R>, Error> {
        K::with_bytes(key, |k| {
            let mut read = Some(read);
            let mut out = None;
            self.backend.get(table.tree, k, &mut |v| {
                if let (Some(v), Some(read)) = (v, read.take()) {
                    out = Some(read(k, v));
                }
            })?;
            out.transpose()
        })
    }

    /// The bytes of `key` in `tree`, as stored (the integrity check).
    pub(crate) fn get_raw(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        get_owned(|found| self.backend.get(tree, key, found))
    }

    /// Up to `limit` rows of `table` from `start` on (key bytes; empty:
    /// from the first), in key order: each key's bytes and its value.
    pub fn scan_from<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        decode_rows(table, self.backend.scan(table.tree, start, limit)?)
    }

    /// [`Engine::scan_from`] of what the backend has applied, without
    /// applying the durable changes on their way there (see
    /// `Backend::scan_applied`): the later batches of a long scan.
    pub(crate) fn scan_from_applied<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        decode_rows(table, self.backend.scan_applied(table.tree, start, limit)?)
    }

    /// Up to `limit` rows of `table` from key `start` on, in key order.
    pub fn scan_from_key<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        start: K::Arg<'_>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        K::with_bytes(start, |k| self.scan_from(table, k, limit))
    }

    /// The last `limit` rows of `table`, in key order.
    pub fn scan_last<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        decode_rows(table, self.backend.scan_last(table.tree, limit)?)
    }

    /// Calls `f` with every row of `tree` in key order, as bytes, a page at
    /// a time (no lock held while `f` runs: it may read the store).
    pub(crate) fn for_each_row(
        &self,
        tree: TreeId,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut start = Vec::new();
        loop {
            let rows = self.backend.scan(tree, &start, PAGE)?;
            for (k, v) in &rows {
                f(k, v)?;
            }
            match rows.last() {
                Some((k, _)) if rows.len() == PAGE => {
                    start.clone_from(k);
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Runs `f` as one transaction and returns once its change is durable.
    /// `f` may run more than once (a backend retries it on a conflict): it
    /// must do no I/O, no hashing, and nothing with side effects outside
    /// the [`Tx`]; the value returned is its last run's.
    pub fn transact<T>(&self, f: impl Fn(&Tx<'_>) -> Result<T, TxError>) -> Result<T, Error> {
        COMMITS_BEGUN.with(|c| c.set(c.get().wrapping_add(1)));
        let out = RefCell::new(None);
        self.backend.transact(&|raw| {
            // A hash inside a transaction would stall every writer (and
            // run again with the closure): debug builds refuse it.
            let _no_hashing = crate::crypto::password::NoHashing::enter();
            let value = f(&Tx::new(raw, self.fail_point.as_ref())).map_err(|TxError(e)| e)?;
            *out.borrow_mut() = Some(value);
            Ok(())
        })?;
        out.into_inner().ok_or_else(|| {
            Error::Internal(InternalError::new(
                "committing a transaction",
                "the backend committed without running the transaction",
            ))
        })
    }

    /// Runs `body` as one transaction in bytes (dump restore, which writes
    /// records as stored).
    pub(crate) fn transact_raw(
        &self,
        body: &dyn Fn(&dyn super::backend::BackendTx) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.backend.transact(body)
    }

    /// Removes events with a sequence number below `before`, in small
    /// transactions.
    pub fn trim_events(&self, before: u64) -> Result<usize, Error> {
        let below: Vec<u8> = super::schema::key_bytes::<u64>(before);
        let mut removed = 0;
        loop {
            let keys: Vec<Vec<u8>> = self
                .backend
                .scan(EVENTS.tree, &[], TRIM_BATCH)?
                .into_iter()
                .map(|(k, _)| k)
                .take_while(|k| *k < below)
                .collect();
            if keys.is_empty() {
                return Ok(removed);
            }
            self.backend.transact(&|tx| {
                for k in &keys {
                    tx.delete(EVENTS.tree, k)?;
                }
                Ok(())
            })?;
            removed += keys.len();
        }
    }

    /// Checks that every index entry points at its record and every record is indexed.
    pub fn check_integrity(&self) -> Result<IntegrityReport, Error> {
        integrity::check(self)
    }

    /// Makes everything written so far durable in the backend's own files.
    pub fn flush(&self) -> Result<(), Error> {
        self.backend.flush()
    }

    /// Whether the store accepts writes.
    pub fn health(&self) -> Health {
        self.backend.health()
    }

    /// What the log did since the store was opened.
    pub fn log_stats(&self) -> LogStats {
        self.backend.log_stats()
    }

    /// Bytes the backend's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.backend.size_on_disk()
    }
}

fn decode_rows<K: ?Sized, V: Value>(
    table: &Table<K, V>,
    rows: Rows,
) -> Result<Vec<(Vec<u8>, V)>, Error> {
    rows.into_iter()
        .map(|(k, v)| {
            let v = V::decode(table.tree, &k, &v)?;
            Ok((k, v))
        })
        .collect()
}
