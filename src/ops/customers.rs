//! Customers: register, import, read, authenticate by key, flags, email change.

use super::{Store, check_text};
use crate::crypto::password::{HashScheme, classify_import};
use crate::crypto::{random, seal};
use crate::error::{Credential, Entity, Error};
use crate::model::{
    BoxId, Customer, CustomerKey, Email, EventKind, EventOutcome, FlagsUpdate, ImportedCustomer,
    MAX_BOX_ID, NewCustomer, check_box_id,
};
use crate::store::records::CustomerRecord;
use crate::store::{TreeId, Tx, TxError};

use crate::store::NEXT_BOX_ID;

impl Store {
    /// Registers a customer: checks the email, names and password policy,
    /// hashes the password, assigns the next box_id and a new key.
    pub fn register(&self, new: NewCustomer) -> Result<(Customer, CustomerKey), Error> {
        let email = Email::parse(&new.email)?;
        check_text("first_name", &new.first_name)?;
        check_text("last_name", &new.last_name)?;
        let normalized = self
            .config()
            .policy
            .check(&new.password)
            .map_err(Error::Policy)?;
        let hash = self.hasher().hash_normalized(&normalized)?;
        let key = CustomerKey::from_trusted(random::customer_key()?);
        let now = self.now();
        let first = self.config().first_box_id;
        let record = self.engine().transact(|tx| {
            ensure_email_free(tx, &email)?;
            // Imports raise the counter past their ids, so the first free id
            // is normally the counter's; the range check bounds the search.
            let mut box_id = tx.next_counter(NEXT_BOX_ID, first)?;
            loop {
                if check_box_id(box_id).is_err() {
                    return Err(Error::BoxIdsExhausted { max: MAX_BOX_ID }.into());
                }
                if tx.get(TreeId::Customers, &box_id.to_be_bytes())?.is_none() {
                    break;
                }
                box_id = tx.next_counter(NEXT_BOX_ID, first)?;
            }
            let rec = CustomerRecord {
                box_id,
                email: email.as_str().to_owned(),
                first_name: new.first_name.clone(),
                last_name: new.last_name.clone(),
                flags: new.flags,
                enrolment_date: new.enrolment_date.unwrap_or(now),
                activation_date: new.activation_date.or(new.flags.is_active.then_some(now)),
                scheme: HashScheme::Argon2idPeppered,
                password_hash: hash.clone(),
                sealed_key: self.seal_customer_key(box_id, 0, &key),
                key_epoch: 0,
                credential_version: 1,
                failed_logins: 0,
                locked_until: None,
                created_at: now,
                updated_at: now,
                resets: Vec::new(),
            };
            insert_customer(tx, &rec, &email)?;
            tx.append_event(
                now,
                EventKind::CustomerRegistered,
                EventOutcome::Granted,
                Some(box_id),
                None,
            )?;
            Ok(rec)
        })?;
        Ok((record.to_public(), key))
    }

    /// Imports a customer from another system with its box_id, key and hash
    /// (argon2 PHC or bcrypt). The hash is verified as it is at the next login
    /// and replaced by the current scheme then. Returns the customer and key.
    pub fn import_customer(&self, imp: ImportedCustomer) -> Result<(Customer, CustomerKey), Error> {
        check_box_id(imp.box_id)?;
        let email = Email::parse(&imp.email)?;
        check_text("first_name", &imp.first_name)?;
        check_text("last_name", &imp.last_name)?;
        let scheme = classify_import(&imp.password_hash)?;
        let key = match &imp.key {
            Some(k) => CustomerKey::from_trusted(k.expose_secret().to_owned()),
            None => CustomerKey::from_trusted(random::customer_key()?),
        };
        let now = self.now();
        let box_id = imp.box_id;
        let record = self.engine().transact(|tx| {
            if tx.get(TreeId::Customers, &box_id.to_be_bytes())?.is_some() {
                return Err(Error::AlreadyExists(Entity::Customer).into());
            }
            ensure_email_free(tx, &email)?;
            tx.raise_counter(NEXT_BOX_ID, box_id + 1)?;
            let rec = CustomerRecord {
                box_id,
                email: email.as_str().to_owned(),
                first_name: imp.first_name.clone(),
                last_name: imp.last_name.clone(),
                flags: imp.flags,
                enrolment_date: imp.enrolment_date.unwrap_or(now),
                activation_date: imp.activation_date,
                scheme,
                password_hash: imp.password_hash.clone(),
                sealed_key: self.seal_customer_key(box_id, 0, &key),
                key_epoch: 0,
                credential_version: 1,
                failed_logins: 0,
                locked_until: None,
                created_at: now,
                updated_at: now,
                resets: Vec::new(),
            };
            insert_customer(tx, &rec, &email)?;
            tx.append_event(
                now,
                EventKind::CustomerImported,
                EventOutcome::Granted,
                Some(box_id),
                None,
            )?;
            Ok(rec)
        })?;
        Ok((record.to_public(), key))
    }

    /// The customer with this box_id.
    pub fn customer(&self, box_id: BoxId) -> Result<Customer, Error> {
        self.customer_record(box_id).map(|r| r.to_public())
    }

    /// The customer with this email (compared trimmed and lower-cased).
    pub fn customer_by_email(&self, email: &str) -> Result<Customer, Error> {
        let email = Email::parse(email)?;
        self.record_by_email(&email)?
            .map(|r| r.to_public())
            .ok_or(Error::NotFound(Entity::Customer))
    }

    /// How the customer's password is stored: scheme and parameters, never
    /// the hash itself.
    pub fn password_hash_info(&self, box_id: BoxId) -> Result<crate::PasswordHashInfo, Error> {
        let rec = self.customer_record(box_id)?;
        Ok(crate::crypto::password::hash_info(
            rec.scheme,
            &rec.password_hash,
        ))
    }

    /// Checks a customer's (box_id, key) in constant time.
    pub fn authenticate_customer(
        &self,
        box_id: BoxId,
        key: &CustomerKey,
    ) -> Result<Customer, Error> {
        self.authenticate_record(box_id, key).map(|r| r.to_public())
    }

    /// Sets some of a customer's flags. Disabling a customer (`is_enable`
    /// from true to false) is a credential change: the credential version
    /// moves and every outstanding reset dies, so that nothing computed for
    /// the enabled account (a verified password, a token) can still be used.
    pub fn set_flags(&self, box_id: BoxId, update: FlagsUpdate) -> Result<Customer, Error> {
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut rec = load(tx, box_id)?;
            let disables = rec.flags.is_enable && update.is_enable == Some(false);
            update.apply(&mut rec.flags);
            if disables {
                super::rotation::bump_credentials(tx, &mut rec, now)?;
            }
            if update.is_active == Some(true) && rec.activation_date.is_none() {
                rec.activation_date = Some(now);
            }
            rec.updated_at = now;
            tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &rec)?;
            tx.append_event(
                now,
                EventKind::FlagsChanged,
                EventOutcome::Granted,
                Some(box_id),
                None,
            )?;
            Ok(rec)
        })?;
        Ok(rec.to_public())
    }

    /// Changes a customer's email, authenticated by (box_id, key). The key
    /// rotates (the old one stops working) and every outstanding reset dies.
    /// Returns the customer and the new key.
    pub fn change_email(
        &self,
        box_id: BoxId,
        key: &CustomerKey,
        new_email: &str,
    ) -> Result<(Customer, CustomerKey), Error> {
        let email = Email::parse(new_email)?;
        let current = self.authenticate_record(box_id, key)?;
        let new_key = CustomerKey::from_trusted(random::customer_key()?);
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut rec = load(tx, box_id)?;
            if rec.credential_version != current.credential_version {
                return Err(Error::Conflict.into());
            }
            let old = Email::parse(&rec.email).map_err(Error::from)?;
            if old.normalized() != email.normalized() {
                ensure_email_free(tx, &email)?;
                tx.remove(TreeId::Emails, old.normalized().as_bytes())?;
                tx.insert(
                    TreeId::Emails,
                    email.normalized().as_bytes(),
                    box_id.to_be_bytes().to_vec(),
                )?;
            }
            rec.email = email.as_str().to_owned();
            rec.key_epoch = rec.key_epoch.wrapping_add(1);
            rec.sealed_key = self.seal_customer_key(box_id, rec.key_epoch, &new_key);
            super::rotation::bump_credentials(tx, &mut rec, now)?;
            tx.put_record(TreeId::Customers, &box_id.to_be_bytes(), &rec)?;
            tx.append_event(
                now,
                EventKind::EmailChanged,
                EventOutcome::Granted,
                Some(box_id),
                None,
            )?;
            Ok(rec)
        })?;
        Ok((rec.to_public(), new_key))
    }

    pub(crate) fn customer_record(&self, box_id: BoxId) -> Result<CustomerRecord, Error> {
        self.engine()
            .get_record(TreeId::Customers, &box_id.to_be_bytes())?
            .ok_or(Error::NotFound(Entity::Customer))
    }

    pub(crate) fn record_by_email(&self, email: &Email) -> Result<Option<CustomerRecord>, Error> {
        let Some(id) = self
            .engine()
            .get(TreeId::Emails, email.normalized().as_bytes())?
        else {
            return Ok(None);
        };
        let rec = self
            .engine()
            .get_record::<CustomerRecord>(TreeId::Customers, &id)?;
        // A dangling index entry is corruption, not "unknown customer".
        rec.map(Some).ok_or_else(|| Error::CorruptRecord {
            tree: TreeId::Emails.name(),
            key: crate::store::encoding::printable_key(email.normalized().as_bytes()),
        })
    }

    pub(crate) fn authenticate_record(
        &self,
        box_id: BoxId,
        key: &CustomerKey,
    ) -> Result<CustomerRecord, Error> {
        let rec = match self.customer_record(box_id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => {
                return Err(Error::InvalidCredentials(Credential::CustomerKey));
            }
            Err(e) => return Err(e),
        };
        let stored = self.unseal_customer_key(&rec)?;
        if !stored.ct_eq(key) {
            return Err(Error::InvalidCredentials(Credential::CustomerKey));
        }
        Ok(rec)
    }

    pub(crate) fn seal_customer_key(
        &self,
        box_id: BoxId,
        epoch: u32,
        key: &CustomerKey,
    ) -> Vec<u8> {
        seal::seal(
            &self.keys().customer_seal,
            seal::Owner::Customer(box_id),
            epoch,
            key.expose_secret().as_bytes(),
        )
    }

    pub(crate) fn unseal_customer_key(&self, rec: &CustomerRecord) -> Result<CustomerKey, Error> {
        seal::unseal(
            &self.keys().customer_seal,
            seal::Owner::Customer(rec.box_id),
            rec.key_epoch,
            &rec.sealed_key,
        )
        .map(CustomerKey::from_trusted)
        .ok_or_else(|| Error::CorruptRecord {
            tree: TreeId::Customers.name(),
            key: crate::store::encoding::printable_key(&rec.box_id.to_be_bytes()),
        })
    }
}

pub(crate) fn load(tx: &Tx<'_>, box_id: BoxId) -> Result<CustomerRecord, TxError> {
    tx.get_record::<CustomerRecord>(TreeId::Customers, &box_id.to_be_bytes())?
        .ok_or_else(|| Error::NotFound(Entity::Customer).into())
}

/// The box_id an email belongs to, if any (inside a transaction).
pub(crate) fn box_id_by_email(tx: &Tx<'_>, email: &Email) -> Result<Option<BoxId>, TxError> {
    let key = email.normalized().as_bytes();
    let Some(v) = tx.get(TreeId::Emails, key)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::CorruptRecord {
        tree: TreeId::Emails.name(),
        key: crate::store::encoding::printable_key(key),
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

fn ensure_email_free(tx: &Tx<'_>, email: &Email) -> Result<(), TxError> {
    if tx
        .get(TreeId::Emails, email.normalized().as_bytes())?
        .is_some()
    {
        return Err(Error::AlreadyExists(Entity::Email).into());
    }
    Ok(())
}

fn insert_customer(tx: &Tx<'_>, rec: &CustomerRecord, email: &Email) -> Result<(), TxError> {
    tx.put_record(TreeId::Customers, &rec.box_id.to_be_bytes(), rec)?;
    tx.insert(
        TreeId::Emails,
        email.normalized().as_bytes(),
        rec.box_id.to_be_bytes().to_vec(),
    )
}
