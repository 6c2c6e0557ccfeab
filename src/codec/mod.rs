//! Codecs: one module per documented request format (SPEC §6). Each parses
//! bytes into a typed request (strictly: a missing or ill-typed field is an
//! error naming the field), calls the store, and renders the outcome in the
//! format's own shape; one function per codec maps outcomes and errors to
//! that format's status codes and messages. Codecs only call [`Store`]
//! methods; internal error text never reaches a client.
//!
//! [`Store`]: crate::Store

pub mod aspnet;
pub mod commerce_layer;
pub(crate) mod form;
pub(crate) mod json;
pub(crate) mod media;
pub mod skyerp;
pub mod skypostal;
pub mod wcf_date;

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use json::{JsonError, JsonErrorKind};

/// Request bodies longer than this are refused before parsing (HTTP 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why the transport refused a request before its codec read it; each codec
/// renders these in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The body is over [`MAX_BODY_BYTES`] (413).
    TooLarge,
    /// The body's content type is not one the route reads (415).
    UnsupportedMediaType,
    /// The route exists, but not for this method (405).
    MethodNotAllowed,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TooLarge => 413,
            Refusal::UnsupportedMediaType => 415,
            Refusal::MethodNotAllowed => 405,
        }
    }
}

/// Serializes a response body; these bodies are plain data that always
/// serialize, so the fallback is never used.
/// Logs an internal fault once, with its cause, as it becomes a 5xx answer
/// (the answer itself says nothing internal). [`crate::Error`]'s texts never
/// hold a secret.
pub(crate) fn log_fault(format: &'static str, e: &crate::Error) {
    match e {
        // A refused write the store logged already, with its cause.
        crate::Error::Storage(s) if s.was_logged() => {}
        _ => tracing::error!(format, error = %e, "internal error; answered 500"),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// A response: status, headers, body. Its `Debug` shows the body's length
/// only, since a body may carry a customer key or a reset token.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a `Content-Type` and `Cache-Control: no-store` (answers
    /// may carry credentials).
    pub(crate) fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                ("Content-Type".to_owned(), content_type.to_owned()),
                ("Cache-Control".to_owned(), "no-store".to_owned()),
            ],
            body,
        }
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The first header of that name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Secret text exactly as a client sent it (a password, a key, a token),
/// before the store validates it: zeroized on drop, `[redacted]` in `Debug`,
/// compared in constant time, read through [`SecretText::expose_secret`].
#[derive(Clone, Default)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Wraps a text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    /// The text.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}

impl PartialEq for SecretText {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretText {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_is_redacted_and_compared() {
        let a = SecretText::new("hunter2hunter2");
        assert_eq!(format!("{a:?}"), "SecretText([redacted])");
        assert_eq!(a, SecretText::new("hunter2hunter2"));
        assert_ne!(a, SecretText::new("hunter2hunter3"));
        let r = Response::new(
            200,
            "application/json",
            b"{\"customer_key\":\"YpbC\"}".to_vec(),
        );
        let d = format!("{r:?}");
        assert!(!d.contains("YpbC") && d.contains("body_len"), "{d}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}
