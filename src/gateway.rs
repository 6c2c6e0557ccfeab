//! The transport-agnostic gateway: `(method, path, headers, body)` in,
//! `(status, headers, body)` out, for every route of SPEC §6.
//!
//! It finds the route, refuses oversized bodies (413) and unreadable content
//! types (415) in the route's own format, negotiates JSON or XML for the
//! ASP.NET route, and hands the rest to the route's codec. Calls that hash a
//! password run argon2 on the calling thread: an async host calls
//! [`Gateway::handle`] from a blocking pool (`spawn_blocking`).

mod request;

use std::fmt;

use crate::codec::aspnet::{self, Input, Output};
use crate::codec::commerce_layer::{self, CommerceLayerSettings, DemoBearer};
use crate::codec::skyerp::{self, BodyFormat, Lang, SkyErpSettings};
use crate::codec::skypostal::{self, SkypostalSettings};
use crate::codec::wcf_date::WcfOffset;
use crate::codec::{MAX_BODY_BYTES, Refusal, media};
use crate::ops::Store;

pub use crate::codec::Response;
pub use request::{Headers, Request};

/// The codecs' settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Skypostal: the WCF display offset.
    pub skypostal: SkypostalSettings,
    /// SkyERP: the reset link base (the courier makes the links).
    pub skyerp: SkyErpSettings,
    /// Commerce Layer: the links' base URL and `meta.mode`.
    pub commerce_layer: CommerceLayerSettings,
}

impl GatewaySettings {
    /// Sets the zone shown in WCF dates (display only).
    pub fn with_wcf_offset(mut self, offset: Option<WcfOffset>) -> Self {
        self.skypostal.display_offset = offset;
        self
    }

    /// Sets the base of reset links in SkyERP mails.
    pub fn with_reset_link_base(mut self, base: impl Into<String>) -> Self {
        self.skyerp.reset_link_base = base.into();
        self
    }

    /// Accepts a public placeholder bearer on the Commerce Layer routes for
    /// one customer only (a demo; see [`DemoBearer`]).
    pub fn with_demo_bearer(mut self, token: impl Into<String>, box_id: crate::BoxId) -> Self {
        self.commerce_layer.demo_bearer = Some(DemoBearer {
            token: token.into(),
            box_id,
        });
        self
    }

    /// Sets the Commerce Layer links' base URL and mode.
    pub fn with_commerce_layer(
        mut self,
        base_url: impl Into<String>,
        mode: commerce_layer::Mode,
    ) -> Self {
        self.commerce_layer.base_url = base_url.into();
        self.commerce_layer.mode = mode;
        self
    }
}

/// The routes of SPEC §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
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

fn route(path: &str) -> Option<Route<'_>> {
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

/// `path` (a query dropped) as logs and metrics name it, from the routing
/// above: the token segment of a SkyERP path becomes `{token}`, other
/// routed paths are kept as they are. An unroutable path (a 404) may still
/// carry a token: nothing after a `/customers/reset-password/` segment of
/// it is kept.
pub(crate) fn route_label(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let up_to = |at: usize| path.get(..at).map(|p| format!("{p}{{token}}"));
    let label = match route(path) {
        // `token` is a slice of `path`: its offset is where it starts.
        Some(Route::SkyErp {
            token: Some(token), ..
        }) => up_to((token.as_ptr() as usize).saturating_sub(path.as_ptr() as usize)),
        Some(_) => None,
        None => {
            const MARKER: &str = "/customers/reset-password/";
            path.find(MARKER)
                .map(|i| i + MARKER.len())
                .filter(|&at| path.len() > at)
                .and_then(up_to)
        }
    };
    label.unwrap_or_else(|| path.to_owned())
}

/// Serves the documented formats over a [`Store`].
///
/// The SkyERP POST queues its reset mail in the store and answers at once;
/// run a [`crate::mail::Courier`] over the same store to deliver the queue.
pub struct Gateway {
    store: Store,
    settings: GatewaySettings,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn not_found() -> Response {
    Response::new(
        404,
        "application/json",
        br#"{"status":404,"message":"Not found"}"#.to_vec(),
    )
}

fn with_allow(r: Response, allow: &str) -> Response {
    if r.status == 405 {
        r.with_header("Allow", allow)
    } else {
        r
    }
}

impl Gateway {
    /// A gateway over `store`. Reset mails wait in the store's queue for a
    /// [`crate::mail::Courier`].
    pub fn new(store: Store, settings: GatewaySettings) -> Self {
        Self { store, settings }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Whether answering `req` may compute a password hash (a login or a
    /// password change, in any format). A transport on an async runtime
    /// waits for a hashing slot before it gives such a request a blocking
    /// thread, and lets every other request (token checks, reset requests)
    /// pass without waiting behind hashes. Cheap: it looks at the route,
    /// the method and, for a SkyERP POST (which Laravel's `_method` may turn
    /// into a PUT), whether the body mentions PUT or PATCH.
    pub fn may_hash(&self, req: &Request) -> bool {
        let path = req
            .path
            .split_once('?')
            .map_or(req.path.as_str(), |(p, _)| p);
        let mentions = |word: &[u8]| {
            req.body
                .windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word))
        };
        match route(path) {
            None => false,
            Some(Route::Skypostal(_) | Route::AspNet) => true,
            Some(Route::SkyErp { .. }) => match req.method.as_str() {
                "GET" => false,
                "POST" => {
                    mentions(b"put")
                        || mentions(b"patch")
                        || req.headers.get("x-http-method-override").is_some()
                }
                _ => true,
            },
            Some(Route::CommerceLayer { id }) => id.is_some() && req.method == "PATCH",
        }
    }

    /// Answers one request. Never panics; an unknown route is a 404.
    pub fn handle(&self, req: Request) -> Response {
        let path = match req.path.split_once('?') {
            Some((p, _)) => p,
            None => req.path.as_str(),
        };
        let Some(route) = route(path) else {
            return not_found();
        };
        match route {
            Route::Skypostal(r) => self.skypostal(r, &req),
            Route::SkyErp { shop, token } => self.skyerp(shop, token, &req),
            Route::CommerceLayer { id } => self.commerce_layer(id, &req),
            Route::AspNet => self.aspnet(&req),
        }
    }

    fn skypostal(&self, route: skypostal::Route, req: &Request) -> Response {
        if req.method != "POST" {
            return skypostal::refuse(route, Refusal::MethodNotAllowed)
                .with_header("Allow", "POST");
        }
        if req.body.len() > MAX_BODY_BYTES {
            return skypostal::refuse(route, Refusal::TooLarge);
        }
        // WCF's JSON endpoints read JSON; no Content-Type is taken as JSON.
        let json = req.headers.get("content-type").is_none_or(|h| {
            let ct = media::ContentType::parse(h);
            ct.utf8() && (ct.is("application/json") || ct.is("text/json"))
        });
        if !json {
            return skypostal::refuse(route, Refusal::UnsupportedMediaType);
        }
        match route {
            skypostal::Route::Login => {
                skypostal::login(&self.store, &self.settings.skypostal, &req.body)
            }
            skypostal::Route::UpdatePassword => skypostal::update_password(&self.store, &req.body),
        }
    }

    fn skyerp(&self, shop: &str, token: Option<&str>, req: &Request) -> Response {
        let lang = Lang::from_accept_language(req.headers.get("accept-language"));
        let allow = skyerp::allowed_methods(token.is_some());
        let format = if req.method == "GET" {
            None
        } else {
            if req.body.len() > MAX_BODY_BYTES {
                return skyerp::refuse(Refusal::TooLarge, lang);
            }
            match req.headers.get("content-type") {
                Some(ct) => match BodyFormat::from_content_type(ct) {
                    Some(f) => Some(f),
                    None => return skyerp::refuse(Refusal::UnsupportedMediaType, lang),
                },
                None if req.body.is_empty() => None,
                None => return skyerp::refuse(Refusal::UnsupportedMediaType, lang),
            }
        };
        let call = skyerp::Call {
            method: &req.method,
            method_override: req.headers.get("x-http-method-override"),
            shop,
            token,
            lang,
            format,
            body: &req.body,
        };
        let r = skyerp::handle(&self.store, &call);
        with_allow(r, allow)
    }

    fn commerce_layer(&self, id: Option<&str>, req: &Request) -> Response {
        let allow = commerce_layer::allowed_methods(id.is_some());
        if req.body.len() > MAX_BODY_BYTES {
            return commerce_layer::refuse(Refusal::TooLarge);
        }
        let call = commerce_layer::Call {
            method: &req.method,
            id,
            authorization: req.headers.get("authorization"),
            content_type: req.headers.get("content-type"),
            body: &req.body,
        };
        with_allow(
            commerce_layer::handle(&self.store, &self.settings.commerce_layer, &call),
            allow,
        )
    }

    fn aspnet(&self, req: &Request) -> Response {
        let input = req
            .headers
            .get("content-type")
            .and_then(Input::from_content_type);
        let output = Output::negotiate(req.headers.get("accept"), input);
        if req.method != "POST" {
            return aspnet::refuse(Refusal::MethodNotAllowed, output).with_header("Allow", "POST");
        }
        if req.body.len() > MAX_BODY_BYTES {
            return aspnet::refuse(Refusal::TooLarge, output);
        }
        let Some(input) = input else {
            return aspnet::refuse(Refusal::UnsupportedMediaType, output);
        };
        aspnet::change_password(&self.store, input, &req.body, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_come_from_the_routing() {
        let t = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";
        assert_eq!(
            route_label(&format!(
                "/api/v1/acme12aa/customers/reset-password/{t}/?x=1"
            )),
            "/api/v1/acme12aa/customers/reset-password/{token}"
        );
        // Not routed (no shop): a 404, whose label still hides the token.
        assert_eq!(
            route_label(&format!("/api/v1//customers/reset-password/{t}")),
            "/api/v1//customers/reset-password/{token}"
        );
        let cl = "/api/customer_password_resets/xYZkjABcde";
        assert_eq!(route_label(cl), cl);
    }

    #[test]
    fn routes() {
        use skypostal::Route::*;
        let r = |p| route(p);
        assert_eq!(
            r("/wcf-services/service-customer.svc/customer/customer-update-password"),
            Some(Route::Skypostal(UpdatePassword))
        );
        assert_eq!(
            r("/wcf-services/service-customer.svc/customer/customer-registration"),
            Some(Route::Skypostal(Login))
        );
        assert_eq!(
            r("/WCF-Services/Service-Customer.svc/Customer/Customer-Login/"),
            Some(Route::Skypostal(Login))
        );
        assert_eq!(
            r("/api/v1/acme12aa/customers/reset-password"),
            Some(Route::SkyErp {
                shop: "acme12aa",
                token: None
            })
        );
        assert_eq!(
            r("/api/v1/acme12aa/customers/reset-password/abc"),
            Some(Route::SkyErp {
                shop: "acme12aa",
                token: Some("abc")
            })
        );
        assert_eq!(
            r("/api/customer_password_resets/xYZkjABcde"),
            Some(Route::CommerceLayer {
                id: Some("xYZkjABcde")
            })
        );
        assert_eq!(r("/api/customers/changepassword"), Some(Route::AspNet));
        for none in [
            "",
            "/",
            "api/Customers/ChangePassword",
            "/api/v1//customers/reset-password",
            "/api/customer_password_resets/a/b",
            "/api/Customers/ChangePassword/x",
            "/wcf-services/service-customer.svc/customer/other",
        ] {
            assert_eq!(r(none), None, "{none}");
        }
    }

    #[test]
    fn which_requests_may_hash() {
        let store = crate::Store::temporary(
            &crate::StoreSecret::from_bytes([1; 32]),
            crate::Config::for_tests(),
        )
        .unwrap();
        let g = Gateway::new(store, GatewaySettings::default());
        let may = |method: &str, path: &str, body: &str| {
            g.may_hash(&Request::new(method, path).body(body.as_bytes().to_vec()))
        };
        let base = "/api/v1/shop/customers/reset-password";
        assert!(may(
            "POST",
            "/wcf-services/service-customer.svc/customer/customer-login",
            ""
        ));
        assert!(may("POST", "/api/Customers/ChangePassword", ""));
        assert!(may("PUT", base, ""));
        assert!(may("POST", base, r#"{"_method":"Put","email":"a@b.co"}"#));
        assert!(!may("POST", base, r#"{"email":"a@b.co"}"#));
        assert!(!may("GET", &format!("{base}/token"), ""));
        assert!(!may("POST", "/api/customer_password_resets", "{}"));
        assert!(!may("GET", "/api/customer_password_resets/abcdefghij", ""));
        assert!(may(
            "PATCH",
            "/api/customer_password_resets/abcdefghij",
            "{}"
        ));
        assert!(!may("GET", "/nowhere", ""));
    }

    #[test]
    fn debug_shows_no_secrets() {
        let req = Request::new("POST", "/api/customer_password_resets")
            .header("Authorization", "Bearer 1656d700707ad9a77f737e5df3db088a")
            .body(b"{\"customer_password\":\"hunter2hunter2\"}".to_vec());
        let d = format!("{req:?}");
        assert!(!d.contains("1656d7") && !d.contains("hunter2"), "{d}");
        assert!(d.contains("Authorization"));
        assert_eq!(req.headers.get("authorization").map(str::len), Some(39));
    }
}
