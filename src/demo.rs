//! The seeds' example parties (SPEC §7, `credstore serve --demo`), so that
//! the documents' example requests work verbatim: partner app 396 with shop
//! `acme12aa`, and customer 811111, John Doe.
//!
//! Nothing here stores a password in the clear: the customer is imported with
//! a throwaway hash and then given the demo password through the store's own
//! rotation, which hashes it with the store's scheme and pepper.

use crate::codec::wcf_date::WcfOffset;
use crate::error::Error;
use crate::gateway::GatewaySettings;
use crate::model::{
    AppKey, BoxId, CustomerFlags, CustomerKey, ImportedCustomer, Password, Timestamp, UserCode,
};
use crate::ops::Store;

/// The demo app's user_code.
pub const APP_USER_CODE: UserCode = 396;
/// The demo app's key (seeds 000, 001).
pub const APP_KEY: &str = "1656d700707ad9a77f737e5df3db088a";
/// The demo app's shop key (seed 002).
pub const SHOP_KEY: &str = "acme12aa";
/// Seed 003's placeholder bearer token: accepted while the server runs with
/// `--demo`, for the demo customer only (see [`settings`]), so that the
/// seed's curl works as printed (and gets the documented 422). It is never
/// stored: a demo leaves no public credential behind.
pub const PLACEHOLDER_BEARER: &str = "your-access-token";

/// The demo customer's box_id.
pub const BOX_ID: BoxId = 811111;
/// The demo customer's email.
pub const EMAIL: &str = "johndoe@email.com";
/// The demo customer's password.
pub const PASSWORD: &str = "pass12345";
/// The demo customer's first name.
pub const FIRST_NAME: &str = "John";
/// The demo customer's last name.
pub const LAST_NAME: &str = "Doe";
/// The demo customer's key.
pub const CUSTOMER_KEY: &str = "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=";
/// The demo customer's enrolment date (seed 001), ms since the epoch.
pub const ENROLMENT_MS: i64 = 1_550_761_008_000;
/// The demo customer's activation date (seed 001), ms since the epoch.
pub const ACTIVATION_MS: i64 = 1_550_761_010_000;
/// The WCF display offset of seed 001's dates, in minutes (`-0500`).
pub const DISPLAY_OFFSET_MINUTES: i32 = -300;

/// What [`seed`] created (`false`: it was there already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// The app was created.
    pub app: bool,
    /// The customer was created (or its interrupted seeding finished).
    pub customer: bool,
}

/// The gateway settings of the demo: WCF dates shown at `-0500`, and seed
/// 003's placeholder bearer for the demo customer only.
pub fn settings() -> GatewaySettings {
    GatewaySettings::default()
        .with_wcf_offset(WcfOffset::from_minutes(DISPLAY_OFFSET_MINUTES))
        .with_demo_bearer(PLACEHOLDER_BEARER, BOX_ID)
}

/// Disables any app whose key is the public placeholder bearer (earlier
/// releases' `--demo` stored one as app 9003, and an operator may have
/// imported it): a credential printed in a public document must not open a
/// real store. Returns the user_codes disabled. Run at every server start.
pub fn retire_placeholder_app(store: &Store) -> Result<Vec<UserCode>, Error> {
    let placeholder = AppKey::new(PLACEHOLDER_BEARER)?;
    let mut retired = Vec::new();
    for app in store.apps()? {
        if app.enabled && store.app_key(app.user_code)?.ct_eq(&placeholder) {
            store.set_app_enabled(app.user_code, false)?;
            retired.push(app.user_code);
        }
    }
    Ok(retired)
}

/// Seeds the demo parties where absent; seeding twice changes nothing.
pub fn seed(store: &Store) -> Result<Seeded, Error> {
    let app = match store.app(APP_USER_CODE) {
        Ok(_) => false,
        Err(Error::NotFound(_)) => {
            let key = AppKey::new(APP_KEY)?;
            store.import_app(APP_USER_CODE, "Demo partner (seeds)", Some(SHOP_KEY), &key)?;
            true
        }
        Err(e) => return Err(e),
    };

    let customer = match store.customer(BOX_ID) {
        // Version 1 is the import itself: the password was never set (an
        // earlier seeding stopped in between), so set it now.
        Ok(c) if c.credential_version == 1 => {
            set_password(store, c.credential_version)?;
            true
        }
        Ok(_) => false,
        Err(Error::NotFound(_)) => {
            let throwaway = throwaway_hash(store)?;
            let (c, _) = store.import_customer(ImportedCustomer {
                box_id: BOX_ID,
                email: EMAIL.to_owned(),
                first_name: FIRST_NAME.to_owned(),
                last_name: LAST_NAME.to_owned(),
                password_hash: throwaway,
                key: Some(CustomerKey::new(CUSTOMER_KEY)?),
                flags: CustomerFlags {
                    is_active: true,
                    is_enable: true,
                    is_business: false,
                    is_vip: false,
                    must_change_password: false,
                },
                enrolment_date: Some(Timestamp(ENROLMENT_MS)),
                activation_date: Some(Timestamp(ACTIVATION_MS)),
            })?;
            set_password(store, c.credential_version)?;
            true
        }
        Err(e) => return Err(e),
    };
    Ok(Seeded { app, customer })
}

fn set_password(store: &Store, version: u64) -> Result<(), Error> {
    store
        .change_password(BOX_ID, &Password::new(PASSWORD)?, version)
        .map(|_| ())
}

/// A valid hash of a random password nobody knows, replaced at once.
fn throwaway_hash(store: &Store) -> Result<String, Error> {
    let random = crate::crypto::random::alnum::<32>()?;
    let text = String::from_utf8_lossy(&random).into_owned();
    store.hasher().hash_normalized(&text)
}
