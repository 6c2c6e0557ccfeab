//! End to end: the real `credstore` binary, on 127.0.0.1 only.
//!
//! The server runs with cheap argon2 parameters (`CREDSTORE_ARGON2`) so that
//! the suite stays fast; the load test runs 4 s by default and
//! `CREDSTORE_LOAD_SECS=30` runs the full 30 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "support/backend.rs"]
mod backend;
#[path = "e2e/mail.rs"]
mod mail;
#[path = "e2e/ops.rs"]
mod ops;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/security.rs"]
mod security;

const BIN: &str = env!("CARGO_BIN_EXE_credstore");
const CHEAP: &str = "8,1,1";
const APP_KEY: &str = "1656d700707ad9a77f737e5df3db088a";
const JOHN_KEY: &str = "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=";

fn seed_doc(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seeds");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Runs an admin command; returns (exit code, stdout, stderr).
fn cli(data: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        // The tests name their store; CI exports the PostgreSQL URL for them.
        .env_remove("CREDSTORE_POSTGRES_URL")
        .arg("--data")
        .arg(data)
        .args(args)
        .env("CREDSTORE_ARGON2", CHEAP)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A legacy hash of the test vectors and its password.
#[derive(serde::Deserialize)]
struct LegacyVector {
    password: String,
    hash: String,
}

fn legacy_vectors() -> Vec<LegacyVector> {
    serde_json::from_str(include_str!("vectors/legacy-hashes.json")).unwrap()
}

/// Imports `vs` into the store at `data` as customers `legacy{i}@example.com`
/// with box_id 5000 + i (through `customer import`); returns its output.
fn import_legacy(data: &Path, vs: &[LegacyVector]) -> String {
    let mut jsonl = String::new();
    for (i, v) in vs.iter().enumerate() {
        jsonl.push_str(
            &json!({"box_id": 5000 + i, "email": format!("legacy{i}@example.com"), "first_name": "L",
                    "last_name": format!("{i}"), "password_hash": v.hash,
                    "enrolment_date": "2019-02-21T15:03:28Z"})
            .to_string(),
        );
        jsonl.push('\n');
    }
    let file = data.with_extension("legacy.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    let (code, out, err) = cli(data, &["customer", "import", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// The value of the `name: value` line of a command's output.
fn field(out: &str, name: &str) -> String {
    let prefix = format!("{name}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        .to_owned()
}

struct Server {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data, extra, &[])
    }

    fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            // The tests name their store; CI exports the PostgreSQL URL for them.
            .env_remove("CREDSTORE_POSTGRES_URL")
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("CREDSTORE_ARGON2", CHEAP)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("credstore listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Server {
            child,
            base,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGTERM, then wait; returns how long the exit took.
    fn terminate(self) -> (Duration, std::process::ExitStatus) {
        self.signal("TERM")
    }

    /// Sends the signal (`TERM`, `KILL`), then waits; returns how long the
    /// exit took.
    fn signal(mut self, signal: &str) -> (Duration, std::process::ExitStatus) {
        let t = Instant::now();
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (t.elapsed(), status);
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The files of `dir` once there are `n` of them (mail leaves from a queue,
/// so it lands shortly after the answer); fails after 10 s.
fn wait_for_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let t = Instant::now();
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= n {
            assert_eq!(files.len(), n, "{files:?}");
            return files;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} of {n} files in {} after 10 s",
            files.len(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn send(
    a: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(body.unwrap_or("").as_bytes().to_vec())
        .unwrap();
    let mut resp = match a.run(req) {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                status: 0,
                content_type: String::new(),
                body: format!("transport error: {e}"),
            };
        }
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        content_type,
        body,
    }
}

const LOGIN_PATH: &str = "/wcf-services/service-customer.svc/customer/customer-registration";
const UPDATE_PATH: &str = "/wcf-services/service-customer.svc/customer/customer-update-password";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn login_body(email: &str, password: &str) -> String {
    json!({"user_code": 396, "app_key": APP_KEY, "customer_email": email, "customer_password": password}).to_string()
}

/// The text between the first pair of ``` fences after `after`.
fn fenced(doc: &str, after: &str) -> String {
    let start = doc.find(after).unwrap();
    let rest = &doc[start..];
    let open = rest.find("```").unwrap();
    let rest = &rest[open..];
    let body_start = rest.find('\n').unwrap() + 1;
    let close = rest[body_start..].find("```").unwrap();
    rest[body_start..body_start + close].to_owned()
}

#[test]
fn every_seed_example_request_gets_its_documented_response() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outbox = dir.path().join("outbox");
    let server = Server::start(
        &data,
        &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
    );
    let a = agent();

    // Seed 001: login, the request exactly as documented.
    let doc = seed_doc("001_8ff053be87066d3c.txt");
    let req = fenced(&doc, "should be run as");
    let expected: Value = serde_json::from_str(&fenced(&doc, "will return")).unwrap();
    let r = send(&a, "POST", &server.url(LOGIN_PATH), &[JSON], Some(&req));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), expected, "seed 001");

    // Seed 000: update password.
    let doc = seed_doc("000_ca26fdd2513df67a.txt");
    let req = fenced(&doc, "should be run as");
    let expected: Value = serde_json::from_str(&fenced(&doc, "will return")).unwrap();
    let r = send(&a, "POST", &server.url(UPDATE_PATH), &[JSON], Some(&req));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), expected, "seed 000");

    // Seed 002: POST (documented with a trailing comma: strict JSON without it).
    let base = "/api/v1/acme12aa/customers/reset-password";
    let r = send(
        &a,
        "POST",
        &server.url(base),
        &[JSON],
        Some(r#"{"_method": "POST", "email": "johndoe@email.com"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": 200, "success": true, "locale": "es",
               "message": "Enviado email para restablecer la clave de acceso",
               "data": {"email": "johndoe@email.com"}})
    );
    let mail: Value = {
        let files = wait_for_files(&outbox, 1);
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap()
    };
    assert_eq!(mail["to"], "johndoe@email.com");
    let token = mail["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    assert!(mail["link"].as_str().unwrap().ends_with(&token));
    assert!(
        !server.stderr.lock().unwrap().contains(&token),
        "the token reached the log"
    );
    // GET with the token, then the seed's example token (unknown).
    let r = send(
        &a,
        "GET",
        &server.url(&format!("{base}/{token}")),
        &[],
        None,
    );
    assert_eq!(
        r.json(),
        json!({"status": 200, "success": true, "locale": "es", "message": "Token válido",
               "data": {"email": "johndoe@email.com"}})
    );
    let r = send(
        &a,
        "GET",
        &server.url(&format!(
            "{base}/h9ha9hs9hashahshaosihuahs98wh9ha9hs9hashahshaosihuahs98wasasassr"
        )),
        &[],
        None,
    );
    assert_eq!(
        r.json(),
        json!({"status": 200, "success": false, "locale": "es",
               "message": "Token inválido (no encontrado o caducado)", "data": {"email": null}})
    );
    // PUT with the token added.
    let put = json!({"_method": "PUT", "email": "johndoe@email.com", "password": "asasasasasasas",
                     "password2": "asasasasasasas", "token": token});
    let r = send(
        &a,
        "PUT",
        &server.url(base),
        &[JSON],
        Some(&put.to_string()),
    );
    assert_eq!(
        r.json(),
        json!({"status": 200, "success": true, "locale": "es", "message": "Contraseña actualizada",
               "data": {"email": "johndoe@email.com"}})
    );
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body("johndoe@email.com", "asasasasasasas")),
    );
    assert_eq!(r.json()[0]["_verify"], true);

    // Seed 003: the verbatim PATCH (no token, placeholder bearer) gets the 422.
    let patch = r#"{
  "data": {
    "type": "customer_password_resets",
    "id": "xYZkjABcde",
    "attributes": {
      "customer_password": "secret"
    }
  }
}"#;
    let jsonapi = [
        ("Accept", "application/vnd.api+json"),
        ("Authorization", "Bearer your-access-token"),
        ("Content-Type", "application/vnd.api+json"),
    ];
    let r = send(
        &a,
        "PATCH",
        &server.url("/api/customer_password_resets/xYZkjABcde"),
        &jsonapi,
        Some(patch),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.content_type.starts_with("application/vnd.api+json"),
        "{}",
        r.content_type
    );
    let err = &r.json()["errors"][0];
    assert_eq!(err["status"], "422");
    assert_eq!(
        err["source"]["pointer"],
        "/data/attributes/_reset_password_token"
    );

    // Seed 004: JSON and XML samples with real values and a correct digest.
    let key = credstore::AppKey::new(APP_KEY).unwrap();
    let digest = |salt: i64, pw: &str| {
        credstore::change_password_digest(
            &key,
            "396",
            salt,
            "johndoe@email.com",
            "johndoe@email.com",
            JOHN_KEY,
            pw,
        )
    };
    let body = json!({
        "User": {"UserName": "johndoe@email.com", "Email": "johndoe@email.com", "Key": JOHN_KEY},
        "UserNewPassword": "aspnet-json-1", "UserName": "396", "Salt": 123456789,
        "Digest": digest(123456789, "aspnet-json-1"),
    });
    let r = send(
        &a,
        "POST",
        &server.url("/api/Customers/ChangePassword"),
        &[JSON],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"Success": true, "Message": "Password changed", "Extra1": "811111", "Extra2": null, "Extra3": null})
    );
    let xml = format!(
        "\u{feff}<ChangePasswordRequest xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" UserName=\"396\" Salt=\"1234567890\" Digest=\"{}\">\n  <User>\n    <UserName>johndoe@email.com</UserName>\n    <Email>johndoe@email.com</Email>\n    <Key>{JOHN_KEY}</Key>\n  </User>\n  <UserNewPassword>aspnet-xml-22</UserNewPassword>\n</ChangePasswordRequest>",
        digest(1234567890, "aspnet-xml-22")
    );
    let r = send(
        &a,
        "POST",
        &server.url("/api/Customers/ChangePassword"),
        &[("Content-Type", "application/xml")],
        Some(&xml),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.contains("xml"), "{}", r.content_type);
    assert!(r.body.contains("<Success>true</Success>"), "{}", r.body);
    assert!(
        r.body
            .contains("xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("<Extra1>811111</Extra1>"), "{}", r.body);
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body("johndoe@email.com", "aspnet-xml-22")),
    );
    assert_eq!(r.json()[0]["_verify"], true);

    let (took, status) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (code, out, _) = cli(&data, &["check"], "");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn reset_flows_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outbox = dir.path().join("outbox");
    let server = Server::start(
        &data,
        &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
    );
    let a = agent();

    // SkyERP, form-encoded as a Laravel form would send it.
    let base = "/api/v1/acme12aa/customers/reset-password";
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = send(
        &a,
        "POST",
        &server.url(base),
        &form,
        Some("email=johndoe%40email.com"),
    );
    assert_eq!(r.json()["success"], true, "{}", r.body);
    let file = wait_for_files(&outbox, 1).remove(0);
    let mail: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let token = mail["token"].as_str().unwrap();
    let r = send(
        &a,
        "GET",
        &server.url(&format!("{base}/{token}")),
        &[("Accept-Language", "en-US,en;q=0.9")],
        None,
    );
    assert_eq!(r.json()["success"], true);
    assert_eq!(r.json()["locale"], "en");
    let body = format!(
        "_method=PUT&email=johndoe%40email.com&password=skyerp-new-1&password2=skyerp-new-1&token={token}"
    );
    let r = send(&a, "POST", &server.url(base), &form, Some(&body));
    assert_eq!(r.json()["message"], "Contraseña actualizada", "{}", r.body);
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body("johndoe@email.com", "skyerp-new-1")),
    );
    assert_eq!(r.json()[0]["_verify"], true);
    // used: the token is dead now
    let r = send(
        &a,
        "GET",
        &server.url(&format!("{base}/{token}")),
        &[],
        None,
    );
    assert_eq!(r.json()["success"], false);

    // Commerce Layer: create -> retrieve -> update -> login.
    let auth = format!("Bearer {APP_KEY}");
    let h = [
        ("Accept", "application/vnd.api+json"),
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/vnd.api+json"),
    ];
    let create = json!({"data": {"type": "customer_password_resets",
        "attributes": {"customer_email": "johndoe@email.com", "reference": "ANY-EXTERNAL-REFEFERNCE",
                       "reference_origin": "ANY-EXTERNAL-REFEFERNCE-ORIGIN", "metadata": {"foo": "bar"}}}});
    let r = send(
        &a,
        "POST",
        &server.url("/api/customer_password_resets"),
        &h,
        Some(&create.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let doc = r.json();
    let id = doc["data"]["id"].as_str().unwrap().to_owned();
    let token = doc["data"]["attributes"]["reset_password_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 10);
    let r = send(
        &a,
        "GET",
        &server.url(&format!("/api/customer_password_resets/{id}")),
        &h,
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["data"]["attributes"]["reset_password_token"],
        Value::Null
    );
    let patch = json!({"data": {"type": "customer_password_resets", "id": id,
        "attributes": {"customer_password": "commerce-new-1", "_reset_password_token": token}}});
    let r = send(
        &a,
        "PATCH",
        &server.url(&format!("/api/customer_password_resets/{id}")),
        &h,
        Some(&patch.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let attrs = &r.json()["data"]["attributes"];
    assert!(attrs["reset_password_at"].is_string());
    assert_eq!(attrs["metadata"], json!({"foo": "bar"}));
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body("johndoe@email.com", "commerce-new-1")),
    );
    assert_eq!(r.json()[0]["_verify"], true);
    drop(server);
}

#[test]
fn imported_legacy_customers_log_in_through_skypostal() {
    let vs = legacy_vectors();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = import_legacy(&data, &vs);
    assert!(
        out.contains(&format!("imported {} customers, 0 lines failed", vs.len())),
        "{out}"
    );
    let (code, out, _) = cli(
        &data,
        &["app", "import", "--user-code", "396", "--name", "Partner"],
        &format!("{APP_KEY}\n"),
    );
    assert_eq!(code, 0, "{out}");

    let server = Server::start(&data, &[]);
    let a = agent();
    for (i, v) in vs.iter().enumerate() {
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&login_body(&format!("legacy{i}@example.com"), &v.password)),
        );
        let j = r.json();
        assert_eq!(j[0]["_verify"], true, "vector {i}: {}", r.body);
        assert_eq!(j[0]["customer_box_id"], 5000 + i as u64);
    }
    drop(server);
    let (code, out, _) = cli(&data, &["customer", "show", "legacy0@example.com"], "");
    assert_eq!(code, 0);
    assert!(out.contains("password_scheme: Argon2idPeppered"), "{out}");
}

#[test]
fn load_then_sigterm_loses_no_acknowledged_change() {
    load_then_stop("TERM");
}

/// SIGKILL: no clean close, no final checkpoint; every acknowledged
/// change must come back from the write-ahead log.
#[test]
fn load_then_sigkill_loses_no_acknowledged_change() {
    load_then_stop("KILL");
}

fn load_then_stop(signal: &str) {
    let secs: u64 = std::env::var("CREDSTORE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let outbox = dir.path().join("outbox");
    // One customer per writer thread: a writer's acknowledged passwords then
    // come in the order they were applied (two writers on one account could
    // each be acknowledged, the older password applied last).
    const WRITERS: usize = 8;
    let mut keys = Vec::new();
    for i in 0..WRITERS {
        let (code, out, err) = cli(
            &data,
            &[
                "customer",
                "add",
                "--email",
                &format!("load{i}@example.com"),
                "--first-name",
                "L",
            ],
            "load-password-0\n",
        );
        assert_eq!(code, 0, "{err}");
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("customer_key: "))
            .unwrap()
            .to_owned();
        let box_id: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("box_id: "))
            .unwrap()
            .parse()
            .unwrap();
        keys.push((box_id, key));
    }
    let server = Server::start(
        &data,
        &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    // SkyERP reset requests answered as granted: each is one durable event
    // (issued, or refused by the throttle), committed on the async worker
    // and answered once durable.
    let resets_acked = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; WRITERS]));
    let bad: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let base = server.base.clone();

    let handles: Vec<_> = (0..32)
        .map(|t| {
            let (stop, terminated, requests, resets_acked, acked, bad, base, keys) = (
                stop.clone(),
                terminated.clone(),
                requests.clone(),
                resets_acked.clone(),
                acked.clone(),
                bad.clone(),
                base.clone(),
                keys.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = match t % 4 {
                        // writers: sequential password changes, each acknowledged one recorded
                        0 => {
                            let w = t / 4;
                            let (box_id, key) = &keys[w];
                            let next = acked.lock().unwrap()[w] + 1;
                            let body = json!({"user_code": 396, "app_key": APP_KEY, "customer_box_id": box_id,
                                "customer_key": key, "customer_email": format!("load{w}@example.com"),
                                "customer_new_password": format!("load-password-{next}")});
                            let r = send(&a, "POST", &format!("{base}{UPDATE_PATH}"), &[JSON], Some(&body.to_string()));
                            if r.status == 200 && r.json()[0]["_verify"] == true {
                                let mut g = acked.lock().unwrap();
                                g[w] = g[w].max(next);
                            }
                            r
                        }
                        1 => send(&a, "POST", &format!("{base}{LOGIN_PATH}"), &[JSON], Some(&login_body("johndoe@email.com", "pass12345"))),
                        2 => send(&a, "GET", &format!("{base}/api/v1/acme12aa/customers/reset-password/{}", "A".repeat(63) + &(n % 10).to_string()), &[], None),
                        _ => {
                            let r = send(&a, "POST", &format!("{base}/api/v1/acme12aa/customers/reset-password"), &[JSON], Some(r#"{"email":"johndoe@email.com"}"#));
                            if r.status == 200 && r.json()["success"] == true {
                                resets_acked.fetch_add(1, Ordering::SeqCst);
                            }
                            r
                        }
                    };
                    if r.status == 0 && terminated.load(Ordering::Relaxed) {
                        break; // the server is going away, as asked
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    if r.status >= 500 || r.status == 0 {
                        bad.lock().unwrap().push(format!("{} {}", r.status, r.body));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    // The signal while the clients are still sending.
    terminated.store(true, Ordering::Relaxed);
    let (took, status) = server.signal(signal);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a client thread panicked");
    }
    eprintln!(
        "load: {} requests from 32 clients in {secs} s, no 5xx; SIG{signal} exit took {took:?}; acknowledged writes {:?}",
        requests.load(Ordering::Relaxed),
        acked.lock().unwrap()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    if signal == "TERM" {
        assert!(status.success(), "{status:?}");
    }
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    assert!(
        requests.load(Ordering::Relaxed) > 100,
        "only {} requests",
        requests.load(Ordering::Relaxed)
    );

    let (code, out, _) = cli(&data, &["check"], "");
    assert_eq!(code, 0, "{out}");
    // Every acknowledged reset request left its event (more may have been
    // made durable without their answer reaching the client).
    let resets_acked = resets_acked.load(Ordering::SeqCst);
    let mut reset_events = 0u64;
    let mut from = 0u64;
    loop {
        let (code, out, err) = cli(
            &data,
            &["log", "--from", &from.to_string(), "--limit", "10000"],
            "",
        );
        assert_eq!(code, 0, "{err}");
        let seqs: Vec<u64> = out
            .lines()
            .filter_map(|l| l.split('\t').next()?.parse().ok())
            .collect();
        reset_events += out
            .lines()
            .filter(|l| l.contains("\tResetIssued\t"))
            .count() as u64;
        match seqs.last() {
            Some(last) => from = last + 1,
            None => break,
        }
    }
    eprintln!("reset requests: {resets_acked} acknowledged, {reset_events} durable events");
    assert!(resets_acked > 0);
    assert!(
        reset_events >= resets_acked,
        "{resets_acked} reset requests acknowledged, {reset_events} in the log"
    );
    // Restart: every acknowledged password is the one that logs in (or a later one).
    let server = Server::start(&data, &[]);
    let a = agent();
    let acked = acked.lock().unwrap().clone();
    for (w, n) in acked.iter().enumerate() {
        let logged_in = (*n..*n + 2).any(|k| {
            let r = send(
                &a,
                "POST",
                &server.url(LOGIN_PATH),
                &[JSON],
                Some(&login_body(
                    &format!("load{w}@example.com"),
                    &format!("load-password-{k}"),
                )),
            );
            r.json()[0]["_verify"] == true
        });
        assert!(logged_in, "writer {w}: acknowledged password {n} lost");
    }
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

#[test]
fn admin_commands_success_and_bad_input() {
    let (dir, data) = data_dir();
    // app add | import | list | disable
    let (code, out, err) = cli(
        &data,
        &[
            "app",
            "add",
            "--user-code",
            "1",
            "--name",
            "One",
            "--shop",
            "shop1",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app_key: "), "{out}");
    assert!(
        std::fs::metadata(dir.path().join("data.secret")).is_ok(),
        "secret file created beside the data"
    );
    let (code, _, err) = cli(
        &data,
        &["app", "add", "--user-code", "1", "--name", "Dup"],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.starts_with("error: ") && err.contains("already exists"),
        "{err}"
    );
    let (code, _, err) = cli(
        &data,
        &["app", "import", "--user-code", "396", "--name", "Sky"],
        &format!("{APP_KEY}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &data,
        &["app", "import", "--user-code", "397", "--name", "Sky"],
        "key with spaces\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("app_key is malformed"), "{err}");
    let (code, out, _) = cli(&data, &["app", "list"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("396") && out.contains("shop1") && !out.contains(APP_KEY),
        "{out}"
    );
    let (code, out, _) = cli(&data, &["app", "disable", "396"], "");
    assert_eq!(code, 0);
    assert!(out.contains("disabled"), "{out}");
    let (code, _, err) = cli(&data, &["app", "disable", "999"], "");
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // customer add | show | set-flags | import
    let (code, out, err) = cli(
        &data,
        &[
            "customer",
            "add",
            "--email",
            "c@example.com",
            "--first-name",
            "C",
        ],
        "customer-pass-1\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("customer_key: ") && !out.contains("customer-pass-1"),
        "{out}"
    );
    let box_id = out
        .lines()
        .find_map(|l| l.strip_prefix("box_id: "))
        .unwrap()
        .to_owned();
    let (code, _, err) = cli(
        &data,
        &["customer", "add", "--email", "d@example.com"],
        "short\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("at least 8 characters"), "{err}");
    let (code, out, _) = cli(&data, &["customer", "show", &box_id], "");
    assert_eq!(code, 0);
    assert!(out.contains("email: c@example.com"), "{out}");
    let (code, _, err) = cli(&data, &["customer", "show", "nobody@example.com"], "");
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = cli(
        &data,
        &["customer", "set-flags", &box_id, "--vip", "true"],
        "",
    );
    assert_eq!(code, 0);
    assert!(out.contains("is_vip=true"), "{out}");
    let (code, _, err) = cli(&data, &["customer", "set-flags", &box_id], "");
    assert_ne!(code, 0);
    assert!(err.contains("nothing to set"), "{err}");
    let jsonl = format!(
        "{}\nnot json\n{}\n{}\n",
        json!({"box_id": 70, "email": "i1@example.com", "password_hash": "$2b$04$A8o/DQoaiuvDHQavS99ueOBOwn7p1ikJcPxbWRJvq./25vWNMu3wS"}),
        json!({"box_id": 71, "email": "i2@example.com"}),
        json!({"box_id": 72, "email": "i3@example.com", "password_hash": "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "activation_date": "2019-02-21T15:03:30Z"}),
    );
    let (code, out, err) = cli(&data, &["customer", "import", "-"], &jsonl);
    assert_ne!(code, 0, "a failed line makes the exit non-zero");
    assert!(
        out.contains("imported 2 customers, 2 lines failed"),
        "{out}"
    );
    assert!(
        err.contains("line 2:") && err.contains("line 3:") && err.contains("password_hash"),
        "{err}"
    );

    // reset issue
    let (code, out, err) = cli(&data, &["reset", "issue", "--email", "c@example.com"], "");
    assert_eq!(code, 0, "{err}");
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap();
    assert_eq!(token.len(), 64);
    let (code, _, err) = cli(&data, &["reset", "issue", "--email", "c@example.com"], "");
    assert_ne!(code, 0);
    assert!(err.contains("less than a minute ago"), "{err}");

    // purge, check, log, stats
    let (code, out, _) = cli(&data, &["purge"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("purged "), "{out}");
    let (code, out, _) = cli(&data, &["check"], "");
    assert_eq!(code, 0);
    assert!(out.contains("sound"), "{out}");
    let (code, out, _) = cli(&data, &["log", "--limit", "3"], "");
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!out.contains(token));
    let (code, out, _) = cli(&data, &["stats"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("customers: 3") && out.contains("apps: 2"),
        "{out}"
    );
    let number = |name: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    let (on_disk, records) = (number("size_on_disk_bytes"), number("record_bytes"));
    // Three customers, two apps, their indexes and events: a few KB.
    assert!((1_000.0..100_000.0).contains(&records), "{out}");
    assert!(on_disk > records, "{out}");
    let ratio = number("size_on_disk_per_record_byte");
    assert!((ratio - on_disk / records).abs() < 0.01, "{out}");

    // digest
    let (code, out, _) = cli(
        &data,
        &[
            "digest",
            "--user-name",
            "396",
            "--salt",
            "123456789",
            "--user-user-name",
            "a@b.c",
            "--user-email",
            "a@b.c",
            "--user-key",
            "k",
            "--stdin",
        ],
        &format!("{APP_KEY}\nnew-password-1\n"),
    );
    assert_eq!(code, 0);
    let expected = credstore::change_password_digest(
        &credstore::AppKey::new(APP_KEY).unwrap(),
        "396",
        123456789,
        "a@b.c",
        "a@b.c",
        "k",
        "new-password-1",
    );
    assert_eq!(out.trim(), expected);
    let (code, _, err) = cli(&data, &["digest", "--user-name", "396", "--salt", "x"], "");
    assert_ne!(code, 0);
    assert!(err.contains("salt"), "{err}");

    // a store whose secret file is gone: an error, and nothing created
    std::fs::remove_file(dir.path().join("data.secret")).unwrap();
    let (code, _, err) = cli(&data, &["check"], "");
    assert_ne!(code, 0);
    assert!(
        err.contains("secret file") && err.contains("nothing was created"),
        "{err}"
    );
    assert!(std::fs::metadata(dir.path().join("data.secret")).is_err());
    // --help for every command
    for c in [
        vec!["serve"],
        vec!["app", "add"],
        vec!["app", "import"],
        vec!["app", "list"],
        vec!["app", "disable"],
        vec!["customer", "add"],
        vec!["customer", "import"],
        vec!["customer", "show"],
        vec!["customer", "set-flags"],
        vec!["reset", "issue"],
        vec!["purge"],
        vec!["check"],
        vec!["log"],
        vec!["stats"],
        vec!["digest"],
    ] {
        let mut args = c.clone();
        args.push("--help");
        let (code, out, _) = cli(&data, &args, "");
        assert_eq!(code, 0, "{c:?}");
        assert!(out.contains("Usage:"), "{c:?}: {out}");
    }
}

#[test]
fn a_running_server_locks_the_directory_and_the_cli_says_so() {
    let (_dir, data) = data_dir();
    let server = Server::start(&data, &[]);
    let (code, _, err) = cli(&data, &["check"], "");
    assert_ne!(code, 0);
    assert!(err.contains("locked by another process"), "{err}");
    // Compaction too, leaving nothing behind.
    let (code, _, err) = cli(&data, &["compact", "--pages", "on"], "");
    assert_ne!(code, 0);
    assert!(err.contains("locked by another process"), "{err}");
    assert!(!data.join("compact.tmp").exists());
    drop(server);

    // Stopped, the store compacts (and its pages can be compressed).
    let (code, out, err) = cli(&data, &["compact", "--pages", "on"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("compressed pages"), "{out}");
    let (code, out, err) = cli(&data, &["check"], "");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&data, &["compact", "--pages", "sideways"], "");
    assert_ne!(code, 0);
    assert!(err.contains("possible values"), "{err}");
}

/// An admin command whose standard output is closed (`credstore log | head`)
/// ends quietly with status 141, as a shell reports SIGPIPE, instead of
/// panicking on the broken pipe; a full disk behind it is an error line.
#[test]
fn admin_output_to_a_closed_pipe_or_a_full_disk_ends_without_a_panic() {
    let (_dir, data) = data_dir();
    let (code, _, err) = cli(
        &data,
        &["customer", "add", "--email", "a@example.com"],
        "pass12345word\n",
    );
    assert_eq!(code, 0, "{err}");
    let mut child = Command::new(BIN)
        .env_remove("CREDSTORE_POSTGRES_URL")
        .arg("--data")
        .arg(&data)
        .arg("stats")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the command has opened the store, let alone printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    if Path::new("/dev/full").exists() {
        let out = Command::new(BIN)
            .env_remove("CREDSTORE_POSTGRES_URL")
            .arg("--data")
            .arg(&data)
            .arg("stats")
            .stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("cannot write to standard output"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
