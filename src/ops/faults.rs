//! The store's side of faults (SPEC §11): whether it accepts writes, and
//! reopening a store whose log is damaged in its middle.

use std::path::Path;

use super::{Config, Store, engine_options};
use crate::crypto::Keys;
use crate::error::Error;
use crate::model::StoreSecret;
use crate::store::{self, CompactPages, Compaction, Health, LogStats, LogTruncation};

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

    /// Rewrites the store at `path` with every record in key order, which
    /// gives back the space a store grown by random inserts wastes (sled
    /// never does; see the README's performance table), and, with `pages`,
    /// turns page compression on or off. The `credstore compact` command.
    ///
    /// Offline: fails, changing nothing, while the store is open anywhere
    /// (and [`Store::open`] is refused while it runs). Needs free space for
    /// a copy of sled's files; the copy is compared record by record with
    /// the store before it replaces it, and a crash at any point leaves
    /// either the old files or the new ones for the next open (which
    /// finishes an interrupted swap). The write-ahead log is kept as it is,
    /// so no secret is needed.
    pub fn compact(path: impl AsRef<Path>, pages: CompactPages) -> Result<Compaction, Error> {
        store::compact(path.as_ref(), pages, None)
    }

    /// [`Store::compact`] with a fail point (tests).
    #[doc(hidden)]
    pub fn compact_with_fail_point(
        path: impl AsRef<Path>,
        pages: CompactPages,
        fail: &crate::FailPoint,
    ) -> Result<Compaction, Error> {
        store::compact(path.as_ref(), pages, Some(fail))
    }
}

#[cfg(test)]
impl Store {
    /// A store whose log and data files live in `dir` (in memory, with its
    /// fault injection), sled's own files under `path` (tests).
    pub(crate) fn open_faulty(
        path: &Path,
        dir: &store::faults::MemDir,
        data: &std::sync::Arc<store::faults::FaultyData>,
        secret: &StoreSecret,
        config: Config,
    ) -> Result<Self, Error> {
        let keys = Keys::derive(secret);
        let engine = store::faults::open(path, engine_options(&keys, &config), dir, data)?;
        Ok(Self::from_parts(engine, keys, config))
    }

    /// A fresh [`Store::open_faulty`] with test settings in a temporary
    /// directory (kept alive by the returned value), and its fault layer.
    pub(crate) fn faulty_for_tests() -> (Self, store::faults::Faults, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let faults = store::faults::Faults::default();
        let dir = store::faults::MemDir::with_faults(faults.clone());
        let data = std::sync::Arc::new(store::faults::FaultyData::new(&dir));
        let secret = StoreSecret::from_bytes([9; 32]);
        let store = Self::open_faulty(
            &tmp.path().join("data"),
            &dir,
            &data,
            &secret,
            Config::for_tests(),
        )
        .unwrap_or_else(|e| panic!("opening the faulty store: {e}"));
        (store, faults, tmp)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::{Config, Store};
    use crate::error::Error;
    use crate::model::StoreSecret;
    use crate::readiness::Readiness;
    use crate::store::faults::{Faults, FaultyData, MemDir, Op};
    use crate::{NewCustomer, Password};

    /// A store whose log and data files live in `dir` (in memory, with its
    /// fault injection), sled's own files under `path`.
    fn open(path: &Path, dir: &MemDir, data: &Arc<FaultyData>, secret: &StoreSecret) -> Store {
        Store::open_faulty(path, dir, data, secret, Config::for_tests()).unwrap()
    }

    fn customer(n: u32) -> NewCustomer {
        NewCustomer::new(
            format!("ready{n}@example.com"),
            "R",
            "D",
            Password::new("ready-password-1").unwrap(),
        )
    }

    /// Readiness is the store's health (SPEC §14): a sync of the log that
    /// fails (through the fault layer) takes the instance out at once,
    /// with the reason, and keeps it out when later I/O "succeeds"; the
    /// reopened store is ready with every acknowledged change.
    #[test]
    fn a_failed_log_sync_makes_the_instance_not_ready_until_the_store_is_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let secret = StoreSecret::from_bytes([5; 32]);
        let faults = Faults::default();
        let dir = MemDir::with_faults(faults.clone());
        let data = Arc::new(FaultyData::new(&dir));
        let store = open(&path, &dir, &data, &secret);
        let ready = Readiness::new(store.clone());
        assert_eq!(ready.check(), Ok(()));

        // A write's I/O, counted (after a first one, which may set up the
        // log): its last operation is the log's sync.
        store.register(customer(1)).unwrap();
        let before = faults.count();
        store.register(customer(2)).unwrap();
        let per_write = faults.count() - before;
        assert!(per_write >= 2, "{per_write} operations for a write");
        assert_eq!(ready.check(), Ok(()));

        faults.arm(per_write - 1);
        let err = store.register(customer(3)).unwrap_err();
        assert_eq!(faults.fired().map(|f| f.op), Some(Op::WalSync), "{err}");
        assert!(
            matches!(&err, Error::Storage(s) if s.must_reopen()),
            "{err}"
        );
        let not_ready = ready.check().unwrap_err();
        let reasons: Vec<_> = not_ready.reasons().collect();
        assert_eq!(reasons.len(), 1, "{not_ready}");
        assert_eq!(reasons[0].0, "store");
        assert!(
            reasons[0].1.contains("failed") && reasons[0].1.contains("reopen"),
            "{not_ready}"
        );
        let json = not_ready.to_json();
        assert!(
            !json.contains('\n') && !json.contains("ready3@example.com"),
            "{json}"
        );

        // Reads go on; writes stay refused, and so does readiness.
        assert!(store.customer_by_email("ready1@example.com").is_ok());
        assert!(store.register(customer(4)).is_err());
        assert!(ready.check().is_err());
        drop((ready, store));

        let store = open(&path, &dir, &data, &secret);
        let ready = Readiness::new(store.clone());
        assert_eq!(ready.check(), Ok(()));
        assert!(store.customer_by_email("ready2@example.com").is_ok());
        store.register(customer(5)).unwrap();
        assert_eq!(ready.check(), Ok(()));
    }
}
