//! Shared helpers for the codec tests: a store (on disk, the production
//! path: write-ahead log, group commit; or on PostgreSQL) holding the demo
//! parties (SPEC §7),
//! behind a gateway, a courier delivering its mail queue to a recording
//! mailer (on [`Env::deliver`]), and a manual clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use credstore::mail::{Courier, CourierSettings, DeliveryReport};
use credstore::{
    Config, Gateway, ManualClock, RecordingMailer, Request, Response, Store, StoreSecret, Timestamp,
};
use serde_json::Value;

pub const APP_KEY: &str = credstore::demo::APP_KEY;
pub const EMAIL: &str = credstore::demo::EMAIL;
pub const PASSWORD: &str = credstore::demo::PASSWORD;
pub const CUSTOMER_KEY: &str = credstore::demo::CUSTOMER_KEY;
pub const BOX_ID: u64 = credstore::demo::BOX_ID;

pub struct Env {
    pub gw: Gateway,
    pub mailer: RecordingMailer,
    pub courier: Courier,
    pub clock: ManualClock,
    /// The store's directory or schema; dropped after the gateway (and its store).
    _holder: crate::backend::TestStore,
}

/// 2026-01-01T00:00:00Z
pub const START: i64 = 1_767_225_600_000;

pub fn env() -> Env {
    env_on(crate::backend::Backend::Wal)
}

/// [`env`] on `backend` (on PostgreSQL without a server outside CI: on
/// disk, with a message).
pub fn env_on(backend: crate::backend::Backend) -> Env {
    let backend = if backend.available() {
        backend
    } else {
        crate::backend::Backend::Wal
    };
    let clock = ManualClock::new(Timestamp(START));
    let config = Config::for_tests().with_clock(Arc::new(clock.clone()));
    let holder = backend.open(&StoreSecret::from_bytes([7; 32]), config);
    let store: Store = (*holder).clone();
    credstore::demo::seed(&store).expect("demo seed");
    let mailer = RecordingMailer::new();
    let settings = credstore::demo::settings();
    let courier = Courier::new(
        store.clone(),
        mailer.clone(),
        CourierSettings::new(settings.skyerp.reset_link_base.clone()),
    );
    let gw = Gateway::new(store, settings);
    Env {
        gw,
        mailer,
        courier,
        clock,
        _holder: holder,
    }
}

impl Env {
    pub fn store(&self) -> &Store {
        self.gw.store()
    }

    pub fn send(&self, req: Request) -> Response {
        self.gw.handle(req)
    }

    /// Delivers the queued mails that are due (what the server's courier
    /// does in the background).
    pub fn deliver(&self) -> DeliveryReport {
        self.courier.deliver_due().expect("delivery")
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Events so far: a refused request must not add any.
    pub fn event_count(&self) -> usize {
        self.store().events(0, 10_000).expect("events").len()
    }

    /// What a refused request must leave as it was: the whole event log and
    /// every customer (credential version, counts, flags, times).
    pub fn snapshot(&self) -> (Vec<credstore::Event>, Vec<credstore::Customer>) {
        let events = self.store().events(0, 10_000).expect("events");
        let mut customers = Vec::new();
        for box_id in [BOX_ID, 1, 2, 3] {
            if let Ok(c) = self.store().customer(box_id) {
                customers.push(c);
            }
        }
        (events, customers)
    }

    /// Whether the demo customer's password is `pw` (a login attempt: it
    /// counts towards lock-out when wrong).
    pub fn password_is(&self, pw: &str) -> bool {
        self.store()
            .login(EMAIL, &credstore::Password::new(pw).expect("password"))
            .is_ok()
    }
}

pub fn post(path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Request {
    Request::new("POST", path)
        .header("Content-Type", content_type)
        .body(body)
}

pub fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}), status {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    })
}

pub fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Same member names, recursively (objects only; values not compared).
pub fn same_shape(a: &Value, b: &Value, at: &str) {
    if let (Value::Object(x), Value::Object(y)) = (a, b) {
        let kx: Vec<_> = x.keys().collect();
        let ky: Vec<_> = y.keys().collect();
        let mut sx = kx.clone();
        let mut sy = ky.clone();
        sx.sort();
        sy.sort();
        assert_eq!(sx, sy, "members differ at {at}");
        for (k, v) in x {
            same_shape(v, &y[k], &format!("{at}/{k}"));
        }
    }
}
