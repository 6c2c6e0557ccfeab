//! Skypostal request bodies (seed 001): strict JSON objects, each field checked
//! for presence and type before anything runs.

use std::fmt;

use serde_json::{Map, Value};

use crate::codec::{JsonError, SecretText, json, to_json};
use crate::model::{BoxId, UserCode};

/// The login request of seed 001.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// The partner app.
    pub user_code: UserCode,
    /// The partner app's key.
    pub app_key: SecretText,
    /// The customer's email.
    pub customer_email: String,
    /// The customer's password.
    pub customer_password: SecretText,
}

/// The update-password request of seed 000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePasswordRequest {
    /// The partner app.
    pub user_code: UserCode,
    /// The partner app's key.
    pub app_key: SecretText,
    /// The customer's number.
    pub customer_box_id: BoxId,
    /// The customer's key.
    pub customer_key: SecretText,
    /// The account's current email.
    pub customer_email: String,
    /// The new password.
    pub customer_new_password: SecretText,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The member at fault, or `"body"` when the JSON itself is broken.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The body is not JSON.
    Json(JsonError),
    /// The body is JSON but not an object.
    NotAnObject,
    /// The member is absent or null.
    Missing,
    /// The member has another type; the text says what it must be.
    WrongType(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Json(e) => write!(f, "{e}"),
            Problem::NotAnObject => f.write_str("the body must be a JSON object"),
            Problem::Missing => write!(f, "{} is required", self.field),
            Problem::WrongType(what) => write!(f, "{} must be {what}", self.field),
        }
    }
}

impl std::error::Error for DecodeError {}

fn object(body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let err = |problem| DecodeError {
        field: "body",
        problem,
    };
    json::parse_object(body)
        .map_err(|e| err(Problem::Json(e)))?
        .ok_or_else(|| err(Problem::NotAnObject))
}

fn present<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, DecodeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(DecodeError {
            field,
            problem: Problem::Missing,
        }),
        Some(v) => Ok(v),
    }
}

fn string(obj: &Map<String, Value>, field: &'static str) -> Result<String, DecodeError> {
    match present(obj, field)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(DecodeError {
            field,
            problem: Problem::WrongType("a string"),
        }),
    }
}

fn secret(obj: &Map<String, Value>, field: &'static str) -> Result<SecretText, DecodeError> {
    match present(obj, field)? {
        Value::String(s) => Ok(SecretText::new(s.as_str())),
        _ => Err(DecodeError {
            field,
            problem: Problem::WrongType("a string"),
        }),
    }
}

fn user_code(obj: &Map<String, Value>) -> Result<UserCode, DecodeError> {
    const FIELD: &str = "user_code";
    present(obj, FIELD)?
        .as_u64()
        .and_then(|n| UserCode::try_from(n).ok())
        .ok_or(DecodeError {
            field: FIELD,
            problem: Problem::WrongType("an integer from 0 to 4294967295"),
        })
}

fn box_id(obj: &Map<String, Value>) -> Result<BoxId, DecodeError> {
    const FIELD: &str = "customer_box_id";
    present(obj, FIELD)?.as_u64().ok_or(DecodeError {
        field: FIELD,
        problem: Problem::WrongType("a non-negative integer"),
    })
}

/// Decodes the login request (unknown members are ignored).
pub fn decode_login(body: &[u8]) -> Result<LoginRequest, DecodeError> {
    let o = object(body)?;
    Ok(LoginRequest {
        user_code: user_code(&o)?,
        app_key: secret(&o, "app_key")?,
        customer_email: string(&o, "customer_email")?,
        customer_password: secret(&o, "customer_password")?,
    })
}

/// Decodes the update-password request (unknown members are ignored).
pub fn decode_update_password(body: &[u8]) -> Result<UpdatePasswordRequest, DecodeError> {
    let o = object(body)?;
    Ok(UpdatePasswordRequest {
        user_code: user_code(&o)?,
        app_key: secret(&o, "app_key")?,
        customer_box_id: box_id(&o)?,
        customer_key: secret(&o, "customer_key")?,
        customer_email: string(&o, "customer_email")?,
        customer_new_password: secret(&o, "customer_new_password")?,
    })
}

/// Encodes a login request as a client sends it.
pub fn encode_login(req: &LoginRequest) -> Vec<u8> {
    to_json(&serde_json::json!({
        "user_code": req.user_code,
        "app_key": req.app_key.expose_secret(),
        "customer_email": req.customer_email,
        "customer_password": req.customer_password.expose_secret(),
    }))
}

/// Encodes an update-password request as a client sends it.
pub fn encode_update_password(req: &UpdatePasswordRequest) -> Vec<u8> {
    to_json(&serde_json::json!({
        "user_code": req.user_code,
        "app_key": req.app_key.expose_secret(),
        "customer_box_id": req.customer_box_id,
        "customer_key": req.customer_key.expose_secret(),
        "customer_email": req.customer_email,
        "customer_new_password": req.customer_new_password.expose_secret(),
    }))
}
