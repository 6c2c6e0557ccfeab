//! Malformed input: the model refuses it where a value is built, so the
//! type lives with the model; `crate::error` re-exports it beside the
//! other refusals.

/// Malformed input, refused before anything is read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The email is empty.
    #[error("email is empty")]
    EmptyEmail,
    /// The email is longer than allowed.
    #[error("email is longer than {max_bytes} bytes")]
    EmailTooLong {
        /// Limit in bytes.
        max_bytes: usize,
    },
    /// The email is not an address.
    #[error("email is not a valid address")]
    MalformedEmail,
    /// The password is longer than any password the store accepts.
    #[error("password is longer than {max_bytes} bytes")]
    PasswordTooLong {
        /// Limit in bytes.
        max_bytes: usize,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A text field is too long or contains control characters.
    #[error("{field} is too long or contains control characters")]
    MalformedText {
        /// The field.
        field: &'static str,
    },
    /// A key is empty, too long, or has characters keys cannot have.
    #[error("{field} is malformed")]
    MalformedKey {
        /// The field.
        field: &'static str,
    },
    /// A dump file (`credstore dump`) is malformed or truncated.
    #[error("line {line} of the dump: {reason}; nothing was restored")]
    MalformedDump {
        /// The line (from 1).
        line: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `restore` loads into an empty store only.
    #[error("the store already holds records: restore into an empty store; nothing was restored")]
    RestoreNeedsEmptyStore,
    /// The store secret is not 64 hex characters.
    #[error("store secret must be 64 hexadecimal characters")]
    MalformedSecret,
    /// A password hash for import is not a PHC argon2 or bcrypt string.
    #[error("password hash is not an argon2 PHC or bcrypt string: {0}")]
    MalformedHash(&'static str),
    /// A legacy hash asks for more work or memory than allowed.
    #[error("password hash parameters out of bounds: {0}")]
    HashParamsOutOfBounds(&'static str),
    /// Argon2 parameters in the configuration are invalid.
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(&'static str),
    /// A reset token is not 64 characters of `[A-Za-z0-9]`.
    #[error("token must be 64 characters of [A-Za-z0-9]")]
    MalformedToken,
    /// A reset id is not 10 characters of `[A-Za-z0-9]`.
    #[error("reset id must be 10 characters of [A-Za-z0-9]")]
    MalformedResetId,
    /// A box_id outside 1 to [`crate::MAX_BOX_ID`] (2^53 − 1, so that every
    /// JSON client reads it exactly).
    #[error("box_id must be between 1 and {max}")]
    BoxIdOutOfRange {
        /// The largest box_id accepted.
        max: u64,
    },
    /// A signed request's salt has fewer than 9 digits (or is negative).
    #[error("salt must be a number of at least 9 digits")]
    ShortSalt,
}
