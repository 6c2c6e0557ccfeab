//! ASP.NET ChangePassword (seed 004) through the gateway.

use credstore::{AppKey, FlagsUpdate, Request, Response, change_password_digest};
use serde_json::{Value, json};

use crate::common::*;
// The suite's backend (tests/codecs.rs includes this file once per backend).
use super::env;

const PATH: &str = "/api/Customers/ChangePassword";

/// Seed 004's JSON sample, verbatim.
const SEED_JSON: &str = r#"{
  "User": {
    "UserName": "sample string 1",
    "Email": "sample string 2",
    "Key": "sample string 3"
  },
  "UserNewPassword": "sample string 1",
  "UserName": "sample string 2",
  "Salt": 3,
  "Digest": "sample string 4"
}"#;

/// Seed 004's XML sample, verbatim.
const SEED_XML: &str = r#"<ChangePasswordRequest xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" UserName="sample string 2" Salt="3" Digest="sample string 4">
  <User>
    <UserName>sample string 1</UserName>
    <Email>sample string 2</Email>
    <Key>sample string 3</Key>
  </User>
  <UserNewPassword>sample string 1</UserNewPassword>
</ChangePasswordRequest>"#;

/// Seed 004's XML response sample: its root element and namespaces.
const SEED_XML_RESPONSE_ROOT: &str = r#"<ChangePasswordResponse xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#;

const SALT: i64 = 1_234_567_890;

fn digest(salt: i64, new_password: &str) -> String {
    change_password_digest(
        &AppKey::new(APP_KEY).unwrap(),
        "396",
        salt,
        EMAIL,
        EMAIL,
        CUSTOMER_KEY,
        new_password,
    )
}

/// Seed 004's JSON sample with real values, in the sample's layout: in it
/// "sample string 1" is User.UserName then UserNewPassword, and "sample
/// string 2" is User.Email then UserName.
fn fill(salt: i64, new_password: &str, digest: &str) -> String {
    SEED_JSON
        .replacen("sample string 1", EMAIL, 1)
        .replacen("sample string 2", EMAIL, 1)
        .replace("sample string 3", CUSTOMER_KEY)
        .replace("sample string 1", new_password)
        .replace("sample string 2", "396")
        .replace("\"Salt\": 3", &format!("\"Salt\": {salt}"))
        .replace("sample string 4", digest)
}

fn json_request(salt: i64, new_password: &str) -> String {
    fill(salt, new_password, &digest(salt, new_password))
}

fn xml_request(salt: i64, new_password: &str) -> String {
    // In the XML sample the attribute UserName comes before the User element.
    SEED_XML
        .replace("UserName=\"sample string 2\"", "UserName=\"396\"")
        .replace("Salt=\"3\"", &format!("Salt=\"{salt}\""))
        .replace("sample string 4", &digest(salt, new_password))
        .replace(
            "<UserName>sample string 1</UserName>",
            &format!("<UserName>{EMAIL}</UserName>"),
        )
        .replace("sample string 2", EMAIL)
        .replace("sample string 3", CUSTOMER_KEY)
        .replace("sample string 1", new_password)
}

fn send(env: &Env, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
    env.send(post(PATH, content_type, body))
}

/// A JSON ChangePasswordResponse: (Success, Message, Extra1).
fn answer(r: &Response) -> (bool, String, Value) {
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{}",
        text(r)
    );
    let v = json(r);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["Extra1", "Extra2", "Extra3", "Message", "Success"]);
    assert_eq!(v["Extra2"], Value::Null);
    assert_eq!(v["Extra3"], Value::Null);
    (
        v["Success"].as_bool().unwrap(),
        v["Message"].as_str().unwrap().to_owned(),
        v["Extra1"].clone(),
    )
}

fn refused(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", text(r));
    let (ok, m, extra1) = answer(r);
    assert!(!ok);
    assert_eq!(m, message);
    assert_eq!(extra1, Value::Null);
}

#[test]
fn the_json_sample_with_real_values_changes_the_password() {
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
    let body = json_request(SALT, "brand-new-pass");
    // the sample's layout is kept: the filled request still has its members in order
    assert!(body.contains("\"UserName\": \"396\""), "{body}");
    let r = send(&env, "application/json", body);
    assert_eq!(r.status, 200);
    assert_eq!(
        json(&r),
        json!({"Success": true, "Message": "Password changed", "Extra1": "811111",
               "Extra2": null, "Extra3": null})
    );
    assert!(
        env.password_is("brand-new-pass"),
        "and must_change_password is cleared"
    );
    let c = env.store().customer(BOX_ID).unwrap();
    assert!(!c.flags.must_change_password);
}

#[test]
fn the_xml_sample_with_real_values_changes_the_password() {
    let env = env();
    let body = xml_request(SALT, "brand-new-pass");
    let with_bom = [&b"\xEF\xBB\xBF"[..], body.as_bytes()].concat();
    let r = send(&env, "application/xml", with_bom);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let x = text(&r);
    assert!(x.starts_with(SEED_XML_RESPONSE_ROOT), "{x}");
    assert!(x.contains("<Success>true</Success>"), "{x}");
    assert!(x.contains("<Message>Password changed</Message>"), "{x}");
    assert!(x.contains("<Extra1>811111</Extra1>"), "{x}");
    assert!(
        !x.contains("Extra2") && !x.contains("Extra3"),
        "empty elements omitted: {x}"
    );
    assert!(x.trim_end().ends_with("</ChangePasswordResponse>"));
    assert!(env.password_is("brand-new-pass"));
}

#[test]
fn text_xml_with_xsi_nil_extras_and_any_order() {
    let env = env();
    let pw = "brand-new-pass";
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<ChangePasswordRequest xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" Digest="{}" Salt="{SALT}" UserName="396">
  <!-- a comment -->
  <Extra1 xsi:nil="true" />
  <UserNewPassword>{pw}</UserNewPassword>
  <User><Key>{CUSTOMER_KEY}</Key><Email>{EMAIL}</Email><UserName>{EMAIL}</UserName></User>
</ChangePasswordRequest>"#,
        digest(SALT, pw)
    );
    let r = env.send(post(PATH, "text/xml", body).header("Accept", "application/json"));
    let (ok, m, extra1) = answer(&r);
    assert!(ok, "{m}");
    assert_eq!(extra1, "811111");
    // xsi:nil on a member the request needs is a missing member
    let nil = xml_request(SALT + 1, pw).replace(
        &format!("<UserNewPassword>{pw}</UserNewPassword>"),
        "<UserNewPassword xsi:nil=\"true\" />",
    );
    let r = send(&env, "text/xml", nil);
    assert_eq!(r.status, 400);
    assert!(
        text(&r).contains("UserNewPassword is required"),
        "{}",
        text(&r)
    );
}

#[test]
fn a_form_body_works_and_json_names_ignore_case() {
    let env = env();
    let pw = "form-pass-1234";
    let form = credstore::codec::aspnet::encode_form(
        &credstore::codec::aspnet::decode_json(json_request(SALT, pw).as_bytes()).unwrap(),
    );
    let r = send(&env, "application/x-www-form-urlencoded", form);
    assert_eq!(answer(&r).1, "Password changed");
    assert!(env.password_is(pw));
    let pw = "lower-case-names";
    let lower = json_request(SALT + 1, pw)
        .replace("\"User\"", "\"user\"")
        .replace("\"Salt\"", "\"SALT\"")
        .replace("\"Digest\"", "\"digest\"");
    let r = send(&env, "text/json", lower);
    assert_eq!(answer(&r).1, "Password changed");
}

#[test]
fn replayed_salt() {
    let env = env();
    let r = send(
        &env,
        "application/json",
        json_request(SALT, "brand-new-pass"),
    );
    assert!(answer(&r).0);
    let before = env.event_count();
    let r = send(
        &env,
        "application/json",
        json_request(SALT, "brand-new-pass"),
    );
    refused(&r, 200, "Salt already used");
    // also with another password and a fresh digest, and in XML
    let r = send(
        &env,
        "application/json",
        json_request(SALT, "another-pass-1"),
    );
    refused(&r, 200, "Salt already used");
    let r = env.send(
        post(PATH, "application/xml", xml_request(SALT, "another-pass-1"))
            .header("Accept", "application/json"),
    );
    refused(&r, 200, "Salt already used");
    assert_eq!(env.event_count(), before);
    assert!(env.password_is("brand-new-pass"));
    // Salts are kept for good (SPEC §6.4): a captured request replayed a
    // day later, or after a purge, still changes nothing.
    let captured = json_request(SALT, "brand-new-pass");
    let before = env.event_count();
    env.advance(std::time::Duration::from_secs(24 * 60 * 60 + 1));
    refused(
        &send(&env, "application/json", captured.clone()),
        200,
        "Salt already used",
    );
    env.store().purge_resets().unwrap();
    env.store().purge_login_guards().unwrap();
    env.advance(std::time::Duration::from_secs(365 * 24 * 60 * 60));
    refused(
        &send(&env, "application/json", captured),
        200,
        "Salt already used",
    );
    assert_eq!(env.event_count(), before);
    assert!(env.password_is("brand-new-pass"));
    assert!(env.store().check_integrity().unwrap().is_sound());
}

#[test]
fn wrong_digest_short_salt_and_the_verbatim_sample() {
    let env = env();
    let before = env.event_count();
    let wrong = fill(SALT, "brand-new-pass", &digest(SALT, "other-password"));
    refused(
        &send(&env, "application/json", wrong),
        200,
        "Invalid digest",
    );
    let upper = fill(
        SALT,
        "brand-new-pass",
        &digest(SALT, "brand-new-pass").to_uppercase(),
    );
    refused(
        &send(&env, "application/json", upper),
        200,
        "Invalid digest",
    );
    for salt in [3, 99_999_999, -123_456_789] {
        let r = send(
            &env,
            "application/json",
            json_request(salt, "brand-new-pass"),
        );
        refused(&r, 200, "Salt must be a number of at least 9 digits");
    }
    assert_eq!(env.event_count(), before);
    // The smallest 9-digit salt is accepted (and changes the password).
    let r = send(
        &env,
        "application/json",
        json_request(credstore::MIN_SALT, "brand-new-pass"),
    );
    assert_eq!(json(&r)["Success"], true, "{}", text(&r));
    assert!(env.password_is("brand-new-pass"));
    let before = env.event_count();
    // the verbatim samples: "sample string 2" is no app, checked first
    refused(
        &send(&env, "application/json", SEED_JSON),
        200,
        "Unknown or disabled app",
    );
    let r = env.send(post(PATH, "application/xml", SEED_XML).header("Accept", "application/json"));
    refused(&r, 200, "Unknown or disabled app");
    assert_eq!(env.event_count(), before);
}

#[test]
fn unknown_or_disabled_app() {
    let env = env();
    let body = json_request(SALT, "brand-new-pass").replace("\"396\"", "\"397\"");
    refused(
        &send(&env, "application/json", body),
        200,
        "Unknown or disabled app",
    );
    env.store().set_app_enabled(396, false).unwrap();
    let r = send(
        &env,
        "application/json",
        json_request(SALT, "brand-new-pass"),
    );
    refused(&r, 200, "Unknown or disabled app");
}

#[test]
fn wrong_customer_credentials_and_policy() {
    let env = env();
    let key = AppKey::new(APP_KEY).unwrap();
    let signed = |user_name: &str, email: &str, ckey: &str, pw: &str, salt: i64| {
        json!({
            "User": {"UserName": user_name, "Email": email, "Key": ckey},
            "UserNewPassword": pw, "UserName": "396", "Salt": salt,
            "Digest": change_password_digest(&key, "396", salt, user_name, email, ckey, pw),
        })
        .to_string()
    };
    let before = env.event_count();
    let other_key = "AAAANpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=";
    for (i, (u, e, k)) in [
        (EMAIL, EMAIL, other_key),
        ("jane@email.com", EMAIL, CUSTOMER_KEY),
        (EMAIL, "nobody@email.com", CUSTOMER_KEY),
        (EMAIL, "not an email", CUSTOMER_KEY),
        (EMAIL, EMAIL, ""),
    ]
    .into_iter()
    .enumerate()
    {
        let r = send(
            &env,
            "application/json",
            signed(u, e, k, "brand-new-pass", SALT + i as i64),
        );
        refused(&r, 200, "Invalid customer credentials");
    }
    let r = send(
        &env,
        "application/json",
        signed(EMAIL, EMAIL, CUSTOMER_KEY, "short", SALT),
    );
    refused(
        &r,
        200,
        "Password does not meet the policy: at least 8 characters",
    );
    let long = "p".repeat(300);
    let r = send(
        &env,
        "application/json",
        signed(EMAIL, EMAIL, CUSTOMER_KEY, &long, SALT),
    );
    refused(
        &r,
        200,
        "Password does not meet the policy: at most 255 characters",
    );
    assert_eq!(env.event_count(), before);
    // emails compare as emails do
    let r = send(
        &env,
        "application/json",
        signed(
            "JohnDoe@Email.com",
            EMAIL,
            CUSTOMER_KEY,
            "brand-new-pass",
            SALT,
        ),
    );
    assert!(answer(&r).0);
}

#[test]
fn dtds_and_entities_are_refused_unexpanded() {
    let env = env();
    let before = env.event_count();
    let xxe = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE ChangePasswordRequest [<!ENTITY k SYSTEM \"file:///etc/passwd\">]>\n{}",
        xml_request(SALT, "brand-new-pass")
    );
    let r = send(&env, "application/xml", xxe);
    assert_eq!(r.status, 400);
    let x = text(&r);
    assert!(x.starts_with(SEED_XML_RESPONSE_ROOT), "{x}");
    assert!(x.contains("<Success>false</Success>"));
    assert!(
        x.contains("<Message>Malformed request: a DTD is not allowed</Message>"),
        "{x}"
    );
    assert!(!x.contains("root:"), "nothing was read from the file");
    let bomb = "<!DOCTYPE ChangePasswordRequest [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><ChangePasswordRequest UserName=\"&b;\"/>";
    let r = send(&env, "text/xml", bomb);
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("DTD"));
    let undeclared = xml_request(SALT, "brand-new-pass").replace(CUSTOMER_KEY, "&key;");
    let r = send(&env, "text/xml", undeclared);
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("Malformed request"));
    assert_eq!(env.event_count(), before);
    assert!(env.password_is(PASSWORD));
}

#[test]
fn malformed_and_missing_members() {
    let env = env();
    for (body, needle) in [
        (
            "{\"a\" 1}",
            "Malformed request: the body is not valid JSON (line 1, column 6)",
        ),
        (
            "{",
            "Malformed request: the body ends in the middle of a JSON value",
        ),
        (
            "[]",
            "Malformed request: the body must be a ChangePasswordRequest object",
        ),
        (
            r#"{"UserName":"396"}"#,
            "Malformed request: User is required",
        ),
        (
            r#"{"User":{"UserName":"a","Email":"b"},"UserName":"396"}"#,
            "Malformed request: User.Key is required",
        ),
    ] {
        let r = send(&env, "application/json", body);
        assert_eq!(r.status, 400, "{body}");
        let (ok, m, _) = answer(&r);
        assert!(!ok);
        assert!(m.starts_with(needle), "{m}");
    }
    let r = send(
        &env,
        "application/json",
        json_request(SALT, "x").replace(&SALT.to_string(), "\"1234567890\""),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        answer(&r).1,
        "Malformed request: Salt must be an integer (64-bit)"
    );
    let r = send(&env, "application/xml", "<ChangePasswordRequest><User>");
    assert_eq!(r.status, 400);
    assert!(
        text(&r).contains("<Message>Malformed request"),
        "{}",
        text(&r)
    );
}

#[test]
fn negotiation_size_and_content_type() {
    let env = env();
    // JSON in, XML asked for
    let r = env.send(post(PATH, "application/json", SEED_JSON).header("Accept", "text/xml"));
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    assert!(text(&r).starts_with(SEED_XML_RESPONSE_ROOT));
    // XML in, JSON asked for; XML in, nothing or */* asked for
    let r = env.send(post(PATH, "application/xml", SEED_XML).header("Accept", "application/json"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let r = env.send(post(PATH, "application/xml", SEED_XML).header("Accept", "*/*"));
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let r = send(&env, "application/xml", SEED_XML);
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let r = send(&env, "application/json", big.clone());
    refused(
        &r,
        413,
        "Malformed request: the body is larger than 65536 bytes",
    );
    let r = send(&env, "application/xml", big);
    assert_eq!(r.status, 413);
    assert!(text(&r).starts_with(SEED_XML_RESPONSE_ROOT));
    let r = send(&env, "text/plain", SEED_JSON);
    assert_eq!(r.status, 415);
    assert!(!answer(&r).0);
    let r = env.send(Request::new("POST", PATH).body(SEED_JSON));
    assert_eq!(r.status, 415);
    let r = env.send(Request::new("GET", PATH));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn a_salt_raced_by_many_threads_is_used_once() {
    let env = env();
    let body = json_request(SALT, "raced-pass-1234");
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| answer(&send(&env, "application/json", body.clone())).1))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let changed = answers.iter().filter(|m| *m == "Password changed").count();
    assert_eq!(changed, 1, "{answers:?}");
    for m in &answers {
        assert!(
            m == "Password changed" || m == "Salt already used",
            "{answers:?}"
        );
    }
    let events = env.store().events(0, 10_000).unwrap();
    let rotations = events
        .iter()
        .filter(|e| e.kind == credstore::EventKind::PasswordChanged && e.user_code == Some(396))
        .count();
    assert_eq!(rotations, 1);
}
