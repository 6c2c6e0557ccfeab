//! A measurement, not a correctness test (ignored; run by hand in release
//! mode): reopening a store of 1M customers with a full 64 MiB log.

use std::path::Path;
use std::time::Duration;

use super::super::format::Checkpoint;
use super::super::{FsDir, WalDir, WalOptions};
use super::{Engine, Rng, engine_opts};
use crate::store::EngineOptions;
use crate::store::backend::Backend;
use crate::store::schema::{Counter, TreeId};
use crate::store::sled::WAL_SEQ;

/// SPEC §10 target 5 (reopen with 1M customers and a full 64 MiB WAL), a
/// measurement to run by hand, in release mode:
/// `cargo test --release --lib reopen_with_1m_customers -- --ignored --nocapture`.
/// It prints timings and asserts only what the replay must do. The store is
/// prepared once in `target/wal-reopen-1m/pristine` (about 2 minutes) and
/// copied for each run, with sled's applied sequence number set back to
/// force a replay:
/// - to the checkpoint's: the whole 64 MiB is replayed (sled kept none of its
///   writes since the checkpoint);
/// - to the record written 500 ms before the end: what a crash leaves, since
///   sled's own flusher flushes and fsyncs its files every 500 ms.
#[test]
#[ignore = "a measurement: 1M customers, run by hand in release mode"]
fn reopen_with_1m_customers_and_a_full_wal() {
    use std::time::Instant;
    // REOPEN_1M_COMPRESSED=1: the same on a store with compressed pages
    // (its records are mostly one repeated byte: they compress far better
    // than real ones).
    let compressed = std::env::var("REOPEN_1M_COMPRESSED").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(if compressed {
        "target/wal-reopen-1m-compressed"
    } else {
        "target/wal-reopen-1m"
    });
    let pristine = root.join("pristine");
    let run = root.join("run");
    let opts = WalOptions::new(false);
    let open_with = |path: &Path, opts: WalOptions| {
        let eopts = EngineOptions {
            cache_capacity: 64 << 20,
            compress_pages: compressed,
            ..engine_opts()
        };
        Engine::open_with_wal(path, &eopts, opts, |p| {
            Ok(Box::new(FsDir::open(p.join("wal"))?))
        })
        .unwrap()
    };
    let open = |path: &Path| open_with(path, opts);
    let replay_first = WalOptions {
        defer_replay_bytes: u64::MAX,
        ..opts
    };
    let customers = 1_000_000u64;
    if !pristine.join("wal/checkpoint").exists() {
        let _ = std::fs::remove_dir_all(&root);
        prepare_1m(&pristine, customers, &open);
    }
    let cp = Checkpoint::decode(
        &FsDir::open(pristine.join("wal"))
            .unwrap()
            .read_checkpoint()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let behind_500ms: u64 = std::fs::read_to_string(pristine.join("seq-500ms-before-end"))
        .unwrap()
        .parse()
        .unwrap();
    let cases = [
        ("whole log, replay deferred (default)", cp.seq, opts),
        ("whole log, replayed into sled first", cp.seq, replay_first),
        ("sled 500 ms behind, default", behind_500ms, opts),
    ];
    for (case, applied, opts) in cases {
        reopen_run(&pristine, &run, applied, case, &|p| open_with(p, opts));
    }
    let t = Instant::now();
    let e = open(&run);
    eprintln!(
        "REOPEN after a recovery's checkpoint: {:?} ({} records read)",
        t.elapsed(),
        e.recovery().records_read
    );
    drop(e);
    let _ = std::fs::remove_dir_all(&run);
}

fn reopen_run(
    pristine: &Path,
    run: &Path,
    applied: u64,
    case: &str,
    open: &dyn Fn(&Path) -> Engine,
) {
    use std::time::Instant;
    let _ = std::fs::remove_dir_all(run);
    copy_dir(pristine, run);
    {
        let db = crate::store::sled::raw_sled_config(run).open().unwrap();
        let meta = db.open_tree(TreeId::Meta.name()).unwrap();
        meta.insert(WAL_SEQ, applied.to_be_bytes().to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    // sled's threads release the directory lock shortly after the drop.
    std::thread::sleep(Duration::from_secs(2));
    let wal_bytes: u64 = std::fs::read_dir(run.join("wal"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    let db_bytes: u64 = std::fs::read_dir(run)
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "store: {} MiB of sled files, {} MiB of WAL files",
        db_bytes >> 20,
        wal_bytes >> 20
    );

    let t = Instant::now();
    let e = open(run);
    let reopen = t.elapsed();
    let r = e.recovery();
    eprintln!(
        "REOPEN ({case}): {reopen:?} ({} records in the log, {} replayed{})",
        r.records_read,
        r.records_replayed,
        if r.deferred { ", deferred" } else { "" }
    );
    let t = Instant::now();
    e.flush().unwrap();
    eprintln!(
        "  then applying what waits and a checkpoint (Engine::flush): {:?}",
        t.elapsed()
    );
    assert_eq!(r.records_replayed as u64, r.seq - applied);
    assert!(r.records_read > 200_000);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            // On disk before the timed open, as a crashed store's files are
            // (else the open pays for writing back the copy).
            std::fs::File::open(to.join(entry.file_name()))
                .unwrap()
                .sync_all()
                .unwrap();
        }
    }
}

fn prepare_1m(path: &Path, customers: u64, open: &dyn Fn(&Path) -> Engine) {
    use std::time::Instant;
    let value = |n: u64, v: u64| {
        let mut out = vec![1u8; 158];
        out[..8].copy_from_slice(&n.to_be_bytes());
        out[8..16].copy_from_slice(&v.to_be_bytes());
        out
    };
    let t = Instant::now();
    let e = open(path);
    for chunk in 0..customers / 1000 {
        e.transact(&|tx| {
            for n in chunk * 1000..(chunk + 1) * 1000 {
                tx.put(TreeId::Customers, &n.to_be_bytes(), value(n, 1))?;
                let email = format!("customer{n}@example.com");
                tx.put(TreeId::Emails, email.as_bytes(), n.to_be_bytes().to_vec())?;
            }
            Ok(())
        })
        .unwrap();
    }
    e.flush().unwrap();
    eprintln!("loaded {customers} customers in {:?}", t.elapsed());

    // Rotation-shaped records (customer record, event, counter) until the
    // log since the last checkpoint is just under the 64 MiB threshold.
    let t = Instant::now();
    let mut rng = Rng(17);
    let mut rotations = 0u64;
    let mut progress = std::collections::VecDeque::new();
    while e.wal().unwrap().stats().since_checkpoint < WalOptions::DEFAULT_CHECKPOINT_BYTES - 4096 {
        let n = rng.below(customers);
        rotations += 1;
        e.transact(&|tx| {
            tx.put(TreeId::Customers, &n.to_be_bytes(), value(n, rotations + 1))?;
            // An event row of the size the store writes for a rotation.
            let seq = tx.next(Counter::EventSeq)?;
            tx.put(TreeId::Events, &seq.to_be_bytes(), vec![2u8; 40])?;
            Ok(())
        })
        .unwrap();
        if rotations.is_multiple_of(256) {
            progress.push_back((Instant::now(), rotations));
            while progress.len() > 2 && progress[1].0.elapsed() > Duration::from_millis(500) {
                progress.pop_front();
            }
        }
    }
    let stats = e.wal().unwrap().stats();
    let behind = stats.last_seq - (rotations - progress.front().map_or(rotations, |p| p.1));
    std::fs::write(path.join("seq-500ms-before-end"), behind.to_string()).unwrap();
    eprintln!(
        "{rotations} rotations ({} MiB of log since the last checkpoint) in {:?}",
        stats.since_checkpoint >> 20,
        t.elapsed()
    );
    drop(e); // no checkpoint: the log keeps its 64 MiB
}
