//! The integrity check: every record decodes, every index entry points at its
//! record, and every record is indexed.

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;

use super::records::{AppRecord, CustomerRecord, MailRecord, ResetRecord, TokenEntry};
use super::{Engine, TreeId, encoding, storage};
use crate::error::Error;
use crate::model::{Email, Event};

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

pub(super) fn check(engine: &Engine) -> Result<IntegrityReport, Error> {
    let mut r = IntegrityReport::default();

    for item in engine.tree(TreeId::Customers).iter() {
        let (k, v) = item.map_err(storage("scanning customers"))?;
        r.customers += 1;
        let c: CustomerRecord = match encoding::decode(TreeId::Customers, &k, &v) {
            Ok(c) => c,
            Err(e) => {
                r.problems.push(e.to_string());
                continue;
            }
        };
        if k.as_ref() != c.box_id.to_be_bytes() {
            r.problems
                .push(format!("customer {} stored under another key", c.box_id));
        }
        let norm = match Email::parse(&c.email) {
            Ok(e) => e.normalized().to_owned(),
            Err(_) => {
                r.problems
                    .push(format!("customer {} has an invalid email", c.box_id));
                continue;
            }
        };
        match engine.get(TreeId::Emails, norm.as_bytes())? {
            Some(id) if id.as_ref() == c.box_id.to_be_bytes() => {}
            _ => r
                .problems
                .push(format!("customer {} is not in the email index", c.box_id)),
        }
    }
    for item in engine.tree(TreeId::Emails).iter() {
        let (k, v) = item.map_err(storage("scanning the email index"))?;
        let ok = match engine.get_record::<CustomerRecord>(TreeId::Customers, &v) {
            Ok(Some(c)) => {
                Email::parse(&c.email).is_ok_and(|e| e.normalized().as_bytes() == k.as_ref())
            }
            _ => false,
        };
        if !ok {
            r.problems.push(format!(
                "email index entry {} points at no matching customer",
                encoding::printable_key(&k)
            ));
        }
    }
    for item in engine.tree(TreeId::Apps).iter() {
        let (k, v) = item.map_err(storage("scanning apps"))?;
        r.apps += 1;
        match encoding::decode::<AppRecord>(TreeId::Apps, &k, &v) {
            Ok(a) => {
                if let Some(shop) = &a.shop_key {
                    match engine.get(TreeId::Shops, shop.as_bytes())? {
                        Some(id) if id.as_ref() == a.user_code.to_be_bytes() => {}
                        _ => r
                            .problems
                            .push(format!("app {} is not in the shop index", a.user_code)),
                    }
                }
            }
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    for item in engine.tree(TreeId::Shops).iter() {
        let (k, v) = item.map_err(storage("scanning the shop index"))?;
        let ok = matches!(
            engine.get_record::<AppRecord>(TreeId::Apps, &v),
            Ok(Some(a)) if a.shop_key.as_deref().map(str::as_bytes) == Some(k.as_ref())
        );
        if !ok {
            r.problems.push(format!(
                "shop index entry {} points at no matching app",
                encoding::printable_key(&k)
            ));
        }
    }
    for item in engine.tree(TreeId::Events).iter() {
        let (k, v) = item.map_err(storage("scanning events"))?;
        r.events += 1;
        match encoding::decode::<Event>(TreeId::Events, &k, &v) {
            Ok(e) if k.as_ref() == e.seq.to_be_bytes() => {}
            Ok(e) => r
                .problems
                .push(format!("event {} stored under another key", e.seq)),
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    check_resets(engine, &mut r)?;
    check_nonces(engine, &mut r)?;
    check_login_guards(engine, &mut r)?;
    check_mail_queue(engine, &mut r)?;
    Ok(r)
}

/// Resets: every record decodes, sits under its id, has its three index
/// entries, belongs to an existing customer and (while unused) is listed in
/// that customer's record; every index entry and list entry points back at a
/// matching record.
fn check_resets(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    let reset = |key: &[u8]| engine.get_record::<ResetRecord>(TreeId::Resets, key);
    for item in engine.tree(TreeId::Resets).iter() {
        let (k, v) = item.map_err(storage("scanning resets"))?;
        r.resets += 1;
        let rec: ResetRecord = match encoding::decode(TreeId::Resets, &k, &v) {
            Ok(rec) => rec,
            Err(e) => {
                r.problems.push(e.to_string());
                continue;
            }
        };
        let id = &rec.id;
        if k.as_ref() != id.as_bytes() || crate::model::parse_reset_id(id.as_bytes()).is_err() {
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
        let entry = engine.get_record::<TokenEntry>(TreeId::ResetTokens, &rec.token_digest);
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
            .get(TreeId::ResetExpiry, &rec.expiry_key())?
            .is_none()
        {
            r.problems
                .push(format!("reset {id:?} is not in the expiry index"));
        }
        if engine
            .get(TreeId::ResetsByCustomer, &rec.customer_key())?
            .is_none()
        {
            r.problems
                .push(format!("reset {id:?} is not in the customer index"));
        }
        match engine.get_record::<CustomerRecord>(TreeId::Customers, &rec.box_id.to_be_bytes()) {
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
    }
    for item in engine.tree(TreeId::ResetTokens).iter() {
        let (k, v) = item.map_err(storage("scanning the reset token index"))?;
        let points_back = match encoding::decode::<TokenEntry>(TreeId::ResetTokens, &k, &v) {
            Ok(e) => matches!(
                reset(e.id.as_bytes()),
                Ok(Some(rec)) if rec.token_digest[..] == k[..] && rec.used_at.is_none()
            ),
            Err(_) => false,
        };
        if !points_back {
            r.problems.push(format!(
                "token index entry {} points at no matching reset",
                encoding::printable_key(&k)
            ));
        }
    }
    for item in engine.tree(TreeId::ResetExpiry).iter() {
        let (k, _) = item.map_err(storage("scanning the reset expiry index"))?;
        let id = k.get(8..).unwrap_or_default();
        if !matches!(reset(id), Ok(Some(rec)) if rec.expiry_key()[..] == k[..]) {
            r.problems.push(format!(
                "expiry index entry {} points at no matching reset",
                encoding::printable_key(&k)
            ));
        }
    }
    for item in engine.tree(TreeId::ResetsByCustomer).iter() {
        let (k, _) = item.map_err(storage("scanning the reset customer index"))?;
        let id = k.get(8..).unwrap_or_default();
        if !matches!(reset(id), Ok(Some(rec)) if rec.customer_key()[..] == k[..]) {
            r.problems.push(format!(
                "customer index entry {} points at no matching reset",
                encoding::printable_key(&k)
            ));
        }
    }
    for item in engine.tree(TreeId::Customers).iter() {
        let (k, v) = item.map_err(storage("scanning customers"))?;
        // Undecodable customers are reported by the customer check.
        let Ok(c) = encoding::decode::<CustomerRecord>(TreeId::Customers, &k, &v) else {
            continue;
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
    }
    Ok(())
}

/// Nonces of the signed change-password format: each keyed by
/// user_code BE ++ salt BE (12 bytes), each holding a time.
fn check_nonces(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    for item in engine.tree(TreeId::Nonces).iter() {
        let (k, v) = item.map_err(storage("scanning nonces"))?;
        if k.len() != 12 {
            r.problems.push(format!(
                "nonce {} has a key of {} bytes, not 12",
                encoding::printable_key(&k),
                k.len()
            ));
        }
        if let Err(e) = encoding::decode::<crate::model::Timestamp>(TreeId::Nonces, &k, &v) {
            r.problems.push(e.to_string());
        }
    }
    Ok(())
}

/// Login guards: each keyed by a 32-byte digest, each a guard record.
fn check_login_guards(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    for item in engine.tree(TreeId::LoginGuards).iter() {
        let (k, v) = item.map_err(storage("scanning login guards"))?;
        if k.len() != 32 {
            r.problems.push(format!(
                "login guard {} has a key of {} bytes, not 32",
                encoding::printable_key(&k),
                k.len()
            ));
        }
        if let Err(e) = encoding::decode::<super::records::GuardRecord>(TreeId::LoginGuards, &k, &v)
        {
            r.problems.push(e.to_string());
        }
    }
    Ok(())
}

/// Queued mails: each decodes, sits under its reset's id, holds a sealed
/// token of a token's length, and belongs to an unused reset of the same
/// customer (a reset that dies takes its mail with it).
fn check_mail_queue(engine: &Engine, r: &mut IntegrityReport) -> Result<(), Error> {
    for item in engine.tree(TreeId::MailQueue).iter() {
        let (k, v) = item.map_err(storage("scanning the mail queue"))?;
        r.mails += 1;
        let m: MailRecord = match encoding::decode(TreeId::MailQueue, &k, &v) {
            Ok(m) => m,
            Err(e) => {
                r.problems.push(e.to_string());
                continue;
            }
        };
        let id = &m.reset_id;
        if k.as_ref() != id.as_bytes() {
            r.problems
                .push(format!("queued mail {id:?} stored under another key"));
        }
        if m.sealed_token.len() != crate::model::ResetToken::LEN {
            r.problems
                .push(format!("queued mail {id:?} holds no sealed token"));
        }
        let ok = matches!(
            engine.get_record::<ResetRecord>(TreeId::Resets, id.as_bytes()),
            Ok(Some(rec)) if rec.box_id == m.box_id && rec.used_at.is_none()
        );
        if !ok {
            r.problems
                .push(format!("queued mail {id:?} belongs to no unused reset"));
        }
    }
    Ok(())
}
