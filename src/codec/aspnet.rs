//! ASP.NET Web API `ChangePassword` (seed 004): a partner app's signed
//! request in JSON, XML or form-urlencoded; a `ChangePasswordResponse` in
//! JSON or XML (SPEC §6.4).
//!
//! JSON member names match case-insensitively (as Json.NET does); XML names
//! are case-sensitive (XmlSerializer), children in any order, unknown nodes
//! ignored, `xsi:nil="true"` is null, a DTD is refused.

mod request;
mod xml;

use serde::Serialize;

use super::{Refusal, Response, media, to_json};
use crate::error::{Credential, Error, InputError};
use crate::ops::Store;

pub use request::{
    ChangePasswordRequest, DecodeError, Problem, User, decode, decode_form, decode_json,
    decode_xml, encode_form, encode_json, encode_xml,
};
use request::{err, parse_salt};
pub use xml::XmlProblem;

/// The namespaces the seed's XML samples declare, echoed in XML answers.
pub const XSD_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema";
/// See [`XSD_NAMESPACE`].
pub const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A request body's format, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `application/json`, `text/json`.
    Json,
    /// `application/xml`, `text/xml`.
    Xml,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl Input {
    /// The format a `Content-Type` names; `None` for any other type (415),
    /// including a charset other than UTF-8.
    pub fn from_content_type(header: &str) -> Option<Self> {
        let ct = media::ContentType::parse(header);
        if !ct.utf8() {
            return None;
        }
        match ct.essence.as_str() {
            "application/json" | "text/json" => Some(Input::Json),
            "application/xml" | "text/xml" => Some(Input::Xml),
            "application/x-www-form-urlencoded" => Some(Input::Form),
            _ => None,
        }
    }
}

/// A response body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `application/json; charset=utf-8`.
    Json,
    /// `application/xml; charset=utf-8`.
    Xml,
}

impl Output {
    /// XML when `Accept` prefers an XML type, or when it names neither (no
    /// header, or only wildcards) and the request was XML; JSON otherwise.
    pub fn negotiate(accept: Option<&str>, input: Option<Input>) -> Self {
        const TYPES: [&str; 4] = [
            "application/xml",
            "text/xml",
            "application/json",
            "text/json",
        ];
        match accept.and_then(|a| media::preferred(a, &TYPES)) {
            Some("application/xml" | "text/xml") => Output::Xml,
            Some(_) => Output::Json,
            None if input == Some(Input::Xml) => Output::Xml,
            None => Output::Json,
        }
    }
}

/// The `ChangePasswordResponse` of seed 004.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangePasswordResponse {
    /// Whether the password changed.
    #[serde(rename = "Success")]
    pub success: bool,
    /// What happened.
    #[serde(rename = "Message")]
    pub message: String,
    /// On success, the customer's box_id.
    #[serde(rename = "Extra1")]
    pub extra1: Option<String>,
    /// Unused (null).
    #[serde(rename = "Extra2")]
    pub extra2: Option<String>,
    /// Unused (null).
    #[serde(rename = "Extra3")]
    pub extra3: Option<String>,
}

impl ChangePasswordResponse {
    fn failure(message: String) -> Self {
        Self {
            success: false,
            message,
            extra1: None,
            extra2: None,
            extra3: None,
        }
    }

    /// The body in the given format.
    pub fn render(&self, output: Output) -> Vec<u8> {
        match output {
            Output::Json => to_json(self),
            Output::Xml => xml::encode_response(self),
        }
    }
}

#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    Decode(DecodeError),
    Store(Error),
}

/// The one mapping from failures to statuses and `Message`s (SPEC §6.4).
fn verdict(failure: &Failure) -> (u16, String) {
    match failure {
        Failure::Refused(Refusal::TooLarge) => (
            413,
            "Malformed request: the body is larger than 65536 bytes".to_owned(),
        ),
        Failure::Refused(Refusal::UnsupportedMediaType) => (
            415,
            "Unsupported content type: send application/json, text/json, application/xml, \
             text/xml or application/x-www-form-urlencoded (UTF-8)"
                .to_owned(),
        ),
        Failure::Refused(Refusal::MethodNotAllowed) => {
            (405, "This endpoint accepts POST only".to_owned())
        }
        Failure::Decode(e) => (400, format!("Malformed request: {e}")),
        Failure::Store(e) if e.is_fault() => {
            super::log_fault("aspnet", e);
            (500, "Internal error; try again later".to_owned())
        }
        Failure::Store(e) => {
            let text = match e {
                Error::InvalidDigest => "Invalid digest".to_owned(),
                Error::ReplayedSalt => "Salt already used".to_owned(),
                Error::InvalidInput(InputError::ShortSalt) => {
                    "Salt must be a number of at least 9 digits".to_owned()
                }
                Error::InvalidCredentials(Credential::App) => "Unknown or disabled app".to_owned(),
                Error::InvalidCredentials(_) => "Invalid customer credentials".to_owned(),
                Error::Disabled => "Customer account is disabled".to_owned(),
                Error::Policy(v) => format!("Password does not meet the policy: {v}"),
                Error::Conflict => {
                    "The credentials changed concurrently; send a new request".to_owned()
                }
                _ => "The request was refused".to_owned(),
            };
            (200, text)
        }
    }
}

fn respond(status: u16, body: &ChangePasswordResponse, output: Output) -> Response {
    let content_type = match output {
        Output::Json => "application/json; charset=utf-8",
        Output::Xml => "application/xml; charset=utf-8",
    };
    Response::new(status, content_type, body.render(output))
}

fn failure_response(failure: &Failure, output: Output) -> Response {
    let (status, message) = verdict(failure);
    respond(status, &ChangePasswordResponse::failure(message), output)
}

/// The answer to a request the transport refused, in this format's shape.
pub fn refuse(refusal: Refusal, output: Output) -> Response {
    failure_response(&Failure::Refused(refusal), output)
}

/// Handles a ChangePassword body of the given format.
pub fn change_password(store: &Store, input: Input, body: &[u8], output: Output) -> Response {
    let result = decode(input, body)
        .map_err(Failure::Decode)
        .and_then(|req| {
            store
                .change_password_signed(&req.to_signed())
                .map_err(Failure::Store)
        });
    match result {
        Ok(customer) => respond(
            200,
            &ChangePasswordResponse {
                success: true,
                message: "Password changed".to_owned(),
                extra1: Some(customer.box_id.to_string()),
                extra2: None,
                extra3: None,
            },
            output,
        ),
        Err(f) => failure_response(&f, output),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

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

    #[test]
    fn decodes_the_seed_json_and_round_trips() {
        let r = decode_json(SEED_JSON.as_bytes()).unwrap();
        assert_eq!(r.user.user_name, "sample string 1");
        assert_eq!(r.user.email, "sample string 2");
        assert_eq!(r.user.key.expose_secret(), "sample string 3");
        assert_eq!(r.user_name, "sample string 2");
        assert_eq!((r.salt, r.digest.as_str()), (3, "sample string 4"));
        assert_eq!(decode_json(&encode_json(&r)).unwrap(), r);
        assert_eq!(decode_form(&encode_form(&r)).unwrap(), r);
        assert_eq!(decode_xml(&encode_xml(&r)).unwrap(), r);
    }

    #[test]
    fn json_names_ignore_case_but_not_twice() {
        let r = decode_json(
            br#"{"user":{"username":"a","EMAIL":"b","key":"c"},"usernewpassword":"p",
                "USERNAME":"396","salt":1234567890,"digest":"d"}"#,
        )
        .unwrap();
        assert_eq!((r.user_name.as_str(), r.salt), ("396", 1234567890));
        let e = decode_json(
            br#"{"User":{"UserName":"a","Email":"b","Key":"c"},"UserNewPassword":"p","UserName":"1","username":"2"}"#,
        )
        .unwrap_err();
        assert_eq!((e.field, e.problem), ("UserName", Problem::Duplicate));
    }

    #[test]
    fn names_the_field_at_fault() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"UserName":"1"}"#, "User"),
            (br#"{"User":{"UserName":"a","Email":"b"}}"#, "User.Key"),
            (br#"{"User":[]}"#, "User"),
            (
                br#"{"User":{"UserName":"a","Email":"b","Key":"c"},"UserNewPassword":"p","UserName":"1","Salt":"123456789"}"#,
                "Salt",
            ),
            (
                br#"{"User":{"UserName":"a","Email":"b","Key":"c"},"UserNewPassword":"p","UserName":"1","Salt":1.5}"#,
                "Salt",
            ),
            (b"nope", "body"),
        ];
        for (body, field) in cases {
            assert_eq!(decode_json(body).unwrap_err().field, field);
        }
        let e = decode_form(b"UserName=1&Salt=x").unwrap_err();
        assert_eq!(e.field, "User.UserName");
        let e = decode_form(
            b"UserName=1&Salt=abc&Digest=d&UserNewPassword=p&User.UserName=a&User.Email=b&User.Key=c",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Salt must be an integer (64-bit)");
    }

    #[test]
    fn negotiation() {
        use Output::*;
        assert_eq!(Output::negotiate(None, Some(Input::Xml)), Xml);
        assert_eq!(Output::negotiate(Some("*/*"), Some(Input::Xml)), Xml);
        assert_eq!(Output::negotiate(None, Some(Input::Json)), Json);
        assert_eq!(Output::negotiate(None, Some(Input::Form)), Json);
        assert_eq!(Output::negotiate(Some("text/xml"), Some(Input::Json)), Xml);
        assert_eq!(
            Output::negotiate(Some("application/json"), Some(Input::Xml)),
            Json
        );
        assert_eq!(
            Output::negotiate(Some("application/json;q=0.5, application/xml"), None),
            Xml
        );
        assert_eq!(
            Input::from_content_type("text/xml; charset=utf-8"),
            Some(Input::Xml)
        );
        assert_eq!(Input::from_content_type("text/xml; charset=utf-16"), None);
        assert_eq!(Input::from_content_type("text/plain"), None);
    }

    #[test]
    fn responses() {
        let ok = ChangePasswordResponse {
            success: true,
            message: "Password changed".into(),
            extra1: Some("811111".into()),
            extra2: None,
            extra3: None,
        };
        let v: Value = serde_json::from_slice(&ok.render(Output::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Success": true, "Message": "Password changed",
                "Extra1": "811111", "Extra2": null, "Extra3": null})
        );
        let x = String::from_utf8(ok.render(Output::Xml)).unwrap();
        assert!(x.starts_with(&format!(
            "<ChangePasswordResponse xmlns:xsd=\"{XSD_NAMESPACE}\" xmlns:xsi=\"{XSI_NAMESPACE}\">"
        )), "{x}");
        assert!(x.contains("<Success>true</Success>") && x.contains("<Extra1>811111</Extra1>"));
        assert!(!x.contains("Extra2"), "{x}");
        let (status, text) = verdict(&Failure::Store(Error::CorruptRecord {
            tree: "apps",
            key: "k".into(),
        }));
        assert_eq!(status, 500);
        assert!(!text.contains("apps"));
    }
}
