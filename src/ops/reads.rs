//! What several operations read outside transactions, and the keys and
//! tokens they seal, unseal and digest: with [`super::steps`], a leaf of
//! `ops/` (it uses no operation file).

use super::Store;
use crate::crypto::ct_eq;
use crate::crypto::seal;
use crate::error::{Credential, Entity, Error};
use crate::model::{
    AppKey, BoxId, CustomerKey, Email, Password, Reset, ResetToken, Timestamp, UserCode,
    parse_reset_id,
};
use crate::store::backend::ExpectedCommit;
use crate::store::records::{AppRecord, CustomerRecord, ResetRecord};
use crate::store::schema::{APPS, CUSTOMERS, EMAILS, RESETS};

/// A keyed token digest (the token itself is never stored).
pub(super) type Digest = [u8; 32];

impl Store {
    /// The customer `box_id`, or [`Error::NotFound`].
    pub(super) fn customer_record(&self, box_id: BoxId) -> Result<CustomerRecord, Error> {
        self.engine()
            .get(&CUSTOMERS, box_id)?
            .ok_or(Error::NotFound(Entity::Customer))
    }

    /// The customer with this email, if any.
    pub(super) fn record_by_email(&self, email: &Email) -> Result<Option<CustomerRecord>, Error> {
        let Some(box_id) = self.engine().get(&EMAILS, email.normalized())? else {
            return Ok(None);
        };
        // A dangling index entry is corruption, not "unknown customer".
        match self.engine().get(&CUSTOMERS, box_id)? {
            Some(rec) => Ok(Some(rec)),
            None => Err(EMAILS.corrupt(email.normalized())),
        }
    }

    /// The customer `box_id` if `key` is its key (compared in constant
    /// time); an unknown customer is refused like a wrong key.
    pub(super) fn authenticate_record(
        &self,
        box_id: BoxId,
        key: &CustomerKey,
    ) -> Result<CustomerRecord, Error> {
        let rec = match self.customer_record(box_id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => {
                return Err(Error::InvalidCredentials(Credential::CustomerKey));
            }
            Err(e) => return Err(e),
        };
        let stored = self.unseal_customer_key(&rec)?;
        if !stored.ct_eq(key) {
            return Err(Error::InvalidCredentials(Credential::CustomerKey));
        }
        Ok(rec)
    }

    pub(super) fn seal_customer_key(
        &self,
        box_id: BoxId,
        epoch: u32,
        key: &CustomerKey,
    ) -> Vec<u8> {
        seal::seal(
            &self.keys().customer_seal,
            seal::Owner::Customer(box_id),
            epoch,
            key.expose_secret().as_bytes(),
        )
    }

    pub(super) fn unseal_customer_key(&self, rec: &CustomerRecord) -> Result<CustomerKey, Error> {
        seal::unseal(
            &self.keys().customer_seal,
            seal::Owner::Customer(rec.box_id),
            rec.key_epoch,
            &rec.sealed_key,
        )
        .map(CustomerKey::from_trusted)
        .ok_or_else(|| CUSTOMERS.corrupt(rec.box_id))
    }

    /// The app `user_code`, or [`Error::NotFound`].
    pub(super) fn app_record(&self, user_code: UserCode) -> Result<AppRecord, Error> {
        self.engine()
            .get(&APPS, user_code)?
            .ok_or(Error::NotFound(Entity::App))
    }

    /// The app `user_code` for a caller presenting its credentials: an
    /// unknown app is refused as [`Credential::App`].
    pub(super) fn app_for_credentials(&self, user_code: UserCode) -> Result<AppRecord, Error> {
        self.app_record(user_code).map_err(|e| match e {
            Error::NotFound(_) => Error::InvalidCredentials(Credential::App),
            e => e,
        })
    }

    pub(super) fn seal_app_key(&self, user_code: UserCode, key: &AppKey) -> Vec<u8> {
        seal::seal(
            &self.keys().app_seal,
            seal::Owner::App(user_code),
            0,
            key.expose_secret().as_bytes(),
        )
    }

    pub(super) fn unseal_app_key(&self, rec: &AppRecord) -> Result<AppKey, Error> {
        seal::unseal(
            &self.keys().app_seal,
            seal::Owner::App(rec.user_code),
            rec.key_epoch,
            &rec.sealed_key,
        )
        .map(AppKey::from_trusted)
        .ok_or_else(|| APPS.corrupt(rec.user_code))
    }

    /// Policy check and hash, outside any transaction. The hash is for a
    /// transaction that follows: the commit is announced before hashing
    /// (a group commit with a commit delay may wait for it); hold the
    /// second value until that transaction returns.
    pub(crate) fn hash_new_password(
        &self,
        password: &Password,
    ) -> Result<(String, Option<ExpectedCommit<'_>>), Error> {
        let normalized = self
            .config()
            .policy
            .check(password)
            .map_err(Error::Policy)?;
        let commit = self.engine().expect_commit();
        Ok((self.hasher().hash_normalized(&normalized)?, commit))
    }

    pub(super) fn token_digest(&self, token: &ResetToken) -> Digest {
        self.keys().token_digest(token)
    }

    /// The reset `id` (used or not, until purged): a malformed id is
    /// [`Error::InvalidInput`], an unknown one [`Error::NotFound`].
    pub(super) fn reset_record(&self, id: &str) -> Result<ResetRecord, Error> {
        let id = parse_reset_id(id.as_bytes())?;
        self.engine()
            .get(&RESETS, &id)?
            .ok_or(Error::NotFound(Entity::Reset))
    }

    /// The reset's customer, if `digest` is its token's and the token is
    /// live: unused, unexpired, issued under the customer's current
    /// credential version, the customer enabled. Else [`Error::InvalidToken`].
    pub(super) fn live_customer(
        &self,
        rec: &ResetRecord,
        digest: &Digest,
        now: Timestamp,
    ) -> Result<CustomerRecord, Error> {
        if !is_live(rec, digest, now) {
            return Err(Error::InvalidToken);
        }
        let cust = match self.customer_record(rec.box_id) {
            Ok(c) => c,
            Err(Error::NotFound(_)) => return Err(Error::InvalidToken),
            Err(e) => return Err(e),
        };
        if cust.credential_version != rec.credential_version || !cust.flags.is_enable {
            return Err(Error::InvalidToken);
        }
        Ok(cust)
    }
}

/// Unused, unexpired, and `digest` is its token's (compared in constant time).
pub(super) fn is_live(rec: &ResetRecord, digest: &Digest, now: Timestamp) -> bool {
    ct_eq(&rec.token_digest, digest) & rec.used_at.is_none() & (now < rec.expires_at)
}

/// A reset as callers see it (its metadata parsed back into JSON).
pub(super) fn reset_to_public(rec: &ResetRecord) -> Result<Reset, Error> {
    let metadata = match &rec.metadata {
        Some(text) => Some(serde_json::from_str(text).map_err(|_| RESETS.corrupt(&rec.id))?),
        None => None,
    };
    Ok(Reset {
        id: rec.id.clone(),
        box_id: rec.box_id,
        email: rec.email.clone(),
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        expires_at: rec.expires_at,
        used_at: rec.used_at,
        reference: rec.reference.clone(),
        reference_origin: rec.reference_origin.clone(),
        metadata,
    })
}
