//! Skypostal (seeds 000, 001) through the gateway.

use std::time::Duration;

use credstore::{FlagsUpdate, Request};
use serde_json::{Value, json};

use crate::common::*;
// The suite's backend (tests/codecs.rs includes this file once per backend).
use super::env;

const LOGIN: &str = "/wcf-services/service-customer.svc/customer/customer-registration";
const UPDATE: &str = "/wcf-services/service-customer.svc/customer/customer-update-password";

/// Seed 000's example request, verbatim.
const SEED_000_REQUEST: &str = r#"{
	"user_code":396,
	"app_key":"1656d700707ad9a77f737e5df3db088a",
    "customer_box_id": 811111,
    "customer_key": "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=",
	"customer_email":"johndoe@email.com",
	"customer_new_password":"pass12345"
}"#;

/// Seed 000's example response, verbatim.
const SEED_000_RESPONSE: &str = r#"[
    {
        "_verify": true,
        "error": {
            "error_description": "",
            "error_location": "",
            "system_error": false
        },
        "updated_rows": 1
    }
]"#;

/// Seed 001's example request, verbatim.
const SEED_001_REQUEST: &str = r#"{
	"user_code":396,
	"app_key":"1656d700707ad9a77f737e5df3db088a",
	"customer_email":"johndoe@email.com", 
	"customer_password":"pass12345"
}"#;

/// Seed 001's example response, verbatim.
const SEED_001_RESPONSE: &str = r#"[
    {
        "_verify": true,
        "activation_date": "/Date(1550761010000-0500)/",
        "customer_box_id": 811111,
        "customer_first_name": "John",
        "customer_key": "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=",
        "customer_last_name": "Doe",
        "enrolment_date": "/Date(1550761008000-0500)/",
        "error": {
            "error_description": "",
            "error_location": "",
            "system_error": false
        },
        "is_active": true,
        "is_business": false,
        "is_enable": true,
        "is_vip": false
    }
]"#;

fn send_json(env: &Env, path: &str, body: &str) -> credstore::Response {
    env.send(post(path, "application/json", body))
}

fn login_body(app_key: &str, email: &str, password: &str) -> String {
    json!({"user_code": 396, "app_key": app_key, "customer_email": email, "customer_password": password})
        .to_string()
}

fn update_body(key: &str, email: &str, new_password: &str) -> String {
    json!({
        "user_code": 396, "app_key": APP_KEY, "customer_box_id": BOX_ID, "customer_key": key,
        "customer_email": email, "customer_new_password": new_password
    })
    .to_string()
}

/// The single object of a Skypostal answer.
fn only(r: &credstore::Response) -> Value {
    let v = json(r);
    let arr = v.as_array().expect("a JSON array");
    assert_eq!(arr.len(), 1, "exactly one object");
    arr[0].clone()
}

/// A failed login answer: every documented member present, zero-filled.
fn assert_login_failure(r: &credstore::Response, status: u16, location: &str) -> String {
    assert_eq!(r.status, status, "{}", text(r));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let o = only(r);
    assert_eq!(o["_verify"], false);
    assert_eq!(o["activation_date"], Value::Null);
    assert_eq!(o["customer_box_id"], 0);
    assert_eq!(o["customer_first_name"], Value::Null);
    assert_eq!(o["customer_key"], Value::Null);
    assert_eq!(o["customer_last_name"], Value::Null);
    assert_eq!(o["enrolment_date"], Value::Null);
    for flag in ["is_active", "is_business", "is_enable", "is_vip"] {
        assert_eq!(o[flag], false, "{flag}");
    }
    assert_eq!(o["error"]["error_location"], location);
    assert_eq!(o["error"]["system_error"], status == 500);
    let description = o["error"]["error_description"].as_str().expect("a string");
    assert!(!description.is_empty());
    // the same members as the seed's success, no more
    same_shape(
        &o,
        &serde_json::from_str::<Value>(SEED_001_RESPONSE).unwrap()[0],
        "login",
    );
    description.to_owned()
}

fn assert_update_failure(r: &credstore::Response, status: u16, location: &str) -> String {
    assert_eq!(r.status, status, "{}", text(r));
    let o = only(r);
    assert_eq!(o["_verify"], false);
    assert_eq!(o["updated_rows"], 0);
    assert_eq!(o["error"]["error_location"], location);
    assert_eq!(o["error"]["system_error"], false);
    same_shape(
        &o,
        &serde_json::from_str::<Value>(SEED_000_RESPONSE).unwrap()[0],
        "update",
    );
    let d = o["error"]["error_description"].as_str().expect("a string");
    assert!(!d.is_empty());
    d.to_owned()
}

#[test]
fn seed_001_login_matches_the_documented_response() {
    let env = env();
    let r = send_json(&env, LOGIN, SEED_001_REQUEST);
    assert_eq!(r.status, 200, "{}", text(&r));
    let want: Value = serde_json::from_str(SEED_001_RESPONSE).unwrap();
    assert_eq!(json(&r), want);
    // the documented alias answers the same
    let r = send_json(
        &env,
        "/wcf-services/service-customer.svc/customer/customer-login",
        SEED_001_REQUEST,
    );
    assert_eq!(json(&r), want);
}

#[test]
fn seed_000_update_matches_the_documented_response() {
    let env = env();
    let r = send_json(&env, UPDATE, SEED_000_REQUEST);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        json(&r),
        serde_json::from_str::<Value>(SEED_000_RESPONSE).unwrap()
    );
    // and a real change works end to end
    let r = send_json(
        &env,
        UPDATE,
        &update_body(CUSTOMER_KEY, EMAIL, "brand-new-pass"),
    );
    assert_eq!(only(&r)["updated_rows"], 1);
    assert!(env.password_is("brand-new-pass"));
    assert!(!env.password_is(PASSWORD));
}

#[test]
fn dates_have_no_offset_by_default() {
    let env = env();
    let gw = credstore::Gateway::new(env.store().clone(), credstore::GatewaySettings::default());
    let o = only(&gw.handle(post(LOGIN, "application/json", SEED_001_REQUEST)));
    assert_eq!(o["activation_date"], "/Date(1550761010000)/");
    assert_eq!(o["enrolment_date"], "/Date(1550761008000)/");
}

#[test]
fn wrong_app_credentials() {
    let env = env();
    let r = send_json(
        &env,
        LOGIN,
        &login_body("ffffd700707ad9a77f737e5df3db088a", EMAIL, PASSWORD),
    );
    assert_login_failure(&r, 200, "app_key");
    let other_code = SEED_001_REQUEST.replace("396", "397");
    assert_login_failure(&send_json(&env, LOGIN, &other_code), 200, "app_key");
    let r = send_json(&env, UPDATE, &SEED_000_REQUEST.replace("1656d7", "0656d7"));
    assert_update_failure(&r, 200, "app_key");
    let r = send_json(&env, LOGIN, &login_body("not a key", EMAIL, PASSWORD));
    assert_login_failure(&r, 200, "app_key");
}

#[test]
fn wrong_customer_key_and_box_id() {
    let env = env();
    let before = env.event_count();
    let r = send_json(
        &env,
        UPDATE,
        &update_body(
            "AAAANpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=",
            EMAIL,
            "another-pass-1",
        ),
    );
    assert_update_failure(&r, 200, "customer_key");
    let r = send_json(&env, UPDATE, &SEED_000_REQUEST.replace("811111", "811112"));
    assert_update_failure(&r, 200, "customer_key");
    let r = send_json(&env, UPDATE, &update_body("", EMAIL, "another-pass-1"));
    assert_update_failure(&r, 200, "customer_key");
    assert_eq!(env.event_count(), before, "a refusal writes nothing");
    assert!(env.password_is(PASSWORD));
}

#[test]
fn email_that_is_not_the_accounts() {
    let env = env();
    let r = send_json(
        &env,
        UPDATE,
        &update_body(CUSTOMER_KEY, "someone@else.com", "another-pass-1"),
    );
    assert_update_failure(&r, 200, "customer_email");
    let r = send_json(
        &env,
        UPDATE,
        &update_body(CUSTOMER_KEY, "not an email", "another-pass-1"),
    );
    assert_update_failure(&r, 200, "customer_email");
    // compared as emails are: case and surrounding spaces do not matter
    let r = send_json(
        &env,
        UPDATE,
        &update_body(CUSTOMER_KEY, " JohnDoe@Email.com ", "another-pass-1"),
    );
    assert_eq!(only(&r)["_verify"], true);
}

#[test]
fn policy_violation() {
    let env = env();
    let d = assert_update_failure(
        &send_json(&env, UPDATE, &update_body(CUSTOMER_KEY, EMAIL, "short")),
        200,
        "customer_new_password",
    );
    assert!(d.contains("at least 8"), "{d}");
    let long = "x".repeat(256);
    let d = assert_update_failure(
        &send_json(&env, UPDATE, &update_body(CUSTOMER_KEY, EMAIL, &long)),
        200,
        "customer_new_password",
    );
    assert!(d.contains("at most 255"), "{d}");
    let huge = "x".repeat(5000);
    assert_update_failure(
        &send_json(&env, UPDATE, &update_body(CUSTOMER_KEY, EMAIL, &huge)),
        200,
        "customer_new_password",
    );
    assert!(env.password_is(PASSWORD));
}

#[test]
fn wrong_password_and_unknown_email_look_the_same() {
    let env = env();
    let wrong = send_json(&env, LOGIN, &login_body(APP_KEY, EMAIL, "wrong-password"));
    let unknown = send_json(
        &env,
        LOGIN,
        &login_body(APP_KEY, "nobody@email.com", PASSWORD),
    );
    let malformed = send_json(&env, LOGIN, &login_body(APP_KEY, "nobody", PASSWORD));
    assert_login_failure(&wrong, 200, "customer_password");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, malformed.body);
}

#[test]
fn locked_account() {
    let env = env();
    for _ in 0..5 {
        let r = send_json(&env, LOGIN, &login_body(APP_KEY, EMAIL, "wrong-password"));
        assert_login_failure(&r, 200, "customer_password");
    }
    // the right password is refused during the lock, and so is a wrong one
    let d = assert_login_failure(&send_json(&env, LOGIN, SEED_001_REQUEST), 200, "customer");
    assert!(d.contains("locked"), "{d}");
    let r = send_json(&env, LOGIN, &login_body(APP_KEY, EMAIL, "wrong-password"));
    assert_login_failure(&r, 200, "customer");
    env.advance(Duration::from_secs(15 * 60 + 1));
    assert_eq!(
        only(&send_json(&env, LOGIN, SEED_001_REQUEST))["_verify"],
        true
    );
}

#[test]
fn must_change_password() {
    let env = env();
    env.store()
        .set_flags(
            BOX_ID,
            FlagsUpdate {
                must_change_password: Some(true),
                ..FlagsUpdate::default()
            },
        )
        .unwrap();
    let d = assert_login_failure(&send_json(&env, LOGIN, SEED_001_REQUEST), 200, "customer");
    assert!(d.contains("must be changed"), "{d}");
    // the update clears the flag
    let r = send_json(
        &env,
        UPDATE,
        &update_body(CUSTOMER_KEY, EMAIL, "changed-pass-1"),
    );
    assert_eq!(only(&r)["_verify"], true);
    let r = send_json(&env, LOGIN, &login_body(APP_KEY, EMAIL, "changed-pass-1"));
    assert_eq!(only(&r)["_verify"], true);
}

#[test]
fn malformed_missing_and_ill_typed() {
    let env = env();
    let before = env.event_count();
    let cases: Vec<(&str, String, &str)> = vec![
        (LOGIN, "{\"user_code\":396,".to_owned(), "body"),
        (LOGIN, "[]".to_owned(), "body"),
        (LOGIN, String::from_utf8_lossy(b"\xff").into_owned(), "body"),
        (
            LOGIN,
            SEED_001_REQUEST.replace("\t\"customer_password\":\"pass12345\"\n", "\t\"x\":1\n"),
            "customer_password",
        ),
        (
            LOGIN,
            SEED_001_REQUEST.replace("396", "\"396\""),
            "user_code",
        ),
        (
            LOGIN,
            SEED_001_REQUEST.replace("\"johndoe@email.com\"", "null"),
            "customer_email",
        ),
        (
            LOGIN,
            SEED_001_REQUEST.replace("\"pass12345\"", "12345"),
            "customer_password",
        ),
        (
            LOGIN,
            r#"{"user_code":396,"user_code":396}"#.to_owned(),
            "body",
        ),
        (
            UPDATE,
            SEED_000_REQUEST.replace("811111", "-1"),
            "customer_box_id",
        ),
        (
            UPDATE,
            SEED_000_REQUEST.replace("811111", "\"811111\""),
            "customer_box_id",
        ),
        (
            UPDATE,
            SEED_000_REQUEST.replace("\"customer_key\"", "\"key\""),
            "customer_key",
        ),
    ];
    for (path, body, location) in cases {
        let r = send_json(&env, path, &body);
        if path == LOGIN {
            assert_login_failure(&r, 400, location);
        } else {
            assert_update_failure(&r, 400, location);
        }
    }
    // invalid UTF-8 bytes, not just its replacement
    let r = env.send(post(
        LOGIN,
        "application/json",
        b"{\"user_code\":\xff}".to_vec(),
    ));
    assert_login_failure(&r, 400, "body");
    assert_eq!(env.event_count(), before);
}

#[test]
fn oversized_body_wrong_content_type_and_method() {
    let env = env();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let r = send_json(&env, LOGIN, &big);
    assert_login_failure(&r, 413, "body");
    let r = send_json(&env, UPDATE, &big);
    assert_eq!(r.status, 413);
    assert_eq!(only(&r)["updated_rows"], 0);
    let r = env.send(post(
        LOGIN,
        "application/x-www-form-urlencoded",
        SEED_001_REQUEST,
    ));
    assert_login_failure(&r, 415, "body");
    let r = env.send(post(
        LOGIN,
        "application/json; charset=utf-16",
        SEED_001_REQUEST,
    ));
    assert_login_failure(&r, 415, "body");
    // no Content-Type at all is read as JSON, as WCF clients send it
    let r = env.send(Request::new("POST", LOGIN).body(SEED_001_REQUEST));
    assert_eq!(only(&r)["_verify"], true);
    let r = env.send(Request::new("GET", LOGIN));
    assert_login_failure(&r, 405, "method");
    assert_eq!(r.header("allow"), Some("POST"));
}
