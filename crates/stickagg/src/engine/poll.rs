//! What each peer is sent: its cursors walk the tables' change sequences
//! (see the module docs of `engine`), and each change is computed once for
//! all peers.
//!
//! A key's aggregate is computed as of the instant it took its sequence
//! number (`KeyEntry::published`), whoever polls it and whenever: the first
//! poll computes it, the others reuse it, rates re-based by the time since
//! (like a forwarded table's contributions). So every peer gets the very
//! counter the rate republish deadline was planned for, and with N peers a
//! change costs one aggregation instead of N.
//!
//! The computed values are kept per table by sequence number only while
//! another connected peer receiving the table still has to reach that
//! sequence, and dropped when the key changes again or every such peer went
//! past it: in steady state that is the few keys between the fastest and the
//! slowest peer. [`COMPUTED_MAX`] bounds it when a peer stalls (the others
//! then compute on their own, as before).

use super::table::{rebase, since, Computed};
use super::{Engine, OutUpdate, PeerId};
use peers::{Key, Values};

/// Aggregates kept per table for peers that have not polled them yet. At
/// roughly 150 bytes each for a two-column table (the values, the map
/// entry), 64k entries bound it to about 10 MB per table.
pub(super) const COMPUTED_MAX: usize = 1 << 16;

/// Per table, the lowest cursor among the connected peers receiving it, the
/// peer at it, and the second lowest: what `poll_updates` needs to know
/// whether another peer will want the aggregate it computes.
///
/// Finding them is a pass over every peer. Made at every poll, that pass
/// was 4–6 % of the hub's time with 1000 peers (each polled in every
/// round), so it is made once per round: per `now`, and again when the
/// peers or what they receive change (the outputs generation) or a cursor
/// is reset. Within a round cursors only move forward (and a peer that
/// left still counts until the next round), so a value found earlier in
/// the round is a lower bound of the true one: at worst an aggregate is
/// kept one round longer than needed, never dropped while needed. (And
/// dropping one would only make the next peer compute it again, as when
/// [`COMPUTED_MAX`] is reached.)
#[derive(Debug, Default)]
pub(super) struct LowCursors {
    /// `(now, outputs generation)` they were found at.
    at: Option<(u64, u64)>,
    tables: Vec<Option<(u64, PeerId, Option<u64>)>>,
}

impl LowCursors {
    /// The lowest cursor on `table` among the peers receiving it other than
    /// `peer`.
    fn others(&self, table: usize, peer: PeerId) -> Option<u64> {
        let (lo, who, second) = self.tables.get(table).copied().flatten()?;
        if who == peer {
            second
        } else {
            Some(lo)
        }
    }
}

/// How far ahead in the change sequence a poll requests a key's slab entry,
/// then its contributions (see `Table::prefetch_change`).
const POLL_PREFETCH: (usize, usize) = (16, 8);

impl Engine {
    /// Coalesced pending changes for this peer, at most `max`, oldest first
    /// across its tables (expiries and republishes due at `now` are applied
    /// first). Each value is the key's aggregate as of its latest change,
    /// rates re-based to `now`.
    pub fn poll_updates(&mut self, peer: PeerId, max: usize, now: u64) -> Vec<OutUpdate> {
        self.tick_some(now, super::POLL_TICK_BUDGET);
        let mut out = Vec::new();
        let Some(sends) = self.peers.get(&peer).map(|p| p.sends.clone()) else {
            return out;
        };
        // For each table: the lowest cursor of the other connected peers
        // receiving it (what they still need), None if there are none.
        self.refresh_low_cursors(now);
        let others: Vec<Option<u64>> = sends
            .iter()
            .map(|&t| self.low.others(t as usize, peer))
            .collect();
        let Some(p) = self.peers.get_mut(&peer) else {
            return out;
        };
        let (tables, dict) = (&mut self.tables, &self.dict);
        // Merge the peer's tables by sequence number (a handful of tables:
        // a linear minimum is cheaper than a heap). (seq, slot, table, index
        // in `sends`, position in the table's change sequence).
        let mut next: Vec<(u64, u32, usize, usize, usize)> = Vec::new();
        for (j, &t) in sends.iter().enumerate() {
            let t = t as usize;
            if let Some((pos, s, slot)) = tables[t].change_after(p.cursor(t)) {
                next.push((s, slot, t, j, pos));
            }
        }
        while out.len() < max {
            let Some(i) = (0..next.len()).min_by_key(|&i| next[i].0) else {
                break;
            };
            let (s, slot, t, j, pos) = next[i];
            let table = &mut tables[t];
            table.prefetch_change(pos + POLL_PREFETCH.0, false);
            table.prefetch_change(pos + POLL_PREFETCH.1, true);
            let live = table.entry(slot).filter(|e| e.has_live(now));
            if let Some(e) = live.filter(|e| !table.no_choice_for_contributor(e, peer as u32, now))
            {
                let (key, published) = (Key::from_slice(&e.key), e.published);
                let (mut values, expire) = match table.computed.get(&s) {
                    Some(c) => (c.values.clone(), c.expire),
                    None => {
                        let mut values = Values::new();
                        let expire = table.aggregate(e, published, dict, &mut values);
                        let wanted = others[j].is_some_and(|o| o < s);
                        if wanted && table.computed.len() < COMPUTED_MAX {
                            let c = Computed {
                                values: values.clone(),
                                expire,
                            };
                            table.computed.insert(s, c);
                        }
                        (values, expire)
                    }
                };
                let expire = rebase(&mut values, expire, since(now, published));
                out.push(OutUpdate {
                    table: table.id,
                    key,
                    values,
                    expire,
                });
                table.updates_out += 1;
            }
            p.set_cursor(t, s);
            match table.change_from(pos + 1) {
                Some((pos, s, slot)) => next[i] = (s, slot, t, j, pos),
                None => {
                    next.swap_remove(i);
                }
            }
        }
        // Nobody needs what every receiving peer went past.
        for (j, &t) in sends.iter().enumerate() {
            let t = t as usize;
            let done = others[j].map_or(p.cursor(t), |o| o.min(p.cursor(t)));
            let computed = &mut tables[t].computed;
            while let Some(entry) = computed.first_entry() {
                if *entry.key() > done {
                    break;
                }
                entry.remove();
            }
        }
        out
    }

    /// The peer asked for a full resync: everything currently published is
    /// sent again, after the announcements again.
    pub fn resend_all(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.cursors.clear();
            p.announced = 0;
        }
        // A cursor moved back: the lowest ones must be found again.
        self.low.at = None;
    }

    /// Finds every table's lowest cursors unless already found at this
    /// `now` with the same peers receiving the same tables.
    fn refresh_low_cursors(&mut self, now: u64) {
        let at = (now, self.outputs_gen);
        if self.low.at == Some(at) {
            return;
        }
        self.low.at = Some(at);
        let tables = &mut self.low.tables;
        tables.clear();
        tables.resize(self.tables.len(), None);
        for (id, q) in self.peers.iter().filter(|(_, q)| q.connected) {
            for &t in &q.sends {
                let c = q.cursor(t as usize);
                let low = &mut tables[t as usize];
                *low = Some(match *low {
                    None => (c, id, None),
                    Some((lo, _, _)) if c < lo => (c, id, Some(lo)),
                    Some((lo, who, second)) => (lo, who, Some(second.map_or(c, |s| s.min(c)))),
                });
            }
        }
    }

    /// Whether [`poll_updates`](Self::poll_updates) would return something
    /// now, not counting expiries and republishes not yet ticked.
    pub fn has_pending(&self, peer: PeerId) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        p.sends.iter().any(|&t| {
            let t = t as usize;
            self.tables[t]
                .last_change()
                .is_some_and(|s| s > p.cursor(t))
        })
    }
}
