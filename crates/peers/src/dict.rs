//! `server_key` dictionary caches (peers-protocol.md §5.6).
//!
//! Server names (or `ip:port` strings with `srvkey addr`) are sent once per
//! connection and direction, then referenced by slot number 1…128. Both
//! caches live in the session, so a new connection starts empty — HAProxy
//! empties its own when the session ends, and a stale slot would silently
//! map a client to the wrong server.

use bytes::Bytes;
use std::collections::HashMap;

/// Slots per direction; ids on the wire are 1…=128.
pub const DICT_SLOTS: usize = 128;

/// What the peer taught us, indexed by wire id − 1.
#[derive(Debug)]
pub struct RxDict {
    slots: Vec<Option<Bytes>>,
}

impl Default for RxDict {
    fn default() -> Self {
        RxDict {
            slots: vec![None; DICT_SLOTS],
        }
    }
}

impl RxDict {
    /// Stores a define-form value. The caller has checked `1 <= id <= 128`.
    pub fn define(&mut self, id: u64, value: Bytes) {
        self.slots[id as usize - 1] = Some(value);
    }

    /// A reference-form lookup; `None` for an empty slot (HAProxy then leaves
    /// the entry's value unchanged).
    pub fn get(&self, id: u64) -> Option<&Bytes> {
        self.slots.get((id as usize).wrapping_sub(1))?.as_ref()
    }

    pub fn valid_id(id: u64) -> bool {
        (1..=DICT_SLOTS as u64).contains(&id)
    }
}

/// What we taught the peer. Slots are replaced in ring order, as HAProxy's
/// sender does; a value already present is sent by reference.
#[derive(Debug, Default)]
pub struct TxDict {
    slots: Vec<Option<Bytes>>,
    index: HashMap<Bytes, usize>,
    next: usize,
}

impl TxDict {
    /// Returns the wire id (1…128) for `value` and whether it must be sent
    /// in full (define form) because the peer does not have it yet.
    pub fn slot_for(&mut self, value: &Bytes) -> (u64, bool) {
        if let Some(&i) = self.index.get(value) {
            return (i as u64 + 1, false);
        }
        if self.slots.is_empty() {
            self.slots = vec![None; DICT_SLOTS];
        }
        let i = self.next;
        self.next = (self.next + 1) % DICT_SLOTS;
        if let Some(old) = self.slots[i].replace(value.clone()) {
            self.index.remove(&old);
        }
        self.index.insert(value.clone(), i);
        (i as u64 + 1, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_replacement() {
        let mut tx = TxDict::default();
        let a = Bytes::from_static(b"s1");
        assert_eq!(tx.slot_for(&a), (1, true));
        assert_eq!(tx.slot_for(&a), (1, false));
        for i in 0..127 {
            let v = Bytes::from(format!("v{i}"));
            assert_eq!(tx.slot_for(&v), (i + 2, true));
        }
        // The 129th distinct value overwrites slot 1: "s1" must be re-defined.
        assert_eq!(tx.slot_for(&Bytes::from_static(b"new")), (1, true));
        assert_eq!(tx.slot_for(&a), (2, true));
    }

    #[test]
    fn rx_bounds() {
        let mut rx = RxDict::default();
        assert!(!RxDict::valid_id(0) && !RxDict::valid_id(129) && RxDict::valid_id(128));
        assert_eq!(rx.get(0), None);
        assert_eq!(rx.get(500), None);
        rx.define(128, Bytes::from_static(b"x"));
        assert_eq!(rx.get(128).unwrap(), &Bytes::from_static(b"x"));
    }
}
