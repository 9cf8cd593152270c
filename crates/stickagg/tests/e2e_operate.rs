//! Operating stickagg: every stats-socket command, Prometheus metrics,
//! reloads and shutdown, checked against a running stickagg with real
//! HAProxy nodes (nets 120–139).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use testkit::{http_get, parse_show_table, require_haproxy, wait_for, Net, Version};

const TABLES: &str = "
table request_rates type ip size 100k expire 30s store http_req_cnt,http_req_rate(2s)
table request_rates.agg type ip size 100k expire 30s store http_req_cnt,http_req_rate(2s)";
const TRACK: &str = "http-request track-sc0 src table mypeers/request_rates";

fn spec() -> NodeSpec<'static> {
    NodeSpec {
        tables: TABLES,
        rules: TRACK,
        agg_name: "gpe",
    }
}

fn agg_config(net: Net, peers: &[u8], extra_global: &str) -> String {
    let names: Vec<(String, SocketAddr)> = peers
        .iter()
        .map(|&i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
        .collect();
    static_agg_config("data", "from any to .agg", net.addr(2, PEERS_PORT), &names)
        .replace("global\n", &format!("global\n{extra_global}"))
}

fn http(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample line `name{labels} value` of a Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn commands_and_metrics_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        commands_and_metrics(Version::V30, Net::new(120));
    }
}

#[test]
fn commands_and_metrics_haproxy_2_6() {
    if require_haproxy(Version::V26).is_some() {
        commands_and_metrics(Version::V26, Net::new(121));
    }
}

fn commands_and_metrics(version: Version, net: Net) {
    let metrics = net.addr(3, 9100);
    let sa = Stickagg::start(&agg_config(
        net,
        &[1, 2],
        &format!("    metrics {metrics}\n"),
    ));
    let agg = net.addr(2, PEERS_PORT);
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(version, net, i, agg, &spec()))
        .collect();
    let c = net.ip(50);
    let key = c.to_string();
    for _ in 0..2 {
        http_get(nodes[0].http, c, "/").unwrap();
    }
    for _ in 0..3 {
        http_get(nodes[1].http, c, "/").unwrap();
    }
    wait_value(
        &[&nodes[0], &nodes[1]],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        5,
    );

    // The socket is private by default.
    let mode = std::fs::metadata(sa.sock()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let help = sa.cmd("help");
    for cmd in [
        "show aggrs",
        "show peers",
        "show tables",
        "show table",
        "show info",
        "reload",
    ] {
        assert!(help.contains(cmd), "help lacks {cmd}:\n{help}");
    }

    let peers = sa.cmd("show peers");
    for n in &nodes {
        let line = peers
            .lines()
            .find(|l| l.contains(&format!("peer={} ", n.name)))
            .unwrap_or_else(|| panic!("{peers}"));
        assert!(
            line.contains("role=node")
                && line.contains("state=ESTA")
                && line.contains("last_status=ESTA"),
            "{line}"
        );
    }
    assert!(
        peers.contains("updates_in=") && !peers.contains("updates_in=0 "),
        "{peers}"
    );

    let tables = sa.cmd("show tables");
    assert!(
        tables.contains("/request_rates -> /request_rates.agg type=ip len=4 store=http_req_cnt,http_req_rate(2000) expire=30000 entries=1"),
        "{tables}"
    );
    assert!(
        tables.contains("enterprise1:1") && tables.contains("enterprise2:1"),
        "{tables}"
    );

    // show table: HAProxy's own line format, same values as the nodes'.
    let out = sa.cmd("show table request_rates.agg");
    assert!(out.starts_with("# table: /request_rates.agg"), "{out}");
    let entries = parse_show_table(&out);
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0].key, key);
    assert_eq!(entries[0].get_u64("http_req_cnt"), Some(5));
    assert_eq!(entries[0].period_ms("http_req_rate"), Some(2000));
    let detail = sa.cmd(&format!("show table /request_rates.agg key {key} detail"));
    assert!(
        detail.contains("from=enterprise1") && detail.contains("from=enterprise2"),
        "{detail}"
    );
    assert!(
        detail.contains(" http_req_cnt=2") && detail.contains(" http_req_cnt=3"),
        "{detail}"
    );
    assert!(
        sa.cmd("show table request_rates.agg key 10.9.9.9")
            .lines()
            .count()
            == 1
    );
    assert!(sa.cmd("show table nosuch").contains("No such table"));

    let info = sa.cmd("show info");
    for want in [
        "Name: stickagg",
        "Peers_up: 2",
        "Tables: 1",
        "Entries: 1",
        "Pid: ",
    ] {
        assert!(info.contains(want), "{want}:\n{info}");
    }
    // Several commands in one line.
    let both = sa.cmd("show info; show aggrs");
    assert!(
        both.contains("Peers_up: 2") && both.contains("aggregations data"),
        "{both}"
    );
    assert!(sa.cmd("bogus").contains("Unknown command"));

    // Interactive mode: a prompt after each answer, until quit.
    let mut s = UnixStream::connect(sa.sock()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"prompt\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut buf = [0u8; 2];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"> ");
    s.write_all(b"show info\n").unwrap();
    let mut answer = String::new();
    while !answer.ends_with("> ") {
        let mut line = Vec::new();
        let _ = r.read_until(b' ', &mut line).unwrap();
        answer.push_str(&String::from_utf8_lossy(&line));
    }
    assert!(answer.contains("Peers_up: 2"), "{answer}");
    s.write_all(b"quit\n").unwrap();

    // Metrics.
    let (st, text) = http(metrics, "/metrics");
    assert_eq!(st, 200);
    assert_eq!(
        sample(
            &text,
            "stickagg_peers{section=\"data\",state=\"established\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "stickagg_table_entries{section=\"data\",table=\"/request_rates.agg\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let got = sample(
        &text,
        "stickagg_updates_received_total{section=\"data\",peer=\"enterprise2\"}",
    )
    .unwrap();
    // HAProxy pushes an entry's current state, so several requests may
    // travel as one update.
    assert!(got >= 1.0, "{text}");
    assert!(
        sample(
            &text,
            "stickagg_updates_sent_total{section=\"data\",peer=\"enterprise1\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(&text, "stickagg_push_delay_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert!(text.contains(
        "stickagg_protocol_errors_total{section=\"data\",peer=\"enterprise1\",kind=\"decode\"} 0"
    ));
    for m in ["rate_republishes", "contributions_expired"] {
        let name = format!("stickagg_{m}_total{{section=\"data\"}}");
        assert!(sample(&text, &name).is_some(), "{name} in {text}");
    }
    for m in ["received", "sent"] {
        let name = format!(
            "stickagg_table_updates_{m}_total{{section=\"data\",table=\"/request_rates.agg\"}}"
        );
        assert!(
            sample(&text, &name).unwrap_or(0.0) >= 1.0,
            "{name}:\n{text}"
        );
    }
    assert!(!text.contains(&key), "no per-key labels");
    assert_eq!(http(metrics, "/health"), (200, "OK\n".to_string()));
    assert_eq!(http(metrics, "/nope").0, 404);
}

#[test]
fn reload_scenarios() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(122);
    let agg = net.addr(2, PEERS_PORT);
    // Only enterprise1 is listed: enterprise2 is refused (504) at first.
    let mut sa = Stickagg::start(&agg_config(net, &[1], ""));
    let n1 = start_node(Version::V30, net, 1, agg, &spec());
    let n2 = start_node(Version::V30, net, 2, agg, &spec());
    let c = net.ip(51);
    let key = c.to_string();
    http_get(n1.http, c, "/").unwrap();
    http_get(n2.http, c, "/").unwrap();
    wait_value(&[&n1], "mypeers/request_rates.agg", &key, "http_req_cnt", 1);

    // Add a peer (SIGHUP): stickagg connects to it; node 1's value is kept.
    sa.write_config(&agg_config(net, &[1, 2], ""));
    sa.signal("HUP");
    wait_value(
        &[&n1, &n2],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        2,
    );
    assert!(
        sa.log().contains("peer 'enterprise2' added to 'data'"),
        "{}",
        sa.log()
    );

    // A broken file is reported and the running configuration kept.
    sa.write_config("aggregations data\n    form any to .agg\n");
    let out = sa.cmd("reload");
    assert!(
        out.contains("Reload failed") && out.contains("stickagg.cfg:2"),
        "{out}"
    );
    assert_eq!(sa.cmd("show aggrs").matches("state: 0x7").count(), 2);
    http_get(n2.http, c, "/").unwrap();
    wait_value(
        &[&n1, &n2],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        3,
    );

    // Remove a peer (reload command): its session is closed, it is no
    // longer listed, and the remaining node keeps being aggregated.
    sa.write_config(&agg_config(net, &[1], ""));
    let out = sa.cmd("reload");
    assert!(out.contains("peer 'enterprise2' removed"), "{out}");
    let aggrs = sa.cmd("show aggrs");
    assert!(!aggrs.contains("enterprise2"), "{aggrs}");
    http_get(n1.http, c, "/").unwrap();
    wait_value(&[&n1], "mypeers/request_rates.agg", &key, "http_req_cnt", 4);
    assert!(sa.cmd("show info").contains("Reloads: 2"));

    // Shutdown: SIGTERM closes the sessions and exits 0.
    sa.signal("TERM");
    let st = sa.wait_exit(Duration::from_secs(3));
    assert!(st.success(), "{st:?}");
    wait_for(
        Duration::from_secs(5),
        "node 1 sees the session closed",
        || {
            let out = n1.haproxy.cmd("show peers");
            (!out.contains("last_status=ESTA") || out.contains("(remote,inactive)"))
                .then_some(())
                .ok_or(out)
        },
    );
}

#[test]
fn logs_to_a_file_in_json() {
    // No HAProxy needed: the log file and its format are the point.
    let dir = testkit::temp_dir();
    let cfg = dir.path().join("s.cfg");
    let log = dir.path().join("s.log");
    std::fs::write(&log, "old line\n").unwrap();
    std::fs::write(
        &cfg,
        "aggregations data\n    from any to .agg\n    peer gpe 127.0.123.2:10000 local\n    dynamic-peers\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stickagg"))
        .args(["--log-format", "json", "-l"])
        .arg(format!("W:{}", log.display()))
        .arg("-f")
        .arg(&cfg)
        .spawn()
        .unwrap();
    let text = wait_for(
        Duration::from_secs(10),
        "the start line in the log file",
        || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.contains("started").then_some(t.clone()).ok_or(t)
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains("old line"), "W: truncates:\n{text}");
    for line in text.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
}

#[test]
fn changed_table_definition_and_clear_table() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(124);
    let agg = net.addr(2, PEERS_PORT);
    let sa = Stickagg::start(&agg_config(net, &[1, 2], ""));
    let mut nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(Version::V30, net, i, agg, &spec()))
        .collect();
    let c = net.ip(52);
    let key = c.to_string();
    http_get(nodes[0].http, c, "/").unwrap();
    http_get(nodes[1].http, c, "/").unwrap();
    wait_value(
        &[&nodes[0], &nodes[1]],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        2,
    );

    // `clear table` drops stickagg's state for a key; a node's next update
    // brings its own (absolute) value back.
    assert_eq!(
        sa.cmd(&format!("clear table request_rates.agg key {key}")),
        ""
    );
    assert!(
        sa.cmd("show table request_rates.agg").lines().count() == 1,
        "cleared"
    );
    http_get(nodes[0].http, c, "/").unwrap();
    wait_for(
        Duration::from_secs(5),
        "node 1's value back in stickagg",
        || {
            let t = parse_show_table(&sa.cmd("show table request_rates.agg"));
            (t.len() == 1 && t[0].get_u64("http_req_cnt") == Some(2))
                .then_some(())
                .ok_or(t)
        },
    );

    // The nodes are reloaded one after the other with a new `store` list:
    // stickagg adopts it without a restart once no node feeds the old one.
    let tables = "
table request_rates type ip size 100k expire 30s store http_req_cnt,gpc0,http_req_rate(2s)
table request_rates.agg type ip size 100k expire 30s store http_req_cnt,gpc0,http_req_rate(2s)";
    let rules =
        "http-request track-sc0 src table mypeers/request_rates\nhttp-request sc-inc-gpc0(0)";
    let new_spec = NodeSpec {
        tables,
        rules,
        agg_name: "gpe",
    };
    for (i, node) in nodes.iter_mut().enumerate() {
        node.haproxy.kill();
        *node = start_node(Version::V30, net, i as u8 + 1, agg, &new_spec);
    }
    wait_for(
        Duration::from_secs(5),
        "the new definition in stickagg",
        || {
            let t = sa.cmd("show tables");
            t.contains("store=gpc0,http_req_cnt,http_req_rate(2000)")
                .then_some(())
                .ok_or(t)
        },
    );
    for _ in 0..2 {
        http_get(nodes[0].http, c, "/").unwrap();
    }
    http_get(nodes[1].http, c, "/").unwrap();
    wait_value(
        &[&nodes[0], &nodes[1]],
        "mypeers/request_rates.agg",
        &key,
        "gpc0",
        3,
    );
    wait_value(
        &[&nodes[0], &nodes[1]],
        "mypeers/request_rates.agg",
        &key,
        "http_req_cnt",
        3,
    );
    assert!(
        sa.log().contains("now follows the definition announced by"),
        "{}",
        sa.log()
    );
}

#[test]
fn stalled_stats_clients_never_stall_the_engine() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(125);
    let agg = net.addr(2, PEERS_PORT);
    let sa = Stickagg::start(&agg_config(net, &[1, 2], ""));
    let nodes: Vec<Node> = (1..=2)
        .map(|i| start_node(Version::V30, net, i, agg, &spec()))
        .collect();
    // Clients that connect and say nothing, one in interactive mode, and
    // one that asks for a lot and never reads the answer.
    let mut idle: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(sa.sock()).unwrap())
        .collect();
    idle[0].write_all(b"prompt\n").unwrap();
    let mut greedy = UnixStream::connect(sa.sock()).unwrap();
    for _ in 0..200 {
        let _ = greedy.write_all(b"prompt\nshow peers; show tables; show info; help\n");
    }
    let c = net.ip(53);
    for round in 1..=3u64 {
        http_get(nodes[0].http, c, "/").unwrap();
        http_get(nodes[1].http, c, "/").unwrap();
        wait_value(
            &[&nodes[0], &nodes[1]],
            "mypeers/request_rates.agg",
            &c.to_string(),
            "http_req_cnt",
            2 * round,
        );
    }
    // Other clients are still answered.
    assert!(sa.cmd("show info").contains("Peers_up: 2"));
    drop((idle, greedy));
}

#[test]
fn reload_adds_and_removes_sections() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    // Two clusters, each with its own aggregations section and address.
    let (n1, n2) = (Net::new(126), Net::new(127));
    let conf_a = agg_config(n1, &[1], "");
    let section_b = format!(
        "\naggregations other\n    from any to .agg\n    peer gpe {} local\n    peer enterprise1 {}\n",
        n2.addr(2, PEERS_PORT),
        n2.addr(11, PEERS_PORT)
    );
    let sa = Stickagg::start(&conf_a);
    let a = start_node(Version::V30, n1, 1, n1.addr(2, PEERS_PORT), &spec());
    let b = start_node(Version::V30, n2, 1, n2.addr(2, PEERS_PORT), &spec());
    let c = n1.ip(54);
    http_get(a.http, c, "/").unwrap();
    wait_value(
        &[&a],
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        1,
    );

    // Add the second section: stickagg listens on its address and connects
    // to its node; the first section's values are untouched.
    sa.write_config(&format!("{conf_a}{section_b}"));
    let out = sa.cmd("reload");
    assert!(out.contains("section 'other' added"), "{out}");
    let cb = n2.ip(55);
    for _ in 0..2 {
        http_get(b.http, cb, "/").unwrap();
    }
    wait_value(
        &[&b],
        "mypeers/request_rates.agg",
        &cb.to_string(),
        "http_req_cnt",
        2,
    );
    http_get(a.http, c, "/").unwrap();
    wait_value(
        &[&a],
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        2,
    );

    // Remove it again: its session closes and it is no longer shown.
    sa.write_config(&conf_a);
    sa.signal("HUP");
    wait_for(Duration::from_secs(5), "section 'other' gone", || {
        let out = sa.cmd("show aggrs");
        (!out.contains("aggregations other"))
            .then_some(())
            .ok_or(out)
    });
    assert!(sa.log().contains("section 'other' removed"), "{}", sa.log());
    http_get(a.http, c, "/").unwrap();
    wait_value(
        &[&a],
        "mypeers/request_rates.agg",
        &c.to_string(),
        "http_req_cnt",
        3,
    );
}
