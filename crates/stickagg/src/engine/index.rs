//! A table's key → slot index.
//!
//! Ingest is bound by memory latency: with millions of keys neither the
//! index nor the slab fits in any cache, and a lookup is a chain of misses
//! (index, then the slab entry to compare the key, then the contributions).
//! The hub breaks the chain by asking for each link several updates ahead
//! (`Engine::prefetch`), which needs two things a general hash map does not
//! give (`hashbrown`, used before, spent 28 % of a 1M-key fill waiting on its
//! buckets):
//!
//! - [`KeyIndex::prefetch`]: the address of a key's bucket from its hash
//!   alone, so that the bucket can be requested first;
//! - [`KeyIndex::probe`]: the slot a key most likely has, from the bucket
//!   alone, so that the slab entry can be requested next without comparing
//!   the key. Each entry holds 32 bits of the key's hash beside the slot; a
//!   false match (one in 2^32 per entry compared) costs one useless prefetch.
//!
//! So this is a plain open-addressing table: 8-byte entries
//! (`hash << 32 | slot`), linear probing from the bucket that the top bits
//! of the spread hash name, at most 3/4 full, deletion by shifting the
//! entries behind back (no tombstones). Growing rehashes from the stored
//! hash bits, without reading a key. At 1M keys it takes 16 MiB (2^21
//! entries), about what `hashbrown` took.

use ahash::RandomState;
use std::sync::LazyLock;

/// One hasher for every index of the process, so that a key's hash does not
/// depend on its table: the hub notes it in a queued update
/// (`peers::update::Memo`) before the update is applied, and a DEFINE
/// queued in between may bind that update to another table.
static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A key's 32-bit hash, as every [`KeyIndex`] of this process uses it.
pub(super) fn hash_key(key: &[u8]) -> u32 {
    let h = HASHER.hash_one(key);
    (h >> 32) as u32 ^ h as u32
}

/// An empty bucket. A real entry never equals it: slots stay below
/// `u32::MAX` (see [`KeyIndex::insert`]).
const EMPTY: u64 = u64::MAX;
/// The first allocation, in buckets.
const MIN_BUCKETS: usize = 16;

pub(super) struct KeyIndex {
    /// `hash << 32 | slot`, or [`EMPTY`]; a power of two long (or empty).
    entries: Vec<u64>,
    /// 64 − log2(buckets): the home bucket is the spread hash's top bits.
    shift: u32,
    len: usize,
}

/// Spreads 32 bits of hash over 64 (Fibonacci hashing's multiplier: odd,
/// so no two inputs meet), so that its top bits are all mixed.
fn spread(h: u32) -> u64 {
    (h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn hash_of(e: u64) -> u32 {
    (e >> 32) as u32
}

fn slot_of(e: u64) -> u32 {
    e as u32
}

impl KeyIndex {
    pub(super) fn new() -> KeyIndex {
        KeyIndex {
            entries: Vec::new(),
            shift: 64,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    fn home(&self, h: u32) -> usize {
        // `shift` is 64 only while empty, where nothing is looked up.
        (spread(h) >> self.shift) as usize
    }

    /// The position of the first entry from `h`'s home bucket that `hit`
    /// accepts, if any before an empty bucket.
    fn position(&self, h: u32, hit: impl Fn(u64) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(h);
        loop {
            let e = self.entries[i];
            if e == EMPTY {
                return None;
            }
            if hit(e) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot holding `key`, whose [`hash_key`] is `h`: `key_at` gives
    /// the key a slot holds.
    pub(super) fn find<'k>(
        &self,
        h: u32,
        key: &[u8],
        key_at: impl Fn(u32) -> &'k [u8],
    ) -> Option<u32> {
        self.position(h, |e| hash_of(e) == h && key_at(slot_of(e)) == key)
            .map(|i| slot_of(self.entries[i]))
    }

    /// The slot that most likely holds the key whose hash is `h`, judged by
    /// the hash alone (reads the index, never a key): for prefetching only.
    pub(super) fn probe(&self, h: u32) -> Option<u32> {
        self.position(h, |e| hash_of(e) == h)
            .map(|i| slot_of(self.entries[i]))
    }

    /// Asks the CPU to fetch the home bucket of hash `h`, without waiting
    /// for it.
    pub(super) fn prefetch(&self, h: u32) {
        if self.len != 0 {
            let i = self.home(h);
            super::table::prefetch_slice(&self.entries[i..i + 1]);
        }
    }

    /// Adds the key whose hash is `h` at `slot`; the key must not be in the
    /// index, and `slot` must be below `u32::MAX` (the slab never holds that
    /// many keys: `max-entries` is a u32 and a table's slots are reused).
    pub(super) fn insert(&mut self, h: u32, slot: u32) {
        debug_assert!(slot != u32::MAX);
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        self.place((h as u64) << 32 | slot as u64);
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mask = self.mask();
        let mut i = self.home(hash_of(e));
        while self.entries[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    fn grow(&mut self) {
        let buckets = (self.entries.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; buckets]);
        self.shift = 64 - buckets.trailing_zeros();
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(e);
        }
    }

    /// Removes `key`, known to be at `slot`.
    pub(super) fn remove(&mut self, key: &[u8], slot: u32) {
        let Some(mut hole) = self.position(hash_key(key), |e| slot_of(e) == slot) else {
            return;
        };
        // Move back every entry of the run behind that the hole would cut
        // off from its home bucket (Knuth's algorithm R), so that lookups
        // can still stop at the first empty bucket.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            let home = self.home(hash_of(e));
            // Whether `home` lies cyclically in (hole, j]: then it stays.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = e;
                hole = j;
            }
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .filter(|&&e| e != EMPTY)
            .map(|&e| slot_of(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Inserts and removes in any order, through several growths: the
        /// index answers like a map, and `probe` names the right slot for
        /// every key present.
        #[test]
        fn answers_like_a_map(ops in prop::collection::vec((any::<bool>(), 0u16..600), 1..3000)) {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut index = KeyIndex::new();
            let mut model: HashMap<Vec<u8>, u32> = HashMap::new();
            for (add, k) in ops {
                let key = k.to_be_bytes().to_vec();
                match (add, model.get(&key).copied()) {
                    (true, None) => {
                        let slot = keys.len() as u32;
                        keys.push(key.clone());
                        index.insert(hash_key(&key), slot);
                        model.insert(key, slot);
                    }
                    (false, Some(slot)) => {
                        index.remove(&key, slot);
                        model.remove(&key);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for k in 0u16..600 {
                let key = k.to_be_bytes();
                let found = index.find(hash_key(&key), &key, |s| &keys[s as usize][..]);
                prop_assert_eq!(found, model.get(&key[..]).copied());
                if let Some(slot) = found {
                    prop_assert_eq!(index.probe(hash_key(&key)), Some(slot));
                }
            }
            let mut slots: Vec<u32> = index.slots().collect();
            slots.sort_unstable();
            let mut want: Vec<u32> = model.values().copied().collect();
            want.sort_unstable();
            prop_assert_eq!(slots, want);
        }
    }
}
