//! The admin port's router (SPEC §14), for the people who run credstore:
//! serve it on its own listener (`credstore serve --admin-listen`, default
//! `127.0.0.1:9464`), never beside the public routes.
//!
//! - `GET /health/alive`: 200 `{"status":"ok"}` while the process answers;
//! - `GET /health/ready`: 200 `{"status":"ok"}` when the instance should
//!   get traffic, else 503 with one line of JSON saying why
//!   ([`Readiness`]: the store's failed state, a stuck mail queue);
//! - `GET /metrics` (with [`Admin::prometheus`], feature `prometheus`): the
//!   Prometheus text format of [`crate::metrics`]'s families.
//!
//! ```no_run
//! # async fn host(store: credstore::Store) {
//! use credstore::http::admin::Admin;
//! use credstore::readiness::Readiness;
//!
//! let admin: credstore::axum::Router = Admin::new(Readiness::new(store)).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await.unwrap();
//! credstore::axum::serve(listener, admin).await.unwrap();
//! # }
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::readiness::Readiness;

/// The admin router's parts.
#[derive(Debug, Clone)]
pub struct Admin {
    readiness: Readiness,
    #[cfg(feature = "prometheus")]
    prometheus: Option<crate::metrics::Prometheus>,
}

impl Admin {
    /// Health and readiness by `readiness`; no `/metrics` until
    /// [`Admin::prometheus`].
    pub fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            #[cfg(feature = "prometheus")]
            prometheus: None,
        }
    }

    /// Serves `/metrics` from `prometheus` (installed once per process).
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn prometheus(mut self, prometheus: crate::metrics::Prometheus) -> Self {
        self.prometheus = Some(prometheus);
        self
    }

    /// The router: `/health/alive`, `/health/ready`, and `/metrics` when
    /// an exporter was given; every other path is a 404.
    pub fn build<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let router = Router::new()
            .route("/health/alive", get(alive))
            .route("/health/ready", get(ready));
        #[cfg(feature = "prometheus")]
        let router = if self.prometheus.is_some() {
            router.route("/metrics", get(metrics))
        } else {
            router
        };
        router.with_state(self)
    }
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const OK: &str = r#"{"status":"ok"}"#;

async fn alive() -> Response {
    json(StatusCode::OK, OK.to_owned())
}

async fn ready(State(admin): State<Admin>) -> Response {
    // The check reads the mail queue: off the executor.
    let checked = tokio::task::spawn_blocking(move || admin.readiness.check()).await;
    match checked {
        Ok(Ok(())) => json(StatusCode::OK, OK.to_owned()),
        Ok(Err(not_ready)) => json(StatusCode::SERVICE_UNAVAILABLE, not_ready.to_json()),
        Err(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable","reason":"the readiness check failed"}"#.to_owned(),
        ),
    }
}

#[cfg(feature = "prometheus")]
async fn metrics(State(admin): State<Admin>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let prometheus = admin.prometheus.as_ref()?;
        crate::metrics::observe_readiness(admin.readiness.check().is_ok());
        Some(prometheus.render(admin.readiness.store()))
    })
    .await;
    match rendered {
        Ok(Some(text)) => {
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
