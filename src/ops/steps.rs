//! The steps transactions are made of, shared by the operation files: the
//! leaf of `ops/` (it uses no operation file, and operation files use no
//! one but it). Each step follows the transaction rules: no I/O, no
//! hashing, no side effect outside the [`Tx`]; a step may run again when a
//! backend retries its transaction.
//!
//! The rules they keep:
//! - a customer and its email index entry change together
//!   ([`insert_customer`], [`change_email_index`]);
//! - a credential change moves the credential version, clears the lock-out
//!   and deletes every outstanding reset with its index entries and its
//!   queued mail ([`bump_credentials`]): tokens die with the password;
//! - a reset and its three index entries change together ([`insert_reset`],
//!   [`delete_reset`]).

use crate::crypto::password::HashScheme;
use crate::error::{Entity, Error};
use crate::model::{BoxId, Email, EventKind, EventOutcome, Timestamp, UserCode};
use crate::store::records::{CustomerRecord, MailRecord, ResetRecord, TokenEntry};
use crate::store::schema::{
    CUSTOMERS, CustomerResetKey, DueKey, EMAILS, ExpiryKey, MAIL_DUE, MAIL_QUEUE, RESET_EXPIRY,
    RESET_TOKENS, RESETS, RESETS_BY_CUSTOMER,
};
use crate::store::{Tx, TxError};

/// The customer `box_id`, or [`Error::NotFound`].
pub(super) fn load_customer(tx: &Tx<'_>, box_id: BoxId) -> Result<CustomerRecord, TxError> {
    tx.get(&CUSTOMERS, box_id)?
        .ok_or_else(|| Error::NotFound(Entity::Customer).into())
}

/// Writes a customer record back (its email index entry unchanged).
pub(super) fn put_customer(tx: &Tx<'_>, rec: &CustomerRecord) -> Result<(), TxError> {
    tx.put(&CUSTOMERS, rec.box_id, rec)
}

/// The box_id an email belongs to, if any.
pub(super) fn box_id_by_email(tx: &Tx<'_>, email: &Email) -> Result<Option<BoxId>, TxError> {
    tx.get(&EMAILS, email.normalized())
}

/// [`Error::AlreadyExists`] when a customer has this email.
pub(super) fn ensure_email_free(tx: &Tx<'_>, email: &Email) -> Result<(), TxError> {
    if tx.contains(&EMAILS, email.normalized())? {
        return Err(Error::AlreadyExists(Entity::Email).into());
    }
    Ok(())
}

/// A new customer's record: version 1, key epoch 0, no failures, no
/// resets; flags, dates and the hash are the caller's.
pub(super) struct NewRecord<'a> {
    pub box_id: BoxId,
    pub email: &'a Email,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub scheme: HashScheme,
    pub password_hash: &'a str,
    pub sealed_key: Vec<u8>,
    pub now: Timestamp,
}

impl NewRecord<'_> {
    pub fn build(self) -> CustomerRecord {
        CustomerRecord {
            box_id: self.box_id,
            email: self.email.as_str().to_owned(),
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            flags: Default::default(),
            enrolment_date: self.now,
            activation_date: None,
            scheme: self.scheme,
            password_hash: self.password_hash.to_owned(),
            sealed_key: self.sealed_key,
            key_epoch: 0,
            credential_version: 1,
            failed_logins: 0,
            locked_until: None,
            created_at: self.now,
            updated_at: self.now,
            resets: Vec::new(),
        }
    }
}

/// Writes a new customer and its email index entry.
pub(super) fn insert_customer(
    tx: &Tx<'_>,
    rec: &CustomerRecord,
    email: &Email,
) -> Result<(), TxError> {
    put_customer(tx, rec)?;
    tx.put(&EMAILS, email.normalized(), &rec.box_id)
}

/// Moves the email index entry of `box_id` from `old` to `new`
/// ([`Error::AlreadyExists`] when another customer has `new`).
pub(super) fn change_email_index(
    tx: &Tx<'_>,
    box_id: BoxId,
    old: &Email,
    new: &Email,
) -> Result<(), TxError> {
    if old.normalized() != new.normalized() {
        ensure_email_free(tx, new)?;
        tx.delete(&EMAILS, old.normalized())?;
        tx.put(&EMAILS, new.normalized(), &box_id)?;
    }
    Ok(())
}

/// Marks a credential change on `rec`: version + 1, every outstanding reset
/// of the customer removed, lock-out cleared. The caller writes `rec`.
pub(super) fn bump_credentials(
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
        if let Some(r) = tx.get(&RESETS, &id)?
            && r.box_id == rec.box_id
        {
            delete_reset(tx, &r)?;
        }
    }
    Ok(())
}

/// Sets a new password (hashed beforehand) on `rec` and writes it: the
/// current scheme, `must_change_password` cleared, a credential change.
pub(super) fn set_password(
    tx: &Tx<'_>,
    rec: &mut CustomerRecord,
    hash: &str,
    now: Timestamp,
) -> Result<(), TxError> {
    rec.scheme = HashScheme::Argon2idPeppered;
    rec.password_hash = hash.to_owned();
    rec.flags.must_change_password = false;
    bump_credentials(tx, rec, now)?;
    put_customer(tx, rec)
}

/// [`set_password`] for `box_id`, provided its credential version is still
/// `expected_version` (the one the hash was computed against); else
/// [`Error::Conflict`], not a silent overwrite.
pub(super) fn rotate(
    tx: &Tx<'_>,
    box_id: BoxId,
    expected_version: u64,
    hash: &str,
    now: Timestamp,
) -> Result<CustomerRecord, TxError> {
    let mut rec = load_customer(tx, box_id)?;
    if rec.credential_version != expected_version {
        return Err(Error::Conflict.into());
    }
    set_password(tx, &mut rec, hash, now)?;
    Ok(rec)
}

/// The whole rotation of a password change: [`rotate`], then one event of
/// `kind` (naming the app on whose behalf it happened, if any).
pub(super) fn rotation(
    tx: &Tx<'_>,
    box_id: BoxId,
    expected_version: u64,
    hash: &str,
    kind: EventKind,
    user_code: Option<UserCode>,
    now: Timestamp,
) -> Result<CustomerRecord, TxError> {
    let rec = rotate(tx, box_id, expected_version, hash, now)?;
    tx.fail_point("rotation:before-event")?;
    tx.append_event(now, kind, EventOutcome::Granted, Some(box_id), user_code)?;
    Ok(rec)
}

/// The reset `id`, or [`Error::NotFound`].
pub(super) fn load_reset(tx: &Tx<'_>, id: &str) -> Result<ResetRecord, TxError> {
    tx.get(&RESETS, id)?
        .ok_or_else(|| Error::NotFound(Entity::Reset).into())
}

/// Writes a new reset with its three index entries.
pub(super) fn insert_reset(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    tx.put(&RESETS, &rec.id, rec)?;
    tx.put(&RESET_TOKENS, &rec.token_digest, &TokenEntry::of(rec))?;
    tx.put(&RESET_EXPIRY, &ExpiryKey::of(rec), &())?;
    tx.put(&RESETS_BY_CUSTOMER, &CustomerResetKey::of(rec), &())
}

/// Marks a reset used (at `rec.used_at`, set by the caller) and writes it:
/// its token leaves the token index at once, its queued mail goes, and its
/// expiry entry moves to the time of use. It stays (unlisted) until a
/// purge. `old_expiry` is its expiry key before the change.
pub(super) fn put_used_reset(
    tx: &Tx<'_>,
    rec: &ResetRecord,
    old_expiry: &[u8],
) -> Result<(), TxError> {
    tx.delete(&RESET_EXPIRY, old_expiry)?;
    tx.delete(&RESET_TOKENS, &rec.token_digest)?;
    forget_mail(tx, &rec.id)?;
    tx.put(&RESET_EXPIRY, &ExpiryKey::of(rec), &())?;
    tx.put(&RESETS, &rec.id, rec)
}

/// Removes a reset record, all its index entries and its queued mail (not
/// its customer's list entry: see [`unlist`]).
pub(super) fn delete_reset(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    forget_mail(tx, &rec.id)?;
    tx.delete(&RESETS, &rec.id)?;
    tx.delete(&RESET_TOKENS, &rec.token_digest)?;
    tx.delete(&RESET_EXPIRY, &ExpiryKey::of(rec))?;
    tx.delete(&RESETS_BY_CUSTOMER, &CustomerResetKey::of(rec))
}

/// Takes a reset off its customer's list of outstanding resets.
pub(super) fn unlist(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    if let Some(mut cust) = tx.get(&CUSTOMERS, rec.box_id)?
        && cust.resets.contains(&rec.id)
    {
        cust.resets.retain(|r| *r != rec.id);
        put_customer(tx, &cust)?;
    }
    Ok(())
}

/// Revokes the reset `id` if it still exists (a bounced mail's: nobody
/// received its token): deleted, and unlisted.
pub(super) fn revoke_reset(tx: &Tx<'_>, id: &str) -> Result<(), TxError> {
    if let Some(rec) = tx.get(&RESETS, id)? {
        delete_reset(tx, &rec)?;
        unlist(tx, &rec)?;
    }
    Ok(())
}

/// Queues a reset's mail (in the transaction that issues the reset).
pub(super) fn enqueue_mail(tx: &Tx<'_>, rec: &MailRecord) -> Result<(), TxError> {
    tx.fail_point("mail:enqueue")?;
    put_mail(tx, None, rec)
}

/// Writes a queued mail and its due-index entry; `old`, the entry as it
/// was, has its index entry removed first.
pub(super) fn put_mail(
    tx: &Tx<'_>,
    old: Option<&MailRecord>,
    rec: &MailRecord,
) -> Result<(), TxError> {
    if let Some(old) = old {
        tx.delete(&MAIL_DUE, &DueKey::of(old))?;
    }
    tx.put(&MAIL_QUEUE, &rec.reset_id, rec)?;
    tx.put(&MAIL_DUE, &DueKey::of(rec), &())
}

/// Deletes a queued mail and its due-index entry.
pub(super) fn delete_mail(tx: &Tx<'_>, rec: &MailRecord) -> Result<(), TxError> {
    tx.delete(&MAIL_QUEUE, &rec.reset_id)?;
    tx.delete(&MAIL_DUE, &DueKey::of(rec))
}

/// Drops the queued mail of a reset that dies (no-op when it has none).
pub(super) fn forget_mail(tx: &Tx<'_>, reset_id: &str) -> Result<(), TxError> {
    if let Some(rec) = tx.get(&MAIL_QUEUE, reset_id)? {
        delete_mail(tx, &rec)?;
    }
    Ok(())
}
