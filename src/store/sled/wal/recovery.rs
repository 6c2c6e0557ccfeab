//! Recovery: the log read back at open ([`Recovery::load`], then
//! [`Loaded::parse`] once sled's applied sequence number is known), and the
//! two ways to go on from it: a new generation after the records were
//! replayed into sled ([`Recovery::start`]), or the same generation with the
//! records pending ([`Recovery::resume`]).

use super::*;

/// The log read back at open, before replay.
pub(crate) struct Recovery {
    dir: Box<dyn WalDir>,
    opts: WalOptions,
    checkpoint: Checkpoint,
    slots: Vec<(Slot, u64)>,
    highest_segment: u64,
    segments: Vec<Vec<u8>>,
    /// (seq, index in `segments`, payload, offset after the record).
    records: Vec<(u64, usize, Range<usize>, usize)>,
    /// Slots (index in `slots`) holding this epoch's segments at or after
    /// the checkpoint's, by segment number.
    by_segment: BTreeMap<u64, usize>,
    /// Valid records follow the end of the chain: damage, not a torn tail.
    corruption: Option<Corruption>,
}

impl Recovery {
    /// Reads the checkpoint and every valid record after it. Writes nothing.
    /// Records up to `applied` (sled holds their changes) are stepped over
    /// without checking their checksums: only the chain matters for them.
    #[cfg(test)]
    pub fn read(dir: Box<dyn WalDir>, opts: WalOptions, applied: u64) -> stdio::Result<Self> {
        Self::load(dir, opts)?.parse(applied)
    }

    /// The I/O half of [`Recovery::read`]: the checkpoint, every slot's
    /// header, and the whole bytes of the slots that may hold the log after
    /// the checkpoint. Independent of sled, so it can run while sled opens.
    pub fn load(dir: Box<dyn WalDir>, opts: WalOptions) -> stdio::Result<Loaded> {
        let checkpoint = match dir.read_checkpoint()? {
            Some(bytes) => Checkpoint::decode(&bytes)
                .ok_or_else(|| corrupt("the write-ahead log's checkpoint file is corrupt"))?,
            // No checkpoint yet: the log was never started (a new store, or
            // its creation was interrupted), so it holds nothing.
            None => Checkpoint {
                epoch: 0,
                seq: 0,
                segment: 0,
                offset: SEG_HEADER_LEN as u64,
            },
        };
        let mut slots = Vec::new();
        let mut by_segment = BTreeMap::new();
        let mut highest_segment = checkpoint.segment;
        let mut headless = Vec::new();
        for no in dir.list_slots()? {
            let file = dir.open_slot(no)?;
            let len = file.len()?;
            if len >= SEG_HEADER_LEN as u64 {
                let mut head = [0u8; SEG_HEADER_LEN];
                file.read_at(&mut head, 0)?;
                match SegmentHeader::decode(&head) {
                    Some(h) => {
                        highest_segment = highest_segment.max(h.segment);
                        if h.epoch == checkpoint.epoch && h.segment >= checkpoint.segment {
                            by_segment.insert(h.segment, slots.len());
                        }
                    }
                    None if checkpoint.epoch > 0 => {
                        // A damaged header hides its segment from the chain:
                        // keep the slot's bytes when its first record is of
                        // this generation (corruption.rs).
                        let mut first = [0u8; format::REC_HEADER_LEN];
                        if len >= (SEG_HEADER_LEN + first.len()) as u64 {
                            file.read_at(&mut first, SEG_HEADER_LEN as u64)?;
                            if format::record_epoch(&first) == Some(checkpoint.epoch) {
                                let mut b = vec![0u8; usize::try_from(len).unwrap_or(0)];
                                file.read_at(&mut b, 0)?;
                                headless.push((no, b));
                            }
                        }
                    }
                    None => {}
                }
            }
            slots.push((Slot { no, file }, len));
        }

        let mut bytes = BTreeMap::new();
        if checkpoint.epoch > 0 {
            for (&segment, &i) in &by_segment {
                let (slot, len) = &slots[i];
                let mut b = vec![0u8; usize::try_from(*len).unwrap_or(0)];
                slot.file.read_at(&mut b, 0)?;
                bytes.insert(segment, b);
            }
        }
        Ok(Loaded {
            dir,
            opts,
            checkpoint,
            slots,
            highest_segment,
            by_segment,
            bytes,
            headless,
        })
    }
}

/// The write-ahead log's bytes as [`Recovery::load`] found them.
pub(crate) struct Loaded {
    dir: Box<dyn WalDir>,
    opts: WalOptions,
    checkpoint: Checkpoint,
    slots: Vec<(Slot, u64)>,
    highest_segment: u64,
    by_segment: BTreeMap<u64, usize>,
    /// The bytes of the slots in `by_segment`, by segment number.
    bytes: BTreeMap<u64, Vec<u8>>,
    /// Slots whose header is damaged but whose first record is of this
    /// generation and after the checkpoint: (slot, bytes).
    headless: Vec<(u32, Vec<u8>)>,
}

impl Loaded {
    pub fn options(&self) -> WalOptions {
        self.opts
    }

    /// The parsing half of [`Recovery::read`].
    pub fn parse(self, applied: u64) -> stdio::Result<Recovery> {
        let Loaded {
            dir,
            opts,
            checkpoint,
            slots,
            highest_segment,
            by_segment,
            mut bytes,
            headless,
        } = self;
        let mut segments = Vec::new();
        let mut records = Vec::new();
        let mut seq = checkpoint.seq + 1;
        let mut segment = checkpoint.segment;
        let mut at = usize::try_from(checkpoint.offset).unwrap_or(usize::MAX);
        if checkpoint.epoch > 0
            && let Some(first) = bytes.remove(&segment)
        {
            segments.push(first);
            loop {
                let cur = segments.len() - 1;
                let parse = |at, seq| {
                    if seq <= applied {
                        format::step_over_record(&segments[cur], at, checkpoint.epoch, seq)
                    } else {
                        format::parse_record(&segments[cur], at, checkpoint.epoch, seq)
                    }
                };
                while let Some(found) = parse(at, seq) {
                    records.push((seq, cur, found.payload, found.next));
                    at = found.next;
                    seq += 1;
                }
                // No valid record here: the log ends, unless the writer moved
                // on to the next segment and the record we expect opens it.
                let goes_on = bytes.get(&(segment + 1)).is_some_and(|next| {
                    format::step_over_record(next, SEG_HEADER_LEN, checkpoint.epoch, seq).is_some()
                });
                let Some(next) = goes_on.then(|| bytes.remove(&(segment + 1))).flatten() else {
                    break;
                };
                segments.push(next);
                segment += 1;
                at = SEG_HEADER_LEN;
            }
        }
        // Where the chain stops: is it the log's end, or do valid records
        // follow (corruption.rs)? Look after it in its segment, in the
        // segments after it, and in slots whose header is damaged.
        let mut corruption = None;
        if checkpoint.epoch > 0 {
            let mut after: Vec<(&[u8], usize)> = Vec::new();
            if let Some(last) = segments.last() {
                after.push((last, at));
            }
            after.extend(
                bytes
                    .range(segment + 1..)
                    .map(|(_, b)| (b.as_slice(), SEG_HEADER_LEN)),
            );
            after.extend(headless.iter().map(|(_, b)| (b.as_slice(), SEG_HEADER_LEN)));
            let last_valid = after
                .into_iter()
                .filter_map(|(b, from)| corruption::last_valid_from(b, from, checkpoint.epoch, seq))
                .max();
            if let Some(last_valid) = last_valid.filter(|v| *v > applied) {
                corruption = Some(Corruption {
                    segment,
                    slot: by_segment.get(&segment).map(|&i| slots[i].0.no),
                    offset: at as u64,
                    seq,
                    last_valid,
                });
            }
        }
        Ok(Recovery {
            dir,
            opts,
            checkpoint,
            slots,
            highest_segment,
            segments,
            records,
            by_segment,
            corruption,
        })
    }
}

impl Recovery {
    /// Where the chain of records breaks while valid records newer than
    /// sled's state follow it (media corruption), if it does. Recovering
    /// anyway ([`Recovery::start`]) drops those records.
    pub fn corruption(&self) -> Option<Corruption> {
        self.corruption
    }

    /// The sequence number the checkpoint file records.
    pub fn checkpoint_seq(&self) -> u64 {
        self.checkpoint.seq
    }

    /// The sequence number of the last valid record (or the checkpoint's).
    pub fn last_seq(&self) -> u64 {
        self.records
            .last()
            .map_or(self.checkpoint.seq, |(seq, _, _, _)| *seq)
    }

    /// The valid records after the checkpoint, in order: (seq, payload).
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.records
            .iter()
            .map(|(seq, seg, range, _)| (*seq, &self.segments[*seg][range.clone()]))
    }

    /// Starts a new generation of the log whose first record will be
    /// `next_seq`. Call it only once everything recovered has been replayed
    /// and sled's files synced: the checkpoint it writes says so.
    pub fn start(self, next_seq: u64) -> stdio::Result<Wal> {
        let Recovery {
            dir,
            opts,
            checkpoint,
            slots,
            highest_segment,
            ..
        } = self;
        let epoch = checkpoint.epoch + 1;
        let segment = highest_segment + 1;
        let next_seq = next_seq.max(checkpoint.seq + 1);
        let mut all_slots: BTreeSet<u32> = slots.iter().map(|(s, _)| s.no).collect();
        let (mut free, odd): (Vec<_>, Vec<_>) = slots
            .into_iter()
            .partition(|(_, len)| *len == opts.segment_size);
        if free.is_empty() {
            let no = first_unused(&all_slots);
            let file = dir.create_slot(no, opts.segment_size)?;
            all_slots.insert(no);
            free.push((Slot { no, file }, opts.segment_size));
        }
        dir.write_checkpoint(
            &Checkpoint {
                epoch,
                seq: next_seq - 1,
                segment,
                offset: SEG_HEADER_LEN as u64,
            }
            .encode(),
        )?;
        // Slots of another size (an earlier configuration, or too short to
        // hold a header) are behind the checkpoint now.
        for (slot, _) in odd {
            dir.remove_slot(slot.no)?;
            all_slots.remove(&slot.no);
        }
        let mut free: Vec<Slot> = free.into_iter().map(|(s, _)| s).collect();
        // Pop from the end: lowest slot numbers first.
        free.sort_by_key(|s| std::cmp::Reverse(s.no));
        let writer = Writer {
            epoch,
            next_seq,
            appended_seq: next_seq - 1,
            applied_seq: next_seq - 1,
            applied_pos: (segment, SEG_HEADER_LEN as u64),
            pending: std::collections::VecDeque::new(),
            segment,
            offset: SEG_HEADER_LEN as u64,
            current: None,
            in_use: Vec::new(),
            free,
            all_slots,
            dirty: Vec::new(),
            unwritten: Vec::new(),
            buf: Vec::new(),
        };
        Ok(Wal::new(dir, opts, writer, Overlay::new(next_seq - 1), 0))
    }

    /// The number of bytes of the records after `applied` (what a replay
    /// would apply).
    pub fn bytes_after(&self, applied: u64) -> u64 {
        self.records
            .iter()
            .filter(|(seq, ..)| *seq > applied)
            .map(|(_, _, range, _)| (range.len() + REC_OVERHEAD) as u64)
            .sum()
    }

    /// Goes on with the recovered log instead of replaying it into sled
    /// first: the records after `applied` (sled's applied sequence number)
    /// become pending changes, durable and visible at once in the overlay,
    /// and reach sled in batches later, like any commit's. The log continues
    /// in this epoch right after the last valid record. Before anything is
    /// appended there, this makes sure no byte of this epoch after that
    /// point can pass for a record: the rest of the last segment is zeroed
    /// and any later segment of the epoch loses its header. The segments
    /// holding the recovered records are synced (their bytes may have been
    /// read from the page cache only), and so are the zeroed ones.
    ///
    /// Only when at least one record is newer than `applied` (so the
    /// sequence numbers go on from the log's last record).
    pub fn resume(self, applied: u64) -> stdio::Result<Wal> {
        let Recovery {
            dir,
            opts,
            checkpoint,
            slots,
            segments,
            records,
            by_segment,
            ..
        } = self;
        let Some(last) = records.last() else {
            return Err(corrupt("resume: no record to go on from"));
        };
        if last.0 <= applied || checkpoint.epoch == 0 {
            return Err(corrupt("resume: nothing newer than sled's state"));
        }
        let end_segment = checkpoint.segment + (segments.len() as u64 - 1);
        let end_offset = last.3 as u64;
        let chain: Vec<(u64, usize)> = (checkpoint.segment..=end_segment)
            .map(|seg| {
                by_segment
                    .get(&seg)
                    .map(|&i| (seg, i))
                    .ok_or_else(|| corrupt("resume: a segment of the log is missing"))
            })
            .collect::<stdio::Result<_>>()?;
        let in_chain: BTreeSet<usize> = chain.iter().map(|(_, i)| *i).collect();

        // Nothing of this epoch after the end may look like a record.
        let (_, end_slot) = chain[chain.len() - 1];
        let end_file = slots[end_slot].0.file.clone();
        if end_offset < opts.segment_size {
            let zeros = vec![0u8; 1 << 20];
            let mut at = end_offset;
            while at < opts.segment_size {
                let n = (opts.segment_size - at).min(zeros.len() as u64);
                end_file.write_at(&zeros[..n as usize], at)?;
                at += n;
            }
        }
        let mut touched = Vec::new();
        for &i in by_segment.range(end_segment + 1..).map(|(_, i)| i) {
            slots[i].0.file.write_at(&[0u8; SEG_HEADER_LEN], 0)?;
            touched.push(i);
        }
        for &i in in_chain.iter().chain(touched.iter()) {
            slots[i].0.file.sync()?;
        }

        // The recovered records' changes: the last write of each key (as a
        // replay into sled would apply them), pending in chunks. Only the
        // last chunk moves sled's applied sequence number (to the last
        // record); the earlier ones leave it where it is, so a crash between
        // them replays all the records again over a state they only
        // advanced, which gives the same end state.
        let base_seq = applied.max(checkpoint.seq);
        let mut applied_pos = (checkpoint.segment, checkpoint.offset);
        let mut unapplied = 0usize;
        // Rotation-shaped records write about three keys each.
        let mut writes = Vec::with_capacity(records.len().saturating_mul(3));
        for (seq, seg, range, next) in &records {
            if *seq <= applied {
                applied_pos = (checkpoint.segment + *seg as u64, *next as u64);
                continue;
            }
            let bytes = &segments[*seg];
            let payload = &bytes[range.clone()];
            let decoded = redo::decode(payload).ok_or_else(|| {
                corrupt("a record has a valid checksum but an unreadable redo set")
            })?;
            // Where each key and value lies in the segment's bytes.
            let base = bytes.as_ptr() as usize;
            let at = |part: &[u8]| {
                let start = part.as_ptr() as usize - base;
                start..start + part.len()
            };
            for w in decoded {
                writes.push((w.tree, *seg, at(w.key), w.value.map(at)));
            }
            unapplied += REC_OVERHEAD + range.len();
        }
        let frozen = Arc::new(Frozen::new(segments, writes.into_iter()));
        let end = (end_segment, end_offset);
        let overlay = Overlay::new(last.0);
        let mut pending = std::collections::VecDeque::new();
        let keys = frozen.len();
        let chunks = keys.div_ceil(RESUME_CHUNK).max(1);
        for i in 0..chunks {
            let range = i * RESUME_CHUNK..((i + 1) * RESUME_CHUNK).min(keys);
            let final_chunk = i + 1 == chunks;
            pending.push_back(Arc::new(PendingRecord {
                seq: if final_chunk { last.0 } else { base_seq },
                content_seq: last.0,
                redo: Vec::new(),
                frozen: Some(range),
                end: if final_chunk { end } else { applied_pos },
                len: unapplied / chunks,
            }));
        }
        let unapplied = (unapplied / chunks) * chunks;
        overlay.freeze(frozen);

        let mut all_slots: BTreeSet<u32> = slots.iter().map(|(s, _)| s.no).collect();
        let mut free = Vec::new();
        let mut in_use = Vec::new();
        let mut current = None;
        for (i, (slot, len)) in slots.into_iter().enumerate() {
            if in_chain.contains(&i) {
                let seg = chain
                    .iter()
                    .find(|(_, j)| *j == i)
                    .map_or(0, |(seg, _)| *seg);
                if seg == end_segment {
                    current = Some(slot.clone());
                }
                in_use.push((seg, slot));
            } else if len == opts.segment_size {
                free.push(slot);
            } else {
                // Another size (an earlier configuration, or too short to
                // hold a header): not part of the log.
                dir.remove_slot(slot.no)?;
                all_slots.remove(&slot.no);
            }
        }
        in_use.sort_by_key(|(seg, _)| *seg);
        free.sort_by_key(|s| std::cmp::Reverse(s.no));
        let spare_wanted = free.is_empty();
        let writer = Writer {
            epoch: checkpoint.epoch,
            next_seq: last.0 + 1,
            appended_seq: last.0,
            applied_seq: base_seq,
            applied_pos,
            pending,
            segment: end_segment,
            offset: end_offset,
            current,
            in_use,
            free,
            all_slots,
            dirty: Vec::new(),
            unwritten: Vec::new(),
            buf: Vec::new(),
        };
        let wal = Wal::new(dir, opts, writer, overlay, unapplied);
        wal.spare_wanted.store(spare_wanted, Ordering::Relaxed);
        Ok(wal)
    }
}
