//! Debug builds refuse hashing inside a transaction closure: a closure may
//! run more than once, and a slow one stalls every writer.

thread_local! {
    /// Set while this thread runs a transaction closure.
    static IN_TRANSACTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as running a transaction closure until dropped:
/// hashing there is a bug (a closure may run more than once, and a slow one
/// stalls every writer), which debug builds (the test suite) catch at once.
pub(crate) struct NoHashing {
    was: bool,
}

impl NoHashing {
    pub(crate) fn enter() -> Self {
        Self {
            was: IN_TRANSACTION.with(|f| f.replace(true)),
        }
    }
}

impl Drop for NoHashing {
    fn drop(&mut self) {
        IN_TRANSACTION.with(|f| f.set(self.was));
    }
}

pub(super) fn assert_not_in_transaction() {
    debug_assert!(
        !IN_TRANSACTION.with(std::cell::Cell::get),
        "a password hash was computed inside a transaction closure"
    );
}

#[cfg(all(test, debug_assertions))]
mod no_hashing_in_transactions {
    use crate::{Config, NewCustomer, Password, Store, StoreSecret};

    /// The guard works: a hash inside a transaction closure panics in
    /// debug builds, so every test that drives an operation also proves
    /// that the operation hashes outside its transaction.
    #[test]
    #[should_panic(expected = "inside a transaction closure")]
    fn hashing_inside_a_closure_is_caught() {
        let store =
            Store::temporary(&StoreSecret::from_bytes([1; 32]), Config::for_tests()).unwrap();
        let _ = store.engine().transact(|_tx| {
            let _ = store.hasher().hash_normalized("inside-the-closure");
            Ok(())
        });
    }

    #[test]
    fn operations_hash_outside_their_transactions() {
        let store =
            Store::temporary(&StoreSecret::from_bytes([1; 32]), Config::for_tests()).unwrap();
        let pw = |s: &str| Password::new(s).unwrap();
        let (c, key) = store
            .register(NewCustomer::new("a@b.co", "A", "B", pw("password-1")))
            .unwrap();
        store.login("a@b.co", &pw("password-1")).unwrap();
        store.login("x@b.co", &pw("password-1")).unwrap_err();
        store
            .update_password(c.box_id, &key, "a@b.co", &pw("password-2"))
            .unwrap();
    }
}
