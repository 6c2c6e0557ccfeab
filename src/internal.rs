//! Entry points for the fuzz targets (one line each in `fuzz/`): every
//! decoder takes arbitrary bytes, and whatever it accepts must re-encode to
//! a body that decodes to the same request. A panic here is a bug.
//! Not a stable API.

use serde_json::{Map, Value};

use crate::codec::wcf_date::WcfDate;
use crate::codec::{aspnet, commerce_layer, skyerp, skypostal};

/// Skypostal login and update-password decoders.
pub fn skypostal_request(data: &[u8]) {
    if let Ok(r) = skypostal::decode_login(data) {
        let again = skypostal::decode_login(&skypostal::encode_login(&r));
        assert_eq!(again.as_ref(), Ok(&r), "login round trip");
    }
    if let Ok(r) = skypostal::decode_update_password(data) {
        let again = skypostal::decode_update_password(&skypostal::encode_update_password(&r));
        assert_eq!(again.as_ref(), Ok(&r), "update-password round trip");
    }
}

/// SkyERP JSON and form decoders (a form re-encodes as JSON).
pub fn skyerp_request(data: &[u8]) {
    if let Ok(b) = skyerp::decode_json(data) {
        let again = skyerp::decode_json(&skyerp::encode_json(&b));
        assert_eq!(again.as_ref(), Ok(&b), "JSON round trip");
    }
    if let Ok(b) = skyerp::decode_form(data) {
        let again = skyerp::decode_json(&skyerp::encode_json(&b));
        assert_eq!(again.as_ref(), Ok(&b), "form round trip");
    }
}

/// Commerce Layer create and update documents. Metadata numbers are
/// compared to within a few ULP: serde_json without its `float_roundtrip`
/// feature may parse a printed float one ULP off (found by this target).
pub fn commerce_layer_request(data: &[u8]) {
    if let Ok(mut r) = commerce_layer::decode_create(data) {
        let mut again = commerce_layer::decode_create(&commerce_layer::encode_create(&r))
            .expect("create round trip");
        let (m1, m2) = (r.metadata.take(), again.metadata.take());
        assert_eq!(again, r, "create round trip");
        assert!(same_metadata(m1, m2), "create metadata round trip");
    }
    if let Ok(mut r) = commerce_layer::decode_update(data, "xYZkjABcde") {
        let mut again = commerce_layer::decode_update(&commerce_layer::encode_update(&r), &r.id)
            .expect("update round trip");
        let (m1, m2) = (r.metadata.take().flatten(), again.metadata.take().flatten());
        assert_eq!(again, r, "update round trip");
        assert!(same_metadata(m1, m2), "update metadata round trip");
    }
}

fn same_metadata(a: Option<Map<String, Value>>, b: Option<Map<String, Value>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => close(&Value::Object(a), &Value::Object(b)),
        _ => false,
    }
}

/// Equal JSON, floats to within 4 ULP.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// ASP.NET JSON and form decoders.
pub fn aspnet_json_request(data: &[u8]) {
    if let Ok(r) = aspnet::decode_json(data) {
        let again = aspnet::decode_json(&aspnet::encode_json(&r));
        assert_eq!(again.as_ref(), Ok(&r), "JSON round trip");
    }
    if let Ok(r) = aspnet::decode_form(data) {
        let again = aspnet::decode_form(&aspnet::encode_form(&r));
        assert_eq!(again.as_ref(), Ok(&r), "form round trip");
    }
}

/// ASP.NET XML decoder.
pub fn aspnet_xml_request(data: &[u8]) {
    if let Ok(r) = aspnet::decode_xml(data) {
        let again = aspnet::decode_xml(&aspnet::encode_xml(&r));
        assert_eq!(again.as_ref(), Ok(&r), "XML round trip");
    }
}

/// WCF `/Date(...)/` parser.
pub fn wcf_date(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = WcfDate::parse(text) {
        assert_eq!(WcfDate::parse(&d.encode()), Ok(d), "WCF date round trip");
    }
}

/// The whole gateway: `data` is read as a request (`METHOD PATH` on the
/// first line, `Name: value` header lines, a blank line, then the body)
/// and answered by a gateway over a temporary store holding the demo
/// parties (cheap argon2; queued mails are never delivered), rebuilt every 20,000
/// requests so that a long run's writes stay bounded. Checks: no panic, no
/// 500 from a healthy store, a status the formats use, and a body in the
/// media type the answer names.
pub fn gateway_request(data: &[u8]) {
    use std::cell::RefCell;
    thread_local! {
        static GATEWAY: RefCell<(usize, Option<crate::Gateway>)> = const { RefCell::new((0, None)) };
    }
    let req = raw_request(data);
    GATEWAY.with(|g| {
        let mut g = g.borrow_mut();
        if g.0 % 20_000 == 0 {
            g.1 = None;
        }
        g.0 += 1;
        let gateway = g.1.get_or_insert_with(fuzz_gateway);
        let r = gateway.handle(req);
        check_response(&r);
    });
}

fn fuzz_gateway() -> crate::Gateway {
    let store = crate::Store::temporary(
        &crate::StoreSecret::from_bytes([9; 32]),
        crate::Config::for_tests()
            .with_durability(crate::Durability::PeriodicFlushLosesRecentChanges),
    )
    .expect("a temporary store");
    crate::demo::seed(&store).expect("the demo seed");
    crate::Gateway::new(store, crate::demo::settings())
}

/// `METHOD PATH\nName: value\n...\n\nbody`; anything goes.
fn raw_request(data: &[u8]) -> crate::Request {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, path) = first.split_once(' ').unwrap_or((first, "/"));
    let mut req = crate::Request::new(method, path).body(body.to_vec());
    if let Some((p, q)) = path.split_once('?') {
        req.path = p.to_owned();
        req.query = Some(q.to_owned());
    }
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            req.headers.append(k.trim(), v.trim());
        }
    }
    req
}

fn check_response(r: &crate::Response) {
    const STATUSES: [u16; 13] = [
        200, 201, 400, 401, 404, 405, 408, 409, 413, 415, 422, 429, 500,
    ];
    assert!(STATUSES.contains(&r.status), "status {}", r.status);
    assert_ne!(r.status, 500, "a healthy store answered 500");
    let ct = r
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.contains("json") {
        assert!(
            serde_json::from_slice::<Value>(&r.body).is_ok(),
            "a {ct} body that is not JSON"
        );
    } else if ct.contains("xml") {
        assert!(r.body.starts_with(b"<"), "a {ct} body that is not XML");
    } else {
        panic!("an answer without a known content type: {ct:?}");
    }
}

/// Keys and values stored, by tree, in bytes: what the records themselves
/// take, to compare the footprint on disk with.
pub fn stored_bytes(store: &crate::Store) -> Result<Vec<(&'static str, u64, u64)>, crate::Error> {
    store.record_bytes_by_tree()
}

/// The model check of the whole store (see `ops/model_check/`): `data`
/// is read as a sequence of operations, crashes included, each compared
/// with a plain model. Needs the `fuzzing` feature (the in-memory log).
#[cfg(feature = "fuzzing")]
pub fn store_model(data: &[u8]) {
    crate::ops::model_check::run(data);
}

/// Reads arbitrary bytes as a block of the sled backend's packed trees
/// (`src/store/sled/packed.rs`): never a panic, and a block that decodes
/// keeps its rows through encoding and cutting. Needs the `fuzzing`
/// feature.
#[cfg(feature = "fuzzing")]
pub fn packed_block(data: &[u8]) {
    crate::store::check_packed_block(data);
}

/// One answered request's metrics, as the router records them (`route`:
/// from [`crate::http::route_template`], which the router computes for its
/// log line either way; the metrics-cost bench).
#[cfg(feature = "server")]
pub fn record_request_metrics(
    route: &'static str,
    method: &str,
    status: u16,
    latency: std::time::Duration,
) {
    crate::metrics::request(route, method, status, latency);
}

/// A request that may hash waited `wait` for a hashing slot, as the router
/// records it (the metrics-cost bench).
#[cfg(feature = "server")]
pub fn record_hashing_admission_metrics(wait: std::time::Duration) {
    crate::metrics::hashing_admission(wait);
}

/// How many `fdatasync`s of the write-ahead log have succeeded in this
/// process (on the real file system).
pub fn wal_fdatasyncs() -> u64 {
    crate::store::wal_fdatasyncs()
}

/// The encoded size of a customer's record as stored (the footprint bench
/// compares on-disk bytes with the records' own).
pub fn encoded_customer_len(
    store: &crate::Store,
    box_id: crate::BoxId,
) -> Result<usize, crate::Error> {
    store
        .engine()
        .read(&crate::store::schema::CUSTOMERS, box_id, |_, v| Ok(v.len()))?
        .ok_or(crate::Error::NotFound(crate::Entity::Customer))
}

/// The password-change transaction with a hash made beforehand (the
/// durability bench: SQLite's peer transaction hashes nothing either).
/// Returns the new credential version.
pub fn change_password_prehashed(
    store: &crate::Store,
    box_id: crate::BoxId,
    hash: &PrehashedPassword,
    expected_version: u64,
) -> Result<u64, crate::Error> {
    store
        .rotate(
            box_id,
            expected_version,
            &hash.0,
            crate::model::EventKind::PasswordChanged,
        )
        .map(|r| r.credential_version)
}

/// A password hashed with the store's parameters, for
/// [`change_password_prehashed`].
pub struct PrehashedPassword(String);

impl std::fmt::Debug for PrehashedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrehashedPassword(..)")
    }
}

/// Checks `password` against the store's policy and hashes it.
pub fn prehash_password(
    store: &crate::Store,
    password: &crate::Password,
) -> Result<PrehashedPassword, crate::Error> {
    store
        .hash_new_password(password)
        .map(|(hash, _)| PrehashedPassword(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_samples_pass() {
        skypostal_request(
            br#"{"user_code":396,"app_key":"k","customer_email":"e","customer_password":"p"}"#,
        );
        skyerp_request(b"_method=PUT&email=foo%40example.com&password=a&password2=a");
        commerce_layer_request(br#"{"data":{"type":"customer_password_resets","id":"xYZkjABcde","attributes":{"customer_password":"secret"}}}"#);
        // found by fuzzing: serde_json may read a printed float one ULP off
        commerce_layer_request(br#"{"data":{"type":"customer_password_resets","id":"xYZkjABcde","attributes":{"metadata":{"n":[-3e91,2.5]}}}}"#);
        assert!(!close(&serde_json::json!(1.0), &serde_json::json!(1.1)));
        aspnet_xml_request(b"<ChangePasswordRequest UserName=\"1\" Salt=\"3\" Digest=\"d\"><User><UserName>u</UserName><Email>e</Email><Key>k</Key></User><UserNewPassword>p</UserNewPassword></ChangePasswordRequest>");
        wcf_date(b"/Date(1550761010000-0500)/");
        gateway_request(b"POST /wcf-services/service-customer.svc/customer/customer-login\nContent-Type: application/json\n\n{\"user_code\":396,\"app_key\":\"1656d700707ad9a77f737e5df3db088a\",\"customer_email\":\"johndoe@email.com\",\"customer_password\":\"pass12345\"}");
        gateway_request(b"GET /api/v1/acme12aa/customers/reset-password/x?y\n\n");
        gateway_request(b"");
        gateway_request(b"\xff\xfe /\x00\nContent-Type: \xff\n\n\xff");
    }
}
