//! The one commit function, and the engine's side of the write-ahead log:
//! replay at open and checkpoints.
//!
//! A commit ([`run`]) enters the WAL's writer section. When no record is
//! pending (logged but not yet applied) and no other writer is queued, it
//! runs its sled transaction, which
//! also stores the record's sequence number in the meta tree, and appends the
//! record. Otherwise its closure runs in a sled transaction over sled's state
//! plus the pending records, and that transaction is *aborted*: it only
//! computes the redo set (and the closure's result or refusal); the record
//! joins the pending ones, and the group's leader applies them all in one
//! sled transaction after syncing. Either way the call returns once its
//! record is synced and applied. With syncing off (`PeriodicFlushLosesRecentChanges`) the transaction
//! commits in the writer section and the record follows. Stores without a
//! directory (temporary ones) have no WAL: nothing of them outlives the
//! process anyway.
//!
//! Why the sequence number in sled: sled flushes on its own (every 500 ms), so
//! after a crash its files may hold changes *newer* than the WAL's end (applied,
//! never acknowledged). Replaying older records over such a state could mix
//! old and new values. Recovery therefore replays only records after the
//! number sled holds; sled's recovered state is a prefix of its transactions,
//! and replaying whole-value redo sets in order over any prefix between the
//! checkpoint and the WAL's end gives the WAL's end state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::tx::{Redo, Tx, TxError};
use super::wal::{self, PendingRecord, Recovery, WalDir, WalOptions, redo};
use super::{Engine, TreeId, meta, storage};
use crate::error::{Error, StorageError};

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Storage(StorageError::new(context, e))
}

pub(super) fn run<T>(
    engine: &Engine,
    f: impl Fn(&Tx<'_>) -> Result<T, TxError>,
) -> Result<T, Error> {
    let Some(wal) = &engine.wal else {
        return apply(engine, &f, None).map(|(out, _)| out);
    };
    let mut writer = wal
        .writer()
        .map_err(io_error("writing the write-ahead log"))?;
    let seq = writer.next_seq();
    let syncing = wal.syncing();
    // With nothing pending, committing right away keeps sled in log order;
    // it is the fast path when no other writer is around. Otherwise the
    // change joins the pending group, applied with one sled commit.
    let direct = !syncing || (writer.pending().is_empty() && !writer.others_queued());
    let (out, redo) = if direct {
        apply(engine, &f, Some((seq, writer.max_payload())))?
    } else {
        compute(engine, &f, writer.pending(), writer.max_payload())?
    };
    if redo.is_empty() {
        return Ok(out);
    }
    let mut payload = Vec::with_capacity(redo::encoded_len(&redo));
    redo::encode(&mut payload, &redo);
    writer
        .append(&payload, redo, direct)
        .map_err(io_error("writing the write-ahead log"))?;
    drop(writer);
    if syncing {
        wal.wait_durable(seq, |records| apply_records(engine, records))
            .map_err(io_error("syncing the write-ahead log"))?;
    }
    // Housekeeping after the change is durable: the caller's result is
    // already safe, so a failure here is reported but changes nothing.
    if wal.checkpoint_due() {
        checkpoint(engine, false)?;
    }
    wal.prepare_spare()
        .map_err(io_error("preparing a write-ahead log segment"))?;
    Ok(out)
}

/// How the computing transaction ends: always by an abort, with the result.
enum Stop<T> {
    Done(T, Vec<Redo>),
    Refused(Error),
}

/// Runs `f` in a sled transaction over every tree, after replaying the
/// `pending` records into it, and returns its output and redo set; the
/// transaction is aborted, so nothing reaches sled. `f` may run more than
/// once (sled retries on conflicts).
fn compute<T>(
    engine: &Engine,
    f: &impl Fn(&Tx<'_>) -> Result<T, TxError>,
    pending: &[PendingRecord],
    max_payload: usize,
) -> Result<(T, Vec<Redo>), Error> {
    let result = engine.trees[..].transaction(|trees| {
        for record in pending {
            write_all(trees, &record.redo)?;
        }
        let tx = Tx::new(trees, engine.fail_point.as_ref());
        let out = f(&tx).map_err(|TxError(e)| match e {
            ConflictableTransactionError::Abort(e) => {
                ConflictableTransactionError::Abort(Stop::Refused(e))
            }
            ConflictableTransactionError::Conflict => ConflictableTransactionError::Conflict,
            ConflictableTransactionError::Storage(e) => ConflictableTransactionError::Storage(e),
        })?;
        let writes = tx.redo.take();
        if redo::encoded_len(&writes) > max_payload {
            return Err(ConflictableTransactionError::Abort(Stop::Refused(
                too_large(),
            )));
        }
        Err::<(), _>(ConflictableTransactionError::Abort(Stop::Done(out, writes)))
    });
    match result {
        Err(TransactionError::Abort(Stop::Done(out, writes))) => Ok((out, writes)),
        Err(TransactionError::Abort(Stop::Refused(e))) => Err(e),
        Err(TransactionError::Storage(e)) => Err(storage("running a transaction")(e)),
        Ok(()) => Err(Error::Storage(StorageError::new(
            "running a transaction",
            "the computing transaction committed",
        ))),
    }
}

fn too_large() -> Error {
    Error::Storage(StorageError::new(
        "committing a transaction",
        "the transaction is larger than a write-ahead log segment",
    ))
}

fn write_all(
    trees: &[TransactionalTree],
    writes: &[Redo],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    for w in writes {
        let tree = &trees[w.tree.index()];
        match &w.value {
            Some(v) => tree.insert(w.key.as_slice(), v.as_slice())?,
            None => tree.remove(w.key.as_slice())?,
        };
    }
    Ok(())
}

/// Applies durable records to sled in one transaction, with the last one's
/// sequence number (called by the group commit's leader).
fn apply_records(engine: &Engine, records: &[PendingRecord]) -> std::io::Result<()> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    engine.trees[..]
        .transaction(|trees| {
            for record in records {
                write_all(trees, &record.redo)?;
            }
            trees[TreeId::Meta.index()].insert(meta::WAL_SEQ, last.seq.to_be_bytes().to_vec())?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| std::io::Error::other(format!("applying logged changes to sled: {e:?}")))
}

/// Runs `f` as one sled transaction over every tree and returns its output
/// and the redo set of the attempt that committed. With `wal_seq` = (seq,
/// largest payload), a transaction that writes also stores `seq` as the
/// applied sequence number, and one too large for the log aborts.
fn apply<T>(
    engine: &Engine,
    f: &impl Fn(&Tx<'_>) -> Result<T, TxError>,
    wal_seq: Option<(u64, usize)>,
) -> Result<(T, Vec<Redo>), Error> {
    let redo: RefCell<Vec<Redo>> = RefCell::new(Vec::new());
    let result = engine.trees[..].transaction(|trees| {
        let tx = Tx::new(trees, engine.fail_point.as_ref());
        let out = f(&tx).map_err(|TxError(e)| e)?;
        let writes = tx.redo.take();
        if let Some((seq, max_payload)) = wal_seq
            && !writes.is_empty()
        {
            if redo::encoded_len(&writes) > max_payload {
                return Err(ConflictableTransactionError::Abort(too_large()));
            }
            trees[TreeId::Meta.index()].insert(meta::WAL_SEQ, seq.to_be_bytes().to_vec())?;
        }
        // Keep only the redo set of the attempt that commits.
        *redo.borrow_mut() = writes;
        Ok::<_, ConflictableTransactionError<Error>>(out)
    });
    match result {
        Ok(out) => Ok((out, redo.into_inner())),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(storage("committing a transaction")(e)),
    }
}

/// What recovery did when the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    /// Valid records found after the checkpoint.
    pub records_read: usize,
    /// Of those, records newer than sled's state, replayed.
    pub records_replayed: usize,
    /// The sequence number the new WAL generation starts after.
    pub seq: u64,
}

/// Recovers the WAL in `dir` into sled, checkpoints, and starts the log.
/// Runs before anything else writes.
pub(super) fn start_wal(
    engine: &mut Engine,
    dir: Box<dyn WalDir>,
    opts: WalOptions,
) -> Result<RecoveryReport, Error> {
    let applied = applied_seq(engine)?;
    let recovery =
        Recovery::read(dir, opts, applied).map_err(io_error("reading the write-ahead log"))?;
    let (records_read, records_replayed) = replay(engine, recovery.records(), applied)?;
    let seq = applied
        .max(recovery.last_seq())
        .max(recovery.checkpoint_seq());
    // Recovery ends with a checkpoint: the new generation starts from a
    // state that is on disk.
    sync(engine)?;
    let wal = recovery
        .start(seq + 1)
        .map_err(io_error("starting the write-ahead log"))?;
    engine.wal = Some(wal);
    Ok(RecoveryReport {
        records_read,
        records_replayed,
        seq,
    })
}

/// The WAL sequence number of the last change sled holds (0: none).
pub(super) fn applied_seq(engine: &Engine) -> Result<u64, Error> {
    let v = engine
        .tree(TreeId::Meta)
        .get(meta::WAL_SEQ)
        .map_err(storage("reading the applied sequence number"))?;
    match v {
        None => Ok(0),
        Some(v) => {
            v.as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::CorruptRecord {
                    tree: TreeId::Meta.name(),
                    key: super::encoding::printable_key(meta::WAL_SEQ),
                })
        }
    }
}

/// Applies the records newer than `applied` to sled: the last write of each
/// key wins, one batch per tree, the meta tree (with the new applied
/// sequence number) last. Not atomic across trees, and it need not be: a
/// crash midway leaves the applied number unchanged, so the next open
/// replays the same records again, which is idempotent.
/// Returns (records read, records replayed).
pub(super) fn replay<'a>(
    engine: &Engine,
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
    for ((tree, key), value) in latest {
        match value {
            Some(v) => batches[tree.index()].insert(key, v),
            None => batches[tree.index()].remove(key),
        }
    }
    batches[TreeId::Meta.index()].insert(meta::WAL_SEQ, last.to_be_bytes().to_vec());
    for (id, batch) in TreeId::ALL.iter().zip(batches).rev() {
        engine
            .tree(*id)
            .apply_batch(batch)
            .map_err(storage("replaying the write-ahead log"))?;
    }
    Ok((read, replayed))
}

/// A checkpoint: sled made durable up to a noted sequence number, recorded,
/// and the WAL behind it recycled. Without a WAL, just the sled part. With
/// `wait == false`, skipped when another checkpoint is running.
pub(super) fn checkpoint(engine: &Engine, wait: bool) -> Result<(), Error> {
    let Some(wal) = &engine.wal else {
        return sync(engine);
    };
    let Some(ticket) = wal.begin_checkpoint(wait) else {
        return Ok(());
    };
    sync(engine)?;
    wal.finish_checkpoint(ticket)
        .map_err(io_error("recording a checkpoint"))
}

/// Flushes sled and fdatasyncs its files (and `blobs/`), so that everything
/// applied so far survives a crash and power loss.
pub(super) fn sync(engine: &Engine) -> Result<(), Error> {
    engine.db.flush().map_err(storage("flushing"))?;
    let Some(dir) = &engine.dir else {
        return Ok(());
    };
    sync_files(dir).map_err(io_error("syncing the data files"))?;
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        sync_files(&blobs).map_err(io_error("syncing the data files"))?;
    }
    Ok(())
}

fn sync_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_data()?;
        }
    }
    wal::io::sync_dir(dir)
}
