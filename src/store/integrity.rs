//! The integrity check: every record decodes, every index entry points at its
//! record, and every record is indexed. It reads rows as bytes (a damaged
//! row is a problem to report, not an error), a page at a time.

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;

use super::Engine;
use super::encoding::printable_key;
use super::records::{AppRecord, CustomerRecord, GuardRecord, MailRecord, ResetRecord, TokenEntry};
use super::schema::{CustomerResetKey, DueKey, ExpiryKey, TreeId, Value, key_bytes};
use crate::error::Error;
use crate::model::{Email, Event, Timestamp};

/// What the integrity check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntegrityReport {
    /// Customers checked.
    pub customers: u64,
    /// Apps checked.
    pub apps: u64,
    /// Events checked.
    pub events: u64,
    /// Password resets checked.
    pub resets: u64,
    /// Queued reset mails checked.
    pub mails: u64,
    /// One line per problem found; empty when the store is sound.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// `true` when no problem was found.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The record of `tree` at `key` (bytes as found), decoded.
fn record<V: Value>(engine: &Engine, tree: TreeId, key: &[u8]) -> Result<Option<V>, Error> {
    match engine.get_raw(tree, key)? {
        Some(v) => V::decode(tree, key, &v).map(Some),
        None => Ok(None),
    }
}

pub(super) fn check(engine: &Engine) -> Result<IntegrityReport, Error> {
    let mut r = IntegrityReport::default();
    check_customers(engine, &mut r)?;
    check_apps(engine, &mut r)?;
    engine.for_each_row(TreeId::Events, |k, v| {
        r.events += 1;
        match Event::decode(TreeId::Events, k, v) {
            Ok(e) if k == key_bytes::<u64>(e.seq) => {}
            Ok(e) => r
                .problems
                .push(format!("event {} stored under another key", e.seq)),
            Err(e) => r.problems.push(e.to_string()),
        }
        Ok(())
    })?;
    check_resets(engine, &mut r)?;
    check_nonces(engine, &mut r)?;
    check_login_guards(engine, &mut r)?;
    check_mail_queue(engine, &mut r)?;
    Ok(r)
}

/// Customers and the email index, both ways.
fn check_customers(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    engine.for_each_row(TreeId::Customers, |k, v| {
        r.customers += 1;
        let c = match CustomerRecord::decode(TreeId::Customers, k, v) {
            Ok(c) => c,
            Err(e) => {
                r.problems.push(e.to_string());
                return Ok(());
            }
        };
        let box_id = key_bytes::<u64>(c.box_id);
        if k != box_id {
            r.problems
                .push(format!("customer {} stored under another key", c.box_id));
        }
        let norm = match Email::parse(&c.email) {
            Ok(e) => e.normalized().to_owned(),
            Err(_) => {
                r.problems
                    .push(format!("customer {} has an invalid email", c.box_id));
                return Ok(());
            }
        };
        match engine.get_raw(TreeId::Emails, norm.as_bytes())? {
            Some(id) if id == box_id => {}
            _ => r
                .problems
                .push(format!("customer {} is not in the email index", c.box_id)),
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::Emails, |k, v| {
        let ok = match record::<CustomerRecord>(engine, TreeId::Customers, v) {
            Ok(Some(c)) => Email::parse(&c.email).is_ok_and(|e| e.normalized().as_bytes() == k),
            _ => false,
        };
        if !ok {
            r.problems.push(format!(
                "email index entry {} points at no matching customer",
                printable_key(k)
            ));
        }
        Ok(())
    })
}

/// Apps and the shop index, both ways.
fn check_apps(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    engine.for_each_row(TreeId::Apps, |k, v| {
        r.apps += 1;
        match AppRecord::decode(TreeId::Apps, k, v) {
            Ok(a) => {
                if let Some(shop) = &a.shop_key {
                    match engine.get_raw(TreeId::Shops, shop.as_bytes())? {
                        Some(id) if id == key_bytes::<u32>(a.user_code) => {}
                        _ => r
                            .problems
                            .push(format!("app {} is not in the shop index", a.user_code)),
                    }
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::Shops, |k, v| {
        let ok = matches!(
            record::<AppRecord>(engine, TreeId::Apps, v),
            Ok(Some(a)) if a.shop_key.as_deref().map(str::as_bytes) == Some(k)
        );
        if !ok {
            r.problems.push(format!(
                "shop index entry {} points at no matching app",
                printable_key(k)
            ));
        }
        Ok(())
    })
}

/// Resets: every record decodes, sits under its id, has its three index
/// entries, belongs to an existing customer and (while unused) is listed in
/// that customer's record; every index entry and list entry points back at a
/// matching record.
fn check_resets(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    let reset = |key: &[u8]| record::<ResetRecord>(engine, TreeId::Resets, key);
    engine.for_each_row(TreeId::Resets, |k, v| {
        r.resets += 1;
        let rec = match ResetRecord::decode(TreeId::Resets, k, v) {
            Ok(rec) => rec,
            Err(e) => {
                r.problems.push(e.to_string());
                return Ok(());
            }
        };
        let id = &rec.id;
        if k != id.as_bytes() || crate::model::parse_reset_id(id.as_bytes()).is_err() {
            r.problems.push(format!(
                "reset {id:?} stored under another key or malformed"
            ));
        }
        if rec.metadata.as_deref().is_some_and(|m| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).is_err()
        }) {
            r.problems.push(format!(
                "reset {id:?} has metadata that is not a JSON object"
            ));
        }
        // Unused: its token index entry says what the record says. Used:
        // none (a used token is removed from the index).
        let entry = record::<TokenEntry>(engine, TreeId::ResetTokens, &rec.token_digest);
        match (rec.used_at, entry) {
            (None, Ok(Some(e))) if e == TokenEntry::of(&rec) => {}
            (None, _) => r
                .problems
                .push(format!("reset {id:?} is not in the token index")),
            (Some(_), Ok(None)) => {}
            (Some(_), _) => r
                .problems
                .push(format!("used reset {id:?} is still in the token index")),
        }
        if engine
            .get_raw(TreeId::ResetExpiry, &ExpiryKey::of(&rec))?
            .is_none()
        {
            r.problems
                .push(format!("reset {id:?} is not in the expiry index"));
        }
        if engine
            .get_raw(TreeId::ResetsByCustomer, &CustomerResetKey::of(&rec))?
            .is_none()
        {
            r.problems
                .push(format!("reset {id:?} is not in the customer index"));
        }
        let customer = key_bytes::<u64>(rec.box_id);
        match record::<CustomerRecord>(engine, TreeId::Customers, &customer) {
            Ok(Some(c)) => {
                let listed = c.resets.contains(id);
                if rec.used_at.is_none() && !listed {
                    r.problems.push(format!(
                        "unused reset {id:?} is not listed by customer {}",
                        rec.box_id
                    ));
                }
                if rec.used_at.is_some() && listed {
                    r.problems.push(format!(
                        "used reset {id:?} is still listed by customer {}",
                        rec.box_id
                    ));
                }
            }
            _ => r.problems.push(format!(
                "reset {id:?} belongs to no readable customer ({})",
                rec.box_id
            )),
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::ResetTokens, |k, v| {
        let points_back = match TokenEntry::decode(TreeId::ResetTokens, k, v) {
            Ok(e) => matches!(
                reset(e.id.as_bytes()),
                Ok(Some(rec)) if rec.token_digest[..] == k[..] && rec.used_at.is_none()
            ),
            Err(_) => false,
        };
        if !points_back {
            r.problems.push(format!(
                "token index entry {} points at no matching reset",
                printable_key(k)
            ));
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::ResetExpiry, |k, _| {
        let id = ExpiryKey::reset_id(k);
        if !matches!(reset(id), Ok(Some(rec)) if ExpiryKey::of(&rec) == k) {
            r.problems.push(format!(
                "expiry index entry {} points at no matching reset",
                printable_key(k)
            ));
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::ResetsByCustomer, |k, _| {
        let id = CustomerResetKey::reset_id(k);
        if !matches!(reset(id), Ok(Some(rec)) if CustomerResetKey::of(&rec) == k) {
            r.problems.push(format!(
                "customer index entry {} points at no matching reset",
                printable_key(k)
            ));
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::Customers, |k, v| {
        // Undecodable customers are reported by the customer check.
        let Ok(c) = CustomerRecord::decode(TreeId::Customers, k, v) else {
            return Ok(());
        };
        for id in &c.resets {
            let ok = matches!(
                reset(id.as_bytes()),
                Ok(Some(rec)) if rec.box_id == c.box_id && rec.used_at.is_none()
            );
            if !ok {
                r.problems.push(format!(
                    "customer {} lists {id:?}, which is no unused reset of theirs",
                    c.box_id
                ));
            }
        }
        Ok(())
    })
}

/// Nonces of the signed change-password format: each keyed by
/// user_code BE ++ salt BE (12 bytes), each holding a time.
fn check_nonces(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    engine.for_each_row(TreeId::Nonces, |k, v| {
        if k.len() != 12 {
            r.problems.push(format!(
                "nonce {} has a key of {} bytes, not 12",
                printable_key(k),
                k.len()
            ));
        }
        if let Err(e) = Timestamp::decode(TreeId::Nonces, k, v) {
            r.problems.push(e.to_string());
        }
        Ok(())
    })
}

/// Login guards: each keyed by a 32-byte digest, each a guard record.
fn check_login_guards(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    engine.for_each_row(TreeId::LoginGuards, |k, v| {
        if k.len() != 32 {
            r.problems.push(format!(
                "login guard {} has a key of {} bytes, not 32",
                printable_key(k),
                k.len()
            ));
        }
        if let Err(e) = GuardRecord::decode(TreeId::LoginGuards, k, v) {
            r.problems.push(e.to_string());
        }
        Ok(())
    })
}

/// Queued mails: each decodes, sits under its reset's id, holds a sealed
/// token of a token's length, and belongs to an unused reset of the same
/// customer (a reset that dies takes its mail with it).
fn check_mail_queue(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    engine.for_each_row(TreeId::MailQueue, |k, v| {
        r.mails += 1;
        let m = match MailRecord::decode(TreeId::MailQueue, k, v) {
            Ok(m) => m,
            Err(e) => {
                r.problems.push(e.to_string());
                return Ok(());
            }
        };
        let id = &m.reset_id;
        if k != id.as_bytes() {
            r.problems
                .push(format!("queued mail {id:?} stored under another key"));
        }
        if m.sealed_token.len() != crate::model::ResetToken::LEN {
            r.problems
                .push(format!("queued mail {id:?} holds no sealed token"));
        }
        let ok = matches!(
            record::<ResetRecord>(engine, TreeId::Resets, id.as_bytes()),
            Ok(Some(rec)) if rec.box_id == m.box_id && rec.used_at.is_none()
        );
        if !ok {
            r.problems
                .push(format!("queued mail {id:?} belongs to no unused reset"));
        }
        if engine.get_raw(TreeId::MailDue, &DueKey::of(&m))?.is_none() {
            r.problems
                .push(format!("queued mail {id:?} has no due-index entry"));
        }
        Ok(())
    })?;
    engine.for_each_row(TreeId::MailDue, |k, _| {
        let id = DueKey::reset_id(k);
        let ok = matches!(
            record::<MailRecord>(engine, TreeId::MailQueue, id),
            Ok(Some(m)) if DueKey::of(&m) == k
        );
        if !ok {
            r.problems.push(format!(
                "mail due-index entry {} points at no matching queued mail",
                printable_key(k)
            ));
        }
        Ok(())
    })
}
