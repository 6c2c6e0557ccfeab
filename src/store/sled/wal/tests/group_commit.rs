//! The writer and group commit: acknowledged commits are synced, writers
//! share a slow sync, a record too large for a segment is refused.

use std::time::Instant;

use super::*;

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
    use super::super::fault::Faults;
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

/// The size limit is exact and the commit path's own: a payload of exactly
/// the largest size that fits a segment commits; one byte more is refused
/// before the log writer sees it, with the error that says why, and the log
/// goes on.
#[test]
fn a_transaction_of_exactly_the_largest_payload_fits_and_one_byte_more_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = wal_opts(4096);
    let max = opts.max_payload();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), opts);
    // One put of key "k" with n value bytes: count, tag, key length, key,
    // value length (2 bytes for these sizes), value.
    let put = |n: usize| vec![(TreeId::Customers, b"k".to_vec(), Some(vec![1u8; n]))];
    let n = max - 6;
    let before = state(&e);
    let err = commit(&e, &put(n + 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than a write-ahead log segment"),
        "{err}"
    );
    assert!(state(&e) == before);
    commit(&e, &put(n)).unwrap();
    assert_eq!(e.wal().unwrap().stats().last_seq, 1);
}

/// A store whose log has a 20 s commit delay (a wait that long fails the
/// tests below).
fn delayed(tmp: &tempfile::TempDir) -> Arc<Engine> {
    let opts = WalOptions {
        commit_delay: Duration::from_secs(20),
        ..wal_opts(1 << 20)
    };
    Arc::new(open_mem(&tmp.path().join("db"), &MemDir::new(), opts))
}

/// A thread hashing a new password, its commit (`key` = 1) announced:
/// returns once it is announced; the thread commits when told through the
/// sender.
fn hashing_until_told(
    e: &Arc<Engine>,
    key: &'static [u8],
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let e = e.clone();
    let (announced_tx, announced) = std::sync::mpsc::channel();
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let expected = e.expect_commit();
        assert!(expected.is_some());
        announced_tx.send(()).unwrap();
        go.recv().unwrap(); // hashing until told
        commit(&e, &[(TreeId::Customers, key.to_vec(), Some(vec![1]))]).unwrap();
        drop(expected);
    });
    announced.recv().unwrap();
    (thread, go_tx)
}

/// A password change on its own thread: its commit (`key` = `value`) is
/// announced, so as a group's leader it may wait for other announced ones.
fn password_change(e: &Arc<Engine>, key: &'static [u8], value: u8) -> std::thread::JoinHandle<()> {
    let e = e.clone();
    std::thread::spawn(move || {
        let mine = e.expect_commit();
        assert!(mine.is_some());
        commit(&e, &[(TreeId::Customers, key.to_vec(), Some(vec![value]))]).unwrap();
        drop(mine);
    })
}

/// Returns once a group commit's leader waits for announced commits
/// (fails after 10 s from `since`).
fn until_a_leader_delays(e: &Engine, since: Instant) {
    let wal = e.wal().unwrap();
    while !wal
        .leader_delaying
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        assert!(since.elapsed() < Duration::from_secs(10), "no leader waits");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With a commit delay, a leader whose own commit was announced (a
/// password change) waits for a commit announced by a thread that is still
/// hashing: one sync covers both. Without the wait (the expectation
/// ignored) the leader syncs alone and the second commit needs a sync of
/// its own: 2.
#[test]
fn a_commit_delay_waits_for_an_announced_commit_and_one_sync_covers_both() {
    let tmp = tempfile::tempdir().unwrap();
    let e = delayed(&tmp);
    let before = e.wal().unwrap().stats().syncs;
    let (announced_tx, announced) = std::sync::mpsc::channel();
    let hashing = {
        let e = e.clone();
        std::thread::spawn(move || {
            let expected = e.expect_commit();
            assert!(expected.is_some());
            announced_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50)); // the hash
            commit(&e, &[(TreeId::Customers, b"h".to_vec(), Some(vec![1]))]).unwrap();
            drop(expected);
        })
    };
    announced.recv().unwrap();
    let mine = e.expect_commit();
    assert!(mine.is_some());
    let t = Instant::now();
    commit(&e, &[(TreeId::Customers, b"m".to_vec(), Some(vec![2]))]).unwrap();
    let waited = t.elapsed();
    drop(mine);
    hashing.join().unwrap();
    assert_eq!(e.wal().unwrap().stats().syncs - before, 1);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    let h = e.get_bytes(TreeId::Customers, b"h").unwrap();
    assert_eq!(h.map(|v| v.to_vec()), Some(vec![1]));
}

/// A commit that announced nothing (a write that hashes nothing: a reset
/// request, a login's counters) is never held by the commit delay, however
/// many password changes hash beside it: alone it syncs at once, and a
/// leader already waiting for announced commits stops waiting when it
/// arrives. Here the announced commit cannot happen before those commits
/// return: had either waited for it, it would have waited the whole 20 s.
#[test]
fn a_commit_that_announced_nothing_is_not_held_by_the_delay() {
    let tmp = tempfile::tempdir().unwrap();
    let e = delayed(&tmp);
    let (hashing, go_tx) = hashing_until_told(&e, b"h");
    // Alone: a commit that announced nothing does not wait for "h".
    let t = Instant::now();
    commit(&e, &[(TreeId::Customers, b"u".to_vec(), Some(vec![2]))]).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // A password change leads and waits for "h"...
    let t = Instant::now();
    let patient = password_change(&e, b"p", 3);
    until_a_leader_delays(&e, t);
    // ...until a commit that announced nothing arrives: both return.
    commit(&e, &[(TreeId::Customers, b"v".to_vec(), Some(vec![4]))]).unwrap();
    patient.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    go_tx.send(()).unwrap();
    hashing.join().unwrap();
    for (k, v) in [(&b"u"[..], 2), (b"p", 3), (b"v", 4), (b"h", 1)] {
        let got = e.get_bytes(TreeId::Customers, k).unwrap();
        assert_eq!(got.map(|v| v.to_vec()), Some(vec![v]));
    }
}

/// An announcement is withdrawn when its thread drops it without
/// committing (a refused change), and taken over when the thread commits:
/// either way nobody waits for it afterwards. A leaked announcement would
/// hold every later commit for the whole delay (20 s here).
#[test]
fn a_withdrawn_or_fulfilled_announcement_holds_no_later_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let e = delayed(&tmp);
    // Fulfilled on this thread, then the guard dropped after the commit.
    let expected = e.expect_commit();
    assert!(expected.is_some());
    // A second announcement on the same thread is not counted twice.
    assert!(e.expect_commit().is_none());
    // Its own commit takes it over: the thread does not wait for itself.
    let t = Instant::now();
    commit(&e, &[(TreeId::Customers, b"a".to_vec(), Some(vec![1]))]).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(expected);
    // Withdrawn on another thread while a leader waits for it.
    let (announced_tx, announced) = std::sync::mpsc::channel();
    let refused = {
        let e = e.clone();
        std::thread::spawn(move || {
            let expected = e.expect_commit();
            announced_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(expected);
        })
    };
    announced.recv().unwrap();
    let mine = e.expect_commit();
    assert!(mine.is_some());
    let t = Instant::now();
    commit(&e, &[(TreeId::Customers, b"b".to_vec(), Some(vec![2]))]).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(mine);
    refused.join().unwrap();
    // Nothing announced any more: a commit does not wait at all.
    let t = Instant::now();
    commit(&e, &[(TreeId::Customers, b"c".to_vec(), Some(vec![3]))]).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Without a commit delay nothing is announced.
#[test]
fn without_a_commit_delay_nothing_is_announced() {
    let tmp = tempfile::tempdir().unwrap();
    let e = open_mem(&tmp.path().join("db"), &MemDir::new(), wal_opts(1 << 20));
    assert!(e.expect_commit().is_none());
}

/// The delay waits only while more commits are announced than hashes run
/// at once (`delay_beyond`, the hashing limit: then some wait for a slot,
/// and the CPU keeps hashing for them meanwhile). With a limit of 1: one
/// announced commit hashing beside a password change does not hold it;
/// two do, until one of them commits.
#[test]
fn the_delay_waits_only_while_more_commits_are_announced_than_hashes_run() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        commit_delay: Duration::from_secs(20),
        delay_beyond: 1,
        ..wal_opts(1 << 20)
    };
    let e = Arc::new(open_mem(&tmp.path().join("db"), &MemDir::new(), opts));
    let (first, go_first) = hashing_until_told(&e, b"h1");
    // One announced commit, not more than the limit: no wait.
    let t = Instant::now();
    let mine = e.expect_commit();
    commit(&e, &[(TreeId::Customers, b"a".to_vec(), Some(vec![2]))]).unwrap();
    drop(mine);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Two: a password change waits for them...
    let (second, go_second) = hashing_until_told(&e, b"h2");
    let t = Instant::now();
    let patient = password_change(&e, b"b", 3);
    until_a_leader_delays(&e, t);
    // ...until one of them commits: one left, no more than the limit.
    go_first.send(()).unwrap();
    first.join().unwrap();
    patient.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    go_second.send(()).unwrap();
    second.join().unwrap();
}

/// A deferred commit (`deferred.rs`: an HTTP request that hashes nothing,
/// answered once another thread synced its record) is never held by the
/// commit delay either: its record waits for a sync with no thread
/// committing, so a password change that leads a group meanwhile syncs it
/// at once instead of waiting for the commit still hashing. Had it
/// waited, it would have waited the whole 20 s.
#[test]
fn a_deferred_record_waiting_for_a_sync_is_not_held_by_the_delay() {
    let tmp = tempfile::tempdir().unwrap();
    let e = delayed(&tmp);
    let wal = e.wal().unwrap();
    let (hashing, go_tx) = hashing_until_told(&e, b"h");
    let ((), seq) = wal.deferring(|| {
        commit(&e, &[(TreeId::Customers, b"d".to_vec(), Some(vec![5]))]).unwrap();
    });
    assert!(seq > wal.overlay().durable());
    let t = Instant::now();
    password_change(&e, b"p", 3).join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(wal.overlay().durable() >= seq);
    go_tx.send(()).unwrap();
    hashing.join().unwrap();
}
