//! Golden and error-path tests of the four codecs through the gateway,
//! against a store holding the seeds' example parties (SPEC §6, §7, §8).
//!
//! The codec suites run once per backend: `wal::…` on disk, `postgres::…`
//! on PostgreSQL (the same files, included twice; each suite's `env()`
//! opens its backend).
// Including each suite once per backend is the point: parameterised, not copied.
#![allow(clippy::duplicate_mod)]

#[path = "support/backend.rs"]
mod backend;
mod common;

/// The codec suites on the sled backend with its write-ahead log.
#[path = "codecs"]
mod wal {
    pub fn env() -> crate::common::Env {
        crate::common::env_on(crate::backend::Backend::Wal)
    }
    #[path = "aspnet.rs"]
    mod aspnet;
    #[path = "commerce_layer.rs"]
    mod commerce_layer;
    #[path = "refusals.rs"]
    mod refusals;
    #[path = "skyerp.rs"]
    mod skyerp;
    #[path = "skypostal.rs"]
    mod skypostal;
}

/// The codec suites on PostgreSQL (`CREDSTORE_POSTGRES_URL`).
#[path = "codecs"]
mod postgres {
    pub fn env() -> crate::common::Env {
        crate::common::env_on(crate::backend::Backend::Postgres)
    }
    #[path = "aspnet.rs"]
    mod aspnet;
    #[path = "commerce_layer.rs"]
    mod commerce_layer;
    #[path = "refusals.rs"]
    mod refusals;
    #[path = "skyerp.rs"]
    mod skyerp;
    #[path = "skypostal.rs"]
    mod skypostal;
}

use common::*;

#[test]
fn unknown_routes_are_404() {
    let env = env();
    for (method, path) in [
        ("GET", "/"),
        ("POST", "/api/Customers/Other"),
        ("POST", "/api/v1/acme12aa/customers/other"),
        ("GET", "/api/customer_password_resets/a/b"),
        (
            "POST",
            "/wcf-services/service-customer.svc/customer/customer-delete",
        ),
    ] {
        let r = env.send(credstore::Request::new(method, path));
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(json(&r)["status"], 404);
    }
}

#[test]
fn the_demo_seed_is_idempotent_and_sound() {
    let env = env();
    let again = credstore::demo::seed(env.store()).unwrap();
    assert_eq!(
        again,
        credstore::demo::Seeded {
            app: false,
            customer: false
        }
    );
    assert!(env.password_is(PASSWORD));
    assert!(env.store().check_integrity().unwrap().is_sound());
}
