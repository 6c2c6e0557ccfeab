//! sled's files under fault injection, and the model check's store over them.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{MemDir, Op, injected, lock};
use crate::store::schema::TreeId;
use crate::store::sled::wal::{WalDir, WalOptions};
use crate::store::sled::{DataFiles, FsDataFiles};

/// sled's contents, tree by tree: (tree index, key) -> value.
pub(crate) type Contents = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

/// sled's files at a checkpoint, with faults: a failed flush or sync, and
/// what a crash keeps of sled. The model is conservative: after a crash,
/// sled holds exactly its contents at the last sync that succeeded before
/// any failure (a failed sync loses the dirty pages, and later syncs keep
/// nothing more), so a checkpoint recorded on the word of a later sync
/// would lose changes.
pub(crate) struct FaultyData {
    dir: MemDir,
    durable: Mutex<Contents>,
    poisoned: AtomicBool,
}

impl FaultyData {
    /// Counts and fails in `dir`'s [`Faults`].
    pub fn new(dir: &MemDir) -> Self {
        Self {
            dir: dir.clone(),
            durable: Mutex::new(Contents::new()),
            poisoned: AtomicBool::new(false),
        }
    }

    /// sled's contents as a crash leaves them.
    pub fn durable(&self) -> Contents {
        lock(&self.durable).clone()
    }

    /// Writes `contents` into a new sled database at `path` (the data
    /// directory as a crash left it).
    pub fn restore(contents: &Contents, path: &Path) {
        let db = crate::store::sled::raw_sled_config(path).open().unwrap();
        for ((tree, key), value) in contents {
            db.open_tree(TreeId::ALL[*tree].name())
                .unwrap()
                .insert(key.as_slice(), value.as_slice())
                .unwrap();
        }
        db.flush().unwrap();
    }
}

impl DataFiles for FaultyData {
    fn flush(&self, db: &sled::Db) -> io::Result<()> {
        if self.dir.fails(Op::DataFlush) {
            return Err(injected(Op::DataFlush));
        }
        FsDataFiles.flush(db)
    }

    fn sync(&self, db: &sled::Db, dir: &Path) -> io::Result<()> {
        if self.dir.fails(Op::DataSync) {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(injected(Op::DataSync));
        }
        FsDataFiles.sync(db, dir)?;
        if !self.poisoned.load(Ordering::SeqCst) {
            let mut contents = Contents::new();
            for id in TreeId::ALL {
                for item in db.open_tree(id.name()).map_err(io::Error::other)?.iter() {
                    let (k, v) = item.map_err(io::Error::other)?;
                    contents.insert((id as usize, k.to_vec()), v.to_vec());
                }
            }
            *lock(&self.durable) = contents;
        }
        Ok(())
    }
}

/// A sled backend at `path` whose log lives in `wal` (small segments and
/// checkpoints, syncing) and whose checkpoints go through `data`: the
/// model check's store, crashed and reopened at will. Retries while sled's
/// lock on the directory is still held by a dropped database's threads.
pub(crate) fn open_faulty(
    path: &Path,
    opts: &crate::store::EngineOptions,
    wal: &MemDir,
    data: &Arc<FaultyData>,
) -> Result<crate::store::sled::SledBackend, crate::Error> {
    let wal_opts = WalOptions {
        segment_size: 16 << 10,
        checkpoint_bytes: 24 << 10,
        ..WalOptions::new(true)
    };
    let mut tries = 0;
    loop {
        let dir = wal.clone();
        let with = crate::store::sled::OpenWith {
            wal_dir: move |_: &Path| -> io::Result<Box<dyn WalDir>> { Ok(Box::new(dir)) },
            wal_opts,
            data_files: data.clone(),
            truncate_at_corruption: false,
        };
        match crate::store::sled::SledBackend::open_with(path, opts, with) {
            Err(crate::Error::Storage(e)) if e.to_string().contains("locked") && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
