//! The guarantees of SPEC §5 that attackers test: the lock-out bound under
//! concurrency, no enumeration by answer or timing, disabled customers, the
//! box_id range. On a store with its write-ahead log (the production path).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use credstore::{
    Argon2Params, Config, Credential, CustomerFlags, Entity, Error, EventKind, EventOutcome,
    FlagsUpdate, ImportedCustomer, InputError, MAX_BOX_ID, ManualClock, NewCustomer, ResetDetails,
    Store, Timestamp,
};

use super::backend::Backend;
use super::{pw, secret};

/// A store on disk (WAL, group commit) with argon2 costly enough that
/// verifications overlap: m = 2 MiB, t = 1 (a few milliseconds each).
fn disk_store(dir: &tempfile::TempDir, config: Config) -> Store {
    Store::open(dir.path().join("data"), &secret(), config).unwrap()
}

fn overlapping_hashes() -> Config {
    Config::default().with_argon2(Argon2Params::new(2048, 1, 1).unwrap())
}

fn register(store: &Store, email: &str) -> credstore::Customer {
    store
        .register(NewCustomer::new(email, "A", "B", pw("right-password")))
        .unwrap()
        .0
}

// SPEC §5.6: 64 concurrent wrong passwords for one account: at most 5
// are verified (answered "wrong password"), the rest refused as locked
// without hashing; then the right password is refused as locked too. On
// PostgreSQL half of them go through a second instance (another pool) on
// the same database: the bound is shared.
on_every_backend! {
    fn sixty_four_concurrent_wrong_passwords_verify_at_most_five(backend) {
    let first = backend.open(&secret(), overlapping_hashes());
    let store: Store = (*first).clone();
    let second: Store = match first.postgres_url() {
        Some(url) => Store::open_postgres(url, &secret(), overlapping_hashes()).unwrap(),
        None => store.clone(),
    };
    let c = register(&store, "victim@email.com");
    let barrier = Arc::new(Barrier::new(64));
    let verified = Arc::new(AtomicUsize::new(0));
    let locked = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let store = if i % 2 == 0 { store.clone() } else { second.clone() };
            let barrier = barrier.clone();
            let (verified, locked) = (verified.clone(), locked.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match store.login("victim@email.com", &pw(&format!("guess-number-{i}"))) {
                    Err(Error::InvalidCredentials(Credential::Password)) => {
                        verified.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::Locked { .. }) => {
                        locked.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let verified = verified.load(Ordering::SeqCst);
    assert!(verified <= 5, "{verified} wrong passwords were verified");
    assert_eq!(verified + locked.load(Ordering::SeqCst), 64);
    assert!(matches!(
        store.login("victim@email.com", &pw("right-password")),
        Err(Error::Locked { .. })
    ));
    // The events tell the same story: exactly as many failures as verified.
    let failures = store
        .events(0, 10_000)
        .unwrap()
        .iter()
        .filter(|e| e.box_id == Some(c.box_id))
        .filter(|e| matches!(e.kind, EventKind::LoginFailed | EventKind::AccountLocked))
        .count();
    assert_eq!(failures, verified);
    assert!(store.check_integrity().unwrap().is_sound());
}
}

/// The right password racing wrong ones: if its verification ends after
/// the lock was set, it is refused (the lock is re-checked in the success
/// transaction). Whatever the interleaving, the account ends locked and the
/// right password was either accepted before the lock or refused.
#[test]
fn a_right_password_finishing_after_the_lock_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_000_000));
    let store = disk_store(
        &dir,
        overlapping_hashes().with_clock(Arc::new(clock.clone())),
    );
    register(&store, "victim@email.com");
    for round in 0..8 {
        let barrier = Arc::new(Barrier::new(9));
        let wrong: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store
                        .login("victim@email.com", &pw(&format!("guess-{i}")))
                        .unwrap_err()
                })
            })
            .collect();
        barrier.wait();
        let right = store.login("victim@email.com", &pw("right-password"));
        let wrong: Vec<Error> = wrong.into_iter().map(|t| t.join().unwrap()).collect();
        let locked_at_end = store
            .customer_by_email("victim@email.com")
            .unwrap()
            .locked_until
            .is_some();
        match right {
            // Accepted: it cleared the count before the lock could be set,
            // so at most the budget failed after it.
            Ok(_) => {}
            Err(Error::Locked { .. }) => assert!(locked_at_end, "round {round}"),
            Err(e) => panic!("round {round}: {e:?}"),
        }
        let verified = wrong
            .iter()
            .filter(|e| matches!(e, Error::InvalidCredentials(_)))
            .count();
        assert!(verified <= 5 + 4, "round {round}: {verified}");
        // The next round starts unlocked.
        clock.advance(Duration::from_secs(16 * 60));
    }
}

/// Deterministically: the right password's verification ends, then (held
/// at a fail point) four wrong passwords spend the budget and set the lock;
/// the success transaction sees the lock and refuses.
#[test]
fn a_lock_set_during_the_verification_refuses_the_right_password() {
    use std::sync::mpsc;
    let (at_point, held) = (mpsc::channel::<()>(), mpsc::channel::<()>());
    let (reached, wait_reached) = at_point;
    let (release, wait_release) = held;
    let wait_release = std::sync::Mutex::new(Some(wait_release));
    let config = Config::for_tests().with_fail_point(credstore::FailPoint::new(move |name| {
        // Only the first verification to get here waits (the right one).
        if name != "login:verified" {
            return false;
        }
        let first = wait_release.lock().unwrap().take();
        if let Some(rx) = first {
            reached.send(()).unwrap();
            rx.recv().unwrap();
        }
        false
    }));
    let dir = tempfile::tempdir().unwrap();
    let store = disk_store(&dir, config);
    register(&store, "victim@email.com");
    let right = {
        let store = store.clone();
        std::thread::spawn(move || store.login("victim@email.com", &pw("right-password")))
    };
    wait_reached.recv().unwrap();
    for _ in 0..4 {
        assert!(matches!(
            store.login("victim@email.com", &pw("wrong-password")),
            Err(Error::InvalidCredentials(_))
        ));
    }
    release.send(()).unwrap();
    let e = right.join().unwrap().unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert!(
        store
            .customer_by_email("victim@email.com")
            .unwrap()
            .locked_until
            .is_some()
    );
}

on_every_backend! {
    /// Unknown emails count and lock exactly like known ones: the lock-out
    /// tells nobody which emails exist.
    fn unknown_emails_lock_out_like_known_ones(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    register(&store, "known@email.com");
    for email in ["known@email.com", "ghost@email.com"] {
        for i in 0..5 {
            let e = store.login(email, &pw("wrong-password")).unwrap_err();
            assert!(
                matches!(e, Error::InvalidCredentials(Credential::Password)),
                "{email} attempt {i}: {e:?}"
            );
        }
        let e = store.login(email, &pw("right-password")).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{email}: {e:?}");
    }
    // The same bookkeeping: one refused event per attempt, for both.
    let events = store.events(0, 10_000).unwrap();
    let refused = |known: bool| {
        events
            .iter()
            .filter(|e| e.outcome == EventOutcome::Refused && e.box_id.is_some() == known)
            .count()
    };
    assert_eq!(refused(true), 5);
    assert_eq!(refused(false), 5);
    // The guard holds no email, and purging keeps a live one.
    assert_eq!(store.purge_login_guards().unwrap(), 0);
    assert!(store.check_integrity().unwrap().is_sound());
}
}

/// More idle guards than one page of the purge's scan (1,024): every one
/// goes (one that locked too, once its failures are forgotten), and none
/// that is still remembered.
#[test]
fn purging_login_guards_goes_past_the_first_page() {
    let clock = ManualClock::new(Timestamp(0));
    let store = Backend::Wal.open(
        &secret(),
        Config::for_tests().with_clock(Arc::new(clock.clone())),
    );
    let n = 1_500;
    for i in 0..n {
        store
            .login(&format!("ghost{i}@email.com"), &pw("wrong-password"))
            .unwrap_err();
    }
    // A guard that locked (its lock long over when the memory ends) goes too.
    for _ in 0..5 {
        store
            .login("locked@email.com", &pw("wrong-password"))
            .unwrap_err();
    }
    assert!(matches!(
        store.login("locked@email.com", &pw("wrong-password")),
        Err(Error::Locked { .. })
    ));
    clock.advance(credstore::FAILURE_MEMORY);
    // One guard failed just now: it stays.
    store
        .login("late@email.com", &pw("wrong-password"))
        .unwrap_err();
    assert_eq!(store.purge_login_guards().unwrap(), n + 1);
    assert_eq!(store.purge_login_guards().unwrap(), 0);
    clock.advance(credstore::FAILURE_MEMORY);
    assert_eq!(store.purge_login_guards().unwrap(), 1);
    assert!(store.check_integrity().unwrap().is_sound());
}

on_every_backend! {
    fn idle_login_guards_are_purged_and_failures_forgotten(backend) {
    let clock = ManualClock::new(Timestamp(0));
    let store = backend.open(&secret(),
        Config::for_tests().with_clock(Arc::new(clock.clone())),
    );
    register(&store, "known@email.com");
    for email in ["known@email.com", "ghost@email.com"] {
        for _ in 0..4 {
            store.login(email, &pw("wrong-password")).unwrap_err();
        }
    }
    clock.advance(credstore::FAILURE_MEMORY);
    assert_eq!(store.purge_login_guards().unwrap(), 1);
    // Four old failures are forgotten for both: four more do not lock.
    for email in ["known@email.com", "ghost@email.com"] {
        for _ in 0..4 {
            let e = store.login(email, &pw("wrong-password")).unwrap_err();
            assert!(matches!(e, Error::InvalidCredentials(_)), "{email}: {e:?}");
        }
    }
    assert!(
        store
            .login("known@email.com", &pw("right-password"))
            .is_ok()
    );
}
}

/// SPEC §5.7: a login with an unknown email costs what a wrong password
/// for a known one costs. Interleaved, many tries, medians compared with a
/// generous bound (the machine is noisy); without the dummy verification
/// the unknown email would skip the hash and fail the bound.
#[test]
fn unknown_email_and_wrong_password_take_the_same_time() {
    let dir = tempfile::tempdir().unwrap();
    // A hash of ~5-10 ms, well above the two durable commits (~0.3 ms).
    let config = Config::default()
        .with_argon2(Argon2Params::new(8192, 1, 1).unwrap())
        .with_lockout(credstore::LockoutPolicy {
            max_failures: u32::MAX,
            lock_for: Duration::from_secs(1),
        });
    let store = disk_store(&dir, config);
    register(&store, "known@email.com");
    let time = |email: &str| {
        let t = Instant::now();
        let e = store.login(email, &pw("wrong-password")).unwrap_err();
        assert!(matches!(e, Error::InvalidCredentials(_)), "{e:?}");
        t.elapsed()
    };
    // Warm up both paths.
    time("known@email.com");
    time("ghost@email.com");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..60 {
        if i % 2 == 0 {
            known.push(time("known@email.com"));
            unknown.push(time(&format!("ghost{i}@email.com")));
        } else {
            unknown.push(time(&format!("ghost{i}@email.com")));
            known.push(time("known@email.com"));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    assert!(
        (0.7..=1.4).contains(&ratio),
        "unknown email {u:?} vs wrong password {k:?} (ratio {ratio:.2})"
    );
}

on_every_backend! {
    /// SPEC §5.10: a disabled customer cannot log in, change or reset its
    /// password; the right password says "disabled", a wrong one is a wrong
    /// password; a reset request issues nothing and answers as for an unknown
    /// email; tokens issued before the disabling die with it.
    fn disabled_customers_cannot_log_in_change_or_reset(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, key) = store
        .register(NewCustomer::new(
            "off@email.com",
            "A",
            "B",
            pw("right-password"),
        ))
        .unwrap();
    let issued = store
        .request_reset("off@email.com", ResetDetails::default())
        .unwrap();
    let c = store
        .set_flags(
            c.box_id,
            FlagsUpdate {
                is_enable: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!c.flags.is_enable);
    let version = c.credential_version;

    assert!(matches!(
        store.login("off@email.com", &pw("right-password")),
        Err(Error::Disabled)
    ));
    assert!(matches!(
        store.login("off@email.com", &pw("wrong-password")),
        Err(Error::InvalidCredentials(Credential::Password))
    ));
    assert!(matches!(
        store.update_password(c.box_id, &key, "off@email.com", &pw("new-password-1")),
        Err(Error::Disabled)
    ));
    assert!(matches!(
        store.request_reset("off@email.com", ResetDetails::default()),
        Err(Error::Disabled)
    ));
    for e in [
        store
            .check_reset_token(&issued.token)
            .map(|_| ())
            .unwrap_err(),
        store
            .reset_password(&issued.token, None, &pw("new-password-1"))
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidToken), "{e:?}");
    }
    // Disabling deleted the outstanding reset with its token.
    let e = store
        .reset_password_by_id(&issued.reset.id, &issued.token, &pw("new-password-1"))
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(Entity::Reset)), "{e:?}");
    assert_eq!(
        store.customer(c.box_id).unwrap().credential_version,
        version
    );
    // Enabled again: the old password works, the old token stays dead.
    store
        .set_flags(
            c.box_id,
            FlagsUpdate {
                is_enable: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(store.login("off@email.com", &pw("right-password")).is_ok());
    assert!(store.check_reset_token(&issued.token).is_err());
    assert!(store.check_integrity().unwrap().is_sound());
}
}

fn imported(box_id: u64, email: &str) -> ImportedCustomer {
    let hash = "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS";
    ImportedCustomer {
        box_id,
        email: email.to_owned(),
        first_name: String::new(),
        last_name: String::new(),
        password_hash: hash.to_owned(),
        key: None,
        flags: CustomerFlags::default(),
        enrolment_date: None,
        activation_date: None,
    }
}

on_every_backend! {
    /// SPEC §5.12: box_ids are 1 to 2^53 − 1; once the last is taken,
    /// registering fails at once with a clear error.
    fn box_ids_stay_in_range_and_registering_past_it_fails_at_once(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    for bad in [0, MAX_BOX_ID + 1, u64::MAX] {
        let e = store
            .import_customer(imported(bad, "x@email.com"))
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidInput(InputError::BoxIdOutOfRange { .. })),
            "{bad}: {e:?}"
        );
    }
    store
        .import_customer(imported(MAX_BOX_ID, "last@email.com"))
        .unwrap();
    let before = store.events(0, 10_000).unwrap();
    let t = Instant::now();
    let e = store
        .register(NewCustomer::new(
            "next@email.com",
            "A",
            "B",
            pw("right-password"),
        ))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        matches!(e, Error::BoxIdsExhausted { max } if max == MAX_BOX_ID),
        "{e:?}"
    );
    assert!(e.to_string().contains("9007199254740991"), "{e}");
    assert_eq!(store.events(0, 10_000).unwrap(), before);
    assert!(matches!(
        store.customer_by_email("next@email.com"),
        Err(Error::NotFound(Entity::Customer))
    ));
}
}
