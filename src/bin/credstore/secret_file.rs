//! The store secret file: 64 lowercase hex characters and a newline, mode 0600,
//! beside the data directory. Created only together with a new store.

use std::io::Write;
use std::path::Path;

use credstore::StoreSecret;
use zeroize::Zeroize;

use crate::Failure;

fn store_exists(data: &Path) -> bool {
    match std::fs::read_dir(data) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => false,
    }
}

pub fn load_or_create(path: &Path, data: &Path) -> Result<StoreSecret, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => StoreSecret::from_hex(&text)
            .map_err(|e| Failure(format!("secret file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if store_exists(data) {
                return Err(Failure(format!(
                    "the store at {} exists but its secret file {} does not; \
                     pass --secret-file with the file it was created with (nothing was created)",
                    data.display(),
                    path.display()
                )));
            }
            let secret = StoreSecret::generate()?;
            write_new(path, &secret)?;
            // Through the log, so that `serve --log-format json` stays JSON.
            tracing::warn!(
                "created a new store secret in {} (keep it safe: without it the store cannot be opened)",
                path.display()
            );
            Ok(secret)
        }
        Err(e) => Err(Failure(format!(
            "cannot read the secret file {}: {e}",
            path.display()
        ))),
    }
}

/// The secret for a store in a database (`--postgres`): read from `path`,
/// or generated and written there when the file does not exist (the
/// caller removes it if the database turns out to hold another store).
pub fn load_or_create_for_database(path: &Path) -> Result<StoreSecret, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => StoreSecret::from_hex(&text)
            .map_err(|e| Failure(format!("secret file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = StoreSecret::generate()?;
            write_new(path, &secret)?;
            eprintln!(
                "created a new store secret in {} (keep it safe: every instance needs it)",
                path.display()
            );
            Ok(secret)
        }
        Err(e) => Err(Failure(format!(
            "cannot read the secret file {}: {e}",
            path.display()
        ))),
    }
}

fn write_new(path: &Path, secret: &StoreSecret) -> Result<(), Failure> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        Failure(format!(
            "cannot create the secret file {}: {e}",
            path.display()
        ))
    })?;
    let mut text = secret.to_hex();
    text.push('\n');
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    text.zeroize();
    Ok(())
}
