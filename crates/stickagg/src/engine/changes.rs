//! A table's change sequence: every key once, at the sequence number of its
//! latest change, in sequence order (HAProxy's update tree). A peer that has
//! sent up to sequence `c` has exactly the keys after `c` left to send.
//!
//! Kept as an append-only log rather than an ordered map, because a change
//! is the engine's most frequent operation (one per update received) and
//! sequence numbers only grow: a change appends, and the key's previous
//! entry is left in place and skipped later, recognised as stale because
//! the key no longer holds that sequence number (or is gone). The log is
//! compacted once stale entries outnumber live ones, so a change costs O(1)
//! amortised instead of a B-tree removal and insertion (13 % of a profile of
//! the engine alone), and the log holds at most twice the keys, plus a
//! constant.
//!
//! Whether an entry is live is the table's knowledge (its key slab), passed
//! in as `live(seq, slot)`.

/// Below this many entries the log is never compacted: not worth a pass.
const COMPACT_MIN: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Sequence numbers, strictly increasing.
    seqs: Vec<u64>,
    /// The key slot of each entry.
    slots: Vec<u32>,
    /// Entries still live (each key with a sequence number has one).
    live: usize,
}

impl Changes {
    /// Keys in the sequence.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// `slot` changed and took `seq`, greater than every sequence number
    /// before. Its previous entry, if any, must be [`retire`](Self::retire)d.
    pub(super) fn push(&mut self, seq: u64, slot: u32) {
        debug_assert!(self.seqs.last().is_none_or(|&s| s < seq));
        self.seqs.push(seq);
        self.slots.push(slot);
        self.live += 1;
    }

    /// One entry went stale (its key changed again or went away); compacts
    /// the log when stale entries outnumber live ones. Stale entries at the
    /// end go at once, so that the last entry is always live.
    pub(super) fn retire(&mut self, live: impl Fn(u64, u32) -> bool) {
        self.live -= 1;
        while let (Some(&s), Some(&k)) = (self.seqs.last(), self.slots.last()) {
            if live(s, k) {
                break;
            }
            self.seqs.pop();
            self.slots.pop();
        }
        let stale = self.seqs.len() - self.live;
        if stale > self.live && self.seqs.len() >= COMPACT_MIN {
            let mut j = 0;
            for i in 0..self.seqs.len() {
                let (s, k) = (self.seqs[i], self.slots[i]);
                if live(s, k) {
                    self.seqs[j] = s;
                    self.slots[j] = k;
                    j += 1;
                }
            }
            debug_assert_eq!(j, self.live);
            self.seqs.truncate(j);
            self.slots.truncate(j);
            // Give memory back after a mass removal, not at every pass.
            if self.seqs.capacity() > 4 * j.max(COMPACT_MIN) {
                self.seqs.shrink_to(2 * j);
                self.slots.shrink_to(2 * j);
            }
        }
    }

    /// The position of the first entry after sequence number `cursor`.
    pub(super) fn position_after(&self, cursor: u64) -> usize {
        self.seqs.partition_point(|&s| s <= cursor)
    }

    /// The first live entry at or after position `pos`: its position,
    /// sequence number and slot.
    pub(super) fn live_from(
        &self,
        mut pos: usize,
        live: impl Fn(u64, u32) -> bool,
    ) -> Option<(usize, u64, u32)> {
        while pos < self.seqs.len() {
            let (s, k) = (self.seqs[pos], self.slots[pos]);
            if live(s, k) {
                return Some((pos, s, k));
            }
            pos += 1;
        }
        None
    }

    /// The latest sequence number (its entry is live, see
    /// [`retire`](Self::retire)).
    /// The slot changed at position `pos`, live or not (for prefetching).
    pub(super) fn slot_at(&self, pos: usize) -> Option<u32> {
        self.slots.get(pos).copied()
    }

    pub(super) fn last(&self) -> Option<u64> {
        self.seqs.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Against the ordered map it replaces: after any sequence of
        /// changes and removals of keys, walking from any cursor gives the
        /// same entries, and the log never holds more than twice the keys
        /// (plus the compaction threshold).
        #[test]
        fn walks_like_an_ordered_map(
            ops in prop::collection::vec((0u32..3000, any::<bool>()), 1..6000),
            cursors in prop::collection::vec(0u64..7000, 1..8),
        ) {
            let mut log = Changes::default();
            let mut key_seq: Vec<u64> = vec![0; 3000];
            let mut model: BTreeMap<u64, u32> = BTreeMap::new();
            let mut seq = 0;
            for (slot, remove) in ops {
                let old = key_seq[slot as usize];
                if remove && old == 0 {
                    continue;
                }
                if old != 0 {
                    model.remove(&old);
                    key_seq[slot as usize] = 0;
                }
                if !remove {
                    seq += 1;
                    key_seq[slot as usize] = seq;
                    model.insert(seq, slot);
                    log.push(seq, slot);
                }
                if old != 0 {
                    let ks = key_seq.clone();
                    log.retire(|s, k| ks[k as usize] == s);
                }
                prop_assert_eq!(log.len(), model.len());
                prop_assert!(log.seqs.len() <= 2 * model.len() + COMPACT_MIN + 1);
            }
            let live = |s: u64, k: u32| key_seq[k as usize] == s;
            for c in cursors {
                let mut got = Vec::new();
                let mut pos = log.position_after(c);
                while let Some((p, s, k)) = log.live_from(pos, live) {
                    got.push((s, k));
                    pos = p + 1;
                }
                let want: Vec<(u64, u32)> =
                    model.range(c + 1..).map(|(&s, &k)| (s, k)).collect();
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(log.last(), model.last_key_value().map(|(&s, _)| s));
        }
    }
}
