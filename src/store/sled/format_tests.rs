//! The packed trees in a whole sled backend: stores of format version 1
//! still read and write as before, compaction moves them to version 2,
//! another version is refused, and readers never miss a row while the
//! applier cuts and replaces blocks under them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::compact::{CompactPages, compact};
use super::wal::tests::engine_opts as opts;
use super::{FORMAT_PACKED, SledBackend, packed, raw_sled_config};
use crate::error::Error;
use crate::store::backend::{Backend, get_owned};
use crate::store::meta;
use crate::store::schema::TreeId;

fn email(i: u64) -> Vec<u8> {
    // Not in the order of `i`: inserts land all over the index.
    format!("{:016x}@example.com", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()
}

fn get(b: &SledBackend, tree: TreeId, key: &[u8]) -> Option<Vec<u8>> {
    get_owned(|found| b.get(tree, key, found)).unwrap()
}

/// `n` email rows and events from `from` on, 50 a transaction.
fn write(b: &SledBackend, from: u64, n: u64) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(50) {
        b.transact(&|tx| {
            for &i in chunk {
                tx.put(TreeId::Emails, &email(i), i.to_be_bytes().to_vec())?;
                tx.put(TreeId::Events, &i.to_be_bytes(), vec![i as u8; 30])?;
            }
            Ok(())
        })
        .unwrap();
    }
}

fn all(b: &SledBackend, tree: TreeId) -> Vec<(Vec<u8>, Vec<u8>)> {
    b.scan(tree, &[], usize::MAX).unwrap()
}

/// The sled rows of `tree` (blocks, in a packed tree).
fn sled_rows(path: &Path, tree: TreeId) -> usize {
    let db = raw_sled_config(path).open().unwrap();
    db.open_tree(tree.name()).unwrap().len()
}

/// Rewrites a version 2 store at `path` as a version 1 store holds the
/// same rows: one sled row each, and format version 1.
fn make_version_1(path: &Path) {
    let db = raw_sled_config(path).open().unwrap();
    for id in [TreeId::Emails, TreeId::Events] {
        let t = db.open_tree(id.name()).unwrap();
        let mut rows = Vec::new();
        packed::for_each(&t, id, true, &mut |k, v| {
            rows.push((k, v));
            Ok(())
        })
        .unwrap();
        t.clear().unwrap();
        for (k, v) in rows {
            t.insert(k, v).unwrap();
        }
    }
    let m = db.open_tree(TreeId::Meta.name()).unwrap();
    m.insert(meta::FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
}

#[test]
fn version_1_stores_work_as_before_and_compaction_packs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        let b = SledBackend::open(&path, &opts()).unwrap();
        assert_eq!(b.format_version(), FORMAT_PACKED);
        write(&b, 0, 2_000);
        b.flush().unwrap();
    }
    make_version_1(&path);
    assert_eq!(sled_rows(&path, TreeId::Emails), 2_000);
    let (emails, events) = {
        let b = SledBackend::open(&path, &opts()).unwrap();
        assert_eq!(b.format_version(), meta::FORMAT_VERSION);
        assert_eq!(
            get(&b, TreeId::Emails, &email(7)),
            Some(7u64.to_be_bytes().to_vec())
        );
        write(&b, 2_000, 500);
        b.transact(&|tx| tx.delete(TreeId::Emails, &email(3)))
            .unwrap();
        assert_eq!(get(&b, TreeId::Emails, &email(3)), None);
        assert_eq!(
            get(&b, TreeId::Emails, &email(2_400)),
            Some(2_400u64.to_be_bytes().to_vec())
        );
        let emails = all(&b, TreeId::Emails);
        let events = all(&b, TreeId::Events);
        assert_eq!((emails.len(), events.len()), (2_499, 2_500));
        assert!(emails.windows(2).all(|w| w[0].0 < w[1].0));
        b.flush().unwrap();
        (emails, events)
    };
    // Still a row each: a version 1 store stays one until compacted.
    assert_eq!(sled_rows(&path, TreeId::Emails), 2_499);

    let done = compact(&path, CompactPages::Keep, None).unwrap();
    assert!(done.records > 4_999, "{done:?}");
    assert!(sled_rows(&path, TreeId::Emails) < 2_499 / 10);
    assert!(sled_rows(&path, TreeId::Events) < 2_500 / 10);
    let b = SledBackend::open(&path, &opts()).unwrap();
    assert_eq!(b.format_version(), FORMAT_PACKED);
    assert_eq!(all(&b, TreeId::Emails), emails);
    assert_eq!(all(&b, TreeId::Events), events);
    assert_eq!(get(&b, TreeId::Emails, &email(3)), None);
    assert_eq!(
        b.scan_last(TreeId::Events, 3).unwrap(),
        events[events.len() - 3..]
    );
    // And it goes on working packed.
    write(&b, 2_500, 100);
    assert_eq!(
        get(&b, TreeId::Emails, &email(2_550)),
        Some(2_550u64.to_be_bytes().to_vec())
    );
    let emails = all(&b, TreeId::Emails);
    let events = all(&b, TreeId::Events);
    assert_eq!(events.len(), 2_600);
    b.flush().unwrap();
    drop(b);

    // A version 2 store compacted: its blocks read as blocks, packed again.
    compact(&path, CompactPages::Keep, None).unwrap();
    let b = SledBackend::open(&path, &opts()).unwrap();
    assert_eq!(b.format_version(), FORMAT_PACKED);
    assert_eq!(all(&b, TreeId::Emails), emails);
    assert_eq!(all(&b, TreeId::Events), events);
    assert_eq!(
        get(&b, TreeId::Emails, &email(2_550)),
        Some(2_550u64.to_be_bytes().to_vec())
    );
}

#[test]
fn a_store_of_another_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        let b = SledBackend::open(&path, &opts()).unwrap();
        write(&b, 0, 10);
        b.flush().unwrap();
    }
    {
        let db = raw_sled_config(&path).open().unwrap();
        let m = db.open_tree(TreeId::Meta.name()).unwrap();
        m.insert(meta::FORMAT_KEY, &3u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = SledBackend::open(&path, &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 3,
                supported: FORMAT_PACKED
            }
        ),
        "{err:?}"
    );
}

/// 64 readers (point reads, scans, the newest events) while a writer
/// commits rows in random key order, which cuts and replaces blocks
/// underneath them: no reader misses a committed row or sees one twice.
#[test]
fn readers_never_miss_a_row_while_blocks_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Arc::new(SledBackend::open(&tmp.path().join("db"), &opts()).unwrap());
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..64u64)
        .map(|r| {
            let (b, committed, done) = (b.clone(), committed.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                let mut i = r;
                while !done.load(Ordering::Relaxed) || checks == 0 {
                    let n = committed.load(Ordering::Acquire);
                    if n == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407)
                        % n;
                    let v = get(&b, TreeId::Emails, &email(i));
                    assert_eq!(v, Some(i.to_be_bytes().to_vec()), "email {i} of {n}");
                    if r % 8 == 0 {
                        let rows = b.scan(TreeId::Emails, &[], usize::MAX).unwrap();
                        assert!(rows.len() as u64 >= n);
                        assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
                        let last = b.scan_last(TreeId::Events, 20).unwrap();
                        assert!(last.windows(2).all(|w| w[0].0 < w[1].0));
                        let newest =
                            u64::from_be_bytes(last[last.len() - 1].0[..].try_into().unwrap());
                        assert!(newest + 1 >= n);
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for from in (0..6_000).step_by(50) {
        write(&b, from, 50);
        committed.store(from + 50, Ordering::Release);
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
