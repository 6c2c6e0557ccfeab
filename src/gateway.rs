//! The transport-agnostic gateway: `(method, path, headers, body)` in,
//! `(status, headers, body)` out, for every route of SPEC §6.
//!
//! It finds the route and checks its row of the preflight table (both in
//! `gateway/routing.rs`: the method, 405; the body's size, 413; its media
//! type, 415), answering a refusal in the route's own format; it negotiates
//! JSON or XML for the ASP.NET route and hands the rest to the route's
//! codec. Calls that hash a
//! password run argon2 on the calling thread: an async host calls
//! [`Gateway::handle`] from a blocking pool (`spawn_blocking`).

mod request;
mod routing;

use std::fmt;

use crate::codec::Refusal;
use crate::codec::aspnet::{self, Input, Output};
use crate::codec::commerce_layer::{self, CommerceLayerSettings, DemoBearer};
use crate::codec::skyerp::{self, Lang, SkyErpSettings};
use crate::codec::skypostal::{self, SkypostalSettings};
use crate::codec::wcf_date::WcfOffset;
use crate::ops::Store;
use routing::{Format, Route, preflight, route};
#[cfg_attr(not(feature = "server"), allow(unused_imports))]
pub(crate) use routing::{OTHER_ROUTE, route_template};

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
    ///
    /// The route's row of the preflight table (`gateway/routing.rs`) is
    /// checked first; a refusal is answered in the route's own format, and
    /// every 405 carries the route's `Allow`.
    pub fn handle(&self, req: Request) -> Response {
        let path = match req.path.split_once('?') {
            Some((p, _)) => p,
            None => req.path.as_str(),
        };
        let Some(route) = route(path) else {
            return not_found();
        };
        let pre = preflight(&route);
        let r = match pre.check(&req) {
            Ok(format) => self.dispatch(route, format, &req),
            Err(refusal) => refuse(route, refusal, &req),
        };
        with_allow(r, pre.allow)
    }

    fn dispatch(&self, route: Route<'_>, format: Format, req: &Request) -> Response {
        match route {
            Route::Skypostal(skypostal::Route::Login) => {
                skypostal::login(&self.store, &self.settings.skypostal, &req.body)
            }
            Route::Skypostal(skypostal::Route::UpdatePassword) => {
                skypostal::update_password(&self.store, &req.body)
            }
            Route::SkyErp { shop, token } => {
                let call = skyerp::Call {
                    method: &req.method,
                    method_override: req.headers.get("x-http-method-override"),
                    shop,
                    token,
                    lang: lang(req),
                    format: match format {
                        Format::SkyErp(f) => f,
                        _ => None,
                    },
                    body: &req.body,
                };
                skyerp::handle(&self.store, &call)
            }
            Route::CommerceLayer { id } => {
                let call = commerce_layer::Call {
                    method: &req.method,
                    id,
                    authorization: req.headers.get("authorization"),
                    content_type: req.headers.get("content-type"),
                    body: &req.body,
                };
                commerce_layer::handle(&self.store, &self.settings.commerce_layer, &call)
            }
            Route::AspNet => match format {
                Format::AspNet(input) => {
                    aspnet::change_password(&self.store, input, &req.body, output(req))
                }
                // The preflight reads every ASP.NET body's format.
                _ => aspnet::refuse(Refusal::UnsupportedMediaType, output(req)),
            },
        }
    }
}

/// SkyERP's language, from `Accept-Language`.
fn lang(req: &Request) -> Lang {
    Lang::from_accept_language(req.headers.get("accept-language"))
}

/// ASP.NET's answer format, negotiated from `Accept` and the body's format.
fn output(req: &Request) -> Output {
    let input = req
        .headers
        .get("content-type")
        .and_then(Input::from_content_type);
    Output::negotiate(req.headers.get("accept"), input)
}

/// A refusal of the preflight, in the route's own format.
fn refuse(route: Route<'_>, refusal: Refusal, req: &Request) -> Response {
    match route {
        Route::Skypostal(r) => skypostal::refuse(r, refusal),
        Route::SkyErp { .. } => skyerp::refuse(refusal, lang(req)),
        Route::CommerceLayer { .. } => commerce_layer::refuse(refusal),
        Route::AspNet => aspnet::refuse(refusal, output(req)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One order for every route: method, then size, then media type; a GET
    /// of a SkyERP token path reads no body.
    #[test]
    fn the_preflight_checks_method_then_size_then_media_type() {
        use crate::codec::MAX_BODY_BYTES;
        let req = |method: &str, len: usize, ct: &str| {
            Request::new(method, "/")
                .header("Content-Type", ct)
                .body(vec![b'{'; len])
        };
        let big = MAX_BODY_BYTES + 1;
        let aspnet = preflight(&Route::AspNet);
        assert_eq!(
            aspnet.check(&req("GET", big, "x/y")),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            aspnet.check(&req("POST", big, "x/y")),
            Err(Refusal::TooLarge)
        );
        assert_eq!(
            aspnet.check(&req("POST", 2, "x/y")),
            Err(Refusal::UnsupportedMediaType)
        );
        assert_eq!(
            aspnet.check(&req("POST", 2, "application/xml")),
            Ok(Format::AspNet(Input::Xml))
        );
        let skyerp = preflight(&Route::SkyErp {
            shop: "s",
            token: Some("t"),
        });
        assert_eq!(skyerp.allow, "GET, PUT, POST");
        assert_eq!(skyerp.check(&req("GET", big, "x/y")), Ok(Format::Unread));
        assert_eq!(
            skyerp.check(&req("DELETE", big, "x/y")),
            Err(Refusal::TooLarge)
        );
        let cl = preflight(&Route::CommerceLayer { id: None });
        assert_eq!(cl.check(&req("POST", 2, "x/y")), Ok(Format::Unread));
        let wcf = preflight(&Route::Skypostal(skypostal::Route::Login));
        assert_eq!(
            wcf.check(&Request::new("POST", "/").body(vec![b'{'; 2])),
            Ok(Format::Json)
        );
    }

    #[test]
    fn route_templates_come_from_the_routing() {
        let t = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";
        assert_eq!(
            route_template(&format!(
                "/api/v1/acme12aa/customers/reset-password/{t}/?x=1"
            )),
            "/api/v1/{shop}/customers/reset-password/{token}"
        );
        // Not routed (no shop): a 404, labelled `other`.
        assert_eq!(
            route_template(&format!("/api/v1//customers/reset-password/{t}")),
            OTHER_ROUTE
        );
        assert_eq!(
            route_template("/api/customer_password_resets/xYZkjABcde"),
            "/api/customer_password_resets/{id}"
        );
        assert_eq!(
            route_template("/WCF-services/service-customer.svc/customer/Customer-Registration/"),
            "/wcf-services/service-customer.svc/customer/customer-registration"
        );
        assert_eq!(
            route_template("/wcf-services/service-customer.svc/customer/customer-login"),
            "/wcf-services/service-customer.svc/customer/customer-login"
        );
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
