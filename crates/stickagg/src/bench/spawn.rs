//! Starting stickagg or HAProxy with a generated configuration, and
//! stopping them (only the processes started here, by their own handle).

use super::cli::{Args, Store};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process started by the simulator: killed, and its directory removed
/// (unless kept), on drop.
pub struct Spawned {
    pub what: &'static str,
    pub child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub addr: SocketAddr,
    keep: bool,
    /// How it was started, to start it again.
    bin: PathBuf,
    argv: Vec<String>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Still running?
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "{} exited ({st}); its log ({}):\n{}",
                self.what,
                self.log.display(),
                self.log_tail(30)
            )),
            Err(e) => Err(format!("{}: {e}", self.what)),
        }
    }

    /// `kill -9`, then the same command again (same configuration, same
    /// directory, the log appended to): what a crash and a supervisor's
    /// restart look like. Returns at once; the caller's clients retry until
    /// the new process listens.
    pub fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_child(&self.bin, &self.argv, &self.dir, &self.log)?;
        Ok(())
    }

    /// Ready when its peers port accepts a connection (the probe sends
    /// nothing, and is closed at once).
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} does not listen on {} after 10 s; log:\n{}",
                    self.what,
                    self.addr,
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn spawn_child(bin: &Path, argv: &[String], dir: &Path, log: &Path) -> Result<Child, String> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin)
        .args(argv)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn make_dir(what: &str) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "stickagg-bench-{}-{what}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn start(
    what: &'static str,
    bin: &Path,
    argv: &[&str],
    dir: PathBuf,
    addr: SocketAddr,
    keep: bool,
) -> Result<Spawned, String> {
    let log = dir.join(format!("{what}.log"));
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let child = spawn_child(bin, &argv, &dir, &log)?;
    let mut s = Spawned {
        what,
        child,
        dir,
        log,
        addr,
        keep,
        bin: bin.to_path_buf(),
        argv,
    };
    s.wait_listening()?;
    Ok(s)
}

fn loopback(net: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, net, host), port))
}

/// The stickagg binary: `--stickagg`, or `stickagg` next to this binary.
fn stickagg_binary(args: &Args) -> Result<PathBuf, String> {
    if let Some(p) = &args.stickagg {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = me.with_file_name("stickagg");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "no stickagg binary at {} (build it: cargo build --release -p stickagg, or give --stickagg)",
            p.display()
        ))
    }
}

/// stickagg with `dynamic-peers`, `from any to <suffix>`, its peers
/// listener on `127.0.<net>.1:<port>`.
pub fn stickagg(args: &Args) -> Result<Spawned, String> {
    let bin = stickagg_binary(args)?;
    let dir = make_dir("stickagg")?;
    let addr = loopback(args.net, 1, args.port);
    let cfg = format!(
        "# generated by stickagg-bench\nglobal\n    stats socket {sock}\n\naggregations bench\n    from any to {to}\n    dynamic-peers\n    peer {name} {addr} local\n",
        sock = dir.join("stickagg.sock").display(),
        to = args.suffix,
        name = args.agg_name,
    );
    let path = dir.join("stickagg.cfg");
    fs::write(&path, cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    let path = path.to_string_lossy().into_owned();
    start("stickagg", &bin, &["-f", &path], dir, addr, args.keep)
}

/// Name the nodes call HAProxy by (its `localpeer`).
pub const HAPROXY_PEER: &str = "hap";

/// HAProxy as the receiving peer of every node: one `server nodeN` line per
/// simulated node (at an address where nothing listens: its outgoing
/// attempts fail, the nodes' incoming sessions are what count), the input
/// table and its `.agg` twin with the same columns. Listens on
/// `127.0.<net>.2:<port>`.
pub fn haproxy(args: &Args, bin: &Path, store: &Store) -> Result<Spawned, String> {
    if args.nodes > 150 {
        return Err("--haproxy supports at most 150 nodes".into());
    }
    let dir = make_dir("haproxy")?;
    let addr = loopback(args.net, 2, args.port);
    let http = loopback(args.net, 2, args.port.wrapping_add(1));
    let size = (args.keys as u64 + args.keys as u64 / 4).max(1024);
    let mut cfg = format!(
        "# generated by stickagg-bench\nglobal\n    localpeer {HAPROXY_PEER}\n    stats socket {sock} mode 600 level admin\n",
        sock = dir.join("haproxy.sock").display()
    );
    if args.haproxy_threads > 0 {
        cfg.push_str(&format!("    nbthread {}\n", args.haproxy_threads));
    }
    cfg.push_str(
        "\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n",
    );
    cfg.push_str(&format!(
        "\npeers sim\n    bind {addr}\n    server {HAPROXY_PEER}\n"
    ));
    for i in 0..args.nodes {
        let unused = loopback(args.net, 100 + i as u8, 1);
        cfg.push_str(&format!("    server node{} {unused}\n", i + 1));
    }
    for name in [args.table.clone(), format!("{}{}", args.table, args.suffix)] {
        cfg.push_str(&format!(
            "    table {name} type ip size {size} expire {}ms store {}\n",
            args.expire.max(1),
            store.haproxy_store()
        ));
    }
    cfg.push_str(&format!(
        "\nfrontend fe\n    bind {http}\n    http-request return status 200\n"
    ));
    let path = dir.join("haproxy.cfg");
    fs::write(&path, cfg).map_err(|e| format!("{}: {e}", path.display()))?;
    let path = path.to_string_lossy().into_owned();
    start("haproxy", bin, &["-db", "-f", &path], dir, addr, args.keep)
}

/// `used` of a table in HAProxy's `show table` summary.
pub fn haproxy_table_used(s: &Spawned, table: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(s.dir.join("haproxy.sock")).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    sock.write_all(b"show table\n").ok()?;
    let mut out = String::new();
    sock.read_to_string(&mut out).ok()?;
    let want = format!("# table: sim/{table},");
    let line = out.lines().find(|l| l.starts_with(&want))?;
    line.split("used:")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
