//! Codec throughput: one typical update (IPv4 key, `http_req_cnt` +
//! `http_req_rate(10s)`) through the raw decoder and encoder, a batch of
//! 1000 framed updates through an established [`Session`], and varints.
//!
//! `cargo bench -p peers --bench codec -- --warm-up-time 1 --measurement-time 3`
//! (figures in BENCHMARKS.md).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use peers::dict::{RxDict, TxDict};
use peers::fuzzing::Reader;
use peers::message::encode_table_msg;
use peers::update::{decode_update, encode_update, MSG_DEFINE, MSG_UPDATE, MSG_UPDATE_INCR};
use peers::{
    data_type_by_name, varint, Column, FreqCtr, KeyType, Role, Session, SessionConfig, TableDef,
    Value,
};
use std::sync::Arc;

const BATCH: usize = 1000;

fn table() -> TableDef {
    TableDef {
        id: 3,
        name: "/request_rates".into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(30_000),
        columns: vec![
            Column::new(data_type_by_name("http_req_cnt").unwrap(), 1, 0),
            Column::new(data_type_by_name("http_req_rate").unwrap(), 1, 10_000),
        ],
        unknown_types: 0,
    }
}

fn key(i: usize) -> [u8; 4] {
    [10, 1, (i >> 8) as u8, i as u8]
}

fn values(i: usize) -> [Value; 2] {
    [
        Value::U32(1_000 + i as u32),
        Value::Freq(FreqCtr {
            elapsed: 4_321,
            curr: 17 + (i as u32 % 50),
            prev: 250,
        }),
    ]
}

/// The payload of one 0x80 update (explicit id), as HAProxy sends it.
fn payload(def: &TableDef, i: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_update(
        &mut out,
        def,
        i as u32 + 1,
        None,
        &key(i),
        &values(i),
        &mut TxDict::default(),
    )
    .unwrap();
    out
}

/// 1000 framed updates the way HAProxy pushes a batch: an explicit id first,
/// then incremental ones (0x81, no id) while ids are consecutive.
fn batch(def: &TableDef, first_id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        let p = payload(def, i);
        if i == 0 {
            let mut p = p;
            p[..4].copy_from_slice(&first_id.to_be_bytes());
            encode_table_msg(&mut out, MSG_UPDATE, &p);
        } else {
            encode_table_msg(&mut out, MSG_UPDATE_INCR, &p[4..]);
        }
    }
    out
}

/// An accepting session past its handshake that has received `def`.
fn established(def: &TableDef) -> Session {
    let mut s = Session::new(Role::Accept, SessionConfig::default(), 0);
    s.handle_input(b"HAProxyS 2.1\nagg\nhap1 8230 1\n", 0);
    while s.poll_event().is_some() {}
    s.accept(0);
    let mut d = Vec::new();
    def.encode(&mut d);
    let mut framed = Vec::new();
    encode_table_msg(&mut framed, MSG_DEFINE, &d);
    s.handle_input(&framed, 0);
    while s.poll_event().is_some() {}
    s.transmit();
    assert!(s.is_established());
    s
}

fn raw_update(c: &mut Criterion) {
    let def = table();
    let msg = payload(&def, 7);
    let vals = values(7);
    let k = key(7);
    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        let mut dict = RxDict::default();
        b.iter(|| {
            let mut r = Reader::new(black_box(&msg), 0);
            decode_update(MSG_UPDATE, &mut r, &def, 0, &mut dict).unwrap()
        })
    });
    g.bench_function("encode", |b| {
        let mut dict = TxDict::default();
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            encode_update(
                &mut out,
                &def,
                8,
                None,
                black_box(&k),
                black_box(&vals),
                &mut dict,
            )
            .unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn session(c: &mut Criterion) {
    let def = table();
    let input = batch(&def, 1);
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(BATCH as u64));

    // The whole batch in one read, events drained and the ACK taken, as an
    // I/O loop would.
    g.bench_function("handle_input_1000", |b| {
        let mut s = established(&def);
        let mut now = 0;
        b.iter(|| {
            now += 1;
            s.handle_input(black_box(&input), now);
            let mut n = 0;
            while let Some(ev) = s.poll_event() {
                black_box(&ev);
                n += 1;
            }
            assert_eq!(n, BATCH);
            s.transmit()
        })
    });

    // The same bytes in 1448-byte reads (one TCP segment each).
    g.bench_function("handle_input_1000_segments", |b| {
        let mut s = established(&def);
        let mut now = 0;
        b.iter(|| {
            now += 1;
            for chunk in input.chunks(1448) {
                s.handle_input(black_box(chunk), now);
                while let Some(ev) = s.poll_event() {
                    black_box(&ev);
                }
            }
            s.transmit()
        })
    });

    // Sending: 1000 updates of a declared table, then taking the bytes.
    let keys: Vec<[u8; 4]> = (0..BATCH).map(key).collect();
    let vals: Vec<[Value; 2]> = (0..BATCH).map(values).collect();
    let arc = Arc::new(def.clone());
    g.bench_function("send_update_1000", |b| {
        b.iter_batched_ref(
            || {
                let mut s = established(&def);
                s.declare_table(arc.clone());
                s
            },
            |s| {
                for i in 0..BATCH {
                    s.send_update(3, &keys[i], &vals[i], None, 1).unwrap();
                }
                s.transmit()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn varints(c: &mut Criterion) {
    // Typical mix: small counters, ms periods/elapsed, u32 ids, and a few
    // full-width values (sign-extended server_id −1).
    let vals: Vec<u64> = (0..1000u64)
        .map(|i| match i % 8 {
            0..=3 => i % 240,
            4 | 5 => 240 + i * 37,
            6 => 4_000_000_000 - i,
            _ => u64::MAX - i,
        })
        .collect();
    let mut enc = Vec::new();
    for &v in &vals {
        varint::encode(v, &mut enc);
    }
    let mut g = c.benchmark_group("varint");
    g.throughput(Throughput::Elements(vals.len() as u64));
    g.bench_function("encode_1000_mixed", |b| {
        let mut out = Vec::with_capacity(enc.len());
        b.iter(|| {
            out.clear();
            for &v in black_box(&vals) {
                varint::encode(v, &mut out);
            }
            out.len()
        })
    });
    g.bench_function("decode_1000_mixed", |b| {
        b.iter(|| {
            let mut buf = black_box(&enc[..]);
            let mut sum = 0u64;
            while !buf.is_empty() {
                let (v, n) = varint::decode(buf).unwrap();
                sum = sum.wrapping_add(v);
                buf = &buf[n..];
            }
            sum
        })
    });
    for (name, v) in [
        ("1_byte", 100u64),
        ("3_bytes", 10_000),
        ("10_bytes", u64::MAX),
    ] {
        let mut one = Vec::new();
        varint::encode(v, &mut one);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| varint::decode(black_box(&one)).unwrap())
        });
        g.bench_function(format!("encode_{name}"), |b| {
            let mut out = Vec::with_capacity(16);
            b.iter(|| {
                out.clear();
                varint::encode(black_box(v), &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, raw_update, session, varints);
criterion_main!(benches);
