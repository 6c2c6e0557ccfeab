//! The log's failed state, and the log lines of failures that change nothing.
//!
//! fsyncgate: after a failed `fsync`/`fdatasync` Linux may have dropped the
//! dirty pages and marked them clean, so a later sync of the same file can
//! succeed without the data ever reaching the disk. A failed write or sync of
//! the log (or of sled's files at a checkpoint) therefore ends every promise:
//! the store enters its failed state for good, refuses every write, records no
//! checkpoint and recycles no segment. Reopening recovers from the last good
//! checkpoint, which the failure never touched.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// is set already. Hold it across no lock that a thread may hold while
    /// it calls [`FailedState::fail`] (the writer lock), and never call
    /// `fail` while holding it.
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
/// after a durable commit): each kind when it is rare, at most one line per
/// [`QUIET`] with a count when it comes in a flood.
pub(crate) struct FailureLog {
    /// By what failed: when it was last logged, and how many were not.
    kinds: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

/// The least time between two lines about one kind of failure.
const QUIET: Duration = Duration::from_secs(10);

impl FailureLog {
    pub fn new() -> Self {
        Self {
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Logs that `what` failed with `e` (never a secret: errors of the
    /// store layer carry none).
    pub fn report(&self, what: &'static str, e: &dyn fmt::Display) {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let suppressed = match kinds.get_mut(what) {
            Some((last, n)) if now.duration_since(*last) < QUIET => {
                *n += 1;
                return;
            }
            Some((last, n)) => {
                *last = now;
                std::mem::take(n)
            }
            None => {
                kinds.insert(what, (now, 0));
                0
            }
        };
        drop(kinds);
        tracing::warn!(error = %e, similar_failures_not_logged = suppressed, "{what}");
    }
}

/// Spaces out retries of housekeeping that failed (a full disk, a broken
/// sled): committers would otherwise each pay for a failing attempt.
pub(crate) struct Backoff {
    retry_at: Mutex<Option<Instant>>,
}

/// How long after a failed attempt the next one waits.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Backoff {
    pub fn new() -> Self {
        Self {
            retry_at: Mutex::new(None),
        }
    }

    /// `false` while waiting after a failure.
    pub fn ready(&self) -> bool {
        let retry_at = self.retry_at.lock().unwrap_or_else(PoisonError::into_inner);
        retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Notes how an attempt went.
    pub fn note<T, E>(&self, result: &Result<T, E>) {
        let mut retry_at = self.retry_at.lock().unwrap_or_else(PoisonError::into_inner);
        *retry_at = result.is_err().then(|| Instant::now() + RETRY_AFTER);
    }
}
