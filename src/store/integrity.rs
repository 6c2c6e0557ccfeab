//! The integrity check: every record decodes, every index entry points at its
//! record, and every record is indexed.

use super::records::{AppRecord, CustomerRecord};
use super::{Engine, TreeId, encoding, storage};
use crate::error::Error;
use crate::model::{Email, Event};

/// What the integrity check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Customers checked.
    pub customers: u64,
    /// Apps checked.
    pub apps: u64,
    /// Events checked.
    pub events: u64,
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
    Ok(r)
}
