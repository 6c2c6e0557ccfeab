//! Crypto: the password hashing policy, keyed BLAKE3 (sub-keys, sealing,
//! digests), randomness, and the password policy.
//!
//! Randomness comes only from [`random`]; sub-keys only from [`Keys`].

pub(crate) mod digest;
pub(crate) mod password;
pub(crate) mod policy;
pub(crate) mod random;
pub(crate) mod seal;
pub(crate) mod slots;

#[cfg(test)]
pub(crate) use password::observe_hashes;
#[cfg(feature = "tokio")]
pub(crate) use slots::admit as admit_hashing;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::model::{Email, ResetToken, StoreSecret};

pub use digest::change_password_digest;
pub use password::{Argon2Params, PasswordHashInfo, PasswordScheme};
pub use policy::PasswordPolicy;

/// Every sub-key the store uses, derived from the store secret with distinct
/// `blake3::derive_key` contexts. The store secret itself is not kept.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Keys {
    pub fingerprint: [u8; 32],
    pub pepper: [u8; 32],
    pub customer_seal: [u8; 32],
    pub app_seal: [u8; 32],
    pub token_digest: [u8; 32],
    /// Keys the lock-out state of emails no customer has (login guards).
    pub login_guard: [u8; 32],
    /// Seals the tokens of queued reset mails.
    pub mail_seal: [u8; 32],
}

impl Keys {
    pub fn derive(secret: &StoreSecret) -> Self {
        let s = secret.expose_secret();
        Self {
            fingerprint: blake3::derive_key("credstore 2026-11 store secret fingerprint v1", s),
            pepper: blake3::derive_key("credstore 2026-11 argon2 pepper v1", s),
            customer_seal: blake3::derive_key("credstore 2026-11 customer key seal v1", s),
            app_seal: blake3::derive_key("credstore 2026-11 app key seal v1", s),
            token_digest: blake3::derive_key("credstore 2026-11 reset token digest v1", s),
            login_guard: blake3::derive_key("credstore 2026-11 login guard v1", s),
            mail_seal: blake3::derive_key("credstore 2026-12 reset mail token seal v1", s),
        }
    }
}

impl Keys {
    /// The keyed digest a reset token is stored and found under (the
    /// token itself is never stored).
    pub fn token_digest(&self, token: &ResetToken) -> [u8; 32] {
        *blake3::keyed_hash(&self.token_digest, token.as_bytes()).as_bytes()
    }

    /// The key of an unknown email's login guard: a keyed digest of its
    /// normalised form (the email itself is not stored).
    pub fn login_guard_key(&self, email: &Email) -> [u8; 32] {
        *blake3::keyed_hash(&self.login_guard, email.normalized().as_bytes()).as_bytes()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

/// Constant-time byte comparison (lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_differ_and_depend_on_the_secret() {
        let a = Keys::derive(&StoreSecret::from_bytes([1; 32]));
        let b = Keys::derive(&StoreSecret::from_bytes([2; 32]));
        assert_ne!(a.fingerprint, b.fingerprint);
        let all = [
            a.fingerprint,
            a.pepper,
            a.customer_seal,
            a.app_seal,
            a.token_digest,
            a.login_guard,
            a.mail_seal,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
        assert_eq!(format!("{a:?}"), "Keys { .. }");
    }
}
