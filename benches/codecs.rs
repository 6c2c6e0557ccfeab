//! Codec throughput: requests per second through the gateway for each
//! documented format, with argon2 at cheap test parameters and sled's
//! periodic flush, so that what is measured is parsing, dispatch, the store
//! operation and rendering rather than password hashing or fsync. The
//! `decode` group isolates the decoders.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use credstore::codec::{aspnet, commerce_layer, skyerp, skypostal};
use credstore::{
    AppKey, Config, Durability, Gateway, ManualClock, Request, ResetDetails, Store, StoreSecret,
    Timestamp, change_password_digest, demo,
};
use criterion::{BatchSize, Criterion, Throughput};

const LOGIN: &str = "/wcf-services/service-customer.svc/customer/customer-registration";
const UPDATE: &str = "/wcf-services/service-customer.svc/customer/customer-update-password";
const SKYERP: &str = "/api/v1/acme12aa/customers/reset-password";
const CL: &str = "/api/customer_password_resets";
const ASPNET: &str = "/api/Customers/ChangePassword";

const SEED_000: &str = r#"{"user_code":396,"app_key":"1656d700707ad9a77f737e5df3db088a","customer_box_id":811111,"customer_key":"YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=","customer_email":"johndoe@email.com","customer_new_password":"pass12345"}"#;
const SEED_001: &str = r#"{"user_code":396,"app_key":"1656d700707ad9a77f737e5df3db088a","customer_email":"johndoe@email.com","customer_password":"pass12345"}"#;

fn gateway() -> Gateway {
    // The clock stands still: the SkyERP reset stays valid, and the signed
    // requests' salts are all fresh.
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let config = Config::for_tests()
        .with_durability(Durability::PeriodicFlushLosesRecentChanges)
        .with_clock(Arc::new(clock));
    let store = Store::temporary(&StoreSecret::from_bytes([5; 32]), config).expect("store");
    demo::seed(&store).expect("demo");
    Gateway::new(store, demo::settings())
}

fn post(path: &str, content_type: &str, body: &str) -> Request {
    Request::new("POST", path)
        .header("Content-Type", content_type)
        .body(body.as_bytes().to_vec())
}

fn signed_json(salt: i64) -> String {
    let key = AppKey::new(demo::APP_KEY).expect("key");
    let (e, k, pw) = (demo::EMAIL, demo::CUSTOMER_KEY, demo::PASSWORD);
    let d = change_password_digest(&key, "396", salt, e, e, k, pw);
    format!(
        r#"{{"User":{{"UserName":"{e}","Email":"{e}","Key":"{k}"}},"UserNewPassword":"{pw}","UserName":"396","Salt":{salt},"Digest":"{d}"}}"#
    )
}

fn signed_xml(salt: i64) -> String {
    let req = aspnet::decode_json(signed_json(salt).as_bytes()).expect("json");
    String::from_utf8(aspnet::encode_xml(&req)).expect("utf-8")
}

fn through_gateway(c: &mut Criterion) {
    let gw = gateway();
    let issued = gw
        .store()
        .request_reset(demo::EMAIL, ResetDetails::default())
        .expect("reset");
    let token = issued.token.expose_secret().to_owned();
    let reset_id = issued.reset.id.clone();

    let mut g = c.benchmark_group("gateway");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));

    let ok = |status: u16, want: u16| assert_eq!(status, want);

    g.bench_function("skyerp check token (GET)", |b| {
        let path = format!("{SKYERP}/{token}");
        b.iter_batched(
            || Request::new("GET", path.as_str()),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("skyerp request, unknown email (POST)", |b| {
        b.iter_batched(
            || {
                post(
                    SKYERP,
                    "application/json",
                    r#"{"_method":"POST","email":"foo@example.com"}"#,
                )
            },
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    let bearer = format!("Bearer {}", demo::APP_KEY);
    g.bench_function("commerce layer GET resource", |b| {
        let path = format!("{CL}/{reset_id}");
        b.iter_batched(
            || Request::new("GET", path.as_str()).header("Authorization", bearer.as_str()),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("commerce layer PATCH reference", |b| {
        let path = format!("{CL}/{reset_id}");
        let body = format!(
            r#"{{"data":{{"type":"customer_password_resets","id":"{reset_id}","attributes":{{"reference":"bench"}}}}}}"#
        );
        b.iter_batched(
            || {
                Request::new("PATCH", path.as_str())
                    .header("Authorization", bearer.as_str())
                    .header("Content-Type", "application/vnd.api+json")
                    .body(body.as_bytes().to_vec())
            },
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    // Password changes remove the customer's resets: they come last.
    g.bench_function("skypostal login (seed 001)", |b| {
        b.iter_batched(
            || post(LOGIN, "application/json", SEED_001),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("skypostal update-password (seed 000)", |b| {
        b.iter_batched(
            || post(UPDATE, "application/json", SEED_000),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    let salt = Cell::new(1_000_000_000i64);
    let next = || {
        salt.set(salt.get() + 1);
        salt.get()
    };
    g.bench_function("aspnet ChangePassword JSON", |b| {
        b.iter_batched(
            || post(ASPNET, "application/json", &signed_json(next())),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("aspnet ChangePassword XML", |b| {
        b.iter_batched(
            || post(ASPNET, "application/xml", &signed_xml(next())),
            |r| ok(gw.handle(black_box(r)).status, 200),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn decoders(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let json = signed_json(1_234_567_890);
    let xml = signed_xml(1_234_567_890);
    let patch = br#"{"data":{"type":"customer_password_resets","id":"xYZkjABcde","attributes":{"customer_password":"secret"}}}"#;
    g.bench_function("skypostal login", |b| {
        b.iter(|| skypostal::decode_login(black_box(SEED_001.as_bytes())))
    });
    g.bench_function("skyerp form", |b| {
        b.iter(|| {
            skyerp::decode_form(black_box(
                b"_method=PUT&email=foo%40example.com&password=asasasasasasas&password2=asasasasasasas",
            ))
        })
    });
    g.bench_function("commerce layer PATCH", |b| {
        b.iter(|| commerce_layer::decode_update(black_box(patch), "xYZkjABcde"))
    });
    g.bench_function("aspnet JSON", |b| {
        b.iter(|| aspnet::decode_json(black_box(json.as_bytes())))
    });
    g.bench_function("aspnet XML", |b| {
        b.iter(|| aspnet::decode_xml(black_box(xml.as_bytes())))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    through_gateway(&mut c);
    decoders(&mut c);
    c.final_summary();
}
