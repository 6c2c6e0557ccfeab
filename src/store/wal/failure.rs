//! The log's failed state, and the log lines of failures that change nothing.
//!
//! fsyncgate: after a failed `fsync`/`fdatasync` Linux may have dropped the
//! dirty pages and marked them clean, so a later sync of the same file can
//! succeed without the data ever reaching the disk. A failed write or sync of
//! the log (or of sled's files at a checkpoint) therefore ends every promise:
//! the store enters its failed state for good, refuses every write, records no
//! checkpoint and recycles no segment. Reopening recovers from the last good
//! checkpoint, which the failure never touched.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// The failed state: set once, never cleared (a reopen starts afresh).
pub(crate) struct FailedState {
    /// A copy of `cause.is_some()` that readers check without a lock.
    failed: AtomicBool,
    /// What failed first. Held for reading across a checkpoint's recording,
    /// so that no checkpoint is recorded once the state is set.
    cause: RwLock<Option<String>>,
}

/// The error of a write refused in the failed state.
#[derive(Debug)]
pub(crate) struct Failed {
    cause: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the store is in its failed state ({})", self.cause)
    }
}

impl std::error::Error for Failed {}

impl FailedState {
    pub fn new() -> Self {
        Self {
            failed: AtomicBool::new(false),
            cause: RwLock::new(None),
        }
    }

    /// Enters the failed state because `what` failed with `e` (the first
    /// cause is kept and logged; later ones change nothing).
    pub fn fail(&self, what: &'static str, e: &io::Error) {
        let mut cause = self.cause.write().unwrap_or_else(PoisonError::into_inner);
        if cause.is_none() {
            tracing::error!(
                error = %e,
                "{what} failed: the store refuses every write until it is reopened \
                 (reopening recovers every acknowledged change)"
            );
            *cause = Some(format!("{what} failed: {e}"));
            self.failed.store(true, Ordering::Release);
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// What failed, once the state is set.
    pub fn cause(&self) -> Option<String> {
        if !self.is_failed() {
            return None;
        }
        self.cause
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `Err` (a [`Failed`]) in the failed state.
    pub fn check(&self) -> io::Result<()> {
        match self.cause() {
            Some(cause) => Err(io::Error::other(Failed { cause })),
            None => Ok(()),
        }
    }

    /// Keeps the state from being set while the guard lives; `Err` when it
    /// is set already. Never call [`FailedState::fail`] while holding it.
    pub fn hold_off(&self) -> io::Result<RwLockReadGuard<'_, Option<String>>> {
        let guard = self.cause.read().unwrap_or_else(PoisonError::into_inner);
        match &*guard {
            Some(cause) => Err(io::Error::other(Failed {
                cause: cause.clone(),
            })),
            None => Ok(guard),
        }
    }
}

/// Logs failures that changed nothing a caller was told about (housekeeping
/// after a durable commit, a refused write): each one when they are rare, at
/// most one line per [`QUIET`] with a count when they come in a flood.
pub(crate) struct FailureLog {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

/// The least time between two lines of one [`FailureLog`].
const QUIET: Duration = Duration::from_secs(10);

impl FailureLog {
    pub fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs that `what` failed with `e` (never a secret: errors of the
    /// store layer carry none).
    pub fn report(&self, what: &str, e: &dyn fmt::Display) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < QUIET) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(error = %e, similar_failures_not_logged = suppressed, "{what}");
    }
}
