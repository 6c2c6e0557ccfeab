//! TLS to PostgreSQL against the server at `CREDSTORE_POSTGRES_URL`, whose
//! certificate (`.ci/postgres.sh`) names 127.0.0.1 only and chains to the CA
//! at `CREDSTORE_TEST_POSTGRES_CA`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use r2d2_postgres::postgres::{Client, NoTls};

use super::tests::{from_ci, opts, read, schema, server};
use super::*;
use crate::store::schema::TreeId;

/// The test server's CA; `None` outside CI without one (the test is skipped).
fn test_ca() -> Option<PathBuf> {
    from_ci("CREDSTORE_TEST_POSTGRES_CA").map(PathBuf::from)
}

fn with_ca(ca: Option<PathBuf>) -> EngineOptions {
    EngineOptions {
        postgres_ca_file: ca,
        ..opts()
    }
}

/// A name the backend's connections carry (`application_name`), unique.
fn app_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "credstore_tls_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the server sees TLS on the connections named `app`: (how many,
/// how many of them encrypted), asked on a connection of the test's own.
fn encrypted(server: &str, app: &str) -> (i64, i64) {
    let mut c = Client::connect(server, NoTls).unwrap();
    let row = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// A write and its read back through the backend.
fn round_trip(b: &PostgresBackend) {
    b.transact(&|tx| tx.put(TreeId::Customers, b"tls", b"yes".to_vec()))
        .unwrap();
    assert_eq!(read(b, b"tls"), Some(b"yes".to_vec()));
}

#[test]
fn sslmode_require_and_verify_full_connect_over_tls_to_a_server_of_the_ca() {
    let (Some(server), Some(ca)) = (server(), test_ca()) else {
        return;
    };
    for mode in ["require", "verify-full", "verify-ca"] {
        let app = app_name();
        let url = format!("{}&sslmode={mode}&application_name={app}", schema(&server));
        let b = PostgresBackend::open(&url, &with_ca(Some(ca.clone()))).unwrap();
        round_trip(&b);
        let (all, tls) = encrypted(&server, &app);
        assert!(all >= 1, "{mode}: no connection named {app}");
        assert_eq!(tls, all, "{mode}: {all} connections, {tls} encrypted");
    }
}

#[test]
fn without_sslmode_the_connection_is_not_encrypted_as_before() {
    let Some(server) = server() else { return };
    let app = app_name();
    let url = format!("{}&application_name={app}", schema(&server));
    // The CA file changes nothing when the URL does not ask for TLS.
    let b = PostgresBackend::open(&url, &with_ca(test_ca())).unwrap();
    round_trip(&b);
    let (all, tls) = encrypted(&server, &app);
    assert!(all >= 1);
    assert_eq!(tls, 0, "{all} connections, {tls} encrypted");
}

/// A certificate of an unknown CA, or one that does not name the host the
/// URL names, is refused (no connection, no schema), and the error says
/// it is the certificate.
#[test]
fn an_unknown_ca_or_another_host_name_is_refused() {
    let (Some(server), Some(ca)) = (server(), test_ca()) else {
        return;
    };
    let url = format!("{}&sslmode=require", schema(&server));
    // The certificate names 127.0.0.1 only.
    assert!(url.contains("@127.0.0.1:"), "{url}");
    let by_name = url.replace("@127.0.0.1:", "@localhost:");
    let cases = [
        ("Mozilla's roots", url.clone(), None, "UnknownIssuer"),
        ("another host name", by_name, Some(ca), "not valid for name"),
    ];
    std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(what, url, ca, cause)| {
                s.spawn(move || {
                    (
                        what,
                        cause,
                        PostgresBackend::open(url, &with_ca(ca.clone())),
                    )
                })
            })
            .collect();
        for run in runs {
            let (what, cause, result) = run.join().unwrap();
            let e = result.err().unwrap_or_else(|| panic!("{what}: connected"));
            let msg = e.to_string();
            assert!(
                msg.contains("invalid peer certificate") && msg.contains(cause),
                "{what}: {msg}"
            );
        }
    });
}

#[test]
fn a_ca_file_must_hold_a_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (path, expect) in [(&empty, "no PEM certificate"), (&missing, "missing.pem")] {
        let e = tls(Some(path)).err().expect("a connector");
        let msg = e.to_string();
        assert!(
            msg.contains("PostgreSQL CA file") && msg.contains(expect),
            "{msg}"
        );
    }
    assert!(tls(None).is_ok());
}

#[test]
fn sslmode_is_read_from_the_query_or_the_pairs_only() {
    for (url, names) in [
        ("postgresql://u@h/db?sslmode=require", true),
        ("postgresql://u@h/db?options=x&sslmode=disable", true),
        ("postgresql://u:sslmode=require@h/db", false),
        ("postgresql://u@h/db?application_name=sslmode", false),
        ("host=h user=u sslmode=require", true),
        ("host=h user=u", false),
    ] {
        assert_eq!(names_sslmode(url), names, "{url}");
    }
    let plain = pg_config("postgresql://u@h/db").unwrap();
    assert_eq!(plain.get_ssl_mode(), SslMode::Disable);
    let full = pg_config("postgresql://u@h/db?sslmode=verify-full").unwrap();
    assert_eq!(full.get_ssl_mode(), SslMode::Require);
    let prefer = pg_config("host=h sslmode=prefer").unwrap();
    assert_eq!(prefer.get_ssl_mode(), SslMode::Prefer);
}

#[test]
fn loopback_hosts_are_told_apart() {
    for (url, loopback) in [
        ("postgresql://u@127.0.0.1/db", true),
        ("postgresql://u@localhost/db", true),
        ("postgresql://u@[::1]/db", true),
        ("host=/run/postgresql user=u", true),
        ("postgresql://u@db.example.com/db", false),
        ("postgresql://u@10.0.0.5/db", false),
    ] {
        assert_eq!(on_loopback(&pg_config(url).unwrap()), loopback, "{url}");
    }
}
