//! The PostgreSQL backend against the server at `CREDSTORE_POSTGRES_URL`
//! (each test in a schema of its own): retries, the injected 40001, the
//! commit-outcome check, the schema version, health.

use std::sync::atomic::{AtomicU32, Ordering};

use r2d2_postgres::postgres::{Client, NoTls};

use super::tx::{self, Attempt};
use super::*;
use crate::store::schema::{Counter, TreeId};

/// The value of `.ci/postgres.sh`'s variable `name`; `None` outside CI
/// without it (the test is skipped), a panic in CI.
pub(super) fn from_ci(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {name} is not set")
        }
        _ => {
            eprintln!("skipped: {name} is not set");
            None
        }
    }
}

/// The server's URL; `None` outside CI without one (the test is skipped).
pub(super) fn server() -> Option<String> {
    from_ci("CREDSTORE_POSTGRES_URL")
}

/// A fresh schema; the URL that uses it.
pub(super) fn schema(url: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "u_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut c = Client::connect(url, NoTls).unwrap();
    c.batch_execute(&format!("CREATE SCHEMA {name}")).unwrap();
    format!("{url}?options=-c%20search_path%3D{name}")
}

pub(super) fn opts() -> EngineOptions {
    EngineOptions {
        durability: crate::store::Durability::Immediate,
        cache_capacity: 0,
        defer_replay_bytes: 0,
        commit_delay: std::time::Duration::ZERO,
        hashing_limit: 2,
        compress_pages: false,
        postgres_ca_file: None,
        fingerprint: [3; 32],
        first_box_id: 10,
        fail_point: None,
    }
}

fn open() -> Option<(PostgresBackend, String)> {
    let url = schema(&server()?);
    Some((PostgresBackend::open(&url, &opts()).unwrap(), url))
}

pub(super) fn read(b: &PostgresBackend, key: &[u8]) -> Option<Vec<u8>> {
    crate::store::backend::get_owned(|f| b.get(TreeId::Customers, key, f)).unwrap()
}

#[test]
fn the_injected_40001_runs_every_body_twice_and_writes_once() {
    let Some((mut b, _)) = open() else { return };
    b.fail_first_attempt = true;
    // Opening may have retried already (when the suite runs with the hook on).
    let before = b.stats.retries_40001.load(Ordering::Relaxed);
    let stats_before = b.log_stats();
    let runs = AtomicU32::new(0);
    b.transact(&|tx| {
        runs.fetch_add(1, Ordering::Relaxed);
        let seen = crate::store::backend::get_owned(|f| tx.get(TreeId::Customers, b"k", f))?;
        assert_eq!(seen, None, "the first run's write was rolled back");
        tx.put(TreeId::Customers, b"k", b"v".to_vec())
    })
    .unwrap();
    assert_eq!(runs.load(Ordering::Relaxed), 2);
    assert_eq!(b.stats.retries_40001.load(Ordering::Relaxed), before + 1);
    // What operators see (the `sqlstate="40001"` metric): one more retry,
    // one more commit, no other cause.
    let stats = b.log_stats();
    let r = (stats.retries, stats_before.retries);
    assert_eq!(r.0.serialization_failure, r.1.serialization_failure + 1);
    assert_eq!(
        (r.0.deadlock_detected, r.0.other),
        (r.1.deadlock_detected, r.1.other)
    );
    assert_eq!(stats.commits, stats_before.commits + 1);
    assert_eq!(read(&b, b"k"), Some(b"v".to_vec()));
}

#[test]
fn concurrent_increments_are_serialized_by_retries() {
    let Some((b, _)) = open() else { return };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    b.transact(&|tx| {
                        let n = crate::store::backend::get_owned(|f| {
                            tx.get(TreeId::Customers, b"n", f)
                        })?
                        .map_or(0, |v| u32::from_be_bytes(v.try_into().unwrap()));
                        tx.put(TreeId::Customers, b"n", (n + 1).to_be_bytes().to_vec())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(read(&b, b"n"), Some(100u32.to_be_bytes().to_vec()));
    assert!(
        b.stats.retries_40001.load(Ordering::Relaxed) > 0,
        "four writers of one row met no serialization failure: {:?}",
        b.stats
    );
}

#[test]
fn a_refusing_body_writes_nothing() {
    let Some((b, _)) = open() else { return };
    let e = b.transact(&|tx| {
        tx.put(TreeId::Customers, b"r", b"v".to_vec())?;
        Err(Error::Conflict)
    });
    assert!(matches!(e, Err(Error::Conflict)));
    assert_eq!(read(&b, b"r"), None);
}

#[test]
fn a_lost_commit_is_resolved_by_transaction_id() {
    let Some((b, url)) = open() else { return };
    let mut c = Client::connect(&url, NoTls).unwrap();
    let xid = |c: &mut Client| -> i64 {
        let r = tx::simple(c, "BEGIN; SELECT txid_current()::text").unwrap();
        r[1][0][0].as_deref().unwrap().parse().unwrap()
    };
    let committed = xid(&mut c);
    c.batch_execute("INSERT INTO credstore_customers VALUES ('\\x01', '\\x01'); COMMIT")
        .unwrap();
    let aborted = xid(&mut c);
    c.batch_execute("INSERT INTO credstore_customers VALUES ('\\x02', '\\x02'); ROLLBACK")
        .unwrap();
    let e = PgError::__private_api_timeout();
    assert!(matches!(
        tx::resolve(&b, Some(committed), &e),
        Attempt::Committed
    ));
    assert!(matches!(
        tx::resolve(&b, Some(aborted), &e),
        Attempt::Retry(_)
    ));
    match tx::resolve(&b, None, &e) {
        Attempt::Failed(Error::Storage(s)) => assert!(s.is_outcome_unknown(), "{s}"),
        _ => panic!("no transaction id: the outcome is unknown"),
    }
}

#[test]
fn a_newer_schema_is_refused_and_counters_start_where_configured() {
    let Some((b, url)) = open() else { return };
    b.transact(&|tx| tx.next(Counter::BoxId).map(|_| ()))
        .unwrap();
    let box_id = std::cell::Cell::new(0);
    b.transact(&|tx| {
        box_id.set(tx.next(Counter::BoxId)?);
        Ok(())
    })
    .unwrap();
    assert_eq!(box_id.get(), 11, "starts at the first box_id (10), then 11");
    drop(b);
    let mut c = Client::connect(&url, NoTls).unwrap();
    c.batch_execute("UPDATE credstore_schema_version SET version = 99")
        .unwrap();
    match PostgresBackend::open(&url, &opts()) {
        Err(Error::UnsupportedVersion { found: 99, .. }) => {}
        other => panic!("a newer schema opened: {other:?}"),
    }
}

#[test]
fn an_unreachable_server_is_not_healthy() {
    let Some((b, _)) = open() else { return };
    assert!(b.health().is_writable());
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config: PgConfig = format!("postgresql://postgres@127.0.0.1:{port}/postgres")
        .parse()
        .unwrap();
    let pool = r2d2::Pool::builder()
        .min_idle(Some(0))
        .connection_timeout(Duration::from_millis(300))
        .build(PostgresConnectionManager::new(config, tls(None).unwrap()))
        .unwrap();
    let gone = PostgresBackend {
        pool,
        health: Mutex::new(None),
        ..b
    };
    match gone.health() {
        Health::Failed { cause } => assert!(cause.contains("unreachable"), "{cause}"),
        Health::Writable => panic!("an unreachable server is healthy"),
    }
}
