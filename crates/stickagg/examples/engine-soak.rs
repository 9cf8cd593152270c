//! The soak's load on the engine alone, in virtual time: an hour of it in
//! about a minute, with the memory it holds printed every virtual minute.
//!
//! The soak of `stickagg-bench` (BENCHMARKS.md, "Soak") runs in real time,
//! through sockets, and its RSS moves in steps of the allocator's. This
//! drives the same shape straight into [`Engine`] (10 nodes, 100k keys,
//! 10k updates/s of `http_req_rate(10s)` + `http_req_cnt`, an hour's expiry,
//! a tick and a poll of every node each millisecond) and prints, per
//! minute: RSS, keys, the timer entries held (stale ones included) and
//! updates pushed, so that what the engine itself keeps can be told from
//! what the allocator keeps.
//!
//! `cargo run --release -p stickagg --example engine-soak -- [minutes]`

use peers::{data_type_by_name, Column, FreqCtr, Key, KeyType, TableDef, Update, Value};
use std::sync::Arc;
use stickagg::engine::{Engine, EngineConfig, PeerRole};

/// The allocator the `stickagg` binary ships with (see its `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10;
const KEYS: u32 = 100_000;
/// Updates per virtual millisecond, all nodes together.
const PER_MS: usize = 10;

fn table(id: u64, name: &str) -> Arc<TableDef> {
    Arc::new(TableDef {
        id,
        name: name.into(),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire: Some(3_600_000),
        columns: vec![
            Column::new(data_type_by_name("http_req_rate").unwrap(), 1, 10_000),
            Column::new(data_type_by_name("http_req_cnt").unwrap(), 1, 0),
        ],
        unknown_types: 0,
    })
}

/// Resident memory in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    let minutes: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 60,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("engine-soak: minutes: {e}");
            std::process::exit(2);
        }
    };
    let (input, output) = (table(1, "/t"), table(2, "/t.agg"));
    let mut e = Engine::new(EngineConfig {
        from: None,
        to: ".agg".into(),
        ..EngineConfig::default()
    });
    for n in 0..NODES {
        e.peer_connected(n, &format!("node{n}"), PeerRole::Node, 0);
        e.table_defined(n, 1, &input, 0);
        e.table_defined(n, 2, &output, 0);
    }
    // Each (node, key)'s request count; a xorshift picks node and key.
    let mut count = vec![0u32; NODES * KEYS as usize];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut pushed = 0u64;
    println!("minute  rss_kib    keys  timers_held  pushed");
    for now in 1..=minutes * 60_000 {
        for _ in 0..PER_MS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let node = (x % NODES as u64) as usize;
            let k = ((x >> 8) % KEYS as u64) as u32;
            let c = &mut count[node * KEYS as usize + k as usize];
            *c += 1;
            let u = Update {
                id: 0,
                expire: None,
                key: Key::from_slice(&(0x0A00_0000 + k).to_be_bytes()),
                values: [
                    Value::Freq(FreqCtr {
                        elapsed: (now % 10_000) as u32,
                        curr: 1,
                        prev: 0,
                    }),
                    Value::U32(*c),
                ]
                .into_iter()
                .collect(),
                memo: Default::default(),
            };
            e.update(node, 1, &u, now);
        }
        e.tick(now);
        for n in 0..NODES {
            pushed += e.poll_updates(n, usize::MAX, now).len() as u64;
        }
        if now % 60_000 == 0 {
            let keys: usize = e.tables().iter().map(|t| t.entries).sum();
            println!(
                "{:6} {:8} {keys:7} {:12} {pushed}",
                now / 60_000,
                rss_kib(),
                e.timers_held()
            );
        }
    }
}
