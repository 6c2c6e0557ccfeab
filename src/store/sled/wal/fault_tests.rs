//! Faults at the file layer (SPEC §11), in the spirit of SQLite's I/O-error
//! tests: a fixed sequence of commits and checkpoints runs once to count its
//! writes and syncs (of the log, of the checkpoint file, of sled's files),
//! then once per operation with that one operation failing. After the fault
//! every write is refused with the "reopen" error, reads still see every
//! acknowledged change, no checkpoint is recorded, and reopening after a
//! crash (sled as of its last good sync, the log without what it never
//! synced) recovers every acknowledged change, checked against a model of
//! what was acknowledged. Failures that lose nothing (a slot that cannot be
//! created, a surplus slot that cannot be removed) refuse at most the write
//! that met them, and the store goes on.
//!
//! Also here: the window right after a deferred replay (issue 11).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::fault::{Crash, Faults, FaultyData, Fired, MemDir, Op};
use super::tests::{
    Rng, State, Write, commit, customer, deferred, engine_opts, fixed_commit, open_mem, random_tx,
    state, unlocked, wal_opts,
};
use super::{WalDir, WalOptions, lock};
use crate::Error;
use crate::store::Health;
use crate::store::backend::{Backend, BackendTx};
use crate::store::schema::TreeId;
use crate::store::sled::{OpenWith, SledBackend as Engine};

/// One step of the workload.
enum Step {
    Commit(Vec<Write>),
    /// An explicit checkpoint ([`Engine::flush`]).
    Checkpoint,
}

const STEPS: usize = 40;

/// The workload: random transactions over 2 KiB segments (so the log moves
/// to new slots and prepares spares), then a stretch of records too big for
/// two to share a segment (so that a checkpoint frees more slots than it
/// keeps and removes some), a checkpoint every ~6 KB of log from the
/// committers' housekeeping, and explicit checkpoints.
fn workload() -> Vec<Step> {
    let mut rng = Rng(0x5eed_f00d);
    (0..STEPS)
        .map(|i| {
            if i % 13 == 12 {
                Step::Checkpoint
            } else if (18..30).contains(&i) {
                let k = i as u8;
                Step::Commit(vec![(TreeId::Resets, vec![k % 5], Some(vec![k; 1100]))])
            } else {
                Step::Commit(random_tx(&mut rng))
            }
        })
        .collect()
}

fn opts(sync: bool) -> WalOptions {
    WalOptions {
        checkpoint_bytes: 6000,
        sync,
        ..wal_opts(2048)
    }
}

fn open_faulty(path: &Path, dir: &MemDir, data: &Arc<FaultyData>, opts: WalOptions) -> Engine {
    unlocked(|| {
        let dir = dir.clone();
        let with = OpenWith {
            wal_dir: move |_: &Path| -> std::io::Result<Box<dyn WalDir>> { Ok(Box::new(dir)) },
            wal_opts: opts,
            data_files: data.clone(),
            truncate_at_corruption: false,
        };
        Engine::open_with(path, &engine_opts(), with)
    })
}

fn apply(model: &mut State, writes: &[Write]) {
    for (tree, key, value) in writes {
        let k = (*tree as usize, key.clone());
        match value {
            Some(v) => model.insert(k, v.clone()),
            None => model.remove(&k),
        };
    }
}

/// The workload's keys as point reads see them.
fn visible(e: &Engine, keys: &BTreeSet<(usize, Vec<u8>)>) -> State {
    keys.iter()
        .filter_map(|(tree, key)| {
            let v = e.get_bytes(TreeId::ALL[*tree], key).unwrap()?;
            Some(((*tree, key.clone()), v.to_vec()))
        })
        .collect()
}

/// sled's contents without the meta tree: what the workload wrote.
fn written(st: State) -> State {
    st.into_iter()
        .filter(|((tree, _), _)| *tree != TreeId::Meta as usize)
        .collect()
}

fn must_reopen(e: &Error) -> bool {
    matches!(e, Error::Storage(s) if s.must_reopen())
}

/// Whether a failure of `op` puts the store in its failed state.
fn fails_the_store(op: Op) -> bool {
    !matches!(op, Op::CreateSlot | Op::RemoveSlot)
}

/// Runs the workload on a fresh store with operation `fail_at` (counted
/// from the end of the open) failing, checks the store in the process and
/// after crashes, and returns the operations counted.
fn run(tmp: &Path, sync: bool, fail_at: Option<u64>) -> u64 {
    let faults = Faults::default();
    let dir = MemDir::with_faults(faults.clone());
    let data = Arc::new(FaultyData::new(&dir));
    let path = tmp.join("db");
    let e = open_faulty(&path, &dir, &data, opts(sync));
    if let Some(n) = fail_at {
        faults.arm(n);
    }
    let start = faults.count();
    let at = |i: usize| format!("{fail_at:?} (sync {sync}), step {i}");

    let mut acked = State::new();
    let mut keys = BTreeSet::new();
    // The writes of the call that met a failed sync or write: their fate
    // is unknown (they may be found after a reopen, or not).
    let mut maybe: Option<Vec<Write>> = None;
    let failed = |f: &Option<Fired>| f.as_ref().is_some_and(|f| fails_the_store(f.op));
    let steps = workload();
    let extra: Vec<Step> = (0..3)
        .map(|_| Step::Commit(random_tx(&mut Rng(9))))
        .collect();
    for (i, step) in steps.iter().chain(&extra).enumerate() {
        let before = faults.fired();
        match step {
            Step::Commit(writes) => {
                keys.extend(writes.iter().map(|(t, k, _)| (*t as usize, k.clone())));
                match commit(&e, writes) {
                    Ok(()) => {
                        assert!(
                            !failed(&before),
                            "{}: acknowledged after the failure",
                            at(i)
                        );
                        apply(&mut acked, writes);
                    }
                    Err(err) => {
                        let now = faults.fired();
                        assert!(now.is_some(), "{}: refused without a fault: {err}", at(i));
                        if failed(&now) {
                            assert!(must_reopen(&err), "{}: {err}", at(i));
                            if before.is_none() {
                                maybe = Some(writes.clone());
                            }
                        } else {
                            // Only a slot that could not be created refuses a
                            // write; the refusal changed nothing.
                            assert!(before.is_none(), "{}: refused again: {err}", at(i));
                            assert_eq!(now.map(|f| f.op), Some(Op::CreateSlot), "{}", at(i));
                            assert!(
                                matches!(&err, Error::Storage(s) if s.is_disk_full() && !s.must_reopen()),
                                "{}: {err}",
                                at(i)
                            );
                        }
                    }
                }
            }
            Step::Checkpoint => match e.flush() {
                Ok(()) => assert!(
                    !failed(&faults.fired()),
                    "{}: a checkpoint after the failure",
                    at(i)
                ),
                Err(err) => {
                    assert!(failed(&faults.fired()), "{}: {err}", at(i));
                    assert!(must_reopen(&err), "{}: {err}", at(i));
                }
            },
        }
        let fired = faults.fired();
        if failed(&fired) {
            assert!(!e.health().is_writable(), "{}", at(i));
        } else {
            assert_eq!(e.health(), Health::Writable, "{}", at(i));
        }
        // Reads see exactly what was acknowledged, fault or not.
        assert!(visible(&e, &keys) == acked, "{}: reads", at(i));
    }
    let counted = faults.count() - start;
    let fired = faults.fired();
    match fail_at {
        None => assert!(fired.is_none()),
        Some(_) => assert!(fired.is_some(), "{fail_at:?}: never reached"),
    }
    if let Some(f) = fired.as_ref().filter(|f| fails_the_store(f.op)) {
        assert!(matches!(e.health(), Health::Failed { .. }));
        assert!(must_reopen(&e.flush().unwrap_err()));
        assert_eq!(
            dir.checkpoint(),
            f.checkpoint,
            "{fail_at:?}: no checkpoint after the failure"
        );
    }

    // Crashes: sled as of its last good sync, the log without its unsynced
    // bytes (only when syncing: otherwise acknowledged means written) or
    // with all of them.
    let maybe_state = maybe.as_ref().map(|w| {
        let mut st = acked.clone();
        apply(&mut st, w);
        st
    });
    let check = |e: &Engine, what: &str| {
        let st = written(state(e));
        assert!(
            st == acked || Some(&st) == maybe_state.as_ref(),
            "{fail_at:?} (sync {sync}) {what}: reopening lost or invented a change"
        );
        assert_eq!(e.health(), Health::Writable);
        commit(e, &random_tx(&mut Rng(77))).unwrap();
    };
    let crashes: &[Crash] = if sync {
        &[Crash::DropUnsynced, Crash::KeepAll]
    } else {
        &[Crash::KeepAll]
    };
    for (n, how) in crashes.iter().enumerate() {
        let crashed = dir.crash(*how);
        let p = tmp.join(format!("crash-{n}"));
        FaultyData::restore(&data.durable(), &p);
        check(&open_mem(&p, &crashed, opts(sync)), &format!("{how:?}"));
    }
    drop(e);
    let crashed = dir.crash(Crash::KeepAll);
    check(&open_mem(&path, &crashed, deferred(opts(sync))), "in place");
    counted
}

#[test]
fn every_failed_write_and_sync_of_the_log_and_of_checkpoints_loses_nothing_acknowledged() {
    for sync in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let total = run(tmp.path(), sync, None);
        assert!(total > 40, "the workload does I/O ({total} operations)");
        eprintln!("fault test (sync {sync}): each of {total} writes and syncs fails once");
        let mut seen = BTreeSet::new();
        for n in 0..total {
            let tmp = tempfile::tempdir().unwrap();
            run(tmp.path(), sync, Some(n));
            seen.insert(n);
        }
        assert_eq!(seen.len() as u64, total);
    }
}

/// Right after a deferred replay, a batch applies the replay's last chunk
/// and a later record writing the same key. Between releasing the replay's
/// changes and forgetting the later record's versions (a fail point there),
/// readers and writers must see the later value, never the replay's older
/// one (issue 11: forgetting first let it show through, so a used token
/// could look unused).
#[test]
fn right_after_a_deferred_replay_no_older_value_is_ever_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = MemDir::new();
    let e = open_mem(&tmp.path().join("a"), &dir, wal_opts(64 << 10));
    for k in 1..=5 {
        fixed_commit(&e, k, 1);
    }
    drop(e);
    let crashed = dir.crash(Crash::KeepAll);
    let e = open_mem(
        &tmp.path().join("b"),
        &crashed,
        deferred(wal_opts(64 << 10)),
    );
    assert!(e.recovery().deferred);
    // Key 3 again, over the replay's value.
    fixed_commit(&e, 3, 2);
    assert_eq!(customer(&e, 3), Some(vec![2; 100]));

    let (paused_tx, paused) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    *lock(&e.wal().unwrap().between_thaw_and_forget) = Some(Arc::new(move || {
        let _ = paused_tx.send(());
        let _ = lock(&go_rx).recv_timeout(Duration::from_secs(30));
    }));
    std::thread::scope(|s| {
        let applier = s.spawn(|| e.settle());
        paused
            .recv_timeout(Duration::from_secs(30))
            .expect("the applier reaches the fail point");
        // A reader and a writer (a transaction's read), mid-apply.
        assert_eq!(
            customer(&e, 3),
            Some(vec![2; 100]),
            "a reader saw an older value"
        );
        let seen = std::cell::RefCell::new(None);
        e.transact(&|tx: &dyn BackendTx| {
            tx.get(TreeId::Customers, &3u64.to_be_bytes(), &mut |v| {
                *seen.borrow_mut() = v.map(<[u8]>::to_vec);
            })
        })
        .unwrap();
        assert_eq!(
            seen.into_inner(),
            Some(vec![2; 100]),
            "a writer saw an older value"
        );
        // The replay's other keys are in sled by now.
        assert_eq!(customer(&e, 4), Some(vec![1; 100]));
        go.send(()).unwrap();
        applier.join().unwrap().unwrap();
    });
    *lock(&e.wal().unwrap().between_thaw_and_forget) = None;
    assert_eq!(customer(&e, 3), Some(vec![2; 100]));
    assert_eq!(e.wal().unwrap().overlay().len(), 0, "all applied");
}

/// When the log moves on to a new segment, nothing is written to the new
/// one before the earlier one is synced (a group commit spanning both
/// syncs the earlier first; without group commit the writer syncs it when
/// it moves on). A valid record after a missing one then always means
/// damage, never a group torn across two files by a power loss.
#[test]
fn a_new_segment_gets_records_only_once_the_earlier_one_is_synced() {
    for sync in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = MemDir::checking_order();
        let opts = WalOptions {
            sync,
            ..wal_opts(2048)
        };
        let e = Arc::new(open_mem(&tmp.path().join("db"), &dir, opts));
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let e = e.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng(t + 1);
                    for _ in 0..150 {
                        commit(&e, &random_tx(&mut rng)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let (segment, _, _) = e.wal().unwrap().position();
        assert!(
            segment > 20,
            "the log went through many segments ({segment})"
        );
        assert_eq!(dir.order_violations(), Vec::<String>::new(), "sync {sync}");
    }
}
