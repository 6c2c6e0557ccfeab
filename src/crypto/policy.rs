//! The password policy, applied whenever a password is set.

use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::error::PolicyViolation;
use crate::model::Password;

/// Length limits in Unicode scalar values, counted after NFKC normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (default 8).
    pub min_chars: usize,
    /// Most characters (default 255).
    pub max_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 8,
            max_chars: 255,
        }
    }
}

impl PasswordPolicy {
    /// Checks a new password; returns its NFKC form, which is what gets hashed.
    pub(crate) fn check(&self, password: &Password) -> Result<Zeroizing<String>, PolicyViolation> {
        let normalized = normalize(password);
        if normalized.chars().any(char::is_control) {
            return Err(PolicyViolation::ControlCharacter);
        }
        let n = normalized.chars().count();
        if n < self.min_chars {
            return Err(PolicyViolation::TooShort {
                min: self.min_chars,
            });
        }
        if n > self.max_chars {
            return Err(PolicyViolation::TooLong {
                max: self.max_chars,
            });
        }
        Ok(normalized)
    }
}

/// The NFKC form of a password: what the current scheme hashes and verifies.
pub(crate) fn normalize(password: &Password) -> Zeroizing<String> {
    Zeroizing::new(password.expose_secret().nfkc().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s).unwrap()
    }

    #[test]
    fn limits_count_characters_after_nfkc() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check(&pw("")), Err(PolicyViolation::TooShort { min: 8 }));
        assert_eq!(
            p.check(&pw("1234567")),
            Err(PolicyViolation::TooShort { min: 8 })
        );
        assert!(p.check(&pw("12345678")).is_ok());
        // eight two-byte characters are eight characters
        assert!(p.check(&pw("éééééééé")).is_ok());
        assert!(p.check(&pw(&"é".repeat(255))).is_ok());
        assert_eq!(
            p.check(&pw(&"a".repeat(256))),
            Err(PolicyViolation::TooLong { max: 255 })
        );
        assert_eq!(
            p.check(&pw("abc\0defgh")),
            Err(PolicyViolation::ControlCharacter)
        );
    }

    #[test]
    fn nfkc_is_what_is_hashed() {
        // U+FB01 (ﬁ ligature) normalises to "fi"; a fullwidth A to "A".
        let p = PasswordPolicy::default();
        assert_eq!(
            p.check(&pw("\u{FB01}xxxxxxx")).unwrap().as_str(),
            "fixxxxxxx"
        );
        assert_eq!(normalize(&pw("\u{FF21}")).as_str(), "A");
        // decomposed e + combining acute == precomposed é after NFKC
        assert_eq!(normalize(&pw("e\u{301}")).as_str(), "\u{e9}");
    }
}
