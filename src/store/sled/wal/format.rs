//! The WAL's byte formats: segment header, record, checkpoint. All integers
//! little-endian; every checksum is the first 8 bytes of BLAKE3 over
//! everything before it.
//!
//! ```text
//! segment header (32 B, at offset 0 of a slot):
//!   magic "CSWALSG1" (8) | epoch u64 | segment number u64 | checksum (8)
//! record (32 B + payload), packed one after another from offset 32:
//!   magic "CSWR" (4) | payload length u32 | epoch u64 | seq u64 | payload | checksum (8)
//! checkpoint file (48 B):
//!   magic "CSWALCK1" (8) | epoch u64 | seq u64 | segment u64 | offset u64 | checksum (8)
//! ```
//!
//! A record is valid only with its magic, the epoch of the generation being
//! read, the sequence number that follows the previous record's, a length
//! that fits the slot, and a matching checksum over header and payload. Stale
//! bytes of a recycled slot therefore never pass: they carry an older sequence
//! number or another epoch.

use std::ops::Range;

pub(crate) const SEG_MAGIC: [u8; 8] = *b"CSWALSG1";
pub(crate) const SEG_HEADER_LEN: usize = 32;
pub(crate) const REC_MAGIC: [u8; 4] = *b"CSWR";
pub(crate) const REC_HEADER_LEN: usize = 24;
pub(crate) const CHECKSUM_LEN: usize = 8;
/// Bytes a record adds to its payload.
pub(crate) const REC_OVERHEAD: usize = REC_HEADER_LEN + CHECKSUM_LEN;
pub(crate) const CKPT_MAGIC: [u8; 8] = *b"CSWALCK1";
pub(crate) const CKPT_LEN: usize = 48;

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::hash(bytes);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hash.as_bytes()[..CHECKSUM_LEN]);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub epoch: u64,
    pub segment: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEG_HEADER_LEN] {
        let mut out = [0u8; SEG_HEADER_LEN];
        out[..8].copy_from_slice(&SEG_MAGIC);
        out[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment.to_le_bytes());
        let sum = checksum(&out[..24]);
        out[24..].copy_from_slice(&sum);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..SEG_HEADER_LEN)?;
        if bytes[..8] != SEG_MAGIC || bytes[24..] != checksum(&bytes[..24]) {
            return None;
        }
        Some(Self {
            epoch: u64_at(bytes, 8),
            segment: u64_at(bytes, 16),
        })
    }
}

/// Appends one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, epoch: u64, seq: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&REC_MAGIC);
    // The writer refuses payloads that do not fit a segment, far below 4 GiB.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = checksum(&out[start..]);
    out.extend_from_slice(&sum);
}

/// The epoch a record header at the start of `bytes` claims (unchecked).
pub(crate) fn record_epoch(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..REC_HEADER_LEN)?;
    (header[..4] == REC_MAGIC).then(|| u64_at(header, 8))
}

/// A valid record found in a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where its payload is in the segment's bytes.
    pub payload: Range<usize>,
    /// Where the next record would start.
    pub next: usize,
}

/// Reads the record at `at` in `seg` if it is valid and is record `seq` of
/// generation `epoch`; anything else (zeros, a torn or short write, a flipped
/// bit, a stale record) is `None`, which ends the log there.
pub(crate) fn parse_record(seg: &[u8], at: usize, epoch: u64, seq: u64) -> Option<Found> {
    parse(seg, at, epoch, seq, true)
}

/// [`parse_record`] without the checksum: for records whose change sled is
/// known to hold already, which recovery only steps over.
pub(crate) fn step_over_record(seg: &[u8], at: usize, epoch: u64, seq: u64) -> Option<Found> {
    parse(seg, at, epoch, seq, false)
}

fn parse(seg: &[u8], at: usize, epoch: u64, seq: u64, verify: bool) -> Option<Found> {
    let header = seg.get(at..at.checked_add(REC_HEADER_LEN)?)?;
    if header[..4] != REC_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if u64_at(header, 8) != epoch || u64_at(header, 16) != seq {
        return None;
    }
    let body_end = at.checked_add(REC_HEADER_LEN)?.checked_add(len)?;
    let end = body_end.checked_add(CHECKSUM_LEN)?;
    let whole = seg.get(at..end)?;
    let split = whole.len() - CHECKSUM_LEN;
    if verify && whole[split..] != checksum(&whole[..split]) {
        return None;
    }
    Some(Found {
        payload: at + REC_HEADER_LEN..body_end,
        next: end,
    })
}

/// What the checkpoint file records: every change up to `seq` is in sled's
/// synced files, and the WAL of generation `epoch` continues at
/// (`segment`, `offset`) with record `seq + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub epoch: u64,
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; CKPT_LEN] {
        let mut out = [0u8; CKPT_LEN];
        out[..8].copy_from_slice(&CKPT_MAGIC);
        out[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment.to_le_bytes());
        out[32..40].copy_from_slice(&self.offset.to_le_bytes());
        let sum = checksum(&out[..40]);
        out[40..].copy_from_slice(&sum);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != CKPT_LEN
            || bytes[..8] != CKPT_MAGIC
            || bytes[40..] != checksum(&bytes[..40])
        {
            return None;
        }
        Some(Self {
            epoch: u64_at(bytes, 8),
            seq: u64_at(bytes, 16),
            segment: u64_at(bytes, 24),
            offset: u64_at(bytes, 32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_rejections() {
        let mut seg = vec![0u8; 7];
        encode_record(&mut seg, 3, 42, b"payload");
        let found = parse_record(&seg, 7, 3, 42).unwrap();
        assert_eq!(&seg[found.payload.clone()], b"payload");
        assert_eq!(found.next, seg.len());
        // wrong epoch, wrong seq, zeros, short
        assert!(parse_record(&seg, 7, 4, 42).is_none());
        assert!(parse_record(&seg, 7, 3, 43).is_none());
        assert!(parse_record(&seg, 0, 3, 42).is_none());
        assert!(parse_record(&seg[..seg.len() - 1], 7, 3, 42).is_none());
        // every single flipped bit is caught
        for i in 7..seg.len() {
            for bit in 0..8 {
                let mut bad = seg.clone();
                bad[i] ^= 1 << bit;
                assert!(parse_record(&bad, 7, 3, 42).is_none(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_huge_length_is_a_torn_record_not_a_panic() {
        let mut seg = Vec::new();
        encode_record(&mut seg, 1, 1, b"x");
        seg[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_record(&seg, 0, 1, 1).is_none());
        assert!(parse_record(&seg, usize::MAX - 3, 1, 1).is_none());
    }

    #[test]
    fn headers_and_checkpoints_round_trip() {
        let h = SegmentHeader {
            epoch: 9,
            segment: 77,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), None);
        assert_eq!(SegmentHeader::decode(&[0u8; SEG_HEADER_LEN]), None);

        let c = Checkpoint {
            epoch: 2,
            seq: 1_000,
            segment: 5,
            offset: 4_096,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        let mut bad = c.encode();
        bad[20] ^= 0x80;
        assert_eq!(Checkpoint::decode(&bad), None);
        assert_eq!(Checkpoint::decode(&c.encode()[..40]), None);
    }
}
