//! A first look at credstore: open a store, add a partner app, register a
//! customer, log in, change the password, read the event log.
//!
//! `cargo run --release --example quickstart [DATA_DIR]`

use credstore::{Config, NewCustomer, Password, Store, StoreSecret};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp;
    let data = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("credstore-data")
        }
    };
    // A real host keeps the secret in a file outside the data directory.
    let secret = StoreSecret::generate()?;
    let store = Store::open(&data, &secret, Config::default())?;
    println!("opened a store at {}", data.display());

    let (app, app_key) = store.create_app(396, "Example partner", Some("acme12aa"))?;
    println!(
        "created app {} ({}); its key is shown once: {}",
        app.user_code,
        app.name,
        app_key.expose_secret()
    );

    let (customer, key) = store.register(NewCustomer::new(
        "johndoe@email.com",
        "John",
        "Doe",
        Password::new("pass12345")?,
    ))?;
    println!("registered box_id {} <{}>", customer.box_id, customer.email);

    let login = store.login("johndoe@email.com", &Password::new("pass12345")?)?;
    println!(
        "logged in as {} {}; key matches: {}",
        login.customer.first_name,
        login.customer.last_name,
        login.key.ct_eq(&key)
    );

    match store.login("johndoe@email.com", &Password::new("wrong-password")?) {
        Err(e) => println!("wrong password refused: {e}"),
        Ok(_) => println!("unexpected: wrong password accepted"),
    }

    store.update_password(
        customer.box_id,
        &key,
        "johndoe@email.com",
        &Password::new("a-new-passphrase")?,
    )?;
    println!(
        "password changed; old one now: {}",
        match store.login("johndoe@email.com", &Password::new("pass12345")?) {
            Ok(_) => "accepted (unexpected)".to_string(),
            Err(e) => format!("refused ({e})"),
        }
    );

    println!("event log:");
    for e in store.events(0, 100)? {
        println!(
            "  #{} {} {:?} {:?} box_id={:?} user_code={:?}",
            e.seq, e.at, e.kind, e.outcome, e.box_id, e.user_code
        );
    }
    let report = store.check_integrity()?;
    println!(
        "integrity: {} customers, {} apps, {} events, sound: {}",
        report.customers,
        report.apps,
        report.events,
        report.is_sound()
    );
    Ok(())
}
