//! SkyERP (seed 002) through the gateway.

use std::time::Duration;

use credstore::{Request, Response};
use serde_json::{Value, json};

use crate::common::*;
// The suite's backend (tests/codecs.rs includes this file once per backend).
use super::env;

const BASE: &str = "/api/v1/acme12aa/customers/reset-password";

/// Seed 002's example token (64 characters, unknown to the store).
const SEED_TOKEN: &str = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";

/// Seed 002's POST payload, with its documentation-artefact trailing comma
/// removed (strict JSON).
const SEED_POST: &str = r#"{
        "_method": "POST",
        "email": "foo@example.com"
    }"#;

/// Seed 002's PUT payload (trailing comma and comment removed); the token is
/// added by the tests.
const SEED_PUT: &str = r#"{
        "_method": "PUT",
        "email": "foo@example.com",
        "password": "asasasasasasas",
        "password2": "asasasasasasas"
    }"#;

fn seed_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn request_for(env: &Env, email: &str) -> Response {
    let body = SEED_POST.replace("foo@example.com", email);
    env.send(post(BASE, "application/json", body))
}

/// Requests a reset for the demo customer, delivers the queue; returns
/// the mailed token.
fn mailed_token(env: &Env) -> String {
    let before = env.mailer.count();
    let r = request_for(env, EMAIL);
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(env.deliver().delivered, 1);
    assert_eq!(env.mailer.count(), before + 1, "one mail sent");
    env.mailer
        .last()
        .unwrap()
        .token()
        .expose_secret()
        .to_owned()
}

fn put_body(email: &str, password: &str, password2: &str, token: Option<&str>) -> String {
    let mut v =
        json!({"_method": "PUT", "email": email, "password": password, "password2": password2});
    if let Some(t) = token {
        v["token"] = json!(t);
    }
    v.to_string()
}

fn put(env: &Env, body: &str) -> Response {
    env.send(
        Request::new("PUT", BASE)
            .header("Content-Type", "application/json")
            .body(body),
    )
}

fn envelope(r: &Response, status: u16, success: bool, message: &str) -> Value {
    let v = json(r);
    assert_eq!(r.status, status, "{v}");
    assert_eq!(v["status"], status);
    assert_eq!(v["success"], success);
    assert_eq!(v["locale"], "es");
    assert_eq!(v["message"], message);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["data", "locale", "message", "status", "success"]);
    v["data"].clone()
}

fn validation(r: &Response) -> Value {
    envelope(
        r,
        400,
        false,
        "Datos no válidos para guardar la nueva contraseña",
    )["errors"]
        .clone()
}

#[test]
fn seed_post_answers_as_documented_and_mails_the_token() {
    let env = env();
    let r = request_for(&env, EMAIL);
    let want = seed_value(
        r#"{"status":200,"success":true,"locale":"es",
            "message":"Enviado email para restablecer la clave de acceso",
            "data":{"email":"johndoe@email.com"}}"#,
    );
    assert_eq!(json(&r), want);
    // Answered from the queue: nothing was sent on the request's path.
    assert_eq!(env.mailer.count(), 0);
    let queued = env.store().mail_queue(10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (
            queued[0].to.as_str(),
            queued[0].shop.as_str(),
            queued[0].lang
        ),
        (EMAIL, "acme12aa", credstore::Lang::Es)
    );
    assert_eq!(env.deliver().delivered, 1);
    assert_eq!(env.store().mail_queue_summary().unwrap().queued, 0);
    let mail = env.mailer.last().expect("a mail");
    assert_eq!(mail.reset_id(), queued[0].reset_id);
    assert_eq!(mail.lang(), credstore::Lang::Es);
    assert_eq!(mail.to(), EMAIL);
    assert_eq!(mail.token().expose_secret().len(), 64);
    assert_eq!(mail.reset_id().len(), 10);
    assert_eq!(mail.expires_at().as_millis(), START + 60 * 60 * 1000);
    assert_eq!(
        mail.link_exposing_token(),
        format!(
            "http://127.0.0.1:8080/api/v1/acme12aa/customers/reset-password/{}",
            mail.token().expose_secret()
        )
    );
    assert!(!format!("{mail:?}").contains(mail.token().expose_secret()));
}

#[test]
fn the_post_does_not_tell_which_emails_exist() {
    let env = env();
    let known = request_for(&env, EMAIL);
    let throttled = request_for(&env, EMAIL);
    env.deliver();
    assert_eq!(env.mailer.count(), 1, "the throttled request sends nothing");
    let unknown = request_for(&env, "foo@example.com");
    env.deliver();
    assert_eq!(env.mailer.count(), 1);
    // identical apart from the echoed address
    let norm = |r: &Response, email: &str| text(r).replace(email, "EMAIL");
    assert_eq!(norm(&known, EMAIL), norm(&unknown, "foo@example.com"));
    assert_eq!(known.body, throttled.body);
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.headers, unknown.headers);
    // the seed's verbatim example address is unknown, and answered the same
    let r = env.send(post(BASE, "application/json", SEED_POST));
    assert_eq!(json(&r)["success"], true);
    assert_eq!(json(&r)["data"]["email"], "foo@example.com");
    // Each request, granted or not, cost one durable write (one event):
    // the same bookkeeping, so the same time (SPEC §5.7).
    let before = env.event_count();
    request_for(&env, EMAIL);
    assert_eq!(env.event_count(), before + 1, "throttled");
    request_for(&env, "nobody@example.com");
    assert_eq!(env.event_count(), before + 2, "unknown");
}

/// The mailer-failure message now means "could not be queued": the
/// issuing transaction failed, so neither the reset nor its mail exists.
#[test]
fn a_mail_that_cannot_be_queued_answers_send_failed_and_issues_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let failing = Arc::new(AtomicBool::new(true));
    let fp = {
        let failing = failing.clone();
        credstore::FailPoint::new(move |name| {
            name == "mail:enqueue" && failing.load(Ordering::SeqCst)
        })
    };
    let clock = credstore::ManualClock::new(credstore::Timestamp(START));
    let store = credstore::Store::temporary(
        &credstore::StoreSecret::from_bytes([7; 32]),
        credstore::Config::for_tests()
            .with_clock(Arc::new(clock.clone()))
            .with_fail_point(fp),
    )
    .unwrap();
    credstore::demo::seed(&store).unwrap();
    let gw = credstore::Gateway::new(store.clone(), credstore::demo::settings());
    let events = store.events(0, 10_000).unwrap().len();
    let r = gw.handle(post(
        BASE,
        "application/json",
        format!(r#"{{"email":"{EMAIL}"}}"#),
    ));
    let want = seed_value(
        r#"{"status":200,"success":false,"locale":"es",
            "message":"Fallo al enviar email para restablecer la clave de acceso",
            "data":{"email":"johndoe@email.com"}}"#,
    );
    assert_eq!(json(&r), want);
    assert_eq!(
        store.events(0, 10_000).unwrap().len(),
        events,
        "nothing written"
    );
    assert_eq!(store.mail_queue_summary().unwrap().queued, 0);
    // No reset was issued, so the next request is not throttled.
    failing.store(false, Ordering::SeqCst);
    let r = gw.handle(post(
        BASE,
        "application/json",
        format!(r#"{{"email":"{EMAIL}"}}"#),
    ));
    assert_eq!(json(&r)["success"], true);
    assert_eq!(store.mail_queue_summary().unwrap().queued, 1);
}

/// A temporary failure keeps the mail queued for a later try (the token
/// still works once delivered); a permanent one drops it and revokes the
/// reset, so the customer may ask again at once.
#[test]
fn failed_deliveries_retry_or_bounce() {
    let env = env();
    env.mailer.set_failing(true);
    let r = request_for(&env, EMAIL);
    assert_eq!(json(&r)["success"], true, "answered before any delivery");
    let report = env.deliver();
    assert_eq!((report.delivered, report.retried), (0, 1));
    let q = env.store().mail_queue(10).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].attempts, 1);
    assert!(q[0].last_error.as_deref().unwrap().contains("set to fail"));
    assert!(q[0].next_attempt_at.as_millis() > START, "backed off");
    // Not due yet: nothing is tried.
    assert_eq!(env.deliver(), credstore::mail::DeliveryReport::default());
    env.mailer.set_failing(false);
    env.advance(Duration::from_secs(6));
    assert_eq!(env.deliver().delivered, 1);
    let token = env
        .mailer
        .last()
        .unwrap()
        .token()
        .expose_secret()
        .to_owned();
    let r = env.send(Request::new("GET", format!("{BASE}/{token}")));
    assert_eq!(json(&r)["success"], true);

    // A permanent failure: dropped, the reset revoked, an event written.
    env.advance(Duration::from_secs(61));
    env.mailer
        .fail_with(Some(credstore::MailError::permanent("550 no such user")));
    request_for(&env, EMAIL);
    let reset_id = env.store().mail_queue(1).unwrap()[0].reset_id.clone();
    assert_eq!(env.deliver().bounced, 1);
    assert_eq!(env.store().mail_queue_summary().unwrap().queued, 0);
    assert!(env.store().reset(&reset_id).is_err(), "revoked");
    let last = env.store().last_events(1).unwrap().pop().unwrap();
    assert_eq!(last.kind, credstore::EventKind::MailBounced);
    // Not throttled: the revoked reset does not count.
    env.mailer.fail_with(None);
    let token = mailed_token(&env);
    assert_eq!(token.len(), 64);
}

#[test]
fn seed_get_answers_as_documented() {
    let env = env();
    let token = mailed_token(&env);
    let r = env.send(Request::new("GET", format!("{BASE}/{token}")));
    let want = seed_value(
        r#"{"locale":"es","message":"Token válido","status":200,"success":true,
            "data":{"email":"johndoe@email.com"}}"#,
    );
    assert_eq!(json(&r), want);
    // the seed's example token is well-formed but unknown
    let r = env.send(Request::new("GET", format!("{BASE}/{SEED_TOKEN}")));
    let invalid = seed_value(
        r#"{"locale":"es","message":"Token inválido (no encontrado o caducado)","status":200,
            "success":false,"data":{"email":null}}"#,
    );
    assert_eq!(json(&r), invalid);
    for bad in ["short", &"a".repeat(65), &format!("{}-", &SEED_TOKEN[..63])] {
        let r = env.send(Request::new("GET", format!("{BASE}/{bad}")));
        assert_eq!(json(&r), invalid, "{bad}");
    }
    // GETs may carry a Content-Type (ignored)
    let r = env
        .send(Request::new("GET", format!("{BASE}/{token}")).header("Content-Type", "text/plain"));
    assert_eq!(json(&r)["success"], true);
}

#[test]
fn seed_put_with_the_token_changes_the_password() {
    let env = env();
    let token = mailed_token(&env);
    let body = SEED_PUT.replace("foo@example.com", EMAIL).replace(
        "\"password2\"",
        &format!("\"token\": \"{token}\", \"password2\""),
    );
    let r = put(&env, &body);
    let want = seed_value(
        r#"{"locale":"es","message":"Contraseña actualizada","status":200,"success":true,
            "data":{"email":"johndoe@email.com"}}"#,
    );
    assert_eq!(json(&r), want);
    assert!(env.password_is("asasasasasasas"));
    // the token is used now
    let r = env.send(Request::new("GET", format!("{BASE}/{token}")));
    assert_eq!(json(&r)["success"], false);
    let r = put(&env, &body);
    assert_eq!(
        validation(&r),
        json!({"email": ["El campo email seleccionado es inválido."]})
    );
}

#[test]
fn put_through_post_method_spoofing_form_and_path_token() {
    let env = env();
    let token = mailed_token(&env);
    let form = format!(
        "_method=PUT&email=johndoe%40email.com&password=form-pass-123&password2=form-pass-123&token={token}"
    );
    let r = env.send(post(BASE, "application/x-www-form-urlencoded", form));
    envelope(&r, 200, true, "Contraseña actualizada");
    assert!(env.password_is("form-pass-123"));

    env.advance(Duration::from_secs(61));
    let token = mailed_token(&env);
    let r = env.send(
        Request::new("PUT", format!("{BASE}/{token}"))
            .header("Content-Type", "application/json")
            .body(put_body(EMAIL, "path-pass-123", "path-pass-123", None)),
    );
    envelope(&r, 200, true, "Contraseña actualizada");
    assert!(env.password_is("path-pass-123"));
}

#[test]
fn validation_errors_are_laravel_shaped() {
    let env = env();
    let token = mailed_token(&env);
    let before = env.event_count();
    let cases: Vec<(String, Value)> = vec![
        (
            json!({"password": "asasasasasasas", "password2": "asasasasasasas", "token": token})
                .to_string(),
            json!({"email": ["El campo email es obligatorio."]}),
        ),
        (
            put_body(
                "not-an-email",
                "asasasasasasas",
                "asasasasasasas",
                Some(&token),
            ),
            json!({"email": ["email no es un correo válido."]}),
        ),
        (
            put_body(
                "nobody@email.com",
                "asasasasasasas",
                "asasasasasasas",
                Some(&token),
            ),
            json!({"email": ["El campo email seleccionado es inválido."]}),
        ),
        (
            put_body(EMAIL, "short", "short", Some(&token)),
            json!({"password": ["password debe contener al menos 8 caracteres."]}),
        ),
        (
            put_body(EMAIL, &"x".repeat(256), &"x".repeat(256), Some(&token)),
            json!({"password": ["password no debe ser mayor que 255 caracteres."]}),
        ),
        (
            put_body(EMAIL, "asasasasasasas", "different-pass", Some(&token)),
            json!({"password2": ["password2 y password deben coincidir."]}),
        ),
        (
            put_body(EMAIL, "asasasasasasas", "asasasasasasas", None),
            json!({"token": ["El campo token es obligatorio."]}),
        ),
        (
            json!({"email": EMAIL, "token": token}).to_string(),
            json!({
                "password": ["El campo password es obligatorio."],
                "password2": ["password2 y password deben coincidir."]
            }),
        ),
    ];
    for (body, errors) in cases {
        assert_eq!(validation(&put(&env, &body)), errors, "{body}");
    }
    assert_eq!(
        env.event_count(),
        before,
        "validation failures write nothing"
    );
    // the token still works
    let r = put(
        &env,
        &put_body(EMAIL, "asasasasasasas", "asasasasasasas", Some(&token)),
    );
    envelope(&r, 200, true, "Contraseña actualizada");
}

/// SPEC §6.2: after the field checks, an unknown email and a known email
/// whose token is malformed, unknown, expired, used or another customer's
/// get the same answer, byte for byte, and nothing changes.
#[test]
fn the_put_does_not_tell_which_emails_exist() {
    let env = env();
    let body = |email: &str, t: &str| put_body(email, "asasasasasasas", "asasasasasasas", Some(t));
    let jane = env
        .store()
        .register(credstore::NewCustomer::new(
            "jane@email.com",
            "Jane",
            "Roe",
            credstore::Password::new("jane-pass-123").unwrap(),
        ))
        .unwrap()
        .0;
    // A used token, an expired one, and one of Jane's.
    let used = mailed_token(&env);
    envelope(
        &put(&env, &body(EMAIL, &used)),
        200,
        true,
        "Contraseña actualizada",
    );
    env.advance(Duration::from_secs(61));
    let expired = mailed_token(&env);
    env.advance(Duration::from_secs(60 * 60 + 1));
    let janes = {
        request_for(&env, "jane@email.com");
        env.deliver();
        env.mailer
            .last()
            .unwrap()
            .token()
            .expose_secret()
            .to_owned()
    };
    let (_, customers) = env.snapshot();
    let events_before = env.event_count();

    let unknown = put(&env, &body("nobody@email.com", SEED_TOKEN));
    let errors = validation(&unknown);
    assert_eq!(
        errors,
        json!({"email": ["El campo email seleccionado es inválido."]})
    );
    let cases = [
        (
            "unknown email, another's live token",
            body("nobody@email.com", &janes),
        ),
        ("malformed token", body(EMAIL, "short")),
        ("unknown token", body(EMAIL, SEED_TOKEN)),
        ("expired token", body(EMAIL, &expired)),
        ("used token", body(EMAIL, &used)),
        ("another customer's token", body(EMAIL, &janes)),
        ("case and spaces", body("  JohnDoe@Email.com ", &janes)),
    ];
    for (what, b) in cases {
        let r = put(&env, &b);
        assert_eq!(
            (r.status, text(&r)),
            (unknown.status, text(&unknown)),
            "{what}"
        );
    }
    // Path and body tokens that disagree: neither is trusted.
    let r = env.send(
        Request::new("PUT", format!("{BASE}/{SEED_TOKEN}"))
            .header("Content-Type", "application/json")
            .body(body(EMAIL, &janes)),
    );
    assert_eq!((r.status, text(&r)), (unknown.status, text(&unknown)));
    assert_eq!(env.event_count(), events_before, "nothing written");
    assert_eq!(env.snapshot().1, customers, "no customer changed");
    // Jane's token still works for Jane.
    envelope(
        &put(&env, &body("jane@email.com", &janes)),
        200,
        true,
        "Contraseña actualizada",
    );
    assert_eq!(
        env.store()
            .customer(jane.box_id)
            .unwrap()
            .credential_version,
        jane.credential_version + 1
    );
}

#[test]
fn english_when_preferred() {
    let env = env();
    let r = env.send(
        post(BASE, "application/json", SEED_POST)
            .header("Accept-Language", "en-US,en;q=0.9,es;q=0.5"),
    );
    let v = json(&r);
    assert_eq!(v["locale"], "en");
    assert_eq!(v["message"], "Password reset email sent");
    let r = env.send(
        Request::new("PUT", BASE)
            .header("Content-Type", "application/json")
            .header("Accept-Language", "en")
            .body(r#"{"password":"asasasasasasas","password2":"asasasasasasas"}"#),
    );
    let v = json(&r);
    assert_eq!(v["locale"], "en");
    assert_eq!(v["message"], "Invalid data to save the new password");
    assert_eq!(
        v["data"]["errors"]["email"],
        json!(["The email field is required."])
    );
    assert_eq!(
        v["data"]["errors"]["token"],
        json!(["The token field is required."])
    );
    let r = env
        .send(post(BASE, "application/json", SEED_POST).header("Accept-Language", "es, en;q=0.9"));
    assert_eq!(json(&r)["locale"], "es");
}

#[test]
fn unknown_shop() {
    let env = env();
    let want = seed_value(
        r#"{"status":404,"success":false,"locale":"es","message":"Tienda no encontrada","data":null}"#,
    );
    let r = env.send(post(
        "/api/v1/nosuchshop/customers/reset-password",
        "application/json",
        SEED_POST,
    ));
    assert_eq!(r.status, 404);
    assert_eq!(json(&r), want);
    let r = env.send(Request::new(
        "GET",
        format!("/api/v1/nosuchshop/customers/reset-password/{SEED_TOKEN}"),
    ));
    assert_eq!(json(&r), want);
    let r = env.send(
        Request::new("GET", "/api/v1/nosuchshop/customers/reset-password/x")
            .header("Accept-Language", "en"),
    );
    assert_eq!(json(&r)["message"], "Shop not found");
    assert_eq!(env.store().mail_queue_summary().unwrap().queued, 0);
    assert_eq!(env.mailer.count(), 0);
}

#[test]
fn malformed_oversized_and_wrong_content_type() {
    let env = env();
    let before = env.event_count();
    let r = env.send(post(BASE, "application/json", "{\"email\": \"a@b.co\",}"));
    let v = json(&r);
    assert_eq!(
        (r.status, &v["success"], &v["status"]),
        (400, &json!(false), &json!(400))
    );
    assert!(v["data"]["errors"]["body"].is_array());
    let r = env.send(post(
        BASE,
        "application/json",
        json!({"email": "not-an-email"}).to_string(),
    ));
    let v = json(&r);
    assert_eq!(r.status, 400);
    assert_eq!(
        v["data"]["errors"]["email"],
        json!(["email no es un correo válido."])
    );
    let r = env.send(post(BASE, "application/json", "{}"));
    assert_eq!(
        json(&r)["data"]["errors"]["email"],
        json!(["El campo email es obligatorio."])
    );

    let big = format!("{{\"email\":\"{}\"}}", "x".repeat(64 * 1024));
    let r = env.send(post(BASE, "application/json", big));
    let v = json(&r);
    assert_eq!(
        (r.status, &v["status"], &v["success"], &v["data"]),
        (413, &json!(413), &json!(false), &Value::Null)
    );
    let r = env.send(post(BASE, "text/plain", SEED_POST));
    let v = json(&r);
    assert_eq!((r.status, &v["status"]), (415, &json!(415)));
    let r = env.send(Request::new("POST", BASE).body(SEED_POST));
    assert_eq!(r.status, 415);
    let r = env.send(Request::new("GET", BASE));
    assert_eq!(r.status, 405);
    assert_eq!(json(&r)["status"], 405);
    assert!(r.header("allow").is_some());
    assert_eq!(env.store().mail_queue_summary().unwrap().queued, 0);
    assert_eq!(env.mailer.count(), 0);
    assert_eq!(env.event_count(), before);
}
