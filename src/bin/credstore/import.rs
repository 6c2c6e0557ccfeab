//! `customer import`: JSON Lines, one customer per line; every bad line is
//! reported with its number and the import goes on.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use credstore::{CustomerFlags, CustomerKey, Durability, ImportedCustomer, Store, Timestamp};
use serde::Deserialize;

use crate::{CliResult, Failure, Global};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// JSON Lines file, or `-` for standard input.
    file: PathBuf,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Line {
    box_id: u64,
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    password_hash: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default = "yes")]
    is_active: bool,
    #[serde(default = "yes")]
    is_enable: bool,
    #[serde(default)]
    is_business: bool,
    #[serde(default)]
    is_vip: bool,
    #[serde(default)]
    must_change_password: bool,
    #[serde(default)]
    enrolment_date: Option<String>,
    #[serde(default)]
    activation_date: Option<String>,
}

fn date(field: &str, v: Option<String>) -> Result<Option<Timestamp>, String> {
    match v {
        None => Ok(None),
        Some(s) => Timestamp::parse_rfc3339(&s)
            .map(Some)
            .ok_or_else(|| format!("{field} is not an RFC 3339 date")),
    }
}

/// A JSON error without the offending value: serde_json quotes scalars in
/// "invalid type" messages, and a line may hold a customer key.
fn describe(e: serde_json::Error) -> String {
    let msg = e.to_string();
    match e.classify() {
        serde_json::error::Category::Data if msg.starts_with("missing field") => msg,
        serde_json::error::Category::Data => {
            format!(
                "a field has the wrong type or value (column {})",
                e.column()
            )
        }
        _ => format!("not a JSON object (column {})", e.column()),
    }
}

fn import_line(store: &Store, text: &str) -> Result<u64, String> {
    let line: Line = serde_json::from_str(text).map_err(describe)?;
    let key = match line.key {
        Some(k) => Some(CustomerKey::new(k).map_err(|e| e.to_string())?),
        None => None,
    };
    let imp = ImportedCustomer {
        box_id: line.box_id,
        email: line.email,
        first_name: line.first_name,
        last_name: line.last_name,
        password_hash: line.password_hash,
        key,
        flags: CustomerFlags {
            is_active: line.is_active,
            is_enable: line.is_enable,
            is_business: line.is_business,
            is_vip: line.is_vip,
            must_change_password: line.must_change_password,
        },
        enrolment_date: date("enrolment_date", line.enrolment_date)?,
        activation_date: date("activation_date", line.activation_date)?,
    };
    let box_id = imp.box_id;
    store.import_customer(imp).map_err(|e| e.to_string())?;
    Ok(box_id)
}

/// Imports at least this large end with a hint to compact the store: 1M
/// customers left sled's files 4.2x their raw bytes (1.7x compacted; with
/// compressed pages 2.1x and 1.0x, and the next open reading back the
/// import for 19 s).
const COMPACT_HINT: u64 = 100_000;

pub fn run(g: &Global, args: ImportArgs) -> CliResult {
    // A bulk import commits without a sync per line and flushes once at the
    // end: a crash mid-import loses the tail, and re-running reports the lines
    // already imported as "already exists".
    let config = g
        .config()?
        .with_durability(Durability::PeriodicFlushLosesRecentChanges);
    let store = g.open_with(config)?;

    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file)
            .map_err(|e| Failure(format!("cannot open {}: {e}", args.file.display())))?;
        Box::new(BufReader::new(f))
    };
    let start = Instant::now();
    let mut last_report = Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("line {n}: cannot read: {e}");
                failed += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match import_line(&store, &line) {
            Ok(_) => ok += 1,
            Err(e) => {
                eprintln!("line {n}: {e}");
                failed += 1;
            }
        }
        if last_report.elapsed().as_secs() >= 2 {
            eprintln!(
                "... {n} lines read, {ok} imported, {failed} failed ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    store.flush()?;
    outln!("imported {ok} customers, {failed} lines failed");
    if ok >= COMPACT_HINT && !g.on_postgres() {
        eprintln!(
            "hint: `credstore compact` (with no server running) now gives back the space \
             the import left unused and makes the next start fast (README, \"Footprint\")"
        );
    }
    if failed > 0 {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
