//! Applying durable records to sled: later, in batches, with reads and
//! scans seeing changes at once, and sled ahead of the log kept.

use super::*;

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
    let mut events = 0;
    e.sled_for_each(TreeId::Events, &mut |_, _| {
        events += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(events, 2_000);
}
