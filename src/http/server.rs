//! A bounded HTTP/1.1 server for the router (SPEC §7): what a client may
//! hold is limited, so that slow or idle clients cannot starve real ones.
//!
//! - every request's headers must arrive within [`ServerLimits::header_timeout`]
//!   of the connection opening or of the previous response (hyper's header
//!   read timeout, which also closes idle keep-alive connections);
//! - its body within the router's body timeout ([`super::Routes::body_timeout`]);
//! - at most [`ServerLimits::max_connections`] connections are served at
//!   once: beyond that, new ones wait in the kernel's accept queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's headers must arrive within this time; an idle
    /// keep-alive connection is closed after it (default 10 s).
    pub header_timeout: Duration,
    /// Connections served at once (default 1024).
    pub max_connections: usize,
    /// At shutdown, requests in flight get this long to finish (default 4 s).
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(4),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (up to [`ServerLimits::shutdown_grace`]).
/// Accept errors (e.g. too many open files) are logged and retried after a
/// pause; they never stop the server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A connection slot first: when all are taken, stop accepting.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A timed-out or reset connection is the client's business.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {:?}; stopping",
            limits.shutdown_grace
        );
    }
}
