//! Durable commits side by side, in one run (SPEC §10 targets 1 and 2):
//!
//! - `overwrite_4k_fdatasync`: the disk's anchor, a 4 KiB overwrite of a
//!   preallocated file followed by `fdatasync`;
//! - `credstore_rotation/{1,2,4,8}`: the password-change transaction with the
//!   default durability (`Immediate`: the WAL record is fdatasync-ed before
//!   the call returns), from 1, 2, 4 and 8 threads, each rotating its own
//!   customer. The new hash is made beforehand, as SQLite's peer hashes
//!   nothing: this is the durable transaction alone;
//! - `credstore_change_password/1`: `Store::change_password` end to end from
//!   one thread, with the cheap test argon2 parameters (`Config::for_tests()`),
//!   for comparison;
//! - `sqlite_full_rotation` (with `--features sqlite-peer`): SQLite in WAL
//!   mode with `synchronous=FULL`, the same rotation-shaped transaction:
//!   1 select, 1 update, 2 inserts, 1 delete over 3 tables.
//!
//! - `durable_postgres/…` (with `CREDSTORE_POSTGRES_URL`): credstore's
//!   rotation on the PostgreSQL backend and the same rotation written by
//!   hand in SQL (`benches/durability_pg/mod.rs`), against the same server
//!   in the same run; `DURABILITY_PG_ROUND_TRIPS=<n>` with
//!   `CREDSTORE_PG_LOG=<server log>` counts their round trips from the
//!   server's statement log instead.
//!
//! Throughput is per commit. Run:
//! `cargo bench --bench durability --features sqlite-peer`.
//!
//! Counting syncs per commit: `DURABILITY_STRACE_ROTATIONS=<n>` skips criterion
//! and performs exactly `n` rotations from 8 threads after setting up, so
//! `strace -f -c -e trace=fdatasync,fsync <bench binary>` counts the syncs of
//! `n` commits (run it once with `n = 0` to subtract the setup's).
//! `DURABILITY_STRACE_WRITERS=<k>` changes the thread count, and
//! `DURABILITY_NOSYNC=1` opens the store with
//! `PeriodicFlushLosesRecentChanges` (the commit path's CPU ceiling).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use credstore::internal::{PrehashedPassword, change_password_prehashed, prehash_password};
use credstore::{BoxId, Config, NewCustomer, Password, Store, StoreSecret};
use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "durability_pg/mod.rs"]
mod pg;

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([9; 32])
}

fn scratch() -> tempfile::TempDir {
    // Beside the build output: the same disk as the anchor below.
    tempfile::Builder::new()
        .prefix("durability-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn overwrite(c: &mut Criterion) {
    let dir = scratch();
    let path = dir.path().join("prealloc");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let pages = 1024u64;
    let zeros = vec![0u8; 4096];
    for i in 0..pages {
        file.write_all_at(&zeros, i * 4096).unwrap();
    }
    file.sync_all().unwrap();
    let page = vec![0xa5u8; 4096];
    let mut i = 0u64;
    let mut g = c.benchmark_group("anchor");
    g.throughput(Throughput::Elements(1));
    g.bench_function("overwrite_4k_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&page, (i % pages) * 4096).unwrap();
            file.sync_data().unwrap();
            i += 1;
        })
    });
    g.finish();
}

struct Rotator {
    store: Store,
    ids: Vec<BoxId>,
    versions: Vec<u64>,
    passwords: [Password; 2],
    hashes: [PrehashedPassword; 2],
    /// `true`: hash in each call (`change_password`); else reuse `hashes`.
    hash_each: bool,
}

impl Rotator {
    fn open(path: &Path, writers: usize) -> Self {
        let config = if std::env::var_os("DURABILITY_NOSYNC").is_some() {
            Config::for_tests()
                .with_durability(credstore::Durability::PeriodicFlushLosesRecentChanges)
        } else {
            Config::for_tests()
        };
        Self::on(Store::open(path, &secret(), config).unwrap(), writers)
    }

    /// `writers` customers of `store`, each rotated by its own thread.
    fn on(store: Store, writers: usize) -> Self {
        let mut ids = Vec::new();
        let mut versions = Vec::new();
        for w in 0..writers {
            let (c, _) = store
                .register(NewCustomer::new(
                    format!("writer{w}@example.com"),
                    "Bench",
                    "Writer",
                    Password::new("initial-password").unwrap(),
                ))
                .unwrap();
            ids.push(c.box_id);
            versions.push(c.credential_version);
        }
        let passwords = [
            Password::new("rotation-password-a").unwrap(),
            Password::new("rotation-password-b").unwrap(),
        ];
        let hashes = [
            prehash_password(&store, &passwords[0]).unwrap(),
            prehash_password(&store, &passwords[1]).unwrap(),
        ];
        Self {
            store,
            ids,
            versions,
            passwords,
            hashes,
            hash_each: false,
        }
    }

    /// `total` rotations spread over the writers, one thread each; returns
    /// the wall time.
    fn run(&mut self, total: u64) -> Duration {
        let writers = self.ids.len() as u64;
        let start = Instant::now();
        std::thread::scope(|s| {
            for (w, (id, version)) in self.ids.iter().zip(self.versions.iter_mut()).enumerate() {
                let n = total / writers + u64::from((w as u64) < total % writers);
                let (store, passwords, hashes) = (&self.store, &self.passwords, &self.hashes);
                let hash_each = self.hash_each;
                s.spawn(move || {
                    for i in 0..n {
                        let k = (i % 2) as usize;
                        *version = if hash_each {
                            store
                                .change_password(*id, &passwords[k], *version)
                                .unwrap()
                                .credential_version
                        } else {
                            change_password_prehashed(store, *id, &hashes[k], *version).unwrap()
                        };
                    }
                });
            }
        });
        start.elapsed()
    }
}

fn rotations(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable");
    g.throughput(Throughput::Elements(1));
    for writers in [1usize, 2, 4, 8] {
        let dir = scratch();
        let mut r = Rotator::open(&dir.path().join("store"), writers);
        g.bench_with_input(
            BenchmarkId::new("credstore_rotation", writers),
            &writers,
            |b, _| b.iter_custom(|iters| r.run(iters)),
        );
    }
    let dir = scratch();
    let mut r = Rotator::open(&dir.path().join("store"), 1);
    r.hash_each = true;
    g.bench_function(BenchmarkId::new("credstore_change_password", 1), |b| {
        b.iter_custom(|iters| r.run(iters))
    });
    g.finish();
}

#[cfg(feature = "sqlite-peer")]
fn sqlite(c: &mut Criterion) {
    use rusqlite::{Connection, params};

    let dir = scratch();
    let conn = Connection::open(dir.path().join("peer.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE customers (box_id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,
             password_hash TEXT NOT NULL, credential_version INTEGER NOT NULL,
             must_change_password INTEGER NOT NULL, updated_at INTEGER NOT NULL);
         CREATE TABLE resets (id TEXT PRIMARY KEY, box_id INTEGER NOT NULL,
             token_digest BLOB NOT NULL, created_at INTEGER NOT NULL);
         CREATE INDEX resets_by_customer ON resets (box_id);
         CREATE TABLE events (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL,
             kind INTEGER NOT NULL, box_id INTEGER);",
    )
    .unwrap();
    let customers = 1000i64;
    {
        let tx = conn.unchecked_transaction().unwrap();
        for id in 0..customers {
            tx.execute(
                "INSERT INTO customers VALUES (?1, ?2, ?3, 1, 1, 0)",
                params![
                    id,
                    format!("c{id}@example.com"),
                    "$argon2id$v=19$placeholder"
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO resets VALUES (?1, ?2, ?3, 0)",
                params![format!("r{id}-0"), id, [7u8; 32]],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let hash =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    let mut i = 0i64;
    let mut g = c.benchmark_group("durable");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sqlite_full_rotation", |b| {
        b.iter(|| {
            let id = i % customers;
            i += 1;
            let tx = conn.unchecked_transaction().unwrap();
            let version: i64 = tx
                .prepare_cached("SELECT credential_version FROM customers WHERE box_id = ?1")
                .unwrap()
                .query_row(params![id], |r| r.get(0))
                .unwrap();
            tx.prepare_cached(
                "UPDATE customers SET password_hash = ?1, credential_version = ?2,
                     must_change_password = 0, updated_at = ?3
                 WHERE box_id = ?4 AND credential_version = ?5",
            )
            .unwrap()
            .execute(params![hash, version + 1, i, id, version])
            .unwrap();
            // the customer's outstanding resets die with the password
            tx.prepare_cached("DELETE FROM resets WHERE box_id = ?1")
                .unwrap()
                .execute(params![id])
                .unwrap();
            // one reset issued again, so that the next rotation has one to delete
            tx.prepare_cached("INSERT INTO resets VALUES (?1, ?2, ?3, ?4)")
                .unwrap()
                .execute(params![format!("r{id}-{i}"), id, [7u8; 32], i])
                .unwrap();
            tx.prepare_cached("INSERT INTO events (at, kind, box_id) VALUES (?1, 3, ?2)")
                .unwrap()
                .execute(params![i, id])
                .unwrap();
            tx.commit().unwrap();
        })
    });
    g.finish();
}

#[cfg(not(feature = "sqlite-peer"))]
fn sqlite(_: &mut Criterion) {
    eprintln!("sqlite_full_rotation skipped: run with --features sqlite-peer");
}

/// `strace` mode: exactly `n` rotations from 8 threads (or
/// `DURABILITY_STRACE_WRITERS`), no criterion.
fn count_syncs(n: u64) {
    let writers = std::env::var("DURABILITY_STRACE_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = scratch();
    let mut r = Rotator::open(&dir.path().join("store"), writers);
    eprintln!("setup done; {n} rotations from {writers} threads");
    let t = r.run(n);
    eprintln!(
        "{n} rotations in {:.3} s ({:.0}/s, slowed down by strace)",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );
    // Skip the clean-close checkpoint: count only the commits' syncs.
    let _ = std::fs::remove_dir_all(dir.path());
    std::process::exit(0);
}

fn main() {
    if let Some(n) = std::env::var("DURABILITY_PG_ROUND_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        pg::count_round_trips(n);
        return;
    }
    if let Some(n) = std::env::var("DURABILITY_STRACE_ROTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        count_syncs(n);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    overwrite(&mut c);
    rotations(&mut c);
    sqlite(&mut c);
    pg::postgres(&mut c);
    c.final_summary();
}
