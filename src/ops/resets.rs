//! Password resets: issue, check, consume (part of the atomic rotation), read,
//! update, revoke, purge.
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

use super::Store;
use super::rotation::bump_credentials;
use crate::crypto::ct_eq;
use crate::crypto::password::HashScheme;
use crate::error::{Entity, Error};
use crate::model::{
    Customer, Email, EventKind, EventOutcome, IssuedReset, MAX_OUTSTANDING_RESETS, MailRequest,
    Password, RESET_THROTTLE, Reset, ResetDetails, ResetToken, ResetUpdate, Timestamp, ValidToken,
    check_reference, metadata_text, parse_reset_id,
};
use crate::store::encoding::decode_borrowed;
use crate::store::encoding::printable_key;
use crate::store::records::{
    CustomerRecord, ResetRecord, TokenEntry, TokenEntryRef, sortable_time,
};
use crate::store::{TreeId, Tx, TxError};

/// Expiry-index entries a purge reads, and deletes in one transaction, at a time.
const PURGE_BATCH: usize = 64;

/// Attempts to find an unused reset id and token digest (a clash of 60 random
/// bits, let alone 381, is not expected ever).
const ISSUE_ATTEMPTS: usize = 4;

type Digest = [u8; 32];

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
                let Some(box_id) = super::customers::box_id_by_email(tx, &email)? else {
                    return refuse(None, Error::NotFound(Entity::Customer));
                };
                let mut cust = super::customers::load(tx, box_id)?;
                if !cust.flags.is_enable {
                    return refuse(Some(box_id), Error::Disabled);
                }
                if tx.get(TreeId::Resets, id.as_bytes())?.is_some()
                    || tx.get(TreeId::ResetTokens, &digest)?.is_some()
                {
                    return Ok(Issue::Clash);
                }
                let mut live = Vec::with_capacity(cust.resets.len() + 1);
                for rid in &cust.resets {
                    if let Some(r) = tx.get_record::<ResetRecord>(TreeId::Resets, rid.as_bytes())? {
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
                        delete_reset(tx, &r)?;
                    } else {
                        keep.push(r);
                    }
                }
                while keep.len() >= MAX_OUTSTANDING_RESETS {
                    let oldest = keep.remove(0);
                    delete_reset(tx, &oldest)?;
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
                insert_reset(tx, &rec)?;
                if let Some(p) = &prepared {
                    super::mail_queue::enqueue(tx, &p.record(&rec))?;
                }
                cust.resets = keep.into_iter().map(|r| r.id).collect();
                cust.resets.push(id.clone());
                tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &cust)?;
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
                        reset: to_public(&rec)?,
                        token,
                    });
                }
                Issue::Refused(why) => return Err(why),
                Issue::Clash => {}
            }
        }
        Err(Error::Conflict)
    }

    /// Checks a token without consuming it: the customer it was issued to,
    /// or [`Error::InvalidToken`] when it is unknown, expired, used, or
    /// superseded by a credential change.
    ///
    /// One read: the token index entry exists only while the reset is unused
    /// and its customer's credentials have not moved since it was issued.
    pub fn check_reset_token(&self, token: &ResetToken) -> Result<ValidToken, Error> {
        let digest = self.token_digest(token);
        let Some(bytes) = self.engine().get(TreeId::ResetTokens, &digest)? else {
            return Err(Error::InvalidToken);
        };
        let entry: TokenEntryRef<'_> = decode_borrowed(TreeId::ResetTokens, &digest, &bytes)?;
        if self.now() >= entry.expires_at {
            return Err(Error::InvalidToken);
        }
        Ok(ValidToken {
            box_id: entry.box_id,
            email: entry.email.to_owned(),
        })
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
        let hash = self.hash_new_password(new_password)?;
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
        let hash = self.hash_new_password(new_password)?;
        let (rec, _) = self.consume(&rec.id, &digest, cust.credential_version, &hash, &update)?;
        to_public(&rec)
    }

    /// The reset with this id (used or not, until purged). A malformed id is
    /// [`Error::InvalidInput`], an unknown one [`Error::NotFound`].
    pub fn reset(&self, id: &str) -> Result<Reset, Error> {
        to_public(&self.reset_record(id)?)
    }

    /// Changes a reset's `reference`, `reference_origin` or `metadata`.
    pub fn update_reset(&self, id: &str, update: ResetUpdate) -> Result<Reset, Error> {
        let id = parse_reset_id(id.as_bytes())?;
        let update = CheckedUpdate::new(&update)?;
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut rec = load_reset(tx, &id)?;
            update.apply(&mut rec);
            rec.updated_at = now;
            tx.put_record(TreeId::Resets, id.as_bytes(), &rec)?;
            tx.append_event(
                now,
                EventKind::ResetUpdated,
                EventOutcome::Granted,
                Some(rec.box_id),
                None,
            )?;
            Ok(rec)
        })?;
        to_public(&rec)
    }

    /// Removes a reset and its token (for a mail that could not be sent),
    /// and its queued mail if any. The customer may then request another
    /// at once.
    pub fn revoke_reset(&self, id: &str) -> Result<(), Error> {
        let id = parse_reset_id(id.as_bytes())?;
        let now = self.now();
        self.engine().transact(|tx| {
            let rec = load_reset(tx, &id)?;
            delete_reset(tx, &rec)?;
            unlist(tx, &rec)?;
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
        // Ids are ASCII alphanumerics, so every key of a reset dead by `now`
        // sorts below this.
        let mut upper = sortable_time(now).to_vec();
        upper.push(0xff);
        let mut start = Vec::new();
        let mut purged = 0;
        loop {
            let rows = self
                .engine()
                .scan(TreeId::ResetExpiry, &start, PURGE_BATCH)?;
            let keys: Vec<Vec<u8>> = rows
                .iter()
                .map(|(k, _)| k.to_vec())
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
                if tx.get(TreeId::ResetExpiry, key)?.is_none() {
                    continue;
                }
                let id = key.get(8..).unwrap_or_default();
                match tx.get_record::<ResetRecord>(TreeId::Resets, id)? {
                    Some(rec) if rec.dead_at() <= now && rec.expiry_key() == *key => {
                        tx.fail_point("purge:delete")?;
                        delete_reset(tx, &rec)?;
                        unlist(tx, &rec)?;
                        purged += 1;
                        changed = true;
                    }
                    // Changed since the scan; not dead yet.
                    Some(_) => {}
                    // An entry pointing at nothing: drop it.
                    None => {
                        tx.remove(TreeId::ResetExpiry, key)?;
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

    /// Benchmark hook: one raw sled point get of a reset record by id, to
    /// compare a token check against.
    #[doc(hidden)]
    pub fn bench_raw_reset_get(&self, id: &str) -> Result<bool, Error> {
        Ok(self.engine().get(TreeId::Resets, id.as_bytes())?.is_some())
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

    pub(super) fn token_digest(&self, token: &ResetToken) -> Digest {
        self.keys().token_digest(token)
    }

    fn reset_record(&self, id: &str) -> Result<ResetRecord, Error> {
        let id = parse_reset_id(id.as_bytes())?;
        self.engine()
            .get_record(TreeId::Resets, id.as_bytes())?
            .ok_or(Error::NotFound(Entity::Reset))
    }

    fn live_reset_by_digest(
        &self,
        digest: &Digest,
        now: Timestamp,
    ) -> Result<(ResetRecord, CustomerRecord), Error> {
        let Some(entry) = self
            .engine()
            .get_record::<TokenEntry>(TreeId::ResetTokens, digest)?
        else {
            return Err(Error::InvalidToken);
        };
        // Deleted since the index read: as good as unknown.
        let Some(rec) = self
            .engine()
            .get_record(TreeId::Resets, entry.id.as_bytes())?
        else {
            return Err(Error::InvalidToken);
        };
        let cust = self.live_customer(&rec, digest, now)?;
        Ok((rec, cust))
    }

    /// The reset's customer, if `digest` is its token's and the token is live.
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
            let Some(mut rec) = tx.get_record::<ResetRecord>(TreeId::Resets, id.as_bytes())? else {
                return Err(Error::InvalidToken.into());
            };
            if !is_live(&rec, digest, now) {
                return Err(Error::InvalidToken.into());
            }
            let key = rec.box_id.to_be_bytes();
            let Some(mut cust) = tx.get_record::<CustomerRecord>(TreeId::Customers, &key)? else {
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
            tx.remove(TreeId::ResetExpiry, &rec.expiry_key())?;
            // A used token is gone from the token index at once (and from
            // the mail queue, should its mail still wait there).
            tx.remove(TreeId::ResetTokens, &rec.token_digest)?;
            super::mail_queue::forget(tx, id)?;
            update.apply(&mut rec);
            rec.used_at = Some(now);
            rec.updated_at = now;
            tx.insert(TreeId::ResetExpiry, &rec.expiry_key(), Vec::new())?;
            tx.put_record(TreeId::Resets, id.as_bytes(), &rec)?;
            // The used reset stays (unlisted); the others die with the rotation.
            cust.resets.retain(|r| r != id);
            cust.scheme = HashScheme::Argon2idPeppered;
            cust.password_hash = hash.to_owned();
            cust.flags.must_change_password = false;
            bump_credentials(tx, &mut cust, now)?;
            tx.put_record(TreeId::Customers, &key, &cust)?;
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

/// What issuing a reset came to inside its transaction.
enum Issue {
    Issued(Box<ResetRecord>),
    /// The random id or digest is taken: draw again.
    Clash,
    Refused(Error),
}

/// Unused, unexpired, and `digest` is its token's (compared in constant time).
fn is_live(rec: &ResetRecord, digest: &Digest, now: Timestamp) -> bool {
    ct_eq(&rec.token_digest, digest) & rec.used_at.is_none() & (now < rec.expires_at)
}

fn load_reset(tx: &Tx<'_>, id: &str) -> Result<ResetRecord, TxError> {
    tx.get_record(TreeId::Resets, id.as_bytes())?
        .ok_or_else(|| Error::NotFound(Entity::Reset).into())
}

fn insert_reset(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    tx.put_record(TreeId::Resets, rec.id.as_bytes(), rec)?;
    tx.put_record(TreeId::ResetTokens, &rec.token_digest, &TokenEntry::of(rec))?;
    tx.insert(TreeId::ResetExpiry, &rec.expiry_key(), Vec::new())?;
    tx.insert(TreeId::ResetsByCustomer, &rec.customer_key(), Vec::new())
}

/// Removes a reset record, all its index entries and its queued mail (not
/// its customer's list entry: see [`unlist`]).
pub(crate) fn delete_reset(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    super::mail_queue::forget(tx, &rec.id)?;
    tx.remove(TreeId::Resets, rec.id.as_bytes())?;
    tx.remove(TreeId::ResetTokens, &rec.token_digest)?;
    tx.remove(TreeId::ResetExpiry, &rec.expiry_key())?;
    tx.remove(TreeId::ResetsByCustomer, &rec.customer_key())
}

/// Revokes the reset `id` inside a transaction, if it still exists
/// (a bounced mail's: nobody received its token).
pub(super) fn revoke_in(tx: &Tx<'_>, id: &str) -> Result<(), TxError> {
    if let Some(rec) = tx.get_record::<ResetRecord>(TreeId::Resets, id.as_bytes())? {
        delete_reset(tx, &rec)?;
        unlist(tx, &rec)?;
    }
    Ok(())
}

/// Takes a reset off its customer's list of outstanding resets.
fn unlist(tx: &Tx<'_>, rec: &ResetRecord) -> Result<(), TxError> {
    let key = rec.box_id.to_be_bytes();
    if let Some(mut cust) = tx.get_record::<CustomerRecord>(TreeId::Customers, &key)?
        && cust.resets.contains(&rec.id)
    {
        cust.resets.retain(|r| *r != rec.id);
        tx.put_record(TreeId::Customers, &key, &cust)?;
    }
    Ok(())
}

fn to_public(rec: &ResetRecord) -> Result<Reset, Error> {
    let metadata = match &rec.metadata {
        Some(text) => Some(
            serde_json::from_str(text).map_err(|_| Error::CorruptRecord {
                tree: TreeId::Resets.name(),
                key: printable_key(rec.id.as_bytes()),
            })?,
        ),
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
