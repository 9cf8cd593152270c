//! Session persistence across the cluster, end to end: real HAProxy nodes
//! (2.6 and 3.0) balancing real HTTP servers ([`HttpBackend`]s answering
//! their own name), a real stickagg, and clients on distinct loopback
//! addresses. A client's first request through one node picks a server;
//! every later request through any node must reach the same one.
//!
//! Two ways for a node to use what stickagg pushes into `sessions.agg`:
//!
//! * [`Style::WriteTo`], the seed's `lb-session-persistence.cfg` (HAProxy
//!   2.9+): `sessions.agg … write-to mypeers/sessions`, so every update of
//!   the `.agg` table is also written into `sessions`, which the backend's
//!   `stick on src table mypeers/sessions` reads;
//! * [`Style::MatchAgg`], for HAProxy 2.6 (which refuses `write-to` with
//!   "table: unknown argument 'write-to'"): the backend reads the `.agg`
//!   table itself, `stick match src table mypeers/sessions.agg`, before its
//!   own `stick on src table mypeers/sessions`.
//!
//! Each scenario runs on its own 127.0.N.0/24 (nets 100–119 are used here).

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use testkit::{
    http_get_body, require_haproxy, wait_for, Haproxy, HaproxyOpts, HttpBackend, Net, Version,
};

/// Port of the backend HTTP servers (each on its own address).
const BACKEND_PORT: u16 = 8000;

/// How a node reads the cluster-wide choice (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    WriteTo,
    MatchAgg,
}

impl Style {
    /// The table from which a node's `stick match` takes the cluster's
    /// choice: `sessions` filled by `write-to`, or the `.agg` table itself.
    fn learned(self) -> &'static str {
        match self {
            Style::WriteTo => "mypeers/sessions",
            Style::MatchAgg => "mypeers/sessions.agg",
        }
    }
}

/// What `server_key` holds: the server's name (HAProxy's default) or its
/// address (`srvkey addr` on the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SrvKey {
    Name,
    Addr,
}

/// One `server` line of a node's backend.
#[derive(Debug, Clone)]
struct Srv {
    name: String,
    addr: SocketAddr,
    id: u32,
}

/// A node's tables and backend.
struct Lb<'a> {
    style: Style,
    srvkey: SrvKey,
    /// The `store` list of both tables.
    store: &'a str,
    /// Extra `http-request` lines of the frontend.
    rules: &'a str,
    /// `check` on every server line (as in the seed).
    check: bool,
}

/// The seed's `lb-session-persistence.cfg` on loopback: node `name` on host
/// `host` of `net`, the aggregator `gpe` at `agg`, `servers` in this node's
/// order.
fn lb_config(net: Net, host: u8, name: &str, agg: SocketAddr, lb: &Lb, servers: &[Srv]) -> String {
    let peers = net.addr(host, PEERS_PORT);
    let http = net.addr(host, HTTP_PORT);
    let srvkey = match lb.srvkey {
        SrvKey::Name => "",
        SrvKey::Addr => " srvkey addr",
    };
    let store = lb.store;
    let (write_to, stick) = match lb.style {
        Style::WriteTo => (
            " write-to mypeers/sessions",
            "stick on src table mypeers/sessions\n",
        ),
        Style::MatchAgg => (
            "",
            "stick match src table mypeers/sessions.agg\n    stick on src table mypeers/sessions\n",
        ),
    };
    let check = if lb.check { " check" } else { "" };
    let servers: String = servers
        .iter()
        .map(|s| format!("    server {} {}{check} id {}\n", s.name, s.addr, s.id))
        .collect();
    let rules: String = lb
        .rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        "{header}
peers mypeers
    bind {peers}
    server {name}
    server gpe {agg}
    table sessions type ip size 1m expire 30m{srvkey} store {store}
    table sessions.agg type ip size 1m expire 30m{srvkey} store {store}{write_to}

frontend fe_main
    bind {http}
{rules}    default_backend servers

backend servers
    balance roundrobin
    {stick}{servers}",
        header = testkit::HAPROXY_HEADER
    )
}

/// Three nodes, stickagg and the backend servers of one scenario.
struct Cluster {
    style: Style,
    srvkey: SrvKey,
    sa: Stickagg,
    nodes: Vec<Node>,
    /// The HTTP servers, by the name they answer with.
    backends: BTreeMap<String, HttpBackend>,
    /// Each node's server lines, in its order.
    servers: Vec<Vec<Srv>>,
}

impl Cluster {
    /// Starts backends `names` (see [`backend_addr`]), stickagg on
    /// host 2 and nodes `enterprise1..=3` on hosts 11..=13. `servers(i,
    /// backends)` gives node `i`'s server lines (each names one backend by
    /// address).
    fn start(
        version: Version,
        net: Net,
        lb: &Lb,
        names: &[String],
        servers: impl Fn(u8, &[(String, SocketAddr)]) -> Vec<Srv>,
    ) -> Cluster {
        let mut backends = BTreeMap::new();
        let mut addrs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = backend_addr(net, i);
            backends.insert(name.clone(), HttpBackend::start(addr, name).unwrap());
            addrs.push((name.clone(), addr));
        }
        let agg = net.addr(2, PEERS_PORT);
        let peers: Vec<(String, SocketAddr)> = (1..=3)
            .map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
            .collect();
        let sa = Stickagg::start(&static_agg_config("data", "from any to .agg", agg, &peers));
        let mut nodes = Vec::new();
        let mut all_servers = Vec::new();
        for i in 1..=3u8 {
            let name = format!("enterprise{i}");
            let srvs = servers(i, &addrs);
            let cfg = lb_config(net, 10 + i, &name, agg, lb, &srvs);
            let haproxy = Haproxy::start(version, &HaproxyOpts::new(name.clone(), cfg));
            nodes.push(Node {
                name,
                http: net.addr(10 + i, HTTP_PORT),
                peers: net.addr(10 + i, PEERS_PORT),
                haproxy,
            });
            all_servers.push(srvs);
        }
        let c = Cluster {
            style: lb.style,
            srvkey: lb.srvkey,
            sa,
            nodes,
            backends,
            servers: all_servers,
        };
        c.wait_connected();
        c
    }

    /// Every node has its session with stickagg up (so that nothing a test
    /// does next can be lost before the first connection).
    fn wait_connected(&self) {
        wait_for(Duration::from_secs(10), "3 nodes connected", || {
            let out = self.sa.cmd("show aggrs");
            (out.matches("state: 0x7").count() == 3)
                .then_some(())
                .ok_or(out)
        });
    }

    /// One request of `client` through node `n` (0-based); the name of the
    /// backend server that answered.
    fn visit(&self, n: usize, client: IpAddr) -> String {
        let node = &self.nodes[n];
        let (status, body) = http_get_body(node.http, client, "/")
            .unwrap_or_else(|e| panic!("GET / from {client} on {}: {e}", node.name));
        assert_eq!(status, 200, "{client} on {}: {body}", node.name);
        assert!(
            self.backends.contains_key(&body),
            "{client} on {}: unexpected body {body:?}",
            node.name
        );
        body
    }

    /// The `server_key` and `server_id` that node `n` stores for the backend
    /// answering as `backend`.
    fn expected(&self, n: usize, backend: &str) -> (String, u64) {
        let addr = self.backends[backend].addr();
        let srv = self.servers[n]
            .iter()
            .find(|s| s.addr == addr)
            .unwrap_or_else(|| panic!("no server for {backend} on node {n}"));
        let key = match self.srvkey {
            SrvKey::Name => srv.name.clone(),
            SrvKey::Addr => addr.to_string(),
        };
        (key, srv.id as u64)
    }

    /// The (`server_key`, `server_id`) of `client` in `table` on node `n`.
    fn stored(&self, n: usize, table: &str, client: IpAddr) -> Option<(String, u64)> {
        let e = self.nodes[n]
            .haproxy
            .table_entry(table, &client.to_string())?;
        Some((e.get("server_key")?.to_string(), e.get_u64("server_id")?))
    }

    /// Waits until node `n` has learned that `client` sticks to `backend`,
    /// in the table its `stick match` reads the cluster's choice from.
    fn wait_learned(&self, n: usize, client: IpAddr, backend: &str) {
        let want = self.expected(n, backend);
        let table = self.style.learned();
        wait_for(
            Duration::from_secs(10),
            &format!("{client} -> {want:?} in {table} on {}", self.nodes[n].name),
            || match self.stored(n, table, client) {
                Some(got) if got == want => Ok(()),
                // Say what the node has in .agg too: it tells a wrong total
                // from a wrong copy.
                other => Err(format!(
                    "{other:?} (in .agg: {:?}; stickagg: {})",
                    self.stored(n, "mypeers/sessions.agg", client),
                    self.sa
                        .cmd(&format!("show table sessions.agg key {client} detail"))
                )),
            },
        );
    }

    fn wait_learned_everywhere(&self, client: IpAddr, backend: &str) {
        for n in 0..self.nodes.len() {
            self.wait_learned(n, client, backend);
        }
    }
}

/// Backend `i` listens on 127.0.N.201, port 8000 + `i`.
fn backend_addr(net: Net, i: usize) -> SocketAddr {
    net.addr(201, BACKEND_PORT + i as u16)
}

/// Generates one #[test] per HAProxy version, each on its own net, with the
/// seed's configuration where the version has `write-to` (3.0) and the
/// `.agg`-reading one where it has not (2.6).
macro_rules! both_versions {
    ($name:ident, $net26:expr, $net30:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn haproxy_2_6() {
                if require_haproxy(Version::V26).is_some() {
                    super::$name(Version::V26, Style::MatchAgg, Net::new($net26));
                }
            }
            #[test]
            fn haproxy_3_0() {
                if require_haproxy(Version::V30).is_some() {
                    super::$name(Version::V30, Style::WriteTo, Net::new($net30));
                }
            }
        }
    };
}

/// One server line per backend; node 1 declares them in the backends'
/// order, nodes 2 and 3 in the reverse order, always with the same explicit
/// ids. With `srvkey addr` the server names differ on every node too: only
/// the address (or the id) can tell them apart.
fn servers(srvkey: SrvKey) -> impl Fn(u8, &[(String, SocketAddr)]) -> Vec<Srv> {
    move |node, backends| {
        let mut v: Vec<Srv> = backends
            .iter()
            .enumerate()
            .map(|(i, (name, addr))| Srv {
                name: match srvkey {
                    SrvKey::Name => name.clone(),
                    SrvKey::Addr => format!("lb{node}-{name}"),
                },
                addr: *addr,
                id: i as u32 + 1,
            })
            .collect();
        if node != 1 {
            v.reverse();
        }
        v
    }
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("s{i}")).collect()
}

const PERSIST: &str = "server_id,server_key";

// ---------------------------------------------------------------------------

/// The main scenario: first requests through node 1 spread clients
/// over both servers; later requests through nodes 2 and 3, and through
/// node 2 after it restarted, reach the same server.
fn follow_the_client(version: Version, style: Style, net: Net, srvkey: SrvKey) {
    let lb = Lb {
        style,
        srvkey,
        store: PERSIST,
        rules: "",
        check: true,
    };
    let c = Cluster::start(version, net, &lb, &names(2), servers(srvkey));
    let clients: Vec<IpAddr> = (50..56).map(|h| net.ip(h)).collect();
    let first: Vec<String> = clients.iter().map(|&cl| c.visit(0, cl)).collect();
    let picked: BTreeSet<&String> = first.iter().collect();
    assert_eq!(picked.len(), 2, "round robin used both servers: {first:?}");
    // Node 1 stored its choice in its own `sessions` table.
    for (cl, b) in clients.iter().zip(&first) {
        assert_eq!(c.stored(0, "mypeers/sessions", *cl), Some(c.expected(0, b)));
    }

    for (&cl, b) in clients.iter().zip(&first) {
        c.wait_learned_everywhere(cl, b);
    }
    for (&cl, b) in clients.iter().zip(&first) {
        for n in [1, 2, 1, 2, 0] {
            assert_eq!(&c.visit(n, cl), b, "{cl} through {}", c.nodes[n].name);
        }
    }

    // Node 2 restarts with empty tables: stickagg's answer to its resync
    // request, on a new connection (fresh dictionaries on both sides),
    // brings every client's server back before any of them returns.
    let mut c = c;
    c.nodes[1].haproxy.restart();
    for (&cl, b) in clients.iter().zip(&first) {
        c.wait_learned(1, cl, b);
    }
    for (&cl, b) in clients.iter().zip(&first) {
        for _ in 0..3 {
            assert_eq!(&c.visit(1, cl), b, "{cl} through restarted enterprise2");
        }
    }
    // New clients through the restarted node are shared the same way.
    let late = net.ip(60);
    let b = c.visit(1, late);
    c.wait_learned_everywhere(late, &b);
    assert_eq!(c.visit(0, late), b);
    assert_eq!(c.visit(2, late), b);
}

both_versions!(srvkey_name, 100, 101);
fn srvkey_name(version: Version, style: Style, net: Net) {
    follow_the_client(version, style, net, SrvKey::Name);
}

both_versions!(srvkey_addr, 102, 103);
fn srvkey_addr(version: Version, style: Style, net: Net) {
    follow_the_client(version, style, net, SrvKey::Addr);
}

/// The `.agg`-reading configuration works on 3.0 as well.
#[test]
fn match_agg_on_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        follow_the_client(Version::V30, Style::MatchAgg, Net::new(104), SrvKey::Name);
    }
}

both_versions!(latest_write_wins, 105, 106);
fn latest_write_wins(version: Version, style: Style, net: Net) {
    let lb = Lb {
        style,
        srvkey: SrvKey::Name,
        store: PERSIST,
        rules: "",
        check: true,
    };
    let c = Cluster::start(version, net, &lb, &names(2), servers(SrvKey::Name));
    let cl = net.ip(50);
    let first = c.visit(0, cl);
    c.wait_learned_everywhere(cl, &first);
    let other = if first == "s1" { "s2" } else { "s1" };

    // Node 2 cannot use the client's server (maintenance): it sends the
    // client to the other one and stores that. This later write wins on
    // every node, node 1 included, although node 1 made the first choice.
    c.nodes[1]
        .haproxy
        .cmd(&format!("disable server servers/{first}"));
    assert_eq!(c.visit(1, cl), other);
    c.wait_learned_everywhere(cl, other);
    assert_eq!(c.visit(0, cl), other);
    assert_eq!(c.visit(2, cl), other);
    c.nodes[1]
        .haproxy
        .cmd(&format!("enable server servers/{first}"));
    // With `stick match` on `.agg` (2.6), nodes 1 and 3 still hold the
    // first choice in their own `sessions` and re-send it whenever a
    // request refreshes that entry, just before storing the new one: such
    // a re-send is no new write and must never take the client back.
    for _ in 0..5 {
        for n in [1, 0, 2] {
            assert_eq!(c.visit(n, cl), other, "through {}", c.nodes[n].name);
        }
    }
    // stickagg said so at debug level. (With `write-to`, node 2 first
    // re-sends the first choice it learned, as its `stick match` refreshes
    // the entry, so the value replaced may be named as node 2's.)
    let (old, new) = (
        format!("server_key \"{first}\" from enterprise"),
        format!("replaced by \"{other}\" from enterprise2 (latest write wins)"),
    );
    wait_for(Duration::from_secs(5), "the replacement logged", || {
        let log = c.sa.log();
        log.lines()
            .find(|l| l.contains("/sessions.agg key ") && l.contains(&old) && l.contains(&new))
            .map(str::to_string)
            .ok_or(format!("{old} … {new}"))
    });
}

/// A table mixing persistence with a counter (each combines by its own
/// rule: `server_id`/`server_key` the latest write, `http_req_cnt` the sum),
/// with requests that never reach the backend (denied in the frontend):
/// such a request creates or refreshes the entry with no server in it on
/// a node that has none, and that must not erase the client's server.
fn mixed(version: Version, style: Style, net: Net) {
    let lb = Lb {
        style,
        srvkey: SrvKey::Name,
        store: "server_id,server_key,http_req_cnt",
        rules: "http-request track-sc0 src table mypeers/sessions
                http-request deny deny_status 403 if { path /deny }",
        check: true,
    };
    let mut c = Cluster::start(version, net, &lb, &names(2), servers(SrvKey::Name));
    let clients: Vec<IpAddr> = (50..54).map(|h| net.ip(h)).collect();
    let first: Vec<String> = clients.iter().map(|&cl| c.visit(0, cl)).collect();
    for (&cl, b) in clients.iter().zip(&first) {
        c.wait_learned_everywhere(cl, b);
    }
    let all: Vec<&Node> = c.nodes.iter().collect();
    // Then the latest write for each client is node 3's denied request;
    // then node 2 serves each client once more.
    for &cl in &clients {
        let (st, _) = http_get_body(c.nodes[2].http, cl, "/deny").unwrap();
        assert_eq!(st, 403);
    }
    let check = |c: &Cluster, count: u64| {
        for (&cl, b) in clients.iter().zip(&first) {
            // The counter is the cluster's sum, the server the first choice.
            wait_value(
                &all,
                "mypeers/sessions.agg",
                &cl.to_string(),
                "http_req_cnt",
                count,
            );
            for n in 0..3 {
                assert_eq!(
                    c.stored(n, "mypeers/sessions.agg", cl),
                    Some(c.expected(n, b)),
                    "{cl} in sessions.agg on {}",
                    c.nodes[n].name
                );
            }
        }
    };
    check(&c, 2);
    for (&cl, b) in clients.iter().zip(&first) {
        assert_eq!(&c.visit(1, cl), b);
    }
    check(&c, 3);
    // A restarted node gets the server back too, not a "no server" left by
    // the denied requests.
    c.nodes[1].haproxy.restart();
    for (&cl, b) in clients.iter().zip(&first) {
        c.wait_learned(1, cl, b);
        assert_eq!(&c.visit(1, cl), b, "{cl} through restarted enterprise2");
    }
}

both_versions!(mixed_with_counters, 107, 108);
fn mixed_with_counters(version: Version, style: Style, net: Net) {
    mixed(version, style, net);
}

/// The same on 3.0 with the `.agg`-reading configuration: there, a node
/// has no `sessions` entry for a client it never served, so its denied
/// request creates one without a server and sends it to stickagg.
#[test]
fn mixed_match_agg_on_haproxy_3_0() {
    if require_haproxy(Version::V30).is_some() {
        mixed(Version::V30, Style::MatchAgg, Net::new(109));
    }
}

both_versions!(more_servers_than_dictionary_slots, 110, 111);
fn more_servers_than_dictionary_slots(version: Version, style: Style, net: Net) {
    // 140 servers, one client each: 140 distinct `server_key`s go through
    // every connection's 128-slot dictionary in both directions, so slots
    // are replaced and re-defined (node 1 → stickagg, stickagg → each
    // node, and again after a node restarts).
    const N: usize = 140;
    let lb = Lb {
        style,
        srvkey: SrvKey::Name,
        store: PERSIST,
        rules: "",
        check: false,
    };
    let backend_names: Vec<String> = (0..N).map(|i| format!("srv{i:03}")).collect();
    let mut c = Cluster::start(version, net, &lb, &backend_names, servers(SrvKey::Name));
    let clients: Vec<IpAddr> = (0..N).map(|i| net.ip(20 + i as u8)).collect();
    let first: Vec<String> = clients.iter().map(|&cl| c.visit(0, cl)).collect();
    let distinct: BTreeSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), N, "one server per client");
    let check_all = |c: &Cluster, n: usize| {
        for (&cl, b) in clients.iter().zip(&first) {
            c.wait_learned(n, cl, b);
        }
    };
    for n in 0..3 {
        check_all(&c, n);
    }
    for (&cl, b) in clients.iter().zip(&first).step_by(7) {
        assert_eq!(&c.visit(2, cl), b);
    }
    c.nodes[1].haproxy.restart();
    check_all(&c, 1);
    for (&cl, b) in clients.iter().zip(&first) {
        assert_eq!(&c.visit(1, cl), b, "{cl} through restarted enterprise2");
    }
}
