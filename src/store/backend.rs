//! The storage seam (SPEC §13): what the store needs of an engine, in bytes.
//!
//! A backend holds the trees of [`TreeId`] as ordered maps from key bytes to
//! value bytes, exactly the bytes the typed layer ([`super::schema`]) gives
//! it, and runs transactions over them. Everything above this trait (the
//! typed tables, the operations, the codecs) is the same on every backend;
//! everything below it (sled and the write-ahead log in `sled/`, a map in
//! memory in `memory.rs`, a database server) is the backend's own.
//!
//! The contract:
//!
//! - **Reads** outside transactions see the newest *durable* value: a
//!   change is visible once the call that made it could return `Ok`.
//! - **Transactions** are serializable and all or nothing. The body may run
//!   more than once: a backend that detects a conflict (PostgreSQL's
//!   SQLSTATE 40001) discards the run's writes and runs it again from the
//!   committed state. So a body does no I/O, no hashing and nothing with
//!   effects outside its [`BackendTx`]; what it returns comes from its last
//!   run. A body that fails aborts the transaction: nothing of it is
//!   written, and its error is the transaction's.
//! - **Durability**: `transact` returns `Ok` only once the change survives
//!   what the backend promises to survive (the sled backend: `kill -9` and
//!   power loss, with [`super::Durability::Immediate`]); a change that is
//!   durable is never reported as failed.
//! - **Counters** ([`Counter`]) are backend operations, not rows the
//!   operations update, so that no single row is written by every
//!   transaction on a backend where that would make them conflict; values
//!   increase, and may skip (a sequence's numbers taken by a run that was
//!   retried).
//! - **Health** says whether writes are accepted ([`Health`]).

use super::health::{Health, LogStats};
use super::schema::{Counter, TreeId};
use crate::error::Error;

/// One buffered write of a run: `None` deletes the key.
pub(crate) type Write = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// A run's writes in order, for backends that apply them only at commit
/// (the memory and PostgreSQL backends): the run's own reads see them first.
#[derive(Debug, Default)]
pub(crate) struct Writes(std::cell::RefCell<Vec<Write>>);

impl Writes {
    /// Calls `found` with the run's last write of `key` in `tree` and
    /// returns `true`; `false` (and no call) when the run has not written it.
    pub fn read(&self, tree: TreeId, key: &[u8], found: &mut dyn FnMut(Option<&[u8]>)) -> bool {
        let writes = self.0.borrow();
        match writes.iter().rev().find(|(t, k, _)| *t == tree && k == key) {
            Some((_, _, v)) => {
                found(v.as_deref());
                true
            }
            None => false,
        }
    }

    /// Buffers setting (`Some`) or deleting (`None`) `key` in `tree`.
    pub fn push(&self, tree: TreeId, key: &[u8], value: Option<Vec<u8>>) {
        self.0.borrow_mut().push((tree, key.to_vec(), value));
    }

    /// The writes so far, in order.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub fn borrow(&self) -> std::cell::Ref<'_, Vec<Write>> {
        self.0.borrow()
    }

    /// The writes, in order.
    pub fn into_inner(self) -> Vec<Write> {
        self.0.into_inner()
    }
}

/// Rows as a scan returns them: (key, value), in key order.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A storage engine under the typed layer.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Calls `found` once with the newest durable value of `key` in `tree`
    /// (`None`: absent), without copying it.
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error>;

    /// Up to `limit` rows of `tree` with keys from `start` on, in key order.
    fn scan(&self, tree: TreeId, start: &[u8], limit: usize) -> Result<Rows, Error>;

    /// [`Backend::scan`] of what the backend's own trees hold now, without
    /// applying the durable changes still on their way there (the sled
    /// backend's overlay): the next batches of a scan whose first batch
    /// applied them, so that a long scan applies once, not at every batch,
    /// while writers run. Backends without such a lag scan.
    fn scan_applied(&self, tree: TreeId, start: &[u8], limit: usize) -> Result<Rows, Error> {
        self.scan(tree, start, limit)
    }

    /// The last `limit` rows of `tree`, in key order.
    fn scan_last(&self, tree: TreeId, limit: usize) -> Result<Rows, Error>;

    /// Runs `body` as one transaction (see the module's contract: it may
    /// run more than once) and returns once its writes are durable.
    fn transact(&self, body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>) -> Result<(), Error>;

    /// The format version this backend reads and writes for this store
    /// ([`super::meta`] checks the stored one against it): the typed rows'
    /// version, unless the backend lays them out its own way (sled's packed
    /// trees).
    fn format_version(&self) -> u32 {
        super::meta::FORMAT_VERSION
    }

    /// Makes everything written so far durable in the backend's own files
    /// (the sled backend: a checkpoint). Also run when the store closes.
    fn flush(&self) -> Result<(), Error>;

    /// Whether the backend accepts writes. Cheap.
    fn health(&self) -> Health;

    /// What the backend's log did since it was opened (zeros when it has none).
    fn log_stats(&self) -> LogStats;

    /// Bytes the backend's files take on disk.
    fn size_on_disk(&self) -> Result<u64, Error>;

    /// Tells the backend that the calling thread will commit soon (it is
    /// about to hash a new password), until the returned value is dropped
    /// or the thread's next commit begins; a backend with a commit delay
    /// lets a group commit wait for it. `None`: the backend does not wait.
    fn expect_commit(&self) -> Option<ExpectedCommit<'_>> {
        None
    }

    /// Whether [`Backend::deferring`] defers anything: commits that return
    /// before their writes are durable, made durable by
    /// [`Backend::sync_deferred`] on another thread.
    fn defers(&self) -> bool {
        false
    }

    /// Runs `f` with the calling thread's commits deferred: each returns
    /// once logged, and the thread's reads see its own writes at once;
    /// nothing is durable (or visible to other threads) until a
    /// [`Backend::sync_deferred`] that began after `f` returned. Returns the
    /// log position that sync must reach ([`Backend::durable_seq`]), 0 when
    /// `f` wrote nothing (or the backend does not defer: then `f`'s commits
    /// returned once durable).
    fn deferring(&self, f: &mut dyn FnMut()) -> u64 {
        f();
        0
    }

    /// How far the log is durable (see [`Backend::deferring`]).
    fn durable_seq(&self) -> u64 {
        0
    }

    /// How far the log reaches (what [`Backend::durable_seq`] reaches
    /// once everything logged so far is durable).
    fn logged_seq(&self) -> u64 {
        0
    }

    /// Makes everything logged so far durable; returns
    /// [`Backend::durable_seq`]. Blocks: run it on a thread that may.
    fn sync_deferred(&self) -> Result<u64, Error> {
        Ok(0)
    }

    /// Whether deferred commits left housekeeping to do (applying to the
    /// backend's files, a checkpoint, preparing log space). Cheap.
    fn housekeeping_due(&self) -> bool {
        false
    }

    /// Does that housekeeping; its failures are logged and retried later,
    /// never reported (the changes are durable). Blocks.
    fn housekeep(&self) {}

    /// Whether other processes may use the same data at the same time
    /// (several instances on one database): then no process can take a
    /// read as its own, and a courier claims a mail before sending it.
    fn shared(&self) -> bool {
        false
    }
}

/// A commit announced with [`Backend::expect_commit`]; dropping it
/// withdraws the announcement if the commit has not begun.
pub(crate) type ExpectedCommit<'a> = Box<dyn Expected + 'a>;

/// What an [`ExpectedCommit`] holds (its `Drop` withdraws it).
pub(crate) trait Expected {}

/// One run of a transaction's body: reads see the run's own writes.
pub(crate) trait BackendTx {
    /// Calls `found` once with the value of `key` in `tree` as this
    /// transaction sees it.
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error>;

    /// Sets `key` in `tree` to `value`.
    fn put(&self, tree: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), Error>;

    /// Removes `key` from `tree` (nothing if absent).
    fn delete(&self, tree: TreeId, key: &[u8]) -> Result<(), Error>;

    /// Hands out the counter's next value (see [`Counter`] for where each
    /// starts).
    fn next(&self, counter: Counter) -> Result<u64, Error>;

    /// Makes the counter's next value at least `floor`.
    fn raise(&self, counter: Counter, floor: u64) -> Result<(), Error>;
}

/// The bytes of `key` in `tree`, copied (for callers that keep them).
pub(crate) fn get_owned(
    get: impl FnOnce(&mut dyn FnMut(Option<&[u8]>)) -> Result<(), Error>,
) -> Result<Option<Vec<u8>>, Error> {
    let mut out = None;
    get(&mut |v| out = v.map(<[u8]>::to_vec))?;
    Ok(out)
}
