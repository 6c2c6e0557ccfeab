//! Awaiting deferred commits: the one blocking task that syncs for every
//! operation run on an async worker ([`crate::ops`]' deferred operations:
//! the router's requests that hash nothing, [`crate::AsyncStore`]'s point
//! operations), and the wait of each for its position.
//!
//! Such an operation runs on the worker that polls it; its commits return
//! once logged ([`Store::deferring`]), and the caller awaits
//! [`Syncer::durable`] before anything is answered or returned. The syncer is a
//! task on tokio's blocking pool, started by the first request that waits
//! and running while anything logged is not durable: it syncs (joining the
//! store's group commit, so writes from the blocking pool share its
//! syncs), publishes how far the log is durable on a watch channel, and
//! does the housekeeping the deferred commits left. Each sync wakes every
//! request it covered at once, instead of one blocking thread per request
//! parked until its own sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::ops::{Deferred, Store};

/// How far the log is durable, as the syncer last saw it.
#[derive(Debug, Clone, Copy)]
struct Published {
    durable: u64,
    /// A sync failed: the store is in its failed state, and what was not
    /// durable then never will be (until it is reopened).
    failed: bool,
}

/// The syncer of one store (see the module's doc).
pub(crate) struct Syncer {
    store: Store,
    /// The syncing task runs.
    running: AtomicBool,
    /// A housekeeping task runs.
    housekeeping: AtomicBool,
    published: watch::Sender<Published>,
}

/// If the syncing task panics (it should not): its waiters are told their
/// sync failed (they answer through the blocking pool instead), and the
/// next request starts a new task, whose first publication replaces that.
struct Unwinding<'a>(&'a Syncer);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let durable = self.0.store.durable_seq();
            self.0.published.send_replace(Published {
                durable,
                failed: true,
            });
            self.0.running.store(false, Ordering::SeqCst);
        }
    }
}

/// Clears a flag on drop.
struct Clear<'a>(&'a AtomicBool);

impl Drop for Clear<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A deferred operation's outcome is unknown: its sync failed.
#[derive(Debug)]
pub(crate) struct SyncFailed;

impl Syncer {
    /// The syncer of `store`; `None` when its commits cannot be deferred
    /// (PostgreSQL, temporary stores): then everything runs on the blocking
    /// pool.
    pub(crate) fn for_store(store: &Store) -> Option<Arc<Self>> {
        if !store.defers() {
            return None;
        }
        let durable = store.durable_seq();
        Some(Arc::new(Self {
            store: store.clone(),
            running: AtomicBool::new(false),
            housekeeping: AtomicBool::new(false),
            published: watch::Sender::new(Published {
                durable,
                failed: false,
            }),
        }))
    }

    /// Returns once `d` is durable (then what its operation held back is
    /// released), or fails when the sync that was to cover it failed.
    pub(crate) async fn durable(self: &Arc<Self>, d: Deferred) -> Result<(), SyncFailed> {
        if !self.store.is_durable(d) {
            let mut seen = self.published.subscribe();
            self.start();
            let published = seen
                .wait_for(|p| Store::covers(p.durable, d) || p.failed)
                .await
                .map_err(|_| SyncFailed)?;
            if !Store::covers(published.durable, d) {
                return Err(SyncFailed);
            }
        }
        self.store.deferred_done(d);
        Ok(())
    }

    /// Starts the syncing task unless it runs.
    fn start(self: &Arc<Self>) {
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.run());
    }

    /// Starts a task for the housekeeping the deferred commits left, when
    /// some is due and none runs: a checkpoint takes a while, and the
    /// syncing task must go on syncing meanwhile.
    fn housekeep(self: &Arc<Self>) {
        if !self.store.housekeeping_due() || self.housekeeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            // Cleared even if it panicked, so that the next is started.
            let _done = Clear(&me.housekeeping);
            me.store.housekeep();
        });
    }

    /// Syncs while anything logged is not durable.
    ///
    /// No waiter is left behind when it stops. A request appends its record,
    /// then sets `running`; this task clears `running`, then reads how far
    /// the log is durable, publishes that, and reads how far it reaches.
    /// Either the request found `running` cleared (and started a new task),
    /// or its record is within what this task read last: then it is either
    /// beyond the durable position published (this task goes on) or covered
    /// by that publication (the request is woken), even when a sync of the
    /// blocking pool's commits made it durable meanwhile.
    fn run(self: Arc<Self>) {
        let _unwinding = Unwinding(&self);
        loop {
            let synced = self.store.sync_deferred();
            let failed = synced.is_err();
            self.publish(failed);
            if failed {
                // The failed state is for good: every later commit is
                // refused, and waiters see `failed`. Not restarted.
                return;
            }
            self.housekeep();
            #[cfg(all(test, feature = "server"))]
            tests::before_stopping();
            self.running.store(false, Ordering::SeqCst);
            let durable = self.publish(false);
            if self.store.logged_seq() <= durable || self.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Publishes how far the log is durable now; returns it.
    fn publish(&self, failed: bool) -> u64 {
        let durable = self.store.durable_seq();
        self.published.send_if_modified(|p| {
            let changed = p.durable != durable || p.failed != failed;
            *p = Published { durable, failed };
            changed
        });
        durable
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use serde_json::Value;

    use crate::store::faults::{Faults, Op};
    use crate::{NewCustomer, Password, Store};

    /// The router over a store whose log lives in memory with fault
    /// injection, served on 127.0.0.1 from 2 async workers.
    struct Served {
        base: String,
        store: Store,
        faults: Faults,
        _rt: tokio::runtime::Runtime,
        _tmp: tempfile::TempDir,
    }

    /// How long the syncing task pauses before it decides whether to stop
    /// (microseconds; a test widens the window where a request's record
    /// becomes durable through another sync).
    static PAUSE_BEFORE_STOPPING: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0);

    pub(super) fn before_stopping() {
        let micros = PAUSE_BEFORE_STOPPING.load(std::sync::atomic::Ordering::SeqCst);
        if micros > 0 {
            std::thread::sleep(Duration::from_micros(micros));
        }
    }

    fn serve(customers: u32) -> Served {
        let (store, faults, tmp) = Store::faulty_for_tests();
        assert!(store.defers());
        store.create_app(1, "shop", Some("s1")).unwrap();
        for n in 0..customers {
            let password = Password::new("deferred-password-1").unwrap();
            let new = NewCustomer::new(email(n), "C", "D", password);
            store.register(new).unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app: axum::Router = crate::http::Routes::new(store.clone()).build();
        rt.spawn(async move { axum::serve(listener, app).await });
        Served {
            base,
            store,
            faults,
            _rt: rt,
            _tmp: tmp,
        }
    }

    fn email(n: u32) -> String {
        format!("deferred{n}@example.com")
    }

    /// A SkyERP reset request (a durable write that hashes nothing,
    /// answered from the worker): its status and JSON answer.
    fn request_reset(base: &str, email: &str) -> (u16, Value) {
        request_reset_within(base, email, Duration::from_secs(60))
    }

    /// [`request_reset`], failing when the answer takes longer than `limit`.
    fn request_reset_within(base: &str, email: &str, limit: Duration) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(limit))
            .build()
            .into();
        let mut answer = agent
            .post(&format!("{base}/api/v1/s1/customers/reset-password"))
            .header("Content-Type", "application/json")
            .send(format!(r#"{{"email":"{email}"}}"#))
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }

    /// The answer waits for the sync: with a disk whose syncs take 200 ms,
    /// the reset's mail is in the queue as every other thread reads it
    /// (only durable changes) the moment the answer arrives. An answer sent
    /// once the commit was logged would arrive ~200 ms before that.
    #[test]
    fn a_reset_answered_from_the_worker_is_durable_when_answered() {
        let s = serve(1);
        s.faults.slow_syncs(Duration::from_millis(200));
        let (status, answer) = request_reset(&s.base, &email(0));
        assert_eq!(status, 200);
        assert_eq!(answer["success"], true, "{answer}");
        let queued = s.store.mail_queue(10).unwrap();
        assert_eq!(queued.len(), 1);
    }

    /// When the sync that was to make a reset durable fails, its outcome is
    /// unknown: the answer is not the success already computed but the
    /// route's own fault (SkyERP: `success: false`, "Fallo al enviar email
    /// para restablecer la clave de acceso" in its default language), and
    /// the store is in its failed state.
    #[test]
    fn a_failed_sync_answers_the_routes_own_fault() {
        let s = serve(1);
        s.faults.fail_next(Op::WalSync);
        let (status, answer) = request_reset(&s.base, &email(0));
        assert_eq!(s.faults.fired().map(|f| f.op), Some(Op::WalSync));
        assert_eq!(status, 200);
        assert_eq!(answer["success"], false, "{answer}");
        assert_eq!(
            answer["message"], "Fallo al enviar email para restablecer la clave de acceso",
            "{answer}"
        );
        assert_eq!(answer["data"]["email"], email(0).as_str(), "{answer}");
        assert!(!s.store.health().is_writable());
        // Later requests are refused at once, with the same answer.
        let (_, again) = request_reset(&s.base, &email(0));
        assert_eq!(again["success"], false, "{again}");
    }

    /// A deferred reset whose record a sync of the blocking pool's commits
    /// made durable (here a registration's, committing all the time) is
    /// answered all the same: the syncing task publishes how far the log
    /// is durable before it stops. It once stopped having published an
    /// older position, and the request, alone, waited for a publication
    /// that never came (seen: one request in a few thousand, under wrk).
    /// Here the syncing task pauses 3 ms before deciding whether to stop
    /// (a preempted thread, as under argon2 load), so that the next request
    /// logs its record meanwhile and a registration's sync covers it. Each
    /// answer must come within 5 s; a healthy one takes milliseconds.
    #[test]
    fn a_reset_made_durable_by_another_commits_sync_is_answered() {
        let s = serve(300);
        s.faults.slow_syncs(Duration::from_micros(300));
        PAUSE_BEFORE_STOPPING.store(3000, std::sync::atomic::Ordering::SeqCst);
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the registrations however the requests end (a failed
        /// assertion too: the scope would wait for them forever).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let password = Password::new("deferred-password-1").unwrap();
                    let new = NewCustomer::new(format!("other{n}@example.com"), "O", "D", password);
                    s.store.register(new).unwrap();
                    n += 1;
                }
            });
            let _stop = Stop(&stop);
            for n in 0..300 {
                let (status, answer) =
                    request_reset_within(&s.base, &email(n), Duration::from_secs(5));
                assert_eq!(status, 200);
                assert_eq!(answer["success"], true, "{answer}");
            }
        });
        PAUSE_BEFORE_STOPPING.store(0, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(s.store.mail_queue(1000).unwrap().len(), 300);
    }

    /// The housekeeping deferred commits leave is done by the syncing
    /// side: with only answers from the worker writing (this store
    /// checkpoints after 24 KiB of log), the log is checkpointed while they
    /// run. Without it, nothing would ever apply their records to sled or
    /// recycle the log.
    #[test]
    fn deferred_writes_alone_get_their_checkpoints() {
        let s = serve(150);
        let before = s.store.log_stats().checkpoints;
        for n in 0..150 {
            let (status, answer) = request_reset(&s.base, &email(n));
            assert_eq!(status, 200);
            assert_eq!(answer["success"], true, "{answer}");
        }
        let since = std::time::Instant::now();
        while s.store.log_stats().checkpoints == before {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "no checkpoint after 150 deferred writes"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// 64 callers at once, `run` each with its caller number; their
    /// answers.
    fn all_at_once(s: &Served, run: impl Fn(u32) -> (u16, Value) + Sync) -> Vec<(u16, Value)> {
        let barrier = Barrier::new(64);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..64)
                .map(|n| {
                    let (barrier, run) = (&barrier, &run);
                    scope.spawn(move || {
                        barrier.wait();
                        run(n)
                    })
                })
                .collect();
            let _ = s;
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// 64 reset requests at once for 64 customers: every one is answered
    /// as granted, every mail is queued and durable when the last answer
    /// arrives, and they share syncs (a disk sync of 5 ms; one sync per
    /// request would be 64).
    #[test]
    fn sixty_four_reset_requests_at_once_are_each_durable_and_share_syncs() {
        let s = serve(64);
        s.faults.slow_syncs(Duration::from_millis(5));
        let syncs = s.store.log_stats().syncs;
        let answers = all_at_once(&s, |n| request_reset(&s.base, &email(n)));
        for (status, answer) in &answers {
            assert_eq!(*status, 200);
            assert_eq!(answer["success"], true, "{answer}");
        }
        assert_eq!(s.store.mail_queue(100).unwrap().len(), 64);
        let used = s.store.log_stats().syncs - syncs;
        assert!(used <= 32, "{used} syncs for 64 requests");
    }

    /// The throttle (one reset per customer per minute) holds against 64
    /// requests at once for one email on the deferred path: the rule is
    /// checked inside the transaction, over every change logged before it,
    /// durable or not. Exactly one mail is queued; every answer is the
    /// same grant (nobody learns which request issued it).
    #[test]
    fn sixty_four_requests_at_once_for_one_email_issue_one_reset() {
        let s = serve(1);
        s.faults.slow_syncs(Duration::from_millis(5));
        let answers = all_at_once(&s, |_| request_reset(&s.base, &email(0)));
        for (status, answer) in &answers {
            assert_eq!(*status, 200);
            assert_eq!(answer, &answers[0].1);
        }
        assert_eq!(answers[0].1["success"], true);
        assert_eq!(s.store.mail_queue(100).unwrap().len(), 1);
    }
}
