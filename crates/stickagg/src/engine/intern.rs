//! Reference-counted interning of `server_key` strings.
//!
//! A stickiness table holds one server name per (source, key), drawn from a
//! handful of distinct names. Storing a 4-byte id instead of a `Bytes` (32
//! bytes) keeps every contribution a flat array of `u32` words; the count of
//! references makes the memory follow the live contributions, whatever the
//! peers send.

use ahash::RandomState;
use bytes::Bytes;
use std::collections::HashMap;

#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<Bytes, u32, RandomState>,
    /// Slot `id - 1`: the value and its number of references (0 = free).
    slots: Vec<(Bytes, u32)>,
    free: Vec<u32>,
}

impl Interner {
    /// The id (≥ 1) of `v`, taking one reference.
    pub(super) fn acquire(&mut self, v: &Bytes) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            self.slots[id as usize - 1].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize - 1] = (v.clone(), 1);
                id
            }
            None => {
                self.slots.push((v.clone(), 1));
                self.slots.len() as u32
            }
        };
        self.ids.insert(v.clone(), id);
        id
    }

    /// Drops one reference to `id` (0, "no value", is ignored).
    pub(super) fn release(&mut self, id: u32) {
        let Some(slot) = id
            .checked_sub(1)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        if slot.1 == 0 {
            return;
        }
        slot.1 -= 1;
        if slot.1 == 0 {
            let v = std::mem::take(&mut slot.0);
            self.ids.remove(&v);
            self.free.push(id);
        }
    }

    pub(super) fn get(&self, id: u32) -> Option<&Bytes> {
        let slot = self.slots.get(id.checked_sub(1)? as usize)?;
        (slot.1 > 0).then_some(&slot.0)
    }

    /// Number of distinct live values.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_free_and_reuse() {
        let mut d = Interner::default();
        let a = d.acquire(&Bytes::from_static(b"s1"));
        let a2 = d.acquire(&Bytes::from_static(b"s1"));
        let b = d.acquire(&Bytes::from_static(b"s2"));
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(d.len(), 2);
        d.release(a);
        assert_eq!(d.get(a).map(|b| &b[..]), Some(&b"s1"[..]));
        d.release(a);
        assert_eq!(d.get(a), None);
        assert_eq!(d.len(), 1);
        // The freed id is reused; releasing unknown ids is harmless.
        assert_eq!(d.acquire(&Bytes::from_static(b"s3")), a);
        d.release(0);
        d.release(999);
        d.release(b);
        d.release(b);
        assert_eq!(d.len(), 1);
    }
}
