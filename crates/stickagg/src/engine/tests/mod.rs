//! Engine tests, in virtual time: a "node" here is just a peer id that
//! defines tables and sends absolute values; what it would read is computed
//! with `peers::freq`, exactly as HAProxy reads a counter.

use super::*;
use bytes::Bytes;
use peers::freq::Window;
use peers::registry::data_type_by_name as by;
use peers::{Column, FreqCtr, KeyType};
use proptest::prelude::*;
use std::collections::BTreeMap;

mod rates;

const P: u32 = 10_000;
const IN: u64 = 1;
const OUT: u64 = 2;

fn def(
    id: u64,
    name: &str,
    key_type: KeyType,
    key_len: u32,
    expire: u32,
    cols: &[(&str, u32, u32)],
) -> Arc<TableDef> {
    Arc::new(TableDef {
        id,
        name: name.to_string(),
        key_type,
        key_len,
        expire: Some(expire),
        columns: cols
            .iter()
            .map(|&(n, e, p)| Column::new(by(n).unwrap(), e, p))
            .collect(),
        unknown_types: 0,
    })
}

fn cfg_any() -> EngineConfig {
    EngineConfig {
        from: None,
        to: ".agg".into(),
        forward: vec![],
        ..EngineConfig::default()
    }
}

fn upd(key: &[u8], values: Vec<Value>) -> Update {
    Update {
        id: 1,
        expire: None,
        key: key.into(),
        values: values.into(),
        memo: Default::default(),
    }
}

fn f(elapsed: u32, curr: u32, prev: u32) -> Value {
    Value::Freq(FreqCtr {
        elapsed,
        curr,
        prev,
    })
}

fn freq_of(v: &Value) -> FreqCtr {
    match v {
        Value::Freq(f) => *f,
        v => panic!("not a rate: {v:?}"),
    }
}

/// An engine with nodes 0..n connected, each defining `input` (id 1) and its
/// output (id 2).
struct H {
    e: Engine,
    input: Arc<TableDef>,
    output: Arc<TableDef>,
}

impl H {
    fn new(nodes: usize, input: Arc<TableDef>) -> H {
        let output = Arc::new(TableDef {
            id: OUT,
            name: format!("{}.agg", input.name),
            ..(*input).clone()
        });
        let mut h = H {
            e: Engine::new(cfg_any()),
            input,
            output,
        };
        for n in 0..nodes {
            h.connect(n, 0);
        }
        h
    }

    fn connect(&mut self, n: PeerId, now: u64) {
        self.e
            .peer_connected(n, &format!("lb{n}"), PeerRole::Node, now);
        let v = self.e.table_defined(n, IN, &self.input, now);
        assert_eq!(
            v,
            TableVerdict::Input {
                output: self.output.name.clone()
            }
        );
        assert_eq!(
            self.e.table_defined(n, OUT, &self.output, now),
            TableVerdict::Output
        );
    }

    fn send(&mut self, n: PeerId, key: &[u8], values: Vec<Value>, now: u64) {
        self.e.update(n, IN, &upd(key, values), now);
    }

    fn drain(&mut self, n: PeerId, now: u64) -> Vec<OutUpdate> {
        self.e.poll_updates(n, usize::MAX, now)
    }

    /// The aggregate of `key` as a peer would receive it now.
    fn agg(&self, key: &[u8], now: u64) -> Option<Vec<Value>> {
        self.e
            .key_info(&self.output.name, key, now, false)
            .map(|k| k.values)
    }
}

fn counters_def() -> Arc<TableDef> {
    def(
        IN,
        "/t",
        KeyType::Ipv4,
        4,
        0,
        &[
            ("gpc0", 1, 0),
            ("conn_cnt", 1, 0),
            ("conn_cur", 1, 0),
            ("bytes_in_cnt", 1, 0),
        ],
    )
}

fn counters(gpc0: u32, conn: u32, cur: u32, bytes: u64) -> Vec<Value> {
    vec![
        Value::U32(gpc0),
        Value::U32(conn),
        Value::U32(cur),
        Value::U64(bytes),
    ]
}

#[test]
fn counters_sum_across_three_peers() {
    let mut h = H::new(3, counters_def());
    let k = [10, 0, 0, 1];
    h.send(0, &k, counters(5, 1, 2, 100), 1);
    h.send(1, &k, counters(7, u32::MAX - 1, 1, u64::MAX - 10), 2);
    h.send(2, &k, counters(3, 10, 0, 20), 3);
    let out = h.drain(0, 3);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].table, 1);
    assert_eq!(&out[0].key[..], &k);
    // Saturating sums, never a wrap.
    assert_eq!(out[0].values.to_vec(), counters(15, u32::MAX, 3, u64::MAX));
    assert_eq!(out[0].expire, None);
    // Absolute values: a re-sent value is not added twice, a decrease
    // (counter cleared on a node) is taken as is.
    h.send(0, &k, counters(5, 1, 2, 100), 4);
    h.send(1, &k, counters(1, 2, 1, 5), 5);
    assert_eq!(h.drain(0, 5)[0].values.to_vec(), counters(9, 13, 3, 125));
    assert_eq!(h.e.counters().updates, 5);
}

/// `prefetch` is a hint: for a known key, an unknown key, an unbound table
/// or an unknown peer it changes nothing anyone can see.
#[test]
fn prefetch_changes_nothing() {
    let mut h = H::new(2, counters_def());
    let k = [10, 0, 0, 1];
    h.send(0, &k, counters(5, 1, 2, 100), 1);
    let _ = h.drain(1, 1);
    let before = (h.agg(&k, 2), h.e.counters().updates, h.e.has_pending(1));
    for (peer, id, key) in [(0, IN, k), (1, IN, [9, 9, 9, 9]), (0, 77, k), (42, IN, k)] {
        let u = upd(&key, counters(1, 1, 1, 1));
        let stages = [Prefetch::Index, Prefetch::Entry, Prefetch::Contributions];
        h.e.prefetch(peer, stages.map(|stage| (stage, id, &u)));
    }
    assert_eq!(
        (h.agg(&k, 2), h.e.counters().updates, h.e.has_pending(1)),
        before
    );
    assert!(h.agg(&[9, 9, 9, 9], 2).is_none());
}

/// The slot a prefetch stage notes in a queued update is checked before
/// the update uses it: here the key it was noted for expires, and another
/// key takes its slot, before the update is applied.
#[test]
fn a_noted_slot_is_checked_before_it_is_used() {
    let mut h = H::new(2, def(IN, "/t", KeyType::Ipv4, 4, 1_000, &[("gpc0", 1, 0)]));
    let (a, c) = ([1, 1, 1, 1], [3, 3, 3, 3]);
    h.send(0, &a, vec![Value::U32(5)], 0);
    let u = upd(&a, vec![Value::U32(7)]);
    let stages = [Prefetch::Index, Prefetch::Entry, Prefetch::Contributions];
    h.e.prefetch(1, stages.map(|stage| (stage, IN, &u)));
    assert_eq!(u.memo.get() as u32, 1, "slot 0 noted");
    h.e.tick(1_000);
    assert!(h.agg(&a, 1_000).is_none());
    h.send(0, &c, vec![Value::U32(3)], 1_000);
    h.e.update(1, IN, &u, 1_000);
    assert_eq!(h.agg(&a, 1_000), Some(vec![Value::U32(7)]));
    assert_eq!(h.agg(&c, 1_000), Some(vec![Value::U32(3)]));
    assert_eq!(h.e.tables()[0].entries, 2);
}

/// A key's hash noted for one table serves another: a DEFINE queued
/// between the prefetch and the update may bind the update's table id to
/// another table.
#[test]
fn a_noted_hash_holds_after_a_table_id_is_redefined() {
    let mut h = H::new(1, def(IN, "/t", KeyType::Ipv4, 4, 1_000, &[("gpc0", 1, 0)]));
    let other = def(5, "/u", KeyType::Ipv4, 4, 1_000, &[("gpc0", 1, 0)]);
    h.e.table_defined(0, 5, &other, 0);
    let a = [1, 1, 1, 1];
    h.send(0, &a, vec![Value::U32(5)], 0);
    let u = upd(&a, vec![Value::U32(7)]);
    let stages = [Prefetch::Index, Prefetch::Entry, Prefetch::Contributions];
    h.e.prefetch(0, stages.map(|stage| (stage, 5, &u)));
    assert_ne!(u.memo.get(), 0, "the hash is noted");
    let input = h.input.clone();
    h.e.table_defined(
        0,
        5,
        &Arc::new(TableDef {
            id: 5,
            ..(*input).clone()
        }),
        0,
    );
    h.e.update(0, 5, &u, 0);
    assert_eq!(h.agg(&a, 0), Some(vec![Value::U32(7)]));
    let t = h.e.tables().into_iter().find(|t| t.input == "/t").unwrap();
    assert_eq!(t.entries, 1, "the key updated in place, not added twice");
}

#[test]
fn output_definition_copies_the_input_shape() {
    let mut input = (*counters_def()).clone();
    input.unknown_types = 1 << 40;
    let h = H::new(1, Arc::new(input));
    let outs = h.e.outputs_for(0);
    assert_eq!(outs.len(), 1);
    let o = &outs[0];
    assert_eq!((o.id, o.name.as_str()), (1, "/t.agg"));
    assert!(o.same_shape(&h.input));
    assert_eq!(o.unknown_types, 0, "only columns we can encode");
    assert_eq!(o.expire, h.input.expire);
}

#[test]
fn from_nonagg_mapping() {
    let mut e = Engine::new(EngineConfig {
        from: Some(".nonagg".into()),
        to: ".agg".into(),
        forward: vec![],
        ..EngineConfig::default()
    });
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    let cols = &[("http_req_cnt", 1, 0)];
    let input = def(1, "/req.nonagg", KeyType::String, 33, 0, cols);
    let output = def(2, "/req.agg", KeyType::String, 33, 0, cols);
    let other = def(3, "/req", KeyType::String, 33, 0, cols);
    assert_eq!(
        e.table_defined(0, 1, &input, 0),
        TableVerdict::Input {
            output: "/req.agg".into()
        }
    );
    assert_eq!(e.table_defined(0, 2, &output, 0), TableVerdict::Output);
    assert_eq!(e.table_defined(0, 3, &other, 0), TableVerdict::Ignored);
    e.update(0, 3, &upd(b"x", vec![Value::U32(1)]), 0);
    e.update(0, 1, &upd(b"x", vec![Value::U32(4)]), 0);
    assert_eq!(e.counters().ignored_table, 1);
    let outs = e.outputs_for(0);
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].name, "/req.agg");
    let out = e.poll_updates(0, 10, 0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].values.to_vec(), vec![Value::U32(4)]);
    let t = e.table_info("/req.nonagg").unwrap();
    assert_eq!(
        (t.input.as_str(), t.output.as_str()),
        ("/req.nonagg", "/req.agg")
    );
    assert_eq!(t.wanted_by, vec!["lb0".to_string()]);
}

#[test]
fn mismatched_shape_is_refused_while_the_first_keeps_working() {
    let cols = &[("http_req_cnt", 1, 0), ("http_req_rate", 1, P)];
    let first = def(IN, "/t", KeyType::String, 21, 0, cols);
    let mut h = H::new(1, first);
    h.e.peer_connected(1, "enterprise2", PeerRole::Node, 0);
    h.e.peer_connected(2, "enterprise3", PeerRole::Node, 0);
    let longer = def(7, "/t", KeyType::String, 33, 0, cols);
    let TableVerdict::Refused { reason } = h.e.table_defined(1, 7, &longer, 0) else {
        panic!("accepted a different key length");
    };
    assert_eq!(reason, "key length 33 differs from 21 announced by lb0");
    let period = def(
        7,
        "/t",
        KeyType::String,
        21,
        0,
        &[("http_req_cnt", 1, 0), ("http_req_rate", 1, 1000)],
    );
    let TableVerdict::Refused { reason } = h.e.table_defined(2, 7, &period, 0) else {
        panic!("accepted a different period");
    };
    // Re-announced before every batch: still refused, counted once.
    assert!(matches!(
        h.e.table_defined(2, 7, &period, 0),
        TableVerdict::Refused { .. }
    ));
    assert!(reason.contains("http_req_rate(1000)"), "{reason}");
    assert!(reason.contains("http_req_rate(10000)"), "{reason}");
    // The refused peers' updates are ignored; the first shape keeps working.
    h.e.update(1, 7, &upd(b"k", vec![Value::U32(100), f(0, 1, 0)]), 1);
    h.e.update(2, 7, &upd(b"k", vec![Value::U32(100), f(0, 1, 0)]), 1);
    h.send(0, b"k", vec![Value::U32(3), f(0, 0, 0)], 1);
    assert_eq!(h.agg(b"k", 1).unwrap()[0], Value::U32(3));
    assert_eq!(h.e.counters().ignored_refused, 2);
    assert_eq!(h.e.counters().refused_defs, 2);
    let t = h.e.table_info("/t.agg").unwrap();
    assert_eq!(t.refused, 2);
    assert!(t
        .last_refusal
        .unwrap()
        .starts_with("enterprise3: data types"));
    assert_eq!(t.sources.len(), 1);
    // The same peer redefining the same shape on a new connection is fine,
    // and its old remote ids are forgotten.
    h.e.peer_disconnected(0, 2);
    h.e.peer_connected(0, "lb0", PeerRole::Node, 3);
    h.e.update(0, IN, &upd(b"k", vec![Value::U32(9), f(0, 0, 0)]), 3);
    assert_eq!(h.e.counters().ignored_unknown, 1);
    h.connect(0, 3);
    h.send(0, b"k", vec![Value::U32(9), f(0, 0, 0)], 3);
    assert_eq!(h.agg(b"k", 3).unwrap()[0], Value::U32(9));
}

/// A burst of due timers is handled over several ticks, each bounded, and
/// the engine says it still has work due: 1.5 budgets of keys expiring at
/// once. A poll handles only a few of them.
#[test]
fn a_burst_of_timers_is_handled_in_bounded_ticks() {
    let mut h = H::new(
        1,
        def(IN, "/t", KeyType::Integer, 4, 1_000, &[("gpc0", 1, 0)]),
    );
    let n = (TICK_BUDGET + TICK_BUDGET / 2) as u32;
    for k in 0..n {
        h.send(0, &k.to_be_bytes(), vec![Value::U32(1)], 0);
    }
    assert_eq!(h.e.tables()[0].entries, n as usize);
    h.e.poll_updates(0, 1, 1_000);
    let left = h.e.tables()[0].entries;
    assert_eq!(left, n as usize - POLL_TICK_BUDGET);
    h.e.tick(1_000);
    let left = h.e.tables()[0].entries;
    assert_eq!(left, n as usize - POLL_TICK_BUDGET - TICK_BUDGET);
    assert!(h.e.next_deadline().is_some_and(|d| d <= 1_000));
    h.e.tick(1_000);
    assert_eq!(h.e.tables()[0].entries, 0);
    assert_eq!(h.e.next_deadline(), None);
}

/// A key whose deadline keeps moving earlier leaves a stale timer each
/// time (see `timers.rs`); with no tick at all, updates alone keep them
/// swept, and the deadline stays the latest one planned.
#[test]
fn stale_timers_stay_bounded_without_ticks() {
    let mut h = H::new(
        1,
        def(IN, "/t", KeyType::Integer, 4, 1_000_000, &[("gpc0", 1, 0)]),
    );
    for i in 0..10_000u32 {
        let u = Update {
            expire: Some(1_000_000 - i),
            ..upd(&[0, 0, 0, 1], vec![Value::U32(i)])
        };
        h.e.update(0, IN, &u, 0);
    }
    let held = h.e.timers_held();
    assert!((1..=2 * 1024 + 1).contains(&held), "{held} timers held");
    assert_eq!(h.e.next_wake(), Some(1_000_000 - 9_999));
    h.e.tick(1_000_000 - 9_999);
    assert_eq!(h.e.tables()[0].entries, 0);
}

/// One node's contribution lasts an hour while another's keeps coming and
/// lapsing: each time the key goes back to sleep until the first one's
/// expiry, a timer entry identical to an older, stale one. A sweep keeps
/// one of them; comparing each with the key's deadline kept them all, for
/// the hour.
#[test]
fn a_sweep_keeps_one_timer_per_key() {
    let mut h = H::new(
        2,
        def(IN, "/t", KeyType::Integer, 4, 3_600_000, &[("gpc0", 1, 0)]),
    );
    let k = [0, 0, 0, 1];
    h.send(0, &k, vec![Value::U32(1)], 0);
    for i in 0..3_000u64 {
        let u = Update {
            expire: Some(10),
            ..upd(&k, vec![Value::U32(1)])
        };
        h.e.update(1, IN, &u, 20 * i);
        h.e.tick(20 * i + 10);
    }
    assert_eq!(h.e.next_wake(), Some(3_600_000));
    let held = h.e.timers_held();
    assert!((1..=2 * 1024 + 1).contains(&held), "{held} timers held");
    // The sweeps' marks are gone: the key still expires on time.
    h.e.tick(3_599_999);
    assert_eq!(h.e.tables()[0].entries, 1);
    h.e.tick(3_600_000);
    assert_eq!(h.e.tables()[0].entries, 0);
}

#[test]
fn expiry_removes_a_contribution_then_the_key() {
    let mut h = H::new(2, def(IN, "/t", KeyType::Ipv4, 4, 1_000, &[("gpc0", 1, 0)]));
    let k = [1, 1, 1, 1];
    h.send(0, &k, vec![Value::U32(5)], 0);
    h.send(1, &k, vec![Value::U32(7)], 500);
    let out = h.drain(0, 600);
    assert_eq!(out[0].values.to_vec(), vec![Value::U32(12)]);
    // The longest remaining lifetime among the contributions.
    assert_eq!(out[0].expire, Some(900));
    assert_eq!(h.e.next_wake(), Some(1_000));
    h.e.tick(999);
    assert!(!h.e.has_pending(0));
    h.e.tick(1_000);
    assert!(h.e.has_pending(0));
    let out = h.drain(0, 1_000);
    assert_eq!(out[0].values.to_vec(), vec![Value::U32(7)]);
    assert_eq!(out[0].expire, Some(500));
    assert_eq!(h.e.counters().expired, 1);
    // The last one lapses: the key is dropped and not published any more.
    assert_eq!(h.e.next_wake(), Some(1_500));
    h.e.tick(1_500);
    assert!(!h.e.has_pending(0));
    assert!(h.drain(0, 1_500).is_empty());
    assert_eq!(h.e.tables()[0].entries, 0);
    assert!(h.e.tables()[0].sources.is_empty());
    assert_eq!(h.e.next_wake(), None);
    assert!(h.agg(&k, 1_500).is_none());
}

#[test]
fn renewal_and_timed_updates() {
    let mut h = H::new(2, def(IN, "/t", KeyType::Ipv4, 4, 1_000, &[("gpc0", 1, 0)]));
    let k = [1, 1, 1, 1];
    h.send(0, &k, vec![Value::U32(5)], 0);
    // Renewed at 800: lives until 1800; the timer at 1000 wakes for nothing.
    h.send(0, &k, vec![Value::U32(6)], 800);
    h.drain(0, 800);
    h.e.tick(1_000);
    assert!(!h.e.has_pending(0));
    assert_eq!(h.e.next_wake(), Some(1_800));
    // A timed update (full resync) brings its own remaining lifetime,
    // capped to the table's expire.
    let mut u = upd(&k, vec![Value::U32(1)]);
    u.expire = Some(300);
    h.e.update(1, IN, &u, 1_000);
    let out = h.drain(0, 1_000);
    assert_eq!(out[0].values.to_vec(), vec![Value::U32(7)]);
    assert_eq!(out[0].expire, Some(800));
    u.expire = Some(50_000);
    h.e.update(1, IN, &u, 1_000);
    assert_eq!(h.drain(0, 1_000)[0].expire, Some(1_000));
    let c = h.e.key_info("/t", &k, 1_000, true).unwrap();
    let lifetimes: Vec<_> = c.sources.iter().map(|s| s.expire).collect();
    assert_eq!(lifetimes, vec![Some(800), Some(1_000)]);
}

#[test]
fn never_expiring_contributions() {
    let mut h = H::new(2, def(IN, "/t", KeyType::Ipv4, 4, 0, &[("gpc0", 1, 0)]));
    let mut u = upd(&[1, 2, 3, 4], vec![Value::U32(1)]);
    // A table without expire: a timed update does not make it expire.
    u.expire = Some(10);
    h.e.update(0, IN, &u, 0);
    h.e.update(1, IN, &u, 0);
    assert_eq!(h.e.next_wake(), None);
    assert_eq!(h.drain(0, 100)[0].expire, None);
}

#[test]
fn coalescing_100_updates_of_one_key() {
    let mut h = H::new(2, counters_def());
    for i in 0..100 {
        h.send(1, b"abcd", counters(i, i, 0, i as u64), i as u64);
    }
    assert!(h.e.has_pending(0));
    let out = h.drain(0, 100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].values.to_vec(), counters(99, 99, 0, 99));
    assert!(!h.e.has_pending(0));
    // Bounded memory: the change tree holds one item per key.
    assert_eq!(h.e.tables[0].changes_len(), 1);
}

#[test]
fn slow_peer_lags_and_gets_latest_values_fast_peer_keeps_up() {
    let mut h = H::new(3, counters_def());
    let (fast, slow, src) = (0, 1, 2);
    let keys: Vec<[u8; 4]> = (0..10u8).map(|i| [10, 0, 0, i]).collect();
    let mut fast_seen = 0;
    for round in 0..5u32 {
        for k in &keys {
            h.send(src, k, counters(round, 0, 0, 0), round as u64);
        }
        fast_seen += h.drain(fast, round as u64).len();
        assert!(!h.e.has_pending(fast));
    }
    assert_eq!(fast_seen, 50);
    // The slow peer never polled: it has each key once, with its latest
    // value, oldest change first, whatever its batch size.
    assert!(h.e.has_pending(slow));
    let mut got = Vec::new();
    loop {
        let batch = h.e.poll_updates(slow, 3, 10);
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3);
        got.extend(batch);
    }
    assert_eq!(got.len(), 10);
    for (u, k) in got.iter().zip(&keys) {
        assert_eq!(&u.key[..], k);
        assert_eq!(u.values[0], Value::U32(4));
    }
    // A change after a partial read goes behind the cursor's end.
    h.send(src, &keys[0], counters(9, 0, 0, 0), 11);
    h.send(src, &keys[5], counters(9, 0, 0, 0), 11);
    let out = h.e.poll_updates(slow, 1, 11);
    assert_eq!(&out[0].key[..], &keys[0]);
    let out = h.e.poll_updates(slow, 10, 11);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].key[..], &keys[5]);
}

#[test]
fn updates_across_tables_come_oldest_first() {
    let mut e = Engine::new(cfg_any());
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    let a = def(1, "/a", KeyType::Ipv4, 4, 0, &[("gpc0", 1, 0)]);
    let b = def(2, "/b", KeyType::Ipv4, 4, 0, &[("gpc0", 1, 0)]);
    e.table_defined(0, 1, &a, 0);
    e.table_defined(0, 2, &b, 0);
    e.table_defined(0, 3, &def(3, "/a.agg", KeyType::Ipv4, 4, 0, &[]), 0);
    e.table_defined(0, 4, &def(4, "/b.agg", KeyType::Ipv4, 4, 0, &[]), 0);
    e.update(0, 2, &upd(b"b001", vec![Value::U32(1)]), 0);
    e.update(0, 1, &upd(b"a001", vec![Value::U32(1)]), 0);
    e.update(0, 2, &upd(b"b002", vec![Value::U32(1)]), 0);
    let keys: Vec<_> = e
        .poll_updates(0, 10, 0)
        .into_iter()
        .map(|u| (u.table, u.key.to_vec()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (2, b"b001".to_vec()),
            (1, b"a001".to_vec()),
            (2, b"b002".to_vec())
        ]
    );
}

#[test]
fn resend_all_and_reconnect_send_everything_again() {
    let mut h = H::new(2, counters_def());
    for i in 0..5u8 {
        h.send(1, &[0, 0, 0, i], counters(1, 0, 0, 0), 0);
    }
    assert_eq!(h.drain(0, 0).len(), 5);
    assert!(!h.e.has_pending(0));
    h.e.resend_all(0);
    assert!(h.e.has_pending(0));
    assert_eq!(h.drain(0, 0).len(), 5);
    h.e.peer_disconnected(0, 1);
    h.connect(0, 2);
    assert_eq!(h.drain(0, 2).len(), 5);
}

/// The peers' lowest cursors are found once per round (`poll::LowCursors`).
/// A peer asking for a resync in the middle of a round is counted at its
/// new place: an aggregate computed for the others is kept for it too,
/// instead of dropped as if it had it already.
#[test]
fn a_resync_within_a_round_keeps_the_aggregates_it_needs() {
    let mut h = H::new(3, counters_def());
    h.send(0, &[0, 0, 0, 1], counters(1, 0, 0, 0), 0);
    assert_eq!(h.drain(0, 5).len(), 1);
    assert_eq!(h.drain(1, 5).len(), 1);
    assert_eq!(h.e.tables[0].computed.len(), 1, "kept for peer 2");
    // A new round: peers 0 and 1 are found past the change, peer 2 not.
    assert!(h.drain(0, 6).is_empty());
    h.e.resend_all(1);
    assert_eq!(h.drain(2, 6).len(), 1);
    assert_eq!(h.e.tables[0].computed.len(), 1, "kept for peer 1 again");
    assert_eq!(h.drain(1, 7).len(), 1);
    assert!(h.e.tables[0].computed.is_empty(), "everyone has it");
}

#[test]
fn resync_finished_drops_stale_contributions_of_that_peer_only() {
    let mut h = H::new(2, counters_def());
    let (k1, k2, k3) = ([0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3]);
    h.send(0, &k1, counters(1, 0, 0, 0), 0);
    h.send(0, &k2, counters(2, 0, 0, 0), 0);
    h.send(0, &k3, counters(3, 0, 0, 0), 0);
    h.send(1, &k2, counters(20, 0, 0, 0), 0);
    h.send(1, &k3, counters(30, 0, 0, 0), 0);
    h.drain(0, 0);
    // Node 0 restarts: it only knows k1 now (and a new k2 for node 1 keeps
    // node 1's older contributions alive).
    h.e.peer_disconnected(0, 10);
    h.connect(0, 20);
    h.send(0, &k1, counters(1, 0, 0, 0), 21);
    h.send(1, &k2, counters(21, 0, 0, 0), 21);
    h.e.resync_finished(1, 22); // node 1 did not reconnect: nothing is stale
    assert_eq!(h.e.counters().stale_dropped, 0);
    h.e.resync_finished(0, 22);
    assert_eq!(h.e.counters().stale_dropped, 2);
    assert_eq!(h.agg(&k1, 22).unwrap()[0], Value::U32(1));
    assert_eq!(h.agg(&k2, 22).unwrap()[0], Value::U32(21));
    assert_eq!(h.agg(&k3, 22).unwrap()[0], Value::U32(30));
    // Node 1 restarts and teaches nothing: its keys go, k1 stays.
    h.connect(1, 30);
    h.e.resync_finished(1, 31);
    assert_eq!(h.agg(&k1, 31).unwrap()[0], Value::U32(1));
    assert!(h.agg(&k2, 31).is_none());
    assert!(h.agg(&k3, 31).is_none());
    assert_eq!(h.e.tables()[0].entries, 1);
}

#[test]
fn latest_server_id_and_server_key() {
    let stick = def(
        IN,
        "be",
        KeyType::String,
        33,
        0,
        &[("server_id", 1, 0), ("server_key", 1, 0)],
    );
    let mut h = H::new(3, stick);
    let s = |v: &'static str| Value::dict(Bytes::from_static(v.as_bytes()));
    let k = b"client";
    h.send(0, k, vec![Value::ServerId(1), s("s1")], 1);
    h.send(1, k, vec![Value::ServerId(2), s("s2")], 1);
    assert_eq!(h.agg(k, 1).unwrap(), vec![Value::ServerId(2), s("s2")]);
    // DictUnknown leaves node 0's stored "s1", received before "s2".
    h.send(0, k, vec![Value::ServerId(3), Value::DictUnknown], 2);
    assert_eq!(h.agg(k, 2).unwrap(), vec![Value::ServerId(3), s("s2")]);
    h.send(0, k, vec![Value::ServerId(3), s("s3")], 3);
    assert_eq!(h.agg(k, 3).unwrap(), vec![Value::ServerId(3), s("s3")]);
    // A new source that never delivered a name does not hide the others'.
    h.send(2, k, vec![Value::ServerId(-1), Value::DictUnknown], 4);
    assert_eq!(h.agg(k, 4).unwrap(), vec![Value::ServerId(-1), s("s3")]);
    // "No server" (server_id 0, no server_key: an entry no `stick` rule
    // wrote) hides nobody's choice; node 1 re-sending its unchanged
    // server_id 2 is no new write either.
    h.send(1, k, vec![Value::ServerId(2), Value::Dict(None)], 5);
    assert_eq!(h.agg(k, 5).unwrap(), vec![Value::ServerId(-1), s("s3")]);
    // Interned names follow the live contributions.
    assert_eq!(h.e.dict.len(), 1);
    let detail = h.e.key_info("be.agg", k, 5, true).unwrap();
    let names: Vec<_> = detail.sources.iter().map(|c| c.values[1].clone()).collect();
    assert_eq!(names, vec![s("s3"), Value::Dict(None), Value::Dict(None)]);
}

/// Session persistence across nodes (issue 5): the latest *write* of a
/// server wins. A node re-sends its unchanged choice whenever it touches
/// the entry (a `stick match` refreshes it, a `track-sc` on a table that
/// also counts, a reconnection's teach): that must not undo a later choice
/// made on another node. An entry without a server (created by a counter
/// before any `stick` rule, or a request denied before the backend) hides
/// nothing. Counters in the same table are summed as usual.
#[test]
fn latest_write_of_a_server_wins_over_unchanged_resends() {
    let mixed = def(
        IN,
        "/sessions",
        KeyType::Ipv4,
        4,
        60_000,
        &[
            ("server_id", 1, 0),
            ("http_req_cnt", 1, 0),
            ("server_key", 1, 0),
        ],
    );
    let mut h = H::new(3, mixed);
    let s = |v: &'static str| Value::dict(Bytes::from_static(v.as_bytes()));
    let v = |id: i32, cnt: u32, key: Value| vec![Value::ServerId(id), Value::U32(cnt), key];
    let k = [10, 0, 0, 1];
    // Node 0 picks s1; node 1 fails over to s2 later: s2 everywhere.
    h.send(0, &k, v(1, 1, s("s1")), 1);
    h.send(1, &k, v(2, 1, s("s2")), 2);
    assert_eq!(h.agg(&k, 2).unwrap(), v(2, 2, s("s2")));
    // Node 0 touches its stale entry (still s1) before storing s2 itself:
    // its re-send of s1 is no new write; its counter still adds up.
    h.send(0, &k, v(1, 2, s("s1")), 3);
    assert_eq!(h.agg(&k, 3).unwrap(), v(2, 3, s("s2")));
    // Node 2 counts a request that never reached the backend: no server.
    h.send(2, &k, v(0, 1, Value::Dict(None)), 4);
    assert_eq!(h.agg(&k, 4).unwrap(), v(2, 4, s("s2")));
    // Node 0 then really writes s2, and later s1 again: each is a write.
    h.send(0, &k, v(2, 3, s("s2")), 5);
    assert_eq!(h.agg(&k, 5).unwrap(), v(2, 5, s("s2")));
    h.send(0, &k, v(1, 4, s("s1")), 6);
    assert_eq!(h.agg(&k, 6).unwrap(), v(1, 6, s("s1")));
    // Node 1 reconnects and teaches its unchanged s2 again: still s1.
    h.connect(1, 7);
    h.send(1, &k, v(2, 1, s("s2")), 7);
    h.e.resync_finished(1, 7);
    assert_eq!(h.agg(&k, 7).unwrap(), v(1, 6, s("s1")));
    // Only servers nobody holds: no server.
    let k2 = [10, 0, 0, 2];
    h.send(2, &k2, v(0, 1, Value::Dict(None)), 8);
    assert_eq!(h.agg(&k2, 8).unwrap(), v(0, 1, Value::Dict(None)));
}

#[test]
fn interned_names_are_released_with_their_contributions() {
    let stick = def(
        IN,
        "be",
        KeyType::String,
        33,
        1_000,
        &[("server_key", 1, 0)],
    );
    let mut h = H::new(2, stick);
    let s = |v: &'static str| Value::dict(Bytes::from_static(v.as_bytes()));
    h.send(0, b"a", vec![s("s1")], 0);
    h.send(1, b"a", vec![s("s2")], 0);
    h.send(1, b"b", vec![s("s2")], 0);
    assert_eq!(h.e.dict.len(), 2);
    h.send(0, b"a", vec![s("s2")], 1);
    assert_eq!(h.e.dict.len(), 1);
    h.e.tick(2_000);
    assert_eq!(h.e.dict.len(), 0);
}

#[test]
fn max_for_gpt0_and_gpt_arrays() {
    let tags = def(
        IN,
        "/tags",
        KeyType::Ipv6,
        16,
        0,
        &[("gpt0", 1, 0), ("gpc0", 1, 0)],
    );
    let mut h = H::new(2, tags);
    let k = [7u8; 16];
    h.send(0, &k, vec![Value::U32(1), Value::U32(1)], 0);
    h.send(1, &k, vec![Value::U32(0), Value::U32(1)], 0);
    assert_eq!(h.agg(&k, 0).unwrap(), vec![Value::U32(1), Value::U32(2)]);

    let arrays = def(
        IN,
        "/arr",
        KeyType::String,
        21,
        0,
        &[("gpt", 3, 0), ("gpc", 2, 0), ("gpc_rate", 2, 5_000)],
    );
    let mut h = H::new(2, arrays);
    let u = |g: [u32; 3], c: [u32; 2], r: [u32; 2]| {
        let mut v: Vec<Value> = g.iter().map(|&x| Value::U32(x)).collect();
        v.extend(c.iter().map(|&x| Value::U32(x)));
        v.extend(r.iter().map(|&x| f(0, x, 0)));
        v
    };
    h.send(0, b"k", u([1, 0, 5], [2, u32::MAX], [3, 0]), 0);
    h.send(1, b"k", u([0, 7, 2], [4, 1], [0, 9]), 0);
    assert_eq!(h.agg(b"k", 0).unwrap(), u([1, 7, 5], [6, u32::MAX], [3, 9]));
}

#[test]
fn updates_for_outputs_are_not_inputs() {
    let mut h = H::new(2, counters_def());
    h.send(0, b"abcd", counters(1, 0, 0, 0), 0);
    h.drain(0, 0);
    // Node 0 sends our own result back (a resync teach does that).
    h.e.update(0, OUT, &upd(b"abcd", counters(100, 0, 0, 0)), 1);
    h.e.update(0, OUT, &upd(b"efgh", counters(100, 0, 0, 0)), 1);
    assert_eq!(h.e.counters().ignored_output, 2);
    assert!(!h.e.has_pending(0));
    assert_eq!(h.agg(b"abcd", 1).unwrap()[0], Value::U32(1));
    assert!(h.agg(b"efgh", 1).is_none());
}

#[test]
fn outputs_for_declared_outputs_only_with_key_warnings() {
    let mut e = Engine::new(cfg_any());
    let cols = &[("gpc0", 1, 0)];
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    e.peer_connected(1, "lb1", PeerRole::Node, 0);
    e.peer_connected(2, "lb2", PeerRole::Node, 0);
    // lb1 declares the output before anybody announced the input.
    let out_bad = def(5, "/t.agg", KeyType::String, 21, 0, cols);
    assert_eq!(e.table_defined(1, 5, &out_bad, 0), TableVerdict::Output);
    assert!(e.outputs_for(1).is_empty());
    let input = def(1, "/t", KeyType::String, 33, 0, cols);
    e.table_defined(0, 1, &input, 0);
    e.table_defined(2, 9, &def(9, "/t.agg", KeyType::String, 33, 0, cols), 0);
    assert!(e.outputs_for(0).is_empty(), "lb0 did not declare /t.agg");
    assert_eq!(e.outputs_for(1).len(), 1);
    assert_eq!(e.outputs_for(2)[0].key_len, 33);
    e.update(0, 1, &upd(b"x", vec![Value::U32(1)]), 0);
    assert!(!e.has_pending(0));
    assert!(e.poll_updates(0, 10, 0).is_empty());
    assert_eq!(e.poll_updates(1, 10, 0).len(), 1);
    let t = e.table_info("/t.agg").unwrap();
    assert_eq!(t.wanted_by, vec!["lb1".to_string(), "lb2".to_string()]);
    assert_eq!(t.warnings.len(), 1);
    assert!(t.warnings[0].starts_with("lb1 declares /t.agg with key string len 21"));
    assert_eq!(e.output_warning(1, "/t.agg"), Some(t.warnings[0].clone()));
    assert_eq!(e.output_warning(2, "/t.agg"), None);
    assert!(format!("{e:?}").contains("keys: 1"));
}

#[test]
fn malformed_input_is_ignored_and_counted() {
    let mut h = H::new(1, counters_def());
    // Unknown peer, unknown remote id, wrong count, wrong kinds.
    h.e.update(42, IN, &upd(b"abcd", counters(1, 0, 0, 0)), 0);
    h.e.update(0, 99, &upd(b"abcd", counters(1, 0, 0, 0)), 0);
    h.send(0, b"abcd", vec![Value::U32(1)], 0);
    h.send(0, b"abcd", vec![Value::U64(1); 4], 0);
    h.send(0, b"abcd", vec![Value::DictUnknown; 4], 0);
    let c = h.e.counters();
    assert_eq!(
        (c.ignored_unknown, c.ignored_malformed, c.updates),
        (2, 3, 0)
    );
    assert!(h.e.tables()[0].entries == 0);
    // Calls about unknown peers do nothing.
    assert_eq!(
        h.e.table_defined(42, 1, &counters_def(), 0),
        TableVerdict::Ignored
    );
    h.e.resync_finished(42, 0);
    h.e.resend_all(42);
    h.e.peer_disconnected(42, 0);
    assert!(h.e.poll_updates(42, 10, 0).is_empty());
    assert!(h.e.outputs_for(42).is_empty());
    assert!(!h.e.has_pending(42));
    assert!(h.e.poll_updates(0, 0, 0).is_empty());
}

#[test]
fn up_peers_are_not_sources() {
    let mut e = Engine::new(cfg_intermediate());
    e.peer_connected(0, "top", PeerRole::Up, 0);
    let cols = &[("gpc0", 1, 0)];
    // Not forwarded: ignored, reported once per peer and name.
    let plain = def(1, "/t", KeyType::Ipv4, 4, 0, cols);
    let TableVerdict::Unexpected { reason } = e.table_defined(0, 1, &plain, 0) else {
        panic!("an unforwarded table from an up peer must be reported");
    };
    assert!(
        reason.contains("matches no 'forward' suffix (.agg)"),
        "{reason}"
    );
    assert_eq!(e.table_defined(0, 1, &plain, 0), TableVerdict::Ignored);
    e.update(0, 1, &upd(&[1, 2, 3, 4], vec![Value::U32(1)]), 0);
    assert_eq!(e.counters().ignored_table, 1);
    assert_eq!(
        e.table_defined(0, 2, &def(2, "/t.agg", KeyType::Ipv4, 4, 0, cols), 0),
        TableVerdict::Forwarded
    );
    // Our own output suffix coming from above: a loop, never an input.
    let ours = def(3, "/t.intermediate", KeyType::Ipv4, 4, 0, cols);
    let TableVerdict::Unexpected { reason } = e.table_defined(0, 3, &ours, 0) else {
        panic!("our output suffix from an up peer must be reported");
    };
    assert!(reason.contains("loop"), "{reason}");
    e.update(0, 3, &upd(&[1, 2, 3, 4], vec![Value::U32(1)]), 0);
    assert!(e.table_info("/t.intermediate").is_none());
    // A node declaring a forwarded name wants it; its updates for it are
    // echoes of what we relayed.
    e.peer_connected(1, "lb", PeerRole::Node, 0);
    assert_eq!(
        e.table_defined(1, 2, &def(2, "/t.agg", KeyType::Ipv4, 4, 0, cols), 0),
        TableVerdict::Output
    );
    e.update(1, 2, &upd(&[1, 2, 3, 4], vec![Value::U32(9)]), 0);
    assert_eq!(e.counters().ignored_output, 1);
    assert_eq!(e.counters().updates, 0);
}

// ---------------------------------------------------------------------------
// Several levels

fn cfg_intermediate() -> EngineConfig {
    EngineConfig {
        from: None,
        to: ".intermediate".into(),
        forward: vec![".agg".into()],
        ..EngineConfig::default()
    }
}

fn cfg_top() -> EngineConfig {
    EngineConfig {
        from: Some(".intermediate".into()),
        to: ".agg".into(),
        ..EngineConfig::default()
    }
}

fn names(defs: &[Arc<TableDef>]) -> Vec<&str> {
    defs.iter().map(|d| d.name.as_str()).collect()
}

/// Node `n` of an intermediate: defines `/t` (id 1), `/t.intermediate`
/// (id 2) and `/t.agg` (id 3), all of `cols`.
fn intermediate_node(e: &mut Engine, n: PeerId, cols: &[(&str, u32, u32)], now: u64) {
    e.peer_connected(n, &format!("lb{n}"), PeerRole::Node, now);
    for (id, name) in [(1, "/t"), (2, "/t.intermediate"), (3, "/t.agg")] {
        e.table_defined(n, id, &def(id, name, KeyType::Ipv4, 4, 10_000, cols), now);
    }
}

#[test]
fn an_intermediate_sends_up_and_down_and_announces_what_it_expects() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_intermediate());
    const TOP: PeerId = 9;
    e.peer_connected(TOP, "top", PeerRole::Up, 0);
    // Nothing known yet: nothing to announce.
    assert!(e.take_announcements(TOP).is_empty());
    intermediate_node(&mut e, 0, cols, 0);
    intermediate_node(&mut e, 1, cols, 0);
    // The input made the output and the forwarded table it expects back,
    // both with the input's shape, announced once to the up peer.
    let ann = e.take_announcements(TOP);
    assert_eq!(names(&ann), ["/t.intermediate", "/t.agg"]);
    assert!(ann
        .iter()
        .all(|d| d.same_shape(&def(0, "/t", KeyType::Ipv4, 4, 10_000, cols))));
    assert!(e.take_announcements(TOP).is_empty());
    assert!(
        e.take_announcements(0).is_empty(),
        "nodes are announced nothing"
    );
    // A resync request from the up peer announces them again.
    e.resend_all(TOP);
    assert_eq!(e.take_announcements(TOP).len(), 2);
    // The up peer gets the outputs without declaring them, never a
    // forwarded table; the nodes get what they declared.
    assert_eq!(names(&e.outputs_for(TOP)), ["/t.intermediate"]);
    assert_eq!(names(&e.outputs_for(0)), ["/t.intermediate", "/t.agg"]);
    let k = [10, 0, 0, 1];
    e.update(0, 1, &upd(&k, vec![Value::U32(3)]), 1);
    e.update(1, 1, &upd(&k, vec![Value::U32(4)]), 1);
    let up = e.poll_updates(TOP, 10, 1);
    assert_eq!(up.len(), 1);
    assert_eq!(
        (up[0].table, up[0].values.to_vec()),
        (1, vec![Value::U32(7)])
    );
    for n in [0, 1] {
        assert_eq!(
            e.poll_updates(n, 10, 1)[0].values.to_vec(),
            vec![Value::U32(7)]
        );
    }
    // The total comes back from above and is relayed to the nodes only.
    e.table_defined(TOP, 5, &def(5, "/t.agg", KeyType::Ipv4, 4, 10_000, cols), 2);
    e.update(TOP, 5, &upd(&k, vec![Value::U32(70)]), 2);
    assert!(e.poll_updates(TOP, 10, 2).is_empty());
    for n in [0, 1] {
        let out = e.poll_updates(n, 10, 2);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].table, out[0].values.to_vec()),
            (2, vec![Value::U32(70)])
        );
    }
    // The nodes' echoes change nothing.
    e.update(0, 3, &upd(&k, vec![Value::U32(70)]), 3);
    e.update(0, 2, &upd(&k, vec![Value::U32(7)]), 3);
    assert_eq!(e.counters().ignored_output, 2);
    assert!(!e.has_pending(1) && !e.has_pending(TOP));
    let t = e.table_info("/t.agg").unwrap();
    assert!(t.forwarded);
    assert_eq!(t.sources.len(), 1);
    assert_eq!(t.sources[0].name, "top");
}

#[test]
fn no_ascend_and_no_feedback() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(EngineConfig {
        no_ascend: true,
        ..cfg_intermediate()
    });
    e.peer_connected(9, "top", PeerRole::Up, 0);
    intermediate_node(&mut e, 0, cols, 0);
    e.update(0, 1, &upd(b"abcd", vec![Value::U32(3)]), 0);
    assert!(e.outputs_for(9).is_empty());
    assert!(!e.has_pending(9));
    assert!(e.poll_updates(9, 10, 0).is_empty());
    // It still expects (and relays) the upper level's totals.
    assert_eq!(names(&e.take_announcements(9)), ["/t.agg"]);
    assert_eq!(
        e.poll_updates(0, 10, 0)[0].values.to_vec(),
        vec![Value::U32(3)]
    );

    let mut e = Engine::new(EngineConfig {
        no_feedback: true,
        ..cfg_intermediate()
    });
    e.peer_connected(9, "top", PeerRole::Up, 0);
    intermediate_node(&mut e, 0, cols, 0);
    e.update(0, 1, &upd(b"abcd", vec![Value::U32(3)]), 0);
    assert_eq!(names(&e.outputs_for(0)), ["/t.agg"]);
    assert!(e.poll_updates(0, 10, 0).is_empty());
    assert_eq!(
        e.poll_updates(9, 10, 0)[0].values.to_vec(),
        vec![Value::U32(3)]
    );
    e.table_defined(9, 1, &def(1, "/t.agg", KeyType::Ipv4, 4, 10_000, cols), 1);
    e.update(9, 1, &upd(b"abcd", vec![Value::U32(30)]), 1);
    let out = e.poll_updates(0, 10, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].values.to_vec(), vec![Value::U32(30)]);
}

/// Two top levels (HA) feed the same forwarded key: the latest value
/// received wins, is relayed unchanged (a rate re-based by the time it
/// waited here) with its own remaining lifetime, and is never republished
/// here; a contribution that lapses leaves the other one.
#[test]
fn forwarding_latest_value_in_virtual_time() {
    let cols = &[("http_req_rate", 1, P), ("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_intermediate());
    intermediate_node(&mut e, 0, cols, 0);
    let fwd = def(7, "/t.agg", KeyType::Ipv4, 4, 10_000, cols);
    for top in [8, 9] {
        e.peer_connected(top, &format!("top{top}"), PeerRole::Up, 0);
        assert_eq!(e.table_defined(top, 7, &fwd, 0), TableVerdict::Forwarded);
    }
    let k = [1, 1, 1, 1];
    let timed = |values: Vec<Value>, expire: u32| Update {
        expire: Some(expire),
        ..upd(&k, values)
    };
    // top8 at 100, valid 5 s.
    e.update(
        8,
        7,
        &timed(vec![f(1_000, 5, 10), Value::U32(40)], 5_000),
        100,
    );
    let out = e.poll_updates(0, 10, 600);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].table, 2);
    assert_eq!(
        out[0].values.to_vec(),
        vec![f(1_500, 5, 10), Value::U32(40)]
    );
    assert_eq!(out[0].expire, Some(4_500));
    // No republish of a forwarded rate: the only deadline is the expiry.
    assert_eq!(e.next_wake(), Some(5_100));
    // top9 at 700, valid 1 s: newer, so relayed although it is shorter.
    e.update(9, 7, &timed(vec![f(0, 6, 10), Value::U32(41)], 1_000), 700);
    let out = e.poll_updates(0, 10, 700);
    assert_eq!(out[0].values.to_vec(), vec![f(0, 6, 10), Value::U32(41)]);
    assert_eq!(out[0].expire, Some(1_000));
    // Once it lapses, top8's value (still valid) is relayed again.
    e.tick(1_700);
    let out = e.poll_updates(0, 10, 1_700);
    assert_eq!(
        out[0].values.to_vec(),
        vec![f(2_600, 5, 10), Value::U32(40)]
    );
    assert_eq!(out[0].expire, Some(3_400));
    assert_eq!(e.counters().expired, 1);
    // top8 restarts and teaches nothing: its stale contribution goes, and
    // with it the key (the nodes' copies expire by themselves).
    e.peer_disconnected(8, 2_000);
    e.peer_connected(8, "top8", PeerRole::Up, 2_100);
    e.resync_finished(8, 2_200);
    assert_eq!(e.counters().stale_dropped, 1);
    assert!(e.poll_updates(0, 10, 2_200).is_empty());
    assert_eq!(e.table_info("/t.agg").unwrap().entries, 0);
}

#[test]
fn a_forwarded_table_of_another_shape_is_refused() {
    let mut e = Engine::new(cfg_intermediate());
    intermediate_node(&mut e, 0, &[("gpc0", 1, 0)], 0);
    e.peer_connected(9, "top", PeerRole::Up, 0);
    let other = def(1, "/t.agg", KeyType::Ipv4, 4, 10_000, &[("gpc1", 1, 0)]);
    let TableVerdict::Refused { reason } = e.table_defined(9, 1, &other, 0) else {
        panic!("accepted another shape");
    };
    assert!(
        reason.contains("announced by /t (as /t.intermediate)"),
        "{reason}"
    );
    e.update(9, 1, &upd(b"abcd", vec![Value::U32(1)]), 0);
    assert_eq!(e.counters().ignored_refused, 1);
}

#[test]
fn a_top_level_announces_its_outputs_to_down_peers() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_top());
    for d in [0, 1] {
        e.peer_connected(d, &format!("mid{d}"), PeerRole::Down, 0);
    }
    // mid0 announces what it sends and what it expects back.
    let inter = def(1, "/t.intermediate", KeyType::Ipv4, 4, 10_000, cols);
    let agg = def(2, "/t.agg", KeyType::Ipv4, 4, 10_000, cols);
    assert_eq!(e.take_announcements(0).len(), 0);
    assert_eq!(e.table_defined(0, 2, &agg, 0), TableVerdict::Output);
    assert!(matches!(
        e.table_defined(0, 1, &inter, 0),
        TableVerdict::Input { .. }
    ));
    // Every down peer learns the output's definition, mid1 before it
    // declared anything (so it can wire its nodes to it).
    assert_eq!(names(&e.take_announcements(0)), ["/t.agg"]);
    assert_eq!(names(&e.take_announcements(1)), ["/t.agg"]);
    e.update(0, 1, &upd(b"abcd", vec![Value::U32(5)]), 1);
    assert_eq!(
        e.poll_updates(0, 10, 1)[0].values.to_vec(),
        vec![Value::U32(5)]
    );
    // mid1 gets the totals once it declares the table.
    assert!(!e.has_pending(1));
    e.table_defined(1, 4, &agg, 2);
    e.table_defined(1, 3, &inter, 2);
    e.update(1, 3, &upd(b"abcd", vec![Value::U32(6)]), 2);
    assert_eq!(
        e.poll_updates(1, 10, 2)[0].values.to_vec(),
        vec![Value::U32(11)]
    );
}

/// `group`: replicas count once per key (the largest value of each summed
/// element, for a rate the largest window), different groups and ungrouped
/// peers are summed; maxima are unchanged.
#[test]
fn groups_count_replicas_once() {
    let cols = &[
        ("gpc0", 1, 0),
        ("conn_cnt", 1, 0),
        ("gpt0", 1, 0),
        ("http_req_rate", 1, P),
        ("bytes_in_cnt", 1, 0),
    ];
    let inter = def(1, "/t.intermediate", KeyType::Ipv4, 4, 0, cols);
    let agg = def(2, "/t.agg", KeyType::Ipv4, 4, 0, cols);
    let v = |gpc0: u32, conn: u32, gpt: u32, rate: FreqCtr, bytes: u64| {
        vec![
            Value::U32(gpc0),
            Value::U32(conn),
            Value::U32(gpt),
            Value::Freq(rate),
            Value::U64(bytes),
        ]
    };
    let r = |curr: u32| FreqCtr {
        elapsed: 0,
        curr,
        prev: 0,
    };
    let run = |groups: [Option<u32>; 4]| {
        let mut e = Engine::new(cfg_top());
        for (d, g) in groups.into_iter().enumerate() {
            e.peer_connected(d, &format!("mid{d}"), PeerRole::Down, 0);
            e.set_group(d, g);
            e.table_defined(d, 1, &inter, 0);
            e.table_defined(d, 2, &agg, 0);
        }
        let k = b"abcd";
        e.update(0, 1, &upd(k, v(10, 3, 1, r(100), 7)), 0);
        e.update(1, 1, &upd(k, v(12, 1, 4, r(90), 9)), 0);
        e.update(2, 1, &upd(k, v(5, 5, 2, r(20), 1)), 0);
        e.update(3, 1, &upd(k, v(7, 7, 3, r(30), 2)), 0);
        e.poll_updates(0, 10, 0).remove(0).values
    };
    let read = |v: &Value| freq_of(v).read_after(0, P);
    // mid0 and mid1 replicas (group 1), mid2 alone, mid3 in group 2.
    let out = run([Some(1), Some(1), None, Some(2)]);
    assert_eq!(out[0], Value::U32(12 + 5 + 7), "gpc0: largest of the group");
    assert_eq!(
        out[1],
        Value::U32(3 + 5 + 7),
        "conn_cnt: element by element"
    );
    assert_eq!(out[2], Value::U32(4), "gpt0: the maximum anyway");
    assert_eq!(read(&out[3]), 100 + 20 + 30, "rate: the largest window");
    assert_eq!(out[4], Value::U64(9 + 1 + 2));
    // Without groups everything is summed (replicas counted twice).
    let out = run([None; 4]);
    assert_eq!(out[0], Value::U32(34));
    assert_eq!(read(&out[3]), 240);
    // One group of four: the largest of each element.
    let out = run([Some(u32::MAX); 4]);
    assert_eq!(out[0], Value::U32(12));
    assert_eq!(out[1], Value::U32(7));
    assert_eq!(read(&out[3]), 100);
}

/// A top level whose two `down` peers mid0 and mid1 are replicas (group
/// 1), both teaching `/t.intermediate` (table 1) with `cols`; `.agg` is
/// `/t.agg`.
fn two_replicas(cols: &[(&str, u32, u32)]) -> Engine {
    let inter = def(1, "/t.intermediate", KeyType::Ipv4, 4, 0, cols);
    let mut e = Engine::new(cfg_top());
    for d in [0, 1] {
        e.peer_connected(d, &format!("mid{d}"), PeerRole::Down, 0);
        e.set_group(d, Some(1));
        e.table_defined(d, 1, &inter, 0);
    }
    e.table_defined(0, 2, &def(2, "/t.agg", KeyType::Ipv4, 4, 0, cols), 0);
    e
}

/// The group member with the largest window is chosen at each instant:
/// a replica that stopped (its window decays) gives way to a live one.
#[test]
fn grouped_rates_follow_the_largest_window_over_time() {
    let cols = &[("http_req_rate", 1, P)];
    let mut e = two_replicas(cols);
    let k = b"abcd";
    // mid0's last word at 0 (it went away); mid1 keeps reporting.
    e.update(0, 1, &upd(k, vec![f(0, 50, 0)]), 0);
    e.update(1, 1, &upd(k, vec![f(0, 40, 0)]), 0);
    let at = |e: &mut Engine, now: u64| {
        e.tick(now);
        freq_of(&e.key_info("/t.agg", k, now, false).unwrap().values[0]).read_after(0, P)
    };
    assert_eq!(at(&mut e, 0), 50);
    e.update(1, 1, &upd(k, vec![f(5_000, 10, 40)]), 15_000);
    // mid0's window: 50 × 5/10 = 25; mid1's: 40 × 5/10 + 10 = 30.
    assert_eq!(at(&mut e, 15_000), 30);
}

/// A peer's group is a property of the source, kept by each table as of
/// the source's latest update: a new group (a reload) counts for all its
/// contributions to a table from its next update to that table on.
#[test]
fn a_new_group_counts_from_the_next_update() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = two_replicas(cols);
    let (k, k2) = (b"abcd", b"efgh");
    let total = |e: &Engine, k: &[u8]| e.key_info("/t.agg", k, 1, false).unwrap().values[0].clone();
    e.update(0, 1, &upd(k, vec![Value::U32(10)]), 0);
    e.update(1, 1, &upd(k, vec![Value::U32(12)]), 0);
    e.update(0, 1, &upd(k2, vec![Value::U32(3)]), 0);
    e.update(1, 1, &upd(k2, vec![Value::U32(4)]), 0);
    assert_eq!(total(&e, k), Value::U32(12), "replicas: the largest");
    e.set_group(1, None);
    assert_eq!(total(&e, k), Value::U32(12), "nothing new from mid1 yet");
    e.update(1, 1, &upd(k, vec![Value::U32(12)]), 1);
    assert_eq!(total(&e, k), Value::U32(22), "mid1 counts on its own now");
    assert_eq!(total(&e, k2), Value::U32(7), "and so for its other keys");
}

/// A middle level of a chain (`from .intermediate to .regional`, `forward
/// .agg`, with both `up` and `down` peers): sums its down peers up, relays
/// the top's totals down, announces forwarded tables (not its outputs) down.
#[test]
fn a_middle_level_of_a_chain() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(EngineConfig {
        from: Some(".intermediate".into()),
        to: ".regional".into(),
        forward: vec![".agg".into()],
        ..EngineConfig::default()
    });
    let (low, top) = (0, 1);
    e.peer_connected(low, "low", PeerRole::Down, 0);
    e.peer_connected(top, "top", PeerRole::Up, 0);
    let d = |id, name| def(id, name, KeyType::Ipv4, 4, 10_000, cols);
    assert_eq!(
        e.table_defined(low, 2, &d(2, "/t.agg"), 0),
        TableVerdict::Output
    );
    assert_eq!(
        e.table_defined(low, 1, &d(1, "/t.intermediate"), 0),
        TableVerdict::Input {
            output: "/t.regional".into()
        }
    );
    assert_eq!(names(&e.take_announcements(top)), ["/t.regional", "/t.agg"]);
    assert_eq!(names(&e.take_announcements(low)), ["/t.agg"]);
    e.update(low, 1, &upd(b"abcd", vec![Value::U32(4)]), 1);
    let up = e.poll_updates(top, 10, 1);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].values.to_vec(), vec![Value::U32(4)]);
    assert!(
        e.poll_updates(low, 10, 1).is_empty(),
        "outputs do not go down"
    );
    assert_eq!(
        e.table_defined(top, 3, &d(3, "/t.agg"), 2),
        TableVerdict::Forwarded
    );
    e.update(top, 3, &upd(b"abcd", vec![Value::U32(40)]), 2);
    let down = e.poll_updates(low, 10, 2);
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].values.to_vec(), vec![Value::U32(40)]);
    assert!(
        e.poll_updates(top, 10, 2).is_empty(),
        "forwarded tables never go up"
    );
}

// ---------------------------------------------------------------------------
// Property tests

#[derive(Debug, Clone)]
enum Op {
    /// (node, key, gpc0, bytes)
    Send(usize, u8, u32, u64),
    Tick(u64),
    Reconnect(usize),
    ResyncFinished(usize),
    Poll(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let big = prop_oneof![0u32..1_000, (u32::MAX - 1_000)..=u32::MAX];
    let big64 = prop_oneof![0u64..1_000, (u64::MAX - 1_000)..=u64::MAX];
    prop_oneof![
        8 => (0usize..3, 0u8..5, big, big64).prop_map(|(n, k, a, b)| Op::Send(n, k, a, b)),
        2 => (0u64..100).prop_map(Op::Tick),
        1 => (0usize..3).prop_map(Op::Reconnect),
        1 => (0usize..3).prop_map(Op::ResyncFinished),
        2 => (3usize..5).prop_map(Op::Poll),
    ]
}

proptest! {
    /// Whatever the order of updates, reconnects, resyncs and polls, the
    /// totals a peer ends up with equal the sums of the latest values per
    /// source, and the engine publishes exactly the keys something feeds.
    #[test]
    fn counter_sums_are_sums_of_latest_values(ops in proptest::collection::vec(op(), 1..200)) {
        let d = def(IN, "/t", KeyType::Ipv4, 4, 0, &[("gpc0", 1, 0), ("bytes_out_cnt", 1, 0)]);
        let mut h = H::new(5, d);
        // (node, key) → latest values, and what each node must re-teach.
        let mut model: BTreeMap<(usize, u8), (u32, u64)> = BTreeMap::new();
        let mut stale: Vec<Vec<u8>> = vec![Vec::new(); 3];
        let mut seen: [BTreeMap<peers::Key, peers::Values>; 2] = Default::default();
        let mut now = 0;
        for op in ops {
            match op {
                Op::Send(n, k, a, b) => {
                    h.send(n, &[0, 0, 0, k], vec![Value::U32(a), Value::U64(b)], now);
                    model.insert((n, k), (a, b));
                    stale[n].retain(|&x| x != k);
                }
                Op::Tick(dt) => {
                    now += dt;
                    h.e.tick(now);
                }
                Op::Reconnect(n) => {
                    h.e.peer_disconnected(n, now);
                    h.connect(n, now);
                    stale[n] = model.keys().filter(|(m, _)| *m == n).map(|&(_, k)| k).collect();
                }
                Op::ResyncFinished(n) => {
                    h.e.resync_finished(n, now);
                    for k in std::mem::take(&mut stale[n]) {
                        model.remove(&(n, k));
                    }
                }
                Op::Poll(p) => {
                    for u in h.e.poll_updates(p, 2, now) {
                        seen[p - 3].insert(u.key, u.values);
                    }
                }
            }
        }
        for (p, seen) in seen.iter_mut().enumerate() {
            for u in h.drain(p + 3, now) {
                seen.insert(u.key, u.values);
            }
        }
        let mut expect: BTreeMap<u8, (u32, u64)> = BTreeMap::new();
        for (&(_, k), &(a, b)) in &model {
            let e = expect.entry(k).or_default();
            e.0 = e.0.saturating_add(a);
            e.1 = e.1.saturating_add(b);
        }
        prop_assert_eq!(h.e.tables()[0].entries, expect.len());
        for (k, (a, b)) in expect {
            let want = vec![Value::U32(a), Value::U64(b)];
            let key = Bytes::copy_from_slice(&[0, 0, 0, k]);
            prop_assert_eq!(h.agg(&key, now), Some(want.clone()));
            for seen in &seen {
                prop_assert_eq!(seen.get(&key[..]).map(|v| v.to_vec()), Some(want.clone()));
            }
        }
    }

    /// Random calls with random ids, shapes and values never panic, and
    /// the engine's deadlines always move forward.
    #[test]
    fn no_panic_on_any_input(calls in proptest::collection::vec(
        (0u8..9, 0usize..4, 0u64..4, any::<u32>(), any::<u32>(), 0u8..6, any::<bool>()), 1..150)) {
        let mut e = Engine::new(cfg_any());
        let mut now = 0u64;
        let shapes = [
            def(0, "/t", KeyType::Ipv4, 4, 500, &[("gpc0", 1, 0), ("conn_rate", 1, 1_000)]),
            def(0, "/t", KeyType::Ipv4, 4, 0, &[("server_id", 1, 0), ("server_key", 1, 0)]),
            def(0, "/t.agg", KeyType::String, 9, 0, &[]),
            def(0, "/u", KeyType::Binary, 3, 100, &[("gpt", 2, 0), ("gpc_rate", 2, 7)]),
        ];
        for (what, peer, rid, a, b, kind, timed) in calls {
            now += (a % 700) as u64;
            match what {
                0 => e.peer_connected(peer, "p", PeerRole::Node, now),
                1 => e.peer_disconnected(peer, now),
                2 => { e.table_defined(peer, rid, &shapes[(a % 4) as usize], now); }
                3 => e.resync_finished(peer, now),
                4 => e.resend_all(peer),
                5 => e.tick(now),
                6 => { e.poll_updates(peer, (b % 5) as usize, now); }
                _ => {
                    let v = match kind {
                        0 => Value::U32(b),
                        1 => f(a, b % 100, b % 7),
                        2 => Value::ServerId(b as i32),
                        3 => Value::dict(Bytes::from(format!("s{}", b % 3))),
                        4 => Value::DictUnknown,
                        _ => Value::U64(b as u64),
                    };
                    let n = (a % 5) as usize;
                    let mut u = upd(&b.to_be_bytes()[..(b % 5) as usize], vec![v; n]);
                    if timed { u.expire = Some(a % 1_000); }
                    e.update(peer, rid, &u, now);
                }
            }
            if let Some(d) = e.next_deadline() {
                e.tick(now);
                if let Some(d2) = e.next_deadline() {
                    prop_assert!(d2 > now && d2 >= d.min(now + 1));
                }
            }
        }
        e.tick(u64::MAX - 1);
        let _ = e.tables();
        let _ = e.keys("/t", now, true, 100);
    }
}

#[test]
fn clear_drops_a_key_or_a_whole_table() {
    let mut h = H::new(2, counters_def());
    h.send(0, b"\x0a\0\0\x01", counters(1, 1, 0, 1), 1);
    h.send(1, b"\x0a\0\0\x01", counters(2, 1, 0, 1), 1);
    h.send(0, b"\x0a\0\0\x02", counters(3, 1, 0, 1), 1);
    assert_eq!(h.e.clear("/t.agg", Some(b"\x0a\0\0\x01")), Some(1));
    assert!(h.agg(b"\x0a\0\0\x01", 2).is_none());
    assert!(h.agg(b"\x0a\0\0\x02", 2).is_some());
    // A node's next update brings its own value back.
    h.send(1, b"\x0a\0\0\x01", counters(2, 1, 0, 1), 3);
    assert_eq!(h.agg(b"\x0a\0\0\x01", 3).unwrap()[0], Value::U32(2));
    assert_eq!(h.e.clear("/t", None), Some(2));
    assert_eq!(h.e.table_info("/t.agg").unwrap().entries, 0);
    assert_eq!(h.e.clear("/nope", None), None);
}

#[test]
fn a_new_definition_is_adopted_once_no_connected_peer_feeds_the_old_one() {
    let old = def(
        IN,
        "/t",
        KeyType::Ipv4,
        4,
        30_000,
        &[("http_req_cnt", 1, 0)],
    );
    let new = def(
        IN,
        "/t",
        KeyType::Ipv4,
        4,
        60_000,
        &[("gpc0", 1, 0), ("http_req_cnt", 1, 0)],
    );
    let mut h = H::new(2, old);
    h.send(0, b"\x0a\0\0\x01", vec![Value::U32(4)], 1);
    // Node 0 reloads with the new definition while node 1 still feeds the
    // old one: refused.
    h.e.peer_disconnected(0, 2);
    h.e.peer_connected(0, "lb0", PeerRole::Node, 3);
    assert!(matches!(
        h.e.table_defined(0, IN, &new, 3),
        TableVerdict::Refused { .. }
    ));
    // Node 1 reloads too: the first new definition it (or node 0) sends is
    // adopted, the old entries are dropped, the output keeps its id.
    h.e.peer_disconnected(1, 4);
    h.e.peer_connected(1, "lb1", PeerRole::Node, 5);
    assert_eq!(
        h.e.table_defined(1, IN, &new, 5),
        TableVerdict::Input {
            output: "/t.agg".into()
        }
    );
    assert_eq!(h.e.counters().reshaped, 1);
    let t = h.e.table_info("/t.agg").unwrap();
    assert_eq!(
        (t.entries, t.def.columns.len(), t.def.expire),
        (0, 2, Some(60_000))
    );
    // Its counters (exported as such) keep counting from where they were.
    assert_eq!(t.updates_in, 1);
    assert_eq!(t.id, 1);
    // Node 0, refused earlier on its live connection with what is now the
    // shape, is bound at once: HAProxy would not announce the table again.
    h.e.update(
        0,
        IN,
        &upd(b"k\0\0\0", vec![Value::U32(1), Value::U32(5)]),
        6,
    );
    h.e.update(
        1,
        IN,
        &upd(b"k\0\0\0", vec![Value::U32(2), Value::U32(6)]),
        6,
    );
    assert_eq!(
        h.agg(b"k\0\0\0", 6).unwrap(),
        vec![Value::U32(3), Value::U32(11)]
    );
    // Every peer that wants the output gets the new definition.
    let outs = h.e.outputs_for(0);
    assert_eq!(outs[0].columns.len(), 2);
}

#[test]
fn no_server_is_not_echoed_to_the_node_that_sent_it() {
    let mixed = def(
        IN,
        "/sessions",
        KeyType::Ipv4,
        4,
        0,
        &[
            ("server_id", 1, 0),
            ("http_req_cnt", 1, 0),
            ("server_key", 1, 0),
        ],
    );
    let mut h = H::new(2, mixed);
    let k = [10, 0, 0, 7];
    // A track-sc creates the entry before the stick rule stores a server.
    h.send(
        0,
        &k,
        vec![Value::ServerId(0), Value::U32(1), Value::Dict(None)],
        1,
    );
    assert!(
        h.drain(0, 1).is_empty(),
        "no 'no server' back to its sender"
    );
    assert_eq!(h.drain(1, 1).len(), 1, "the others get the counter");
    // Once a server is chosen, everyone gets the entry, the sender included.
    let s2 = Value::dict(Bytes::from_static(b"s2"));
    h.send(
        0,
        &k,
        vec![Value::ServerId(2), Value::U32(1), s2.clone()],
        2,
    );
    let back = h.drain(0, 2);
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].values.to_vec(),
        vec![Value::ServerId(2), Value::U32(1), s2]
    );
}

// ---------------------------------------------------------------------------
// Limits (`max-entries`, `max-tables`)

fn limits(max_entries: usize, max_tables: usize) -> EngineLimits {
    EngineLimits {
        max_entries,
        max_tables,
    }
}

#[test]
fn limits_default_to_the_documented_values() {
    let e = Engine::new(cfg_any());
    assert_eq!(e.limits().max_entries, 10_000_000);
    assert_eq!(e.limits().max_tables, 1000);
}

#[test]
fn a_full_table_drops_new_keys_and_keeps_updating_the_others() {
    let mut h = H::new(2, def(IN, "/t", KeyType::Ipv4, 4, 0, &[("gpc0", 1, 0)]));
    h.e.set_limits(limits(3, 1000));
    for k in 1..=5u8 {
        h.send(0, &[10, 0, 0, k], vec![Value::U32(1)], 1);
        h.send(1, &[10, 0, 0, k], vec![Value::U32(2)], 1);
    }
    // Exactly the first three keys, with both sources.
    let t = h.e.table_info("/t.agg").unwrap();
    assert_eq!(t.entries, 3);
    assert_eq!(t.dropped, 4, "two new keys, from two nodes each");
    assert_eq!(h.e.counters().dropped_entries, 4);
    assert_eq!(h.e.counters().updates, 6);
    assert_eq!(h.agg(&[10, 0, 0, 3], 1), Some(vec![Value::U32(3)]));
    assert_eq!(h.agg(&[10, 0, 0, 4], 1), None);
    assert_eq!(
        h.e.dropped_by_table().collect::<Vec<_>>(),
        [(0, "/t.agg", 4)]
    );
    let sent = h.drain(0, 1);
    assert_eq!(sent.len(), 3, "dropped keys are never published");
    // Existing keys keep updating.
    h.send(0, &[10, 0, 0, 1], vec![Value::U32(10)], 2);
    assert_eq!(h.agg(&[10, 0, 0, 1], 2), Some(vec![Value::U32(12)]));
    assert_eq!(h.drain(1, 2).len(), 3);
    assert_eq!(h.drain(0, 2).len(), 1);
    h.send(1, &[10, 0, 0, 2], vec![Value::U32(5)], 3);
    let sent = h.drain(0, 3);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].values.to_vec(), vec![Value::U32(6)]);
    // Malformed updates are no drops.
    h.send(0, &[10, 0, 0, 9], vec![Value::U64(1)], 3);
    assert_eq!(h.e.counters().dropped_entries, 4);
    assert_eq!(h.e.counters().ignored_malformed, 1);
    // A higher limit (a reload) lets new keys in; nothing held is lost.
    h.e.set_limits(limits(4, 1000));
    h.send(0, &[10, 0, 0, 4], vec![Value::U32(1)], 4);
    h.send(0, &[10, 0, 0, 5], vec![Value::U32(1)], 4);
    let t = h.e.table_info("/t.agg").unwrap();
    assert_eq!((t.entries, t.dropped), (4, 5));
    // A lower one drops nothing held, and stops new keys again.
    h.e.set_limits(limits(2, 1000));
    h.send(1, &[10, 0, 0, 1], vec![Value::U32(3)], 5);
    assert_eq!(h.agg(&[10, 0, 0, 1], 5), Some(vec![Value::U32(13)]));
    assert_eq!(h.e.table_info("/t.agg").unwrap().entries, 4);
}

#[test]
fn a_key_that_expired_frees_its_place() {
    let mut h = H::new(1, def(IN, "/t", KeyType::Ipv4, 4, 1000, &[("gpc0", 1, 0)]));
    h.e.set_limits(limits(1, 1000));
    h.send(0, &[10, 0, 0, 1], vec![Value::U32(1)], 0);
    h.send(0, &[10, 0, 0, 2], vec![Value::U32(1)], 0);
    assert_eq!(h.e.counters().dropped_entries, 1);
    h.e.tick(1000);
    assert_eq!(h.e.table_info("/t.agg").unwrap().entries, 0);
    h.send(0, &[10, 0, 0, 2], vec![Value::U32(1)], 1001);
    assert_eq!(h.agg(&[10, 0, 0, 2], 1001), Some(vec![Value::U32(1)]));
    assert_eq!(h.e.counters().dropped_entries, 1);
}

#[test]
fn tables_beyond_max_tables_are_refused() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_any());
    e.set_limits(limits(100, 2));
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    e.peer_connected(1, "lb1", PeerRole::Node, 0);
    for (id, name) in [(1, "/a"), (2, "/b")] {
        assert!(matches!(
            e.table_defined(0, id, &def(id, name, KeyType::Ipv4, 4, 0, cols), 0),
            TableVerdict::Input { .. }
        ));
    }
    let c = def(3, "/c", KeyType::Ipv4, 4, 0, cols);
    let refused = TableVerdict::Refused {
        reason: "too many tables (max-tables 2)".into(),
    };
    assert_eq!(e.table_defined(0, 3, &c, 0), refused);
    // Re-announced before every batch: refused again, counted once.
    assert_eq!(e.table_defined(0, 3, &c, 0), refused);
    assert_eq!(e.counters().refused_defs, 1);
    assert_eq!(e.counters().refused_max_tables, 1);
    // Its updates are ignored; no table was made.
    e.update(0, 3, &upd(&[1, 2, 3, 4], vec![Value::U32(1)]), 0);
    assert_eq!(e.counters().ignored_refused, 1);
    assert_eq!(e.tables().len(), 2);
    assert!(e.table_info("/c.agg").is_none());
    // Existing tables still take new sources.
    assert!(matches!(
        e.table_defined(1, 1, &def(1, "/a", KeyType::Ipv4, 4, 0, cols), 0),
        TableVerdict::Input { .. }
    ));
    e.update(1, 1, &upd(&[1, 2, 3, 4], vec![Value::U32(1)]), 0);
    assert_eq!(e.counters().updates, 1);
    // Another peer is refused too (its own count).
    assert_eq!(e.table_defined(1, 3, &c, 0), refused);
    assert_eq!(e.counters().refused_max_tables, 2);
    // A higher limit (a reload): the next DEFINE creates the table.
    e.set_limits(limits(100, 3));
    assert!(matches!(
        e.table_defined(0, 3, &c, 0),
        TableVerdict::Input { .. }
    ));
    e.update(0, 3, &upd(&[1, 2, 3, 4], vec![Value::U32(1)]), 0);
    assert_eq!(e.counters().updates, 2);
    assert_eq!(e.tables().len(), 3);
}

#[test]
fn max_tables_counts_the_forwarded_tables_an_input_brings() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_intermediate());
    // `/t` makes `/t.intermediate` and `/t.agg`: two tables.
    e.set_limits(limits(100, 3));
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    let t = def(1, "/t", KeyType::Ipv4, 4, 0, cols);
    assert!(matches!(
        e.table_defined(0, 1, &t, 0),
        TableVerdict::Input { .. }
    ));
    let u = def(2, "/u", KeyType::Ipv4, 4, 0, cols);
    assert!(matches!(
        e.table_defined(0, 2, &u, 0),
        TableVerdict::Refused { reason } if reason == "too many tables (max-tables 3)"
    ));
    assert_eq!(e.tables().len(), 2);
}

#[test]
fn declared_outputs_are_bounded_by_max_tables() {
    let cols = &[("gpc0", 1, 0)];
    let mut e = Engine::new(cfg_any());
    e.set_limits(limits(100, 2));
    e.peer_connected(0, "lb0", PeerRole::Node, 0);
    for (id, name) in [(1, "/a.agg"), (2, "/b.agg")] {
        assert_eq!(
            e.table_defined(0, id, &def(id, name, KeyType::Ipv4, 4, 0, cols), 0),
            TableVerdict::Output
        );
    }
    let c = def(3, "/c.agg", KeyType::Ipv4, 4, 0, cols);
    assert!(matches!(
        e.table_defined(0, 3, &c, 0),
        TableVerdict::Unexpected { reason } if reason.starts_with("too many tables")
    ));
    assert_eq!(e.table_defined(0, 3, &c, 0), TableVerdict::Ignored);
    // Known ones are still accepted.
    assert_eq!(
        e.table_defined(0, 1, &def(1, "/a.agg", KeyType::Ipv4, 4, 0, cols), 0),
        TableVerdict::Output
    );
}
