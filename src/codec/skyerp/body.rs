//! SkyERP request bodies: JSON or form, decoded to the fields the flow reads.

use std::fmt;

use serde_json::{Map, Value};

use crate::codec::{JsonError, SecretText, form, json as strict_json, media, to_json};

/// A body's format, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl BodyFormat {
    /// The format a `Content-Type` names; `None` for others (415).
    pub fn from_content_type(header: &str) -> Option<Self> {
        let ct = media::ContentType::parse(header);
        if !ct.utf8() {
            return None;
        }
        match ct.essence.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-www-form-urlencoded" => Some(BodyFormat::Form),
            _ => None,
        }
    }
}

/// A field as sent: text, or (JSON only) another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    /// A string (empty strings count as absent, as Laravel's
    /// `ConvertEmptyStringsToNull` makes them).
    Text(T),
    /// A number, boolean, array or object.
    NotText,
}

/// A decoded body: the fields this format reads. Absent and null fields are
/// `None`; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// `_method` (Laravel method spoofing), when a string.
    pub method: Option<String>,
    /// `email`.
    pub email: Option<Field<String>>,
    /// `password`.
    pub password: Option<Field<SecretText>>,
    /// `password2`.
    pub password2: Option<Field<SecretText>>,
    /// `token` (the PUT may carry it here or as the last path segment).
    pub token: Option<Field<SecretText>>,
}

/// Why a body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON.
    Json(JsonError),
    /// JSON, but not an object.
    NotAnObject,
    /// Not a form body.
    Form(form::FormError),
    /// A form names the same field twice.
    Duplicate(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "{e}"),
            DecodeError::NotAnObject => f.write_str("the body must be a JSON object"),
            DecodeError::Form(e) => write!(f, "{e}"),
            DecodeError::Duplicate(name) => write!(f, "the form names {name} more than once"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn json_field<T>(
    obj: &Map<String, Value>,
    name: &str,
    wrap: impl Fn(&str) -> T,
) -> Option<Field<T>> {
    match obj.get(name)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(Field::Text(wrap(s))),
        _ => Some(Field::NotText),
    }
}

/// Decodes a JSON body (strict JSON: the seed's trailing commas are refused).
pub fn decode_json(body: &[u8]) -> Result<Body, DecodeError> {
    let o = strict_json::parse_object(body)
        .map_err(DecodeError::Json)?
        .ok_or(DecodeError::NotAnObject)?;
    Ok(Body {
        method: match o.get("_method") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        email: json_field(&o, "email", str::to_owned),
        password: json_field(&o, "password", |s| SecretText::new(s)),
        password2: json_field(&o, "password2", |s| SecretText::new(s)),
        token: json_field(&o, "token", |s| SecretText::new(s)),
    })
}

/// Decodes a form body.
pub fn decode_form(body: &[u8]) -> Result<Body, DecodeError> {
    let pairs = form::parse(body).map_err(DecodeError::Form)?;
    let get = |name: &str| -> Result<Option<&str>, DecodeError> {
        let mut found = pairs.iter().filter(|(k, _)| k == name);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(DecodeError::Duplicate(name.to_owned())),
            (Some((_, v)), None) if !v.is_empty() => Ok(Some(v.as_str())),
            _ => Ok(None),
        }
    };
    Ok(Body {
        method: get("_method")?.map(str::to_owned),
        email: get("email")?.map(|s| Field::Text(s.to_owned())),
        password: get("password")?.map(|s| Field::Text(SecretText::new(s))),
        password2: get("password2")?.map(|s| Field::Text(SecretText::new(s))),
        token: get("token")?.map(|s| Field::Text(SecretText::new(s))),
    })
}

/// Decodes a body of the given format; an empty body without a format is
/// an empty request.
pub fn decode(format: Option<BodyFormat>, body: &[u8]) -> Result<Body, DecodeError> {
    match format {
        Some(BodyFormat::Json) => decode_json(body),
        Some(BodyFormat::Form) => decode_form(body),
        None => Ok(Body::default()),
    }
}

/// Encodes a body as JSON (non-text fields as `0`), for clients and tests.
pub fn encode_json(body: &Body) -> Vec<u8> {
    let mut o = Map::new();
    if let Some(m) = &body.method {
        o.insert("_method".into(), Value::String(m.clone()));
    }
    let mut put = |name: &str, f: Option<Value>| {
        if let Some(v) = f {
            o.insert(name.into(), v);
        }
    };
    let text = |f: &Field<SecretText>| match f {
        Field::Text(s) => Value::String(s.expose_secret().to_owned()),
        Field::NotText => Value::from(0),
    };
    put(
        "email",
        body.email.as_ref().map(|f| match f {
            Field::Text(s) => Value::String(s.clone()),
            Field::NotText => Value::from(0),
        }),
    );
    put("password", body.password.as_ref().map(text));
    put("password2", body.password2.as_ref().map(text));
    put("token", body.token.as_ref().map(text));
    to_json(&Value::Object(o))
}
