//! The one commit function, and the engine's side of the write-ahead log:
//! replay at open (checkpoints are in `checkpoint.rs`).
//!
//! A commit ([`run`]) enters the WAL's writer section, runs its closure over
//! sled plus the records logged but not yet applied (the overlay), appends
//! its redo set as a record and returns once the record is synced (group
//! commit). sled gets the change later: when enough records wait, the
//! committer that notices applies the durable ones in one sled transaction
//! ([`settle`]); scans, the integrity check and checkpoints settle first.
//! Commits are serialised by the writer section, so this backend never
//! retries a closure on a conflict (the seam's contract still allows it:
//! `store/backend.rs`). What a committer does after its
//! change is durable (applying, checkpoints, preparing a segment) is
//! housekeeping: its failures are logged and retried, never reported as the
//! change's (SPEC §11). Stores without a directory
//! (temporary ones) have no WAL: nothing of them outlives the process, and
//! each commit is one sled transaction under the engine's lock.
//!
//! Why the sequence number in sled: sled flushes on its own (every 500 ms).
//! Without syncing (`PeriodicFlushLosesRecentChanges`) a record counts as
//! durable once written, so sled may flush a change whose log bytes a power
//! loss then takes: after a crash sled's files may hold changes *newer* than
//! the WAL's end. Replaying older records over such a state could mix
//! old and new values. Recovery therefore replays only records after the
//! number sled holds; sled's recovered state is a prefix of its transactions,
//! and replaying whole-value redo sets in order over any prefix between the
//! checkpoint and the WAL's end gives the WAL's end state.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::checkpoint::{checkpoint, sync};
use super::tx::{Redo, SledTx};
use super::wal::{CommitError, Loaded, Wal, redo};
use super::{SledBackend, WAL_SEQ, packed, storage};
use crate::error::{Error, StorageError};
use crate::store::LogTruncation;
use crate::store::backend::BackendTx;
use crate::store::schema::{self, TreeId};

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Storage(StorageError::new(context, e))
}

/// A write refused by the log: the caller's error, logged once with its
/// cause (no secret: the store's errors carry none).
fn refused<'w>(wal: &'w Wal, context: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'w {
    move |e| {
        let err = if wal.is_failed() {
            StorageError::failed(context, e)
        } else {
            StorageError::new(context, e)
        };
        tracing::warn!(error = %err, "a write was refused");
        Error::Storage(err.logged())
    }
}

/// A failed sync of deferred commits (`wal/deferred.rs`): whether they
/// survive a reopen is unknown; the log is in its failed state.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(super) fn sync_failed(wal: &Wal) -> impl FnOnce(std::io::Error) -> Error + '_ {
    refused(
        wal,
        "syncing the write-ahead log (whether the changes waiting for it survive a reopen is unknown)",
    )
}

pub(super) fn run(
    engine: &SledBackend,
    body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>,
) -> Result<(), Error> {
    let Some(wal) = &engine.wal else {
        return run_without_wal(engine, body);
    };
    let logged = wal.commit(|overlay, max_payload| {
        let tx = SledTx::new(engine, Some(overlay));
        body(&tx)?;
        let redo = tx.redo.take();
        if redo.is_empty() {
            return Ok(None);
        }
        let len = redo::encoded_len(&redo);
        if len > max_payload {
            let e = too_large();
            tracing::warn!(error = %e, "a write was refused");
            return Err(e);
        }
        let mut payload = Vec::with_capacity(len);
        redo::encode(&mut payload, &redo);
        Ok(Some((payload, redo)))
    });
    match logged {
        Ok(None) => Ok(()),
        // A deferred commit's thread must not block (`wal/deferred.rs`):
        // whoever syncs for it does the housekeeping.
        Ok(Some(_)) if wal.deferred_here().is_some() => Ok(()),
        Ok(Some(_)) => {
            housekeeping(engine, wal);
            Ok(())
        }
        Err(CommitError::Body(e)) => Err(e),
        Err(CommitError::Log(what, e)) => Err(refused(wal, what)(e)),
    }
}

/// Work after a durable commit. The caller's change is safe already, so a
/// failure here is logged and retried by a later commit, never reported as
/// the change's failure. Nothing is done in the failed state.
pub(super) fn housekeeping(engine: &SledBackend, wal: &Wal) {
    if wal.is_failed() {
        return;
    }
    if wal.apply_due() {
        let applied = settle(engine, Settle::OneBatch);
        wal.applying_went(&applied);
        if let Err(e) = applied {
            wal.report(
                "applying logged changes to sled failed after a durable commit; retried later",
                &e,
            );
        }
    }
    if wal.checkpoint_due() {
        let done = checkpoint(engine, false);
        wal.checkpoint_went(&done);
        // A failed state it entered has logged its cause already.
        if let Err(e) = done
            && !wal.is_failed()
        {
            wal.report(
                "a checkpoint failed after a durable commit; retried later",
                &e,
            );
        }
    }
    if let Err(e) = wal.prepare_spare() {
        wal.report(
            "preparing a write-ahead log segment failed after a durable commit; retried later",
            &e,
        );
    }
}

/// A store without a log (temporary): commits are serialised by the
/// engine's lock and applied with one sled transaction each.
fn run_without_wal(
    engine: &SledBackend,
    body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>,
) -> Result<(), Error> {
    let _one = engine
        .unlogged_writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tx = SledTx::new(engine, None);
    body(&tx)?;
    let redo = tx.redo.take();
    if !redo.is_empty() {
        apply_to_sled(engine, &[&redo], None)?;
    }
    Ok(())
}

fn too_large() -> Error {
    Error::Storage(StorageError::new(
        "committing a transaction",
        "the transaction is larger than a write-ahead log segment",
    ))
}

/// Applies redo sets to sled in one sled transaction, in order, with
/// `wal_seq` as the applied sequence number. The writes to packed trees
/// become the blocks that replace those they change (`packed.rs`), planned
/// before the transaction: this is the only writer of sled.
fn apply_to_sled(
    engine: &SledBackend,
    sets: &[&[Redo]],
    wal_seq: Option<u64>,
) -> Result<(), Error> {
    let mut changes: BTreeMap<TreeId, BTreeMap<&[u8], Option<&[u8]>>> = BTreeMap::new();
    for w in sets.iter().flat_map(|set| set.iter()) {
        if engine.packs(w.tree) {
            changes
                .entry(w.tree)
                .or_default()
                .insert(&w.key, w.value.as_deref());
        }
    }
    let _blocks = (!changes.is_empty()).then(|| engine.writing_blocks());
    let mut blocks = Vec::with_capacity(changes.len());
    for (tree, changes) in &changes {
        blocks.push((*tree, packed::plan(engine.tree(*tree), *tree, changes)?));
    }
    let result = engine.trees[..].transaction(|trees| {
        for writes in sets {
            for w in writes.iter().filter(|w| !engine.packs(w.tree)) {
                let tree = &trees[w.tree.index()];
                match &w.value {
                    Some(v) => tree.insert(w.key.as_slice(), v.as_slice())?,
                    None => tree.remove(w.key.as_slice())?,
                };
            }
        }
        for (id, writes) in &blocks {
            let tree = &trees[id.index()];
            for (fence, block) in writes {
                match block {
                    Some(b) => tree.insert(fence.as_slice(), b.as_slice())?,
                    None => tree.remove(fence.as_slice())?,
                };
            }
        }
        if let Some(seq) = wal_seq {
            trees[TreeId::Meta.index()].insert(WAL_SEQ, seq.to_be_bytes().to_vec())?;
        }
        Ok::<_, ConflictableTransactionError<()>>(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(TransactionError::Storage(e)) => Err(storage("applying changes to sled")(e)),
        // The closure never aborts.
        Err(TransactionError::Abort(())) => Ok(()),
    }
}

/// The most writes one sled transaction applies (a bigger record goes alone).
const APPLY_BATCH: usize = 4096;

/// How much [`settle`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settle {
    /// Everything durable, waiting for another applier to finish first.
    All,
    /// Everything durable up to this sequence number (what was durable when
    /// a read began), waiting for another applier first: a reader does not
    /// chase the records that writers make durable meanwhile.
    Through(u64),
    /// One batch, and only when no other thread is applying (a committer's
    /// housekeeping: it bounds the delay one commit can pay, also while a
    /// deferred replay drains).
    OneBatch,
    /// One batch of at most this many writes (tests).
    #[cfg(test)]
    Writes(usize),
}

/// Applies the durable records not yet in sled, oldest first, in sled
/// transactions of up to [`APPLY_BATCH`] writes, each also storing the last
/// one's sequence number. sled thus only ever holds durable changes, whole
/// records at a time and in log order.
pub(super) fn settle(engine: &SledBackend, how: Settle) -> Result<(), Error> {
    let Some(wal) = &engine.wal else {
        return Ok(());
    };
    let wait = matches!(how, Settle::All | Settle::Through(_));
    let Some(guard) = wal.begin_apply(wait) else {
        return Ok(());
    };
    let max_writes = match how {
        #[cfg(test)]
        Settle::Writes(n) => n,
        _ => APPLY_BATCH,
    };
    loop {
        let records = wal.applicable(&guard, max_writes);
        let Some(last) = records.last() else {
            return Ok(());
        };
        // Chunks of a deferred replay get their writes from the overlay,
        // which keeps them until the last chunk is applied.
        let frozen = wal.overlay().frozen();
        let sets: Vec<Cow<'_, [Redo]>> = records
            .iter()
            .map(|r| match (&r.frozen, &frozen) {
                (None, _) => Ok(Cow::Borrowed(r.redo.as_slice())),
                (Some(range), Some(f)) => Ok(Cow::Owned(f.writes(range.clone()))),
                (Some(_), None) => Err(Error::Storage(StorageError::new(
                    "applying logged changes to sled",
                    "a deferred replay's changes are gone before all were applied",
                ))),
            })
            .collect::<Result<_, _>>()?;
        let sets: Vec<&[Redo]> = sets.iter().map(AsRef::as_ref).collect();
        apply_to_sled(engine, &sets, Some(last.seq))?;
        wal.applied(&guard, &records);
        match how {
            Settle::All => {}
            Settle::Through(seq) if last.seq < seq => {}
            _ => return Ok(()),
        }
    }
}

/// What recovery did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    /// Valid records found after the checkpoint.
    pub records_read: usize,
    /// Of those, records newer than sled's state, replayed.
    pub records_replayed: usize,
    /// The replay was deferred: those records were pending changes at open.
    pub deferred: bool,
    /// The sequence number the new WAL generation starts after.
    pub seq: u64,
    /// Records dropped after a damaged one (only when asked to truncate).
    pub truncated: Option<LogTruncation>,
}

/// Recovers the WAL in `dir` into sled, checkpoints, and starts the log.
/// Runs before anything else writes.
///
/// A damaged record with valid records after it is refused
/// ([`Error::CorruptLog`]) unless `truncate`: the log then ends before the
/// damage, the records after it are dropped (and reported), and the replay
/// is never deferred, so that the new generation leaves every byte of the
/// old one behind.
pub(super) fn start_wal(
    engine: &mut SledBackend,
    loaded: Loaded,
    truncate: bool,
) -> Result<RecoveryReport, Error> {
    let applied = applied_seq(engine)?;
    let opts = loaded.options();
    let recovery = loaded
        .parse(applied)
        .map_err(io_error("reading the write-ahead log"))?;
    let truncated = match recovery.corruption() {
        None => None,
        Some(c) if truncate => {
            let t = LogTruncation {
                file: c.file(),
                offset: c.offset,
                first_dropped: c.seq.max(applied + 1),
                last_dropped: c.last_valid,
            };
            tracing::warn!(
                "recovery with truncation, as asked: {t}; they were valid records after \
                 a damaged one"
            );
            Some(t)
        }
        Some(c) => {
            let e = Error::CorruptLog {
                file: c.file(),
                offset: c.offset,
                record: c.seq,
                last_valid: c.last_valid,
            };
            tracing::error!(error = %e, "the store cannot be opened");
            return Err(e);
        }
    };
    let records_read = recovery.records().count();
    let last = recovery.last_seq();
    if truncated.is_none()
        && last > applied
        && recovery.bytes_after(applied) >= opts.defer_replay_bytes
    {
        // A long replay: go on with the log as it is, the records to replay
        // pending (readable at once, applied to sled in batches later).
        let recovery_seq = recovery.checkpoint_seq();
        let wal = recovery
            .resume(applied)
            .map_err(io_error("resuming the write-ahead log"))?;
        engine.wal = Some(wal);
        return Ok(RecoveryReport {
            records_read,
            records_replayed: usize::try_from(last - applied.max(recovery_seq))
                .unwrap_or(usize::MAX),
            deferred: true,
            seq: last,
            truncated: None,
        });
    }
    let (records_read, records_replayed) = replay(engine, recovery.records(), applied)?;
    let seq = applied
        .max(recovery.last_seq())
        .max(recovery.checkpoint_seq());
    // Recovery ends with a checkpoint: the new generation starts from a
    // state that is on disk.
    sync(engine).map_err(|(what, e)| Error::Storage(StorageError::new(what, e)))?;
    let wal = recovery
        .start(seq + 1)
        .map_err(io_error("starting the write-ahead log"))?;
    engine.wal = Some(wal);
    Ok(RecoveryReport {
        records_read,
        records_replayed,
        deferred: false,
        seq,
        truncated,
    })
}

/// The WAL sequence number of the last change sled holds (0: none).
pub(super) fn applied_seq(engine: &SledBackend) -> Result<u64, Error> {
    let v = engine
        .tree(TreeId::Meta)
        .get(WAL_SEQ)
        .map_err(storage("reading the applied sequence number"))?;
    match v {
        None => Ok(0),
        Some(v) => schema::fixed(TreeId::Meta, WAL_SEQ, &v).map(u64::from_be_bytes),
    }
}

/// Applies the records newer than `applied` to sled: the last write of each
/// key wins, one batch per tree, the meta tree (with the new applied
/// sequence number) last. Not atomic across trees, and it need not be: a
/// crash midway leaves the applied number unchanged, so the next open
/// replays the same records again, which is idempotent.
/// Returns (records read, records replayed).
pub(super) fn replay<'a>(
    engine: &SledBackend,
    records: impl Iterator<Item = (u64, &'a [u8])>,
    applied: u64,
) -> Result<(usize, usize), Error> {
    let mut latest: HashMap<(TreeId, &[u8]), Option<&[u8]>> = HashMap::new();
    let mut last = applied;
    let (mut read, mut replayed) = (0, 0);
    for (seq, payload) in records {
        read += 1;
        if seq <= applied {
            continue;
        }
        let writes = redo::decode(payload).ok_or_else(|| {
            Error::Storage(StorageError::new(
                "reading the write-ahead log",
                format!("record {seq} has a valid checksum but an unreadable redo set"),
            ))
        })?;
        for w in writes {
            latest.insert((w.tree, w.key), w.value);
        }
        last = seq;
        replayed += 1;
    }
    if replayed == 0 {
        return Ok((read, 0));
    }
    let mut batches: Vec<sled::Batch> =
        TreeId::ALL.iter().map(|_| sled::Batch::default()).collect();
    let mut packed_changes: BTreeMap<TreeId, BTreeMap<&[u8], Option<&[u8]>>> = BTreeMap::new();
    for ((tree, key), value) in latest {
        if engine.packs(tree) {
            packed_changes.entry(tree).or_default().insert(key, value);
            continue;
        }
        match value {
            Some(v) => batches[tree.index()].insert(key, v),
            None => batches[tree.index()].remove(key),
        }
    }
    // Each packed tree's new blocks in one batch: a crash leaves the
    // tree's old blocks or its new ones.
    for (tree, changes) in &packed_changes {
        for (fence, block) in packed::plan(engine.tree(*tree), *tree, changes)? {
            match block {
                Some(b) => batches[tree.index()].insert(fence, b),
                None => batches[tree.index()].remove(fence),
            }
        }
    }
    batches[TreeId::Meta.index()].insert(WAL_SEQ, last.to_be_bytes().to_vec());
    for (id, batch) in TreeId::ALL.iter().zip(batches).rev() {
        engine
            .tree(*id)
            .apply_batch(batch)
            .map_err(storage("replaying the write-ahead log"))?;
    }
    Ok((read, replayed))
}
