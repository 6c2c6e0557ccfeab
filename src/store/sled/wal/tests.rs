//! The WAL against a file layer that crashes: torn tails, flipped bytes,
//! group commit under concurrency, replay idempotence, checkpoints.
//!
//! A "crash" freezes the in-memory WAL directory ([`MemDir::crash`]); sled's
//! side of it is a second, fresh store (the state at the log's first
//! checkpoint) that recovers from the frozen log, or the first store's own
//! directory, which sled flushed when dropped (sled *ahead* of the log).

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

pub(super) fn engine_opts() -> EngineOptions {
    EngineOptions {
        durability: Durability::Immediate,
        cache_capacity: 4 << 20,
        defer_replay_bytes: u64::MAX,
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
        for item in e.tree(id).iter() {
            let (k, v) = item.unwrap();
            out.insert((id as usize, k.to_vec()), v.to_vec());
        }
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

#[test]
fn losing_the_unsynced_tail_keeps_exactly_the_synced_prefix() {
    for segment_size in [2048, 16 << 10] {
        let tmp = tempfile::tempdir().unwrap();
        let run = record_run(&tmp.path().join("db"), segment_size, 12, 6, 42);
        if segment_size == 2048 {
            let slots: std::collections::BTreeSet<_> = run.spans.iter().map(|s| s.0).collect();
            assert!(slots.len() >= 3, "the log spans several segments");
        }
        assert!(run.dir.unsynced_bytes() > 0);

        let lost = run.dir.crash(Crash::DropUnsynced);
        assert_eq!(recovered_seqs(&lost, segment_size), seqs_to(12));
        let (st, replayed) = recover_fresh(&lost, segment_size);
        assert_eq!(replayed, 12);
        assert!(st == run.states[12], "state after the synced prefix");

        let kept = run.dir.crash(Crash::KeepAll);
        assert_eq!(recovered_seqs(&kept, segment_size), seqs_to(18));
        let (st, _) = recover_fresh(&kept, segment_size);
        assert!(st == run.states[18]);
    }
}

#[test]
fn a_torn_tail_keeps_every_whole_record_and_nothing_after() {
    let (synced, unsynced) = (8, 5);
    let tmp = tempfile::tempdir().unwrap();
    let run = record_run(&tmp.path().join("db"), 16 << 10, synced, unsynced, 7);
    let first = run.spans[synced - 1].2;
    let total = run.spans[synced + unsynced - 1].2 - first;
    assert!(run.dir.unsynced_bytes() > total / 2);
    // A record survives when every byte of it that differs from the zeros
    // beneath it was kept (its last bytes may happen to be zeros).
    let slot = run.dir.current_bytes(run.spans[synced].0);
    let expected = |n: usize| {
        synced
            + run.spans[synced..]
                .iter()
                .filter(|s| {
                    let tail_zeros = slot[s.1..s.2].iter().rev().take_while(|b| **b == 0).count();
                    s.2 - tail_zeros <= first + n
                })
                .count()
    };
    // Every torn length, from nothing to everything.
    for n in 0..=total {
        let torn = run.dir.crash(Crash::KeepUnsyncedPrefix(n));
        assert_eq!(
            recovered_seqs(&torn, 16 << 10),
            seqs_to(expected(n)),
            "n = {n}"
        );
    }
    // The full replay at each record boundary and one byte either side.
    let mut samples = vec![0, total];
    for s in &run.spans[synced..] {
        let at = s.2 - first;
        samples.extend([at.saturating_sub(1), at, (at + 1).min(total)]);
    }
    for n in samples {
        let torn = run.dir.crash(Crash::KeepUnsyncedPrefix(n));
        let (st, _) = recover_fresh(&torn, 16 << 10);
        assert!(st == run.states[expected(n)], "n = {n}");
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_ends_the_log_there() {
    let n = 10;
    let tmp = tempfile::tempdir().unwrap();
    let run = record_run(&tmp.path().join("db"), 16 << 10, n, 0, 99);
    assert_eq!(run.dir.unsynced_bytes(), 0);
    let mut rng = Rng(5);
    let (slot, start, end) = run.spans[n - 1];
    // first byte, last byte, and a few in between
    let mut offsets = vec![start, end - 1];
    offsets.extend((0..4).map(|_| start + rng.below((end - start) as u64) as usize));
    for off in offsets {
        let bad = run.dir.crash(Crash::KeepAll);
        bad.flip_bit(slot, off, rng.below(8) as u8);
        assert_eq!(recovered_seqs(&bad, 16 << 10), seqs_to(n - 1), "byte {off}");
        let r = Recovery::read(Box::new(bad), wal_opts(16 << 10), 0).unwrap();
        assert_eq!(r.corruption(), None, "a torn tail, not damage");
    }
    let bad = run.dir.crash(Crash::KeepAll);
    bad.flip_bit(slot, start + 20, 3);
    let (st, replayed) = recover_fresh(&bad, 16 << 10);
    assert_eq!(replayed, n - 1);
    assert!(st == run.states[n - 1]);
}

#[test]
fn a_flipped_byte_in_the_middle_is_refused_and_truncating_drops_the_rest() {
    let n = 10;
    let tmp = tempfile::tempdir().unwrap();
    // Small segments: the damage may sit in one slot and the valid records
    // after it in the next ones.
    let run = record_run(&tmp.path().join("db"), 2048, n, 0, 99);
    let mut rng = Rng(11);
    for j in [1, 4, n - 1] {
        let (slot, start, end) = run.spans[j - 1];
        let mut offsets = vec![start, end - 1];
        offsets.extend((0..3).map(|_| start + rng.below((end - start) as u64) as usize));
        for off in offsets {
            let bad = run.dir.crash(Crash::KeepAll);
            bad.flip_bit(slot, off, rng.below(8) as u8);
            let r = Recovery::read(Box::new(bad.clone()), wal_opts(2048), 0).unwrap();
            let c = r.corruption().expect("damage, not a torn tail");
            assert_eq!(
                (c.slot, c.offset, c.seq, c.last_valid),
                (Some(slot), start as u64, j as u64, n as u64),
                "record {j} byte {off}"
            );
            // Open refuses, naming the slot file and the offset, and
            // changes nothing.
            match open_mem_error(&bad, wal_opts(2048)) {
                crate::Error::CorruptLog {
                    file,
                    offset,
                    record,
                    last_valid,
                } => {
                    assert_eq!(file, format!("slot-{slot:04}"));
                    assert_eq!(
                        (offset, record, last_valid),
                        (start as u64, j as u64, n as u64)
                    );
                }
                other => panic!("record {j} byte {off}: {other:?}"),
            }
            assert_eq!(recovered_seqs(&bad, 2048), seqs_to(j - 1), "unchanged");
        }
        // Truncating accepts the loss: records 1..j-1 and nothing after.
        let bad = run.dir.crash(Crash::KeepAll);
        bad.flip_bit(slot, start + (end - start) / 2, 1);
        let dir = tempfile::tempdir().unwrap();
        let e = open_mem_truncating(&dir.path().join("db"), &bad, wal_opts(2048));
        let t = e.recovery().truncated.expect("it dropped records");
        assert_eq!((t.first_dropped, t.last_dropped), (j as u64, n as u64));
        assert_eq!(t.dropped_records(), (n - j + 1) as u64);
        assert_eq!(t.file, format!("slot-{slot:04}"));
        assert!(state(&e) == run.states[j - 1], "record {j}");
    }
}

#[test]
fn a_damaged_segment_header_with_records_after_it_is_refused() {
    let n = 12;
    let tmp = tempfile::tempdir().unwrap();
    let run = record_run(&tmp.path().join("db"), 2048, n, 0, 3);
    // The first record of a later slot: its segment header precedes it.
    let k = (1..n)
        .find(|&k| run.spans[k].0 != run.spans[k - 1].0)
        .expect("the log spans several slots");
    let (slot, _, _) = run.spans[k];
    let bad = run.dir.crash(Crash::KeepAll);
    bad.flip_bit(slot, 9, 0);
    let r = Recovery::read(Box::new(bad.clone()), wal_opts(2048), 0).unwrap();
    let c = r.corruption().expect("damage");
    assert_eq!((c.seq, c.last_valid), (k as u64 + 1, n as u64));
    assert!(matches!(
        open_mem_error(&bad, wal_opts(2048)),
        crate::Error::CorruptLog { .. }
    ));
}

#[test]
fn acknowledged_commits_are_synced_under_concurrency() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = MemDir::new();
    let e = Arc::new(open_mem(&tmp.path().join("db"), &dir, wal_opts(64 << 10)));
    let threads = 4u8;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (e, acked) = (e.clone(), acked.clone());
            std::thread::spawn(move || {
                for c in 1..=150u64 {
                    let w = vec![(TreeId::Customers, vec![t], Some(c.to_be_bytes().to_vec()))];
                    commit(&e, &w).unwrap();
                    acked[t as usize].store(c, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Freeze the log several times while the writers run: whatever was
    // acknowledged before a freeze must be in its synced bytes.
    let mut frozen = Vec::new();
    while frozen.len() < 20 && !handles.iter().all(|h| h.is_finished()) {
        let seen: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        frozen.push((seen, dir.crash(Crash::DropUnsynced)));
        std::thread::yield_now();
    }
    for h in handles {
        h.join().unwrap();
    }
    let seen: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    frozen.push((seen, dir.crash(Crash::DropUnsynced)));
    for (seen, crashed) in frozen {
        let (st, _) = recover_fresh(&crashed, 64 << 10);
        for t in 0..threads {
            let got = st
                .get(&(TreeId::Customers as usize, vec![t]))
                .map_or(0, |v| u64::from_be_bytes(v.as_slice().try_into().unwrap()));
            assert!(
                got >= seen[t as usize],
                "thread {t}: acked {} recovered {got}",
                seen[t as usize]
            );
        }
    }
    let stats = e.wal().unwrap().stats();
    assert_eq!(stats.last_seq, 4 * 150);
    assert!(stats.syncs <= 4 * 150);
}

/// Group commit shares a sync among the writers waiting for one: with a
/// disk whose sync takes 2 ms and 8 writers released together, about one
/// sync per 8 commits (seen: 41 for 320). One sync per commit gives 320; a
/// leader that marks only its own record durable gave 109: both fail.
#[test]
fn writers_waiting_for_a_slow_sync_share_it() {
    use super::fault::Faults;
    let tmp = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    faults.slow_syncs(Duration::from_millis(2));
    let dir = MemDir::with_faults(faults);
    let e = Arc::new(open_mem(&tmp.path().join("db"), &dir, wal_opts(1 << 20)));
    let before = e.wal().unwrap().stats().syncs;
    let (threads, per_thread) = (8u8, 40u64);
    let barrier = Arc::new(std::sync::Barrier::new(usize::from(threads)));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 1..=per_thread {
                    let w = (TreeId::Customers, vec![t], Some(n.to_be_bytes().to_vec()));
                    commit(&e, &[w]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let commits = u64::from(threads) * per_thread;
    let syncs = e.wal().unwrap().stats().syncs - before;
    assert!(
        syncs <= commits / 4,
        "{syncs} syncs for {commits} commits from {threads} writers"
    );
}

#[test]
fn sled_ahead_of_the_log_is_kept_and_sequence_numbers_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let dir = MemDir::new();
    let e = open_mem(&path, &dir, wal_opts(4096));
    let mut rng = Rng(3);
    for i in 0..8 {
        if i == 5 {
            e.wal().unwrap().set_sync(false);
        }
        commit(&e, &random_tx(&mut rng)).unwrap();
    }
    let end = state(&e);
    drop(e); // sled flushes on drop: its files hold all 8 changes
    let crashed = dir.crash(Crash::DropUnsynced);
    let e = open_mem(&path, &crashed, wal_opts(4096));
    let report = e.recovery();
    assert_eq!((report.records_read, report.records_replayed), (5, 0));
    assert_eq!(
        report.seq, 8,
        "the new generation continues after sled's state"
    );
    assert!(state(&e) == end);
    commit(&e, &random_tx(&mut rng)).unwrap();
    assert_eq!(
        commit::applied_seq(&e).unwrap(),
        8,
        "sled gets the change in a later batch"
    );
    e.settle().unwrap();
    assert_eq!(commit::applied_seq(&e).unwrap(), 9);
}

#[test]
fn a_new_generation_ignores_the_old_ones_bytes() {
    // A slot reused by generation 2 right after a crash of generation 1:
    // records of generation 1 follow the new header, in sequence.
    let dir = MemDir::new();
    let slot = dir.create_slot(0, 4096).unwrap();
    let mut bytes = SegmentHeader {
        epoch: 2,
        segment: 1,
    }
    .encode()
    .to_vec();
    for seq in 1..=3 {
        format::encode_record(&mut bytes, 1, seq, b"\x00");
    }
    slot.write_at(&bytes, 0).unwrap();
    let cp = Checkpoint {
        epoch: 2,
        seq: 0,
        segment: 1,
        offset: SEG_HEADER_LEN as u64,
    };
    dir.write_checkpoint(&cp.encode()).unwrap();
    assert!(recovered_seqs(&dir, 4096).is_empty());
    // The same records of the right generation are read.
    let mut good = SegmentHeader {
        epoch: 2,
        segment: 1,
    }
    .encode()
    .to_vec();
    for seq in 1..=3 {
        format::encode_record(&mut good, 2, seq, b"\x00");
    }
    slot.write_at(&good, 0).unwrap();
    assert_eq!(recovered_seqs(&dir, 4096), vec![1, 2, 3]);
}

#[test]
fn a_corrupt_checkpoint_file_is_an_error_not_an_empty_log() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let dir = MemDir::new();
    drop(open_mem(&path, &dir, wal_opts(4096)));
    let mut cp = dir.read_checkpoint().unwrap().unwrap();
    cp[10] ^= 1;
    dir.write_checkpoint(&cp).unwrap();
    let d = dir.clone();
    let err = Engine::open_with_wal(&path, &engine_opts(), wal_opts(4096), move |_| {
        Ok(Box::new(d))
    })
    .unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn a_transaction_larger_than_a_segment_is_refused_and_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), wal_opts(4096));
    let before = state(&e);
    let big = vec![(TreeId::Customers, b"k".to_vec(), Some(vec![1u8; 5000]))];
    assert!(commit(&e, &big).is_err());
    assert!(state(&e) == before);
    commit(
        &e,
        &[(TreeId::Customers, b"k".to_vec(), Some(vec![1u8; 100]))],
    )
    .unwrap();
    assert_eq!(e.wal().unwrap().stats().last_seq, 1);
}

#[test]
fn checkpoints_bound_the_log_and_a_reopen_after_one_replays_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let opts = WalOptions {
        checkpoint_bytes: 16 << 10,
        ..wal_opts(4096)
    };
    // in use since the last checkpoint (its 4 segments, the current one, and
    // those written while it ran) plus the free ones kept
    let bound = 12;
    let e = open_fs(&path, opts);
    let mut rng = Rng(11);
    let mut max_slots = 0;
    for _ in 0..3000 {
        commit(&e, &random_tx(&mut rng)).unwrap();
        let slots = e.wal().unwrap().stats().slots;
        max_slots = max_slots.max(slots);
        assert!(slots <= bound, "{slots} slots");
    }
    let files = std::fs::read_dir(path.join("wal")).unwrap().count();
    let bytes: u64 = std::fs::read_dir(path.join("wal"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        files <= bound + 1 && bytes <= bound as u64 * 4096 + 48,
        "{files} files, {bytes} bytes"
    );
    // ~3000 records of ~300 bytes went through a log that never held more
    // than a dozen 4 KiB segments.
    assert!(e.wal().unwrap().stats().last_seq == 3000 && max_slots >= 4);

    // Crash (no checkpoint at the end): the tail since the last checkpoint
    // is read back; sled already holds it.
    while e.wal().unwrap().stats().since_checkpoint == 0 {
        commit(&e, &random_tx(&mut rng)).unwrap();
    }
    let last = e.wal().unwrap().stats().last_seq;
    let st = state(&e);
    drop(e);
    let e = open_fs(&path, opts);
    assert!(e.recovery().records_read > 0);
    assert_eq!(e.recovery().seq, last);
    assert!(state(&e) == st);

    // After a checkpoint nothing is left to replay.
    commit(&e, &random_tx(&mut rng)).unwrap();
    e.flush().unwrap();
    let st = state(&e);
    drop(e);
    let e = open_fs(&path, opts);
    assert_eq!(e.recovery().records_read, 0);
    assert_eq!(e.recovery().seq, last + 1);
    assert!(state(&e) == st);
}

#[test]
fn a_time_threshold_checkpoints_too() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let opts = WalOptions {
        checkpoint_interval: Duration::ZERO,
        ..wal_opts(4096)
    };
    let dir = MemDir::new();
    let e = open_mem(&path, &dir, opts);
    let mut rng = Rng(13);
    for _ in 0..5 {
        commit(&e, &random_tx(&mut rng)).unwrap();
    }
    drop(e);
    let e = open_mem(&path, &dir.crash(Crash::KeepAll), opts);
    assert_eq!(e.recovery().records_read, 0);
    assert_eq!(e.recovery().seq, 5);
}

#[test]
fn a_crash_during_recovery_recovers_the_same_way() {
    // Recovery writes nothing to the log before its checkpoint, so reading
    // it again (after a crash midway) finds the same records.
    let tmp = tempfile::tempdir().unwrap();
    let run = record_run(&tmp.path().join("db"), 4096, 9, 0, 21);
    let crashed = run.dir.crash(Crash::KeepAll);
    let first = recovered_seqs(&crashed, 4096);
    let again = recovered_seqs(&crashed, 4096);
    assert_eq!(first, again);
    assert_eq!(first, seqs_to(9));
}

fn writes_strategy() -> impl Strategy<Value = Vec<Vec<Write>>> {
    let write = (
        0..TREES.len(),
        0u8..8,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(t, k, v)| (TREES[t], vec![k], v));
    proptest::collection::vec(proptest::collection::vec(write, 1..5), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Replaying the same log twice, or over any prefix of it already
    /// applied (sled flushed midway), gives the state of applying it once,
    /// which is the state of the store that wrote it and of a plain model.
    #[test]
    fn replay_is_idempotent(txs in writes_strategy(), cut in any::<prop::sample::Index>()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = MemDir::new();
        let a = open_mem(&tmp.path().join("a"), &dir, wal_opts(4096));
        let base = state(&a);
        for tx in &txs {
            commit(&a, tx).unwrap();
        }
        let end = state(&a);
        let log = Recovery::read(Box::new(dir.crash(Crash::DropUnsynced)), wal_opts(4096), 0).unwrap();
        let records: Vec<(u64, Vec<u8>)> = log.records().map(|(s, p)| (s, p.to_vec())).collect();
        prop_assert_eq!(records.len(), txs.len());
        let iter = || records.iter().map(|(s, p)| (*s, p.as_slice()));

        let mut model = base.clone();
        for tx in &txs {
            for (t, k, v) in tx {
                match v {
                    Some(v) => model.insert((*t as usize, k.clone()), v.clone()),
                    None => model.remove(&(*t as usize, k.clone())),
                };
            }
        }
        model.insert(
            (TreeId::Meta as usize, WAL_SEQ.to_vec()),
            (txs.len() as u64).to_be_bytes().to_vec(),
        );
        prop_assert!(end == model);

        let b = Engine::temporary(&engine_opts()).unwrap();
        prop_assert!(state(&b) == base);
        commit::replay(&b, iter(), 0).unwrap();
        prop_assert!(state(&b) == end);
        commit::replay(&b, iter(), 0).unwrap();
        prop_assert!(state(&b) == end, "replayed twice");

        let p = cut.index(records.len() + 1);
        let c = Engine::temporary(&engine_opts()).unwrap();
        commit::replay(&c, iter().take(p), 0).unwrap();
        commit::replay(&c, iter(), 0).unwrap();
        prop_assert!(state(&c) == end, "replayed over a prefix of {}", p);
        let d = Engine::temporary(&engine_opts()).unwrap();
        commit::replay(&d, iter().take(p), 0).unwrap();
        commit::replay(&d, iter(), p as u64).unwrap();
        prop_assert!(state(&d) == end, "resumed after {}", p);
    }
}

#[test]
fn a_change_reaches_sled_later_and_reads_and_scans_see_it_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), wal_opts(64 << 10));
    let key = b"k1".to_vec();
    commit(&e, &[(TreeId::Apps, key.clone(), Some(b"v1".to_vec()))]).unwrap();
    // Durable in the log, not yet in sled: point reads find it in the overlay.
    assert!(e.tree(TreeId::Apps).get(&key).unwrap().is_none());
    assert_eq!(
        e.get_bytes(TreeId::Apps, &key).unwrap().unwrap().as_ref(),
        b"v1"
    );
    assert_eq!(commit::applied_seq(&e).unwrap(), 0);
    // A scan applies what its tree has waiting first.
    let rows = e.scan(TreeId::Apps, &[], 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, b"v1");
    assert_eq!(
        e.tree(TreeId::Apps).get(&key).unwrap().unwrap().as_ref(),
        b"v1"
    );
    assert_eq!(commit::applied_seq(&e).unwrap(), 1);
    assert_eq!(e.wal().unwrap().overlay().len(), 0);
    // A delete is seen the same way.
    commit(&e, &[(TreeId::Apps, key.clone(), None)]).unwrap();
    assert!(e.get_bytes(TreeId::Apps, &key).unwrap().is_none());
    assert!(e.tree(TreeId::Apps).get(&key).unwrap().is_some());
    assert!(e.scan(TreeId::Apps, &[], 10).unwrap().is_empty());
}

#[test]
fn committers_apply_batches_so_the_overlay_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), wal_opts(1 << 20));
    let value = vec![7u8; 1000];
    let mut most = 0;
    for i in 0..2_000u32 {
        commit(
            &e,
            &[(
                TreeId::Events,
                i.to_be_bytes().to_vec(),
                Some(value.clone()),
            )],
        )
        .unwrap();
        most = most.max(e.wal().unwrap().overlay().len());
    }
    // ~1 KiB records: a batch is applied every 256 KiB or so.
    assert!(most > 100, "changes wait in the overlay ({most})");
    assert!(most < 400, "and are applied in batches ({most})");
    let applied = commit::applied_seq(&e).unwrap();
    assert!(applied > 1_500, "sled holds most of them ({applied})");
    e.settle().unwrap();
    assert_eq!(commit::applied_seq(&e).unwrap(), 2_000);
    assert_eq!(e.tree(TreeId::Events).len(), 2_000);
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

#[test]
fn after_truncating_at_damage_the_dropped_records_never_come_back() {
    // Ten equal-sized records; record 7 is corrupted, so 8..10 are valid
    // but beyond the damage. Open refuses (even when it would defer the
    // replay); truncating recovers 1..=6 and starts a new generation, and
    // the new record 7 has the old one's size. After a crash that loses
    // everything unsynced, the old 8..10 must not be read, and later opens
    // see no damage any more.
    let tmp = tempfile::tempdir().unwrap();
    let dir = MemDir::new();
    let e = open_mem(&tmp.path().join("a"), &dir, wal_opts(64 << 10));
    let wal = e.wal().unwrap();
    let mut spans = Vec::new();
    for k in 1..=10u64 {
        let before = wal.position();
        fixed_commit(&e, k, 1);
        let after = wal.position();
        spans.push((after.1.unwrap(), before.2 as usize, after.2 as usize));
    }
    let (slot, start, end) = spans[6];
    assert_eq!(end - start, spans[7].2 - spans[7].1, "equal record sizes");
    dir.flip_bit(slot, start + (end - start) / 2, 3);
    drop(e);

    let crashed = dir.crash(Crash::KeepAll);
    assert!(matches!(
        open_mem_error(&crashed, deferred(wal_opts(64 << 10))),
        crate::Error::CorruptLog {
            record: 7,
            last_valid: 10,
            ..
        }
    ));
    let path = tmp.path().join("b");
    let e = open_mem_truncating(&path, &crashed, deferred(wal_opts(64 << 10)));
    let r = e.recovery();
    assert!(!r.deferred, "a truncating recovery replays first");
    assert_eq!((r.records_replayed, r.seq), (6, 6));
    assert_eq!(r.truncated.map(|t| t.dropped_records()), Some(4));
    assert_eq!(customer(&e, 6), Some(vec![1u8; 100]));
    assert!(customer(&e, 8).is_none());
    // The log goes on from record 7, in a new generation.
    fixed_commit(&e, 7, 2);
    assert_eq!(e.wal().unwrap().stats().last_seq, 7);
    let mut expected = state(&e);
    drop(e);

    for how in [Crash::DropUnsynced, Crash::KeepAll] {
        let again = crashed.crash(how);
        assert_eq!(
            Recovery::read(Box::new(again.clone()), wal_opts(64 << 10), 0)
                .unwrap()
                .corruption(),
            None
        );
        let (st, replayed) = recover_fresh(&again, 64 << 10);
        assert_eq!(
            replayed, 1,
            "{how:?}: the new record 7 after the checkpoint"
        );
        let customers = |st: &State| -> State {
            st.iter()
                .filter(|((tree, _), _)| *tree == TreeId::Customers as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let fresh = customers(&st);
        assert_eq!(
            fresh.get(&(TreeId::Customers as usize, 7u64.to_be_bytes().to_vec())),
            Some(&vec![2u8; 100]),
            "{how:?}"
        );
        assert!(!st.contains_key(&(TreeId::Customers as usize, 8u64.to_be_bytes().to_vec())));
    }
    // Reopening the same directory replays nothing more, and the log goes on.
    let e = open_mem(&path, &crashed, deferred(wal_opts(64 << 10)));
    assert!(!e.recovery().deferred);
    fixed_commit(&e, 11, 3);
    expected.insert(
        (TreeId::Customers as usize, 11u64.to_be_bytes().to_vec()),
        vec![3; 100],
    );
    let customers = |st: State| -> State {
        st.into_iter()
            .filter(|((tree, _), _)| *tree == TreeId::Customers as usize)
            .collect()
    };
    assert!(customers(state(&e)) == customers(expected));
}

#[test]
fn a_deferred_replay_drains_into_sled_and_a_checkpoint_recycles_the_old_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = MemDir::new();
    let e = open_mem(&tmp.path().join("a"), &dir, wal_opts(4096));
    for k in 1..=200u64 {
        fixed_commit(&e, k, 1);
    }
    let expected = state(&e);
    drop(e);
    let crashed = dir.crash(Crash::DropUnsynced);
    let path = tmp.path().join("b");
    let e = open_mem(&path, &crashed, deferred(wal_opts(4096)));
    assert!(e.recovery().deferred);
    let slots_before = e.wal().unwrap().stats().slots;
    assert!(slots_before > 5, "the 200 records fill several segments");
    // One batch (chunks of the deduplicated changes) reaches sled; sled's
    // applied number stays put until the last chunk, so a crash now
    // replays everything again, over a state the batch only advanced.
    commit::settle(&e, commit::Settle::Writes(16)).unwrap();
    assert_eq!(commit::applied_seq(&e).unwrap(), 0);
    assert!(!e.tree(TreeId::Customers).is_empty());
    drop(e); // sled flushes its files; no checkpoint
    let e = open_mem(&path, &crashed, deferred(wal_opts(4096)));
    assert!(e.recovery().deferred);
    assert_eq!(e.recovery().records_replayed, 200);
    assert!(state(&e) == expected);
    drop(e);
    let e = open_mem(&path, &crashed, deferred(wal_opts(4096)));
    // A change after the deferred ones, to a key they wrote: once all is
    // applied (the deferred chunks and it, in one batch), reads see it.
    fixed_commit(&e, 5, 9);
    e.settle().unwrap();
    assert_eq!(customer(&e, 5), Some(vec![9u8; 100]));
    let mut expected = expected;
    expected.insert(
        (TreeId::Customers as usize, 5u64.to_be_bytes().to_vec()),
        vec![9; 100],
    );
    let customers = |st: &State| -> State {
        st.iter()
            .filter(|((tree, _), _)| *tree == TreeId::Customers as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert!(customers(&state(&e)) == customers(&expected));
    e.flush().unwrap();
    assert_eq!(commit::applied_seq(&e).unwrap(), 201);
    drop(e);
    let e = open_mem(&path, &crashed, deferred(wal_opts(4096)));
    assert_eq!(
        e.recovery().records_read,
        0,
        "the checkpoint passed them all"
    );
    assert!(customers(&state(&e)) == customers(&expected));
}
