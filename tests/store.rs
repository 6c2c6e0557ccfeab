//! Store foundation: opening, secrets at rest, legacy hashes, lock-out,
//! concurrency, atomic rotation, customers, apps, the event log.

#[macro_use]
#[path = "support/backend.rs"]
mod backend;
#[allow(unused_imports)]
use backend::{Backend, TestStore};

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine as _;
use credstore::{
    AppKey, Argon2Params, Config, Credential, CustomerFlags, CustomerKey, Entity, Error, EventKind,
    FailPoint, FlagsUpdate, ImportedCustomer, InputError, LockoutPolicy, ManualClock, NewCustomer,
    Password, PasswordPolicy, PasswordScheme, PolicyViolation, Store, StoreSecret, Timestamp,
};

#[path = "store/security.rs"]
mod security;

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([0x5a; 32])
}

fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

fn john(store: &Store) -> (credstore::Customer, CustomerKey) {
    store
        .register(NewCustomer::new(
            "johndoe@email.com",
            "John",
            "Doe",
            pw("pass12345"),
        ))
        .unwrap()
}

/// The `conf` file sled keeps beside its files (its layout parameters).
fn conf(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned()
}

/// The store's sled files opened directly (as another program or a damaged
/// disk would change them), with the segment size they were made with.
fn raw_sled(path: &Path) -> sled::Db {
    let segment_size = conf(path)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    sled::Config::new()
        .path(path)
        .segment_size(segment_size)
        .open()
        .unwrap()
}

fn event_count(store: &Store) -> usize {
    store.events(0, usize::MAX).unwrap().len()
}

// ---------------------------------------------------------------- opening

/// Page compression is chosen when a store is created and kept: a store
/// made compressed reopens with the default configuration (no
/// compression) and one made uncompressed with compression asked for —
/// sled refuses to open its files with the other setting — and each keeps
/// its data and its setting.
#[test]
fn page_compression_is_chosen_at_creation_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    for (name, at_creation, later, expect) in [
        ("plain", false, true, "use_compression: false"),
        ("compressed", true, false, "use_compression: true"),
    ] {
        let path = dir.path().join(name);
        for (round, compress) in [at_creation, later, later].into_iter().enumerate() {
            let config = Config::for_tests().with_page_compression(compress);
            let store = Store::open(&path, &secret(), config).unwrap();
            if round == 0 {
                john(&store);
            }
            assert!(store.login("johndoe@email.com", &pw("pass12345")).is_ok());
            assert!(conf(&path).contains(expect), "{name}: {}", conf(&path));
            assert!(
                conf(&path).contains("segment_size: 131072"),
                "{name}: {}",
                conf(&path)
            );
        }
    }
}

/// A new store's sled segments are 128 KiB (less disk: see the README's
/// footprint section); a store made with sled's former 512 KiB ones keeps
/// them — sled refuses to open its files with another size — and its data.
#[test]
fn a_store_made_with_512_kib_segments_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    // sled's files as a release before this one made them: an empty
    // database that the first open makes a store.
    drop(
        sled::Config::new()
            .path(&path)
            .segment_size(512 << 10)
            .open()
            .unwrap(),
    );
    for round in 0..3 {
        let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
        if round == 0 {
            john(&store);
        }
        assert!(store.login("johndoe@email.com", &pw("pass12345")).is_ok());
        drop(store);
        assert!(
            conf(&path).contains("segment_size: 524288"),
            "{}",
            conf(&path)
        );
    }
}

#[test]
fn reopen_keeps_data_and_wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
        john(&store);
    }
    {
        let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
        assert!(store.login("johndoe@email.com", &pw("pass12345")).is_ok());
    }
    let other = StoreSecret::from_bytes([0x11; 32]);
    let err = Store::open(&path, &other, Config::for_tests()).unwrap_err();
    assert!(matches!(err, Error::WrongSecret), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("different secret") && msg.contains("secret file"),
        "{msg}"
    );
}

#[test]
fn unknown_format_is_refused_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    // a directory with someone else's files
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"hello").unwrap();
    let err = Store::open(&foreign, &secret(), Config::for_tests()).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
    assert!(err.to_string().contains("not a credstore database"));
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing was created"
    );

    // a sled database of another application
    let other_app = dir.path().join("other-sled");
    {
        let db = sled::open(&other_app).unwrap();
        db.insert(b"k", b"v".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&other_app, &secret(), Config::for_tests()).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");

    // a file where a directory should be
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, &secret(), Config::for_tests()).unwrap_err();
    assert!(matches!(err, Error::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn future_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    drop(Store::open(&path, &secret(), Config::for_tests()).unwrap());
    {
        let db = raw_sled(&path);
        let meta = db.open_tree("meta").unwrap();
        meta.insert(b"format_version", 99u32.to_be_bytes().to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&path, &secret(), Config::for_tests()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 99,
                supported: 2
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("open it with a credstore release"));
}

#[test]
fn corrupt_record_is_an_error_naming_tree_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let box_id = {
        let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
        john(&store).0.box_id
    };
    {
        let db = raw_sled(&path);
        let customers = db.open_tree("customers").unwrap();
        customers
            .insert(box_id.to_be_bytes(), vec![1u8, 0xff, 0xff, 0xff])
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
    let err = store.customer(box_id).unwrap_err();
    match &err {
        Error::CorruptRecord { tree, key } => {
            assert_eq!(*tree, "customers");
            assert!(key.starts_with("0x"));
        }
        other => panic!("{other:?}"),
    }
    let err = store
        .login("johndoe@email.com", &pw("pass12345"))
        .unwrap_err();
    assert!(matches!(err, Error::CorruptRecord { .. }), "{err:?}");
    let report = store.check_integrity().unwrap();
    assert!(!report.is_sound());
}

// ---------------------------------------------------------------- secrets at rest

fn forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let b = secret.as_bytes();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64np = base64::engine::general_purpose::STANDARD_NO_PAD;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut out = vec![
        ("plain".to_string(), b.to_vec()),
        ("hex".to_string(), hex.clone().into_bytes()),
        ("HEX".to_string(), hex.to_uppercase().into_bytes()),
        ("base64".to_string(), b64np.encode(b).into_bytes()),
    ];
    // a base64 secret's raw bytes too
    if let Ok(raw) = b64.decode(secret) {
        out.push(("raw".to_string(), raw));
    }
    out
}

fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    files
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_secret_reaches_the_database_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let imported_key = "Qm9va2tlZXBlcnMtc2VjcmV0LWN1c3RvbWVyLWtleQ==";
    let app_key = "1656d700707ad9a77f737e5df3db088a";
    let (registered_key, secrets) = {
        let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
        let (c, key) = store
            .register(NewCustomer::new(
                "alice@example.com",
                "Alice",
                "A",
                pw("first-Passw0rd!"),
            ))
            .unwrap();
        store
            .import_customer(ImportedCustomer {
                box_id: 811111,
                email: "johndoe@email.com".into(),
                first_name: "John".into(),
                last_name: "Doe".into(),
                password_hash: "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS"
                    .into(),
                key: Some(CustomerKey::new(imported_key).unwrap()),
                flags: CustomerFlags::default(),
                enrolment_date: None,
                activation_date: None,
            })
            .unwrap();
        store
            .import_app(
                396,
                "Skypostal",
                Some("acme12aa"),
                &AppKey::new(app_key).unwrap(),
            )
            .unwrap();
        let (_, created_app_key) = store.create_app(397, "Other", None).unwrap();
        store
            .update_password(c.box_id, &key, "alice@example.com", &pw("second-Passw0rd?"))
            .unwrap();
        // legacy login rehashes "password" into argon2id
        store.login("johndoe@email.com", &pw("password")).unwrap();
        let (_, rotated) = store
            .change_email(
                811111,
                &CustomerKey::new(imported_key).unwrap(),
                "john@new.example",
            )
            .unwrap();
        store.flush().unwrap();
        (
            key.expose_secret().to_owned(),
            vec![
                "first-Passw0rd!".to_string(),
                "second-Passw0rd?".to_string(),
                "password".to_string(),
                imported_key.to_string(),
                app_key.to_string(),
                created_app_key.expose_secret().to_string(),
                rotated.expose_secret().to_string(),
            ],
        )
    };
    let files = all_bytes(&path);
    assert!(!files.is_empty());
    // the scan sees the data: non-secret fields are there in plain form
    assert!(
        files.iter().any(|(_, b)| contains(b, b"alice@example.com")),
        "the scan should find the non-secret email"
    );
    let mut all = secrets;
    all.push(registered_key);
    for s in &all {
        for (form, needle) in forms(s) {
            for (name, bytes) in &files {
                assert!(
                    !contains(bytes, &needle),
                    "secret #{} found in {form} form in {name}",
                    all.iter().position(|x| x == s).unwrap()
                );
            }
        }
    }
}

/// Issue 13: queued reset mails hold their tokens sealed. With mails
/// waiting, neither the write-ahead log nor (after a checkpoint) sled's
/// files hold a token in any form; reopened with the secret, the queue
/// unseals the same tokens.
#[test]
fn queued_mail_tokens_never_reach_the_database_directory() {
    use credstore::{Lang, MailRequest, ResetDetails};
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
    for i in 0..4 {
        let email = format!("waiting{i}@example.com");
        store
            .register(NewCustomer::new(
                email.as_str(),
                "W",
                "M",
                pw("a-password-1"),
            ))
            .unwrap();
        let lang = if i % 2 == 0 { Lang::Es } else { Lang::En };
        let mail = MailRequest {
            lang,
            shop: "acme12aa".into(),
        };
        store
            .request_reset_by_mail(&email, ResetDetails::default(), &mail)
            .unwrap();
    }
    let tokens: Vec<String> = store
        .mail_due(10)
        .unwrap()
        .mails
        .iter()
        .map(|m| m.token.expose_secret().to_owned())
        .collect();
    assert_eq!(tokens.len(), 4);
    // Every form of every token, found in one pass over each file (keyed
    // by a needle's first 8 bytes): the files are tens of MiB.
    type Needle = (usize, String, Vec<u8>);
    let mut needles: HashMap<[u8; 8], Vec<Needle>> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        for (form, needle) in forms(t) {
            let head: [u8; 8] = needle[..8].try_into().unwrap();
            needles.entry(head).or_default().push((i, form, needle));
        }
    }
    let mut first = [false; 256];
    for head in needles.keys() {
        first[usize::from(head[0])] = true;
    }
    let scan = |when: &str| {
        let files = all_bytes(&path);
        assert!(
            files
                .iter()
                .any(|(_, b)| contains(&b[..b.len().min(1 << 20)], b"waiting0@example.com")),
            "{when}: the scan sees the data"
        );
        for (name, bytes) in &files {
            for (at, w) in bytes.windows(8).enumerate() {
                let Some(found) = needles.get(w) else {
                    continue;
                };
                for (i, form, needle) in found {
                    assert!(
                        !bytes[at..].starts_with(needle),
                        "{when}: token #{i} in {form} form in {name}"
                    );
                }
            }
        }
    };
    scan("logged");
    // Closing checkpoints: sled's own files then hold the queue.
    drop(store);
    scan("closed");
    let store = Store::open(&path, &secret(), Config::for_tests()).unwrap();
    let mut again: Vec<String> = store
        .mail_due(10)
        .unwrap()
        .mails
        .iter()
        .map(|m| m.token.expose_secret().to_owned())
        .collect();
    let mut want = tokens.clone();
    again.sort();
    want.sort();
    assert_eq!(again, want);
}

// ---------------------------------------------------------------- legacy hashes

#[derive(serde::Deserialize)]
struct Vector {
    source: String,
    password: String,
    hash: String,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/legacy-hashes.json");
    serde_json::from_str(text).unwrap()
}

fn import(store: &Store, box_id: u64, email: &str, hash: &str) -> Result<(), Error> {
    store
        .import_customer(ImportedCustomer {
            box_id,
            email: email.into(),
            first_name: "Legacy".into(),
            last_name: "User".into(),
            password_hash: hash.into(),
            key: None,
            flags: CustomerFlags::default(),
            enrolment_date: None,
            activation_date: None,
        })
        .map(|_| ())
}

/// Hashing-heavy: on the production backend only.
#[test]
fn legacy_hashes_verify_and_are_rehashed_at_first_login() {
    let backend = Backend::Wal;
    let vs = vectors();
    assert!(vs.len() >= 40, "the vector file has {} entries", vs.len());
    // A strict policy: login must not apply it (the vectors include "" and "password").
    let config = Config::for_tests().with_password_policy(PasswordPolicy {
        min_chars: 30,
        max_chars: 255,
    });
    let store = backend.open(&secret(), config);
    let params = Argon2Params::insecure_for_tests();
    let current = (params.m_cost(), params.t_cost(), params.p_cost());
    std::thread::scope(|s| {
        for chunk in vs.chunks(vs.len().div_ceil(4)) {
            let store = &store;
            let base = vs.iter().position(|v| std::ptr::eq(v, &chunk[0])).unwrap();
            s.spawn(move || {
                for (j, v) in chunk.iter().enumerate() {
                    let i = base + j;
                    let email = format!("legacy{i}@example.com");
                    let box_id = 1000 + i as u64;
                    import(store, box_id, &email, &v.hash).unwrap();
                    let before = store.password_hash_info(box_id).unwrap();
                    assert_ne!(
                        before.scheme,
                        PasswordScheme::Argon2idPeppered,
                        "{}",
                        v.source
                    );

                    // a prefix, not a suffix: bcrypt ignores bytes past 72
                    let wrong = store
                        .login(&email, &pw(&format!("x{}", v.password)))
                        .unwrap_err();
                    assert!(
                        matches!(wrong, Error::InvalidCredentials(Credential::Password)),
                        "{}: {wrong:?}",
                        v.source
                    );
                    // still legacy after a failure
                    assert_eq!(
                        store.password_hash_info(box_id).unwrap().scheme,
                        before.scheme
                    );

                    let login = store
                        .login(&email, &pw(&v.password))
                        .unwrap_or_else(|e| panic!("{} {:?}: {e:?}", v.source, v.password));
                    assert_eq!(login.customer.box_id, box_id);
                    let after = store.password_hash_info(box_id).unwrap();
                    assert_eq!(
                        after.scheme,
                        PasswordScheme::Argon2idPeppered,
                        "{}",
                        v.source
                    );
                    assert_eq!(after.params, current, "{}", v.source);
                    // and it still logs in (now against argon2id), and refuses a wrong one
                    store.login(&email, &pw(&v.password)).unwrap();
                    assert!(store.login(&email, &pw("definitely-wrong")).is_err());
                }
            });
        }
    });
    // every rehash was logged once
    let rehashed = store
        .events(0, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::PasswordRehashed)
        .count();
    assert_eq!(rehashed, vs.len());
}

on_every_backend! {
    fn bcrypt_reads_72_bytes_and_the_rehash_covers_the_whole_password(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let v = vectors()
        .into_iter()
        .find(|v| v.hash.starts_with("$2b$04$") && v.password.len() == 72)
        .expect("a cost-4 bcrypt vector of a 72-byte password");
    import(&store, 5, "long@example.com", &v.hash).unwrap();
    let longer = format!("{}-and-then-some", v.password);
    // the 72-byte prefix is what bcrypt (and PHP, and the C libraries) compared
    store.login("long@example.com", &pw(&longer)).unwrap();
    let info = store.password_hash_info(5).unwrap();
    assert_eq!(info.scheme, PasswordScheme::Argon2idPeppered);
    // now the whole password counts
    assert!(store.login("long@example.com", &pw(&v.password)).is_err());
    store.login("long@example.com", &pw(&longer)).unwrap();
}
}

on_every_backend! {
    fn absurd_legacy_parameters_are_refused_before_hashing(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let bombs = [
        "$argon2id$v=19$m=4294967295,t=3,p=4$LQ4/tLTwlbQu/DrnaZs+DQ$RXo6/waKMVL1w6tPeVDodvqdOaXtXY02u0+sQL9WbMU",
        "$argon2id$v=19$m=65536,t=4000000,p=4$LQ4/tLTwlbQu/DrnaZs+DQ$RXo6/waKMVL1w6tPeVDodvqdOaXtXY02u0+sQL9WbMU",
        "$argon2id$v=19$m=65536,t=3,p=16777215$LQ4/tLTwlbQu/DrnaZs+DQ$RXo6/waKMVL1w6tPeVDodvqdOaXtXY02u0+sQL9WbMU",
        "$2b$31$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS",
    ];
    for bomb in bombs {
        let err = import(&store, 9, "bomb@example.com", bomb).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput(InputError::HashParamsOutOfBounds(_))
            ),
            "{bomb}: {err:?}"
        );
    }
    for garbage in ["", "md5$abc", "$argon2id$v=19$m=1024", "$2b$04$tooshort"] {
        let err = import(&store, 9, "bomb@example.com", garbage).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(InputError::MalformedHash(_))),
            "{garbage}: {err:?}"
        );
    }
    assert!(matches!(
        store.customer(9),
        Err(Error::NotFound(Entity::Customer))
    ));
    assert_eq!(event_count(&store), 0);
}
}

// ---------------------------------------------------------------- lock-out

on_every_backend! {
    fn lockout_after_failures_then_unlock_after_the_lock_time(backend) {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let store = backend.open(&secret(),
        Config::for_tests().with_clock(Arc::new(clock.clone())),
    );
    john(&store);
    for i in 0..5 {
        let e = store
            .login("johndoe@email.com", &pw("wrong-password"))
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidCredentials(Credential::Password)),
            "attempt {i}: {e:?}"
        );
    }
    // locked: the right password is refused, and so is a wrong one (not checked)
    let e = store
        .login("johndoe@email.com", &pw("pass12345"))
        .unwrap_err();
    let until = match e {
        Error::Locked { until } => until,
        other => panic!("{other:?}"),
    };
    assert_eq!(until, Timestamp(1_700_000_000_000 + 15 * 60 * 1000));
    clock.advance(Duration::from_secs(15 * 60) - Duration::from_millis(1));
    assert!(matches!(
        store.login("johndoe@email.com", &pw("pass12345")),
        Err(Error::Locked { .. })
    ));
    clock.advance(Duration::from_millis(1));
    let login = store.login("johndoe@email.com", &pw("pass12345")).unwrap();
    assert_eq!(login.customer.failed_logins, 0);
    assert_eq!(login.customer.locked_until, None);
}
}

on_every_backend! {
    fn lockout_is_configurable_and_success_resets_the_count(backend) {
    let clock = ManualClock::new(Timestamp(0));
    let store = backend.open(&secret(),
        Config::for_tests()
            .with_clock(Arc::new(clock.clone()))
            .with_lockout(LockoutPolicy {
                max_failures: 2,
                lock_for: Duration::from_secs(60),
            }),
    );
    john(&store);
    store
        .login("johndoe@email.com", &pw("nope-nope"))
        .unwrap_err();
    store.login("johndoe@email.com", &pw("pass12345")).unwrap();
    // the count restarted: one more failure does not lock
    store
        .login("johndoe@email.com", &pw("nope-nope"))
        .unwrap_err();
    store.login("johndoe@email.com", &pw("pass12345")).unwrap();
    store
        .login("johndoe@email.com", &pw("nope-nope"))
        .unwrap_err();
    store
        .login("johndoe@email.com", &pw("nope-nope"))
        .unwrap_err();
    assert!(matches!(
        store.login("johndoe@email.com", &pw("pass12345")),
        Err(Error::Locked { .. })
    ));
    let kinds: Vec<_> = store
        .events(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::AccountLocked));
}
}

on_every_backend! {
    fn unknown_email_and_wrong_password_look_the_same(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    john(&store);
    let a = store
        .login("nobody@email.com", &pw("pass12345"))
        .unwrap_err();
    let b = store
        .login("johndoe@email.com", &pw("pass123456"))
        .unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
    assert!(matches!(a, Error::InvalidCredentials(Credential::Password)));
}
}

on_every_backend! {
    fn must_change_password_is_refused_after_a_correct_password(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, key) = john(&store);
    store
        .set_flags(
            c.box_id,
            FlagsUpdate {
                must_change_password: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        store.login("johndoe@email.com", &pw("wrong-one-1")),
        Err(Error::InvalidCredentials(_))
    ));
    assert!(matches!(
        store.login("johndoe@email.com", &pw("pass12345")),
        Err(Error::MustChangePassword)
    ));
    store
        .update_password(c.box_id, &key, "johndoe@email.com", &pw("fresh-pass-1"))
        .unwrap();
    let login = store
        .login("johndoe@email.com", &pw("fresh-pass-1"))
        .unwrap();
    assert!(!login.customer.flags.must_change_password);
}
}

on_every_backend! {
    fn a_login_with_a_current_hash_rewrites_nothing(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, _) = john(&store);
    for _ in 0..2 {
        let login = store.login("johndoe@email.com", &pw("pass12345")).unwrap();
        assert_eq!(login.customer.credential_version, c.credential_version);
        let last = store.events(0, usize::MAX).unwrap().pop().unwrap();
        assert_eq!(last.kind, EventKind::LoginSucceeded, "{last:?}");
        assert_eq!(last.box_id, Some(c.box_id));
    }
    assert_eq!(
        store.password_hash_info(c.box_id).unwrap().scheme,
        PasswordScheme::Argon2idPeppered
    );
}
}

on_every_backend! {
    fn activation_is_dated_once_when_the_account_is_first_activated(backend) {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let store = backend.open(&secret(),
        Config::for_tests().with_clock(Arc::new(clock.clone())),
    );
    let hash = "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS";
    import(&store, 7, "inactive@example.com", hash).unwrap();
    let set = |update: FlagsUpdate| store.set_flags(7, update).unwrap();
    assert_eq!(store.customer(7).unwrap().activation_date, None);
    // Other flags, or deactivating, date nothing.
    clock.advance(Duration::from_secs(60));
    let c = set(FlagsUpdate { is_vip: Some(true), ..Default::default() });
    assert_eq!(c.activation_date, None);
    let c = set(FlagsUpdate { is_active: Some(false), ..Default::default() });
    assert_eq!(c.activation_date, None);
    // The first activation is dated now...
    clock.advance(Duration::from_secs(60));
    let activated = credstore::Clock::now(&clock);
    let c = set(FlagsUpdate { is_active: Some(true), ..Default::default() });
    assert_eq!(c.activation_date, Some(activated));
    assert!(c.flags.is_active);
    // ...and keeps that date through later activations.
    clock.advance(Duration::from_secs(60));
    set(FlagsUpdate { is_active: Some(false), ..Default::default() });
    let c = set(FlagsUpdate { is_active: Some(true), ..Default::default() });
    assert_eq!(c.activation_date, Some(activated));
    assert_eq!(store.customer(7).unwrap().activation_date, Some(activated));
}
}

// ---------------------------------------------------------------- concurrency and atomicity

on_every_backend! {
    fn concurrent_rotations_with_the_same_version_have_exactly_one_winner(backend) {
    let lenient = LockoutPolicy {
        max_failures: 100,
        lock_for: Duration::from_secs(1),
    };
    let store = backend.open(&secret(), Config::for_tests().with_lockout(lenient));
    let (c, _) = john(&store);
    let v0 = c.credential_version;
    let barrier = Arc::new(Barrier::new(8));
    let results: Vec<(usize, Result<credstore::Customer, Error>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let barrier = barrier.clone();
                s.spawn(move || {
                    let p = pw(&format!("rotated-password-{i}"));
                    barrier.wait();
                    (i, store.change_password(c.box_id, &p, v0))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = results
        .iter()
        .filter(|r| r.1.is_ok())
        .map(|r| r.0)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, r) in &results {
        if !winners.contains(i) {
            assert!(matches!(r, Err(Error::Conflict)), "{i}: {r:?}");
        }
    }
    let w = winners[0];
    assert_eq!(store.customer(c.box_id).unwrap().credential_version, v0 + 1);
    for i in 0..8 {
        let ok = store
            .login("johndoe@email.com", &pw(&format!("rotated-password-{i}")))
            .is_ok();
        assert_eq!(ok, i == w, "password {i}");
    }
    let changes = store
        .events(0, 100)
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::PasswordChanged)
        .count();
    assert_eq!(changes, 1);
}
}

on_every_backend! {
    fn a_failed_rotation_changes_nothing(backend) {
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = armed.clone();
    let fp = FailPoint::new(move |name| {
        name == "rotation:before-event" && a.load(std::sync::atomic::Ordering::SeqCst)
    });
    let store = backend.open(&secret(), Config::for_tests().with_fail_point(fp));
    let (c, key) = john(&store);
    let events_before = event_count(&store);
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = store
        .update_password(c.box_id, &key, "johndoe@email.com", &pw("never-stored-1"))
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    assert!(!err.to_string().contains("never-stored-1"));
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(event_count(&store), events_before, "no event appended");
    assert_eq!(
        store.customer(c.box_id).unwrap().credential_version,
        c.credential_version
    );
    store.login("johndoe@email.com", &pw("pass12345")).unwrap();
    assert!(
        store
            .login("johndoe@email.com", &pw("never-stored-1"))
            .is_err()
    );
    assert!(store.check_integrity().unwrap().is_sound());
}
}

// ---------------------------------------------------------------- customers

on_every_backend! {
    fn register_assigns_ids_and_refuses_duplicates(backend) {
    let store =
        backend.open(&secret(), Config::for_tests().with_first_box_id(811_000));
    let (a, ka) = store
        .register(NewCustomer::new(
            "a@example.com",
            "A",
            "A",
            pw("password-a"),
        ))
        .unwrap();
    assert_eq!(a.box_id, 811_000);
    assert_eq!(ka.expose_secret().len(), 44);
    let e = store
        .register(NewCustomer::new(
            "  A@EXAMPLE.com ",
            "A",
            "A",
            pw("password-a"),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(Entity::Email)), "{e:?}");
    // an import ahead of the counter is skipped by later registrations
    import(
        &store,
        811_001,
        "imported@example.com",
        "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS",
    )
    .unwrap();
    let e = import(
        &store,
        811_001,
        "other@example.com",
        "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS",
    )
    .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(Entity::Customer)), "{e:?}");
    let (b, _) = store
        .register(NewCustomer::new(
            "b@example.com",
            "B",
            "B",
            pw("password-b"),
        ))
        .unwrap();
    assert_eq!(b.box_id, 811_002);
    assert_eq!(
        store.customer_by_email("B@example.COM").unwrap().box_id,
        811_002
    );
    assert!(store.check_integrity().unwrap().is_sound());
}
}

on_every_backend! {
    fn authenticate_by_key_and_change_email_rotates_the_key(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, key) = john(&store);
    assert_eq!(
        store.authenticate_customer(c.box_id, &key).unwrap().box_id,
        c.box_id
    );
    let wrong = CustomerKey::new("YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=").unwrap();
    assert!(matches!(
        store.authenticate_customer(c.box_id, &wrong),
        Err(Error::InvalidCredentials(Credential::CustomerKey))
    ));
    assert!(matches!(
        store.authenticate_customer(999_999, &key),
        Err(Error::InvalidCredentials(Credential::CustomerKey))
    ));
    let (after, new_key) = store
        .change_email(c.box_id, &key, "John.Doe@Example.com")
        .unwrap();
    assert_eq!(after.email, "John.Doe@Example.com");
    assert_eq!(after.credential_version, c.credential_version + 1);
    assert!(!new_key.ct_eq(&key));
    assert!(store.authenticate_customer(c.box_id, &key).is_err());
    store.authenticate_customer(c.box_id, &new_key).unwrap();
    let login = store
        .login("john.doe@example.com", &pw("pass12345"))
        .unwrap();
    assert!(login.key.ct_eq(&new_key));
    assert!(store.login("johndoe@email.com", &pw("pass12345")).is_err());
    // the old address is free again, the new one is taken
    store
        .register(NewCustomer::new(
            "johndoe@email.com",
            "J",
            "D",
            pw("password-2"),
        ))
        .unwrap();
    assert!(store.check_integrity().unwrap().is_sound());
}
}

on_every_backend! {
    fn update_password_checks_key_then_email_then_policy(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, key) = john(&store);
    let other = CustomerKey::new("not-the-key").unwrap();
    assert!(matches!(
        store.update_password(c.box_id, &other, "johndoe@email.com", &pw("new-password-1")),
        Err(Error::InvalidCredentials(Credential::CustomerKey))
    ));
    assert!(matches!(
        store.update_password(c.box_id, &key, "jane@email.com", &pw("new-password-1")),
        Err(Error::InvalidCredentials(Credential::Email))
    ));
    assert!(matches!(
        store.update_password(c.box_id, &key, "JohnDoe@Email.com", &pw("short")),
        Err(Error::Policy(PolicyViolation::TooShort { min: 8 }))
    ));
    let updated = store
        .update_password(c.box_id, &key, " JohnDoe@Email.com", &pw("new-password-1"))
        .unwrap();
    assert_eq!(updated.credential_version, c.credential_version + 1);
}
}

on_every_backend! {
    fn bad_input_gets_a_precise_error_and_changes_nothing(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let reg = |email: &str, password: Password| {
        store
            .register(NewCustomer::new(email, "N", "N", password))
            .unwrap_err()
    };
    assert!(matches!(
        reg("", pw("password-1")),
        Error::InvalidInput(InputError::EmptyEmail)
    ));
    assert!(matches!(
        reg(
            &format!("{}@example.com", "x".repeat(300)),
            pw("password-1")
        ),
        Error::InvalidInput(InputError::EmailTooLong { .. })
    ));
    assert!(matches!(
        reg("a\0b@example.com", pw("password-1")),
        Error::InvalidInput(InputError::MalformedEmail)
    ));
    assert!(matches!(
        reg("ok@example.com", pw("")),
        Error::Policy(PolicyViolation::TooShort { .. })
    ));
    assert!(matches!(
        reg("ok@example.com", pw(&"p".repeat(256))),
        Error::Policy(PolicyViolation::TooLong { max: 255 })
    ));
    assert!(matches!(
        reg("ok@example.com", pw("pass\0word-1")),
        Error::Policy(PolicyViolation::ControlCharacter)
    ));
    assert!(matches!(
        Password::new("p".repeat(Password::MAX_BYTES + 1)),
        Err(InputError::PasswordTooLong { .. })
    ));
    assert!(matches!(
        Password::from_utf8(vec![b'a', 0xc3, 0x28]),
        Err(InputError::InvalidUtf8 { field: "password" })
    ));
    let e = store
        .register(NewCustomer::new(
            "ok@example.com",
            "N\0",
            "N",
            pw("password-1"),
        ))
        .unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidInput(InputError::MalformedText {
            field: "first_name"
        })
    ));
    assert!(matches!(
        store.login("not an email", &pw("x")),
        Err(Error::InvalidInput(InputError::MalformedEmail))
    ));
    assert_eq!(event_count(&store), 0);
    assert!(matches!(
        store.customer_by_email("ok@example.com"),
        Err(Error::NotFound(_))
    ));
}
}

// ---------------------------------------------------------------- apps

on_every_backend! {
    fn apps_create_import_authenticate_disable_list(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (app, key) = store.create_app(1, "First", None).unwrap();
    assert_eq!(key.expose_secret().len(), 32);
    assert_eq!(store.authenticate_app(1, &key).unwrap(), app);
    let demo = AppKey::new("1656d700707ad9a77f737e5df3db088a").unwrap();
    store
        .import_app(396, "Skypostal", Some("acme12aa"), &demo)
        .unwrap();
    assert!(matches!(
        store.create_app(396, "dup", None),
        Err(Error::AlreadyExists(Entity::App))
    ));
    assert!(matches!(
        store.create_app(397, "dup shop", Some("acme12aa")),
        Err(Error::AlreadyExists(Entity::Shop))
    ));
    assert_eq!(store.app_by_shop("acme12aa").unwrap().user_code, 396);
    assert!(matches!(
        store.app_by_shop("nope"),
        Err(Error::NotFound(Entity::Shop))
    ));
    assert_eq!(store.authenticate_app_key(&demo).unwrap().user_code, 396);
    assert!(matches!(
        store.authenticate_app(396, &key),
        Err(Error::InvalidCredentials(Credential::App))
    ));
    assert!(matches!(
        store.authenticate_app(9999, &demo),
        Err(Error::InvalidCredentials(Credential::App))
    ));
    assert!(store.app_key(396).unwrap().ct_eq(&demo));
    store.set_app_enabled(396, false).unwrap();
    assert!(store.authenticate_app(396, &demo).is_err());
    assert!(store.authenticate_app_key(&demo).is_err());
    assert!(store.app_by_shop("acme12aa").is_err());
    let list = store.apps().unwrap();
    assert_eq!(
        list.iter().map(|a| a.user_code).collect::<Vec<_>>(),
        vec![1, 396]
    );
    assert!(!list[1].enabled);
    store.set_app_enabled(396, true).unwrap();
    store.authenticate_app(396, &demo).unwrap();
    assert!(store.check_integrity().unwrap().is_sound());
}
}

// ---------------------------------------------------------------- events, debug

on_every_backend! {
    fn event_log_reads_bounded_from_a_sequence_and_trims(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (c, key) = john(&store);
    for i in 0..5 {
        store
            .update_password(
                c.box_id,
                &key,
                "johndoe@email.com",
                &pw(&format!("password-{i}x")),
            )
            .unwrap();
    }
    let all = store.events(0, 100).unwrap();
    assert_eq!(all.len(), 6);
    // Sequence numbers increase; on PostgreSQL (a sequence, not rolled
    // back with a retried transaction) they may skip.
    assert!(all.windows(2).all(|w| w[1].seq > w[0].seq));
    if backend != Backend::Postgres {
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
    assert_eq!(all[0].kind, EventKind::CustomerRegistered);
    assert!(all.iter().all(|e| e.box_id == Some(c.box_id)));
    let tail = store.events(all[3].seq, 2).unwrap();
    assert_eq!(tail, all[3..5].to_vec());
    assert_eq!(store.last_events(2).unwrap(), all[4..].to_vec());
    assert_eq!(store.last_events(100).unwrap(), all);
    assert_eq!(store.trim_events(all[2].seq).unwrap(), 2);
    assert_eq!(store.events(0, 100).unwrap(), all[2..].to_vec());
    // events never carry a secret
    let dump = format!("{:?}", store.events(0, 100).unwrap());
    assert!(!dump.contains("password-"));
}
}

on_every_backend! {
    fn debug_of_secret_bearing_types_prints_no_secret(backend) {
    let store = backend.open(&secret(), Config::for_tests());
    let (_, key) = john(&store);
    let login = store.login("johndoe@email.com", &pw("pass12345")).unwrap();
    let (_, app_key) = store.create_app(7, "x", None).unwrap();
    let s = secret();
    let dumps = [
        format!("{:?}", login),
        format!("{:#?}", login),
        format!("{:?}", key),
        format!("{:?}", app_key),
        format!("{:?}", s),
        format!("{:?}", pw("pass12345")),
        format!("{:?}", *store),
        format!("{:?}", Config::for_tests()),
    ];
    let hexsecret: String = s
        .expose_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for d in &dumps {
        assert!(!d.contains(key.expose_secret()), "{d}");
        assert!(!d.contains(app_key.expose_secret()), "{d}");
        assert!(!d.contains("pass12345"), "{d}");
        assert!(!d.contains(&hexsecret[..16]), "{d}");
        assert!(!d.contains("90, 90, 90"), "{d}"); // the secret's bytes as a list
    }
    assert!(dumps[0].contains("[redacted]"));
}
}

/// `Config::default()` makes every acknowledged change durable: each of 20
/// single-threaded commits waits for an `fdatasync` of the log (counted by
/// the log's file layer after the system call returns). A sync made a
/// no-op, or a default that stopped syncing, fails here.
#[test]
fn the_default_configuration_syncs_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data"), &secret(), Config::default()).unwrap();
    let (c, _) = john(&store);
    let before = credstore::internal::wal_fdatasyncs();
    for i in 0..20 {
        store
            .set_flags(
                c.box_id,
                FlagsUpdate {
                    is_vip: Some(i % 2 == 0),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let synced = credstore::internal::wal_fdatasyncs() - before;
    // Other tests of this binary may sync meanwhile: at least, never less.
    assert!(
        synced >= 20,
        "{synced} fdatasyncs for 20 acknowledged commits"
    );
}

/// `Store::log_stats` counts what the log did: commits, bytes, syncs (by
/// group size) and checkpoints.
#[test]
fn log_stats_count_commits_syncs_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("data"), &secret(), Config::for_tests()).unwrap();
    let before = store.log_stats();
    let (c, _) = john(&store);
    for i in 0..10 {
        store
            .set_flags(
                c.box_id,
                FlagsUpdate {
                    is_vip: Some(i % 2 == 0),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    store.flush().unwrap();
    let after = store.log_stats();
    assert_eq!(after.commits - before.commits, 11);
    assert!(after.bytes > before.bytes);
    // One writer: each commit its own sync, each sync a group of one.
    assert_eq!(after.syncs - before.syncs, 11);
    assert_eq!(after.group_sizes[0] - before.group_sizes[0], 11);
    assert_eq!(after.checkpoints - before.checkpoints, 1);
    assert_eq!(
        Store::temporary(&secret(), Config::for_tests())
            .unwrap()
            .log_stats(),
        credstore::LogStats::default()
    );
}
