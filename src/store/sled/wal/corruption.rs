//! Telling a torn tail from a damaged middle.
//!
//! Recovery follows the chain of records after the checkpoint and stops at
//! the first one that is not valid. After a crash that is the log's end: a
//! record written but never synced, torn or missing. But when a *valid*
//! record of the same generation with a later sequence number lies beyond
//! that point, the log went on after the bad record: its bytes rotted on the
//! medium (or a segment header did), and ending the log there would silently
//! drop records that were acknowledged. Open refuses that, naming where the
//! chain broke; truncating there is an explicit operator decision.
//!
//! Within a generation (epoch) sequence numbers only grow, and a slot is
//! reused only for a later segment, so stale bytes of a reused slot carry
//! lower numbers; a deferred replay that goes on in the same generation wipes
//! everything after its end first ([`super::Recovery::resume`]). A valid
//! record with a higher number after the break was therefore written after
//! the record that is missing.
//!
//! Power loss in the middle of a group commit could look the same: a later
//! page of the group reaching the disk and an earlier one not. Across files
//! the writer rules it out (the earlier segment is synced before anything
//! is written to the next, `write_group`); within one segment's file it
//! remains possible. None of those records was acknowledged, so truncating
//! then loses nothing acknowledged; open still refuses, because it cannot
//! tell the two apart.

use super::format::{self, REC_HEADER_LEN, REC_MAGIC};

/// Where the chain of records breaks while valid records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corruption {
    /// The segment where the chain stops.
    pub segment: u64,
    /// The slot holding it (none: the checkpoint's own segment is missing).
    pub slot: Option<u32>,
    /// The offset in that slot where the next record should start.
    pub offset: u64,
    /// The sequence number the next record should have.
    pub seq: u64,
    /// The highest sequence number found valid after the break.
    pub last_valid: u64,
}

impl Corruption {
    /// The slot's file name (or the segment's number when no slot holds it).
    pub fn file(&self) -> String {
        match self.slot {
            Some(no) => super::io::slot_name(no),
            None => format!("segment {} (no slot holds it)", self.segment),
        }
    }
}

/// The highest sequence number of a valid record of generation `epoch`
/// numbered `seq` or more that starts at or after `from` in `bytes`.
pub(crate) fn last_valid_from(bytes: &[u8], from: usize, epoch: u64, seq: u64) -> Option<u64> {
    let mut best = None;
    let mut at = from;
    while let Some(i) = find_magic(bytes, at) {
        let header = &bytes[i..i + REC_HEADER_LEN];
        let rec_epoch = u64_at(header, 8);
        let rec_seq = u64_at(header, 16);
        if rec_epoch == epoch
            && rec_seq >= seq
            && let Some(found) = format::parse_record(bytes, i, epoch, rec_seq)
        {
            best = best.max(Some(rec_seq));
            at = found.next;
        } else {
            at = i + 1;
        }
    }
    best
}

/// The next offset at or after `from` where a whole record header could
/// start with the record magic.
fn find_magic(bytes: &[u8], from: usize) -> Option<usize> {
    let last = bytes.len().checked_sub(REC_HEADER_LEN)?;
    let mut i = from;
    while i <= last {
        // Skip to the next byte that can start the magic.
        let skip = bytes[i..=last].iter().position(|b| *b == REC_MAGIC[0])?;
        i += skip;
        if bytes[i..i + REC_MAGIC.len()] == REC_MAGIC {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_highest_valid_later_record_and_ignores_the_rest() {
        let mut seg = vec![0u8; 40];
        let start = seg.len();
        format::encode_record(&mut seg, 2, 5, b"five");
        format::encode_record(&mut seg, 2, 6, b"six");
        format::encode_record(&mut seg, 1, 9, b"other epoch");
        format::encode_record(&mut seg, 2, 3, b"older");
        let mut bad = Vec::new();
        format::encode_record(&mut bad, 2, 8, b"eight");
        let n = bad.len();
        bad[n - 1] ^= 1;
        seg.extend_from_slice(&bad);
        seg.extend_from_slice(b"CSW");
        assert_eq!(last_valid_from(&seg, 0, 2, 5), Some(6));
        assert_eq!(last_valid_from(&seg, start + 1, 2, 5), Some(6));
        assert_eq!(last_valid_from(&seg, 0, 2, 7), None);
        assert_eq!(last_valid_from(&seg, 0, 1, 1), Some(9));
        assert_eq!(last_valid_from(&seg, 0, 3, 1), None);
        assert_eq!(last_valid_from(&[], 0, 2, 1), None);
        assert_eq!(last_valid_from(&seg, seg.len() + 5, 2, 1), None);
    }
}
