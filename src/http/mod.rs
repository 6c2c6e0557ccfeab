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
//! A request that may hash ([`Gateway::may_hash`]) runs on tokio's
//! blocking pool (argon2 takes 10–25 ms), once it got one of the store's
//! hashing slots ([`crate::Config::with_hashing_limit`], shared with
//! [`crate::AsyncStore`]), waited for asynchronously, so that a flood of
//! logins neither parks the blocking pool's threads nor delays requests
//! that hash nothing; the slot is given back as soon as the hash is done,
//! so a request waiting for its disk sync holds none. A request that
//! hashes nothing (token checks, reset requests, answers to bad input)
//! runs on the async worker that received it when the store is on disk
//! with its write-ahead log: its commits return once logged, and the
//! answer is held until one syncing task on the blocking pool has made
//! them durable (`durable.rs`; the store's `deferring`). No answer is ever
//! sent for a change that is not durable; if the sync fails, the request
//! runs again against the store, in its failed state now, so that the
//! answer is the route's own fault. Other backends (PostgreSQL, temporary
//! stores) run every request on the blocking pool. One log line
//! per request (method, route, status, latency), never a secret: the route
//! is its template ([`route_template`]: `{shop}`, `{token}`, `{id}`, never
//! the path's own segments). Each request is also counted for the
//! operators' metrics ([`crate::metrics`]: by route template, method and
//! status, with its latency), which cost next to nothing until a recorder
//! is installed. [`server`] serves a router with bounds on what a client
//! may hold; [`admin`] is the router of the admin port (health, readiness,
//! metrics), never merged into the public one.
//!
//! Reset mails wait in the store's queue: run a [`crate::mail::Courier`]
//! beside the router to deliver them.

pub mod admin;
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
use crate::durable;
use crate::gateway::{Gateway, GatewaySettings, Request, Response};
use crate::ops::Store;

#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    body_timeout: Duration,
    /// For requests answered on the worker (`None`: the store's commits
    /// cannot be deferred; every request runs on the blocking pool).
    syncer: Option<Arc<durable::Syncer>>,
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
        let syncer = durable::Syncer::for_store(&self.store);
        routes(AppState {
            gateway: Arc::new(Gateway::new(self.store, self.settings)),
            body_timeout: self.body_timeout,
            syncer,
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
    let syncer = durable::Syncer::for_store(gateway.store());
    let state = AppState {
        gateway,
        body_timeout,
        syncer,
    };
    routes(state.clone()).fallback(handle).with_state(state)
}

/// The route of a path as logged and counted: its template, one of
/// [`ROUTES`] (`/api/v1/{shop}/customers/reset-password/{token}`), or
/// `other` for a path no route serves. The path's own segments (a token, a
/// shop, a reset id) never appear. See [`route_template`].
pub fn route_label(path: &str) -> String {
    route_template(path).to_owned()
}

/// The template of the route that serves `path`, as the [`Gateway`]'s own
/// routing decides it (the WCF and ASP.NET paths in any case, a trailing
/// slash allowed, a `?query` ignored), or `other`. A fixed set, so that it
/// can label metrics.
pub fn route_template(path: &str) -> &'static str {
    crate::gateway::route_template(path)
}

/// The route label of a path that no route serves.
pub const OTHER_ROUTE: &str = crate::gateway::OTHER_ROUTE;

async fn handle(State(state): State<AppState>, req: AxumRequest) -> AxumResponse {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let label = route_template(parts.uri.path());
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
            let latency = start.elapsed();
            tracing::info!(
                method = %method,
                route = %label,
                status = 408,
                latency_ms = latency.as_secs_f64() * 1000.0,
                "request body timed out"
            );
            crate::metrics::request(label, &method, 408, latency);
            return into_axum(request_timeout());
        }
    };
    let permit = if state.gateway.may_hash(&greq) {
        let waiting = Instant::now();
        let admission = state
            .gateway
            .store()
            .hashing_admission()
            .acquire_owned()
            .await;
        crate::metrics::hashing_admission(waiting.elapsed());
        match admission {
            Ok(p) => Some(p),
            Err(_) => return into_axum(internal_error()),
        }
    } else {
        None
    };
    let response = match (&state.syncer, permit) {
        (Some(syncer), None) => on_worker(&state.gateway, syncer, greq, &method, label).await,
        (_, permit) => on_blocking_pool(&state.gateway, permit, greq, &method, label).await,
    };
    let status = response.status;
    let latency = start.elapsed();
    tracing::info!(
        method = %method,
        route = %label,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
    crate::metrics::request(label, &method, status, latency);
    into_axum(response)
}

/// Answers on the blocking pool: a request that may hash (holding its
/// hashing slot until the first hash is done), or any request when the
/// store's commits cannot be deferred.
async fn on_blocking_pool(
    gateway: &Arc<Gateway>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    greq: Request,
    method: &str,
    label: &str,
) -> Response {
    let gateway = gateway.clone();
    let joined = tokio::task::spawn_blocking(move || match permit {
        // Held until the request's first hash is done, not across its
        // commit: a request waiting for its disk sync holds no slot.
        Some(permit) => crate::crypto::admit_hashing(Box::new(permit), || gateway.handle(greq)),
        None => gateway.handle(greq),
    })
    .await;
    joined.unwrap_or_else(|_| {
        tracing::error!(method = %method, route = %label, "the request's handler panicked");
        internal_error()
    })
}

/// Answers a request that hashes nothing on the worker that received it:
/// its commits return once logged, and the answer waits until the syncer
/// made them durable (`durable.rs`). If that sync fails, their outcome is
/// unknown and the answer is the route's own fault: the request runs again
/// on the blocking pool, where the store, in its failed state now, refuses
/// its write (a plain 500 if it did not try one this time).
async fn on_worker(
    gateway: &Arc<Gateway>,
    syncer: &Arc<durable::Syncer>,
    greq: Request,
    method: &str,
    label: &str,
) -> Response {
    let again = greq.clone();
    let (handled, deferred) = gateway.store().deferring(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gateway.handle(greq)))
    });
    let response = handled.unwrap_or_else(|_| {
        tracing::error!(method = %method, route = %label, "the request's handler panicked");
        internal_error()
    });
    let Some(deferred) = deferred else {
        return response;
    };
    if syncer.durable(deferred).await.is_ok() {
        return response;
    }
    let gateway = gateway.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let (answer, tried) = Store::tries_to_write(|| gateway.handle(again));
        if tried { answer } else { internal_error() }
    })
    .await;
    joined.unwrap_or_else(|_| internal_error())
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
    fn route_label_hides_tokens_shops_and_ids() {
        let t = "h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr";
        let l = route_label(&format!(
            "/api/v1/acme12aa/customers/reset-password/{t}?x=1"
        ));
        assert_eq!(l, "/api/v1/{shop}/customers/reset-password/{token}");
        assert!(!l.contains(t));
        assert_eq!(
            route_label("/api/v1/acme12aa/customers/reset-password"),
            "/api/v1/{shop}/customers/reset-password"
        );
        assert_eq!(
            route_label("/api/customer_password_resets/xYZkjABcde"),
            "/api/customer_password_resets/{id}"
        );
        assert_eq!(route_label("/johndoe@email.com/secret"), "other");
    }

    /// The templates match exactly the paths the gateway serves: a path
    /// labelled `other` gets the gateway's own 404, any other path does not.
    #[test]
    fn route_templates_agree_with_the_gateway() {
        let store = crate::Store::temporary(
            &crate::StoreSecret::from_bytes([2; 32]),
            crate::Config::for_tests(),
        )
        .unwrap();
        let g = Gateway::new(store, GatewaySettings::default());
        let not_found = br#"{"status":404,"message":"Not found"}"#.to_vec();
        let mut paths: Vec<String> = Vec::new();
        for route in ROUTES {
            let filled = route
                .replace("{shop}", "acme12aa")
                .replace("{token}", "abc")
                .replace("{id}", "xYZkjABcde");
            paths.push(filled.clone());
            paths.push(format!("{filled}/"));
            paths.push(format!("{filled}?q=1"));
            paths.push(filled.to_uppercase());
            paths.push(format!("{filled}/extra"));
            paths.push(filled.replacen('/', "//", 2));
        }
        paths.extend(
            [
                "",
                "/",
                "//",
                "/api",
                "/api/v1//customers/reset-password",
                "/api/v1//customers/reset-password/x",
                "/api/customer_password_resets//",
                "/api/customer_password_resets/a/b",
                "/wcf-services/service-customer.svc/customer/other",
                "/api/Customers/ChangePassword/x",
                "/a/b/c/d/e/f/g/h/i",
                "/metrics",
                "/health/ready",
            ]
            .map(str::to_owned),
        );
        for path in paths {
            let label = route_template(&path);
            assert!(label == OTHER_ROUTE || ROUTES.contains(&label), "{path}");
            for method in ["GET", "POST", "DELETE"] {
                let answer = g.handle(Request::new(method, path.clone()));
                let gateway_unknown = answer.status == 404 && answer.body == not_found;
                assert_eq!(
                    label == OTHER_ROUTE,
                    gateway_unknown,
                    "{method} {path:?}: labelled {label}, gateway answered {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
        }
    }
}
