//! Shared harness of stickagg's end-to-end tests: a stickagg process guard
//! and builders for the HAProxy nodes' configuration (the seed's
//! `lb-basic.cfg` structure with loopback addresses).
#![allow(dead_code)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::{stats_cmd, wait_for, Haproxy, HaproxyOpts, Net, TempDir, Version};

/// Peers port of every node and of the aggregator (each has its own IP).
pub const PEERS_PORT: u16 = 10000;
/// HTTP port of every node.
pub const HTTP_PORT: u16 = 8080;

/// A running stickagg, killed on drop.
pub struct Stickagg {
    dir: TempDir,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Open-file limit (soft, hard) the process starts with, if set.
    nofile: Option<(u64, u64)>,
    /// Command-line arguments after `-d -f <cfg>`.
    args: Vec<String>,
}

impl Stickagg {
    /// Starts stickagg with `config`; `{sock}` is replaced by the stats
    /// socket path in a fresh directory. Returns once the socket answers.
    pub fn start(config: &str) -> Stickagg {
        Stickagg::start_with(config, None, &[])
    }

    /// [`start`](Self::start), the process starting with an open-file limit
    /// of `(soft, hard)` (a service's defaults are 1024 and 4096 or more).
    pub fn start_with_nofile(config: &str, soft: u64, hard: u64) -> Stickagg {
        Stickagg::start_with(config, Some((soft, hard)), &[])
    }

    /// [`start`](Self::start) with more command-line arguments.
    pub fn start_with_args(config: &str, args: &[&str]) -> Stickagg {
        Stickagg::start_with(config, None, args)
    }

    fn start_with(config: &str, nofile: Option<(u64, u64)>, args: &[&str]) -> Stickagg {
        let dir = testkit::temp_dir();
        let cfg = dir.path().join("stickagg.cfg");
        let sock = dir.path().join("stickagg.sock");
        fs::write(&cfg, config.replace("{sock}", sock.to_str().unwrap())).unwrap();
        let log = dir.path().join("stickagg.log");
        let mut s = Stickagg {
            dir,
            cfg,
            log,
            child: None,
            nofile,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stickagg"));
        cmd.arg("-d")
            .arg("-f")
            .arg(&self.cfg)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((soft, hard)) = self.nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: between fork and exec, only the async-signal-safe
            // setrlimit on a value already built.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = cmd.spawn().expect("start stickagg");
        self.child = Some(child);
        let sock = self.sock();
        wait_for(Duration::from_secs(10), "stickagg's stats socket", || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("stickagg exited with {st}:\n{}", self.log());
                }
            }
            stats_cmd(&sock, "help").ok()
        });
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("stickagg.sock")
    }

    pub fn cmd(&self, cmd: &str) -> String {
        stats_cmd(&self.sock(), cmd)
            .unwrap_or_else(|e| panic!("stickagg `{cmd}`: {e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(self.sock());
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the configuration file (for reload tests).
    pub fn write_config(&self, config: &str) {
        fs::write(
            &self.cfg,
            config.replace("{sock}", self.sock().to_str().unwrap()),
        )
        .unwrap();
    }

    /// The process's open-file limit (soft, hard), from /proc.
    pub fn nofile(&self) -> (u64, u64) {
        let limits = fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files in /proc/PID/limits");
        let mut n = line["Max open files".len()..]
            .split_whitespace()
            .map(|w| w.parse().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let st = wait_for(timeout, "stickagg to exit", || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        st
    }
}

impl Drop for Stickagg {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- stickagg log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill();
    }
}

/// One HAProxy node of a test cluster.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub peers: SocketAddr,
    pub haproxy: Haproxy,
}

/// How a node declares its tables and rules; `{agg}` is the aggregator's
/// peer line is added by [`node_config`].
pub struct NodeSpec<'a> {
    /// `table …` lines of the peers section (input and output tables).
    pub tables: &'a str,
    /// `http-request …` lines of the frontend.
    pub rules: &'a str,
    /// Name the node calls the aggregator by.
    pub agg_name: &'a str,
}

/// The seed's `lb-basic.cfg`, on loopback: a peers section with the node
/// itself and the aggregator, and a frontend answering 200 by itself.
pub fn node_config(net: Net, host: u8, name: &str, agg: SocketAddr, spec: &NodeSpec) -> String {
    let peers = net.addr(host, PEERS_PORT);
    let http = net.addr(host, HTTP_PORT);
    format!(
        "{header}
peers mypeers
    bind {peers}
    server {name}
    server {agg_name} {agg}
{tables}

frontend fe_main
    bind {http}
{rules}
    http-request return status 200
",
        header = testkit::HAPROXY_HEADER,
        agg_name = spec.agg_name,
        tables = indent(spec.tables),
        rules = indent(spec.rules),
    )
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {}\n", l.trim())).collect()
}

/// Starts node `enterprise<i>` on host `10 + i` of `net`.
pub fn start_node(version: Version, net: Net, i: u8, agg: SocketAddr, spec: &NodeSpec) -> Node {
    start_node_with(version, net, i, |host, name| {
        node_config(net, host, name, agg, spec)
    })
}

/// Starts node `enterprise<i>` on host `10 + i` of `net` with the
/// configuration `config(host, name)` returns.
pub fn start_node_with(
    version: Version,
    net: Net,
    i: u8,
    config: impl FnOnce(u8, &str) -> String,
) -> Node {
    let name = format!("enterprise{i}");
    let host = 10 + i;
    let cfg = config(host, &name);
    let haproxy = Haproxy::start(version, &HaproxyOpts::new(name.clone(), cfg));
    Node {
        name,
        http: net.addr(host, HTTP_PORT),
        peers: net.addr(host, PEERS_PORT),
        haproxy,
    }
}

/// How long a [`RawPeer`] waits for what it expects.
const RAW_BOUND: Duration = Duration::from_secs(20);

/// A raw TCP client of stickagg's peers port, for what no HAProxy would send.
pub struct RawPeer {
    pub s: TcpStream,
    /// Bytes received and not consumed.
    pub rx: Vec<u8>,
    pub closed: bool,
}

impl RawPeer {
    pub fn connect(addr: SocketAddr) -> RawPeer {
        RawPeer::new(TcpStream::connect(addr).unwrap())
    }

    /// Connects from a chosen source address (for the address checks).
    pub fn connect_from(target: SocketAddr, source: IpAddr) -> RawPeer {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .unwrap();
        sock.connect_timeout(&SockAddr::from(target), Duration::from_secs(5))
            .unwrap();
        RawPeer::new(TcpStream::from(sock))
    }

    fn new(s: TcpStream) -> RawPeer {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        RawPeer {
            s,
            rx: Vec::new(),
            closed: false,
        }
    }

    /// Writes everything; a write to a connection stickagg closed is fine.
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    /// Reads what is there (at most one read of 64 KiB).
    pub fn poll(&mut self) {
        if self.closed {
            return;
        }
        let mut buf = [0u8; 65536];
        match self.s.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => self.closed = true,
        }
    }

    /// The status line (without `\n`), or "" for a close without one.
    pub fn status_line(&mut self) -> String {
        wait_for(RAW_BOUND, "a status line or a close", || {
            self.poll();
            if let Some(nl) = self.rx.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.rx.drain(..=nl).collect();
                return Some(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            self.closed.then(String::new)
        })
    }

    /// Waits (bounded) until stickagg closes the connection.
    pub fn wait_closed(&mut self) {
        wait_for(RAW_BOUND, "stickagg to close the connection", || {
            self.poll();
            self.closed.then_some(())
        });
    }

    /// Sends a hello calling the aggregator `gpe` as `name`; returns the
    /// status line.
    pub fn hello(&mut self, name: &str) -> String {
        self.send(&peers::hello::encode_hello("gpe", name, 4242));
        self.status_line()
    }
}

/// The aggregator of a test cluster: static peers (one `peer` line per node).
pub fn static_agg_config(
    section: &str,
    from_to: &str,
    agg: SocketAddr,
    nodes: &[(String, SocketAddr)],
) -> String {
    let mut s = format!(
        "global\n    stats socket {{sock}}\n\naggregations {section}\n    {from_to}\n    peer gpe {agg} local\n"
    );
    for (name, addr) in nodes {
        s.push_str(&format!("    peer {name} {addr}\n"));
    }
    s
}

/// Reads a numeric value of `key` in `table` on `node`, or `None` if absent.
pub fn value(node: &Node, table: &str, key: &str, data: &str) -> Option<u64> {
    node.haproxy
        .table_entry(table, key)
        .and_then(|e| e.get_u64(data))
}

/// Waits until `data` of `key` in `table` equals `want` on every node.
pub fn wait_value(nodes: &[&Node], table: &str, key: &str, data: &str, want: u64) {
    for n in nodes {
        wait_for(
            Duration::from_secs(10),
            &format!("{table} {key} {data}={want} on {}", n.name),
            || match value(n, table, key, data) {
                Some(v) if v == want => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
}

/// The versions every end-to-end test runs against.
pub fn versions() -> Vec<Version> {
    vec![Version::V26, Version::V30]
}

/// Generates one `#[test]` per HAProxy version, each on its own net:
/// `both_versions!(scenario, net_for_2_6, net_for_3_0)` runs
/// `scenario(Version, Net)` against 2.6 and 3.0 (`both_versions!(scenario,
/// net)`: 3.0 only) (failing under `CI=true`
/// when a version is missing, skipping otherwise).
#[allow(unused_macros)]
macro_rules! both_versions {
    ($name:ident, $net26:expr, $net30:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn haproxy_2_6() {
                if require_haproxy(Version::V26).is_some() {
                    super::$name(Version::V26, Net::new($net26));
                }
            }
            #[test]
            fn haproxy_3_0() {
                if require_haproxy(Version::V30).is_some() {
                    super::$name(Version::V30, Net::new($net30));
                }
            }
        }
    };
    // One net only: the scenario runs against HAProxy 3.0 alone.
    ($name:ident, $net30:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn haproxy_3_0() {
                if require_haproxy(Version::V30).is_some() {
                    super::$name(Version::V30, Net::new($net30));
                }
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both_versions;
