//! SPEC §5.10 and §5.11 across the formats: a refused request changes
//! nothing (the whole event log and every customer are compared before and
//! after), and disabled customers are refused in every format.

use credstore::{AppKey, FlagsUpdate, Request, Response, change_password_digest};
use serde_json::{Value, json};

use crate::common::*;
// The suite's backend (tests/codecs.rs includes this file once per backend).
use super::env;

const LOGIN: &str = "/wcf-services/service-customer.svc/customer/customer-login";
const UPDATE: &str = "/wcf-services/service-customer.svc/customer/customer-update-password";
const SKYERP: &str = "/api/v1/acme12aa/customers/reset-password";
const RESETS: &str = "/api/customer_password_resets";
const ASPNET: &str = "/api/Customers/ChangePassword";
const JSONAPI: &str = "application/vnd.api+json";
const UNKNOWN_TOKEN: &str = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";

fn login(app_key: &str, password: &str) -> Request {
    let body = json!({"user_code": 396, "app_key": app_key, "customer_email": EMAIL,
                      "customer_password": password});
    post(LOGIN, "application/json", body.to_string())
}

fn update(key: &str, email: &str, new_password: &str) -> Request {
    let body = json!({"user_code": 396, "app_key": APP_KEY, "customer_box_id": BOX_ID,
                      "customer_key": key, "customer_email": email,
                      "customer_new_password": new_password});
    post(UPDATE, "application/json", body.to_string())
}

fn skyerp_put(email: &str, password: &str, token: &str) -> Request {
    let body = json!({"email": email, "password": password, "password2": password,
                      "token": token});
    Request::new("PUT", SKYERP)
        .header("Content-Type", "application/json")
        .body(body.to_string())
}

fn jsonapi(method: &str, path: &str, body: Value) -> Request {
    Request::new(method, path)
        .header("Authorization", format!("Bearer {APP_KEY}"))
        .header("Content-Type", JSONAPI)
        .body(body.to_string())
}

fn cl_create(email: &str) -> Request {
    jsonapi(
        "POST",
        RESETS,
        json!({"data": {"type": "customer_password_resets",
                        "attributes": {"customer_email": email}}}),
    )
}

fn cl_patch(id: &str, attributes: Value) -> Request {
    jsonapi(
        "PATCH",
        &format!("{RESETS}/{id}"),
        json!({"data": {"type": "customer_password_resets", "id": id,
                        "attributes": attributes}}),
    )
}

fn signed(salt: i64, key: &str, new_password: &str, digest_password: &str) -> Request {
    let app = AppKey::new(APP_KEY).unwrap();
    let digest = change_password_digest(&app, "396", salt, EMAIL, EMAIL, key, digest_password);
    let body = json!({"User": {"UserName": EMAIL, "Email": EMAIL, "Key": key},
                      "UserNewPassword": new_password, "UserName": "396", "Salt": salt,
                      "Digest": digest});
    post(ASPNET, "application/json", body.to_string())
}

/// Sends a request that must be refused with `status`, and checks that it
/// changed nothing.
fn refused(env: &Env, what: &str, req: Request, status: u16) -> Response {
    let before = env.snapshot();
    let r = env.send(req);
    assert_eq!(r.status, status, "{what}: {}", text(&r));
    assert!(env.snapshot() == before, "{what} changed the store");
    r
}

/// A Skypostal-style answer's `_verify` and error location.
fn skypostal(r: &Response) -> (bool, String) {
    let v = json(r);
    (
        v[0]["_verify"].as_bool().unwrap(),
        v[0]["error"]["error_location"].as_str().unwrap().to_owned(),
    )
}

/// `(Success, Message)` of a ChangePasswordResponse, JSON or XML.
fn aspnet_message(r: &Response) -> (bool, String) {
    if r.header("content-type").is_some_and(|c| c.contains("xml")) {
        let t = text(r);
        let between = |a: &str, b: &str| {
            let start = t.find(a).map(|i| i + a.len()).unwrap_or(0);
            t[start..].split(b).next().unwrap_or_default().to_owned()
        };
        return (
            between("<Success>", "</Success>") == "true",
            between("<Message>", "</Message>"),
        );
    }
    let v = json(r);
    (
        v["Success"].as_bool().unwrap(),
        v["Message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_refused_request_changes_nothing_on_any_route() {
    let env = env();
    // A live reset to aim at, made before the snapshots.
    let r = env.send(cl_create(EMAIL));
    assert_eq!(r.status, 201, "{}", text(&r));
    let v = json(&r);
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let token = v["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let big = json!({"blob": "x".repeat(5 * 1024)});
    let salt = 987_654_321;

    let cases: Vec<(&str, Request, u16)> = vec![
        // Skypostal
        (
            "login, wrong app key",
            login("00000000000000000000000000000000", PASSWORD),
            200,
        ),
        (
            "login, broken JSON",
            post(LOGIN, "application/json", "{"),
            400,
        ),
        (
            "login, missing member",
            post(LOGIN, "application/json", r#"{"user_code":396}"#),
            400,
        ),
        (
            "login, oversized",
            post(LOGIN, "application/json", vec![b' '; 70_000]),
            413,
        ),
        ("login, wrong type", post(LOGIN, "text/plain", "x"), 415),
        ("login, GET", Request::new("GET", LOGIN), 405),
        (
            "update, wrong key",
            update("AAAA", EMAIL, "a-new-passphrase"),
            200,
        ),
        (
            "update, not the account's email",
            update(CUSTOMER_KEY, "x@email.com", "a-new-passphrase"),
            200,
        ),
        ("update, policy", update(CUSTOMER_KEY, EMAIL, "short"), 200),
        (
            "update, NUL in password",
            update(CUSTOMER_KEY, EMAIL, "pass\u{0}word-123"),
            200,
        ),
        // SkyERP
        (
            "skyerp, unknown shop",
            post(
                "/api/v1/nope/customers/reset-password",
                "application/json",
                r#"{"email":"a@b.co"}"#,
            ),
            404,
        ),
        (
            "skyerp, invalid email",
            post(SKYERP, "application/json", r#"{"email":"nope"}"#),
            400,
        ),
        (
            "skyerp, broken JSON",
            post(SKYERP, "application/json", "{"),
            400,
        ),
        (
            "skyerp, wrong type",
            post(SKYERP, "text/plain", "email=a"),
            415,
        ),
        ("skyerp put, short", skyerp_put(EMAIL, "short", &token), 400),
        (
            "skyerp put, unknown pair",
            skyerp_put(EMAIL, "a-new-passphrase", UNKNOWN_TOKEN),
            400,
        ),
        (
            "skyerp put, unknown email",
            skyerp_put("x@email.com", "a-new-passphrase", &token),
            400,
        ),
        (
            "skyerp get, unknown token",
            Request::new("GET", format!("{SKYERP}/{UNKNOWN_TOKEN}")),
            200,
        ),
        // Commerce Layer
        ("cl, no bearer", post(RESETS, JSONAPI, "{}"), 401),
        ("cl, unknown email", cl_create("x@email.com"), 422),
        (
            "cl, oversized metadata on create",
            jsonapi(
                "POST",
                RESETS,
                json!({"data": {"type": "customer_password_resets",
            "attributes": {"customer_email": EMAIL, "metadata": big}}}),
            ),
            422,
        ),
        ("cl, throttled", cl_create(EMAIL), 429),
        (
            "cl patch, valid token but oversized metadata",
            cl_patch(
                &id,
                json!({"customer_password": "a-new-passphrase",
                                 "_reset_password_token": token, "metadata": big}),
            ),
            422,
        ),
        (
            "cl patch, valid token but overlong reference",
            cl_patch(
                &id,
                json!({"customer_password": "a-new-passphrase",
                                 "_reset_password_token": token, "reference": "r".repeat(300)}),
            ),
            422,
        ),
        (
            "cl patch, valid token but short password",
            cl_patch(
                &id,
                json!({"customer_password": "short", "_reset_password_token": token}),
            ),
            422,
        ),
        (
            "cl patch, wrong token",
            cl_patch(
                &id,
                json!({"customer_password": "a-new-passphrase",
                                 "_reset_password_token": UNKNOWN_TOKEN}),
            ),
            422,
        ),
        (
            "cl patch, no token",
            cl_patch(&id, json!({"customer_password": "a-new-passphrase"})),
            422,
        ),
        (
            "cl patch, oversized metadata alone",
            cl_patch(&id, json!({"metadata": big})),
            422,
        ),
        (
            "cl patch, unknown id",
            cl_patch("AAAAAAAAAA", json!({"reference": "r"})),
            404,
        ),
        // ASP.NET
        (
            "aspnet, wrong digest",
            signed(salt, CUSTOMER_KEY, "a-new-passphrase", "other-pass"),
            200,
        ),
        (
            "aspnet, short salt",
            signed(1234, CUSTOMER_KEY, "a-new-passphrase", "a-new-passphrase"),
            200,
        ),
        (
            "aspnet, wrong key",
            signed(salt, "AAAA", "a-new-passphrase", "a-new-passphrase"),
            200,
        ),
        (
            "aspnet, policy",
            signed(salt, CUSTOMER_KEY, "short", "short"),
            200,
        ),
        (
            "aspnet, broken body",
            post(ASPNET, "application/json", "{"),
            400,
        ),
        (
            "aspnet, DTD",
            post(
                ASPNET,
                "application/xml",
                "<!DOCTYPE x [<!ENTITY a \"b\">]><ChangePasswordRequest/>",
            ),
            400,
        ),
    ];
    for (what, req, status) in cases {
        let r = refused(&env, what, req, status);
        if what.starts_with("aspnet") && status == 200 {
            assert!(!aspnet_message(&r).0, "{what}");
        }
        if what.starts_with("login") || what.starts_with("update") {
            assert!(!skypostal(&r).0, "{what}");
        }
    }
    // After all that, the token and the salt are still good.
    let r = env.send(cl_patch(
        &id,
        json!({"customer_password": "a-new-passphrase", "_reset_password_token": token,
               "metadata": {"ok": true}}),
    ));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(
        json(&r)["data"]["attributes"]["metadata"],
        json!({"ok": true})
    );
    assert!(env.password_is("a-new-passphrase"));
    let r = env.send(signed(
        salt,
        CUSTOMER_KEY,
        "another-passphrase",
        "another-passphrase",
    ));
    assert_eq!(aspnet_message(&r), (true, "Password changed".to_owned()));
}

/// SPEC §5.10 in every format: the right password (or key) says the
/// account is disabled; a reset request is answered as for an unknown email
/// and issues nothing; a token from before the disabling is dead.
#[test]
fn disabled_customers_are_refused_in_every_format() {
    let env = env();
    let r = env.send(cl_create(EMAIL));
    let token = json(&r)["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    env.advance(std::time::Duration::from_secs(61));
    env.store()
        .set_flags(
            BOX_ID,
            FlagsUpdate {
                is_enable: Some(false),
                ..Default::default()
            },
        )
        .unwrap();

    // Skypostal login: right password → "customer", disabled; wrong → password.
    let r = env.send(login(APP_KEY, PASSWORD));
    assert_eq!(skypostal(&r), (false, "customer".to_owned()));
    assert!(text(&r).contains("disabled"), "{}", text(&r));
    let r = env.send(login(APP_KEY, "wrong-password"));
    assert_eq!(skypostal(&r), (false, "customer_password".to_owned()));
    // Skypostal update with the right key.
    let r = refused(
        &env,
        "update",
        update(CUSTOMER_KEY, EMAIL, "a-new-passphrase"),
        200,
    );
    assert_eq!(skypostal(&r), (false, "customer".to_owned()));
    assert!(text(&r).contains("disabled"));

    // SkyERP POST: the answer of an unknown email, no mail.
    let mails = env.mailer.count();
    let known = env.send(post(
        SKYERP,
        "application/json",
        format!(r#"{{"email":"{EMAIL}"}}"#),
    ));
    let unknown = env.send(post(
        SKYERP,
        "application/json",
        r#"{"email":"johndoe@email.com.invalid"}"#,
    ));
    assert_eq!(known.status, 200);
    assert_eq!(json(&known)["message"], json(&unknown)["message"]);
    assert_eq!(json(&known)["success"], true);
    assert_eq!(env.deliver().delivered, 0, "nothing was queued");
    assert_eq!(env.mailer.count(), mails);
    // SkyERP PUT with a token issued before: as an unknown pair.
    let r = refused(
        &env,
        "skyerp put",
        skyerp_put(EMAIL, "a-new-passphrase", &token),
        400,
    );
    let other = env.send(skyerp_put("nobody@email.com", "a-new-passphrase", &token));
    assert_eq!(text(&r), text(&other));

    // Commerce Layer create: as an unknown email.
    let r = refused(&env, "cl create", cl_create(EMAIL), 422);
    let unknown = env.send(cl_create("nobody@email.com"));
    assert_eq!(text(&r), text(&unknown));

    // ASP.NET signed change with the right key.
    let r = refused(
        &env,
        "aspnet",
        signed(
            555_555_555,
            CUSTOMER_KEY,
            "a-new-passphrase",
            "a-new-passphrase",
        ),
        200,
    );
    assert_eq!(
        aspnet_message(&r),
        (false, "Customer account is disabled".to_owned())
    );
    assert!(!env.password_is("a-new-passphrase"));
}

/// SPEC §8: invalid UTF-8 and numbers no type can hold, through every
/// route: the format's own 400-class answer, never a 500, nothing changed.
#[test]
fn bad_utf8_and_huge_numbers_through_every_route() {
    let env = env();
    let huge = "123456789012345678901234567890";
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        (LOGIN, "application/json", b"{\"user_code\":396,\"app_key\":\"\xff\xfe\",\"customer_email\":\"a\",\"customer_password\":\"b\"}".to_vec()),
        (LOGIN, "application/json", format!(r#"{{"user_code":{huge},"app_key":"k","customer_email":"a","customer_password":"b"}}"#).into_bytes()),
        (LOGIN, "application/json", br#"{"user_code":1e400,"app_key":"k","customer_email":"a","customer_password":"b"}"#.to_vec()),
        (UPDATE, "application/json", format!(r#"{{"user_code":396,"app_key":"{APP_KEY}","customer_box_id":{huge},"customer_key":"k","customer_email":"a","customer_new_password":"b"}}"#).into_bytes()),
        (UPDATE, "application/json", format!(r#"{{"user_code":396,"app_key":"{APP_KEY}","customer_box_id":-1,"customer_key":"k","customer_email":"a","customer_new_password":"b"}}"#).into_bytes()),
        (SKYERP, "application/json", b"{\"email\":\"\xc3\x28@b.co\"}".to_vec()),
        (SKYERP, "application/x-www-form-urlencoded", b"email=%ff%fe".to_vec()),
        (SKYERP, "application/json", format!(r#"{{"email":{huge}}}"#).into_bytes()),
        (ASPNET, "application/json", format!(r#"{{"UserName":"396","Salt":{huge},"Digest":"d","User":{{"UserName":"a","Email":"a","Key":"k"}},"UserNewPassword":"p"}}"#).into_bytes()),
        (ASPNET, "application/json", b"{\"UserName\":\"\xff\",\"Salt\":123456789}".to_vec()),
        (ASPNET, "application/xml", b"<ChangePasswordRequest UserName=\"\xff\" Salt=\"1\" Digest=\"d\"/>".to_vec()),
        (ASPNET, "application/x-www-form-urlencoded", format!("UserName=396&Salt={huge}&Digest=d").into_bytes()),
    ];
    for (path, ct, body) in bodies {
        let before = env.snapshot();
        let r = env.send(post(path, ct, body.clone()));
        let what = format!("{path} {ct} {}", String::from_utf8_lossy(&body));
        assert!(
            (200..500).contains(&r.status) && r.status != 201,
            "{what}: {} {}",
            r.status,
            text(&r)
        );
        assert!(env.snapshot() == before, "{what} changed the store");
        // Skypostal and ASP.NET refusals are 200/400 with their own shape.
        if path == ASPNET {
            assert!(!aspnet_message(&r).0, "{what}");
        } else if path == LOGIN || path == UPDATE {
            assert!(!skypostal(&r).0, "{what}");
        } else {
            assert_eq!(json(&r)["success"], false, "{what}");
        }
    }
    for body in [
        b"{\"data\":{\"type\":\"customer_password_resets\",\"attributes\":{\"customer_email\":\"\xff\"}}}".to_vec(),
        br#"{"data":{"type":"customer_password_resets","attributes":{"customer_email":"a@b.co","metadata":{"n":1e400}}}}"#.to_vec(),
    ] {
        let before = env.snapshot();
        let r = env.send(
            Request::new("POST", RESETS)
                .header("Authorization", format!("Bearer {APP_KEY}"))
                .header("Content-Type", JSONAPI)
                .body(body),
        );
        assert!((400..500).contains(&r.status), "{} {}", r.status, text(&r));
        assert!(json(&r)["errors"][0]["status"].is_string());
        assert!(env.snapshot() == before);
    }
    // A token that is not UTF-8, in the path.
    let r = env.send(Request::new("GET", format!("{SKYERP}/%FF%FE")));
    assert_eq!(json(&r)["success"], false);
}

/// SPEC §5.8 end to end: a password set through one format in one Unicode
/// form logs in through another in its NFKC twin (the ligature "ﬁ" and
/// "fi", a full-width digit and an ASCII one).
#[test]
fn nfkc_twins_are_one_password_across_formats() {
    let env = env();
    let r = env.send(cl_create(EMAIL));
    let token = json(&r)["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Set through the SkyERP PUT in the composed form...
    let r = env.send(skyerp_put(EMAIL, "ﬁne-password-１", &token));
    assert_eq!(json(&r)["success"], true, "{}", text(&r));
    // ...and log in through Skypostal with the spelled-out twin.
    let r = env.send(login(APP_KEY, "fine-password-1"));
    assert!(skypostal(&r).0, "{}", text(&r));
    let r = env.send(login(APP_KEY, "ﬁne-password-１"));
    assert!(skypostal(&r).0);
    let r = env.send(login(APP_KEY, "fine-password-2"));
    assert_eq!(skypostal(&r), (false, "customer_password".to_owned()));
    // The ASP.NET change in the twin form, then the Skypostal update back.
    let r = env.send(signed(
        444_444_444,
        CUSTOMER_KEY,
        "ｐａｓｓ-word-99",
        "ｐａｓｓ-word-99",
    ));
    assert_eq!(aspnet_message(&r), (true, "Password changed".to_owned()));
    assert!(env.password_is("pass-word-99"));
}

/// SPEC §5.3 through the Commerce Layer route on the WAL path: sixteen
/// PATCHes with the same token at once: exactly one 200, the rest 422.
#[test]
fn sixteen_concurrent_patches_with_one_token_have_one_winner() {
    let env = std::sync::Arc::new(env());
    let r = env.send(cl_create(EMAIL));
    let v = json(&r);
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let token = v["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (env, barrier, id, token) =
                (env.clone(), barrier.clone(), id.clone(), token.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = env.send(cl_patch(
                    &id,
                    json!({"customer_password": format!("winner-password-{i}"),
                           "_reset_password_token": token}),
                ));
                (i, r.status)
            })
        })
        .collect();
    let results: Vec<(usize, u16)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|(_, s)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results.iter().all(|(_, s)| *s == 200 || *s == 422),
        "{results:?}"
    );
    assert!(env.password_is(&format!("winner-password-{}", winners[0].0)));
    assert!(env.store().check_integrity().unwrap().is_sound());
}
