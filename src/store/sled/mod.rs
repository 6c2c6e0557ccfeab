//! The sled backend: sled 0.34.7 behind the store's own write-ahead log,
//! group commit and overlay (SPEC §5.5), and the only place that names
//! sled. Its errors leave this folder as the opaque [`StorageError`].
//!
//! - `tx.rs`: one run of a transaction (reads through the overlay, writes
//!   as a redo set);
//! - `commit.rs`: a commit, applying logged changes to sled, and the
//!   recovery at open;
//! - `overlay.rs`: the changes logged but not yet in sled, for reads;
//! - `packed.rs`: the trees of many small rows, kept in blocks (format
//!   version 2);
//! - `checkpoint.rs`: sled made durable and the log recycled behind it;
//! - `wal/`: the write-ahead log itself (its own table of contents);
//! - `perms.rs`: the data directory's permissions.

mod checkpoint;
mod commit;
pub(crate) mod compact;
#[cfg(test)]
mod format_tests;
mod overlay;
pub(crate) mod packed;
mod perms;
mod tx;
pub(crate) mod wal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, StorageError};
use crate::store::backend::{Backend, BackendTx, Rows};
use crate::store::health::{Health, LogStats};
use crate::store::schema::TreeId;
use crate::store::{Durability, EngineOptions, LogTruncation, meta};

pub(crate) use checkpoint::{DataFiles, FsDataFiles};

/// The meta row holding the write-ahead log sequence number of the last
/// change applied to sled (u64 BE), written in the same sled transaction
/// as the change.
pub(crate) const WAL_SEQ: &[u8] = b"wal_applied_seq";

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
pub(crate) struct SledBackend {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    dir: Option<PathBuf>,
    durability: Durability,
    /// Where [`crate::store::schema::Counter::BoxId`] starts.
    first_box_id: u64,
    /// `None` for temporary stores, and while a new store is initialised.
    wal: Option<wal::Wal>,
    /// Serialises the commits of a store without a log.
    unlogged_writer: std::sync::Mutex<()>,
    recovery: commit::RecoveryReport,
    /// How a checkpoint makes sled's files durable.
    data_files: Arc<dyn DataFiles>,
    /// The store's format version ([`FORMAT_PACKED`] or
    /// [`meta::FORMAT_VERSION`]).
    format: u32,
    /// Held for writing while the applier replaces blocks of the packed
    /// trees, for reading while a scan reads several of them.
    packed_lock: std::sync::RwLock<()>,
}

/// The format version of stores whose email index and event log are
/// packed in blocks (`packed.rs`); the stores made before it (version 1,
/// [`meta::FORMAT_VERSION`]) keep one sled row per row until `credstore
/// compact` rewrites them. Older builds refuse a version 2 store.
pub(crate) const FORMAT_PACKED: u32 = 2;

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// How [`SledBackend::open_with`] opens: the file layers and what recovery may do.
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

impl SledBackend {
    /// Opens the store at `path`, creating it when the directory is absent or empty.
    /// Recovers its write-ahead log (`<path>/wal/`) before anything writes.
    pub fn open(path: &Path, opts: &EngineOptions) -> Result<Self, Error> {
        Self::open_on_disk(path, opts, false)
    }

    /// [`SledBackend::open`] that accepts losing the records after a damaged one
    /// in the middle of the log; returns what it dropped, if anything.
    pub fn open_truncating_log(
        path: &Path,
        opts: &EngineOptions,
    ) -> Result<(Self, Option<LogTruncation>), Error> {
        if path.is_dir() {
            let _lock = compact::DirLock::acquire(path)?;
            compact::finish_interrupted(path)?;
        }
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

    fn open_on_disk(path: &Path, opts: &EngineOptions, truncate: bool) -> Result<Self, Error> {
        let wal_opts = wal::WalOptions {
            defer_replay_bytes: opts.defer_replay_bytes,
            commit_delay: opts.commit_delay,
            delay_beyond: opts.hashing_limit,
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

    /// [`SledBackend::open`] with a chosen WAL backend and sizes (tests).
    #[cfg(test)]
    pub(crate) fn open_with_wal(
        path: &Path,
        opts: &EngineOptions,
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

    /// [`SledBackend::open`] with chosen file layers, sizes and recovery.
    pub(crate) fn open_with<F>(
        path: &Path,
        opts: &EngineOptions,
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
        // The directory's lock, held while sled opens: a compaction swaps
        // sled's files under it, and one a crash interrupted is finished
        // (or undone) here first.
        let lock = if path.is_dir() {
            let lock = compact::DirLock::acquire(path)?;
            compact::finish_interrupted(path)?;
            Some(lock)
        } else {
            None
        };
        check_directory(path)?;
        perms::create_private_dir(path)?;
        let _lock = match lock {
            Some(lock) => lock,
            None => compact::DirLock::acquire(path)?,
        };
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
            let db = open_sled(path, opts.cache_capacity, opts.compress_pages);
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
    pub fn temporary(opts: &EngineOptions) -> Result<Self, Error> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(opts.cache_capacity)
            .open()
            .map_err(storage("creating a temporary store"))?;
        Self::from_db(db, None, opts)
    }

    fn from_db(db: sled::Db, dir: Option<PathBuf>, opts: &EngineOptions) -> Result<Self, Error> {
        let mut trees = Vec::with_capacity(TreeId::ALL.len());
        for id in TreeId::ALL {
            trees.push(db.open_tree(id.name()).map_err(storage("opening a tree"))?);
        }
        let format = stored_format(&trees[TreeId::Meta.index()])?;
        let engine = Self {
            db,
            trees,
            dir,
            durability: opts.durability,
            first_box_id: opts.first_box_id,
            wal: None,
            unlogged_writer: std::sync::Mutex::new(()),
            recovery: commit::RecoveryReport::default(),
            data_files: Arc::new(FsDataFiles),
            format,
            packed_lock: std::sync::RwLock::new(()),
        };
        meta::check_or_init(&engine, &opts.fingerprint, opts.first_box_id, || {
            engine.holds_nothing()
        })?;
        Ok(engine)
    }

    pub(crate) fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id.index()]
    }

    /// Whether `id` is kept in blocks in this store (`packed.rs`).
    pub(crate) fn packs(&self, id: TreeId) -> bool {
        self.format == FORMAT_PACKED && packed::is_packed(id)
    }

    /// A point read of sled alone (no overlay).
    pub(crate) fn sled_get(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        if self.packs(id) {
            packed::get(self.tree(id), id, key)
        } else {
            self.tree(id).get(key).map_err(storage("reading"))
        }
    }

    /// Calls `f` with every row of `id` that sled holds, in key order.
    #[cfg(test)]
    pub(crate) fn sled_for_each(
        &self,
        id: TreeId,
        f: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let _blocks = self.reading_blocks();
        packed::for_each(self.tree(id), id, self.packs(id), f)
    }

    /// Held while a scan reads several blocks of a packed tree.
    fn reading_blocks(&self) -> RwLockReadGuard<'_, ()> {
        self.packed_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Held while the applier replaces blocks of the packed trees.
    pub(super) fn writing_blocks(&self) -> RwLockWriteGuard<'_, ()> {
        self.packed_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A point read outside any transaction: the newest durable value
    /// (and, on a thread that defers its commits, its own).
    pub fn get_bytes(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        if let Some(wal) = &self.wal
            && let overlay::Found::Logged(v) = wal.overlay().get_upto(id, key, wal.visible())
        {
            return Ok(v);
        }
        self.sled_get(id, key)
    }

    /// Applies every durable change still held in memory to sled, so that
    /// sled's own iterators see it (tests; scans settle one tree through
    /// what is durable when they begin: [`SledBackend::settle_tree`]).
    #[cfg(test)]
    pub(crate) fn settle(&self) -> Result<(), Error> {
        commit::settle(self, commit::Settle::All)
    }

    /// When `id` has changes not yet in sled, applies every change durable
    /// now (not those that become durable while it applies: a scan sees
    /// what was durable when it began).
    fn settle_tree(&self, id: TreeId) -> Result<(), Error> {
        match &self.wal {
            Some(wal) if !wal.overlay().is_clear(id) => {
                commit::settle(self, commit::Settle::Through(wal.overlay().durable()))
            }
            _ => Ok(()),
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

    /// `true` when sled holds nothing at all: no row in any tree, and no
    /// tree but credstore's own and sled's default one (a directory that
    /// may become a store).
    fn holds_nothing(&self) -> bool {
        let ours = |n: &[u8]| TreeId::ALL.iter().any(|t| t.name().as_bytes() == n);
        TreeId::ALL.iter().all(|t| self.tree(*t).is_empty())
            && self
                .db
                .tree_names()
                .iter()
                .all(|n| ours(n) || n.as_ref() == b"__sled__default")
            && self.db.is_empty()
    }
}

impl Backend for SledBackend {
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        let v = self.get_bytes(tree, key)?;
        found(v.as_deref());
        Ok(())
    }

    fn scan(&self, tree: TreeId, start: &[u8], limit: usize) -> Result<Rows, Error> {
        self.settle_tree(tree)?;
        self.scan_applied(tree, start, limit)
    }

    fn scan_applied(&self, tree: TreeId, start: &[u8], limit: usize) -> Result<Rows, Error> {
        if self.packs(tree) {
            let _blocks = self.reading_blocks();
            return packed::scan(self.tree(tree), tree, start, limit);
        }
        let mut out = Vec::new();
        for item in self.tree(tree).range(start..).take(limit) {
            let (k, v) = item.map_err(storage("scanning"))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn scan_last(&self, tree: TreeId, limit: usize) -> Result<Rows, Error> {
        self.settle_tree(tree)?;
        if self.packs(tree) {
            let _blocks = self.reading_blocks();
            return packed::scan_last(self.tree(tree), tree, limit);
        }
        let mut out = Vec::new();
        for item in self.tree(tree).iter().rev().take(limit) {
            let (k, v) = item.map_err(storage("scanning"))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        out.reverse();
        Ok(out)
    }

    fn transact(&self, body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>) -> Result<(), Error> {
        commit::run(self, body)
    }

    fn format_version(&self) -> u32 {
        self.format
    }

    /// Makes everything written so far durable in sled's own files and
    /// recycles the write-ahead log behind it (a checkpoint; also at clean close).
    fn flush(&self) -> Result<(), Error> {
        checkpoint::checkpoint(self, true)
    }

    /// Whether the store accepts writes (not in its failed state).
    fn health(&self) -> Health {
        match self.wal.as_ref().and_then(wal::Wal::failure) {
            Some(cause) => Health::Failed { cause },
            None => Health::Writable,
        }
    }

    /// What the log did since the store was opened.
    fn log_stats(&self) -> LogStats {
        let Some(wal) = &self.wal else {
            return LogStats::default();
        };
        let c = wal.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        LogStats {
            commits: load(&c.records),
            bytes: load(&c.bytes),
            syncs: wal.sync_count(),
            group_sizes: std::array::from_fn(|i| load(&c.group_sizes[i])),
            checkpoints: load(&c.checkpoints),
            retries: super::health::Retries::default(),
        }
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.db
            .size_on_disk()
            .map_err(storage("measuring the database"))
    }

    fn expect_commit(&self) -> Option<crate::store::backend::ExpectedCommit<'_>> {
        let expected = self.wal.as_ref()?.expect_commit()?;
        Some(Box::new(expected))
    }

    fn defers(&self) -> bool {
        self.wal.as_ref().is_some_and(wal::Wal::syncing)
    }

    fn deferring(&self, f: &mut dyn FnMut()) -> u64 {
        match &self.wal {
            Some(wal) => wal.deferring(f).1,
            None => {
                f();
                0
            }
        }
    }

    fn durable_seq(&self) -> u64 {
        self.wal.as_ref().map_or(0, |w| w.overlay().durable())
    }

    fn logged_seq(&self) -> u64 {
        self.wal.as_ref().map_or(0, wal::Wal::appended_seq)
    }

    fn sync_deferred(&self) -> Result<u64, Error> {
        let Some(wal) = &self.wal else {
            return Ok(0);
        };
        wal.sync_appended().map_err(commit::sync_failed(wal))
    }

    fn housekeeping_due(&self) -> bool {
        self.wal.as_ref().is_some_and(wal::Wal::housekeeping_due)
    }

    fn housekeep(&self) {
        if let Some(wal) = &self.wal {
            commit::housekeeping(self, wal);
        }
    }
}

/// Refuses a path that holds something other than a (possibly empty) store.
/// The layout of the store whose meta tree is `meta_tree`: version 1 when
/// it says so, else [`FORMAT_PACKED`] (a new store; and any other version,
/// which [`meta::check_or_init`] then refuses).
pub(super) fn stored_format(meta_tree: &sled::Tree) -> Result<u32, Error> {
    let stored = meta_tree
        .get(meta::FORMAT_KEY)
        .map_err(storage("reading the format version"))?;
    Ok(match stored.as_deref() {
        Some(v) if v == meta::FORMAT_VERSION.to_be_bytes() => meta::FORMAT_VERSION,
        _ => FORMAT_PACKED,
    })
}

fn check_directory(path: &Path) -> Result<(), Error> {
    if !path.exists() {
        return Ok(());
    }
    if !path.is_dir() {
        return Err(Error::UnknownFormat {
            found: format!("{} is a file, not a directory", path.display()),
        });
    }
    let mut entries = std::fs::read_dir(path)
        .map_err(|e| Error::Storage(StorageError::new("reading the data directory", e)))?;
    let empty = entries.next().is_none();
    if !empty && !path.join("conf").is_file() {
        return Err(Error::UnknownFormat {
            found: format!(
                "{} is a non-empty directory without a database",
                path.display()
            ),
        });
    }
    Ok(())
}

/// How long an open waits for the directory's lock: a store dropped by this
/// process a moment ago releases it only once sled's threads are done with
/// it (seen: tens of ms on a loaded machine). Another process holding it is
/// still refused, that much later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// sled's files at `path`, waiting up to [`LOCK_WAIT`] for their lock.
/// A new store's pages are compressed when `compress_new` says so, and its
/// segments are [`NEW_SEGMENT_SIZE`]; an existing store keeps what it was
/// made with.
fn open_sled(path: &Path, cache_capacity: u64, compress_new: bool) -> Result<sled::Db, Error> {
    let start = std::time::Instant::now();
    let stored = StoredParameters::read(path);
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .flush_every_ms(Some(500))
            .use_compression(stored.compression.unwrap_or(compress_new))
            .compression_factor(COMPRESSION_LEVEL)
            .segment_size(stored.segment_size.unwrap_or(NEW_SEGMENT_SIZE))
            .open()
        {
            Err(e) if is_lock_error(&e) && start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(open_error),
        }
    }
}

/// zstd's level for sled's pages when they are compressed
/// ([`crate::Config::with_page_compression`]); the level is not stored and
/// may change between releases.
const COMPRESSION_LEVEL: i32 = 3;

/// sled's segment size for a new store (sled's default: 512 KiB). sled
/// cleans a segment only once at most half of it is live, so a store
/// occupies up to about twice its live pages; smaller segments get there
/// sooner. Measured with the footprint bench (1M imported customers,
/// emails in random order): sled's files 4.23x the raw record bytes with
/// 512 KiB segments, 3.41x with 128 KiB; imports and gets ran at the same
/// speed. A record or node larger than a quarter of a segment (32 KiB)
/// goes to its own file under `blobs/`, as sled does with any size.
pub(crate) const NEW_SEGMENT_SIZE: usize = 128 << 10;

/// What sled stored of a store's layout when it was made, from the `conf`
/// file it keeps beside its files (`use_compression: true|false`,
/// `segment_size: N`): sled refuses to open them with other settings, so a
/// store keeps those it was made with. `None` for a new store (or an
/// unreadable `conf`, which sled itself then reports).
#[derive(Debug, Default, PartialEq, Eq)]
struct StoredParameters {
    compression: Option<bool>,
    segment_size: Option<usize>,
}

/// sled's configuration for the files at `path` as they were made, or for
/// new ones as a new store makes them (tests that write sled's files
/// directly, as a crash or another program would leave them).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn raw_sled_config(path: &Path) -> sled::Config {
    let stored = StoredParameters::read(path);
    sled::Config::new()
        .path(path)
        .use_compression(stored.compression.unwrap_or(false))
        .segment_size(stored.segment_size.unwrap_or(NEW_SEGMENT_SIZE))
}

impl StoredParameters {
    fn read(path: &Path) -> Self {
        let Ok(conf) = std::fs::read(path.join("conf")) else {
            return Self::default();
        };
        let conf = String::from_utf8_lossy(&conf);
        let value = |name: &str| {
            conf.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
        };
        Self {
            compression: value("use_compression").and_then(|v| v.parse().ok()),
            segment_size: value("segment_size").and_then(|v| v.parse().ok()),
        }
    }
}

/// sled wraps the flock failure in another io::Error; its text says so.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

fn open_error(e: sled::Error) -> Error {
    match e {
        ref e if is_lock_error(e) => Error::Storage(StorageError::new(
            "opening the data directory",
            "it is locked by another process (is a credstore server or command running on it?)",
        )),
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => Error::UnknownFormat {
            found: format!("sled refused the files: {e}"),
        },
        other => Error::Storage(StorageError::new("opening the data directory", other)),
    }
}
