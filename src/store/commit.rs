//! The one commit function: run the transaction, then make it durable.
//!
//! Until the write-ahead log lands, durability is a sled flush followed by an
//! fdatasync of sled's files and directory. The WAL replaces [`sync`] and the
//! tail of [`run`] with an append of the redo set and a group-committed sync.

use std::fs::File;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::tx::{Redo, Tx, TxError};
use super::{Durability, Engine, storage};
use crate::error::{Error, StorageError};

pub(super) fn run<T>(
    engine: &Engine,
    f: impl Fn(&Tx<'_>) -> Result<T, TxError>,
) -> Result<T, Error> {
    let redo: std::cell::RefCell<Vec<Redo>> = std::cell::RefCell::new(Vec::new());
    let result = engine.trees[..].transaction(|trees| {
        let tx = Tx::new(trees, engine.fail_point.as_ref());
        let out = f(&tx).map_err(|TxError(e)| e)?;
        // Keep only the redo set of the attempt that commits.
        *redo.borrow_mut() = tx.redo.take();
        Ok::<_, ConflictableTransactionError<Error>>(out)
    });
    let out = match result {
        Ok(out) => out,
        Err(TransactionError::Abort(e)) => return Err(e),
        Err(TransactionError::Storage(e)) => return Err(storage("committing a transaction")(e)),
    };
    if !redo.borrow().is_empty() && engine.durability == Durability::Immediate {
        sync(engine)?;
    }
    Ok(out)
}

/// Flushes sled and fdatasyncs its files, so that everything committed so far
/// survives a crash and power loss.
pub(super) fn sync(engine: &Engine) -> Result<(), Error> {
    engine.db.flush().map_err(storage("flushing"))?;
    let Some(dir) = &engine.dir else {
        return Ok(());
    };
    let io = |e: std::io::Error| Error::Storage(StorageError::new("syncing the data files", e));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            File::open(entry.path())
                .and_then(|f| f.sync_data())
                .map_err(io)?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}
