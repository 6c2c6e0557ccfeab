//! Changes that are logged but not yet applied to sled.
//!
//! A commit appends its record to the write-ahead log and returns once the
//! record is synced; sled receives the change later, in a batch of records
//! applied by one sled transaction ([`super::commit::settle`]). Until then
//! the change lives here, keyed by (tree, key), with the sequence number of
//! the record that wrote it:
//!
//! - a **writer** (inside the WAL's writer section) sees every version, synced
//!   or not, since its own record will follow them in the log;
//! - a **reader** sees only versions whose record is durable
//!   ([`Overlay::get_durable`]), so nothing is ever read that a crash could
//!   take back;
//! - versions are dropped once sled holds them ([`Overlay::forget_upto`]):
//!   sled is written before the versions go, so a reader that misses here
//!   finds the same or a newer value in sled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use sled::IVec;

use super::TreeId;
use super::tx::Redo;

/// The versions of one key, oldest first: (record sequence number, value or
/// `None` for a delete).
type Versions = Vec<(u64, Option<IVec>)>;

pub(crate) struct Overlay {
    trees: RwLock<Vec<HashMap<Vec<u8>, Versions>>>,
    /// The changes of a deferred replay ([`Frozen`]), below the maps.
    frozen: RwLock<Option<std::sync::Arc<Frozen>>>,
    /// Keys held per tree (a fast "nothing here" for readers and scans).
    held: [AtomicUsize; TreeId::ALL.len()],
    /// Every record up to this one is durable: readers may see it.
    durable: AtomicU64,
}

/// What a lookup found.
pub(crate) enum Found {
    /// The key's value (or its deletion, `None`) as of a logged record.
    Logged(Option<IVec>),
    /// Nothing logged and unapplied: sled's value is current.
    NotHere,
}

impl Overlay {
    pub fn new(durable: u64) -> Self {
        Self {
            trees: RwLock::new(TreeId::ALL.iter().map(|_| HashMap::new()).collect()),
            frozen: RwLock::new(None),
            held: Default::default(),
            durable: AtomicU64::new(durable),
        }
    }

    /// Records up to `seq` are durable.
    pub fn set_durable(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::AcqRel);
    }

    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// `true` when no key of `tree` waits to be applied.
    pub fn is_clear(&self, tree: TreeId) -> bool {
        self.held[tree.index()].load(Ordering::Acquire) == 0
    }

    /// Adds the writes of record `seq` (called in the writer section, in
    /// sequence order).
    pub fn add(&self, seq: u64, redo: &[Redo]) {
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        for w in redo {
            let map = &mut trees[w.tree.index()];
            // Most keys a commit writes are waiting already (its customer,
            // the event counter): look them up without copying the key.
            if !map.contains_key(w.key.as_slice()) {
                map.insert(w.key.clone(), Vec::new());
                self.held[w.tree.index()].fetch_add(1, Ordering::AcqRel);
            }
            let Some(versions) = map.get_mut(w.key.as_slice()) else {
                continue;
            };
            let value = w.value.as_deref().map(IVec::from);
            match versions.last_mut() {
                // A transaction that writes a key twice: its last write wins.
                Some((s, v)) if *s == seq => *v = value,
                _ => versions.push((seq, value)),
            }
        }
    }

    /// The newest version of a key, durable or not (for writers).
    pub fn get_latest(&self, tree: TreeId, key: &[u8]) -> Found {
        self.get(tree, key, u64::MAX)
    }

    /// The newest durable version of a key (for readers; the backend's
    /// reads use [`Overlay::get_upto`] with the reader's own bound).
    #[cfg(test)]
    pub fn get_durable(&self, tree: TreeId, key: &[u8]) -> Found {
        self.get(tree, key, self.durable())
    }

    /// The newest version of a key written by record `upto` or before.
    pub fn get_upto(&self, tree: TreeId, key: &[u8], upto: u64) -> Found {
        self.get(tree, key, upto)
    }

    fn get(&self, tree: TreeId, key: &[u8], upto: u64) -> Found {
        if self.is_clear(tree) {
            return Found::NotHere;
        }
        {
            let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(versions) = trees[tree.index()].get(key)
                && let Some((_, v)) = versions.iter().rev().find(|(seq, _)| *seq <= upto)
            {
                return Found::Logged(v.clone());
            }
        }
        // A deferred replay's changes are all durable and older than any
        // version in the maps.
        let frozen = self.frozen.read().unwrap_or_else(PoisonError::into_inner);
        match frozen.as_ref().and_then(|f| f.get(tree, key)) {
            Some(v) => Found::Logged(v.map(IVec::from)),
            None => Found::NotHere,
        }
    }

    /// Installs the changes of a deferred replay.
    pub fn freeze(&self, frozen: std::sync::Arc<Frozen>) {
        for (i, held) in self.held.iter().enumerate() {
            held.fetch_add(frozen.per_tree[i], Ordering::AcqRel);
        }
        *self.frozen.write().unwrap_or_else(PoisonError::into_inner) = Some(frozen);
    }

    /// The deferred replay's changes, while sled does not hold them all.
    pub fn frozen(&self) -> Option<std::sync::Arc<Frozen>> {
        self.frozen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// sled holds every change of the deferred replay: drop them.
    pub fn thaw(&self) {
        let old = self
            .frozen
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(f) = old {
            for (i, held) in self.held.iter().enumerate() {
                held.fetch_sub(f.per_tree[i], Ordering::AcqRel);
            }
        }
    }

    /// Drops every version written by records up to `seq`: sled holds them.
    pub fn forget_upto(&self, seq: u64, applied: &[&[Redo]]) {
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        for redo in applied {
            for w in *redo {
                let map = &mut trees[w.tree.index()];
                let Some(versions) = map.get_mut(w.key.as_slice()) else {
                    continue;
                };
                // Oldest first: what sled holds is a prefix (and for a key
                // that many records wrote, a later entry finds it gone).
                let n = versions.partition_point(|(s, _)| *s <= seq);
                if n == 0 {
                    continue;
                }
                versions.drain(..n);
                if versions.is_empty() {
                    map.remove(w.key.as_slice());
                    self.held[w.tree.index()].fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Keys held, over all trees (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.iter().map(|h| h.load(Ordering::Acquire)).sum()
    }
}

fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// The changes of a deferred replay ([`super::wal::Recovery::resume`]):
/// the last write of each key over the recovered records, sorted by
/// (tree, key), pointing into the log's bytes (no copy per key). Read by
/// binary search; applied to sled in key-ordered chunks; dropped once the
/// last chunk is in sled.
pub(crate) struct Frozen {
    segments: Vec<Vec<u8>>,
    entries: Vec<FrozenEntry>,
    per_tree: [usize; TreeId::ALL.len()],
}

#[derive(Clone, Copy)]
struct FrozenEntry {
    tree: u8,
    /// The key's first 8 bytes (zero-padded), big-endian: ordering by it,
    /// then by the whole key, is the keys' byte order, and it settles most
    /// comparisons without touching the log's bytes.
    prefix: u64,
    /// Position in the log (ties between writes of one key).
    order: u32,
    segment: u32,
    key: (u32, u32),
    /// (start, len); `None` deletes.
    value: Option<(u32, u32)>,
}

impl Frozen {
    /// `writes`: (tree, segment index, key range, value range) in log order.
    pub fn new(
        segments: Vec<Vec<u8>>,
        writes: impl Iterator<
            Item = (
                TreeId,
                usize,
                std::ops::Range<usize>,
                Option<std::ops::Range<usize>>,
            ),
        >,
    ) -> Self {
        let span = |r: std::ops::Range<usize>| (r.start as u32, (r.end - r.start) as u32);
        let mut entries: Vec<FrozenEntry> = writes
            .enumerate()
            .map(|(order, (tree, segment, key, value))| FrozenEntry {
                tree: tree.index() as u8,
                prefix: prefix(&segments[segment][key.clone()]),
                order: order as u32,
                segment: segment as u32,
                key: span(key),
                value: value.map(span),
            })
            .collect();
        // For equal keys the log order decides: the last write wins below.
        entries.sort_unstable_by(|a, b| {
            (a.tree, a.prefix)
                .cmp(&(b.tree, b.prefix))
                .then_with(|| {
                    Self::bytes(&segments, a.segment, a.key)
                        .cmp(Self::bytes(&segments, b.segment, b.key))
                })
                .then(a.order.cmp(&b.order))
        });
        let mut unique: Vec<FrozenEntry> = Vec::with_capacity(entries.len());
        for e in entries {
            match unique.last_mut() {
                Some(last)
                    if last.tree == e.tree
                        && Self::bytes(&segments, last.segment, last.key)
                            == Self::bytes(&segments, e.segment, e.key) =>
                {
                    *last = e;
                }
                _ => unique.push(e),
            }
        }
        let mut per_tree = [0; TreeId::ALL.len()];
        for e in &unique {
            per_tree[usize::from(e.tree)] += 1;
        }
        Self {
            segments,
            entries: unique,
            per_tree,
        }
    }

    fn bytes(segments: &[Vec<u8>], segment: u32, (start, len): (u32, u32)) -> &[u8] {
        &segments[segment as usize][start as usize..(start + len) as usize]
    }

    /// Distinct keys written.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `None`: not written here; `Some(None)`: deleted.
    fn get(&self, tree: TreeId, key: &[u8]) -> Option<Option<&[u8]>> {
        let tree = tree.index() as u8;
        let p = prefix(key);
        let i = self
            .entries
            .binary_search_by(|e| {
                (e.tree, e.prefix)
                    .cmp(&(tree, p))
                    .then_with(|| Self::bytes(&self.segments, e.segment, e.key).cmp(key))
            })
            .ok()?;
        let e = self.entries[i];
        Some(e.value.map(|v| Self::bytes(&self.segments, e.segment, v)))
    }

    /// The writes of entries `range`, owned (to apply them to sled).
    pub fn writes(&self, range: std::ops::Range<usize>) -> Vec<Redo> {
        self.entries[range]
            .iter()
            .map(|e| Redo {
                tree: TreeId::ALL[usize::from(e.tree)],
                key: Self::bytes(&self.segments, e.segment, e.key).to_vec(),
                value: e
                    .value
                    .map(|v| Self::bytes(&self.segments, e.segment, v).to_vec()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &[u8], value: Option<&[u8]>) -> Redo {
        Redo {
            tree: TreeId::Customers,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn value(f: Found) -> Option<Option<Vec<u8>>> {
        match f {
            Found::Logged(v) => Some(v.map(|v| v.to_vec())),
            Found::NotHere => None,
        }
    }

    #[test]
    fn readers_see_only_durable_versions_writers_see_all() {
        let o = Overlay::new(0);
        let r1 = [w(b"a", Some(b"1"))];
        let r2 = [w(b"a", None), w(b"b", Some(b"2"))];
        o.add(1, &r1);
        o.add(2, &r2);
        assert_eq!(value(o.get_durable(TreeId::Customers, b"a")), None);
        assert_eq!(value(o.get_latest(TreeId::Customers, b"a")), Some(None));
        o.set_durable(1);
        assert_eq!(
            value(o.get_durable(TreeId::Customers, b"a")),
            Some(Some(b"1".to_vec()))
        );
        assert_eq!(value(o.get_durable(TreeId::Customers, b"b")), None);
        o.set_durable(2);
        assert_eq!(value(o.get_durable(TreeId::Customers, b"a")), Some(None));
        assert!(o.is_clear(TreeId::Emails));
        assert!(!o.is_clear(TreeId::Customers));

        o.forget_upto(1, &[&r1]);
        assert_eq!(value(o.get_durable(TreeId::Customers, b"a")), Some(None));
        assert_eq!(o.len(), 2);
        o.forget_upto(2, &[&r2]);
        assert_eq!(value(o.get_latest(TreeId::Customers, b"a")), None);
        assert_eq!(o.len(), 0);
        assert!(o.is_clear(TreeId::Customers));
    }

    #[test]
    fn a_key_written_twice_in_one_record_keeps_the_last_write() {
        let o = Overlay::new(0);
        o.add(1, &[w(b"a", Some(b"1")), w(b"a", Some(b"2"))]);
        o.set_durable(1);
        assert_eq!(
            value(o.get_durable(TreeId::Customers, b"a")),
            Some(Some(b"2".to_vec()))
        );
    }

    #[test]
    fn frozen_changes_keep_the_last_write_of_each_key_in_byte_order() {
        // Keys that share 8-byte prefixes, are prefixes of each other, or
        // end in zero bytes; written twice, deleted, in two trees.
        let keys: Vec<&[u8]> = vec![
            b"a",
            b"a\0",
            b"a\0b",
            b"abcdefgh",
            b"abcdefgh0",
            b"abcdefgh1",
            b"abcdefg",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"",
            b"b",
        ];
        let mut seg = Vec::new();
        let mut writes = Vec::new();
        let mut expect = std::collections::BTreeMap::new();
        for round in 0..3u8 {
            for (i, k) in keys.iter().enumerate() {
                for tree in [TreeId::Emails, TreeId::Customers] {
                    let ks = seg.len();
                    seg.extend_from_slice(k);
                    let value = if round == 2 && i % 3 == 0 {
                        None
                    } else {
                        let vs = seg.len();
                        seg.extend_from_slice(&[round, i as u8, tree as u8]);
                        Some(vs..vs + 3)
                    };
                    let v = value.clone().map(|r| seg[r].to_vec());
                    expect.insert((tree as usize, k.to_vec()), v);
                    writes.push((tree, 0usize, ks..ks + k.len(), value));
                }
            }
        }
        let f = Frozen::new(vec![seg], writes.into_iter());
        assert_eq!(f.len(), keys.len() * 2);
        for ((tree, key), v) in &expect {
            let got = f
                .get(TreeId::ALL[*tree], key)
                .map(|o| o.map(<[u8]>::to_vec));
            assert_eq!(got.as_ref(), Some(v), "{tree} {key:?}");
        }
        assert!(f.get(TreeId::Customers, b"abcdefgh2").is_none());
        assert!(f.get(TreeId::Customers, b"a\0\0").is_none());
        assert!(f.get(TreeId::Apps, b"a").is_none());
        // Chunks come out in the trees' byte order.
        let all = f.writes(0..f.len());
        let order: Vec<(usize, Vec<u8>)> = all
            .iter()
            .map(|w| (w.tree as usize, w.key.clone()))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }
}
