//! One attempt of a transaction on PostgreSQL ([`PgTx`]) and the retry
//! loop around it ([`transact`]).
//!
//! Round trips of an attempt (what a rotation costs):
//!
//! 1. `BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT txid_current(),
//!    nextval(event sequence)` **and the body's first read**, in one
//!    simple query: the transaction id is what lets the outcome of a
//!    commit whose connection broke be learnt; the event number is
//!    taken ahead because nearly every writing operation appends one
//!    event (a transaction that appends none leaves a gap, which the
//!    event log allows);
//! 2. one round trip per further read of the body (reads go to the
//!    server within the open transaction, so that SERIALIZABLE sees them);
//! 3. every buffered write and `COMMIT`, in one simple query.
//!
//! Writes are buffered in the run and read back by the run itself, so a
//! retried run starts from nothing.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use r2d2_postgres::postgres::error::SqlState;
use r2d2_postgres::postgres::{Client, SimpleQueryMessage};

use super::sql;
use super::{PgError, PostgresBackend, describe, found_hex, storage};
use crate::error::{Error, StorageError};
use crate::store::backend::{BackendTx, Writes};
use crate::store::schema::{Counter, TreeId};

/// The meta row of the next box_id (as on sled).
const NEXT_BOX_ID: &[u8] = b"next_box_id";

/// Attempts of one transaction before it fails with a contention error.
pub(super) const MAX_ATTEMPTS: u32 = 40;
/// The backoff before attempt `n` is random in `0..min(CAP, BASE << n)`.
const BACKOFF_BASE: Duration = Duration::from_millis(1);
const BACKOFF_CAP: Duration = Duration::from_millis(64);
/// How long an unknown commit outcome is asked after.
const OUTCOME_POLLS: u32 = 50;
const OUTCOME_POLL_PAUSE: Duration = Duration::from_millis(100);

/// Statement results of one simple query: per statement, its rows, each a
/// list of text columns.
pub(super) type Results = Vec<Vec<Vec<Option<String>>>>;

/// Runs `sql` (one or more statements) and groups the rows per statement.
pub(super) fn simple(client: &mut Client, sql: &str) -> Result<Results, PgError> {
    let mut out: Results = vec![Vec::new()];
    for message in client.simple_query(sql)? {
        match message {
            SimpleQueryMessage::Row(row) => {
                let cols = (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect();
                if let Some(last) = out.last_mut() {
                    last.push(cols);
                }
            }
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out.pop();
    Ok(out)
}

/// One run of a transaction's body on one connection.
pub(super) struct PgTx<'c> {
    client: RefCell<&'c mut Client>,
    /// `BEGIN` sent.
    begun: Cell<bool>,
    /// The transaction's id (from the first round trip).
    xid: Cell<Option<i64>>,
    /// An event number taken with `BEGIN`, not yet handed out.
    event_seq: Cell<Option<u64>>,
    writes: Writes,
    /// The first server error of the run (the body sees a storage error;
    /// this decides whether the run is retried).
    failure: RefCell<Option<PgError>>,
}

const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE;";

impl<'c> PgTx<'c> {
    pub fn new(client: &'c mut Client) -> Self {
        Self {
            client: RefCell::new(client),
            begun: Cell::new(false),
            xid: Cell::new(None),
            event_seq: Cell::new(None),
            writes: Writes::default(),
            failure: RefCell::new(None),
        }
    }

    /// Runs `sql` in the transaction (opening it first, in the same round
    /// trip, when it is not open yet); returns the results of `sql`'s own
    /// statements.
    fn query(&self, sql: &str) -> Result<Results, Error> {
        if self.failure.borrow().is_some() {
            return Err(storage(
                "running a transaction",
                "an earlier statement failed",
            ));
        }
        let begin = !self.begun.get();
        let text = if begin {
            format!(
                "{BEGIN}SELECT txid_current()::text, nextval('{}')::text;{sql}",
                sql::EVENT_SEQUENCE
            )
        } else {
            sql.to_owned()
        };
        let result = simple(&mut self.client.borrow_mut(), &text);
        match result {
            Ok(mut results) => {
                if begin {
                    self.begun.set(true);
                    if results.len() < 2 {
                        return Err(storage("opening a transaction", "short reply"));
                    }
                    let opened: Vec<_> = results.drain(..2).collect();
                    let row = opened[1].first();
                    let col = |i: usize| row.and_then(|r| r.get(i).cloned().flatten());
                    self.xid.set(col(0).and_then(|v| v.parse().ok()));
                    self.event_seq.set(col(1).and_then(|v| v.parse().ok()));
                }
                Ok(results)
            }
            Err(e) => {
                // BEGIN may have run although what follows failed.
                self.begun.set(true);
                let err = storage("running a transaction", describe(&e));
                *self.failure.borrow_mut() = Some(e);
                Err(err)
            }
        }
    }

    /// The first column of the first row of a one-statement result.
    fn scalar(results: Results) -> Option<String> {
        results
            .into_iter()
            .next()?
            .into_iter()
            .next()?
            .into_iter()
            .next()?
    }

    /// Ends the run: sends the writes and `COMMIT` (or, `inject`, the
    /// writes and `ROLLBACK`, as if the commit had met a serialization
    /// failure).
    fn finish(&self, inject: bool) -> Result<(), PgError> {
        let writes = sql::write_batch(&self.writes.borrow());
        let mut client = self.client.borrow_mut();
        if !self.begun.get() {
            if writes.is_empty() {
                return Ok(());
            }
            // A body that read nothing: open the transaction first, so
            // that its id is known before the commit is in flight.
            let opened = simple(&mut client, &format!("{BEGIN}SELECT txid_current()::text"))?;
            self.begun.set(true);
            self.xid.set(
                Self::scalar(opened.into_iter().skip(1).collect()).and_then(|v| v.parse().ok()),
            );
        }
        let end = if inject { "ROLLBACK" } else { "COMMIT" };
        simple(&mut client, &format!("{writes}{end}"))?;
        Ok(())
    }

    /// Ends an open transaction without writing (errors ignored: a broken
    /// connection is dropped by the pool, an open transaction dies with it).
    fn rollback(&self) {
        if self.begun.get() {
            let _ = self.client.borrow_mut().simple_query("ROLLBACK");
        }
    }
}

impl BackendTx for PgTx<'_> {
    fn get(
        &self,
        tree: TreeId,
        key: &[u8],
        found: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<(), Error> {
        if self.writes.read(tree, key, found) {
            return Ok(());
        }
        found_hex(
            Self::scalar(self.query(&sql::select_value(tree, key))?),
            found,
        )
    }

    fn put(&self, tree: TreeId, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.writes.push(tree, key, Some(value));
        Ok(())
    }

    fn delete(&self, tree: TreeId, key: &[u8]) -> Result<(), Error> {
        self.writes.push(tree, key, None);
        Ok(())
    }

    fn next(&self, counter: Counter) -> Result<u64, Error> {
        if counter == Counter::BoxId {
            let next = self.box_id_row()?;
            self.put(
                TreeId::Meta,
                NEXT_BOX_ID,
                next.saturating_add(1).to_be_bytes().to_vec(),
            )?;
            return Ok(next);
        }
        if !self.begun.get() {
            // Opening the transaction takes an event number.
            self.query("")?;
        }
        if let Some(seq) = self.event_seq.take() {
            return Ok(seq);
        }
        let sql = format!("SELECT nextval('{}')::text", sql::EVENT_SEQUENCE);
        Self::scalar(self.query(&sql)?)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| storage("taking the next event number", "no value"))
    }

    fn raise(&self, counter: Counter, floor: u64) -> Result<(), Error> {
        if counter == Counter::BoxId {
            if self.box_id_row()? < floor {
                self.put(TreeId::Meta, NEXT_BOX_ID, floor.to_be_bytes().to_vec())?;
            }
            return Ok(());
        }
        // `setval` is not transactional: a raise stays when the run is
        // retried or fails (a gap, which the event log allows). Only the
        // store's creation and `restore` (one process, before any other
        // writer) raise the event sequence.
        let seq = sql::EVENT_SEQUENCE;
        let floor = i64::try_from(floor).unwrap_or(i64::MAX);
        self.query(&format!(
            "SELECT setval('{seq}', {floor}, false) FROM {seq} \
             WHERE (CASE WHEN is_called THEN last_value + 1 ELSE last_value END) < {floor}"
        ))?;
        Ok(())
    }
}

impl PgTx<'_> {
    /// The next box_id, from its row in the meta tree (the key and bytes
    /// the sled backend uses): a row, not a sequence, so that it moves
    /// with the transaction (box_ids stay contiguous when a registration
    /// is retried, and a raise cannot race a registration). Only
    /// registrations and imports touch it.
    fn box_id_row(&self) -> Result<u64, Error> {
        let mut out = Ok(1);
        self.get(TreeId::Meta, NEXT_BOX_ID, &mut |v| {
            if let Some(v) = v {
                out = <[u8; 8]>::try_from(v).map(u64::from_be_bytes).map_err(|_| {
                    Error::CorruptRecord {
                        tree: TreeId::Meta.name(),
                        key: "next_box_id".into(),
                    }
                });
            }
        })?;
        out
    }
}

/// How an attempt ended.
pub(super) enum Attempt {
    Committed,
    /// The body refused (rolled back): its error is the transaction's.
    Refused(Error),
    /// Nothing was written; run again (serialization failure, deadlock,
    /// or a connection that broke before the commit).
    Retry(&'static str),
    Failed(Error),
}

/// Whether `e` says "run the transaction again": a serialization failure
/// or a deadlock (also when raised by `COMMIT`).
fn retryable(e: &PgError) -> Option<&'static str> {
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Some("40001"),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Some("40P01"),
        _ => None,
    }
}

fn attempt(
    backend: &PostgresBackend,
    body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>,
    inject: bool,
) -> Attempt {
    let mut conn = match backend.connection() {
        Ok(c) => c,
        Err(e) => return Attempt::Failed(e),
    };
    let tx = PgTx::new(&mut conn);
    let result = body(&tx);
    if let Some(e) = tx.failure.borrow_mut().take() {
        tx.rollback();
        return match retryable(&e) {
            Some(code) => Attempt::Retry(code),
            // Before COMMIT nothing is written: a broken connection is
            // retried (on a new one) like a conflict.
            None if e.code().is_none() => Attempt::Retry("connection"),
            None => Attempt::Failed(storage("running a transaction", describe(&e))),
        };
    }
    if let Err(e) = result {
        tx.rollback();
        return Attempt::Refused(e);
    }
    match tx.finish(inject) {
        Ok(()) if inject => Attempt::Retry("40001 (injected)"),
        Ok(()) => Attempt::Committed,
        Err(e) => {
            if let Some(code) = retryable(&e) {
                tx.rollback();
                return Attempt::Retry(code);
            }
            if e.code().is_some() {
                tx.rollback();
                return Attempt::Failed(storage("committing a transaction", describe(&e)));
            }
            // The connection broke with the commit in flight.
            let xid = tx.xid.get();
            drop(tx);
            drop(conn);
            resolve(backend, xid, &e)
        }
    }
}

/// The outcome of a commit whose connection broke, asked of the server by
/// transaction id (`txid_status`) on another connection: committed → done;
/// aborted → nothing was written, run again; no answer within
/// [`OUTCOME_POLLS`] → an "outcome unknown" error (never "failed": the
/// change may be durable).
pub(super) fn resolve(backend: &PostgresBackend, xid: Option<i64>, e: &PgError) -> Attempt {
    let unknown = || {
        Attempt::Failed(Error::Storage(StorageError::outcome_unknown(
            "committing a transaction",
            format!("the connection broke during COMMIT ({})", describe(e)),
        )))
    };
    let Some(xid) = xid else { return unknown() };
    for _ in 0..OUTCOME_POLLS {
        let status = backend.connection().ok().and_then(|mut c| {
            simple(&mut c, &format!("SELECT txid_status({xid})"))
                .ok()
                .and_then(PgTx::scalar)
        });
        match status.as_deref() {
            Some("committed") => return Attempt::Committed,
            Some("aborted") => return Attempt::Retry("connection"),
            _ => std::thread::sleep(OUTCOME_POLL_PAUSE),
        }
    }
    unknown()
}

/// Runs `body` as one SERIALIZABLE transaction, again on a serialization
/// failure or deadlock (jittered exponential backoff), at most
/// [`MAX_ATTEMPTS`] times, then fails with a contention error.
pub(super) fn transact(
    backend: &PostgresBackend,
    body: &dyn Fn(&dyn BackendTx) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut last = "";
    for n in 0..MAX_ATTEMPTS {
        if n > 0 {
            backend.stats.retried(last);
            std::thread::sleep(backoff(n));
        }
        match attempt(backend, body, backend.fail_first_attempt && n == 0) {
            Attempt::Committed => {
                backend.stats.committed();
                return Ok(());
            }
            Attempt::Refused(e) | Attempt::Failed(e) => return Err(e),
            Attempt::Retry(why) => last = why,
        }
    }
    Err(Error::Storage(StorageError::contention(
        "running a transaction",
        format!("{MAX_ATTEMPTS} attempts met conflicting transactions (last: {last})"),
    )))
}

/// Full jitter: random in `0..min(CAP, BASE << n)`.
fn backoff(n: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << n.min(16))
        .min(BACKOFF_CAP);
    let mut b = [0u8; 8];
    let r = getrandom::fill(&mut b).map_or(0, |()| u64::from_le_bytes(b));
    let micros = u64::try_from(ceiling.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_micros(r % micros)
}
