//! Checkpoints: bounded by size and time, a reopen after one replays
//! nothing, a deferred replay drains and the old log is recycled.

use super::*;

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
