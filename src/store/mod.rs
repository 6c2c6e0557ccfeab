//! The store layer: sled trees, record encoding, transactions, durability,
//! the event log and the integrity check. sled appears nowhere else; its
//! errors leave this module as the opaque [`StorageError`].

mod checkpoint;
mod commit;
pub(crate) mod encoding;
mod fail_point;
mod health;
mod integrity;
mod meta;
mod overlay;
mod perms;
pub(crate) mod records;
pub(crate) mod schema;
mod truncation;
mod tx;
pub(crate) mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, StorageError};

pub(crate) use checkpoint::{DataFiles, FsDataFiles};
pub use fail_point::FailPoint;
pub use health::{Health, LogStats};
pub use integrity::IntegrityReport;
pub(crate) use schema::TreeId;
use schema::{Counter, Key, Table, Value};
pub use truncation::LogTruncation;
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

/// Events removed per transaction by [`Engine::trim_events`].
const TRIM_BATCH: usize = 256;

pub(crate) fn storage(context: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| {
        Error::Storage(match e {
            // The I/O error itself, so that a full disk is told as one.
            sled::Error::Io(io) => StorageError::new(context, io),
            other => StorageError::new(context, other),
        })
    }
}

/// The sled database behind a store.
pub(crate) struct Engine {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    dir: Option<PathBuf>,
    durability: Durability,
    fail_point: Option<FailPoint>,
    /// Where [`Counter::BoxId`] starts.
    first_box_id: u64,
    /// `None` for temporary stores, and while a new store is initialised.
    wal: Option<wal::Wal>,
    /// Serialises the commits of a store without a log.
    unlogged_writer: std::sync::Mutex<()>,
    recovery: commit::RecoveryReport,
    /// How a checkpoint makes sled's files durable.
    data_files: Arc<dyn DataFiles>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// What [`Engine::open`] needs to know.
pub(crate) struct EngineOptions {
    pub durability: Durability,
    pub cache_capacity: u64,
    pub defer_replay_bytes: u64,
    pub fingerprint: [u8; 32],
    pub first_box_id: u64,
    pub fail_point: Option<FailPoint>,
}

/// How [`Engine::open_with`] opens: the file layers and what recovery may do.
pub(crate) struct OpenWith<F> {
    /// Opens the write-ahead log's directory, given the data directory.
    pub wal_dir: F,
    pub wal_opts: wal::WalOptions,
    /// How checkpoints make sled's files durable.
    pub data_files: Arc<dyn DataFiles>,
    /// Accept losing the records after a damaged one in the middle of the
    /// log (else such a log is refused with [`Error::CorruptLog`]).
    pub truncate_at_corruption: bool,
}

impl Engine {
    /// Opens the store at `path`, creating it when the directory is absent or empty.
    /// Recovers its write-ahead log (`<path>/wal/`) before anything writes.
    pub fn open(path: &Path, opts: EngineOptions) -> Result<Self, Error> {
        Self::open_on_disk(path, opts, false)
    }

    /// [`Engine::open`] that accepts losing the records after a damaged one
    /// in the middle of the log; returns what it dropped, if anything.
    pub fn open_truncating_log(
        path: &Path,
        opts: EngineOptions,
    ) -> Result<(Self, Option<LogTruncation>), Error> {
        if !path.join("conf").is_file() {
            return Err(Error::Storage(StorageError::new(
                "recovering the store",
                format!("there is no store at {}", path.display()),
            )));
        }
        let engine = Self::open_on_disk(path, opts, true)?;
        let truncated = engine.recovery.truncated.clone();
        Ok((engine, truncated))
    }

    fn open_on_disk(path: &Path, opts: EngineOptions, truncate: bool) -> Result<Self, Error> {
        let wal_opts = wal::WalOptions {
            defer_replay_bytes: opts.defer_replay_bytes,
            ..wal::WalOptions::new(opts.durability == Durability::Immediate)
        };
        let with = OpenWith {
            wal_dir: |p: &Path| -> std::io::Result<Box<dyn wal::WalDir>> {
                Ok(Box::new(wal::FsDir::open(p.join("wal"))?))
            },
            wal_opts,
            data_files: Arc::new(FsDataFiles),
            truncate_at_corruption: truncate,
        };
        Self::open_with(path, opts, with)
    }

    /// [`Engine::open`] with a chosen WAL backend and sizes (tests).
    #[cfg(test)]
    pub(crate) fn open_with_wal(
        path: &Path,
        opts: EngineOptions,
        wal_opts: wal::WalOptions,
        wal_dir: impl FnOnce(&Path) -> std::io::Result<Box<dyn wal::WalDir>> + Send,
    ) -> Result<Self, Error> {
        let with = OpenWith {
            wal_dir,
            wal_opts,
            data_files: Arc::new(FsDataFiles),
            truncate_at_corruption: false,
        };
        Self::open_with(path, opts, with)
    }

    /// [`Engine::open`] with chosen file layers, sizes and recovery.
    pub(crate) fn open_with<F>(
        path: &Path,
        opts: EngineOptions,
        with: OpenWith<F>,
    ) -> Result<Self, Error>
    where
        F: FnOnce(&Path) -> std::io::Result<Box<dyn wal::WalDir>> + Send,
    {
        let OpenWith {
            wal_dir,
            wal_opts,
            data_files,
            truncate_at_corruption,
        } = with;
        meta::check_directory(path)?;
        perms::create_private_dir(path)?;
        if let Some(warning) = perms::exposure(path) {
            tracing::warn!("{warning}");
        }
        let wal_error = |e| Error::Storage(StorageError::new("opening the write-ahead log", e));
        // An existing log is read while sled opens (both take a while with a
        // big store); a new store's log is created only once sled's meta
        // checks have passed.
        let existing_log = path.join("wal").join("checkpoint").is_file();
        let mut wal_dir = Some(wal_dir);
        let (db, preloaded) = std::thread::scope(|s| {
            let loader = if existing_log {
                wal_dir
                    .take()
                    .map(|open_dir| s.spawn(move || wal::Recovery::load(open_dir(path)?, wal_opts)))
            } else {
                None
            };
            let db = sled::Config::new()
                .path(path)
                .cache_capacity(opts.cache_capacity)
                .flush_every_ms(Some(500))
                .open()
                .map_err(open_error);
            let preloaded = loader.map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("reading the log panicked")))
            });
            (db, preloaded)
        });
        let db = db?;
        // The meta checks read only what store creation wrote, and creation
        // is made durable by the checkpoint that starts the log; a new store
        // is initialised before its log exists.
        let mut engine = Self::from_db(db, Some(path.to_path_buf()), opts)?;
        engine.data_files = data_files;
        // `wal_dir` was used by the loader exactly when `preloaded` is set.
        let loaded = match (preloaded, wal_dir) {
            (Some(loaded), _) => loaded,
            (None, Some(open_dir)) => open_dir(path).and_then(|d| wal::Recovery::load(d, wal_opts)),
            (None, None) => Err(std::io::Error::other("the log directory was not opened")),
        }
        .map_err(wal_error)?;
        engine.recovery = commit::start_wal(&mut engine, loaded, truncate_at_corruption)?;
        perms::restrict_files(path);
        Ok(engine)
    }

    /// A store in memory (a temporary directory sled removes on drop), with
    /// no write-ahead log.
    pub fn temporary(opts: EngineOptions) -> Result<Self, Error> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(opts.cache_capacity)
            .open()
            .map_err(storage("creating a temporary store"))?;
        Self::from_db(db, None, opts)
    }

    fn from_db(db: sled::Db, dir: Option<PathBuf>, opts: EngineOptions) -> Result<Self, Error> {
        let mut trees = Vec::with_capacity(TreeId::ALL.len());
        for id in TreeId::ALL {
            trees.push(db.open_tree(id.name()).map_err(storage("opening a tree"))?);
        }
        let engine = Self {
            db,
            trees,
            dir,
            durability: opts.durability,
            fail_point: opts.fail_point,
            first_box_id: opts.first_box_id,
            wal: None,
            unlogged_writer: std::sync::Mutex::new(()),
            recovery: commit::RecoveryReport::default(),
            data_files: Arc::new(FsDataFiles),
        };
        meta::check_or_init(&engine, &opts.fingerprint, opts.first_box_id)?;
        Ok(engine)
    }

    pub(crate) fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id.index()]
    }

    /// A point read outside any transaction: the newest durable value.
    pub fn get_bytes(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        if let Some(wal) = &self.wal
            && let overlay::Found::Logged(v) = wal.overlay().get_durable(id, key)
        {
            return Ok(v);
        }
        self.tree(id).get(key).map_err(storage("reading"))
    }

    /// Applies every durable change still held in memory to sled, so that
    /// sled's own iterators see it (scans, the integrity check).
    pub(crate) fn settle(&self) -> Result<(), Error> {
        commit::settle(self, commit::Settle::All)
    }

    /// [`Engine::settle`] when `id` has changes not yet in sled.
    fn settle_tree(&self, id: TreeId) -> Result<(), Error> {
        match &self.wal {
            Some(wal) if !wal.overlay().is_clear(id) => self.settle(),
            _ => Ok(()),
        }
    }

    /// The bytes of `key` in `tree`, as stored (the integrity check).
    pub(crate) fn get_raw(&self, tree: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_bytes(tree, key)?.map(|v| v.to_vec()))
    }

    /// The meta row a counter lives in, and its value when the row is absent.
    pub(crate) fn counter_row(&self, counter: Counter) -> (&'static [u8], u64) {
        match counter {
            Counter::BoxId => (meta::NEXT_BOX_ID, self.first_box_id),
            Counter::EventSeq => (meta::EVENT_SEQ, 1),
        }
    }

    /// The value of `key` in `table` (the newest durable one).
    pub fn get<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<Option<V>, Error> {
        K::with_bytes(key, |k| match self.get_bytes(table.tree, k)? {
            Some(v) => V::decode(table.tree, k, &v).map(Some),
            None => Ok(None),
        })
    }

    /// Whether `table` holds `key` (its value is not decoded).
    pub fn contains<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
    ) -> Result<bool, Error> {
        K::with_bytes(key, |k| Ok(self.get_bytes(table.tree, k)?.is_some()))
    }

    /// `read(key bytes, value bytes)` over the value of `key` in `table`,
    /// without copying it (a decoder that borrows from the value).
    pub fn read<K: Key + ?Sized, V: Value, R>(
        &self,
        table: &Table<K, V>,
        key: K::Arg<'_>,
        read: impl FnOnce(&[u8], &[u8]) -> Result<R, Error>,
    ) -> Result<Option<R>, Error> {
        K::with_bytes(key, |k| match self.get_bytes(table.tree, k)? {
            Some(v) => read(k, &v).map(Some),
            None => Ok(None),
        })
    }

    /// Up to `limit` rows of `table` from `start` on (key bytes; empty:
    /// from the first), in key order: each key's bytes and its value.
    pub fn scan_from<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        self.scan(table.tree, start, limit)?
            .into_iter()
            .map(|(k, v)| Ok((k.to_vec(), V::decode(table.tree, &k, &v)?)))
            .collect()
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

    /// Calls `f` with every row of `tree` in key order, a page at a time
    /// (no lock held while `f` runs: it may read the store).
    pub(crate) fn for_each_row(
        &self,
        tree: TreeId,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        const PAGE: usize = 1024;
        let mut start = Vec::new();
        loop {
            let rows = self.scan(tree, &start, PAGE)?;
            for (k, v) in &rows {
                f(k, v)?;
            }
            match rows.last() {
                Some((k, _)) if rows.len() == PAGE => {
                    start = k.to_vec();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// The last `limit` rows of `table`, in key order.
    pub fn scan_last<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, V)>, Error> {
        self.scan_tail(table.tree, limit)?
            .into_iter()
            .map(|(k, v)| Ok((k.to_vec(), V::decode(table.tree, &k, &v)?)))
            .collect()
    }

    /// Up to `limit` records of a tree from `start` on, in key order.
    pub fn scan(
        &self,
        id: TreeId,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, Error> {
        self.settle_tree(id)?;
        let mut out = Vec::new();
        for item in self.tree(id).range(start..).take(limit) {
            out.push(item.map_err(storage("scanning"))?);
        }
        Ok(out)
    }

    /// The last `limit` records of a tree, in key order.
    pub fn scan_tail(
        &self,
        id: TreeId,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, Error> {
        self.settle_tree(id)?;
        let mut out = Vec::new();
        for item in self.tree(id).iter().rev().take(limit) {
            out.push(item.map_err(storage("scanning"))?);
        }
        out.reverse();
        Ok(out)
    }

    /// Runs `f` as one transaction over every tree, then makes the change
    /// durable before returning. `f` may run more than once: it must do no I/O,
    /// no hashing, and nothing with side effects outside the [`Tx`].
    pub fn transact<T>(&self, f: impl Fn(&Tx<'_>) -> Result<T, TxError>) -> Result<T, Error> {
        let out = commit::run(self, f)?;
        Ok(out)
    }

    /// Removes events with a sequence number below `before`, in small
    /// transactions (each logged like any other change).
    pub fn trim_events(&self, before: u64) -> Result<usize, Error> {
        let mut removed = 0;
        loop {
            let keys: Vec<sled::IVec> = self
                .scan(TreeId::Events, &[], TRIM_BATCH)?
                .into_iter()
                .map(|(k, _)| k)
                .take_while(|k| k.as_ref() < before.to_be_bytes().as_slice())
                .collect();
            if keys.is_empty() {
                return Ok(removed);
            }
            self.transact(|tx| {
                for k in &keys {
                    tx.delete_bytes(TreeId::Events, k)?;
                }
                Ok(())
            })?;
            removed += keys.len();
        }
    }

    /// Checks that every index entry points at its record and every record is indexed.
    pub fn check_integrity(&self) -> Result<IntegrityReport, Error> {
        self.settle()?;
        integrity::check(self)
    }

    /// Makes everything written so far durable in sled's own files and
    /// recycles the write-ahead log behind it (a checkpoint; also at clean close).
    pub fn flush(&self) -> Result<(), Error> {
        checkpoint::checkpoint(self, true)
    }

    /// Whether the store accepts writes (not in its failed state).
    pub fn health(&self) -> Health {
        match self.wal.as_ref().and_then(wal::Wal::failure) {
            Some(cause) => Health::Failed { cause },
            None => Health::Writable,
        }
    }

    /// What the log did since the store was opened.
    pub fn log_stats(&self) -> health::LogStats {
        let Some(wal) = &self.wal else {
            return health::LogStats::default();
        };
        let c = wal.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        health::LogStats {
            commits: load(&c.records),
            bytes: load(&c.bytes),
            syncs: wal.sync_count(),
            group_sizes: std::array::from_fn(|i| load(&c.group_sizes[i])),
            checkpoints: load(&c.checkpoints),
        }
    }

    /// What recovery did when this engine was opened.
    #[cfg(test)]
    pub(crate) fn recovery(&self) -> commit::RecoveryReport {
        self.recovery.clone()
    }

    /// The write-ahead log, when the store has one.
    #[cfg(test)]
    pub(crate) fn wal(&self) -> Option<&wal::Wal> {
        self.wal.as_ref()
    }

    /// Bytes sled reports on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.db
            .size_on_disk()
            .map_err(storage("measuring the database"))
    }
}

fn open_error(e: sled::Error) -> Error {
    match e {
        // sled wraps the flock failure in another io::Error; its text says so.
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock") =>
        {
            Error::Storage(StorageError::new(
                "opening the data directory",
                "it is locked by another process (is a credstore server or command running on it?)",
            ))
        }
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => Error::UnknownFormat {
            found: format!("sled refused the files: {e}"),
        },
        other => Error::Storage(StorageError::new("opening the data directory", other)),
    }
}
