//! File access for the write-ahead log, behind two small traits so that tests
//! can swap the file system for a layer that loses or tears unsynced bytes
//! (see `fault.rs`).
//!
//! The WAL lives in a directory of *slot* files (`slot-0000`, `slot-0001`, ...),
//! each preallocated with zeros and synced once when created, then overwritten
//! in place, plus one small `checkpoint` file replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One preallocated WAL file.
pub(crate) trait WalFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`; the bytes are not durable until [`WalFile::sync`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// The directory of WAL slots and the checkpoint file.
pub(crate) trait WalDir: Send + Sync {
    /// The slot numbers present.
    fn list_slots(&self) -> io::Result<Vec<u32>>;
    /// Opens an existing slot.
    fn open_slot(&self, slot: u32) -> io::Result<Arc<dyn WalFile>>;
    /// Creates a slot of `size` zero bytes, durable (file and directory entry)
    /// before it returns.
    fn create_slot(&self, slot: u32, size: u64) -> io::Result<Arc<dyn WalFile>>;
    /// Deletes a slot that holds nothing needed.
    fn remove_slot(&self, slot: u32) -> io::Result<()>;
    /// The checkpoint file's bytes, or `None` when there is none.
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the checkpoint file atomically and durably.
    fn write_checkpoint(&self, bytes: &[u8]) -> io::Result<()>;
}

/// The WAL directory on the real file system.
pub(crate) struct FsDir {
    path: PathBuf,
}

const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const SLOT_PREFIX: &str = "slot-";
const TMP_SUFFIX: &str = ".tmp";

impl FsDir {
    /// Opens (creating when absent) the WAL directory at `path`, removing
    /// leftovers of interrupted slot creations and checkpoint writes.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        if !path.is_dir() {
            fs::create_dir_all(&path)?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        for entry in fs::read_dir(&path)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with(SLOT_PREFIX) && name.ends_with(TMP_SUFFIX))
                || name == CHECKPOINT_TMP
            {
                fs::remove_file(path.join(name.as_ref()))?;
            }
        }
        Ok(Self { path })
    }

    fn slot_path(&self, slot: u32) -> PathBuf {
        self.path.join(slot_name(slot))
    }
}

/// A slot's file name.
pub(crate) fn slot_name(slot: u32) -> String {
    format!("{SLOT_PREFIX}{slot:04}")
}

/// Runs `make` to build a file at `tmp`; on failure removes whatever it
/// left there (a full disk must leave no half-made file behind).
fn or_remove<T>(tmp: &Path, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    make().inspect_err(|_| {
        // Nothing more can be done when even this fails; the next open
        // removes leftovers.
        let _ = fs::remove_file(tmp);
    })
}

impl WalDir for FsDir {
    fn list_slots(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix(SLOT_PREFIX)
                && let Ok(n) = n.parse::<u32>()
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn open_slot(&self, slot: u32) -> io::Result<Arc<dyn WalFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.slot_path(slot))?;
        Ok(Arc::new(FsFile { file }))
    }

    fn create_slot(&self, slot: u32, size: u64) -> io::Result<Arc<dyn WalFile>> {
        let final_path = self.slot_path(slot);
        let tmp = final_path.with_extension("tmp");
        or_remove(&tmp, || {
            let file = private(OpenOptions::new().read(true).write(true).create(true))
                .truncate(true)
                .open(&tmp)?;
            // Real zeros, not a sparse file or fallocate's unwritten extents:
            // later overwrites then change no file metadata, so fdatasync
            // writes only data.
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < size {
                let n = usize::try_from((size - at).min(zeros.len() as u64)).unwrap_or(0);
                write_all_at(&file, &zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            fs::rename(&tmp, &final_path)
        })?;
        // The slot is not in use yet: one whose entry may not be durable is
        // removed rather than kept.
        or_remove(&final_path, || {
            sync_dir(&self.path)?;
            self.open_slot(slot)
        })
    }

    fn remove_slot(&self, slot: u32) -> io::Result<()> {
        fs::remove_file(self.slot_path(slot))
    }

    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path.join(CHECKPOINT)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_checkpoint(&self, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(CHECKPOINT_TMP);
        or_remove(&tmp, || {
            let mut file = private(OpenOptions::new().write(true).create(true))
                .truncate(true)
                .open(&tmp)?;
            io::Write::write_all(&mut file, bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, self.path.join(CHECKPOINT))
        })?;
        sync_dir(&self.path)
    }
}

struct FsFile {
    file: File,
}

impl WalFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_exact_at(&self.file, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        write_all_at(&self.file, buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        // fdatasync on Linux.
        self.file.sync_data()?;
        SYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// `fdatasync`s of log slots that succeeded, in this process (a test checks
/// that the default configuration syncs every acknowledged change).
static SYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many log `fdatasync`s have succeeded in this process.
pub(crate) fn syncs() -> u64 {
    SYNCS.load(std::sync::atomic::Ordering::Relaxed)
}

/// New files of the log are readable by their owner only (mode 0600).
fn private(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Makes a directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(path)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}
