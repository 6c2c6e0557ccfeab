//! The operations layer: [`Store`] and its public methods.

mod apps;
#[cfg(test)]
mod commit_delay_tests;
mod config;
pub(crate) mod counters;
mod customers;
mod deferred;
mod dump;
mod faults;
mod login;
pub(crate) mod mail_queue;
mod mail_signal;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod model_check;
mod reads;
mod resets;
mod rotation;
mod signed;
mod steps;
mod tokens;

use std::path::Path;
use std::sync::Arc;

pub use config::{Config, DEFAULT_COMMIT_DELAY, LockoutPolicy};
#[cfg_attr(not(feature = "tokio"), allow(unused_imports))]
pub(crate) use deferred::Deferred;
pub use login::FAILURE_MEMORY;
pub use signed::{MIN_SALT, SignedPasswordChange};

use crate::crypto::Keys;
use crate::crypto::password::Hasher;
use crate::error::{Error, InputError};
use crate::model::{Event, StoreSecret, Timestamp};
use crate::store::schema::EVENTS;
use crate::store::{self, Engine, EngineOptions, FailPoint, IntegrityReport};

/// The credential store: a cheap `Clone`, `Send + Sync`; open once per process
/// and share.
///
/// # Blocking
///
/// Every method blocks the calling thread, some for long:
///
/// - these compute a password hash (argon2id: 10–25 ms with the default
///   parameters; an imported bcrypt or argon2 hash costs what its
///   parameters say): [`Store::register`], [`Store::login`],
///   [`Store::update_password`], [`Store::change_password`],
///   [`Store::change_password_signed`], [`Store::reset_password`],
///   [`Store::reset_password_by_id`],
///   [`Store::reset_password_by_id_and_update`]. At most
///   [`Config::with_hashing_limit`] hashes run at once, on the store's
///   hashing threads, while the caller's thread waits; the rest queue;
/// - every method that changes something waits for its write-ahead log
///   record to reach the disk (`fdatasync`, shared by concurrent writers),
///   and [`Store::open`] recovers the log;
/// - reads (`customer`, `check_reset_token`, `app`, ...) touch memory or the
///   page cache only.
///
/// Do not call them on an async runtime's worker threads: use
/// [`crate::AsyncStore`] (feature `tokio`), which runs each on the blocking
/// pool, or `spawn_blocking`. Dropping the last handle closes the store (a
/// checkpoint: I/O).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    keys: Keys,
    hasher: Hasher,
    config: Config,
    mail_signal: mail_signal::MailSignal,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A clean close makes everything durable (a checkpoint); errors here
        // have nowhere to go, and every acknowledged change is durable already.
        let _ = self.engine.flush();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.inner.engine)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Most events returned by one [`Store::events`] call.
pub const MAX_EVENTS_PER_READ: usize = 10_000;

impl Store {
    /// Opens the store at `path`, creating it when the directory is absent or
    /// empty. Fails with [`Error::WrongSecret`] when the store was created with
    /// another secret, and with [`Error::UnknownFormat`] /
    /// [`Error::UnsupportedVersion`] when the directory holds something else.
    pub fn open(
        path: impl AsRef<Path>,
        secret: &StoreSecret,
        config: Config,
    ) -> Result<Self, Error> {
        let keys = Keys::derive(secret);
        let engine = store::open_on_disk(path.as_ref(), engine_options(&keys, &config))?;
        Self::from_parts(engine, keys, config).opened()
    }

    /// Opens the store in the PostgreSQL database at `url`
    /// (`postgresql://user[:password]@host[:port]/dbname`; with
    /// `?sslmode=require` (or `verify-ca`, `verify-full`) over TLS, the
    /// server's certificate and host name checked against Mozilla's roots or
    /// [`Config::with_postgres_ca_file`]), creating its tables
    /// when they are missing. Any number of processes may open the same
    /// database at once: every guarantee holds across them (SPEC §13).
    /// Fails like [`Store::open`] on another secret or a newer schema, and
    /// with a storage error when the server cannot be reached.
    ///
    /// The `postgres` client runs a small runtime of its own: call the
    /// store, and drop it, off async executors ([`crate::AsyncStore`] does).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, secret: &StoreSecret, config: Config) -> Result<Self, Error> {
        let keys = Keys::derive(secret);
        let engine = store::open_postgres(url, engine_options(&keys, &config))?;
        Self::from_parts(engine, keys, config).opened()
    }

    /// A store that lives in a temporary directory and vanishes on drop; for tests.
    pub fn temporary(secret: &StoreSecret, config: Config) -> Result<Self, Error> {
        let keys = Keys::derive(secret);
        let engine = store::temporary(engine_options(&keys, &config))?;
        Self::from_parts(engine, keys, config).opened()
    }

    /// A store on the second backend, ordered maps in memory, which runs
    /// every transaction's closure twice and keeps the second run (as a
    /// backend that retries on conflicts does). Tests run on it to show
    /// that the operations depend on the storage seam only. Not for use.
    #[doc(hidden)]
    pub fn in_memory_for_tests(secret: &StoreSecret, config: Config) -> Result<Self, Error> {
        let keys = Keys::derive(secret);
        let engine = store::in_memory(engine_options(&keys, &config))?;
        Self::from_parts(engine, keys, config).opened()
    }

    /// Brings a store written by an older build up to this one's indexes
    /// (the same format version: nothing an older build cannot read).
    fn opened(self) -> Result<Self, Error> {
        self.index_queued_mail()?;
        Ok(self)
    }

    fn from_parts(engine: Engine, keys: Keys, config: Config) -> Self {
        let hasher = Hasher::new(config.argon2, keys.pepper, config.hashing_limit);
        Self {
            inner: Arc::new(Inner {
                engine,
                keys,
                hasher,
                config,
                mail_signal: mail_signal::MailSignal::default(),
            }),
        }
    }

    /// How many password hashes may run at once ([`Config::with_hashing_limit`]).
    pub fn hashing_limit(&self) -> usize {
        self.inner.hasher.slots().limit()
    }

    /// Two permits per hashing slot, for async callers ([`crate::AsyncStore`],
    /// the router) to wait on before they give an operation that may hash a
    /// blocking thread.
    #[cfg(feature = "tokio")]
    pub(crate) fn hashing_admission(&self) -> std::sync::Arc<tokio::sync::Semaphore> {
        self.inner.hasher.slots().admission().clone()
    }

    /// How many hashes so far had to wait for a hashing slot.
    pub fn hashing_waits(&self) -> u64 {
        self.inner.hasher.slots().waits()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    /// Wakes the delivery workers when mail is queued.
    pub(crate) fn mail_signal(&self) -> &mail_signal::MailSignal {
        &self.inner.mail_signal
    }

    /// A test hook outside transactions (see [`Config::with_fail_point`]):
    /// fails with a storage error when the fail point fires at `name`.
    pub(crate) fn fail_point(&self, name: &'static str) -> Result<(), Error> {
        FailPoint::check(
            self.inner.config.fail_point.as_ref(),
            "running an operation",
            name,
        )
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    /// Makes everything written so far durable. Every acknowledged change
    /// already is (with the default durability); this also runs at close.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.engine.flush()
    }

    /// Up to `limit` (at most [`MAX_EVENTS_PER_READ`]) event-log entries with
    /// a sequence number of `from` or more, oldest first.
    pub fn events(&self, from: u64, limit: usize) -> Result<Vec<Event>, Error> {
        let rows = self
            .engine()
            .scan_from_key(&EVENTS, from, limit.min(MAX_EVENTS_PER_READ))?;
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    }

    /// The newest `limit` (at most [`MAX_EVENTS_PER_READ`]) event-log
    /// entries, oldest first.
    pub fn last_events(&self, limit: usize) -> Result<Vec<Event>, Error> {
        let rows = self
            .engine()
            .scan_last(&EVENTS, limit.min(MAX_EVENTS_PER_READ))?;
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    }

    /// Removes event-log entries with a sequence number below `before`;
    /// returns how many were removed.
    pub fn trim_events(&self, before: u64) -> Result<usize, Error> {
        self.engine().trim_events(before)
    }

    /// Checks that every index entry points at its record and every record is
    /// indexed; the report lists each problem found.
    pub fn check_integrity(&self) -> Result<IntegrityReport, Error> {
        self.engine().check_integrity()
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.engine().size_on_disk()
    }

    /// Bytes of every record's key and value as stored: what
    /// [`Store::size_on_disk`] holds, without the storage's overhead. Their
    /// ratio tells when [`Store::compact`] would give space back (README,
    /// "Footprint"). Reads every record.
    pub fn record_bytes(&self) -> Result<u64, Error> {
        let trees = self.record_bytes_by_tree()?;
        Ok(trees.iter().map(|(_, _, bytes)| bytes).sum())
    }

    /// [`Store::record_bytes`] by tree: (name, records, bytes).
    pub(crate) fn record_bytes_by_tree(&self) -> Result<Vec<(&'static str, u64, u64)>, Error> {
        let engine = self.engine();
        let mut out = Vec::new();
        for id in crate::store::schema::TreeId::ALL {
            let (mut n, mut bytes) = (0u64, 0u64);
            engine.for_each_row(id, |k, v| {
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                Ok(())
            })?;
            out.push((id.name(), n, bytes));
        }
        Ok(out)
    }
}

fn engine_options(keys: &Keys, config: &Config) -> EngineOptions {
    EngineOptions {
        durability: config.durability,
        cache_capacity: config.cache_capacity,
        defer_replay_bytes: config.defer_replay_bytes,
        commit_delay: config.commit_delay,
        hashing_limit: config.hashing_limit,
        compress_pages: config.compress_pages,
        postgres_ca_file: config.postgres_ca_file.clone(),
        fingerprint: keys.fingerprint,
        first_box_id: config.first_box_id,
        fail_point: config.fail_point.clone(),
    }
}

/// Checks a free-text field: at most 255 bytes, no control characters.
pub(crate) fn check_text(field: &'static str, text: &str) -> Result<(), Error> {
    if text.len() > 255 || text.chars().any(char::is_control) {
        return Err(InputError::MalformedText { field }.into());
    }
    Ok(())
}
