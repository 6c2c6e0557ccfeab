//! The reset mail queue (SPEC §12): reading and delivering it.
//!
//! An entry is written in the transaction that issues its reset
//! ([`Store::request_reset_by_mail`], `resets.rs`), so a reset and its mail
//! exist together or not at all. Its token is sealed under a sub-key of the
//! store secret (a keystream over a fresh random nonce), so the directory
//! never holds a usable token. The entry goes when the mail is delivered
//! ([`Store::mail_delivered`]), fails for good or expires
//! ([`Store::mail_failed`]), and with its reset (a credential change, a
//! purge, a revocation, the token's use: [`super::steps::forget_mail`]).
//!
//! Couriers read the mails due through an index by next attempt
//! ([`crate::store::schema::DueKey`]), outside any transaction; listings
//! scan the whole tree. Every change re-reads its entry inside a small
//! transaction.

use zeroize::Zeroize;

use super::{Store, steps};
use crate::crypto::ct_eq;
use crate::crypto::seal::{self, Owner};
use crate::error::Error;
use crate::model::{
    DueMail, DueMails, EventKind, EventOutcome, Lang, MailFate, MailQueueSummary, MailRetry,
    QueuedMail, ResetToken, Timestamp, parse_token,
};
use crate::store::records::MailRecord;
use crate::store::schema::{DueKey, Key, MAIL_DUE, MAIL_QUEUE, RESETS, Table, Value};

/// Entries read per scan of the queue.
const SCAN_BATCH: usize = 256;

/// What a scan of the queue reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    /// Every change durable when each batch is read (a backend that
    /// applies changes after they are durable — the sled backend — applies
    /// what waits before each batch).
    Durable,
    /// Every change durable when the scan starts (applied once, before the
    /// first batch); changes committed while it runs may or may not be
    /// seen. For gauges (metrics, readiness), read while writers run: a
    /// scan of thousands of entries must not make them wait for an apply
    /// at every batch.
    AsOfStart,
}

/// Longest `last_error` kept, in bytes.
const MAX_REASON_BYTES: usize = 200;

fn public(rec: &MailRecord) -> QueuedMail {
    QueuedMail {
        reset_id: rec.reset_id.clone(),
        box_id: rec.box_id,
        to: rec.to.clone(),
        lang: Lang::from_locale(&rec.lang),
        shop: rec.shop.clone(),
        created_at: rec.created_at,
        expires_at: rec.expires_at,
        attempts: rec.attempts,
        next_attempt_at: rec.next_attempt_at,
        last_error: rec.last_error.clone(),
    }
}

/// A reason as kept: at most [`MAX_REASON_BYTES`], control characters
/// replaced by spaces.
fn clean_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

impl Store {
    /// Every entry of the queue, in key order (a scan outside transactions).
    fn mail_records(&self, view: View) -> Result<Vec<MailRecord>, Error> {
        let mut out = Vec::new();
        self.scan_batches(&MAIL_QUEUE, view, |_, rec| {
            out.push(rec);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The rows of `table` in key order, read [`SCAN_BATCH`] at a time
    /// outside any transaction, until `visit` returns `false`.
    fn scan_batches<K: Key + ?Sized, V: Value>(
        &self,
        table: &Table<K, V>,
        view: View,
        mut visit: impl FnMut(&[u8], V) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut start = Vec::new();
        loop {
            let rows = if view == View::AsOfStart && !start.is_empty() {
                self.engine().scan_from_applied(table, &start, SCAN_BATCH)?
            } else {
                self.engine().scan_from(table, &start, SCAN_BATCH)?
            };
            let full = rows.len() == SCAN_BATCH;
            if let Some((k, _)) = rows.last() {
                start = k.clone();
                start.push(0);
            }
            for (key, value) in rows {
                if !visit(&key, value)? {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The queued mail a due-index entry names, if the entry is still its
    /// own (an entry changed or gone since the index was read, or a key
    /// that names no UTF-8 id — corruption `check` reports — gives `None`).
    fn queued_under(&self, key: &[u8]) -> Result<Option<MailRecord>, Error> {
        let Ok(id) = std::str::from_utf8(DueKey::reset_id(key)) else {
            return Ok(None);
        };
        Ok(self
            .engine()
            .get(&MAIL_QUEUE, id)?
            .filter(|rec| DueKey::of(rec) == key))
    }

    /// Gives every queued mail its due-index entry where it has none (a
    /// store written before the index existed), a batch of entries per
    /// transaction. Run at open: it reads the queue, which is short unless
    /// mail cannot leave.
    pub(crate) fn index_queued_mail(&self) -> Result<(), Error> {
        let mut missing = Vec::new();
        for rec in self.mail_records(View::Durable)? {
            if self.engine().get(&MAIL_DUE, &DueKey::of(&rec))?.is_none() {
                missing.push(rec.reset_id);
            }
        }
        for batch in missing.chunks(SCAN_BATCH) {
            self.engine().transact(|tx| {
                for id in batch {
                    if let Some(rec) = tx.get(&MAIL_QUEUE, id)? {
                        tx.put(&MAIL_DUE, &DueKey::of(&rec), &())?;
                    }
                }
                Ok(())
            })?;
        }
        if !missing.is_empty() {
            tracing::info!(mails = missing.len(), "indexed queued mails by due time");
        }
        Ok(())
    }

    /// Up to `limit` queued mails (never their tokens), the next due first
    /// (read through the due index: the cost is `limit`'s, not the
    /// queue's).
    pub fn mail_queue(&self, limit: usize) -> Result<Vec<QueuedMail>, Error> {
        self.mail_queue_as(limit, View::Durable)
    }

    /// [`Store::mail_queue`] as `view` sees it.
    pub(crate) fn mail_queue_as(&self, limit: usize, view: View) -> Result<Vec<QueuedMail>, Error> {
        let mut out = Vec::new();
        self.scan_batches(&MAIL_DUE, view, |key, ()| {
            if out.len() >= limit {
                return Ok(false);
            }
            if let Some(rec) = self.queued_under(key)? {
                out.push(public(&rec));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// How many mails are queued, due, retrying; the oldest's time.
    pub fn mail_queue_summary(&self) -> Result<MailQueueSummary, Error> {
        self.mail_queue_summary_as(View::Durable)
    }

    /// [`Store::mail_queue_summary`] as `view` sees it (the metrics read
    /// [`View::AsOfStart`]: a scrape must not make writers wait).
    pub(crate) fn mail_queue_summary_as(&self, view: View) -> Result<MailQueueSummary, Error> {
        let now = self.now();
        let mut s = MailQueueSummary::default();
        for r in self.mail_records(view)? {
            s.queued += 1;
            s.due += u64::from(r.next_attempt_at <= now);
            s.retrying += u64::from(r.attempts > 0);
            s.oldest = Some(
                s.oldest
                    .map_or(r.created_at, |o: Timestamp| o.min(r.created_at)),
            );
        }
        Ok(s)
    }

    /// Up to `limit` mails due now (by the store's clock), the
    /// longest-waiting first, each with its token unsealed and checked
    /// against its reset (unused, unexpired, the customer's credentials
    /// unchanged). Entries whose token expired are dropped here (a
    /// `MailExpired` event); entries whose token no longer checks out are
    /// dropped as bounced. Hand each mail to a mailer, then call
    /// [`Store::mail_delivered`] or [`Store::mail_failed`].
    ///
    /// This is a read: nothing marks the mails as taken. A
    /// [`crate::mail::Courier`] keeps its own mails in flight apart, and
    /// on a store that several instances share (PostgreSQL) it claims each
    /// mail before sending it, so that the couriers of other instances
    /// pass it over; a host that delivers with this method on such a store
    /// sends each mail from one instance only.
    pub fn mail_due(&self, limit: usize) -> Result<DueMails, Error> {
        self.mail_due_except(limit, |_| false)
    }

    /// [`Store::mail_due`], passing over the entries `skip` names (the
    /// mails a worker has in flight).
    pub(crate) fn mail_due_except(
        &self,
        limit: usize,
        skip: impl Fn(&str) -> bool,
    ) -> Result<DueMails, Error> {
        let now = self.now();
        let upper = DueKey::due_by(now);
        let mut out = DueMails::default();
        // The due index in order, from the longest-waiting mail on: the
        // read costs the mails taken, not the length of the queue.
        self.scan_batches(&MAIL_DUE, View::Durable, |key, ()| {
            if key >= upper.as_slice() || out.mails.len() >= limit {
                out.next_due = DueKey::time(key);
                return Ok(false);
            }
            let in_flight = std::str::from_utf8(DueKey::reset_id(key)).is_ok_and(&skip);
            let Some(rec) = (if in_flight {
                None
            } else {
                self.queued_under(key)?
            }) else {
                return Ok(true);
            };
            if rec.expires_at <= now {
                self.drop_mail(&rec.reset_id, EventKind::MailExpired)?;
                return Ok(true);
            }
            match self.unseal_checked(&rec, now)? {
                Some(token) => out.mails.push(DueMail {
                    entry: public(&rec),
                    token,
                }),
                None => {
                    tracing::warn!(
                        reset_id = %rec.reset_id,
                        "a queued reset mail's token no longer matches a live reset; dropped"
                    );
                    self.drop_mail(&rec.reset_id, EventKind::MailBounced)?;
                }
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// The entry's token, if it unseals to the token of a live reset.
    fn unseal_checked(
        &self,
        rec: &MailRecord,
        now: Timestamp,
    ) -> Result<Option<ResetToken>, Error> {
        let Some(mut text) = seal::unseal(
            &self.keys().mail_seal,
            Owner::Mail(rec.nonce),
            0,
            &rec.sealed_token,
        ) else {
            return Ok(None);
        };
        let token = parse_token(text.as_bytes());
        text.zeroize();
        let Ok(token) = token else {
            return Ok(None);
        };
        let Some(reset) = self.engine().get(&RESETS, &rec.reset_id)? else {
            return Ok(None);
        };
        let digest = self.token_digest(&token);
        if !ct_eq(&reset.token_digest, &digest) {
            return Ok(None);
        }
        match self.live_customer(&reset, &digest, now) {
            Ok(_) => Ok(Some(token)),
            Err(Error::InvalidToken) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the mail of reset `reset_id`, due now, for one delivery
    /// attempt: its next attempt moves to `until`, so that the couriers of
    /// other instances sharing the store pass it over until then (if this
    /// one stops mid-send, the mail is due again at `until`; delivered, it
    /// goes; failed, [`Store::mail_failed`] sets its retry). `false` when
    /// it is no longer due: another courier took it, or it went.
    pub(crate) fn claim_mail(&self, reset_id: &str, until: Timestamp) -> Result<bool, Error> {
        let now = self.now();
        self.engine().transact(|tx| {
            let Some(old) = tx.get(&MAIL_QUEUE, reset_id)? else {
                return Ok(false);
            };
            if old.next_attempt_at > now {
                return Ok(false);
            }
            let mut rec = old.clone();
            rec.next_attempt_at = until;
            steps::put_mail(tx, Some(&old), &rec)?;
            Ok(true)
        })
    }

    /// Records that the mail of reset `reset_id` was delivered: its entry
    /// (and sealed token) is deleted, with a `MailDelivered` event, durably
    /// before this returns. `false` when there was no such entry.
    pub fn mail_delivered(&self, reset_id: &str) -> Result<bool, Error> {
        let now = self.now();
        self.engine().transact(|tx| {
            let Some(rec) = tx.get(&MAIL_QUEUE, reset_id)? else {
                return Ok(false);
            };
            steps::delete_mail(tx, &rec)?;
            tx.append_event(
                now,
                EventKind::MailDelivered,
                EventOutcome::Granted,
                Some(rec.box_id),
                None,
            )?;
            Ok(true)
        })
    }

    /// Records a failed delivery. [`MailRetry::At`] keeps the entry, one
    /// more attempt counted and `reason` noted, until that time, unless the
    /// token expires first ([`MailFate::Expired`]: dropped). A permanent
    /// failure ([`MailRetry::Never`]) drops the entry and revokes its reset
    /// in one transaction, with a `MailBounced` event: nobody received the
    /// token, and the customer may ask again at once. `reason` must hold no
    /// secret (it is kept, and listed by `credstore mail list`).
    pub fn mail_failed(
        &self,
        reset_id: &str,
        reason: &str,
        retry: MailRetry,
    ) -> Result<MailFate, Error> {
        let reason = clean_reason(reason);
        let now = self.now();
        let retry_at = match retry {
            MailRetry::At(at) => at,
            MailRetry::Never => return self.drop_mail(reset_id, EventKind::MailBounced),
        };
        let fate = self.engine().transact(|tx| {
            let Some(old) = tx.get(&MAIL_QUEUE, reset_id)? else {
                return Ok(MailFate::Gone);
            };
            // The next attempt stays before the expiry (the due index
            // relies on it: `DueKey`).
            if retry_at >= old.expires_at || now >= old.expires_at {
                return Ok(MailFate::Expired);
            }
            let mut rec = old.clone();
            rec.attempts = rec.attempts.saturating_add(1);
            rec.next_attempt_at = retry_at;
            rec.last_error = Some(reason.clone());
            steps::put_mail(tx, Some(&old), &rec)?;
            Ok(MailFate::Retry(retry_at))
        })?;
        match fate {
            MailFate::Expired => self.drop_mail(reset_id, EventKind::MailExpired),
            other => Ok(other),
        }
    }

    /// Drops an entry with an event of `kind`; a bounced mail's reset is
    /// revoked in the same transaction.
    fn drop_mail(&self, reset_id: &str, kind: EventKind) -> Result<MailFate, Error> {
        let now = self.now();
        self.engine().transact(|tx| {
            let Some(rec) = tx.get(&MAIL_QUEUE, reset_id)? else {
                return Ok(MailFate::Gone);
            };
            steps::delete_mail(tx, &rec)?;
            if kind == EventKind::MailBounced {
                steps::revoke_reset(tx, reset_id)?;
            }
            tx.append_event(now, kind, EventOutcome::Refused, Some(rec.box_id), None)?;
            Ok(if kind == EventKind::MailBounced {
                MailFate::Bounced
            } else {
                MailFate::Expired
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CustomerFlags, ImportedCustomer, MailRequest, ResetDetails};
    use crate::{Config, StoreSecret};

    /// The gauges' scan ([`View::AsOfStart`]) applies the changes that wait
    /// in the write-ahead log's overlay before its first batch, once: on a
    /// store whose queue spans several batches and whose recent changes
    /// are not in sled yet, it counts what the exact scan counts.
    #[test]
    fn the_gauges_scan_counts_every_change_durable_when_it_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = StoreSecret::from_bytes([9; 32]);
        let store = Store::open(tmp.path().join("data"), &secret, Config::for_tests()).unwrap();
        let mail = MailRequest {
            lang: Lang::En,
            shop: "shop1".into(),
        };
        let hash = "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS";
        let mut ids = Vec::new();
        let n = SCAN_BATCH + 44;
        for i in 0..n {
            let email = format!("q{i}@mail.example");
            store
                .import_customer(ImportedCustomer {
                    box_id: 1 + i as u64,
                    email: email.clone(),
                    first_name: String::new(),
                    last_name: String::new(),
                    password_hash: hash.to_owned(),
                    key: None,
                    flags: CustomerFlags::default(),
                    enrolment_date: None,
                    activation_date: None,
                })
                .unwrap();
            let reset = store
                .request_reset_by_mail(&email, ResetDetails::default(), &mail)
                .unwrap();
            ids.push(reset.id);
        }
        let exact = store.mail_queue_summary().unwrap();
        assert_eq!(exact.queued, n as u64);
        // Deliveries after the exact scan applied everything: 100 removals
        // wait in the overlay (far below what makes a committer apply).
        for id in &ids[..100] {
            assert!(store.mail_delivered(id).unwrap());
        }
        let gauges = store.mail_queue_summary_as(View::AsOfStart).unwrap();
        assert_eq!(gauges.queued, n as u64 - 100);
        assert_eq!(gauges, store.mail_queue_summary().unwrap());
        let first = store.mail_queue_as(1, View::AsOfStart).unwrap();
        assert_eq!(first, store.mail_queue(1).unwrap());
        assert_eq!(first.len(), 1);
        assert_ne!(first[0].reset_id, ids[0], "delivered mails are gone");
    }

    #[test]
    fn reasons_are_bounded_and_printable() {
        assert_eq!(clean_reason("421 try\r\nlater"), "421 try  later");
        let long = "é".repeat(300);
        let r = clean_reason(&long);
        assert!(r.len() <= MAX_REASON_BYTES && r.chars().all(|c| c == 'é'));
    }
}
