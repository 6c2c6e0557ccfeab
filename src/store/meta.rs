//! The meta tree: magic value, format version, secret fingerprint, counters.

use std::path::Path;

use super::{Engine, TreeId, storage};
use crate::error::Error;

pub(crate) const MAGIC_KEY: &[u8] = b"magic";
pub(crate) const MAGIC: &[u8] = b"credstore database\0";
pub(crate) const FORMAT_KEY: &[u8] = b"format_version";
/// The on-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const FINGERPRINT_KEY: &[u8] = b"secret_fingerprint";
pub(crate) const NEXT_BOX_ID: &[u8] = b"next_box_id";
pub(crate) const EVENT_SEQ: &[u8] = b"next_event_seq";
/// The write-ahead log sequence number of the last change applied to sled
/// (u64 BE), written in the same transaction as the change.
pub(crate) const WAL_SEQ: &[u8] = b"wal_applied_seq";

/// Refuses a path that holds something other than a (possibly empty) store.
pub(super) fn check_directory(path: &Path) -> Result<(), Error> {
    if !path.exists() {
        return Ok(());
    }
    if !path.is_dir() {
        return Err(Error::UnknownFormat {
            found: format!("{} is a file, not a directory", path.display()),
        });
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| {
        Error::Storage(crate::error::StorageError::new(
            "reading the data directory",
            e,
        ))
    })?;
    let empty = entries.next().is_none();
    if !empty && !path.join("conf").is_file() {
        return Err(Error::UnknownFormat {
            found: format!(
                "{} is a non-empty directory without a database",
                path.display()
            ),
        });
    }
    Ok(())
}

pub(super) fn check_or_init(
    engine: &Engine,
    fingerprint: &[u8; 32],
    first_box_id: u64,
) -> Result<(), Error> {
    let meta = engine.tree(TreeId::Meta);
    let read = storage("reading the store's metadata");
    match meta.get(MAGIC_KEY).map_err(read)? {
        Some(m) if m.as_ref() == MAGIC => {}
        Some(_) => {
            return Err(Error::UnknownFormat {
                found: "a database with another magic value".into(),
            });
        }
        None => {
            let has_data = TreeId::ALL.iter().any(|t| !engine.tree(*t).is_empty())
                || engine.db.tree_names().iter().any(|n| {
                    !TreeId::ALL
                        .iter()
                        .any(|t| t.name().as_bytes() == n.as_ref())
                        && n.as_ref() != b"__sled__default"
                })
                || !engine.db.is_empty();
            if has_data {
                return Err(Error::UnknownFormat {
                    found: "a sled database without credstore's magic value".into(),
                });
            }
            return init(engine, fingerprint, first_box_id);
        }
    }
    let version = meta
        .get(FORMAT_KEY)
        .map_err(storage("reading the format version"))?
        .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes));
    match version {
        Some(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(Error::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        None => {
            return Err(Error::UnknownFormat {
                found: "a credstore database without a format version".into(),
            });
        }
    }
    let stored = meta
        .get(FINGERPRINT_KEY)
        .map_err(storage("reading the fingerprint"))?;
    match stored {
        Some(fp) if crate::crypto::ct_eq(fp.as_ref(), fingerprint) => Ok(()),
        _ => Err(Error::WrongSecret),
    }
}

fn init(engine: &Engine, fingerprint: &[u8; 32], first_box_id: u64) -> Result<(), Error> {
    engine.transact(|tx| {
        tx.put_bytes(
            TreeId::Meta,
            FORMAT_KEY,
            FORMAT_VERSION.to_be_bytes().to_vec(),
        )?;
        tx.put_bytes(TreeId::Meta, FINGERPRINT_KEY, fingerprint.to_vec())?;
        tx.put_bytes(
            TreeId::Meta,
            NEXT_BOX_ID,
            first_box_id.to_be_bytes().to_vec(),
        )?;
        tx.put_bytes(TreeId::Meta, EVENT_SEQ, 1u64.to_be_bytes().to_vec())?;
        // Magic last: a store without it is not yet a store.
        tx.put_bytes(TreeId::Meta, MAGIC_KEY, MAGIC.to_vec())?;
        Ok(())
    })
}
