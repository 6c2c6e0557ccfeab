//! The data directory's permissions: created 0700, its files made 0600
//! (customers' emails are personal data), and a warning when others may
//! read it, as PostgreSQL warns for its data directory.

use std::path::Path;

use crate::error::{Error, StorageError};

/// Creates the data directory (mode 0700) when it is absent.
pub(super) fn create_private_dir(path: &Path) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
        .map_err(|e| Error::Storage(StorageError::new("creating the data directory", e)))
}

/// Why others may read the directory, if they may (unix only).
pub(super) fn exposure(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "the data directory {} has mode {mode:04o}: other local users may read \
                 customers' emails; run `chmod 700 {}`",
                path.display(),
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Makes the files directly in `dir` (and in its `blobs/` and `wal/`
/// folders) mode 0600, and those folders 0700. Best effort: a file that
/// vanished meanwhile is skipped.
pub(super) fn restrict_files(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let restrict = |dir: &Path| {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let want = if meta.is_dir() { 0o700 } else { 0o600 };
                if meta.permissions().mode() & 0o777 != want {
                    let _ = std::fs::set_permissions(
                        entry.path(),
                        std::fs::Permissions::from_mode(want),
                    );
                }
            }
        };
        restrict(dir);
        for sub in ["blobs", "wal"] {
            let p = dir.join(sub);
            if p.is_dir() {
                restrict(&p);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
}
