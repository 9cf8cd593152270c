//! The keys' timers: each key with a deadline (its next expiry or rate
//! republish, `KeyEntry::wake`) has an entry `(deadline, table, slot)` here.
//!
//! A B-tree of those entries was 9 % of stickagg's time end to end: about
//! one update in ten brings its key's deadline closer (a rate's drift point
//! moves), and each such update removed and inserted an entry among a
//! million, a chain of cache misses. This is a hierarchical timing wheel,
//! the structure of tokio's and the Linux kernel's timers:
//!
//! - 7 levels of 64 slots; a slot of level `l` spans 64^l ms, so level 0
//!   has one slot per millisecond and level 6 spans 2^42 ms (139 years).
//!   An entry goes to the level of the highest bit in which its
//!   deadline differs from the wheel's time (`elapsed`), so a lower level
//!   always holds earlier deadlines than a higher one. Insertion is a push
//!   onto the slot's list.
//! - When the earliest occupied slot comes due, a level-0 slot's entries are
//!   handed out (they share one deadline) and a higher slot's are placed
//!   again, closer (each entry moves down at most 6 times).
//! - There is no removal: when a key's deadline moves or the key goes, the
//!   engine only says so ([`Timers::forget`]); the old entry stays and, when
//!   it comes due, the engine sees that the key's `wake` no longer names it
//!   and skips it. Stale entries are counted, and once they are more than
//!   the live ones the engine sweeps them ([`Timers::retain`]), so memory
//!   stays within about twice the live timers. A key can be back at a
//!   deadline it left (woken early by a republish, then asleep until the
//!   same expiry): its old entry is then identical to the new one, so a
//!   sweep keeps one entry per key (`Table::claim_timer`), not every entry
//!   naming the key's deadline.
//!
//! [`Timers::next_deadline`] is exact at level 0 and the start of the slot
//! above that: the hub may wake early, once per slot placed again.

/// `(deadline in ms, table index, slot)`.
pub(super) type Timer = (u64, u32, u32);

const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const LEVELS: usize = 7;
/// The span of the top level: deadlines past the one `elapsed` is in wait
/// in `far`.
const RANGE: u64 = 1 << (BITS * LEVELS as u32);
/// A slot's list keeps its allocation after it is emptied (the wheel turns
/// back to it) unless it grew past this, after a burst.
const KEEP_CAPACITY: usize = 4096;
/// A sweep leaves a list this much room beyond twice its entries.
const SHRINK_SLACK: usize = 64;
/// No sweep for fewer stale entries than this: not worth a pass.
const SWEEP_MIN: usize = 1024;

struct Level {
    /// Bit `i` set: `slots[i]` is not empty.
    occupied: u64,
    slots: [Vec<Timer>; SLOTS],
}

pub(super) struct Timers {
    /// Every entry placed before `elapsed` has been handed out; slots are
    /// relative to it. Only moves to the start of a slot that came due.
    elapsed: u64,
    levels: Vec<Level>,
    /// The level-0 slot that came due last, handed out one by one.
    ready: Vec<Timer>,
    /// Entries beyond the top level's span (the hub's clock counts from
    /// its start: 139 years of uptime).
    far: Vec<Timer>,
    /// Entries held, stale ones included.
    len: usize,
    /// Entries [`forget`](Timers::forget)-ten and not yet popped or swept.
    stale: usize,
}

impl Timers {
    pub(super) fn new() -> Timers {
        Timers {
            elapsed: 0,
            levels: (0..LEVELS)
                .map(|_| Level {
                    occupied: 0,
                    slots: std::array::from_fn(|_| Vec::new()),
                })
                .collect(),
            ready: Vec::new(),
            far: Vec::new(),
            len: 0,
            stale: 0,
        }
    }

    /// Live entries (held minus known stale).
    pub(super) fn len(&self) -> usize {
        self.len.saturating_sub(self.stale)
    }

    pub(super) fn held(&self) -> usize {
        self.len
    }

    /// Entries the slots' lists have room for (not counting `ready`).
    #[cfg(test)]
    fn retained(&self) -> usize {
        self.levels
            .iter()
            .flat_map(|l| l.slots.iter())
            .map(Vec::capacity)
            .sum()
    }

    pub(super) fn insert(&mut self, t: Timer) {
        self.place(t);
        self.len += 1;
    }

    /// One entry held became stale (its key's deadline moved, or the key
    /// went): counted for [`needs_sweep`](Timers::needs_sweep).
    pub(super) fn forget(&mut self) {
        self.stale += 1;
    }

    /// A popped entry was stale.
    pub(super) fn popped_stale(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// Whether stale entries outnumber the live ones (and are enough to be
    /// worth a pass).
    pub(super) fn needs_sweep(&self) -> bool {
        self.stale >= SWEEP_MIN && self.stale * 2 > self.len
    }

    /// Keeps only the entries `live` accepts; the stale count starts over,
    /// and lists left mostly empty give their room back: a slot far ahead
    /// (an expiry an hour away) is not handed out for that long, and would
    /// otherwise keep the room its stale entries took until then.
    pub(super) fn retain(&mut self, mut live: impl FnMut(Timer) -> bool) {
        fn sweep(list: &mut Vec<Timer>, live: &mut impl FnMut(Timer) -> bool) {
            list.retain(|&t| live(t));
            if list.capacity() > 2 * list.len() + SHRINK_SLACK {
                list.shrink_to(list.len() + list.len() / 4);
            }
        }
        sweep(&mut self.ready, &mut live);
        sweep(&mut self.far, &mut live);
        let mut len = self.ready.len() + self.far.len();
        for level in &mut self.levels {
            for (i, slot) in level.slots.iter_mut().enumerate() {
                sweep(slot, &mut live);
                if slot.is_empty() {
                    level.occupied &= !(1 << i);
                }
                len += slot.len();
            }
        }
        self.len = len;
        self.stale = 0;
    }

    /// Every entry held, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Timer> + '_ {
        let slots = self.levels.iter().flat_map(|l| l.slots.iter());
        self.ready
            .iter()
            .chain(&self.far)
            .chain(slots.flatten())
            .copied()
    }

    /// An entry due at or before `now`, if any: in deadline order, except
    /// that entries of one millisecond come in any order.
    pub(super) fn pop(&mut self, now: u64) -> Option<Timer> {
        loop {
            if let Some(t) = self.ready.pop() {
                self.len -= 1;
                return Some(t);
            }
            let Some((l, s, start)) = self.next_slot() else {
                // The wheel is empty: on to the span of the earliest far
                // entry, if it is due.
                let first = self.far.iter().map(|t| t.0).min()?;
                if first > now {
                    return None;
                }
                self.elapsed = first & !(RANGE - 1);
                for t in std::mem::take(&mut self.far) {
                    self.place(t);
                }
                continue;
            };
            if start > now {
                return None;
            }
            self.elapsed = start;
            let level = &mut self.levels[l];
            level.occupied &= !(1 << s);
            let mut taken = std::mem::take(&mut level.slots[s]);
            if l == 0 {
                // `ready` is empty: swap, and the slot keeps an allocation.
                std::mem::swap(&mut self.ready, &mut taken);
            } else {
                for t in taken.drain(..) {
                    self.place(t);
                }
            }
            // Placing again only reaches lower levels, so the slot is still
            // empty here.
            let slot = &mut self.levels[l].slots[s];
            if slot.is_empty() && taken.capacity() <= KEEP_CAPACITY {
                *slot = taken;
            }
        }
    }

    /// The entry `n` places after the next one [`pop`](Timers::pop) hands
    /// out from the millisecond slot being handed out, if it has that many:
    /// for prefetching what it will touch.
    pub(super) fn ready_ahead(&self, n: usize) -> Option<Timer> {
        let len = self.ready.len();
        len.checked_sub(n + 1).map(|i| self.ready[i])
    }

    /// When [`pop`](Timers::pop) may next hand something out: the deadline
    /// itself for the next millisecond slot, a lower bound above.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        if !self.ready.is_empty() {
            return Some(self.elapsed);
        }
        match self.next_slot() {
            Some((_, _, start)) => Some(start),
            None => self.far.iter().map(|t| t.0).min(),
        }
    }

    fn place(&mut self, t: Timer) {
        // A deadline in the past is due at once.
        let at = t.0.max(self.elapsed);
        if at > self.elapsed | (RANGE - 1) {
            self.far.push(t);
            return;
        }
        let differ = (at ^ self.elapsed) | (SLOTS as u64 - 1);
        let l = ((63 - differ.leading_zeros()) / BITS) as usize;
        let s = ((at >> (BITS * l as u32)) & (SLOTS as u64 - 1)) as usize;
        let level = &mut self.levels[l];
        level.slots[s].push(t);
        level.occupied |= 1 << s;
    }

    /// The earliest occupied slot: (level, slot, start). The lowest
    /// occupied level holds the earliest deadlines, and in a level no slot
    /// before the wheel's own position is occupied (see `place`).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let (l, level) = self
            .levels
            .iter()
            .enumerate()
            .find(|(_, level)| level.occupied != 0)?;
        let s = level.occupied.trailing_zeros() as u64;
        let width = BITS * l as u32;
        let span = 1u64 << (width + BITS);
        let start = (self.elapsed & !(span - 1)) + (s << width);
        Some((l, s as usize, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn hands_out_in_deadline_order_across_levels() {
        let mut w = Timers::new();
        let ats = [
            0,
            1,
            63,
            64,
            65,
            4_095,
            4_096,
            300_000,
            1 << 40,
            u64::MAX - 1,
        ];
        for (i, &at) in ats.iter().enumerate().rev() {
            w.insert((at, 0, i as u32));
        }
        assert_eq!(w.len(), ats.len());
        let mut got = Vec::new();
        while let Some(t) = w.pop(u64::MAX - 1) {
            got.push(t.0);
        }
        assert_eq!(got, ats);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_past_deadline_is_due_at_once() {
        let mut w = Timers::new();
        w.insert((1_000, 0, 1));
        assert_eq!(w.pop(1_000), Some((1_000, 0, 1)));
        w.insert((10, 0, 2));
        assert_eq!(w.next_deadline(), Some(1_000));
        assert_eq!(w.pop(1_000), Some((10, 0, 2)));
    }

    #[test]
    fn ready_ahead_names_what_pop_hands_out_next() {
        let mut w = Timers::new();
        for slot in 0..4 {
            w.insert((70, 0, slot));
        }
        w.pop(70).unwrap();
        let ahead: Vec<_> = (0..4).map(|n| w.ready_ahead(n)).collect();
        let popped: Vec<_> = std::iter::from_fn(|| w.pop(70)).map(Some).collect();
        assert_eq!(ahead[..3], popped[..]);
        assert_eq!(ahead[3], None);
    }

    /// Entries far ahead, all gone stale: a sweep gives their room back.
    #[test]
    fn a_sweep_gives_room_back() {
        let mut w = Timers::new();
        for i in 0..100_000u32 {
            w.insert((3_600_000 + (i % 1_000) as u64, 0, i));
            w.forget();
        }
        assert!(w.retained() >= 100_000);
        w.retain(|_| false);
        assert_eq!(w.held(), 0);
        assert!(
            w.retained() <= LEVELS * SLOTS * SHRINK_SLACK,
            "{}",
            w.retained()
        );
    }

    proptest! {
        /// Inserts, forgets and pops at rising instants, against a B-tree:
        /// every pop hands out exactly the entries due, in deadline order,
        /// and the next deadline never passes the earliest entry.
        #[test]
        fn hands_out_what_a_btree_would(
            ops in prop::collection::vec((0u8..4, 0u64..300_000, 0u32..50), 1..400),
        ) {
            let mut w = Timers::new();
            let mut model: BTreeSet<Timer> = BTreeSet::new();
            let mut now = 0u64;
            for (n, (op, d, slot)) in ops.into_iter().enumerate() {
                // Up to 8 hours ahead; some in the past.
                let past = if slot % 7 == 0 { 500 } else { 0 };
                let at = (now + d * d / 3_000).saturating_sub(past);
                let t = (at, 0, n as u32 * 100 + slot);
                match op {
                    0 | 1 => {
                        w.insert(t);
                        model.insert(t);
                    }
                    2 => {
                        // A few entries forgotten: the engine's check says
                        // they are stale, and a sweep drops them.
                        let gone: Vec<Timer> =
                            model.iter().copied().filter(|t| t.2 % 50 == slot).collect();
                        for t in &gone {
                            model.remove(t);
                            w.forget();
                        }
                        w.retain(|t| model.contains(&t));
                        prop_assert_eq!(w.len(), model.len());
                    }
                    _ => {
                        let before = now;
                        now += d;
                        let mut got = Vec::new();
                        while let Some(t) = w.pop(now) {
                            got.push(t);
                        }
                        let mut want = Vec::new();
                        while model.first().is_some_and(|t| t.0 <= now) {
                            want.push(model.pop_first().unwrap());
                        }
                        // In deadline order, past ones aside (due at once).
                        let ahead: Vec<u64> =
                            got.iter().map(|t| t.0).filter(|&at| at > before).collect();
                        prop_assert!(ahead.windows(2).all(|p| p[0] <= p[1]), "{:?}", got);
                        got.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                }
                if let (Some(d), Some(first)) = (w.next_deadline(), model.first()) {
                    prop_assert!(d <= first.0.max(now));
                }
                prop_assert_eq!(w.next_deadline().is_some(), !model.is_empty());
            }
        }
    }
}
