//! Limits on what peers can make stickagg hold, and on who may connect,
//! end to end: `max-entries` with real HAProxy nodes, `strict-peers` and
//! `dynamic-peers from` with real nodes and raw peers connecting from chosen
//! source addresses, the refusal counters in the metrics, and the open-file
//! limit raised to fit `maxconn` (nets 190–199).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;
use testkit::{http_get, require_haproxy, wait_for, Net, Version};

/// Generous bound for anything to happen (a failure detector, not a timing
/// assertion).
const BOUND: Duration = Duration::from_secs(20);

const TABLES: &str = "
table request_rates type ip size 100k expire 60s store http_req_cnt
table request_rates.agg type ip size 100k expire 60s store http_req_cnt";
const TRACK: &str = "http-request track-sc0 src table mypeers/request_rates";
const AGG_TABLE: &str = "mypeers/request_rates.agg";

fn spec() -> NodeSpec<'static> {
    NodeSpec {
        tables: TABLES,
        rules: TRACK,
        agg_name: "gpe",
    }
}

/// Node `enterprise<i>` on host `10 + i` whose peer connections to the
/// aggregator leave from `source` (`server gpe … source <ip>`: HAProxy 3.0
/// honours it on a peers section's server lines; 2.6 accepts the keyword
/// but ignores it. Without it the kernel picks 127.0.0.1 on loopback).
/// So the tests that need it run against 3.0 only.
fn node_from(version: Version, net: Net, i: u8, agg: SocketAddr, source: Option<IpAddr>) -> Node {
    start_node_with(version, net, i, |host, name| {
        let cfg = node_config(net, host, name, agg, &spec());
        match source {
            Some(ip) => {
                let cfg = cfg.replace(
                    &format!("server gpe {agg}\n"),
                    &format!("server gpe {agg} source {ip}\n"),
                );
                assert!(cfg.contains("source"), "{cfg}");
                cfg
            }
            None => cfg,
        }
    })
}

fn metrics_text(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of one sample line `name{labels} value` of a Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until the metric reads `want`.
fn wait_metric(addr: SocketAddr, name_and_labels: &str, want: f64) {
    wait_for(BOUND, &format!("{name_and_labels} = {want}"), || {
        let text = metrics_text(addr);
        match sample(&text, name_and_labels) {
            Some(v) if v == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// Waits (bounded) for a log line of `sa` containing every fragment.
fn wait_log(sa: &Stickagg, fragments: &[&str]) -> String {
    wait_for(BOUND, &format!("a log line with {fragments:?}"), || {
        sa.log()
            .lines()
            .find(|l| fragments.iter().all(|f| l.contains(f)))
            .map(str::to_string)
    })
}

fn table_line(sa: &Stickagg) -> String {
    let out = sa.cmd("show tables");
    out.lines()
        .find(|l| l.contains("/request_rates -> /request_rates.agg"))
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------
// max-entries

#[test]
fn max_entries_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        max_entries(Version::V30, Net::new(190));
    }
}

/// `max-entries 3`, two nodes, five clients: exactly the first three keys
/// are aggregated and keep updating; the other two are dropped, logged and
/// counted (`show tables`, metrics). A reload raising the limit lets them in.
fn max_entries(version: Version, net: Net) {
    let agg = net.addr(2, PEERS_PORT);
    let metrics = net.addr(3, 9100);
    let nodes_conf = [1u8, 2].map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)));
    let config = |max: u32| {
        static_agg_config("data", "from any to .agg", agg, &nodes_conf).replace(
            "global\n",
            &format!("global\n    metrics {metrics}\n    max-entries {max}\n"),
        )
    };
    let sa = Stickagg::start(&config(3));
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(version, net, i, agg, &spec()))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let hit = |client: u8| {
        for n in &nodes {
            assert_eq!(http_get(n.http, net.ip(client), "/").unwrap(), 200);
        }
    };
    // Three clients, one after the other: each is aggregated.
    for client in 50..53 {
        hit(client);
        wait_value(
            &all,
            AGG_TABLE,
            &net.ip(client).to_string(),
            "http_req_cnt",
            2,
        );
    }
    assert!(sa.cmd("show info").contains("Max_entries: 3"));
    // Two more: the table is full.
    hit(53);
    hit(54);
    let line = wait_log(
        &sa,
        &[
            "table /request_rates.agg full (max-entries 3): ",
            "new keys dropped",
        ],
    );
    eprintln!("{line}");
    // Each of the two nodes sent each of the two new keys at least once.
    let dropped = wait_for(BOUND, "4 keys dropped", || {
        let line = table_line(&sa);
        let n: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("dropped="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (n >= 4).then_some(n).ok_or(line)
    });
    let line = table_line(&sa);
    assert!(line.contains(" entries=3 "), "{line}");
    let text = metrics_text(metrics);
    let counted = sample(
        &text,
        "stickagg_entries_dropped_total{section=\"data\",table=\"/request_rates.agg\"}",
    );
    assert!(counted >= Some(dropped as f64), "{text}");
    assert_eq!(
        sample(
            &text,
            "stickagg_table_entries{section=\"data\",table=\"/request_rates.agg\"}"
        ),
        Some(3.0),
        "{text}"
    );
    // The dropped keys were never published: the nodes only have their own
    // entries for them (no `.agg` entry) while the kept keys keep updating.
    hit(50);
    wait_value(&all, AGG_TABLE, &net.ip(50).to_string(), "http_req_cnt", 4);
    for n in &nodes {
        for client in [53, 54] {
            assert_eq!(
                value(n, AGG_TABLE, &net.ip(client).to_string(), "http_req_cnt"),
                None
            );
        }
    }
    let keys = sa.cmd("show table /request_rates.agg");
    assert_eq!(testkit::parse_show_table(&keys).len(), 3, "{keys}");

    // A reload applies a new limit to the running engine (values kept).
    sa.write_config(&config(5));
    let out = sa.cmd("reload");
    assert!(out.contains("max-entries 5"), "{out}");
    assert!(sa.cmd("show info").contains("Max_entries: 5"));
    // The nodes push an entry when it changes: the next requests bring the
    // two keys in, with both nodes' counts.
    hit(53);
    hit(54);
    wait_value(&all, AGG_TABLE, &net.ip(53).to_string(), "http_req_cnt", 4);
    wait_value(&all, AGG_TABLE, &net.ip(54).to_string(), "http_req_cnt", 4);
    wait_value(&all, AGG_TABLE, &net.ip(50).to_string(), "http_req_cnt", 4);
    assert!(table_line(&sa).contains(" entries=5 "));
}

// ---------------------------------------------------------------------------
// strict-peers

#[test]
fn strict_peers_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        strict_peers(Version::V30, Net::new(192));
    }
}

/// `strict-peers`: a configured peer is accepted only from the IP address
/// of its `peer` line. stickagg's own connections to the nodes go to a port
/// nothing listens on (the check compares addresses, not ports), so each
/// node's session is the one it opens itself.
fn strict_peers(version: Version, net: Net) {
    let agg = net.addr(2, PEERS_PORT);
    let metrics = net.addr(3, 9100);
    let cfg = format!(
        "global\n    stats socket {{sock}}\n    metrics {metrics}\n\n\
         aggregations data\n    from any to .agg\n    strict-peers\n    peer gpe {agg} local\n\
         \x20   peer enterprise1 {}\n    peer enterprise2 {}\n    peer fake1 {}\n",
        net.addr(11, 10001),
        net.addr(12, 10001),
        net.addr(201, PEERS_PORT),
    );
    let sa = Stickagg::start(&cfg);
    // enterprise1 connects from its own address: accepted.
    let good = node_from(version, net, 1, agg, Some(net.ip(11)));
    // enterprise2 lets the kernel pick (127.0.0.1): refused, again and again.
    let bad = node_from(version, net, 2, agg, None);
    wait_for(BOUND, "enterprise1's incoming session", || {
        let peers = sa.cmd("show peers");
        peers
            .lines()
            .any(|l| l.contains("peer=enterprise1 ") && l.contains("session=in state=ESTA"))
            .then_some(())
            .ok_or(peers)
    });
    let line = wait_log(
        &sa,
        &[
            "peer 'enterprise2' of 'data' refused (504): it connected from ",
            &format!("expected {} (strict-peers)", net.ip(12)),
        ],
    );
    assert!(!line.contains(&format!("from {},", net.ip(12))), "{line}");
    // The accepted node aggregates.
    let client = net.ip(50);
    http_get(good.http, client, "/").unwrap();
    wait_value(&[&good], AGG_TABLE, &client.to_string(), "http_req_cnt", 1);
    // The refused one never got a session.
    let peers = sa.cmd("show peers");
    let e2 = peers
        .lines()
        .find(|l| l.contains("peer=enterprise2 "))
        .unwrap();
    assert!(!e2.contains("ESTA"), "{e2}");
    drop(bad);

    // A raw peer claiming fake1's name from another address: 504 …
    let before = wait_for(BOUND, "the refusal counter", || {
        sample(
            &metrics_text(metrics),
            "stickagg_connections_refused_total{reason=\"peer_address\"}",
        )
    });
    assert!(before >= 1.0);
    let mut r = RawPeer::connect_from(agg, net.ip(99));
    assert_eq!(r.hello("fake1"), "504");
    r.wait_closed();
    wait_for(BOUND, "one more address refusal", || {
        let v = sample(
            &metrics_text(metrics),
            "stickagg_connections_refused_total{reason=\"peer_address\"}",
        );
        (v >= Some(before + 1.0))
            .then_some(())
            .ok_or(format!("{v:?}"))
    });
    // … and from its own address: 200.
    let mut r = RawPeer::connect_from(agg, net.ip(201));
    assert_eq!(r.hello("fake1"), "200");
    wait_log(&sa, &["session with peer 'fake1' of 'data' established"]);
    // Unknown names are still 504 for their own reason.
    let mut r = RawPeer::connect_from(agg, net.ip(201));
    assert_eq!(r.hello("nobody"), "504");
    wait_log(&sa, &["unknown peer 'nobody'", "(504)"]);
    // The node keeps aggregating.
    http_get(good.http, client, "/").unwrap();
    wait_value(&[&good], AGG_TABLE, &client.to_string(), "http_req_cnt", 2);
}

// ---------------------------------------------------------------------------
// dynamic-peers from <cidr>

#[test]
fn dynamic_peers_from_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        dynamic_peers_from(Version::V30, Net::new(193));
    }
}

/// `dynamic-peers from 127.0.N.64/26`: a node connecting from inside the
/// block joins under its own name and aggregates; a peer from outside is
/// refused with 504.
fn dynamic_peers_from(version: Version, net: Net) {
    let agg = net.addr(2, PEERS_PORT);
    let cfg = format!(
        "global\n    stats socket {{sock}}\n\n\
         aggregations data\n    from any to .agg\n    peer gpe {agg} local\n\
         \x20   dynamic-peers from {}/26\n",
        net.ip(64)
    );
    let sa = Stickagg::start(&cfg);
    let node = node_from(version, net, 1, agg, Some(net.ip(70)));
    wait_log(
        &sa,
        &[&format!(
            "dynamic peer 'enterprise1' joined section 'data' from {}:",
            net.ip(70)
        )],
    );
    let client = net.ip(150);
    http_get(node.http, client, "/").unwrap();
    http_get(node.http, client, "/").unwrap();
    wait_value(&[&node], AGG_TABLE, &client.to_string(), "http_req_cnt", 2);

    // Outside the block: 504, whatever the name.
    let mut r = RawPeer::connect_from(agg, net.ip(20));
    assert_eq!(r.hello("intruder"), "504");
    r.wait_closed();
    wait_log(
        &sa,
        &[
            &format!("unknown peer 'intruder' from {}:", net.ip(20)),
            "refused by section 'data' (504)",
        ],
    );
    // Inside: accepted.
    let mut r = RawPeer::connect_from(agg, net.ip(127));
    assert_eq!(r.hello("visitor"), "200");
    wait_log(&sa, &["dynamic peer 'visitor' joined section 'data'"]);
    http_get(node.http, client, "/").unwrap();
    wait_value(&[&node], AGG_TABLE, &client.to_string(), "http_req_cnt", 3);
}

// ---------------------------------------------------------------------------
// Refusal counters

/// Every refusal reason of the hub's limits is a metric:
/// `stickagg_connections_refused_total{reason}`. No HAProxy needed.
#[test]
fn connection_refusals_are_counted_by_reason() {
    let net = Net::new(194);
    let agg = net.addr(2, PEERS_PORT);
    let metrics = net.addr(3, 9100);
    let cfg = format!(
        "global\n    stats socket {{sock}}\n    metrics {metrics}\n    maxconn 3\n\n\
         aggregations data\n    from any to .agg\n    strict-peers\n    peer gpe {agg} local\n\
         \x20   peer lb1 {}\n",
        net.addr(11, PEERS_PORT)
    );
    let sa = Stickagg::start(&cfg);
    let reason = |r: &str| format!("stickagg_connections_refused_total{{reason=\"{r}\"}}");
    let text = metrics_text(metrics);
    for r in [
        "maxconn",
        "hello_timeout",
        "hello_too_long",
        "hello_refused",
        "dynamic_limit",
        "peer_address",
    ] {
        assert_eq!(sample(&text, &reason(r)), Some(0.0), "{r}:\n{text}");
    }

    // maxconn 3: three silent connections, the fourth is closed at once.
    let mut idle: Vec<RawPeer> = (60..63)
        .map(|h| RawPeer::connect_from(agg, net.ip(h)))
        .collect();
    // (Accepted in order: the hub holds the three when it sees the fourth.)
    let mut r = RawPeer::connect_from(agg, net.ip(63));
    r.send(&peers::hello::encode_hello("gpe", "lb1", 1));
    assert_eq!(r.status_line(), "", "closed without a status");
    wait_metric(metrics, &reason("maxconn"), 1.0);
    wait_log(&sa, &["refused: connection limit reached (maxconn 3)"]);
    // The three say nothing: closed 5 s after they connected.
    for r in &mut idle {
        assert_eq!(r.status_line(), "", "no status for a missing hello");
    }
    wait_metric(metrics, &reason("hello_timeout"), 3.0);
    wait_log(&sa, &["handshake not completed in time: closed"]);

    // A hello line over 512 bytes: closed without a status.
    let mut r = RawPeer::connect_from(agg, net.ip(64));
    r.send(&[b'A'; 600]);
    assert_eq!(r.status_line(), "");
    wait_metric(metrics, &reason("hello_too_long"), 1.0);

    // An unknown peer: 504, `hello_refused`.
    let mut r = RawPeer::connect_from(agg, net.ip(65));
    assert_eq!(r.hello("nobody"), "504");
    r.wait_closed();
    wait_metric(metrics, &reason("hello_refused"), 1.0);

    // lb1 from another address than its line's: `peer_address` only.
    let mut r = RawPeer::connect_from(agg, net.ip(66));
    assert_eq!(r.hello("lb1"), "504");
    r.wait_closed();
    wait_metric(metrics, &reason("peer_address"), 1.0);
    wait_log(
        &sa,
        &[&format!(
            "peer 'lb1' of 'data' refused (504): it connected from {}, expected {} (strict-peers)",
            net.ip(66),
            net.ip(11)
        )],
    );
    let text = metrics_text(metrics);
    assert_eq!(sample(&text, &reason("hello_refused")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &reason("maxconn")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &reason("dynamic_limit")), Some(0.0), "{text}");
    // From its own address, lb1 is accepted.
    let mut r = RawPeer::connect_from(agg, net.ip(11));
    assert_eq!(r.hello("lb1"), "200");
}

/// stickagg raises its soft open-file limit to fit `maxconn` (a service
/// starts with 1024, which a thousand nodes exhaust), at start and when a
/// reload raises `maxconn`; with a hard limit too low, it goes up to that
/// and says what to change.
#[test]
fn open_file_limit_fits_maxconn() {
    let net = Net::new(195);
    let cfg = |host: u8, maxconn: u64| {
        format!(
            "global\n    stats socket {{sock}}\n    maxconn {maxconn}\n\n\
             aggregations data\n    from any to .agg\n    dynamic-peers\n    peer gpe {} local\n",
            net.addr(host, PEERS_PORT)
        )
    };
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) },
        0
    );
    let hard = ours.rlim_max;
    assert!(
        hard > 1024,
        "this test needs a hard limit above 1024 ({hard})"
    );
    let want = |maxconn: u64| (maxconn + stickagg::fdlimit::RESERVE).min(hard);

    let sa = Stickagg::start_with_nofile(&cfg(2, 3000), 256, hard);
    assert_eq!(sa.nofile(), (want(3000), hard));
    if want(3000) == 3064 {
        wait_log(
            &sa,
            &["open-file limit raised from 256 to 3064 for maxconn 3000"],
        );
    }
    // A reload raising maxconn raises the limit.
    sa.write_config(&cfg(2, 5000));
    assert!(sa.cmd("reload").starts_with("Configuration reloaded"));
    assert_eq!(sa.nofile(), (want(5000), hard));

    // Hard limit 1024: as far as it goes, and a warning.
    let sb = Stickagg::start_with_nofile(&cfg(3, 3000), 256, 1024);
    assert_eq!(sb.nofile(), (1024, 1024));
    wait_log(
        &sb,
        &["maxconn 3000 needs 3064 open files but the hard limit is 1024"],
    );
}
