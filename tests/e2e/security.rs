//! Issue 10's attacks, against the real server: concurrent guessing, the
//! demo's public bearer, slow clients, hostile imports, file modes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{APP_KEY, JSON, LOGIN_PATH, Server, agent, cli, login_body, send};

/// 64 concurrent wrong passwords for one account over HTTP: at most 5
/// answers name the password (were verified); the rest, and then the right
/// password, are refused as locked (location "customer").
#[test]
fn sixty_four_concurrent_wrong_passwords_over_http_verify_at_most_five() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--demo", "--argon2", "2048,1,1"],
    );
    let url = server.url(LOGIN_PATH);
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let a = agent();
                barrier.wait();
                let body = login_body("johndoe@email.com", &format!("guess-number-{i}"));
                let r = send(&a, "POST", &url, &[JSON], Some(&body));
                assert_eq!(r.status, 200, "{}", r.body);
                r.json()[0]["error"]["error_location"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let locations: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let verified = locations
        .iter()
        .filter(|l| *l == "customer_password")
        .count();
    let locked = locations.iter().filter(|l| *l == "customer").count();
    assert!(verified <= 5, "{verified} wrong passwords verified");
    assert_eq!(verified + locked, 64, "{locations:?}");
    let r = send(
        &agent(),
        "POST",
        &url,
        &[JSON],
        Some(&login_body("johndoe@email.com", "pass12345")),
    );
    let v = r.json();
    assert_eq!(v[0]["_verify"], false);
    assert_eq!(v[0]["error"]["error_location"], "customer");
    assert!(
        v[0]["error"]["error_description"]
            .as_str()
            .unwrap()
            .contains("locked")
    );
}

fn jsonapi(bearer: &str) -> [(&'static str, String); 2] {
    [
        ("Authorization", format!("Bearer {bearer}")),
        ("Content-Type", "application/vnd.api+json".to_owned()),
    ]
}

fn create_reset(server: &Server, bearer: &str, email: &str) -> super::Reply {
    let headers = jsonapi(bearer);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = json!({"data": {"type": "customer_password_resets",
                               "attributes": {"customer_email": email}}})
    .to_string();
    send(
        &agent(),
        "POST",
        &server.url("/api/customer_password_resets"),
        &headers,
        Some(&body),
    )
}

fn get_reset(server: &Server, bearer: &str, id: &str) -> super::Reply {
    let headers = jsonapi(bearer);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send(
        &agent(),
        "GET",
        &server.url(&format!("/api/customer_password_resets/{id}")),
        &headers,
        None,
    )
}

/// SPEC §7: seed 003's placeholder bearer works only while the server runs
/// with --demo, and only for the demo customer; a demo leaves no public
/// credential behind (and an app holding it from an older release is
/// disabled at start).
#[test]
fn the_placeholder_bearer_is_scoped_to_the_demo_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A real customer, and an app an older release's --demo left behind.
    let (code, _, err) = cli(
        &data,
        &["customer", "add", "--email", "jane@email.com"],
        "jane-pass-123\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &data,
        &["app", "import", "--user-code", "9003", "--name", "old demo"],
        "your-access-token\n",
    );
    assert_eq!(code, 0, "{err}");
    let jane_reset_id = {
        let server = Server::start(&data, &["--demo"]);
        // The real app's key still works for Jane.
        let r = create_reset(&server, APP_KEY, "jane@email.com");
        assert_eq!(r.status, 201, "{}", r.body);
        let jane_reset_id = r.json()["data"]["id"].as_str().unwrap().to_owned();
        // The placeholder: the demo customer only.
        let r = create_reset(&server, "your-access-token", "johndoe@email.com");
        assert_eq!(r.status, 201, "{}", r.body);
        let john_reset_id = r.json()["data"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            get_reset(&server, "your-access-token", &john_reset_id).status,
            200
        );
        for r in [
            create_reset(&server, "your-access-token", "jane@email.com"),
            create_reset(&server, "your-access-token", "nobody@email.com"),
            get_reset(&server, "your-access-token", &jane_reset_id),
        ] {
            assert_eq!(r.status, 401, "{}", r.body);
            assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
        }
        let stderr = server.stderr.lock().unwrap().clone();
        assert!(stderr.contains("disabled an app"), "{stderr}");
        jane_reset_id
    };
    let (_, apps, _) = cli(&data, &["app", "list"], "");
    assert!(apps.contains("9003") && apps.contains("disabled"), "{apps}");
    // Without --demo the placeholder opens nothing.
    let server = Server::start(&data, &[]);
    for r in [
        create_reset(&server, "your-access-token", "johndoe@email.com"),
        create_reset(&server, "your-access-token", "jane@email.com"),
        get_reset(&server, "your-access-token", &jane_reset_id),
    ] {
        assert_eq!(r.status, 401, "{}", r.body);
    }
}

/// SPEC §7: 500 connections trickling their headers a byte a second do not
/// starve a real client, and are closed by the header timeout.
#[test]
fn slow_clients_are_cut_off_and_do_not_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--demo", "--header-timeout", "3"],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            s
        })
        .collect();
    let request = b"POST /wcf-services/service-customer.svc/customer/customer-login HTTP/1.1\r\n";
    let started = Instant::now();
    let mut sent = 0;
    let mut answered_in = None;
    let mut closed = vec![false; slow.len()];
    while started.elapsed() < Duration::from_secs(8) {
        for (i, s) in slow.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            // A write to a closed connection fails (or is reset); a read
            // that returns 0 bytes means the server hung up.
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(_) => closed[i] = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => closed[i] = true,
            }
            if !closed[i] && s.write_all(&request[sent..=sent]).is_err() {
                closed[i] = true;
            }
        }
        sent = (sent + 1).min(request.len() - 1);
        if answered_in.is_none() && started.elapsed() > Duration::from_secs(1) {
            let t = Instant::now();
            let r = send(
                &agent(),
                "POST",
                &server.url(LOGIN_PATH),
                &[JSON],
                Some(&login_body("johndoe@email.com", "pass12345")),
            );
            assert_eq!(r.json()[0]["_verify"], true, "{}", r.body);
            answered_in = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let answered_in = answered_in.unwrap();
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} slow connections still open after 8 s");
}

/// SPEC §5.12 through the CLI: out-of-range ids are the line's error; with
/// the last id taken, `customer add` fails at once; nothing hangs.
#[test]
fn imports_keep_box_ids_in_range_and_nothing_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hash = "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS";
    let line = |id: u64, email: &str| {
        json!({"box_id": id, "email": email, "password_hash": hash}).to_string()
    };
    let lines = [
        line(0, "zero@email.com"),
        line(1 << 53, "past@email.com"),
        line(u64::MAX, "max@email.com"),
        line((1 << 53) - 1, "last@email.com"),
    ]
    .join("\n");
    let t = Instant::now();
    let (code, out, err) = cli(&data, &["customer", "import", "-"], &lines);
    assert_ne!(code, 0);
    for n in 1..=3 {
        assert!(
            err.contains(&format!("line {n}")) && err.contains("box_id"),
            "{err}"
        );
    }
    assert!(!err.contains("line 4"), "{err}");
    assert!(out.contains('1'), "{out}");
    let (code, _, err) = cli(
        &data,
        &["customer", "add", "--email", "new@email.com"],
        "new-pass-123\n",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("box_id") && err.contains("9007199254740991"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let (code, _, err) = cli(&data, &["check"], "");
    assert_eq!(code, 0, "{err}");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// SPEC §4, §7: the data directory is 0700, its files 0600, mail files
/// 0600; a directory others can read is warned about.
#[cfg(unix)]
#[test]
fn the_data_directory_and_mail_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outbox = dir.path().join("outbox");
    {
        let server = Server::start(
            &data,
            &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
        );
        let r = send(
            &agent(),
            "POST",
            &server.url("/api/v1/acme12aa/customers/reset-password"),
            &[JSON],
            Some(r#"{"email":"johndoe@email.com"}"#),
        );
        assert_eq!(r.status, 200);
        let mails = super::wait_for_files(&outbox, 1);
        assert_eq!(mode(&mails[0]), 0o600);
        assert_eq!(mode(&outbox), 0o700);
        server.terminate();
    }
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    for sub in [data.clone(), data.join("wal")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 3, "{files}");
    let secret = dir.path().join("data.secret");
    assert_eq!(mode(&secret), 0o600);
    // Opened up by someone: every command warns.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = cli(&data, &["stats"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("mode 0755") && err.contains("chmod 700"),
        "{err}"
    );
}

/// SPEC §7: at most --max-connections connections are served at once; the
/// next one waits in the accept queue until a slot frees (here: when the
/// idle connections hit the header timeout), then is served.
#[test]
fn the_connection_bound_holds_and_frees_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--demo", "--max-connections", "8", "--header-timeout", "2"],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = send(
        &agent(),
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body("johndoe@email.com", "pass12345")),
    );
    let waited = t.elapsed();
    assert_eq!(r.json()[0]["_verify"], true, "{}", r.body);
    // Served only once the idle connections were cut off (~2 s after they
    // opened), not at once.
    assert!(
        waited >= Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(6), "answered after {waited:?}");
    drop(idle);
}
