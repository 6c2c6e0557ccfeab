//! Skypostal customer service (seeds 000, 001): WCF-style JSON.
//!
//! Every answer is a JSON array of exactly one object with every documented
//! member present; on failure numbers are 0, strings and dates null, booleans
//! false, `_verify` false, and `error` names the field at fault. Handled
//! outcomes are HTTP 200, undecodable bodies 400, internal faults 500.

mod request;

use serde::Serialize;

use super::wcf_date::{WcfDate, WcfOffset};
use super::{Refusal, Response, to_json};
use crate::error::{Credential, Error, InputError};
use crate::model::{AppKey, BoxId, CustomerKey, Login, Password};
use crate::ops::Store;

pub use request::{
    DecodeError, LoginRequest, Problem, UpdatePasswordRequest, decode_login,
    decode_update_password, encode_login, encode_update_password,
};

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Settings of the Skypostal codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkypostalSettings {
    /// The zone written in `/Date(ms±hhmm)/` values (display only; the
    /// milliseconds are UTC). `None` writes none, as .NET does for UTC.
    pub display_offset: Option<WcfOffset>,
}

/// The two Skypostal routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `customer-registration` (which seed 001 documents as a login) and
    /// `customer-login`.
    Login,
    /// `customer-update-password`.
    UpdatePassword,
}

/// Everything that can end a request other than success.
#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    Decode(DecodeError),
    Store(Error),
}

/// One answer's status and `error` members.
struct Verdict {
    status: u16,
    location: &'static str,
    description: String,
    system_error: bool,
}

/// The one mapping from failures to Skypostal statuses, locations and texts.
fn verdict(route: Route, failure: &Failure) -> Verdict {
    let handled = |location, description: &str| Verdict {
        status: 200,
        location,
        description: description.to_owned(),
        system_error: false,
    };
    match failure {
        Failure::Refused(r) => {
            let (location, description) = match r {
                Refusal::TooLarge => ("body", "the request body is larger than 65536 bytes"),
                Refusal::UnsupportedMediaType => {
                    ("body", "unsupported content type; send application/json")
                }
                Refusal::MethodNotAllowed => ("method", "this endpoint accepts POST only"),
            };
            Verdict {
                status: r.status(),
                ..handled(location, description)
            }
        }
        Failure::Decode(e) => Verdict {
            status: 400,
            ..handled(e.field, &e.to_string())
        },
        Failure::Store(e) if e.is_fault() => {
            super::log_fault("skypostal", e);
            Verdict {
                status: 500,
                location: "server",
                description: "internal error; try again later".to_owned(),
                system_error: true,
            }
        }
        Failure::Store(e) => match (route, e) {
            (_, Error::InvalidCredentials(Credential::App)) => {
                handled("app_key", "invalid user_code or app_key")
            }
            (_, Error::InvalidCredentials(Credential::CustomerKey)) => {
                handled("customer_key", "invalid customer_box_id or customer_key")
            }
            (_, Error::InvalidCredentials(Credential::Email)) => handled(
                "customer_email",
                "customer_email is not the account's current email",
            ),
            (_, Error::InvalidCredentials(Credential::Password)) => {
                handled("customer_password", "invalid email or password")
            }
            (_, Error::Locked { .. }) => handled(
                "customer",
                "the account is locked after too many failed logins; try again later",
            ),
            (_, Error::Disabled) => handled("customer", "the account is disabled"),
            (_, Error::MustChangePassword) => {
                handled("customer", "the password must be changed before logging in")
            }
            (_, Error::Policy(v)) => handled(
                "customer_new_password",
                &format!("the new password does not meet the policy: {v}"),
            ),
            (_, Error::Conflict) => handled(
                "customer",
                "the credentials changed concurrently; try again",
            ),
            (Route::Login, _) => handled("customer", "the login was refused"),
            (Route::UpdatePassword, _) => handled("customer", "the password update was refused"),
        },
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error_description: String,
    error_location: &'static str,
    system_error: bool,
}

impl ErrorBody {
    fn none() -> Self {
        Self {
            error_description: String::new(),
            error_location: "",
            system_error: false,
        }
    }
}

#[derive(Serialize)]
struct LoginBody<'a> {
    #[serde(rename = "_verify")]
    verify: bool,
    activation_date: Option<String>,
    customer_box_id: BoxId,
    customer_first_name: Option<&'a str>,
    customer_key: Option<&'a str>,
    customer_last_name: Option<&'a str>,
    enrolment_date: Option<String>,
    error: ErrorBody,
    is_active: bool,
    is_business: bool,
    is_enable: bool,
    is_vip: bool,
}

#[derive(Serialize)]
struct UpdateBody {
    #[serde(rename = "_verify")]
    verify: bool,
    error: ErrorBody,
    updated_rows: u32,
}

fn failure_response(route: Route, failure: &Failure) -> Response {
    let v = verdict(route, failure);
    let error = ErrorBody {
        error_description: v.description,
        error_location: v.location,
        system_error: v.system_error,
    };
    let body = match route {
        Route::Login => to_json(&[LoginBody {
            verify: false,
            activation_date: None,
            customer_box_id: 0,
            customer_first_name: None,
            customer_key: None,
            customer_last_name: None,
            enrolment_date: None,
            error,
            is_active: false,
            is_business: false,
            is_enable: false,
            is_vip: false,
        }]),
        Route::UpdatePassword => to_json(&[UpdateBody {
            verify: false,
            error,
            updated_rows: 0,
        }]),
    };
    Response::new(v.status, CONTENT_TYPE, body)
}

/// The answer to a request the transport refused, in this format's shape.
pub fn refuse(route: Route, refusal: Refusal) -> Response {
    failure_response(route, &Failure::Refused(refusal))
}

fn run_login(store: &Store, req: &LoginRequest) -> Result<Login, Error> {
    let app_key = AppKey::new(req.app_key.expose_secret())
        .map_err(|_| Error::InvalidCredentials(Credential::App))?;
    store.authenticate_app(req.user_code, &app_key)?;
    let password = Password::new(req.customer_password.expose_secret())
        .map_err(|_| Error::InvalidCredentials(Credential::Password))?;
    match store.login(&req.customer_email, &password) {
        // A malformed email gets the same answer as a wrong one.
        Err(Error::InvalidInput(
            InputError::EmptyEmail | InputError::EmailTooLong { .. } | InputError::MalformedEmail,
        )) => Err(Error::InvalidCredentials(Credential::Password)),
        other => other,
    }
}

/// Handles a login body (seed 001).
pub fn login(store: &Store, settings: &SkypostalSettings, body: &[u8]) -> Response {
    let result = decode_login(body)
        .map_err(Failure::Decode)
        .and_then(|req| run_login(store, &req).map_err(Failure::Store));
    let login = match result {
        Ok(login) => login,
        Err(f) => return failure_response(Route::Login, &f),
    };
    let c = &login.customer;
    let date = |t| WcfDate::new(t, settings.display_offset).encode();
    let body = to_json(&[LoginBody {
        verify: true,
        activation_date: c.activation_date.map(date),
        customer_box_id: c.box_id,
        customer_first_name: Some(&c.first_name),
        customer_key: Some(login.key.expose_secret()),
        customer_last_name: Some(&c.last_name),
        enrolment_date: Some(date(c.enrolment_date)),
        error: ErrorBody::none(),
        is_active: c.flags.is_active,
        is_business: c.flags.is_business,
        is_enable: c.flags.is_enable,
        is_vip: c.flags.is_vip,
    }]);
    Response::new(200, CONTENT_TYPE, body)
}

fn run_update(store: &Store, req: &UpdatePasswordRequest) -> Result<(), Error> {
    let app_key = AppKey::new(req.app_key.expose_secret())
        .map_err(|_| Error::InvalidCredentials(Credential::App))?;
    store.authenticate_app(req.user_code, &app_key)?;
    let key = CustomerKey::new(req.customer_key.expose_secret())
        .map_err(|_| Error::InvalidCredentials(Credential::CustomerKey))?;
    let max = store.config().password_policy().max_chars;
    let password = Password::new(req.customer_new_password.expose_secret())
        .map_err(|_| Error::Policy(crate::error::PolicyViolation::TooLong { max }))?;
    store
        .update_password(req.customer_box_id, &key, &req.customer_email, &password)
        .map(|_| ())
}

/// Handles an update-password body (seed 000).
pub fn update_password(store: &Store, body: &[u8]) -> Response {
    let result = decode_update_password(body)
        .map_err(Failure::Decode)
        .and_then(|req| run_update(store, &req).map_err(Failure::Store));
    match result {
        Ok(()) => Response::new(
            200,
            CONTENT_TYPE,
            to_json(&[UpdateBody {
                verify: true,
                error: ErrorBody::none(),
                updated_rows: 1,
            }]),
        ),
        Err(f) => failure_response(Route::UpdatePassword, &f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_000: &str = r#"{
	"user_code":396,
	"app_key":"1656d700707ad9a77f737e5df3db088a",
    "customer_box_id": 811111,
    "customer_key": "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=",
	"customer_email":"johndoe@email.com",
	"customer_new_password":"pass12345"
}"#;

    #[test]
    fn decodes_the_seed_and_round_trips() {
        let r = decode_update_password(SEED_000.as_bytes()).unwrap();
        assert_eq!(r.user_code, 396);
        assert_eq!(r.customer_box_id, 811111);
        assert_eq!(r.customer_email, "johndoe@email.com");
        assert_eq!(r.customer_new_password.expose_secret(), "pass12345");
        assert_eq!(
            decode_update_password(&encode_update_password(&r)).unwrap(),
            r
        );
        assert!(!format!("{r:?}").contains("pass12345"));
    }

    #[test]
    fn names_the_field_at_fault() {
        let e = decode_login(br#"{"user_code":"396"}"#).unwrap_err();
        assert_eq!(e.field, "user_code");
        assert_eq!(
            e.to_string(),
            "user_code must be an integer from 0 to 4294967295"
        );
        let e =
            decode_login(br#"{"user_code":396,"app_key":"k","customer_email":null}"#).unwrap_err();
        assert_eq!((e.field, e.problem), ("customer_email", Problem::Missing));
        let e = decode_login(b"[1]").unwrap_err();
        assert_eq!((e.field, e.problem), ("body", Problem::NotAnObject));
        let e = decode_login(b"{").unwrap_err();
        assert_eq!(e.field, "body");
        let e = decode_update_password(br#"{"user_code":1,"app_key":"k","customer_box_id":-1}"#)
            .unwrap_err();
        assert_eq!(e.field, "customer_box_id");
        let e = decode_login(br#"{"user_code":4294967296}"#).unwrap_err();
        assert_eq!(e.field, "user_code");
    }

    #[test]
    fn faults_say_nothing_internal() {
        let fault = Failure::Store(Error::CorruptRecord {
            tree: "customers",
            key: "secret-looking".into(),
        });
        let v = verdict(Route::Login, &fault);
        assert_eq!((v.status, v.system_error), (500, true));
        assert!(!v.description.contains("customers") && !v.description.contains("secret"));
    }
}
