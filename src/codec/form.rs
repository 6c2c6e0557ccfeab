//! `application/x-www-form-urlencoded` bodies, strictly: UTF-8, every `%`
//! followed by two hex digits, and every decoded name and value UTF-8
//! (serde_urlencoded alone would replace bad bytes with U+FFFD silently).

use std::fmt;

/// Why a form body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    /// The body or a decoded name or value is not UTF-8.
    NotUtf8,
    /// A `%` is not followed by two hexadecimal digits.
    BadEscape,
}

impl fmt::Display for FormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormError::NotUtf8 => "the form body is not UTF-8",
            FormError::BadEscape => "the form body has a % not followed by two hex digits",
        })
    }
}

impl std::error::Error for FormError {}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_component(part: &[u8]) -> Result<(), FormError> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while let Some(&b) = part.get(i) {
        if b == b'%' {
            let hi = part.get(i + 1).copied().and_then(hex);
            let lo = part.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(FormError::BadEscape),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let ok = std::str::from_utf8(&out).is_ok();
    zeroize::Zeroize::zeroize(&mut out);
    if ok { Ok(()) } else { Err(FormError::NotUtf8) }
}

/// Name/value pairs in order (duplicates kept; the codecs decide).
pub(crate) fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    if std::str::from_utf8(body).is_err() {
        return Err(FormError::NotUtf8);
    }
    for part in body.split(|&b| b == b'&') {
        check_component(part)?;
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|_| FormError::NotUtf8)
}

/// Encodes pairs (for clients and round-trip tests).
pub(crate) fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
    serde_urlencoded::to_string(pairs)
        .unwrap_or_default()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let p = parse(b"email=foo%40example.com&password=a+b%2Bc&_method=PUT&empty=&flag").unwrap();
        let want: Vec<(String, String)> = [
            ("email", "foo@example.com"),
            ("password", "a b+c"),
            ("_method", "PUT"),
            ("empty", ""),
            ("flag", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(p, want);
        let pairs = [("User.Key", "Ypb+/=&x"), ("ñ", "ü é")];
        let back = parse(&encode(&pairs)).unwrap();
        assert_eq!(back[0], ("User.Key".to_string(), "Ypb+/=&x".to_string()));
        assert_eq!(back[1], ("ñ".to_string(), "ü é".to_string()));
    }

    #[test]
    fn is_strict() {
        assert_eq!(parse(b"a=%FF"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a=\xff"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a=%4"), Err(FormError::BadEscape));
        assert_eq!(parse(b"a=%zz"), Err(FormError::BadEscape));
        assert_eq!(parse(b"").unwrap(), vec![]);
    }
}
