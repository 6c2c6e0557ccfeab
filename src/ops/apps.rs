//! Partner apps: create, import, authenticate, enable/disable, list.

use super::{Store, check_text};
use crate::crypto::{random, seal};
use crate::error::{Credential, Entity, Error, InputError};
use crate::model::{App, AppKey, EventKind, EventOutcome, UserCode};
use crate::store::records::AppRecord;
use crate::store::{TreeId, encoding};

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
            sealed_key: seal::seal(
                &self.keys().app_seal,
                seal::Owner::App(user_code),
                0,
                key.expose_secret().as_bytes(),
            ),
            key_epoch: 0,
            enabled: true,
            created_at: now,
        };
        self.engine().transact(|tx| {
            if tx.get(TreeId::Apps, &user_code.to_be_bytes())?.is_some() {
                return Err(Error::AlreadyExists(Entity::App).into());
            }
            if let Some(s) = shop_key {
                if tx.get(TreeId::Shops, s.as_bytes())?.is_some() {
                    return Err(Error::AlreadyExists(Entity::Shop).into());
                }
                tx.insert(
                    TreeId::Shops,
                    s.as_bytes(),
                    user_code.to_be_bytes().to_vec(),
                )?;
            }
            tx.put_record(TreeId::Apps, &user_code.to_be_bytes(), &rec)?;
            tx.append_event(now, kind, EventOutcome::Granted, None, Some(user_code))?;
            Ok(())
        })?;
        Ok(rec.to_public())
    }

    /// Checks (user_code, app_key) in constant time; a disabled or unknown app
    /// is refused like a wrong key.
    pub fn authenticate_app(&self, user_code: UserCode, key: &AppKey) -> Result<App, Error> {
        let rec = self.app_record(user_code).map_err(|e| match e {
            Error::NotFound(_) => Error::InvalidCredentials(Credential::App),
            e => e,
        })?;
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
        for (k, v) in self.engine().scan(TreeId::Apps, &[], usize::MAX)? {
            let rec: AppRecord = encoding::decode(TreeId::Apps, &k, &v)?;
            let stored = self.unseal_app_key(&rec)?;
            if stored.ct_eq(key) && rec.enabled {
                found = Some(rec.to_public());
            }
        }
        found.ok_or(Error::InvalidCredentials(Credential::App))
    }

    /// The enabled app that owns a shop key.
    pub fn app_by_shop(&self, shop_key: &str) -> Result<App, Error> {
        let Some(code) = self.engine().get(TreeId::Shops, shop_key.as_bytes())? else {
            return Err(Error::NotFound(Entity::Shop));
        };
        let rec: AppRecord = self
            .engine()
            .get_record(TreeId::Apps, &code)?
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
            let mut rec: AppRecord = tx
                .get_record(TreeId::Apps, &user_code.to_be_bytes())?
                .ok_or(Error::NotFound(Entity::App))?;
            rec.enabled = enabled;
            tx.put_record(TreeId::Apps, &user_code.to_be_bytes(), &rec)?;
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
        self.engine()
            .scan(TreeId::Apps, &[], usize::MAX)?
            .iter()
            .map(|(k, v)| encoding::decode::<AppRecord>(TreeId::Apps, k, v).map(|r| r.to_public()))
            .collect()
    }

    pub(crate) fn app_record(&self, user_code: UserCode) -> Result<AppRecord, Error> {
        self.engine()
            .get_record(TreeId::Apps, &user_code.to_be_bytes())?
            .ok_or(Error::NotFound(Entity::App))
    }

    pub(crate) fn unseal_app_key(&self, rec: &AppRecord) -> Result<AppKey, Error> {
        seal::unseal(
            &self.keys().app_seal,
            seal::Owner::App(rec.user_code),
            rec.key_epoch,
            &rec.sealed_key,
        )
        .map(AppKey::from_trusted)
        .ok_or_else(|| Error::CorruptRecord {
            tree: TreeId::Apps.name(),
            key: encoding::printable_key(&rec.user_code.to_be_bytes()),
        })
    }
}
