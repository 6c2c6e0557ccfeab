//! The axum router hosts mount: every documented route of SPEC §6, through
//! the [`Gateway`], registered explicitly (no fallback), so that it merges
//! into a host's own router beside its routes and its own fallback.
//!
//! ```no_run
//! # async fn host(store: credstore::Store) {
//! use credstore::http::Routes;
//! use credstore::axum::{Router, routing::get};
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .merge(Routes::new(store).build())
//!     .fallback(|| async { "the host's own 404" });
//! # let _ = app; }
//! ```
//!
//! Every request runs on tokio's blocking pool (the store blocks: argon2,
//! `fdatasync`). Only hashing is bounded: a request that may hash
//! ([`Gateway::may_hash`]) first waits, asynchronously, for one of the
//! store's hashing slots ([`crate::Config::with_hashing_limit`], shared
//! with [`crate::AsyncStore`]), so that a flood of logins neither parks the
//! blocking pool's threads nor delays requests that hash nothing (token
//! checks, reset requests); the slot is given back as soon as the hash is
//! done, so a request waiting for its disk sync holds none. One log line
//! per request (method, route, status, latency), never a secret: the route
//! label replaces a token in the path by `{token}`. [`server`] serves a
//! router with bounds on what a client may hold.
//!
//! Reset mails wait in the store's queue: run a [`crate::mail::Courier`]
//! beside the router to deliver them.

pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response as AxumResponse;
use axum::routing::any;

use crate::codec::MAX_BODY_BYTES;
use crate::gateway::{Gateway, GatewaySettings, Request, Response};
use crate::ops::Store;

#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    body_timeout: Duration,
}

/// How long a request's body may take to arrive, by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The documented routes (SPEC §6), as axum paths.
pub const ROUTES: [&str; 9] = [
    "/wcf-services/service-customer.svc/customer/customer-update-password",
    "/wcf-services/service-customer.svc/customer/customer-registration",
    "/wcf-services/service-customer.svc/customer/customer-login",
    "/api/v1/{shop}/customers/reset-password",
    "/api/v1/{shop}/customers/reset-password/{token}",
    "/api/customer_password_resets",
    "/api/customer_password_resets/{id}",
    "/api/Customers/ChangePassword",
    "/api/customers/changepassword",
];

/// Builds the router: the store, then settings with sensible defaults.
#[derive(Debug, Clone)]
pub struct Routes {
    store: Store,
    settings: GatewaySettings,
    body_timeout: Duration,
}

impl Routes {
    /// The routes over `store`, with default settings: no WCF display
    /// offset, links on `http://127.0.0.1:8080`, Commerce Layer in test
    /// mode, a 10 s body timeout.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            settings: GatewaySettings::default(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }

    /// All the codecs' settings at once.
    pub fn settings(mut self, settings: GatewaySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Where reset links point (`https://shop.example/reset/{token}`, or a
    /// base to which the SkyERP path is appended).
    pub fn reset_link_base(mut self, base: impl Into<String>) -> Self {
        self.settings = self.settings.with_reset_link_base(base);
        self
    }

    /// A request whose body has not fully arrived after this is answered
    /// 408 and its connection closed.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The router, for any host state `S` (merge it into the host's).
    pub fn build<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        routes(AppState {
            gateway: Arc::new(Gateway::new(self.store, self.settings)),
            body_timeout: self.body_timeout,
        })
    }
}

fn routes<S: Clone + Send + Sync + 'static>(state: AppState) -> Router<S> {
    let mut router = Router::new();
    for path in ROUTES {
        router = router.route(path, any(handle));
    }
    router.with_state(state)
}

/// The reference server's router (`credstore serve`): the documented
/// routes over `gateway`, and every other path to the gateway too, which
/// answers it in the format the path names (the WCF paths in any case, a
/// trailing slash) or with its JSON 404. Hosts use [`Routes`], which has no
/// fallback.
pub fn reference_router(gateway: Arc<Gateway>, body_timeout: Duration) -> Router {
    let state = AppState {
        gateway,
        body_timeout,
    };
    routes(state.clone()).fallback(handle).with_state(state)
}

/// The path as logged: a reset token in a SkyERP path becomes `{token}`
/// (the gateway's routing decides which segment is the token).
pub fn route_label(path: &str) -> String {
    crate::gateway::route_label(path)
}

async fn handle(State(state): State<AppState>, req: AxumRequest) -> AxumResponse {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let label = route_label(parts.uri.path());
    let mut greq = Request::new(method.clone(), parts.uri.path().to_owned());
    greq.query = parts.uri.query().map(str::to_owned);
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            greq.headers.append(name.as_str(), v);
        }
    }
    // Read at most one byte past the limit: the gateway then answers 413 in
    // the route's own format without the rest ever being buffered.
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES + 1);
    greq.body = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(b)) => b.to_vec(),
        Ok(Err(_)) => vec![0u8; MAX_BODY_BYTES + 1],
        Err(_) => {
            tracing::info!(method = %method, route = %label, status = 408, "request body timed out");
            return into_axum(request_timeout());
        }
    };
    let permit = if state.gateway.may_hash(&greq) {
        match state
            .gateway
            .store()
            .hashing_admission()
            .acquire_owned()
            .await
        {
            Ok(p) => Some(p),
            Err(_) => return into_axum(internal_error()),
        }
    } else {
        None
    };
    let gateway = state.gateway.clone();
    let joined = tokio::task::spawn_blocking(move || match permit {
        // Held until the request's first hash is done, not across its
        // commit: a request waiting for its disk sync holds no slot.
        Some(permit) => crate::crypto::admit_hashing(Box::new(permit), || gateway.handle(greq)),
        None => gateway.handle(greq),
    })
    .await;
    let response = joined.unwrap_or_else(|_| {
        tracing::error!(method = %method, route = %label, "the request's handler panicked");
        internal_error()
    });
    let status = response.status;
    tracing::info!(
        method = %method,
        route = %label,
        status,
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    into_axum(response)
}

fn internal_error() -> Response {
    Response {
        status: 500,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: b"internal error".to_vec(),
    }
}

fn request_timeout() -> Response {
    Response {
        status: 408,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Connection".into(), "close".into()),
        ],
        body: br#"{"status":408,"message":"the request body did not arrive in time"}"#.to_vec(),
    }
}

fn into_axum(r: Response) -> AxumResponse {
    let mut out = AxumResponse::new(Body::from(r.body));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            headers.append(k, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_label_hides_tokens() {
        let t = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";
        let l = route_label(&format!(
            "/api/v1/acme12aa/customers/reset-password/{t}?x=1"
        ));
        assert_eq!(l, "/api/v1/acme12aa/customers/reset-password/{token}");
        assert!(!l.contains(t));
        assert_eq!(
            route_label("/api/v1/acme12aa/customers/reset-password"),
            "/api/v1/acme12aa/customers/reset-password"
        );
        assert_eq!(
            route_label("/api/customer_password_resets/xYZkjABcde"),
            "/api/customer_password_resets/xYZkjABcde"
        );
    }
}
