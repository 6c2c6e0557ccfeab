//! Login by (email, password), with lock-out, dummy verification for unknown
//! emails, and rehash of legacy or outdated hashes.

use super::Store;
use super::customers::load;
use crate::crypto::password::HashScheme;
use crate::error::{Credential, Error};
use crate::model::{Email, EventKind, EventOutcome, Login, Password};
use crate::store::TreeId;

impl Store {
    /// Logs a customer in. The password is checked against the stored hash
    /// whatever the current policy says (the policy applies when a password is
    /// set). Unknown emails cost the same argon2 work as known ones.
    ///
    /// Errors: [`Error::InvalidCredentials`] (`Credential::Password`, the same
    /// for an unknown email and a wrong password), [`Error::Locked`] while the
    /// account is locked (the password is not checked then), and
    /// [`Error::MustChangePassword`] when the password was right but must be
    /// changed first.
    pub fn login(&self, email: &str, password: &Password) -> Result<Login, Error> {
        let email = Email::parse(email)?;
        let Some(rec) = self.record_by_email(&email)? else {
            self.hasher().dummy_verify(password);
            return Err(Error::InvalidCredentials(Credential::Password));
        };
        let now = self.now();
        if let Some(until) = rec.locked_until
            && until > now
        {
            return Err(Error::Locked { until });
        }
        let v = self
            .hasher()
            .verify(rec.scheme, &rec.password_hash, password)?;
        let box_id = rec.box_id;
        let lockout = self.config().lockout;

        if !v.matched {
            self.engine().transact(|tx| {
                let mut r = load(tx, box_id)?;
                // An expired lock starts a fresh count.
                if r.locked_until.is_some_and(|u| u <= now) {
                    r.locked_until = None;
                    r.failed_logins = 0;
                }
                r.failed_logins = r.failed_logins.saturating_add(1);
                let locks = r.failed_logins >= lockout.max_failures;
                if locks {
                    r.locked_until = Some(now.plus(lockout.lock_for));
                    r.failed_logins = 0;
                }
                r.updated_at = now;
                tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &r)?;
                let kind = if locks {
                    EventKind::AccountLocked
                } else {
                    EventKind::LoginFailed
                };
                tx.append_event(now, kind, EventOutcome::Refused, Some(box_id), None)?;
                Ok(())
            })?;
            return Err(Error::InvalidCredentials(Credential::Password));
        }

        let new_hash = if v.needs_rehash {
            // The current scheme hashes the NFKC form; legacy hashes were
            // verified on the raw bytes. The policy does not apply here.
            let normalized = crate::crypto::policy::normalize(password);
            Some(self.hasher().hash_normalized(&normalized)?)
        } else {
            None
        };
        let needs_write = new_hash.is_some() || rec.failed_logins > 0 || rec.locked_until.is_some();
        let rec = if needs_write {
            let expected = rec.credential_version;
            self.engine().transact(|tx| {
                let mut r = load(tx, box_id)?;
                if r.credential_version != expected {
                    // The password changed while we verified the old one.
                    return Err(Error::Conflict.into());
                }
                r.failed_logins = 0;
                r.locked_until = None;
                r.updated_at = now;
                if let Some(h) = &new_hash {
                    r.scheme = HashScheme::Argon2idPeppered;
                    r.password_hash = h.clone();
                }
                tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &r)?;
                let kind = if new_hash.is_some() {
                    EventKind::PasswordRehashed
                } else {
                    EventKind::LoginSucceeded
                };
                tx.append_event(now, kind, EventOutcome::Granted, Some(box_id), None)?;
                Ok(r)
            })?
        } else {
            rec
        };
        if rec.flags.must_change_password {
            return Err(Error::MustChangePassword);
        }
        let key = self.unseal_customer_key(&rec)?;
        Ok(Login {
            customer: rec.to_public(),
            key,
        })
    }
}
