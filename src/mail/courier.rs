//! The courier: delivers the store's reset mail queue through a [`Mailer`].
//!
//! [`Courier::run`] (or [`Courier::spawn`]) keeps one coordinator and
//! [`CourierSettings::concurrency`] worker threads: the coordinator reads
//! the mails due (waking when a request queues one, when a worker finishes,
//! or when the next retry is due), the workers send them. Each outcome is
//! recorded at once, durably: a delivered mail is deleted, a temporary
//! failure is retried after a jittered exponential backoff until the token
//! expires, a permanent failure is dropped with its reset.
//!
//! Delivery is at least once: a mail the mailer accepted just before the
//! process was killed, and not yet deleted, is sent again after a restart
//! (the window is one durable commit, well under a millisecond here). A
//! queued mail is never lost: it stays in the store until it is delivered,
//! fails for good or expires. One process delivers a store's queue.

use std::collections::{HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{MailError, Mailer, ResetMail, reset_link};
use crate::error::Error;
use crate::model::{DueMail, MailFate, MailRetry, Timestamp};
use crate::ops::Store;

/// How a [`Courier`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CourierSettings {
    /// The base of reset links ([`super::reset_link`]).
    pub reset_link_base: String,
    /// Mails sent at once (worker threads; default 8, at least 1). Each
    /// SMTP connection of lettre 0.11.23 spends ~40 ms a mail waiting for a
    /// delayed ACK (Nagle: lettre sets no `TCP_NODELAY`, fixed upstream in
    /// lettre PR #1159 after that release), so throughput comes from
    /// parallel connections.
    pub concurrency: usize,
    /// The first retry comes after about this long (default 5 s); each
    /// further one after twice the previous, up to `retry_max`, each
    /// jittered down by up to half so that retries spread out.
    pub retry_min: Duration,
    /// The longest wait between two attempts (default 5 minutes).
    pub retry_max: Duration,
    /// An idle courier reads the queue at least this often (default 5 s),
    /// besides waking whenever this process queues a mail.
    pub idle_poll: Duration,
    /// On a store that several instances share (PostgreSQL), a courier
    /// claims each mail before it sends it, for this long (default 2
    /// minutes; an SMTP send gives up after a few 10 s timeouts): the
    /// couriers of other instances pass it over meanwhile, so that each
    /// mail is sent once, and if this instance stops mid-send the mail is
    /// due again after it.
    pub claim_for: Duration,
}

impl CourierSettings {
    /// Defaults, with links under `reset_link_base`.
    pub fn new(reset_link_base: impl Into<String>) -> Self {
        Self {
            reset_link_base: reset_link_base.into(),
            concurrency: 8,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(5 * 60),
            idle_poll: Duration::from_secs(5),
            claim_for: Duration::from_secs(2 * 60),
        }
    }

    /// Sets [`CourierSettings::concurrency`].
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets [`CourierSettings::retry_min`] and [`CourierSettings::retry_max`].
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// Sets [`CourierSettings::idle_poll`].
    pub fn with_idle_poll(mut self, d: Duration) -> Self {
        self.idle_poll = d;
        self
    }

    /// Sets [`CourierSettings::claim_for`].
    pub fn with_claim_for(mut self, d: Duration) -> Self {
        self.claim_for = d;
        self
    }

    /// The wait before attempt `failures + 1`, before jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.retry_min
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }
}

/// What a [`Courier::deliver_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// Mails the mailer accepted (and deleted from the queue).
    pub delivered: usize,
    /// Temporary failures, to be tried again.
    pub retried: usize,
    /// Permanent failures: dropped, their resets revoked.
    pub bounced: usize,
    /// Dropped because the token expires before another attempt.
    pub expired: usize,
}

impl DeliveryReport {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::Bounced => self.bounced += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Gone => {}
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    Retried,
    Bounced,
    Expired,
    Gone,
}

/// Delivers a store's reset mail queue through a [`Mailer`]. A cheap
/// `Clone`: one clone runs ([`Courier::run`]), another stops it.
#[derive(Clone)]
pub struct Courier {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    mailer: Box<dyn Mailer>,
    settings: CourierSettings,
    stop: AtomicBool,
}

impl std::fmt::Debug for Courier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Courier")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// The mails handed to the workers, and those in flight.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<DueMail>,
    in_flight: HashSet<String>,
    stopping: bool,
}

struct Board {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most mails one [`Courier::deliver_due`] call reads.
const PASS_LIMIT: usize = 1000;

/// Reads of the queue by a running courier are at least this far apart.
const MIN_READ_GAP: Duration = Duration::from_millis(20);

/// An idle courier reads the queue this long after a wake-up, so that its
/// work (reading the queue, unsealing, building the mail, SMTP) never
/// competes for the CPU with the answer to the request that queued the mail:
/// a request for a known email would otherwise answer measurably later than
/// one for an unknown email, which queues nothing (SPEC §5.7, §12). A mail
/// leaves this much later, which no reader of reset mail notices.
const SETTLE: Duration = Duration::from_millis(25);

impl Courier {
    /// A courier for `store`'s queue, sending through `mailer`.
    pub fn new(store: Store, mailer: impl Mailer + 'static, settings: CourierSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                mailer: Box::new(mailer),
                settings,
                stop: AtomicBool::new(false),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &CourierSettings {
        &self.inner.settings
    }

    /// Delivers the mails due now (up to 1,000), one after the other on
    /// the calling thread, and records each outcome: for hosts that
    /// schedule delivery themselves, and for tests. Errors are the store's
    /// (the mailer's are outcomes).
    pub fn deliver_due(&self) -> Result<DeliveryReport, Error> {
        let mut report = DeliveryReport::default();
        for due in self.inner.store.mail_due(PASS_LIMIT)?.mails {
            report.add(self.deliver(due)?);
        }
        Ok(report)
    }

    /// Delivers until [`Courier::stop`] is called: run it on a thread of
    /// your own (or use [`Courier::spawn`]). Mails in flight when asked to
    /// stop are finished and recorded; the others stay queued for the next
    /// run. Store errors are logged and retried after a pause.
    pub fn run(&self) {
        let board = Board {
            jobs: Mutex::new(Jobs::default()),
            ready: Condvar::new(),
        };
        std::thread::scope(|s| {
            for i in 0..self.inner.settings.concurrency.max(1) {
                let board = &board;
                let spawned = std::thread::Builder::new()
                    .name(format!("credstore-mail-{i}"))
                    .spawn_scoped(s, move || self.work(board));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a mail worker thread");
                }
            }
            self.coordinate(&board);
        });
    }

    /// Asks [`Courier::run`] to return (the mails in flight finish first).
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.store.mail_signal().notify();
    }

    fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }

    /// Runs [`Courier::run`] on a new thread.
    pub fn spawn(self) -> std::io::Result<CourierHandle> {
        let runner = self.clone();
        let thread = std::thread::Builder::new()
            .name("credstore-courier".into())
            .spawn(move || runner.run())?;
        Ok(CourierHandle {
            courier: self,
            thread,
        })
    }

    fn coordinate(&self, board: &Board) {
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let signal = store.mail_signal();
        let workers = settings.concurrency.max(1);
        // Mails taken per read of the queue: a read scans every entry, so
        // under a backlog it is made once per many sends, not per send.
        let buffer = workers * 16;
        let mut last_read: Option<Instant> = None;
        while !self.stopping() {
            let seen = signal.generation();
            let (in_flight, waiting) = {
                let jobs = board.lock();
                (jobs.in_flight.clone(), jobs.queue.len())
            };
            let mut wait = settings.idle_poll;
            let recently = last_read.is_some_and(|t| t.elapsed() < MIN_READ_GAP);
            if waiting < workers && in_flight.len() < buffer && !recently {
                last_read = Some(Instant::now());
                match store.mail_due_except(buffer - in_flight.len(), |id| in_flight.contains(id)) {
                    Ok(due) => {
                        if let Some(next) = due.next_due {
                            wait = wait.min(until(store.now(), next));
                        }
                        if !due.mails.is_empty() {
                            let mut jobs = board.lock();
                            for m in due.mails {
                                jobs.in_flight.insert(m.entry.reset_id.clone());
                                jobs.queue.push_back(m);
                            }
                            board.ready.notify_all();
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading the mail queue failed; retrying");
                        wait = wait.min(Duration::from_secs(1));
                    }
                }
            } else if recently {
                wait = wait.min(MIN_READ_GAP);
            }
            // Woken early by a queued mail, a finished one, or stop().
            let idle = {
                let jobs = board.lock();
                jobs.in_flight.is_empty() && jobs.queue.is_empty()
            };
            signal.wait(seen, wait.max(Duration::from_millis(5)));
            // An idle courier woken by a request lets that request answer
            // first; a busy one (a backlog) goes on at once.
            if idle && signal.generation() != seen && !self.stopping() {
                std::thread::sleep(SETTLE);
            }
        }
        let mut jobs = board.lock();
        jobs.stopping = true;
        // Not sent: they stay queued in the store (their tokens are
        // zeroized here as they drop).
        jobs.queue.clear();
        board.ready.notify_all();
    }

    fn work(&self, board: &Board) {
        loop {
            let due = {
                let mut jobs = board.lock();
                loop {
                    if jobs.stopping || self.stopping() {
                        return;
                    }
                    if let Some(d) = jobs.queue.pop_front() {
                        break d;
                    }
                    jobs = board.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            };
            let id = due.entry.reset_id.clone();
            if let Err(e) = self.deliver(due) {
                tracing::error!(reset_id = %id, error = %e, "recording a mail delivery failed");
                std::thread::sleep(Duration::from_millis(200));
            }
            board.lock().in_flight.remove(&id);
            self.inner.store.mail_signal().notify();
        }
    }

    /// Sends one mail, records the outcome, and counts it
    /// (`credstore_mail_deliveries_total`, [`crate::metrics`]).
    fn deliver(&self, due: DueMail) -> Result<Outcome, Error> {
        let started = Instant::now();
        let result = self.attempt(due);
        let outcome = match &result {
            Ok(Outcome::Delivered) => "delivered",
            Ok(Outcome::Retried) => "retried",
            Ok(Outcome::Bounced) => "bounced",
            Ok(Outcome::Expired) => "expired",
            Ok(Outcome::Gone) => "gone",
            Err(_) => "error",
        };
        crate::metrics::mail_delivery(outcome, started.elapsed());
        result
    }

    /// Sends one mail and records the outcome.
    fn attempt(&self, due: DueMail) -> Result<Outcome, Error> {
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let DueMail { entry, token } = due;
        // Another instance may have read the same mail as due: one of them
        // takes it (a serializable transaction), the others pass it over.
        if store.engine().shared()
            && !store.claim_mail(&entry.reset_id, store.now().plus(settings.claim_for))?
        {
            return Ok(Outcome::Gone);
        }
        let link = reset_link(
            &settings.reset_link_base,
            &entry.shop,
            token.expose_secret(),
        );
        let mail = ResetMail::new(entry.to, token, entry.reset_id, entry.expires_at, link)
            .with_lang(entry.lang);
        let id = mail.reset_id();
        let started = Instant::now();
        let sent = catch_unwind(AssertUnwindSafe(|| self.inner.mailer.send(&mail)))
            .unwrap_or_else(|_| Err(MailError::new("the mailer panicked")));
        match sent {
            Ok(()) => {
                let recorded = store.mail_delivered(id)?;
                tracing::info!(
                    reset_id = %id,
                    attempt = entry.attempts + 1,
                    ms = started.elapsed().as_millis() as u64,
                    "reset mail delivered"
                );
                Ok(if recorded {
                    Outcome::Delivered
                } else {
                    Outcome::Gone
                })
            }
            Err(e) if e.is_permanent() => {
                let fate = store.mail_failed(id, e.description(), MailRetry::Never)?;
                tracing::warn!(reset_id = %id, error = %e, "reset mail bounced; dropped and its reset revoked");
                Ok(outcome(fate))
            }
            Err(e) => {
                let wait = jitter(settings.backoff(entry.attempts.saturating_add(1)));
                let at = store.now().plus(wait);
                let fate = store.mail_failed(id, e.description(), MailRetry::At(at))?;
                match fate {
                    MailFate::Retry(at) => tracing::warn!(
                        reset_id = %id,
                        attempt = entry.attempts + 1,
                        error = %e,
                        retry_at = %at,
                        "reset mail not delivered; will retry"
                    ),
                    _ => tracing::warn!(
                        reset_id = %id,
                        error = %e,
                        "reset mail not delivered before its token expires; dropped"
                    ),
                }
                Ok(outcome(fate))
            }
        }
    }
}

fn outcome(fate: MailFate) -> Outcome {
    match fate {
        MailFate::Retry(_) => Outcome::Retried,
        MailFate::Bounced => Outcome::Bounced,
        MailFate::Expired => Outcome::Expired,
        _ => Outcome::Gone,
    }
}

/// `d` shortened by a random fraction of up to a half.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    if crate::crypto::random::fill(&mut b).is_err() {
        return d;
    }
    let f = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    d.mul_f64(1.0 - 0.5 * f)
}

/// A courier running on its own thread ([`Courier::spawn`]).
#[derive(Debug)]
pub struct CourierHandle {
    courier: Courier,
    thread: JoinHandle<()>,
}

impl CourierHandle {
    /// The courier (e.g. to stop it from elsewhere).
    pub fn courier(&self) -> &Courier {
        &self.courier
    }

    /// Stops the courier and waits up to `grace` for the mails in flight;
    /// `true` when it stopped in time. A mail still in flight after that
    /// stays queued unless its send completes: it may then be sent again
    /// by the next run.
    pub fn stop(self, grace: Duration) -> bool {
        self.courier.stop();
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        true
    }
}

/// How long from `now` to `then` (zero if past).
fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_millis(
        then.as_millis()
            .saturating_sub(now.as_millis())
            .max(0)
            .unsigned_abs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_within_half() {
        let s = CourierSettings::new("http://x")
            .with_retry(Duration::from_secs(5), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=6).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(60));
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(5) && j <= Duration::from_secs(10),
                "{j:?}"
            );
        }
    }
}
