//! The store implementations every store test runs on, so that a test is
//! written once and proves its guarantee on each: `Temporary` (sled without
//! a log, `Store::temporary`), `Wal` (`Store::open` on a temporary
//! directory: the production path with the write-ahead log, group commit,
//! overlay reads and batch apply), `Memory` (the second implementation
//! of the storage seam, ordered maps in memory, every transaction's body
//! run twice: `Store::in_memory_for_tests`) and `Postgres`
//! (`Store::open_postgres` in a fresh schema of the server at
//! `CREDSTORE_POSTGRES_URL`).
//!
//! `on_every_backend! { fn name(backend) { ... } }` makes a module `name`
//! with one `#[test]` per backend (`name::temporary`, `name::wal`,
//! `name::memory`, `name::postgres`). A new backend is a new variant here,
//! in `ALL`, and a line in the macro. Without `CREDSTORE_POSTGRES_URL` the
//! PostgreSQL test fails when `CI=true` and is skipped with a message
//! otherwise.
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
    /// `Store::open_postgres` on a new schema of the test server.
    Postgres,
}

/// The test server's URL: `None` (with a message) when it is not set
/// outside CI; a panic when it is not set in CI.
pub fn postgres_url() -> Option<String> {
    match std::env::var("CREDSTORE_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but CREDSTORE_POSTGRES_URL is not set: .ci/run starts PostgreSQL")
        }
        _ => {
            eprintln!(
                "skipped on PostgreSQL: CREDSTORE_POSTGRES_URL is not set (source .ci/postgres.sh; pg_start)"
            );
            None
        }
    }
}

/// A fresh, empty schema on the test server, and the URL that makes it
/// the connections' `search_path`.
pub fn fresh_postgres_schema(url: &str) -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("the test server");
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("a schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    (
        schema.clone(),
        format!("{url}{sep}options=-c%20search_path%3D{schema}"),
    )
}

/// Drops a schema made by [`fresh_postgres_schema`].
pub fn drop_postgres_schema(url: &str, schema: &str) {
    if let Ok(mut client) = postgres::Client::connect(url, postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Temporary,
        Backend::Wal,
        Backend::Memory,
        Backend::Postgres,
    ];

    /// Whether tests can run on this backend here (see [`postgres_url`]).
    pub fn available(self) -> bool {
        self != Backend::Postgres || postgres_url().is_some()
    }

    /// A new, empty store of this backend.
    pub fn open(self, secret: &StoreSecret, config: Config) -> TestStore {
        match self {
            Backend::Temporary => TestStore {
                store: Store::temporary(secret, config).expect("a temporary store"),
                dir: None,
                pg: None,
            },
            Backend::Memory => TestStore {
                store: Store::in_memory_for_tests(secret, config).expect("a store in memory"),
                dir: None,
                pg: None,
            },
            Backend::Wal => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store =
                    Store::open(dir.path().join("data"), secret, config).expect("a store on disk");
                TestStore {
                    store,
                    dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let base = postgres_url().expect("a PostgreSQL server (CREDSTORE_POSTGRES_URL)");
                let (schema, url) = fresh_postgres_schema(&base);
                let store =
                    Store::open_postgres(&url, secret, config).expect("a store on PostgreSQL");
                TestStore {
                    store,
                    dir: None,
                    pg: Some(PgSchema { base, schema, url }),
                }
            }
        }
    }
}

/// A test's schema on the PostgreSQL server, dropped with the store.
pub struct PgSchema {
    base: String,
    schema: String,
    /// The URL that opens the store in it.
    pub url: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        drop_postgres_schema(&self.base, &self.schema);
    }
}

/// A store that lives as long as its directory (if any).
pub struct TestStore {
    // Dropped first: the store closes before its directory goes.
    store: Store,
    dir: Option<tempfile::TempDir>,
    pg: Option<PgSchema>,
}

impl TestStore {
    /// The data directory, for stores that have one.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("data"))
    }

    /// The URL of the PostgreSQL schema, for stores that have one.
    pub fn postgres_url(&self) -> Option<&str> {
        self.pg.as_ref().map(|p| p.url.as_str())
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

            #[test]
            fn postgres() {
                if $crate::backend::Backend::Postgres.available() {
                    run($crate::backend::Backend::Postgres)
                }
            }
        }
    };
}
