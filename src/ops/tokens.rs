//! Using a reset: check a token, consume it in one atomic rotation (the
//! single-use rule), read and update a reset by id.
//!
//! Single use under concurrency: consuming re-checks, inside the rotation's
//! transaction, that the reset is unused, unexpired, still listed by its
//! customer and issued under the customer's current credential version, and
//! marks it used there; the token leaves the token index in the same
//! transaction. Transactions are serialised, so of many consumers of one
//! token exactly one finds it live; the rest get [`Error::InvalidToken`].

use super::reads::{Digest, is_live, reset_to_public};
use super::{Store, steps};
use crate::error::Error;
use crate::model::{
    Customer, Email, EventKind, EventOutcome, Password, Reset, ResetToken, ResetUpdate, Timestamp,
    ValidToken, check_reference, metadata_text, parse_reset_id,
};
use crate::store::records::{CustomerRecord, ResetRecord, TokenEntryRef};
use crate::store::schema::{CUSTOMERS, ExpiryKey, RESET_TOKENS, RESETS};

impl Store {
    /// Checks a token without consuming it: the customer it was issued to,
    /// or [`Error::InvalidToken`] when it is unknown, expired, used, or
    /// superseded by a credential change.
    ///
    /// One read: the token index entry exists only while the reset is unused
    /// and its customer's credentials have not moved since it was issued.
    pub fn check_reset_token(&self, token: &ResetToken) -> Result<ValidToken, Error> {
        let digest = self.token_digest(token);
        let now = self.now();
        let valid = self.engine().read(&RESET_TOKENS, &digest, |key, bytes| {
            let entry = TokenEntryRef::decode(key, bytes)?;
            // Only the email of a live token is copied out.
            Ok((now < entry.expires_at).then(|| ValidToken {
                box_id: entry.box_id,
                email: entry.email.to_owned(),
            }))
        })?;
        valid.flatten().ok_or(Error::InvalidToken)
    }

    /// Sets a new password with a reset token, in one atomic rotation: the
    /// reset is marked used, the credential version moves, every other
    /// outstanding reset of the customer dies, one event is appended.
    ///
    /// `expected_email`, when given, must be the account's email (compared
    /// trimmed and lower-cased), else [`Error::InvalidToken`]. A password that
    /// breaks the policy is [`Error::Policy`] and leaves the token unused.
    pub fn reset_password(
        &self,
        token: &ResetToken,
        expected_email: Option<&str>,
        new_password: &Password,
    ) -> Result<Customer, Error> {
        let expected = expected_email.map(Email::parse).transpose()?;
        let digest = self.token_digest(token);
        let (rec, cust) = self.live_reset_by_digest(&digest, self.now())?;
        if let Some(e) = &expected
            && !e.same_as(&cust.email)
        {
            return Err(Error::InvalidToken);
        }
        let (hash, _commit) = self.hash_new_password(new_password)?;
        let no_change = CheckedUpdate::default();
        let (_, cust) =
            self.consume(&rec.id, &digest, cust.credential_version, &hash, &no_change)?;
        Ok(cust.to_public())
    }

    /// Sets a new password with a reset id and its token (Commerce Layer);
    /// returns the reset with `used_at` set. An unknown id is
    /// [`Error::NotFound`]`(Entity::Reset)`; a wrong, expired, used or
    /// superseded token is [`Error::InvalidToken`].
    pub fn reset_password_by_id(
        &self,
        id: &str,
        token: &ResetToken,
        new_password: &Password,
    ) -> Result<Reset, Error> {
        self.reset_password_by_id_and_update(id, token, new_password, &ResetUpdate::default())
    }

    /// [`Store::reset_password_by_id`] that also changes the reset's
    /// `reference`, `reference_origin` or `metadata`, all or nothing: every
    /// field is checked before anything is written, and the changes are
    /// made in the same transaction that consumes the token.
    pub fn reset_password_by_id_and_update(
        &self,
        id: &str,
        token: &ResetToken,
        new_password: &Password,
        update: &ResetUpdate,
    ) -> Result<Reset, Error> {
        let update = CheckedUpdate::new(update)?;
        let rec = self.reset_record(id)?;
        let digest = self.token_digest(token);
        let cust = self.live_customer(&rec, &digest, self.now())?;
        let (hash, _commit) = self.hash_new_password(new_password)?;
        let (rec, _) = self.consume(&rec.id, &digest, cust.credential_version, &hash, &update)?;
        reset_to_public(&rec)
    }

    /// The reset with this id (used or not, until purged). A malformed id is
    /// [`Error::InvalidInput`], an unknown one [`Error::NotFound`].
    pub fn reset(&self, id: &str) -> Result<Reset, Error> {
        reset_to_public(&self.reset_record(id)?)
    }

    /// Changes a reset's `reference`, `reference_origin` or `metadata`.
    pub fn update_reset(&self, id: &str, update: ResetUpdate) -> Result<Reset, Error> {
        let id = parse_reset_id(id.as_bytes())?;
        let update = CheckedUpdate::new(&update)?;
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut rec = steps::load_reset(tx, &id)?;
            update.apply(&mut rec);
            rec.updated_at = now;
            tx.put(&RESETS, &id, &rec)?;
            tx.append_event(
                now,
                EventKind::ResetUpdated,
                EventOutcome::Granted,
                Some(rec.box_id),
                None,
            )?;
            Ok(rec)
        })?;
        reset_to_public(&rec)
    }

    fn live_reset_by_digest(
        &self,
        digest: &Digest,
        now: Timestamp,
    ) -> Result<(ResetRecord, CustomerRecord), Error> {
        let Some(entry) = self.engine().get(&RESET_TOKENS, digest)? else {
            return Err(Error::InvalidToken);
        };
        // Deleted since the index read: as good as unknown.
        let Some(rec) = self.engine().get(&RESETS, &entry.id)? else {
            return Err(Error::InvalidToken);
        };
        let cust = self.live_customer(&rec, digest, now)?;
        Ok((rec, cust))
    }

    /// The consuming rotation for a precomputed hash: re-checks the token and
    /// the credential version the hash was computed against.
    fn consume(
        &self,
        id: &str,
        digest: &Digest,
        expected_version: u64,
        hash: &str,
        update: &CheckedUpdate,
    ) -> Result<(ResetRecord, CustomerRecord), Error> {
        let now = self.now();
        self.engine().transact(|tx| {
            let Some(mut rec) = tx.get(&RESETS, id)? else {
                return Err(Error::InvalidToken.into());
            };
            if !is_live(&rec, digest, now) {
                return Err(Error::InvalidToken.into());
            }
            let Some(mut cust) = tx.get(&CUSTOMERS, rec.box_id)? else {
                return Err(Error::InvalidToken.into());
            };
            if cust.credential_version != rec.credential_version
                || !cust.resets.iter().any(|r| r == id)
                || !cust.flags.is_enable
            {
                return Err(Error::InvalidToken.into());
            }
            if cust.credential_version != expected_version {
                return Err(Error::Conflict.into());
            }
            // Single use: the token leaves the token index in the transaction
            // that consumes it (and its mail the queue, should it wait there).
            let old_expiry = ExpiryKey::of(&rec);
            update.apply(&mut rec);
            rec.used_at = Some(now);
            rec.updated_at = now;
            steps::put_used_reset(tx, &rec, &old_expiry)?;
            // The used reset stays (unlisted); the others die with the rotation.
            cust.resets.retain(|r| r != id);
            steps::set_password(tx, &mut cust, hash, now)?;
            tx.fail_point("reset:before-event")?;
            tx.append_event(
                now,
                EventKind::ResetConsumed,
                EventOutcome::Granted,
                Some(cust.box_id),
                None,
            )?;
            Ok((rec, cust))
        })
    }
}

/// A [`ResetUpdate`] whose fields passed their checks (metadata as text).
#[derive(Default)]
struct CheckedUpdate {
    reference: Option<Option<String>>,
    reference_origin: Option<Option<String>>,
    metadata: Option<Option<String>>,
}

impl CheckedUpdate {
    fn new(update: &ResetUpdate) -> Result<Self, Error> {
        if let Some(Some(r)) = &update.reference {
            check_reference("reference", r)?;
        }
        if let Some(Some(r)) = &update.reference_origin {
            check_reference("reference_origin", r)?;
        }
        let metadata = match &update.metadata {
            Some(Some(m)) => Some(Some(metadata_text(m)?)),
            Some(None) => Some(None),
            None => None,
        };
        Ok(Self {
            reference: update.reference.clone(),
            reference_origin: update.reference_origin.clone(),
            metadata,
        })
    }

    fn apply(&self, rec: &mut ResetRecord) {
        if let Some(r) = &self.reference {
            rec.reference.clone_from(r);
        }
        if let Some(r) = &self.reference_origin {
            rec.reference_origin.clone_from(r);
        }
        if let Some(m) = &self.metadata {
            rec.metadata.clone_from(m);
        }
    }
}
