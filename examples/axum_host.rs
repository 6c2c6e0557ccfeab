//! A host application that embeds credstore: its own routes and its own
//! fallback, its own mailer, credstore's documented routes merged in, and
//! the async façade in a handler of its own.
//!
//! `cargo run --example axum_host` listens on `127.0.0.1:3000` (or
//! `HOST_LISTEN`), with a throwaway store holding the seeds' demo parties,
//! so that the seeds' example requests work against it:
//!
//! ```sh
//! curl -s localhost:3000/hello
//! curl -s -X POST localhost:3000/wcf-services/service-customer.svc/customer/customer-registration \
//!   -H 'Content-Type: application/json' \
//!   -d '{"user_code":396,"app_key":"1656d700707ad9a77f737e5df3db088a","customer_email":"johndoe@email.com","customer_password":"pass12345"}'
//! curl -s -X POST localhost:3000/account/login -d 'johndoe@email.com pass12345'
//! ```

use std::time::Duration;

use credstore::axum::Router;
use credstore::axum::extract::State;
use credstore::axum::http::StatusCode;
use credstore::axum::routing::{get, post};
use credstore::mail::{Courier, CourierSettings};
use credstore::{AsyncStore, Config, MailError, Mailer, Password, ResetMail, Store, StoreSecret};

/// The host's own mail transport. `send` runs on the courier's threads,
/// never on an async worker and never inside a store transaction, so a
/// host with an async mail client may `block_on` a runtime handle here.
pub struct HostMailer;

impl Mailer for HostMailer {
    fn send(&self, mail: &ResetMail) -> Result<(), MailError> {
        // A real host hands the mail to its mail service; the token and the
        // link are secrets: never log them.
        println!(
            "host: a reset mail for {} (reset {})",
            mail.to(),
            mail.reset_id()
        );
        Ok(())
    }
}

/// The host's own login handler, on the async façade: the argon2 work runs
/// on the blocking pool, so the host's other routes stay responsive.
async fn account_login(State(store): State<AsyncStore>, body: String) -> (StatusCode, String) {
    let Some((email, password)) = body.trim().split_once(' ') else {
        return (StatusCode::BAD_REQUEST, "send: EMAIL PASSWORD".into());
    };
    let Ok(password) = Password::new(password) else {
        return (StatusCode::BAD_REQUEST, "password too long".into());
    };
    match store.login(email, password).await {
        Ok(login) => (
            StatusCode::OK,
            format!("welcome, {}", login.customer.first_name),
        ),
        Err(e) if e.is_fault() => (StatusCode::INTERNAL_SERVER_ERROR, "try again".into()),
        Err(_) => (StatusCode::UNAUTHORIZED, "no".into()),
    }
}

/// The host's router: its routes, credstore's, its fallback.
pub fn app(store: Store) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello from the host" }))
        .route("/account/login", post(account_login))
        .with_state(AsyncStore::new(store.clone()))
        .merge(
            credstore::http::Routes::new(store)
                .reset_link_base("https://shop.example/reset/{token}")
                .build(),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "the host's own 404") })
}

/// A store in a temporary directory with the seeds' demo parties.
pub fn demo_store(dir: &std::path::Path) -> Result<Store, credstore::Error> {
    let secret = StoreSecret::generate()?;
    let store = Store::open(dir.join("credstore-data"), &secret, Config::default())?;
    credstore::demo::seed(&store)?;
    Ok(store)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = demo_store(dir.path())?;
    // Reset mails wait in the store's queue; the courier delivers them
    // through the host's mailer on threads of its own.
    let courier = Courier::new(
        store.clone(),
        HostMailer,
        CourierSettings::new("https://shop.example/reset/{token}"),
    )
    .spawn()?;
    let listen = std::env::var("HOST_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("host listening on http://{}", listener.local_addr()?);
        credstore::axum::serve(listener, app(store))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    courier.stop(Duration::from_secs(3));
    Ok(())
}
