//! The public [`Store`] API against a plain model, on the production path:
//! the write-ahead log (in memory, through the fault layer that keeps only
//! what was synced), group commit, overlay reads and batch apply, sled on
//! disk. Random sequences of register, import (legacy bcrypt), login right
//! and wrong (a real lock-out policy, unknown emails included), password
//! updates, email changes, disabling, reset requests, token checks and
//! consumption, purges, clock jumps, and crashes that drop everything not
//! synced (sled back to its last checkpoint, the log to its last sync)
//! followed by a reopen. Every outcome is compared with the model's, and
//! after each step every customer and the integrity check.
//!
//! Passwords come in NFKC twins ("ﬁne…"/"fine…"): one password for the
//! current scheme, two for a legacy bcrypt hash until its first login
//! rehashes it.
//!
//! Driven by bytes ([`run`]), so that the same test is a proptest here and a
//! fuzz target for long runs (`store_model`, with the `fuzzing` feature).

// Test code: a mismatch with the model panics, by design.
#![allow(clippy::unwrap_used)]

mod model;
mod rig;

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Credential, Entity, Error, InputError, PolicyViolation};
use crate::model::{
    Clock, CustomerFlags, FlagsUpdate, ImportedCustomer, NewCustomer, Password, ResetDetails,
    parse_token,
};
use model::*;
pub(crate) use rig::On;
use rig::Rig;

const EMAILS: [&str; 4] = ["a@x.co", "b@x.co", "c@x.co", "d@x.co"];
/// NFKC classes: 1 and 2 are twins, so are 3 and 4; 0 breaks the policy.
const PASSWORDS: [&str; 6] = [
    "short",
    "fine-pass-1",
    "ﬁne-pass-1",
    "other-pass-2",
    "ｏｔｈｅｒ-pass-2",
    "third-pass-3",
];
const MAX_FAILURES: u32 = 3;
const LOCK_FOR: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);
const FIRST_BOX_ID: u64 = 100;

/// Reads `data` as a sequence of operations and runs it against the store
/// on the sled backend (through the fault layer) and the model; panics at
/// the first difference.
pub(crate) fn run(data: &[u8]) {
    run_on(On::Sled, data);
}

/// [`run`] on the backend `on`.
pub(crate) fn run_on(on: On, data: &[u8]) {
    let mut rig = Rig::new(on);
    let mut m = Model {
        next_box_id: FIRST_BOX_ID,
        ..Model::default()
    };
    let mut bytes = data.iter().copied();
    let mut step = 0;
    while let Some(op) = bytes.next() {
        let mut arg = || usize::from(bytes.next().unwrap_or(0));
        let now = rig.clock.now().0;
        // Weighted: resets and clock steps often enough that a customer
        // reaches its outstanding limit, throttles and expiries.
        let what = match op % 20 {
            0..=2 => {
                let (e, p) = (arg() % EMAILS.len(), arg() % PASSWORDS.len());
                let r = rig.store().register(NewCustomer::new(
                    format!(" {} ", EMAILS[e].to_uppercase()),
                    "F",
                    "L",
                    Password::new(PASSWORDS[p]).unwrap(),
                ));
                let expected = if class(p) == 0 {
                    Outcome::Policy
                } else if m.by_email(EMAILS[e]).is_some() {
                    Outcome::Taken(Entity::Email)
                } else {
                    Outcome::Ok
                };
                assert_eq!(outcome(&r), expected, "register {e} {p}");
                if let Ok((c, key)) = r {
                    assert_eq!(c.box_id, m.next_box_id);
                    m.next_box_id += 1;
                    m.customers.push(MCustomer {
                        box_id: c.box_id,
                        email: c.email,
                        key: key.expose_secret().to_owned(),
                        class: class(p),
                        legacy_raw: None,
                        version: 1,
                        must_change: false,
                        enabled: true,
                        failed: 0,
                        locked_until: None,
                        updated_at: now,
                    });
                }
                format!("register {e} {p}")
            }
            3 => {
                let (e, p, b) = (arg() % EMAILS.len(), arg() % PASSWORDS.len(), arg());
                let must_change = b & 1 == 1;
                let box_id = match b % 5 {
                    0 => 0,
                    4 => crate::MAX_BOX_ID + 1,
                    n => FIRST_BOX_ID + 10 * n as u64,
                };
                let r = rig.store().import_customer(ImportedCustomer {
                    box_id,
                    email: EMAILS[e].to_owned(),
                    first_name: String::new(),
                    last_name: String::new(),
                    password_hash: rig.bcrypt[p].clone(),
                    key: None,
                    flags: CustomerFlags {
                        must_change_password: must_change,
                        ..CustomerFlags::default()
                    },
                    enrolment_date: None,
                    activation_date: None,
                });
                let expected = if box_id == 0 || box_id > crate::MAX_BOX_ID {
                    Outcome::Other(format!(
                        "{:?}",
                        Error::InvalidInput(InputError::BoxIdOutOfRange {
                            max: crate::MAX_BOX_ID
                        })
                    ))
                } else if m.customers.iter().any(|c| c.box_id == box_id) {
                    Outcome::Taken(Entity::Customer)
                } else if m.by_email(EMAILS[e]).is_some() {
                    Outcome::Taken(Entity::Email)
                } else {
                    Outcome::Ok
                };
                assert_eq!(outcome(&r), expected, "import {box_id} {e}");
                if let Ok((c, key)) = r {
                    m.next_box_id = m.next_box_id.max(box_id + 1);
                    m.customers.push(MCustomer {
                        box_id,
                        email: c.email,
                        key: key.expose_secret().to_owned(),
                        class: 0,
                        legacy_raw: Some(p),
                        version: 1,
                        must_change,
                        enabled: true,
                        failed: 0,
                        locked_until: None,
                        updated_at: now,
                    });
                }
                format!("import {box_id} {e} {p}")
            }
            4..=6 => {
                let (e, p) = (arg() % EMAILS.len(), arg() % PASSWORDS.len());
                let r = rig
                    .store()
                    .login(EMAILS[e], &Password::new(PASSWORDS[p]).unwrap());
                let expected = m.login(EMAILS[e], p, now);
                assert_eq!(outcome(&r), expected, "login {e} {p}");
                if let Ok(l) = r {
                    let c = m.by_email(EMAILS[e]).map(|i| &m.customers[i]).unwrap();
                    assert_eq!(l.key.expose_secret(), c.key);
                }
                format!("login {e} {p}")
            }
            7 => {
                let (i, p, how) = (arg(), arg() % PASSWORDS.len(), arg() % 4);
                let Some(i) = (!m.customers.is_empty()).then(|| i % m.customers.len()) else {
                    continue;
                };
                let c = m.customers[i].clone();
                let key = if how == 1 {
                    "wrong-key".to_owned()
                } else {
                    c.key.clone()
                };
                let email = if how == 2 { "other@x.co" } else { &c.email };
                let r = rig.store().update_password(
                    c.box_id,
                    &crate::CustomerKey::new(key).unwrap(),
                    email,
                    &Password::new(PASSWORDS[p]).unwrap(),
                );
                let expected = if how == 1 {
                    Outcome::Credentials(Credential::CustomerKey)
                } else if !c.enabled {
                    Outcome::Disabled
                } else if how == 2 {
                    Outcome::Credentials(Credential::Email)
                } else if class(p) == 0 {
                    Outcome::Policy
                } else {
                    Outcome::Ok
                };
                assert_eq!(outcome(&r), expected, "update {i} {p} {how}");
                if r.is_ok() {
                    m.bump(i, now);
                    let c = &mut m.customers[i];
                    c.class = class(p);
                    c.legacy_raw = None;
                    c.must_change = false;
                }
                format!("update {i} {p} {how}")
            }
            8 => {
                let (i, e) = (arg(), arg() % EMAILS.len());
                let Some(i) = (!m.customers.is_empty()).then(|| i % m.customers.len()) else {
                    continue;
                };
                let c = m.customers[i].clone();
                let r = rig.store().change_email(
                    c.box_id,
                    &crate::CustomerKey::new(c.key.clone()).unwrap(),
                    EMAILS[e],
                );
                let taken = m.by_email(EMAILS[e]).is_some_and(|j| j != i);
                let expected = if taken {
                    Outcome::Taken(Entity::Email)
                } else {
                    Outcome::Ok
                };
                assert_eq!(outcome(&r), expected, "email {i} {e}");
                if let Ok((_, key)) = r {
                    m.bump(i, now);
                    m.customers[i].email = EMAILS[e].to_owned();
                    m.customers[i].key = key.expose_secret().to_owned();
                }
                format!("email {i} {e}")
            }
            9 => {
                let (i, on) = (arg(), arg() & 1 == 1);
                let Some(i) = (!m.customers.is_empty()).then(|| i % m.customers.len()) else {
                    continue;
                };
                let box_id = m.customers[i].box_id;
                let r = rig.store().set_flags(
                    box_id,
                    FlagsUpdate {
                        is_enable: Some(on),
                        ..FlagsUpdate::default()
                    },
                );
                assert_eq!(outcome(&r), Outcome::Ok);
                if m.customers[i].enabled && !on {
                    m.bump(i, now);
                }
                m.customers[i].enabled = on;
                m.customers[i].updated_at = now;
                format!("enable {i} {on}")
            }
            10..=12 => {
                let e = arg() % EMAILS.len();
                let r = rig
                    .store()
                    .request_reset(EMAILS[e], ResetDetails::default());
                let expected = m.request_reset(EMAILS[e], now);
                assert_eq!(outcome(&r), expected, "reset {e}");
                if let Ok(issued) = r {
                    let c = &m.customers[m.by_email(EMAILS[e]).unwrap()];
                    assert_eq!(issued.reset.expires_at.0, now + TTL.as_millis() as i64);
                    let new = MReset {
                        id: issued.reset.id.clone(),
                        token: issued.token.expose_secret().to_owned(),
                        box_id: c.box_id,
                        email: c.email.clone(),
                        version: c.version,
                        created: now,
                        expires: now + TTL.as_millis() as i64,
                        used_at: None,
                        listed: true,
                    };
                    m.issued(new, now);
                }
                format!("reset {e}")
            }
            13 => {
                let t = arg();
                let token = match m.resets.get(t % (m.resets.len() + 1)) {
                    Some(r) => r.token.clone(),
                    None => "Z".repeat(64),
                };
                let r = rig
                    .store()
                    .check_reset_token(&parse_token(token.as_bytes()).unwrap());
                match m.live(&token, now) {
                    Some(i) => {
                        let v = r.unwrap();
                        assert_eq!(
                            (v.box_id, v.email),
                            (m.resets[i].box_id, m.resets[i].email.clone())
                        );
                    }
                    None => assert_eq!(outcome(&r), Outcome::InvalidToken, "check {t}"),
                }
                format!("check {t}")
            }
            14 | 15 => {
                let (t, p, e) = (arg(), arg() % PASSWORDS.len(), arg() % 3);
                let token = match m.resets.get(t % (m.resets.len() + 1)) {
                    Some(r) => r.token.clone(),
                    None => "Z".repeat(64),
                };
                let live = m.live(&token, now);
                let expected_email = match (e, live) {
                    (0, _) => None,
                    (1, Some(i)) => Some(m.resets[i].email.to_uppercase()),
                    _ => Some("nobody@x.co".to_owned()),
                };
                let r = rig.store().reset_password(
                    &parse_token(token.as_bytes()).unwrap(),
                    expected_email.as_deref(),
                    &Password::new(PASSWORDS[p]).unwrap(),
                );
                let expected = match live {
                    None => Outcome::InvalidToken,
                    Some(_) if e == 2 => Outcome::InvalidToken,
                    Some(_) if class(p) == 0 => Outcome::Policy,
                    Some(_) => Outcome::Ok,
                };
                assert_eq!(outcome(&r), expected, "consume {t} {p} {e}");
                if r.is_ok() {
                    let i = live.unwrap_or_default();
                    m.resets[i].used_at = Some(now);
                    m.resets[i].listed = false;
                    let box_id = m.resets[i].box_id;
                    let c = m.customers.iter().position(|c| c.box_id == box_id).unwrap();
                    m.bump(c, now);
                    let c = &mut m.customers[c];
                    c.class = class(p);
                    c.legacy_raw = None;
                    c.must_change = false;
                }
                format!("consume {t} {p} {e}")
            }
            16 => {
                let resets = rig.store().purge_resets().unwrap();
                let dead = |r: &MReset| r.used_at.unwrap_or(r.expires).min(r.expires) <= now;
                let expected = m.resets.iter().filter(|r| dead(r)).count();
                assert_eq!(resets, expected, "purge");
                m.resets.retain(|r| !dead(r));
                let guards = rig.store().purge_login_guards().unwrap();
                let idle = |g: &(u32, Option<i64>, i64)| {
                    g.1.is_none_or(|u| u <= now) && now >= g.2 + 24 * 3600 * 1000
                };
                assert_eq!(
                    guards,
                    m.guards.values().filter(|g| idle(g)).count(),
                    "guards"
                );
                m.guards.retain(|_, g| !idle(g));
                "purge".to_owned()
            }
            19 => {
                rig.crash_and_reopen();
                "crash".to_owned()
            }
            _ => {
                let secs = [1, 61, 61, 61, 15 * 60, 3600, 25 * 3600][arg() % 7];
                rig.clock.advance(Duration::from_secs(secs));
                format!("advance {secs}")
            }
        };
        step += 1;
        // Every customer as the model has it, and a sound store.
        for c in &m.customers {
            let got = rig.store().customer(c.box_id).unwrap();
            assert_eq!(
                (
                    got.email.as_str(),
                    got.credential_version,
                    got.failed_logins,
                    got.locked_until.map(|t| t.0),
                    got.flags.is_enable,
                    got.flags.must_change_password,
                ),
                (
                    c.email.as_str(),
                    c.version,
                    c.failed,
                    c.locked_until,
                    c.enabled,
                    c.must_change,
                ),
                "customer {} after step {step} ({what})",
                c.box_id
            );
        }
        // Every reset the model holds, and no other of theirs.
        for r in &m.resets {
            let got = rig.store().reset(&r.id);
            let got =
                got.unwrap_or_else(|e| panic!("reset {} after step {step} ({what}): {e:?}", r.id));
            assert_eq!(
                got.used_at.map(|t| t.0),
                r.used_at,
                "reset {} after {what}",
                r.id
            );
        }
        let report = rig.store().check_integrity().unwrap();
        assert_eq!(
            report.resets as usize,
            m.resets.len(),
            "resets after step {step} ({what})"
        );
        assert!(
            report.is_sound(),
            "after step {step} ({what}): {:?}",
            report.problems
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn the_store_matches_the_model_through_crashes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::run(&data);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// The same check on the memory backend (every transaction's body
        /// run twice): the operations depend on the storage seam alone.
        #[test]
        fn the_store_matches_the_model_on_the_memory_backend(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::run_on(super::On::Memory, &data);
        }
    }

    fn long_sequence() -> Vec<u8> {
        (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// A long, fixed sequence: every operation many times, with crashes.
    #[test]
    fn a_long_sequence() {
        super::run(&long_sequence());
    }

    /// The long sequence on the memory backend.
    #[test]
    fn a_long_sequence_on_the_memory_backend() {
        super::run_on(super::On::Memory, &long_sequence());
    }
}
