//! The store's identity, in the meta tree of every backend: a magic value,
//! the format version and the secret's fingerprint, written when the store
//! is created and checked at every open.

use super::backend::{Backend, get_owned};
use super::schema::{Counter, TreeId};
use crate::error::Error;

pub(crate) const MAGIC_KEY: &[u8] = b"magic";
pub(crate) const MAGIC: &[u8] = b"credstore database\0";
pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
/// The format of the typed rows this build reads and writes: dumps carry
/// it, and backends store it unless they lay the rows out their own way
/// ([`Backend::format_version`]: sled's packed trees are version 2).
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const FINGERPRINT_KEY: &[u8] = b"secret_fingerprint";

/// Checks that `backend` holds a credstore store of this format, created
/// with the secret of `fingerprint`; initialises a new store when it has no
/// magic value and `blank()` says it holds nothing else either.
pub(crate) fn check_or_init(
    backend: &dyn Backend,
    fingerprint: &[u8; 32],
    first_box_id: u64,
    blank: impl FnOnce() -> bool,
) -> Result<(), Error> {
    let read = |key| get_owned(|found| backend.get(TreeId::Meta, key, found));
    match read(MAGIC_KEY)? {
        Some(m) if m == MAGIC => {}
        Some(_) => {
            return Err(Error::UnknownFormat {
                found: "a database with another magic value".into(),
            });
        }
        None if blank() => return init(backend, fingerprint, first_box_id),
        None => {
            return Err(Error::UnknownFormat {
                found: "a sled database without credstore's magic value".into(),
            });
        }
    }
    let version =
        read(FORMAT_KEY)?.and_then(|v| v.as_slice().try_into().ok().map(u32::from_be_bytes));
    match version {
        Some(v) if v == backend.format_version() => {}
        Some(found) => {
            return Err(Error::UnsupportedVersion {
                found,
                supported: backend.format_version(),
            });
        }
        None => {
            return Err(Error::UnknownFormat {
                found: "a credstore database without a format version".into(),
            });
        }
    }
    match read(FINGERPRINT_KEY)? {
        Some(fp) if crate::crypto::ct_eq(&fp, fingerprint) => Ok(()),
        _ => Err(Error::WrongSecret),
    }
}

fn init(backend: &dyn Backend, fingerprint: &[u8; 32], first_box_id: u64) -> Result<(), Error> {
    backend.transact(&|tx| {
        tx.put(
            TreeId::Meta,
            FORMAT_KEY,
            backend.format_version().to_be_bytes().to_vec(),
        )?;
        tx.put(TreeId::Meta, FINGERPRINT_KEY, fingerprint.to_vec())?;
        tx.raise(Counter::BoxId, first_box_id)?;
        tx.raise(Counter::EventSeq, 1)?;
        // Magic last: a store without it is not yet a store.
        tx.put(TreeId::Meta, MAGIC_KEY, MAGIC.to_vec())?;
        Ok(())
    })
}
