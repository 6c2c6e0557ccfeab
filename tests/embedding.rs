//! A host's first hour: `examples/axum_host.rs` (its own routes, fallback
//! and mailer, credstore's routes merged in) answers seed 001 as
//! documented and keeps its own routes; the async façade keeps a 2-worker
//! runtime responsive under concurrent logins.
#![cfg(feature = "server")]

#[allow(dead_code)]
#[path = "../examples/axum_host.rs"]
mod axum_host;

use std::time::{Duration, Instant};

use credstore::{AsyncStore, Config, NewCustomer, Password, Store, StoreSecret};
use serde_json::Value;

/// Serves `app` on 127.0.0.1 from a runtime of `workers` worker threads;
/// returns the runtime (keep it) and the base URL.
fn serve(app: credstore::axum::Router, workers: usize) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { credstore::axum::serve(listener, app).await });
    (rt, base)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn seed(name: &str, after: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/seeds")
            .join(name),
    )
    .unwrap();
    let rest = &doc[doc.find(after).unwrap()..];
    let rest = &rest[rest.find("```").unwrap()..];
    let start = rest.find('\n').unwrap() + 1;
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_owned()
}

#[test]
fn the_example_host_serves_its_routes_and_credstores() {
    let dir = tempfile::tempdir().unwrap();
    let store = axum_host::demo_store(dir.path()).unwrap();
    let (_rt, base) = serve(axum_host::app(store), 2);
    let a = agent();

    let mut r = a.get(format!("{base}/hello")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.body_mut().read_to_string().unwrap(),
        "hello from the host"
    );

    // Seed 001 exactly as documented, through the host.
    let request = seed("001_8ff053be87066d3c.txt", "should be run as");
    let expected: Value =
        serde_json::from_str(&seed("001_8ff053be87066d3c.txt", "will return")).unwrap();
    let mut r = a
        .post(format!(
            "{base}/wcf-services/service-customer.svc/customer/customer-registration"
        ))
        .header("Content-Type", "application/json")
        .send(request.as_bytes())
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    // The demo's WCF offset is the demo gateway's setting; the host uses
    // the default (UTC): the same instants, written without the offset.
    let strip = |v: &Value| v.to_string().replace("-0500", "");
    assert_eq!(strip(&got), strip(&expected), "seed 001");

    // The host's own login route on the async façade.
    let mut r = a
        .post(format!("{base}/account/login"))
        .send("johndoe@email.com pass12345".as_bytes())
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body_mut().read_to_string().unwrap(), "welcome, John");

    // Unknown paths reach the host's fallback, not credstore's 404.
    for path in ["/nowhere", "/api/v1", "/api/customer_password_resets/a/b"] {
        let mut r = a.get(format!("{base}{path}")).call().unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.body_mut().read_to_string().unwrap(), "the host's own 404");
    }
    // credstore's routes answer in their own formats.
    let mut r = a
        .get(format!(
            "{base}/api/v1/acme12aa/customers/reset-password/short"
        ))
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["success"], false);
}

/// 8 concurrent logins through the async façade on a 2-worker runtime: the
/// host's own route keeps answering in under 50 ms (p99). Called from a
/// plain async handler, `Store::login` would hold both workers for the
/// length of the hashes (seen: 1.05 s).
#[test]
fn logins_on_the_async_facade_leave_the_runtime_responsive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("data"),
        &StoreSecret::from_bytes([5; 32]),
        Config::default(),
    )
    .unwrap();
    for i in 0..8 {
        store
            .register(NewCustomer::new(
                format!("c{i}@example.com"),
                "C",
                "D",
                Password::new("right-password").unwrap(),
            ))
            .unwrap();
    }
    let facade = AsyncStore::new(store);
    let app = credstore::axum::Router::new().route(
        "/hello",
        credstore::axum::routing::get(|| async { "hello" }),
    );
    let (rt, base) = serve(app, 2);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins: Vec<_> = (0..8)
        .map(|i| {
            let (facade, done) = (facade.clone(), done.clone());
            rt.spawn(async move {
                let mut n = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let pw = Password::new("right-password").unwrap();
                    facade.login(format!("c{i}@example.com"), pw).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let a = agent();
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let r = a.get(format!("{base}/hello")).call().unwrap();
            assert_eq!(r.status(), 200);
            let took = t.elapsed();
            std::thread::sleep(Duration::from_millis(10));
            took
        })
        .collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u32 = logins.into_iter().map(|h| rt.block_on(h).unwrap()).sum();
    times.sort();
    let p99 = times[98];
    assert!(total >= 8, "the logins ran: {total}");
    // Issue 16's figure is for a release build (`cargo test --release --test
    // embedding`); a debug build on a loaded CI machine gets 3x the room,
    // which still fails the handler that blocks (p99 288 ms to 1.05 s seen).
    eprintln!("host route p99 {p99:?} during {total} logins");
    let bound = Duration::from_millis(if cfg!(debug_assertions) { 150 } else { 50 });
    assert!(p99 < bound, "p99 {p99:?} (bound {bound:?}), logins {total}");
    drop(facade);
}
