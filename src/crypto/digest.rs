//! The digest of the signed ChangePassword request (SPEC §6.4).
//!
//! Key: `blake3::derive_key("credstore ChangePassword digest v1", app_key)`.
//! Message: `"POST\n/api/Customers/ChangePassword\n"` followed by the user
//! name, salt, User.UserName, User.Email, User.Key and the new password, each
//! separated by `\n`, all UTF-8. Output: 64 lowercase hex characters.

use zeroize::Zeroize;

use crate::model::AppKey;

const CONTEXT: &str = "credstore ChangePassword digest v1";
const PREFIX: &[u8] = b"POST\n/api/Customers/ChangePassword\n";

/// Computes the digest a client sends in `Digest` of the ASP.NET
/// ChangePassword request (SPEC §6.4): 64 lowercase hex characters.
///
/// `user_name` is the partner app's user_code in decimal, `salt` the request's
/// salt (written in decimal without leading zeros), `user_user_name`,
/// `user_email` and `user_key` the `User` members, `new_password` the
/// `UserNewPassword`, all exactly as sent.
pub fn change_password_digest(
    app_key: &AppKey,
    user_name: &str,
    salt: i64,
    user_user_name: &str,
    user_email: &str,
    user_key: &str,
    new_password: &str,
) -> String {
    let mut key = blake3::derive_key(CONTEXT, app_key.expose_secret().as_bytes());
    let mut h = blake3::Hasher::new_keyed(&key);
    key.zeroize();
    h.update(PREFIX);
    h.update(user_name.as_bytes());
    h.update(b"\n");
    h.update(salt.to_string().as_bytes());
    for part in [user_user_name, user_email, user_key, new_password] {
        h.update(b"\n");
        h.update(part.as_bytes());
    }
    let out = h.finalize();
    crate::model::secret::hex_lower(out.as_bytes())
}

/// Whether `given` is the digest of the request, compared in constant time.
pub(crate) fn digest_matches(expected: &str, given: &str) -> bool {
    super::ct_eq(expected.as_bytes(), given.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AppKey {
        AppKey::new("1656d700707ad9a77f737e5df3db088a").unwrap()
    }

    #[test]
    fn matches_the_spec_construction() {
        let d = change_password_digest(
            &key(),
            "396",
            1234567890,
            "johndoe@email.com",
            "johndoe@email.com",
            "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=",
            "new-pass-6789",
        );
        let k = blake3::derive_key(CONTEXT, b"1656d700707ad9a77f737e5df3db088a");
        let msg = "POST\n/api/Customers/ChangePassword\n396\n1234567890\njohndoe@email.com\n\
                   johndoe@email.com\nYpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=\nnew-pass-6789";
        assert_eq!(d, blake3::keyed_hash(&k, msg.as_bytes()).to_hex().as_str());
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn every_part_matters() {
        let base = |salt, pw: &str| {
            change_password_digest(&key(), "396", salt, "a@b.co", "a@b.co", "k", pw)
        };
        assert_ne!(base(123456789, "x"), base(123456780, "x"));
        assert_ne!(base(123456789, "x"), base(123456789, "y"));
        let other = AppKey::new("ffffd700707ad9a77f737e5df3db088a").unwrap();
        assert_ne!(
            base(123456789, "x"),
            change_password_digest(&other, "396", 123456789, "a@b.co", "a@b.co", "k", "x")
        );
        assert!(digest_matches(&base(123456789, "x"), &base(123456789, "x")));
        assert!(!digest_matches(&base(123456789, "x"), "00"));
    }
}
