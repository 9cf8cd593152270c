//! Frequency counters ("rates") as HAProxy stores, sends and reads them
//! (peers-protocol.md §5.3), and the arithmetic an aggregator needs to sum
//! them across nodes and send the sum back as one counter (§5.4).
//!
//! A counter is `{curr_tick, curr_ctr, prev_ctr}` over a period P: `curr`
//! counts events since `curr_tick`, `prev` is the previous period's count.
//! On the wire `curr_tick` travels as `elapsed = now − curr_tick`, so no clock
//! is shared: the receiver rebuilds the tick in its own clock.
//!
//! Summing two counters field by field is wrong, because each node's periods
//! start at different instants. Instead each counter is turned into its
//! *window total* `W` (events × ms inside the sliding window, i.e. the read
//! value before HAProxy's final division by P) and its *slope* `S` (events
//! leaving the window per period if nothing new arrives). Sums of `W` and `S`
//! are exact; [`encode`] then builds one triple that reads `ΣW / P` on arrival
//! and loses `ΣS / P` per ms afterwards, like the sum of the node counters.

/// A counter as carried on the wire: three varints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FreqCtr {
    /// Milliseconds since the current period started (u32 on the wire,
    /// interpreted as a signed difference by HAProxy).
    pub elapsed: u32,
    pub curr: u32,
    pub prev: u32,
}

/// A counter's contribution to a sum, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Events × ms in the sliding window (`read × P`, before rounding).
    pub total: u128,
    /// Events that leave the window over the next period if no new event
    /// arrives (the read decreases by `slope / P` per ms).
    pub slope: u64,
}

impl std::ops::AddAssign for Window {
    fn add_assign(&mut self, o: Window) {
        self.total = self.total.saturating_add(o.total);
        self.slope = self.slope.saturating_add(o.slope);
    }
}

/// How a boundary instant is treated by [`rotate`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Boundary {
    /// HAProxy's read: at exactly `e = P` the period has not rotated yet.
    Haproxy,
    /// For sums: rotate at exactly `e = P` too. Both give the same total
    /// there, but only this gives the slope of the period that starts, which
    /// is what the sum does next; at exactly `2P` nothing is left.
    LookAhead,
}

/// The period rotation at elapsed `e`: (past, curr, remain). `remain` is
/// negative (or zero with [`Boundary::LookAhead`]) when even the rotated
/// window is over.
fn rotate(e: i64, curr: u32, prev: u32, period: u32, b: Boundary) -> (u64, u64, i64) {
    let p = period as i64;
    let mut remain = p - e;
    let mut past = prev as u64;
    let mut cur = curr as u64;
    let over = |r: i64| {
        if b == Boundary::Haproxy {
            r < 0
        } else {
            r <= 0
        }
    };
    if over(remain) {
        remain += p;
        past = if over(remain) { 0 } else { cur };
        cur = 0;
    }
    (past, cur, remain)
}

/// HAProxy's `read_freq_ctr_period`, exactly: the value a node shows for a
/// counter whose current period started `e` ms ago (e may be negative, a
/// tick "in the future"). Includes the anti-flapping rule for tiny values.
pub fn read(e: i64, curr: u32, prev: u32, period: u32) -> u32 {
    if period == 0 {
        return curr;
    }
    let (past, cur, remain) = rotate(e, curr, prev, period, Boundary::Haproxy);
    if cur == 0 && past <= 1 {
        return past as u32;
    }
    let remain = remain.max(0) as u128;
    let v = (past as u128 * remain + cur as u128 * period as u128) / period as u128;
    v.min(u32::MAX as u128) as u32
}

impl FreqCtr {
    /// The elapsed field as HAProxy interprets it: a signed 32-bit difference.
    pub fn elapsed_signed(self) -> i64 {
        self.elapsed as i32 as i64
    }

    /// What HAProxy shows `since_ms` after receiving this triple.
    pub fn read_after(self, since_ms: i64, period: u32) -> u32 {
        read(
            self.elapsed_signed() + since_ms,
            self.curr,
            self.prev,
            period,
        )
    }

    /// Window total and slope `since_ms` after this triple was received.
    /// The anti-flapping shortcut is deliberately not applied: it is a display
    /// rule for one counter and would over-count small values in a sum.
    pub fn window_after(self, since_ms: i64, period: u32) -> Window {
        if period == 0 {
            return Window::default();
        }
        let e = self.elapsed_signed() + since_ms;
        let (past, cur, remain) = rotate(e, self.curr, self.prev, period, Boundary::LookAhead);
        if remain <= 0 || (past == 0 && cur == 0) {
            return Window::default();
        }
        Window {
            total: past as u128 * remain as u128 + cur as u128 * period as u128,
            slope: past,
        }
    }
}

/// Builds the triple whose HAProxy read equals `w.total / period` when it
/// arrives (to the ms rounding of `elapsed`) and then decreases by
/// `w.slope / period` per ms, like the sum of the counters it came from.
/// Every field saturates at u32::MAX.
pub fn encode(w: Window, period: u32) -> FreqCtr {
    if period == 0 || w.total == 0 {
        return FreqCtr::default();
    }
    let p = period as u128;
    let sat = |v: u128| v.min(u32::MAX as u128) as u32;
    let s = w.slope as u128;
    if s == 0 {
        // Nothing leaves the window before the next rotation: a flat value.
        return FreqCtr {
            elapsed: 0,
            curr: sat(w.total.div_ceil(p)),
            prev: 0,
        };
    }
    // Solve s·(P − e) + c·P = W for integers e ∈ [0, P], c ≥ 0, e rounded to
    // the nearest ms.
    let sp = s * p;
    let (curr, num) = if w.total >= sp {
        let c = (w.total - sp).div_ceil(p);
        (c, sp + c * p - w.total)
    } else {
        (0, sp - w.total)
    };
    let e = ((num + s / 2) / s).min(p);
    FreqCtr {
        elapsed: e as u32,
        curr: sat(curr),
        prev: sat(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seven cases validated against HAProxy 3.0.11 (§5.3): P = 10 s,
    /// read 460 ms after receipt.
    #[test]
    fn haproxy_validated_reads() {
        let cases: &[((u32, u32, u32), u32)] = &[
            ((0, 0, 100), 95),
            ((12000, 50, 80), 37),
            ((20001, 50, 80), 0),
            ((0, 0, 1), 1),
            ((5000, 10, 0), 10),
            ((u32::MAX - 999, 7, 3), 10),
            ((9000, 0, 40), 2),
        ];
        for &((elapsed, curr, prev), shown) in cases {
            let c = FreqCtr {
                elapsed,
                curr,
                prev,
            };
            assert_eq!(c.read_after(460, 10_000), shown, "{c:?}");
        }
    }

    #[test]
    fn window_matches_read_without_antiflap() {
        let c = FreqCtr {
            elapsed: 12000,
            curr: 50,
            prev: 80,
        };
        let w = c.window_after(460, 10_000);
        assert_eq!(w.total / 10_000, 37);
        assert_eq!(w.slope, 50);
        // Never-touched counter with a meaningless elapsed: nothing.
        let idle = FreqCtr {
            elapsed: 4294948018,
            curr: 0,
            prev: 0,
        };
        assert_eq!(idle.window_after(0, 10_000), Window::default());
    }

    #[test]
    fn window_slope_at_period_boundaries_looks_forward() {
        let c = FreqCtr {
            elapsed: 0,
            curr: 11,
            prev: 4,
        };
        // At exactly P: same total as HAProxy's read, the slope of what comes.
        let w = c.window_after(10_000, 10_000);
        assert_eq!(w.total / 10_000, c.read_after(10_000, 10_000) as u128);
        assert_eq!(w.slope, 11);
        // At exactly 2P: nothing left, nothing leaving.
        assert_eq!(c.window_after(20_000, 10_000), Window::default());
        assert_eq!(c.window_after(19_999, 10_000).slope, 11);
    }

    #[test]
    fn encode_flat_and_sloped() {
        // Two nodes whose events are all in their current periods: flat sum.
        let a = FreqCtr {
            elapsed: 100,
            curr: 3,
            prev: 0,
        };
        let b = FreqCtr {
            elapsed: 7000,
            curr: 4,
            prev: 0,
        };
        let mut w = a.window_after(0, 10_000);
        w += b.window_after(0, 10_000);
        let enc = encode(w, 10_000);
        assert_eq!(
            enc,
            FreqCtr {
                elapsed: 0,
                curr: 7,
                prev: 0
            }
        );
        // A decaying sum reads the same now and decays at the summed slope.
        let a = FreqCtr {
            elapsed: 2000,
            curr: 5,
            prev: 10,
        };
        let b = FreqCtr {
            elapsed: 9000,
            curr: 0,
            prev: 40,
        };
        let mut w = a.window_after(0, 10_000);
        w += b.window_after(0, 10_000);
        let enc = encode(w, 10_000);
        for t in [0i64, 300, 900] {
            let sum = a.window_after(t, 10_000).total + b.window_after(t, 10_000).total;
            let exact = (sum / 10_000) as i64;
            let got = enc.read_after(t, 10_000) as i64;
            assert!((got - exact).abs() <= 1, "t={t} got {got} exact {exact}");
        }
    }

    proptest! {
        /// Whatever is summed, the encoded counter reads the sum on arrival,
        /// within one event plus the integer-ms rounding of `elapsed`
        /// (half a millisecond of slope: S / 2P events).
        #[test]
        fn encoded_reads_sum(parts in proptest::collection::vec((0u32..30_000, 0u32..5_000, 0u32..5_000), 1..10),
                             period in 1_000u32..60_000) {
            let mut w = Window::default();
            for &(elapsed, curr, prev) in &parts {
                w += FreqCtr { elapsed, curr, prev }.window_after(0, period);
            }
            let enc = encode(w, period);
            let exact = w.total / period as u128;
            let got = enc.read_after(0, period) as u128;
            let tol = 1 + w.slope as u128 / (2 * period as u128);
            prop_assert!(got + tol >= exact && got <= exact + tol, "got {} exact {} {:?}", got, exact, enc);
        }

        #[test]
        fn read_never_panics(e: i64, curr: u32, prev: u32, period: u32) {
            let _ = read(e, curr, prev, period);
            let _ = FreqCtr { elapsed: e as u32, curr, prev }.window_after(e, period);
        }
    }
}
