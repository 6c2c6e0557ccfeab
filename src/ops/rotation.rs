//! Password changes: one atomic rotation across the customer, its resets
//! and the event log ([`super::steps::rotation`]). Hashing happens before
//! the transaction; the transaction re-checks the credential version the
//! hash was computed against, and fails with a conflict if it moved.

use super::Store;
use super::steps;
use crate::error::{Credential, Error};
use crate::model::{BoxId, Customer, CustomerKey, Email, EventKind, Password};
use crate::store::records::CustomerRecord;

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
        let (hash, _commit) = self.hash_new_password(new_password)?;
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

    /// The rotation transaction for a precomputed hash.
    pub(crate) fn rotate(
        &self,
        box_id: BoxId,
        expected_version: u64,
        hash: &str,
        kind: EventKind,
    ) -> Result<CustomerRecord, Error> {
        let now = self.now();
        self.engine()
            .transact(|tx| steps::rotation(tx, box_id, expected_version, hash, kind, None, now))
    }
}
