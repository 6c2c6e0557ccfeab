//! Atomic credential rotation: one transaction across the customer, its
//! resets and the event log. Hashing happens before the transaction; the
//! transaction re-checks the credential version the hash was computed
//! against, and fails with a conflict if it moved.

use super::Store;
use super::customers::load;
use crate::crypto::password::HashScheme;
use crate::error::{Credential, Error};
use crate::model::{
    BoxId, Customer, CustomerKey, Email, EventKind, EventOutcome, Password, Timestamp, UserCode,
};
use crate::store::records::{CustomerRecord, ResetRecord};
use crate::store::{TreeId, Tx, TxError};

/// Marks a credential change on `rec`: version + 1, every outstanding reset
/// of the customer removed, lock-out and must-change-password cleared.
pub(crate) fn bump_credentials(
    tx: &Tx<'_>,
    rec: &mut CustomerRecord,
    now: Timestamp,
) -> Result<(), TxError> {
    rec.credential_version += 1;
    rec.failed_logins = 0;
    rec.locked_until = None;
    rec.updated_at = now;
    for id in std::mem::take(&mut rec.resets) {
        // The record and all three of its index entries go; a list entry
        // naming nothing (or another customer's reset) is simply dropped.
        if let Some(r) = tx.get_record::<ResetRecord>(TreeId::Resets, id.as_bytes())?
            && r.box_id == rec.box_id
        {
            super::resets::delete_reset(tx, &r)?;
        }
    }
    Ok(())
}

impl Store {
    /// Sets a new password for `box_id`, provided its credential version is
    /// still `expected_version` (from [`Customer::credential_version`]); else
    /// [`Error::Conflict`]. Clears `must_change_password`, kills every
    /// outstanding reset token and appends one event, all in one transaction.
    pub fn change_password(
        &self,
        box_id: BoxId,
        new_password: &Password,
        expected_version: u64,
    ) -> Result<Customer, Error> {
        let hash = self.hash_new_password(new_password)?;
        self.rotate(box_id, expected_version, &hash, EventKind::PasswordChanged)
            .map(|r| r.to_public())
    }

    /// The Skypostal password update: the customer proves itself with
    /// (box_id, key); `current_email` must be the account's email. A
    /// disabled customer gets [`Error::Disabled`] (disabling moves the
    /// credential version, so a change racing it is a conflict).
    pub fn update_password(
        &self,
        box_id: BoxId,
        key: &CustomerKey,
        current_email: &str,
        new_password: &Password,
    ) -> Result<Customer, Error> {
        let rec = self.authenticate_record(box_id, key)?;
        if !rec.flags.is_enable {
            return Err(Error::Disabled);
        }
        let matches = Email::parse(current_email).is_ok_and(|e| e.same_as(&rec.email));
        if !matches {
            return Err(Error::InvalidCredentials(Credential::Email));
        }
        self.change_password(box_id, new_password, rec.credential_version)
    }

    /// Policy check and hash, outside any transaction.
    pub(crate) fn hash_new_password(&self, password: &Password) -> Result<String, Error> {
        let normalized = self
            .config()
            .policy
            .check(password)
            .map_err(Error::Policy)?;
        self.hasher().hash_normalized(&normalized)
    }

    /// The rotation transaction for a precomputed hash.
    pub(crate) fn rotate(
        &self,
        box_id: BoxId,
        expected_version: u64,
        hash: &str,
        kind: EventKind,
    ) -> Result<CustomerRecord, Error> {
        self.rotate_with(box_id, expected_version, hash, kind, None, |_, _| Ok(()))
    }

    /// [`Store::rotate`] with more work in the same transaction: `extra` runs
    /// first, with the transaction's time (it may refuse, say a replayed
    /// nonce, and then nothing is written), and the event names the app on
    /// whose behalf it happened.
    /// `extra` follows the transaction rules: no I/O, no hashing, no side
    /// effects outside the [`Tx`].
    pub(crate) fn rotate_with(
        &self,
        box_id: BoxId,
        expected_version: u64,
        hash: &str,
        kind: EventKind,
        user_code: Option<UserCode>,
        extra: impl Fn(&Tx<'_>, Timestamp) -> Result<(), TxError>,
    ) -> Result<CustomerRecord, Error> {
        let now = self.now();
        self.engine().transact(|tx| {
            extra(tx, now)?;
            let mut rec = load(tx, box_id)?;
            if rec.credential_version != expected_version {
                return Err(Error::Conflict.into());
            }
            rec.scheme = HashScheme::Argon2idPeppered;
            rec.password_hash = hash.to_owned();
            rec.flags.must_change_password = false;
            bump_credentials(tx, &mut rec, now)?;
            tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &rec)?;
            tx.fail_point("rotation:before-event")?;
            tx.append_event(now, kind, EventOutcome::Granted, Some(box_id), user_code)?;
            Ok(rec)
        })
    }
}
