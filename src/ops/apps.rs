//! Partner apps: create, import, authenticate, enable/disable, list.

use super::{Store, check_text};
use crate::crypto::random;
use crate::error::{Credential, Entity, Error, InputError};
use crate::model::{App, AppKey, EventKind, EventOutcome, UserCode};
use crate::store::records::AppRecord;
use crate::store::schema::{APPS, SHOPS};

fn check_shop_key(shop: &str) -> Result<(), Error> {
    let ok = !shop.is_empty()
        && shop.len() <= 64
        && shop
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InputError::MalformedText { field: "shop_key" }.into())
    }
}

impl Store {
    /// Creates an app with a new random key, returned here once.
    pub fn create_app(
        &self,
        user_code: UserCode,
        name: &str,
        shop_key: Option<&str>,
    ) -> Result<(App, AppKey), Error> {
        let key = AppKey::from_trusted(random::app_key()?);
        let app = self.put_app(user_code, name, shop_key, &key, EventKind::AppCreated)?;
        Ok((app, key))
    }

    /// Imports an app with a key it already has.
    pub fn import_app(
        &self,
        user_code: UserCode,
        name: &str,
        shop_key: Option<&str>,
        key: &AppKey,
    ) -> Result<App, Error> {
        self.put_app(user_code, name, shop_key, key, EventKind::AppImported)
    }

    fn put_app(
        &self,
        user_code: UserCode,
        name: &str,
        shop_key: Option<&str>,
        key: &AppKey,
        kind: EventKind,
    ) -> Result<App, Error> {
        check_text("name", name)?;
        if let Some(s) = shop_key {
            check_shop_key(s)?;
        }
        let now = self.now();
        let rec = AppRecord {
            user_code,
            shop_key: shop_key.map(str::to_owned),
            name: name.to_owned(),
            sealed_key: self.seal_app_key(user_code, key),
            key_epoch: 0,
            enabled: true,
            created_at: now,
        };
        self.engine().transact(|tx| {
            if tx.contains(&APPS, user_code)? {
                return Err(Error::AlreadyExists(Entity::App).into());
            }
            if let Some(s) = shop_key {
                if tx.contains(&SHOPS, s)? {
                    return Err(Error::AlreadyExists(Entity::Shop).into());
                }
                tx.put(&SHOPS, s, &user_code)?;
            }
            tx.put(&APPS, user_code, &rec)?;
            tx.append_event(now, kind, EventOutcome::Granted, None, Some(user_code))?;
            Ok(())
        })?;
        Ok(rec.to_public())
    }

    /// Checks (user_code, app_key) in constant time; a disabled or unknown app
    /// is refused like a wrong key.
    pub fn authenticate_app(&self, user_code: UserCode, key: &AppKey) -> Result<App, Error> {
        let rec = self.app_for_credentials(user_code)?;
        let stored = self.unseal_app_key(&rec)?;
        if !stored.ct_eq(key) || !rec.enabled {
            return Err(Error::InvalidCredentials(Credential::App));
        }
        Ok(rec.to_public())
    }

    /// Authenticates an app by its key alone (a bearer token), in constant time
    /// per app. Apps are few; this walks them.
    pub fn authenticate_app_key(&self, key: &AppKey) -> Result<App, Error> {
        let mut found = None;
        for (_, rec) in self.engine().scan_from(&APPS, &[], usize::MAX)? {
            let stored = self.unseal_app_key(&rec)?;
            if stored.ct_eq(key) && rec.enabled {
                found = Some(rec.to_public());
            }
        }
        found.ok_or(Error::InvalidCredentials(Credential::App))
    }

    /// The enabled app that owns a shop key.
    pub fn app_by_shop(&self, shop_key: &str) -> Result<App, Error> {
        let Some(code) = self.engine().get(&SHOPS, shop_key)? else {
            return Err(Error::NotFound(Entity::Shop));
        };
        let rec = self
            .engine()
            .get(&APPS, code)?
            .ok_or(Error::NotFound(Entity::Shop))?;
        if !rec.enabled {
            return Err(Error::NotFound(Entity::Shop));
        }
        Ok(rec.to_public())
    }

    /// The app with this user_code.
    pub fn app(&self, user_code: UserCode) -> Result<App, Error> {
        self.app_record(user_code).map(|r| r.to_public())
    }

    /// An app's key, for checking the signed change-password digest. It leaves
    /// the store only as a secret type.
    pub fn app_key(&self, user_code: UserCode) -> Result<AppKey, Error> {
        let rec = self.app_record(user_code)?;
        self.unseal_app_key(&rec)
    }

    /// Enables or disables an app.
    pub fn set_app_enabled(&self, user_code: UserCode, enabled: bool) -> Result<App, Error> {
        let now = self.now();
        let rec = self.engine().transact(|tx| {
            let mut rec = tx
                .get(&APPS, user_code)?
                .ok_or(Error::NotFound(Entity::App))?;
            rec.enabled = enabled;
            tx.put(&APPS, user_code, &rec)?;
            let kind = if enabled {
                EventKind::AppEnabled
            } else {
                EventKind::AppDisabled
            };
            tx.append_event(now, kind, EventOutcome::Granted, None, Some(user_code))?;
            Ok(rec)
        })?;
        Ok(rec.to_public())
    }

    /// Every app, by user_code.
    pub fn apps(&self) -> Result<Vec<App>, Error> {
        Ok(self
            .engine()
            .scan_from(&APPS, &[], usize::MAX)?
            .iter()
            .map(|(_, r)| r.to_public())
            .collect())
    }
}
