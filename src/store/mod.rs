//! The store layer (SPEC §2): the schema, record encoding, transactions,
//! the event log and the integrity check, over a storage backend.
//!
//! - `schema.rs`: every tree, its key encoding and value type ([`schema::Table`]);
//! - `records.rs` / `encoding.rs`: what the trees hold, and its bytes;
//! - `engine.rs` / `tx.rs`: the typed layer the operations use
//!   ([`Engine`], [`Tx`]);
//! - `backend.rs`: the storage seam, in bytes ([`backend::Backend`]);
//! - `sled/`: the sled backend, behind the store's own write-ahead log (the
//!   only place that names sled);
//! - `postgres/`: the PostgreSQL backend (feature `postgres`; the only
//!   place that names the `postgres` crate);
//! - `memory.rs`: a map in memory (tests: proof that the seam is real);
//! - `meta.rs`: the store's identity (magic value, format, secret);
//! - `integrity.rs`: the integrity check, on any backend;
//! - `dump.rs`: dump and restore as JSON Lines, on any backend.
//!
//! Errors of an engine leave this layer as the opaque [`StorageError`].
//!
//! [`StorageError`]: crate::StorageError

pub(crate) mod backend;
pub(crate) mod dump;
pub(crate) mod encoding;
mod engine;
mod fail_point;
mod health;
mod integrity;
pub(crate) mod memory;
mod meta;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod records;
pub(crate) mod schema;
mod sled;
#[cfg(feature = "fuzzing")]
pub(crate) use self::sled::packed::check_block as check_packed_block;
#[cfg(test)]
pub(crate) use self::sled::wal::announced_here;
mod truncation;
mod tx;

use std::path::Path;

pub use self::sled::compact::{CompactPages, Compaction};
pub(crate) use engine::Engine;
#[cfg(feature = "server")]
pub(crate) use engine::commits_begun;
pub use fail_point::FailPoint;
pub use health::{Health, LogStats, Retries};
pub use integrity::IntegrityReport;
pub use truncation::LogTruncation;

use crate::error::Error;
pub(crate) use tx::{Tx, TxError};

/// How a commit is made durable before the call that made it returns.
///
/// Either way every change is written to the store's write-ahead log (in the
/// `wal/` folder of the data directory) in commit order, and a checkpoint
/// (every 64 MiB of log or every minute of writing, and at clean close or
/// [`crate::Store::flush`]) makes sled's own files durable. Temporary stores
/// have no log: nothing of them outlives the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// A call that changes something returns only once the change's log
    /// record is on disk (`fdatasync`). Concurrent writers share one sync
    /// (group commit). An acknowledged change survives `kill -9`, an OS crash
    /// and power loss. The default.
    #[default]
    Immediate,
    /// The log record is written but not synced before the call returns.
    /// An acknowledged change survives the process being killed (the OS still
    /// holds the written bytes), but an **OS crash or power loss loses the
    /// changes since the last checkpoint that the OS had not yet written
    /// back** on its own (Linux's writeback: up to about 30 s; sled's
    /// 500 ms flush may have saved some of them). What survives is still a
    /// consistent prefix of the commits. For bulk imports and tests.
    PeriodicFlushLosesRecentChanges,
}

/// What opening a store needs to know (each backend takes its part).
pub(crate) struct EngineOptions {
    pub durability: Durability,
    pub cache_capacity: u64,
    pub defer_replay_bytes: u64,
    /// How long a group commit waits for expected commits (the WAL's
    /// [`crate::Config::with_commit_delay`]).
    pub commit_delay: std::time::Duration,
    /// How many password hashes run at once ([`crate::Config::with_hashing_limit`]):
    /// the commit delay waits only while more are announced.
    pub hashing_limit: usize,
    /// Whether a new store's sled pages are compressed
    /// ([`crate::Config::with_page_compression`]).
    pub compress_pages: bool,
    /// The CA certificates that a PostgreSQL server's certificate must
    /// chain to ([`crate::Config::with_postgres_ca_file`]); `None`:
    /// Mozilla's roots.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub postgres_ca_file: Option<std::path::PathBuf>,
    pub fingerprint: [u8; 32],
    pub first_box_id: u64,
    pub fail_point: Option<FailPoint>,
}

/// The store at `path` on the sled backend (with its write-ahead log),
/// created when the directory is absent or empty.
pub(crate) fn open_on_disk(path: &Path, opts: EngineOptions) -> Result<Engine, Error> {
    let backend = sled::SledBackend::open(path, &opts)?;
    Ok(Engine::new(Box::new(backend), opts.fail_point))
}

/// Rewrites the store at `path` in key order ([`crate::Store::compact`]).
pub(crate) fn compact(
    path: &Path,
    pages: CompactPages,
    fail: Option<&FailPoint>,
) -> Result<Compaction, Error> {
    self::sled::compact::compact(path, pages, fail)
}

/// [`open_on_disk`] that accepts losing the records after a damaged one in
/// the middle of the log; returns what it dropped, if anything.
pub(crate) fn open_truncating_log(
    path: &Path,
    opts: EngineOptions,
) -> Result<(Engine, Option<LogTruncation>), Error> {
    let (backend, truncated) = sled::SledBackend::open_truncating_log(path, &opts)?;
    Ok((Engine::new(Box::new(backend), opts.fail_point), truncated))
}

/// A store on the sled backend in a temporary directory, without a log.
pub(crate) fn temporary(opts: EngineOptions) -> Result<Engine, Error> {
    let backend = sled::SledBackend::temporary(&opts)?;
    Ok(Engine::new(Box::new(backend), opts.fail_point))
}

/// The store in the PostgreSQL database at `url` (schema created when
/// missing).
#[cfg(feature = "postgres")]
pub(crate) fn open_postgres(url: &str, opts: EngineOptions) -> Result<Engine, Error> {
    let backend = postgres::PostgresBackend::open(url, &opts)?;
    Ok(Engine::new(Box::new(backend), opts.fail_point))
}

/// A store on the memory backend, every transaction's body run twice.
pub(crate) fn in_memory(opts: EngineOptions) -> Result<Engine, Error> {
    let backend = memory::MemoryBackend::open(&opts, true)?;
    Ok(Engine::new(Box::new(backend), opts.fail_point))
}

/// How many `fdatasync`s of a write-ahead log have succeeded in this
/// process (on the real file system).
pub(crate) fn wal_fdatasyncs() -> u64 {
    sled::wal::io::syncs()
}

/// The model check's crashing store: the sled backend over an in-memory
/// log that keeps only what was synced ([`faults::MemDir`]).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod faults {
    pub(crate) use super::memory::MemoryState;
    pub(crate) use super::sled::wal::fault::{Crash, FaultyData, MemDir};
    #[cfg(test)]
    pub(crate) use super::sled::wal::fault::{Faults, Op};

    /// The store at `path` over `wal` and `data` (see [`MemDir`]).
    pub(crate) fn open(
        path: &std::path::Path,
        opts: super::EngineOptions,
        wal: &MemDir,
        data: &std::sync::Arc<FaultyData>,
    ) -> Result<super::Engine, crate::Error> {
        let backend = super::sled::wal::fault::open_faulty(path, &opts, wal, data)?;
        Ok(super::Engine::new(Box::new(backend), opts.fail_point))
    }

    /// The store held by `state` on the memory backend (every transaction's
    /// body run twice), created when `state` is empty.
    pub(crate) fn open_memory(
        state: &MemoryState,
        opts: super::EngineOptions,
    ) -> Result<super::Engine, crate::Error> {
        let backend = super::memory::MemoryBackend::reopen(state.clone(), &opts, true)?;
        Ok(super::Engine::new(Box::new(backend), opts.fail_point))
    }
}
