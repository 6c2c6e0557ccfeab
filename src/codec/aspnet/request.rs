//! ASP.NET request bodies (seed 004): the `ChangePasswordRequest` as JSON, XML or
//! a form, decoded to one type; the salt is a 64-bit integer in every format.

use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Input;
use super::xml::{self, XmlProblem};
use crate::codec::{JsonError, SecretText, form, json, to_json};
use crate::ops::SignedPasswordChange;

/// The customer whose password changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `User.UserName`: the customer's email.
    pub user_name: String,
    /// `User.Email`: the customer's email.
    pub email: String,
    /// `User.Key`: the customer's key.
    pub key: SecretText,
}

/// The `ChangePasswordRequest` of seed 004.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePasswordRequest {
    /// `User`.
    pub user: User,
    /// `UserNewPassword`.
    pub user_new_password: SecretText,
    /// `UserName`: the partner app's user_code in decimal.
    pub user_name: String,
    /// `Salt`: at least 9 digits.
    pub salt: i64,
    /// `Digest`: see [`crate::change_password_digest`].
    pub digest: String,
}

impl ChangePasswordRequest {
    /// The store's form of the request.
    pub fn to_signed(&self) -> SignedPasswordChange {
        SignedPasswordChange {
            user_name: self.user_name.clone(),
            salt: self.salt,
            digest: self.digest.clone(),
            user_user_name: self.user.user_name.clone(),
            user_email: self.user.email.clone(),
            user_key: Zeroizing::new(self.user.key.expose_secret().to_owned()),
            new_password: Zeroizing::new(self.user_new_password.expose_secret().to_owned()),
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The member at fault (`"User.Key"`), or `"body"`.
    pub field: &'static str,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a body or field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Not JSON.
    Json(JsonError),
    /// Not acceptable XML.
    Xml(XmlProblem),
    /// Not a form body.
    Form(form::FormError),
    /// The body (or `User`) is not an object.
    NotAnObject,
    /// Absent, null or `xsi:nil`.
    Missing,
    /// Named twice (JSON names compared case-insensitively).
    Duplicate,
    /// Another type; the text says which.
    WrongType(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Json(e) => write!(f, "{e}"),
            Problem::Xml(e) => write!(f, "{e}"),
            Problem::Form(e) => write!(f, "{e}"),
            Problem::NotAnObject if self.field == "body" => {
                f.write_str("the body must be a ChangePasswordRequest object")
            }
            Problem::NotAnObject => write!(f, "{} must be an object", self.field),
            Problem::Missing => write!(f, "{} is required", self.field),
            Problem::Duplicate => write!(f, "{} is given more than once", self.field),
            Problem::WrongType(what) => write!(f, "{} must be {what}", self.field),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(super) fn err(field: &'static str, problem: Problem) -> DecodeError {
    DecodeError { field, problem }
}

/// The one member named `name`, ignoring ASCII case; null counts as absent.
fn member<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
    field: &'static str,
) -> Result<Option<&'a Value>, DecodeError> {
    let mut found = obj.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    let first = found.next();
    if found.next().is_some() {
        return Err(err(field, Problem::Duplicate));
    }
    Ok(first.map(|(_, v)| v).filter(|v| !v.is_null()))
}

fn json_string(
    obj: &Map<String, Value>,
    name: &'static str,
    field: &'static str,
) -> Result<String, DecodeError> {
    match member(obj, name, field)? {
        None => Err(err(field, Problem::Missing)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(field, Problem::WrongType("a string"))),
    }
}

const SALT_TYPE: &str = "an integer (64-bit)";

/// Salt as text (XML attribute, form field): an optionally signed decimal.
pub(super) fn parse_salt(text: &str) -> Result<i64, DecodeError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| err("Salt", Problem::WrongType(SALT_TYPE)))
}

/// Decodes a JSON body.
pub fn decode_json(body: &[u8]) -> Result<ChangePasswordRequest, DecodeError> {
    let o = json::parse_object(body)
        .map_err(|e| err("body", Problem::Json(e)))?
        .ok_or(err("body", Problem::NotAnObject))?;
    let user = match member(&o, "User", "User")? {
        None => return Err(err("User", Problem::Missing)),
        Some(Value::Object(u)) => u,
        Some(_) => return Err(err("User", Problem::NotAnObject)),
    };
    let user = User {
        user_name: json_string(user, "UserName", "User.UserName")?,
        email: json_string(user, "Email", "User.Email")?,
        key: SecretText::new(json_string(user, "Key", "User.Key")?),
    };
    let user_new_password = SecretText::new(json_string(&o, "UserNewPassword", "UserNewPassword")?);
    let user_name = json_string(&o, "UserName", "UserName")?;
    let salt = match member(&o, "Salt", "Salt")? {
        None => return Err(err("Salt", Problem::Missing)),
        Some(v) => v
            .as_i64()
            .ok_or(err("Salt", Problem::WrongType(SALT_TYPE)))?,
    };
    let digest = json_string(&o, "Digest", "Digest")?;
    Ok(ChangePasswordRequest {
        user,
        user_new_password,
        user_name,
        salt,
        digest,
    })
}

/// Decodes an XML body (UTF-8, an optional BOM; no DTD).
pub fn decode_xml(body: &[u8]) -> Result<ChangePasswordRequest, DecodeError> {
    xml::decode(body)
}

/// Decodes a form body: `UserName`, `Salt`, `Digest`, `UserNewPassword`,
/// `User.UserName`, `User.Email`, `User.Key` (names ignoring ASCII case, as
/// ASP.NET model binding does).
pub fn decode_form(body: &[u8]) -> Result<ChangePasswordRequest, DecodeError> {
    let pairs = form::parse(body).map_err(|e| err("body", Problem::Form(e)))?;
    let get = |name: &'static str| -> Result<String, DecodeError> {
        let mut found = pairs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(err(name, Problem::Duplicate)),
            (Some((_, v)), None) => Ok(v.clone()),
            (None, _) => Err(err(name, Problem::Missing)),
        }
    };
    Ok(ChangePasswordRequest {
        user: User {
            user_name: get("User.UserName")?,
            email: get("User.Email")?,
            key: SecretText::new(get("User.Key")?),
        },
        user_new_password: SecretText::new(get("UserNewPassword")?),
        user_name: get("UserName")?,
        salt: parse_salt(&get("Salt")?)?,
        digest: get("Digest")?,
    })
}

/// Decodes a body of the given format.
pub fn decode(input: Input, body: &[u8]) -> Result<ChangePasswordRequest, DecodeError> {
    match input {
        Input::Json => decode_json(body),
        Input::Xml => decode_xml(body),
        Input::Form => decode_form(body),
    }
}

/// Encodes a request as JSON, in the seed sample's member order.
pub fn encode_json(req: &ChangePasswordRequest) -> Vec<u8> {
    to_json(&serde_json::json!({
        "User": {
            "UserName": req.user.user_name,
            "Email": req.user.email,
            "Key": req.user.key.expose_secret(),
        },
        "UserNewPassword": req.user_new_password.expose_secret(),
        "UserName": req.user_name,
        "Salt": req.salt,
        "Digest": req.digest,
    }))
}

/// Encodes a request as XML, shaped like the seed's sample.
pub fn encode_xml(req: &ChangePasswordRequest) -> Vec<u8> {
    xml::encode_request(req)
}

/// Encodes a request as a form body.
pub fn encode_form(req: &ChangePasswordRequest) -> Vec<u8> {
    let salt = req.salt.to_string();
    form::encode(&[
        ("UserName", &req.user_name),
        ("Salt", &salt),
        ("Digest", &req.digest),
        ("UserNewPassword", req.user_new_password.expose_secret()),
        ("User.UserName", &req.user.user_name),
        ("User.Email", &req.user.email),
        ("User.Key", req.user.key.expose_secret()),
    ])
}
