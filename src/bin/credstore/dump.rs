//! `dump FILE` / `restore FILE` (SPEC §13): a backup, and the way from a
//! sled store to PostgreSQL.

use std::process::ExitCode;

use clap::Args;

use crate::{CliResult, Failure, Global};

/// `dump FILE` / `restore FILE`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The dump file (created by `dump`, which refuses to overwrite one).
    pub file: std::path::PathBuf,
}

pub fn dump(g: &Global, a: DumpArgs) -> CliResult {
    let store = g.open()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        // Hashes and sealed keys: readable by the operator only.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(&a.file)
        .map_err(|e| Failure(format!("cannot create {}: {e}", a.file.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let rows = store.dump(&mut out)?;
    out.into_inner()
        .map_err(|e| Failure(format!("cannot write {}: {e}", a.file.display())))?
        .sync_all()?;
    outln!("dumped {rows} records to {}", a.file.display());
    Ok(ExitCode::SUCCESS)
}

pub fn restore(g: &Global, a: DumpArgs) -> CliResult {
    // The dump is checked against the secret before any store is opened
    // (or created): a refused restore leaves nothing behind.
    let secret_path = g.secret_path();
    let text = std::fs::read_to_string(&secret_path).map_err(|e| {
        Failure(format!(
            "restore needs the secret file the dump was made under ({}): {e}",
            secret_path.display()
        ))
    })?;
    let secret = credstore::StoreSecret::from_hex(&text)
        .map_err(|e| Failure(format!("secret file {}: {e}", secret_path.display())))?;
    credstore::Store::check_dump(&a.file, &secret)?;
    let store = g.open()?;
    let rows = store.restore(&a.file)?;
    let report = store.check_integrity()?;
    outln!(
        "restored {rows} records: {} customers, {} apps, {} events",
        report.customers,
        report.apps,
        report.events
    );
    if !report.is_sound() {
        for p in &report.problems {
            outln!("problem: {p}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
