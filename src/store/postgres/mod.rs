//! The PostgreSQL backend (SPEC §13): several instances of an application
//! share one store on a database server.
//!
//! - one table per tree (`credstore_<tree>`: `key bytea primary key, value
//!   bytea`), holding exactly the bytes the sled backend holds; event
//!   numbers from a sequence (`nextval`: no row that every operation
//!   updates), the next box_id in its meta row as on sled (only
//!   registrations and imports touch it); a schema version table
//!   (`credstore_schema_version`), a newer version refused;
//! - every transaction is one `SERIALIZABLE` transaction (set explicitly),
//!   run again as a whole on SQLSTATE 40001/40P01, also from `COMMIT`,
//!   with jittered backoff, at most [`tx::MAX_ATTEMPTS`] times, then a
//!   contention error ([`crate::StorageError::is_contention`]);
//! - writes are buffered in the run and sent with `COMMIT` in one round
//!   trip (see `tx.rs` for the round trips of an operation);
//! - a commit whose connection breaks is resolved by asking the server
//!   for the transaction's status (`txid_status`) on another connection;
//!   only when that gets no answer is the error "outcome unknown"
//!   ([`crate::StorageError::is_outcome_unknown`]), never a plain failure;
//! - durability is the server's: a transaction is acknowledged once
//!   `COMMIT` returned (with PostgreSQL's defaults, `fsync` and
//!   `synchronous_commit = on`, that is once it is in the server's WAL on
//!   disk);
//! - the `postgres` client runs its own small runtime: call the store off
//!   async executors, and drop it there too;
//! - TLS (rustls) when the URL's `sslmode` asks for it, the server's
//!   certificate always checked, chain and host name ([`tls`]); without
//!   `sslmode` the connection is not encrypted, as before TLS was
//!   supported.
//!
//! Everything here is the only code that names the `postgres` crate.

mod sql;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
mod tx;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::postgres::Config as PgConfig;
use r2d2_postgres::postgres::config::{Host, SslMode};
use r2d2_postgres::r2d2;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::EngineOptions;
use super::backend::{Backend, BackendTx, Rows};
use super::health::{Health, LogStats, Retries};
use super::meta;
use crate::error::{Error, StorageError};

type PgError = r2d2_postgres::postgres::Error;
type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;
type Connection = r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>;

/// Connections per store (each instance has its own pool).
const POOL_SIZE: u32 = 16;
/// How long an operation waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Backend::health`] keeps an answer.
const HEALTH_TTL: Duration = Duration::from_secs(1);

/// The test hook behind acceptance test 2 of issue 18: with this variable
/// set to `1`, the first attempt of every transaction sends its writes and
/// then rolls back as if `COMMIT` had failed with SQLSTATE 40001, so every
/// transaction runs at least twice. Never set it in production.
pub(crate) const FAIL_FIRST_ATTEMPT_ENV: &str = "CREDSTORE_POSTGRES_FAIL_FIRST_ATTEMPT";

/// What the backend counts (for tests and operators).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    retries_40001: AtomicU64,
    retries_40p01: AtomicU64,
    retries_other: AtomicU64,
}

impl Stats {
    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    fn retried(&self, why: &str) {
        let counter = match why {
            "40001" | "40001 (injected)" => &self.retries_40001,
            "40P01" => &self.retries_40p01,
            _ => &self.retries_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct PostgresBackend {
    pool: Pool,
    fail_first_attempt: bool,
    stats: Stats,
    health: Mutex<Option<(Instant, Health)>>,
}

impl std::fmt::Debug for PostgresBackend {
    // No connection string: it may hold the database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("stats", &self.stats)
            .field("fail_first_attempt", &self.fail_first_attempt)
            .finish_non_exhaustive()
    }
}

/// A storage error with `context`.
fn storage(context: &'static str, detail: impl Into<String>) -> Error {
    Error::Storage(StorageError::new(context, detail.into()))
}

/// A server error in one line: its SQLSTATE and message, without the
/// DETAIL (which may quote row values) or the connection string; another
/// error with its causes (`error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer`).
fn describe(e: &PgError) -> String {
    match e.as_db_error() {
        Some(db) => format!("SQLSTATE {}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

/// The connection settings of `url` (`postgresql://…` or key=value pairs).
/// `sslmode` is libpq's: `disable`, `prefer`, `require`, and `verify-ca`
/// and `verify-full`, which mean `require` here (that checks as much as
/// `verify-full`: [`tls`]). Without `sslmode` the connection is not
/// encrypted, as before credstore supported TLS (libpq's default,
/// `prefer`, would turn it on against a server with a self-signed
/// certificate, which [`tls`] refuses).
fn pg_config(url: &str) -> Result<PgConfig, Error> {
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    // The parse error is not shown: it may quote the URL's password.
    let mut config: PgConfig = url.parse().map_err(|_| {
        storage(
            "reading the PostgreSQL URL",
            "not a valid connection string (postgresql://user[:password]@host[:port]/dbname\
             [?sslmode=require])",
        )
    })?;
    if !names_sslmode(&url) {
        config.ssl_mode(SslMode::Disable);
    }
    Ok(config)
}

/// Whether the connection string sets `sslmode` (in a URL's query, or as a
/// key=value pair).
fn names_sslmode(url: &str) -> bool {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url.split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|kv| kv.starts_with("sslmode=")))
    } else {
        url.split_whitespace().any(|kv| kv.starts_with("sslmode"))
    }
}

/// Whether every host of `config` is a Unix socket or a loopback address.
fn on_loopback(config: &PgConfig) -> bool {
    let addrs = config.get_hostaddrs();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .all(|(i, host)| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
                    || addrs.get(i).is_some_and(std::net::IpAddr::is_loopback)
            }
        })
}

/// The TLS connector of the pool. It is used when the URL's `sslmode`
/// asks for TLS (`require`; with `prefer`, when the server offers it), and
/// then the server's certificate must chain to `ca_file`'s certificates
/// (a PEM file) or, without one, to Mozilla's roots, and name the host
/// the URL names (libpq's `verify-full`: encryption with an unchecked
/// certificate, libpq's `require`, would let anyone on the path read the
/// store). rustls with ring, as for SMTP.
fn tls(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect, Error> {
    let doing = "reading the PostgreSQL CA file";
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| storage(doing, format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| storage(doing, format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| storage(doing, format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(storage(
                    doing,
                    format!("{}: no PEM certificate in it", path.display()),
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| storage("setting up TLS for PostgreSQL", e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgresql://user:password@host:port/db`,
    /// or key=value pairs), creates the schema when it is missing, checks
    /// the schema version and the store's identity (a new store is
    /// initialised).
    pub fn open(url: &str, opts: &EngineOptions) -> Result<Self, Error> {
        let config = pg_config(url)?;
        if config.get_ssl_mode() == SslMode::Disable && !on_loopback(&config) {
            tracing::warn!(
                "the connection to PostgreSQL is not encrypted and its host is not \
                 loopback: add sslmode=require to the URL"
            );
        }
        let tls = tls(opts.postgres_ca_file.as_deref())?;
        // One connection first, outside the pool: the pool reports a refused
        // connection only as a timeout, after CONNECT_TIMEOUT, without its
        // cause (a certificate refused, a wrong password, no server).
        drop(
            config
                .connect(tls.clone())
                .map_err(|e| storage("connecting to PostgreSQL", describe(&e)))?,
        );
        let manager = PostgresConnectionManager::new(config, tls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // A broken connection fails its first statement, which is
            // retried on another: no extra round trip per checkout.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| storage("connecting to PostgreSQL", e.to_string()))?;
        let backend = Self {
            pool,
            fail_first_attempt: std::env::var(FAIL_FIRST_ATTEMPT_ENV).is_ok_and(|v| v == "1"),
            stats: Stats::default(),
            health: Mutex::new(None),
        };
        backend.create_schema()?;
        let blank = backend.is_blank()?;
        meta::check_or_init(&backend, &opts.fingerprint, opts.first_box_id, || blank)?;
        Ok(backend)
    }

    fn connection(&self) -> Result<Connection, Error> {
        self.pool
            .get()
            .map_err(|e| storage("connecting to PostgreSQL", e.to_string()))
    }

    /// Creates what is missing of the schema under an advisory lock (two
    /// instances may start at once), and checks its version.
    fn create_schema(&self) -> Result<(), Error> {
        let mut conn = self.connection()?;
        let doing = "creating the PostgreSQL schema";
        let err = |e: PgError| storage(doing, describe(&e));
        let sql = format!(
            // No NOTICE per existing table at every open.
            "BEGIN; SET LOCAL client_min_messages = warning; \
             SELECT pg_advisory_xact_lock({}); {} SELECT max(version)::text FROM {};",
            sql::SCHEMA_LOCK,
            sql::create_schema(),
            sql::VERSION_TABLE,
        );
        let results = tx::simple(&mut conn, &sql).map_err(err)?;
        let version = results
            .last()
            .and_then(|rows| rows.first())
            .and_then(|row| row.first().cloned().flatten());
        let end = match version.map(|v| v.parse::<i32>()) {
            None => format!(
                "INSERT INTO {} (version) VALUES ({}); COMMIT",
                sql::VERSION_TABLE,
                sql::SCHEMA_VERSION
            ),
            Some(Ok(sql::SCHEMA_VERSION)) => "COMMIT".to_owned(),
            Some(Ok(found)) => {
                let _ = conn.simple_query("ROLLBACK");
                return Err(Error::UnsupportedVersion {
                    found: u32::try_from(found).unwrap_or(0),
                    supported: sql::SCHEMA_VERSION as u32,
                });
            }
            Some(Err(_)) => {
                let _ = conn.simple_query("ROLLBACK");
                return Err(Error::UnknownFormat {
                    found: "a credstore schema version that is not a number".into(),
                });
            }
        };
        tx::simple(&mut conn, &end).map_err(err)?;
        Ok(())
    }

    /// Whether every tree is empty (a database where a store may be created).
    fn is_blank(&self) -> Result<bool, Error> {
        let any = super::schema::TreeId::ALL
            .iter()
            .map(|t| format!("SELECT 1 FROM {}", sql::table(*t)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows = self.read(&format!("SELECT EXISTS ({any})::text"))?;
        Ok(scalar(rows).as_deref() == Some("false"))
    }

    /// Runs a read outside transactions (autocommit), once more on a new
    /// connection when the first one turns out broken.
    fn read(&self, sql: &str) -> Result<tx::Results, Error> {
        let mut last = None;
        for _ in 0..2 {
            let mut conn = self.connection()?;
            match tx::simple(&mut conn, sql) {
                Ok(r) => return Ok(r),
                Err(e) if e.code().is_none() && conn.is_closed() => last = Some(e),
                Err(e) => return Err(storage("reading from PostgreSQL", describe(&e))),
            }
        }
        let detail = last.map_or_else(String::new, |e| describe(&e));
        Err(storage("reading from PostgreSQL", detail))
    }

    fn rows(&self, sql: &str) -> Result<Rows, Error> {
        let results = self.read(sql)?;
        let rows = results.into_iter().next().unwrap_or_default();
        rows.into_iter()
            .map(|row| {
                let col = |i: usize| {
                    row.get(i)
                        .and_then(|c| c.as_deref())
                        .and_then(sql::from_hex)
                        .ok_or_else(|| storage("reading rows", "the server sent bad hex"))
                };
                Ok((col(0)?, col(1)?))
            })
            .collect()
    }
}

/// Calls `found` with the bytes of a value read as hex (`None`: absent).
fn found_hex(value: Option<String>, found: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), Error> {
    match value {
        Some(hex) => {
            let bytes = sql::from_hex(&hex)
                .ok_or_else(|| storage("reading a row", "the server sent bad hex"))?;
            found(Some(&bytes));
        }
        None => found(None),
    }
    Ok(())
}

/// The first column of the first row of the first statement.
fn scalar(results: tx::Results) -> Option<String> {
    results
        .into_iter()
        .next()?
        .into_iter()
        .next()?
        .into_iter()
        .next()?
}

impl Backend for PostgresBackend {
    /// Several instances share one database.
    fn shared(&self) -> bool {
        true
    }

    fn get(
        &self,
        tree: super::schema::TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        found_hex(scalar(self.read(&sql::select_value(tree, key))?), found)
    }

    fn scan(&self, tree: super::schema::TreeId, start: &[u8], limit: usize) -> Result<Rows, Error> {
        self.rows(&sql::select_rows(tree, start, limit, false))
    }

    fn scan_last(&self, tree: super::schema::TreeId, limit: usize) -> Result<Rows, Error> {
        let mut rows = self.rows(&sql::select_rows(tree, &[], limit, true))?;
        rows.reverse();
        Ok(rows)
    }

    fn transact(&self, body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>) -> Result<(), Error> {
        tx::transact(self, body)
    }

    fn flush(&self) -> Result<(), Error> {
        // Every acknowledged commit is durable on the server already.
        Ok(())
    }

    /// Writable while the server answers (asked at most once a second).
    fn health(&self) -> Health {
        let mut cached = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, health)) = &*cached
            && at.elapsed() < HEALTH_TTL
        {
            return health.clone();
        }
        let answer = self
            .pool
            .get_timeout(Duration::from_secs(1))
            .map_err(|e| e.to_string())
            .and_then(|mut c| c.simple_query("SELECT 1").map_err(|e| describe(&e)));
        let health = match answer {
            Ok(_) => Health::Writable,
            Err(cause) => Health::Failed {
                cause: format!("PostgreSQL unreachable: {cause}"),
            },
        };
        *cached = Some((Instant::now(), health.clone()));
        health
    }

    fn log_stats(&self) -> LogStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogStats {
            commits: load(&self.stats.commits),
            retries: Retries {
                serialization_failure: load(&self.stats.retries_40001),
                deadlock_detected: load(&self.stats.retries_40p01),
                other: load(&self.stats.retries_other),
            },
            ..LogStats::default()
        }
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        let rows = self.read(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::text FROM pg_class c \
             WHERE c.relkind = 'r' AND c.relname LIKE 'credstore\\_%' AND pg_table_is_visible(c.oid)",
        )?;
        Ok(scalar(rows).and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}
