use super::InputError;

/// A syntactically valid email address: kept as given (trimmed), compared by its
/// normalized form (trimmed, lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    given: String,
    normalized: String,
}

impl Email {
    /// Longest address accepted, in bytes (RFC 5321's path limit).
    pub const MAX_BYTES: usize = 254;

    /// Validates an address: one `@`, a non-empty local part, a domain with a
    /// dot, no whitespace, control characters or NUL, at most 254 bytes.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let given = text.trim();
        if given.is_empty() {
            return Err(InputError::EmptyEmail);
        }
        if given.len() > Self::MAX_BYTES {
            return Err(InputError::EmailTooLong {
                max_bytes: Self::MAX_BYTES,
            });
        }
        if given.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(InputError::MalformedEmail);
        }
        let (local, domain) = given.split_once('@').ok_or(InputError::MalformedEmail)?;
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err(InputError::MalformedEmail);
        }
        Ok(Self {
            given: given.to_owned(),
            normalized: given.to_lowercase(),
        })
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.given
    }

    /// The comparison form: trimmed and lower-cased.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// Whether two addresses are the same account address.
    pub fn same_as(&self, other: &str) -> bool {
        other.trim().to_lowercase() == self.normalized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let e = Email::parse("  JohnDoe@Email.com ").unwrap();
        assert_eq!(e.as_str(), "JohnDoe@Email.com");
        assert_eq!(e.normalized(), "johndoe@email.com");
        assert!(e.same_as("johndoe@EMAIL.com"));
    }

    #[test]
    fn refuses_bad_addresses() {
        assert_eq!(Email::parse("   "), Err(InputError::EmptyEmail));
        for bad in [
            "a", "a@", "@b.c", "a@b", "a b@c.d", "a@b..c", "a\0@b.c", "a@@b.c", "a@.b",
        ] {
            assert_eq!(Email::parse(bad), Err(InputError::MalformedEmail), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(matches!(
            Email::parse(&long),
            Err(InputError::EmailTooLong { .. })
        ));
    }
}
