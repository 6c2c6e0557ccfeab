//! Password resets: issue (with or without a queued mail), revoke, purge.
//! Checking and consuming tokens is in `tokens.rs`.
//!
//! A reset record lives in `resets` with three index entries (token digest,
//! expiry, customer). While unused it is also listed in its customer's record,
//! which is how a rotation finds and removes it inside its transaction. A used
//! reset is kept, unlisted, so that it can still be read by id (with
//! `used_at` set) until [`Store::purge_resets`] removes it; it never counts as
//! outstanding.
//!
//! A token is valid only while unexpired (`now < expires_at`), unused, and
//! issued under the customer's current credential version. Every credential
//! change also deletes the customer's outstanding resets, so the version check
//! is a second line of defence.

use super::reads::{Digest, reset_to_public};
use super::{Store, steps};
use crate::crypto::seal::{self, Owner};
use crate::error::{Entity, Error, InputError};
use crate::model::{
    Email, EventKind, EventOutcome, IssuedReset, Lang, MAX_MAIL_SHOP_BYTES, MAX_OUTSTANDING_RESETS,
    MailRequest, RESET_THROTTLE, Reset, ResetDetails, ResetToken, Timestamp, check_reference,
    metadata_text, parse_reset_id,
};
use crate::store::records::{MailRecord, ResetRecord};
use crate::store::schema::{ExpiryKey, RESET_EXPIRY, RESET_TOKENS, RESETS};

/// Expiry-index entries a purge reads, and deletes in one transaction, at a time.
const PURGE_BATCH: usize = 64;

/// Attempts to find an unused reset id and token digest (a clash of 60 random
/// bits, let alone 381, is not expected ever).
const ISSUE_ATTEMPTS: usize = 4;

impl Store {
    /// Issues a reset for the customer with this email: returns the reset and
    /// its token, which the caller emails and which is never readable again.
    /// The token expires after [`crate::Config::token_ttl`].
    ///
    /// At most [`MAX_OUTSTANDING_RESETS`] stay outstanding per customer: a new
    /// one drops the oldest (and any expired ones). Errors:
    /// [`Error::NotFound`]`(Entity::Customer)` for an unknown email,
    /// [`Error::Throttled`] when the customer was issued a reset less than
    /// [`RESET_THROTTLE`] ago, [`Error::Disabled`] for a disabled customer.
    /// A refusal writes nothing. Callers that face anonymous clients use
    /// [`Store::request_reset_anonymous`] instead.
    pub fn request_reset(&self, email: &str, details: ResetDetails) -> Result<IssuedReset, Error> {
        self.issue_reset(email, details, false, None)
    }

    /// [`Store::request_reset`] for callers that must not let anyone learn
    /// whether an email exists (SPEC §5.7): a refusal (unknown email,
    /// throttled, disabled) costs the same durable write as an issue, one
    /// refused event, so that answers take the same time. The caller answers
    /// every refusal like a success.
    pub fn request_reset_anonymous(
        &self,
        email: &str,
        details: ResetDetails,
    ) -> Result<IssuedReset, Error> {
        self.issue_reset(email, details, true, None)
    }

    /// Issues a reset; with `mail`, its mail is queued in the same
    /// transaction (see [`Store::request_reset_by_mail`]).
    pub(super) fn issue_reset(
        &self,
        email: &str,
        details: ResetDetails,
        log_refusals: bool,
        mail: Option<&MailRequest>,
    ) -> Result<IssuedReset, Error> {
        let email = Email::parse(email)?;
        if let Some(r) = &details.reference {
            check_reference("reference", r)?;
        }
        if let Some(r) = &details.reference_origin {
            check_reference("reference_origin", r)?;
        }
        let metadata = details.metadata.as_ref().map(metadata_text).transpose()?;
        let ttl = self.config().token_ttl;

        for _ in 0..ISSUE_ATTEMPTS {
            let (token, id, digest) = self.reset_material()?;
            let prepared = match mail {
                Some(m) => Some(self.prepare_mail(&token, m)?),
                None => None,
            };
            let now = self.now();
            let issued = self.engine().transact(|tx| {
                // For anonymous callers a refused request is logged, so that
                // it costs the same durable write as a granted one.
                let refuse = |box_id, why: Error| {
                    if log_refusals {
                        tx.append_event(
                            now,
                            EventKind::ResetIssued,
                            EventOutcome::Refused,
                            box_id,
                            None,
                        )?;
                    }
                    Ok(Issue::Refused(why))
                };
                let Some(box_id) = steps::box_id_by_email(tx, &email)? else {
                    return refuse(None, Error::NotFound(Entity::Customer));
                };
                let mut cust = steps::load_customer(tx, box_id)?;
                if !cust.flags.is_enable {
                    return refuse(Some(box_id), Error::Disabled);
                }
                if tx.contains(&RESETS, &id)? || tx.contains(&RESET_TOKENS, &digest)? {
                    return Ok(Issue::Clash);
                }
                let mut live = Vec::with_capacity(cust.resets.len() + 1);
                for rid in &cust.resets {
                    if let Some(r) = tx.get(&RESETS, rid)? {
                        live.push(r);
                    }
                }
                if let Some(newest) = live.iter().map(|r| r.created_at).max()
                    && now < newest.plus(RESET_THROTTLE)
                {
                    return refuse(Some(box_id), Error::Throttled);
                }
                // Expired resets die now; then the oldest until there is room.
                live.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                let mut keep = Vec::with_capacity(MAX_OUTSTANDING_RESETS);
                for r in live {
                    if r.expires_at <= now {
                        steps::delete_reset(tx, &r)?;
                    } else {
                        keep.push(r);
                    }
                }
                while keep.len() >= MAX_OUTSTANDING_RESETS {
                    let oldest = keep.remove(0);
                    steps::delete_reset(tx, &oldest)?;
                }
                let rec = ResetRecord {
                    id: id.clone(),
                    box_id,
                    email: cust.email.clone(),
                    token_digest: digest,
                    credential_version: cust.credential_version,
                    created_at: now,
                    updated_at: now,
                    expires_at: now.plus(ttl),
                    used_at: None,
                    reference: details.reference.clone(),
                    reference_origin: details.reference_origin.clone(),
                    metadata: metadata.clone(),
                };
                steps::insert_reset(tx, &rec)?;
                if let Some(p) = &prepared {
                    steps::enqueue_mail(tx, &p.record(&rec))?;
                }
                cust.resets = keep.into_iter().map(|r| r.id).collect();
                cust.resets.push(id.clone());
                steps::put_customer(tx, &cust)?;
                tx.append_event(
                    now,
                    EventKind::ResetIssued,
                    EventOutcome::Granted,
                    Some(box_id),
                    None,
                )?;
                Ok(Issue::Issued(Box::new(rec)))
            })?;
            match issued {
                Issue::Issued(rec) => {
                    return Ok(IssuedReset {
                        reset: reset_to_public(&rec)?,
                        token,
                    });
                }
                Issue::Refused(why) => return Err(super::counters::reset_refused(why)),
                Issue::Clash => {}
            }
        }
        Err(Error::Conflict)
    }

    /// [`Store::request_reset_anonymous`] that also queues the reset mail,
    /// in the same transaction: the reset and its mail exist together or
    /// not at all, and the token leaves the store only through
    /// [`Store::mail_due`] (sealed in the queue until then). Returns the
    /// reset without its token.
    ///
    /// For callers that face anonymous clients (the SkyERP POST): a refusal
    /// (unknown email, throttled, disabled customer) writes one refused
    /// event, the same single durable commit as an issue, and the caller
    /// answers it like a success. The recipient is the account's stored
    /// email, never the request's spelling. Delivery workers waiting in
    /// [`crate::mail::Courier`] are woken.
    pub fn request_reset_by_mail(
        &self,
        email: &str,
        details: ResetDetails,
        mail: &MailRequest,
    ) -> Result<Reset, Error> {
        if mail.shop.len() > MAX_MAIL_SHOP_BYTES || mail.shop.chars().any(char::is_control) {
            return Err(InputError::MalformedText { field: "shop" }.into());
        }
        let IssuedReset { reset, token } = self.issue_reset(email, details, true, Some(mail))?;
        drop(token);
        self.mail_queued();
        Ok(reset)
    }

    /// Seals `token` for a new queue entry (outside any transaction).
    fn prepare_mail(&self, token: &ResetToken, mail: &MailRequest) -> Result<PreparedMail, Error> {
        let mut nonce = [0u8; 16];
        crate::crypto::random::fill(&mut nonce)?;
        let sealed = seal::seal(
            &self.keys().mail_seal,
            Owner::Mail(nonce),
            0,
            token.expose_secret().as_bytes(),
        );
        Ok(PreparedMail {
            nonce,
            sealed,
            lang: mail.lang,
            shop: mail.shop.clone(),
        })
    }

    /// Removes a reset and its token (for a mail that could not be sent),
    /// and its queued mail if any. The customer may then request another
    /// at once.
    pub fn revoke_reset(&self, id: &str) -> Result<(), Error> {
        let id = parse_reset_id(id.as_bytes())?;
        let now = self.now();
        self.engine().transact(|tx| {
            let rec = steps::load_reset(tx, &id)?;
            steps::delete_reset(tx, &rec)?;
            steps::unlist(tx, &rec)?;
            tx.append_event(
                now,
                EventKind::ResetRevoked,
                EventOutcome::Granted,
                Some(rec.box_id),
                None,
            )?;
            Ok(())
        })
    }

    /// Removes expired and used resets with their index entries; returns how
    /// many. The expiry index is read outside any transaction, a batch of
    /// entries at a time, and each batch is deleted in one small transaction
    /// that re-checks every record, so writers wait for one batch at most.
    pub fn purge_resets(&self) -> Result<usize, Error> {
        let now = self.now();
        let upper = ExpiryKey::dead_by(now);
        let mut start = Vec::new();
        let mut purged = 0;
        loop {
            let rows = self
                .engine()
                .scan_from(&RESET_EXPIRY, &start, PURGE_BATCH)?;
            let keys: Vec<Vec<u8>> = rows
                .into_iter()
                .map(|(k, ())| k)
                .take_while(|k| *k < upper)
                .collect();
            let Some(last) = keys.last() else { break };
            start.clone_from(last);
            start.push(0);
            purged += self.purge_batch(&keys, now)?;
            if keys.len() < PURGE_BATCH {
                break;
            }
        }
        Ok(purged)
    }

    fn purge_batch(&self, keys: &[Vec<u8>], now: Timestamp) -> Result<usize, Error> {
        self.engine().transact(|tx| {
            tx.fail_point("purge:batch")?;
            let mut purged = 0;
            let mut changed = false;
            for key in keys {
                if !tx.contains(&RESET_EXPIRY, key)? {
                    continue;
                }
                // An id that is not even text names no reset.
                let reset = match std::str::from_utf8(ExpiryKey::reset_id(key)) {
                    Ok(id) => tx.get(&RESETS, id)?,
                    Err(_) => None,
                };
                match reset {
                    Some(rec) if rec.dead_at() <= now && ExpiryKey::of(&rec) == *key => {
                        tx.fail_point("purge:delete")?;
                        steps::delete_reset(tx, &rec)?;
                        steps::unlist(tx, &rec)?;
                        purged += 1;
                        changed = true;
                    }
                    // Changed since the scan; not dead yet.
                    Some(_) => {}
                    // An entry pointing at nothing: drop it.
                    None => {
                        tx.delete(&RESET_EXPIRY, key)?;
                        changed = true;
                    }
                }
            }
            if changed {
                tx.append_event(
                    now,
                    EventKind::ResetPurged,
                    EventOutcome::Granted,
                    None,
                    None,
                )?;
            }
            Ok(purged)
        })
    }

    /// Benchmark hook: one raw point get of a reset record by id (the
    /// backend's read, nothing decoded), to compare a token check against.
    #[doc(hidden)]
    pub fn bench_raw_reset_get(&self, id: &str) -> Result<bool, Error> {
        self.engine().contains(&RESETS, id)
    }

    /// Benchmark hook: what issuing a reset computes before its transaction
    /// (token, id, digest).
    #[doc(hidden)]
    pub fn bench_reset_material(&self) -> Result<(ResetToken, String), Error> {
        self.reset_material().map(|(t, id, _)| (t, id))
    }

    fn reset_material(&self) -> Result<(ResetToken, String, Digest), Error> {
        let (token, id) = ResetToken::generate_with_id()?;
        let digest = self.token_digest(&token);
        Ok((token, id, digest))
    }
}

/// What a queued mail gets before its reset's transaction: the sealed
/// token (sealing hashes, so it never runs inside a transaction).
struct PreparedMail {
    nonce: [u8; 16],
    sealed: Vec<u8>,
    lang: Lang,
    shop: String,
}

impl PreparedMail {
    /// The entry for a reset issued in the same transaction.
    pub fn record(&self, rec: &ResetRecord) -> MailRecord {
        MailRecord {
            reset_id: rec.id.clone(),
            box_id: rec.box_id,
            to: rec.email.clone(),
            nonce: self.nonce,
            sealed_token: self.sealed.clone(),
            lang: self.lang.locale().to_owned(),
            shop: self.shop.clone(),
            created_at: rec.created_at,
            expires_at: rec.expires_at,
            attempts: 0,
            next_attempt_at: rec.created_at,
            last_error: None,
        }
    }
}

/// What issuing a reset came to inside its transaction.
enum Issue {
    Issued(Box<ResetRecord>),
    /// The random id or digest is taken: draw again.
    Clash,
    Refused(Error),
}
