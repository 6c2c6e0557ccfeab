//! SkyERP reset-password flow (seed 002): Laravel-style envelopes
//! `{status, success, locale, message, data}`, JSON or form bodies, `_method`
//! spoofing, Laravel validation messages in Spanish (English when the
//! request's `Accept-Language` prefers it).
//!
//! The POST never tells whether an email is known: unknown and throttled
//! requests get the answer of a granted one, after the same single durable
//! commit. It queues the reset mail in the transaction that issues the
//! reset and answers at once: a [`crate::mail::Courier`] delivers it.

mod body;
mod messages;

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

pub use body::{
    Body, BodyFormat, DecodeError, Field, decode, decode_form, decode_json, encode_json,
};
pub use messages::Lang;

use super::{Refusal, Response, to_json};
use crate::error::{Error, PolicyViolation};
use crate::model::{Email, MailRequest, Password, ResetDetails, parse_token};
use crate::ops::Store;
use messages::{Msg, Rule};

const CONTENT_TYPE: &str = "application/json";

/// Settings of the SkyERP codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkyErpSettings {
    /// Where reset links point. With `{token}` (and optionally `{shop}`) in
    /// it, those are substituted; otherwise the link is
    /// `<base>/api/v1/<shop>/customers/reset-password/<token>`. The links
    /// themselves are made when the mail is delivered, from
    /// [`crate::mail::CourierSettings::reset_link_base`]: give both the
    /// same base.
    pub reset_link_base: String,
}

impl Default for SkyErpSettings {
    fn default() -> Self {
        Self {
            reset_link_base: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

impl SkyErpSettings {
    /// The link for a token of a shop (see [`crate::mail::reset_link`]).
    pub fn reset_link(&self, shop: &str, token: &str) -> String {
        crate::mail::reset_link(&self.reset_link_base, shop, token)
    }
}

/// The operation a call asks for, after method spoofing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Request,
    Check,
    Update,
}

/// One SkyERP call, as the gateway hands it over. `Debug` shows neither the
/// token segment nor the body.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// `X-HTTP-Method-Override`, if sent.
    pub method_override: Option<&'a str>,
    /// The `{shopKey}` path segment.
    pub shop: &'a str,
    /// The `{token}` path segment, if any.
    pub token: Option<&'a str>,
    /// The answer's language.
    pub lang: Lang,
    /// The body's format; `None` when there is no body to read.
    pub format: Option<BodyFormat>,
    /// The body.
    pub body: &'a [u8],
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("method_override", &self.method_override)
            .field("shop", &self.shop)
            .field("token", &self.token.map(|_| "[redacted]"))
            .field("lang", &self.lang)
            .field("format", &self.format)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The operation a method names, on a path with or without a token
/// segment; `None` for 405. A POST's `_method` (or override header) of
/// `PUT`/`PATCH` makes it a PUT.
fn operation(method: &str, spoofed: Option<&str>, has_token: bool) -> Option<Op> {
    let effective = match (method, spoofed) {
        ("POST", Some(m)) => m.trim().to_ascii_uppercase(),
        (m, _) => m.to_owned(),
    };
    match (effective.as_str(), has_token) {
        ("POST", false) => Some(Op::Request),
        ("GET", true) => Some(Op::Check),
        ("PUT" | "PATCH", _) => Some(Op::Update),
        _ => None,
    }
}

/// The methods a path accepts (for `Allow`).
pub fn allowed_methods(has_token: bool) -> &'static str {
    if has_token {
        "GET, PUT, POST"
    } else {
        "POST, PUT"
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    status: u16,
    success: bool,
    locale: &'static str,
    message: &'a str,
    data: Value,
}

fn envelope(status: u16, success: bool, lang: Lang, msg: Msg, data: Value) -> Response {
    let body = to_json(&Envelope {
        status,
        success,
        locale: lang.locale(),
        message: msg.text(lang),
        data,
    });
    Response::new(status, CONTENT_TYPE, body)
}

/// Laravel's `data.errors`: field → messages, in field order.
type Errors = Vec<(&'static str, String)>;

fn errors_data(errors: &Errors) -> Value {
    let mut m = Map::new();
    for (field, message) in errors {
        m.insert((*field).to_owned(), json!([message]));
    }
    json!({ "errors": m })
}

/// Everything that ends a call other than its documented answers.
#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    UnknownShop,
    Decode(Op),
    Invalid(Op, Errors),
    /// An internal fault: logged, its text stays inside.
    Fault(Error),
}

/// The one mapping from failures to SkyERP statuses and messages.
fn failure_response(lang: Lang, failure: Failure) -> Response {
    let invalid = |op| match op {
        Op::Update => Msg::InvalidUpdate,
        _ => Msg::InvalidRequest,
    };
    match failure {
        Failure::Refused(r) => {
            let msg = match r {
                Refusal::TooLarge => Msg::TooLarge,
                Refusal::UnsupportedMediaType => Msg::UnsupportedMediaType,
                Refusal::MethodNotAllowed => Msg::MethodNotAllowed,
            };
            envelope(r.status(), false, lang, msg, Value::Null)
        }
        Failure::UnknownShop => envelope(404, false, lang, Msg::ShopNotFound, Value::Null),
        Failure::Decode(op) => {
            let errors = vec![("body", Rule::Body.text(lang, "body", 0))];
            envelope(400, false, lang, invalid(op), errors_data(&errors))
        }
        Failure::Invalid(op, errors) => {
            envelope(400, false, lang, invalid(op), errors_data(&errors))
        }
        Failure::Fault(e) => {
            super::log_fault("skyerp", &e);
            envelope(500, false, lang, Msg::Internal, Value::Null)
        }
    }
}

/// The answer to a request the transport refused, in this format's shape.
pub fn refuse(refusal: Refusal, lang: Lang) -> Response {
    failure_response(lang, Failure::Refused(refusal))
}

/// Handles one call on `/api/v1/{shop}/customers/reset-password[/{token}]`.
pub fn handle(store: &Store, call: &Call<'_>) -> Response {
    let lang = call.lang;
    match store.app_by_shop(call.shop) {
        Ok(_) => {}
        Err(Error::NotFound(_)) => return failure_response(lang, Failure::UnknownShop),
        Err(e) if e.is_fault() => return failure_response(lang, Failure::Fault(e)),
        Err(_) => return failure_response(lang, Failure::UnknownShop),
    }
    let body = match decode(call.format, call.body) {
        Ok(b) => b,
        Err(_) => {
            // Which form the broken body was for is unknowable; a POST is a
            // reset request unless the path says otherwise.
            let op = if call.token.is_some() || call.method != "POST" {
                Op::Update
            } else {
                Op::Request
            };
            return failure_response(lang, Failure::Decode(op));
        }
    };
    let spoofed = body.method.as_deref().or(call.method_override);
    match operation(call.method, spoofed, call.token.is_some()) {
        Some(Op::Request) => request_reset(store, call.shop, lang, &body),
        Some(Op::Check) => check_token(store, lang, call.token.unwrap_or_default()),
        Some(Op::Update) => update_password(store, lang, &body, call.token),
        None => failure_response(lang, Failure::Refused(Refusal::MethodNotAllowed)),
    }
}

/// `email`: required, a string, an address. Returns it as sent.
fn validate_email(body: &Body, lang: Lang, errors: &mut Errors) -> Option<String> {
    let rule = match &body.email {
        None => Rule::Required,
        Some(Field::NotText) => Rule::String,
        Some(Field::Text(s)) if Email::parse(s).is_err() => Rule::Email,
        Some(Field::Text(s)) => return Some(s.clone()),
    };
    errors.push(("email", rule.text(lang, "email", 0)));
    None
}

fn request_reset(store: &Store, shop: &str, lang: Lang, body: &Body) -> Response {
    let mut errors = Errors::new();
    let Some(email) = validate_email(body, lang, &mut errors) else {
        return failure_response(lang, Failure::Invalid(Op::Request, errors));
    };
    let mail = MailRequest {
        lang,
        shop: shop.to_owned(),
    };
    match store.request_reset_by_mail(&email, ResetDetails::default(), &mail) {
        // Queued with its reset; the courier delivers it.
        Ok(_) => {}
        Err(e) if e.is_fault() => {
            // Neither the reset nor its mail exists (a failed write changes
            // nothing): the mail could not be queued. Answered alike for
            // every email, since an unknown one fails the same way.
            super::log_fault("skyerp", &e);
            return envelope(200, false, lang, Msg::SendFailed, json!({ "email": email }));
        }
        // Unknown, throttled, or any other refusal: the answer of a granted
        // request, so that nobody learns which emails exist.
        Err(_) => {}
    }
    envelope(200, true, lang, Msg::Sent, json!({ "email": email }))
}

fn check_token(store: &Store, lang: Lang, token: &str) -> Response {
    let invalid = || {
        envelope(
            200,
            false,
            lang,
            Msg::TokenInvalid,
            json!({ "email": null }),
        )
    };
    let Ok(token) = parse_token(token.as_bytes()) else {
        return invalid();
    };
    match store.check_reset_token(&token) {
        Ok(valid) => envelope(
            200,
            true,
            lang,
            Msg::TokenValid,
            json!({ "email": valid.email }),
        ),
        Err(e) if e.is_fault() => failure_response(lang, Failure::Fault(e)),
        Err(_) => invalid(),
    }
}

fn policy_rule(v: PolicyViolation) -> (Rule, usize) {
    match v {
        PolicyViolation::TooShort { min } => (Rule::Min, min),
        PolicyViolation::TooLong { max } => (Rule::Max, max),
        _ => (Rule::Invalid, 0),
    }
}

fn update_password(store: &Store, lang: Lang, body: &Body, path_token: Option<&str>) -> Response {
    let policy = store.config().password_policy();
    let mut errors = Errors::new();
    let email = validate_email(body, lang, &mut errors);
    let password = match &body.password {
        None => {
            errors.push(("password", Rule::Required.text(lang, "password", 0)));
            None
        }
        Some(Field::NotText) => {
            errors.push(("password", Rule::String.text(lang, "password", 0)));
            None
        }
        Some(Field::Text(p)) => {
            let n = p.expose_secret().chars().count();
            if n < policy.min_chars {
                errors.push((
                    "password",
                    Rule::Min.text(lang, "password", policy.min_chars),
                ));
                None
            } else if n > policy.max_chars {
                errors.push((
                    "password",
                    Rule::Max.text(lang, "password", policy.max_chars),
                ));
                None
            } else {
                Some(p)
            }
        }
    };
    let same = matches!((&body.password, &body.password2),
        (Some(Field::Text(a)), Some(Field::Text(b))) if a == b);
    if !same {
        errors.push(("password2", Rule::Same.text(lang, "password2", 0)));
    }
    let body_token = match &body.token {
        Some(Field::Text(t)) => Some(t.expose_secret()),
        _ => None,
    };
    let token = match (path_token, body_token) {
        (Some(p), Some(b)) if p != b => Some(""), // two different tokens: neither is trusted
        (Some(p), _) => Some(p),
        (None, b) => b,
    };
    if token.is_none() {
        errors.push(("token", Rule::Required.text(lang, "token", 0)));
    }
    // The checks above look at the fields alone.
    let (Some(email), Some(password), Some(token), true) =
        (email, password, token, errors.is_empty())
    else {
        return failure_response(lang, Failure::Invalid(Op::Update, errors));
    };
    let Ok(password) = Password::new(password.expose_secret()) else {
        let errors = vec![(
            "password",
            Rule::Max.text(lang, "password", policy.max_chars),
        )];
        return failure_response(lang, Failure::Invalid(Op::Update, errors));
    };

    // Then the pair (email, token): an unknown email and a known one whose
    // token is malformed, unknown, expired, used or another's get the same
    // answer (Laravel's `exists` message), byte for byte and after the same
    // work (one token lookup; no hashing before the token verified), so the
    // PUT tells nobody which emails exist.
    let no_such_pair = || {
        let errors = vec![("email", Rule::Exists.text(lang, "email", 0))];
        failure_response(lang, Failure::Invalid(Op::Update, errors))
    };
    let Ok(token) = parse_token(token.as_bytes()) else {
        return no_such_pair();
    };
    match store.reset_password(&token, Some(&email), &password) {
        Ok(_) => envelope(200, true, lang, Msg::Changed, json!({ "email": email })),
        Err(Error::Policy(v)) => {
            let (rule, n) = policy_rule(v);
            let errors = vec![("password", rule.text(lang, "password", n))];
            failure_response(lang, Failure::Invalid(Op::Update, errors))
        }
        Err(e) if e.is_fault() => failure_response(lang, Failure::Fault(e)),
        // The token verified, but a concurrent reset or rotation won.
        Err(Error::Conflict) => envelope(
            200,
            false,
            lang,
            Msg::ChangeFailed,
            json!({ "email": email }),
        ),
        Err(_) => no_such_pair(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_and_forms_alike() {
        let j = decode_json(br#"{"_method":"PUT","email":"foo@example.com","password":"asasasasasasas","password2":"asasasasasasas"}"#).unwrap();
        let f = decode_form(
            b"_method=PUT&email=foo%40example.com&password=asasasasasasas&password2=asasasasasasas",
        )
        .unwrap();
        assert_eq!(j, f);
        assert_eq!(j.method.as_deref(), Some("PUT"));
        assert_eq!(decode_json(&encode_json(&j)).unwrap(), j);
        let odd = decode_json(br#"{"email":5,"password":"","token":null,"_method":1}"#).unwrap();
        assert_eq!(odd.email, Some(Field::NotText));
        assert!(odd.password.is_none() && odd.token.is_none() && odd.method.is_none());
        assert_eq!(decode_json(&encode_json(&odd)).unwrap(), odd);
        // the seed's trailing commas are documentation artefacts
        assert!(matches!(
            decode_json(b"{\"_method\": \"POST\", \"email\": \"foo@example.com\",}"),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(
            decode_form(b"email=a&email=b"),
            Err(DecodeError::Duplicate("email".into()))
        );
    }

    #[test]
    fn method_spoofing() {
        assert_eq!(operation("POST", None, false), Some(Op::Request));
        assert_eq!(operation("POST", Some("POST"), false), Some(Op::Request));
        assert_eq!(operation("POST", Some("put"), false), Some(Op::Update));
        assert_eq!(operation("POST", Some("PUT"), true), Some(Op::Update));
        assert_eq!(operation("PUT", None, true), Some(Op::Update));
        assert_eq!(operation("PUT", Some("POST"), false), Some(Op::Update));
        assert_eq!(operation("GET", None, true), Some(Op::Check));
        assert_eq!(operation("GET", None, false), None);
        assert_eq!(operation("POST", None, true), None);
        assert_eq!(operation("POST", Some("DELETE"), false), None);
    }

    #[test]
    fn reset_links() {
        let s = SkyErpSettings {
            reset_link_base: "http://skyerp.local/".into(),
        };
        assert_eq!(
            s.reset_link("acme12aa", "TOK"),
            "http://skyerp.local/api/v1/acme12aa/customers/reset-password/TOK"
        );
        let s = SkyErpSettings {
            reset_link_base: "https://shop.example/{shop}/reset?t={token}".into(),
        };
        assert_eq!(
            s.reset_link("acme12aa", "TOK"),
            "https://shop.example/acme12aa/reset?t=TOK"
        );
    }
}
