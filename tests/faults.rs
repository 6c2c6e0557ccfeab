//! Faults seen from outside (SPEC §11), through the real `credstore` binary:
//! a record damaged on disk in the middle of the write-ahead log, and a disk
//! that fills up under the server.
//!
//! The full-disk test mounts a small tmpfs and so needs root; it says that
//! it skipped otherwise, except under `CI=true`, where skipping is a failure
//! (CI runs as root).

#![cfg(unix)]

#[path = "support/fs.rs"]
mod fs;
use fs::copy_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credstore::{Config, EventKind, Password, Store, StoreSecret};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_credstore");
const CHEAP: &str = "8,1,1";
const APP_KEY: &str = "1656d700707ad9a77f737e5df3db088a";
const JOHN_KEY: &str = "YpbCNpzqxYqVWv+tzg4e4Ex6ALiT+DfKSYA3NY2dZcw=";
const LOGIN_PATH: &str = "/wcf-services/service-customer.svc/customer/customer-registration";
const UPDATE_PATH: &str = "/wcf-services/service-customer.svc/customer/customer-update-password";
const RESET_PATH: &str = "/api/v1/acme12aa/customers/reset-password";

/// Runs an admin command; returns (exit code, stdout, stderr).
fn cli(data: &Path, secret: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        // The tests name their store; CI exports the PostgreSQL URL for them.
        .env_remove("CREDSTORE_POSTGRES_URL")
        .arg("--data")
        .arg(data)
        .arg("--secret-file")
        .arg(secret)
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

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(data: &Path, secret: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            // The tests name their store; CI exports the PostgreSQL URL for them.
            .env_remove("CREDSTORE_POSTGRES_URL")
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--secret-file")
            .arg(secret)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
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
        Server { child, base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no clean close, the log keeps its records.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM (a clean close), then wait.
    fn terminate(mut self) -> std::process::ExitStatus {
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, body); status 0 when the request did not get an answer.
fn send(a: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if body.is_some() {
        builder = builder.header("Content-Type", "application/json");
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    match a.run(builder.body(bytes).unwrap()) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap_or_default())
        }
        Err(e) => (0, format!("transport error: {e}")),
    }
}

fn update_body(box_id: u64, key: &str, email: &str, password: &str) -> Value {
    json!({"user_code": 396, "app_key": APP_KEY, "customer_box_id": box_id,
        "customer_key": key, "customer_email": email, "customer_new_password": password})
}

/// Whether `password` logs `email` in, over HTTP.
fn logs_in(server: &Server, email: &str, password: &str) -> bool {
    let body = json!({"user_code": 396, "app_key": APP_KEY, "customer_email": email,
        "customer_password": password});
    let (status, text) = send(&agent(), "POST", &server.url(LOGIN_PATH), Some(&body));
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()[0]["_verify"] == true
}

/// The write-ahead log's records after its checkpoint, read the way
/// recovery reads them (byte formats in `src/store/wal/format.rs`):
/// (slot file, offset, total length).
fn log_records(data: &Path) -> Vec<(PathBuf, u64, usize)> {
    let wal = data.join("wal");
    let cp = std::fs::read(wal.join("checkpoint")).unwrap();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(&cp[..8], b"CSWALCK1");
    let (epoch, mut seq, mut segment, mut offset) = (
        u64_at(&cp, 8),
        u64_at(&cp, 16) + 1,
        u64_at(&cp, 24),
        u64_at(&cp, 32),
    );
    let slots: BTreeMap<u64, (PathBuf, Vec<u8>)> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("slot-")
        })
        .filter_map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (bytes[..8] == *b"CSWALSG1" && u64_at(&bytes, 8) == epoch)
                .then(|| (u64_at(&bytes, 16), (p, bytes)))
        })
        .collect();
    // The record's total length, when a record `seq` starts at `at`.
    let record_at = |b: &[u8], at: usize, seq: u64| {
        let h = b.get(at..at + 24)?;
        (h[..4] == *b"CSWR" && u64_at(h, 8) == epoch && u64_at(h, 16) == seq)
            .then(|| 24 + u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize + 8)
    };
    let mut out = Vec::new();
    while let Some((path, bytes)) = slots.get(&segment) {
        if let Some(len) = record_at(bytes, offset as usize, seq) {
            out.push((path.clone(), offset, len));
            offset += len as u64;
            seq += 1;
        } else if slots
            .get(&(segment + 1))
            .is_some_and(|(_, b)| record_at(b, 32, seq).is_some())
        {
            // The next record opens the next segment.
            segment += 1;
            offset = 32;
        } else {
            break;
        }
    }
    out
}

#[test]
fn a_damaged_record_in_the_middle_of_the_log_is_refused_until_recover_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = dir.path().join("secret");
    // The demo parties, then a clean close: the log starts empty.
    let server = Server::start(&data, &secret, &["--demo"]);
    assert!(server.terminate().success());
    let server = Server::start(&data, &secret, &[]);
    let password = |i: usize| format!("faults-password-{i}");
    let a = agent();
    for i in 1..=12 {
        let body = update_body(811111, JOHN_KEY, "johndoe@email.com", &password(i));
        let (status, text) = send(&a, "POST", &server.url(UPDATE_PATH), Some(&body));
        assert_eq!(status, 200, "{text}");
    }
    // No clean close: the twelve records stay in the log.
    server.kill9();
    let records = log_records(&data);
    assert_eq!(records.len(), 12, "one record per password update");

    // A torn tail (the last record half written) opens as before, without it.
    let torn = dir.path().join("torn");
    copy_dir(&data, &torn);
    let (slot, at, len) = &records[11];
    let slot = torn.join("wal").join(slot.file_name().unwrap());
    let mut bytes = std::fs::read(&slot).unwrap();
    let end = (*at as usize) + len;
    bytes[end - len / 2..end].fill(0);
    std::fs::write(&slot, bytes).unwrap();
    let (code, out, err) = cli(&torn, &secret, &["check"], "");
    assert_eq!(code, 0, "{out}{err}");
    let server = Server::start(&torn, &secret, &[]);
    assert!(logs_in(&server, "johndoe@email.com", &password(11)));
    server.kill9();

    // A flipped byte in record 6 of 12: open refuses, naming the slot and
    // the offset, and changes nothing.
    let (slot, at, len) = records[5].clone();
    let mut bytes = std::fs::read(&slot).unwrap();
    bytes[at as usize + len / 2] ^= 0x10;
    std::fs::write(&slot, &bytes).unwrap();
    let slot_name = slot.file_name().unwrap().to_string_lossy().into_owned();
    let wal_files = || -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(data.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(p).unwrap()))
            .collect()
    };
    let before = wal_files();
    for args in [&["check"][..], &["recover"][..]] {
        let (code, out, err) = cli(&data, &secret, args, "");
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(
            err.contains(&format!("corrupt at {slot_name} offset {at}"))
                && err.contains("recover --truncate-at-corruption"),
            "{args:?}: {err}"
        );
    }
    let server_log = {
        let mut child = Command::new(BIN)
            // The tests name their store; CI exports the PostgreSQL URL for them.
            .env_remove("CREDSTORE_POSTGRES_URL")
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .arg("--secret-file")
            .arg(&secret)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            !child.wait().unwrap().success(),
            "the server refuses to start"
        );
        err
    };
    assert!(server_log.contains(&slot_name), "{server_log}");
    assert!(wal_files() == before, "a refused open changes nothing");

    // Recovery that accepts the loss, explicitly: records 6..=12 go.
    let (code, out, err) = cli(&data, &secret, &["recover", "--truncate-at-corruption"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dropped 7 records"), "{out}");
    let (code, out, err) = cli(&data, &secret, &["check"], "");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&data, &secret, &["recover", "--truncate-at-corruption"], "");
    assert_eq!(code, 0);
    assert!(out.contains("dropped 0 records"), "{out}");
    let server = Server::start(&data, &secret, &[]);
    assert!(logs_in(&server, "johndoe@email.com", &password(5)));
    assert!(!logs_in(&server, "johndoe@email.com", &password(6)));
    // And the store takes writes again.
    let body = update_body(811111, JOHN_KEY, "johndoe@email.com", &password(13));
    assert_eq!(
        send(&a, "POST", &server.url(UPDATE_PATH), Some(&body)).0,
        200
    );
    assert!(logs_in(&server, "johndoe@email.com", &password(13)));
}

/// A tmpfs mounted for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0;
    for chunk in [1 << 20, 4096, 512] {
        let zeros = vec![0u8; chunk];
        while f.write_all(&zeros).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// Every file under `dir` whose name ends in `.tmp`.
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(temporary_files(&path));
        } else if path.to_string_lossy().ends_with(".tmp") {
            out.push(path);
        }
    }
    out
}

const UPDATERS: usize = 6;
const RESETTERS: usize = 2;
const RESET_POOL: usize = 3000;
/// Each resetter requests one reset per this many password updates: about
/// 1,800 resets fill the log together with the updates (~16 MiB of ~1 KiB
/// records), leaving the rest of the pool for after the disk is full.
const UPDATES_PER_RESET: u64 = 16;

fn updater_email(w: usize) -> String {
    format!("updater{w}-{}@example.com", "u".repeat(180))
}

fn updater_key(w: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([w as u8 + 1; 32])
}

fn reset_email(i: usize) -> String {
    format!("reset{i}-{}@example.com", "r".repeat(180))
}

fn password(w: usize, n: u64) -> String {
    format!("full-disk-{w}-{n}")
}

#[test]
fn a_full_disk_refuses_writes_changes_nothing_and_loses_nothing_acknowledged() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: the full-disk test must not skip there"
        );
        eprintln!("SKIPPED: the full-disk test mounts a tmpfs and needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Room for sled's files and one 16 MiB log slot, not for a second.
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), 26);
    let data = mnt.0.join("data");
    let secret = dir.path().join("secret");
    let outbox = dir.path().join("outbox");

    // Customers with long names and emails (big records): updaters with
    // known keys, and a pool of emails that each get one reset request.
    let hash = format!("$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ${}", "A".repeat(43));
    let names = json!({"first_name": "F".repeat(250), "last_name": "L".repeat(250)});
    let mut lines = String::new();
    let mut add = |box_id: usize, email: String, key: Option<String>| {
        let mut c = json!({"box_id": box_id, "email": email, "password_hash": hash});
        c.as_object_mut()
            .unwrap()
            .extend(names.as_object().unwrap().clone());
        if let Some(k) = key {
            c["key"] = json!(k);
        }
        lines.push_str(&c.to_string());
        lines.push('\n');
    };
    for w in 0..UPDATERS {
        add(100 + w, updater_email(w), Some(updater_key(w)));
    }
    for i in 0..RESET_POOL {
        add(1000 + i, reset_email(i), None);
    }
    let (code, out, err) = cli(&data, &secret, &["customer", "import", "-"], &lines);
    assert_eq!(code, 0, "{out}{err}");

    let server = Server::start(
        &data,
        &secret,
        &["--demo", "--mail-outbox", outbox.to_str().unwrap()],
    );
    let filled = fill(&mnt.0.join("filler"));
    eprintln!("full disk: filled the last {} KiB", filled >> 10);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let base = server.base.clone();
    // Updaters: sequential password changes of their own customer.
    let updates = Arc::new(AtomicU64::new(0));
    let updaters: Vec<_> = (0..UPDATERS)
        .map(|w| {
            let (stop, base, updates) = (stop.clone(), base.clone(), updates.clone());
            std::thread::spawn(move || {
                let a = agent();
                let (mut acked, mut refused, mut unanswered) = (0u64, 0u64, 0u64);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && refused < 50 {
                    n += 1;
                    updates.fetch_add(1, Ordering::Relaxed);
                    let body = update_body(
                        100 + w as u64,
                        &updater_key(w),
                        &updater_email(w),
                        &password(w, n),
                    );
                    match send(&a, "POST", &format!("{base}{UPDATE_PATH}"), Some(&body)) {
                        (200, text) => {
                            let v: Value = serde_json::from_str(&text).unwrap();
                            assert_eq!(v[0]["_verify"], true, "{text}");
                            acked = n;
                        }
                        (s, _) if s >= 500 => refused += 1,
                        (0, _) => unanswered += 1,
                        (s, text) => panic!("updater {w}: {s} {text}"),
                    }
                }
                (acked, n, refused, unanswered)
            })
        })
        .collect();
    // Resetters: one reset request per email of their slice, one for every
    // UPDATES_PER_RESET updates (so that the pool lasts until after the
    // disk is full, however fast the machine).
    // Granted (200 with success: true) or refused: a 5xx, or the format's
    // "could not be queued" answer (200 with success: false, SPEC §6.2).
    let reset_outcomes: Arc<Mutex<BTreeMap<usize, bool>>> = Arc::default();
    let resetters: Vec<_> = (0..RESETTERS)
        .map(|r| {
            let (stop, base, outcomes, updates) = (
                stop.clone(),
                base.clone(),
                reset_outcomes.clone(),
                updates.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                for (j, i) in (r..RESET_POOL).step_by(RESETTERS).enumerate() {
                    while !stop.load(Ordering::Relaxed)
                        && updates.load(Ordering::Relaxed) < j as u64 * UPDATES_PER_RESET
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"email": reset_email(i)});
                    let (status, text) =
                        send(&a, "POST", &format!("{base}{RESET_PATH}"), Some(&body));
                    assert!(status == 200 || status >= 500, "reset {i}: {status} {text}");
                    let granted = status == 200 && text.contains("\"success\":true");
                    outcomes.lock().unwrap().insert(i, granted);
                }
            })
        })
        .collect();
    // A reader: token checks (reads only) must keep being answered.
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, base, reads) = (stop.clone(), base.clone(), reads.clone());
        std::thread::spawn(move || {
            let a = agent();
            while !stop.load(Ordering::Relaxed) {
                let token = "Q".repeat(64);
                let (status, text) = send(&a, "GET", &format!("{base}{RESET_PATH}/{token}"), None);
                assert_eq!(status, 200, "a read was not answered: {text}");
                reads.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut outcomes = Vec::new();
    for (w, h) in updaters.into_iter().enumerate() {
        let o = h.join().expect("an updater panicked");
        eprintln!(
            "full disk: updater {w}: acknowledged {} of {} ({} refused, {} unanswered)",
            o.0, o.1, o.2, o.3
        );
        outcomes.push(o);
    }
    stop.store(true, Ordering::Relaxed);
    for h in resetters {
        h.join().expect("a resetter panicked");
    }
    reader.join().expect("the reader panicked");
    let took = started.elapsed();
    let log = server.log.lock().unwrap().clone();
    if std::env::var_os("CREDSTORE_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(server.terminate().code().is_some());
    eprintln!(
        "full disk: {took:?}, {} reads answered",
        reads.load(Ordering::Relaxed)
    );

    for (w, (acked, _, refused, unanswered)) in outcomes.iter().enumerate() {
        assert!(*acked > 0, "updater {w} never succeeded");
        assert!(
            *refused > 0,
            "updater {w} was never refused: the disk never filled up"
        );
        assert_eq!(*unanswered, 0, "updater {w}: requests without an answer");
    }
    assert!(
        log.contains("No space left") || log.contains("no space left"),
        "the server's log names the full disk:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    let leftovers = temporary_files(&data);
    assert!(
        leftovers.is_empty(),
        "half-made files left behind: {leftovers:?}"
    );

    // More space, a restart: everything acknowledged is there, nothing
    // refused is.
    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    let status = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&mnt.0)
        .status()
        .unwrap();
    assert!(status.success());
    let key = StoreSecret::from_hex(&std::fs::read_to_string(&secret).unwrap()).unwrap();
    let store = Store::open(&data, &key, Config::for_tests()).unwrap();
    for (w, (acked, ..)) in outcomes.iter().enumerate() {
        let pw = Password::new(password(w, *acked)).unwrap();
        assert!(
            store.login(&updater_email(w), &pw).is_ok(),
            "updater {w}: acknowledged password {acked} is not the one that logs in"
        );
    }
    let mut issued = BTreeSet::new();
    let mut from = 0;
    loop {
        let events = store.events(from, 10_000).unwrap();
        let Some(last) = events.last() else { break };
        from = last.seq + 1;
        issued.extend(
            events
                .iter()
                .filter(|e| e.kind == EventKind::ResetIssued)
                .filter_map(|e| e.box_id),
        );
    }
    let outcomes = reset_outcomes.lock().unwrap();
    let (granted, refused): (Vec<_>, Vec<_>) = outcomes.iter().partition(|(_, g)| **g);
    eprintln!(
        "full disk: {} resets granted, {} refused",
        granted.len(),
        refused.len()
    );
    assert!(
        !granted.is_empty() && !refused.is_empty(),
        "resets both granted and refused"
    );
    for (i, granted) in outcomes.iter() {
        let box_id = 1000 + *i as u64;
        assert_eq!(
            issued.contains(&box_id),
            *granted,
            "reset {i} answered granted={granted}"
        );
    }
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    // Writes work again.
    let c = store.customer(100).unwrap();
    store
        .change_password(
            100,
            &Password::new("after-the-disk-filled").unwrap(),
            c.credential_version,
        )
        .unwrap();
}
