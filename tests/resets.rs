//! Reset tokens and password-reset resources: token shape and randomness, the
//! parser, expiry, single use, the outstanding limit, the throttle, tokens
//! dying with the password or email, the consume race, purge, and secrets at
//! rest.

#[macro_use]
#[path = "support/backend.rs"]
mod backend;
use backend::{Backend, TestStore};

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use credstore::{
    Argon2Params, Config, Credential, Customer, CustomerKey, Durability, Entity, Error, EventKind,
    FailPoint, InputError, IssuedReset, LockoutPolicy, ManualClock, NewCustomer, Password,
    PolicyViolation, ResetDetails, ResetToken, ResetUpdate, Store, StoreSecret, Timestamp,
    parse_reset_id, parse_token,
};

#[path = "resets/mail_queue.rs"]
mod mail_queue;

const T0: Timestamp = Timestamp(1_767_225_600_000); // 2026-01-01T00:00:00Z
const TTL: Duration = Duration::from_secs(60 * 60);
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([0x4b; 32])
}

fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

fn config(clock: &ManualClock) -> Config {
    Config::for_tests().with_clock(Arc::new(clock.clone()))
}

fn store(backend: Backend) -> (TestStore, ManualClock) {
    let clock = ManualClock::new(T0);
    let store = backend.open(&secret(), config(&clock));
    (store, clock)
}

fn customer(store: &Store, email: &str) -> (Customer, CustomerKey) {
    store
        .register(NewCustomer::new(email, "Jane", "Roe", pw("old-password-1")))
        .unwrap()
}

fn issue(store: &Store, email: &str) -> IssuedReset {
    store.request_reset(email, ResetDetails::default()).unwrap()
}

/// A second handle on the same token, as a client would send it back.
fn again(t: &ResetToken) -> ResetToken {
    parse_token(t.expose_secret().as_bytes()).unwrap()
}

fn events(store: &Store) -> Vec<credstore::Event> {
    store.events(0, usize::MAX).unwrap()
}

fn assert_sound(store: &Store) {
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "{:#?}", report.problems);
}

fn is_invalid_token<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidToken))
}

// ---------------------------------------------------------------- tokens

#[test]
fn generated_tokens_are_distinct_and_uniform() {
    const N: usize = 10_000;
    let mut seen = HashSet::with_capacity(N);
    let mut counts = [0u64; 256];
    for _ in 0..N {
        let t = ResetToken::generate().unwrap();
        let s = t.expose_secret();
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| ALPHABET.contains(&b)), "{s}");
        for b in s.bytes() {
            counts[b as usize] += 1;
        }
        assert!(seen.insert(s.to_owned()), "duplicate token");
    }
    let expected = (N * 64) as f64 / 62.0;
    let chi2: f64 = ALPHABET
        .iter()
        .map(|&c| {
            let d = counts[c as usize] as f64 - expected;
            d * d / expected
        })
        .sum();
    // Upper 0.001 point of chi-square with 61 degrees of freedom: the root of
    // Q(61/2, x/2) = 0.001 (regularised upper incomplete gamma), computed with
    // mpmath 1.3 (`findroot`) as 100.8879; Wilson-Hilferty gives 100.96.
    const CRITICAL: f64 = 100.8879;
    assert!(
        chi2 < CRITICAL,
        "chi-square {chi2:.2} rejects uniformity at 0.001"
    );
    // What it guards against: `byte % 62` without rejection makes 8 letters
    // 5/4 as frequent as the rest, a chi-square near 10,000 at this size.
}

#[test]
fn parser_accepts_exactly_64_alphanumerics() {
    let good = ResetToken::generate().unwrap();
    let text = good.expose_secret().as_bytes().to_vec();
    assert!(parse_token(&text).unwrap().ct_eq(&good));
    assert!(parse_token(ALPHABET[..62].repeat(2)[..64].as_ref()).is_ok());

    for len in [0, 1, 63, 65, 128] {
        let bytes = vec![b'a'; len];
        assert_eq!(
            parse_token(&bytes).unwrap_err(),
            InputError::MalformedToken,
            "{len}"
        );
    }
    for bad in [b'-', b'_', b' ', b'\0', b'=', b'+', b'/', 0x80, 0xff] {
        for pos in [0, 31, 63] {
            let mut t = text.clone();
            t[pos] = bad;
            assert_eq!(
                parse_token(&t).unwrap_err(),
                InputError::MalformedToken,
                "{bad:#x} at {pos}"
            );
        }
    }
    // Non-ASCII: 64 bytes including a two-byte 'é'.
    let mut t = text[..62].to_vec();
    t.extend_from_slice("é".as_bytes());
    assert_eq!(t.len(), 64);
    assert_eq!(parse_token(&t).unwrap_err(), InputError::MalformedToken);

    assert_eq!(parse_reset_id(b"xYZkjABcde").unwrap(), "xYZkjABcde");
    for bad in [
        &b"xYZkjABcd"[..],
        b"xYZkjABcdef",
        b"xYZkj-Bcde",
        b"xYZkj\0Bcde",
    ] {
        assert_eq!(parse_reset_id(bad), Err(InputError::MalformedResetId));
    }
}

on_every_backend! {
    fn token_never_shows_in_debug_events_or_errors(backend) {
    let (store, _) = store(backend);
    customer(&store, "jane@example.com");
    let issued = issue(&store, "jane@example.com");
    let secret = issued.token.expose_secret().to_owned();
    let text = format!(
        "{issued:?} {issued:#?} {:?} {:?}",
        events(&store),
        store.reset(&issued.reset.id).unwrap()
    );
    assert!(!text.contains(&secret));
    assert!(text.contains("[redacted]"));
    let err = store
        .reset_password(
            &again(&issued.token),
            Some("other@example.com"),
            &pw("new-password-2"),
        )
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(&secret));
}
}

// ---------------------------------------------------------------- issue

on_every_backend! {
    fn request_returns_the_reset_and_a_working_token(backend) {
    let (store, _) = store(backend);
    let (c, _) = customer(&store, "Jane@Example.com");
    let before = events(&store).len();
    let mut meta = serde_json::Map::new();
    meta.insert("foo".into(), serde_json::json!({"bar": [1, 2]}));
    let issued = store
        .request_reset(
            "  jane@example.COM ",
            ResetDetails {
                reference: Some("ref-1".into()),
                reference_origin: Some("shop".into()),
                metadata: Some(meta.clone()),
            },
        )
        .unwrap();
    let r = &issued.reset;
    assert!(parse_reset_id(r.id.as_bytes()).is_ok());
    assert_eq!(r.box_id, c.box_id);
    assert_eq!(r.email, "Jane@Example.com");
    assert_eq!((r.created_at, r.updated_at), (T0, T0));
    assert_eq!(r.expires_at, T0.plus(TTL));
    assert_eq!(r.used_at, None);
    assert_eq!(r.reference.as_deref(), Some("ref-1"));
    assert_eq!(r.metadata.as_ref(), Some(&meta));
    assert_eq!(&store.reset(&r.id).unwrap(), r);
    assert_eq!(
        store.check_reset_token(&issued.token).unwrap().box_id,
        c.box_id
    );

    let ev = events(&store);
    assert_eq!(ev.len(), before + 1);
    assert_eq!(ev.last().unwrap().kind, EventKind::ResetIssued);
    assert_eq!(ev.last().unwrap().box_id, Some(c.box_id));
    assert_sound(&store);
}
}

on_every_backend! {
    fn unknown_email_and_bad_details_write_nothing(backend) {
    let (store, _) = store(backend);
    customer(&store, "jane@example.com");
    let before = events(&store).len();
    assert!(matches!(
        store.request_reset("nobody@example.com", ResetDetails::default()),
        Err(Error::NotFound(Entity::Customer))
    ));
    assert!(matches!(
        store.request_reset("not an email", ResetDetails::default()),
        Err(Error::InvalidInput(InputError::MalformedEmail))
    ));
    let long = ResetDetails {
        reference: Some("r".repeat(256)),
        ..Default::default()
    };
    assert!(matches!(
        store.request_reset("jane@example.com", long),
        Err(Error::InvalidInput(InputError::MalformedText {
            field: "reference"
        }))
    ));
    let mut meta = serde_json::Map::new();
    meta.insert("blob".into(), serde_json::Value::String("x".repeat(4096)));
    let big = ResetDetails {
        metadata: Some(meta),
        ..Default::default()
    };
    assert!(matches!(
        store.request_reset("jane@example.com", big),
        Err(Error::InvalidInput(InputError::MalformedText {
            field: "metadata"
        }))
    ));
    assert_eq!(events(&store).len(), before);
    assert_eq!(store.check_integrity().unwrap().resets, 0);
}
}

// ---------------------------------------------------------------- rules

on_every_backend! {
    fn token_expires_at_exactly_ttl(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    let issued = issue(&store, "jane@example.com");
    clock.advance(TTL - Duration::from_millis(1));
    assert!(store.check_reset_token(&issued.token).is_ok());
    clock.advance(Duration::from_millis(1));
    assert!(is_invalid_token(store.check_reset_token(&issued.token)));
    assert!(is_invalid_token(store.reset_password(
        &issued.token,
        None,
        &pw("new-password-2")
    )));
    assert!(is_invalid_token(store.reset_password_by_id(
        &issued.reset.id,
        &issued.token,
        &pw("new-password-2")
    )));
    assert!(
        store
            .login("jane@example.com", &pw("old-password-1"))
            .is_ok()
    );
}
}

on_every_backend! {
    fn token_is_single_use(backend) {
    let (store, clock) = store(backend);
    let (c, _) = customer(&store, "jane@example.com");
    let issued = issue(&store, "jane@example.com");
    clock.advance(Duration::from_secs(5));
    let before = events(&store).len();
    let after = store
        .reset_password(
            &issued.token,
            Some("JANE@example.com"),
            &pw("new-password-2"),
        )
        .unwrap();
    assert_eq!(after.credential_version, c.credential_version + 1);
    let ev = events(&store);
    assert_eq!(ev.len(), before + 1, "one event per consumption");
    assert_eq!(ev.last().unwrap().kind, EventKind::ResetConsumed);

    assert!(is_invalid_token(store.check_reset_token(&issued.token)));
    assert!(is_invalid_token(store.reset_password(
        &issued.token,
        None,
        &pw("new-password-3")
    )));
    assert!(is_invalid_token(store.reset_password_by_id(
        &issued.reset.id,
        &issued.token,
        &pw("new-password-3")
    )));
    assert!(
        store
            .login("jane@example.com", &pw("new-password-2"))
            .is_ok()
    );
    assert!(
        store
            .login("jane@example.com", &pw("new-password-3"))
            .is_err()
    );
    // The used reset is still readable by id until a purge.
    let r = store.reset(&issued.reset.id).unwrap();
    assert_eq!(r.used_at, Some(T0.plus(Duration::from_secs(5))));
    assert_eq!(r.updated_at, r.used_at.unwrap());
    assert_sound(&store);
    // ...and it does not count as outstanding: three more fit.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        issue(&store, "jane@example.com");
    }
    assert!(store.reset(&issued.reset.id).is_ok());
}
}

on_every_backend! {
    fn fourth_token_drops_the_first(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    let mut issued = Vec::new();
    for _ in 0..4 {
        issued.push(issue(&store, "jane@example.com"));
        clock.advance(Duration::from_secs(61));
    }
    assert!(is_invalid_token(store.check_reset_token(&issued[0].token)));
    assert!(matches!(
        store.reset(&issued[0].reset.id),
        Err(Error::NotFound(Entity::Reset))
    ));
    for i in &issued[1..] {
        assert!(store.check_reset_token(&i.token).is_ok());
    }
    assert_eq!(store.check_integrity().unwrap().resets, 3);
    assert_sound(&store);
}
}

on_every_backend! {
    fn second_request_within_60_seconds_is_throttled(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    customer(&store, "john@example.com");
    let first = issue(&store, "jane@example.com");
    let before = events(&store).len();
    clock.advance(Duration::from_millis(59_999));
    assert!(matches!(
        store.request_reset("jane@example.com", ResetDetails::default()),
        Err(Error::Throttled)
    ));
    assert_eq!(
        events(&store).len(),
        before,
        "a throttled request writes nothing"
    );
    // Per customer: someone else is not throttled.
    issue(&store, "john@example.com");
    clock.advance(Duration::from_millis(1));
    let second = issue(&store, "jane@example.com");
    assert!(store.check_reset_token(&first.token).is_ok());
    assert!(store.check_reset_token(&second.token).is_ok());
}
}

on_every_backend! {
    fn password_change_kills_tokens(backend) {
    let (store, clock) = store(backend);
    let (c, key) = customer(&store, "jane@example.com");
    let a = issue(&store, "jane@example.com");
    clock.advance(Duration::from_secs(61));
    let b = issue(&store, "jane@example.com");
    store
        .update_password(c.box_id, &key, "jane@example.com", &pw("new-password-2"))
        .unwrap();
    for t in [&a, &b] {
        assert!(is_invalid_token(store.check_reset_token(&t.token)));
        assert!(is_invalid_token(store.reset_password(
            &t.token,
            None,
            &pw("new-password-3")
        )));
        assert!(matches!(
            store.reset(&t.reset.id),
            Err(Error::NotFound(Entity::Reset))
        ));
    }
    let report = store.check_integrity().unwrap();
    assert_eq!(report.resets, 0);
    assert!(report.is_sound(), "{:#?}", report.problems);
    assert!(
        store
            .login("jane@example.com", &pw("new-password-2"))
            .is_ok()
    );
    // Not throttled after the rotation removed the outstanding resets.
    let c = issue(&store, "jane@example.com");
    assert!(store.check_reset_token(&c.token).is_ok());
}
}

on_every_backend! {
    fn email_change_kills_tokens(backend) {
    let (store, _) = store(backend);
    let (c, key) = customer(&store, "jane@example.com");
    let a = issue(&store, "jane@example.com");
    store
        .change_email(c.box_id, &key, "jane.new@example.com")
        .unwrap();
    assert!(is_invalid_token(store.check_reset_token(&a.token)));
    assert!(is_invalid_token(store.reset_password(
        &a.token,
        None,
        &pw("new-password-3")
    )));
    assert!(
        store
            .login("jane.new@example.com", &pw("old-password-1"))
            .is_ok()
    );
    assert_eq!(store.check_integrity().unwrap().resets, 0);
    assert_sound(&store);
}
}

on_every_backend! {
    fn wrong_email_and_policy_leave_the_token_unused(backend) {
    let (store, _) = store(backend);
    customer(&store, "jane@example.com");
    customer(&store, "john@example.com");
    let issued = issue(&store, "jane@example.com");
    let before = events(&store).len();
    assert!(is_invalid_token(store.reset_password(
        &issued.token,
        Some("john@example.com"),
        &pw("new-password-2")
    )));
    assert!(matches!(
        store.reset_password(&issued.token, None, &pw("short")),
        Err(Error::Policy(PolicyViolation::TooShort { min: 8 }))
    ));
    assert!(matches!(
        store.reset_password_by_id(&issued.reset.id, &issued.token, &pw("short")),
        Err(Error::Policy(PolicyViolation::TooShort { min: 8 }))
    ));
    assert_eq!(events(&store).len(), before);
    assert!(store.check_reset_token(&issued.token).is_ok());
    assert!(
        store
            .login("jane@example.com", &pw("old-password-1"))
            .is_ok()
    );
    store
        .reset_password(
            &issued.token,
            Some("jane@example.com"),
            &pw("new-password-2"),
        )
        .unwrap();
}
}

on_every_backend! {
    fn consume_by_id(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    customer(&store, "john@example.com");
    let jane = issue(&store, "jane@example.com");
    let john = issue(&store, "john@example.com");
    assert!(matches!(
        store.reset_password_by_id("zzzzzzzzzz", &jane.token, &pw("new-password-2")),
        Err(Error::NotFound(Entity::Reset))
    ));
    assert!(matches!(
        store.reset_password_by_id("bad-id", &jane.token, &pw("new-password-2")),
        Err(Error::InvalidInput(InputError::MalformedResetId))
    ));
    // John's token does not open Jane's reset.
    assert!(is_invalid_token(store.reset_password_by_id(
        &jane.reset.id,
        &john.token,
        &pw("new-password-2")
    )));
    clock.advance(Duration::from_secs(1));
    let r = store
        .reset_password_by_id(&jane.reset.id, &jane.token, &pw("new-password-2"))
        .unwrap();
    assert_eq!(r.used_at, Some(T0.plus(Duration::from_secs(1))));
    assert_eq!(r.id, jane.reset.id);
    assert!(
        store
            .login("jane@example.com", &pw("new-password-2"))
            .is_ok()
    );
    assert!(store.check_reset_token(&john.token).is_ok());
    assert_sound(&store);
}
}

on_every_backend! {
    fn update_and_revoke(backend) {
    let (store, clock) = store(backend);
    customer(&store, "jane@example.com");
    let issued = store
        .request_reset(
            "jane@example.com",
            ResetDetails {
                reference: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let id = issued.reset.id.clone();
    clock.advance(Duration::from_secs(2));
    let mut meta = serde_json::Map::new();
    meta.insert("k".into(), serde_json::Value::Bool(true));
    let r = store
        .update_reset(
            &id,
            ResetUpdate {
                reference: Some(None),
                reference_origin: Some(Some("origin".into())),
                metadata: Some(Some(meta.clone())),
            },
        )
        .unwrap();
    assert_eq!(r.reference, None);
    assert_eq!(r.reference_origin.as_deref(), Some("origin"));
    assert_eq!(r.metadata, Some(meta));
    assert_eq!(r.updated_at, T0.plus(Duration::from_secs(2)));
    assert_eq!(store.reset(&id).unwrap(), r);
    assert_eq!(events(&store).last().unwrap().kind, EventKind::ResetUpdated);
    let before = events(&store).len();
    assert!(matches!(
        store.update_reset(
            &id,
            ResetUpdate {
                reference: Some(Some("x\u{7}".into())),
                ..Default::default()
            }
        ),
        Err(Error::InvalidInput(InputError::MalformedText { .. }))
    ));
    assert!(matches!(
        store.update_reset("zzzzzzzzzz", ResetUpdate::default()),
        Err(Error::NotFound(Entity::Reset))
    ));
    assert_eq!(events(&store).len(), before);

    store.revoke_reset(&id).unwrap();
    assert_eq!(events(&store).last().unwrap().kind, EventKind::ResetRevoked);
    assert!(is_invalid_token(store.check_reset_token(&issued.token)));
    assert!(matches!(
        store.reset(&id),
        Err(Error::NotFound(Entity::Reset))
    ));
    assert!(matches!(
        store.revoke_reset(&id),
        Err(Error::NotFound(Entity::Reset))
    ));
    assert_sound(&store);
    // A revoked reset (a mail that failed) does not throttle the next one.
    issue(&store, "jane@example.com");
}
}

// ---------------------------------------------------------------- race

on_every_backend! {
    fn sixteen_threads_one_token_one_winner(backend) {
    let clock = ManualClock::new(T0);
    // Production-cost hashing (~20 ms each) keeps all 16 threads between
    // their token check and their transaction at the same time, so the
    // transaction's own re-check is what decides.
    let cfg = config(&clock)
        .with_argon2(Argon2Params::default())
        .with_lockout(LockoutPolicy {
            max_failures: 1000,
            lock_for: Duration::from_secs(60),
        });
    let store = backend.open(&secret(), cfg);
    customer(&store, "jane@example.com");
    let issued = issue(&store, "jane@example.com");
    let text = issued.token.expose_secret().to_owned();
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let text = text.clone();
            std::thread::spawn(move || {
                let token = parse_token(text.as_bytes()).unwrap();
                let password = pw(&format!("racer-password-{i}"));
                barrier.wait();
                store.reset_password(&token, None, &password)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<usize> = (0..16).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, r) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(matches!(r, Err(Error::InvalidToken)), "{i}: {r:?}");
        }
    }
    for i in 0..16 {
        let login = store.login("jane@example.com", &pw(&format!("racer-password-{i}")));
        if i == winners[0] {
            assert!(login.is_ok(), "{login:?}");
        } else {
            assert!(matches!(
                login,
                Err(Error::InvalidCredentials(Credential::Password))
            ));
        }
    }
    let consumed = events(&store)
        .iter()
        .filter(|e| e.kind == EventKind::ResetConsumed)
        .count();
    assert_eq!(consumed, 1);
    assert_sound(&store);
}
}

// ---------------------------------------------------------------- purge

on_every_backend! {
    fn purge_removes_exactly_the_expired_and_used(backend) {
    let (store, clock) = store(backend);
    for i in 0..6 {
        customer(&store, &format!("c{i}@example.com"));
    }
    // c0, c1: issued at T0 (will expire). c2: used. c3..c5: issued later, live.
    let old: Vec<_> = (0..2)
        .map(|i| issue(&store, &format!("c{i}@example.com")))
        .collect();
    clock.advance(Duration::from_secs(30 * 60));
    let used = issue(&store, "c2@example.com");
    store
        .reset_password(&used.token, None, &pw("new-password-2"))
        .unwrap();
    let live: Vec<_> = (3..6)
        .map(|i| issue(&store, &format!("c{i}@example.com")))
        .collect();
    clock.advance(Duration::from_secs(30 * 60)); // old ones expire exactly now
    assert_eq!(store.check_integrity().unwrap().resets, 6);

    let before = events(&store).len();
    assert_eq!(store.purge_resets().unwrap(), 3);
    let ev = events(&store);
    assert_eq!(ev.len(), before + 1);
    assert_eq!(ev.last().unwrap().kind, EventKind::ResetPurged);

    for gone in old.iter().chain([&used]) {
        assert!(matches!(
            store.reset(&gone.reset.id),
            Err(Error::NotFound(Entity::Reset))
        ));
    }
    for l in &live {
        assert!(store.check_reset_token(&l.token).is_ok());
        assert!(store.reset(&l.reset.id).is_ok());
    }
    let report = store.check_integrity().unwrap();
    assert_eq!(report.resets, 3);
    assert!(report.is_sound(), "{:#?}", report.problems);
    // Nothing more to do; the purged customers may ask again at once.
    assert_eq!(store.purge_resets().unwrap(), 0);
    issue(&store, "c0@example.com");
    assert_sound(&store);
}
}

/// Issues `customers * 3` resets, lets them expire, purges, and checks that
/// the purge ran as many small transactions of at most 64 deletions each.
fn purge_many(customers: usize) {
    let clock = ManualClock::new(T0);
    let batches = Arc::new(AtomicUsize::new(0));
    let in_batch = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let fp = {
        let (batches, in_batch, largest) = (batches.clone(), in_batch.clone(), largest.clone());
        FailPoint::new(move |name| {
            match name {
                "purge:batch" => {
                    batches.fetch_add(1, Ordering::SeqCst);
                    in_batch.store(0, Ordering::SeqCst);
                }
                "purge:delete" => {
                    let n = in_batch.fetch_add(1, Ordering::SeqCst) + 1;
                    largest.fetch_max(n, Ordering::SeqCst);
                }
                _ => {}
            }
            false
        })
    };
    let cfg = config(&clock)
        .with_durability(Durability::PeriodicFlushLosesRecentChanges)
        .with_fail_point(fp);
    let store = Store::temporary(&secret(), cfg).unwrap();
    for i in 0..customers {
        customer(&store, &format!("c{i}@example.com"));
    }
    for _ in 0..3 {
        for i in 0..customers {
            issue(&store, &format!("c{i}@example.com"));
        }
        clock.advance(Duration::from_secs(61));
    }
    // One reset stays live.
    let keep = issue(&store, "c0@example.com");
    let total = customers * 3;
    clock.advance(TTL - Duration::from_secs(1));
    let keep_expiry = keep.reset.expires_at;
    assert!(clock_now(&clock) < keep_expiry);

    let started = std::time::Instant::now();
    assert_eq!(store.purge_resets().unwrap(), total - 1); // c0's oldest was dropped
    // Reported, not asserted.
    eprintln!(
        "purged {} resets in {:?} over {} transactions",
        total - 1,
        started.elapsed(),
        batches.load(Ordering::SeqCst)
    );
    let report = store.check_integrity().unwrap();
    assert_eq!(report.resets, 1);
    assert!(report.is_sound(), "{:#?}", report.problems);
    assert!(store.check_reset_token(&keep.token).is_ok());
    let largest = largest.load(Ordering::SeqCst);
    assert!(largest <= 64, "a transaction deleted {largest} resets");
    assert!(batches.load(Ordering::SeqCst) >= (total - 1).div_ceil(64));
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    use credstore::Clock;
    clock.now()
}

#[test]
fn purge_works_in_small_batches() {
    purge_many(400);
}

/// The 100,000-token case (~33k customers); slow in a debug build, so run it
/// with `cargo test --release --test resets -- --ignored`.
#[test]
#[ignore]
fn purge_of_100k_expired_tokens() {
    purge_many(33_334);
}

// ---------------------------------------------------------------- at rest

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

const CANARY: &str = "CanaryReference0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";

#[test]
fn data_directory_never_holds_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let clock = ManualClock::new(T0);
    let mut tokens = Vec::new();
    {
        let store = Store::open(&path, &secret(), config(&clock)).unwrap();
        for i in 0..4 {
            customer(&store, &format!("c{i}@example.com"));
        }
        for round in 0..4 {
            for i in 0..4 {
                let t = issue(&store, &format!("c{i}@example.com"));
                tokens.push(t.token.expose_secret().to_owned());
                if round == 3 && i == 0 {
                    store
                        .reset_password(&t.token, None, &pw("new-password-2"))
                        .unwrap();
                }
            }
            clock.advance(Duration::from_secs(61));
        }
        // A positive control: token-shaped text that is stored in plain.
        let canary = ResetDetails {
            reference: Some(CANARY.into()),
            ..Default::default()
        };
        store.request_reset("c1@example.com", canary).unwrap();
        store.flush().unwrap();
    }
    let mut files = Vec::new();
    all_files(&path, &mut files);
    assert!(!files.is_empty());
    let needles: Vec<Vec<u8>> = tokens
        .iter()
        .flat_map(|t| {
            let hex: String = t.bytes().map(|b| format!("{b:02x}")).collect();
            let b = t.as_bytes();
            [
                b.to_vec(),
                b[..32].to_vec(),
                b[32..].to_vec(),
                hex.into_bytes(),
            ]
        })
        .collect();
    let mut canary_seen = false;
    for f in files {
        let data = std::fs::read(&f).unwrap();
        // Every form searched for is alphanumeric: only long alphanumeric
        // runs can hold one (preallocated, zero-filled space is skipped fast).
        for run in data
            .split(|b| !b.is_ascii_alphanumeric())
            .filter(|r| r.len() >= 32)
        {
            canary_seen |= run.windows(CANARY.len()).any(|w| w == CANARY.as_bytes());
            for needle in &needles {
                assert!(
                    !run.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "token material found in {}",
                    f.display()
                );
            }
        }
    }
    assert!(canary_seen, "the scan does not see stored records");
}

on_every_backend! {
    /// SPEC §5.1: readers see a rotation all or nothing. A writer issues a
    /// token and then changes the password, over and over; a reader that
    /// sees the customer's new credential version must never find the
    /// token of the old one still valid (the version, the token index and
    /// the reset are one commit).
    fn a_concurrent_reader_sees_each_rotation_whole(backend) {
        let (store, _clock) = store(backend);
        let (c, _) = customer(&store, "jane@email.com");
        let latest: Arc<std::sync::Mutex<Option<(ResetToken, u64)>>> = Arc::default();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, latest, done) = ((*store).clone(), latest.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let Some((token, issued_at)) =
                        latest.lock().unwrap().as_ref().map(|(t, v)| (again(t), *v))
                    else {
                        continue;
                    };
                    let now = store.customer(c.box_id).unwrap().credential_version;
                    let valid = store.check_reset_token(&token).is_ok();
                    assert!(
                        !(now > issued_at && valid),
                        "version {now} visible while the token of version {issued_at} is valid"
                    );
                    checks += 1;
                }
                checks
            })
        };
        let mut version = c.credential_version;
        for i in 0..150 {
            let issued = issue(&store, "jane@email.com");
            *latest.lock().unwrap() = Some((again(&issued.token), version));
            version = store
                .change_password(c.box_id, &pw(&format!("password-number-{i}")), version)
                .unwrap()
                .credential_version;
        }
        done.store(true, Ordering::Relaxed);
        let checks = reader.join().unwrap();
        assert!(checks > 0);
        assert_sound(&store);
    }
}
