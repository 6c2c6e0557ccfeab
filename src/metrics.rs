//! Operators' metrics (SPEC §14), through the [`metrics`] crate's
//! facade: the router, the courier and the store's operations emit them,
//! and they cost next to nothing until a recorder is installed — by the host
//! (any `metrics` recorder) or with [`Prometheus::install`] (feature
//! `prometheus`), which `credstore serve` uses for its admin port.
//!
//! Families, in Prometheus's conventions (base units, `_total` counters):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `credstore_http_requests_total` | counter | `route`, `method`, `status` |
//! | `credstore_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `credstore_hashing_admission_wait_seconds` | histogram | |
//! | `credstore_hashing_waits_total` | counter | |
//! | `credstore_hashing_slots`, `credstore_hashing_slots_in_use` | gauge | |
//! | `credstore_wal_commits_total`, `credstore_wal_syncs_total` | counter | |
//! | `credstore_wal_sync_groups_total` | counter | `commits` (`1`, `2-3`, … `64+`) |
//! | `credstore_wal_bytes_total`, `credstore_wal_checkpoints_total` | counter | |
//! | `credstore_postgres_retries_total` | counter | `sqlstate` (`40001`, `40P01`, `other`) |
//! | `credstore_store_writable`, `credstore_ready` | gauge | |
//! | `credstore_mail_queue_depth`, `credstore_mail_queue_due`, `credstore_mail_queue_retrying` | gauge | |
//! | `credstore_mail_queue_oldest_age_seconds`, `credstore_mail_queue_overdue_seconds` | gauge | |
//! | `credstore_mail_deliveries_total` | counter | `outcome` |
//! | `credstore_mail_delivery_duration_seconds` | histogram | |
//! | `credstore_login_failures_total`, `credstore_lockouts_total` | counter | |
//! | `credstore_reset_throttled_total` | counter | |
//! | `credstore_build_info` | gauge | `version` |
//!
//! Label values come from fixed sets only: a route is its template
//! (`/api/v1/{shop}/customers/reset-password/{token}`, or `other`), a
//! method one of the standard ones (or `other`), a status three digits. No
//! email, token or key ever becomes a label. The store's own counts (the
//! write-ahead log's, the hashing slots', the mail queue's) are read when
//! metrics are rendered ([`observe_store`]), not on the request path.

use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::error::Error;
use crate::ops::Store;
use crate::ops::counters::{LOCKOUTS, LOGIN_FAILURES, RESET_THROTTLED};
use crate::ops::mail_queue::View;

const HTTP_REQUESTS: &str = "credstore_http_requests_total";
const HTTP_DURATION: &str = "credstore_http_request_duration_seconds";
const HASHING_ADMISSION_WAIT: &str = "credstore_hashing_admission_wait_seconds";
const HASHING_WAITS: &str = "credstore_hashing_waits_total";
const HASHING_SLOTS: &str = "credstore_hashing_slots";
const HASHING_SLOTS_IN_USE: &str = "credstore_hashing_slots_in_use";
const WAL_COMMITS: &str = "credstore_wal_commits_total";
const WAL_SYNCS: &str = "credstore_wal_syncs_total";
const WAL_SYNC_GROUPS: &str = "credstore_wal_sync_groups_total";
const WAL_BYTES: &str = "credstore_wal_bytes_total";
const WAL_CHECKPOINTS: &str = "credstore_wal_checkpoints_total";
const POSTGRES_RETRIES: &str = "credstore_postgres_retries_total";
const STORE_WRITABLE: &str = "credstore_store_writable";
const READY: &str = "credstore_ready";
const MAIL_QUEUE_DEPTH: &str = "credstore_mail_queue_depth";
const MAIL_QUEUE_DUE: &str = "credstore_mail_queue_due";
const MAIL_QUEUE_RETRYING: &str = "credstore_mail_queue_retrying";
const MAIL_QUEUE_OLDEST: &str = "credstore_mail_queue_oldest_age_seconds";
const MAIL_QUEUE_OVERDUE: &str = "credstore_mail_queue_overdue_seconds";
const MAIL_DELIVERIES: &str = "credstore_mail_deliveries_total";
const MAIL_DELIVERY_DURATION: &str = "credstore_mail_delivery_duration_seconds";
const BUILD_INFO: &str = "credstore_build_info";

/// The `commits` label of [`WAL_SYNC_GROUPS`], by the buckets of
/// [`crate::LogStats::group_sizes`].
const GROUPS: [&str; 7] = ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"];

/// The `sqlstate` label of [`POSTGRES_RETRIES`], by the fields of
/// [`crate::Retries`].
const SQLSTATES: [&str; 3] = ["40001", "40P01", "other"];

/// What [`crate::mail::Courier`] made of one delivery attempt.
pub(crate) const OUTCOMES: [&str; 6] = [
    "delivered",
    "retried",
    "bounced",
    "expired",
    "gone",
    "error",
];

/// Upper bounds of the request latency buckets, in seconds: from a token
/// check (well under a millisecond) to a queue of hashes under a flood.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Gives every family its HELP text and unit, and sets the families
/// without labels to zero, so that a scrape shows each one from the start
/// (a counter that appears only at its first event hides that event from
/// `rate()`). Call once after installing a recorder;
/// [`Prometheus::install`] does.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its answer, by route template and method."
    );
    describe_histogram!(
        HASHING_ADMISSION_WAIT,
        Unit::Seconds,
        "Time a request that may hash a password waited for a hashing slot."
    );
    describe_counter!(
        HASHING_WAITS,
        Unit::Count,
        "Password hashes that found every hashing slot taken and waited (inside the store)."
    );
    describe_gauge!(
        HASHING_SLOTS,
        Unit::Count,
        "Password hashes allowed to run at once (the store's hashing limit)."
    );
    describe_gauge!(
        HASHING_SLOTS_IN_USE,
        Unit::Count,
        "Hashing slots held by requests of the router right now."
    );
    describe_counter!(
        WAL_COMMITS,
        Unit::Count,
        "Durable commits: records appended to the write-ahead log."
    );
    describe_counter!(
        WAL_SYNCS,
        Unit::Count,
        "Group-commit syncs of the write-ahead log (each fdatasyncs the log files written since the last)."
    );
    describe_counter!(
        WAL_SYNC_GROUPS,
        Unit::Count,
        "Write-ahead log syncs by how many commits each made durable."
    );
    describe_counter!(
        POSTGRES_RETRIES,
        Unit::Count,
        "Transactions the PostgreSQL backend ran again, by SQLSTATE (40001 serialization failure, 40P01 deadlock, other: a connection lost); zero on other backends."
    );
    describe_counter!(
        WAL_BYTES,
        Unit::Bytes,
        "Bytes of records written to the write-ahead log."
    );
    describe_counter!(
        WAL_CHECKPOINTS,
        Unit::Count,
        "Checkpoints recorded (sled's files synced, the log behind them recycled)."
    );
    describe_gauge!(
        STORE_WRITABLE,
        Unit::Count,
        "1 while the store accepts writes, 0 in its failed state (restart to recover)."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 when /health/ready answers 200, else 0."
    );
    describe_gauge!(
        MAIL_QUEUE_DEPTH,
        Unit::Count,
        "Reset mails queued (not yet delivered, bounced or expired)."
    );
    describe_gauge!(
        MAIL_QUEUE_DUE,
        Unit::Count,
        "Queued reset mails whose next attempt is due now."
    );
    describe_gauge!(
        MAIL_QUEUE_RETRYING,
        Unit::Count,
        "Queued reset mails that failed at least once and wait for a retry."
    );
    describe_gauge!(
        MAIL_QUEUE_OLDEST,
        Unit::Seconds,
        "Age of the oldest queued reset mail (0 when the queue is empty)."
    );
    describe_gauge!(
        MAIL_QUEUE_OVERDUE,
        Unit::Seconds,
        "How long the next reset mail has been due without being delivered (0 when none is due)."
    );
    describe_counter!(
        MAIL_DELIVERIES,
        Unit::Count,
        "Reset mail delivery attempts by outcome: delivered, retried (temporary failure), bounced (permanent), expired (token died first), gone (entry removed meanwhile), error (the store could not record it)."
    );
    describe_histogram!(
        MAIL_DELIVERY_DURATION,
        Unit::Seconds,
        "Time the mailer took to accept or refuse a reset mail."
    );
    describe_counter!(
        LOGIN_FAILURES,
        Unit::Count,
        "Logins refused for a wrong password or an unknown email (verified and counted against the lock-out)."
    );
    describe_counter!(
        LOCKOUTS,
        Unit::Count,
        "Accounts (or unknown emails) locked after too many failed logins."
    );
    describe_counter!(
        RESET_THROTTLED,
        Unit::Count,
        "Reset requests refused because the customer was issued one less than a minute before."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the version label says which credstore runs."
    );
    for name in [
        HASHING_WAITS,
        WAL_COMMITS,
        WAL_SYNCS,
        WAL_BYTES,
        WAL_CHECKPOINTS,
        LOGIN_FAILURES,
        LOCKOUTS,
        RESET_THROTTLED,
    ] {
        counter!(name).increment(0);
    }
    for group in GROUPS {
        counter!(WAL_SYNC_GROUPS, "commits" => group).increment(0);
    }
    for outcome in OUTCOMES {
        counter!(MAIL_DELIVERIES, "outcome" => outcome).increment(0);
    }
    for sqlstate in SQLSTATES {
        counter!(POSTGRES_RETRIES, "sqlstate" => sqlstate).increment(0);
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// One answered HTTP request (`route`: a template from a fixed set).
#[cfg(feature = "server")]
pub(crate) fn request(route: &'static str, method: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status_label(status))
        .increment(1);
    histogram!(HTTP_DURATION, "route" => route, "method" => method).record(elapsed.as_secs_f64());
}

/// A request that may hash waited this long for a hashing slot.
#[cfg(feature = "server")]
pub(crate) fn hashing_admission(wait: Duration) {
    histogram!(HASHING_ADMISSION_WAIT).record(wait.as_secs_f64());
}

/// One delivery attempt of the courier (`outcome` from [`OUTCOMES`]).
pub(crate) fn mail_delivery(outcome: &'static str, took: Duration) {
    counter!(MAIL_DELIVERIES, "outcome" => outcome).increment(1);
    histogram!(MAIL_DELIVERY_DURATION).record(took.as_secs_f64());
}

/// Sets `credstore_ready` (the admin router does, at each scrape).
pub fn observe_readiness(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// Reads the store's own counts into the recorder: the write-ahead log's
/// commits, syncs, group sizes, bytes and checkpoints, the hashing slots,
/// whether the store is writable, the mail queue. Call it just before
/// rendering (a scrape); it scans the mail queue, so run it off the async
/// executor. Counters are set to the store's values since it was opened
/// (a counter never goes down: one store per process).
pub fn observe_store(store: &Store) {
    let log = store.log_stats();
    counter!(WAL_COMMITS).absolute(log.commits);
    counter!(WAL_SYNCS).absolute(log.syncs);
    counter!(WAL_BYTES).absolute(log.bytes);
    counter!(WAL_CHECKPOINTS).absolute(log.checkpoints);
    for (group, n) in GROUPS.into_iter().zip(log.group_sizes) {
        counter!(WAL_SYNC_GROUPS, "commits" => group).absolute(n);
    }
    let r = log.retries;
    for (sqlstate, n) in
        SQLSTATES
            .into_iter()
            .zip([r.serialization_failure, r.deadlock_detected, r.other])
    {
        counter!(POSTGRES_RETRIES, "sqlstate" => sqlstate).absolute(n);
    }
    let writable = store.health().is_writable();
    gauge!(STORE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
    let limit = store.hashing_limit();
    gauge!(HASHING_SLOTS).set(limit as f64);
    counter!(HASHING_WAITS).absolute(store.hashing_waits());
    #[cfg(feature = "tokio")]
    {
        let free = store.hashing_admission().available_permits();
        gauge!(HASHING_SLOTS_IN_USE).set(limit.saturating_sub(free) as f64);
    }
    match store.mail_queue_summary_as(View::AsOfStart) {
        Ok(s) => {
            gauge!(MAIL_QUEUE_DEPTH).set(s.queued as f64);
            gauge!(MAIL_QUEUE_DUE).set(s.due as f64);
            gauge!(MAIL_QUEUE_RETRYING).set(s.retrying as f64);
            let age = s.oldest.map_or(Duration::ZERO, |t| since(store, t));
            gauge!(MAIL_QUEUE_OLDEST).set(age.as_secs_f64());
        }
        Err(e) => tracing::warn!(error = %e, "metrics: reading the mail queue failed"),
    }
    match mail_overdue(store) {
        Ok(d) => gauge!(MAIL_QUEUE_OVERDUE).set(d.as_secs_f64()),
        Err(e) => tracing::warn!(error = %e, "metrics: reading the mail queue failed"),
    }
}

/// How long the mail due first has been due (zero when none is due): a
/// courier that runs takes a due mail within moments, so a long wait means
/// that none runs, or that it is wedged.
pub(crate) fn mail_overdue(store: &Store) -> Result<Duration, Error> {
    Ok(store
        .mail_queue_as(1, View::AsOfStart)?
        .first()
        .map_or(Duration::ZERO, |m| since(store, m.next_attempt_at)))
}

/// From `t` to the store's now (zero if `t` is in the future).
fn since(store: &Store, t: crate::Timestamp) -> Duration {
    let ms = store.now().as_millis().saturating_sub(t.as_millis()).max(0);
    Duration::from_millis(ms.unsigned_abs())
}

#[cfg(feature = "server")]
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// A status as three digits, without an allocation for the usual ones.
#[cfg(feature = "server")]
fn status_label(status: u16) -> ::metrics::SharedString {
    const USUAL: [(u16, &str); 24] = [
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (408, "408"),
        (409, "409"),
        (410, "410"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match USUAL.iter().find(|(s, _)| *s == status) {
        Some((_, label)) => ::metrics::SharedString::const_str(label),
        None if (100..=999).contains(&status) => status.to_string().into(),
        None => ::metrics::SharedString::const_str("other"),
    }
}

#[cfg(feature = "prometheus")]
pub use prometheus::{InstallError, Prometheus};

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::time::Duration;

    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

    use super::LATENCY_BUCKETS;
    use crate::ops::Store;

    /// How often samples of histograms are folded into their buckets when
    /// nobody scrapes (so that they never pile up).
    const UPKEEP: Duration = Duration::from_secs(5);

    /// The Prometheus exporter: a recorder installed for the whole process,
    /// rendered in the text exposition format. A cheap `Clone`.
    #[derive(Clone)]
    pub struct Prometheus {
        handle: PrometheusHandle,
    }

    impl std::fmt::Debug for Prometheus {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Prometheus").finish_non_exhaustive()
        }
    }

    /// The process has a `metrics` recorder already (one per process).
    #[derive(Debug, thiserror::Error)]
    #[error("cannot install the Prometheus recorder: {0}")]
    pub struct InstallError(String);

    impl Prometheus {
        /// Installs the recorder for the whole process (histograms of
        /// `_seconds` families get [`LATENCY_BUCKETS`]), describes every
        /// family ([`super::describe`]) and starts a thread that folds
        /// histogram samples into their buckets every few seconds.
        pub fn install() -> Result<Self, InstallError> {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .map_err(|e| InstallError(e.to_string()))?
                .install_recorder()
                .map_err(|e| InstallError(e.to_string()))?;
            super::describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("credstore-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| InstallError(e.to_string()))?;
            Ok(Self { handle })
        }

        /// The text exposition of every family, the store's counts read
        /// now ([`super::observe_store`]). Blocks (it scans the mail
        /// queue): call it off the async executor.
        pub fn render(&self, store: &Store) -> String {
            super::observe_store(store);
            self.handle.render()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "server")]
    fn labels_come_from_fixed_sets() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("get"), "other");
        assert_eq!(method_label("johndoe@email.com"), "other");
        assert_eq!(&*status_label(200), "200");
        assert_eq!(&*status_label(418), "418");
        assert_eq!(&*status_label(1000), "other");
        assert_eq!(&*status_label(7), "other");
    }
}
