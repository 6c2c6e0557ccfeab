//! What the trees hold. Changing a field here changes the on-disk format:
//! bump [`super::encoding::VALUE_VERSION`] and keep a decoder for the old one.

use serde::{Deserialize, Serialize};

use crate::crypto::password::HashScheme;
use crate::model::{App, BoxId, Customer, CustomerFlags, Timestamp, UserCode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CustomerRecord {
    pub box_id: BoxId,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub flags: CustomerFlags,
    pub enrolment_date: Timestamp,
    pub activation_date: Option<Timestamp>,
    pub scheme: HashScheme,
    pub password_hash: String,
    pub sealed_key: Vec<u8>,
    pub key_epoch: u32,
    pub credential_version: u64,
    pub failed_logins: u32,
    pub locked_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ids of this customer's outstanding resets, so that a rotation can remove
    /// them inside its transaction (sled transactions cannot scan).
    pub resets: Vec<String>,
}

impl CustomerRecord {
    pub fn to_public(&self) -> Customer {
        Customer {
            box_id: self.box_id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            flags: self.flags,
            enrolment_date: self.enrolment_date,
            activation_date: self.activation_date,
            credential_version: self.credential_version,
            failed_logins: self.failed_logins,
            locked_until: self.locked_until,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    pub user_code: UserCode,
    pub shop_key: Option<String>,
    pub name: String,
    pub sealed_key: Vec<u8>,
    pub key_epoch: u32,
    pub enabled: bool,
    pub created_at: Timestamp,
}

impl AppRecord {
    pub fn to_public(&self) -> App {
        App {
            user_code: self.user_code,
            shop_key: self.shop_key.clone(),
            name: self.name.clone(),
            enabled: self.enabled,
            created_at: self.created_at,
        }
    }
}

/// The lock-out state of an email that no customer has (tree
/// `login_guards`, keyed by a keyed digest of the normalised email: the
/// email itself is not stored). Logins for unknown emails count and lock
/// exactly as a customer's do, so the lock-out tells nobody which emails
/// exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GuardRecord {
    pub failed_logins: u32,
    pub locked_until: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// A token index entry (`reset_tokens`: keyed token digest -> this): all a
/// token check needs, so that it reads one key. It exists only while its
/// reset is unused and its customer's credentials have not moved: consuming
/// a reset removes it, and a credential change deletes the customer's
/// outstanding resets with their index entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenEntry {
    pub id: String,
    pub box_id: BoxId,
    /// The customer's email at issue (an email change deletes the entry).
    pub email: String,
    pub expires_at: Timestamp,
}

/// [`TokenEntry`] read in place: the same encoding, strings borrowed (the
/// token check allocates only the email it returns).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenEntryRef<'a> {
    /// Read past, not used (the field order must match [`TokenEntry`]'s).
    pub _id: &'a str,
    pub box_id: BoxId,
    pub email: &'a str,
    pub expires_at: Timestamp,
}

impl<'a> TokenEntryRef<'a> {
    /// Reads an entry of `reset_tokens` (at `key`) in place.
    pub fn decode(key: &[u8], bytes: &'a [u8]) -> Result<Self, crate::error::Error> {
        super::encoding::decode_borrowed(super::schema::TreeId::ResetTokens, key, bytes)
    }
}

impl TokenEntry {
    pub fn of(rec: &ResetRecord) -> Self {
        Self {
            id: rec.id.clone(),
            box_id: rec.box_id,
            email: rec.email.clone(),
            expires_at: rec.expires_at,
        }
    }
}

/// A password reset (tree `resets`, keyed by id). Indexed by
/// `reset_tokens` (digest -> [`TokenEntry`]), `reset_expiry`
/// ([`super::schema::ExpiryKey`]) and `resets_by_customer`
/// ([`super::schema::CustomerResetKey`]). While unused it is listed in its
/// customer's `resets`; once used it is kept (so that it can still be read
/// by id) until a purge, and listed nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResetRecord {
    pub id: String,
    pub box_id: BoxId,
    /// The customer's email at issue.
    pub email: String,
    /// Keyed BLAKE3 of the token (never the token).
    pub token_digest: [u8; 32],
    /// The customer's credential version at issue; the token dies when it moves.
    pub credential_version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    pub reference: Option<String>,
    pub reference_origin: Option<String>,
    /// A JSON object as compact JSON text (bincode cannot carry
    /// `serde_json::Value`), at most 4 KiB.
    pub metadata: Option<String>,
}

impl ResetRecord {
    /// When the token stopped (or will stop) being usable: the expiry, or the
    /// time of use if earlier. The expiry index sorts by it.
    pub fn dead_at(&self) -> Timestamp {
        match self.used_at {
            Some(u) if u < self.expires_at => u,
            _ => self.expires_at,
        }
    }
}

/// A queued reset mail (tree `mail_queue`, keyed by its reset's id),
/// written in the transaction that issues the reset and deleted once the
/// mail is delivered, or with its reset (a credential change, a purge, a
/// revocation, the token's use). The token is sealed: XOR with a keystream
/// of the mail seal sub-key over `nonce`, a fresh random value per entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MailRecord {
    pub reset_id: String,
    pub box_id: BoxId,
    /// The account's stored email when the reset was issued.
    pub to: String,
    pub nonce: [u8; 16],
    pub sealed_token: Vec<u8>,
    /// Locale tag (`"es"`, `"en"`).
    pub lang: String,
    pub shop: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::encoding;
    use crate::store::schema::TreeId;

    #[test]
    fn a_token_entry_reads_back_in_place() {
        let e = TokenEntry {
            id: "abcdefghijklmnopqrstuvwx".into(),
            box_id: 811_111,
            email: "johndoe@email.com".into(),
            expires_at: Timestamp(1_700_000_000_123),
        };
        let bytes = encoding::encode(&e);
        let r: TokenEntryRef<'_> =
            encoding::decode_borrowed(TreeId::ResetTokens, b"k", &bytes).unwrap();
        assert_eq!(
            (r._id, r.box_id, r.email),
            (e.id.as_str(), e.box_id, e.email.as_str())
        );
        assert_eq!(r.expires_at, e.expires_at);
        // Trailing or missing bytes are corrupt records, as for `decode`.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            encoding::decode_borrowed::<TokenEntryRef<'_>>(TreeId::ResetTokens, b"k", &longer)
                .is_err()
        );
        assert!(
            encoding::decode_borrowed::<TokenEntryRef<'_>>(
                TreeId::ResetTokens,
                b"k",
                &bytes[..bytes.len() - 1]
            )
            .is_err()
        );
    }
}
