//! Faults with real processes (nets 180–189): stickagg killed with SIGKILL
//! under load, a node killed and restarted, the aggregator unreachable, and
//! no partial total pushed while a restarted stickagg relearns.
//! Tables use a 3 s expire so that expiry is observable quickly.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::{http_get, require_haproxy, wait_for, Net, Version};

const TABLES: &str = "
table request_rates type ip size 100k expire 3s store http_req_cnt
table request_rates.agg type ip size 100k expire 3s store http_req_cnt";
const TRACK: &str = "http-request track-sc0 src table mypeers/request_rates";

fn spec() -> NodeSpec<'static> {
    NodeSpec {
        tables: TABLES,
        rules: TRACK,
        agg_name: "gpe",
    }
}

fn cluster(net: Net, n: u8) -> (Stickagg, Vec<Node>) {
    cluster_with(net, n, &spec())
}

fn cluster_with(net: Net, n: u8, spec: &NodeSpec) -> (Stickagg, Vec<Node>) {
    let agg = net.addr(2, PEERS_PORT);
    let names: Vec<(String, SocketAddr)> = (1..=n)
        .map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
        .collect();
    let sa = Stickagg::start(&static_agg_config("data", "from any to .agg", agg, &names));
    let nodes = (1..=n)
        .map(|i| start_node(Version::V30, net, i, agg, spec))
        .collect();
    (sa, nodes)
}

/// Waits until `n` sessions of stickagg's stats show `what` (a `show aggrs`
/// fragment, e.g. `state: 0x7`).
fn wait_peers(sa: &Stickagg, n: usize, what: &str, why: &str) {
    wait_for(Duration::from_secs(5), why, || {
        let out = sa.cmd("show aggrs");
        (out.matches(what).count() == n).then_some(()).ok_or(out)
    });
}

/// Sends requests from `client` to every node in turn until stopped;
/// counts the requests sent per node.
fn load(
    nodes: &[Node],
    client: std::net::IpAddr,
) -> (
    Arc<AtomicBool>,
    Vec<Arc<AtomicU64>>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = nodes.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let targets: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    let (s, c) = (stop.clone(), counts.clone());
    let h = std::thread::spawn(move || {
        let mut i = 0;
        while !s.load(Ordering::Relaxed) {
            let k = i % targets.len();
            if http_get(targets[k], client, "/").is_ok() {
                c[k].fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (stop, counts, h)
}

#[test]
fn stickagg_killed_under_load_is_exact_again_after_restart() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(180);
    let (mut sa, nodes) = cluster(net, 3);
    let client = net.ip(50);
    let key = client.to_string();
    let (stop, counts, h) = load(&nodes, client);
    std::thread::sleep(Duration::from_millis(700));
    sa.kill(); // SIGKILL, mid-traffic
    std::thread::sleep(Duration::from_millis(300));
    sa.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert!(total > 30, "load ran: {total} requests");
    // Every request was counted by its node; after the restart stickagg
    // relearned them all: every node's total is exact (bounded wait, 2 s).
    for n in &nodes {
        wait_for(
            Duration::from_secs(2),
            &format!("exact total on {}", n.name),
            || match value(n, "mypeers/request_rates.agg", &key, "http_req_cnt") {
                Some(v) if v == total => Ok(()),
                v => Err(format!("{v:?} of {total}")),
            },
        );
    }
}

#[test]
fn a_killed_node_contribution_expires_and_returns() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(181);
    let (_sa, mut nodes) = cluster(net, 2);
    let c = net.ip(51);
    let key = c.to_string();
    // Keep the entry alive on node 1 (each request renews its 3 s life).
    let (stop, counts, h) = load(&nodes[..1], c);
    for _ in 0..4 {
        http_get(nodes[1].http, c, "/").unwrap();
    }
    wait_for(
        Duration::from_secs(5),
        "node 2's share in the total",
        || {
            let n1 = counts[0].load(Ordering::Relaxed);
            match value(&nodes[0], "mypeers/request_rates.agg", &key, "http_req_cnt") {
                Some(v) if v >= n1 + 4 && n1 > 0 => Ok(()),
                v => Err(format!("{v:?}, node 1 sent {n1}")),
            }
        },
    );
    // Node 2 dies: its contribution lapses with its 3 s lifetime and the
    // total falls back to node 1's own count.
    nodes[1].haproxy.kill();
    wait_for(Duration::from_secs(8), "node 2's share expired", || {
        let n1 = counts[0].load(Ordering::Relaxed);
        match value(&nodes[0], "mypeers/request_rates.agg", &key, "http_req_cnt") {
            Some(v) if v + 1 >= n1 && v <= n1 => Ok(()),
            v => Err(format!("{v:?}, node 1 sent {n1}")),
        }
    });
    // It comes back and contributes again.
    nodes[1].haproxy.restart();
    for _ in 0..2 {
        http_get(nodes[1].http, c, "/").unwrap();
    }
    wait_for(Duration::from_secs(5), "node 2's share back", || {
        let n1 = counts[0].load(Ordering::Relaxed);
        match value(&nodes[0], "mypeers/request_rates.agg", &key, "http_req_cnt") {
            Some(v) if v + 1 >= n1 + 2 && v <= n1 + 2 => Ok(()),
            v => Err(format!("{v:?}, node 1 sent {n1}")),
        }
    });
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn nodes_serve_without_the_aggregator_and_reconnect_when_it_returns() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(182);
    let (mut sa, nodes) = cluster(net, 2);
    let c = net.ip(52);
    let key = c.to_string();
    sa.kill(); // the port is now closed
    for n in &nodes {
        for _ in 0..2 {
            assert_eq!(
                http_get(n.http, c, "/").unwrap(),
                200,
                "{} serves alone",
                n.name
            );
        }
        assert_eq!(
            value(n, "mypeers/request_rates", &key, "http_req_cnt"),
            Some(2)
        );
    }
    // The aggregator returns: sessions come back by themselves and the
    // totals include what happened while it was away.
    sa.restart();
    wait_peers(&sa, 2, "state: 0x7", "both nodes connected again");
    for n in &nodes {
        http_get(n.http, c, "/").unwrap();
    }
    wait_value(
        &[&nodes[0], &nodes[1]],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        6,
    );
}

#[test]
fn a_restarted_stickagg_never_pushes_a_partial_total() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    // A 60 s expire: the nodes' totals outlive the restart.
    let net = Net::new(183);
    let tables = TABLES.replace("expire 3s", "expire 60s");
    let spec = NodeSpec {
        tables: &tables,
        ..spec()
    };
    let (mut sa, nodes) = cluster_with(net, 4, &spec);
    let c = net.ip(53);
    let key = c.to_string();
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..=i {
            http_get(n.http, c, "/").unwrap();
        }
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_value(&refs, "mypeers/request_rates.agg", &key, "http_req_cnt", 10);
    // Killed and restarted: it relearns the four nodes one after the other.
    // Had it pushed the sum after each, a node would read 1, 3 or 6 for a
    // moment; it holds the totals back until all four taught it.
    sa.kill();
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for n in &nodes {
                    let v = value(n, "mypeers/request_rates.agg", &key, "http_req_cnt");
                    if v != Some(10) {
                        seen.push((n.name.clone(), v));
                    }
                }
            }
            seen
        });
        sa.restart();
        wait_peers(&sa, 4, "sync_ok: 1", "all four nodes taught it");
        // The totals went out again (a new request proves it below); give
        // the watcher a moment after the last teach.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert!(seen.is_empty(), "a node saw a partial total: {seen:?}");
    http_get(nodes[0].http, c, "/").unwrap();
    wait_value(&refs, "mypeers/request_rates.agg", &key, "http_req_cnt", 11);
}
