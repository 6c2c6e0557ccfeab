//! Record encoding: the one place that knows the byte format of values.
//!
//! Each value is a format version byte followed by the record in bincode 2
//! (standard config). Decoding is size-limited and refuses trailing bytes, so a
//! corrupt or hostile value is an error naming its tree and key, never a panic
//! or a huge allocation.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::TreeId;
use crate::error::Error;

/// The version byte written before every value.
pub(crate) const VALUE_VERSION: u8 = 1;

/// No record comes close: the largest is a reset with 4 KiB of metadata.
const LIMIT: usize = 64 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    // Encoding a plain record into a Vec cannot fail except past the limit,
    // which no record reaches; an empty body then fails decoding loudly.
    if let Ok(body) = bincode::serde::encode_to_vec(value, config()) {
        out.extend_from_slice(&body);
    }
    out
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: TreeId,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, Error> {
    let body = body(tree, key, bytes)?;
    match bincode::serde::decode_from_slice::<T, _>(body, config()) {
        Ok((value, used)) if used == body.len() => Ok(value),
        _ => Err(corrupt(tree, key)),
    }
}

/// [`decode`] into a type that borrows from `bytes` (no allocation for its
/// strings): same checks, same errors.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(
    tree: TreeId,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<T, Error> {
    let body = body(tree, key, bytes)?;
    match bincode::serde::borrow_decode_from_slice::<T, _>(body, config()) {
        Ok((value, used)) if used == body.len() => Ok(value),
        _ => Err(corrupt(tree, key)),
    }
}

/// The record after its version byte, once the version and size are right.
fn body<'a>(tree: TreeId, key: &[u8], bytes: &'a [u8]) -> Result<&'a [u8], Error> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, body)) if body.len() <= LIMIT => Ok(body),
        _ => Err(corrupt(tree, key)),
    }
}

pub(crate) fn corrupt(tree: TreeId, key: &[u8]) -> Error {
    Error::CorruptRecord {
        tree: tree.name(),
        key: printable_key(key),
    }
}

/// A key as text for error messages: UTF-8 as is, else hex. Keys never hold a
/// secret (token digests are keyed hashes, not tokens).
pub(crate) fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!("0x{}", crate::model::secret::hex_lower(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        a: u64,
        b: String,
        c: Option<Vec<u8>>,
    }

    #[test]
    fn round_trip() {
        let r = R {
            a: 7,
            b: "x".into(),
            c: Some(vec![1, 2]),
        };
        let bytes = encode(&r);
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode::<R>(TreeId::Customers, b"k", &bytes).unwrap(), r);
    }

    #[test]
    fn corrupt_values_name_tree_and_key() {
        let r = R {
            a: 7,
            b: "x".into(),
            c: None,
        };
        let mut bytes = encode(&r);
        bytes.push(0); // trailing byte
        let e = decode::<R>(TreeId::Customers, &811111u64.to_be_bytes(), &bytes).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("customers") && msg.contains("0x00000000000c6067"),
            "{msg}"
        );
        assert!(decode::<R>(TreeId::Apps, b"k", &[]).is_err());
        assert!(decode::<R>(TreeId::Apps, b"k", &[2, 0, 0]).is_err());
        // a length prefix claiming petabytes must not allocate
        let huge = [
            1u8, 7, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode::<R>(TreeId::Apps, b"k", &huge).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<R>(TreeId::Customers, b"k", &bytes);
            let _ = decode::<super::super::records::CustomerRecord>(TreeId::Customers, b"k", &bytes);
        }
    }
}
