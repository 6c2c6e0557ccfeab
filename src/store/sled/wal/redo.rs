//! The payload of a WAL record: one transaction's redo set.
//!
//! ```text
//! count (varint) , then per write:
//!   tag u8 = tree index | 0x80 when a value follows (no 0x80: delete)
//!   key length (varint) | key | [value length (varint) | value]
//! ```
//!
//! Varints are LEB128. Decoding borrows from the record's bytes.

use super::super::TreeId;
use super::super::tx::Redo;

const HAS_VALUE: u8 = 0x80;

/// One decoded write, borrowing the record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedoRef<'a> {
    pub tree: TreeId,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Bytes [`encode`] will produce for `redo`.
pub(crate) fn encoded_len(redo: &[Redo]) -> usize {
    let mut n = varint_len(redo.len() as u64);
    for r in redo {
        n += 1 + varint_len(r.key.len() as u64) + r.key.len();
        if let Some(v) = &r.value {
            n += varint_len(v.len() as u64) + v.len();
        }
    }
    n
}

/// Appends the encoded redo set to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, redo: &[Redo]) {
    out.reserve(encoded_len(redo));
    put_varint(out, redo.len() as u64);
    for r in redo {
        let tag = r.tree as u8 | if r.value.is_some() { HAS_VALUE } else { 0 };
        out.push(tag);
        put_varint(out, r.key.len() as u64);
        out.extend_from_slice(&r.key);
        if let Some(v) = &r.value {
            put_varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }
}

/// Decodes a payload; `None` when it is not a well-formed redo set (which,
/// behind a valid checksum, means a bug or an unknown format, never a torn
/// write).
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<RedoRef<'_>>> {
    let mut at = 0usize;
    let count = usize::try_from(get_varint(bytes, &mut at)?).ok()?;
    // Each write takes at least 2 bytes: do not trust `count` for allocation.
    let mut out = Vec::with_capacity(count.min(bytes.len() / 2));
    for _ in 0..count {
        let tag = *bytes.get(at)?;
        at += 1;
        let tree = *TreeId::ALL.get(usize::from(tag & !HAS_VALUE))?;
        let key = take(bytes, &mut at)?;
        let value = if tag & HAS_VALUE != 0 {
            Some(take(bytes, &mut at)?)
        } else {
            None
        };
        out.push(RedoRef { tree, key, value });
    }
    (at == bytes.len()).then_some(out)
}

fn take<'a>(bytes: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(get_varint(bytes, at)?).ok()?;
    let end = at.checked_add(len)?;
    let out = bytes.get(*at..end)?;
    *at = end;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redo_strategy() -> impl Strategy<Value = Vec<Redo>> {
        proptest::collection::vec(
            (
                0..TreeId::ALL.len(),
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            )
                .prop_map(|(t, key, value)| Redo {
                    tree: TreeId::ALL[t],
                    key,
                    value,
                }),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn round_trip(redo in redo_strategy()) {
            let mut bytes = Vec::new();
            encode(&mut bytes, &redo);
            prop_assert_eq!(bytes.len(), encoded_len(&redo));
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(back.len(), redo.len());
            for (a, b) in back.iter().zip(&redo) {
                prop_assert_eq!(a.tree, b.tree);
                prop_assert_eq!(a.key, b.key.as_slice());
                prop_assert_eq!(a.value, b.value.as_deref());
            }
            // a truncated payload never decodes
            if !bytes.is_empty() {
                prop_assert!(decode(&bytes[..bytes.len() - 1]).is_none());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn compact() {
        let redo = vec![Redo {
            tree: TreeId::Customers,
            key: vec![0; 8],
            value: Some(vec![1; 150]),
        }];
        // count + tag + key len + key + value len (2) + value
        assert_eq!(encoded_len(&redo), 1 + 1 + 1 + 8 + 2 + 150);
        assert!(decode(&[0x80, 0x80]).is_none());
        let past = u8::try_from(TreeId::ALL.len()).unwrap();
        assert!(decode(&[1, past, 0]).is_none(), "tree index out of range");
    }
}
