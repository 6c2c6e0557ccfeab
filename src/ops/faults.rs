//! The store's side of faults (SPEC §11): whether it accepts writes, and
//! reopening a store whose log is damaged in its middle.

use std::path::Path;

use super::{Config, Store, engine_options};
use crate::crypto::Keys;
use crate::error::Error;
use crate::model::StoreSecret;
use crate::store::{self, Health, LogStats, LogTruncation};

impl Store {
    /// Whether the store accepts writes. [`Health::Failed`] after a write or
    /// sync of its files failed: reads go on, every write is refused until
    /// the store is reopened (which recovers every acknowledged change).
    /// Cheap: one atomic load while writable. On PostgreSQL
    /// ([`Store::open_postgres`]): [`Health::Failed`] while the server does
    /// not answer, asked at most once a second (one round trip).
    pub fn health(&self) -> Health {
        self.engine().health()
    }

    /// What the write-ahead log did since the store was opened: commits,
    /// syncs and group sizes, bytes, checkpoints (for metrics). Cheap.
    pub fn log_stats(&self) -> LogStats {
        self.engine().log_stats()
    }

    /// Opens an existing store like [`Store::open`], but when its
    /// write-ahead log has a damaged record with valid records after it
    /// (media corruption, which [`Store::open`] refuses with
    /// [`Error::CorruptLog`]), accepts losing them: the log ends before the
    /// damage, and what was dropped is returned (`None`: nothing was
    /// damaged, and the store opened as [`Store::open`] would have). The
    /// `credstore recover --truncate-at-corruption` command.
    pub fn recover_truncating_log(
        path: impl AsRef<Path>,
        secret: &StoreSecret,
        config: Config,
    ) -> Result<(Self, Option<LogTruncation>), Error> {
        let keys = Keys::derive(secret);
        let (engine, truncated) =
            store::open_truncating_log(path.as_ref(), engine_options(&keys, &config))?;
        Ok((Self::from_parts(engine, keys, config), truncated))
    }
}
