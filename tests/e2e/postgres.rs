//! Two `credstore serve --postgres URL` processes on one database (SPEC
//! §13, issue 18): 16 clients spread over both. Each test has a schema of
//! its own on the server at `CREDSTORE_POSTGRES_URL` (the tests fail
//! without it when `CI=true`, and are skipped otherwise).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use serde_json::json;

use super::backend::{drop_postgres_schema, fresh_postgres_schema, postgres_url};
use super::{
    APP_KEY, JOHN_KEY, JSON, LOGIN_PATH, Reply, Server, UPDATE_PATH, agent, cli, field,
    import_legacy, legacy_vectors, send,
};

const CLIENTS: usize = 16;

/// A schema, a secret file, and the arguments that point a command at them.
struct Db {
    base: String,
    schema: String,
    url: String,
    secret: PathBuf,
    _dir: tempfile::TempDir,
}

impl Db {
    fn new() -> Option<Db> {
        let base = postgres_url()?;
        let (schema, url) = fresh_postgres_schema(&base);
        let dir = tempfile::tempdir().unwrap();
        Some(Db {
            base,
            schema,
            url,
            secret: dir.path().join("store.secret"),
            _dir: dir,
        })
    }

    fn args(&self) -> Vec<&str> {
        vec![
            "--postgres",
            &self.url,
            "--secret-file",
            self.secret.to_str().unwrap(),
        ]
    }

    /// An admin command on the database (exit code, stdout, stderr).
    fn cli(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut all = self.args();
        all.extend_from_slice(args);
        // `--data` points nowhere: with --postgres it is not used.
        cli(Path::new("/nonexistent/credstore-data"), &all, stdin)
    }

    fn serve(&self) -> Server {
        let mut extra = self.args();
        extra.push("--demo");
        Server::start(Path::new("/nonexistent/credstore-data"), &extra)
    }

    /// Registers a customer through the CLI: (box_id, key).
    fn add_customer(&self, email: &str, password: &str) -> (u64, String) {
        let (code, out, err) = self.cli(
            &["customer", "add", "--email", email],
            &format!("{password}\n"),
        );
        assert_eq!(code, 0, "{err}");
        let key = field(&out, "customer_key");
        let box_id = field(&out, "box_id").parse().unwrap();
        (box_id, key)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        drop_postgres_schema(&self.base, &self.schema);
    }
}

fn login(a: &ureq::Agent, server: &str, email: &str, password: &str) -> Reply {
    let body = json!({"user_code": 396, "app_key": APP_KEY, "customer_email": email,
        "customer_password": password});
    send(
        a,
        "POST",
        &format!("{server}{LOGIN_PATH}"),
        &[JSON],
        Some(&body.to_string()),
    )
}

fn logs_in(a: &ureq::Agent, server: &str, email: &str, password: &str) -> bool {
    login(a, server, email, password).json()[0]["_verify"] == true
}

/// Both servers up on one fresh database (the first seeds the demo
/// parties; the second finds them).
fn two_servers() -> Option<(Db, Server, Server)> {
    let db = Db::new()?;
    let a = db.serve();
    let b = db.serve();
    Some((db, a, b))
}

#[test]
fn a_password_changed_through_one_instance_logs_in_through_the_other() {
    let Some((_db, one, two)) = two_servers() else {
        return;
    };
    let a = agent();
    assert!(logs_in(&a, &two.base, "johndoe@email.com", "pass12345"));
    let body = json!({"user_code": 396, "app_key": APP_KEY, "customer_box_id": 811111,
        "customer_key": JOHN_KEY, "customer_email": "johndoe@email.com",
        "customer_new_password": "changed-on-one"});
    let r = send(
        &a,
        "POST",
        &one.url(UPDATE_PATH),
        &[JSON],
        Some(&body.to_string()),
    );
    assert_eq!(r.json()[0]["_verify"], true, "{}", r.body);
    assert!(logs_in(
        &a,
        &two.base,
        "johndoe@email.com",
        "changed-on-one"
    ));
    assert!(!logs_in(&a, &two.base, "johndoe@email.com", "pass12345"));
}

#[test]
fn one_reset_token_consumed_by_sixteen_clients_over_two_instances_has_one_winner() {
    let Some((_db, one, two)) = two_servers() else {
        return;
    };
    let a = agent();
    let auth = format!("Bearer {APP_KEY}");
    let h = [
        ("Accept", "application/vnd.api+json"),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/vnd.api+json"),
    ];
    let create = json!({"data": {"type": "customer_password_resets",
        "attributes": {"customer_email": "johndoe@email.com"}}});
    let r = send(
        &a,
        "POST",
        &one.url("/api/customer_password_resets"),
        &h,
        Some(&create.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["data"]["id"].as_str().unwrap().to_owned();
    let token = r.json()["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bases = [one.base.clone(), two.base.clone()];
    let start = Arc::new(Barrier::new(CLIENTS));
    let statuses: Vec<(usize, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (start, base, id, token, auth) =
                    (start.clone(), &bases[i % 2], &id, &token, &auth);
                s.spawn(move || {
                    let a = agent();
                    let h = [
                        ("Accept", "application/vnd.api+json"),
                        ("Authorization", auth.as_str()),
                        ("Content-Type", "application/vnd.api+json"),
                    ];
                    let patch = json!({"data": {"type": "customer_password_resets", "id": id,
                        "attributes": {"customer_password": format!("winner-{i}"),
                                       "_reset_password_token": token}}});
                    start.wait();
                    let r = send(
                        &a,
                        "PATCH",
                        &format!("{base}/api/customer_password_resets/{id}"),
                        &h,
                        Some(&patch.to_string()),
                    );
                    (i, r.status)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = statuses
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(_, s)| *s == 200 || (400..500).contains(s)),
        "{statuses:?}"
    );
    let password = format!("winner-{}", winners[0]);
    for base in &bases {
        assert!(logs_in(&a, base, "johndoe@email.com", &password));
    }
}

#[test]
fn sixty_four_wrong_passwords_over_two_instances_verify_at_most_five() {
    let Some((db, one, two)) = two_servers() else {
        return;
    };
    db.add_customer("locked@example.com", "right-password-1");
    let bases = [one.base.clone(), two.base.clone()];
    let start = Arc::new(Barrier::new(CLIENTS));
    let locations: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (start, bases) = (start.clone(), &bases);
                s.spawn(move || {
                    let a = agent();
                    start.wait();
                    (0..4)
                        .map(|k| {
                            let r = login(
                                &a,
                                &bases[(i + k) % 2],
                                "locked@example.com",
                                "wrong-password",
                            );
                            assert_eq!(r.status, 200, "{}", r.body);
                            r.json()[0]["error"]["error_location"]
                                .as_str()
                                .unwrap()
                                .to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(locations.len(), 64);
    let verified = locations
        .iter()
        .filter(|l| *l == "customer_password")
        .count();
    let locked = locations.iter().filter(|l| *l == "customer").count();
    eprintln!(
        "64 wrong passwords over two instances: {verified} verified, {locked} refused as locked"
    );
    assert!(
        (1..=5).contains(&verified),
        "{verified} verified: {locations:?}"
    );
    assert_eq!(verified + locked, 64, "{locations:?}");
    // The right password is refused too, through either instance.
    let a = agent();
    for base in &bases {
        let r = login(&a, base, "locked@example.com", "right-password-1");
        assert_eq!(
            r.json()[0]["error"]["error_location"],
            "customer",
            "{}",
            r.body
        );
    }
}

#[test]
fn an_app_added_while_both_instances_run_works_on_both() {
    let Some((db, one, two)) = two_servers() else {
        return;
    };
    let (code, out, err) = db.cli(&["app", "add", "--user-code", "501", "--name", "Late"], "");
    assert_eq!(code, 0, "{err}");
    let key = field(&out, "app_key");
    let a = agent();
    for server in [&one, &two] {
        let body = json!({"user_code": 501, "app_key": key, "customer_email": "johndoe@email.com",
            "customer_password": "pass12345"});
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&body.to_string()),
        );
        assert_eq!(r.json()[0]["_verify"], true, "{}", r.body);
        let wrong = json!({"user_code": 501, "app_key": "0".repeat(32),
            "customer_email": "johndoe@email.com", "customer_password": "pass12345"});
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&wrong.to_string()),
        );
        assert_eq!(
            r.json()[0]["error"]["error_location"],
            "app_key",
            "{}",
            r.body
        );
    }
    // An admin command reads what the servers wrote, while they run.
    let (code, out, err) = db.cli(&["check"], "");
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn kill_9_of_one_instance_loses_no_acknowledged_change() {
    let Some((db, one, two)) = two_servers() else {
        return;
    };
    const WRITERS: usize = 8;
    let customers: Vec<(u64, String)> = (0..WRITERS)
        .map(|w| db.add_customer(&format!("kill{w}@example.com"), "kill-password-0"))
        .collect();
    let acked = Mutex::new(vec![0u64; WRITERS]);
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let (one_base, two_base) = (one.base.clone(), two.base.clone());
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let (acked, stop, failures, customers) = (&acked, &stop, &failures, &customers);
            let (one_base, two_base) = (&one_base, &two_base);
            s.spawn(move || {
                let a = agent();
                while !stop.load(Ordering::Relaxed) {
                    if t < WRITERS {
                        // Sequential password changes through the instance
                        // that is killed; each acknowledged one recorded.
                        let (box_id, key) = &customers[t];
                        let next = acked.lock().unwrap()[t] + 1;
                        let body = json!({"user_code": 396, "app_key": APP_KEY,
                            "customer_box_id": box_id, "customer_key": key,
                            "customer_email": format!("kill{t}@example.com"),
                            "customer_new_password": format!("kill-password-{next}")});
                        let r = send(
                            &a,
                            "POST",
                            &format!("{one_base}{UPDATE_PATH}"),
                            &[JSON],
                            Some(&body.to_string()),
                        );
                        if r.status == 200 && r.json()[0]["_verify"] == true {
                            let mut g = acked.lock().unwrap();
                            g[t] = g[t].max(next);
                        }
                    } else {
                        // Readers and bookkeeping writes through the survivor.
                        let r = login(&a, two_base, "johndoe@email.com", "pass12345");
                        if r.status != 200 {
                            failures.lock().unwrap().push(r.body);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let (_, status) = one.signal("KILL");
        assert!(!status.success());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let acked = acked.into_inner().unwrap();
    eprintln!("kill -9 during writes: acknowledged password changes per writer {acked:?}");
    assert!(
        acked.iter().all(|n| *n > 0),
        "a writer got nothing acknowledged: {acked:?}"
    );
    let a = agent();
    for (w, n) in acked.iter().enumerate() {
        // The acknowledged password, or the one in flight at the kill.
        let found = (*n..*n + 2).any(|k| {
            logs_in(
                &a,
                &two_base,
                &format!("kill{w}@example.com"),
                &format!("kill-password-{k}"),
            )
        });
        assert!(
            found,
            "writer {w}: acknowledged password {n} not visible through the survivor"
        );
    }
    let (code, out, err) = db.cli(&["check"], "");
    assert_eq!(code, 0, "{out}{err}");
}

/// SPEC §13's move: a sled store with legacy-hash customers, apps, an
/// outstanding reset and events → `dump` → `restore` into PostgreSQL →
/// every customer logs in with the same password and key, the token still
/// works, the integrity check passes; a restore under another secret is
/// refused and leaves nothing behind.
#[test]
fn a_sled_store_dumped_and_restored_into_postgres_keeps_logins_and_tokens() {
    let Some(db) = Db::new() else { return };
    let vs = legacy_vectors();
    let vs = &vs[..3];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import_legacy(&data, vs);
    let (code, out, err) = cli(
        &data,
        &[
            "app",
            "import",
            "--user-code",
            "396",
            "--name",
            "Partner",
            "--shop",
            "acme12aa",
        ],
        &format!("{APP_KEY}\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(
        &data,
        &["customer", "add", "--email", "fresh@example.com"],
        "fresh-password-1\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    let key = field(&out, "customer_key");
    let (code, out, err) = cli(
        &data,
        &["reset", "issue", "--email", "legacy1@example.com"],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    let token = field(&out, "token");
    let dump = dir.path().join("store.jsonl");
    let (code, out, err) = cli(&data, &["dump", dump.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(!text.contains("fresh-password-1") && !text.contains(&token) && !text.contains(&key));

    // Another secret: refused before anything is created.
    let other = dir.path().join("other.secret");
    std::fs::write(&other, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, out, err) = cli(
        Path::new("/nonexistent"),
        &[
            "--postgres",
            &db.url,
            "--secret-file",
            other.to_str().unwrap(),
            "restore",
            dump.to_str().unwrap(),
        ],
        "",
    );
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("wrong store secret"), "{err}");
    // The store's own secret: restored (into the schema the refusal left empty).
    std::fs::copy(data.with_extension("secret"), &db.secret).unwrap();
    let (code, out, err) = db.cli(&["restore", dump.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 customers, 1 apps"), "{out}");
    let (code, out, err) = db.cli(&["check"], "");
    assert_eq!(code, 0, "{out}{err}");
    // A second restore into the now full store is refused.
    let (code, _, err) = db.cli(&["restore", dump.to_str().unwrap()], "");
    assert_ne!(code, 0);
    assert!(err.contains("empty store"), "{err}");

    let server = db.serve();
    let a = agent();
    for (i, v) in vs.iter().enumerate() {
        let r = login(
            &a,
            &server.base,
            &format!("legacy{i}@example.com"),
            &v.password,
        );
        assert_eq!(r.json()[0]["_verify"], true, "legacy {i}: {}", r.body);
        assert_eq!(r.json()[0]["customer_box_id"], 5000 + i as u64);
    }
    let r = login(&a, &server.base, "fresh@example.com", "fresh-password-1");
    assert_eq!(r.json()[0]["customer_key"], key.as_str(), "{}", r.body);
    // The outstanding token, issued on sled, works on PostgreSQL.
    let base = "/api/v1/acme12aa/customers/reset-password";
    let r = send(
        &a,
        "GET",
        &server.url(&format!("{base}/{token}")),
        &[],
        None,
    );
    assert_eq!(r.json()["success"], true, "{}", r.body);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = format!(
        "_method=PUT&email=legacy1%40example.com&password=moved-new-1&password2=moved-new-1&token={token}"
    );
    let r = send(&a, "POST", &server.url(base), &form, Some(&body));
    assert_eq!(r.json()["message"], "Contraseña actualizada", "{}", r.body);
    assert!(logs_in(
        &a,
        &server.base,
        "legacy1@example.com",
        "moved-new-1"
    ));
}
