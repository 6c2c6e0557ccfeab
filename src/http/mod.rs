//! The axum router hosts mount: every route of SPEC §6 through the
//! [`Gateway`]. Every request runs on tokio's blocking pool (the store
//! blocks: argon2, `fdatasync`). Only hashing is bounded: a request that may
//! hash ([`Gateway::may_hash`]) first waits, asynchronously, for one of the
//! store's hashing slots, so that a flood of logins neither parks the
//! blocking pool's threads nor delays requests that hash nothing (token
//! checks, reset requests). The slot is given back as soon as the request's
//! hash is done: a request waiting for its disk sync holds none. One log line per request (method, route, status, latency), never a
//! secret: the route label replaces a token in the path by `{token}`.
//! [`server`] serves the router with bounds on what a client may hold.

pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request as AxumRequest, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response as AxumResponse;
use tokio::sync::Semaphore;

use crate::codec::MAX_BODY_BYTES;
use crate::gateway::{Gateway, Request, Response};

#[derive(Clone)]
struct AppState {
    gateway: Arc<Gateway>,
    /// One permit per hashing slot of the store.
    hashing: Arc<Semaphore>,
    body_timeout: Duration,
}

/// How long a request's body may take to arrive, by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A router serving every documented route through `gateway`. At most
/// `hashing` requests that may hash run at once (use the store's
/// [`crate::Store::hashing_limit`]); other requests never wait for them.
pub fn router(gateway: Arc<Gateway>, hashing: usize) -> Router {
    router_with(gateway, hashing, DEFAULT_BODY_TIMEOUT)
}

/// [`router`] with a body timeout: a request whose body has not fully
/// arrived after `body_timeout` is answered 408 and its connection closed.
pub fn router_with(gateway: Arc<Gateway>, hashing: usize, body_timeout: Duration) -> Router {
    let state = AppState {
        gateway,
        hashing: Arc::new(Semaphore::new(hashing.max(1))),
        body_timeout,
    };
    Router::new().fallback(handle).with_state(state)
}

/// The path as logged: a reset token in a SkyERP path becomes `{token}`.
pub fn route_label(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let marker = "/customers/reset-password/";
    match path.find(marker) {
        Some(i) if path.len() > i + marker.len() => {
            format!("{}{{token}}", &path[..i + marker.len()])
        }
        _ => path.to_owned(),
    }
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
        match state.hashing.clone().acquire_owned().await {
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
