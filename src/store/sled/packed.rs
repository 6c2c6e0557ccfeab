//! Packed trees: how the sled backend stores the trees of many small rows,
//! the email index and the event log, from format version 2 on.
//!
//! sled 0.34 costs about 110–170 bytes on disk per row whatever its size
//! (a leaf holds at most 16 rows, every leaf carries its own headers, and
//! the log keeps up to half of each segment as garbage), so a 36-byte email
//! entry took ~4x its size, an event ~4x too. These trees therefore keep
//! their rows in *blocks* of up to [`BLOCK_BYTES`], each a sled row:
//!
//! - a block's sled key is its *fence*: no greater than any of its rows'
//!   keys, and greater than every row of the block before it. A row with key
//!   `k` is in the block with the greatest fence `<= k` (sled's
//!   `range(..=k).next_back()`), so point reads, ordered scans and the
//!   newest rows work as on any ordered map;
//! - a block is its rows in key order, each as LEB128 key length, key,
//!   LEB128 value length, value;
//! - only the applier writes blocks ([`plan`]: it reads the blocks a batch
//!   of logged changes touches and gives the sled writes that replace them,
//!   which go into the batch's sled transaction). A block over
//!   [`BLOCK_BYTES`] is cut: into full blocks when the new rows all came
//!   after its last one (the event log's appends, an import in key order),
//!   else into even ones; an emptied block is removed.
//!
//! A point read is one sled call, which sled makes atomic with respect to
//! its transactions; a scan reads several blocks, so it holds the backend's
//! `packed` lock for reading while the applier holds it for writing.
//!
//! Measured on 1M imported customers, compacted: sled's files 1.67x the raw
//! row bytes with packed trees instead of 2.76x (see the README's
//! Footprint section).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Error;
use crate::store::backend::Rows;
use crate::store::encoding::corrupt;
use crate::store::schema::TreeId;

use super::storage;

/// The largest block written, in bytes (a single row larger than this is
/// a block of its own). Measured: 512–768 bytes took the least room; larger
/// blocks took more (sled rewrites a whole leaf, up to 16 blocks, as it
/// changes).
pub(crate) const BLOCK_BYTES: usize = 768;

/// Whether `tree` is packed in a store of format version 2.
pub(crate) fn is_packed(tree: TreeId) -> bool {
    matches!(tree, TreeId::Emails | TreeId::Events)
}

/// A block's rows, decoded.
type Block = BTreeMap<Vec<u8>, Vec<u8>>;

/// One sled write of a plan: a block (`Some`) or its removal (`None`).
pub(crate) type BlockWrite = (Vec<u8>, Option<Vec<u8>>);

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn len_of_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    bits.div_ceil(7).max(1) as usize
}

fn row_bytes(key: &[u8], value: &[u8]) -> usize {
    len_of_len(key.len()) + key.len() + len_of_len(value.len()) + value.len()
}

/// Reads a LEB128 length of at most 5 bytes (35 bits: a row is at most a
/// write-ahead log segment, 16 MiB).
fn take_len(data: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for i in 0..5 {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        n |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_len(data)?;
    if len > data.len() {
        return None;
    }
    let (item, rest) = data.split_at(len);
    *data = rest;
    Some(item)
}

/// The rows of a block, in order, without copying them; the iterator
/// yields `Err(())` where the bytes are not a block.
fn rows(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), ()>> {
    let mut data = block;
    let mut failed = false;
    std::iter::from_fn(move || {
        if data.is_empty() || failed {
            return None;
        }
        let row = take(&mut data).zip(take(&mut data));
        failed = row.is_none();
        Some(row.ok_or(()))
    })
}

fn encode<'a>(rows: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_BYTES);
    for (k, v) in rows {
        put_len(&mut out, k.len());
        out.extend_from_slice(k);
        put_len(&mut out, v.len());
        out.extend_from_slice(v);
    }
    out
}

/// Decodes a block, checking that its rows are in order and within its
/// fence (else [`Error::CorruptRecord`] at the fence).
fn decode(tree: TreeId, fence: &[u8], block: &[u8]) -> Result<Block, Error> {
    let mut out = Block::new();
    let mut last: Option<&[u8]> = None;
    for row in rows(block) {
        let (k, v) = row.map_err(|()| corrupt(tree, fence))?;
        if k < fence || last.is_some_and(|l| l >= k) {
            return Err(corrupt(tree, fence));
        }
        last = Some(k);
        out.insert(k.to_vec(), v.to_vec());
    }
    Ok(out)
}

/// The value of `key`, read from the block that would hold it.
pub(crate) fn get(tree: &sled::Tree, id: TreeId, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
    let Some(item) = tree.range(..=key).next_back() else {
        return Ok(None);
    };
    let (fence, block) = item.map_err(storage("reading"))?;
    for row in rows(&block) {
        let (k, v) = row.map_err(|()| corrupt(id, &fence))?;
        match k.cmp(key) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Ok(Some(sled::IVec::from(v))),
            std::cmp::Ordering::Greater => break,
        }
    }
    Ok(None)
}

/// Up to `limit` rows from `start` on, in key order.
pub(crate) fn scan(
    tree: &sled::Tree,
    id: TreeId,
    start: &[u8],
    limit: usize,
) -> Result<Rows, Error> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    // The block that may hold `start` (none: every block is after it).
    let first = match tree.range(..=start).next_back() {
        Some(item) => Some(item.map_err(storage("scanning"))?.0),
        None => None,
    };
    let blocks = match &first {
        Some(fence) => tree.range(fence.as_ref()..),
        None => tree.range(start..),
    };
    for item in blocks {
        let (fence, block) = item.map_err(storage("scanning"))?;
        for (k, v) in decode(id, &fence, &block)? {
            if k.as_slice() >= start {
                out.push((k, v));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The last `limit` rows, in key order.
pub(crate) fn scan_last(tree: &sled::Tree, id: TreeId, limit: usize) -> Result<Rows, Error> {
    let mut out = Vec::new();
    for item in tree.iter().rev() {
        if out.len() >= limit {
            break;
        }
        let (fence, block) = item.map_err(storage("scanning"))?;
        let block = decode(id, &fence, &block)?;
        out.extend(block.into_iter().rev().take(limit - out.len()));
    }
    out.reverse();
    Ok(out)
}

/// Every row of `tree`, in key order, whether it is `packed` in blocks or
/// holds one sled row per row (compaction, tests).
pub(crate) fn for_each(
    tree: &sled::Tree,
    id: TreeId,
    packed: bool,
    f: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    for item in tree.iter() {
        let (key, value) = item.map_err(storage("reading"))?;
        if !packed {
            f(key.to_vec(), value.to_vec())?;
            continue;
        }
        for (k, v) in decode(id, &key, &value)? {
            f(k, v)?;
        }
    }
    Ok(())
}

/// Packs rows given in key order into full blocks (compaction).
#[derive(Default)]
pub(crate) struct Packer {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
}

impl Packer {
    /// Adds the next row; returns the block before it, (fence, bytes), when
    /// the row does not fit in it.
    pub(crate) fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
        let bytes = row_bytes(&key, &value);
        let full = (self.bytes + bytes > BLOCK_BYTES && !self.rows.is_empty()).then(|| self.take());
        self.bytes += bytes;
        self.rows.push((key, value));
        full
    }

    /// The last block, if any row is left.
    pub(crate) fn finish(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        (!self.rows.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> (Vec<u8>, Vec<u8>) {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        let block = encode(rows.iter().map(|(k, v)| (k, v)));
        let fence = rows.into_iter().next().map(|(k, _)| k).unwrap_or_default();
        (fence, block)
    }
}

/// The sled writes that apply `changes` (each key's new value, `None`
/// deleting it) to the packed tree `tree`, as it is now. The caller is the
/// only writer of the tree until it has applied them.
pub(crate) fn plan(
    tree: &sled::Tree,
    id: TreeId,
    changes: &BTreeMap<&[u8], Option<&[u8]>>,
) -> Result<Vec<BlockWrite>, Error> {
    let applying = "applying logged changes to sled";
    let mut out = Vec::new();
    let mut pending = changes.iter().peekable();
    while let Some(&(&first, _)) = pending.peek() {
        let (fence, mut block) = match tree.range(..=first).next_back() {
            Some(item) => {
                let (fence, bytes) = item.map_err(storage(applying))?;
                let block = decode(id, &fence, &bytes)?;
                (Some(fence.to_vec()), block)
            }
            None => (None, Block::new()),
        };
        // Where the next block begins: the changes before it are this one's.
        let next = match &fence {
            Some(f) => tree
                .range::<&[u8], _>((Bound::Excluded(f.as_slice()), Bound::Unbounded))
                .next(),
            None => tree.iter().next(),
        };
        let next = match next {
            Some(item) => Some(item.map_err(storage(applying))?.0),
            None => None,
        };
        let last_before = block.keys().next_back().cloned();
        let mut appended = true;
        while let Some(&(&key, value)) = pending.peek() {
            if next.as_ref().is_some_and(|n| key >= n.as_ref()) {
                break;
            }
            pending.next();
            if last_before.as_ref().is_some_and(|l| key <= l.as_slice()) {
                appended = false;
            }
            match value {
                Some(v) => {
                    block.insert(key.to_vec(), v.to_vec());
                }
                None => {
                    block.remove(key);
                }
            }
        }
        let pieces = cut(&block, appended);
        match (pieces.first(), fence) {
            (None, Some(fence)) => out.push((fence, None)),
            (None, None) => {}
            (Some(_), fence) => {
                for (i, piece) in pieces.iter().enumerate() {
                    let key = match (i, &fence) {
                        (0, Some(f)) => f.clone(),
                        _ => piece[0].0.clone(),
                    };
                    out.push((key, Some(encode(piece.iter().map(|(k, v)| (*k, *v))))));
                }
            }
        }
    }
    Ok(out)
}

/// A block's rows cut into blocks of at most [`BLOCK_BYTES`] (a larger
/// row alone): full ones when `appended`, else even ones.
fn cut(block: &Block, appended: bool) -> Vec<Vec<(&Vec<u8>, &Vec<u8>)>> {
    let total: usize = block.iter().map(|(k, v)| row_bytes(k, v)).sum();
    let mut pieces = Vec::new();
    if block.is_empty() {
        return pieces;
    }
    let target = if total <= BLOCK_BYTES || appended {
        BLOCK_BYTES
    } else {
        total.div_ceil(total.div_ceil(BLOCK_BYTES))
    };
    let mut piece = Vec::new();
    let mut size = 0;
    for (k, v) in block {
        let bytes = row_bytes(k, v);
        if size + bytes > target && !piece.is_empty() {
            pieces.push(std::mem::take(&mut piece));
            size = 0;
        }
        size += bytes;
        piece.push((k, v));
    }
    pieces.push(piece);
    pieces
}

/// Reads arbitrary bytes as a block (the first byte: the fence's length,
/// then the fence, then the block), as reads and the applier do: never a
/// panic; a block that decodes keeps its rows through encoding, and cuts
/// into blocks within bounds that hold the same rows (fuzzing).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_block(data: &[u8]) {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (fence, block) = rest.split_at(usize::from(len).min(rest.len()));
    let walked: Result<Vec<_>, ()> = rows(block).collect();
    let Ok(decoded) = decode(TreeId::Events, fence, block) else {
        return;
    };
    assert_eq!(walked.map(|w| w.len()), Ok(decoded.len()));
    let encoded = encode(decoded.iter());
    assert_eq!(
        decode(TreeId::Events, fence, &encoded).ok().as_ref(),
        Some(&decoded)
    );
    for appended in [false, true] {
        let pieces = cut(&decoded, appended);
        let rows: Vec<_> = pieces.iter().flatten().map(|(k, v)| (*k, *v)).collect();
        assert!(rows.iter().map(|(k, v)| (*k, *v)).eq(decoded.iter()));
        for piece in &pieces {
            let bytes = encode(piece.iter().map(|(k, v)| (*k, *v))).len();
            assert!(bytes <= BLOCK_BYTES || piece.len() == 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(tree: &sled::Tree, changes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for (k, v) in changes {
            last.insert(k, v.as_deref());
        }
        let mut batch = sled::Batch::default();
        for (k, v) in plan(tree, TreeId::Emails, &last).unwrap() {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        tree.apply_batch(batch).unwrap();
    }

    fn check(tree: &sled::Tree, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
        let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(scan(tree, TreeId::Emails, &[], usize::MAX).unwrap(), all);
        for (k, v) in model {
            assert_eq!(
                get(tree, TreeId::Emails, k).unwrap().as_deref(),
                Some(&v[..])
            );
        }
        let mut seen = Vec::new();
        for_each(tree, TreeId::Emails, true, &mut |k, v| {
            seen.push((k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, all);
        for n in [0, 1, 7, all.len()] {
            let last = scan_last(tree, TreeId::Emails, n).unwrap();
            assert_eq!(last, all[all.len().saturating_sub(n)..]);
        }
        // Every block within its size, in order, within its fence.
        for item in tree.iter() {
            let (fence, bytes) = item.unwrap();
            let block = decode(TreeId::Emails, &fence, &bytes).unwrap();
            assert!(!block.is_empty());
            assert!(bytes.len() <= BLOCK_BYTES || block.len() == 1);
        }
    }

    fn temporary() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    #[test]
    fn appends_fill_their_blocks() {
        let tree = temporary();
        let mut model = BTreeMap::new();
        for chunk in 0..50u64 {
            let changes: Vec<_> = (0..37u64)
                .map(|i| {
                    let seq = chunk * 37 + i;
                    (seq.to_be_bytes().to_vec(), Some(vec![seq as u8; 24]))
                })
                .collect();
            for (k, v) in &changes {
                model.insert(k.clone(), v.clone().unwrap());
            }
            apply(&tree, &changes);
        }
        check(&tree, &model);
        // 1,850 rows of 34 bytes: 22 rows a block, all blocks but the last full.
        assert_eq!(tree.len(), 1850usize.div_ceil(BLOCK_BYTES / 34));
    }

    /// Compaction's packer: full blocks of the rows in order, each keyed
    /// by its first row, none over the size, every one but the last too
    /// full for the next row.
    #[test]
    fn the_packer_fills_its_blocks() {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..3_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![7; (i % 90) as usize]))
            .collect();
        let mut packer = Packer::default();
        let mut blocks = Vec::new();
        for (k, v) in rows.clone() {
            blocks.extend(packer.push(k, v));
        }
        blocks.extend(packer.finish());
        assert!(packer.finish().is_none());
        let mut read = Vec::new();
        for (i, (fence, bytes)) in blocks.iter().enumerate() {
            let block = decode(TreeId::Events, fence, bytes).unwrap();
            assert_eq!(block.keys().next(), Some(fence));
            assert!(bytes.len() <= BLOCK_BYTES);
            if let Some((k, v)) = blocks
                .get(i + 1)
                .and_then(|(f, b)| decode(TreeId::Events, f, b).unwrap().into_iter().next())
            {
                assert!(
                    bytes.len() + row_bytes(&k, &v) > BLOCK_BYTES,
                    "block {i} not full"
                );
            }
            read.extend(block);
        }
        assert_eq!(read, rows);

        // Rows of 64 bytes: 12 fill a block to the byte.
        let mut packer = Packer::default();
        let full: Vec<_> = (0..24u32)
            .filter_map(|i| packer.push(i.to_be_bytes().to_vec(), vec![1; 58]))
            .collect();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].1.len(), BLOCK_BYTES);
    }

    /// A block that overflows is cut evenly, unless the new rows all came
    /// after its last one: then into full blocks (appends).
    #[test]
    fn overflowing_blocks_are_cut_evenly_and_appends_into_full_blocks() {
        // 30 rows of 34 bytes: 1,020 bytes.
        let block: Block = (0..30u64)
            .map(|i| (i.to_be_bytes().to_vec(), vec![0; 24]))
            .collect();
        let sizes =
            |appended| -> Vec<usize> { cut(&block, appended).iter().map(Vec::len).collect() };
        assert_eq!(sizes(false), [15, 15]);
        assert_eq!(sizes(true), [22, 8]);
        let small: Block = block.clone().into_iter().take(22).collect();
        assert_eq!(cut(&small, false).len(), 1);
        assert!(cut(&Block::new(), true).is_empty());
    }

    #[test]
    fn a_row_larger_than_a_block_is_a_block_of_its_own() {
        let tree = temporary();
        let changes = vec![
            (b"a".to_vec(), Some(vec![1; 10])),
            (b"b".to_vec(), Some(vec![2; 2 * BLOCK_BYTES])),
            (b"c".to_vec(), Some(vec![3; 10])),
        ];
        apply(&tree, &changes);
        let model = changes.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        check(&tree, &model);
    }

    #[test]
    fn damaged_blocks_are_corrupt_records_not_panics() {
        let tree = temporary();
        for bad in [
            &[0x05, b'a'][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff],
            &[1, b'b', 0, 1, b'a', 0],
        ] {
            tree.insert(b"a", bad).unwrap();
            assert!(matches!(
                scan(&tree, TreeId::Emails, &[], 10),
                Err(Error::CorruptRecord { .. })
            ));
            assert!(matches!(
                get(&tree, TreeId::Emails, b"b"),
                Err(Error::CorruptRecord { .. }) | Ok(_)
            ));
        }
        // A row below its block's fence.
        tree.insert(b"m", &[1, b'a', 0][..]).unwrap();
        assert!(scan(&tree, TreeId::Emails, b"m", 10).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// What the fuzz target `packed_block` runs, on arbitrary bytes and
        /// on real blocks.
        #[test]
        fn any_bytes_as_a_block(
            data in prop::collection::vec(any::<u8>(), 0..300),
            rows in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..200), 0..40),
        ) {
            check_block(&data);
            let mut real = vec![0];
            real.extend(encode(rows.iter()));
            check_block(&real);
        }

        /// Random puts and deletes in random batches read back exactly as a
        /// map holds them, with every block within its bounds.
        #[test]
        fn packed_tree_is_a_map(
            batches in prop::collection::vec(
                prop::collection::vec(
                    (prop::collection::vec(0u8..6, 0..5), prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..90))),
                    1..120,
                ),
                1..12,
            ),
            probes in prop::collection::vec(prop::collection::vec(0u8..6, 0..5), 8),
        ) {
            let tree = temporary();
            let mut model = BTreeMap::new();
            for batch in &batches {
                for (k, v) in batch {
                    match v {
                        Some(v) => { model.insert(k.clone(), v.clone()); }
                        None => { model.remove(k); }
                    }
                }
                apply(&tree, batch);
                check(&tree, &model);
            }
            for p in probes {
                prop_assert_eq!(get(&tree, TreeId::Emails, &p).unwrap().map(|v| v.to_vec()), model.get(&p).cloned());
                let from: Vec<_> = model.range(p.clone()..).take(5).map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(scan(&tree, TreeId::Emails, &p, 5).unwrap(), from);
            }
        }
    }
}
