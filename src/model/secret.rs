//! Secret-bearing types.
//!
//! Every type here zeroizes on drop, prints `[redacted]` in `Debug`, has no
//! `Display` and no `Serialize`, and is read through one explicit accessor
//! (`expose_secret`), so that a leak is always visible at the call site.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::InputError;

macro_rules! redacted_debug {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), "([redacted])"))
            }
        }
    };
}

/// The host's 32-byte store secret. Everything secret at rest is keyed from it;
/// keep it outside the database directory.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StoreSecret([u8; 32]);
redacted_debug!(StoreSecret);

impl StoreSecret {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hexadecimal characters (surrounding whitespace ignored), the
    /// form the CLI writes to its secret file.
    pub fn from_hex(text: &str) -> Result<Self, InputError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(InputError::MalformedSecret);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(chunk[0]).ok_or(InputError::MalformedSecret)?;
            let lo = hex_val(chunk[1]).ok_or(InputError::MalformedSecret)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// The secret bytes. Only the key schedule and the CLI's secret file need them.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex characters, for writing the secret file.
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A password as the user typed it. Validation against the policy happens when
/// a password is *set*; login checks whatever was sent against the stored hash.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Password(String);
redacted_debug!(Password);

impl Password {
    /// Longest password accepted anywhere (login included), in bytes, so that
    /// nobody can make the store hash megabytes.
    pub const MAX_BYTES: usize = 4096;

    /// Wraps a password. Only the byte-length ceiling is checked here.
    pub fn new(text: impl Into<String>) -> Result<Self, InputError> {
        let text = text.into();
        if text.len() > Self::MAX_BYTES {
            let mut text = text;
            text.zeroize();
            return Err(InputError::PasswordTooLong {
                max_bytes: Self::MAX_BYTES,
            });
        }
        Ok(Self(text))
    }

    /// Wraps raw bytes, refusing invalid UTF-8.
    pub fn from_utf8(bytes: Vec<u8>) -> Result<Self, InputError> {
        match String::from_utf8(bytes) {
            Ok(s) => Self::new(s),
            Err(e) => {
                let mut b = e.into_bytes();
                b.zeroize();
                Err(InputError::InvalidUtf8 { field: "password" })
            }
        }
    }

    /// The password text.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

/// A customer's key (`customer_key`): an opaque string of 1 to 128 bytes that
/// the customer receives at login and sends back with later requests.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CustomerKey(String);
redacted_debug!(CustomerKey);

impl CustomerKey {
    /// Longest key accepted, in bytes.
    pub const MAX_BYTES: usize = 128;

    /// Wraps a key given by a caller (import, or a request).
    pub fn new(text: impl Into<String>) -> Result<Self, InputError> {
        let text = text.into();
        if text.is_empty()
            || text.len() > Self::MAX_BYTES
            || text.bytes().any(|b| b.is_ascii_control())
        {
            return Err(InputError::MalformedKey {
                field: "customer_key",
            });
        }
        Ok(Self(text))
    }

    pub(crate) fn from_trusted(text: String) -> Self {
        Self(text)
    }

    /// The key text. The host returns it to the customer at login.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (lengths are not secret).
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

/// A partner app's key (`app_key`), such as `1656d700707ad9a77f737e5df3db088a`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AppKey(String);
redacted_debug!(AppKey);

impl AppKey {
    /// Longest key accepted, in bytes.
    pub const MAX_BYTES: usize = 128;

    /// Wraps a key: 1 to 128 printable ASCII characters without spaces.
    pub fn new(text: impl Into<String>) -> Result<Self, InputError> {
        let text = text.into();
        if text.is_empty()
            || text.len() > Self::MAX_BYTES
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(InputError::MalformedKey { field: "app_key" });
        }
        Ok(Self(text))
    }

    pub(crate) fn from_trusted(text: String) -> Self {
        Self(text)
    }

    /// The key text: shown once when the app is created, and needed to check
    /// the signed format's digest.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (lengths are not secret).
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = StoreSecret::from_bytes([7u8; 32]);
        let p = Password::new("hunter2hunter2").unwrap();
        let c = CustomerKey::new("YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=").unwrap();
        let a = AppKey::new("1656d700707ad9a77f737e5df3db088a").unwrap();
        let all = format!("{s:?} {p:?} {c:?} {a:?} {s:#?} {p:#?}");
        for needle in ["0707", "hunter2", "YpbCN", "1656d7"] {
            assert!(!all.contains(needle), "{needle} leaked in {all}");
        }
        assert!(all.contains("[redacted]"));
    }

    #[test]
    fn secret_hex_round_trip() {
        let s = StoreSecret::from_bytes([0xab; 32]);
        let t = StoreSecret::from_hex(&format!("{}\n", s.to_hex())).unwrap();
        assert_eq!(s.expose_secret(), t.expose_secret());
        assert!(StoreSecret::from_hex("abc").is_err());
        assert!(StoreSecret::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn key_validation() {
        assert!(CustomerKey::new("").is_err());
        assert!(CustomerKey::new("a".repeat(129)).is_err());
        assert!(CustomerKey::new("a\0b").is_err());
        assert!(AppKey::new("has space").is_err());
        assert!(Password::new("x".repeat(Password::MAX_BYTES + 1)).is_err());
        assert!(Password::from_utf8(vec![0xff, 0xfe]).is_err());
    }
}
