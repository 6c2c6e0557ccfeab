//! Dump and restore (SPEC §13): every record of a store as JSON Lines, in
//! the bytes every backend stores, so that a dump of one backend restores
//! into the other (a sled store moving to PostgreSQL) and serves as a
//! backup.
//!
//! The format, one JSON object a line:
//!
//! 1. a header: `{"credstore_dump":1,"format_version":1,"fingerprint":
//!    "<hex>","next_box_id":N,"next_event_seq":N}` — the store format of
//!    the records, the store secret's fingerprint (not the secret), and
//!    where the counters stood;
//! 2. one line per record of every tree but the store's identity (`meta`):
//!    `{"tree":"customers","key":"<hex>","value":"<base64>"}`, the value
//!    as stored (password hashes hashed, customer keys sealed, tokens as
//!    their keyed hashes);
//! 3. a trailer `{"end":true,"rows":N}`, so that a truncated file is refused.
//!
//! A dump is not a snapshot of a store being written to: take it with no
//! writer running (a sled store is locked by its server anyway).

use std::io::{BufRead, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::meta::FORMAT_VERSION;
use super::schema::{Counter, EVENTS, TreeId};
use crate::error::{Error, InputError};

/// The dump format this build writes and reads.
const DUMP_VERSION: u32 = 1;
/// Records restored per transaction.
const BATCH: usize = 256;
/// The meta rows of the counters (the sled backend's; the PostgreSQL
/// backend keeps the next box_id in the same row).
const NEXT_BOX_ID: &[u8] = b"next_box_id";
const NEXT_EVENT_SEQ: &[u8] = b"next_event_seq";

#[derive(Serialize, Deserialize)]
struct Header {
    credstore_dump: u32,
    format_version: u32,
    fingerprint: String,
    next_box_id: Option<u64>,
    next_event_seq: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Row {
    tree: String,
    key: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct End {
    end: bool,
    rows: u64,
}

/// A record as stored: its tree, key and value bytes.
type RawRow = (TreeId, Vec<u8>, Vec<u8>);

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (either case); `None` when it is not one.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn malformed(line: u64, reason: &'static str) -> Error {
    InputError::MalformedDump { line, reason }.into()
}

fn io(e: std::io::Error) -> Error {
    Error::Storage(crate::error::StorageError::new(
        "reading or writing a dump",
        e,
    ))
}

/// A counter's meta row as a number.
fn counter_row(engine: &Engine, key: &[u8]) -> Result<Option<u64>, Error> {
    Ok(engine
        .get_raw(TreeId::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes))
}

impl Engine {
    /// Writes every record of the store to `out` (see the module's
    /// format); returns how many.
    pub fn dump(&self, fingerprint: &[u8; 32], out: &mut dyn Write) -> Result<u64, Error> {
        let last_event = self.scan_last(&EVENTS, 1)?.pop().map(|(_, e)| e.seq + 1);
        let header = Header {
            credstore_dump: DUMP_VERSION,
            format_version: FORMAT_VERSION,
            fingerprint: hex(fingerprint),
            next_box_id: counter_row(self, NEXT_BOX_ID)?,
            next_event_seq: counter_row(self, NEXT_EVENT_SEQ)?.max(last_event),
        };
        let line = |out: &mut dyn Write, v: &dyn erased::Json| -> Result<(), Error> {
            out.write_all(v.json().as_bytes()).map_err(io)?;
            out.write_all(b"\n").map_err(io)
        };
        line(out, &header)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut rows = 0;
        for tree in TreeId::ALL.into_iter().filter(|t| *t != TreeId::Meta) {
            self.for_each_row(tree, |k, v| {
                rows += 1;
                let row = Row {
                    tree: tree.name().to_owned(),
                    key: hex(k),
                    value: b64.encode(v),
                };
                line(out, &row)
            })?;
        }
        line(out, &End { end: true, rows })?;
        out.flush().map_err(io)?;
        Ok(rows)
    }

    /// Loads a dump into this store, which must hold no record yet. `open`
    /// gives the dump from its start; it is read twice: first every line
    /// is checked (format, fingerprint, trailer) and the store found empty,
    /// and only then are the records written, so a refused restore
    /// changes nothing. Returns how many records were restored.
    pub fn restore(
        &self,
        fingerprint: &[u8; 32],
        open: &dyn Fn() -> Result<Box<dyn BufRead>, Error>,
    ) -> Result<u64, Error> {
        let header = read_dump(fingerprint, open()?, &mut |_| Ok(()))?;
        for tree in TreeId::ALL.into_iter().filter(|t| *t != TreeId::Meta) {
            let mut any = false;
            self.for_each_row(tree, |_, _| {
                any = true;
                Ok(())
            })?;
            if any {
                return Err(InputError::RestoreNeedsEmptyStore.into());
            }
        }
        let mut batch: Vec<RawRow> = Vec::with_capacity(BATCH);
        let write = |batch: &mut Vec<RawRow>| -> Result<(), Error> {
            self.put_rows(batch)?;
            batch.clear();
            Ok(())
        };
        let mut rows = 0;
        read_dump(fingerprint, open()?, &mut |row| {
            rows += 1;
            batch.push(row);
            if batch.len() == BATCH {
                write(&mut batch)?;
            }
            Ok(())
        })?;
        write(&mut batch)?;
        self.raise_counters(header.next_box_id, header.next_event_seq)?;
        Ok(rows)
    }
}

/// Checks a whole dump (format, fingerprint, every line, trailer) without
/// a store.
pub(crate) fn check_dump(fingerprint: &[u8; 32], input: Box<dyn BufRead>) -> Result<u64, Error> {
    let mut rows = 0;
    read_dump(fingerprint, input, &mut |_| {
        rows += 1;
        Ok(())
    })?;
    Ok(rows)
}

/// Reads a dump, checking every line, and hands each record to `row`.
fn read_dump(
    fingerprint: &[u8; 32],
    input: Box<dyn BufRead>,
    row: &mut dyn FnMut(RawRow) -> Result<(), Error>,
) -> Result<Header, Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = input.lines();
    let first = lines
        .next()
        .ok_or_else(|| malformed(1, "empty file"))?
        .map_err(io)?;
    let header: Header =
        serde_json::from_str(&first).map_err(|_| malformed(1, "not a credstore dump header"))?;
    if header.credstore_dump != DUMP_VERSION {
        return Err(malformed(1, "a dump format this build does not read"));
    }
    if header.format_version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: header.format_version,
            supported: FORMAT_VERSION,
        });
    }
    let theirs = unhex(&header.fingerprint).ok_or_else(|| malformed(1, "bad fingerprint"))?;
    if !crate::crypto::ct_eq(&theirs, fingerprint) {
        return Err(Error::WrongSecret);
    }
    let mut count = 0u64;
    for (i, text) in lines.enumerate() {
        let n = i as u64 + 2;
        let text = text.map_err(io)?;
        if let Ok(end) = serde_json::from_str::<End>(&text) {
            if !end.end || end.rows != count {
                return Err(malformed(n, "the trailer's row count does not match"));
            }
            return Ok(header);
        }
        let r: Row = serde_json::from_str(&text).map_err(|_| malformed(n, "not a record"))?;
        let tree = TreeId::ALL
            .into_iter()
            .find(|t| t.name() == r.tree && *t != TreeId::Meta)
            .ok_or_else(|| malformed(n, "unknown tree"))?;
        let key = unhex(&r.key).ok_or_else(|| malformed(n, "bad key"))?;
        let value = b64
            .decode(&r.value)
            .map_err(|_| malformed(n, "bad value"))?;
        count += 1;
        row((tree, key, value))?;
    }
    Err(malformed(count + 2, "no trailer: the dump is truncated"))
}

impl Engine {
    /// Writes `rows` in one transaction.
    fn put_rows(&self, rows: &[RawRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        self.transact_raw(&|tx| {
            for (tree, key, value) in rows {
                tx.put(*tree, key, value.clone())?;
            }
            Ok(())
        })
    }

    fn raise_counters(&self, box_id: Option<u64>, event: Option<u64>) -> Result<(), Error> {
        self.transact_raw(&|tx| {
            if let Some(n) = box_id {
                tx.raise(Counter::BoxId, n)?;
            }
            if let Some(n) = event {
                tx.raise(Counter::EventSeq, n)?;
            }
            Ok(())
        })
    }
}

/// Serialising the three line types through one closure.
mod erased {
    pub(super) trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
