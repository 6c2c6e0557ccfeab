//! The signed change-password request of the ASP.NET format (SPEC §6.4): a
//! partner app signs (user, salt, new password) with a digest keyed by its app
//! key; the salt is a nonce, used once per app, ever: the used salts are kept
//! (never purged), so that a captured request can never set a password back.

use std::fmt;

use zeroize::Zeroizing;

use super::{Store, steps};
use crate::crypto::digest::{change_password_digest, digest_matches};
use crate::error::{Credential, Error, InputError, PolicyViolation};
use crate::model::{Customer, CustomerKey, Email, EventKind, Password, UserCode};
use crate::store::schema::NONCES;

/// The smallest salt accepted: 9 digits.
pub const MIN_SALT: i64 = 100_000_000;

/// A signed change-password request, as the ASP.NET format carries it. Every
/// text is exactly as sent: the digest covers these bytes.
pub struct SignedPasswordChange {
    /// `UserName`: the partner app's user_code in decimal.
    pub user_name: String,
    /// `Salt`: at least 9 digits, used once per app, ever.
    pub salt: i64,
    /// `Digest`: 64 lowercase hex characters (see [`crate::change_password_digest`]).
    pub digest: String,
    /// `User.UserName`: the customer's email.
    pub user_user_name: String,
    /// `User.Email`: the customer's email.
    pub user_email: String,
    /// `User.Key`: the customer's key.
    pub user_key: Zeroizing<String>,
    /// `UserNewPassword`.
    pub new_password: Zeroizing<String>,
}

impl fmt::Debug for SignedPasswordChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPasswordChange")
            .field("user_name", &self.user_name)
            .field("salt", &self.salt)
            .field("digest", &self.digest)
            .field("user_user_name", &self.user_user_name)
            .field("user_email", &self.user_email)
            .field("user_key", &"[redacted]")
            .field("new_password", &"[redacted]")
            .finish()
    }
}

/// A decimal user_code: ASCII digits only, fitting a u32.
fn parse_user_code(text: &str) -> Option<UserCode> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Store {
    /// Changes a customer's password on a partner app's signed request.
    ///
    /// Checks, in this order: the app (`UserName`, enabled; else
    /// [`Error::InvalidCredentials`] with [`Credential::App`]), the salt (at
    /// least 9 digits; else [`InputError::ShortSalt`]), the digest (constant
    /// time; else [`Error::InvalidDigest`]), the salt's freshness
    /// ([`Error::ReplayedSalt`]), the customer (`User.Email` and
    /// `User.UserName` both the account's email, `User.Key` its key; else
    /// [`Credential::Email`] / [`Credential::CustomerKey`]), the account
    /// ([`Error::Disabled`]) and the password policy. The password is hashed before the transaction; the transaction
    /// records the salt and performs the rotation together, so a replay
    /// racing the original gets [`Error::ReplayedSalt`] or
    /// [`Error::Conflict`], never a second change.
    pub fn change_password_signed(&self, req: &SignedPasswordChange) -> Result<Customer, Error> {
        let refused_app = Error::InvalidCredentials(Credential::App);
        let user_code = parse_user_code(&req.user_name).ok_or(refused_app)?;
        // One read of the app: its enabled flag and its sealed key.
        let app = self.app_for_credentials(user_code)?;
        if !app.enabled {
            return Err(Error::InvalidCredentials(Credential::App));
        }
        let app_key = self.unseal_app_key(&app)?;

        if req.salt < MIN_SALT {
            return Err(InputError::ShortSalt.into());
        }

        let expected = change_password_digest(
            &app_key,
            &req.user_name,
            req.salt,
            &req.user_user_name,
            &req.user_email,
            &req.user_key,
            &req.new_password,
        );
        if !digest_matches(&expected, &req.digest) {
            return Err(Error::InvalidDigest);
        }

        let nonce = (user_code, req.salt);
        // Cheap early refusal; the transaction checks again.
        if self.engine().contains(&NONCES, nonce)? {
            return Err(Error::ReplayedSalt);
        }

        let wrong_key = Error::InvalidCredentials(Credential::CustomerKey);
        let email = Email::parse(&req.user_email)
            .map_err(|_| Error::InvalidCredentials(Credential::Email))?;
        let rec = self.record_by_email(&email)?.ok_or(wrong_key)?;
        if !email.same_as(&rec.email)
            || !Email::parse(&req.user_user_name).is_ok_and(|e| e.same_as(&rec.email))
        {
            return Err(Error::InvalidCredentials(Credential::Email));
        }
        let presented = CustomerKey::new(req.user_key.as_str())
            .map_err(|_| Error::InvalidCredentials(Credential::CustomerKey))?;
        if !self.unseal_customer_key(&rec)?.ct_eq(&presented) {
            return Err(Error::InvalidCredentials(Credential::CustomerKey));
        }
        // Disabling moves the credential version: the rotation's version
        // check refuses a change that races it.
        if !rec.flags.is_enable {
            return Err(Error::Disabled);
        }

        let max = self.config().policy.max_chars;
        let password = Password::new(req.new_password.as_str())
            .map_err(|_| Error::Policy(PolicyViolation::TooLong { max }))?;
        let (hash, _commit) = self.hash_new_password(&password)?;

        let (box_id, version) = (rec.box_id, rec.credential_version);
        let now = self.now();
        // The salt is recorded in the rotation's transaction: a replay racing
        // the original finds it, or finds the credentials moved.
        let rec = self.engine().transact(|tx| {
            if tx.contains(&NONCES, nonce)? {
                return Err(Error::ReplayedSalt.into());
            }
            tx.put(&NONCES, nonce, &now)?;
            let kind = EventKind::PasswordChanged;
            steps::rotation(tx, box_id, version, &hash, kind, Some(user_code), now)
        })?;
        Ok(rec.to_public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_plain_decimals() {
        assert_eq!(parse_user_code("396"), Some(396));
        assert_eq!(parse_user_code("0396"), Some(396));
        for bad in ["", "+396", "-1", "39 6", "4294967296", "٣٩٦"] {
            assert_eq!(parse_user_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let r = SignedPasswordChange {
            user_name: "396".into(),
            salt: 123456789,
            digest: "00".into(),
            user_user_name: "a@b.co".into(),
            user_email: "a@b.co".into(),
            user_key: Zeroizing::new("YpbCNpzq".into()),
            new_password: Zeroizing::new("hunter2hunter2".into()),
        };
        let d = format!("{r:?}");
        assert!(!d.contains("YpbCNpzq") && !d.contains("hunter2"), "{d}");
    }
}
