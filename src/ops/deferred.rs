//! Operations whose commits return before they are durable, for an async
//! server that answers from its worker thread and awaits the sync (see
//! `store/sled/wal/deferred.rs` for what the log guarantees meanwhile).
//!
//! The contract for callers ([`Store::deferring`]): nothing the operation
//! did may be shown outside the process (an answer sent, a mail woken)
//! until [`Store::sync_deferred`], begun after the operation returned, has
//! reached its [`Deferred`] position; if that sync fails, the operation's
//! outcome is unknown and must be answered as a fault. Only operations that
//! hash nothing and scan nothing belong here: the calling thread must not
//! block.

// Used by the async transports only (features `tokio` and `server`).
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::cell::Cell;

use super::Store;
use crate::error::Error;

thread_local! {
    /// Inside [`Store::deferring`]: whether an operation queued a mail whose
    /// delivery workers are to be woken once it is durable.
    static MAIL_QUEUED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// What a deferred operation left to be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "nothing it did may be shown until it is durable"]
pub(crate) struct Deferred {
    /// The log position the sync must reach.
    seq: u64,
    /// It queued a mail: wake the delivery workers once durable.
    mail: bool,
}

struct Restore(Option<bool>);

impl Drop for Restore {
    fn drop(&mut self) {
        MAIL_QUEUED.with(|m| m.set(self.0));
    }
}

impl Store {
    /// Whether [`Store::deferring`] defers anything (a store on disk with
    /// its write-ahead log, syncing); otherwise its commits wait as usual.
    pub(crate) fn defers(&self) -> bool {
        self.engine().defers()
    }

    /// Runs `f`, whose commits on this thread return once logged (see the
    /// module's doc); `Some` when one did and is not durable yet.
    pub(crate) fn deferring<R>(&self, f: impl FnOnce() -> R) -> (R, Option<Deferred>) {
        let restore = Restore(MAIL_QUEUED.with(|m| m.replace(Some(false))));
        let mut f = Some(f);
        let mut out = None;
        let seq = self.engine().deferring(&mut || {
            if let Some(f) = f.take() {
                out = Some(f());
            }
        });
        let mail = MAIL_QUEUED.with(|m| m.get()) == Some(true);
        drop(restore);
        let Some(out) = out else {
            unreachable!("the backend runs the closure once")
        };
        if seq == 0 {
            if mail {
                self.mail_signal().notify();
            }
            return (out, None);
        }
        (out, Some(Deferred { seq, mail }))
    }

    /// Whether what `d` waits for is durable.
    pub(crate) fn is_durable(&self, d: Deferred) -> bool {
        Self::covers(self.durable_seq(), d)
    }

    /// Whether a position [`Store::durable_seq`] reached covers `d`.
    pub(crate) fn covers(durable: u64, d: Deferred) -> bool {
        durable >= d.seq
    }

    /// How far the log is durable.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.engine().durable_seq()
    }

    /// How far the log reaches: once [`Store::durable_seq`] is here,
    /// everything logged so far is durable.
    pub(crate) fn logged_seq(&self) -> u64 {
        self.engine().logged_seq()
    }

    /// Makes everything logged so far durable; returns
    /// [`Store::durable_seq`]. Blocks (a `fdatasync`). On failure the store
    /// is in its failed state: the outcome of every deferred operation not
    /// yet durable is unknown.
    pub(crate) fn sync_deferred(&self) -> Result<u64, Error> {
        self.engine().sync_deferred()
    }

    /// Whether deferred commits left housekeeping to do (applying to sled,
    /// a checkpoint, preparing log space: what a commit does after it is
    /// durable, on a thread that may block). Cheap.
    pub(crate) fn housekeeping_due(&self) -> bool {
        self.engine().housekeeping_due()
    }

    /// Does that housekeeping (blocks; failures are logged and retried).
    pub(crate) fn housekeep(&self) {
        self.engine().housekeep();
    }

    /// Once `d` is durable: what its operation held back (waking the
    /// delivery workers for its mail).
    pub(crate) fn deferred_done(&self, d: Deferred) {
        if d.mail {
            self.mail_signal().notify();
        }
    }

    /// Runs `f`; also whether it began a transaction (in the failed state
    /// every one is refused: the caller learns whether `f`'s answer is that
    /// refusal's).
    #[cfg(feature = "server")]
    pub(crate) fn tries_to_write<R>(f: impl FnOnce() -> R) -> (R, bool) {
        let before = crate::store::commits_begun();
        let out = f();
        (out, crate::store::commits_begun() != before)
    }

    /// A reset mail was queued: wake the delivery workers, or, inside
    /// [`Store::deferring`], once it is durable.
    pub(crate) fn mail_queued(&self) {
        let deferred = MAIL_QUEUED.with(|m| {
            let inside = m.get().is_some();
            if inside {
                m.set(Some(true));
            }
            inside
        });
        if !deferred {
            self.mail_signal().notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Lang, MailRequest, ResetDetails};
    use crate::{Config, NewCustomer, Password, Store, StoreSecret};

    /// A reset mail queued by a deferred operation wakes the delivery
    /// workers only once it is durable ([`Store::deferred_done`]): woken
    /// earlier, they would read the queue, find nothing durable, and sleep
    /// until their next poll. Outside [`Store::deferring`] they are woken at
    /// once, and a refusal (unknown email) wakes nobody.
    #[test]
    fn a_deferred_mail_wakes_the_couriers_once_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = StoreSecret::from_bytes([4; 32]);
        let store = Store::open(tmp.path().join("data"), &secret, Config::for_tests()).unwrap();
        assert!(store.defers());
        let password = Password::new("deferred-password-1").unwrap();
        store
            .register(NewCustomer::new("m@example.com", "M", "D", password))
            .unwrap();
        let mail = MailRequest {
            lang: Lang::En,
            shop: "s1".into(),
        };
        let signal = store.mail_signal();
        let request = |email: &str| {
            store.deferring(|| store.request_reset_by_mail(email, ResetDetails::default(), &mail))
        };

        let seen = signal.generation();
        let (reset, deferred) = request("m@example.com");
        assert!(reset.is_ok());
        let deferred = deferred.unwrap();
        assert!(!store.is_durable(deferred));
        assert_eq!(signal.generation(), seen);
        assert!(store.mail_queue(10).unwrap().is_empty());
        assert!(store.sync_deferred().unwrap() >= store.durable_seq());
        assert!(store.is_durable(deferred));
        assert_eq!(store.mail_queue(10).unwrap().len(), 1);
        assert_eq!(signal.generation(), seen);
        store.deferred_done(deferred);
        assert_ne!(signal.generation(), seen);

        // A refusal logs its event (deferred too) and queues no mail.
        let seen = signal.generation();
        let (refused, deferred) = request("nobody@example.com");
        assert!(refused.is_err());
        let deferred = deferred.unwrap();
        store.sync_deferred().unwrap();
        store.deferred_done(deferred);
        assert_eq!(signal.generation(), seen);

        // Outside the deferring code: woken at once.
        let seen = signal.generation();
        let other = MailRequest {
            lang: Lang::En,
            shop: "s2".into(),
        };
        store
            .register(NewCustomer::new(
                "n@example.com",
                "N",
                "D",
                Password::new("deferred-password-2").unwrap(),
            ))
            .unwrap();
        store
            .request_reset_by_mail("n@example.com", ResetDetails::default(), &other)
            .unwrap();
        assert_ne!(signal.generation(), seen);
    }
}
