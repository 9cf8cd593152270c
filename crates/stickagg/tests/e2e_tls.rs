//! TLS between HAProxy nodes and stickagg, end to end: certificates made by
//! the test (rcgen: a CA, one certificate per peer named after its peer
//! name, written as HAProxy-style PEMs holding certificate and key), real
//! HAProxy nodes built with OpenSSL with `ssl … verify required` on both
//! their peers `bind` and their `server gpe` line, and stickagg with a TLS
//! listener and TLS `peer` lines.
//!
//! Nets 160–179 are used here.

mod common;

use common::both_versions;
use common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::{http_get, require_haproxy, wait_for, Haproxy, HaproxyOpts, Net, Version};

const TABLES: &str = "
table request_rates type ip size 100k expire 30s store http_req_cnt
table request_rates.agg type ip size 100k expire 30s store http_req_cnt";

/// A test CA writing HAProxy-style PEM files into a directory.
struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "stickagg test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes `<file>.pem`: a certificate for the DNS name `name` (CN and
    /// subjectAltName), usable as server and client certificate, followed by
    /// its private key.
    fn issue(&self, file: &str, name: &str) -> PathBuf {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, cert.pem() + &key.serialize_pem()).unwrap();
        path
    }
}

/// Peers section options of a node: its TLS listener and its TLS line to
/// the aggregator (which must present a certificate named `gpe`).
fn node_tls_config(
    net: Net,
    host: u8,
    name: &str,
    agg: SocketAddr,
    pem: &Path,
    ca: &Path,
) -> String {
    let peers = net.addr(host, PEERS_PORT);
    let http = net.addr(host, HTTP_PORT);
    let (pem, ca) = (pem.display(), ca.display());
    format!(
        "{header}
peers mypeers
    bind {peers} ssl crt {pem} ca-file {ca} verify required
    server {name}
    server gpe {agg} ssl verify required ca-file {ca} crt {pem} verifyhost gpe
{tables}

frontend fe_main
    bind {http}
    http-request track-sc0 src table mypeers/request_rates
    http-request return status 200
",
        header = testkit::HAPROXY_HEADER,
        tables = TABLES
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
    )
}

/// Starts node `enterprise<i>` (host 10 + i) presenting `pem`.
fn start_tls_node(
    version: Version,
    net: Net,
    i: u8,
    agg: SocketAddr,
    pki: &Pki,
    pem: &Path,
) -> Node {
    start_node_with(version, net, i, |host, name| {
        node_tls_config(net, host, name, agg, pem, &pki.ca_file())
    })
}

/// stickagg listening with TLS (client certificates required) and calling
/// every node with TLS (server certificate checked against the peer name).
fn tls_agg_config(agg: SocketAddr, pki: &Pki, nodes: &[(&str, SocketAddr)]) -> String {
    let gpe = pki.dir.join("gpe.pem");
    let (gpe, ca) = (gpe.display(), pki.ca_file().display().to_string());
    let mut s = format!(
        "global\n    stats socket {{sock}}\n\naggregations data\n    from any to .agg\n    \
         peer gpe {agg} local ssl crt {gpe} ca-file {ca} verify required\n"
    );
    for (name, addr) in nodes {
        s.push_str(&format!(
            "    peer {name} {addr} ssl verify required ca-file {ca} crt {gpe}\n"
        ));
    }
    s
}

fn get(node: &Node, client: std::net::IpAddr, times: usize) {
    for _ in 0..times {
        assert_eq!(http_get(node.http, client, "/").unwrap(), 200);
    }
}

/// Whether `show peers` reports `peer` established.
fn established(sa: &Stickagg, peer: &str) -> bool {
    sa.cmd("show peers")
        .lines()
        .any(|l| l.contains(&format!("peer={peer} ")) && l.contains("state=ESTA"))
}

fn wait_log(sa: &Stickagg, what: &str, needle: &str) {
    wait_for(Duration::from_secs(10), what, || {
        let log = sa.log();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(format!("no '{needle}' in the log yet"))
        }
    });
}

// ---------------------------------------------------------------------------

both_versions!(mutual_tls_aggregates, 160, 161);
fn mutual_tls_aggregates(version: Version, net: Net) {
    let dir = testkit::temp_dir();
    let pki = Pki::new(dir.path());
    pki.issue("gpe", "gpe");
    let agg = net.addr(2, PEERS_PORT);
    let peers: Vec<(String, SocketAddr)> = (1..=3)
        .map(|i| (format!("enterprise{i}"), net.addr(10 + i, PEERS_PORT)))
        .collect();
    let names: Vec<(&str, SocketAddr)> = peers.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let sa = Stickagg::start(&tls_agg_config(agg, &pki, &names));
    let mut nodes = Vec::new();
    for i in 1..=3u8 {
        let name = format!("enterprise{i}");
        // enterprise3 calls the aggregator at a dead address: its session is
        // the one stickagg opens (TLS client side, name checked).
        let to = if i == 3 { net.addr(3, PEERS_PORT) } else { agg };
        nodes.push(start_tls_node(
            version,
            net,
            i,
            to,
            &pki,
            &pki.issue(&name, &name),
        ));
    }
    let nodes_ref: Vec<&Node> = nodes.iter().collect();
    let (a, b) = (net.ip(50), net.ip(51));
    get(&nodes[0], a, 3);
    get(&nodes[1], a, 4);
    get(&nodes[2], a, 1);
    get(&nodes[1], b, 2);
    wait_value(
        &nodes_ref,
        "mypeers/request_rates.agg",
        &a.to_string(),
        "http_req_cnt",
        8,
    );
    wait_value(
        &nodes_ref,
        "mypeers/request_rates.agg",
        &b.to_string(),
        "http_req_cnt",
        2,
    );
    assert!(sa
        .log()
        .contains(&format!("listening for peers on {agg} (TLS)")));
    let show = sa.cmd("show peers");
    for n in ["enterprise1", "enterprise2", "enterprise3"] {
        assert!(established(&sa, n), "{n}:\n{show}");
    }
    assert!(
        show.lines()
            .any(|l| l.contains("peer=enterprise3 ") && l.contains("session=out")),
        "{show}"
    );
    // More traffic keeps flowing through the encrypted sessions.
    get(&nodes[0], b, 5);
    get(&nodes[2], b, 1);
    wait_value(
        &nodes_ref,
        "mypeers/request_rates.agg",
        &b.to_string(),
        "http_req_cnt",
        8,
    );
    let log = sa.log();
    assert!(!log.contains("TLS handshake"), "{log}");
    assert!(!log.contains("(TLS, 504)"), "{log}");
}

both_versions!(certificate_for_another_name_is_refused, 162, 163);
fn certificate_for_another_name_is_refused(version: Version, net: Net) {
    let dir = testkit::temp_dir();
    let pki = Pki::new(dir.path());
    pki.issue("gpe", "gpe");
    let agg = net.addr(2, PEERS_PORT);
    let n1 = net.addr(11, PEERS_PORT);
    let n2 = net.addr(12, PEERS_PORT);
    let sa = Stickagg::start(&tls_agg_config(
        agg,
        &pki,
        &[("enterprise1", n1), ("enterprise2", n2)],
    ));
    // enterprise2's certificate is signed by the right CA but names
    // another peer: refused in both directions (stickagg calling it, and it
    // calling stickagg with it as client certificate).
    let good = start_tls_node(
        version,
        net,
        1,
        agg,
        &pki,
        &pki.issue("enterprise1", "enterprise1"),
    );
    let bad = start_tls_node(
        version,
        net,
        2,
        agg,
        &pki,
        &pki.issue("impostor", "enterprise9"),
    );
    wait_log(
        &sa,
        "stickagg refusing enterprise2's server certificate",
        "connect to peer 'enterprise2' failed (TLS handshake failed: invalid peer certificate",
    );
    wait_log(
        &sa,
        "stickagg refusing enterprise2's client certificate",
        "peer 'enterprise2' from 127.0.",
    );
    assert!(
        sa.log()
            .contains("its certificate is not valid for the name 'enterprise2'"),
        "{}",
        sa.log()
    );
    let a = net.ip(50);
    get(&good, a, 3);
    get(&bad, a, 4);
    wait_value(
        &[&good],
        "mypeers/request_rates.agg",
        &a.to_string(),
        "http_req_cnt",
        3,
    );
    // Nothing from the impostor is ever counted, and it never gets a total.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            value(
                &good,
                "mypeers/request_rates.agg",
                &a.to_string(),
                "http_req_cnt"
            ),
            Some(3)
        );
        assert_eq!(
            value(
                &bad,
                "mypeers/request_rates.agg",
                &a.to_string(),
                "http_req_cnt"
            ),
            None
        );
        assert!(!established(&sa, "enterprise2"), "{}", sa.cmd("show peers"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(established(&sa, "enterprise1"), "{}", sa.cmd("show peers"));
}

#[test]
fn plain_tcp_to_a_tls_listener_is_closed() {
    let net = Net::new(164);
    let dir = testkit::temp_dir();
    let pki = Pki::new(dir.path());
    pki.issue("gpe", "gpe");
    let agg = net.addr(2, PEERS_PORT);
    // The global `bind … ssl` (a section without a local address).
    let sa = Stickagg::start(&format!(
        "global\n    stats socket {{sock}}\n    bind {agg} ssl crt {} ca-file {} verify required\n\n\
         aggregations gpe\n    from any to .agg\n    dynamic-peers\n",
        dir.path().join("gpe.pem").display(),
        pki.ca_file().display()
    ));
    assert!(sa
        .log()
        .contains(&format!("listening for peers on {agg} (TLS)")));
    // A peers hello in clear: the TLS layer sees garbage and closes.
    let mut s = TcpStream::connect_timeout(&agg, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HAProxyS 2.1\ngpe\nenterprise1 1234 1\n\n")
        .unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    // Whatever TLS alert comes back, the connection ends (EOF or reset).
    let _ = s.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(9), "not closed");
    assert!(!buf.starts_with(b"200"), "answered in clear: {buf:?}");
    wait_log(
        &sa,
        "the refused handshake logged",
        "TLS handshake with 127.0.0.1:",
    );
    assert!(sa.log().contains("connection closed"), "{}", sa.log());
    // A client that connects and says nothing is closed after the handshake
    // timeout, not kept forever.
    let mut idle = TcpStream::connect_timeout(&agg, Duration::from_secs(5)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "idle client not closed"
    );
    wait_log(&sa, "the handshake timeout logged", "not completed in 5 s");
    // Still serving: the stats socket answers and no peer joined.
    assert!(!sa.cmd("show peers").contains("enterprise1"));
}

#[test]
fn plain_haproxy_node_cannot_join_a_tls_listener() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(165);
    let dir = testkit::temp_dir();
    let pki = Pki::new(dir.path());
    pki.issue("gpe", "gpe");
    let agg = net.addr(2, PEERS_PORT);
    // stickagg only listens (the node has no address in its config).
    let cfg = tls_agg_config(agg, &pki, &[]) + "    dynamic-peers\n";
    let sa = Stickagg::start(&cfg);
    let spec = NodeSpec {
        tables: TABLES,
        rules: "http-request track-sc0 src table mypeers/request_rates",
        agg_name: "gpe",
    };
    let node = start_node(Version::V30, net, 1, agg, &spec);
    wait_log(&sa, "the plain node refused", "TLS handshake with ");
    get(&node, net.ip(50), 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        value(
            &node,
            "mypeers/request_rates.agg",
            &net.ip(50).to_string(),
            "http_req_cnt"
        ),
        None
    );
    assert!(
        !sa.cmd("show peers").contains("enterprise1"),
        "{}",
        sa.cmd("show peers")
    );
}

#[test]
fn client_without_a_trusted_certificate_is_refused() {
    if require_haproxy(Version::V30).is_none() {
        return;
    }
    let net = Net::new(166);
    let dir = testkit::temp_dir();
    let pki = Pki::new(dir.path());
    pki.issue("gpe", "gpe");
    let rogue_dir = testkit::temp_dir();
    let rogue = Pki::new(rogue_dir.path());
    let agg = net.addr(2, PEERS_PORT);
    // stickagg only listens: what is tested is the client certificate.
    let sa = Stickagg::start(&(tls_agg_config(agg, &pki, &[]) + "    dynamic-peers\n"));
    // enterprise1 presents no certificate, enterprise2 one from another CA
    // (named right).
    let pem1 = pki.issue("enterprise1", "enterprise1");
    let cfg1 = node_tls_config(net, 11, "enterprise1", agg, &pem1, &pki.ca_file()).replace(
        &format!(" crt {} verifyhost", pem1.display()),
        " verifyhost",
    );
    let n1 = Haproxy::start(Version::V30, &HaproxyOpts::new("enterprise1", cfg1));
    wait_log(
        &sa,
        "the missing certificate refused",
        "peer sent no certificates",
    );
    drop(n1);
    let pem2 = rogue.issue("enterprise2", "enterprise2");
    let n2 = start_tls_node(Version::V30, net, 2, agg, &pki, &pem2);
    wait_log(
        &sa,
        "the foreign certificate refused",
        "invalid peer certificate",
    );
    get(&n2, net.ip(50), 2);
    std::thread::sleep(Duration::from_secs(1));
    let show = sa.cmd("show peers");
    assert!(!show.contains("enterprise"), "{show}");
    assert_eq!(
        value(
            &n2,
            "mypeers/request_rates.agg",
            &net.ip(50).to_string(),
            "http_req_cnt"
        ),
        None
    );
}
