//! Multi-level aggregation and high availability end to end (the seed's
//! "Multi-level setup" and "Configure for high availability"): real HAProxy
//! nodes, several stickagg processes (intermediates and top levels), all on
//! loopback, asserted through `show table` on the nodes.
//!
//! The nodes declare `t` (tracked), `t.agg` (the cluster total, forwarded by
//! their intermediate from the top level) and `t.intermediate` (their
//! intermediate's own sum, fed back), so both levels can be checked on them.
//!
//! Nets 60–99 (one per test and version). Hosts: nodes `enterprise<i>` on
//! .1i, intermediates on .2/.3, top levels on .4/.5, a chain's middle on .6.

mod common;

use common::both_versions;
use common::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use testkit::{http_get, require_haproxy, stats_cmd, wait_for, Net, Version};

const TABLES: &str = "
table t type ip size 100k expire 60s store http_req_cnt,http_req_rate(10s)
table t.agg type ip size 100k expire 60s store http_req_cnt,http_req_rate(10s)
table t.intermediate type ip size 100k expire 60s store http_req_cnt,http_req_rate(10s)";
const TRACK: &str = "http-request track-sc0 src table mypeers/t";
const AGG: &str = "mypeers/t.agg";
const INTER: &str = "mypeers/t.intermediate";

fn addr(net: Net, host: u8) -> SocketAddr {
    net.addr(host, PEERS_PORT)
}

fn node_addr(net: Net, i: u8) -> SocketAddr {
    addr(net, 10 + i)
}

/// Node `enterprise<i>`, a peer of the aggregators `aggs` (name, host).
fn node(version: Version, net: Net, i: u8, aggs: &[(&str, u8)]) -> Node {
    let extra: String = aggs[1..]
        .iter()
        .map(|(name, host)| format!("server {name} {}\n", addr(net, *host)))
        .collect();
    let tables = format!("{extra}{TABLES}");
    let spec = NodeSpec {
        tables: &tables,
        rules: TRACK,
        agg_name: aggs[0].0,
    };
    start_node(version, net, i, addr(net, aggs[0].1), &spec)
}

/// An aggregator: `local` on `host`, then `peers` lines (`name host role`).
fn aggregator(
    net: Net,
    section: &str,
    from_to: &str,
    extra: &str,
    local: (&str, u8),
    peers: &[(&str, u8, &str)],
) -> Stickagg {
    let mut cfg = format!(
        "global\n    stats socket {{sock}}\n\naggregations {section}\n    {from_to}\n{extra}    peer {} {} local\n",
        local.0,
        addr(net, local.1)
    );
    for (name, host, role) in peers {
        let a = if name.starts_with("enterprise") {
            node_addr(net, host - 10)
        } else {
            addr(net, *host)
        };
        cfg.push_str(&format!("    peer {name} {a} {role}\n"));
    }
    Stickagg::start(&cfg)
}

/// The seed's intermediate (`gpe-intermediate1.cfg`): its nodes, its up
/// peers, `forward .agg`.
fn intermediate(
    net: Net,
    name: &str,
    host: u8,
    opts: &str,
    ups: &[(&str, u8)],
    nodes: &[u8],
) -> Stickagg {
    let mut peers: Vec<(String, u8, &str)> =
        ups.iter().map(|(n, h)| (n.to_string(), *h, "up")).collect();
    peers.extend(nodes.iter().map(|i| (format!("enterprise{i}"), 10 + i, "")));
    let peers: Vec<(&str, u8, &str)> = peers.iter().map(|(n, h, r)| (n.as_str(), *h, *r)).collect();
    aggregator(
        net,
        "myaggr",
        &format!("from any to .intermediate{opts}"),
        "    forward .agg\n",
        (name, host),
        &peers,
    )
}

/// The seed's top level (`gpe-toplevel.cfg`, `gpe-ha-toplevel.cfg`): down
/// peers with an optional group.
fn top(net: Net, name: &str, host: u8, downs: &[(&str, u8, Option<u32>)]) -> Stickagg {
    let roles: Vec<String> = downs
        .iter()
        .map(|(_, _, g)| g.map_or("down".to_string(), |g| format!("down group {g}")))
        .collect();
    let peers: Vec<(&str, u8, &str)> = downs
        .iter()
        .zip(&roles)
        .map(|((n, h, _), r)| (*n, *h, r.as_str()))
        .collect();
    aggregator(
        net,
        "toplevel",
        "from .intermediate to .agg",
        "",
        (name, host),
        &peers,
    )
}

fn get(node: &Node, client: IpAddr, times: usize) {
    for _ in 0..times {
        let st = http_get(node.http, client, "/").unwrap();
        assert_eq!(st, 200, "request to {}", node.name);
    }
}

fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

fn cnt(n: &Node, table: &str, key: &str) -> Option<u64> {
    value(n, table, key, "http_req_cnt")
}

/// Waits until every aggregator's `show aggrs` shows all its peers
/// connected and synced (sync_ok: 1).
fn wait_synced(aggs: &[&Stickagg]) {
    for a in aggs {
        wait_for(
            Duration::from_secs(15),
            "every peer connected and synced",
            || {
                let out = a.cmd("show aggrs");
                let peers =
                    out.matches("\npeer '").count() + usize::from(out.starts_with("peer '"));
                (peers > 0
                    && out.matches("state: 0x7").count() == peers
                    && out.matches("sync_ok: 1").count() == peers)
                    .then_some(())
                    .ok_or(out)
            },
        );
    }
}

/// Asserts that `key` is absent from `table` on `nodes` (called once
/// something that came later in the same flow arrived).
fn absent(nodes: &[&Node], table: &str, key: &str) {
    for n in nodes {
        assert_eq!(cnt(n, table, key), None, "{table} {key} on {}", n.name);
    }
}

/// 4 nodes, 2 intermediates of 2 nodes, 1 top level (the seed's files).
struct TwoLevels {
    top: Stickagg,
    inters: [Stickagg; 2],
    nodes: Vec<Node>,
}

fn two_levels_cluster(version: Version, net: Net, opts: [&str; 2]) -> TwoLevels {
    let top = top(
        net,
        "top-gpe",
        4,
        &[
            ("intermediate-gpe1", 2, None),
            ("intermediate-gpe2", 3, None),
        ],
    );
    let inters = [
        intermediate(
            net,
            "intermediate-gpe1",
            2,
            opts[0],
            &[("top-gpe", 4)],
            &[1, 2],
        ),
        intermediate(
            net,
            "intermediate-gpe2",
            3,
            opts[1],
            &[("top-gpe", 4)],
            &[3, 4],
        ),
    ];
    let nodes = (1..=4u8)
        .map(|i| {
            let inter = if i <= 2 {
                ("intermediate-gpe1", 2)
            } else {
                ("intermediate-gpe2", 3)
            };
            node(version, net, i, &[inter])
        })
        .collect();
    TwoLevels { top, inters, nodes }
}

// ---------------------------------------------------------------------------

both_versions!(two_levels, 60, 61);
fn two_levels(version: Version, net: Net) {
    let c = two_levels_cluster(version, net, ["", ""]);
    let nodes = &c.nodes;
    let (a, b) = (net.ip(50), net.ip(51));
    for (i, n) in nodes.iter().enumerate() {
        get(n, a, i + 1);
    }
    get(&nodes[0], b, 5);
    let (ka, kb) = (a.to_string(), b.to_string());
    // Every node gets the cluster total through two levels.
    wait_value(&refs(nodes), AGG, &ka, "http_req_cnt", 10);
    wait_value(&refs(nodes), AGG, &kb, "http_req_cnt", 5);
    // Each intermediate's own sum, fed back to its nodes.
    wait_value(&refs(&nodes[..2]), INTER, &ka, "http_req_cnt", 3);
    wait_value(&refs(&nodes[2..]), INTER, &ka, "http_req_cnt", 7);
    wait_value(&refs(&nodes[..2]), INTER, &kb, "http_req_cnt", 5);
    absent(&refs(&nodes[2..]), INTER, &kb);
    // Rates: the total equals the sum of the nodes' own readings (each
    // floors its reading: 2 % + 1).
    let local: u64 = nodes
        .iter()
        .map(|n| value(n, "mypeers/t", &ka, "http_req_rate").unwrap_or(0))
        .sum();
    assert_eq!(local, 10);
    for (i, n) in nodes.iter().enumerate() {
        let r = value(n, AGG, &ka, "http_req_rate").unwrap();
        assert!(
            r.abs_diff(local) <= local / 50 + 1,
            "{}: agg rate {r}, local sum {local}",
            n.name
        );
        let own = value(n, INTER, &ka, "http_req_rate").unwrap();
        let want = if i < 2 { 3 } else { 7 };
        assert!(
            own.abs_diff(want) <= want / 50 + 1,
            "{}: intermediate rate {own}, want {want}",
            n.name
        );
    }
    // `show aggrs` tells the levels apart.
    let out = c.top.cmd("show aggrs");
    assert_eq!(out.matches("role: down group: -").count(), 2, "{out}");
    let out = c.inters[0].cmd("show aggrs");
    assert!(out.contains("peer 'top-gpe'(0) sync_ok: 1"), "{out}");
    assert!(out.contains("role: up group: -"), "{out}");
    assert_eq!(out.matches("role: node group: -").count(), 2, "{out}");
    // More traffic keeps every level exact.
    get(&nodes[3], a, 1);
    wait_value(&refs(nodes), AGG, &ka, "http_req_cnt", 11);
    wait_value(&refs(&nodes[2..]), INTER, &ka, "http_req_cnt", 8);
    // A correct setup logs no warning anywhere (echoes of what the levels
    // pushed are ignored silently).
    for sa in [&c.top, &c.inters[0], &c.inters[1]] {
        let log = sa.log();
        assert!(!log.contains(" WARN "), "{log}");
    }
}

both_versions!(unforwarded_table_is_reported_once, 69);
fn unforwarded_table_is_reported_once(version: Version, net: Net) {
    // The intermediate forwards `.total` but the top level makes `.agg`:
    // a configuration mistake reported once, whatever the top level sends.
    let mut top = top(net, "top-gpe", 4, &[("intermediate-gpe1", 2, None)]);
    let inter = aggregator(
        net,
        "myaggr",
        "from any to .intermediate",
        "    forward .total\n",
        ("intermediate-gpe1", 2),
        &[("top-gpe", 4, "up"), ("enterprise1", 11, "")],
    );
    let n = node(version, net, 1, &[("intermediate-gpe1", 2)]);
    let a = net.ip(58);
    let k = a.to_string();
    get(&n, a, 2);
    wait_value(&[&n], INTER, &k, "http_req_cnt", 2);
    let want = "table /t.agg from up peer 'top-gpe' ignored: it matches no 'forward' suffix \
                (.total), so it is not relayed";
    wait_for(Duration::from_secs(10), "the mistake reported", || {
        inter.log().contains(want).then_some(()).ok_or(inter.log())
    });
    // Another session with the top level announces it again: not logged
    // again.
    top.restart();
    wait_synced(&[&top, &inter]);
    get(&n, a, 1);
    wait_value(&[&n], INTER, &k, "http_req_cnt", 3);
    assert_eq!(inter.log().matches(want).count(), 1, "{}", inter.log());
    assert_eq!(cnt(&n, AGG, &k), None);
}

both_versions!(no_ascend_and_no_feedback, 62);
fn no_ascend_and_no_feedback(version: Version, net: Net) {
    // intermediate-gpe1 keeps its sum to itself and its nodes; the nodes of
    // intermediate-gpe2 get no .intermediate, only the forwarded total.
    let c = two_levels_cluster(version, net, [" no-ascend", " no-feedback"]);
    let nodes = &c.nodes;
    let a = net.ip(52);
    let k = a.to_string();
    get(&nodes[0], a, 1);
    get(&nodes[1], a, 2);
    wait_value(&refs(&nodes[..2]), INTER, &k, "http_req_cnt", 3);
    get(&nodes[2], a, 3);
    get(&nodes[3], a, 4);
    // The top level only ever sees intermediate-gpe2: 3 + 4. Both
    // intermediates forward it, whether or not they ascend.
    wait_value(&refs(nodes), AGG, &k, "http_req_cnt", 7);
    absent(&refs(&nodes[2..]), INTER, &k);
    // Still after more traffic through the no-ascend intermediate.
    get(&nodes[0], a, 5);
    wait_value(&refs(&nodes[..2]), INTER, &k, "http_req_cnt", 8);
    get(&nodes[3], a, 1);
    wait_value(&refs(nodes), AGG, &k, "http_req_cnt", 8);
    absent(&refs(&nodes[2..]), INTER, &k);
    let log = c.top.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A two-level cluster where client `.ip` made 1, 2, 3 and 4 requests on the
/// four nodes: every node reads 10 in `AGG`. Returns the client and its key.
fn two_levels_at_ten(version: Version, net: Net, ip: u8) -> (TwoLevels, IpAddr, String) {
    let c = two_levels_cluster(version, net, ["", ""]);
    let a = net.ip(ip);
    let k = a.to_string();
    for (i, n) in c.nodes.iter().enumerate() {
        get(n, a, i + 1);
    }
    wait_value(&refs(&c.nodes), AGG, &k, "http_req_cnt", 10);
    (c, a, k)
}

/// The `http_req_cnt` values of `key` in `AGG` other than `want` that
/// `nodes` showed while `during` ran (polled continuously on their stats
/// sockets).
fn agg_values_other_than(
    nodes: &[Node],
    key: &str,
    want: u64,
    during: impl FnOnce(),
) -> Vec<Option<u64>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let socks: Vec<_> = nodes
        .iter()
        .map(|n| n.haproxy.sock().to_path_buf())
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for sock in &socks {
                    let out = stats_cmd(sock, &format!("show table {AGG} key {key}")).unwrap();
                    let v = testkit::parse_show_table(&out)
                        .first()
                        .and_then(|e| e.get_u64("http_req_cnt"));
                    if v != Some(want) {
                        seen.push(v);
                    }
                }
            }
            seen
        });
        during();
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    })
}

both_versions!(intermediate_restart_keeps_the_totals, 68);
fn intermediate_restart_keeps_the_totals(version: Version, net: Net) {
    // An intermediate restarts: the top level keeps its share (the
    // intermediate answers PARTIAL until its nodes taught it again), so the
    // other intermediate's nodes never see the total dip.
    let (mut c, a, k) = two_levels_at_ten(version, net, 57);
    let seen = agg_values_other_than(&c.nodes[2..], &k, 10, || {
        c.inters[0].restart();
        wait_synced(&[&c.inters[0], &c.top]);
    });
    assert!(seen.is_empty(), "totals moved during the restart: {seen:?}");
    get(&c.nodes[0], a, 1);
    wait_value(&refs(&c.nodes), AGG, &k, "http_req_cnt", 11);
}

both_versions!(top_restart_keeps_the_totals, 70);
fn top_restart_keeps_the_totals(version: Version, net: Net) {
    // The top level restarts: it sends nothing down until both intermediates
    // taught it again (they keep the forwarded totals meanwhile: its answer
    // to their resync request is PARTIAL), so no node sees the total move.
    let (mut c, a, k) = two_levels_at_ten(version, net, 59);
    let seen = agg_values_other_than(&c.nodes, &k, 10, || {
        c.top.restart(); // SIGKILL, then the same command
        wait_synced(&[&c.top, &c.inters[0], &c.inters[1]]);
    });
    assert!(seen.is_empty(), "totals moved during the restart: {seen:?}");
    get(&c.nodes[3], a, 1);
    wait_value(&refs(&c.nodes), AGG, &k, "http_req_cnt", 11);
}

both_versions!(ha_two_top_levels, 63);
fn ha_two_top_levels(version: Version, net: Net) {
    // The seed's gpe-ha-intermediate1.cfg: each intermediate pushes to both
    // top levels, which compute the same totals.
    let downs = [
        ("intermediate-gpe1", 2, None),
        ("intermediate-gpe2", 3, None),
    ];
    let mut top1 = top(net, "top-gpe1", 4, &downs);
    let mut top2 = top(net, "top-gpe2", 5, &downs);
    let ups = [("top-gpe1", 4), ("top-gpe2", 5)];
    let i1 = intermediate(net, "intermediate-gpe1", 2, "", &ups, &[1, 2]);
    let i2 = intermediate(net, "intermediate-gpe2", 3, "", &ups, &[3, 4]);
    let nodes: Vec<Node> = (1..=4u8)
        .map(|i| {
            node(
                version,
                net,
                i,
                &[if i <= 2 {
                    ("intermediate-gpe1", 2)
                } else {
                    ("intermediate-gpe2", 3)
                }],
            )
        })
        .collect();
    let a = net.ip(53);
    let k = a.to_string();
    get(&nodes[0], a, 1);
    get(&nodes[2], a, 2);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 3);

    // One top level dies: the other keeps the totals right and following.
    top1.kill();
    get(&nodes[1], a, 1);
    get(&nodes[3], a, 1);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 5);

    // It comes back and relearns everything from the intermediates, traffic
    // it missed included: with the other one gone too, the totals are
    // still complete.
    top1.restart();
    wait_synced(&[&top1]);
    top2.kill();
    get(&nodes[0], a, 1);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 6);
    for i in [&i1, &i2] {
        assert!(i.cmd("show aggrs").contains("role: up"));
    }
    top2.restart();
    wait_synced(&[&top2]);
    get(&nodes[2], a, 1);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 7);
}

both_versions!(grouped_replicas_count_once, 64);
fn grouped_replicas_count_once(version: Version, net: Net) {
    let t = top(
        net,
        "top-gpe",
        4,
        &[
            ("intermediate-gpe1", 2, Some(1)),
            ("intermediate-gpe2", 3, Some(1)),
        ],
    );
    let ups = [("top-gpe", 4)];
    let i1 = intermediate(net, "intermediate-gpe1", 2, "", &ups, &[1, 2]);
    let i2 = intermediate(net, "intermediate-gpe2", 3, "", &ups, &[1, 2]);
    let both = [("intermediate-gpe1", 2), ("intermediate-gpe2", 3)];
    let nodes: Vec<Node> = (1..=2u8).map(|i| node(version, net, i, &both)).collect();
    let a = net.ip(54);
    let k = a.to_string();
    get(&nodes[0], a, 2);
    get(&nodes[1], a, 3);
    wait_value(&refs(&nodes), INTER, &k, "http_req_cnt", 5);
    // Counted once: the group is one source.
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 5);
    assert_eq!(
        t.cmd("show aggrs").matches("role: down group: 1").count(),
        2
    );
    // One replica goes away: the other still counts everything.
    drop(i1);
    get(&nodes[0], a, 1);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 6);
    let rate = value(&nodes[1], AGG, &k, "http_req_rate").unwrap();
    assert!(rate.abs_diff(6) <= 1, "rate {rate}");
    drop(i2);
}

both_versions!(ungrouped_replicas_count_twice, 65);
fn ungrouped_replicas_count_twice(version: Version, net: Net) {
    // The same without `group`: each intermediate is a source of its own,
    // so the top level adds the same nodes twice (documented).
    let t = top(
        net,
        "top-gpe",
        4,
        &[
            ("intermediate-gpe1", 2, None),
            ("intermediate-gpe2", 3, None),
        ],
    );
    let ups = [("top-gpe", 4)];
    let _i1 = intermediate(net, "intermediate-gpe1", 2, "", &ups, &[1, 2]);
    let _i2 = intermediate(net, "intermediate-gpe2", 3, "", &ups, &[1, 2]);
    let both = [("intermediate-gpe1", 2), ("intermediate-gpe2", 3)];
    let nodes: Vec<Node> = (1..=2u8).map(|i| node(version, net, i, &both)).collect();
    let a = net.ip(55);
    let k = a.to_string();
    get(&nodes[0], a, 2);
    get(&nodes[1], a, 3);
    wait_value(&refs(&nodes), INTER, &k, "http_req_cnt", 5);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 10);
    assert_eq!(
        t.cmd("show aggrs").matches("role: down group: -").count(),
        2
    );
}

both_versions!(three_level_chain, 66);
fn three_level_chain(version: Version, net: Net) {
    // node → intermediate → regional → top: each level has its own suffix.
    let top = aggregator(
        net,
        "toplevel",
        "from .regional to .agg",
        "",
        ("top-gpe", 4),
        &[("regional-gpe", 6, "down")],
    );
    let mid = aggregator(
        net,
        "regional",
        "from .intermediate to .regional",
        "    forward .agg\n",
        ("regional-gpe", 6),
        &[
            ("top-gpe", 4, "up"),
            ("intermediate-gpe1", 2, "down"),
            ("intermediate-gpe2", 3, "down"),
        ],
    );
    let ups = [("regional-gpe", 6)];
    let i1 = intermediate(net, "intermediate-gpe1", 2, "", &ups, &[1, 2]);
    let i2 = intermediate(net, "intermediate-gpe2", 3, "", &ups, &[3]);
    let nodes: Vec<Node> = (1..=3u8)
        .map(|i| {
            node(
                version,
                net,
                i,
                &[if i <= 2 {
                    ("intermediate-gpe1", 2)
                } else {
                    ("intermediate-gpe2", 3)
                }],
            )
        })
        .collect();
    let a = net.ip(56);
    let k = a.to_string();
    get(&nodes[0], a, 1);
    get(&nodes[1], a, 2);
    get(&nodes[2], a, 4);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 7);
    wait_value(&refs(&nodes[..2]), INTER, &k, "http_req_cnt", 3);
    wait_value(&refs(&nodes[2..]), INTER, &k, "http_req_cnt", 4);
    get(&nodes[2], a, 1);
    wait_value(&refs(&nodes), AGG, &k, "http_req_cnt", 8);
    let out = mid.cmd("show aggrs");
    assert!(
        out.contains("role: up") && out.matches("role: down").count() == 2,
        "{out}"
    );
    drop((top, i1, i2));
}

/// Time from one request on one node to the new total on all four nodes,
/// through an intermediate, the top level and both intermediates again.
/// Prints the figure (BENCHMARKS.md, "Multi-level convergence"):
///
/// ```sh
/// cargo test --release -p stickagg --test e2e_multilevel convergence -- --nocapture
/// ```
#[test]
fn convergence() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(67);
    let c = two_levels_cluster(Version::V30, net, ["", ""]);
    wait_synced(&[&c.top, &c.inters[0], &c.inters[1]]);
    let nodes = &c.nodes;
    let socks: Vec<_> = nodes
        .iter()
        .map(|n| n.haproxy.sock().to_path_buf())
        .collect();
    let mut samples = Vec::new();
    for i in 0..30u8 {
        let client = net.ip(100 + i);
        let key = client.to_string();
        let start = Instant::now();
        get(&nodes[usize::from(i % 4)], client, 1);
        let mut pending: Vec<usize> = (0..nodes.len()).collect();
        while !pending.is_empty() {
            pending.retain(|&n| {
                let out = stats_cmd(&socks[n], &format!("show table {AGG} key {key}")).unwrap();
                !out.contains("http_req_cnt=1")
            });
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no convergence for {key}: {pending:?}"
            );
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "multi-level convergence (request on one node → total on all 4 nodes, 2 levels), {} samples: \
         min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(pick(0.5)),
        ms(pick(0.9)),
        ms(samples[samples.len() - 1])
    );
}
