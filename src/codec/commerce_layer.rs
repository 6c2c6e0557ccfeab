//! Commerce Layer `customer_password_resets` (seed 003): JSON:API documents
//! (`application/vnd.api+json`), authenticated by `Authorization: Bearer
//! <app_key>` of an enabled app.
//!
//! Errors are JSON:API error objects `{code, title, detail, status, source?}`
//! with `status` a string and `source.pointer` naming the attribute at fault.

mod document;
mod failure;

use serde_json::{Value, json};

pub use document::{
    CreateRequest, DecodeError, DecodeErrorKind, TYPE, UpdateRequest, decode_create, decode_update,
    encode_create, encode_update,
};

use super::{Refusal, Response, media, to_json};
use crate::error::Error;
use crate::model::{AppKey, BoxId, Password, Reset, ResetDetails, ResetUpdate, parse_token};
use crate::ops::Store;

use failure::{Failure, fail};

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
