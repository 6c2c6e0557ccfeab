//! Dump and restore through the store (SPEC §13): the format is
//! `store/dump.rs`'s; here the secret's fingerprint is checked.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::Store;
use crate::crypto::Keys;
use crate::error::{Error, StorageError};
use crate::model::StoreSecret;

impl Store {
    /// Writes every record of the store to `out` as JSON Lines: a header
    /// with the format version and the store secret's fingerprint, then the
    /// records as stored (hashes hashed, keys sealed), then a trailer.
    /// Returns how many records. Take it with no writer running: a dump is
    /// not a snapshot of a store being changed.
    pub fn dump(&self, out: &mut dyn Write) -> Result<u64, Error> {
        self.engine().dump(&self.keys().fingerprint, out)
    }

    /// Loads the dump at `path` (written by [`Store::dump`], from either
    /// backend) into this store, which must hold no record yet. Refused,
    /// changing nothing, when the dump was made under another secret
    /// ([`Error::WrongSecret`]), is malformed or truncated, or the store is
    /// not empty. Returns how many records were restored.
    pub fn restore(&self, path: &Path) -> Result<u64, Error> {
        let open = || -> Result<Box<dyn BufRead>, Error> {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::Storage(StorageError::new("opening the dump", e)))?;
            Ok(Box::new(BufReader::new(file)))
        };
        self.engine().restore(&self.keys().fingerprint, &open)
    }

    /// Checks the dump at `path` against `secret` without a store: every
    /// line, the trailer, and that it was made under this secret. For
    /// callers that must not create a store for a dump that would be
    /// refused. Returns how many records it holds.
    pub fn check_dump(path: &Path, secret: &StoreSecret) -> Result<u64, Error> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Storage(StorageError::new("opening the dump", e)))?;
        crate::store::dump::check_dump(
            &Keys::derive(secret).fingerprint,
            Box::new(BufReader::new(file)),
        )
    }
}
