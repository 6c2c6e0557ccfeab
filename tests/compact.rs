//! Compaction (`Store::compact`, `credstore compact`): every record kept,
//! the space given back, refused while the store is open, and a failure or
//! a crash at any step leaves the old store or the new one, never neither.

#[path = "support/fs.rs"]
mod fs;
use fs::copy_dir;

use std::path::Path;
use std::sync::mpsc;

use credstore::{
    CompactPages, Config, CustomerFlags, Error, FailPoint, ImportedCustomer, NewCustomer, Password,
    ResetDetails, ResetToken, Store, StoreSecret,
};

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([0x3c; 32])
}

fn config() -> Config {
    Config::for_tests()
}

/// A store grown by inserts in random order (what compaction is for):
/// `n` imported customers with emails in a scrambled order, one registered
/// customer with a known password, and one outstanding reset. Returns the
/// reset's token.
fn grow(path: &Path, n: u64, compressed: bool) -> ResetToken {
    let store = Store::open(path, &secret(), config().with_page_compression(compressed)).unwrap();
    for i in 0..n {
        // A multiplicative scramble: emails arrive in no order.
        let scrambled = i.wrapping_mul(2_654_435_761) % 1_000_003;
        store
            .import_customer(ImportedCustomer {
                box_id: 100_000 + i,
                email: format!("c{scrambled:07}@example.com"),
                first_name: "Ana".into(),
                last_name: "Silva".into(),
                password_hash: format!("$2b$04${:053}", scrambled * 7919),
                key: None,
                flags: CustomerFlags::default(),
                enrolment_date: None,
                activation_date: None,
            })
            .unwrap();
    }
    store
        .register(NewCustomer::new(
            "known@example.com",
            "Known",
            "Person",
            Password::new("pass12345").unwrap(),
        ))
        .unwrap();
    let issued = store
        .request_reset("known@example.com", ResetDetails::default())
        .unwrap();
    issued.token
}

/// Every record of the store at `path`, as `credstore dump` writes them.
fn dump(path: &Path) -> String {
    let store = Store::open(path, &secret(), config()).unwrap();
    let mut out = Vec::new();
    store.dump(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn conf(path: &Path) -> String {
    // sled ends the file with a binary checksum.
    String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned()
}

/// The compaction's own folders left in the data directory.
fn leftovers(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("compact"))
        .collect();
    names.sort();
    names
}

#[test]
fn compaction_keeps_every_record_and_gives_back_space() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let token = grow(&path, 20_000, false);
    let before = dump(&path);
    let record_bytes = |path: &Path| {
        let store = Store::open(path, &secret(), config()).unwrap();
        (store.record_bytes().unwrap(), store.size_on_disk().unwrap())
    };
    let (records_before, disk_before) = record_bytes(&path);
    // 20,001 customers of ~100 bytes, their email entries and events.
    assert!(records_before > 2_000_000, "{records_before}");

    let done = Store::compact(&path, CompactPages::Keep).unwrap();
    // Smaller (6-15% at this size, where sled wastes less than with 1M
    // customers: the footprint bench measures that).
    assert!(done.bytes_after < done.bytes_before, "{done:?}");
    // Three trees of 20,001 records and the meta rows, at least.
    assert!(done.records > 60_000, "{done:?}");
    assert!(!done.compressed);
    assert!(conf(&path).contains("use_compression: false"));
    assert!(leftovers(&path).is_empty(), "{:?}", leftovers(&path));
    #[cfg(unix)]
    {
        // The copy was made private before it was swapped in.
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(&path).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            let want = if e.file_type().unwrap().is_dir() {
                0o700
            } else {
                0o600
            };
            assert_eq!(mode, want, "{:?}", e.file_name());
        }
    }

    assert_eq!(dump(&path), before, "the same records after compaction");
    let (records_after, disk_after) = record_bytes(&path);
    assert_eq!(records_after, records_before);
    assert!(disk_after < disk_before, "{disk_after} vs {disk_before}");
    let store = Store::open(&path, &secret(), config()).unwrap();
    store
        .login("known@example.com", &Password::new("pass12345").unwrap())
        .unwrap();
    store
        .check_reset_token(&token)
        .expect("a reset issued before compaction is still valid");
    // The store takes writes afterwards, and they last.
    store
        .register(NewCustomer::new(
            "after@example.com",
            "After",
            "Compaction",
            Password::new("pass12345").unwrap(),
        ))
        .unwrap();
    drop(store);
    let store = Store::open(&path, &secret(), config()).unwrap();
    store
        .login("after@example.com", &Password::new("pass12345").unwrap())
        .unwrap();
}

#[test]
fn compaction_turns_page_compression_on_and_off() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    grow(&path, 3_000, false);
    let before = dump(&path);

    let on = Store::compact(&path, CompactPages::Compressed).unwrap();
    assert!(on.compressed);
    assert!(
        conf(&path).contains("use_compression: true"),
        "{}",
        conf(&path)
    );
    assert!(on.bytes_after < on.bytes_before, "{on:?}");
    assert_eq!(dump(&path), before);

    let off = Store::compact(&path, CompactPages::Uncompressed).unwrap();
    assert!(!off.compressed);
    assert!(conf(&path).contains("use_compression: false"));
    assert!(off.bytes_after > on.bytes_after, "{off:?} against {on:?}");
    assert_eq!(dump(&path), before);

    // `Keep` keeps whichever it finds.
    Store::compact(&path, CompactPages::Compressed).unwrap();
    assert!(
        Store::compact(&path, CompactPages::Keep)
            .unwrap()
            .compressed
    );
}

#[test]
fn compaction_is_refused_while_the_store_is_open_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    grow(&path, 100, false);
    let before = dump(&path);
    let store = Store::open(&path, &secret(), config()).unwrap();

    let err = Store::compact(&path, CompactPages::Compressed).unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    assert!(leftovers(&path).is_empty());
    assert!(conf(&path).contains("use_compression: false"));
    drop(store);
    assert_eq!(dump(&path), before);
}

#[test]
fn compaction_refuses_what_is_not_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = Store::compact(&missing, CompactPages::Keep).unwrap_err();
    assert!(err.to_string().contains("there is no store"), "{err}");
    assert!(!missing.exists(), "nothing is created");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Store::compact(&empty, CompactPages::Keep).unwrap_err();
    assert!(err.to_string().contains("there is no store"), "{err}");

    // sled's files that are not a credstore store.
    let other = tmp.path().join("other");
    drop(sled::open(&other).unwrap());
    let err = Store::compact(&other, CompactPages::Keep).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
    assert!(leftovers(&other).is_empty());
    let names = sled::open(&other).unwrap().tree_names();
    assert!(!names.iter().any(|n| n == b"meta"), "it was only looked at");

    // A meta tree whose magic value is another program's.
    let lookalike = tmp.path().join("lookalike");
    {
        let db = sled::open(&lookalike).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("magic", "another database")
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::compact(&lookalike, CompactPages::Keep).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
    assert!(leftovers(&lookalike).is_empty());
}

#[test]
fn an_open_waits_for_no_compaction_and_is_refused_during_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    grow(&path, 3_000, false);
    let before = dump(&path);

    // The compaction stops in its copy until the open below has been tried.
    let (in_copy, wait_in_copy) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let in_copy = std::sync::Mutex::new(in_copy);
    let hook = FailPoint::new(move |name| {
        if name == "compact.copy" {
            let _ = in_copy.lock().unwrap().send(());
            let _ = released.lock().unwrap().recv();
        }
        false
    });
    let compactor = {
        let path = path.clone();
        std::thread::spawn(move || {
            Store::compact_with_fail_point(&path, CompactPages::Compressed, &hook)
        })
    };
    wait_in_copy.recv().unwrap();
    let err = Store::open(&path, &secret(), config()).unwrap_err();
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    release.send(()).unwrap();
    drop(release);
    compactor.join().unwrap().unwrap();
    assert_eq!(dump(&path), before);
}

#[test]
fn a_failed_copy_is_removed_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    grow(&path, 3_000, false);
    let before = dump(&path);
    let fail = FailPoint::new(|name| name == "compact.copy");

    let err = Store::compact_with_fail_point(&path, CompactPages::Compressed, &fail).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(leftovers(&path).is_empty(), "{:?}", leftovers(&path));
    assert!(conf(&path).contains("use_compression: false"));
    assert_eq!(dump(&path), before);
}

/// A crash at each step: the next open finds the old store (before the
/// commit point) or the new one (after it), with every record.
#[test]
fn a_crash_at_any_step_leaves_the_old_store_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    grow(&original, 3_000, false);
    let before = dump(&original);
    let steps = [
        ("compact.crash.before_commit", false),
        ("compact.crash.moving_old", true),
        ("compact.crash.old_moved", true),
        ("compact.crash.moving_new", true),
        ("compact.crash.before_cleanup", true),
    ];
    for (step, committed) in steps {
        let path = tmp.path().join(step);
        copy_dir(&original, &path);
        let crash = FailPoint::new(move |name| name == step);
        let err = Store::compact_with_fail_point(&path, CompactPages::Compressed, &crash)
            .expect_err(step);
        assert!(err.to_string().contains("injected"), "{step}: {err}");
        assert!(
            !leftovers(&path).is_empty(),
            "{step}: the crash left its folders"
        );

        assert_eq!(
            dump(&path),
            before,
            "{step}: every record after the next open"
        );
        assert!(
            leftovers(&path).is_empty(),
            "{step}: {:?}",
            leftovers(&path)
        );
        let compressed = conf(&path).contains("use_compression: true");
        assert_eq!(
            compressed, committed,
            "{step}: old or new as the commit point says"
        );
        // Compacting again works from either.
        Store::compact(&path, CompactPages::Keep).unwrap();
        assert_eq!(dump(&path), before, "{step}");
    }
}

/// A disk that fills during the copy: `credstore compact` runs with a file
/// size limit (`ulimit -f`, SIGXFSZ ignored), so that its writes past the
/// limit fail as on a full disk. The command fails with the I/O error and
/// without a panic, the copy is removed, and the store is unchanged.
#[test]
#[cfg(target_os = "linux")]
fn a_disk_that_fills_during_the_copy_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    grow(&path, 20_000, false);
    // The limit must let sled open the store (it writes into its file when
    // it opens it) and stop the copy: a compacted compressed store, copied
    // uncompressed, grows ~1.6x.
    Store::compact(&path, CompactPages::Compressed).unwrap();
    let before = dump(&path);
    let db = std::fs::metadata(path.join("db")).unwrap().len();
    let limit_kib = db * 5 / 4 / 1024;

    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"ulimit -f {limit_kib} && trap "" XFSZ && exec "$0" "$@""#
        ))
        .arg(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(&path)
        .args(["compact", "--pages", "off"])
        .env_remove("CREDSTORE_POSTGRES_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing the compacted copy"), "{err}");
    assert!(
        err.contains("File too large"),
        "the I/O error is told: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(leftovers(&path).is_empty(), "{:?}", leftovers(&path));
    assert!(conf(&path).contains("use_compression: true"));
    assert_eq!(dump(&path), before);
    // Without the limit it compacts.
    assert!(
        !Store::compact(&path, CompactPages::Uncompressed)
            .unwrap()
            .compressed
    );
    assert_eq!(dump(&path), before);
}
