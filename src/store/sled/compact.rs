//! Compaction: sled's files rewritten with every tree in key order
//! (`credstore compact`, [`crate::Store::compact`]), as redb's
//! `Database::compact` or PostgreSQL's `VACUUM FULL` do for theirs.
//!
//! sled never gives back what a store grown by random inserts wastes: its
//! nodes split half full, and it cleans a segment only once at most half
//! of it is live. A copy written in key order fills its nodes (and the
//! packed trees' blocks: `packed.rs`); measured on 1M imported customers
//! (emails in random order), sled's files went from 4.2x to 1.7x the raw
//! record bytes (2.1x to 1.0x with compressed pages). A store of format
//! version 1 is copied as version 2: its email index and event log packed.
//!
//! The copy is made beside the store (`compact.tmp/`), read back and
//! compared record by record with the original, made durable, and only
//! then swapped in. The swap is a sequence of renames a crash may
//! interrupt; whoever opens the store next (under the directory's lock)
//! finishes it, or removes an unfinished copy:
//!
//! 1. `compact.tmp/` → `compact.ready/` is the commit point;
//! 2. sled's files (`conf`, `db`, `blobs/`, `snap.*`) move into
//!    `compact.old/`, which is then renamed `compact.old.done/`;
//! 3. the entries of `compact.ready/` move into the store's directory;
//! 4. `compact.ready/` and `compact.old.done/` are removed.
//!
//! Step 2 is redone while `compact.old.done/` does not exist: until then,
//! every sled file in the directory is an old one. The write-ahead log
//! (`wal/`) is not touched: the copy holds exactly what sled held,
//! including the log position sled has applied.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::packed::{self, Packer};
use super::wal::io::sync_dir;
use super::{FORMAT_PACKED, LOCK_WAIT, StoredParameters, open_sled, perms, storage, stored_format};
use crate::error::{Error, StorageError};
use crate::store::FailPoint;
use crate::store::meta;
use crate::store::schema::TreeId;

const TMP: &str = "compact.tmp";
const READY: &str = "compact.ready";
const OLD: &str = "compact.old";
const OLD_DONE: &str = "compact.old.done";

/// Rows (blocks, in a packed tree) per sled batch while copying. sled
/// leaves less garbage behind with larger batches, up to a point: 1M
/// customers' compacted copy (sled's files) took 484 MiB in batches of 45,
/// 462 MiB of 1,000, 444 MiB of 3,000, 431–433 MiB of 5,000 and 10,000,
/// 440 MiB of 20,000, 587 MiB of 100,000 (and 764 MiB and 7 GiB of memory
/// in one batch of 1M).
const BATCH: usize = 5000;

/// sled's cache for each of the two databases while copying.
const COPY_CACHE: u64 = 64 << 20;

/// What to do with sled's page compression when compacting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompactPages {
    /// Keep what the store was made with.
    #[default]
    Keep,
    /// Compress the pages (zstd), as
    /// [`crate::Config::with_page_compression`] makes new stores.
    Compressed,
    /// Store the pages uncompressed.
    Uncompressed,
}

/// What [`crate::Store::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Bytes of sled's files before (the write-ahead log not counted).
    pub bytes_before: u64,
    /// Bytes of sled's files after.
    pub bytes_after: u64,
    /// Records copied (every tree's, sled's own included).
    pub records: u64,
    /// Whether the pages are compressed now.
    pub compressed: bool,
    /// How long it took.
    pub took: Duration,
}

/// An exclusive `flock` on the data directory itself, held while a store
/// opens and while it is compacted: an open never sees a swap half done.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: Option<File>,
}

impl DirLock {
    /// Takes the lock, waiting up to [`LOCK_WAIT`] for another open to end.
    pub(super) fn acquire(path: &Path) -> Result<Self, Error> {
        #[cfg(unix)]
        {
            let file = File::open(path)
                .map_err(|e| Error::Storage(StorageError::new("opening the data directory", e)))?;
            let start = Instant::now();
            loop {
                match file.try_lock() {
                    Ok(()) => return Ok(Self { _file: Some(file) }),
                    Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => return Err(locked()),
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(Error::Storage(StorageError::new(
                            "locking the data directory",
                            e,
                        )));
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(Self { _file: None })
        }
    }
}

fn locked() -> Error {
    Error::Storage(StorageError::new(
        "opening the data directory",
        "it is locked by another process (is a credstore server or command, \
         or `credstore compact`, running on it?)",
    ))
}

/// Finishes or undoes a compaction a crash interrupted (the caller holds
/// the [`DirLock`]).
pub(super) fn finish_interrupted(path: &Path) -> Result<(), Error> {
    let io = |e| Error::Storage(StorageError::new("finishing an interrupted compaction", e));
    if path.join(READY).is_dir() {
        tracing::warn!(
            "finishing the compaction of {} that was interrupted",
            path.display()
        );
        return swap_in(path, None).map_err(io);
    }
    for unfinished in [TMP, OLD_DONE] {
        let p = path.join(unfinished);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(io)?;
            sync_dir(path).map_err(io)?;
        }
    }
    Ok(())
}

/// Rewrites the store at `path` in key order; see the module's text.
/// `fail` injects failures (tests): `compact.copy` fails the copy (which is
/// then removed), `compact.crash.*` stop where a crash would, leaving the
/// files as they are for the next open.
pub(crate) fn compact(
    path: &Path,
    pages: CompactPages,
    fail: Option<&FailPoint>,
) -> Result<Compaction, Error> {
    let start = Instant::now();
    let no_store = || {
        Error::Storage(StorageError::new(
            "compacting the store",
            format!("there is no store at {}", path.display()),
        ))
    };
    if !path.is_dir() {
        return Err(no_store());
    }
    let _lock = DirLock::acquire(path)?;
    finish_interrupted(path)?;
    if !path.join("conf").is_file() {
        return Err(no_store());
    }
    let compressed = match pages {
        CompactPages::Keep => StoredParameters::read(path).compression.unwrap_or(false),
        CompactPages::Compressed => true,
        CompactPages::Uncompressed => false,
    };
    let bytes_before = sled_bytes(path);
    let old = open_sled(path, COPY_CACHE, false)?;
    // Opening a tree creates it: a foreign database is only looked at.
    let has_meta = old
        .tree_names()
        .iter()
        .any(|n| n == TreeId::Meta.name().as_bytes());
    let magic = if has_meta {
        old.open_tree(TreeId::Meta.name())
            .and_then(|t| t.get(meta::MAGIC_KEY))
            .map_err(storage("reading"))?
    } else {
        None
    };
    match magic {
        Some(m) if m == meta::MAGIC => {}
        _ => {
            return Err(Error::UnknownFormat {
                found: format!("{} holds sled files, not a credstore store", path.display()),
            });
        }
    }
    let tmp = path.join(TMP);
    let records = match copy(&old, &tmp, compressed, fail) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    FailPoint::check(fail, "compacting the store", "compact.crash.before_commit")?;
    let io = |doing| move |e| Error::Storage(StorageError::new(doing, e));
    std::fs::rename(&tmp, path.join(READY)).map_err(io("committing the compacted copy"))?;
    sync_dir(path).map_err(io("committing the compacted copy"))?;
    drop(old);
    // From here on the copy is the store: an error leaves the swap for the
    // next open to finish (which the error says).
    swap_in(path, fail).map_err(|e| {
        Error::Storage(StorageError::new(
            "swapping in the compacted copy (the next open finishes it)",
            e,
        ))
    })?;
    Ok(Compaction {
        bytes_before,
        bytes_after: sled_bytes(path),
        records,
        compressed,
        took: start.elapsed(),
    })
}

/// Copies every tree of `old` into a new sled database at `tmp`, reads it
/// back against `old`, and makes it durable. Returns the records copied.
fn copy(
    old: &sled::Db,
    tmp: &Path,
    compressed: bool,
    fail: Option<&FailPoint>,
) -> Result<u64, Error> {
    let io = |doing| move |e| Error::Storage(StorageError::new(doing, e));
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io("removing an old compacted copy"))?;
    }
    perms::create_private_dir(tmp)?;
    let names = old.tree_names();
    let format = old_format(old)?;
    let mut records = 0;
    {
        let new = open_sled(tmp, COPY_CACHE, compressed)?;
        for name in &names {
            let from = old.open_tree(name).map_err(storage("reading"))?;
            let to = new
                .open_tree(name)
                .map_err(storage("writing the compacted copy"))?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            let mut write = |k: &[u8], v: &[u8]| -> Result<(), Error> {
                batch.insert(k, v);
                in_batch += 1;
                if in_batch == BATCH {
                    to.apply_batch(std::mem::take(&mut batch))
                        .map_err(storage("writing the compacted copy"))?;
                    in_batch = 0;
                    FailPoint::check(fail, "writing the compacted copy", "compact.copy")?;
                }
                Ok(())
            };
            match packed_tree(name) {
                // Rows of a packed tree are packed again, in full blocks
                // (and a version 1 store's rows packed for the first time).
                Some(id) => {
                    let mut packer = Packer::default();
                    packed::for_each(&from, id, format == FORMAT_PACKED, &mut |k, v| {
                        records += 1;
                        match packer.push(k, v) {
                            Some((fence, block)) => write(&fence, &block),
                            None => Ok(()),
                        }
                    })?;
                    if let Some((fence, block)) = packer.finish() {
                        write(&fence, &block)?;
                    }
                }
                None => {
                    let meta = name.as_ref() == TreeId::Meta.name().as_bytes();
                    for kv in from.iter() {
                        let (k, v) = kv.map_err(storage("reading"))?;
                        records += 1;
                        if meta && k.as_ref() == meta::FORMAT_KEY {
                            write(&k, &FORMAT_PACKED.to_be_bytes())?;
                        } else {
                            write(&k, &v)?;
                        }
                    }
                }
            }
            to.apply_batch(batch)
                .map_err(storage("writing the compacted copy"))?;
            FailPoint::check(fail, "writing the compacted copy", "compact.copy")?;
        }
        new.flush().map_err(storage("writing the compacted copy"))?;
    }
    // Reopened, so that sled writes the snapshot of its page table now:
    // the first open after a long run of writes reads back everything
    // sled wrote since its last open (20 s for 1M customers with
    // compressed pages), and the store's next open would pay for it. That
    // open writes too, which the open after it reads back (1.3 s for 1M
    // customers, 0.27 s for 200k): one more open here takes that too, and
    // the store's next open is as fast as any (0.03 s for 200k).
    let new = open_sled(tmp, COPY_CACHE, compressed)?;
    verify(old, format, &new, &names)?;
    drop(new);
    drop(open_sled(tmp, COPY_CACHE, compressed)?);
    perms::restrict_files(tmp);
    sync_tree(tmp).map_err(io("making the compacted copy durable"))?;
    Ok(records)
}

/// The format version of the store `db` holds.
fn old_format(db: &sled::Db) -> Result<u32, Error> {
    stored_format(
        &db.open_tree(TreeId::Meta.name())
            .map_err(storage("reading"))?,
    )
}

/// The packed tree named `name`.
fn packed_tree(name: &[u8]) -> Option<TreeId> {
    TreeId::ALL
        .into_iter()
        .find(|t| packed::is_packed(*t) && t.name().as_bytes() == name)
}

/// The rows of a packed tree, as one digest (each key and value framed by
/// its length).
fn rows_digest(tree: &sled::Tree, id: TreeId, format: u32) -> Result<blake3::Hash, Error> {
    let mut hasher = blake3::Hasher::new();
    packed::for_each(tree, id, format == FORMAT_PACKED, &mut |k, v| {
        hasher.update(&(k.len() as u64).to_le_bytes());
        hasher.update(&k);
        hasher.update(&(v.len() as u64).to_le_bytes());
        hasher.update(&v);
        Ok(())
    })?;
    Ok(hasher.finalize())
}

/// Fails unless `new` holds exactly the trees and records of `old` (the
/// packed trees: the same rows, in blocks; the format version:
/// [`FORMAT_PACKED`]).
fn verify(old: &sled::Db, format: u32, new: &sled::Db, names: &[sled::IVec]) -> Result<(), Error> {
    let differs = |what: String| {
        Err(Error::Storage(StorageError::new(
            "checking the compacted copy",
            format!("it differs from the store ({what}); the store is unchanged"),
        )))
    };
    let mut new_names = new.tree_names();
    let mut old_names = names.to_vec();
    new_names.sort();
    old_names.sort();
    if new_names != old_names {
        return differs("its trees".into());
    }
    for name in names {
        let a = old.open_tree(name).map_err(storage("reading"))?;
        let b = new
            .open_tree(name)
            .map_err(storage("reading the compacted copy"))?;
        if let Some(id) = packed_tree(name) {
            if rows_digest(&a, id, format)? != rows_digest(&b, id, FORMAT_PACKED)? {
                return differs(format!("tree {}", String::from_utf8_lossy(name)));
            }
            continue;
        }
        let meta = name.as_ref() == TreeId::Meta.name().as_bytes();
        let mut bi = b.iter();
        for kv in a.iter() {
            let mut kv = kv.map_err(storage("reading"))?;
            if meta && kv.0.as_ref() == meta::FORMAT_KEY {
                kv.1 = FORMAT_PACKED.to_be_bytes().as_slice().into();
            }
            match bi.next() {
                Some(Ok(got)) if got == kv => {}
                Some(Err(e)) => return Err(storage("reading the compacted copy")(e)),
                _ => return differs(format!("tree {}", String::from_utf8_lossy(name))),
            }
        }
        if bi.next().is_some() {
            return differs(format!("tree {}", String::from_utf8_lossy(name)));
        }
    }
    Ok(())
}

/// Whether `name`, in a data directory, is one of sled's files.
fn is_sled_entry(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// Steps 2 to 4 of the swap (the module's text); idempotent.
fn swap_in(path: &Path, fail: Option<&FailPoint>) -> std::io::Result<()> {
    let crash = |name| match fail {
        Some(f) if f.fires(name) => Err(std::io::Error::other(format!("injected crash at {name}"))),
        _ => Ok(()),
    };
    let ready = path.join(READY);
    let old = path.join(OLD);
    let done = path.join(OLD_DONE);
    if !done.exists() {
        if !old.exists() {
            std::fs::create_dir(&old)?;
        }
        for name in entries(path)?.into_iter().filter(|n| is_sled_entry(n)) {
            std::fs::rename(path.join(&name), old.join(&name))?;
            crash("compact.crash.moving_old")?;
        }
        sync_dir(&old)?;
        sync_dir(path)?;
        std::fs::rename(&old, &done)?;
        sync_dir(path)?;
    }
    crash("compact.crash.old_moved")?;
    for name in entries(&ready)? {
        std::fs::rename(ready.join(&name), path.join(&name))?;
        crash("compact.crash.moving_new")?;
    }
    sync_dir(path)?;
    std::fs::remove_dir(&ready)?;
    sync_dir(path)?;
    crash("compact.crash.before_cleanup")?;
    std::fs::remove_dir_all(&done)?;
    sync_dir(path)
}

fn entries(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// fsyncs every file in `dir` and its subfolders, then the folders.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p: PathBuf = e.path();
        if e.file_type()?.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Bytes of sled's files in the data directory at `path`.
pub(crate) fn sled_bytes(path: &Path) -> u64 {
    fn size(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|es| es.flatten().map(|e| size(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    entries(path)
        .unwrap_or_default()
        .iter()
        .filter(|n| is_sled_entry(n))
        .map(|n| size(&path.join(n)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trees by name, each with its (key, value) rows.
    type Trees<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)])];

    /// A database of `trees`, the packed ones as a version 1 store keeps
    /// them (a row each).
    fn db(trees: Trees<'_>) -> sled::Db {
        let db = sled::Config::new().temporary(true).open().unwrap();
        for (name, rows) in trees {
            let t = db.open_tree(name).unwrap();
            for (k, v) in *rows {
                t.insert(k, *v).unwrap();
            }
        }
        db
    }

    /// `trees` as a compacted copy holds them: the packed ones in blocks.
    fn packed_db(trees: Trees<'_>) -> sled::Db {
        let db = sled::Config::new().temporary(true).open().unwrap();
        for (name, rows) in trees {
            let t = db.open_tree(name).unwrap();
            let mut rows = rows.to_vec();
            rows.sort();
            let mut packer = Packer::default();
            for (k, v) in rows {
                if packed_tree(name.as_bytes()).is_none() {
                    t.insert(k, v).unwrap();
                } else if let Some((fence, block)) = packer.push(k.into(), v.into()) {
                    t.insert(fence, block).unwrap();
                }
            }
            if let Some((fence, block)) = packer.finish() {
                t.insert(fence, block).unwrap();
            }
        }
        db
    }

    /// The check that stands between a copy and the commit point: any
    /// difference refuses the copy.
    #[test]
    fn verify_refuses_a_copy_that_differs_in_any_way() {
        let original: Trees<'_> = &[
            ("meta", &[("magic", "m"), ("seq", "1")]),
            ("emails", &[("a@x", "1"), ("b@x", "2")]),
        ];
        let old = db(original);
        let names = old.tree_names();
        assert!(verify(&old, 1, &packed_db(original), &names).is_ok());
        // Rows of a packed tree copied as they are, not in blocks: refused.
        assert!(verify(&old, 1, &db(original), &names).is_err());
        let copies: [Trees<'_>; 5] = [
            // a value differs
            &[
                ("meta", &[("magic", "m"), ("seq", "2")]),
                ("emails", &[("a@x", "1"), ("b@x", "2")]),
            ],
            // a record is missing
            &[
                ("meta", &[("magic", "m"), ("seq", "1")]),
                ("emails", &[("a@x", "1")]),
            ],
            // a record too many
            &[
                ("meta", &[("magic", "m"), ("seq", "1")]),
                ("emails", &[("a@x", "1"), ("b@x", "2"), ("c@x", "3")]),
            ],
            // a key differs
            &[
                ("meta", &[("magic", "m"), ("seq", "1")]),
                ("emails", &[("a@x", "1"), ("B@x", "2")]),
            ],
            // a tree too many
            &[
                ("meta", &[("magic", "m"), ("seq", "1")]),
                ("emails", &[("a@x", "1"), ("b@x", "2")]),
                ("events", &[]),
            ],
        ];
        for (i, copy) in copies.iter().enumerate() {
            let err = verify(&old, 1, &packed_db(copy), &names).expect_err(&format!("copy {i}"));
            assert!(err.to_string().contains("differs from the store"), "{err}");
        }
    }

    #[test]
    fn the_directory_lock_waits_for_a_short_holder_and_refuses_a_long_one() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let start = Instant::now();
        let second = DirLock::acquire(dir.path()).expect("it waits for a short holder");
        assert!(start.elapsed() >= Duration::from_millis(150));
        releaser.join().unwrap();

        // Held beyond the wait (by `second`): refused, after the wait.
        let start = Instant::now();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(start.elapsed() >= LOCK_WAIT);
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        drop(second);
        DirLock::acquire(dir.path()).expect("free again");
    }
}
