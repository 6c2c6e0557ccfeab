//! Commerce Layer failures: the one mapping from what ended a call to a
//! JSON:API error object (SPEC §6.3).

use serde::Serialize;
use serde_json::json;

use super::{CONTENT_TYPE, DecodeError, DecodeErrorKind};
use crate::codec::{Refusal, Response, to_json};
use crate::error::{Entity, Error, InputError};

/// One JSON:API error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    status: u16,
    code: &'static str,
    title: String,
    detail: String,
    pointer: Option<String>,
}

impl Problem {
    fn new(status: u16, code: &'static str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            title: title.to_owned(),
            detail: detail.into(),
            pointer: None,
        }
    }

    /// A 422 on an attribute: title `title`, detail `"<attr> - <title>"`.
    fn attribute(attr: &str, title: &str) -> Self {
        Self {
            pointer: Some(format!("/data/attributes/{attr}")),
            ..Self::new(422, "VALIDATION_ERROR", title, format!("{attr} - {title}"))
        }
    }

    fn response(self) -> Response {
        #[derive(Serialize)]
        struct Source {
            pointer: String,
        }
        #[derive(Serialize)]
        struct Object {
            code: &'static str,
            title: String,
            detail: String,
            status: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            source: Option<Source>,
        }
        let status = self.status;
        let unauthorized = status == 401;
        let body = to_json(&json!({
            "errors": [Object {
                code: self.code,
                title: self.title,
                detail: self.detail,
                status: status.to_string(),
                source: self.pointer.map(|pointer| Source { pointer }),
            }]
        }));
        let r = Response::new(status, CONTENT_TYPE, body);
        if unauthorized {
            r.with_header("WWW-Authenticate", "Bearer")
        } else {
            r
        }
    }
}

/// Everything that ends a call other than a resource.
#[derive(Debug)]
pub(super) enum Failure {
    Refused(Refusal),
    Unauthorized { sent: bool },
    Decode(DecodeError),
    MissingToken,
    MissingPassword,
    MalformedToken,
    Store(Error),
}

/// The one mapping from failures to JSON:API errors (SPEC §6.3).
pub(super) fn problem(failure: Failure) -> Problem {
    match failure {
        Failure::Refused(Refusal::TooLarge) => Problem::new(
            413,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            "the request body is larger than 65536 bytes",
        ),
        Failure::Refused(Refusal::UnsupportedMediaType) => Problem::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            "send the document as application/vnd.api+json",
        ),
        Failure::Refused(Refusal::MethodNotAllowed) => Problem::new(
            405,
            "METHOD_NOT_ALLOWED",
            "Method not allowed",
            "this resource does not support that method",
        ),
        Failure::Unauthorized { sent } => Problem::new(
            401,
            "UNAUTHORIZED",
            "Unauthorized",
            if sent {
                "the bearer token is not the key of an enabled app"
            } else {
                "an Authorization: Bearer <app_key> header is required"
            },
        ),
        Failure::Decode(e) => {
            let (status, code, title) = match e.kind {
                DecodeErrorKind::Malformed => (400, "BAD_REQUEST", "Bad request"),
                DecodeErrorKind::Mismatch => (409, "CONFLICT", "Conflict"),
                DecodeErrorKind::Invalid => (422, "VALIDATION_ERROR", "is invalid"),
            };
            Problem {
                pointer: e.pointer.map(str::to_owned),
                ..Problem::new(status, code, title, e.detail)
            }
        }
        Failure::MissingToken => Problem::attribute(
            "_reset_password_token",
            "is required to set customer_password",
        ),
        Failure::MissingPassword => Problem::attribute("customer_password", "can't be blank"),
        Failure::MalformedToken => Problem::attribute(
            "_reset_password_token",
            "is invalid, expired or already used",
        ),
        Failure::Store(e) if e.is_fault() => {
            crate::codec::log_fault("commerce_layer", &e);
            Problem::new(
                500,
                "INTERNAL_SERVER_ERROR",
                "Internal server error",
                "the request could not be completed; try again later",
            )
        }
        Failure::Store(e) => match e {
            Error::NotFound(Entity::Reset) | Error::InvalidInput(InputError::MalformedResetId) => {
                Problem::new(
                    404,
                    "RECORD_NOT_FOUND",
                    "Record not found",
                    "no customer_password_resets with that id",
                )
            }
            // A disabled customer is answered as an unknown email (SPEC §5.10).
            Error::NotFound(_) | Error::Disabled => {
                Problem::attribute("customer_email", "not found")
            }
            Error::InvalidInput(
                InputError::EmptyEmail
                | InputError::EmailTooLong { .. }
                | InputError::MalformedEmail,
            ) => Problem::attribute("customer_email", "is not a valid email address"),
            Error::InvalidInput(InputError::MalformedText { field }) => {
                Problem::attribute(field, "is too long or contains control characters")
            }
            Error::InvalidToken => Problem::attribute(
                "_reset_password_token",
                "is invalid, expired or already used",
            ),
            Error::Policy(v) => Problem::attribute("customer_password", &format!("must have {v}")),
            Error::Throttled => Problem::new(
                429,
                "TOO_MANY_REQUESTS",
                "Too many requests",
                "a reset for this customer was created less than a minute ago",
            ),
            Error::Conflict => Problem::new(
                409,
                "CONFLICT",
                "Conflict",
                "the customer's credentials changed concurrently; try again",
            ),
            _ => Problem::new(
                422,
                "VALIDATION_ERROR",
                "is invalid",
                "the request was refused",
            ),
        },
    }
}

pub(super) fn fail(failure: Failure) -> Response {
    problem(failure).response()
}
