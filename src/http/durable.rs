//! Awaiting deferred commits: the one blocking task that syncs for every
//! request answered from an async worker ([`crate::ops`]' deferred
//! operations), and the wait of each request for its position.
//!
//! A request that hashes nothing runs on the worker that received it; its
//! commits return once logged ([`Store::deferring`]), and the request
//! awaits [`Syncer::durable`] before anything is answered. The syncer is a
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
    pub(crate) fn new(store: Store) -> Arc<Self> {
        let durable = store.durable_seq();
        Arc::new(Self {
            store,
            running: AtomicBool::new(false),
            housekeeping: AtomicBool::new(false),
            published: watch::Sender::new(Published {
                durable,
                failed: false,
            }),
        })
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

    /// Syncs while anything logged is not durable. A request that logs a
    /// record after the last check finds `running` cleared (and starts a
    /// new task), or this task finds its record (and goes on): `running` is
    /// cleared before the check, and set by the request after its append.
    fn run(self: Arc<Self>) {
        loop {
            let synced = self.store.sync_deferred();
            let failed = synced.is_err();
            let durable = self.store.durable_seq();
            self.published.send_replace(Published { durable, failed });
            if failed {
                // The failed state is for good: every later commit is
                // refused, and waiters see `failed`. Not restarted.
                return;
            }
            self.housekeep();
            self.running.store(false, Ordering::SeqCst);
            if !self.store.undurable() || self.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }
}
