//! What a path is and what its route accepts: the routes of SPEC §6, the
//! label logs and metrics give a path, and the preflight table (method,
//! body size, media type) the gateway applies before a codec runs.

use crate::codec::aspnet::Input;
use crate::codec::skyerp::{self, BodyFormat};
use crate::codec::{MAX_BODY_BYTES, Refusal, commerce_layer, media, skypostal};

use super::Request;

/// The routes of SPEC §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Skypostal(skypostal::Route),
    SkyErp {
        shop: &'a str,
        token: Option<&'a str>,
    },
    CommerceLayer {
        id: Option<&'a str>,
    },
    AspNet,
}

pub(super) fn route(path: &str) -> Option<Route<'_>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let path = path.strip_prefix('/')?;
    let segs: Vec<&str> = path.split('/').collect();
    let ci = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match segs.as_slice() {
        [w, s, c, op]
            if ci(w, "wcf-services") && ci(s, "service-customer.svc") && ci(c, "customer") =>
        {
            if ci(op, "customer-update-password") {
                Some(Route::Skypostal(skypostal::Route::UpdatePassword))
            } else if ci(op, "customer-registration") || ci(op, "customer-login") {
                Some(Route::Skypostal(skypostal::Route::Login))
            } else {
                None
            }
        }
        ["api", "v1", shop, "customers", "reset-password"] if !shop.is_empty() => {
            Some(Route::SkyErp { shop, token: None })
        }
        ["api", "v1", shop, "customers", "reset-password", token] if !shop.is_empty() => {
            Some(Route::SkyErp {
                shop,
                token: Some(token),
            })
        }
        ["api", "customer_password_resets"] => Some(Route::CommerceLayer { id: None }),
        ["api", "customer_password_resets", id] if !id.is_empty() => {
            Some(Route::CommerceLayer { id: Some(id) })
        }
        [a, c, p] if ci(a, "api") && ci(c, "Customers") && ci(p, "ChangePassword") => {
            Some(Route::AspNet)
        }
        _ => None,
    }
}

/// The template of the route that serves `path` (a query dropped), from the
/// routing above: one of `crate::http::ROUTES` (`{shop}`, `{token}`, `{id}`
/// for the path's own segments), or [`OTHER_ROUTE`] for a path no route
/// serves. Logs and metrics name requests by it: a fixed set, with no token,
/// shop or reset id in it.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) fn route_template(path: &str) -> &'static str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match route(path) {
        Some(Route::Skypostal(skypostal::Route::UpdatePassword)) => {
            "/wcf-services/service-customer.svc/customer/customer-update-password"
        }
        // Both operations are one route of the codec; the label tells them
        // apart by the last segment (routed, so it is one of the two).
        Some(Route::Skypostal(skypostal::Route::Login)) => {
            let op = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if op.eq_ignore_ascii_case("customer-registration") {
                "/wcf-services/service-customer.svc/customer/customer-registration"
            } else {
                "/wcf-services/service-customer.svc/customer/customer-login"
            }
        }
        Some(Route::SkyErp { token: None, .. }) => "/api/v1/{shop}/customers/reset-password",
        Some(Route::SkyErp { token: Some(_), .. }) => {
            "/api/v1/{shop}/customers/reset-password/{token}"
        }
        Some(Route::CommerceLayer { id: None }) => "/api/customer_password_resets",
        Some(Route::CommerceLayer { id: Some(_) }) => "/api/customer_password_resets/{id}",
        Some(Route::AspNet) => "/api/Customers/ChangePassword",
        None => OTHER_ROUTE,
    }
}

/// The label of a path that no route serves.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) const OTHER_ROUTE: &str = "other";

/// What the gateway checks before a route's codec runs, always in this
/// order: the method (405, with `Allow`), the body's size (413), its media
/// type (415). One row per route ([`preflight`]); each refusal is answered
/// in the route's own format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Preflight {
    /// The methods the route accepts: the `Allow` of every 405 it answers.
    pub allow: &'static str,
    /// Whether the gateway refuses other methods itself. `false`: the codec
    /// decides, after what must come first there (SkyERP's `_method` in the
    /// body, Commerce Layer's authentication).
    pub refuse_method: bool,
    /// Whether a GET's body goes unread (neither size nor media type).
    pub get_reads_no_body: bool,
    /// The media types the route reads.
    pub media: MediaRule,
}

/// The media types a route reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaRule {
    /// WCF's JSON endpoints: UTF-8 `application/json` or `text/json`, and no
    /// `Content-Type` counts as JSON.
    JsonOrNone,
    /// JSON or a form ([`BodyFormat`]); no `Content-Type` only with an
    /// empty body.
    JsonOrForm,
    /// JSON, XML or a form ([`Input`]).
    JsonXmlOrForm,
    /// JSON:API documents, checked by the codec after authentication (a
    /// 401 comes before a 415 there).
    AfterAuthentication,
}

/// The body's format as the preflight read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Nothing to read or not read here.
    Unread,
    Json,
    SkyErp(Option<BodyFormat>),
    AspNet(Input),
}

/// The preflight table.
pub(super) fn preflight(route: &Route<'_>) -> Preflight {
    match route {
        Route::Skypostal(_) => Preflight {
            allow: "POST",
            refuse_method: true,
            get_reads_no_body: false,
            media: MediaRule::JsonOrNone,
        },
        Route::SkyErp { token, .. } => Preflight {
            allow: skyerp::allowed_methods(token.is_some()),
            refuse_method: false,
            get_reads_no_body: true,
            media: MediaRule::JsonOrForm,
        },
        Route::CommerceLayer { id } => Preflight {
            allow: commerce_layer::allowed_methods(id.is_some()),
            refuse_method: false,
            get_reads_no_body: false,
            media: MediaRule::AfterAuthentication,
        },
        Route::AspNet => Preflight {
            allow: "POST",
            refuse_method: true,
            get_reads_no_body: false,
            media: MediaRule::JsonXmlOrForm,
        },
    }
}

impl Preflight {
    /// Runs the checks on `req`: the body's format, or the refusal.
    pub fn check(&self, req: &Request) -> Result<Format, Refusal> {
        if self.refuse_method && !self.allow.split(", ").any(|m| m == req.method) {
            return Err(Refusal::MethodNotAllowed);
        }
        if self.get_reads_no_body && req.method == "GET" {
            return Ok(Format::Unread);
        }
        if req.body.len() > MAX_BODY_BYTES {
            return Err(Refusal::TooLarge);
        }
        let content_type = req.headers.get("content-type");
        let format = match self.media {
            MediaRule::JsonOrNone => content_type
                .is_none_or(|h| {
                    let ct = media::ContentType::parse(h);
                    ct.utf8() && (ct.is("application/json") || ct.is("text/json"))
                })
                .then_some(Format::Json),
            MediaRule::JsonOrForm => match content_type {
                Some(ct) => BodyFormat::from_content_type(ct).map(|f| Format::SkyErp(Some(f))),
                None => req.body.is_empty().then_some(Format::SkyErp(None)),
            },
            MediaRule::JsonXmlOrForm => content_type
                .and_then(Input::from_content_type)
                .map(Format::AspNet),
            MediaRule::AfterAuthentication => Some(Format::Unread),
        };
        format.ok_or(Refusal::UnsupportedMediaType)
    }
}
