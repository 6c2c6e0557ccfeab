//! The SQL the PostgreSQL backend sends: table and sequence names, the
//! schema, and bytea literals.
//!
//! Statements inside transactions go through the simple query protocol so
//! that several of them (`BEGIN` and the first read; every buffered write
//! and `COMMIT`) share one round trip. Their only variable parts are key
//! and value bytes, which are written as hex bytea literals (`'\x0a1b'`:
//! hex digits only, so no quoting question arises) and read back through
//! `encode(value, 'hex')` (independent of the server's `bytea_output`).

use std::fmt::Write as _;

use crate::store::schema::TreeId;

/// The schema version this build creates and reads; a database with a
/// newer one is refused (as a newer sled format is).
pub(super) const SCHEMA_VERSION: i32 = 1;

/// The table holding the schema version.
pub(super) const VERSION_TABLE: &str = "credstore_schema_version";

/// An arbitrary constant: the advisory lock that serialises schema
/// creation between instances starting at once.
pub(super) const SCHEMA_LOCK: i64 = 0x6372_6564_7374_6f72;

/// The table of `tree`: one table per tree (one table for every tree made
/// transactions on different trees conflict through shared index pages).
pub(super) fn table(tree: TreeId) -> String {
    format!("credstore_{}", tree.name())
}

/// The sequence of event numbers (a sequence, not a row: a row that every
/// operation updates would make every pair of operations conflict).
pub(super) const EVENT_SEQUENCE: &str = "credstore_event_seq";

/// The statements that create what is missing of the schema (run under
/// [`SCHEMA_LOCK`]).
pub(super) fn create_schema() -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer NOT NULL);");
    for tree in TreeId::ALL {
        let _ = write!(
            sql,
            "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL);",
            table(tree)
        );
    }
    let _ = write!(
        sql,
        "CREATE SEQUENCE IF NOT EXISTS {EVENT_SEQUENCE} AS bigint MINVALUE 1 START 1;"
    );
    sql
}

/// Appends `bytes` as a bytea literal (`'\x…'`).
pub(super) fn push_bytea(sql: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    sql.reserve(bytes.len() * 2 + 4);
    sql.push_str("'\\x");
    for b in bytes {
        sql.push(HEX[usize::from(b >> 4)] as char);
        sql.push(HEX[usize::from(b & 0xf)] as char);
    }
    sql.push('\'');
}

/// The bytes of a hex string as `encode(…, 'hex')` returns it.
pub(super) use crate::store::dump::unhex as from_hex;

/// A buffered write: `None` deletes.
pub(super) use crate::store::backend::Write;

/// `SELECT encode(value, 'hex') FROM <tree> WHERE key = <key>`.
pub(super) fn select_value(tree: TreeId, key: &[u8]) -> String {
    let mut sql = format!(
        "SELECT encode(value, 'hex') FROM {} WHERE key = ",
        table(tree)
    );
    push_bytea(&mut sql, key);
    sql
}

/// Rows of `tree` from `start` on (or the last ones, `last`), as hex pairs.
pub(super) fn select_rows(tree: TreeId, start: &[u8], limit: usize, last: bool) -> String {
    let limit = limit.min(i64::MAX as usize);
    if last {
        return format!(
            "SELECT encode(key, 'hex'), encode(value, 'hex') FROM {} ORDER BY key DESC LIMIT {limit}",
            table(tree)
        );
    }
    let mut sql = format!(
        "SELECT encode(key, 'hex'), encode(value, 'hex') FROM {} WHERE key >= ",
        table(tree)
    );
    push_bytea(&mut sql, start);
    let _ = write!(sql, " ORDER BY key LIMIT {limit}");
    sql
}

/// The final state of a run's writes: per tree, the keys to upsert and the
/// keys to delete, each key once (its last write wins).
pub(super) fn write_batch(writes: &[Write]) -> String {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<(TreeId, &[u8]), Option<&[u8]>> = BTreeMap::new();
    for (tree, key, value) in writes {
        last.insert((*tree, key), value.as_deref());
    }
    let mut sql = String::new();
    for tree in TreeId::ALL {
        let rows = last
            .range((tree, &[][..])..)
            .take_while(|((t, _), _)| *t == tree);
        let (mut puts, mut deletes) = (String::new(), String::new());
        for ((_, key), value) in rows {
            match value {
                Some(v) => {
                    puts.push_str(if puts.is_empty() { "(" } else { ",(" });
                    push_bytea(&mut puts, key);
                    puts.push(',');
                    push_bytea(&mut puts, v);
                    puts.push(')');
                }
                None => {
                    if !deletes.is_empty() {
                        deletes.push(',');
                    }
                    push_bytea(&mut deletes, key);
                }
            }
        }
        if !puts.is_empty() {
            let _ = write!(
                sql,
                "INSERT INTO {} (key, value) VALUES {puts} \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;",
                table(tree)
            );
        }
        if !deletes.is_empty() {
            let _ = write!(sql, "DELETE FROM {} WHERE key IN ({deletes});", table(tree));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut lit = String::new();
        push_bytea(&mut lit, &bytes);
        assert!(lit.starts_with("'\\x") && lit.ends_with('\''));
        assert_eq!(from_hex(&lit[3..lit.len() - 1]), Some(bytes));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
    }

    #[test]
    fn the_last_write_of_a_key_wins() {
        let writes = vec![
            (TreeId::Customers, vec![1], Some(vec![1])),
            (TreeId::Customers, vec![1], None),
            (TreeId::Customers, vec![2], None),
            (TreeId::Customers, vec![2], Some(vec![7])),
            (TreeId::Emails, vec![3], Some(vec![3])),
        ];
        let sql = write_batch(&writes);
        assert_eq!(
            sql,
            "INSERT INTO credstore_customers (key, value) VALUES ('\\x02','\\x07') \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;\
             DELETE FROM credstore_customers WHERE key IN ('\\x01');\
             INSERT INTO credstore_emails (key, value) VALUES ('\\x03','\\x03') \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;"
        );
        assert_eq!(write_batch(&[]), "");
    }
}
