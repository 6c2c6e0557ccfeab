//! The store implementations every store test runs on, so that a test is
//! written once and proves its guarantee on each: `Temporary` (sled without
//! a log, `Store::temporary`), `Wal` (`Store::open` on a temporary
//! directory: the production path with the write-ahead log, group commit,
//! overlay reads and batch apply) and `Memory` (the second implementation
//! of the storage seam, ordered maps in memory, every transaction's body
//! run twice: `Store::in_memory_for_tests`).
//!
//! `on_every_backend! { fn name(backend) { ... } }` makes a module `name`
//! with one `#[test]` per backend (`name::temporary`, `name::wal`,
//! `name::memory`). A new backend is a new variant here, in `ALL`, and a
//! line in the macro.
#![allow(dead_code)]

use std::ops::Deref;

use credstore::{Config, Store, StoreSecret};

/// A store implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `Store::temporary`: sled alone.
    Temporary,
    /// `Store::open` in a temporary directory: sled behind the WAL.
    Wal,
    /// `Store::in_memory_for_tests`: the memory backend.
    Memory,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Temporary, Backend::Wal, Backend::Memory];

    /// A new, empty store of this backend.
    pub fn open(self, secret: &StoreSecret, config: Config) -> TestStore {
        match self {
            Backend::Temporary => TestStore {
                store: Store::temporary(secret, config).expect("a temporary store"),
                dir: None,
            },
            Backend::Memory => TestStore {
                store: Store::in_memory_for_tests(secret, config).expect("a store in memory"),
                dir: None,
            },
            Backend::Wal => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store =
                    Store::open(dir.path().join("data"), secret, config).expect("a store on disk");
                TestStore {
                    store,
                    dir: Some(dir),
                }
            }
        }
    }
}

/// A store that lives as long as its directory (if any).
pub struct TestStore {
    // Dropped first: the store closes before its directory goes.
    store: Store,
    dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// The data directory, for stores that have one.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("data"))
    }
}

impl Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

#[macro_export]
macro_rules! on_every_backend {
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($backend: $crate::backend::Backend) $body

            #[test]
            fn temporary() {
                run($crate::backend::Backend::Temporary)
            }

            #[test]
            fn wal() {
                run($crate::backend::Backend::Wal)
            }

            #[test]
            fn memory() {
                run($crate::backend::Backend::Memory)
            }
        }
    };
}
