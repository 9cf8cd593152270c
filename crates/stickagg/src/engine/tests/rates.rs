//! Rates: what a node reads from the pushed counter against the sum of the
//! sources' windows, over time (`drift.rs`), and the values every peer gets
//! for one change (`poll.rs`).

use super::*;

/// Feeds one rate key from `sources` (arrival time, triple; arrivals in
/// increasing order), then follows the engine's pushes to one node until it
/// stops republishing. At several instants between consecutive pushes, what
/// the node reads from the last pushed counter must equal the sum of the
/// sources' sliding windows at that instant to one event plus the whole
/// events of encode's half-millisecond rounding at the push (`drift.rs`),
/// and the sum of what each source node reads itself (each floors its own
/// reading: up to one event per source more). Once the sum is 0 the node
/// reads 0, whether a zero push made it or its counter ran out at the same
/// instant. Returns the pushes.
fn walk_rate(sources: &[(u64, FreqCtr)], period: u32) -> Vec<(u64, FreqCtr)> {
    let rate = def(
        IN,
        "/r",
        KeyType::Ipv4,
        4,
        0,
        &[("http_req_rate", 1, period)],
    );
    let n = sources.len();
    let mut h = H::new(n + 1, rate);
    let k = [1, 2, 3, 4];
    for (i, &(at, c)) in sources.iter().enumerate() {
        h.send(i, &k, vec![Value::Freq(c)], at);
    }
    let exact = |t: u64| {
        let mut w = Window::default();
        for &(at, c) in sources {
            w += c.window_after((t - at) as i64, period);
        }
        w
    };
    let reads = |t: u64| -> i64 {
        sources
            .iter()
            .map(|&(at, c)| c.read_after((t - at) as i64, period) as i64)
            .sum()
    };
    let mut now = sources.iter().map(|s| s.0).max().unwrap();
    let ahead = sources
        .iter()
        .map(|s| (-s.1.elapsed_signed()).max(0) as u64)
        .max()
        .unwrap();
    let mut pushes: Vec<(u64, FreqCtr)> = Vec::new();
    loop {
        let out = h.drain(n, now);
        assert!(out.len() <= 1);
        if let Some(u) = out.first() {
            pushes.push((now, freq_of(&u.values[0])));
        }
        let (pushed_at, enc) = *pushes.last().expect("a first push");
        let tol = 1 + (exact(pushed_at).slope / (2 * period as u64)) as i64;
        let end = h.e.next_wake();
        let horizon = end.unwrap_or(now + 3 * period as u64);
        for i in 0..=16 {
            let t = (now + (horizon - now) * i / 16)
                .min(horizon.saturating_sub(1))
                .max(now);
            let node = enc.read_after((t - pushed_at) as i64, period) as i64;
            let w = exact(t);
            let sum = (w.total / period as u128) as i64;
            assert!(
                (node - sum).abs() <= tol,
                "t={t}: node reads {node}, windows sum to {sum} (pushed {enc:?} at {pushed_at})"
            );
            assert!(
                (node - reads(t)).abs() < tol + n as i64,
                "t={t}: node reads {node}, nodes read {}",
                reads(t)
            );
        }
        match end {
            Some(d) => now = d,
            None => break,
        }
        // At most one republish per boundary of a source, and a few for the
        // pushed counters' own boundaries; a tick in the future stretches a
        // source's slope beyond what a pushed counter's window (at most one
        // period ahead) can hold: one more per period of it.
        assert!(
            pushes.len() as u64 <= 2 * n as u64 + 6 + 2 * ahead / period as u64,
            "republishing never ends: {pushes:?}"
        );
    }
    // The sum reaches 0 at one of the sources' boundaries (or was 0).
    let (last_at, last) = *pushes.last().unwrap();
    let zero = sources
        .iter()
        .flat_map(|&(at, c)| {
            let d = c.elapsed_signed();
            [1, 2].map(|m| (at as i64 + m * period as i64 - d).max(last_at as i64) as u64)
        })
        .chain([last_at])
        .filter(|&t| exact(t).total == 0)
        .min()
        .expect("the sum reaches 0");
    let ran_out = last.window_after((zero - last_at) as i64, period);
    assert_eq!(
        ran_out,
        Window::default(),
        "{last:?} at {last_at}, 0 at {zero}"
    );
    for t in [zero + 1, zero + period as u64, zero + 3 * period as u64] {
        assert_eq!(last.read_after((t - last_at) as i64, period), 0);
    }
    // Decay is republishing, not input; and nothing is left pending.
    assert_eq!(h.e.counters().updates, n as u64);
    assert!(!h.e.has_pending(n));
    pushes
}

/// Three nodes with unaligned periods: the node reads the cluster sum right
/// after each push and at every instant until the next one; the engine keeps
/// republishing while that would drift, and stops once the sum is 0.
#[test]
fn rate_sum_decays_like_the_nodes_and_ends_at_zero() {
    let pushes = walk_rate(
        &[
            (
                100,
                FreqCtr {
                    elapsed: 2_000,
                    curr: 40,
                    prev: 100,
                },
            ),
            (
                250,
                FreqCtr {
                    elapsed: 9_000,
                    curr: 7,
                    prev: 300,
                },
            ),
            (
                400,
                FreqCtr {
                    elapsed: 15_000,
                    curr: 60,
                    prev: 5,
                },
            ),
        ],
        P,
    );
    // The first push is the sum at arrival; then one republish per boundary
    // that changes the slope (6 here), not one every P/4 as well.
    assert_eq!(pushes[0].0, 400);
    assert!(pushes.len() <= 7, "{pushes:?}");
}

#[test]
fn a_flat_rate_is_republished_only_once_a_boundary_makes_it_drift() {
    let rate = def(IN, "/r", KeyType::Ipv4, 4, 0, &[("conn_rate", 1, P)]);
    let mut h = H::new(1, rate);
    // 50 events, all in a period that started 5 s ago: flat for 5 s, then
    // decaying by 50 events per period. The pushed {0, 50, 0} stays flat for
    // 10 s, so from 5 s on the node over-reads by 50 events × ms per ms and
    // would be one event off at 5.2 s: republished 1 ms before that.
    h.send(0, b"abcd", vec![f(5_000, 50, 0)], 0);
    let out = h.drain(0, 0);
    assert_eq!(
        freq_of(&out[0].values[0]),
        FreqCtr {
            elapsed: 0,
            curr: 50,
            prev: 0
        }
    );
    // It looks again at the source's boundary, where nothing has drifted.
    assert_eq!(h.e.next_wake(), Some(5_000));
    assert!(h.drain(0, 5_000).is_empty());
    assert_eq!(h.e.next_wake(), Some(5_199));
    assert!(h.drain(0, 5_198).is_empty());
    let out = h.drain(0, 5_199);
    let again = freq_of(&out[0].values[0]);
    // Now it decays with the source: 49.005 events, losing 50 per period.
    assert_eq!(again.read_after(0, P), 49);
    assert_eq!(again.prev, 50);
    // Both reach 0 at the source's 2P (15 s): no zero push needed.
    assert_eq!(h.e.next_wake(), Some(15_000), "a look at the boundary");
    assert!(h.drain(0, 15_000).is_empty());
    assert_eq!(h.e.next_wake(), None);
    assert_eq!(again.window_after(15_000 - 5_199, P), Window::default());
    assert_eq!(h.e.counters().republished, 1);
    // A zero rate schedules nothing.
    h.send(0, b"abcd", vec![f(100, 0, 0)], 6_000);
    h.drain(0, 6_000);
    assert_eq!(h.e.next_wake(), None);
}

/// A rate too small to drift one event within its windows: pushed once, then
/// only the zero at the end, where the old schedule pushed at every source
/// boundary (+1 ms) and every P/4.
#[test]
fn a_small_flat_rate_is_pushed_once_then_zeroed() {
    let rate = def(IN, "/r", KeyType::Ipv4, 4, 0, &[("conn_rate", 1, P)]);
    let mut h = H::new(1, rate);
    h.send(0, b"abcd", vec![f(100, 50, 0)], 0);
    h.drain(0, 0);
    // The node's {0, 50, 0} starts decaying 100 ms after the source: half an
    // event apart at most, until the source's window is empty at 19.9 s.
    assert_eq!(h.e.next_wake(), Some(9_900), "a look at the boundary");
    assert!(h.drain(0, 9_900).is_empty());
    assert_eq!(h.e.next_wake(), Some(19_900));
    let out = h.drain(0, 19_900);
    assert_eq!(freq_of(&out[0].values[0]), FreqCtr::default());
    assert_eq!(h.e.next_wake(), None);
}

/// A large rate is corrected right where its slope changes.
#[test]
fn a_large_rate_is_republished_at_its_slope_changes() {
    let pushes = walk_rate(
        &[(
            0,
            FreqCtr {
                elapsed: 5_000,
                curr: 100_000,
                prev: 0,
            },
        )],
        P,
    );
    let at: Vec<u64> = pushes.iter().map(|p| p.0).collect();
    // Flat until the source's boundary at 5 s, where it starts losing
    // 10 events per ms: republished at that very ms.
    assert_eq!(at, [0, 5_000], "{pushes:?}");
}

/// Ten nodes with a handful of events each, unaligned: the old schedule
/// pushed many times (every boundary and every P/4 until 0); drifting one
/// event takes most of a period here.
#[test]
fn many_tiny_contributions_are_rarely_republished() {
    let sources: Vec<(u64, FreqCtr)> = (0..10u32)
        .map(|i| {
            let c = FreqCtr {
                elapsed: 900 * i,
                curr: 1 + i % 3,
                prev: i % 2,
            };
            (10 * i as u64, c)
        })
        .collect();
    let pushes = walk_rate(&sources, P);
    assert!(pushes.len() <= 6, "{} pushes: {pushes:?}", pushes.len());
}

proptest! {
    /// Random sources (arrivals, any elapsed including ticks slightly in
    /// the future, large counts, periods down to 1 ms): at random instants
    /// the node's window and the sum's are less than the drift threshold
    /// apart (one event plus encode's rounding at the push, `drift.rs`), and
    /// the node reads 0 once the sum is 0 (`walk_rate`).
    #[test]
    fn drift_stays_under_one_event_at_random_instants(
        parts in proptest::collection::vec(
            (0u64..30_000,
             prop_oneof![0u32..200_000, (u32::MAX - 3_000)..=u32::MAX],
             0u32..200_000,
             0u32..200_000),
            1..8),
        period in prop_oneof![1u32..30, 1_000u32..60_000],
        instants in proptest::collection::vec(0u64..300_000, 1..40),
        many in any::<bool>(),
    ) {
        let mut sources: Vec<(u64, FreqCtr)> = parts
            .into_iter()
            .map(|(at, elapsed, curr, prev)| (at, FreqCtr { elapsed, curr, prev }))
            .collect();
        if many {
            // Forty sources, as behind a key of a large cluster: copies with
            // other arrivals and phases, so that their boundaries interleave.
            let n = sources.len();
            sources = (0..40)
                .map(|i| {
                    let (at, mut c) = sources[i % n];
                    c.elapsed = c.elapsed.wrapping_add(997 * i as u32);
                    (at + 13 * i as u64, c)
                })
                .collect();
        }
        sources.sort_by_key(|s| s.0);
        let pushes = walk_rate(&sources, period);
        let exact = |t: u64| {
            let mut w = Window::default();
            for &(at, c) in &sources {
                w += c.window_after((t - at) as i64, period);
            }
            w
        };
        let p = period as i128;
        for t in instants {
            let t = pushes[0].0 + t;
            let (at, enc) = *pushes.iter().rev().find(|x| x.0 <= t).unwrap();
            let node = enc.window_after((t - at) as i64, period).total as i128;
            let sum = exact(t).total as i128;
            let threshold = p * (1 + (exact(at).slope as i128 / (2 * p)));
            prop_assert!((node - sum).abs() < threshold,
                "t={} node {} sum {} (pushed {:?} at {}) {:?}", t, node, sum, enc, at, pushes);
        }
    }

    /// Any set of counters, any periods: the pushed counter reads like the
    /// sum of the nodes' counters at every instant, down to a final 0.
    #[test]
    fn rate_sums_read_like_the_nodes(
        parts in proptest::collection::vec((0u64..20_000, 0u32..40_000, 0u32..3_000, 0u32..3_000), 1..5),
        period in 1_000u32..30_000,
        idle in any::<bool>(),
    ) {
        let mut sources: Vec<(u64, FreqCtr)> = parts
            .into_iter()
            .map(|(at, elapsed, curr, prev)| (at, FreqCtr { elapsed, curr, prev }))
            .collect();
        sources.sort_by_key(|s| s.0);
        if idle {
            // A never-touched counter: meaningless elapsed, no events.
            sources[0].1 = FreqCtr { elapsed: 4_294_948_018, curr: 0, prev: 0 };
        }
        walk_rate(&sources, period);
    }
}

/// One change is computed once, as of when it happened: a peer polling
/// later gets the same counter re-based (it reads the same at every
/// instant as the one that polled first), the same remaining lifetime at
/// the same instant, and nothing is kept once every peer has it.
#[test]
fn a_change_is_computed_once_for_every_peer() {
    let cols = &[("http_req_cnt", 1, 0), ("http_req_rate", 1, P)];
    let rate = def(IN, "/r", KeyType::Ipv4, 4, 60_000, cols);
    let mut h = H::new(3, rate);
    let k = b"abcd";
    h.send(0, k, vec![Value::U32(3), f(2_000, 40, 100)], 0);
    h.send(1, k, vec![Value::U32(4), f(9_000, 7, 300)], 100);
    let first = h.drain(0, 100);
    assert_eq!(h.e.tables[0].computed.len(), 1, "kept for the two others");
    let later = h.drain(1, 700);
    assert_eq!(h.e.tables[0].computed.len(), 1, "kept for the last one");
    let last = h.drain(2, 900);
    assert!(h.e.tables[0].computed.is_empty());
    let (a, b, c) = (&first[0], &later[0], &last[0]);
    assert_eq!(a.values[0], Value::U32(7));
    assert_eq!(
        (b.values[0].clone(), c.values[0].clone()),
        (Value::U32(7), Value::U32(7))
    );
    let (fa, fb, fc) = (
        freq_of(&a.values[1]),
        freq_of(&b.values[1]),
        freq_of(&c.values[1]),
    );
    assert_eq!(
        fb,
        FreqCtr {
            elapsed: fa.elapsed + 600,
            ..fa
        }
    );
    assert_eq!(
        fc,
        FreqCtr {
            elapsed: fa.elapsed + 800,
            ..fa
        }
    );
    assert_eq!(a.expire, Some(60_000));
    assert_eq!(b.expire, Some(59_400));
    assert_eq!(c.expire, Some(59_200));
    // A single peer keeps nothing.
    let mut h = H::new(1, def(IN, "/r", KeyType::Ipv4, 4, 0, cols));
    h.send(0, k, vec![Value::U32(3), f(2_000, 40, 100)], 0);
    assert_eq!(h.drain(0, 5).len(), 1);
    assert!(h.e.tables[0].computed.is_empty());
}

/// Contributions keep the low 32 bits of their arrival instant
/// (`table::Head`): a key that never expires must read the same after two
/// months as after a minute, its rate long empty. Without the engine's
/// periodic clamp of ages, the rate would come back when the low 32 bits
/// wrap (49.7 days later) and read as 500 ms old.
#[test]
fn a_never_expiring_rate_stays_empty_across_the_clock_wrap() {
    let t = def(
        IN,
        "/r",
        KeyType::Ipv4,
        4,
        0,
        &[("http_req_cnt", 1, 0), ("http_req_rate", 1, 10_000)],
    );
    let mut h = H::new(2, t);
    let k = [1, 2, 3, 4];
    let busy = FreqCtr {
        elapsed: 0,
        curr: 50,
        prev: 0,
    };
    h.send(0, &k, vec![Value::U32(7), Value::Freq(busy)], 1_000);
    let read = |h: &H, now: u64| {
        let v = h.e.key_info("/r.agg", &k, now, false).unwrap().values;
        (v[0].clone(), freq_of(&v[1]).read_after(0, 10_000))
    };
    assert_eq!(read(&h, 1_500), (Value::U32(7), 50));
    // The hub ticks at least every second; once a day is enough here.
    let day = 86_400_000;
    let mut now = 1_000;
    while now < (1 << 32) {
        now += day;
        h.e.tick(now);
        assert_eq!(read(&h, now), (Value::U32(7), 0), "day {}", now / day);
    }
    let wrapped = (1 << 32) + 1_500;
    h.e.tick(wrapped);
    assert_eq!(read(&h, wrapped), (Value::U32(7), 0));
}
