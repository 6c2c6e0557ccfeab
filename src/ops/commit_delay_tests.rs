//! Every operation that hashes a new password announces the transaction
//! that follows before it hashes (`Engine::expect_commit`), so that a group
//! commit with a commit delay waits for it; a login, which commits nothing
//! when the password is right, does not.

use std::cell::Cell;

use crate::crypto::observe_hashes;
use crate::{
    AppKey, Config, NewCustomer, Password, ResetDetails, SignedPasswordChange, Store, StoreSecret,
    change_password_digest,
};

fn pw(s: &str) -> Password {
    Password::new(s).unwrap()
}

thread_local! {
    /// Whether this thread's last hash ran with a commit announced.
    static LAST_HASH_ANNOUNCED: Cell<Option<bool>> = const { Cell::new(None) };
}

fn record_announcement() {
    LAST_HASH_ANNOUNCED.with(|c| c.set(Some(crate::store::announced_here())));
}

/// Runs `op` and returns whether its (last) hash ran with a commit announced.
fn announced<T>(op: impl FnOnce() -> T) -> bool {
    LAST_HASH_ANNOUNCED.with(Cell::take);
    observe_hashes(Some(record_announcement));
    op();
    observe_hashes(None);
    LAST_HASH_ANNOUNCED
        .with(Cell::take)
        .expect("the operation hashed nothing")
}

#[test]
fn operations_that_set_a_password_announce_their_commit_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests().with_commit_delay(std::time::Duration::from_millis(5));
    let store = Store::open(dir.path(), &StoreSecret::from_bytes([4; 32]), config).unwrap();
    let email = "a@b.co";
    let mut customer = None;
    assert!(announced(|| {
        customer = Some(
            store
                .register(NewCustomer::new(email, "A", "B", pw("password-1")))
                .unwrap(),
        );
    }));
    let (c, key) = customer.unwrap();
    assert!(!announced(|| store
        .login(email, &pw("password-1"))
        .unwrap()));
    assert!(announced(|| {
        store
            .update_password(c.box_id, &key, email, &pw("password-2"))
            .unwrap()
    }));
    let version = store.customer(c.box_id).unwrap().credential_version;
    assert!(announced(|| {
        store
            .change_password(c.box_id, &pw("password-3"), version)
            .unwrap()
    }));
    let issued = store.request_reset(email, ResetDetails::default()).unwrap();
    assert!(announced(|| {
        store
            .reset_password(&issued.token, Some(email), &pw("password-4"))
            .unwrap()
    }));
    let issued = store.request_reset(email, ResetDetails::default()).unwrap();
    assert!(announced(|| {
        store
            .reset_password_by_id(&issued.reset.id, &issued.token, &pw("password-5"))
            .unwrap()
    }));
    let (_, app_key) = store.create_app(396, "shop", None).unwrap();
    let salt = 1_234_567_890;
    let new_password = "password-6";
    let digest = change_password_digest(
        &AppKey::new(app_key.expose_secret()).unwrap(),
        "396",
        salt,
        email,
        email,
        key.expose_secret(),
        new_password,
    );
    let req = SignedPasswordChange {
        user_name: "396".into(),
        salt,
        digest,
        user_user_name: email.into(),
        user_email: email.into(),
        user_key: key.expose_secret().to_string().into(),
        new_password: new_password.to_string().into(),
    };
    assert!(announced(|| store.change_password_signed(&req).unwrap()));
    assert!(store.login(email, &pw(new_password)).is_ok());
}
