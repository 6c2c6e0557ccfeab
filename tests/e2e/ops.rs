//! Issue 14: what the people who run `credstore serve` see: the admin port
//! (`/health/alive`, `/health/ready`, `/metrics`, never on the public
//! port), metrics parsed by a real Prometheus text-format parser (Python's
//! `prometheus_client`, which `.ci/run` installs; with `CI=true` a missing
//! parser fails the test), readiness that turns 503 on a real failed sync
//! (a loop device that loses its capacity under the server: needs root,
//! which CI has) and on a stuck mail courier, and `--log-format json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{APP_KEY, BIN, CHEAP, JOHN_KEY, JSON, LOGIN_PATH, UPDATE_PATH, agent, send};

const RESET_PATH: &str = "/api/v1/acme12aa/customers/reset-password";
const RESET_ROUTE: &str = "/api/v1/{shop}/customers/reset-password";
const TOKEN_ROUTE: &str = "/api/v1/{shop}/customers/reset-password/{token}";
const JOHN: &str = "johndoe@email.com";
const JOHN_PASSWORD: &str = "pass12345";

/// `credstore serve` with its admin port (the second line it prints).
struct OpsServer {
    child: Child,
    base: String,
    admin: Option<String>,
    log: Arc<Mutex<String>>,
}

impl OpsServer {
    fn start(data: &Path, extra: &[&str]) -> OpsServer {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("CREDSTORE_ARGON2", CHEAP)
            .env_remove("CREDSTORE_ADMIN_LISTEN")
            .env_remove("CREDSTORE_LOG_FORMAT")
            // CI exports it for the PostgreSQL tests; these run on sled
            // unless they pass --postgres themselves.
            .env_remove("CREDSTORE_POSTGRES_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("credstore listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let with_admin = !extra.windows(2).any(|w| w == ["--admin-listen", "off"]);
        let admin = with_admin.then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("credstore admin on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_owned()
        });
        // Nothing more is printed on standard output; keep the pipe open.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        OpsServer {
            child,
            base,
            admin,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin.as_ref().expect("an admin port"))
    }

    /// SIGTERM, then wait (20 s at most); the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log as written so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login_body(email: &str, password: &str) -> String {
    json!({"user_code": 396, "app_key": APP_KEY, "customer_email": email,
        "customer_password": password})
    .to_string()
}

fn update_body(password: &str) -> String {
    json!({"user_code": 396, "app_key": APP_KEY, "customer_box_id": 811111,
        "customer_key": JOHN_KEY, "customer_email": JOHN, "customer_new_password": password})
    .to_string()
}

/// `_verify` of a Skypostal answer.
fn verified(body: &str) -> bool {
    serde_json::from_str::<Value>(body).unwrap()[0]["_verify"] == true
}

/// Polls `f` every 50 ms until it is true; fails after `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Python that can import `prometheus_client.parser` (Debian's package
/// lives under /usr/bin/python3, which a pyenv `python3` first on PATH does
/// not see). `None` only outside CI: with `CI=true` a missing parser fails.
fn prometheus_python() -> Option<&'static str> {
    let found = ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus_client is missing (pip install prometheus-client, or \
             apt-get install python3-prometheus-client): the metrics test cannot run"
        );
        eprintln!("prometheus_client is missing: skipping (CI=true makes this a failure)");
    }
    found
}

/// The exposition parsed by `prometheus_client.parser`: one entry per
/// family, `{name, type, help, samples: [{name, labels, value}]}`.
fn parse_exposition(py: &str, text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                            for s in f.samples]})
print(json.dumps(out))
"#;
    let mut child = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Samples by name and sorted labels.
struct Scrape {
    families: Vec<Value>,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    fn new(families: Vec<Value>) -> Scrape {
        let mut samples = BTreeMap::new();
        for f in &families {
            for s in f["samples"].as_array().unwrap() {
                let mut labels: Vec<(String, String)> = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                labels.sort();
                let name = s["name"].as_str().unwrap().to_owned();
                let previous = samples.insert((name, labels), s["value"].as_f64().unwrap());
                assert!(previous.is_none(), "a sample twice: {s}");
            }
        }
        Scrape { families, samples }
    }

    /// The sample `name{labels}`; 0 when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum over every sample called `name`.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// Every sample called `name`, by labels.
    fn all(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

fn get_text(url: &str) -> (u16, String, String) {
    let r = send(&agent(), "GET", url, &[], None);
    (r.status, r.content_type, r.body)
}

/// One value of a plain-text exposition (no parser needed): `line` is
/// `name` or `name{labels}` exactly as rendered.
fn plain_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_a_known_sequence_exactly_in_families_a_real_parser_reads() {
    let Some(py) = prometheus_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let server = OpsServer::start(
        &dir.path().join("data"),
        &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
    );
    let a = agent();

    // The known sequence: 3 logins, 1 wrong password, 2 resets (the second
    // throttled: a reset a minute), the token check of the mail's token,
    // and a path no route serves that names an email.
    for _ in 0..3 {
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&login_body(JOHN, JOHN_PASSWORD)),
        );
        assert!(r.status == 200 && verified(&r.body), "{}", r.body);
    }
    let wrong = "wrong-password-1";
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body(JOHN, wrong)),
    );
    assert!(r.status == 200 && !verified(&r.body), "{}", r.body);
    for _ in 0..2 {
        let r = send(
            &a,
            "POST",
            &server.url(RESET_PATH),
            &[JSON],
            Some(r#"{"email":"johndoe@email.com"}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let files = super::wait_for_files(&outbox, 1);
    let mail: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let token = mail["token"].as_str().unwrap().to_owned();
    let r = send(
        &a,
        "GET",
        &server.url(&format!("{RESET_PATH}/{token}")),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(&a, "GET", &server.url("/johndoe@email.com/x"), &[], None);
    assert_eq!(r.status, 404);

    // The delivery is counted once the courier recorded it.
    eventually(Duration::from_secs(10), "the delivery counted", || {
        let (_, _, text) = get_text(&server.admin_url("/metrics"));
        plain_value(
            &text,
            r#"credstore_mail_deliveries_total{outcome="delivered"}"#,
        ) == Some(1.0)
    });
    let (status, content_type, text) = get_text(&server.admin_url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let m = Scrape::new(parse_exposition(py, &text));

    // Requests by route template, method and status: exactly the sequence
    // (the scrapes went to the admin port, which counts nothing here).
    let requests = "credstore_http_requests_total";
    let req = |route: &str, method: &str, status: &str| {
        m.get(
            requests,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(req(LOGIN_PATH, "POST", "200"), 4.0);
    assert_eq!(req(RESET_ROUTE, "POST", "200"), 2.0);
    assert_eq!(req(TOKEN_ROUTE, "GET", "200"), 1.0);
    assert_eq!(req("other", "GET", "404"), 1.0);
    assert_eq!(m.sum(requests), 8.0, "{:?}", m.all(requests));
    // A latency histogram per route, as many observations as requests.
    let count = |route: &str, method: &str| {
        m.get(
            "credstore_http_request_duration_seconds_count",
            &[("route", route), ("method", method)],
        )
    };
    assert_eq!(count(LOGIN_PATH, "POST"), 4.0);
    assert_eq!(count(RESET_ROUTE, "POST"), 2.0);
    assert_eq!(count(TOKEN_ROUTE, "GET"), 1.0);
    assert_eq!(
        m.get(
            "credstore_http_request_duration_seconds_bucket",
            &[("route", LOGIN_PATH), ("method", "POST"), ("le", "+Inf")]
        ),
        4.0
    );
    assert!(
        m.get(
            "credstore_http_request_duration_seconds_sum",
            &[("route", LOGIN_PATH), ("method", "POST")]
        ) > 0.0
    );
    // Only the logins may hash: four waits for a hashing slot.
    assert_eq!(
        m.get("credstore_hashing_admission_wait_seconds_count", &[]),
        4.0
    );
    assert!(m.get("credstore_hashing_slots", &[]) >= 1.0);
    // What the operations counted.
    assert_eq!(m.get("credstore_login_failures_total", &[]), 1.0);
    assert_eq!(m.get("credstore_lockouts_total", &[]), 0.0);
    assert_eq!(m.get("credstore_reset_throttled_total", &[]), 1.0);
    let deliveries = "credstore_mail_deliveries_total";
    assert_eq!(m.get(deliveries, &[("outcome", "delivered")]), 1.0);
    assert_eq!(m.sum(deliveries), 1.0, "{:?}", m.all(deliveries));
    assert_eq!(
        m.get("credstore_mail_delivery_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(m.get("credstore_mail_queue_depth", &[]), 0.0);
    assert_eq!(m.get("credstore_mail_queue_overdue_seconds", &[]), 0.0);
    // The write-ahead log: every write request committed durably; each
    // sync is in exactly one group-size bucket; no more syncs than commits.
    let commits = m.get("credstore_wal_commits_total", &[]);
    let syncs = m.get("credstore_wal_syncs_total", &[]);
    assert!(commits >= 8.0, "{commits} commits");
    assert!(
        syncs >= 1.0 && syncs <= commits,
        "{syncs} syncs, {commits} commits"
    );
    assert_eq!(m.sum("credstore_wal_sync_groups_total"), syncs);
    assert!(m.get("credstore_wal_bytes_total", &[]) > 0.0);
    assert_eq!(m.get("credstore_store_writable", &[]), 1.0);
    assert_eq!(m.get("credstore_ready", &[]), 1.0);
    // No PostgreSQL here: its retry family is there, at zero, by SQLSTATE.
    let retries = "credstore_postgres_retries_total";
    for sqlstate in ["40001", "40P01", "other"] {
        assert_eq!(m.get(retries, &[("sqlstate", sqlstate)]), 0.0, "{sqlstate}");
    }
    assert_eq!(
        m.get(
            "credstore_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Every family: credstore_, HELP and TYPE (the parser calls a family
    // without TYPE "unknown"; the raw text says it too), counters _total.
    assert!(m.families.len() >= 20, "{} families", m.families.len());
    for f in &m.families {
        let name = f["name"].as_str().unwrap();
        let kind = f["type"].as_str().unwrap();
        assert!(name.starts_with("credstore_"), "{name}");
        assert_ne!(kind, "unknown", "{name} has no TYPE");
        assert!(
            !f["help"].as_str().unwrap().is_empty(),
            "{name} has no HELP"
        );
        let exposed = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        assert!(
            text.contains(&format!("# HELP {exposed} ")),
            "{exposed}: HELP"
        );
        assert!(
            text.contains(&format!("# TYPE {exposed} {kind}\n")),
            "{exposed}: TYPE"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{line}");
        }
        if name.ends_with("_seconds") {
            assert!(kind == "histogram" || kind == "gauge", "{line}");
        }
    }

    // Labels: values from fixed sets only; never an email, token or key.
    let routes: Vec<&str> = credstore::http::ROUTES.to_vec();
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    let outcomes = [
        "delivered",
        "retried",
        "bounced",
        "expired",
        "gone",
        "error",
    ];
    let groups = ["1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+"];
    let secrets = [
        JOHN,
        JOHN_PASSWORD,
        wrong,
        APP_KEY,
        JOHN_KEY,
        token.as_str(),
        "acme12aa",
    ];
    for (name, labels) in m.samples.keys() {
        for (k, v) in labels {
            let allowed = match k.as_str() {
                "route" => v == "other" || routes.contains(&v.as_str()),
                "method" => methods.contains(&v.as_str()),
                "status" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
                "outcome" => outcomes.contains(&v.as_str()),
                "commits" => groups.contains(&v.as_str()),
                "sqlstate" => ["40001", "40P01", "other"].contains(&v.as_str()),
                "le" => v == "+Inf" || v.parse::<f64>().is_ok(),
                "version" => v == env!("CARGO_PKG_VERSION"),
                _ => false,
            };
            assert!(allowed, "{name}: label {k}={v:?}");
            assert!(!v.contains('@'), "{name}: {k}={v:?}");
        }
    }
    for s in secrets {
        assert!(
            !text.contains(s),
            "the exposition holds a secret or an id: {s}"
        );
    }
    let log = server.log();
    assert!(!log.contains(&token) && !log.contains(JOHN_KEY) && !log.contains(APP_KEY));

    // A lock-out: five wrong passwords for an unknown email lock it
    // (unknown emails lock out like known ones).
    for i in 0..5 {
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&login_body(
                "nobody@example.com",
                &format!("wrong-{i}-password"),
            )),
        );
        assert!(r.status == 200 && !verified(&r.body), "{}", r.body);
    }
    let (_, _, text) = get_text(&server.admin_url("/metrics"));
    let m = Scrape::new(parse_exposition(py, &text));
    assert_eq!(m.get("credstore_login_failures_total", &[]), 6.0);
    assert_eq!(m.get("credstore_lockouts_total", &[]), 1.0);
    assert!(!text.contains("nobody@example.com"));
}

#[test]
fn health_and_metrics_live_on_the_admin_port_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = OpsServer::start(&data, &["--demo"]);
    let a = agent();
    for path in ["/metrics", "/health/alive", "/health/ready"] {
        let r = send(&a, "GET", &server.url(path), &[], None);
        assert_eq!(r.status, 404, "public {path}: {}", r.body);
        assert!(
            !r.body.contains("# TYPE") && !r.body.contains("\"ok\""),
            "{}",
            r.body
        );
    }
    // The admin port serves them, and no public route.
    for path in ["/health/alive", "/health/ready"] {
        let r = send(&a, "GET", &server.admin_url(path), &[], None);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, r#"{"status":"ok"}"#),
            "{path}"
        );
        assert_eq!(r.content_type, "application/json");
    }
    let (status, _, text) = get_text(&server.admin_url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE credstore_http_requests_total counter"),
        "{text}"
    );
    let r = send(
        &a,
        "POST",
        &server.admin_url(LOGIN_PATH),
        &[JSON],
        Some(&login_body(JOHN, JOHN_PASSWORD)),
    );
    assert_eq!(
        r.status, 404,
        "a public route on the admin port: {}",
        r.body
    );
    assert_eq!(
        send(&a, "GET", &server.admin_url("/other"), &[], None).status,
        404
    );
    drop(server);

    // --no-metrics: health only.
    let server = OpsServer::start(&data, &["--no-metrics"]);
    assert_eq!(
        send(&a, "GET", &server.admin_url("/metrics"), &[], None).status,
        404
    );
    assert_eq!(
        send(&a, "GET", &server.admin_url("/health/ready"), &[], None).status,
        200
    );
    drop(server);

    // --admin-listen off: no second line, no admin port; the public routes work.
    let server = OpsServer::start(&data, &["--admin-listen", "off"]);
    assert!(server.admin.is_none());
    let r = send(
        &a,
        "POST",
        &server.url(LOGIN_PATH),
        &[JSON],
        Some(&login_body(JOHN, JOHN_PASSWORD)),
    );
    assert!(r.status == 200 && verified(&r.body));
    drop(server);

    // An admin address that is taken: a clear error, no server.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
            "--data",
        ])
        .arg(&data)
        .env("CREDSTORE_ARGON2", CHEAP)
        .env_remove("CREDSTORE_POSTGRES_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("admin"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_request_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let mut server = OpsServer::start(
        &dir.path().join("data"),
        &[
            "--demo",
            "--log-format",
            "json",
            "--mail-outbox",
            outbox.to_str().unwrap(),
        ],
    );
    let a = agent();
    let new_password = "a-new-password-77";
    // (method, path, body, status): every format, secrets in bodies,
    // headers and a path.
    let mut sent: Vec<(&str, String, u16)> = Vec::new();
    let mut go =
        |method: &'static str, path: String, headers: &[(&str, &str)], body: Option<&str>| {
            let r = send(&a, method, &server.url(&path), headers, body);
            sent.push((method, path, r.status));
            r
        };
    go(
        "POST",
        LOGIN_PATH.into(),
        &[JSON],
        Some(&login_body(JOHN, JOHN_PASSWORD)),
    );
    go(
        "POST",
        LOGIN_PATH.into(),
        &[JSON],
        Some(&login_body(JOHN, "wrong-password-2")),
    );
    go(
        "POST",
        UPDATE_PATH.into(),
        &[JSON],
        Some(&update_body(new_password)),
    );
    go(
        "POST",
        RESET_PATH.into(),
        &[JSON],
        Some(r#"{"email":"johndoe@email.com"}"#),
    );
    let token = {
        let files = super::wait_for_files(&outbox, 1);
        let mail: Value =
            serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
        mail["token"].as_str().unwrap().to_owned()
    };
    go("GET", format!("{RESET_PATH}/{token}"), &[], None);
    let bearer = format!("Bearer {APP_KEY}");
    go(
        "POST",
        "/api/customer_password_resets".into(),
        &[
            ("Content-Type", "application/vnd.api+json"),
            ("Authorization", &bearer),
        ],
        Some(
            r#"{"data":{"type":"customer_password_resets","attributes":{"customer_email":"johndoe@email.com"}}}"#,
        ),
    );
    go("GET", "/johndoe@email.com".into(), &[], None);
    let sent = sent;
    assert!(server.terminate().success());

    let log = server.log();
    let mut requests = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        for secret in [
            JOHN,
            JOHN_PASSWORD,
            "wrong-password-2",
            new_password,
            APP_KEY,
            JOHN_KEY,
            token.as_str(),
        ] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
        if v["message"] == "request" {
            requests.push(v);
        }
    }
    assert_eq!(requests.len(), sent.len(), "one line per request:\n{log}");
    for (v, (method, path, status)) in requests.iter().zip(&sent) {
        assert_eq!(v["method"], *method, "{v}");
        assert_eq!(v["route"], credstore::http::route_template(path), "{v}");
        assert_eq!(v["status"], *status, "{v}");
        let latency = v["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency < 30_000.0, "{v}");
    }
    assert_eq!(requests[4]["route"], TOKEN_ROUTE);
    assert_eq!(requests[6]["route"], "other");
}

/// The courier hangs on an SMTP server that accepts and never answers: the
/// mail stays due, the instance is not ready after the threshold; once the
/// connection drops the mail waits for a retry and the instance is ready.
#[test]
fn readiness_turns_503_while_the_mail_courier_is_stuck() {
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = smtp.local_addr().unwrap().port();
    let held: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    let hold = held.clone();
    std::thread::spawn(move || {
        for conn in smtp.incoming() {
            match conn {
                Ok(c) => hold.lock().unwrap().push(c),
                Err(_) => break,
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server = OpsServer::start(
        &dir.path().join("data"),
        &[
            "--demo",
            "--smtp",
            &format!("smtp://127.0.0.1:{port}?tls=none"),
            "--mail-from",
            "no-reply@shop.example",
            "--mail-concurrency",
            "1",
            "--mail-stuck-after",
            "1",
        ],
    );
    let a = agent();
    let ready = || send(&a, "GET", &server.admin_url("/health/ready"), &[], None);
    assert_eq!(ready().status, 200);
    let r = send(
        &a,
        "POST",
        &server.url(RESET_PATH),
        &[JSON],
        Some(r#"{"email":"johndoe@email.com"}"#),
    );
    assert_eq!(r.status, 200);
    eventually(Duration::from_secs(5), "the courier connected", || {
        !held.lock().unwrap().is_empty()
    });
    let mut answer = ready();
    eventually(Duration::from_secs(5), "not ready", || {
        answer = ready();
        answer.status == 503
    });
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(!answer.body.contains('\n'), "one line: {}", answer.body);
    assert_eq!(body["status"], "unavailable");
    let reason = body["errors"]["mail_queue"].as_str().unwrap();
    assert!(reason.contains("due for"), "{reason}");
    assert!(body["errors"].get("store").is_none(), "{body}");
    assert!(!answer.body.contains(JOHN));
    assert_eq!(
        send(&a, "GET", &server.admin_url("/health/alive"), &[], None).status,
        200
    );
    // The SMTP server goes away: a temporary failure, the mail waits for
    // its retry (5 s), the instance is ready again.
    held.lock().unwrap().clear();
    eventually(Duration::from_secs(5), "ready again", || {
        ready().status == 200
    });
    let (_, _, text) = get_text(&server.admin_url("/metrics"));
    assert_eq!(
        plain_value(
            &text,
            r#"credstore_mail_deliveries_total{outcome="retried"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(plain_value(&text, "credstore_mail_queue_depth"), Some(1.0));
    assert_eq!(
        plain_value(&text, "credstore_mail_queue_retrying"),
        Some(1.0)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The tools the loop-device test runs (Debian: `mount`, `e2fsprogs`).
const LOOP_TOOLS: [&str; 5] = ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount"];

/// `name` on PATH, or in /usr/sbin or /sbin (not on every root's PATH).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Why the loop-device test cannot run here, if it cannot.
fn loop_disk_unavailable() -> Option<String> {
    if !is_root() {
        return Some("it sets up a loop device and needs root".into());
    }
    if let Some(missing) = LOOP_TOOLS.iter().find(|t| tool(t).is_none()) {
        return Some(format!(
            "{missing} is missing (Debian: apt-get install mount e2fsprogs)"
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("there is no /dev/loop-control (loop devices are off here)".into());
    }
    None
}

fn run(cmd: &str, args: &[&str]) -> String {
    let program = tool(cmd).unwrap_or_else(|| PathBuf::from(cmd));
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An ext4 file system on a loop device over a file, mounted for the
/// life of the value. Its capacity can be cut under the mounted file
/// system and given back: writes beyond the cut fail with EIO (the loop
/// driver's "access beyond end of device"), and nothing already written
/// is lost, as when a disk path fails and comes back.
struct LoopDisk {
    device: String,
    mnt: PathBuf,
}

impl LoopDisk {
    fn new(dir: &Path, size_mib: u64) -> LoopDisk {
        let image = dir.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        let device = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
        let disk = LoopDisk {
            device,
            mnt: dir.join("mnt"),
        };
        run("mkfs.ext4", &["-q", &disk.device]);
        std::fs::create_dir_all(&disk.mnt).unwrap();
        disk.mount();
        disk
    }

    fn mount(&self) {
        run("mount", &[&self.device, self.mnt.to_str().unwrap()]);
    }

    /// Unmounts, repairs whatever the lost writes left (e2fsck exits 1
    /// when it corrected something), mounts again.
    fn remount(&self) {
        run("umount", &[self.mnt.to_str().unwrap()]);
        let status = Command::new(tool("e2fsck").unwrap())
            .args(["-f", "-y", &self.device])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        self.mount();
    }

    /// Limits the device to its first `bytes` (0: the whole file), through
    /// LOOP_SET_STATUS64's `lo_sizelimit` (Python: no unsafe code here).
    fn limit(&self, bytes: u64) {
        const SCRIPT: &str = r#"
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
info = bytearray(232)                      # struct loop_info64
fcntl.ioctl(fd, 0x4C05, info)              # LOOP_GET_STATUS64
struct.pack_into('<Q', info, 32, int(sys.argv[2]))  # lo_sizelimit
fcntl.ioctl(fd, 0x4C04, bytes(info))       # LOOP_SET_STATUS64
os.close(fd)
"#;
        run("python3", &["-c", SCRIPT, &self.device, &bytes.to_string()]);
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if let Some(umount) = tool("umount") {
            let _ = Command::new(umount).arg("-l").arg(&self.mnt).status();
        }
        if let Some(losetup) = tool("losetup") {
            let _ = Command::new(losetup).args(["-d", &self.device]).status();
        }
    }
}

/// A real failed `fdatasync` under the real binary: the store enters its
/// failed state, readiness turns 503 with the reason while liveness stays
/// 200, and stays 503 when the disk comes back (a later sync that
/// "succeeds" proves nothing: fsyncgate); after a restart it is 200 and
/// every acknowledged change is there.
#[test]
fn readiness_turns_503_when_a_real_sync_fails_and_200_after_a_restart() {
    if let Some(why) = loop_disk_unavailable() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the failed-sync test cannot run, and CI=true: {why} (.ci/run installs the tools and runs as root)"
        );
        eprintln!("SKIPPED: the failed-sync test cannot run: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), 64);
    let data = disk.mnt.join("data");
    let secret = dir.path().join("secret");
    let secret_arg = secret.to_str().unwrap();
    let mut server = OpsServer::start(&data, &["--demo", "--secret-file", secret_arg]);
    let a = agent();
    let admin = |s: &OpsServer, path: &str| send(&a, "GET", &s.admin_url(path), &[], None);
    assert_eq!(admin(&server, "/health/ready").status, 200);
    let update = |s: &OpsServer, password: &str| {
        send(
            &a,
            "POST",
            &s.url(UPDATE_PATH),
            &[JSON],
            Some(&update_body(password)),
        )
    };
    let r = update(&server, "before-the-fault-1");
    assert!(r.status == 200 && verified(&r.body), "{}", r.body);

    // The disk loses all but its first MiB: the next write's sync fails.
    disk.limit(1 << 20);
    let r = update(&server, "during-the-fault-2");
    assert!(
        r.status >= 500,
        "a write on a failing disk: {} {}",
        r.status,
        r.body
    );
    let not_ready = admin(&server, "/health/ready");
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert!(!not_ready.body.contains('\n'));
    let body: Value = serde_json::from_str(&not_ready.body).unwrap();
    assert_eq!(body["status"], "unavailable");
    let reason = body["errors"]["store"].as_str().unwrap();
    assert!(
        reason.contains("failed") && reason.contains("reopen"),
        "{reason}"
    );
    assert_eq!(admin(&server, "/health/alive").status, 200);
    let (_, _, text) = get_text(&server.admin_url("/metrics"));
    assert_eq!(
        plain_value(&text, "credstore_store_writable"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(plain_value(&text, "credstore_ready"), Some(0.0));

    // The disk comes back; the store stays failed until it is reopened.
    disk.limit(0);
    assert_eq!(admin(&server, "/health/ready").status, 503);
    let r = update(&server, "after-the-fault-3");
    assert!(
        r.status >= 500,
        "a write after the failure: {} {}",
        r.status,
        r.body
    );
    server.terminate();
    assert!(server.log().contains("reopen"), "{}", server.log());
    drop(server);

    // Restart: ready, the acknowledged change kept, writes work.
    disk.remount();
    let server = OpsServer::start(&data, &["--secret-file", secret_arg]);
    assert_eq!(admin(&server, "/health/ready").status, 200);
    let login = |password: &str| {
        let r = send(
            &a,
            "POST",
            &server.url(LOGIN_PATH),
            &[JSON],
            Some(&login_body(JOHN, password)),
        );
        assert_eq!(r.status, 200);
        verified(&r.body)
    };
    // The change whose sync failed may or may not have survived (its
    // caller got an error, not an acknowledgement); nothing else changed.
    let acknowledged = login("before-the-fault-1");
    let unknown = login("during-the-fault-2");
    assert!(
        acknowledged != unknown,
        "exactly one of the two passwords works"
    );
    assert!(!login("after-the-fault-3"), "a refused change");
    let r = update(&server, "after-the-restart-4");
    assert!(r.status == 200 && verified(&r.body), "{}", r.body);
    assert!(login("after-the-restart-4"));
}

/// A PostgreSQL cluster of this test's own (`.ci/postgres.sh`'s `pg_start`:
/// 127.0.0.1, a free port, a temporary directory), which the test stops and
/// starts under a running server. Removed on drop.
struct OwnCluster {
    url: String,
    dir: String,
    bin: String,
    port: String,
}

impl OwnCluster {
    /// `None` outside CI when no cluster can be made here; with `CI=true`
    /// that fails the test.
    fn start() -> Option<OwnCluster> {
        let out = Command::new("bash")
            .args([
                "-c",
                "source .ci/postgres.sh && pg_start >&2 && echo \"$CREDSTORE_POSTGRES_URL $CREDSTORE_PG_DIR $CREDSTORE_PG_BIN\"",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !out.status.success() || fields.len() != 3 {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but no PostgreSQL cluster could be started: {why}"
            );
            eprintln!("skipped: no PostgreSQL cluster here ({why})");
            return None;
        }
        let url = fields[0].to_owned();
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap()
            .to_owned();
        Some(OwnCluster {
            url,
            dir: fields[1].to_owned(),
            bin: fields[2].to_owned(),
            port,
        })
    }

    /// `pg_ctl` as the cluster's owner (the postgres user when root).
    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = format!("{}/pg_ctl", self.bin);
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let status = cmd
            .args(["-D", &format!("{}/data", self.dir)])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    }

    fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Starts it again on the same port, as `pg_start` did.
    fn start_again(&self) {
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir, self.port
        );
        let log = format!("{}/log", self.dir);
        self.pg_ctl(&["-l", &log, "-w", "-o", &opts, "start"]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", self.bin);
        let data = format!("{}/data", self.dir);
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new(&pg_ctl)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue 14, acceptance 2 on PostgreSQL: readiness is the backend's health.
/// The server's PostgreSQL stops under it → `/health/ready` answers 503 with
/// a reason, `/health/alive` stays 200; PostgreSQL starts again → 200, and a
/// login works again.
#[test]
fn readiness_follows_postgresql_stopping_and_starting() {
    let Some(pg) = OwnCluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("store.secret");
    let server = OpsServer::start(
        Path::new("/nonexistent/credstore-data"),
        &[
            "--postgres",
            &pg.url,
            "--secret-file",
            secret.to_str().unwrap(),
            "--admin-listen",
            "127.0.0.1:0",
            "--demo",
        ],
    );
    let ready = || get_text(&server.admin_url("/health/ready"));
    assert_eq!(ready().0, 200, "{}", ready().2);

    pg.stop();
    eventually(
        Duration::from_secs(15),
        "503 once PostgreSQL stopped",
        || ready().0 == 503,
    );
    let (_, _, reason) = ready();
    assert!(!reason.is_empty() && !reason.contains(&pg.url), "{reason}");
    assert_eq!(get_text(&server.admin_url("/health/alive")).0, 200);

    pg.start_again();
    eventually(
        Duration::from_secs(15),
        "200 once PostgreSQL is back",
        || ready().0 == 200,
    );
    eventually(
        Duration::from_secs(10),
        "a login once PostgreSQL is back",
        || {
            send(
                &agent(),
                "POST",
                &server.url(LOGIN_PATH),
                &[JSON],
                Some(&login_body(JOHN, JOHN_PASSWORD)),
            )
            .status
                == 200
        },
    );
}
