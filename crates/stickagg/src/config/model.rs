//! The parsed configuration: what `Config::parse` hands to the engine.
//!
//! Every value here has been validated (see `parse.rs`); the helpers on
//! [`Section`] encode the rules the engine needs (listening address, local
//! name, table-name mapping) so that they live in one place.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Settings of the `global` section(s).
    pub global: Global,
    /// The `aggregations <name>` sections, in file order; names are unique.
    pub sections: Vec<Section>,
    /// The file the configuration was read from (used in messages).
    pub path: PathBuf,
}

impl Config {
    /// The aggregations section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// The `global` section. Several `global` sections are merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Global {
    /// `stats socket …`: the CLI/API socket.
    pub stats_socket: Option<StatsSocket>,
    /// `bind <addr>:<port> [ssl …]`: listening address shared by every section
    /// without a `local` peer address.
    pub bind: Option<Bind>,
    /// `source <addr>[:<port>]`: local address of outgoing connections; port 0
    /// means any port.
    pub source: Option<SocketAddr>,
    /// `dynamic-peers` in `global`: every section accepts unknown peers.
    pub dynamic_peers: bool,
    /// `metrics <addr>:<port>`: metrics endpoint (stored only for now).
    pub metrics: Option<SocketAddr>,
    /// `maxconn <n>`: concurrent peer connections; beyond, new incoming
    /// connections are closed at once (default: `server::DEFAULT_MAXCONN`).
    pub maxconn: Option<usize>,
    /// `max-entries <n>`: entries per aggregated table; new keys beyond are
    /// dropped (default: `engine::DEFAULT_MAX_ENTRIES`).
    pub max_entries: Option<usize>,
    /// `max-tables <n>`: tables per section; definitions that would create
    /// more are refused (default: `engine::DEFAULT_MAX_TABLES`).
    pub max_tables: Option<usize>,
    /// `strict-peers` in `global`: every section checks where its peers
    /// connect from (see [`Section::strict_peers`]).
    pub strict_peers: bool,
}

/// `stats socket <where> [mode <octal>] [level <level>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    /// Where the socket listens.
    pub addr: StatsAddr,
    /// `mode <octal>`: permissions of a unix socket file.
    pub mode: Option<u32>,
    /// `level user|operator|admin`.
    pub level: Option<StatsLevel>,
}

/// Address of the stats socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAddr {
    /// `/path`, `unix@/path` (any word that is not an address or prefixed).
    Unix(PathBuf),
    /// `ipv4@a.b.c.d:port`, `ipv6@[addr]:port`, or a bare `addr:port`.
    Tcp(SocketAddr),
}

/// `level` of the stats socket, as in HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsLevel {
    /// Read-only, non-sensitive commands.
    User,
    /// Read-only commands plus a few harmless changes.
    Operator,
    /// Every command.
    Admin,
}

/// The global `bind` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Listening address (port 0 = chosen by the system, useful in tests).
    pub addr: SocketAddr,
    /// `ssl [crt …] [ca-file …] [verify …]`; `crt` is mandatory here.
    pub tls: Option<TlsOptions>,
}

/// TLS options of a `bind` or `peer` line (`ssl` present); see `tls.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `crt <pem>`: our certificate (server side: mandatory; client side:
    /// client certificate).
    pub crt: Option<PathBuf>,
    /// `ca-file <pem>`: CAs used to verify the other side.
    pub ca_file: Option<PathBuf>,
    /// `verify none|optional|required`; `None` = not written (default left
    /// to the TLS layer).
    pub verify: Option<Verify>,
}

/// `verify` value of a TLS option set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Do not check the other side's certificate.
    None,
    /// Check it if one is presented.
    Optional,
    /// Demand and check it.
    Required,
}

/// One `aggregations <name>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name. With the global `bind` (no `local` peer) it is also the
    /// aggregator's peer name on the load balancers.
    pub name: String,
    /// Line of the `aggregations` header.
    pub line: usize,
    /// Which tables are inputs (`from any` or `from <.suffix>`).
    pub from: FromSpec,
    /// Output suffix (`to <.suffix>`), starts with `.`.
    pub to: String,
    /// `no-ascend`: do not push outputs to `up` peers.
    pub no_ascend: bool,
    /// `no-feedback`: do not push outputs down to the nodes.
    pub no_feedback: bool,
    /// `forward <.suffix>` lines: tables with these suffixes coming from an
    /// `up` peer are relayed unchanged to the nodes.
    pub forward: Vec<String>,
    /// `peer` lines, in file order (names unique, at most one `local`).
    pub peers: Vec<PeerConf>,
    /// `dynamic-peers` in this section or in `global`: unknown peers may join.
    pub dynamic_peers: bool,
    /// `dynamic-peers from <cidr>…`: where dynamic peers may come from; empty
    /// = anywhere.
    pub dynamic_from: Vec<Cidr>,
    /// `strict-peers` in this section or in `global`: an incoming session of
    /// a configured peer must come from the IP address of its `peer` line.
    pub strict_peers: bool,
}

/// The input side of a `from … to …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSpec {
    /// `from any`: every table that is not an output is an input.
    Any,
    /// `from <.suffix>`: only tables ending in this suffix (starts with `.`).
    Suffix(String),
}

impl FromSpec {
    /// The input suffix, if any.
    pub fn suffix(&self) -> Option<&str> {
        match self {
            FromSpec::Any => None,
            FromSpec::Suffix(s) => Some(s),
        }
    }
}

/// One `peer <name> [<addr>:<port>] [local|up|down] [group <n>] [ssl …]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConf {
    /// Peer name, compared byte for byte with the hello.
    pub name: String,
    /// Address; only the `local` peer may omit it (then it listens on the
    /// global `bind`). Remote peers are connected to at this address.
    pub addr: Option<SocketAddr>,
    /// What the peer is to this aggregator.
    pub role: Role,
    /// `group <n>` (only on `down` peers): replicas counted as one source.
    pub group: Option<u32>,
    /// `ssl …` options: TLS on connections to this peer (for the `local`
    /// peer: on its listener).
    pub tls: Option<TlsOptions>,
    /// Line of the `peer` directive.
    pub line: usize,
}

/// Role of a peer in a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `local`: this aggregator itself.
    Local,
    /// `up`: an upper-level aggregator we push our outputs to.
    Up,
    /// `down`: a lower-level aggregator whose outputs are our inputs.
    Down,
    /// No keyword: a load balancer.
    Node,
}

impl Section {
    /// The `local` peer line, if any.
    pub fn local_peer(&self) -> Option<&PeerConf> {
        self.peers.iter().find(|p| p.role == Role::Local)
    }

    /// Every peer but the local one.
    pub fn remote_peers(&self) -> impl Iterator<Item = &PeerConf> {
        self.peers.iter().filter(|p| p.role != Role::Local)
    }

    /// The peer called `name` (local or remote).
    pub fn peer(&self, name: &str) -> Option<&PeerConf> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Our peer name in this section: the `local` peer's name, or the section
    /// name when the section has no `local` peer (it then listens on the
    /// global `bind`, and the load balancers must call the aggregator by the
    /// section name). Incoming hellos are routed by this name (line 2).
    pub fn local_name(&self) -> &str {
        self.local_peer().map_or(&self.name, |p| &p.name)
    }

    /// Where this section accepts connections: the `local` peer's address,
    /// else the global `bind`. Always `Some` for a parsed [`Config`].
    pub fn listen_addr(&self, global: &Global) -> Option<SocketAddr> {
        self.local_peer()
            .and_then(|p| p.addr)
            .or_else(|| global.bind.as_ref().map(|b| b.addr))
    }

    /// TLS settings of the listener returned by [`Section::listen_addr`].
    pub fn listen_tls<'a>(&'a self, global: &'a Global) -> Option<&'a TlsOptions> {
        match self.local_peer() {
            Some(PeerConf {
                addr: Some(_), tls, ..
            }) => tls.as_ref(),
            _ => global.bind.as_ref().and_then(|b| b.tls.as_ref()),
        }
    }

    /// Whether `table` is one of this section's outputs or forwarded tables
    /// (its name ends in the `to` suffix or a `forward` suffix): never an input.
    pub fn is_output_name(&self, table: &str) -> bool {
        table.ends_with(&self.to) || self.is_forwarded(table)
    }

    /// Whether `table` ends in a `forward` suffix (relayed from `up` peers).
    pub fn is_forwarded(&self, table: &str) -> bool {
        self.forward.iter().any(|f| table.ends_with(f.as_str()))
    }

    /// Output table name for the input `table`, or `None` when `table` is not
    /// an input of this section (semantics.md, "Table mapping").
    ///
    /// - `from any to .agg`: every name not ending in `.agg` or a `forward`
    ///   suffix; output = name + `.agg`.
    /// - `from .nonagg to .agg`: names ending in `.nonagg`, suffix replaced.
    ///
    /// A leading `/` (tables of a `peers` section on the wire) is kept:
    /// `/request_rates` → `/request_rates.agg`. A name that is empty once the
    /// `/` and the input suffix are taken away is not an input.
    pub fn output_name(&self, table: &str) -> Option<String> {
        if self.is_output_name(table) {
            return None;
        }
        let stem = match &self.from {
            FromSpec::Any => table,
            FromSpec::Suffix(suffix) => table.strip_suffix(suffix.as_str())?,
        };
        if stem.strip_prefix('/').unwrap_or(stem).is_empty() {
            return None;
        }
        Some(format!("{stem}{}", self.to))
    }

    /// Whether the configured peer `peer`, connecting from `ip`, may take
    /// its place: always, unless `strict-peers` is set; then only from the
    /// IP address of its `peer` line (IPv4-mapped IPv6 addresses compare as
    /// IPv4). `Err` holds the expected address.
    pub fn accepts_from(&self, peer: &PeerConf, ip: IpAddr) -> Result<(), IpAddr> {
        match peer.addr {
            Some(a) if self.strict_peers && a.ip().to_canonical() != ip.to_canonical() => {
                Err(a.ip())
            }
            _ => Ok(()),
        }
    }

    /// Whether a peer not listed in this section, connecting from `ip`, may
    /// join (`dynamic-peers`, limited by `dynamic-peers from …`).
    pub fn accepts_dynamic(&self, ip: IpAddr) -> bool {
        self.dynamic_peers
            && (self.dynamic_from.is_empty() || self.dynamic_from.iter().any(|c| c.contains(ip)))
    }
}

/// An address block, `192.168.0.0/16`, `2001:db8::/32`; a bare address is a
/// single host (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address as written (host bits are ignored by [`Cidr::contains`]).
    pub addr: IpAddr,
    /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, what a dual-stack listener reports) match IPv4
    /// blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("prefix length '{p}' is not in 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(from: FromSpec, to: &str, forward: &[&str]) -> Section {
        Section {
            name: "data".into(),
            line: 1,
            from,
            to: to.into(),
            no_ascend: false,
            no_feedback: false,
            forward: forward.iter().map(|s| s.to_string()).collect(),
            peers: vec![],
            dynamic_peers: false,
            dynamic_from: vec![],
            strict_peers: false,
        }
    }

    #[test]
    fn mapping_from_any() {
        let s = section(FromSpec::Any, ".agg", &[]);
        assert_eq!(
            s.output_name("request_rates").as_deref(),
            Some("request_rates.agg")
        );
        assert_eq!(
            s.output_name("/request_rates").as_deref(),
            Some("/request_rates.agg")
        );
        assert_eq!(s.output_name("/sessions").as_deref(), Some("/sessions.agg"));
        assert_eq!(s.output_name("be_api").as_deref(), Some("be_api.agg"));
        // Our own outputs coming back are never inputs.
        assert_eq!(s.output_name("/request_rates.agg"), None);
        assert_eq!(s.output_name("request_rates.agg"), None);
        assert_eq!(s.output_name(".agg"), None);
        // A name with another suffix is an input like any other.
        assert_eq!(s.output_name("/x.nonagg").as_deref(), Some("/x.nonagg.agg"));
        // Nothing to name.
        assert_eq!(s.output_name(""), None);
        assert_eq!(s.output_name("/"), None);
    }

    #[test]
    fn mapping_from_any_with_forward() {
        let s = section(FromSpec::Any, ".intermediate", &[".agg"]);
        assert_eq!(
            s.output_name("/request_rates").as_deref(),
            Some("/request_rates.intermediate")
        );
        assert_eq!(s.output_name("/request_rates.agg"), None);
        assert_eq!(s.output_name("/request_rates.intermediate"), None);
        assert!(s.is_forwarded("/request_rates.agg"));
        assert!(!s.is_forwarded("/request_rates.intermediate"));
        assert!(s.is_output_name("/request_rates.intermediate"));
        assert!(s.is_output_name("/request_rates.agg"));
        assert!(!s.is_output_name("/request_rates"));
    }

    #[test]
    fn mapping_from_suffix() {
        let s = section(FromSpec::Suffix(".nonagg".into()), ".agg", &[]);
        assert_eq!(
            s.output_name("request_rates.nonagg").as_deref(),
            Some("request_rates.agg")
        );
        assert_eq!(
            s.output_name("/request_rates.nonagg").as_deref(),
            Some("/request_rates.agg")
        );
        assert_eq!(s.output_name("/request_rates"), None);
        assert_eq!(s.output_name("/request_rates.agg"), None);
        assert_eq!(s.output_name("/request_rates.nonagg.x"), None);
        assert_eq!(s.output_name("/.nonagg"), None);
        assert_eq!(s.output_name(".nonagg"), None);
        // Top level of the multi-level example.
        let top = section(FromSpec::Suffix(".intermediate".into()), ".agg", &[]);
        assert_eq!(
            top.output_name("/request_rates.intermediate").as_deref(),
            Some("/request_rates.agg")
        );
        assert_eq!(top.output_name("/request_rates"), None);
    }

    fn peer(name: &str, addr: Option<&str>, role: Role) -> PeerConf {
        PeerConf {
            name: name.into(),
            addr: addr.map(|a| a.parse().unwrap()),
            role,
            group: None,
            tls: None,
            line: 2,
        }
    }

    #[test]
    fn local_name_and_listen_addr() {
        let bind = Global {
            bind: Some(Bind {
                addr: "0.0.0.0:10000".parse().unwrap(),
                tls: None,
            }),
            ..Global::default()
        };
        let mut s = section(FromSpec::Any, ".agg", &[]);
        // Global bind: named after the section.
        assert_eq!(s.local_name(), "data");
        assert_eq!(s.listen_addr(&bind), Some("0.0.0.0:10000".parse().unwrap()));
        assert_eq!(s.listen_addr(&Global::default()), None);
        // Local peer without address: its name, the global bind.
        s.peers.push(peer("gpe", None, Role::Local));
        assert_eq!(s.local_name(), "gpe");
        assert_eq!(s.listen_addr(&bind), Some("0.0.0.0:10000".parse().unwrap()));
        // Local peer with an address: wins over the global bind.
        s.peers[0].addr = Some("127.0.0.1:2000".parse().unwrap());
        s.peers.push(peer("lb1", Some("10.0.0.1:1"), Role::Node));
        assert_eq!(
            s.listen_addr(&bind),
            Some("127.0.0.1:2000".parse().unwrap())
        );
        assert_eq!(s.local_peer().unwrap().name, "gpe");
        assert_eq!(
            s.remote_peers()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["lb1"]
        );
        assert_eq!(s.peer("lb1").unwrap().role, Role::Node);
        assert!(s.peer("nope").is_none());
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(c.contains("192.168.50.41".parse().unwrap()));
        assert!(c.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!c.contains("192.169.0.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(c.to_string(), "192.168.0.0/16");
        let host: Cidr = "10.0.0.1".parse().unwrap();
        assert_eq!(host.prefix, 32);
        assert!(host.contains("10.0.0.1".parse().unwrap()));
        assert!(!host.contains("10.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let v6all: Cidr = "::/0".parse().unwrap();
        assert!(v6all.contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn dynamic_acceptance() {
        let mut s = section(FromSpec::Any, ".agg", &[]);
        let ip = "192.168.50.41".parse().unwrap();
        assert!(!s.accepts_dynamic(ip));
        s.dynamic_peers = true;
        assert!(s.accepts_dynamic(ip));
        s.dynamic_from = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(!s.accepts_dynamic(ip));
        s.dynamic_from.push("192.168.50.0/24".parse().unwrap());
        assert!(s.accepts_dynamic(ip));
    }

    #[test]
    fn strict_peers_acceptance() {
        let mut s = section(FromSpec::Any, ".agg", &[]);
        let lb = peer("lb1", Some("192.168.50.41:10000"), Role::Node);
        let other = "192.168.50.99".parse().unwrap();
        // Off: from anywhere.
        assert_eq!(s.accepts_from(&lb, other), Ok(()));
        s.strict_peers = true;
        let expected: IpAddr = "192.168.50.41".parse().unwrap();
        assert_eq!(s.accepts_from(&lb, other), Err(expected));
        assert_eq!(s.accepts_from(&lb, expected), Ok(()));
        // The port does not matter; a dual-stack listener's mapped address
        // is the same host.
        assert_eq!(
            s.accepts_from(&lb, "::ffff:192.168.50.41".parse().unwrap()),
            Ok(())
        );
        let v6 = peer("lb6", Some("[2001:db8::5]:10000"), Role::Node);
        assert_eq!(s.accepts_from(&v6, "2001:db8::5".parse().unwrap()), Ok(()));
        assert!(s.accepts_from(&v6, "2001:db8::6".parse().unwrap()).is_err());
        // A peer without an address (the local one) is never checked.
        let local = peer("gpe", None, Role::Local);
        assert_eq!(s.accepts_from(&local, other), Ok(()));
    }
}
