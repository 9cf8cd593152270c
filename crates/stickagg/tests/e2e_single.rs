//! Single-level aggregation end to end: real HAProxy nodes (2.6 and 3.0),
//! a real stickagg process, real HTTP requests from distinct client
//! addresses, and `show table` on the nodes' stats sockets.
//!
//! Each scenario runs once per HAProxy version, each run on its own
//! 127.0.N.0/24 so runs never collide (nets 20–59 are used here).

mod common;

use common::both_versions;
use common::*;
use std::time::{Duration, Instant};
use testkit::{http_get, require_haproxy, wait_for, Net, Version};

const RATE_TABLES: &str = "
table request_rates type ip size 100k expire 30s store http_req_cnt,http_req_rate(2s)
table request_rates.agg type ip size 100k expire 30s store http_req_cnt,http_req_rate(2s)";
const TRACK: &str = "http-request track-sc0 src table mypeers/request_rates";

fn agg_addr(net: Net) -> std::net::SocketAddr {
    net.addr(2, PEERS_PORT)
}

/// Starts `n` nodes with `spec` and a static stickagg for them.
fn cluster(
    version: Version,
    net: Net,
    n: u8,
    spec: &NodeSpec,
    from_to: &str,
) -> (Stickagg, Vec<Node>) {
    cluster_with_args(version, net, n, spec, from_to, &[])
}

/// [`cluster`], stickagg started with more command-line arguments.
fn cluster_with_args(
    version: Version,
    net: Net,
    n: u8,
    spec: &NodeSpec,
    from_to: &str,
    args: &[&str],
) -> (Stickagg, Vec<Node>) {
    let agg = agg_addr(net);
    let names: Vec<(String, std::net::SocketAddr)> = (1..=n)
        .map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
        .collect();
    let config = static_agg_config("data", from_to, agg, &names);
    let sa = Stickagg::start_with_args(&config, args);
    let nodes = (1..=n)
        .map(|i| start_node(version, net, i, agg, spec))
        .collect();
    (sa, nodes)
}

fn get(node: &Node, client: std::net::IpAddr, times: usize) {
    for _ in 0..times {
        let st = http_get(node.http, client, "/").unwrap();
        assert!(st == 200 || st == 429, "unexpected status {st}");
    }
}

fn all(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

/// Sums `http_req_rate` of `key` over the nodes' local tables.
fn local_rate_sum(nodes: &[Node], key: &str) -> u64 {
    nodes
        .iter()
        .map(|n| value(n, "mypeers/request_rates", key, "http_req_rate").unwrap_or(0))
        .sum()
}

// ---------------------------------------------------------------------------

both_versions!(counters_and_rates_three_nodes, 20, 21);
fn counters_and_rates_three_nodes(version: Version, net: Net) {
    let spec = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let (sa, nodes) = cluster(version, net, 3, &spec, "from any to .agg");
    let (a, b) = (net.ip(50), net.ip(51));
    get(&nodes[0], a, 3);
    get(&nodes[1], a, 4);
    get(&nodes[2], a, 2);
    get(&nodes[1], b, 5);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &a.to_string(),
        "http_req_cnt",
        9,
    );
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &b.to_string(),
        "http_req_cnt",
        5,
    );

    // The pushed rate equals the sum of the nodes' own readings, within 2 %
    // plus (nodes - 1): each node rounds its own reading down.
    for n in &nodes {
        let agg = value(
            n,
            "mypeers/request_rates.agg",
            &a.to_string(),
            "http_req_rate",
        )
        .unwrap();
        let sum = local_rate_sum(&nodes, &a.to_string());
        let tol = sum / 50 + 2;
        assert!(
            agg.abs_diff(sum) <= tol,
            "{}: agg rate {agg}, local sum {sum}",
            n.name
        );
    }
    assert!(sa.cmd("show aggrs").contains("state: 0x7"));

    // After traffic stops the aggregated rate reaches 0 no later than the
    // local ones (sampled; 300 ms allowed for the read order).
    let key = a.to_string();
    let start = Instant::now();
    let mut locals_zero_since: Option<Instant> = None;
    loop {
        let aggs: Vec<u64> = nodes
            .iter()
            .map(|n| value(n, "mypeers/request_rates.agg", &key, "http_req_rate").unwrap_or(0))
            .collect();
        let local = local_rate_sum(&nodes, &key);
        if aggs.iter().all(|&v| v == 0) {
            break;
        }
        if local == 0 {
            let since = *locals_zero_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_millis(300),
                "agg rates {aggs:?} while local rates are 0"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "rates never decayed: {aggs:?}, local {local}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

both_versions!(dynamic_peers_on_global_bind, 22, 23);
fn dynamic_peers_on_global_bind(version: Version, net: Net) {
    // The seed's gpe-global-bind.cfg: no local peer, the nodes call the
    // aggregator by the section name.
    let agg = agg_addr(net);
    let _sa = Stickagg::start(&format!(
        "global\n    stats socket {{sock}}\n    bind {agg}\n\naggregations data\n    from any to .agg\n    dynamic-peers\n"
    ));
    let spec = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "data",
    };
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(version, net, i, agg, &spec))
        .collect();
    let c = net.ip(60);
    get(&nodes[0], c, 2);
    get(&nodes[1], c, 3);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        5,
    );
}

both_versions!(nonagg_to_agg, 24, 25);
fn nonagg_to_agg(version: Version, net: Net) {
    let tables = "
table request_rates.nonagg type ip size 100k expire 30s store http_req_cnt
table request_rates.agg type ip size 100k expire 30s store http_req_cnt
table other type ip size 100k expire 30s store http_req_cnt
table other.agg type ip size 100k expire 30s store http_req_cnt";
    let rules = "http-request track-sc0 src table mypeers/request_rates.nonagg
http-request track-sc1 src table mypeers/other";
    let spec = NodeSpec {
        tables,
        rules,
        agg_name: "gpe",
    };
    let (_sa, nodes) = cluster(version, net, 2, &spec, "from .nonagg to .agg");
    let c = net.ip(61);
    get(&nodes[0], c, 2);
    get(&nodes[1], c, 2);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        4,
    );
    // `other` does not end in .nonagg: it is not aggregated.
    std::thread::sleep(Duration::from_millis(500));
    for n in &nodes {
        assert_eq!(
            value(n, "mypeers/other.agg", &c.to_string(), "http_req_cnt"),
            None,
            "{}",
            n.name
        );
    }
}

both_versions!(cluster_wide_limit, 26, 27);
fn cluster_wide_limit(version: Version, net: Net) {
    let tables = "
table request_rates type ip size 100k expire 30s store http_req_rate(10s)
table request_rates.agg type ip size 100k expire 30s store http_req_rate(10s)";
    let rules = "http-request track-sc0 src table mypeers/request_rates
http-request deny deny_status 429 if { sc_http_req_rate(0,mypeers/request_rates.agg) gt 10 }";
    let spec = NodeSpec {
        tables,
        rules,
        agg_name: "gpe",
    };
    let (_sa, nodes) = cluster(version, net, 3, &spec, "from any to .agg");
    let c = net.ip(62);
    get(&nodes[0], c, 6);
    get(&nodes[1], c, 6);
    let key = c.to_string();
    for n in &nodes {
        wait_for(
            Duration::from_secs(10),
            "aggregated rate above 10",
            || match value(n, "mypeers/request_rates.agg", &key, "http_req_rate") {
                Some(v) if v > 10 => Ok(()),
                v => Err(format!("{}: {v:?}", n.name)),
            },
        );
    }
    // Either node refuses the next request, and so does node 3, which this
    // client never reached before.
    for n in &nodes {
        assert_eq!(http_get(n.http, c, "/").unwrap(), 429, "{}", n.name);
    }
    // Another client is not affected.
    assert_eq!(http_get(nodes[2].http, net.ip(63), "/").unwrap(), 200);
}

both_versions!(write_interval_keeps_totals_exact, 40, 41);
/// `--write-interval` holds what stickagg writes to a node until that long
/// after its previous write (2 ms here, so that nearly every write waits):
/// nothing is lost or reordered on the way, counters add up exactly on
/// every node, and the cluster-wide limit still applies.
fn write_interval_keeps_totals_exact(version: Version, net: Net) {
    let tables = "
table request_rates type ip size 100k expire 30s store http_req_cnt,http_req_rate(10s)
table request_rates.agg type ip size 100k expire 30s store http_req_cnt,http_req_rate(10s)";
    let rules = "http-request track-sc0 src table mypeers/request_rates
http-request deny deny_status 429 if { sc_http_req_rate(0,mypeers/request_rates.agg) gt 40 }";
    let spec = NodeSpec {
        tables,
        rules,
        agg_name: "gpe",
    };
    let args = ["--write-interval", "2000"];
    let (_sa, nodes) = cluster_with_args(version, net, 3, &spec, "from any to .agg", &args);
    // Many clients, requests spread over the nodes in turn, so that the
    // pushes to each node come in many small writes.
    let clients: Vec<std::net::IpAddr> = (100..120).map(|i| net.ip(i)).collect();
    for round in 0..5 {
        for (j, &c) in clients.iter().enumerate() {
            get(&nodes[(j + round) % 3], c, 1 + j % 3);
        }
    }
    for (j, c) in clients.iter().enumerate() {
        let want = 5 * (1 + j % 3) as u64;
        wait_value(
            &all(&nodes),
            "mypeers/request_rates.agg",
            &c.to_string(),
            "http_req_cnt",
            want,
        );
    }
    // The limit: 41 requests of one client over the three nodes, then every
    // node refuses it.
    let c = net.ip(62);
    for i in 0..41 {
        get(&nodes[i % 3], c, 1);
    }
    let key = c.to_string();
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        41,
    );
    for n in &nodes {
        assert_eq!(http_get(n.http, c, "/").unwrap(), 429, "{}", n.name);
    }
}

both_versions!(several_types_in_one_table, 28, 29);
fn several_types_in_one_table(version: Version, net: Net) {
    let store = "conn_cnt,gpc0,bytes_out_cnt,gpt0,http_err_rate(10s)";
    let tables = format!(
        "table t type ip size 1k expire 30s store {store}\ntable t.agg type ip size 1k expire 30s store {store}"
    );
    let rules = "http-request track-sc0 src table mypeers/t
http-request sc-inc-gpc0(0)
http-request sc-set-gpt0(0) int(5) if { path /five }
http-request sc-set-gpt0(0) int(9) if { path /nine }
http-request deny deny_status 403 if { path /err }";
    let spec = NodeSpec {
        tables: &tables,
        rules,
        agg_name: "gpe",
    };
    let (_sa, nodes) = cluster(version, net, 2, &spec, "from any to .agg");
    let c = net.ip(64);
    let key = c.to_string();
    assert_eq!(http_get(nodes[0].http, c, "/five").unwrap(), 200);
    assert_eq!(http_get(nodes[0].http, c, "/err").unwrap(), 403);
    assert_eq!(http_get(nodes[1].http, c, "/nine").unwrap(), 200);
    assert_eq!(http_get(nodes[1].http, c, "/").unwrap(), 200);
    assert_eq!(http_get(nodes[1].http, c, "/err").unwrap(), 403);
    let local = |n: &Node, d: &str| value(n, "mypeers/t", &key, d).unwrap_or(0);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let want_conn = local(n1, "conn_cnt") + local(n2, "conn_cnt");
    let want_bytes = local(n1, "bytes_out_cnt") + local(n2, "bytes_out_cnt");
    assert!(want_bytes > 0 && want_conn == 5);
    wait_value(&all(&nodes), "mypeers/t.agg", &key, "gpc0", 5);
    wait_value(&all(&nodes), "mypeers/t.agg", &key, "conn_cnt", want_conn);
    wait_value(
        &all(&nodes),
        "mypeers/t.agg",
        &key,
        "bytes_out_cnt",
        want_bytes,
    );
    // gpt0 is a tag: the maximum across nodes.
    wait_value(&all(&nodes), "mypeers/t.agg", &key, "gpt0", 9);
    let errs = local(n1, "http_err_rate") + local(n2, "http_err_rate");
    assert_eq!(errs, 2, "the nodes count the 403s as HTTP errors");
    wait_value(&all(&nodes), "mypeers/t.agg", &key, "http_err_rate", 2);
}

both_versions!(string_integer_and_ipv6_keys, 30, 31);
fn string_integer_and_ipv6_keys(version: Version, net: Net) {
    let tables = "
table by_path type string len 32 size 1k expire 30s store http_req_cnt
table by_path.agg type string len 32 size 1k expire 30s store http_req_cnt
table by_int type integer size 1k expire 30s store http_req_cnt
table by_int.agg type integer size 1k expire 30s store http_req_cnt
table by_v6 type ipv6 size 1k expire 30s store http_req_cnt
table by_v6.agg type ipv6 size 1k expire 30s store http_req_cnt";
    let rules = "http-request track-sc0 path table mypeers/by_path
http-request track-sc1 int(7) table mypeers/by_int
http-request track-sc2 src table mypeers/by_v6";
    let spec = NodeSpec {
        tables,
        rules,
        agg_name: "gpe",
    };
    let (_sa, nodes) = cluster(version, net, 2, &spec, "from any to .agg");
    let c = net.ip(65);
    for (n, path) in [(0, "/x"), (1, "/x"), (1, "/y"), (0, "/x")] {
        assert_eq!(http_get(nodes[n].http, c, path).unwrap(), 200);
    }
    wait_value(&all(&nodes), "mypeers/by_path.agg", "/x", "http_req_cnt", 3);
    wait_value(&all(&nodes), "mypeers/by_path.agg", "/y", "http_req_cnt", 1);
    wait_value(&all(&nodes), "mypeers/by_int.agg", "7", "http_req_cnt", 4);
    wait_value(
        &all(&nodes),
        "mypeers/by_v6.agg",
        &format!("::ffff:{c}"),
        "http_req_cnt",
        4,
    );
}

both_versions!(restarts, 32, 33);
fn restarts(version: Version, net: Net) {
    let spec = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let (mut sa, mut nodes) = cluster(version, net, 3, &spec, "from any to .agg");
    let c = net.ip(66);
    let key = c.to_string();
    get(&nodes[0], c, 1);
    get(&nodes[1], c, 2);
    get(&nodes[2], c, 3);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        6,
    );

    // stickagg restarted: it relearns every node's table from their resync
    // answers, so one new request on node 1 gives the full total at once.
    sa.restart();
    wait_for(Duration::from_secs(5), "all nodes reconnected", || {
        let out = sa.cmd("show aggrs");
        (out.matches("state: 0x7").count() == 3 && out.matches("sync_ok: 1").count() == 3)
            .then_some(())
            .ok_or(out)
    });
    get(&nodes[0], c, 1);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        7,
    );

    // A node restarted: its own (now empty) table replaces its contribution,
    // and its .agg table is refilled from stickagg without new traffic.
    nodes[2].haproxy.restart();
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        4,
    );
}

both_versions!(mismatched_table_and_unknown_peer, 34, 35);
fn mismatched_table_and_unknown_peer(version: Version, net: Net) {
    let agg = agg_addr(net);
    let names: Vec<(String, std::net::SocketAddr)> = (1..=3)
        .map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
        .collect();
    let sa = Stickagg::start(&static_agg_config("data", "from any to .agg", agg, &names));
    let good = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let n1 = start_node(version, net, 1, agg, &good);
    let n2 = start_node(version, net, 2, agg, &good);
    // Node 3 announces the same input table with another period.
    let bad_tables = RATE_TABLES.replace("(2s)", "(5s)");
    let bad = NodeSpec {
        tables: &bad_tables,
        rules: TRACK,
        agg_name: "gpe",
    };
    let n3 = start_node(version, net, 3, agg, &bad);
    // Node 4 is not in the static list.
    let n4 = start_node(version, net, 4, agg, &good);
    let c = net.ip(67);
    get(&n1, c, 1);
    get(&n2, c, 2);
    get(&n3, c, 4);
    get(&n4, c, 8);
    wait_value(
        &[&n1, &n2],
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        3,
    );
    wait_for(Duration::from_secs(5), "refusal logged", || {
        let log = sa.log();
        log.contains("refused")
            .then_some(())
            .ok_or("no refusal in log")
    });
    let log = sa.log();
    assert!(
        log.contains("enterprise3") && log.contains("/request_rates"),
        "{log}"
    );
    // Node 4's hello may still be on its way: wait for its refusal too.
    wait_for(Duration::from_secs(5), "unknown peer refused", || {
        let log = sa.log();
        log.contains("unknown peer 'enterprise4'")
            .then_some(())
            .ok_or(log)
    });
    // The unknown node sees the protocol's refusal status.
    wait_for(Duration::from_secs(5), "UNKN status on enterprise4", || {
        let out = n4.haproxy.cmd("show peers");
        out.contains("last_status=UNKN").then_some(()).ok_or(out)
    });
    // Still exact for the good nodes after more traffic.
    get(&n1, c, 1);
    wait_value(
        &[&n1, &n2],
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        4,
    );
}

both_versions!(nodes_started_first_and_source_address, 36, 37);
fn nodes_started_first_and_source_address(version: Version, net: Net) {
    // The nodes come up first: their own attempts to reach the aggregator
    // are refused and HAProxy waits 5 s before retrying, so stickagg must
    // connect out to them, from the configured `source` address.
    let agg = agg_addr(net);
    let spec = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(version, net, i, agg, &spec))
        .collect();
    let source = net.ip(3);
    let mut conf = static_agg_config(
        "data",
        "from any to .agg",
        agg,
        &nodes
            .iter()
            .map(|n| (n.name.clone(), n.peers))
            .collect::<Vec<_>>(),
    );
    conf = conf.replace("global\n", &format!("global\n    source {source}\n"));
    let sa = Stickagg::start(&conf);
    let out = wait_for(
        Duration::from_secs(3),
        "both nodes connected by stickagg",
        || {
            let out = sa.cmd("show aggrs");
            (out.matches("state: 0x7").count() == 2)
                .then_some(out.clone())
                .ok_or(out)
        },
    );
    assert_eq!(
        out.matches("accept: 0(").count(),
        2,
        "sessions came from our connects:\n{out}"
    );
    for n in &nodes {
        let peers = n.haproxy.cmd("show peers");
        assert!(
            peers.contains(&format!("{source}:")),
            "{}: session not from {source}:\n{peers}",
            n.name
        );
    }
    let c = net.ip(68);
    get(&nodes[0], c, 2);
    get(&nodes[1], c, 1);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        3,
    );
}

both_versions!(restarted_stickagg_republishes_without_traffic, 38, 39);
fn restarted_stickagg_republishes_without_traffic(version: Version, net: Net) {
    let spec = NodeSpec {
        tables: RATE_TABLES,
        rules: TRACK,
        agg_name: "gpe",
    };
    let (mut sa, nodes) = cluster(version, net, 2, &spec, "from any to .agg");
    let c = net.ip(69);
    let key = c.to_string();
    get(&nodes[0], c, 2);
    get(&nodes[1], c, 3);
    wait_value(
        &all(&nodes),
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        5,
    );
    // stickagg goes away and the nodes lose their totals; when it comes back
    // it relearns every node's table and pushes the totals again, with no
    // new request anywhere (bounded wait: the 2 s).
    sa.kill();
    for n in &nodes {
        n.haproxy.cmd("clear table mypeers/request_rates.agg");
        assert_eq!(
            value(n, "mypeers/request_rates.agg", &key, "http_req_cnt"),
            None
        );
    }
    sa.restart();
    for n in &nodes {
        wait_for(
            Duration::from_secs(2),
            &format!("total back on {}", n.name),
            || match value(n, "mypeers/request_rates.agg", &key, "http_req_cnt") {
                Some(5) => Ok(()),
                v => Err(v),
            },
        );
    }
}
