//! Engine ingest: updates of an IPv4 table storing `http_req_cnt` +
//! `http_req_rate(10s)`, 100k keys, from 1 and from 10 sources.
//!
//! - `aggregate`: decoded updates straight into [`Engine::update`] (decode
//!   excluded).
//! - `decode+aggregate`: framed bytes as read from the sockets, through one
//!   established [`peers::Session`] per source (framing, decoding, ACKs) and
//!   the engine, as the hub does.
//!
//! Every iteration applies 100k updates; with 10 sources every key already
//! holds the 10 sources' contributions (filled before measuring) and the
//! updates rotate over the sources. Pushing totals out is not included.
//!
//! `cargo bench -p stickagg --bench engine -- --warm-up-time 2 --measurement-time 10`
//! (figures in BENCHMARKS.md).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peers::{
    data_type_by_name, Column, Event, FreqCtr, Key, KeyType, Role, Session, SessionConfig,
    TableDef, Update, Value,
};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use stickagg::engine::{Engine, EngineConfig, PeerRole, TableVerdict};

/// The allocator the `stickagg` binary ships with (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 100_000;
/// Updates per chunk of bytes handed to a session (≈ 17 KB, a socket read).
const CHUNK: usize = 1_000;
const REMOTE_ID: u64 = 1;

fn table() -> Arc<TableDef> {
    Arc::new(TableDef {
        id: REMOTE_ID,
        name: "/request_rates".into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(600_000),
        columns: vec![
            Column::new(data_type_by_name("http_req_cnt").unwrap(), 1, 0),
            Column::new(data_type_by_name("http_req_rate").unwrap(), 1, 10_000),
        ],
        unknown_types: 0,
    })
}

/// Keys in a fixed pseudo-random order (a full-period LCG walk), so that
/// consecutive updates do not hit neighbouring hash buckets.
fn key_order(seed: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..KEYS as u32).collect();
    let mut x = 0x9E37_79B9u64 ^ seed as u64;
    for i in (1..v.len()).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

fn key(k: u32) -> [u8; 4] {
    (0x0A00_0000 + k).to_be_bytes()
}

fn values(k: u32, source: usize) -> Vec<Value> {
    vec![
        Value::U32(1_000 + k % 977 + source as u32),
        Value::Freq(FreqCtr {
            elapsed: 1_000 + (k * 7 + source as u32 * 613) % 9_000,
            curr: 5 + k % 50,
            prev: 40 + source as u32,
        }),
    ]
}

fn engine(sources: usize, now: u64) -> Engine {
    let mut e = Engine::new(EngineConfig {
        from: None,
        to: ".agg".into(),
        ..EngineConfig::default()
    });
    let def = table();
    for s in 0..sources {
        e.peer_connected(s, &format!("node{s}"), PeerRole::Node, now);
        let v = e.table_defined(s, REMOTE_ID, &def, now);
        assert!(matches!(v, TableVerdict::Input { .. }), "{v:?}");
    }
    e
}

/// The engine with every key holding every source's contribution.
fn filled_engine(sources: usize, now: u64) -> Engine {
    let mut e = engine(sources, now);
    for s in 0..sources {
        for k in 0..KEYS as u32 {
            let u = Update {
                id: k + 1,
                expire: None,
                key: Key::from_slice(&key(k)),
                values: values(k, s).into(),
                memo: Default::default(),
            };
            e.update(s, REMOTE_ID, &u, now);
        }
    }
    e
}

fn aggregate(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/aggregate");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.sample_size(20);
    let order = key_order(1);
    let updates: Vec<Update> = order
        .iter()
        .enumerate()
        .map(|(i, &k)| Update {
            id: i as u32 + 1,
            expire: None,
            key: Key::from_slice(&key(k)),
            values: values(k, 0).into(),
            memo: Default::default(),
        })
        .collect();
    for sources in [1usize, 10] {
        let now = Cell::new(1_000_000u64);
        let mut e = filled_engine(sources, now.get());
        let round = Cell::new(0usize);
        g.bench_function(format!("{sources}src"), |b| {
            b.iter(|| {
                now.set(now.get() + 1);
                let r = round.get();
                round.set(r + 1);
                // Each update as decoded: nothing noted from the last round
                // (a noted slot would spare the lookup).
                for u in &updates {
                    u.memo.set(0);
                }
                for (i, u) in updates.iter().enumerate() {
                    e.update((i + r) % sources, REMOTE_ID, black_box(u), now.get());
                }
            })
        });
        black_box(e.counters());
    }
    g.finish();
}

/// A source: the receiving session, and its byte stream in chunks of
/// `CHUNK` updates covering every key once.
struct Source {
    sess: Session,
    chunks: Vec<Bytes>,
}

fn source(s: usize, now: u64) -> (Source, Vec<Bytes>) {
    let mut client = Session::new(
        Role::Connect {
            callee: "gpe".into(),
            caller: format!("node{s}"),
            pid: 1,
        },
        SessionConfig::default(),
        now,
    );
    let mut server = Session::new(Role::Accept, SessionConfig::default(), now);
    server.handle_input(&client.transmit().unwrap(), now);
    assert!(matches!(server.poll_event(), Some(Event::HelloReceived(_))));
    server.accept(now);
    client.handle_input(&server.transmit().unwrap(), now);
    assert!(client.is_established());
    client.declare_table(table());
    client.send_define(REMOTE_ID, now).unwrap();
    server.handle_input(&client.transmit().unwrap(), now);
    while server.poll_event().is_some() {}
    let order = key_order(s + 1);
    let mut chunks = Vec::new();
    for part in order.chunks(CHUNK) {
        for &k in part {
            client
                .send_update(REMOTE_ID, &key(k), &values(k, s), None, now)
                .unwrap();
        }
        chunks.push(client.transmit().unwrap());
    }
    (
        Source {
            sess: server,
            chunks: Vec::new(),
        },
        chunks,
    )
}

/// Feeds one chunk to a source's session and its updates to the engine.
fn feed(src: &mut Source, peer: usize, chunk: &[u8], e: Option<&mut Engine>, now: u64) -> usize {
    src.sess.handle_input(chunk, now);
    let mut n = 0;
    match e {
        Some(e) => {
            while let Some(ev) = src.sess.poll_event() {
                e.prefetch_queued(peer, &src.sess);
                if let Event::Update {
                    remote_id, update, ..
                } = ev
                {
                    e.update(peer, remote_id, &update, now);
                    n += 1;
                }
            }
        }
        None => {
            while let Some(ev) = src.sess.poll_event() {
                if matches!(ev, Event::Update { .. }) {
                    n += 1;
                }
                black_box(ev);
            }
        }
    }
    // The ACKs it queued.
    black_box(src.sess.transmit());
    n
}

fn decode_aggregate(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/decode+aggregate");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.sample_size(20);
    for sources in [1usize, 10] {
        let now = Cell::new(1_000_000u64);
        let mut e = filled_engine(sources, now.get());
        let mut srcs: Vec<Source> = (0..sources)
            .map(|s| {
                let (mut src, chunks) = source(s, now.get());
                src.chunks = chunks;
                src
            })
            .collect();
        let nchunks = KEYS / CHUNK;
        let per_iter = nchunks / sources;
        let round = Cell::new(0usize);
        g.bench_function(format!("{sources}src"), |b| {
            b.iter(|| {
                now.set(now.get() + 1);
                let r = round.get();
                round.set(r + 1);
                let mut n = 0;
                // `per_iter` chunks of every source, interleaved.
                for j in 0..per_iter {
                    let at = (r * per_iter + j) % nchunks;
                    for (s, src) in srcs.iter_mut().enumerate() {
                        let chunk = src.chunks[at].clone();
                        n += feed(src, s, &chunk, Some(&mut e), now.get());
                    }
                }
                debug_assert_eq!(n, KEYS);
                n
            })
        });
        black_box(e.counters());
    }
    // Reference: the same bytes through the session only.
    let now = 1_000_000;
    let (mut src, chunks) = source(0, now);
    g.bench_function("decode-only/1src", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|ch| feed(&mut src, 0, ch, None, now))
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, aggregate, decode_aggregate);
criterion_main!(benches);
