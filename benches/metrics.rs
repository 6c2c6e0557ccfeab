//! What the operators' metrics (issue 14) cost a request, measured apart
//! from the HTTP bench (whose throughput, on a shared machine, moves by more
//! than the 2% it has to resolve): the calls the router makes for each
//! request (`credstore_http_requests_total` + the latency histogram, and
//! the hashing-admission histogram for requests that may hash), in
//! nanoseconds, with no recorder (`--no-metrics`: the facade's no-ops) and
//! with the Prometheus recorder installed, from one thread and from one
//! thread per core at once (contention on the registry); and what a scrape
//! (`observe_store` + render) costs.
//!
//! `cargo bench --bench metrics`; prints a table. Compare with the CPU time
//! a request costs (cores ÷ the HTTP bench's requests/s).

use std::hint::black_box;
use std::time::{Duration, Instant};

use credstore::{Config, Store, StoreSecret};

/// Calls per timed batch; batches per figure (the median is reported).
const CALLS: u32 = 200_000;
const BATCHES: usize = 9;

/// One request's metrics, as the router records them, on a rotating set
/// of routes, methods and statuses (so that several series are hit). The
/// route's template is computed here too, as the router does for its log
/// line with or without metrics: it is in both figures.
fn one_request(i: u32) {
    const CASES: [(&str, &str, u16); 4] = [
        ("/api/v1/shop/customers/reset-password", "POST", 200),
        (
            "/wcf-services/service-customer.svc/customer/customer-login",
            "POST",
            200,
        ),
        ("/api/v1/shop/customers/reset-password/tok", "GET", 404),
        ("/nowhere", "GET", 404),
    ];
    let (path, method, status) = CASES[(i % 4) as usize];
    if i % 4 == 1 {
        // A login: it waited for a hashing slot first.
        credstore::internal::record_hashing_admission_metrics(Duration::from_micros(u64::from(
            i % 50,
        )));
    }
    credstore::internal::record_request_metrics(
        credstore::http::route_template(black_box(path)),
        black_box(method),
        black_box(status),
        Duration::from_micros(u64::from(i % 5000)),
    );
}

/// Median nanoseconds per request over `BATCHES` batches, `threads` at once.
fn per_request_ns(threads: usize) -> f64 {
    let mut batches: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for k in 0..threads {
                    s.spawn(move || {
                        for i in 0..CALLS {
                            one_request(i.wrapping_add(k as u32));
                        }
                    });
                }
            });
            // Wall time of `threads` × CALLS calls on `threads` threads:
            // the time one call takes on its thread.
            t.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[BATCHES / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("the metrics cost bench runs with `cargo bench --bench metrics`");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let off_1 = per_request_ns(1);
    let off_n = per_request_ns(cores);
    let prometheus = credstore::metrics::Prometheus::install().expect("the recorder");
    // Warm: every series exists, as after a server's first requests.
    for i in 0..1000 {
        one_request(i);
    }
    let on_1 = per_request_ns(1);
    let on_n = per_request_ns(cores);

    let store = Store::temporary(&StoreSecret::from_bytes([9; 32]), Config::for_tests())
        .expect("a temporary store");
    let mut scrapes: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            black_box(prometheus.render(&store));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    scrapes.sort_by(f64::total_cmp);
    let scrape_us = scrapes[BATCHES / 2];

    println!("\nthe router's metrics calls per request (median of {BATCHES} batches of {CALLS})\n");
    println!("| recorder | 1 thread | {cores} threads at once |");
    println!("| --- | --- | --- |");
    println!("| none (`--no-metrics`) | {off_1:.1} ns | {off_n:.1} ns |");
    println!("| Prometheus | {on_1:.1} ns | {on_n:.1} ns |");
    println!(
        "| the recorder's cost | {:.1} ns | {:.1} ns |",
        on_1 - off_1,
        on_n - off_n
    );
    println!(
        "\na scrape (observe_store + render, an empty store): {scrape_us:.0} µs; \
         every 15 s that is {:.4}% of one core",
        scrape_us / 15e6 * 100.0
    );
}
