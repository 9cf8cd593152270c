//! How one element combines across the contributions to a key (semantics.md
//! "How values combine"), and which contributions count when sources are
//! grouped.

use super::intern::Interner;
use super::table::{freq_at, group_of, is_latest, pick_latest, u64_at, Groups, Head, Slot};
use peers::freq::{self, Window};
use peers::{Combine, Storage, Value};

/// The contributions that count for a sum: every source without a group,
/// and for each group the member reporting the largest value of this element
/// (for a rate: the largest sliding-window total at `now`; the first such
/// member on a tie). A group is a set of replicas that see the same load
/// balancers (semantics.md), so adding its members would count them twice.
pub(super) fn representatives<'a>(
    s: &Slot,
    live: &[(&'a Head, &'a [u32])],
    now: u64,
    groups: Groups,
) -> Vec<(&'a Head, &'a [u32])> {
    let score = |(h, w): &(&Head, &[u32])| -> u128 {
        match s.storage {
            Storage::FreqCtr => freq_at(w).window_after(h.age(now) as i64, s.period).total,
            Storage::UnsignedInt => w[0] as u128,
            Storage::UnsignedLong => u64_at(w) as u128,
            Storage::SignedInt => (w[0] as i32 as i64 - i32::MIN as i64) as u128,
            Storage::Dict => 0,
        }
    };
    let scores: Vec<u128> = live.iter().map(score).collect();
    let group: Vec<u32> = live
        .iter()
        .map(|(h, _)| group_of(groups, h.source))
        .collect();
    let beaten = |i: usize| {
        let g = group[i];
        (0..live.len()).any(|j| {
            j != i && group[j] == g && (scores[j] > scores[i] || (scores[j] == scores[i] && j < i))
        })
    };
    (0..live.len())
        .filter(|&i| group[i] == 0 || !beaten(i))
        .map(|i| live[i])
        .collect()
}

/// Combines one element across the live contributions, per data type
/// (semantics.md "How values combine"); `col.ty.combine` decides.
pub(super) fn combine<'a>(
    s: &Slot,
    it: impl Iterator<Item = (&'a Head, &'a [u32])>,
    now: u64,
    dict: &Interner,
) -> Value {
    // The latest write among the sources holding a value (see
    // `pick_latest`); none: no value.
    if is_latest(s.storage, s.combine) {
        let w = pick_latest(s, it).map_or(&[0u32, 0][..], |x| x.1);
        return match s.storage {
            Storage::Dict => Value::Dict(dict.get(w[0]).cloned().map(Box::new)),
            Storage::SignedInt => Value::ServerId(w[0] as i32),
            Storage::UnsignedLong => Value::U64(u64_at(w)),
            _ => Value::U32(w[0]),
        };
    }
    match (s.storage, s.combine) {
        // Rates are never added field by field (periods are not aligned
        // across nodes): sum the sliding windows at `now`, re-encode once.
        (Storage::FreqCtr, _) => {
            let mut win = Window::default();
            for (h, w) in it {
                win += freq_at(w).window_after(h.age(now) as i64, s.period);
            }
            Value::Freq(freq::encode(win, s.period))
        }
        (Storage::SignedInt, Combine::Max) => {
            Value::ServerId(it.map(|(_, w)| w[0] as i32).max().unwrap_or(0))
        }
        // Unreachable: every `server_key` is a `Latest` element.
        (Storage::Dict, _) => Value::Dict(None),
        (Storage::SignedInt, _) => {
            Value::ServerId(it.fold(0i32, |a, (_, w)| a.saturating_add(w[0] as i32)))
        }
        (Storage::UnsignedInt, Combine::Max) => {
            Value::U32(it.map(|(_, w)| w[0]).max().unwrap_or(0))
        }
        // Sum32: HAProxy would truncate a larger value mod 2^32.
        (Storage::UnsignedInt, _) => Value::U32(it.fold(0u32, |a, (_, w)| a.saturating_add(w[0]))),
        (Storage::UnsignedLong, Combine::Max) => {
            Value::U64(it.map(|(_, w)| u64_at(w)).max().unwrap_or(0))
        }
        (Storage::UnsignedLong, _) => {
            Value::U64(it.fold(0u64, |a, (_, w)| a.saturating_add(u64_at(w))))
        }
    }
}
