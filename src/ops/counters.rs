//! The counters the operations themselves emit (SPEC §14), through the
//! [`metrics`](::metrics) facade: free until a recorder is installed.
//! [`crate::metrics`] describes them (HELP, TYPE) with the other families;
//! they live here so that the operations do not import that module, which
//! reads the store.

use ::metrics::counter;

use crate::error::Error;

/// `credstore_login_failures_total`: logins refused for a wrong password.
pub(crate) const LOGIN_FAILURES: &str = "credstore_login_failures_total";
/// `credstore_lockouts_total`: failures that locked an account.
pub(crate) const LOCKOUTS: &str = "credstore_lockouts_total";
/// `credstore_reset_throttled_total`: reset requests refused by the throttle.
pub(crate) const RESET_THROTTLED: &str = "credstore_reset_throttled_total";

/// A login failed for a wrong password; `locked`: it set the lock.
pub(crate) fn login_failed(locked: bool) {
    counter!(LOGIN_FAILURES).increment(1);
    counter!(LOCKOUTS).increment(u64::from(locked));
}

/// A reset request was refused with `why` (counted when it is the
/// throttle); returns `why`.
pub(crate) fn reset_refused(why: Error) -> Error {
    if matches!(why, Error::Throttled) {
        counter!(RESET_THROTTLED).increment(1);
    }
    why
}
