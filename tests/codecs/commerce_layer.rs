//! Commerce Layer customer_password_resets (seed 003) through the gateway.

use std::time::Duration;

use credstore::{Request, Response};
use serde_json::{Value, json};

use crate::common::*;
// The suite's backend (tests/codecs.rs includes this file once per backend).
use super::env;

const COLLECTION: &str = "/api/customer_password_resets";
const JSONAPI: &str = "application/vnd.api+json";

/// Seed 003's PATCH body, verbatim.
const SEED_PATCH: &str = r#"{
  "data": {
    "type": "customer_password_resets",
    "id": "xYZkjABcde",
    "attributes": {
      "customer_password": "secret"
    }
  }
}"#;

/// Seed 003's example response, verbatim.
const SEED_RESPONSE: &str = r#"{
  "data": {
    "id": "xYZkjABcde",
    "type": "customer_password_resets",
    "links": {
      "self": "https://yourdomain.commercelayer.io/api/customer_password_resets/xYZkjABcde"
    },
    "attributes": {
      "customer_email": "john@example.com",
      "reset_password_token": "xhFfkmfybsLxzaAP6xcs",
      "reset_password_at": "2018-01-01T12:00:00.000Z",
      "created_at": "2018-01-01T12:00:00.000Z",
      "updated_at": "2018-01-01T12:00:00.000Z",
      "reference": "ANY-EXTERNAL-REFEFERNCE",
      "reference_origin": "ANY-EXTERNAL-REFEFERNCE-ORIGIN",
      "metadata": {
        "foo": "bar"
      }
    },
    "relationships": {
      "customer": {
        "links": {
          "self": "https://yourdomain.commercelayer.io/api/customer_password_resets/xYZkjABcde/relationships/customer",
          "related": "https://yourdomain.commercelayer.io/api/customer_password_resets/xYZkjABcde/customer"
        }
      }
    },
    "meta": {
      "mode": "test"
    }
  }
}"#;

fn call(method: &str, path: &str, body: impl Into<Vec<u8>>) -> Request {
    Request::new(method, path)
        .header("Accept", JSONAPI)
        .header("Authorization", format!("Bearer {APP_KEY}"))
        .header("Content-Type", JSONAPI)
        .body(body)
}

fn create_body(email: &str) -> String {
    json!({"data": {"type": "customer_password_resets", "attributes": {
        "customer_email": email, "reference": "ANY-EXTERNAL-REFEFERNCE",
        "reference_origin": "ANY-EXTERNAL-REFEFERNCE-ORIGIN", "metadata": {"foo": "bar"}
    }, "relationships": {}}})
    .to_string()
}

fn patch_body(id: &str, password: &str, token: &str) -> String {
    json!({"data": {"type": "customer_password_resets", "id": id, "attributes": {
        "customer_password": password, "_reset_password_token": token
    }}})
    .to_string()
}

/// Creates a reset for the demo customer: (id, token).
fn create(env: &Env) -> (String, String) {
    let r = env.send(call("POST", COLLECTION, create_body(EMAIL)));
    assert_eq!(r.status, 201, "{}", text(&r));
    let v = json(&r);
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let token = v["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, token)
}

/// The one error object of an error answer, checked for the documented shape.
fn error(r: &Response, status: u16, code: &str, pointer: Option<&str>) -> Value {
    assert_eq!(r.status, status, "{}", text(r));
    assert_eq!(r.header("content-type"), Some(JSONAPI));
    let v = json(r);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1);
    let e = errors[0].clone();
    assert_eq!(e["status"], status.to_string());
    assert_eq!(e["code"], code);
    assert!(e["title"].is_string() && e["detail"].is_string());
    match pointer {
        Some(p) => assert_eq!(e["source"]["pointer"], p),
        None => assert!(e.get("source").is_none(), "{e}"),
    }
    e
}

#[test]
fn the_seeds_verbatim_patch_gets_422_without_a_token() {
    let env = env();
    let before = env.event_count();
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/xYZkjABcde"),
        SEED_PATCH,
    ));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/_reset_password_token"),
    );
    assert_eq!(env.event_count(), before);
}

#[test]
fn create_then_patch_gives_the_seeds_resource() {
    let env = env();
    let r = env.send(call("POST", COLLECTION, create_body(EMAIL)));
    assert_eq!(r.status, 201, "{}", text(&r));
    let created = json(&r);
    let seed: Value = serde_json::from_str(SEED_RESPONSE).unwrap();
    same_shape(&created, &seed, "");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let token = created["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(token.len(), 64);
    assert_eq!(id.len(), 10);
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:8080/api/customer_password_resets/{id}").as_str())
    );
    assert_eq!(
        created["data"]["attributes"]["reset_password_at"],
        Value::Null
    );

    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/{id}"),
        patch_body(&id, "a-new-secret-1", &token),
    ));
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = json(&r);
    same_shape(&v, &seed, "");
    let d = &v["data"];
    let a = &d["attributes"];
    assert_eq!(d["id"], id.as_str());
    assert_eq!(d["type"], "customer_password_resets");
    let self_link = format!("http://127.0.0.1:8080/api/customer_password_resets/{id}");
    assert_eq!(d["links"]["self"], self_link.as_str());
    assert_eq!(
        d["relationships"]["customer"]["links"]["self"],
        format!("{self_link}/relationships/customer").as_str()
    );
    assert_eq!(
        d["relationships"]["customer"]["links"]["related"],
        format!("{self_link}/customer").as_str()
    );
    assert_eq!(a["customer_email"], EMAIL);
    assert_eq!(
        a["reset_password_token"],
        Value::Null,
        "shown only at create"
    );
    assert_eq!(a["reset_password_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(a["created_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(a["updated_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(a["reference"], seed["data"]["attributes"]["reference"]);
    assert_eq!(
        a["reference_origin"],
        seed["data"]["attributes"]["reference_origin"]
    );
    assert_eq!(a["metadata"], json!({"foo": "bar"}));
    assert_eq!(d["meta"]["mode"], "test");
    assert!(env.password_is("a-new-secret-1"));

    // GET shows the same resource, token still null
    let r = env.send(call("GET", &format!("{COLLECTION}/{id}"), ""));
    assert_eq!(r.status, 200);
    assert_eq!(json(&r), v);
}

#[test]
fn links_and_mode_follow_the_settings() {
    let env = env();
    let gw = credstore::Gateway::new(
        env.store().clone(),
        credstore::GatewaySettings::default().with_commerce_layer(
            "https://yourdomain.commercelayer.io/",
            credstore::codec::commerce_layer::Mode::Live,
        ),
    );
    let r = gw.handle(call("POST", COLLECTION, create_body(EMAIL)));
    let v = json(&r);
    let id = v["data"]["id"].as_str().unwrap();
    assert_eq!(
        v["data"]["links"]["self"],
        format!("https://yourdomain.commercelayer.io/api/customer_password_resets/{id}").as_str()
    );
    assert_eq!(v["data"]["meta"]["mode"], "live");
}

#[test]
fn reference_data_can_be_updated_alone() {
    let env = env();
    let (id, token) = create(&env);
    let body = json!({"data": {"type": "customer_password_resets", "id": id, "attributes": {
        "reference": null, "metadata": {"n": 1}}}});
    env.advance(Duration::from_secs(5));
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/{id}"),
        body.to_string(),
    ));
    assert_eq!(r.status, 200, "{}", text(&r));
    let a = json(&r)["data"]["attributes"].clone();
    assert_eq!(a["reference"], Value::Null);
    assert_eq!(a["reference_origin"], "ANY-EXTERNAL-REFEFERNCE-ORIGIN");
    assert_eq!(a["metadata"], json!({"n": 1}));
    assert_eq!(a["reset_password_at"], Value::Null);
    assert_eq!(a["updated_at"], "2026-01-01T00:00:05.000Z");
    // the token still works afterwards
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/{id}"),
        patch_body(&id, "another-secret", &token),
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn authentication() {
    let env = env();
    let r = env.send(Request::new("GET", format!("{COLLECTION}/xYZkjABcde")));
    error(&r, 401, "UNAUTHORIZED", None);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for auth in [
        "Bearer ffffd700707ad9a77f737e5df3db088a",
        "Basic abc",
        "Bearer",
        "Bearer a b",
    ] {
        let r = env.send(
            Request::new("POST", COLLECTION)
                .header("Authorization", auth)
                .header("Content-Type", JSONAPI)
                .body(create_body(EMAIL)),
        );
        error(&r, 401, "UNAUTHORIZED", None);
    }
    env.store().set_app_enabled(396, false).unwrap();
    let r = env.send(call("POST", COLLECTION, create_body(EMAIL)));
    error(&r, 401, "UNAUTHORIZED", None);
}

#[test]
fn not_found_conflicts_and_malformed_documents() {
    let env = env();
    let (id, token) = create(&env);
    let before = env.event_count();
    let r = env.send(call("GET", &format!("{COLLECTION}/zzzzzzzzzz"), ""));
    error(&r, 404, "RECORD_NOT_FOUND", None);
    let r = env.send(call("GET", &format!("{COLLECTION}/bad-id"), ""));
    error(&r, 404, "RECORD_NOT_FOUND", None);
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/zzzzzzzzzz"),
        patch_body("zzzzzzzzzz", "a-new-secret-1", &token),
    ));
    error(&r, 404, "RECORD_NOT_FOUND", None);
    // type and id mismatches
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/{id}"),
        patch_body("zzzzzzzzzz", "a-new-secret-1", &token),
    ));
    error(&r, 409, "CONFLICT", Some("/data/id"));
    let wrong_type =
        patch_body(&id, "a-new-secret-1", &token).replace("customer_password_resets", "customers");
    let r = env.send(call("PATCH", &format!("{COLLECTION}/{id}"), wrong_type));
    error(&r, 409, "CONFLICT", Some("/data/type"));
    let r = env.send(call(
        "POST",
        COLLECTION,
        create_body(EMAIL).replace("customer_password_resets", "orders"),
    ));
    error(&r, 409, "CONFLICT", Some("/data/type"));
    // malformed
    for body in [
        "",
        "{",
        "[]",
        "{\"data\":1}",
        "{\"data\":{\"attributes\":{}}}",
    ] {
        let r = env.send(call("POST", COLLECTION, body));
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        error(
            &r,
            400,
            "BAD_REQUEST",
            json(&r)["errors"][0]["source"]["pointer"].as_str(),
        );
    }
    let r = env.send(call(
        "POST",
        COLLECTION,
        json!({"data": {"type": "customer_password_resets", "attributes": {}}}).to_string(),
    ));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/customer_email"),
    );
    let r = env.send(call(
        "POST",
        COLLECTION,
        create_body(EMAIL).replace("{\"foo\":\"bar\"}", "[1]"),
    ));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/metadata"),
    );
    let r = env.send(call("POST", COLLECTION, create_body(&"x".repeat(300))));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/customer_email"),
    );
    let long_ref = create_body(EMAIL).replace("ANY-EXTERNAL-REFEFERNCE-ORIGIN", &"r".repeat(300));
    let r = env.send(call("POST", COLLECTION, long_ref));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/reference_origin"),
    );
    assert_eq!(env.event_count(), before);
}

#[test]
fn unknown_email_and_throttling() {
    let env = env();
    let r = env.send(call("POST", COLLECTION, create_body("nobody@example.com")));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/customer_email"),
    );
    create(&env);
    let r = env.send(call("POST", COLLECTION, create_body(EMAIL)));
    error(&r, 429, "TOO_MANY_REQUESTS", None);
    env.advance(Duration::from_secs(61));
    create(&env);
}

#[test]
fn invalid_expired_and_used_tokens_and_policy() {
    let env = env();
    let (id, token) = create(&env);
    let path = format!("{COLLECTION}/{id}");
    let pointer = Some("/data/attributes/_reset_password_token");
    let r = env.send(call(
        "PATCH",
        &path,
        patch_body(&id, "a-new-secret-1", "not-a-token"),
    ));
    error(&r, 422, "VALIDATION_ERROR", pointer);
    let other = "A".repeat(64);
    let r = env.send(call(
        "PATCH",
        &path,
        patch_body(&id, "a-new-secret-1", &other),
    ));
    error(&r, 422, "VALIDATION_ERROR", pointer);
    // a token without a password
    let body = json!({"data": {"type": "customer_password_resets", "id": id,
        "attributes": {"_reset_password_token": token}}});
    let r = env.send(call("PATCH", &path, body.to_string()));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/customer_password"),
    );
    // the policy, pointed at the password; the token survives it
    let r = env.send(call("PATCH", &path, patch_body(&id, "secret", &token)));
    error(
        &r,
        422,
        "VALIDATION_ERROR",
        Some("/data/attributes/customer_password"),
    );
    assert!(env.password_is(PASSWORD));
    // used
    let r = env.send(call(
        "PATCH",
        &path,
        patch_body(&id, "a-new-secret-1", &token),
    ));
    assert_eq!(r.status, 200);
    let r = env.send(call(
        "PATCH",
        &path,
        patch_body(&id, "a-new-secret-2", &token),
    ));
    error(&r, 422, "VALIDATION_ERROR", pointer);
    assert!(env.password_is("a-new-secret-1"));
    // expired
    env.advance(Duration::from_secs(61));
    let (id, token) = create(&env);
    env.advance(Duration::from_secs(60 * 60));
    let r = env.send(call(
        "PATCH",
        &format!("{COLLECTION}/{id}"),
        patch_body(&id, "a-new-secret-3", &token),
    ));
    error(&r, 422, "VALIDATION_ERROR", pointer);
    assert!(env.password_is("a-new-secret-1"));
}

#[test]
fn transport_errors_in_json_api_shape() {
    let env = env();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let r = env.send(call("POST", COLLECTION, big));
    error(&r, 413, "PAYLOAD_TOO_LARGE", None);
    let r = env.send(
        Request::new("POST", COLLECTION)
            .header("Authorization", format!("Bearer {APP_KEY}"))
            .header("Content-Type", "application/json")
            .body(create_body(EMAIL)),
    );
    error(&r, 415, "UNSUPPORTED_MEDIA_TYPE", None);
    let r = env.send(
        Request::new("PATCH", format!("{COLLECTION}/xYZkjABcde"))
            .header("Authorization", format!("Bearer {APP_KEY}"))
            .body(SEED_PATCH),
    );
    error(&r, 415, "UNSUPPORTED_MEDIA_TYPE", None);
    let r = env.send(call("DELETE", &format!("{COLLECTION}/xYZkjABcde"), ""));
    error(&r, 405, "METHOD_NOT_ALLOWED", None);
    assert_eq!(r.header("allow"), Some("GET, PATCH"));
}
