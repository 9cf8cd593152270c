//! A table's key → slot index.
//!
//! Each entry is 8 bytes: the slot and 32 bits of the key's hash. The hash
//! bits serve two purposes:
//!
//! - Growing the index rehashes from them alone, without reading the keys.
//! - A probe can name the slot a key most likely has without comparing
//!   the key, which lives in the slab entry. Ingest is bound by memory latency,
//!   and the slab entry is a cache miss of its own (millions of keys fit in no
//!   cache). [`KeyIndex::probe`] lets the hub ask for that entry several
//!   updates ahead, as a hint, so it no longer waits on it in turn. A false
//!   match (one in 2^32 per entry compared) costs one useless prefetch.
//!
//! `hashbrown` places and tags entries from a 64-bit hash. Ours is the 32
//! stored bits, spread over 64 by an odd multiplier: its low bits choose
//! the bucket and its top 7 bits are the tag. Both depend on the stored bits
//! only, so the rehash finds the same buckets and tags as the insert did.
//! 32 bits tell 2^32 buckets apart, far more than `max-entries` allows.

use ahash::RandomState;
use hashbrown::HashTable;

pub(super) struct KeyIndex {
    /// `hash << 32 | slot`.
    entries: HashTable<u64>,
    hasher: RandomState,
}

/// Spreads 32 bits of hash over the 64 `hashbrown` looks at (Fibonacci
/// hashing's multiplier: odd, so no two inputs meet).
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
            entries: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn hash(&self, key: &[u8]) -> u32 {
        let h = self.hasher.hash_one(key);
        (h >> 32) as u32 ^ h as u32
    }

    /// The slot holding `key`: `key_at` gives the key a slot holds.
    pub(super) fn find<'k>(&self, key: &[u8], key_at: impl Fn(u32) -> &'k [u8]) -> Option<u32> {
        let h = self.hash(key);
        self.entries
            .find(spread(h), |&e| hash_of(e) == h && key_at(slot_of(e)) == key)
            .map(|&e| slot_of(e))
    }

    /// The slot that most likely holds `key`, judged by the hash alone
    /// (reads the index, never a key): for prefetching only.
    pub(super) fn probe(&self, key: &[u8]) -> Option<u32> {
        let h = self.hash(key);
        self.entries
            .find(spread(h), |&e| hash_of(e) == h)
            .map(|&e| slot_of(e))
    }

    /// Adds `key` at `slot`; the key must not be in the index.
    pub(super) fn insert(&mut self, key: &[u8], slot: u32) {
        let h = self.hash(key);
        self.entries
            .insert_unique(spread(h), (h as u64) << 32 | slot as u64, |&e| {
                spread(hash_of(e))
            });
    }

    /// Removes `key`, known to be at `slot`.
    pub(super) fn remove(&mut self, key: &[u8], slot: u32) {
        if let Ok(found) = self
            .entries
            .find_entry(spread(self.hash(key)), |&e| slot_of(e) == slot)
        {
            found.remove();
        }
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|&e| slot_of(e))
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
                        index.insert(&key, slot);
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
                let found = index.find(&key, |s| &keys[s as usize][..]);
                prop_assert_eq!(found, model.get(&key[..]).copied());
                if let Some(slot) = found {
                    prop_assert_eq!(index.probe(&key), Some(slot));
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
