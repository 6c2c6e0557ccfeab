//! Model test: random operation sequences run against the store and against a
//! plain in-memory model; every outcome is compared, then the final state.

#[path = "support/backend.rs"]
mod backend;
use backend::Backend;

use std::collections::BTreeMap;
use std::time::Duration;

use credstore::{
    Config, Credential, CustomerKey, Entity, Error, FlagsUpdate, LockoutPolicy, NewCustomer,
    Password, PolicyViolation, StoreSecret,
};
use proptest::prelude::*;

const EMAILS: usize = 5;
const PASSWORDS: [&str; 4] = [
    "password-zero",
    "password-one",
    "p\u{FB01}ssword-two",
    "short",
];

fn email(i: usize, shout: bool) -> String {
    let e = format!("user{i}@example.com");
    if shout { e.to_uppercase() } else { e }
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        email: usize,
        pw: usize,
    },
    Login {
        email: usize,
        shout: bool,
        pw: usize,
    },
    Update {
        cust: usize,
        right_key: bool,
        right_email: bool,
        pw: usize,
    },
    ChangeEmail {
        cust: usize,
        email: usize,
    },
    MustChange {
        cust: usize,
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..EMAILS, 0..PASSWORDS.len()).prop_map(|(email, pw)| Op::Register { email, pw }),
        (0..EMAILS, any::<bool>(), 0..PASSWORDS.len()).prop_map(|(email, shout, pw)| Op::Login {
            email,
            shout,
            pw
        }),
        (0..8usize, any::<bool>(), any::<bool>(), 0..PASSWORDS.len()).prop_map(
            |(cust, right_key, right_email, pw)| Op::Update {
                cust,
                right_key,
                right_email,
                pw
            }
        ),
        (0..8usize, 0..EMAILS).prop_map(|(cust, email)| Op::ChangeEmail { cust, email }),
        (0..8usize, any::<bool>()).prop_map(|(cust, on)| Op::MustChange { cust, on }),
    ]
}

/// What the model predicts, as a comparable summary.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    EmailTaken,
    BadPassword,
    BadKey,
    BadEmail,
    Policy,
    MustChange,
}

fn summarize<T>(r: &Result<T, Error>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(Error::AlreadyExists(Entity::Email)) => Outcome::EmailTaken,
        Err(Error::InvalidCredentials(Credential::Password)) => Outcome::BadPassword,
        Err(Error::InvalidCredentials(Credential::CustomerKey)) => Outcome::BadKey,
        Err(Error::InvalidCredentials(Credential::Email)) => Outcome::BadEmail,
        Err(Error::Policy(PolicyViolation::TooShort { .. })) => Outcome::Policy,
        Err(Error::MustChangePassword) => Outcome::MustChange,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[derive(Debug, Clone)]
struct Model {
    box_id: u64,
    email: usize,
    pw: usize,
    key: String,
    version: u64,
    must_change: bool,
}

/// NFKC: the ligature password equals its spelled-out form; no pool entry
/// collides, so "same index" is "same password".
fn same_pw(a: usize, b: usize) -> bool {
    a == b
}

fn run(backend: Backend, ops: Vec<Op>) {
    let config = Config::for_tests()
        .with_first_box_id(100)
        .with_lockout(LockoutPolicy {
            max_failures: u32::MAX,
            lock_for: Duration::from_secs(1),
        });
    let store = backend.open(&StoreSecret::from_bytes([1; 32]), config);
    let mut model: Vec<Model> = Vec::new();
    let by_email = |m: &Vec<Model>, e: usize| m.iter().position(|c| c.email == e);

    for op in ops {
        match op {
            Op::Register { email: e, pw } => {
                let r = store.register(NewCustomer::new(
                    email(e, false),
                    "F",
                    "L",
                    Password::new(PASSWORDS[pw]).unwrap(),
                ));
                // input and policy are checked before the transaction looks at the email index
                let expected = if PASSWORDS[pw] == "short" {
                    Outcome::Policy
                } else if by_email(&model, e).is_some() {
                    Outcome::EmailTaken
                } else {
                    Outcome::Ok
                };
                assert_eq!(summarize(&r), expected, "{op:?}");
                if let Ok((c, key)) = r {
                    assert_eq!(c.box_id, 100 + model.len() as u64);
                    model.push(Model {
                        box_id: c.box_id,
                        email: e,
                        pw,
                        key: key.expose_secret().into(),
                        version: c.credential_version,
                        must_change: false,
                    });
                }
            }
            Op::Login {
                email: e,
                shout,
                pw,
            } => {
                let r = store.login(&email(e, shout), &Password::new(PASSWORDS[pw]).unwrap());
                let expected = match by_email(&model, e) {
                    None => Outcome::BadPassword,
                    Some(i) if !same_pw(model[i].pw, pw) => Outcome::BadPassword,
                    Some(i) if model[i].must_change => Outcome::MustChange,
                    Some(_) => Outcome::Ok,
                };
                assert_eq!(summarize(&r), expected, "{op:?}");
                if let Ok(login) = r {
                    let m = &model[by_email(&model, e).unwrap()];
                    assert_eq!(login.customer.box_id, m.box_id);
                    assert_eq!(login.key.expose_secret(), m.key);
                }
            }
            Op::Update {
                cust,
                right_key,
                right_email,
                pw,
            } => {
                let Some(m) = model.get(cust).cloned() else {
                    continue;
                };
                let key = if right_key {
                    m.key.clone()
                } else {
                    format!("{}x", m.key)
                };
                let em = if right_email {
                    email(m.email, true)
                } else {
                    email((m.email + 1) % EMAILS, false)
                };
                let r = store.update_password(
                    m.box_id,
                    &CustomerKey::new(key).unwrap(),
                    &em,
                    &Password::new(PASSWORDS[pw]).unwrap(),
                );
                let expected = if !right_key {
                    Outcome::BadKey
                } else if !right_email {
                    Outcome::BadEmail
                } else if PASSWORDS[pw] == "short" {
                    Outcome::Policy
                } else {
                    Outcome::Ok
                };
                assert_eq!(summarize(&r), expected, "{op:?}");
                if let Ok(c) = r {
                    let mm = &mut model[cust];
                    mm.pw = pw;
                    mm.must_change = false;
                    mm.version += 1;
                    assert_eq!(c.credential_version, mm.version);
                }
            }
            Op::ChangeEmail { cust, email: e } => {
                let Some(m) = model.get(cust).cloned() else {
                    continue;
                };
                let r = store.change_email(
                    m.box_id,
                    &CustomerKey::new(m.key.clone()).unwrap(),
                    &email(e, false),
                );
                let taken = by_email(&model, e).is_some_and(|i| i != cust);
                let expected = if taken {
                    Outcome::EmailTaken
                } else {
                    Outcome::Ok
                };
                assert_eq!(summarize(&r), expected, "{op:?}");
                if let Ok((c, key)) = r {
                    let mm = &mut model[cust];
                    mm.email = e;
                    mm.key = key.expose_secret().into();
                    mm.version += 1;
                    assert_eq!(c.credential_version, mm.version);
                }
            }
            Op::MustChange { cust, on } => {
                let Some(m) = model.get(cust) else { continue };
                let c = store
                    .set_flags(
                        m.box_id,
                        FlagsUpdate {
                            must_change_password: Some(on),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert_eq!(c.flags.must_change_password, on);
                model[cust].must_change = on;
            }
        }
    }

    // Final state: every model customer is in the store as modelled.
    let mut seen = BTreeMap::new();
    for m in &model {
        let c = store.customer_by_email(&email(m.email, false)).unwrap();
        assert_eq!(c.box_id, m.box_id);
        assert_eq!(c.credential_version, m.version);
        assert_eq!(c.flags.must_change_password, m.must_change);
        store
            .authenticate_customer(m.box_id, &CustomerKey::new(m.key.clone()).unwrap())
            .unwrap();
        seen.insert(m.email, m.box_id);
    }
    for e in 0..EMAILS {
        if !seen.contains_key(&e) {
            assert!(matches!(
                store.customer_by_email(&email(e, false)),
                Err(Error::NotFound(_))
            ));
        }
    }
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert_eq!(report.customers, model.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        for backend in Backend::ALL {
            if backend.available() {
                run(backend, ops.clone());
            }
        }
    }
}
