//! JSON:API request documents for `customer_password_resets`.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::codec::{SecretText, json as strict_json, to_json};

/// The resource type.
pub const TYPE: &str = "customer_password_resets";

/// A create (`POST`) document's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// `attributes.customer_email`.
    pub customer_email: String,
    /// `attributes.reference`.
    pub reference: Option<String>,
    /// `attributes.reference_origin`.
    pub reference_origin: Option<String>,
    /// `attributes.metadata`.
    pub metadata: Option<Map<String, Value>>,
}

/// An update (`PATCH`) document's content. For the reference fields,
/// `None` leaves a value, `Some(None)` (JSON `null`) clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    /// `data.id`.
    pub id: String,
    /// `attributes.customer_password`.
    pub customer_password: Option<SecretText>,
    /// `attributes._reset_password_token`.
    pub reset_password_token: Option<SecretText>,
    /// `attributes.reference`.
    pub reference: Option<Option<String>>,
    /// `attributes.reference_origin`.
    pub reference_origin: Option<Option<String>>,
    /// `attributes.metadata`.
    pub metadata: Option<Option<Map<String, Value>>>,
}

/// What kind of problem a document has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Not a JSON:API document of the expected structure (400).
    Malformed,
    /// `type` or `id` do not match the endpoint (409).
    Mismatch,
    /// An attribute is missing or of the wrong type (422).
    Invalid,
}

/// Why a document could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The kind (and with it the status).
    pub kind: DecodeErrorKind,
    /// The JSON pointer of the member at fault, if one is.
    pub pointer: Option<&'static str>,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for DecodeError {}

fn malformed(pointer: Option<&'static str>, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        kind: DecodeErrorKind::Malformed,
        pointer,
        detail: detail.into(),
    }
}

fn invalid(pointer: &'static str, attr: &str, what: &str) -> DecodeError {
    DecodeError {
        kind: DecodeErrorKind::Invalid,
        pointer: Some(pointer),
        detail: format!("{attr} - {what}"),
    }
}

type Object = Map<String, Value>;

/// `data` and `data.attributes` of a document whose `data.type` is ours.
fn data(body: &[u8]) -> Result<(Object, Object), DecodeError> {
    let doc = strict_json::parse_object(body)
        .map_err(|e| malformed(None, e.to_string()))?
        .ok_or_else(|| malformed(None, "the document must be a JSON object"))?;
    let mut data = match doc.get("data") {
        Some(Value::Object(d)) => d.clone(),
        Some(_) => return Err(malformed(Some("/data"), "data must be a resource object")),
        None => return Err(malformed(Some("/data"), "data is required")),
    };
    match data.get("type") {
        Some(Value::String(t)) if t == TYPE => {}
        Some(Value::String(_)) => {
            return Err(DecodeError {
                kind: DecodeErrorKind::Mismatch,
                pointer: Some("/data/type"),
                detail: format!("type must be {TYPE}"),
            });
        }
        Some(_) => return Err(malformed(Some("/data/type"), "type must be a string")),
        None => return Err(malformed(Some("/data/type"), "type is required")),
    }
    let attributes = match data.remove("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => {
            return Err(malformed(
                Some("/data/attributes"),
                "attributes must be an object",
            ));
        }
    };
    Ok((data, attributes))
}

/// A string-or-null attribute: absent → `None`, null → `Some(None)`.
fn nullable_string(
    a: &Map<String, Value>,
    attr: &'static str,
    pointer: &'static str,
) -> Result<Option<Option<String>>, DecodeError> {
    match a.get(attr) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(invalid(pointer, attr, "must be a string")),
    }
}

fn nullable_object(
    a: &Map<String, Value>,
) -> Result<Option<Option<Map<String, Value>>>, DecodeError> {
    match a.get("metadata") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Object(m)) => Ok(Some(Some(m.clone()))),
        Some(_) => Err(invalid(
            "/data/attributes/metadata",
            "metadata",
            "must be an object",
        )),
    }
}

fn secret(
    a: &Map<String, Value>,
    attr: &'static str,
    pointer: &'static str,
) -> Result<Option<SecretText>, DecodeError> {
    match a.get(attr) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(SecretText::new(s.as_str()))),
        Some(_) => Err(invalid(pointer, attr, "must be a string")),
    }
}

/// Decodes a create document. `relationships` (the SDK sends `{}`) and any
/// other member are ignored.
pub fn decode_create(body: &[u8]) -> Result<CreateRequest, DecodeError> {
    let (_, a) = data(body)?;
    const EMAIL: &str = "/data/attributes/customer_email";
    let customer_email = match a.get("customer_email") {
        None | Some(Value::Null) => return Err(invalid(EMAIL, "customer_email", "can't be blank")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(invalid(EMAIL, "customer_email", "can't be blank"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid(EMAIL, "customer_email", "must be a string")),
    };
    Ok(CreateRequest {
        customer_email,
        reference: nullable_string(&a, "reference", "/data/attributes/reference")?.flatten(),
        reference_origin: nullable_string(
            &a,
            "reference_origin",
            "/data/attributes/reference_origin",
        )?
        .flatten(),
        metadata: nullable_object(&a)?.flatten(),
    })
}

/// Decodes an update document for the resource `path_id`: `data.id` must
/// be present and equal it.
pub fn decode_update(body: &[u8], path_id: &str) -> Result<UpdateRequest, DecodeError> {
    let (data, a) = data(body)?;
    let id = match data.get("id") {
        Some(Value::String(id)) if id == path_id => id.clone(),
        Some(Value::String(_)) => {
            return Err(DecodeError {
                kind: DecodeErrorKind::Mismatch,
                pointer: Some("/data/id"),
                detail: "id must be the id in the URL".to_owned(),
            });
        }
        Some(_) => return Err(malformed(Some("/data/id"), "id must be a string")),
        None => return Err(malformed(Some("/data/id"), "id is required")),
    };
    Ok(UpdateRequest {
        id,
        customer_password: secret(
            &a,
            "customer_password",
            "/data/attributes/customer_password",
        )?,
        reset_password_token: secret(
            &a,
            "_reset_password_token",
            "/data/attributes/_reset_password_token",
        )?,
        reference: nullable_string(&a, "reference", "/data/attributes/reference")?,
        reference_origin: nullable_string(
            &a,
            "reference_origin",
            "/data/attributes/reference_origin",
        )?,
        metadata: nullable_object(&a)?,
    })
}

/// Encodes a create document, as the official SDK sends it.
pub fn encode_create(req: &CreateRequest) -> Vec<u8> {
    let mut a = Map::new();
    a.insert(
        "customer_email".into(),
        Value::String(req.customer_email.clone()),
    );
    if let Some(r) = &req.reference {
        a.insert("reference".into(), Value::String(r.clone()));
    }
    if let Some(r) = &req.reference_origin {
        a.insert("reference_origin".into(), Value::String(r.clone()));
    }
    if let Some(m) = &req.metadata {
        a.insert("metadata".into(), Value::Object(m.clone()));
    }
    to_json(&json!({ "data": { "type": TYPE, "attributes": a, "relationships": {} } }))
}

/// Encodes an update document.
pub fn encode_update(req: &UpdateRequest) -> Vec<u8> {
    let mut a = Map::new();
    if let Some(p) = &req.customer_password {
        a.insert(
            "customer_password".into(),
            Value::String(p.expose_secret().to_owned()),
        );
    }
    if let Some(t) = &req.reset_password_token {
        a.insert(
            "_reset_password_token".into(),
            Value::String(t.expose_secret().to_owned()),
        );
    }
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    if let Some(r) = &req.reference {
        a.insert("reference".into(), opt(r));
    }
    if let Some(r) = &req.reference_origin {
        a.insert("reference_origin".into(), opt(r));
    }
    if let Some(m) = &req.metadata {
        a.insert(
            "metadata".into(),
            m.clone().map_or(Value::Null, Value::Object),
        );
    }
    to_json(&json!({ "data": { "type": TYPE, "id": req.id, "attributes": a } }))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn decodes_the_seed_patch() {
        let r = decode_update(SEED_PATCH.as_bytes(), "xYZkjABcde").unwrap();
        assert_eq!(r.id, "xYZkjABcde");
        assert_eq!(r.customer_password, Some(SecretText::new("secret")));
        assert_eq!(r.reset_password_token, None);
        assert_eq!((&r.reference, &r.metadata), (&None, &None));
        assert_eq!(decode_update(&encode_update(&r), "xYZkjABcde").unwrap(), r);
    }

    #[test]
    fn type_and_id_mismatches_are_conflicts() {
        let e = decode_update(SEED_PATCH.as_bytes(), "abcdeABCDE").unwrap_err();
        assert_eq!(
            (e.kind, e.pointer),
            (DecodeErrorKind::Mismatch, Some("/data/id"))
        );
        let other = SEED_PATCH.replace("\"customer_password_resets\"", "\"customers\"");
        let e = decode_update(other.as_bytes(), "xYZkjABcde").unwrap_err();
        assert_eq!(
            (e.kind, e.pointer),
            (DecodeErrorKind::Mismatch, Some("/data/type"))
        );
        let no_id = SEED_PATCH.replace("\"id\": \"xYZkjABcde\",", "");
        let e = decode_update(no_id.as_bytes(), "xYZkjABcde").unwrap_err();
        assert_eq!(
            (e.kind, e.pointer),
            (DecodeErrorKind::Malformed, Some("/data/id"))
        );
    }

    #[test]
    fn create_documents() {
        let r = decode_create(
            br#"{"data":{"type":"customer_password_resets","attributes":{"customer_email":"john@example.com","reference":null,"metadata":{"foo":"bar"}},"relationships":{}}}"#,
        )
        .unwrap();
        assert_eq!(r.customer_email, "john@example.com");
        assert_eq!(r.reference, None);
        assert_eq!(r.metadata.as_ref().unwrap()["foo"], "bar");
        assert_eq!(decode_create(&encode_create(&r)).unwrap(), r);
        let e = decode_create(br#"{"data":{"type":"customer_password_resets"}}"#).unwrap_err();
        assert_eq!(
            (e.kind, e.pointer),
            (
                DecodeErrorKind::Invalid,
                Some("/data/attributes/customer_email")
            )
        );
        let e = decode_create(br#"{"data":{"type":"customer_password_resets","attributes":{"customer_email":"a@b.co","metadata":[1]}}}"#).unwrap_err();
        assert_eq!(e.pointer, Some("/data/attributes/metadata"));
        for (body, pointer) in [
            (&b"{}"[..], Some("/data")),
            (b"{\"data\":[]}", Some("/data")),
            (b"{\"data\":{}}", Some("/data/type")),
            (b"[]", None),
            (b"{", None),
        ] {
            let e = decode_create(body).unwrap_err();
            assert_eq!((e.kind, e.pointer), (DecodeErrorKind::Malformed, pointer));
        }
    }
}
