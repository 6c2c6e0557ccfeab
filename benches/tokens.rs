//! Reset tokens. Target 4 (SPEC §10): a token check (parse + keyed BLAKE3 +
//! lookup + expiry check) at least 0.8x the raw sled point-get rate, and token
//! issue without the durable write at least 500k/s.
//!
//! The raw get is a sled point get of a reset record by id in the same store,
//! over the same keys, in the same run. After the criterion groups, an
//! interleaved pass prints the ratios directly.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use credstore::{
    Argon2Params, Config, Durability, ManualClock, NewCustomer, Password, ResetDetails, ResetToken,
    Store, StoreSecret, Timestamp, parse_token,
};
use criterion::{Criterion, Throughput};

/// Customers, one outstanding reset each.
const N: usize = 20_000;

struct Fixture {
    store: Store,
    tokens: Vec<String>,
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

fn config(clock: &ManualClock) -> Config {
    Config::default()
        .with_argon2(Argon2Params::insecure_for_tests())
        .with_durability(Durability::PeriodicFlushLosesRecentChanges)
        .with_clock(Arc::new(clock.clone()))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let store = Store::open(
        dir.path().join("data"),
        &StoreSecret::from_bytes([3; 32]),
        config(&clock),
    )
    .expect("store");
    let mut tokens = Vec::with_capacity(N);
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let email = format!("bench{i}@example.com");
        let pw = Password::new("bench-password-1").expect("pw");
        store
            .register(NewCustomer::new(email.as_str(), "B", "B", pw))
            .expect("register");
        let issued = store
            .request_reset(&email, ResetDetails::default())
            .expect("issue");
        tokens.push(issued.token.expose_secret().to_owned());
        ids.push(issued.reset.id);
    }
    Fixture {
        store,
        tokens,
        ids,
        _dir: dir,
    }
}

fn check(store: &Store, token: &str) {
    let t = parse_token(token.as_bytes()).expect("token");
    black_box(store.check_reset_token(&t).expect("valid"));
}

fn raw_get(store: &Store, id: &str) {
    assert!(black_box(store.bench_raw_reset_get(id).expect("get")));
}

fn bench_check(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("token check (20k resets)");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("raw sled point get (reset by id)", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            raw_get(&f.store, &f.ids[i])
        })
    });
    g.bench_function(
        "check_reset_token (parse + digest + lookups + checks)",
        |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                check(&f.store, &f.tokens[i])
            })
        },
    );
    g.finish();
}

fn bench_issue(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("token issue");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ResetToken::generate", |b| {
        b.iter(|| black_box(ResetToken::generate().expect("rng")))
    });
    g.bench_function("token + id + keyed digest (issue without the write)", |b| {
        b.iter(|| black_box(f.store.bench_reset_material().expect("rng")))
    });
    g.finish();

    // For scale: the whole request, with sled's periodic flush (no fsync).
    let clock = ManualClock::new(Timestamp(1_767_225_600_000));
    let store = Store::temporary(&StoreSecret::from_bytes([4; 32]), config(&clock)).expect("store");
    store
        .register(NewCustomer::new(
            "one@example.com",
            "B",
            "B",
            Password::new("bench-password-1").expect("pw"),
        ))
        .expect("register");
    let mut g = c.benchmark_group("token issue, whole request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_reset (periodic flush, drops the oldest)", |b| {
        b.iter(|| {
            clock.advance(Duration::from_secs(61));
            black_box(
                store
                    .request_reset("one@example.com", ResetDetails::default())
                    .expect("issue"),
            )
        })
    });
    g.finish();
}

/// Interleaved rounds of each operation; prints rates and the ratios.
fn ratios(f: &Fixture) {
    const ROUND: usize = 20_000;
    let (mut t_raw, mut t_check, mut t_issue) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut n = 0;
    for round in 0..10 {
        let start = Instant::now();
        for k in 0..ROUND {
            raw_get(&f.store, &f.ids[(k * 7919 + round) % N]);
        }
        t_raw += start.elapsed();
        let start = Instant::now();
        for k in 0..ROUND {
            check(&f.store, &f.tokens[(k * 7919 + round) % N]);
        }
        t_check += start.elapsed();
        let start = Instant::now();
        for _ in 0..ROUND {
            black_box(f.store.bench_reset_material().expect("rng"));
        }
        t_issue += start.elapsed();
        n += ROUND;
    }
    let rate = |t: Duration| n as f64 / t.as_secs_f64();
    let (raw, chk, iss) = (rate(t_raw), rate(t_check), rate(t_issue));
    println!("\n== SPEC §10 target 4, interleaved, {n} ops each ==");
    println!("raw sled point get : {raw:>12.0}/s");
    println!(
        "token check        : {chk:>12.0}/s  = {:.2}x raw get (target >= 0.8x)",
        chk / raw
    );
    println!("token issue (no write): {iss:>9.0}/s  (target >= 500000/s)");
}

fn main() {
    let f = fixture();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_check(&mut c, &f);
    bench_issue(&mut c, &f);
    ratios(&f);
    c.final_summary();
}
