//! Rates: what a node reads from the pushed counter against the sum of the
//! sources' windows, over time, and the values every peer gets for one
//! change (`poll.rs`).

use super::*;

/// Feeds one rate key from `sources` (arrival time, triple; arrivals in
/// increasing order), then follows the engine's pushes to one node until it
/// stops republishing. At several instants between consecutive pushes, what
/// the node reads from the last pushed counter must equal the sum of the
/// sources' sliding windows at that instant (to 1 + the half-millisecond
/// rounding of `elapsed`, see freq.rs), and the sum of what each source node
/// reads itself (each floors its own reading: up to one event per source
/// more). Returns the pushes.
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
    let mut pushes: Vec<(u64, FreqCtr)> = Vec::new();
    loop {
        let out = h.drain(n, now);
        assert!(out.len() <= 1);
        if let Some(u) = out.first() {
            pushes.push((now, freq_of(&u.values[0])));
        }
        let (pushed_at, enc) = *pushes.last().expect("a first push");
        let end = h.e.next_deadline();
        let horizon = end.unwrap_or(now + 3 * period as u64);
        for i in 0..=16 {
            let t = (now + (horizon - now) * i / 16)
                .min(horizon.saturating_sub(1))
                .max(now);
            let node = enc.read_after((t - pushed_at) as i64, period) as i64;
            let w = exact(t);
            let sum = (w.total / period as u128) as i64;
            let tol = 1 + (w.slope / (2 * period as u64)) as i64;
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
        // Two boundaries per source and four pushes per period at most.
        assert!(
            pushes.len() <= 2 * n + 12,
            "republishing never ends: {pushes:?}"
        );
    }
    let (last_at, last) = *pushes.last().unwrap();
    assert_eq!(last, FreqCtr::default(), "a final zero push");
    assert_eq!(exact(last_at).total, 0);
    // Decay is republishing, not input; and nothing is left pending.
    assert_eq!(h.e.counters().updates, n as u64);
    assert!(!h.e.has_pending(n));
    pushes
}

/// Three nodes with unaligned periods: the node reads the cluster sum right
/// after each push and at every instant until the next one; the engine keeps
/// republishing until the sum reaches 0, pushes that 0, then stops.
#[test]
fn rate_sum_decays_like_the_nodes_and_ends_with_a_zero_push() {
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
    assert!(pushes.len() >= 4, "boundaries crossed: {pushes:?}");
    // The first push is the sum at arrival.
    assert_eq!(pushes[0].0, 400);
}

#[test]
fn a_nonzero_rate_is_republished_at_least_every_quarter_period() {
    let rate = def(IN, "/r", KeyType::Ipv4, 4, 0, &[("conn_rate", 1, P)]);
    let mut h = H::new(1, rate);
    // All events in the current period: flat until the boundary 9.9 s away.
    h.send(0, b"abcd", vec![f(100, 50, 0)], 0);
    h.drain(0, 0);
    let d = h.e.next_deadline().unwrap();
    assert_eq!(d, P as u64 / 4);
    assert!(h.drain(0, d - 1).is_empty());
    let out = h.drain(0, d);
    assert_eq!(out.len(), 1);
    assert_eq!(freq_of(&out[0].values[0]).read_after(0, P), 50);
    // A zero rate schedules nothing.
    h.send(0, b"abcd", vec![f(100, 0, 0)], d);
    h.drain(0, d);
    assert_eq!(h.e.next_deadline(), None);
}

proptest! {
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
