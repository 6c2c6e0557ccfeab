//! The one source of randomness: the OS RNG.

use base64::Engine as _;
use zeroize::Zeroize;

use crate::error::{Error, InternalError};
use crate::model::{RESET_ID_LEN, ResetToken, StoreSecret};

/// Fills `buf` from the OS RNG.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|e| {
        Error::Internal(InternalError::new(
            "reading the OS random number generator",
            e.to_string(),
        ))
    })
}

impl StoreSecret {
    /// A fresh secret from the OS RNG.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        fill(&mut bytes)?;
        let secret = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(secret)
    }
}

impl ResetToken {
    /// A fresh token from the OS RNG (one fill, rejection sampling).
    pub fn generate() -> Result<Self, Error> {
        alnum::<{ Self::LEN }>().map(Self::from_alnum)
    }

    /// A token and a reset id from one OS-RNG fill (the issue path).
    pub(crate) fn generate_with_id() -> Result<(Self, String), Error> {
        let mut raw = alnum::<{ ResetToken::LEN + RESET_ID_LEN }>()?;
        let mut token = [0u8; Self::LEN];
        token.copy_from_slice(&raw[..Self::LEN]);
        let id = raw[Self::LEN..].iter().map(|&b| char::from(b)).collect();
        raw.zeroize();
        let t = Self::from_alnum(token);
        token.zeroize();
        Ok((t, id))
    }
}

const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `N` characters of `[A-Za-z0-9]`, uniformly, by rejection sampling over as
/// few OS-RNG fills as possible (one in the common case): a byte is kept only
/// when below 248 = 4 * 62, then reduced mod 62.
pub(crate) fn alnum<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    let mut filled = 0;
    // 248/256 of bytes are kept; N + N/4 + 16 bytes nearly always suffice.
    let mut pool = vec![0u8; N + N / 4 + 16];
    while filled < N {
        fill(&mut pool)?;
        for &b in pool.iter() {
            if b < 248 {
                out[filled] = ALNUM[(b % 62) as usize];
                filled += 1;
                if filled == N {
                    break;
                }
            }
        }
    }
    pool.zeroize();
    Ok(out)
}

/// A new customer key: 32 random bytes in standard base64 (44 characters).
pub(crate) fn customer_key() -> Result<String, Error> {
    let mut raw = [0u8; 32];
    fill(&mut raw)?;
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    raw.zeroize();
    Ok(key)
}

/// A new app key: 16 random bytes as 32 lowercase hex characters.
pub(crate) fn app_key() -> Result<String, Error> {
    let mut raw = [0u8; 16];
    fill(&mut raw)?;
    let key = crate::model::secret::hex_lower(&raw);
    raw.zeroize();
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alnum_has_the_alphabet_and_length() {
        let t = alnum::<64>().unwrap();
        assert!(t.iter().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(alnum::<64>().unwrap(), t);
    }

    #[test]
    fn keys_have_their_shapes() {
        let k = customer_key().unwrap();
        assert_eq!(k.len(), 44);
        assert!(k.ends_with('='));
        let a = app_key().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }
}
