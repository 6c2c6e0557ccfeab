//! The 1M-customer footprint (SPEC §10.5): on-disk bytes against the raw
//! bytes of the records, the time to reopen, and the RSS of a process that
//! reopened the store and read every customer, with the configured cache.
//!
//! `cargo bench --bench footprint` (release). The store is built once under
//! `target/footprint-1m/` through the public API (imports, with the
//! unsynced durability: the bench measures size, not commits), closed
//! cleanly, then reopened in child processes (a fresh RSS), once per cache
//! size in `FOOTPRINT_CACHES_MIB` (default `64,32,16`).
//! The store is made as new stores are by default (uncompressed pages,
//! format version 2); `FOOTPRINT_COMPRESSED=1` builds and measures it with
//! `Config::with_page_compression(true)`, under
//! `target/footprint-1m-compressed/`. Raw bytes are what
//! every tree's keys and values take (customers, email index, events,
//! meta), as credstore encodes them; a customer record here is ~190 bytes,
//! with a random 53-character bcrypt tail and a random sealed key: sled
//! compresses its pages when asked, and shared values would flatter the
//! figure; emails are random, not in the box_ids' order, which would fill
//! the email index sequentially and flatter it too. The first reopen after
//! a build reads back everything sled wrote since it last opened, and is
//! reported apart. `FOOTPRINT_CUSTOMERS` changes the count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use credstore::{
    CompactPages, Config, CustomerFlags, Durability, ImportedCustomer, Store, StoreSecret,
};

const CHILD: &str = "FOOTPRINT_CHILD_CACHE_MIB";
/// bcrypt's base64 alphabet.
const BCRYPT_B64: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const FIRST_NAMES: [&str; 8] = [
    "Ana", "Bruno", "Camila", "Diego", "Elena", "Felipe", "Gabriela", "Hugo",
];
const LAST_NAMES: [&str; 8] = [
    "Silva",
    "Gomez",
    "Rodriguez",
    "Fernandez",
    "Lopez",
    "Martinez",
    "Perez",
    "Sanchez",
];

/// A bcrypt hash of the shape real imports carry (60 bytes), its 53 salt
/// and digest characters as random as a real one's (sled compresses its
/// pages: a hash shared by every customer would flatter the figure).
fn bcrypt_like(i: u64) -> String {
    let mut bytes = [0u8; 53];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    let tail: String = bytes
        .iter()
        .map(|b| BCRYPT_B64[usize::from(b % 64)] as char)
        .collect();
    format!("$2b$10${tail}")
}

/// An email in no relation to the box_id order (customers imported from
/// another system arrive in their ids' order, their emails at random):
/// emails in the order of the ids would insert into the email index
/// sequentially and flatter the figure.
fn email(i: u64) -> String {
    let h = blake3::hash(&(!i).to_le_bytes());
    let tag: String = h.as_bytes()[..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}.{tag}@example.com",
        FIRST_NAMES[(i % 8) as usize].to_lowercase()
    )
}

fn secret() -> StoreSecret {
    StoreSecret::from_bytes([0x66; 32])
}

fn customers() -> u64 {
    std::env::var("FOOTPRINT_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn customer(i: u64) -> ImportedCustomer {
    ImportedCustomer {
        box_id: 1 + i,
        email: email(i),
        first_name: FIRST_NAMES[(i % 8) as usize].into(),
        last_name: LAST_NAMES[(i / 8 % 8) as usize].into(),
        password_hash: bcrypt_like(i),
        key: None,
        flags: CustomerFlags::default(),
        enrolment_date: None,
        activation_date: None,
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Child: reopen with the cache, time it, read every customer, report.
fn child(data: &Path, cache_mib: u64) {
    let config = Config::default().with_cache_capacity(cache_mib << 20);
    let t = Instant::now();
    let store = Store::open(data, &secret(), config).unwrap();
    let reopen = t.elapsed();
    let n = customers();
    let t = Instant::now();
    for i in 0..n {
        store.customer(1 + i).unwrap();
    }
    let reads = t.elapsed();
    // A second pass: the cache is warm now, what a long-running server sees.
    let t = Instant::now();
    for i in 0..n {
        store.customer(1 + i).unwrap();
    }
    let warm = t.elapsed();
    println!(
        "{} {} {} {}",
        reopen.as_micros(),
        rss_kib(),
        (n as f64 / reads.as_secs_f64()) as u64,
        (n as f64 / warm.as_secs_f64()) as u64
    );
}

fn build(data: &Path, compress: bool) -> u64 {
    let n = customers();
    let config = Config::default()
        .with_durability(Durability::PeriodicFlushLosesRecentChanges)
        .with_page_compression(compress);
    let store = Store::open(data, &secret(), config).unwrap();
    let t = Instant::now();
    let threads = 2;
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = &store;
            s.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    store.import_customer(customer(i)).unwrap();
                }
            });
        }
    });
    store.flush().unwrap();
    eprintln!("imported {n} customers in {:.1?}", t.elapsed());
    n
}

fn main() {
    // The store is made as `credstore` makes one by default, uncompressed;
    // FOOTPRINT_COMPRESSED=1: the same store with compressed pages.
    let plain = !std::env::var("FOOTPRINT_COMPRESSED").is_ok_and(|v| v == "1");
    let name = if !plain {
        "target/footprint-1m-compressed"
    } else {
        "target/footprint-1m"
    };
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let data = root.join("data");
    if let Ok(cache) = std::env::var(CHILD) {
        child(&data, cache.parse().unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the footprint bench runs with `cargo bench --bench footprint`");
        return;
    }
    let n = customers();
    let stamp = root.join(format!("built-v4-{n}"));
    let built_now = !stamp.exists();
    if built_now {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        build(&data, !plain);
        std::fs::write(&stamp, "").unwrap();
    }
    let compacted = root.join("compacted");
    if !compacted.exists() {
        report(&data, n, plain, "as imported", built_now);
        let done = Store::compact(&data, CompactPages::Keep).unwrap();
        println!(
            "`credstore compact`: {} records in {:.1?}, sled's files {} -> {} bytes\n",
            done.records, done.took, done.bytes_before, done.bytes_after
        );
        std::fs::write(&compacted, "").unwrap();
        report(&data, n, plain, "compacted", true);
    } else {
        report(&data, n, plain, "compacted", false);
    }
}

/// Prints the store's footprint: raw and on-disk bytes, the reopen, and
/// the children's table. `first`: this is the first open since the store
/// was written (sled reads back what it wrote since its last open).
fn report(data: &Path, n: u64, plain: bool, state: &str, first: bool) {
    // Raw bytes: every key and value stored, as credstore encodes them.
    let t = Instant::now();
    let store = Store::open(data, &secret(), Config::default()).unwrap();
    let first_reopen = t.elapsed();
    let sample = credstore::internal::encoded_customer_len(&store, 1).unwrap();
    let trees = credstore::internal::stored_bytes(&store).unwrap();
    drop(store);
    let raw: u64 = trees.iter().map(|(_, _, b)| b).sum();
    let wal = dir_bytes(&data.join("wal"));
    let on_disk = dir_bytes(data);
    let caches: Vec<u64> = std::env::var("FOOTPRINT_CACHES_MIB")
        .unwrap_or_else(|_| "64,32,16".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    println!(
        "\n{n} customers, {state} (a customer record is {sample} bytes encoded), sled pages {}",
        if plain {
            "uncompressed"
        } else {
            "compressed (zstd)"
        }
    );
    for (tree, count, bytes) in trees.iter().filter(|t| t.1 > 0) {
        println!("  {tree}: {count} records, {bytes} bytes");
    }
    println!(
        "raw {raw} bytes; on disk {on_disk} bytes = {:.2}x raw: sled {} bytes ({:.2}x), \
         write-ahead log {wal} bytes (preallocated slots)\n",
        on_disk as f64 / raw as f64,
        on_disk - wal,
        (on_disk - wal) as f64 / raw as f64
    );
    println!(
        "reopen with the default cache, {}: {:.0} ms\n",
        if first {
            "the first since it was written"
        } else {
            "before the children's"
        },
        first_reopen.as_secs_f64() * 1000.0
    );
    println!(
        "| sled cache | reopen | RSS after reading every customer | cold gets/s | warm gets/s |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for cache in caches {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, cache.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        println!(
            "| {cache} MiB | {:.0} ms | {} MiB | {} | {} |",
            v[0] as f64 / 1000.0,
            v[1] / 1024,
            v[2],
            v[3]
        );
    }
}
