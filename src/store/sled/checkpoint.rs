//! Checkpoints: sled made durable up to a noted sequence number, the number
//! recorded, and the write-ahead log behind it recycled.
//!
//! The sync of sled's files goes through [`DataFiles`], so that tests can
//! fail it (and remember what a crash would keep) the way `fault.rs` does
//! for the log's files. A failed flush or sync of sled's files, like a
//! failed sync of the log, puts the store in its failed state (fsyncgate:
//! a later sync of the same files may succeed without the lost pages): no
//! checkpoint is recorded after it, so the log keeps every change since the
//! last good one and a reopen recovers them.

use std::fs::File;
use std::io;
use std::path::Path;

use super::commit::{Settle, settle};
use super::{SledBackend, wal};
use crate::error::{Error, StorageError};

/// sled's files, as a checkpoint makes them durable.
pub(crate) trait DataFiles: Send + Sync {
    /// Writes sled's buffered changes to its files (sled's own flush, which
    /// issues `sync_file_range`, not `fsync`).
    fn flush(&self, db: &sled::Db) -> io::Result<()>;
    /// Makes sled's files in `dir` (and `dir/blobs`) durable: `fdatasync` of
    /// each, then `fsync` of the directory.
    fn sync(&self, db: &sled::Db, dir: &Path) -> io::Result<()>;
}

/// [`DataFiles`] on the real file system.
pub(crate) struct FsDataFiles;

impl DataFiles for FsDataFiles {
    fn flush(&self, db: &sled::Db) -> io::Result<()> {
        db.flush().map(drop).map_err(|e| match e {
            sled::Error::Io(io) => io,
            other => io::Error::other(other),
        })
    }

    fn sync(&self, _db: &sled::Db, dir: &Path) -> io::Result<()> {
        sync_files(dir)?;
        let blobs = dir.join("blobs");
        if blobs.is_dir() {
            sync_files(&blobs)?;
        }
        Ok(())
    }
}

fn sync_files(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_data()?;
        }
    }
    wal::io::sync_dir(dir)
}

/// A checkpoint: sled made durable up to a noted sequence number, recorded,
/// and the WAL behind it recycled. Without a WAL, just the sled part. With
/// `wait == false`, skipped when another checkpoint is running. Refused in
/// the failed state; a failure of any of its writes or syncs enters it.
pub(super) fn checkpoint(engine: &SledBackend, wait: bool) -> Result<(), Error> {
    let Some(wal) = &engine.wal else {
        return sync(engine).map_err(|(what, e)| Error::Storage(StorageError::new(what, e)));
    };
    let failed =
        |what: &'static str| move |e: io::Error| Error::Storage(StorageError::failed(what, e));
    // Cheap first: nothing is applied or synced for a checkpoint that
    // could not be recorded.
    wal.check().map_err(failed("making a checkpoint"))?;
    settle(engine, if wait { Settle::All } else { Settle::OneBatch })?;
    let ticket = match wal.begin_checkpoint(wait) {
        Ok(Some(ticket)) => ticket,
        Ok(None) => return Ok(()),
        Err(e) => return Err(failed("making a checkpoint")(e)),
    };
    if let Err((what, e)) = sync(engine) {
        wal.fail(what, &e);
        return Err(failed(what)(e));
    }
    wal.finish_checkpoint(ticket)
        .map_err(failed("recording a checkpoint"))
}

/// Flushes sled and syncs its files, so that everything applied so far
/// survives a crash and power loss. On failure: what failed, and how.
pub(super) fn sync(engine: &SledBackend) -> Result<(), (&'static str, io::Error)> {
    engine
        .data_files
        .flush(&engine.db)
        .map_err(|e| ("flushing the data files", e))?;
    let Some(dir) = &engine.dir else {
        return Ok(());
    };
    engine
        .data_files
        .sync(&engine.db, dir)
        .map_err(|e| ("syncing the data files", e))
}
