//! When a published rate must be published again.
//!
//! A rate aggregate is pushed as one counter, `freq::encode` of the sum of
//! the sources' sliding windows at the instant of publication. From then on
//! a node reads that counter decaying on its own, while the true sum decays
//! like the sources' counters. Both are continuous and piecewise linear in
//! time (window totals, in events × ms): a counter's slope only changes at
//! its own period boundaries (elapsed P, where `curr` starts leaving the
//! window instead of `prev`, and 2P, where it is empty). So their difference,
//! the *drift*, is linear between the union of those breakpoints, and the
//! first instant it reaches one event is found exactly by walking them in
//! order. Republishing just before that instant, and only then, keeps every
//! node's reading within one event of the sum (plus encode's own rounding,
//! see [`republish_in`]) with as few pushes as that allows: a flat or
//! steadily decaying sum whose encoding decays the same way is not pushed
//! again until a boundary makes the two part.
//!
//! Nothing is stored for this but the instant of publication (which the
//! peers' values are computed at anyway): the published counter is
//! recomputed from the same sources when needed. Any change of the sources
//! (update, expiry, stale drop) publishes the key again and plans anew. The
//! walk is only done for keys that reach a boundary unchanged (see
//! [`Reach`]): under load most keys change before that.

use peers::freq::{self, FreqCtr, Window};

/// How far the walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// At publication, for every change of the key: only as far as the
    /// first boundary of any counter (O(sources), no allocation), where
    /// nothing has drifted yet unless something was saturated. Most keys
    /// under load change again before that; the others look again there.
    FirstBoundary,
    /// When that instant comes and the key has not changed: all the way.
    All,
}

/// How many ms from now the rate summed from `sources` must be published
/// again (0: now), or `None` if never (the sum is 0 and so is what the node
/// reads); with [`Reach::FirstBoundary`], at most when to look again (≥ 1).
///
/// `sources`: each counter as received and its age (ms) at the last
/// publication, which was `age` ms ago and sent `freq::encode` of their
/// windows summed then, exactly as the aggregate computes it.
///
/// The republish is due at the earliest of:
///
/// - one ms before the first instant where the published counter's window
///   and the sum differ by `T` events × ms or more, `T = P × (1 + ⌊S / 2P⌋)`
///   with `S` the summed slope at publication: one event, plus the
///   whole events of encode's ms rounding of `elapsed` (up to S/2 events ×
///   ms, present from the start; a threshold below it would republish at
///   once, forever). Both readings floor a value less than `T / P` apart,
///   so they differ by at most `T / P` events;
/// - the instant the sum reaches 0, if the published counter is not 0 by
///   then: the final zero push. When both reach 0 together (the common case
///   once the last republish matched value and slope) none is needed: a
///   window never grows again without a new event, so the node reads 0 from
///   then on like the sum.
pub(super) fn republish_in(
    sources: &[(FreqCtr, i64)],
    age: i64,
    period: u32,
    reach: Reach,
) -> Option<u64> {
    republish_walk(sources, age, period, reach, FIRST_CHUNK)
}

/// [`republish_in`] at publication (`age` 0) with [`Reach::FirstBoundary`],
/// for the common case, from the sources' fields alone: the first boundary
/// of a source with a non-empty window. `None` when the case is not covered
/// (then the walk decides).
///
/// Every change of every key with a rate plans this, so it is worth not
/// summing windows and encoding. It gives what the walk gives when every
/// source's period started at or before publication (`d ≥ 0` below) and
/// the fields together stay within u32 (so nothing saturates):
///
/// - Encode matches the summed slope `s` exactly (`prev = s`) and the sum
///   to within s/2 events × ms, below the threshold: the drift stays
///   constant, below one event, until some counter's boundary.
/// - The published counter's first boundary is not before the sources'.
///   Each live source with a slope contributes `sᵢ × rᵢ` to the sum, `rᵢ`
///   (≤ P) being the ms to its first boundary, and the rest of the sum is
///   whole periods: `W = Σ sᵢ rᵢ + K × P`. Encode picks `c ≤ K` whole
///   periods, so its own first boundary, `(W − c × P) / s`, is at least
///   `Σ sᵢ rᵢ / s`, a weighted mean of the `rᵢ` (rounding `e` to the ms
///   cannot take an integer bound below another). Flat sources (no slope)
///   meet their boundary with the published counter's at the latest.
pub(super) fn first_boundary(
    sources: impl IntoIterator<Item = (FreqCtr, i64)>,
    period: u32,
) -> Option<Option<u64>> {
    let p = period as i64;
    let mut fields = 0u64;
    let mut first = None::<i64>;
    for (f, since) in sources {
        let d = f.elapsed_signed().saturating_add(since);
        if d < 0 {
            return None;
        }
        fields += f.curr as u64 + f.prev as u64;
        // The window `d` ms into the period (looking ahead at a boundary,
        // as `window_after` does) and the boundary that ends its slope.
        let next = if d < p {
            (f.curr != 0 || f.prev != 0).then_some(p - d)
        } else if d < 2 * p {
            (f.curr != 0).then_some(2 * p - d)
        } else {
            None
        };
        if let Some(b) = next {
            first = Some(first.map_or(b, |m| m.min(b)));
        }
    }
    if fields > u32::MAX as u64 {
        return None;
    }
    Some(first.map(|b| b as u64))
}

/// The boundaries a walk first takes in order (see [`InOrder`]).
const FIRST_CHUNK: usize = 16;

/// A walk's boundaries, (ms after publication, counter), put in order only
/// as far as the walk reads them. A walk usually ends within its first few
/// boundaries (the drift reaches one event, or the sum ends), and a key
/// with 1000 sources has 2000 of them: sorting them all was a tenth of
/// stickagg's time in the 1000-peer benchmark. Each extension selects the
/// next smallest chunk and sorts only it; chunks double, so a walk that
/// goes all the way costs about one sort.
struct InOrder {
    events: Vec<(i64, usize)>,
    /// `events[..sorted]` are the smallest, in order.
    sorted: usize,
    chunk: usize,
}

impl InOrder {
    fn new(events: Vec<(i64, usize)>, first_chunk: usize) -> InOrder {
        InOrder {
            events,
            sorted: 0,
            chunk: first_chunk.max(1),
        }
    }

    /// The `k`-th boundary in order; `k` may only grow by one between calls.
    fn get(&mut self, k: usize) -> Option<(i64, usize)> {
        if k >= self.events.len() {
            return None;
        }
        if k >= self.sorted {
            let rest = &mut self.events[self.sorted..];
            let c = self.chunk.min(rest.len());
            if c < rest.len() {
                rest.select_nth_unstable(c - 1);
            }
            rest[..c].sort_unstable();
            self.sorted += c;
            self.chunk = self.chunk.saturating_mul(2);
        }
        Some(self.events[k])
    }
}

/// [`republish_in`], the walk sorting `first_chunk` boundaries first (see
/// [`InOrder`]).
fn republish_walk(
    sources: &[(FreqCtr, i64)],
    age: i64,
    period: u32,
    reach: Reach,
    first_chunk: usize,
) -> Option<u64> {
    if period == 0 {
        return None;
    }
    let p = period as i64;
    let window = |f: &FreqCtr, at: i64| f.window_after(at, period);
    // The two boundaries (elapsed P and 2P) of a counter `d` ms into its
    // period, in ms after publication.
    let boundaries = |d: i64| [p, 2 * p].map(|b| b.saturating_sub(d));
    let mut then = Window::default();
    for (f, since) in sources {
        then += window(f, *since);
    }
    if then.total == 0 {
        return None;
    }
    let enc = freq::encode(then, period);
    // Times are ms after publication from here on. The counters followed:
    // the sources, then the published one (index `n`), each with its age
    // at publication.
    let n = sources.len();
    let at = |i: usize| if i < n { sources[i] } else { (enc, 0) };
    let mut threshold = p as i128 * (1 + (then.slope / (2 * period as u64)) as i128);
    let published = window(&enc, 0);
    let drift0 = published.total as i128 - then.total as i128;
    if drift0.abs() >= threshold {
        // Only with fields saturated at u32::MAX (encode cannot represent
        // the sum): republishing would not do better, allow one more event.
        threshold = drift0.abs() + p as i128;
    }

    // Where the walk starts: now. Drift D = published − sum, its slope per
    // ms, and the sum itself (events × ms; i128: totals are below 2^67 per
    // counter).
    let x0 = age.max(0);
    // At publication itself (every change of a key plans from there) these
    // are the windows summed above: not computed again.
    let (mut total, mut slope_sum, now_pub) = if x0 == 0 {
        (then.total as i128, then.slope as i128, published)
    } else {
        let (mut total, mut slope) = (0i128, 0i128);
        for (f, since) in sources {
            let w = window(f, since.saturating_add(x0));
            total += w.total as i128;
            slope += w.slope as i128;
        }
        (total, slope, window(&enc, x0))
    };
    let mut slope_pub = now_pub.slope as i128;
    let mut drift = now_pub.total as i128 - total;
    if total == 0 {
        return (drift > 0).then_some(0);
    }
    if drift.abs() >= threshold {
        return Some(0);
    }
    // The boundaries of counter i still ahead of x (ms after publication),
    // in order; none once its window is empty.
    let ahead = |i: usize, x: i64| {
        let (f, since) = at(i);
        let live = window(&f, since.saturating_add(x)).total != 0;
        let d = f.elapsed_signed().saturating_add(since);
        boundaries(d).into_iter().filter(move |&b| live && b > x)
    };
    if reach == Reach::FirstBoundary {
        let first = (0..=n).filter_map(|i| ahead(i, x0).next()).min();
        let rate = slope_sum - slope_pub;
        let cross = first_crossing(drift, rate, threshold).map(|c| (c - 1).max(1));
        let until = first.map(|b| (b - x0) as i128);
        return match (cross, until) {
            (Some(c), Some(u)) => Some(c.min(u) as u64),
            (c, u) => c.or(u).map(|v| v as u64),
        };
    }

    // Boundaries ahead: (ms after publication, counter), in order.
    let mut events: Vec<(i64, usize)> = Vec::with_capacity(2 * (n + 1));
    for i in 0..=n {
        events.extend(ahead(i, x0).map(|x| (x, i)));
    }
    let mut events = InOrder::new(events, first_chunk);
    let mut x0 = x0;
    let mut k = 0;
    while let Some((x, _)) = events.get(k) {
        let rate = slope_sum - slope_pub;
        if let Some(c) = first_crossing(drift, rate, threshold) {
            if c <= (x - x0) as i128 {
                return Some((x0 - age.max(0)) as u64 + (c - 1) as u64);
            }
        }
        let dx = (x - x0) as i128;
        drift += rate * dx;
        total -= slope_sum * dx;
        x0 = x;
        // The slopes of the counters crossing a boundary here, from the
        // window one ms on (`window_after` looks forward at a boundary).
        while let Some((_, i)) = events.get(k).filter(|e| e.0 == x) {
            let (f, since) = at(i);
            let before = window(&f, since + x - 1).slope as i128;
            let after = window(&f, since + x).slope as i128;
            if i < n {
                slope_sum += after - before;
            } else {
                slope_pub += after - before;
            }
            k += 1;
        }
        if total <= 0 {
            // The sum is 0 from here on; the published counter too, or a
            // zero push now.
            return (drift > 0).then_some((x - age.max(0)) as u64);
        }
    }
    // Past every boundary everything is 0: nothing left to correct.
    None
}

/// The smallest `c ≥ 1` such that `|drift + rate × c| ≥ threshold`, given
/// `|drift| < threshold`; `None` if the drift does not move.
fn first_crossing(drift: i128, rate: i128, threshold: i128) -> Option<i128> {
    let room = match rate.signum() {
        1 => threshold - drift,
        -1 => threshold + drift,
        _ => return None,
    };
    let r = rate.abs();
    Some(((room + r - 1) / r).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 1 to 59 counters as (age at publication, elapsed, curr, prev), with
    /// ages and elapsed up to 20 and 40 s and counts below `max`.
    fn counters(max: u32) -> impl Strategy<Value = Vec<(i64, u32, u32, u32)>> {
        proptest::collection::vec((0i64..20_000, 0u32..40_000, 0..max, 0..max), 1..60)
    }

    /// Counters with their ages, from generated (since, elapsed, curr, prev).
    fn sources_of(parts: &[(i64, u32, u32, u32)]) -> Vec<(FreqCtr, i64)> {
        parts
            .iter()
            .map(|&(since, elapsed, curr, prev)| {
                (
                    FreqCtr {
                        elapsed,
                        curr,
                        prev,
                    },
                    since,
                )
            })
            .collect()
    }

    proptest! {
        /// The plan from the fields alone, wherever it answers, is the
        /// walk's, with periods that started up to 2P after and before
        /// publication and fields up to saturation.
        #[test]
        fn the_first_boundary_from_the_fields_is_the_walks(
            parts in proptest::collection::vec(
                (0i64..40_000, -5_000i32..45_000, 0u32..300, 0u32..300, 0u32..4), 1..40),
            period in 1u32..20_000,
        ) {
            let sources: Vec<(FreqCtr, i64)> = parts
                .iter()
                .map(|&(since, elapsed, curr, prev, big)| {
                    // Now and then a field near u32::MAX, to reach saturation.
                    let (curr, prev) = match big {
                        0 => (u32::MAX - curr, prev),
                        1 => (curr, u32::MAX / 3 + prev),
                        _ => (curr, prev),
                    };
                    (FreqCtr { elapsed: elapsed as u32, curr, prev }, since - 20_000)
                })
                .map(|(f, since)| (f, since.max(0)))
                .collect();
            if let Some(quick) = first_boundary(sources.iter().copied(), period) {
                prop_assert_eq!(quick, republish_in(&sources, 0, period, Reach::FirstBoundary));
            }
        }

        /// The same with small fields only, where the quick answer always
        /// applies once every period started by publication.
        #[test]
        fn the_first_boundary_from_small_fields_is_the_walks(
            parts in counters(1000),
            period in 1u32..20_000,
        ) {
            let sources = sources_of(&parts);
            let quick = first_boundary(sources.iter().copied(), period);
            prop_assert!(quick.is_some());
            prop_assert_eq!(quick.unwrap(), republish_in(&sources, 0, period, Reach::FirstBoundary));
        }

        /// Sorting the boundaries as the walk goes, from any first chunk,
        /// walks like sorting them all first, with up to 60 sources, at
        /// publication and later.
        #[test]
        fn sorting_as_it_goes_is_sorting_first(
            parts in counters(300),
            period in 1_000u32..20_000,
            age in 0i64..30_000,
            first in 1usize..8,
        ) {
            let sources = sources_of(&parts);
            for reach in [Reach::All, Reach::FirstBoundary] {
                prop_assert_eq!(
                    republish_walk(&sources, age, period, reach, first),
                    republish_walk(&sources, age, period, reach, usize::MAX)
                );
            }
        }

        /// The walk in two steps (to the first boundary at publication, then
        /// all the way from there, as `Table::wake` does) finds the instant
        /// the whole walk finds at publication, with up to 60 sources.
        #[test]
        fn the_first_boundary_then_the_rest_is_the_whole_walk(
            parts in counters(300),
            period in 1_000u32..20_000,
        ) {
            let sources = sources_of(&parts);
            let all = republish_in(&sources, 0, period, Reach::All);
            match republish_in(&sources, 0, period, Reach::FirstBoundary) {
                // Nothing to plan, either way.
                None => prop_assert_eq!(all, None),
                // Due before (or at) the first boundary: the same instant.
                Some(b) if all.is_some_and(|a| a <= b) => prop_assert_eq!(all, Some(b)),
                // A look at the first boundary, and the rest from there.
                Some(b) => {
                    let rest = republish_in(&sources, b as i64, period, Reach::All);
                    prop_assert_eq!(rest.map(|r| r + b), all);
                }
            }
        }
    }
}
