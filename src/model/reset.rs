//! Password resets: the emailed token (a secret), reset ids, and the reset
//! resource as callers see it.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::InputError;
use super::{BoxId, Timestamp};

/// Most resets a customer has outstanding; a new request drops the oldest.
pub const MAX_OUTSTANDING_RESETS: usize = 3;

/// A second request for the same customer within this window issues nothing.
pub const RESET_THROTTLE: Duration = Duration::from_secs(60);

/// Longest `reference` / `reference_origin`, in bytes.
pub const MAX_REFERENCE_BYTES: usize = 255;

/// Longest `metadata`, in bytes of its compact JSON text.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A reset token as emailed: exactly 64 characters of `[A-Za-z0-9]` (about
/// 381 bits). The store keeps only a keyed digest of it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ResetToken([u8; ResetToken::LEN]);

impl fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetToken([redacted])")
    }
}

impl ResetToken {
    /// Length of every token, in characters (and bytes).
    pub const LEN: usize = 64;

    /// The token text, to put in the reset mail (and nowhere else).
    pub fn expose_secret(&self) -> &str {
        // Every constructor guarantees ASCII alphanumerics.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0[..].ct_eq(&other.0[..]).into()
    }

    /// A token of these characters, which must be ASCII alphanumerics (the
    /// generator's output: [`ResetToken::generate`] is in `crypto::random`).
    pub(crate) fn from_alnum(chars: [u8; Self::LEN]) -> Self {
        debug_assert!(chars.iter().all(u8::is_ascii_alphanumeric));
        Self(chars)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

/// Parses a reset token: exactly 64 bytes, each ASCII `[A-Za-z0-9]`; anything
/// else (any length, `-`, `_`, space, non-ASCII, NUL) is
/// [`InputError::MalformedToken`]. Total on arbitrary bytes.
pub fn parse_token(bytes: &[u8]) -> Result<ResetToken, InputError> {
    if bytes.len() != ResetToken::LEN {
        return Err(InputError::MalformedToken);
    }
    // No early exit: the time taken does not depend on where a bad byte is.
    let ok = bytes
        .iter()
        .fold(true, |ok, b| ok & b.is_ascii_alphanumeric());
    if !ok {
        return Err(InputError::MalformedToken);
    }
    let mut out = [0u8; ResetToken::LEN];
    out.copy_from_slice(bytes);
    Ok(ResetToken(out))
}

/// Length of every reset id, such as `xYZkjABcde`.
pub const RESET_ID_LEN: usize = 10;

/// Parses a reset id: exactly 10 ASCII `[A-Za-z0-9]`, else
/// [`InputError::MalformedResetId`].
pub fn parse_reset_id(bytes: &[u8]) -> Result<String, InputError> {
    if bytes.len() != RESET_ID_LEN || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return Err(InputError::MalformedResetId);
    }
    // ASCII checked above.
    String::from_utf8(bytes.to_vec()).map_err(|_| InputError::MalformedResetId)
}

/// A password reset as the store hands it out. The token is never part of it:
/// it is shown once, in [`IssuedReset`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reset {
    /// The reset's id: 10 characters of `[A-Za-z0-9]`.
    pub id: String,
    /// The customer.
    pub box_id: BoxId,
    /// The customer's email when the reset was issued.
    pub email: String,
    /// When it was issued.
    pub created_at: Timestamp,
    /// Last change (issue, use, or an update of the reference data).
    pub updated_at: Timestamp,
    /// The token is valid strictly before this time.
    pub expires_at: Timestamp,
    /// When the token was used to set a new password, if it was.
    pub used_at: Option<Timestamp>,
    /// Caller's reference (up to 255 bytes).
    pub reference: Option<String>,
    /// Caller's reference origin (up to 255 bytes).
    pub reference_origin: Option<String>,
    /// Caller's metadata: a JSON object of up to 4 KiB.
    pub metadata: Option<Map<String, Value>>,
}

/// What a valid token says ([`crate::Store::check_reset_token`]): whose
/// it is, and the email it was sent to (the account's email: an email change
/// kills the account's tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The customer the token was issued to.
    pub box_id: crate::model::BoxId,
    /// The email the reset was sent to.
    pub email: String,
}

/// A reset just issued, with its token: the only time the token is readable.
#[derive(Debug)]
pub struct IssuedReset {
    /// The reset.
    pub reset: Reset,
    /// The token to email to the customer.
    pub token: ResetToken,
}

/// The caller's data attached to a new reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetDetails {
    /// Reference (up to 255 bytes, no control characters).
    pub reference: Option<String>,
    /// Reference origin (up to 255 bytes, no control characters).
    pub reference_origin: Option<String>,
    /// A JSON object of up to 4 KiB.
    pub metadata: Option<Map<String, Value>>,
}

/// A change to a reset's reference data: `None` leaves a field as it is,
/// `Some(None)` clears it, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetUpdate {
    /// New reference.
    pub reference: Option<Option<String>>,
    /// New reference origin.
    pub reference_origin: Option<Option<String>>,
    /// New metadata.
    pub metadata: Option<Option<Map<String, Value>>>,
}

/// Checks a reference field: at most 255 bytes, no control characters.
pub(crate) fn check_reference(field: &'static str, text: &str) -> Result<(), InputError> {
    if text.len() > MAX_REFERENCE_BYTES || text.chars().any(char::is_control) {
        return Err(InputError::MalformedText { field });
    }
    Ok(())
}

/// Metadata as stored: its compact JSON text, at most 4 KiB.
pub(crate) fn metadata_text(map: &Map<String, Value>) -> Result<String, InputError> {
    let text =
        serde_json::to_string(map).map_err(|_| InputError::MalformedText { field: "metadata" })?;
    if text.len() > MAX_METADATA_BYTES {
        return Err(InputError::MalformedText { field: "metadata" });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted_and_parse_is_strict() {
        let t = ResetToken::generate().unwrap();
        let dbg = format!("{t:?} {t:#?}");
        assert!(!dbg.contains(t.expose_secret()));
        assert!(dbg.contains("[redacted]"));
        let back = parse_token(t.expose_secret().as_bytes()).unwrap();
        assert!(back.ct_eq(&t));
        assert!(!back.ct_eq(&ResetToken::generate().unwrap()));
        assert_eq!(
            parse_token(&[b'a'; 63]).unwrap_err(),
            InputError::MalformedToken
        );
    }

    #[test]
    fn reset_ids() {
        assert_eq!(parse_reset_id(b"xYZkjABcde").unwrap(), "xYZkjABcde");
        for bad in [
            &b"xYZkjABcd"[..],
            b"xYZkjABcdef",
            b"xYZkjABcd-",
            b"",
            b"xYZkj\0Bcde",
        ] {
            assert_eq!(parse_reset_id(bad), Err(InputError::MalformedResetId));
        }
    }

    #[test]
    fn metadata_limit() {
        let mut m = Map::new();
        m.insert("k".into(), Value::String("x".repeat(4000)));
        assert!(metadata_text(&m).is_ok());
        m.insert("k".into(), Value::String("x".repeat(4096)));
        assert_eq!(
            metadata_text(&m),
            Err(InputError::MalformedText { field: "metadata" })
        );
        assert!(check_reference("reference", &"r".repeat(255)).is_ok());
        assert!(check_reference("reference", &"r".repeat(256)).is_err());
        assert!(check_reference("reference", "a\nb").is_err());
    }
}
