//! The store layer: sled trees, record encoding, transactions, durability,
//! the event log and the integrity check. sled appears nowhere else; its
//! errors leave this module as the opaque [`StorageError`].

mod commit;
pub(crate) mod encoding;
mod integrity;
mod meta;
pub(crate) mod records;
mod tx;

use std::path::{Path, PathBuf};

use crate::error::{Error, StorageError};

pub use integrity::IntegrityReport;
pub(crate) use meta::NEXT_BOX_ID;
pub(crate) use tx::{Tx, TxError};

/// The trees, in a fixed order (their index is their position in
/// [`Engine::trees`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TreeId {
    Meta,
    Customers,
    Emails,
    Apps,
    Shops,
    Events,
    /// reset id -> reset record
    Resets,
    /// keyed token digest -> reset id
    ResetTokens,
    /// expires_at (i64 BE, sign-flipped) ++ reset id -> ()
    ResetExpiry,
    /// box_id BE ++ reset id -> ()
    ResetsByCustomer,
    /// user_code BE ++ salt BE -> expiry (signed change-password nonces)
    Nonces,
}

impl TreeId {
    pub const ALL: [TreeId; 11] = [
        TreeId::Meta,
        TreeId::Customers,
        TreeId::Emails,
        TreeId::Apps,
        TreeId::Shops,
        TreeId::Events,
        TreeId::Resets,
        TreeId::ResetTokens,
        TreeId::ResetExpiry,
        TreeId::ResetsByCustomer,
        TreeId::Nonces,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Customers => "customers",
            TreeId::Emails => "emails",
            TreeId::Apps => "apps",
            TreeId::Shops => "shops",
            TreeId::Events => "events",
            TreeId::Resets => "resets",
            TreeId::ResetTokens => "reset_tokens",
            TreeId::ResetExpiry => "reset_expiry",
            TreeId::ResetsByCustomer => "resets_by_customer",
            TreeId::Nonces => "nonces",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a commit is made durable before the call that made it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every acknowledged change is on disk (flushed and fdatasync-ed) before
    /// the call returns. The default.
    #[default]
    Immediate,
    /// Changes reach disk with sled's periodic flush (every 500 ms): a crash
    /// or power loss **loses the changes of the last half second or so**, even
    /// acknowledged ones. For bulk imports and tests.
    PeriodicFlushLosesRecentChanges,
}

pub(crate) fn storage(context: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |e| Error::Storage(StorageError::new(context, e))
}

/// The sled database behind a store.
pub(crate) struct Engine {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    dir: Option<PathBuf>,
    durability: Durability,
    fail_point: Option<crate::ops::FailPoint>,
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
    pub fingerprint: [u8; 32],
    pub first_box_id: u64,
    pub fail_point: Option<crate::ops::FailPoint>,
}

impl Engine {
    /// Opens the store at `path`, creating it when the directory is absent or empty.
    pub fn open(path: &Path, opts: EngineOptions) -> Result<Self, Error> {
        meta::check_directory(path)?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_capacity)
            .flush_every_ms(Some(500))
            .open()
            .map_err(open_error)?;
        Self::from_db(db, Some(path.to_path_buf()), opts)
    }

    /// A store in memory (a temporary directory sled removes on drop).
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
        };
        meta::check_or_init(&engine, &opts.fingerprint, opts.first_box_id)?;
        Ok(engine)
    }

    pub(crate) fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.trees[id.index()]
    }

    /// A point read outside any transaction.
    pub fn get(&self, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        self.tree(id).get(key).map_err(storage("reading"))
    }

    /// A point read, decoded.
    pub fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        id: TreeId,
        key: &[u8],
    ) -> Result<Option<T>, Error> {
        match self.get(id, key)? {
            Some(v) => encoding::decode(id, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` records of a tree from `start` on, in key order.
    pub fn scan(
        &self,
        id: TreeId,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, Error> {
        let mut out = Vec::new();
        for item in self.tree(id).range(start..).take(limit) {
            out.push(item.map_err(storage("scanning"))?);
        }
        Ok(out)
    }

    /// Runs `f` as one transaction over every tree, then makes the change
    /// durable before returning. `f` may run more than once: it must do no I/O,
    /// no hashing, and nothing with side effects outside the [`Tx`].
    pub fn transact<T>(&self, f: impl Fn(&Tx<'_>) -> Result<T, TxError>) -> Result<T, Error> {
        let out = commit::run(self, f)?;
        Ok(out)
    }

    /// Removes events with a sequence number below `before`, in small batches.
    pub fn trim_events(&self, before: u64) -> Result<usize, Error> {
        let tree = self.tree(TreeId::Events);
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in tree.range(..before.to_be_bytes()).take(1024) {
                let (k, _) = item.map_err(storage("scanning events"))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)
                .map_err(storage("trimming events"))?;
            removed += n;
        }
        commit::sync(self)?;
        Ok(removed)
    }

    /// Checks that every index entry points at its record and every record is indexed.
    pub fn check_integrity(&self) -> Result<IntegrityReport, Error> {
        integrity::check(self)
    }

    /// Makes everything written so far durable (a checkpoint, at clean close).
    pub fn flush(&self) -> Result<(), Error> {
        commit::sync(self)
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
        sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
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
