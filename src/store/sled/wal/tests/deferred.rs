//! Deferred commits (`deferred.rs`): they return once appended, their own
//! thread reads them at once, nobody else before the sync that another
//! thread runs, and they leave their housekeeping to that thread.

use super::super::fault::{Faults, Op};
use super::*;

/// What another thread reads of customer `k`.
fn elsewhere(e: &Engine, k: &[u8]) -> Option<Vec<u8>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            e.get_bytes(TreeId::Customers, k)
                .unwrap()
                .map(|v| v.to_vec())
        })
        .join()
        .unwrap()
    })
}

fn put(k: &[u8], v: u8) -> Vec<Write> {
    vec![(TreeId::Customers, k.to_vec(), Some(vec![v]))]
}

/// A deferred commit returns before any sync: a crash then loses it, and
/// other threads do not see it, while its own thread reads it at once (an
/// operation that commits and reads again behaves as after a durable
/// commit). `sync_appended` makes it durable and visible. Outside the
/// deferring code, commits wait for their sync again.
#[test]
fn a_deferred_commit_is_read_by_its_own_thread_and_by_others_once_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = MemDir::new();
    let e = open_mem(&tmp.path().join("db"), &dir, wal_opts(1 << 20));
    let wal = e.wal().unwrap();
    commit(&e, &put(b"a", 1)).unwrap();
    let syncs = wal.stats().syncs;

    let ((), seq) = wal.deferring(|| {
        commit(&e, &put(b"a", 2)).unwrap();
        commit(&e, &put(b"b", 3)).unwrap();
        assert_eq!(customer_at(&e, b"a"), Some(vec![2]));
        assert_eq!(customer_at(&e, b"b"), Some(vec![3]));
        assert_eq!(elsewhere(&e, b"a"), Some(vec![1]));
        assert_eq!(elsewhere(&e, b"b"), None);
    });
    assert_eq!(seq, wal.stats().last_seq);
    assert_eq!(
        wal.stats().syncs,
        syncs,
        "a deferred commit waited for a sync"
    );
    assert!(wal.overlay().durable() < seq);
    // Outside it, this thread reads as any other.
    assert_eq!(customer_at(&e, b"a"), Some(vec![1]));
    let (lost, _) = recover_fresh(&dir.crash(Crash::DropUnsynced), 1 << 20);
    assert!(!lost.contains_key(&(TreeId::Customers as usize, b"b".to_vec())));

    assert_eq!(wal.sync_appended().unwrap(), seq);
    assert_eq!(wal.stats().syncs, syncs + 1);
    assert_eq!(elsewhere(&e, b"a"), Some(vec![2]));
    assert_eq!(elsewhere(&e, b"b"), Some(vec![3]));
    let (kept, _) = recover_fresh(&dir.crash(Crash::DropUnsynced), 1 << 20);
    assert_eq!(
        kept.get(&(TreeId::Customers as usize, b"b".to_vec())),
        Some(&vec![3])
    );

    // Nothing waits: a sync returns at once, and a commit outside the
    // deferring code waits for its own.
    assert_eq!(wal.sync_appended().unwrap(), seq);
    assert_eq!(wal.stats().syncs, syncs + 1);
    commit(&e, &put(b"c", 4)).unwrap();
    assert_eq!(wal.stats().syncs, syncs + 2);
    assert_eq!(elsewhere(&e, b"c"), Some(vec![4]));
}

/// A commit's housekeeping (here a checkpoint, due after every byte) is
/// left by a deferred commit to whoever syncs it: the deferring thread
/// does no blocking I/O beyond its append. `housekeeping_due` says so, and
/// `housekeep` does it.
#[test]
fn a_deferred_commit_leaves_its_housekeeping_to_the_syncing_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        checkpoint_bytes: 1,
        ..wal_opts(1 << 20)
    };
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), opts);
    let wal = e.wal().unwrap();
    let checkpoints = || wal.counters().checkpoints.load(Ordering::SeqCst);
    commit(&e, &put(b"a", 1)).unwrap();
    let before = checkpoints();
    assert!(
        before > 0,
        "a commit outside the deferring code checkpoints"
    );
    assert!(!e.housekeeping_due());

    let ((), seq) = wal.deferring(|| commit(&e, &put(b"a", 2)).unwrap());
    assert!(seq > 0);
    assert_eq!(checkpoints(), before);
    e.sync_deferred().unwrap();
    assert!(e.housekeeping_due());
    e.housekeep();
    assert_eq!(checkpoints(), before + 1);
    assert!(!e.housekeeping_due());
}

/// A failed sync of deferred records reports the failure to the syncing
/// thread (whether they survive is unknown) and puts the log in its failed
/// state: a later deferred commit is refused, and the records it could not
/// sync never become visible.
#[test]
fn a_failed_sync_of_deferred_records_fails_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let e = open_mem(
        &tmp.path().join("db"),
        &MemDir::with_faults(faults.clone()),
        wal_opts(1 << 20),
    );
    let wal = e.wal().unwrap();
    commit(&e, &put(b"a", 1)).unwrap();
    let ((), seq) = wal.deferring(|| commit(&e, &put(b"a", 2)).unwrap());
    // The sync writes the record, then syncs: fail the sync.
    faults.arm(1);
    let err = e.sync_deferred().unwrap_err();
    assert_eq!(faults.fired().map(|f| f.op), Some(Op::WalSync), "{err}");
    assert!(
        matches!(&err, crate::Error::Storage(s) if s.must_reopen()),
        "{err}"
    );
    assert!(err.to_string().contains("unknown"), "{err}");
    assert!(wal.overlay().durable() < seq);
    assert_eq!(elsewhere(&e, b"a"), Some(vec![1]));
    let ((), again) = wal.deferring(|| assert!(commit(&e, &put(b"b", 3)).is_err()));
    assert_eq!(again, 0);
    assert!(e.sync_deferred().is_err());
}

fn customer_at(e: &Engine, k: &[u8]) -> Option<Vec<u8>> {
    e.get_bytes(TreeId::Customers, k)
        .unwrap()
        .map(|v| v.to_vec())
}

/// A group's leader lets a thread running deferring code append before it
/// syncs (an async worker handling a write: its record would otherwise
/// need a sync of its own right after this one), until it appended its
/// first record or left without one (a read).
#[test]
fn a_leader_gathers_the_threads_deferring_until_they_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), wal_opts(1 << 20));
    let wal = e.wal().unwrap();
    assert!(wal.gathered());
    let ((), seq) = wal.deferring(|| {
        assert!(!wal.gathered(), "a deferring thread is not waited for");
        commit(&e, &put(b"a", 1)).unwrap();
        assert!(wal.gathered(), "still waited for once it appended");
        commit(&e, &put(b"b", 2)).unwrap();
        assert!(wal.gathered());
    });
    assert!(seq > 0);
    assert!(wal.gathered());
    let ((), none) = wal.deferring(|| assert!(!wal.gathered()));
    assert_eq!(none, 0);
    assert!(wal.gathered(), "still waited for after a deferring read");
    wal.sync_appended().unwrap();
    assert!(wal.gathered());
}

/// After a reopen, a sync with nothing appended yet covers nothing: the
/// first commit after it still waits for a sync of its own, and survives a
/// crash that drops what was not synced. (cargo mutants: a log that started
/// with its last appended sequence number one ahead passed every other
/// test; such a sync then counted the next record as durable before it
/// existed, and its commit returned without one.)
#[test]
fn a_sync_before_the_first_commit_after_a_reopen_covers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let dir = MemDir::new();
    {
        let e = open_mem(&path, &dir, wal_opts(1 << 20));
        commit(&e, &put(b"j", 1)).unwrap();
    }
    let e = open_mem(&path, &dir, wal_opts(1 << 20));
    let wal = e.wal().unwrap();
    let (last, syncs) = (wal.stats().last_seq, wal.stats().syncs);
    assert_eq!(wal.sync_appended().unwrap(), last);
    assert_eq!(wal.stats().syncs, syncs, "nothing was there to sync");
    commit(&e, &put(b"k", 7)).unwrap();
    assert_eq!(wal.stats().last_seq, last + 1);
    assert_eq!(wal.stats().syncs, syncs + 1, "the commit synced its record");
    let (kept, _) = recover_fresh(&dir.crash(Crash::DropUnsynced), 1 << 20);
    assert_eq!(
        kept.get(&(TreeId::Customers as usize, b"k".to_vec())),
        Some(&vec![7])
    );
}
