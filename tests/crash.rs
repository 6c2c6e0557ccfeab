//! `kill -9` during acknowledged writes: no acknowledged change is lost.
//!
//! The test binary re-executes itself as the child (`crash_child`, selected by
//! an environment variable). The child opens the store and runs 8 writer
//! threads, each on its own two customers, mixing password rotations, resets
//! consumed by token (after a token check) and by reset id, and reset
//! requests left outstanding; it prints one line on stdout after each call
//! returns `Ok`. The parent kills it with SIGKILL at a random moment
//! (sometimes while it is still opening, i.e. recovering), reads every line
//! it printed, and checks, in a reopened store, that each acknowledged
//! change is there: every acknowledged credential version (with the
//! password set at the version found, so the record is whole), every
//! consumed reset used, the last outstanding request of an account still
//! there while its credentials have not moved since, and a sound integrity
//! check. It checks after every kill: in place on half of the rounds (the
//! check's open recovers the log), on a copy of the directory on the others
//! (so that the next child recovers the crashed log itself).
//!
//! Half of the opens (the child's and the check's, at random) defer their
//! replay (`Config::with_deferred_replay_from(0)`): the log then goes on
//! after the recovered records, which is what the next kill tests.
//!
//! `CREDSTORE_CRASH_KILLS=1000` runs more rounds (default 12; `.ci/run`
//! with `CREDSTORE_LONG=1` runs 1,000); `CREDSTORE_CRASH_SEED=<n>` replays a
//! run (the seed is printed).

#![cfg(unix)]

#[path = "support/fs.rs"]
mod fs;
use fs::copy_dir;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use credstore::{
    BoxId, CompactPages, Config, Error, ManualClock, NewCustomer, Password, ResetDetails, Store,
    StoreSecret, Timestamp,
};

const CHILD_ENV: &str = "CREDSTORE_CRASH_CHILD";
const KILLS_ENV: &str = "CREDSTORE_CRASH_KILLS";
const SEED_ENV: &str = "CREDSTORE_CRASH_SEED";
const DEFER_ENV: &str = "CREDSTORE_CRASH_DEFER";
const CLOCK_ENV: &str = "CREDSTORE_CRASH_CLOCK_MS";
const WRITERS: u64 = 8;
const ACCOUNTS_PER_WRITER: u64 = 2;
/// How far each round's clock starts after the previous one's: more than a
/// round moves it (61 s per reset request), so time never runs backwards.
const ROUND_MS: i64 = 30 * 24 * 3600 * 1000;
/// Tokens outlive the test's clock, so that none expires under the checks.
const TOKEN_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// With `defer`, every replay at open is deferred (the log goes on after the
/// recovered records, which reach sled later): half of the opens use it.
fn config(defer: bool, clock: &ManualClock) -> Config {
    let config = Config::for_tests()
        .with_token_ttl(TOKEN_TTL)
        .with_clock(Arc::new(clock.clone()));
    if defer {
        config.with_deferred_replay_from(0)
    } else {
        config
    }
}

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([42; 32])
}

fn email(account: u64) -> String {
    format!("account{account}@example.com")
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

/// Ends the child, which the parent reports.
fn die(what: &str, e: Error) -> ! {
    eprintln!("{what} failed: {e}");
    std::process::exit(3);
}

/// One writer's loop over its own accounts. Lines printed, each after the
/// call returned `Ok`:
/// - `ver ID V`: the account's credentials moved to version V (password
///   `password(ID, V)`), by a rotation;
/// - `req ID V RID`: reset RID was issued while the account was at V;
/// - `used ID V RID`: reset RID was consumed, moving the account to V.
fn writer(store: &Store, clock: &ManualClock, accounts: &[BoxId], seed: u64) -> ! {
    let mut step = seed;
    loop {
        for &id in accounts {
            step += 1;
            let c = store.customer(id).unwrap_or_else(|e| die("reading", e));
            let v = c.credential_version;
            let next = password(id, v + 1);
            match step % 4 {
                0 => {
                    let c = store
                        .change_password(id, &next, v)
                        .unwrap_or_else(|e| die("rotating", e));
                    say(&format!("ver {id} {}", c.credential_version));
                }
                kind => {
                    // Past the per-account throttle.
                    clock.advance(Duration::from_secs(61));
                    let issued = store
                        .request_reset(&c.email, ResetDetails::default())
                        .unwrap_or_else(|e| die("requesting a reset", e));
                    let rid = issued.reset.id.clone();
                    say(&format!("req {id} {v} {rid}"));
                    match kind {
                        1 => {
                            let valid = store
                                .check_reset_token(&issued.token)
                                .unwrap_or_else(|e| die("checking a token", e));
                            assert_eq!(valid.box_id, id);
                            let c = store
                                .reset_password(&issued.token, Some(&c.email), &next)
                                .unwrap_or_else(|e| die("resetting by token", e));
                            say(&format!("used {id} {} {rid}", c.credential_version));
                        }
                        2 => {
                            let r = store
                                .reset_password_by_id(&rid, &issued.token, &next)
                                .unwrap_or_else(|e| die("resetting by id", e));
                            assert!(r.used_at.is_some());
                            say(&format!("used {id} {} {rid}", v + 1));
                        }
                        // Left outstanding.
                        _ => {}
                    }
                }
            }
        }
    }
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
    let start: i64 = std::env::var(CLOCK_ENV).unwrap().parse().unwrap();
    let clock = ManualClock::new(Timestamp(start));
    let store = Store::open(PathBuf::from(dir), &secret(), config(defer, &clock)).unwrap();
    let mut ids = Vec::new();
    for a in 0..WRITERS * ACCOUNTS_PER_WRITER {
        let id = match store.customer_by_email(&email(a)) {
            // What a read sees is durable: as good as acknowledged.
            Ok(c) => {
                say(&format!("ver {} {}", c.box_id, c.credential_version));
                c.box_id
            }
            Err(Error::NotFound(_)) => {
                // The first password is set at version 1.
                let first = NewCustomer::new(
                    email(a),
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
                say(&format!("ver {} {}", c.box_id, c.credential_version));
                c.box_id
            }
            Err(e) => panic!("reading customer: {e}"),
        };
        ids.push(id);
    }
    say("ready");
    let threads: Vec<_> = ids
        .chunks(ACCOUNTS_PER_WRITER as usize)
        .enumerate()
        .map(|(w, accounts)| {
            let (store, clock, accounts) = (store.clone(), clock.clone(), accounts.to_vec());
            std::thread::spawn(move || writer(&store, &clock, &accounts, w as u64))
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

/// What the children acknowledged, per account.
#[derive(Default)]
struct Acked {
    /// The highest credential version acknowledged.
    version: BTreeMap<BoxId, u64>,
    /// The last reset request acknowledged: (version at issue, reset id).
    requested: BTreeMap<BoxId, (u64, String)>,
    /// Resets whose consumption was acknowledged.
    used: Vec<(BoxId, String)>,
}

impl Acked {
    fn note(&mut self, line: &str) -> bool {
        let parts: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        let mut version = |id: BoxId, v: u64| {
            let known = self.version.entry(id).or_default();
            assert!(v >= *known, "versions only grow: {line}");
            *known = v;
        };
        match (parts.first().copied(), num(1), num(2), parts.get(3)) {
            (Some("ver"), Some(id), Some(v), None) => version(id, v),
            (Some("req"), Some(id), Some(v), Some(rid)) => {
                self.requested.insert(id, (v, (*rid).to_owned()));
            }
            (Some("used"), Some(id), Some(v), Some(rid)) => {
                version(id, v);
                self.used.push((id, (*rid).to_owned()));
            }
            _ => return false,
        }
        true
    }
}

/// Starts a child on `dir`, kills it, and returns the lines it printed.
fn run_child(dir: &Path, rng: &mut Rng, round: usize, clock_ms: i64) -> Vec<String> {
    let stderr_path = dir.with_extension(format!("stderr-{round}"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(DEFER_ENV, if rng.below(2) == 0 { "1" } else { "0" })
        .env(CLOCK_ENV, clock_ms.to_string())
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
        // Wait for writes to run, then kill at a random moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut ready, mut writing) = (false, false);
        while !writing {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    writing = ready && line != "ready";
                    ready |= line == "ready";
                    lines.push(line);
                }
                Err(_) => fail(&lines, "the child never started writing"),
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
}

/// Reopens the store and checks every acknowledged change.
fn verify(dir: &Path, acked: &Acked, round: usize, defer: bool, clock_ms: i64) {
    let clock = ManualClock::new(Timestamp(clock_ms));
    let store = Store::open(dir, &secret(), config(defer, &clock)).unwrap();
    for (&id, &version) in &acked.version {
        let c = store.customer(id).unwrap();
        assert!(
            c.credential_version >= version,
            "round {round}: customer {id} acknowledged version {version}, found {}",
            c.credential_version
        );
        // The password is the one set at the version found: the record is
        // whole, not a mix of two changes.
        let login = store.login(&c.email, &password(id, c.credential_version));
        assert!(
            login.is_ok(),
            "round {round}: customer {id} at version {}: {login:?}",
            c.credential_version
        );
        // The last acknowledged request stays outstanding until the
        // credentials move.
        if let Some((at, rid)) = acked.requested.get(&id)
            && c.credential_version == *at
        {
            let r = store.reset(rid);
            assert!(
                r.as_ref().is_ok_and(|r| r.used_at.is_none()),
                "round {round}: customer {id}: acknowledged reset {rid}: {r:?}"
            );
        }
    }
    for (id, rid) in &acked.used {
        let r = store.reset(rid);
        assert!(
            r.as_ref()
                .is_ok_and(|r| r.used_at.is_some() && r.box_id == *id),
            "round {round}: customer {id}: acknowledged use of reset {rid}: {r:?}"
        );
    }
    let report = store.check_integrity().unwrap();
    assert!(report.is_sound(), "round {round}: {:?}", report.problems);
    // Every acknowledged customer is there (checked above); one more may
    // be, registered durably by a child killed before it said so.
    let accounts = WRITERS * ACCOUNTS_PER_WRITER;
    assert!(
        report.customers >= acked.version.len() as u64 && report.customers <= accounts,
        "round {round}: {} customers, {} acknowledged",
        report.customers,
        acked.version.len()
    );
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let kills: usize = std::env::var(KILLS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
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
    let started = Instant::now();
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let copy = tmp.path().join("copy");
    let base_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut acked = Acked::default();
    let mut lines = 0;
    for round in 0..kills {
        let clock_ms = base_ms + ROUND_MS * round as i64;
        for line in run_child(&dir, &mut rng, round, clock_ms) {
            if acked.note(&line) {
                lines += 1;
            }
        }
        // Checking reopens (recovers) the store: on every other round at
        // random, on a copy, leaving the recovery to the next child.
        let check_clock = clock_ms + ROUND_MS / 2;
        let defer = rng.below(2) == 0;
        // Compacting a killed store: sled's files as the kill left them are
        // copied, and the log's records they lack are replayed by the open
        // after it. On the store itself, the next child runs on the copy.
        let compact = |path: &Path| {
            let done = Store::compact(path, CompactPages::Keep)
                .unwrap_or_else(|e| panic!("round {round}: compacting: {e}"));
            eprintln!("round {round}: compacted: {done:?}");
        };
        let compacting = rng.below(3) == 0;
        if rng.below(2) == 0 || round + 1 == kills {
            if compacting {
                compact(&dir);
            }
            verify(&dir, &acked, round, defer, check_clock);
        } else {
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(&dir, &copy);
            if compacting {
                compact(&copy);
            }
            verify(&copy, &acked, round, defer, check_clock);
        }
    }
    eprintln!(
        "crash test: {lines} acknowledged changes checked over {kills} kills in {:?}",
        started.elapsed()
    );
    assert!(lines > 0);
    assert!(!acked.used.is_empty() && !acked.requested.is_empty());
}
