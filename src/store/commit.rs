//! The one commit function, and the engine's side of the write-ahead log:
//! replay at open and checkpoints.
//!
//! A commit ([`run`]) enters the WAL's writer section, runs the sled
//! transaction (which also stores the record's sequence number in the meta
//! tree, atomically with the change), appends the redo set of the attempt that
//! committed, leaves the section and waits for the group commit. Stores
//! without a directory (temporary ones) have no WAL: nothing of them outlives
//! the process anyway.
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
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::tx::{Redo, Tx, TxError};
use super::wal::{self, Recovery, WalDir, WalOptions, redo};
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
    let (out, redo) = apply(engine, &f, Some((seq, writer.max_payload())))?;
    if redo.is_empty() {
        return Ok(out);
    }
    let mut payload = Vec::with_capacity(redo::encoded_len(&redo));
    redo::encode(&mut payload, &redo);
    writer
        .append(&payload)
        .map_err(io_error("writing the write-ahead log"))?;
    drop(writer);
    wal.wait_durable(seq)
        .map_err(io_error("syncing the write-ahead log"))?;
    // Housekeeping after the change is durable: the caller's result is
    // already safe, so a failure here is reported but changes nothing.
    if wal.checkpoint_due() {
        checkpoint(engine, false)?;
    }
    wal.prepare_spare()
        .map_err(io_error("preparing a write-ahead log segment"))?;
    Ok(out)
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
                return Err(ConflictableTransactionError::Abort(Error::Storage(
                    StorageError::new(
                        "committing a transaction",
                        "the transaction is larger than a write-ahead log segment",
                    ),
                )));
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
    let t0 = std::time::Instant::now();
    let recovery = Recovery::read(dir, opts).map_err(io_error("reading the write-ahead log"))?;
    let applied = applied_seq(engine)?;
    let t1 = t0.elapsed();
    let (records_read, records_replayed) = replay(engine, recovery.records(), applied)?;
    let t2 = t0.elapsed();
    let seq = applied
        .max(recovery.last_seq())
        .max(recovery.checkpoint_seq());
    // Recovery ends with a checkpoint: the new generation starts from a
    // state that is on disk.
    sync(engine)?;
    let t3 = t0.elapsed();
    eprintln!("TIMING read {t1:?} replay {t2:?} sync {t3:?}");
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
    eprintln!("TIMING decoded {} keys", latest.len());
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
        let t = std::time::Instant::now();
        engine
            .tree(*id)
            .apply_batch(batch)
            .map_err(storage("replaying the write-ahead log"))?;
        eprintln!("TIMING batch {:?} {:?}", id, t.elapsed());
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
