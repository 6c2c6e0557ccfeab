//! `kill -9` during acknowledged writes: no acknowledged change is lost.
//!
//! The test binary re-executes itself as the child (`crash_child`, selected by
//! an environment variable). The child opens the store, registers a few
//! customers and rotates their passwords from several threads, printing one
//! `ack` line on stdout after each call returns `Ok`. The parent kills it with
//! SIGKILL at a random moment (sometimes while it is still opening, i.e.
//! recovering), reads every line it printed, reopens the store and checks
//! that each acknowledged credential version is there, that the customer's
//! password is the one set at its current version, and that the integrity
//! check passes.
//!
//! Half of the opens (the child's and the check's, at random) defer their
//! replay (`Config::with_deferred_replay_from(0)`): the log then goes on
//! after the recovered records, which is what the next kill tests.
//!
//! `CREDSTORE_CRASH_KILLS=500` runs more rounds (default 20);
//! `CREDSTORE_CRASH_SEED=<n>` replays a run (the seed is printed).

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use credstore::{BoxId, Config, Error, NewCustomer, Password, Store, StoreSecret};

const CHILD_ENV: &str = "CREDSTORE_CRASH_CHILD";
const KILLS_ENV: &str = "CREDSTORE_CRASH_KILLS";
const SEED_ENV: &str = "CREDSTORE_CRASH_SEED";
const DEFER_ENV: &str = "CREDSTORE_CRASH_DEFER";
const WRITERS: u64 = 4;

/// With `defer`, every replay at open is deferred (the log goes on after the
/// recovered records, which reach sled later): half of the opens use it.
fn config(defer: bool) -> Config {
    if defer {
        Config::for_tests().with_deferred_replay_from(0)
    } else {
        Config::for_tests()
    }
}

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([42; 32])
}

fn email(writer: u64) -> String {
    format!("writer{writer}@example.com")
}

/// The password a customer has at a credential version.
fn password(box_id: BoxId, version: u64) -> Password {
    Password::new(format!("password-{box_id}-{version}")).unwrap()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child: runs only when re-executed by the parent.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // The test harness has printed `test crash_child ... ` without a newline.
    say("");
    let defer = std::env::var_os(DEFER_ENV).is_some_and(|v| v == "1");
    let store = Store::open(PathBuf::from(dir), &secret(), config(defer)).unwrap();
    let mut ids = Vec::new();
    for w in 0..WRITERS {
        let id = match store.customer_by_email(&email(w)) {
            Ok(c) => c.box_id,
            Err(Error::NotFound(_)) => {
                // The first password is set at version 1.
                let first = NewCustomer::new(
                    email(w),
                    "Crash",
                    "Test",
                    Password::new("placeholder-1").unwrap(),
                );
                let (c, _) = store.register(first).unwrap();
                let c = store
                    .change_password(
                        c.box_id,
                        &password(c.box_id, c.credential_version + 1),
                        c.credential_version,
                    )
                    .unwrap();
                say(&format!("ack {} {}", c.box_id, c.credential_version));
                c.box_id
            }
            Err(e) => panic!("reading customer: {e}"),
        };
        ids.push(id);
    }
    say("ready");
    let threads: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let store = store.clone();
            std::thread::spawn(move || {
                loop {
                    let rotated = store.customer(id).and_then(|c| {
                        let v = c.credential_version;
                        store.change_password(id, &password(id, v + 1), v)
                    });
                    match rotated {
                        Ok(c) => say(&format!("ack {} {}", id, c.credential_version)),
                        Err(e) => {
                            // Ends the process, which the parent reports.
                            eprintln!("rotation failed: {e}");
                            std::process::exit(3);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Starts a child on `dir`, kills it, and returns the acknowledgements it printed.
fn run_child(dir: &Path, rng: &mut Rng, round: usize) -> Vec<(BoxId, u64)> {
    let stderr_path = dir.with_extension(format!("stderr-{round}"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(DEFER_ENV, if rng.below(2) == 0 { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let fail = |lines: &[String], why: &str| -> ! {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("round {round}: {why}\nchild stdout: {lines:?}\nchild stderr:\n{stderr}");
    };
    if rng.below(5) == 0 {
        // Kill it early: while it opens (and recovers) the store, or registers.
        std::thread::sleep(Duration::from_millis(rng.below(150)));
    } else {
        // Wait for rotations to run, then kill at a random moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut ready, mut rotating) = (false, false);
        while !rotating {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    rotating = ready && line.starts_with("ack ");
                    ready |= line == "ready";
                    lines.push(line);
                }
                Err(_) => fail(&lines, "the child never started rotating"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(100_000)));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    if status.signal() != Some(9) {
        fail(&lines, &format!("the child ended on its own: {status}"));
    }
    let _ = std::fs::remove_file(&stderr_path);
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("ack ")?.split(' ');
            let id = parts.next()?.parse().ok()?;
            let version = parts.next()?.parse().ok()?;
            Some((id, version))
        })
        .collect()
}

/// Reopens the store and checks every acknowledged change.
fn verify(dir: &Path, acked: &BTreeMap<BoxId, u64>, round: usize, defer: bool) {
    let store = Store::open(dir, &secret(), config(defer)).unwrap();
    for (&id, &version) in acked {
        let c = store.customer(id).unwrap();
        assert!(
            c.credential_version >= version,
            "round {round}: customer {id} acknowledged version {version}, found {}",
            c.credential_version
        );
        // The password is the one set at the version found: the record is
        // whole, not a mix of two rotations.
        let login = store.login(&c.email, &password(id, c.credential_version));
        assert!(
            login.is_ok(),
            "round {round}: customer {id} at version {}: {login:?}",
            c.credential_version
        );
    }
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "round {round}: {:?}", report.problems);
    assert_eq!(report.customers, acked.len() as u64, "round {round}");
}

#[test]
fn acknowledged_rotations_survive_kill_9() {
    let kills: usize = std::env::var(KILLS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {kills} kills, {SEED_ENV}={seed}");
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut acked: BTreeMap<BoxId, u64> = BTreeMap::new();
    let mut total = 0;
    for round in 0..kills {
        for (id, version) in run_child(&dir, &mut rng, round) {
            let v = acked.entry(id).or_default();
            assert!(version >= *v, "versions only grow");
            *v = version;
            total += 1;
        }
        // Verifying reopens (recovers) the store; every other round leave the
        // recovery to the next child instead.
        if rng.below(2) == 0 || round + 1 == kills {
            verify(&dir, &acked, round, rng.below(2) == 0);
        }
    }
    eprintln!("crash test: {total} acknowledged changes checked over {kills} kills");
    assert!(total > 0);
}
