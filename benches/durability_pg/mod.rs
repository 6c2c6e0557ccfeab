//! The PostgreSQL part of the durability bench (issue 18): credstore's
//! rotation on the PostgreSQL backend against the same rotation written by
//! hand in SQL, on the same server in the same run, and their round trips
//! counted from the server's statement log.
//!
//! The hand-written peer is what an application would write with the same
//! client and pool-less connections: one SERIALIZABLE transaction of
//! prepared statements (prepared once per connection), the shape of
//! SQLite's peer: 1 select, 1 update, 1 delete, 2 inserts over 3 tables,
//! each statement one round trip, plus `BEGIN` and `COMMIT`.

use std::time::{Duration, Instant};

use credstore::{Config, Store};
use criterion::{BenchmarkId, Criterion, Throughput};
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Statement};

use super::{Rotator, secret};

/// The server, or `None` (with a message) when `CREDSTORE_POSTGRES_URL` is unset.
fn server() -> Option<String> {
    match std::env::var("CREDSTORE_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "durable_postgres skipped: set CREDSTORE_POSTGRES_URL (source .ci/postgres.sh; pg_start)"
            );
            None
        }
    }
}

/// A fresh schema on the server; the URL whose connections use it.
fn schema(base: &str, name: &str) -> String {
    let name = format!("bench_{name}_{}", std::process::id());
    let mut c = Client::connect(base, NoTls).unwrap();
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
    ))
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{name}")
}

/// The hand-written rotation: one connection per writer thread.
struct SqlPeer {
    writers: Vec<(Client, [Statement; 5], i64)>,
    n: i64,
}

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";

impl SqlPeer {
    fn open(url: &str, writers: usize) -> Self {
        let mut setup = Client::connect(url, NoTls).unwrap();
        setup
            .batch_execute(
                "CREATE TABLE customers (box_id bigint PRIMARY KEY, email text NOT NULL UNIQUE,
                     password_hash text NOT NULL, credential_version bigint NOT NULL,
                     must_change_password boolean NOT NULL, updated_at bigint NOT NULL);
                 CREATE TABLE resets (id text PRIMARY KEY, box_id bigint NOT NULL,
                     token_digest bytea NOT NULL, created_at bigint NOT NULL);
                 CREATE INDEX resets_by_customer ON resets (box_id);
                 CREATE TABLE events (seq bigserial PRIMARY KEY, at bigint NOT NULL,
                     kind integer NOT NULL, box_id bigint);",
            )
            .unwrap();
        let writers = (0..writers as i64)
            .map(|id| {
                setup
                    .execute(
                        "INSERT INTO customers VALUES ($1, $2, $3, 1, true, 0)",
                        &[&id, &format!("c{id}@example.com"), &HASH],
                    )
                    .unwrap();
                setup
                    .execute(
                        "INSERT INTO resets VALUES ($1, $2, $3, 0)",
                        &[&format!("r{id}-0"), &id, &vec![7u8; 32]],
                    )
                    .unwrap();
                let mut c = Client::connect(url, NoTls).unwrap();
                let prepare = |c: &mut Client, sql: &str| c.prepare(sql).unwrap();
                let statements = [
                    prepare(
                        &mut c,
                        "SELECT credential_version FROM customers WHERE box_id = $1",
                    ),
                    prepare(
                        &mut c,
                        "UPDATE customers SET password_hash = $1, credential_version = $2,
                             must_change_password = false, updated_at = $3
                         WHERE box_id = $4 AND credential_version = $5",
                    ),
                    prepare(&mut c, "DELETE FROM resets WHERE box_id = $1"),
                    prepare(&mut c, "INSERT INTO resets VALUES ($1, $2, $3, $4)"),
                    prepare(
                        &mut c,
                        "INSERT INTO events (at, kind, box_id) VALUES ($1, 3, $2)",
                    ),
                ];
                (c, statements, id)
            })
            .collect();
        Self { writers, n: 0 }
    }

    /// `total` rotations spread over the writers, one thread each.
    fn run(&mut self, total: u64) -> Duration {
        let count = self.writers.len() as u64;
        let base = self.n;
        self.n += total as i64;
        let start = Instant::now();
        std::thread::scope(|s| {
            for (w, (client, st, id)) in self.writers.iter_mut().enumerate() {
                let n = total / count + u64::from((w as u64) < total % count);
                s.spawn(move || {
                    for i in 0..n as i64 {
                        let i = base + i;
                        // As an application would: the whole transaction
                        // again on a serialization failure (the resets
                        // index's page locks make neighbours conflict).
                        while let Err(e) = rotate(client, st, *id, i) {
                            let code = e.code().cloned();
                            assert_eq!(code, Some(SqlState::T_R_SERIALIZATION_FAILURE), "{e}");
                        }
                    }
                });
            }
        });
        start.elapsed()
    }
}

/// One hand-written rotation of customer `id` (the `i`th).
fn rotate(
    client: &mut Client,
    st: &[Statement; 5],
    id: i64,
    i: i64,
) -> Result<(), postgres::Error> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()?;
    let version: i64 = tx.query_one(&st[0], &[&id])?.get(0);
    let changed = tx.execute(&st[1], &[&HASH, &(version + 1), &i, &id, &version])?;
    assert_eq!(changed, 1);
    tx.execute(&st[2], &[&id])?;
    tx.execute(&st[3], &[&format!("r{id}-{i}"), &id, &vec![7u8; 32], &i])?;
    tx.execute(&st[4], &[&i, &id])?;
    tx.commit()
}

/// The `durable_postgres` group.
pub fn postgres(c: &mut Criterion) {
    let Some(base) = server() else { return };
    let mut g = c.benchmark_group("durable_postgres");
    g.throughput(Throughput::Elements(1));
    for writers in [1usize, 8] {
        let url = schema(&base, &format!("credstore{writers}"));
        let store = Store::open_postgres(&url, &secret(), Config::for_tests()).unwrap();
        let mut r = Rotator::on(store, writers);
        g.bench_with_input(
            BenchmarkId::new("credstore_rotation", writers),
            &writers,
            |b, _| b.iter_custom(|iters| r.run(iters)),
        );
        let url = schema(&base, &format!("sql{writers}"));
        let mut peer = SqlPeer::open(&url, writers);
        g.bench_with_input(
            BenchmarkId::new("sql_rotation", writers),
            &writers,
            |b, _| b.iter_custom(|iters| peer.run(iters)),
        );
    }
    g.finish();
}

/// Round-trip mode: `n` rotations of each kind from one thread, between
/// marker statements, with `log_statement = all` for the database; then
/// the statements between the markers in the server's log
/// (`CREDSTORE_PG_LOG`) are counted: one logged statement (a simple query,
/// however many statements it holds, or one execution of a prepared
/// statement) is one round trip.
pub fn count_round_trips(n: u64) {
    let Some(base) = server() else { return };
    let log = std::env::var("CREDSTORE_PG_LOG").expect("CREDSTORE_PG_LOG: the server's log file");
    let mut admin = Client::connect(&base, NoTls).unwrap();
    let db: String = admin
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET log_statement = 'all'"
        ))
        .unwrap();
    let url = schema(&base, "rt_credstore");
    let store = Store::open_postgres(&url, &secret(), Config::for_tests()).unwrap();
    let mut r = Rotator::on(store, 1);
    let url = schema(&base, "rt_sql");
    let mut peer = SqlPeer::open(&url, 1);
    let mut marker = Client::connect(&base, NoTls).unwrap();
    let mut mark = |m: &str| {
        marker
            .batch_execute(&format!("SELECT 'marker {m}'"))
            .unwrap()
    };
    mark("credstore begin");
    r.run(n);
    mark("credstore end");
    peer.run(n);
    mark("sql end");
    admin
        .batch_execute(&format!("ALTER DATABASE \"{db}\" RESET log_statement"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap();
    let between = |from: &str, to: &str| -> Vec<String> {
        let start = text
            .find(&format!("marker {from}"))
            .expect("marker in the log");
        let end = text[start..]
            .find(&format!("marker {to}"))
            .expect("marker in the log")
            + start;
        text[start..end]
            .lines()
            .skip(1)
            .filter(|l| l.contains("LOG:  statement:") || l.contains("LOG:  execute"))
            .map(|l| l.split("LOG:  ").nth(1).unwrap_or(l).to_owned())
            .collect()
    };
    for (name, from, to) in [
        ("credstore", "credstore begin", "credstore end"),
        ("hand-written SQL", "credstore end", "sql end"),
    ] {
        let lines = between(from, to);
        println!(
            "{name}: {} round trips for {n} rotations = {:.2} per rotation; one rotation:",
            lines.len(),
            lines.len() as f64 / n as f64
        );
        let per = lines.len() / n.max(1) as usize;
        for l in lines.iter().take(per) {
            let short: String = l.chars().take(160).collect();
            println!("  {short}");
        }
    }
}
