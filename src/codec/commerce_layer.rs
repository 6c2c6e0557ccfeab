//! Commerce Layer `customer_password_resets` (seed 003): JSON:API documents
//! (`application/vnd.api+json`), authenticated by `Authorization: Bearer
//! <app_key>` of an enabled app.
//!
//! Errors are JSON:API error objects `{code, title, detail, status, source?}`
//! with `status` a string and `source.pointer` naming the attribute at fault.

mod document;

use serde::Serialize;
use serde_json::{Value, json};

pub use document::{
    CreateRequest, DecodeError, DecodeErrorKind, TYPE, UpdateRequest, decode_create, decode_update,
    encode_create, encode_update,
};

use super::{Refusal, Response, media, to_json};
use crate::error::{Entity, Error, InputError};
use crate::model::{AppKey, BoxId, Password, Reset, ResetDetails, ResetUpdate, parse_token};
use crate::ops::Store;

const CONTENT_TYPE: &str = "application/vnd.api+json";

/// Whether resources say they live in test or live mode (`meta.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `"test"`.
    #[default]
    Test,
    /// `"live"`.
    Live,
}

impl Mode {
    /// The `meta.mode` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }
}

/// Settings of the Commerce Layer codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommerceLayerSettings {
    /// The base of `links` (`https://yourdomain.commercelayer.io`), without
    /// a trailing slash.
    pub base_url: String,
    /// `meta.mode`.
    pub mode: Mode,
    /// The demo's placeholder bearer, while a demo runs (`None` otherwise).
    pub demo_bearer: Option<DemoBearer>,
}

impl Default for CommerceLayerSettings {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".to_owned(),
            mode: Mode::Test,
            demo_bearer: None,
        }
    }
}

/// A public placeholder bearer (seed 003's `your-access-token`) accepted
/// for one customer only, while a demo runs (`credstore serve --demo`): for
/// any other customer's email or reset it is a 401. It is never stored, so
/// a demo leaves no public credential behind in the store.
#[derive(Clone, PartialEq, Eq)]
pub struct DemoBearer {
    /// The placeholder token.
    pub token: String,
    /// The one customer it may act for.
    pub box_id: BoxId,
}

impl std::fmt::Debug for DemoBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoBearer")
            .field("token", &"[redacted]")
            .field("box_id", &self.box_id)
            .finish()
    }
}

/// Who a bearer token authenticates.
#[derive(Debug, Clone, Copy)]
enum Principal {
    /// An enabled app: any customer.
    App,
    /// The demo placeholder: this customer only.
    Demo(BoxId),
}

impl Principal {
    /// Refuses a customer the principal may not act for.
    fn may_act_for(self, box_id: BoxId) -> Result<(), Failure> {
        match self {
            Principal::Demo(only) if only != box_id => Err(Failure::Unauthorized { sent: true }),
            _ => Ok(()),
        }
    }
}

/// One call on `/api/customer_password_resets[/:id]`, as the gateway hands
/// it over. `Debug` shows neither the bearer key nor the body.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The `:id` path segment, if any.
    pub id: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("id", &self.id)
            .field("authorization", &self.authorization.map(|_| "[redacted]"))
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// One JSON:API error object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
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
enum Failure {
    Refused(Refusal),
    Unauthorized { sent: bool },
    Decode(DecodeError),
    MissingToken,
    MissingPassword,
    MalformedToken,
    Store(Error),
}

/// The one mapping from failures to JSON:API errors (SPEC §6.3).
fn problem(failure: Failure) -> Problem {
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
            super::log_fault("commerce_layer", &e);
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

fn fail(failure: Failure) -> Response {
    problem(failure).response()
}

/// The answer to a request the transport refused, in this format's shape.
pub fn refuse(refusal: Refusal) -> Response {
    fail(Failure::Refused(refusal))
}

/// A resource document for a reset (the token only on create).
fn resource(settings: &CommerceLayerSettings, reset: &Reset, token: Option<&str>) -> Value {
    let base = settings.base_url.trim_end_matches('/');
    let self_link = format!("{base}/api/{TYPE}/{}", reset.id);
    json!({
        "data": {
            "id": reset.id,
            "type": TYPE,
            "links": { "self": self_link },
            "attributes": {
                "customer_email": reset.email,
                "reset_password_token": token,
                "reset_password_at": reset.used_at.map(|t| t.to_rfc3339()),
                "created_at": reset.created_at.to_rfc3339(),
                "updated_at": reset.updated_at.to_rfc3339(),
                "reference": reset.reference,
                "reference_origin": reset.reference_origin,
                "metadata": reset.metadata,
            },
            "relationships": {
                "customer": {
                    "links": {
                        "self": format!("{self_link}/relationships/customer"),
                        "related": format!("{self_link}/customer"),
                    }
                }
            },
            "meta": { "mode": settings.mode.as_str() }
        }
    })
}

fn ok(
    status: u16,
    settings: &CommerceLayerSettings,
    reset: &Reset,
    token: Option<&str>,
) -> Response {
    Response::new(
        status,
        CONTENT_TYPE,
        to_json(&resource(settings, reset, token)),
    )
}

fn bearer(header: Option<&str>) -> Result<AppKey, Failure> {
    let h = header.ok_or(Failure::Unauthorized { sent: false })?;
    let (scheme, key) = h
        .trim()
        .split_once(' ')
        .ok_or(Failure::Unauthorized { sent: true })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Failure::Unauthorized { sent: true });
    }
    AppKey::new(key.trim()).map_err(|_| Failure::Unauthorized { sent: true })
}

fn document_type_ok(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|h| {
        let ct = media::ContentType::parse(h);
        ct.essence == CONTENT_TYPE && ct.utf8()
    })
}

/// The methods a path accepts (for `Allow`).
pub fn allowed_methods(has_id: bool) -> &'static str {
    if has_id { "GET, PATCH" } else { "POST" }
}

/// Handles one call.
pub fn handle(store: &Store, settings: &CommerceLayerSettings, call: &Call<'_>) -> Response {
    let principal = match authenticate(store, settings, call.authorization) {
        Ok(p) => p,
        Err(f) => return fail(f),
    };
    let needs_body = matches!(call.method, "POST" | "PATCH");
    if needs_body && !document_type_ok(call.content_type) {
        return fail(Failure::Refused(Refusal::UnsupportedMediaType));
    }
    let result = match (call.method, call.id) {
        ("POST", None) => create(store, settings, principal, call.body),
        ("GET", Some(id)) => reset_for(store, principal, id).map(|r| ok(200, settings, &r, None)),
        ("PATCH", Some(id)) => update(store, settings, principal, id, call.body),
        _ => Err(Failure::Refused(Refusal::MethodNotAllowed)),
    };
    result.unwrap_or_else(fail)
}

/// The bearer's principal: the demo placeholder (while a demo runs), or an
/// enabled app.
fn authenticate(
    store: &Store,
    settings: &CommerceLayerSettings,
    authorization: Option<&str>,
) -> Result<Principal, Failure> {
    let key = bearer(authorization)?;
    if let Some(demo) = &settings.demo_bearer
        && AppKey::new(demo.token.as_str()).is_ok_and(|d| d.ct_eq(&key))
    {
        return Ok(Principal::Demo(demo.box_id));
    }
    match store.authenticate_app_key(&key) {
        Ok(_) => Ok(Principal::App),
        Err(e) if e.is_fault() => Err(Failure::Store(e)),
        Err(_) => Err(Failure::Unauthorized { sent: true }),
    }
}

/// The reset `id`, if the principal may see it.
fn reset_for(store: &Store, principal: Principal, id: &str) -> Result<Reset, Failure> {
    let reset = store.reset(id).map_err(Failure::Store)?;
    principal.may_act_for(reset.box_id)?;
    Ok(reset)
}

fn create(
    store: &Store,
    settings: &CommerceLayerSettings,
    principal: Principal,
    body: &[u8],
) -> Result<Response, Failure> {
    let req = decode_create(body).map_err(Failure::Decode)?;
    if let Principal::Demo(_) = principal {
        // Any other customer, known or not, is not the demo's to touch.
        match store.customer_by_email(&req.customer_email) {
            Ok(c) => principal.may_act_for(c.box_id)?,
            Err(e) if e.is_fault() => return Err(Failure::Store(e)),
            Err(_) => return Err(Failure::Unauthorized { sent: true }),
        }
    }
    let details = ResetDetails {
        reference: req.reference,
        reference_origin: req.reference_origin,
        metadata: req.metadata,
    };
    let issued = store
        .request_reset(&req.customer_email, details)
        .map_err(Failure::Store)?;
    let r = ok(
        201,
        settings,
        &issued.reset,
        Some(issued.token.expose_secret()),
    );
    let base = settings.base_url.trim_end_matches('/');
    Ok(r.with_header("Location", format!("{base}/api/{TYPE}/{}", issued.reset.id)))
}

fn update(
    store: &Store,
    settings: &CommerceLayerSettings,
    principal: Principal,
    id: &str,
    body: &[u8],
) -> Result<Response, Failure> {
    let req = decode_update(body, id).map_err(Failure::Decode)?;
    let new_password = match (&req.customer_password, &req.reset_password_token) {
        (Some(_), None) => return Err(Failure::MissingToken),
        (None, Some(_)) => return Err(Failure::MissingPassword),
        (Some(password), Some(token)) => Some((password, token)),
        (None, None) => None,
    };
    if let Principal::Demo(_) = principal {
        reset_for(store, principal, id)?;
    }
    let changes = ResetUpdate {
        reference: req.reference,
        reference_origin: req.reference_origin,
        metadata: req.metadata,
    };
    let has_changes = changes != ResetUpdate::default();
    let reset = match new_password {
        Some((password, token)) => {
            let token = parse_token(token.expose_secret().as_bytes())
                .map_err(|_| Failure::MalformedToken)?;
            let max = store.config().password_policy().max_chars;
            let password = Password::new(password.expose_secret()).map_err(|_| {
                Failure::Store(Error::Policy(crate::error::PolicyViolation::TooLong {
                    max,
                }))
            })?;
            // All or nothing: the other attributes are checked first and
            // written in the transaction that consumes the token.
            store
                .reset_password_by_id_and_update(id, &token, &password, &changes)
                .map_err(Failure::Store)?
        }
        None if has_changes => store.update_reset(id, changes).map_err(Failure::Store)?,
        None => store.reset(id).map_err(Failure::Store)?,
    };
    Ok(ok(200, settings, &reset, None))
}

#[cfg(test)]
fn error_members(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("errors")?.get(0)?.as_object().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_have_the_documented_shape() {
        let r = fail(Failure::MissingToken);
        assert_eq!(r.status, 422);
        let e = error_members(&r.body).unwrap();
        assert_eq!(e["status"], "422");
        assert_eq!(e["code"], "VALIDATION_ERROR");
        assert_eq!(
            e["source"]["pointer"],
            "/data/attributes/_reset_password_token"
        );
        let r = fail(Failure::Unauthorized { sent: false });
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let e = error_members(&r.body).unwrap();
        assert!(!e.contains_key("source"));
        let r = fail(Failure::Store(Error::CorruptRecord {
            tree: "resets",
            key: "k".into(),
        }));
        assert_eq!(r.status, 500);
        let text = String::from_utf8_lossy(&r.body).to_lowercase();
        assert!(
            !text.contains("corrupt") && !text.contains("tree"),
            "{text}"
        );
    }

    #[test]
    fn bearer_parsing() {
        assert!(bearer(Some("Bearer 1656d700707ad9a77f737e5df3db088a")).is_ok());
        assert!(bearer(Some("bearer  1656d700707ad9a77f737e5df3db088a ")).is_ok());
        assert!(matches!(
            bearer(None),
            Err(Failure::Unauthorized { sent: false })
        ));
        assert!(matches!(
            bearer(Some("Basic abc")),
            Err(Failure::Unauthorized { sent: true })
        ));
        assert!(matches!(
            bearer(Some("Bearer")),
            Err(Failure::Unauthorized { sent: true })
        ));
    }
}
