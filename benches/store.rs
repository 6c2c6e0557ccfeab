//! Foundation operations. Target 3 (SPEC §10): login end to end (lookup +
//! verify + failed-count bookkeeping) within 1.10x of a bare argon2id
//! verification with the same parameters, measured side by side here.

use std::hint::black_box;
use std::time::Duration;

use argon2::{Algorithm, Argon2, Version};
use credstore::{
    Argon2Params, Config, CustomerKey, Durability, NewCustomer, Password, Store, StoreSecret,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn store(params: Argon2Params) -> Store {
    let config = Config::default()
        .with_argon2(params)
        .with_durability(Durability::PeriodicFlushLosesRecentChanges);
    Store::temporary(&StoreSecret::from_bytes([7; 32]), config).expect("store")
}

fn login_vs_bare_argon2(c: &mut Criterion) {
    let params = Argon2Params::default();
    let s = store(params);
    let (_, _) = s
        .register(NewCustomer::new(
            "bench@example.com",
            "B",
            "B",
            Password::new("bench-password-1").expect("pw"),
        ))
        .expect("register");
    let mut g = c.benchmark_group("login (argon2id m=19456 t=2 p=1)");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    let ap = argon2::Params::new(params.m_cost(), params.t_cost(), params.p_cost(), Some(32))
        .expect("params");
    let pepper = [9u8; 32];
    let ctx = Argon2::new_with_secret(&pepper, Algorithm::Argon2id, Version::V0x13, ap.clone())
        .expect("ctx");
    let mut blocks = vec![argon2::Block::default(); ap.block_count()];
    g.bench_function("bare argon2id verify (reused memory)", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            ctx.hash_password_into_with_memory(
                b"bench-password-1",
                b"0123456789abcdef",
                &mut out,
                &mut blocks,
            )
            .expect("hash");
            black_box(out)
        })
    });
    g.bench_function("bare argon2id verify (fresh memory)", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            ctx.hash_password_into(b"bench-password-1", b"0123456789abcdef", &mut out)
                .expect("hash");
            black_box(out)
        })
    });
    let pw = Password::new("bench-password-1").expect("pw");
    g.bench_function("Store::login", |b| {
        b.iter(|| black_box(s.login("bench@example.com", &pw).expect("login")))
    });
    let wrong = Password::new("not-the-password").expect("pw");
    g.bench_function("Store::login unknown email (dummy verify)", |b| {
        b.iter(|| black_box(s.login("nobody@example.com", &wrong).is_err()))
    });
    g.finish();
}

fn cheap_operations(c: &mut Criterion) {
    let s = store(Argon2Params::insecure_for_tests());
    let (customer, key) = s
        .register(NewCustomer::new(
            "fast@example.com",
            "F",
            "F",
            Password::new("fast-password-1").expect("pw"),
        ))
        .expect("register");
    let mut g = c.benchmark_group("operations (cheap argon2, no fsync)");
    g.bench_function("authenticate_customer", |b| {
        b.iter(|| {
            black_box(
                s.authenticate_customer(customer.box_id, &key)
                    .expect("auth"),
            )
        })
    });
    let wrong = CustomerKey::new("wrong-key").expect("key");
    g.bench_function("authenticate_customer (wrong key)", |b| {
        b.iter(|| black_box(s.authenticate_customer(customer.box_id, &wrong).is_err()))
    });
    g.bench_function("customer_by_email", |b| {
        b.iter(|| black_box(s.customer_by_email("fast@example.com").expect("get")))
    });
    let mut n = 0u64;
    g.bench_function("register", |b| {
        b.iter(|| {
            n += 1;
            let email = format!("r{n}@example.com");
            black_box(
                s.register(NewCustomer::new(
                    email,
                    "R",
                    "R",
                    Password::new("register-pw-1").expect("pw"),
                ))
                .expect("register"),
            )
        })
    });
    let pws = [
        Password::new("rotation-pw-a").expect("pw"),
        Password::new("rotation-pw-b").expect("pw"),
    ];
    let mut i = 0usize;
    g.bench_function("change_password (rotation)", |b| {
        b.iter(|| {
            i += 1;
            let v = s.customer(customer.box_id).expect("get").credential_version;
            black_box(
                s.change_password(customer.box_id, &pws[i % 2], v)
                    .expect("rotate"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, login_vs_bare_argon2, cheap_operations);
criterion_main!(benches);
