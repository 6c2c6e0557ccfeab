//! The WAL against a file layer that crashes: torn tails, flipped bytes,
//! group commit under concurrency, replay idempotence, checkpoints.
//!
//! A "crash" freezes the in-memory WAL directory ([`MemDir::crash`]); sled's
//! side of it is a second, fresh store (the state at the log's first
//! checkpoint) that recovers from the frozen log, or the first store's own
//! directory, which sled flushed when dropped (sled *ahead* of the log).

mod apply;
mod checkpoint;
mod deferred;
mod group_commit;
mod recovery;
mod reopen_1m;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::fault::{Crash, MemDir};
use super::format::{self, Checkpoint, SEG_HEADER_LEN, SegmentHeader};
use super::{FsDir, Recovery, WalDir, WalOptions};
use crate::store::backend::Backend;
use crate::store::schema::TreeId;
use crate::store::sled::{SledBackend as Engine, WAL_SEQ, commit};
use crate::store::{Durability, EngineOptions};

pub(super) type State = BTreeMap<(usize, Vec<u8>), Vec<u8>>;
pub(super) type Write = (TreeId, Vec<u8>, Option<Vec<u8>>);

pub(crate) fn engine_opts() -> EngineOptions {
    EngineOptions {
        durability: Durability::Immediate,
        cache_capacity: 4 << 20,
        defer_replay_bytes: u64::MAX,
        commit_delay: Duration::ZERO,
        hashing_limit: 2,
        compress_pages: false,
        postgres_ca_file: None,
        fingerprint: [7; 32],
        first_box_id: 1,
        fail_point: None,
    }
}

pub(super) fn wal_opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        checkpoint_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(86_400),
        sync: true,
        defer_replay_bytes: u64::MAX,
        commit_delay: Duration::ZERO,
        delay_beyond: 0,
    }
}

/// [`wal_opts`] with every replay deferred ([`super::Recovery::resume`]).
pub(super) fn deferred(opts: WalOptions) -> WalOptions {
    WalOptions {
        defer_replay_bytes: 0,
        ..opts
    }
}

/// Opens with `open`, retrying while sled's lock on the directory is still
/// held: a dropped sled database releases it only once its thread pool has
/// finished the writes queued before the drop.
pub(super) fn unlocked(open: impl Fn() -> Result<Engine, crate::Error>) -> Engine {
    let mut tries = 0;
    loop {
        match open() {
            Err(crate::Error::Storage(e)) if e.to_string().contains("locked") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

pub(super) fn open_mem(path: &Path, dir: &MemDir, opts: WalOptions) -> Engine {
    unlocked(|| {
        let dir = dir.clone();
        Engine::open_with_wal(path, &engine_opts(), opts, move |_| Ok(Box::new(dir)))
    })
}

/// [`open_mem`] that accepts losing the records after a damaged one.
fn open_mem_truncating(path: &Path, dir: &MemDir, opts: WalOptions) -> Engine {
    unlocked(|| {
        let dir = dir.clone();
        let with = crate::store::sled::OpenWith {
            wal_dir: move |_: &Path| -> std::io::Result<Box<dyn WalDir>> { Ok(Box::new(dir)) },
            wal_opts: opts,
            data_files: Arc::new(crate::store::sled::FsDataFiles),
            truncate_at_corruption: true,
        };
        Engine::open_with(path, &engine_opts(), with)
    })
}

/// The error of opening `dir` over a fresh store.
fn open_mem_error(dir: &MemDir, opts: WalOptions) -> crate::Error {
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.clone();
    Engine::open_with_wal(&tmp.path().join("db"), &engine_opts(), opts, move |_| {
        Ok(Box::new(dir))
    })
    .unwrap_err()
}

fn open_fs(path: &Path, opts: WalOptions) -> Engine {
    unlocked(|| {
        Engine::open_with_wal(path, &engine_opts(), opts, |p| {
            Ok(Box::new(FsDir::open(p.join("wal"))?))
        })
    })
}

pub(super) fn state(e: &Engine) -> State {
    e.settle().unwrap();
    let mut out = State::new();
    for id in TreeId::ALL {
        e.sled_for_each(id, &mut |k, v| {
            out.insert((id as usize, k), v);
            Ok(())
        })
        .unwrap();
    }
    out
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TREES: [TreeId; 5] = [
    TreeId::Customers,
    TreeId::Emails,
    TreeId::Events,
    TreeId::Resets,
    TreeId::Nonces,
];

pub(super) fn random_tx(rng: &mut Rng) -> Vec<Write> {
    (0..1 + rng.below(4))
        .map(|_| {
            let tree = TREES[rng.below(TREES.len() as u64) as usize];
            let key = vec![rng.below(12) as u8; 1 + rng.below(3) as usize];
            let value = (rng.below(5) != 0).then(|| {
                let len = rng.below(300) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            });
            (tree, key, value)
        })
        .collect()
}

pub(super) fn commit(e: &Engine, writes: &[Write]) -> Result<(), crate::Error> {
    e.transact(&|tx| {
        for (tree, key, value) in writes {
            match value {
                Some(v) => tx.put(*tree, key, v.clone())?,
                None => tx.delete(*tree, key)?,
            }
        }
        Ok(())
    })
}

/// A run against a fresh store: the WAL directory as it stood at the end, the
/// state after each record (`states[k]`: after record k), and where each
/// record was written (`spans[k - 1]`: slot, start, end).
struct Recorded {
    dir: MemDir,
    states: Vec<State>,
    spans: Vec<(u32, usize, usize)>,
}

fn record_run(
    path: &Path,
    segment_size: u64,
    synced: usize,
    unsynced: usize,
    seed: u64,
) -> Recorded {
    let dir = MemDir::new();
    let e = open_mem(path, &dir, wal_opts(segment_size));
    let wal = e.wal().unwrap();
    let mut rng = Rng(seed | 1);
    let mut states = vec![state(&e)];
    let mut spans = Vec::new();
    for i in 0..synced + unsynced {
        if i == synced {
            wal.set_sync(false);
        }
        let before = wal.position();
        commit(&e, &random_tx(&mut rng)).unwrap();
        let after = wal.position();
        let start = if before.0 == after.0 && before.1 == after.1 {
            before.2
        } else {
            SEG_HEADER_LEN as u64
        };
        spans.push((after.1.unwrap(), start as usize, after.2 as usize));
        states.push(state(&e));
    }
    assert_eq!(wal.stats().last_seq, (synced + unsynced) as u64);
    Recorded { dir, states, spans }
}

/// The sequence numbers a recovery of `dir` would replay.
fn recovered_seqs(dir: &MemDir, segment_size: u64) -> Vec<u64> {
    let r = Recovery::read(Box::new(dir.clone()), wal_opts(segment_size), 0).unwrap();
    r.records().map(|(seq, _)| seq).collect()
}

/// Recovers `dir` into a fresh store (the state at the log's first
/// checkpoint), once replaying into sled and once deferring the replay
/// (each on its own copy of the directory); both must agree.
fn recover_fresh(dir: &MemDir, segment_size: u64) -> (State, usize) {
    let mut seen = Vec::new();
    for opts in [wal_opts(segment_size), deferred(wal_opts(segment_size))] {
        let tmp = tempfile::tempdir().unwrap();
        let copy = dir.crash(Crash::KeepAll);
        let e = open_mem(&tmp.path().join("db"), &copy, opts);
        let r = e.recovery();
        assert_eq!(
            r.deferred,
            opts.defer_replay_bytes == 0 && r.records_replayed > 0
        );
        seen.push((state(&e), r.records_replayed));
    }
    assert!(
        seen[0] == seen[1],
        "a deferred replay ends in the same state"
    );
    seen.pop().unwrap()
}

fn seqs_to(k: usize) -> Vec<u64> {
    (1..=k as u64).collect()
}

/// Customer `k` as a point read sees it.
pub(super) fn customer(e: &Engine, k: u64) -> Option<Vec<u8>> {
    e.get_bytes(TreeId::Customers, &k.to_be_bytes())
        .unwrap()
        .map(|v| v.to_vec())
}

/// Fixed-size records: record k writes customer k (8 bytes) = `fill` x 100.
pub(super) fn fixed_commit(e: &Engine, k: u64, fill: u8) {
    commit(
        e,
        &[(
            TreeId::Customers,
            k.to_be_bytes().to_vec(),
            Some(vec![fill; 100]),
        )],
    )
    .unwrap();
}
