//! Customers: register, import, read, authenticate by key, flags, email change.

use super::steps::{self, NewRecord};
use super::{Store, check_text};
use crate::crypto::password::{HashScheme, classify_import};
use crate::crypto::random;
use crate::error::{Entity, Error};
use crate::model::{
    BoxId, Customer, CustomerKey, Email, EventKind, EventOutcome, FlagsUpdate, ImportedCustomer,
    MAX_BOX_ID, NewCustomer, check_box_id,
};
use crate::store::schema::{CUSTOMERS, Counter};

impl Store {
    /// Registers a customer: checks the email, names and password policy,
    /// hashes the password, assigns the next box_id and a new key.
    pub fn register(&self, new: NewCustomer) -> Result<(Customer, CustomerKey), Error> {
        let email = Email::parse(&new.email)?;
        check_text("first_name", &new.first_name)?;
        check_text("last_name", &new.last_name)?;
        let (hash, _commit) = self.hash_new_password(&new.password)?;
        let key = CustomerKey::from_trusted(random::customer_key()?);
        let now = self.now();
        let record = self.engine().transact(|tx| {
            steps::ensure_email_free(tx, &email)?;
            // Imports raise the counter past their ids, so the first free id
            // is normally the counter's; the range check bounds the search.
            let mut box_id = tx.next(Counter::BoxId)?;
            loop {
                if check_box_id(box_id).is_err() {
                    return Err(Error::BoxIdsExhausted { max: MAX_BOX_ID }.into());
                }
                if !tx.contains(&CUSTOMERS, box_id)? {
                    break;
                }
                box_id = tx.next(Counter::BoxId)?;
            }
            let mut rec = NewRecord {
                box_id,
                email: &email,
                first_name: &new.first_name,
                last_name: &new.last_name,
                scheme: HashScheme::Argon2idPeppered,
                password_hash: &hash,
                sealed_key: self.seal_customer_key(box_id, 0, &key),
                now,
            }
            .build();
            rec.flags = new.flags;
            rec.enrolment_date = new.enrolment_date.unwrap_or(now);
            rec.activation_date = new.activation_date.or(new.flags.is_active.then_some(now));
            steps::insert_customer(tx, &rec, &email)?;
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
            if tx.contains(&CUSTOMERS, box_id)? {
                return Err(Error::AlreadyExists(Entity::Customer).into());
            }
            steps::ensure_email_free(tx, &email)?;
            tx.raise(Counter::BoxId, box_id + 1)?;
            let mut rec = NewRecord {
                box_id,
                email: &email,
                first_name: &imp.first_name,
                last_name: &imp.last_name,
                scheme,
                password_hash: &imp.password_hash,
                sealed_key: self.seal_customer_key(box_id, 0, &key),
                now,
            }
            .build();
            rec.flags = imp.flags;
            rec.enrolment_date = imp.enrolment_date.unwrap_or(now);
            rec.activation_date = imp.activation_date;
            steps::insert_customer(tx, &rec, &email)?;
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
            let mut rec = steps::load_customer(tx, box_id)?;
            let disables = rec.flags.is_enable && update.is_enable == Some(false);
            update.apply(&mut rec.flags);
            if disables {
                steps::bump_credentials(tx, &mut rec, now)?;
            }
            if update.is_active == Some(true) && rec.activation_date.is_none() {
                rec.activation_date = Some(now);
            }
            rec.updated_at = now;
            steps::put_customer(tx, &rec)?;
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
            let mut rec = steps::load_customer(tx, box_id)?;
            if rec.credential_version != current.credential_version {
                return Err(Error::Conflict.into());
            }
            let old = Email::parse(&rec.email).map_err(Error::from)?;
            steps::change_email_index(tx, box_id, &old, &email)?;
            rec.email = email.as_str().to_owned();
            rec.key_epoch = rec.key_epoch.wrapping_add(1);
            rec.sealed_key = self.seal_customer_key(box_id, rec.key_epoch, &new_key);
            steps::bump_credentials(tx, &mut rec, now)?;
            steps::put_customer(tx, &rec)?;
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
}
