//! Sealing of customer and app keys: XOR with a keystream from BLAKE3's keyed
//! XOF over (owner id, key epoch), so the store can hand a key back without
//! holding it in the clear. A key's epoch changes whenever the key does, so a
//! keystream is never reused for two different keys.

use zeroize::Zeroize;

/// What a sealed key belongs to; part of the keystream's input.
#[derive(Clone, Copy)]
pub(crate) enum Owner {
    Customer(u64),
    App(u32),
    /// A queued reset mail, by its entry's random nonce (epoch 0).
    Mail([u8; 16]),
}

fn keystream(sub_key: &[u8; 32], owner: Owner, epoch: u32, out: &mut [u8]) {
    let mut h = blake3::Hasher::new_keyed(sub_key);
    match owner {
        Owner::Customer(id) => {
            h.update(b"customer\0");
            h.update(&id.to_be_bytes());
        }
        Owner::App(id) => {
            h.update(b"app\0");
            h.update(&u64::from(id).to_be_bytes());
        }
        Owner::Mail(nonce) => {
            h.update(b"mail\0");
            h.update(&nonce);
        }
    }
    h.update(&epoch.to_be_bytes());
    h.finalize_xof().fill(out);
}

/// Seals `plain` (at most a few hundred bytes).
pub(crate) fn seal(sub_key: &[u8; 32], owner: Owner, epoch: u32, plain: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; plain.len()];
    keystream(sub_key, owner, epoch, &mut out);
    for (o, p) in out.iter_mut().zip(plain) {
        *o ^= p;
    }
    out
}

/// Unseals into a `String`; `None` if the result is not UTF-8 (wrong key or
/// corruption).
pub(crate) fn unseal(
    sub_key: &[u8; 32],
    owner: Owner,
    epoch: u32,
    sealed: &[u8],
) -> Option<String> {
    // XOR is its own inverse.
    let plain = seal(sub_key, owner, epoch, sealed);
    match String::from_utf8(plain) {
        Ok(s) => Some(s),
        Err(e) => {
            e.into_bytes().zeroize();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_separation() {
        let k = [9u8; 32];
        let s = seal(&k, Owner::Customer(811111), 0, b"YpbCNpzq");
        assert_ne!(&s[..], b"YpbCNpzq");
        assert_eq!(
            unseal(&k, Owner::Customer(811111), 0, &s).unwrap(),
            "YpbCNpzq"
        );
        assert_ne!(seal(&k, Owner::Customer(811111), 1, b"YpbCNpzq"), s);
        assert_ne!(seal(&k, Owner::Customer(811112), 0, b"YpbCNpzq"), s);
        assert_ne!(seal(&k, Owner::App(811111), 0, b"YpbCNpzq"), s);
        let m = seal(&k, Owner::Mail([1; 16]), 0, b"YpbCNpzq");
        assert_ne!(m, s);
        assert_ne!(seal(&k, Owner::Mail([2; 16]), 0, b"YpbCNpzq"), m);
        assert_eq!(unseal(&k, Owner::Mail([1; 16]), 0, &m).unwrap(), "YpbCNpzq");
        assert_ne!(seal(&[8u8; 32], Owner::Customer(811111), 0, b"YpbCNpzq"), s);
    }
}
